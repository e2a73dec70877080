//! `make bench-scale`: the coordinator's plan of 1 to 100 million blobs, on the synthetic
//! endpoint (`lakevault_tests::synthetic`): List Blobs answered from a generator with a
//! fixed latency per page, everything else (queue, ledger, watermark) on a private Azurite.
//!
//! For each size and configuration it runs the real release `lakevault-coordinator backup
//! --output json` (not a dry run: the plan's copy batches are enqueued), measures its wall
//! time, CPU time and peak RSS from `/proc`, checks the plan's counts against the lake's
//! known mix, and writes one JSON line per run and a Markdown report.
//!
//! A measurement, not a test: nothing asserts on a time. A plan whose counts differ from
//! the generated lake stops the bench (a correctness bug).

use anyhow::{Context, bail};
use clap::Parser;
use lakevault_tests::Lab;
use lakevault_tests::azurite::{BACKUP_ACCOUNT, SOURCE_ACCOUNT, repo_root};
use lakevault_tests::measure::{load_average, own_cpu_seconds, run_measured};
use lakevault_tests::synthetic::{Expected, Lake, Layout, Mix, Side, SyntheticEndpoint};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

const CONTAINER: &str = "lake";
const RUN_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

#[derive(Debug, Parser)]
#[command(
    name = "lakevault-scale",
    about = "Plans 1 to 100 million blobs on a synthetic storage endpoint and reports the coordinator's memory, CPU and time"
)]
struct Args {
    /// Names in the generated universe (source ∪ backup), ascending.
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    sizes: Vec<u64>,
    /// Latency of each List Blobs page, in milliseconds (on top of generating it).
    #[arg(long, default_value_t = 30)]
    latency_ms: u64,
    /// A configuration: a label, `=`, and the coordinator's extra arguments
    /// (`single=--shards 1 --scan-parallelism 1`). Repeatable; default: the defaults and
    /// a single pass.
    #[arg(long = "config")]
    configs: Vec<String>,
    /// Run a configuration only up to this size (`label=size`), e.g. to keep a slow
    /// configuration off the largest lake.
    #[arg(long = "max-size")]
    max_sizes: Vec<String>,
    /// Fractions of the universe new, changed and deleted in the source.
    #[arg(long, default_value_t = 0.005)]
    new: f64,
    #[arg(long, default_value_t = 0.005)]
    changed: f64,
    #[arg(long, default_value_t = 0.00001)]
    deleted: f64,
    /// Where the Markdown report goes (JSON lines go next to it, `.jsonl`).
    #[arg(long, default_value = "target/bench/scale.md")]
    report: PathBuf,
}

#[derive(Debug, Clone)]
struct Setup {
    label: String,
    args: Vec<String>,
    max_size: Option<u64>,
}

fn setups(args: &Args) -> anyhow::Result<Vec<Setup>> {
    let configs = if args.configs.is_empty() {
        vec![
            "default=".to_string(),
            "single pass=--shards 1 --scan-parallelism 1".to_string(),
        ]
    } else {
        args.configs.clone()
    };
    configs
        .iter()
        .map(|c| {
            let (label, rest) = c
                .split_once('=')
                .with_context(|| format!("--config `{c}`: expected LABEL=ARGS"))?;
            let max_size = args
                .max_sizes
                .iter()
                .filter_map(|m| m.split_once('='))
                .find(|(l, _)| *l == label)
                .map(|(_, n)| n.parse::<u64>())
                .transpose()
                .with_context(|| format!("--max-size for `{label}`"))?;
            Ok(Setup {
                label: label.to_string(),
                args: rest.split_whitespace().map(String::from).collect(),
                max_size,
            })
        })
        .collect()
}

