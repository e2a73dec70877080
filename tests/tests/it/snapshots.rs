//! Snapshot mode: the coordinator snapshots each blob to copy before enqueueing it, the
//! worker copies that immutable version (single-request and ranged paths alike), records
//! its ETag, and deletes the snapshot afterwards. Writes to the source after planning do
//! not leak into this backup; the next run picks them up.

use lakevault_common::record::BackupRecord;
use lakevault_tests::Lab;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{coordinator, drain};
use std::collections::BTreeMap;

async fn listing(
    account: &lakevault_common::storage::StorageAccount,
    container: &str,
    snapshots: bool,
) -> Vec<(String, Option<String>, BTreeMap<String, String>)> {
    lake::entries(account, container, snapshots)
        .await
        .expect("list")
        .into_iter()
        .map(|e| (e.name, e.snapshot, e.tags))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_copy_the_snapshot_taken_at_planning() {
    let Lab {
        azurite: _azurite,
        dir: _dir,
        path,
        config: _config,
        src,
        bak,
    } = Lab::start("snaps", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 60,
        large_bytes: 0,
        seed: 21,
    };
    lake::seed(&src, &spec).await.expect("seed");
    // Blobs 0 and 50 are 1-4 MiB: with a 1 MiB single-copy limit they take the ranged path.
    let rewritten: Vec<String> = [0usize, 50, 3, 20, 37]
        .iter()
        .map(|i| lake::blob_name(*i))
        .collect();
    let mut planned_hash = BTreeMap::new();
    for name in &rewritten {
        planned_hash.insert(
            name.clone(),
            lake::sha256_of(&src, "data", name).await.expect("hash").0,
        );
    }

    let out = coordinator(&path)
        .expect("bin")
        .args(["backup", "--snapshot", "--output", "json"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snapshots_taken = listing(&src, "data", true)
        .await
        .iter()
        .filter(|(_, s, _)| s.is_some())
        .count();
    assert_eq!(snapshots_taken, 60, "one snapshot per planned blob");

    // The source moves on before the workers run.
    for name in &rewritten {
        src.blob("data", name)
            .expect("client")
            .upload(
                azure_core::http::RequestContent::from(b"newer".to_vec()),
                None,
            )
            .await
            .expect("rewrite");
    }
    let pass = drain(
        &path,
        2,
        &["--sync-copy-max-mib", "1", "--block-size-mib", "1"],
    )
    .expect("workers");
    assert_eq!((pass.copied, pass.poisoned), (60, 0), "{pass:?}");

    for name in &rewritten {
        let (hash, _) = lake::sha256_of(&bak, "data", name).await.expect("hash");
        assert_eq!(
            hash, planned_hash[name],
            "{name}: the backup holds the snapshot, not the later write"
        );
    }
    // Every record names the version it holds: not the source's current ETag for the
    // rewritten blobs, so the next run copies them.
    let backup = listing(&bak, "data", false).await;
    assert_eq!(backup.len(), 60);
    assert!(
        backup
            .iter()
            .all(|(_, _, tags)| BackupRecord::from_tags(tags).is_some())
    );
    let left = listing(&src, "data", true)
        .await
        .iter()
        .filter(|(_, s, _)| s.is_some())
        .count();
    assert_eq!(left, 0, "workers delete the snapshots they copied");

    let out = coordinator(&path)
        .expect("bin")
        .args(["backup", "--output", "json"])
        .output()
        .expect("run");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["containers"][0]["changed"], 5, "{report}");
    assert_eq!(drain(&path, 1, &[]).expect("workers").copied, 5);
    let verified = lake::verify(&src, &bak, &[("data".into(), "data".into())])
        .await
        .expect("verify");
    assert!(verified.problems.is_empty(), "{:#?}", verified.problems);
}

fn json_of(out: std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_snapshots_go_with_every_final_outcome_and_status_counts_those_held() {
    let lab = Lab::start("held", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 20,
        large_bytes: 0,
        seed: 31,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    // Ten index tags leave no room for the record: poisoned, its snapshot kept for a redrive.
    lake::put_uncopyable(&lab.src, "data", "uncopyable.bin")
        .await
        .expect("uncopyable");
    let run = |args: &[&str]| {
        json_of(
            coordinator(&lab.path)
                .expect("bin")
                .args(args)
                .args(["--output", "json"])
                .output()
                .expect("run"),
        )
    };
    let status = |job: &str| run(&["status", job]);
    let held_on_the_source = || async {
        listing(&lab.src, "data", true)
            .await
            .iter()
            .filter(|(_, s, _)| s.is_some())
            .count()
    };

    let first = run(&["backup", "--snapshot"]);
    let job = first["job_id"].as_str().expect("job").to_string();
    let pass = drain(&lab.path, 1, &[]).expect("workers");
    assert_eq!((pass.copied, pass.poisoned), (20, 1), "{pass:?}");
    let s = status(&job);
    assert_eq!(s["source_snapshots_taken"], 21, "{s}");
    assert_eq!(s["source_snapshots_held"], 1, "{s}");
    assert_eq!(held_on_the_source().await, 1);

    // An incremental snapshot run whose margin re-plans everything: twenty items are
    // already current, and their snapshots go as well.
    let second = run(&[
        "backup",
        "--snapshot",
        "--mode",
        "incremental",
        "--safety-margin-secs",
        "3600",
    ]);
    let job = second["job_id"].as_str().expect("job").to_string();
    assert_eq!(second["containers"][0]["new"], 21, "{second}");
    let pass = drain(&lab.path, 1, &[]).expect("workers");
    assert_eq!(
        (pass.copied, pass.already_current, pass.poisoned),
        (0, 20, 1),
        "{pass:?}"
    );
    let s = status(&job);
    assert_eq!(s["source_snapshots_taken"], 21, "{s}");
    assert_eq!(s["source_snapshots_held"], 1, "{s}");
    assert_eq!(
        held_on_the_source().await,
        2,
        "only the two poisoned items' snapshots are left"
    );
}
