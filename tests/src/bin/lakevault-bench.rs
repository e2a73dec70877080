//! `make bench`: how the coordinator's list + diff scales with the number of blobs.
//!
//! Seeds one source container and its backup on a private in-memory Azurite, growing them
//! step by step (50k, 100k, 200k source blobs by default) with a realistic mix: about 98%
//! unchanged, 1% changed, 1% new and a few hundred deleted in the source. At each size it
//! runs the real release `lakevault-coordinator backup --dry-run --output json` as a child
//! process (wall time, peak RSS from `/proc/<pid>/status`), checks the plan's counts against
//! what was seeded, times a raw in-process listing of the same emulator for comparison, and
//! writes a Markdown report.
//!
//! This is a measurement, not a test: nothing here asserts on a time. The one hard failure
//! besides errors is a plan whose counts differ from the seeded mix (a correctness bug).

use anyhow::{Context, bail};
use azure_core::http::RequestContent;
use azure_storage_blob::models::{BlobContainerClientListBlobsOptions, ListBlobsIncludeItem};
use clap::Parser;
use futures::StreamExt;
use lakevault_common::record::{BackupRecord, normalise_etag, rfc3339, tag_set};
use lakevault_common::storage::StorageAccount;
use lakevault_tests::Lab;
use lakevault_tests::azurite::repo_root;
use lakevault_tests::measure::{Measured, run_measured};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The one container backed up (the backup container has the same name in the backup
/// account, per the harness's `container_template = "{container}"`).
const CONTAINER: &str = "lake";
/// The record of a "changed" blob names this ETag, which no source blob has.
const STALE_ETAG: &str = "0x8DC0000DEADBEEF";
/// RSS may grow by at most this much from the smallest to the largest size to count as flat.
const FLAT_RSS_TOLERANCE: f64 = 0.20;
/// A coordinator run that takes longer than this is killed (a hang, not a data point).
const RUN_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Deleted-in-source blobs stay below the coordinator's default `--max-tombstones` (1000):
/// above it the run exits 1 and marks nothing, which is a different code path.
const MAX_DELETED: usize = 900;

#[derive(Debug, Parser)]
#[command(
    name = "lakevault-bench",
    about = "Measures the coordinator's list + diff at scale on a local Azurite and writes a Markdown report"
)]
struct Args {
    /// Source container sizes to measure, ascending; the lake grows from one to the next.
    #[arg(long, value_delimiter = ',', default_value = "50000,100000,200000")]
    sizes: Vec<usize>,
    /// Measurements per size (median and range are reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Extra argument for every coordinator run (repeatable), e.g.
    /// `--coordinator-arg=--scan-parallelism --coordinator-arg=8`.
    #[arg(long = "coordinator-arg", allow_hyphen_values = true)]
    coordinator_args: Vec<String>,
    /// A configuration to compare (repeatable): coordinator arguments separated by spaces,
    /// optionally after `NAME=VALUE` environment variables, e.g. `--compare ""
    /// --compare "--scan-parallelism 8" --compare "MALLOC_ARENA_MAX=1"`. Runs alternate
    /// between them.
    #[arg(long, allow_hyphen_values = true)]
    compare: Vec<String>,
    /// Name of the configuration in the report (repeatable, one per `--compare`).
    #[arg(long)]
    label: Vec<String>,
    /// Where to write the Markdown report (default: target/bench/emulator-plan.md in the
    /// repository; docs/benchmarks.md quotes the runs it discusses).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Uploads in flight while seeding.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// One set of coordinator arguments being measured.
#[derive(Debug, Clone)]
struct Setup {
    label: String,
    /// Environment variables for the coordinator (every flag also has a `LAKEVAULT_*`
    /// variable, and allocator or runtime knobs are only reachable this way).
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl Setup {
    /// `NAME=VALUE ... --flag ...`, as a shell would show the command.
    fn command_line(&self) -> String {
        self.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Splits a `--compare` value into leading `NAME=VALUE` environment assignments (as with
/// `env(1)`) and the coordinator arguments after them.
fn split_env(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut env = Vec::new();
    let mut tokens = text.split_whitespace().peekable();
    while let Some(token) = tokens.peek() {
        match token.split_once('=') {
            Some((name, value))
                if !name.is_empty()
                    && !name.starts_with('-')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                env.push((name.to_string(), value.to_string()));
                tokens.next();
            }
            _ => break,
        }
    }
    (env, tokens.map(str::to_string).collect())
}

fn setups(args: &Args) -> anyhow::Result<Vec<Setup>> {
    let labelled = |label: Option<&String>, mut setup: Setup| {
        setup.label = match label {
            Some(l) => l.clone(),
            None if setup.env.is_empty() && setup.args.is_empty() => "defaults".to_string(),
            None => setup.command_line(),
        };
        setup
    };
    if args.compare.is_empty() {
        if args.label.len() > 1 {
            bail!("more than one --label needs one --compare per label");
        }
        let setup = Setup {
            label: String::new(),
            env: Vec::new(),
            args: args.coordinator_args.clone(),
        };
        return Ok(vec![labelled(args.label.first(), setup)]);
    }
    if args.label.len() > args.compare.len() {
        bail!(
            "{} --label given for {} --compare",
            args.label.len(),
            args.compare.len()
        );
    }
    Ok(args
        .compare
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let (env, extra) = split_env(c);
            let mut all = args.coordinator_args.clone();
            all.extend(extra);
            let setup = Setup {
                label: String::new(),
                env,
                args: all,
            };
            labelled(args.label.get(k), setup)
        })
        .collect())
}

// ---------------------------------------------------------------------------------------
// The lake: names, the mix, seeding.

/// A cheap, well-mixed hash, so the changed and new blobs spread over every partition
/// instead of following the name pattern.
fn mix(i: usize) -> u64 {
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Backup record names the source's ETag.
    Unchanged,
    /// Backup record names another ETag.
    Changed,
    /// Source only.
    New,
}

fn kind(i: usize) -> Kind {
    match mix(i) % 100 {
        0 => Kind::Changed,
        1 => Kind::New,
        _ => Kind::Unchanged,
    }
}

/// Source blob `i`: nested partitions (most of a lake), some non-ASCII, some at the root.
/// Every pattern ends in `i` behind a fixed marker, so names are unique.
fn blob_name(i: usize) -> String {
    let year = 2021 + (i / 40_000) % 5;
    let month = 1 + (i / 3_000) % 12;
    let day = 1 + (i / 100) % 28;
    let hour = i % 24;
    match mix(i) % 20 {
        0..=8 => format!("sales/year={year}/month={month:02}/day={day:02}/part-{i:06}.parquet"),
        9..=11 => format!(
            "events/region=eu-west/dt={year}-{month:02}-{day:02}/hour={hour:02}/events-{i:07}.json.gz"
        ),
        12 => format!("données/clients/été {year}/fichier-{i}.csv"),
        13 => format!("日本/売上/{year}/データ_{i}.json"),
        14 => format!("raw/ingest/batch-{:04}/file {i}.avro", i / 500),
        15 => format!("ml/features/v{}/shard-{i:06}.tfrecord", i % 3),
        16 => format!("logs/{year}/{month:02}/{day:02}/app #{i}.log"),
        17 => format!("reports/Q{} {year}/🚀 launch {i}.md", 1 + month / 4),
        _ => format!("manifest-{i:07}.json"),
    }
}

/// Backup-only blob `j`: small files a compaction removed from the source.
fn deleted_name(j: usize) -> String {
    let year = 2021 + j % 5;
    let month = 1 + (j / 5) % 12;
    let day = 1 + (j / 60) % 28;
    format!("sales/year={year}/month={month:02}/day={day:02}/compacted-{j:05}.parquet")
}

fn deleted_count(size: usize) -> usize {
    (size / 250).min(MAX_DELETED)
}

/// What a dry run over a lake of `size` source blobs must report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    new: u64,
    changed: u64,
    unchanged: u64,
    deleted: u64,
}

impl Counts {
    fn expected(size: usize) -> Self {
        let mut c = Counts {
            deleted: deleted_count(size) as u64,
            ..Default::default()
        };
        for i in 0..size {
            match kind(i) {
                Kind::Unchanged => c.unchanged += 1,
                Kind::Changed => c.changed += 1,
                Kind::New => c.new += 1,
            }
        }
        c
    }

