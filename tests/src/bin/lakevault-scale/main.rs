//! `make bench-scale`: the coordinator's plan of 1 to 100 million blobs, and distributed
//! scans by a fleet of workers, on the synthetic endpoint (`lakevault_tests::synthetic`):
//! List Blobs answered from a generator with a fixed latency per page, the workers' copies
//! accepted and forgotten, everything else (queue, ledger, watermark) on a private Azurite.
//!
//! Plans (`plan.rs`): for each size and configuration it runs the real release
//! `lakevault-coordinator backup --output json` (not a dry run: the plan's copy batches are
//! enqueued), measures its wall time, CPU time and peak RSS from `/proc`, and checks the
//! plan's counts against the lake's known mix.
//!
//! Fleets (`fleet.rs`, `--scan-workers 1,4,16`): the coordinator hands the shards out as
//! scan tasks (`--distributed-scan`) and that many real `lakevault-worker` processes scan
//! them and copy what they find; the time until the last shard's finisher records the
//! container, and the fleet's CPU and memory, per fleet size.
//!
//! Both write one JSON line per run and a Markdown report. A measurement, not a test:
//! nothing asserts on a time. Counts that differ from the generated lake stop the bench
//! (a correctness bug).

mod fleet;
mod plan;

use anyhow::{Context, bail};
use clap::Parser;
use lakevault_tests::Lab;
use lakevault_tests::azurite::{BACKUP_ACCOUNT, SOURCE_ACCOUNT, repo_root};
use lakevault_tests::measure::load_average;
use lakevault_tests::synthetic::{Expected, Lake, Layout, Mix, Side, SyntheticEndpoint};
use std::path::{Path, PathBuf};
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
    /// The generated tree, `DATASETS,DAYS,FILES` (`ds…/day=…/part-…`), instead of one
    /// derived from each size; replaces `--sizes`.
    #[arg(long, value_parser = parse_layout)]
    layout: Option<Layout>,
    /// Distributed scans: fleet sizes to run, e.g. `1,4,16` worker processes. Without
    /// `--config`, only fleets run.
    #[arg(long, value_delimiter = ',')]
    scan_workers: Vec<usize>,
    /// Messages (scan tasks or copy batches) each fleet worker holds at once: with 1, the
    /// fleet size is the number of shards listed at once.
    #[arg(long, default_value_t = 1)]
    worker_prefetch: usize,
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

fn parse_layout(text: &str) -> Result<Layout, String> {
    let n: Vec<u64> = text
        .split(',')
        .map(|v| v.trim().parse::<u64>().map_err(|e| format!("`{v}`: {e}")))
        .collect::<Result<_, _>>()?;
    match n[..] {
        [datasets, days, files] if datasets > 0 && days > 0 && files > 0 => Ok(Layout {
            datasets,
            days,
            files,
        }),
        _ => Err("expected three positive numbers: DATASETS,DAYS,FILES".into()),
    }
}

fn setups(args: &Args) -> anyhow::Result<Vec<Setup>> {
    let configs = if args.configs.is_empty() && !args.scan_workers.is_empty() {
        Vec::new()
    } else if args.configs.is_empty() {
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

/// What every run shares: the emulator, the endpoint in front of it, the binaries.
struct Bench<'a> {
    lab: &'a Lab,
    endpoint: &'a SyntheticEndpoint,
    bins: &'a Path,
    latency_ms: u64,
}

impl Bench<'_> {
    /// A release binary next to this one.
    fn bin(&self, name: &str) -> anyhow::Result<PathBuf> {
        let bin = self.bins.join(name);
        if !bin.exists() {
            bail!(
                "{} not found: build it first (scripts/bench-scale.sh does)",
                bin.display()
            );
        }
        Ok(bin)
    }

    /// A config like the lab's with both blob services behind the synthetic endpoint
    /// and its own queue (one per run, deleted after it).
    fn config(&self, queue: &str) -> anyhow::Result<PathBuf> {
        let text = self.lab.config_with_blob_service_at(&self.endpoint.url());
        let mut value: toml::Value = toml::from_str(&text)?;
        value["queue"]["name"] = toml::Value::String(queue.to_string());
        let path = self.lab.dir.path().join(format!("{queue}.toml"));
        std::fs::write(&path, toml::to_string(&value)?)?;
        Ok(path)
    }

    /// Deletes a run's queue, so that the emulator does not hold every run's messages.
    async fn drop_queue(&self, queue: &str) {
        if let Ok(q) = self.lab.bak.queue(queue) {
            let _ = q.delete(None).await;
        }
    }
}

/// Writes the report so far: JSON lines and Markdown.
fn write_report(
    report: &Path,
    args: &Args,
    plans: &[plan::PlanResult],
    fleets: &[fleet::FleetResult],
) -> anyhow::Result<String> {
    let mut lines = String::new();
    for r in plans {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    for r in fleets {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    std::fs::write(report.with_extension("jsonl"), lines)?;
    let mut text = String::new();
    if !plans.is_empty() {
        text.push_str(&plan::markdown(args, plans));
    }
    if !fleets.is_empty() {
        text.push_str(&fleet::markdown(args, fleets));
    }
    std::fs::write(report, &text)?;
    Ok(text)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let setups = setups(&args)?;
    let bins = std::env::current_exe()?
        .parent()
        .context("bench binary has no directory")?
        .to_path_buf();
    let mix = Mix {
        new: args.new,
        changed: args.changed,
        deleted: args.deleted,
    };
    let lab = Lab::start("scale", &[CONTAINER])?;
    lab.src.ensure_container(CONTAINER).await?;
    lab.bak.ensure_container(CONTAINER).await?;
    let first = Lake::new(Layout::for_names(1), mix, 1);
    let endpoint = SyntheticEndpoint::start(
        &lab.upstream(SOURCE_ACCOUNT),
        first,
        Duration::from_millis(args.latency_ms),
    )
    .await?;
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
    let bench = Bench {
        lab: &lab,
        endpoint: &endpoint,
        bins: &bins,
        latency_ms: args.latency_ms,
    };
    let layouts: Vec<Layout> = match args.layout {
        Some(layout) => vec![layout],
        None => args.sizes.iter().map(|&n| Layout::for_names(n)).collect(),
    };
    let (mut plans, mut fleets) = (Vec::new(), Vec::new());
    let mut run = 0;
    for layout in layouts {
        let lake = Lake::new(layout, mix, layout.universe());
        let universe = lake.universe();
        let expected: Expected = tokio::task::spawn_blocking({
            let lake = lake.clone();
            move || lake.expected()
        })
        .await?;
        eprintln!("{universe} names ({layout:?}): expecting {expected:?}");
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
            let r = plan::run(&bench, setup, universe, expected, run).await?;
            eprintln!("  {}", r.summary());
            plans.push(r);
            write_report(&report, &args, &plans, &fleets)?;
        }
        for &workers in &args.scan_workers {
            run += 1;
            eprintln!(
                "  [{workers} scanning worker(s)] load {:.2}...",
                load_average()
            );
            let r = fleet::run(&bench, &args, workers, universe, expected, run).await?;
            eprintln!("  {}", r.summary());
            fleets.push(r);
            write_report(&report, &args, &plans, &fleets)?;
        }
    }
    println!("{}", write_report(&report, &args, &plans, &fleets)?);
    println!("report written to {}", report.display());
    Ok(())
}
