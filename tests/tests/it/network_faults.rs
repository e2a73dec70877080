//! Faults on the network path, injected by a proxy in front of the emulator.
//!
//! - A listing that fails halfway through a container: the container is reported failed
//!   with the reason, in the plan and in the ledger; its watermark does not move; the
//!   copies already enqueued stay valid; and a re-run completes the backup.
//! - A source the backup service cannot reach (but the worker can): every item is
//!   poisoned with that explanation — never counted as deleted in the source.
//! - A worker stuck on a stalled source: the first SIGTERM drains, the second ends the
//!   process at once (exit 130); the held messages come back and nothing is lost.

use lakevault_tests::Lab;
use lakevault_tests::azurite::SOURCE_ACCOUNT;
use lakevault_tests::fault_proxy::{Fault, FaultProxy, Rule};
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{Spawned, batch_worker, checked, coordinator, drain};
use std::path::PathBuf;

/// A config whose source account is reached through `proxy`.
fn through_proxy(lab: &Lab, proxy: &FaultProxy) -> PathBuf {
    let direct = lab.azurite.blob_endpoint(SOURCE_ACCOUNT);
    let text = std::fs::read_to_string(&lab.path)
        .expect("config")
        .replace(&direct, &format!("{}/{SOURCE_ACCOUNT}", proxy.url()));
    assert!(
        text.contains(&proxy.url()),
        "the source endpoint is in the config"
    );
    let path = lab.dir.path().join("through-proxy.toml");
    std::fs::write(&path, text).expect("config");
    path
}

async fn start_proxy(lab: &Lab) -> FaultProxy {
    let direct = lab.azurite.blob_endpoint(SOURCE_ACCOUNT);
    let base = direct.trim_end_matches(&format!("/{SOURCE_ACCOUNT}"));
    FaultProxy::start(base).await.expect("proxy")
}

