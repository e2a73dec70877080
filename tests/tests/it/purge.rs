//! Retention: `purge` deletes old versions past their window (never the current one) and
//! tombstoned blobs past theirs; its dry run reports exactly what the real run deletes;
//! a cap leaves a container untouched.

use azure_storage_blob::models::{BlobContainerClientListBlobsOptions, ListBlobsIncludeItem};
use futures::TryStreamExt;
use lakevault_common::storage::StorageAccount;
use lakevault_tests::Lab;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{backup_pass, coordinator};

/// (base blobs, snapshots) in a container.
async fn census(account: &StorageAccount, container: &str) -> (usize, usize) {
    let options = BlobContainerClientListBlobsOptions {
        include: Some(vec![ListBlobsIncludeItem::Snapshots]),
        ..Default::default()
    };
    let mut pager = account
        .container(container)
        .expect("client")
        .list_blobs(Some(options))
        .expect("pager");
    let (mut bases, mut snapshots) = (0, 0);
    while let Some(item) = pager.try_next().await.expect("list") {
        if item.snapshot.is_some() {
            snapshots += 1;
        } else {
            bases += 1;
        }
    }
    (bases, snapshots)
}

fn purge(path: &std::path::Path, args: &[&str]) -> (i32, serde_json::Value) {
    let out = coordinator(path)
        .expect("bin")
        .args(["purge", "--output", "json"])
        .args(args)
        .output()
        .expect("run");
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), json)
}

fn counts(report: &serde_json::Value) -> (Option<u64>, Option<u64>, Option<u64>) {
    let c = &report["containers"][0];
    (
        c["versions"].as_u64(),
        c["tombstoned_blobs"].as_u64(),
        c["tombstoned_versions"].as_u64(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_keeps_current_versions_and_agrees_with_its_dry_run() {
    let lab = Lab::start("purge", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 40,
        large_bytes: 0,
        seed: 31,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    backup_pass(&lab.path, 1).expect("backup");
    // Three overwrites (three old versions), then two deletions (tombstones; one of them
    // has an old version too).
    let changed = lake::modify(&lab.src, &spec, 3, 1).await.expect("modify");
    backup_pass(&lab.path, 1).expect("backup");
    let first_changed = changed[0].trim_start_matches("data/").to_string();
    let deleted = [first_changed.clone(), lake::blob_name(30)];
    for name in &deleted {
        lab.src
            .blob("data", name)
            .expect("client")
            .delete(None)
            .await
            .expect("delete");
    }
    backup_pass(&lab.path, 1).expect("backup");
    assert_eq!(census(&lab.bak, "data").await, (40, 3));

    // A long window deletes nothing.
    let (code, report) = purge(
        &lab.path,
        &["--keep-versions-for", "30d", "--tombstones-for", "90d"],
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(counts(&report), (Some(0), Some(0), Some(0)));
    assert_eq!(census(&lab.bak, "data").await, (40, 3));

    // A cap below what would go: nothing deleted, exit 1.
    let (code, report) = purge(
        &lab.path,
        &[
            "--keep-versions-for",
            "0s",
            "--tombstones-for",
            "0s",
            "--max-deletes",
            "2",
        ],
    );
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["containers"][0]["capped"], true);
    assert_eq!(census(&lab.bak, "data").await, (40, 3));

    // Dry run, then the real run: the same counts, and the backup ends as predicted.
    let window = ["--keep-versions-for", "0s", "--tombstones-for", "0s"];
    let (code, dry) = purge(&lab.path, &[&window[..], &["--dry-run"]].concat());
    assert_eq!(code, 0, "{dry}");
    // Two old versions of live blobs, two tombstoned blobs, one of which had a version.
    assert_eq!(counts(&dry), (Some(2), Some(2), Some(1)), "{dry}");
    assert_eq!(
        census(&lab.bak, "data").await,
        (40, 3),
        "a dry run deletes nothing"
    );
    let (code, real) = purge(&lab.path, &window);
    assert_eq!(code, 0, "{real}");
    assert_eq!(counts(&real), counts(&dry), "the dry run and the run agree");
    assert_eq!(real["containers"][0]["deleted"].as_u64(), Some(4));
    assert_eq!(census(&lab.bak, "data").await, (38, 0));
    // What is left is exactly the live source.
    lab.assert_backup_matches(&[("data", "data")], 38).await;
}
