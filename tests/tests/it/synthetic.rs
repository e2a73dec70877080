//! The synthetic endpoint (`tests/src/synthetic.rs`) is only a fair stand-in for a large
//! lake if lakevault's real processes treat it as a storage account: a distributed scan of
//! a generated lake by worker processes must find exactly the generator's counts, and every
//! copy, history snapshot and tombstone the plan calls for must reach the endpoint as an
//! accepted write. `make bench-scale` relies on both.

use lakevault_common::ledger::{self, ScanFinish};
use lakevault_tests::Lab;
use lakevault_tests::azurite::{BACKUP_ACCOUNT, SOURCE_ACCOUNT};
use lakevault_tests::scenario::{coordinator_json, drain};
use lakevault_tests::synthetic::{Lake, Layout, Mix, Side, SyntheticEndpoint};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A lab whose blob services are the synthetic endpoint serving `lake` as the container
/// `lake` of both accounts (source and backup sides), with `latency` per page; returns
/// the lab, the endpoint and a config routed through it.
async fn synthetic_lab(
    queue: &str,
    lake: Lake,
    latency: Duration,
) -> (Lab, SyntheticEndpoint, std::path::PathBuf) {
    let lab = Lab::start(queue, &["lake"]).expect("lab");
    // The containers exist on the emulator: their existence checks are relayed to it.
    lab.src
        .ensure_container("lake")
        .await
        .expect("source container");
    lab.bak
        .ensure_container("lake")
        .await
        .expect("backup container");
    let endpoint = SyntheticEndpoint::start(&lab.upstream(SOURCE_ACCOUNT), lake, latency)
        .await
        .expect("endpoint");
    endpoint.serve(SOURCE_ACCOUNT, "lake", Side::Source);
    endpoint.serve(BACKUP_ACCOUNT, "lake", Side::Backup);
    let config = lab.dir.path().join("synthetic.toml");
    std::fs::write(&config, lab.config_with_blob_service_at(&endpoint.url())).expect("config");
    (lab, endpoint, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_scans_and_copies_a_generated_lake_exactly() {
    let lake = Lake::new(
        Layout {
            datasets: 12,
            days: 4,
            files: 500,
        },
        Mix {
            new: 0.02,
            changed: 0.02,
            deleted: 0.01,
        },
        11,
    );
    let expected = lake.expected();
    let (lab, endpoint, config) = synthetic_lab("synthetic", lake, Duration::ZERO).await;

    let cap = (expected.deleted + 1).to_string();
    let report = coordinator_json(
        &config,
        &["backup", "--distributed-scan", "--max-tombstones", &cap],
    )
    .expect("coordinator");
    let job = report["job_id"].as_str().expect("job id").to_string();
    assert_eq!(report["containers"][0]["scanned_by"], "workers", "{report}");
    assert!(
        report["containers"][0]["shards"].as_u64() > Some(1),
        "{report}"
    );

    let pass = drain(&config, 2, &[]).expect("workers");
    assert_eq!(pass.poisoned, 0);
    assert_eq!(pass.copied, expected.new + expected.changed);

    let finish: ScanFinish = ledger::get_json(&lab.bak, &ledger::scan_finish_name(&job, "lake"))
        .await
        .expect("ledger")
        .expect("the last shard's worker finished the container");
    assert!(finish.failures.is_empty(), "{:?}", finish.failures);
    assert_eq!(
        (
            finish.counts.new,
            finish.counts.changed,
            finish.counts.unchanged,
            finish.counts.deleted_in_source,
        ),
        (
            expected.new,
            expected.changed,
            expected.unchanged,
            expected.deleted
        )
    );
    assert_eq!(finish.tombstones, expected.deleted);

    // Every write reached the endpoint and was accepted: a copy per new or changed blob,
    // the replaced version of each changed one kept as a snapshot, a tombstone tag per
    // deletion; and every blob of each side was generated into a listing.
    let stats = endpoint.stats();
    assert_eq!(
        stats.blobs_written.load(Ordering::Relaxed),
        expected.new + expected.changed
    );
    assert_eq!(stats.snapshots.load(Ordering::Relaxed), expected.changed);
    assert_eq!(stats.tags_written.load(Ordering::Relaxed), expected.deleted);
    assert!(stats.source_entries.load(Ordering::Relaxed) >= expected.source_blobs());
    assert!(stats.backup_entries.load(Ordering::Relaxed) >= expected.backup_blobs());
}

/// The scan-shape probe (`plan/src/probe.rs`) costs four pages; its measure of a
/// container is remembered in the backup account's state container, so the next run of
/// the same container plans the same shape without them, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_run_reuses_the_remembered_probe_and_plans_the_same_shape() {
    let lake = Lake::new(
        Layout {
            datasets: 10,
            days: 3,
            files: 1_000,
        },
        Mix {
            new: 0.01,
            changed: 0.0,
            deleted: 0.0,
        },
        3,
    );
    let expected = lake.expected();
    // A latency at which the probe's choice does not depend on this machine's noise:
    // parallel (two pages at once take as long as one), as many listings as allowed.
    let (_lab, endpoint, config) =
        synthetic_lab("probememo", lake, Duration::from_millis(150)).await;

    let source_pages = || endpoint.stats().source_pages.load(Ordering::Relaxed);
    let plan = |args: &[&str]| {
        let before = source_pages();
        let report = coordinator_json(&config, &[&["backup"], args].concat())
            .unwrap_or_else(|e| panic!("{e:#}"));
        let c = report["containers"][0].clone();
        assert_eq!(c["new"].as_u64(), Some(expected.new), "{report}");
        let shape = (c["shards"].as_u64(), c["scan_parallelism"].as_u64());
        let reason = c["shape"].as_str().unwrap_or_default().to_string();
        (shape, reason, source_pages() - before)
    };
    // A dry run probes and leaves nothing behind; the first run probes and remembers.
    let (_, dry_reason, _) = plan(&["--dry-run"]);
    assert!(!dry_reason.contains("as probed at"), "{dry_reason}");
    let (first_shape, first_reason, first_pages) = plan(&[]);
    assert!(!first_reason.contains("as probed at"), "{first_reason}");
    let (Some(_), Some(parallelism)) = first_shape else {
        panic!("no shape: {first_reason}")
    };
    assert!(parallelism > 1, "{first_reason}");

    // The next run: the same shape, without the probe's four pages. The same shape given
    // on the command line (no probe) lists the same pages.
    let (shape, reason, pages) = plan(&["--dry-run"]);
    assert!(reason.contains("as probed at"), "{reason}");
    assert_eq!(shape, first_shape);
    let shards = (parallelism * 4).to_string();
    let parallelism = parallelism.to_string();
    let (given_shape, _, given_pages) = plan(&[
        "--dry-run",
        "--shards",
        &shards,
        "--scan-parallelism",
        &parallelism,
    ]);
    assert_eq!(given_shape, first_shape);
    assert_eq!((first_pages, pages), (given_pages + 4, given_pages));
}