fn run(path: &std::path::Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = coordinator(path)
        .expect("bin")
        .args(args)
        .args(["--output", "json"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?} stderr {stderr}", out.stdout));
    (out.status.code().unwrap_or(-1), json, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_fails_halfway_fails_the_container_and_a_rerun_completes() {
    let lab = Lab::start("halfway", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 200,
        large_bytes: 0,
        seed: 9,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");

    // The coordinator reaches the source through the proxy; workers go direct.
    let proxy = start_proxy(&lab).await;
    let path = through_proxy(&lab, &proxy);

    // Shard listings of the source fail persistently from the fourth on (the planner's
    // hierarchical listings pass): three shards are planned, then the container fails.
    proxy.add(
        Rule::new(Fault::Status(500, "InternalError"))
            .method("GET")
            .containing(format!("/{SOURCE_ACCOUNT}/data?"))
            .containing("comp=list")
            .lacking("delimiter")
            .skip(3),
    );
    let (code, report, stderr) = run(
        &path,
        &["backup", "--shards", "16", "--scan-parallelism", "1"],
    );
    assert_eq!(code, 1, "{report}\n{stderr}");
    assert!(proxy.faulted() > 0);
    let failed = report["failed"].as_array().expect("failed list");
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["container"], "data");
    let reason = failed[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("InternalError"), "{reason}");
    assert!(
        report["containers"].as_array().is_some_and(Vec::is_empty),
        "{report}"
    );
    let job = report["job_id"].as_str().expect("job").to_string();
    let first_stderr = stderr.clone();

    // The ledger records the job with the failed container and its reason.
    proxy.clear();
    let partial = drain(&lab.path, 1, &[]).expect("workers");
    assert!(
        partial.copied > 0 && partial.copied < 200,
        "{partial:?}\n{first_stderr}"
    );
    let (code, status, _) = run(&path, &["status", &job]);
    assert_eq!(code, 1, "{status}");
    assert_eq!(status["state"], "completed_with_failures", "{status}");
    assert_eq!(status["failed_containers"][0]["container"], "data");
    assert!(
        status["failed_containers"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("InternalError")),
        "{status}"
    );

    // No watermark moved: an incremental run scans the container in full.
    let mark = lakevault_plan::watermark::read(&lab.bak, "source", "data")
        .await
        .expect("read watermark");
    assert!(mark.is_none(), "a failed container keeps no watermark");

    // A re-run plans the rest and the backup is complete.
    let (code, report, stderr) = run(&path, &["backup", "--mode", "incremental"]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["containers"][0]["mode"], "full");
    let rest = drain(&lab.path, 1, &[]).expect("workers");
    assert_eq!(partial.copied + rest.copied, 200, "{rest:?}");
    lab.assert_backup_matches(&[("data", "data")], 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_the_backup_service_cannot_reach_is_poisoned_not_counted_as_gone() {
    let lab = Lab::start("unreachable", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 12,
        large_bytes: 0,
        seed: 4,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    // Everyone uses the proxy for the source, so copy-source URLs name the proxy, which
    // the emulator's blob service (the copy destination) cannot resolve: the situation of a
    // firewall or private endpoint between two real accounts.
    let proxy = start_proxy(&lab).await;
    let path = through_proxy(&lab, &proxy);
    let (code, report, _) = run(&path, &["backup"]);
    assert_eq!(code, 0, "{report}");
    let out = checked(
        batch_worker(&path, &[])
            .expect("bin")
            .output()
            .expect("worker"),
        "worker",
    )
    .expect("worker");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["source_gone"].as_u64(), Some(0), "{summary}");
    assert_eq!(summary["copied"].as_u64(), Some(0), "{summary}");
    assert_eq!(summary["poisoned"].as_u64(), Some(12), "{summary}");
    let poison = lakevault_common::queue::AzureQueue::new(
        "unreachable-poison",
        lab.bak.queue("unreachable-poison").expect("client"),
    );
    let records = lakevault_common::queue::WorkQueue::receive(
        &poison,
        32,
        std::time::Duration::from_secs(30),
    )
    .await
    .expect("receive");
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| r
            .text
            .contains("cannot read this source blob although the worker can")),
        "{:?}",
        records.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_through_throttling_and_cut_connections_loses_nothing() {
    use lakevault_tests::azurite::BACKUP_ACCOUNT;
    let lab = Lab::start("flaky", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 1000,
        large_bytes: 0,
        seed: 17,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");

    // The backup account's blob and queue services are reached through proxies that
    // throttle and cut connections. (The source stays direct: the emulator resolves copy
    // sources by its own address only.)
    let blob_direct = lab.azurite.blob_endpoint(BACKUP_ACCOUNT);
    let queue_direct = lab.azurite.queue_endpoint(BACKUP_ACCOUNT);
    let base = |url: &str| {
        url.trim_end_matches(&format!("/{BACKUP_ACCOUNT}"))
            .to_string()
    };
    let blob_proxy = FaultProxy::start(&base(&blob_direct)).await.expect("proxy");
    let queue_proxy = FaultProxy::start(&base(&queue_direct))
        .await
        .expect("proxy");
    // Copies, tag reads and snapshots: every 7th write throttled, every 11th read cut.
    blob_proxy.add(
        Rule::new(Fault::Status(503, "ServerBusy"))
            .method("PUT")
            .every(7),
    );
    blob_proxy.add(Rule::new(Fault::Reset).method("GET").every(11));
    // Queue: every 5th request throttled, every 3rd enqueue cut after it happened (the
    // retry then enqueues a duplicate, which must be harmless).
    queue_proxy.add(Rule::new(Fault::Status(503, "ServerBusy")).every(5));
    queue_proxy.add(Rule::new(Fault::Reset).method("POST").every(3));
    let text = std::fs::read_to_string(&lab.path)
        .expect("config")
        .replace(
            &blob_direct,
            &format!("{}/{BACKUP_ACCOUNT}", blob_proxy.url()),
        )
        .replace(
            &queue_direct,
            &format!("{}/{BACKUP_ACCOUNT}", queue_proxy.url()),
        );
    let path = lab.dir.path().join("flaky.toml");
    std::fs::write(&path, text).expect("config");

    let (code, report, stderr) = run(&path, &["backup"]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let pass = drain(&path, 2, &["--visibility-timeout-secs", "10"]).expect("workers");
    assert_eq!(pass.poisoned, 0, "{pass:?}");
    assert!(
        pass.lowest_concurrency.is_some_and(|c| c < 16),
        "busy answers lower the copy concurrency: {pass:?}"
    );
    assert!(
        blob_proxy.faulted() > 50 && queue_proxy.faulted() > 10,
        "faults injected: blob {}, queue {}",
        blob_proxy.faulted(),
        queue_proxy.faulted()
    );
    lab.assert_backup_matches(&[("data", "data")], 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_stream_fallback_an_unreachable_source_is_copied_through_the_worker() {
    let lab = Lab::start("streamed", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 12,
        large_bytes: 20 * 1024 * 1024,
        seed: 6,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    let proxy = start_proxy(&lab).await;
    let path = through_proxy(&lab, &proxy);
    let (code, report, _) = run(&path, &["backup"]);
    assert_eq!(code, 0, "{report}");
    // Blocks of 8 MiB for the ranged path too, so the 20 MiB blob takes it.
    let out = checked(
        batch_worker(
            &path,
            &[
                "--stream-fallback",
                "--sync-copy-max-mib",
                "8",
                "--block-size-mib",
                "8",
            ],
        )
        .expect("bin")
        .output()
        .expect("worker"),
        "worker",
    )
    .expect("worker");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(
        (summary["copied"].as_u64(), summary["poisoned"].as_u64()),
        (Some(13), Some(0)),
        "{summary}"
    );
    lab.assert_backup_matches(&[("data", "data")], 13).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_a_stuck_worker_at_once_and_loses_nothing() {
    let lab = Lab::start("second-signal", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 6,
        large_bytes: 0,
        seed: 21,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    lab.coordinator_ok(&["backup"]);

    // The worker reaches the source through a proxy that never answers a blob request.
    let proxy = start_proxy(&lab).await;
    let path = through_proxy(&lab, &proxy);
    proxy.add(Rule::new(Fault::Hang).containing(format!("/{SOURCE_ACCOUNT}/data/")));
    let mut guard = Spawned::start(
        lakevault_tests::scenario::worker(&path)
            .expect("bin")
            .args([
                "run",
                "--concurrency",
                "1",
                "--prefetch",
                "1",
                // Long: only the second signal can end the drain early.
                "--drain-timeout-secs",
                "600",
                "--visibility-timeout-secs",
                "5",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    )
    .expect("spawn");
    let child = guard.child();
    let started = std::time::Instant::now();
    while proxy.faulted() == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the worker never reached the source"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let signal = |child: &std::process::Child| {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    };
    signal(child);
    // The first signal drains: the stuck copy keeps the worker alive.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "a drain waits for work in flight"
    );
    signal(child);
    let stopped_at = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            stopped_at.elapsed() < std::time::Duration::from_secs(30),
            "the second signal did not end the worker"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("second signal"), "{stderr}");

    // The held message reappears after its visibility timeout; a worker on the direct
    // path finishes the backup.
    drop(proxy);
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let rest = drain(&lab.path, 1, &[]).expect("workers");
    assert_eq!(rest.poisoned, 0, "{rest:?}");
    lab.assert_backup_matches(&[("data", "data")], 6).await;
}

/// I5 with real processes: the backup account answers nothing but `503 ServerBusy` until
/// every item has been tried three times (each try is 5 requests: the SDK retries 4
/// times), more than the 2 attempts an item has: the worker used to poison them all. It
/// waits the outage out, uses up no attempt, poisons nothing, and copies everything once
/// the service answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_every_retry_poisons_nothing() {
    use lakevault_tests::azurite::BACKUP_ACCOUNT;
    let lab = Lab::start("outage", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 4,
        large_bytes: 0,
        seed: 23,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    lab.coordinator_ok(&["backup"]);

    let blob_direct = lab.azurite.blob_endpoint(BACKUP_ACCOUNT);
    let base = blob_direct.trim_end_matches(&format!("/{BACKUP_ACCOUNT}"));
    let proxy = FaultProxy::start(base).await.expect("proxy");
    proxy.add(Rule::new(Fault::Status(503, "ServerBusy")));
    let text = std::fs::read_to_string(&lab.path)
        .expect("config")
        .replace(&blob_direct, &format!("{}/{BACKUP_ACCOUNT}", proxy.url()));
    let path = lab.dir.path().join("outage.toml");
    std::fs::write(&path, text).expect("config");

    let child = Spawned::start(
        &mut batch_worker(&path, &["--max-attempts", "2", "--concurrency", "4"]).expect("bin"),
    )
    .expect("worker");
    let started = std::time::Instant::now();
    while proxy.faulted() < 4 * 5 * 3 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(180),
            "the worker stopped trying: {} requests failed",
            proxy.faulted()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    proxy.clear();

    let out = checked(child.wait_with_output().expect("worker"), "worker").expect("worker");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["poisoned"].as_u64(), Some(0), "{summary}");
    assert_eq!(summary["copied"].as_u64(), Some(4), "{summary}");
    assert!(
        summary["waiting"].as_u64().is_some_and(|w| w > 0),
        "{summary}"
    );
    lab.assert_backup_matches(&[("data", "data")], 4).await;
}

/// A worker told to stop while the storage service, the queue and whoever read its output
/// are all gone (a node losing its network, a log collector that died) still ends within
/// its drain timeout and the SDK's bounded retries. It used to ignore the signal: the
/// notice it printed first panicked on the closed pipe, and the stop was never given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_during_a_total_outage_still_exits() {
    use lakevault_tests::azurite::BACKUP_ACCOUNT;
    let mut lab = Lab::start("total-outage", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 8,
        large_bytes: 0,
        seed: 29,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    lab.coordinator_ok(&["backup"]);
    let blob_direct = lab.azurite.blob_endpoint(BACKUP_ACCOUNT);
    let base = blob_direct.trim_end_matches(&format!("/{BACKUP_ACCOUNT}"));
    let proxy = FaultProxy::start(base).await.expect("proxy");
    proxy.add(Rule::new(Fault::Status(503, "ServerBusy")));
    let text = std::fs::read_to_string(&lab.path)
        .expect("config")
        .replace(&blob_direct, &format!("{}/{BACKUP_ACCOUNT}", proxy.url()));
    let path = lab.dir.path().join("total-outage.toml");
    std::fs::write(&path, text).expect("config");
    let mut worker = Spawned::start(
        &mut batch_worker(&path, &["--concurrency", "2", "--drain-timeout-secs", "5"])
            .expect("bin"),
    )
    .expect("worker");
    let started = std::time::Instant::now();
    while proxy.faulted() < 10 {
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Everything goes: the proxy, the emulator with the queue, and whoever read the
    // worker's output (a log collector that died).
    drop(worker.child().stdout.take());
    drop(worker.child().stderr.take());
    drop(proxy);
    lab.azurite.stop();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let stopped = std::time::Instant::now();
    loop {
        if let Some(status) = worker.child().try_wait().expect("wait") {
            assert!(status.code().is_some(), "{status:?}");
            break;
        }
        // Generous: detects a worker that never ends, not a performance target.
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(120),
            "the worker did not exit within 2 minutes of SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
