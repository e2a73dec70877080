//! Deletes never delete: a blob gone from the source becomes a tombstone in the backup (its
//! record gains the time it was seen deleted; content and user tags stay). A run that would
//! mark more than `--max-tombstones` marks nothing, says so loudly and exits 1. A blob that
//! comes back is copied again and loses its tombstone.

use lakevault_common::record::BackupRecord;
use lakevault_common::storage::StorageAccount;
use lakevault_tests::Lab;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{coordinator, drain};
use std::collections::BTreeMap;

async fn records(account: &StorageAccount, container: &str) -> BTreeMap<String, BackupRecord> {
    lake::entries(account, container, false)
        .await
        .expect("list")
        .into_iter()
        .map(|e| (e.name, BackupRecord::from_tags(&e.tags).expect("record")))
        .collect()
}

fn plan(path: &std::path::Path, max: &str) -> (i32, serde_json::Value, String) {
    let out = coordinator(path)
        .expect("bin")
        .args(["backup", "--output", "json", "--max-tombstones", max])
        .output()
        .expect("run");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (
        out.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_become_tombstones_under_a_cap() {
    let Lab {
        azurite: _azurite,
        dir: _dir,
        path,
        config: _config,
        src,
        bak,
    } = Lab::start("tomb", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 30,
        large_bytes: 0,
        seed: 5,
    };
    lake::seed(&src, &spec).await.expect("seed");
    let (code, _, _) = plan(&path, "10");
    assert_eq!(code, 0);
    assert_eq!(drain(&path, 1, &[]).expect("workers").copied, 30);
    let before = records(&bak, "data").await;

    // Five source blobs deleted: five tombstones, content kept.
    let names: Vec<String> = (0..30).map(lake::blob_name).collect();
    for name in &names[..5] {
        src.blob("data", name)
            .expect("client")
            .delete(None)
            .await
            .expect("delete");
    }
    let (code, report, _) = plan(&path, "10");
    assert_eq!(code, 0, "{report}");
    let c = &report["containers"][0];
    assert_eq!(
        (
            c["deleted_in_source"].as_u64(),
            c["tombstones"].as_u64(),
            c["new"].as_u64()
        ),
        (Some(5), Some(5), Some(0)),
        "{c}"
    );
    let pass = drain(&path, 1, &[]).expect("workers");
    assert_eq!((pass.copied, pass.poisoned), (0, 0));
    let after = records(&bak, "data").await;
    assert_eq!(after.len(), 30, "deletes never delete");
    for name in &names[..5] {
        assert!(after[name].deleted_at.is_some(), "{name} is a tombstone");
        assert_eq!(after[name].source_etag, before[name].source_etag);
    }
    assert!(names[5..].iter().all(|n| after[n].deleted_at.is_none()));
    let report = lake::verify(&src, &bak, &[("data".into(), "data".into())])
        .await
        .expect("verify");
    assert!(
        report.problems.is_empty(),
        "the remaining blobs are intact: {:#?}",
        report.problems
    );

    // Known tombstones are not counted again.
    let (_, report, _) = plan(&path, "10");
    let c = &report["containers"][0];
    assert_eq!(
        (
            c["deleted_in_source"].as_u64(),
            c["already_tombstoned"].as_u64()
        ),
        (Some(0), Some(5)),
        "{c}"
    );

    // The source "looks empty": 25 more deletions cross the cap of 10. Nothing is marked.
    for name in &names[5..] {
        src.blob("data", name)
            .expect("client")
            .delete(None)
            .await
            .expect("delete");
    }
    let (code, report, stderr) = plan(&path, "10");
    assert_eq!(code, 1, "crossing the cap is reported in the exit code");
    let c = &report["containers"][0];
    assert_eq!(
        (
            c["deleted_in_source"].as_u64(),
            c["tombstones"].as_u64(),
            c["tombstones_suppressed"].as_bool()
        ),
        (Some(25), Some(0), Some(true)),
        "{c}"
    );
    assert!(
        stderr.contains("max-tombstones") || stderr.contains("max_tombstones"),
        "{stderr}"
    );
    drain(&path, 1, &[]).expect("workers");
    let untouched = records(&bak, "data").await;
    assert!(
        names[5..].iter().all(|n| untouched[n].deleted_at.is_none()),
        "backup left untouched"
    );

    // A blob that comes back is copied again and is no longer a tombstone.
    lake::seed(
        &src,
        &LakeSpec {
            blobs: 1,
            ..spec.clone()
        },
    )
    .await
    .expect("re-create");
    let (_, report, _) = plan(&path, "100");
    let c = &report["containers"][0];
    assert_eq!(c["changed"], 1, "{c}");
    drain(&path, 1, &[]).expect("workers");
    let back = records(&bak, "data").await;
    assert!(back[&names[0]].deleted_at.is_none());
    assert!(back[&names[1]].deleted_at.is_some());
}
