//! Faults with real processes: a worker killed mid-run, a worker stopped by SIGTERM, a
//! SAS that expires between planning and copying, sources that change after planning, and
//! duplicate deliveries. In every case nothing is lost and the backup ends up verified.

use futures::StreamExt;
use lakevault_common::queue::{AzureQueue, WorkQueue};
use lakevault_common::sas;
use lakevault_common::secret::SecretString;
use lakevault_common::storage::StorageAccount;
use lakevault_common::wire::WorkMessage;
use lakevault_tests::Lab;
use lakevault_tests::azurite::{Azurite, SOURCE_ACCOUNT, SOURCE_KEY};
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{PassReport, Spawned, collect, drain, plan, worker};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

struct Setup {
    azurite: Azurite,
    _dir: tempfile::TempDir,
    path: PathBuf,
    src: StorageAccount,
    bak: StorageAccount,
    spec: LakeSpec,
}

async fn setup(queue: &str, blobs: usize) -> Setup {
    let Lab {
        azurite,
        dir,
        path,
        config: _,
        src,
        bak,
    } = Lab::start(queue, &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs,
        large_bytes: 0,
        seed: 11,
    };
    lake::seed(&src, &spec).await.expect("seed");
    Setup {
        azurite,
        _dir: dir,
        path,
        src,
        bak,
        spec,
    }
}

async fn assert_verified(s: &Setup) {
    let report = lake::verify(&s.src, &s.bak, &[("data".into(), "data".into())])
        .await
        .expect("verify");
    assert_eq!(report.blobs, s.spec.blobs as u64);
    assert!(
        report.problems.is_empty(),
        "{:#?}",
        &report.problems[..report.problems.len().min(10)]
    );
}

async fn backup_count(s: &Setup) -> usize {
    let client = s.bak.container("data").expect("client");
    if !client.exists().await.unwrap_or(false) {
        return 0;
    }
    let mut pager = client.list_blobs(None).expect("list");
    let mut n = 0;
    while let Some(item) = pager.next().await {
        item.expect("item");
        n += 1;
    }
    n
}

fn queue(s: &Setup, name: &str) -> AzureQueue {
    AzureQueue::new(name, s.bak.queue(name).expect("queue"))
}

