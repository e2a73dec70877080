//! `verify` proves a backup against its source: it passes on a fresh backup, names a blob
//! deleted from the backup, and in deep mode names a blob whose backup content was altered
//! behind lakevault's back (same size, record kept, no MD5 to give it away).

use azure_core::http::RequestContent;
use azure_storage_blob::models::{
    BlobClientGetPropertiesResultHeaders, BlockBlobClientCommitBlockListOptions, BlockLookupList,
};
use lakevault_tests::Lab;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{backup_pass, coordinator};

fn verify(path: &std::path::Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let out = coordinator(path)
        .expect("bin")
        .args(["verify", "--output", "json"])
        .args(extra)
        .output()
        .expect("run");
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn problems(report: &serde_json::Value) -> Vec<(String, String)> {
    report["containers"][0]["listed"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or_default().to_string(),
                        p["kind"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_a_good_backup_and_names_what_is_missing_or_altered() {
    let lab = Lab::start("verify", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 40,
        large_bytes: 0,
        seed: 12,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    let pass = backup_pass(&lab.path, 1).expect("backup");
    assert_eq!(pass.copied, 40);

    let (code, report, stderr) = verify(&lab.path, &["--deep"]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["containers"][0]["checked"].as_u64(), Some(40));
    assert_eq!(report["containers"][0]["ok"].as_u64(), Some(40));

    // One backup blob deleted, one rewritten with other bytes of the same size, keeping
    // its tags (record included) and storing no MD5.
    let names: Vec<String> = (0..40).map(lake::blob_name).collect();
    let (gone, altered) = (&names[5], &names[11]);
    lab.bak
        .blob("data", gone)
        .expect("client")
        .delete(None)
        .await
        .expect("delete");
    let victim = lab.bak.blob("data", altered).expect("client");
    let size = victim
        .get_properties(None)
        .await
        .expect("props")
        .content_length()
        .expect("header")
        .expect("length");
    let tags = lake::entries(&lab.bak, "data", false)
        .await
        .expect("list")
        .into_iter()
        .find(|e| &e.name == altered)
        .expect("listed")
        .tags;
    let tags_header = tags
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(k, percent_encoding::NON_ALPHANUMERIC),
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let block = victim.block_blob_client();
    let bytes = vec![b'X'; usize::try_from(size).expect("size")];
    block
        .stage_block(b"altered-0", size, RequestContent::from(bytes), None)
        .await
        .expect("stage");
    let list: RequestContent<BlockLookupList, _> = BlockLookupList {
        latest: Some(vec![b"altered-0".to_vec()]),
        ..Default::default()
    }
    .try_into()
    .expect("block list");
    block
        .commit_block_list(
            list,
            Some(BlockBlobClientCommitBlockListOptions {
                blob_tags_string: Some(tags_header),
                ..Default::default()
            }),
        )
        .await
        .expect("commit");

    // Shallow: the missing blob is named; the altered one cannot be told apart.
    let (code, report, _) = verify(&lab.path, &[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        problems(&report),
        vec![(gone.clone(), "missing".to_string())]
    );
    // Deep: the altered one too, by content.
    let (code, report, _) = verify(&lab.path, &["--deep"]);
    assert_eq!(code, 1, "{report}");
    let mut found = problems(&report);
    found.sort();
    let mut expected = vec![
        (gone.clone(), "missing".to_string()),
        (altered.clone(), "content".to_string()),
    ];
    expected.sort();
    assert_eq!(found, expected, "{report}");

    // The table names both with a line each.
    let out = coordinator(&lab.path)
        .expect("bin")
        .args(["verify", "--deep"])
        .output()
        .expect("run");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&format!("MISSING data/{gone}")), "{table}");
    assert!(
        table.contains(&format!("CONTENT data/{altered}")),
        "{table}"
    );
    assert!(table.contains("verify: FAILED"), "{table}");
}
