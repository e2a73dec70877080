//! History: a backup blob about to be overwritten by a newer source version is kept as a
//! snapshot first, so every backed-up version stays restorable; an item whose version the
//! backup already holds (a redelivery, a plan enqueued twice) costs one read, not a copy.

use azure_storage_blob::models::{BlobContainerClientListBlobsOptions, ListBlobsIncludeItem};
use futures::TryStreamExt;
use lakevault_common::storage::StorageAccount;
use lakevault_tests::Lab;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{batch_worker, checked, plan};
use std::collections::BTreeMap;

/// Name → snapshot timestamps of every snapshot in a container.
async fn snapshots(account: &StorageAccount, container: &str) -> BTreeMap<String, Vec<String>> {
    let options = BlobContainerClientListBlobsOptions {
        include: Some(vec![ListBlobsIncludeItem::Snapshots]),
        ..Default::default()
    };
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut pager = account
        .container(container)
        .expect("client")
        .list_blobs(Some(options))
        .expect("pager");
    while let Some(item) = pager.try_next().await.expect("list") {
        if let (Some(name), Some(snapshot)) = (item.name, item.snapshot) {
            out.entry(name).or_default().push(snapshot);
        }
    }
    out
}

/// SHA-256 of a blob's (or snapshot's) content.
async fn hash(client: &azure_storage_blob::BlobClient) -> String {
    use sha2::Digest;
    let mut body = client.download(None).await.expect("download").body;
    let mut hasher = sha2::Sha256::new();
    while let Some(chunk) = futures::StreamExt::next(&mut body).await {
        hasher.update(chunk.expect("chunk"));
    }
    hex::encode(hasher.finalize())
}

/// One worker taking one message at a time, so that duplicate items meet in order (two
/// copies of one item running at once would both find the older backup).
fn worker_summary(path: &std::path::Path) -> serde_json::Value {
    let out = checked(
        batch_worker(path, &["--prefetch", "1"])
            .expect("bin")
            .output()
            .expect("worker"),
        "worker",
    )
    .expect("worker");
    serde_json::from_slice(&out.stdout).expect("summary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwritten_backups_are_kept_as_snapshots_and_current_ones_are_skipped() {
    let lab = Lab::start("history", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 40,
        large_bytes: 0,
        seed: 21,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    plan(&lab.path).expect("plan");
    let first = worker_summary(&lab.path);
    assert_eq!(first["copied"].as_u64(), Some(40), "{first}");
    assert_eq!(first["kept_previous"].as_u64(), Some(0), "{first}");
    assert!(snapshots(&lab.bak, "data").await.is_empty());

    // Two changed blobs: their previous backups become snapshots with the old bytes.
    let changed: Vec<String> = lake::modify(&lab.src, &spec, 2, 1)
        .await
        .expect("modify")
        .into_iter()
        .map(|n| n.trim_start_matches("data/").to_string())
        .collect();
    let mut old_hashes = BTreeMap::new();
    for name in &changed {
        let client = lab.bak.blob("data", name).expect("client");
        old_hashes.insert(name.clone(), hash(&client).await);
    }
    // Planned twice before any worker runs: the second copy of each item finds the backup
    // already current.
    plan(&lab.path).expect("plan");
    plan(&lab.path).expect("plan again");
    let second = worker_summary(&lab.path);
    assert_eq!(second["copied"].as_u64(), Some(2), "{second}");
    assert_eq!(second["kept_previous"].as_u64(), Some(2), "{second}");
    assert_eq!(second["already_current"].as_u64(), Some(2), "{second}");

    let snaps = snapshots(&lab.bak, "data").await;
    assert_eq!(
        snaps.keys().cloned().collect::<Vec<_>>(),
        {
            let mut c = changed.clone();
            c.sort();
            c
        },
        "only overwritten blobs have history"
    );
    for (name, stamps) in &snaps {
        assert_eq!(stamps.len(), 1, "{name}: {stamps:?}");
        let client = lab
            .bak
            .blob("data", name)
            .expect("client")
            .with_snapshot(&stamps[0])
            .expect("snapshot client");
        assert_eq!(
            hash(&client).await,
            old_hashes[name],
            "{name}: the snapshot holds the previous backup"
        );
    }
    let verified = lake::verify(&lab.src, &lab.bak, &[("data".into(), "data".into())])
        .await
        .expect("verify");
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
}
