//! Distributed scans measured: the coordinator plans the shards and enqueues one scan task
//! each (`--distributed-scan`); a fleet of real worker processes scans them, copies what
//! they find (the synthetic endpoint accepts the copies), and the worker that records the
//! last shard finishes the container (`finish.json` in the ledger).
//!
//! The scan time runs from the coordinator's start to the moment `finish.json` can be
//! read; the workers then drain the remaining copies and exit once the queue stays empty.

use crate::{Args, Bench, CONTAINER, RUN_TIMEOUT};
use anyhow::{Context, bail};
use lakevault_common::ledger::{self, ScanFinish};
use lakevault_tests::measure::{
    Sampler, clock_ticks_per_second, load_average, own_cpu_seconds, read_all, run_measured,
};
use lakevault_tests::scenario::Spawned;
use lakevault_tests::synthetic::Expected;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often the ledger is read for the container's finish record.
const FINISH_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, serde::Serialize)]
pub struct FleetResult {
    pub names: u64,
    pub workers: usize,
    pub prefetch: usize,
    pub latency_ms: u64,
    /// From the coordinator's start until the container's finish record was readable.
    pub scan_seconds: f64,
    /// The coordinator alone: planning the shards and enqueueing the scan tasks.
    pub coordinator_seconds: f64,
    /// Until the last worker exited (its idle wait included).
    pub total_seconds: f64,
    /// CPU of the coordinator and every worker.
    pub cpu_seconds: f64,
    /// CPU the endpoint (this process) spent generating pages and answering writes.
    pub endpoint_cpu_seconds: f64,
    pub max_worker_rss_mib: f64,
    pub sum_worker_rss_mib: f64,
    pub shards: u64,
    pub list_pages: u64,
    pub listed_entries: u64,
    /// Copies the workers wrote to the endpoint (Copy Blob From URL and the like).
    pub blobs_written: u64,
    pub snapshots_written: u64,
    pub tombstones_written: u64,
    /// What the workers reported, added up.
    pub scans: u64,
    pub copied: u64,
    pub poisoned: u64,
    pub retried: u64,
    pub load_at_start: f64,
}

impl FleetResult {
    pub fn summary(&self) -> String {
        format!(
            "[{} worker(s)] scanned in {:.1}s (coordinator {:.1}s), all done in {:.1}s; {:.1}s CPU (+{:.1}s endpoint), {:.1} MiB largest worker, {} shards, {} pages, {} copies",
            self.workers,
            self.scan_seconds,
            self.coordinator_seconds,
            self.total_seconds,
            self.cpu_seconds,
            self.endpoint_cpu_seconds,
            self.max_worker_rss_mib,
            self.shards,
            self.list_pages,
            self.blobs_written
        )
    }
}

/// The endpoint's counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Counters {
    pages: u64,
    entries: u64,
    written: u64,
    snapshots: u64,
    tags: u64,
    cpu: f64,
}

fn counters(bench: &Bench<'_>) -> Counters {
    let s = bench.endpoint.stats();
    Counters {
        pages: s.source_pages.load(Ordering::Relaxed) + s.backup_pages.load(Ordering::Relaxed),
        entries: s.source_entries.load(Ordering::Relaxed)
            + s.backup_entries.load(Ordering::Relaxed),
        written: s.blobs_written.load(Ordering::Relaxed),
        snapshots: s.snapshots.load(Ordering::Relaxed),
        tags: s.tags_written.load(Ordering::Relaxed),
        cpu: own_cpu_seconds(),
    }
}

