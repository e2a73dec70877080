//! Sharded scans plan exactly what one listing plans: the same copies and tombstones,
//! whether the coordinator scans one shard, many shards in parallel, or hands the shards
//! to workers as scan tasks. And a distributed scan run by real worker processes backs the
//! lake up completely, records deletions, and keeps the job's status and watermark.

use azure_core::http::RequestContent;
use lakevault_common::ledger::{self, ScanFinish};
use lakevault_common::queue::{AzureQueue, WorkQueue};
use lakevault_common::record::BackupRecord;
use lakevault_common::wire::{CopyBatch, MessageKind, WorkMessage};
use lakevault_tests::Lab;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{checked, coordinator, drain};
use lakevault_worker::scan::{ScanEngine, Scanner};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One planned item, as it would reach a worker.
type PlannedItem = (String, String, String, u64, String);

/// A config like the lab's, with another queue.
fn config_with_queue(lab: &Lab, queue: &str) -> PathBuf {
    let path = lab.dir.path().join(format!("{queue}.toml"));
    std::fs::write(&path, lab.azurite.config_toml(queue, &["data"])).expect("config");
    path
}

fn queue(lab: &Lab, name: &str) -> Arc<AzureQueue> {
    Arc::new(AzureQueue::new(
        name,
        lab.bak.queue(name).expect("queue client"),
    ))
}

fn backup_json(config: &Path, args: &[&str]) -> serde_json::Value {
    let out = checked(
        coordinator(config)
            .expect("bin")
            .args(["backup", "--output", "json"])
            .args(args)
            .output()
            .expect("run"),
        "lakevault-coordinator backup",
    )
    .expect("backup");
    serde_json::from_slice(&out.stdout).expect("report JSON")
}

/// Receives every message of a queue (deleting them) and returns the items of the copy
/// and tombstone batches; scan tasks come back separately.
async fn take_all(queue: &AzureQueue) -> (BTreeSet<PlannedItem>, Vec<(String, WorkMessage)>) {
    let mut items = BTreeSet::new();
    let mut scans = Vec::new();
    loop {
        let messages = queue
            .receive(32, Duration::from_secs(60))
            .await
            .expect("receive");
        if messages.is_empty() {
            break;
        }
        for m in messages {
            match WorkMessage::decode(&m.text).expect("lakevault message") {
                WorkMessage::Batch(batch) => add_items(&mut items, &batch),
                scan @ WorkMessage::Scan(_) => scans.push((m.id.clone(), scan)),
            }
            queue.delete(&m.id, &m.pop_receipt).await.expect("delete");
        }
    }
    (items, scans)
}

fn add_items(items: &mut BTreeSet<PlannedItem>, batch: &CopyBatch) {
    let kind = match batch.kind {
        MessageKind::Copy => "copy",
        MessageKind::Tombstone => "tombstone",
        MessageKind::Scan => "scan",
        MessageKind::Restore => "restore",
    };
    for i in &batch.items {
        let fresh = items.insert((
            kind.to_string(),
            i.name.clone(),
            i.etag.clone(),
            i.size,
            format!("{:?}", i.tags),
        ));
        assert!(fresh, "{kind} item {} planned twice", i.name);
    }
}

/// The plan's counts that must not depend on how the container was scanned.
fn counts(report: &serde_json::Value) -> Vec<Option<u64>> {
    let c = &report["containers"][0];
    [
        "new",
        "changed",
        "unchanged",
        "deleted_in_source",
        "already_tombstoned",
        "unmanaged",
        "tombstones",
    ]
    .iter()
    .map(|k| c[k].as_u64())
    .collect()
}

async fn put(lab: &Lab, name: &str) {
    lab.src
        .blob("data", name)
        .expect("client")
        .upload(RequestContent::from(name.as_bytes().to_vec()), None)
        .await
        .unwrap_or_else(|e| panic!("upload {name}: {e}"));
}