    fn source_blobs(&self) -> u64 {
        self.new + self.changed + self.unchanged
    }

    fn backup_blobs(&self) -> u64 {
        self.changed + self.unchanged + self.deleted
    }
}

/// Uploads a tiny blob, optionally with an `x-ms-tags` value; returns its ETag (unquoted)
/// and Last-Modified.
async fn put(
    account: &StorageAccount,
    name: &str,
    body: Vec<u8>,
    tags: Option<String>,
) -> anyhow::Result<(String, String)> {
    let options = azure_storage_blob::models::BlockBlobClientUploadOptions {
        blob_tags_string: tags,
        ..Default::default()
    };
    let result = account
        .blob(CONTAINER, name)?
        .upload(RequestContent::from(body), Some(options))
        .await
        .with_context(|| format!("uploading {}/{CONTAINER}/{name}", account.alias))?;
    let etag = result
        .etag
        .map(|e| normalise_etag(e.as_ref()))
        .with_context(|| format!("no ETag in the upload response for {name}"))?;
    let modified = result
        .last_modified
        .map(rfc3339)
        .unwrap_or_else(|| rfc3339(time::OffsetDateTime::now_utc()));
    Ok((etag, modified))
}

/// The backup blob's tags: lakevault's record naming `source_etag`, exactly as a worker
/// writes it.
fn record_tags(source_etag: &str, source_modified: &str) -> anyhow::Result<String> {
    let record = BackupRecord {
        source_etag: source_etag.to_string(),
        source_last_modified: source_modified.to_string(),
        backed_up_at: rfc3339(time::OffsetDateTime::now_utc()),
        job: "bench-seed".to_string(),
        deleted_at: None,
        history_in_versions: false,
    };
    let tags = tag_set(&BTreeMap::new(), &record, None)?;
    lakevault_common::store::azure::tags_header(&tags)
        .ok_or_else(|| anyhow::anyhow!("a record tag set is never empty"))
}

/// Seeds source slot `i` (and its backup unless it is new); returns the uploads made.
async fn seed_slot(lab: &Lab, i: usize) -> anyhow::Result<u64> {
    let name = blob_name(i);
    let body = format!("{i}\n").into_bytes();
    let (etag, modified) = put(&lab.src, &name, body.clone(), None).await?;
    let recorded = match kind(i) {
        Kind::New => return Ok(1),
        Kind::Changed => STALE_ETAG,
        Kind::Unchanged => etag.as_str(),
    };
    put(
        &lab.bak,
        &name,
        body,
        Some(record_tags(recorded, &modified)?),
    )
    .await?;
    Ok(2)
}

async fn seed_deleted(lab: &Lab, j: usize) -> anyhow::Result<u64> {
    // A live record (no `deleted=`): the source blob existed when it was backed up.
    let tags = record_tags("0x8DC00000000D0E1", "2024-01-01T00:00:00Z")?;
    put(&lab.bak, &deleted_name(j), b"gone\n".to_vec(), Some(tags)).await?;
    Ok(1)
}

/// Grows the lake from `from` to `to` source blobs; returns the uploads made.
async fn grow(lab: &Lab, from: usize, to: usize, concurrency: usize) -> anyhow::Result<u64> {
    enum Job {
        Slot(usize),
        Deleted(usize),
    }
    let jobs = (from..to)
        .map(Job::Slot)
        .chain((deleted_count(from)..deleted_count(to)).map(Job::Deleted));
    let mut results = futures::stream::iter(jobs)
        .map(|job| async move {
            match job {
                Job::Slot(i) => seed_slot(lab, i).await.map(|n| (1, n)),
                Job::Deleted(j) => seed_deleted(lab, j).await.map(|n| (0, n)),
            }
        })
        .buffer_unordered(concurrency.max(1));
    let started = Instant::now();
    let (mut slots, mut uploads) = (0usize, 0u64);
    while let Some(result) = results.next().await {
        let (slot, n) = result?;
        slots += slot;
        uploads += n;
        if slot == 1 && slots.is_multiple_of(25_000) {
            eprintln!(
                "  seeded {} of {to} source blobs ({:.0} uploads/s)",
                from + slots,
                uploads as f64 / started.elapsed().as_secs_f64().max(0.001)
            );
        }
    }
    Ok(uploads)
}

// ---------------------------------------------------------------------------------------
// Measurements.

/// Lists a container with `include=tags`, as the coordinator's listing does; returns the
/// blob count.
async fn list_count(account: &StorageAccount) -> anyhow::Result<u64> {
    let options = BlobContainerClientListBlobsOptions {
        include: Some(vec![ListBlobsIncludeItem::Tags]),
        ..Default::default()
    };
    let mut pager = account.container(CONTAINER)?.list_blobs(Some(options))?;
    let mut n = 0u64;
    while let Some(item) = pager.next().await {
        item.with_context(|| format!("listing {}/{CONTAINER}", account.alias))?;
        n += 1;
    }
    Ok(n)
}

async fn timed_listing(account: &StorageAccount, expected: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let n = list_count(account).await?;
    let seconds = started.elapsed().as_secs_f64();
    if n != expected {
        bail!(
            "listing {}/{CONTAINER} returned {n} blobs, {expected} were seeded",
            account.alias
        );
    }
    Ok(seconds)
}

/// One coordinator run.
#[derive(Debug, Clone)]
struct DiffRun {
    wall_seconds: f64,
    /// The coordinator's own `elapsed_seconds` (planning only, no process start-up).
    reported_seconds: f64,
    peak_rss_kib: u64,
    /// User + system CPU seconds the coordinator used: unlike wall time, barely affected by
    /// other processes competing for the CPUs, and it shows how much of the wall time the
    /// coordinator spent working rather than waiting for the emulator.
    cpu_seconds: f64,
    /// The 1-minute load average when the run started: above the CPU count, something else
    /// (the emulator, other builds) was competing for the machine.
    load_at_start: f64,
    counts: Counts,
}

/// Runs `lakevault-coordinator backup --dry-run --output json` once, sampling its peak
/// RSS until it exits. Blocking: call from a blocking thread.
fn run_coordinator(bin: &Path, config: &Path, setup: &Setup) -> anyhow::Result<DiffRun> {
    let run = run_measured(
        Command::new(bin)
            .arg("--config")
            .arg(config)
            .args(["backup", "--dry-run", "--output", "json"])
            .args(&setup.args)
            .env_remove("RUST_LOG")
            .envs(setup.env.iter().map(|(k, v)| (k, v))),
        RUN_TIMEOUT,
    )?;
    let Measured {
        status,
        wall_seconds,
        cpu_seconds,
        peak_rss_kib,
        load_at_start,
        stdout,
        stderr,
    } = run;
    if !status.success() {
        bail!(
            "lakevault-coordinator {} exited with {status}\nstderr:\n{}",
            setup.command_line(),
            String::from_utf8_lossy(&stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&stdout).with_context(|| {
        format!(
            "the coordinator's JSON report does not parse:\n{}",
            String::from_utf8_lossy(&stdout)
        )
    })?;
    for key in ["failed", "skipped"] {
        if report[key].as_array().is_some_and(|a| !a.is_empty()) {
            bail!("the coordinator reports {key} containers: {}", report[key]);
        }
    }
    let containers: Vec<&serde_json::Value> = report["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["source_container"] == CONTAINER)
                .collect()
        })
        .unwrap_or_default();
    if containers.is_empty() {
        bail!("the coordinator's report has no plan for container `{CONTAINER}`: {report}");
    }
    let sum = |key: &str| -> u64 {
        containers
            .iter()
            .map(|c| c[key].as_u64().unwrap_or(0))
            .sum()
    };
    for key in ["unmanaged", "already_tombstoned"] {
        if sum(key) != 0 {
            bail!(
                "the coordinator counted {} {key} blobs; none were seeded",
                sum(key)
            );
        }
    }
    Ok(DiffRun {
        wall_seconds,
        reported_seconds: report["elapsed_seconds"].as_f64().unwrap_or(f64::NAN),
        peak_rss_kib,
        cpu_seconds,
        load_at_start,
        counts: Counts {
            new: sum("new"),
            changed: sum("changed"),
            unchanged: sum("unchanged"),
            deleted: sum("deleted_in_source"),
        },
    })
}

// ---------------------------------------------------------------------------------------
// Statistics and the report.

#[derive(Debug, Clone, Copy)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

impl Stat {
    fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Stat {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Stat {
            median,
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    /// `median (min–max)` with `decimals` digits.
    fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// Everything measured at one size.
#[derive(Debug, Clone)]
struct SizeResult {
    size: usize,
    expected: Counts,
    seed_seconds: f64,
    seed_uploads: u64,
    source_listing: Vec<f64>,
    backup_listing: Vec<f64>,
    /// Per setup, in the order of [`setups`].
    diffs: Vec<Vec<DiffRun>>,
}

impl SizeResult {
    fn rates(&self, count: u64, seconds: &[f64]) -> Stat {
        let rates: Vec<f64> = seconds.iter().map(|s| count as f64 / s).collect();
        Stat::of(&rates)
    }

    fn wall(&self, setup: usize) -> Vec<f64> {
        self.diffs[setup].iter().map(|d| d.wall_seconds).collect()
    }

    fn rss_mib(&self, setup: usize) -> Stat {
        let v: Vec<f64> = self.diffs[setup]
            .iter()
            .map(|d| d.peak_rss_kib as f64 / 1024.0)
            .collect();
        Stat::of(&v)
    }
}

#[derive(Debug)]
struct Environment {
    date: String,
    cpus: usize,
    cpu_model: String,
    ram_gib: f64,
    kernel: String,
    azurite_pinned: String,
    azurite_installed: String,
    node: String,
    bench_profile: &'static str,
    coordinator: PathBuf,
    coordinator_profile: String,
    git: String,
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_string()
}

fn command_output(program: &str, args: &[&str], cwd: &Path) -> String {
    Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| first_line(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_else(|| "unknown".into())
}

fn package_version(path: &Path, pointer: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v.pointer(pointer)
                .and_then(|x| x.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

fn environment(coordinator: &Path) -> Environment {
    let root = repo_root();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let ram_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    Environment {
        date: rfc3339(
            time::OffsetDateTime::now_utc()
                .replace_nanosecond(0)
                .unwrap_or_else(|_| time::OffsetDateTime::now_utc()),
        ),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "unknown".into()),
        ram_gib: ram_kib / (1024.0 * 1024.0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| first_line(&k))
            .unwrap_or_else(|_| "unknown".into()),
        azurite_pinned: package_version(
            &root.join("azurite/package.json"),
            "/dependencies/azurite",
        ),
        azurite_installed: package_version(
            &root.join("azurite/node_modules/azurite/package.json"),
            "/version",
        ),
        node: command_output("node", &["--version"], &root),
        bench_profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        coordinator: coordinator.to_path_buf(),
        // `target/<profile>/lakevault-coordinator`.
        coordinator_profile: coordinator
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unknown".into()),
        git: command_output("git", &["describe", "--always", "--dirty"], &root),
    }
}

fn fmt_rate(stat: Stat) -> String {
    stat.show(0)
}

/// The growth of the median peak RSS from the smallest to the largest size.
fn rss_growth(results: &[SizeResult], setup: usize) -> Option<(f64, f64, f64)> {
    let first = results.first()?.rss_mib(setup).median;
    let last = results.last()?.rss_mib(setup).median;
    (results.len() > 1).then_some((first, last, (last - first) / first))
}

fn table(results: &[SizeResult], setup: usize) -> String {
    let mut t = String::new();
    t.push_str("| blobs (source) | diff wall s | diff rate blobs/s | blobs listed/s in the diff (src + backup) | raw listing rate blobs/s (source) | raw listing rate blobs/s (backup, with records) | coordinator CPU s (user + sys) | coordinator peak RSS MiB |\n");
    t.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in results {
        let wall = r.wall(setup);
        let listed = r.expected.source_blobs() + r.expected.backup_blobs();
        let cpu: Vec<f64> = r.diffs[setup].iter().map(|d| d.cpu_seconds).collect();
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.size,
            Stat::of(&wall).show(2),
            fmt_rate(r.rates(r.size as u64, &wall)),
            fmt_rate(r.rates(listed, &wall)),
            fmt_rate(r.rates(r.expected.source_blobs(), &r.source_listing)),
            fmt_rate(r.rates(r.expected.backup_blobs(), &r.backup_listing)),
            Stat::of(&cpu).show(2),
            r.rss_mib(setup).show(1),
        );
    }
    t
}

fn verdict(results: &[SizeResult], setup: usize) -> String {
    match rss_growth(results, setup) {
        None => "RSS growth: only one size measured, no verdict.".to_string(),
        Some((first, last, growth)) => {
            let (a, b) = (
                results.first().map_or(0, |r| r.size),
                results.last().map_or(0, |r| r.size),
            );
            let pass = growth <= FLAT_RSS_TOLERANCE;
            format!(
                "Peak RSS growth {a} → {b} blobs: {first:.1} MiB → {last:.1} MiB = **{:+.1}%** (medians). \
                 Flat within {:.0}%: **{}**",
                growth * 100.0,
                FLAT_RSS_TOLERANCE * 100.0,
                if pass { "PASS" } else { "FAIL" }
            )
        }
    }
}

fn markdown(env: &Environment, args: &Args, setups: &[Setup], results: &[SizeResult]) -> String {
    let mut m = String::new();
    let sizes: Vec<String> = results.iter().map(|r| r.size.to_string()).collect();
    let _ = writeln!(
        m,
        "# lakevault benchmarks: coordinator list + diff at scale\n"
    );
    let _ = writeln!(
        m,
        "Generated by `scripts/bench.sh` (`tests/src/bin/lakevault-bench.rs`); rerun it to \
         refresh this page. Numbers are from one machine and one run: compare rows of the same \
         run, not this page with another machine.\n"
    );
    let _ = writeln!(m, "## Run\n");
    let _ = writeln!(m, "| | |\n|---|---|");
    let _ = writeln!(m, "| date (UTC) | {} |", env.date);
    let _ = writeln!(
        m,
        "| machine | {} CPUs ({}), {:.1} GiB RAM, Linux {} |",
        env.cpus, env.cpu_model, env.ram_gib, env.kernel
    );
    let _ = writeln!(
        m,
        "| Azurite | {} (pinned in azurite/package.json; installed {}), Node.js {}, in-memory, blob service one process |",
        env.azurite_pinned, env.azurite_installed, env.node
    );
    let _ = writeln!(
        m,
        "| build profile | coordinator `{}` (`{}`), bench `{}` |",
        env.coordinator_profile,
        env.coordinator.display(),
        env.bench_profile
    );
    let _ = writeln!(m, "| code | `{}` |", env.git);
    let _ = writeln!(
        m,
        "| sizes | {} source blobs, {} runs each (median, min–max) |",
        sizes.join(", "),
        args.repeats
    );
    let _ = writeln!(
        m,
        "| coordinator | `lakevault-coordinator --config <file> backup --dry-run --output json [args]` |"
    );
    let _ = writeln!(m);

    let _ = writeln!(m, "### The lake at each size\n");
    let _ = writeln!(
        m,
        "One container (`{CONTAINER}`) in the source account and its backup in the backup account. \
         Blob names are nested partitions (`sales/year=2024/month=03/day=17/part-000042.parquet`, \
         `events/region=eu-west/dt=…/hour=…/…`), with some non-ASCII (`données/…`, `日本/…`, emoji) and \
         some at the root; content is a few bytes. Each backup blob carries lakevault's record tag, as a \
         worker writes it. The lake grows from one size to the next (the smaller lake is a prefix of the \
         bigger one).\n"
    );
    let _ = writeln!(
        m,
        "| blobs (source) | unchanged | changed | new | deleted in source | backup blobs | seeding uploads/s |"
    );
    let _ = writeln!(m, "|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let e = r.expected;
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {:.0} ({} uploads in {:.0} s) |",
            r.size,
            e.unchanged,
            e.changed,
            e.new,
            e.deleted,
            e.backup_blobs(),
            r.seed_uploads as f64 / r.seed_seconds.max(0.001),
            r.seed_uploads,
            r.seed_seconds
        );
    }
    let _ = writeln!(
        m,
        "\nEvery coordinator run's counts matched this table exactly (the bench stops otherwise).\n"
    );

    let _ = writeln!(m, "## Results\n");
    let _ = writeln!(
        m,
        "- **diff wall s**: the whole `backup --dry-run` process, from spawn to exit.\n\
         - **diff rate**: source blobs / diff wall time. **blobs listed/s in the diff**: source + backup \
         blobs / diff wall time (the diff lists both sides, so about 2×N).\n\
         - **raw listing rate**: one in-process `List Blobs` with `include=tags` of one container (SDK \
         pager, counting items only), same emulator, same sizes: the ceiling the emulator allows for a \
         single sequential listing.\n\
         - **coordinator CPU s**: user + system time from `/proc/<pid>/stat`; the rest of the wall \
         time the coordinator was waiting (mostly for the emulator).\n\
         - **peak RSS**: the coordinator's `VmHWM` from `/proc/<pid>/status`, polled every {} ms.\n",
        lakevault_tests::measure::POLL.as_millis()
    );
    let loads: Vec<f64> = results
        .iter()
        .flat_map(|r| r.diffs.iter().flatten().map(|d| d.load_at_start))
        .collect();
    let load = Stat::of(&loads);
    let _ = writeln!(
        m,
        "Machine load: the 1-minute load average at the start of the coordinator runs was {} \
         ({} CPUs). The emulator alone keeps about one CPU busy while it serves a listing; a \
         load well above {} means other work competed for the CPUs, which stretches wall times \
         (CPU seconds and memory are barely affected).\n",
        load.show(2),
        env.cpus,
        env.cpus.saturating_sub(1).max(1)
    );
    for (k, setup) in setups.iter().enumerate() {
        let args_text = if setup.args.is_empty() && setup.env.is_empty() {
            "(none)".to_string()
        } else {
            format!("`{}`", setup.command_line())
        };
        let _ = writeln!(m, "### {}\n", setup.label);
        let _ = writeln!(m, "Extra coordinator arguments: {args_text}\n");
        m.push_str(&table(results, k));
        let _ = writeln!(m, "\n{}\n", verdict(results, k));
    }

    let _ = writeln!(m, "### Every run\n");
    let _ = writeln!(
        m,
        "| blobs | configuration | run | wall s | coordinator's elapsed_seconds | CPU s | peak RSS MiB | load average at start |"
    );
    let _ = writeln!(m, "|---:|---|---:|---:|---:|---:|---:|---:|");
    for r in results {
        for (k, setup) in setups.iter().enumerate() {
            for (n, d) in r.diffs[k].iter().enumerate() {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} |",
                    r.size,
                    setup.label,
                    n + 1,
                    d.wall_seconds,
                    d.reported_seconds,
                    d.cpu_seconds,
                    d.peak_rss_kib as f64 / 1024.0,
                    d.load_at_start
                );
            }
        }
    }
    let _ = writeln!(m);

    m.push_str(
        r#"## How to run

```sh
make bench                                   # default sizes 50000,100000,200000; writes target/bench/emulator-plan.md
bash scripts/bench.sh --sizes 20000,40000 --repeats 1 --report /tmp/quick.md
# compare coordinator flags side by side (runs alternate between the configurations):
bash scripts/bench.sh --compare "" --compare "--scan-parallelism 8" --label default --label par8
# leading NAME=VALUE words set the coordinator's environment (LAKEVAULT_* flags, allocator knobs):
bash scripts/bench.sh --compare "" --compare "LAKEVAULT_LIST_PAGE_SIZE=5000 --shards 1"
# one configuration with extra flags:
bash scripts/bench.sh --coordinator-arg=--mode --coordinator-arg=full --label full
```

`scripts/bench.sh` installs the pinned Azurite, builds the coordinator and the bench in
release and runs `lakevault-bench` with its arguments. The default sizes take a while:
seeding runs at whatever the emulator sustains (see the table above), and it holds
every blob in memory (the Node.js process needs a few GB at 200k + 200k blobs).

## What this measures, and what it does not

Measures:

- the coordinator's full-mode planning pass as an operator runs it (process start, config,
  container selection, both listings with `include=tags`, the merge-join, the JSON report)
  against an emulator on loopback, with no network latency;
- how wall time and peak memory change with the number of blobs. The diff is designed to
  stream (only the heads of the two listings are held), so peak RSS should stay flat;
  the verdict line checks that against a 20% tolerance;
- the emulator's own listing ceiling, to tell "the coordinator is slow" from "Azurite is
  slow".

Does not measure:

- Azure Storage itself: a real account pages 5,000 blobs per request with tens to hundreds
  of milliseconds per page, and other limits; absolute rates here say nothing about
  production;
- enqueueing (a dry run sends no messages), the workers, or copying;
- incremental mode, filters, snapshots or many containers;
- anything under contention that production would not have: the emulator (single-threaded
  Node.js), the coordinator and the bench share this machine's CPUs, so on a small machine
  the emulator's listing speed bounds every number;
- memory growth that happens within the last polling interval before exit (VmHWM is sampled
  every 20 ms; the last value read is kept).
"#,
    );
    m
}

fn print_summary(setups: &[Setup], results: &[SizeResult]) {
    for (k, setup) in setups.iter().enumerate() {
        println!("\n== {} ==", setup.label);
        print!("{}", table(results, k));
        println!("{}", verdict(results, k).replace("**", ""));
    }
}

// ---------------------------------------------------------------------------------------

/// The release coordinator next to this binary (both are built into `target/<profile>`).
fn coordinator_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let bin = exe
        .parent()
        .context("the bench binary has no directory")?
        .join("lakevault-coordinator");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (scripts/bench.sh does: cargo build --release -p lakevault-coordinator)",
            bin.display()
        );
    }
    Ok(bin)
}