#[derive(Debug, Clone, serde::Serialize)]
struct RunResult {
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

fn coordinator_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me
        .parent()
        .context("bench binary has no directory")?
        .join("lakevault-coordinator");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (scripts/bench-scale.sh does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The lab's config with both accounts' blob endpoints moved to the synthetic endpoint
/// and the queue renamed (one queue per run, deleted after it).
fn config_text(lab: &Lab, endpoint: &SyntheticEndpoint, queue: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&lab.path)?;
    let blob = format!("127.0.0.1:{}", lab.azurite.blob_port);
    let moved = text.replace(&blob, endpoint.url().trim_start_matches("http://"));
    let mut value: toml::Value = toml::from_str(&moved)?;
    value["queue"]["name"] = toml::Value::String(queue.to_string());
    Ok(toml::to_string(&value)?)
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

/// What every run shares: the emulator, the endpoint in front of it, the coordinator.
struct Bench<'a> {
    lab: &'a Lab,
    endpoint: &'a SyntheticEndpoint,
    bin: &'a Path,
    latency_ms: u64,
}

async fn run_one(
    bench: &Bench<'_>,
    setup: &Setup,
    names: u64,
    expected: Expected,
    run: usize,
) -> anyhow::Result<RunResult> {
    let Bench {
        lab,
        endpoint,
        bin,
        latency_ms,
    } = *bench;
    let queue = format!("scale-{run}");
    let config = lab.dir.path().join(format!("scale-{run}.toml"));
    std::fs::write(&config, config_text(lab, endpoint, &queue)?)?;
    let stats = endpoint.stats();
    let before = (
        stats.source_pages.load(Ordering::Relaxed) + stats.backup_pages.load(Ordering::Relaxed),
        stats.source_entries.load(Ordering::Relaxed) + stats.backup_entries.load(Ordering::Relaxed),
        own_cpu_seconds(),
    );
    let mut command = Command::new(bin);
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
    // The queue is dropped so that the emulator does not hold every run's messages.
    if let Ok(q) = lab.bak.queue(&queue) {
        let _ = q.delete(None).await;
    }
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
    Ok(RunResult {
        names,
        config: setup.label.clone(),
        args: setup.args.clone(),
        latency_ms,
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

fn markdown(args: &Args, results: &[RunResult]) -> String {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let setups = setups(&args)?;
    let bin = coordinator_bin()?;
    let mix = Mix {
        new: args.new,
        changed: args.changed,
        deleted: args.deleted,
    };
    let lab = Lab::start("scale", &[CONTAINER])?;
    lab.src.ensure_container(CONTAINER).await?;
    lab.bak.ensure_container(CONTAINER).await?;
    let upstream = format!("http://127.0.0.1:{}", lab.azurite.blob_port);
    let first = Lake::new(Layout::for_names(1), mix, 1);
    let endpoint =
        SyntheticEndpoint::start(&upstream, first, Duration::from_millis(args.latency_ms)).await?;
    endpoint.serve(SOURCE_ACCOUNT, CONTAINER, Side::Source);
    endpoint.serve(BACKUP_ACCOUNT, CONTAINER, Side::Backup);

    let report = if args.report.is_absolute() {
        args.report.clone()
    } else {
        repo_root().join(&args.report)
    };
    if let Some(dir) = report.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let jsonl = report.with_extension("jsonl");
    let bench = Bench {
        lab: &lab,
        endpoint: &endpoint,
        bin: &bin,
        latency_ms: args.latency_ms,
    };
    let mut lines = String::new();
    let mut results = Vec::new();
    let mut run = 0;
    for &names in &args.sizes {
        let lake = Lake::new(Layout::for_names(names), mix, names);
        let universe = lake.universe();
        let expected = tokio::task::spawn_blocking({
            let lake = lake.clone();
            move || lake.expected()
        })
        .await?;
        eprintln!(
            "{universe} names ({:?}): expecting {expected:?}",
            lake.layout
        );
        endpoint.set_lake(lake);
        for setup in &setups {
            if setup.max_size.is_some_and(|m| universe > m) {
                eprintln!(
                    "  [{}] skipped above {:?} names",
                    setup.label, setup.max_size
                );
                continue;
            }
            run += 1;
            eprintln!("  [{}] load {:.2}...", setup.label, load_average());
            let r = run_one(&bench, setup, universe, expected, run).await?;
            eprintln!(
                "  [{}] {:.1}s wall, {:.1}s CPU ({:.2} µs/entry), {:.1} MiB peak, {} pages, {} shards, {} at once{}",
                r.config,
                r.wall_seconds,
                r.cpu_seconds,
                r.cpu_us_per_listed_entry,
                r.peak_rss_mib,
                r.list_pages,
                r.shards,
                r.scan_parallelism,
                r.shape
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            );
            lines.push_str(&serde_json::to_string(&r)?);
            lines.push('\n');
            std::fs::write(&jsonl, &lines)?;
            results.push(r);
            std::fs::write(&report, markdown(&args, &results))?;
        }
    }
    println!("{}", markdown(&args, &results));
    println!("report written to {}", report.display());
    Ok(())
}