/// Names that stress shard boundaries: empty segments, a trailing slash, a prefix that is
/// also a blob, a sibling sharing a directory's name as prefix, and non-ASCII levels.
const AWKWARD: &[&str] = &[
    "root-file.txt",
    "a",
    "a/",
    "a//double",
    "a/b",
    "a-b",
    "a/b/c",
    "a/b-c/d",
    "zz/日本/データ.json",
    "zz/🚀/x",
    "zz/～/y",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_and_distributed_scans_plan_what_one_listing_plans() {
    let lab = Lab::start("plan-base", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 300,
        large_bytes: 0,
        seed: 11,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    for name in AWKWARD {
        put(&lab, name).await;
    }
    backup_json(&lab.path, &[]);
    let first = drain(&lab.path, 1, &[]).expect("workers");
    assert_eq!(first.poisoned, 0);

    // Change the lake: a whole directory deleted in the source (it now exists only in the
    // backup), blobs changed, new blobs in a new directory and at the top level.
    let changed: Vec<String> = lake::modify(&lab.src, &spec, 7, 1)
        .await
        .expect("modify")
        .into_iter()
        .map(|n| n.trim_start_matches("data/").to_string())
        .collect();
    let gone: Vec<String> = (0..300)
        .map(lake::blob_name)
        .filter(|n| n.starts_with("percent/"))
        .collect();
    assert!(gone.len() >= 20);
    for name in gone.iter().chain(std::iter::once(&"a/b".to_string())) {
        lab.src
            .blob("data", name)
            .expect("client")
            .delete(None)
            .await
            .expect("delete");
    }
    for i in 0..5 {
        put(&lab, &format!("fresh/dir {i}/file.csv")).await;
        put(&lab, &format!("top-{i}")).await;
    }

    // One listing, many shards scanned here, many shards scanned by workers.
    let (qa, qb, qc) = ("plan-one", "plan-sharded", "plan-distributed");
    let one = backup_json(&config_with_queue(&lab, qa), &["--shards", "1"]);
    let sharded = backup_json(
        &config_with_queue(&lab, qb),
        &["--shards", "64", "--scan-parallelism", "8"],
    );
    let distributed = backup_json(
        &config_with_queue(&lab, qc),
        &["--shards", "64", "--distributed-scan"],
    );
    // Pages of 3 entries: every listing (levels and whole prefixes, both sides) continues
    // over many pages, which a lake this small never needs otherwise.
    let qd = "plan-paged";
    let paged = backup_json(
        &config_with_queue(&lab, qd),
        &[
            "--shards",
            "64",
            "--scan-parallelism",
            "8",
            "--list-page-size",
            "3",
        ],
    );
    assert_eq!(counts(&one), counts(&paged), "{one}\n{paged}");
    assert_eq!(one["containers"][0]["shards"].as_u64(), Some(1));
    let shards = sharded["containers"][0]["shards"].as_u64().expect("shards");
    assert!(shards > 10, "the lake was split into {shards} shards only");
    assert_eq!(
        distributed["containers"][0]["shards"].as_u64(),
        Some(shards)
    );
    assert_eq!(distributed["containers"][0]["scanned_by"], "workers");
    assert_eq!(counts(&one), counts(&sharded), "{one}\n{sharded}");

    let (plan_one, _) = take_all(&queue(&lab, qa)).await;
    let (plan_sharded, _) = take_all(&queue(&lab, qb)).await;
    let copies = plan_one.iter().filter(|i| i.0 == "copy").count();
    let tombstones = plan_one.iter().filter(|i| i.0 == "tombstone").count();
    let still_there: Vec<&String> = changed.iter().filter(|n| !gone.contains(n)).collect();
    assert_eq!(copies, still_there.len() + 10, "{plan_one:?}");
    assert_eq!(tombstones, gone.len() + 1);
    assert!(
        still_there
            .iter()
            .all(|n| plan_one.iter().any(|i| i.0 == "copy" && &&i.1 == n))
    );
    assert_eq!(plan_one, plan_sharded);
    let (plan_paged, _) = take_all(&queue(&lab, qd)).await;
    assert_eq!(plan_one, plan_paged);

    // Scan tasks, executed by the worker's scan engine, in reverse order for good measure
    // (workers take them in any order): their copies and tombstones land in the queue.
    let work = queue(&lab, qc);
    let (none, mut scans) = take_all(&work).await;
    assert!(
        none.is_empty(),
        "a distributed plan enqueues only scan tasks"
    );
    assert_eq!(scans.len() as u64, shards);
    let engine = ScanEngine::new(
        vec![lab.src.clone(), lab.bak.clone()],
        lab.bak.clone(),
        work.clone(),
    );
    scans.reverse();
    for (id, message) in &scans {
        let WorkMessage::Scan(task) = message else {
            unreachable!()
        };
        engine
            .scan(task, id, &Default::default())
            .await
            .expect("scan task");
    }
    let (plan_distributed, rest) = take_all(&work).await;
    assert!(rest.is_empty());
    assert_eq!(plan_one, plan_distributed);

    // The finisher's record adds up to the same counts.
    let job = distributed["job_id"].as_str().expect("job id");
    let finish: ScanFinish = ledger::get_json(&lab.bak, &ledger::scan_finish_name(job, "data"))
        .await
        .expect("read")
        .expect("finish record");
    let c = &one["containers"][0];
    assert_eq!(
        (
            finish.counts.new,
            finish.counts.changed,
            finish.counts.unchanged,
            finish.counts.deleted_in_source,
            finish.tombstones,
        ),
        (
            c["new"].as_u64().unwrap_or_default(),
            c["changed"].as_u64().unwrap_or_default(),
            c["unchanged"].as_u64().unwrap_or_default(),
            c["deleted_in_source"].as_u64().unwrap_or_default(),
            c["tombstones"].as_u64().unwrap_or_default(),
        )
    );
    assert!(finish.failures.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_scan_by_worker_processes_backs_up_and_reports() {
    let lab = Lab::start("dist", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 200,
        large_bytes: 0,
        seed: 3,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    // Last-Modified has whole seconds: blobs written in the watermark's second are planned
    // again by an incremental run. Scan from a later second than the seed.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Snapshot mode too: the scan tasks take the snapshots.
    let report = backup_json(
        &lab.path,
        &["--distributed-scan", "--shards", "8", "--snapshot"],
    );
    let job = report["job_id"].as_str().expect("job").to_string();
    let pass = drain(&lab.path, 2, &[]).expect("workers");
    assert_eq!((pass.copied, pass.poisoned), (200, 0));
    lab.assert_backup_matches(&[("data", "data")], 200).await;

    let status = checked(
        coordinator(&lab.path)
            .expect("bin")
            .args(["status", &job, "--output", "json"])
            .output()
            .expect("status"),
        "status",
    )
    .expect("status");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["planned_items"].as_u64(), Some(200), "{status}");
    assert_eq!(status["done"].as_u64(), Some(200), "{status}");
    assert_eq!(status["shards_scanned"], status["shards_total"], "{status}");

    // The finisher wrote the watermark: an incremental run finds nothing new.
    let incremental = backup_json(
        &lab.path,
        &["--mode", "incremental", "--safety-margin-secs", "0"],
    );
    assert_eq!(incremental["containers"][0]["mode"], "incremental");
    assert_eq!(incremental["containers"][0]["new"].as_u64(), Some(0));

    // Deletions found by scan tasks become tombstones once every shard is in.
    let deleted: Vec<String> = (0..3).map(lake::blob_name).collect();
    for name in &deleted {
        lab.src
            .blob("data", name)
            .expect("client")
            .delete(None)
            .await
            .expect("delete");
    }
    backup_json(&lab.path, &["--distributed-scan", "--shards", "8"]);
    let pass = drain(&lab.path, 2, &[]).expect("workers");
    assert_eq!(pass.poisoned, 0);
    for e in lake::entries(&lab.bak, "data", false).await.expect("list") {
        let record = BackupRecord::from_tags(&e.tags).expect("record");
        assert_eq!(
            record.deleted_at.is_some(),
            deleted.contains(&e.name),
            "{}",
            e.name
        );
    }
}