async fn wait_until_some_copied(s: &Setup) -> usize {
    let started = Instant::now();
    loop {
        let n = backup_count(s).await;
        if n > 0 {
            return n;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress within a minute"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_leaves_its_work_to_another() {
    let s = setup("killed", 800).await;
    let (planned, _) = plan(&s.path).expect("plan");
    assert_eq!(planned, 800);
    let mut victim = Spawned::start(
        worker(&s.path)
            .expect("bin")
            .args([
                "run",
                "--concurrency",
                "1",
                "--prefetch",
                "1",
                "--visibility-timeout-secs",
                "4",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("spawn");
    wait_until_some_copied(&s).await;
    victim.child().kill().expect("SIGKILL");
    victim.child().wait().expect("reaped");
    let at_kill = backup_count(&s).await;
    assert!(
        at_kill < 800,
        "the worker must be killed mid-run (had copied {at_kill})"
    );
    // The survivor waits for the dead worker's message to become visible again. A copy
    // the victim had started may still complete at the service after the count above:
    // the survivor then finds it current instead of copying it.
    let rest = drain(&s.path, 1, &[]).expect("survivor");
    assert!(
        (rest.copied + rest.already_current) as usize + at_kill >= 800,
        "{rest:?}, {at_kill} before the kill"
    );
    assert_verified(&s).await;
    assert_eq!(queue(&s, "killed").approximate_len().await.expect("len"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_releases_and_nothing_is_lost() {
    let s = setup("sigterm", 800).await;
    plan(&s.path).expect("plan");
    let child = Spawned::start(
        worker(&s.path)
            .expect("bin")
            .args([
                "run",
                "--concurrency",
                "1",
                "--prefetch",
                "1",
                "--drain-timeout-secs",
                "1",
                // Far apart: a held message left invisible would take two minutes to come
                // back; retry messages (transient failures under load) one or two seconds.
                "--visibility-timeout-secs",
                "120",
                "--retry-delay-secs",
                "1",
                "--summary-json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("spawn");
    wait_until_some_copied(&s).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let stopped_at = Instant::now();
    let out = child.wait_with_output().expect("wait");
    // Generous: detects a drain that does not end, not a performance target.
    assert!(stopped_at.elapsed() < Duration::from_secs(60));
    assert!(
        out.status.success(),
        "graceful stop exits 0: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(
        summary["poisoned"], 0,
        "interrupted work is never poisoned: {summary}"
    );
    assert!(
        summary["copied"].as_u64().unwrap_or(0) < 800,
        "stopped mid-run: {summary}"
    );
    // Nothing was left invisible: the message the worker held is visible at once (its
    // visibility timeout is 60 s).
    let q = queue(&s, "sigterm");
    let queued = q.approximate_len().await.expect("queue length");
    assert!(queued > 0, "work was left for the next worker");
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (seen.len() as u64) < queued && Instant::now() < deadline {
        for m in q
            .receive(32, Duration::from_secs(1))
            .await
            .expect("receive")
        {
            seen.insert(m.id);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        seen.len() as u64,
        queued,
        "every queued message comes back within seconds: the interrupted one was released"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rest = drain(&s.path, 1, &[]).expect("next worker");
    assert_eq!(rest.poisoned, 0);
    assert_verified(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_sas_stops_the_worker_without_dropping_work() {
    let s = setup("sasexpiry", 50).await;
    // Same topology, but the source is reached through a SAS token file.
    let token_file = s._dir.path().join("source.sas");
    let key = SecretString::new(SOURCE_KEY);
    let valid = || {
        sas::account_sas(
            SOURCE_ACCOUNT,
            &key,
            "rl",
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        )
        .expect("sas")
    };
    std::fs::write(&token_file, valid()).expect("token");
    let text = std::fs::read_to_string(&s.path).expect("config");
    let start = text.find("[accounts.source]").expect("source section");
    let end = text.find("[accounts.backup]").expect("backup section");
    let source_section = format!(
        "[accounts.source]\nkind = \"sas\"\naccount_name = \"{SOURCE_ACCOUNT}\"\nsas_token_file = \"{}\"\nblob_endpoint = \"{}\"\nqueue_endpoint = \"{}\"\n\n",
        token_file.display(),
        s.azurite.blob_endpoint(SOURCE_ACCOUNT),
        s.azurite.queue_endpoint(SOURCE_ACCOUNT)
    );
    let sas_config = s._dir.path().join("sas.toml");
    std::fs::write(
        &sas_config,
        format!("{}{source_section}{}", &text[..start], &text[end..]),
    )
    .expect("write");

    // A worker starts with a valid token and waits for work.
    let idle_worker = Spawned::start(
        worker(&sas_config)
            .expect("bin")
            .args([
                "run",
                "--exit-when-idle",
                "60",
                "--visibility-timeout-secs",
                "2",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("spawn");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The token expires; then work arrives (planned with the shared-key config).
    let expired = sas::account_sas(
        SOURCE_ACCOUNT,
        &key,
        "rl",
        time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
    )
    .expect("sas");
    std::fs::write(&token_file, expired).expect("expire");
    let (planned, messages) = plan(&s.path).expect("plan");
    assert_eq!(planned, 50);
    let out = idle_worker.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("expired") && stderr.contains("no work was dropped"),
        "{stderr}"
    );
    assert_eq!(
        queue(&s, "sasexpiry").approximate_len().await.expect("len"),
        messages,
        "work still queued"
    );
    assert_eq!(backup_count(&s).await, 0);
    let poison = queue(&s, "sasexpiry-poison");
    assert!(
        poison
            .approximate_len()
            .await
            .map(|n| n == 0)
            .unwrap_or(true),
        "nothing poisoned"
    );

    // A worker started with the expired token refuses to start, naming the account.
    let out = worker(&sas_config)
        .expect("bin")
        .args(["run", "--exit-when-idle", "1"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("account `source`") && stderr.contains("expired at"),
        "{stderr}"
    );
    assert_eq!(
        queue(&s, "sasexpiry").approximate_len().await.expect("len"),
        messages
    );

    // A fresh token in the same file: the work completes.
    std::fs::write(&token_file, valid()).expect("renew");
    let mut report = PassReport::default();
    let child = lakevault_tests::scenario::batch_worker(&sas_config, &[])
        .expect("bin")
        .spawn()
        .expect("spawn");
    collect(vec![child], &mut report).expect("worker");
    assert_eq!(report.copied, 50);
    assert_verified(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_changed_after_planning_are_copied_at_their_new_version() {
    let s = setup("changed", 120).await;
    let (planned, _) = plan(&s.path).expect("plan");
    assert_eq!(planned, 120);
    // Rewrite blobs between planning and copying: two of the 1-4 MiB ones (planned for
    // the ranged path below) and three small ones.
    for i in [0usize, 50] {
        lake::raw_put_blob(
            &s.azurite.blob_endpoint(SOURCE_ACCOUNT),
            SOURCE_ACCOUNT,
            SOURCE_KEY,
            "data",
            &lake::blob_name(i),
            format!("rewritten {i}").as_bytes(),
            &[("Rewritten", "yes")],
        )
        .expect("rewrite");
    }
    lake::modify(&s.src, &s.spec, 3, 7).await.expect("modify");
    // A 1 MiB single-copy limit and 1 MiB ranges: the larger blobs take the ranged path.
    let report = drain(
        &s.path,
        2,
        &["--sync-copy-max-mib", "1", "--block-size-mib", "1"],
    )
    .expect("workers");
    assert_eq!((report.copied, report.poisoned), (120, 0), "{report:?}");
    // verify() checks the recorded ETag against the source's current one.
    assert_verified(&s).await;
    let (again, _) = plan(&s.path).expect("replan");
    assert_eq!(again, 0, "the records name the versions that were copied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_are_harmless() {
    let s = setup("dupes", 300).await;
    plan(&s.path).expect("plan");
    let q = queue(&s, "dupes");
    let received = q
        .receive(32, Duration::from_secs(1))
        .await
        .expect("receive");
    assert!(!received.is_empty());
    let mut duplicated_items = 0u64;
    for m in &received {
        match WorkMessage::decode(&m.text).expect("a planned message decodes") {
            WorkMessage::Batch(batch) => duplicated_items += batch.items.len() as u64,
            WorkMessage::Scan(_) => panic!("a coordinator scan plans copy batches only"),
        }
        q.send(&m.text, Duration::ZERO).await.expect("duplicate");
    }
    assert!(duplicated_items > 0);
    // One worker taking one message at a time: each item's second delivery comes after
    // its first has recorded the copy, so it must be recognised as already current (one
    // read), not copied again.
    let report = drain(&s.path, 1, &["--prefetch", "1"]).expect("workers");
    assert_eq!(report.poisoned, 0, "{report:?}");
    assert_eq!(
        report.copied, 300,
        "every blob copied exactly once: {report:?}"
    );
    assert_eq!(
        report.already_current, duplicated_items,
        "every duplicate delivery found its item current: {report:?}"
    );
    assert_verified(&s).await;
    assert_eq!(q.approximate_len().await.expect("len"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_is_extended_while_a_batch_outlasts_the_timeout() {
    // Each worker holds one message at a time and copies one blob at a time, so a batch
    // takes several times the 2 s visibility timeout. Without extension the message would
    // reappear and be copied twice; with it, every blob is copied exactly once.
    let s = setup("visibility", 700).await;
    let (planned, messages) = plan(&s.path).expect("plan");
    assert!(messages >= 2, "needs a message per worker, got {messages}");
    let started = Instant::now();
    let report = drain(
        &s.path,
        2,
        &[
            "--concurrency",
            "1",
            "--prefetch",
            "1",
            "--visibility-timeout-secs",
            "2",
        ],
    )
    .expect("workers");
    assert!(
        started.elapsed() > Duration::from_secs(4),
        "the batches must outlast the visibility timeout for this test to mean anything"
    );
    assert_eq!(
        report.copied, planned,
        "no message was processed twice: {report:?}"
    );
    assert_verified(&s).await;
}
