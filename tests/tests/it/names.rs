//! Real-world blob names: the emulator lists them in the order the diff assumes (UTF-16
//! code units), and every one of them survives a full backup pass unchanged.

use futures::StreamExt;
use lakevault_plan::diff::cmp_names;
use lakevault_tests::Lab;
use lakevault_tests::azurite::{SOURCE_ACCOUNT, SOURCE_KEY};
use lakevault_tests::lake;
use lakevault_tests::scenario::backup_pass;

const NAMES: &[&str] = &[
    "a\u{FFFD}",
    "a😀",
    "a\u{FF01}",
    "aZ",
    "a~",
    "aé",
    "A",
    "a/b",
    "a-b",
    "a.b",
    "a b",
    "a b/c",
    "100% done.txt",
    "hash#tag.txt",
    "question?.txt",
    "plus+sign & ampersand.csv",
    "semi;colon,comma=equals.txt",
    "quote'single\"double.txt",
    "brackets [1] {2} (3).txt",
    "nested/dir with space/ünïcödé/日本語/файл.txt",
    "emoji/🚀/🎉 party.md",
    "trailing space ",
    " leading space",
    "x/y/z/",
    "dots/../up.txt",
    "dots/./here.txt",
    "line\nbreak.txt",
    "trailing dot.",
    "dir.../file..",
    "ends/with/dot./",
];

/// The longest legal name: 1,024 characters.
fn longest_name() -> String {
    let name = format!("long/{}", "n".repeat(1019));
    assert_eq!(name.chars().count(), 1024);
    name
}

/// A control character: legal in a blob name, but dropped by URL parsers (the SDK's own
/// blob URL building loses it), so lakevault encodes names itself.
const CONTROL: &str = "tab\there.txt";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_names_list_in_diff_order_and_back_up() {
    let Lab {
        azurite,
        dir: _dir,
        path,
        config: _config,
        src,
        bak,
    } = Lab::start("names", &["names"]).expect("lab");
    src.container("names")
        .expect("client")
        .create(None)
        .await
        .expect("container");
    let longest = longest_name();
    let names: Vec<&str> = NAMES
        .iter()
        .copied()
        .chain([CONTROL, longest.as_str()])
        .collect();
    for (i, name) in names.iter().enumerate() {
        lake::raw_put_blob(
            &azurite.blob_endpoint(SOURCE_ACCOUNT),
            SOURCE_ACCOUNT,
            SOURCE_KEY,
            "names",
            name,
            format!("body {i}").as_bytes(),
            &[
                ("Origin", "raw client"),
                ("MixedCaseKey", &format!("value {i}")),
            ],
        )
        .unwrap_or_else(|e| panic!("put {name:?}: {e}"));
    }

    let mut listed = Vec::new();
    let mut pager = src
        .container("names")
        .expect("client")
        .list_blobs(None)
        .expect("list");
    while let Some(item) = pager.next().await {
        listed.push(item.expect("item").name.expect("name"));
    }
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort_by(|a, b| cmp_names(a, b));
    assert_eq!(
        listed, expected,
        "the service's listing order must be the diff's order"
    );

    let pass = backup_pass(&path, 1).expect("backup");
    let all = names.len() as u64;
    assert_eq!((pass.copied, pass.poisoned), (all, 0), "{pass:?}");
    let report = lake::verify(&src, &bak, &[("names".into(), "names".into())])
        .await
        .expect("verify");
    assert_eq!(report.blobs, all);
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    let again = backup_pass(&path, 1).expect("second pass");
    assert_eq!((again.planned, again.copied), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_containers_are_backed_up_under_plain_names() {
    let Lab {
        azurite,
        dir: _dir,
        path,
        config: _config,
        src,
        bak,
    } = Lab::start("special", &["*"]).expect("lab");
    for container in ["$root", "$web", "site"] {
        src.container(container)
            .expect("client")
            .create(None)
            .await
            .expect("create");
        lake::raw_put_blob(
            &azurite.blob_endpoint(SOURCE_ACCOUNT),
            SOURCE_ACCOUNT,
            SOURCE_KEY,
            container,
            "index.html",
            container.as_bytes(),
            &[],
        )
        .expect("put");
    }
    let pass = backup_pass(&path, 1).expect("backup");
    assert_eq!(pass.copied, 3, "{pass:?}");
    let report = lake::verify(
        &src,
        &bak,
        &[
            ("$root".into(), "root".into()),
            ("$web".into(), "web".into()),
            ("site".into(), "site".into()),
        ],
    )
    .await
    .expect("verify");
    assert!(report.problems.is_empty(), "{:#?}", report.problems);

    // A source that also has a plain `web` container would share the backup container
    // with `$web`: the plan refuses, naming both, and enqueues nothing.
    src.container("web")
        .expect("client")
        .create(None)
        .await
        .expect("create");
    let out = lakevault_tests::scenario::coordinator(&path)
        .expect("bin")
        .arg("backup")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`$web`") && stderr.contains("`web`"),
        "{stderr}"
    );
}
