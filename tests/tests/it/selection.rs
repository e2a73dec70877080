//! Selection: containers by name and glob, blob include/exclude rules applied to both
//! sides of the diff, a missing container reported without stopping the others, and ADLS
//! Gen2 directory marker blobs (`hdi_isfolder`) carried over as such.

use lakevault_common::config::Config;
use lakevault_tests::azurite::{Azurite, SOURCE_ACCOUNT, SOURCE_KEY};
use lakevault_tests::lake;
use lakevault_tests::scenario::{coordinator, drain};
use std::collections::BTreeMap;

/// Backed-up names with their metadata.
async fn names_in(
    account: &lakevault_common::storage::StorageAccount,
    container: &str,
) -> BTreeMap<String, BTreeMap<String, String>> {
    lake::entries(account, container, false)
        .await
        .expect("list")
        .into_iter()
        .map(|e| (e.name, e.metadata))
        .collect()
}

fn plan_json(path: &std::path::Path) -> (i32, serde_json::Value) {
    let out = coordinator(path)
        .expect("bin")
        .args(["backup", "--output", "json"])
        .output()
        .expect("run");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_and_blobs_are_selected_by_name_glob_prefix_and_pattern() {
    let azurite = Azurite::start().expect("azurite");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lakevault.toml");
    let text = azurite
        .config_toml("select", &["raw-*", "curated", "missing-one"])
        .replace(
            "container_template = \"{container}\"",
            "container_template = \"{container}\"\ninclude_prefixes = [\"keep/\", \"dirs/\"]\nexclude_patterns = [\"*.tmp\", \"*/_temporary/*\"]",
        );
    std::fs::write(&path, text).expect("config");
    let config = Config::load(&path).expect("config");
    let (src, bak) = lakevault_tests::accounts(&config).expect("accounts");
    let put = |container: &str, name: &str, metadata: &[(&str, &str)]| {
        lake::raw_put_blob(
            &azurite.blob_endpoint(SOURCE_ACCOUNT),
            SOURCE_ACCOUNT,
            SOURCE_KEY,
            container,
            name,
            if metadata.is_empty() {
                name.as_bytes()
            } else {
                b""
            },
            metadata,
        )
        .expect("put");
    };
    for container in ["raw-2024", "raw-2025", "curated", "other"] {
        src.ensure_container(container).await.expect("container");
        put(container, "keep/a.csv", &[]);
        put(container, "keep/b.tmp", &[]);
        put(container, "keep/_temporary/0/part", &[]);
        put(container, "drop/c.csv", &[]);
        put(container, "dirs/sub", &[("hdi_isfolder", "true")]);
    }

    let (code, report) = plan_json(&path);
    assert_eq!(
        code, 1,
        "a missing container makes the run partial: {report}"
    );
    assert_eq!(report["failed"][0]["container"], "missing-one", "{report}");
    let planned: Vec<&str> = report["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| c["source_container"].as_str().expect("name"))
        .collect();
    assert_eq!(planned, ["curated", "raw-2024", "raw-2025"]);
    let pass = drain(&path, 1, &[]).expect("workers");
    assert_eq!(pass.copied, 6, "{pass:?}");

    for container in ["raw-2024", "raw-2025", "curated"] {
        let backed_up = names_in(&bak, container).await;
        assert_eq!(
            backed_up.keys().collect::<Vec<_>>(),
            ["dirs/sub", "keep/a.csv"],
            "{container}"
        );
        assert_eq!(
            backed_up["dirs/sub"]
                .get("hdi_isfolder")
                .map(String::as_str),
            Some("true")
        );
    }
    assert!(
        !bak.container("other")
            .expect("client")
            .exists()
            .await
            .expect("exists")
    );

    // A blob in the backup outside the selection is neither copied over nor counted as
    // deleted in the source.
    lake::raw_put_blob(
        &azurite.blob_endpoint(lakevault_tests::azurite::BACKUP_ACCOUNT),
        lakevault_tests::azurite::BACKUP_ACCOUNT,
        lakevault_tests::azurite::BACKUP_KEY,
        "curated",
        "drop/manual.csv",
        b"kept aside",
        &[],
    )
    .expect("put");
    let (_, again) = plan_json(&path);
    for c in again["containers"].as_array().expect("containers") {
        assert_eq!(
            (
                c["new"].as_u64(),
                c["changed"].as_u64(),
                c["deleted_in_source"].as_u64()
            ),
            (Some(0), Some(0), Some(0)),
            "{c}"
        );
        assert_eq!(c["unchanged"], 2, "{c}");
    }
}
