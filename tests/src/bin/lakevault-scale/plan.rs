//! Plans measured: the coordinator lists and diffs the whole lake itself.

use crate::{Args, Bench, RUN_TIMEOUT, Setup};
use anyhow::{Context, bail};
use lakevault_tests::measure::{own_cpu_seconds, run_measured};
use lakevault_tests::synthetic::Expected;
use std::fmt::Write as _;
use std::process::Command;
use std::sync::atomic::Ordering;

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanResult {
    names: u64,
    config: String,
    args: Vec<String>,
    latency_ms: u64,
    wall_seconds: f64,
    /// The coordinator's own `elapsed_seconds` (planning, without process start-up).
    plan_seconds: f64,
    cpu_seconds: f64,
    peak_rss_mib: f64,
    /// Entries the endpoint served (source + backup pages, blobs and prefixes).
    listed_entries: u64,
    list_pages: u64,
    cpu_us_per_listed_entry: f64,
    /// CPU the endpoint (this process) spent generating pages during the run.
    endpoint_cpu_seconds: f64,
    shards: u64,
    /// Shards listed at once, and why, when the coordinator chose.
    scan_parallelism: u64,
    shape: Option<String>,
    messages: u64,
    new: u64,
    changed: u64,
    unchanged: u64,
    deleted: u64,
    load_at_start: f64,
}

fn counts(report: &serde_json::Value) -> (u64, u64, u64, u64, u64, u64) {
    let containers = report["containers"].as_array().cloned().unwrap_or_default();
    let sum = |k: &str| -> u64 { containers.iter().map(|c| c[k].as_u64().unwrap_or(0)).sum() };
    (
        sum("new"),
        sum("changed"),
        sum("unchanged"),
        sum("deleted_in_source"),
        sum("shards"),
        sum("messages"),
    )
}

/// Plans the lake once with `setup`'s arguments, measured.
pub async fn run(
    bench: &Bench<'_>,
    setup: &Setup,
    names: u64,
    expected: Expected,
    run: usize,
) -> anyhow::Result<PlanResult> {
    let queue = format!("scale-{run}");
    let config = bench.config(&queue)?;
    let stats = bench.endpoint.stats();
    let before = (
        stats.source_pages.load(Ordering::Relaxed) + stats.backup_pages.load(Ordering::Relaxed),
        stats.source_entries.load(Ordering::Relaxed) + stats.backup_entries.load(Ordering::Relaxed),
        own_cpu_seconds(),
    );
    let mut command = Command::new(bench.bin("lakevault-coordinator")?);
    command
        .arg("--config")
        .arg(&config)
        .args(["backup", "--output", "json", "--job-id"])
        .arg(format!("scale-{run}"))
        // Tombstones are held until the container's decision; the cap is what bounds them.
        .arg("--max-tombstones")
        .arg((expected.deleted + 1).to_string())
        .args(&setup.args)
        .env_remove("RUST_LOG");
    let measured = tokio::task::spawn_blocking(move || run_measured(&mut command, RUN_TIMEOUT))
        .await
        .context("measurement thread")??;
    let pages = stats.source_pages.load(Ordering::Relaxed)
        + stats.backup_pages.load(Ordering::Relaxed)
        - before.0;
    let entries = stats.source_entries.load(Ordering::Relaxed)
        + stats.backup_entries.load(Ordering::Relaxed)
        - before.1;
    let endpoint_cpu = own_cpu_seconds() - before.2;
    bench.drop_queue(&queue).await;
    if !measured.status.success() {
        bail!(
            "the coordinator ({}) exited with {}:\n{}",
            setup.label,
            measured.status,
            String::from_utf8_lossy(&measured.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&measured.stdout)
        .with_context(|| format!("report: {}", String::from_utf8_lossy(&measured.stdout)))?;
    if report["failed"].as_array().is_some_and(|a| !a.is_empty()) {
        bail!(
            "the coordinator reports failed containers: {}",
            report["failed"]
        );
    }
    let (new, changed, unchanged, deleted, shards, messages) = counts(&report);
    let got = Expected {
        new,
        changed,
        unchanged,
        deleted,
    };
    if got != expected {
        bail!(
            "PLAN MISMATCH at {names} names [{}]: the coordinator planned {got:?}, the lake has {expected:?}",
            setup.label
        );
    }
    Ok(PlanResult {
        names,
        config: setup.label.clone(),
        args: setup.args.clone(),
        latency_ms: bench.latency_ms,
        wall_seconds: measured.wall_seconds,
        plan_seconds: report["elapsed_seconds"].as_f64().unwrap_or(f64::NAN),
        cpu_seconds: measured.cpu_seconds,
        peak_rss_mib: measured.peak_rss_kib as f64 / 1024.0,
        listed_entries: entries,
        list_pages: pages,
        cpu_us_per_listed_entry: measured.cpu_seconds * 1e6 / entries.max(1) as f64,
        endpoint_cpu_seconds: endpoint_cpu,
        shards,
        scan_parallelism: report["containers"][0]["scan_parallelism"]
            .as_u64()
            .unwrap_or(0),
        shape: report["containers"][0]["shape"].as_str().map(String::from),
        messages,
        new,
        changed,
        unchanged,
        deleted,
        load_at_start: measured.load_at_start,
    })
}

impl PlanResult {
    /// One line for the console.
    pub fn summary(&self) -> String {
        format!(
            "[{}] {:.1}s wall, {:.1}s CPU ({:.2} µs/entry), {:.1} MiB peak, {} pages, {} shards, {} at once{}",
            self.config,
            self.wall_seconds,
            self.cpu_seconds,
            self.cpu_us_per_listed_entry,
            self.peak_rss_mib,
            self.list_pages,
            self.shards,
            self.scan_parallelism,
            self.shape
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        )
    }
}

/// The plans' table.
pub fn markdown(args: &Args, results: &[PlanResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Synthetic endpoint, {} ms per List Blobs page; mix: {:.3}% new, {:.3}% changed, {:.4}% deleted of the names.\n",
        args.latency_ms,
        args.new * 100.0,
        args.changed * 100.0,
        args.deleted * 100.0
    );
    out.push_str("| names | configuration | wall s | plan s | CPU s | CPU µs / listed entry | peak RSS MiB | pages | shards | to copy | messages | endpoint CPU s | load |\n");
    out.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {} | {} | {} | {} | {:.1} | {:.2} |",
            r.names,
            r.config,
            r.wall_seconds,
            r.plan_seconds,
            r.cpu_seconds,
            r.cpu_us_per_listed_entry,
            r.peak_rss_mib,
            r.list_pages,
            r.shards,
            r.new + r.changed,
            r.messages,
            r.endpoint_cpu_seconds,
            r.load_at_start
        );
    }
    out
}