fn check_names(max_size: usize) -> anyhow::Result<()> {
    let mut seen = HashSet::with_capacity(max_size + MAX_DELETED);
    for name in (0..max_size)
        .map(blob_name)
        .chain((0..deleted_count(max_size)).map(deleted_name))
    {
        if !seen.insert(name.clone()) {
            bail!("blob name `{name}` is generated twice");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.sizes.is_empty() || args.sizes.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--sizes must be ascending and not empty");
    }
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let setups = setups(&args)?;
    let coordinator = coordinator_bin()?;
    let env = environment(&coordinator);
    if env.coordinator_profile != "release" {
        eprintln!(
            "WARNING: measuring a `{}` coordinator ({}); use scripts/bench.sh for release numbers",
            env.coordinator_profile,
            coordinator.display()
        );
    }
    let max_size = args.sizes.last().copied().unwrap_or(0);
    check_names(max_size)?;
    let report_path = args
        .report
        .clone()
        .unwrap_or_else(|| repo_root().join("target/bench/emulator-plan.md"));

    eprintln!("starting Azurite (in memory)...");
    let lab = Lab::start("lakevault-bench", &[CONTAINER]).context("starting Azurite")?;
    lab.src.ensure_container(CONTAINER).await?;
    lab.bak.ensure_container(CONTAINER).await?;

    let mut results: Vec<SizeResult> = Vec::new();
    let mut seeded = 0usize;
    for &size in &args.sizes {
        eprintln!("seeding the lake up to {size} source blobs...");
        let started = Instant::now();
        let uploads = grow(&lab, seeded, size, args.concurrency).await?;
        let seed_seconds = started.elapsed().as_secs_f64();
        seeded = size;
        let expected = Counts::expected(size);
        eprintln!(
            "  {uploads} uploads in {seed_seconds:.1}s ({:.0}/s); expecting {expected:?}",
            uploads as f64 / seed_seconds.max(0.001)
        );

        let mut result = SizeResult {
            size,
            expected,
            seed_seconds,
            seed_uploads: uploads,
            source_listing: Vec::new(),
            backup_listing: Vec::new(),
            diffs: vec![Vec::new(); setups.len()],
        };
        for run in 1..=args.repeats {
            let s = timed_listing(&lab.src, expected.source_blobs()).await?;
            let b = timed_listing(&lab.bak, expected.backup_blobs()).await?;
            eprintln!(
                "  raw listing {run}/{}: source {s:.2}s ({:.0}/s), backup {b:.2}s ({:.0}/s)",
                args.repeats,
                expected.source_blobs() as f64 / s,
                expected.backup_blobs() as f64 / b
            );
            result.source_listing.push(s);
            result.backup_listing.push(b);
        }
        // Runs alternate between configurations so that drift (the emulator warming up or
        // fragmenting) does not favour one of them.
        for run in 1..=args.repeats {
            for (k, setup) in setups.iter().enumerate() {
                let (bin, config, setup_k) = (coordinator.clone(), lab.path.clone(), setup.clone());
                let diff =
                    tokio::task::spawn_blocking(move || run_coordinator(&bin, &config, &setup_k))
                        .await
                        .context("coordinator measurement thread")??;
                eprintln!(
                    "  diff {run}/{} [{}]: {:.2}s wall, {:.2}s CPU, {:.1} MiB peak RSS, load {:.2}, {:?}",
                    args.repeats,
                    setup.label,
                    diff.wall_seconds,
                    diff.cpu_seconds,
                    diff.peak_rss_kib as f64 / 1024.0,
                    diff.load_at_start,
                    diff.counts
                );
                if diff.counts != expected {
                    eprintln!(
                        "\n!!! PLAN MISMATCH at {size} blobs [{}]: the coordinator reported {:?}, the bench seeded {:?}\n",
                        setup.label, diff.counts, expected
                    );
                    bail!("the coordinator's plan does not match the seeded lake");
                }
                result.diffs[k].push(diff);
            }
        }
        results.push(result);
    }

    print_summary(&setups, &results);
    let text = markdown(&env, &args, &setups, &results);
    if let Some(dir) = report_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&report_path, text)
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!("\nreport written to {}", report_path.display());
    Ok(())
}