/// One distributed scan of the lake by `workers` worker processes.
pub async fn run(
    bench: &Bench<'_>,
    args: &Args,
    workers: usize,
    names: u64,
    expected: Expected,
    run: usize,
) -> anyhow::Result<FleetResult> {
    let queue = format!("fleet-{run}");
    let job = format!("fleet-{run}");
    let config = bench.config(&queue)?;
    let before = counters(bench);
    let load_at_start = load_average();
    let started = Instant::now();

    let mut coordinator = Command::new(bench.bin("lakevault-coordinator")?);
    coordinator
        .arg("--config")
        .arg(&config)
        .args([
            "backup",
            "--output",
            "json",
            "--distributed-scan",
            "--job-id",
        ])
        .arg(&job)
        .arg("--max-tombstones")
        .arg((expected.deleted + 1).to_string())
        .env_remove("RUST_LOG");
    let planned = tokio::task::spawn_blocking(move || run_measured(&mut coordinator, RUN_TIMEOUT))
        .await
        .context("measurement thread")??;
    if !planned.status.success() {
        bail!(
            "the coordinator exited with {}:\n{}",
            planned.status,
            String::from_utf8_lossy(&planned.stderr)
        );
    }
    let coordinator_seconds = started.elapsed().as_secs_f64();
    let report: serde_json::Value = serde_json::from_slice(&planned.stdout)
        .with_context(|| format!("report: {}", String::from_utf8_lossy(&planned.stdout)))?;
    let container = &report["containers"][0];
    if container["scanned_by"] != "workers" {
        bail!("the coordinator did not hand the scan out: {container}");
    }

    // The fleet, started once the scan tasks are in the queue (an idle worker backs off
    // its polling, which would add its back-off to the measure).
    let worker_bin = bench.bin("lakevault-worker")?;
    let mut fleet = Vec::with_capacity(workers);
    let mut outputs = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut command = Command::new(&worker_bin);
        command
            .arg("--config")
            .arg(&config)
            .args([
                "run",
                "--exit-when-idle",
                "3",
                "--summary-json",
                "--prefetch",
            ])
            .arg(args.worker_prefetch.to_string())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut spawned = Spawned::start(&mut command)?;
        let child = spawned.child();
        let stdout = read_all(child.stdout.take().context("worker stdout")?);
        let stderr = read_all(child.stderr.take().context("worker stderr")?);
        outputs.push((stdout, stderr));
        fleet.push(spawned);
    }
    let mut sampler = Sampler::default();
    for w in &fleet {
        sampler.watch(w.id());
    }

    let finish_name = ledger::scan_finish_name(&job, CONTAINER);
    let mut finish: Option<(ScanFinish, f64)> = None;
    let mut last_check = Instant::now() - FINISH_POLL;
    let mut exited = vec![None; workers];
    while exited.iter().any(Option::is_none) {
        sampler.sample();
        for (w, status) in fleet.iter_mut().zip(exited.iter_mut()) {
            if status.is_none() {
                *status = w.child().try_wait().context("waiting for a worker")?;
            }
        }
        if finish.is_none() && last_check.elapsed() >= FINISH_POLL {
            last_check = Instant::now();
            if let Some(f) = ledger::get_json::<ScanFinish>(&bench.lab.bak, &finish_name).await? {
                finish = Some((f, started.elapsed().as_secs_f64()));
            }
        }
        if started.elapsed() > RUN_TIMEOUT {
            bail!("the fleet of {workers} did not finish within {RUN_TIMEOUT:?}");
        }
        tokio::time::sleep(lakevault_tests::measure::POLL).await;
    }
    let total_seconds = started.elapsed().as_secs_f64();
    let after = counters(bench);
    let usage = sampler.usage(clock_ticks_per_second());
    let finish = match finish {
        Some(f) => Some(f),
        None => ledger::get_json::<ScanFinish>(&bench.lab.bak, &finish_name)
            .await?
            .map(|f| (f, total_seconds)),
    };
    bench.drop_queue(&queue).await;

    let mut summed = serde_json::Map::new();
    for ((stdout, stderr), status) in outputs.into_iter().zip(&exited) {
        let stdout = stdout
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))?;
        let stderr = stderr
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))?;
        if !status.is_some_and(|s| s.success()) {
            bail!(
                "a worker exited with {status:?}:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        let summary: serde_json::Value = serde_json::from_slice(&stdout)
            .with_context(|| format!("worker summary: {}", String::from_utf8_lossy(&stdout)))?;
        for key in ["scans", "copied", "poisoned", "retried"] {
            let sum = summed.get(key).and_then(|v| v.as_u64()).unwrap_or(0)
                + summary[key].as_u64().unwrap_or(0);
            summed.insert(key.into(), sum.into());
        }
    }
    let Some((finish, scan_seconds)) = finish else {
        bail!("the workers exited and no worker finished the container ({finish_name})");
    };
    let got = Expected {
        new: finish.counts.new,
        changed: finish.counts.changed,
        unchanged: finish.counts.unchanged,
        deleted: finish.counts.deleted_in_source,
    };
    if got != expected || !finish.failures.is_empty() {
        bail!(
            "FLEET MISMATCH at {names} names with {workers} worker(s): the shards found {got:?} (failures {:?}), the lake has {expected:?}",
            finish.failures
        );
    }
    let written = after.written - before.written;
    if written != expected.new + expected.changed {
        bail!(
            "the fleet wrote {written} copies; the lake needs {}",
            expected.new + expected.changed
        );
    }
    let get = |k: &str| summed.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    Ok(FleetResult {
        names,
        workers,
        prefetch: args.worker_prefetch,
        latency_ms: bench.latency_ms,
        scan_seconds,
        coordinator_seconds,
        total_seconds,
        cpu_seconds: planned.cpu_seconds + usage.cpu_seconds,
        endpoint_cpu_seconds: after.cpu - before.cpu,
        max_worker_rss_mib: usage.max_peak_rss_kib as f64 / 1024.0,
        sum_worker_rss_mib: usage.sum_peak_rss_kib as f64 / 1024.0,
        shards: u64::from(finish.shards),
        list_pages: after.pages - before.pages,
        listed_entries: after.entries - before.entries,
        blobs_written: written,
        snapshots_written: after.snapshots - before.snapshots,
        tombstones_written: after.tags - before.tags,
        scans: get("scans"),
        copied: get("copied"),
        poisoned: get("poisoned"),
        retried: get("retried"),
        load_at_start,
    })
}

/// The fleets' table, with each fleet's speed-up over the smallest one of the same lake.
pub fn markdown(args: &Args, results: &[FleetResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nDistributed scans, {} ms per List Blobs page, each worker holding {} message(s) at once.\n",
        args.latency_ms, args.worker_prefetch
    );
    out.push_str("| names | workers | scan s | speed-up | coordinator s | all done s | CPU s | endpoint CPU s | CPU in use (cores) | largest worker MiB | all workers MiB | shards | pages | copies | snapshots | tombstones | poisoned | load |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in results {
        let base = results
            .iter()
            .filter(|b| b.names == r.names)
            .min_by_key(|b| b.workers)
            .map_or(r.scan_seconds, |b| b.scan_seconds);
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.2}× | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {:.2} |",
            r.names,
            r.workers,
            r.scan_seconds,
            base / r.scan_seconds,
            r.coordinator_seconds,
            r.total_seconds,
            r.cpu_seconds,
            r.endpoint_cpu_seconds,
            (r.cpu_seconds + r.endpoint_cpu_seconds) / r.total_seconds,
            r.max_worker_rss_mib,
            r.sum_worker_rss_mib,
            r.shards,
            r.list_pages,
            r.blobs_written,
            r.snapshots_written,
            r.tombstones_written,
            r.poisoned,
            r.load_at_start
        );
    }
    out
}
