//! `make bench-e2e`: lakevault's backup next to the service's own ceiling and rclone, on
//! one local Azurite (a source and a backup account), in one run, with the same seeded data.
//!
//! For each data set (small blobs, 1 MiB blobs, one large blob) it measures, side by side:
//!
//! - **ceiling**: the least a copier can do, from this process: list the source, then one
//!   synchronous Copy Blob From URL per blob, `--concurrency` in flight (a blob above the
//!   service's 256 MiB limit for one synchronous copy: Put Block From URL of 64 MiB ranges,
//!   lakevault's default, then Put Block List);
//! - **rclone**: `rclone sync` server-side across the two accounts, then its reruns with
//!   nothing changed, with `--checksum` and with its default (size + modification time);
//! - **lakevault** with 1, 2 and 4 worker processes: the real release coordinator plans and
//!   enqueues, then the workers drain the queue, each run into an empty backup container;
//!   then the coordinator's plan with nothing changed;
//! - **bare listing**: List Blobs of the source and of a backup container (pages of 5,000),
//!   the two side by side: the floor of any no-change rerun that reads both sides.
//!
//! The small set's copies and no-change runs are then repeated (`--rounds`, default 3 in
//! all), the systems in an order rotated by one each round: on a shared machine one run
//! per system moves by tens of percent with whatever else runs, so the targets are judged
//! on the median of each round's ratios (each round compares runs of that round only).
//!
//! Every system gets the same copies in flight in total (`--concurrency`, default 32:
//! rclone's `--transfers`, the ceiling's, and lakevault's workers' `--concurrency` split
//! evenly between them).
//!
//! Recorded for each run: wall time; CPU time of the system's processes (the bench's own
//! for the in-process ceiling and listing); their largest peak RSS; the emulator's CPU over
//! the same wall time (near 100% of a core its single-threaded blob service is the bound,
//! not the copier); the load average before the run; and the storage requests sent. The
//! requests are counted by a small HTTP proxy that every system's blob and queue traffic
//! goes through (this binary, run as its own process so that its CPU is nobody's); the
//! requests the emulator sends itself to check a copy source are counted apart and not
//! charged to the system.
//!
//! After every copy the backup container is listed and compared with the source (names,
//! sizes, Content-MD5 where both have one): a difference stops the bench. Nothing here
//! asserts on a time: the report states the targets and whether the rounds' medians met
//! them.

use anyhow::{Context, bail, ensure};
use clap::{Parser, Subcommand};
use futures::{StreamExt, TryStreamExt};
use lakevault_common::config::Config;
use lakevault_common::queue::{AzureQueue, WorkQueue};
use lakevault_common::storage::{CopySource, StorageAccount};
use lakevault_common::store::azure::AzureStore;
use lakevault_common::store::{
    BlobRef, BlobStore, Commit, Condition, ContentHeaders, CopyFromUrl, ListOptions, Listed,
};
use lakevault_tests::azurite::{
    Azurite, BACKUP_ACCOUNT, BACKUP_KEY, SOURCE_ACCOUNT, SOURCE_KEY, repo_root,
};
use lakevault_tests::measure::{
    POLL, Sampler, clock_ticks_per_second, cpu_ticks, load_average, own_cpu_seconds, read_all,
    vm_hwm_kib,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod bench;
mod proxy;
mod report;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
/// The largest blob one synchronous Copy Blob From URL may copy (the service's limit, and
/// lakevault's default `--sync-copy-max-mib`).
const SYNC_COPY_MAX: u64 = 256 * MIB;
/// The range of each Put Block From URL above it (lakevault's default `--block-size-mib`).
const BLOCK_SIZE: u64 = 64 * MIB;
/// How long the ceiling's copy-source SAS is valid.
const SAS_VALIDITY: Duration = Duration::from_secs(2 * 3600);
/// A process that runs longer than this is killed (a hang, not a data point).
const RUN_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often the bench asks the queue whether lakevault's workers have drained it.
const QUEUE_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Parser)]
#[command(
    name = "lakevault-e2e",
    about = "Copies the same seeded blobs with a bare Copy Blob From URL loop, rclone and lakevault on one Azurite, and reports time, CPU, memory and requests side by side"
)]
struct Args {
    /// Blobs of 1 KiB in the small set.
    #[arg(long, default_value_t = 20_000)]
    small: usize,
    /// Blobs of 1 MiB in the medium set (0: no medium set).
    #[arg(long, default_value_t = 500)]
    medium: usize,
    /// Leave out the set of one large blob.
    #[arg(long)]
    no_large: bool,
    /// Size of the large blob, MiB (above 256 it is copied in ranges).
    #[arg(long, default_value_t = 1024)]
    large_mib: u64,
    /// Copies in flight in total, the same for every system.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Rounds of the small set's copies and no-change runs: the targets are then the
    /// medians of each round's ratios (rounds after the first run after every set, in a
    /// rotated order).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// lakevault worker processes, one run each (each must divide --concurrency).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    /// The rclone binary (default: target/tools/rclone/rclone, from scripts/rclone.sh install).
    #[arg(long)]
    rclone: Option<PathBuf>,
    /// Directory of e2e.md, e2e.json and the e2e-*.svg charts (relative: to the repository).
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Also copy the charts into docs/bench/, for docs/benchmarks.md.
    #[arg(long)]
    docs: bool,
    #[command(subcommand)]
    internal: Option<Internal>,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// The counting proxy, started by the bench as its own process.
    #[command(hide = true)]
    CountingProxy {
        #[arg(long)]
        blob_upstream: String,
        #[arg(long)]
        queue_upstream: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Internal::CountingProxy {
        blob_upstream,
        queue_upstream,
    }) = &args.internal
    {
        return proxy::serve(blob_upstream, queue_upstream).await;
    }
    // On Ctrl-C or SIGTERM the bench is dropped, and with it every process it started
    // (the emulator, the proxy, a system's processes): nothing is left running.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = bench::run(args) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = terminate.recv() => bail!("terminated"),
    }
}

// ---------------------------------------------------------------------------------------
// The data sets.

/// One set of seeded blobs, all of one size, in one source container.
#[derive(Debug, Clone)]
struct DataSet {
    /// `small`, `medium`, `large`: names the set in the report and its containers.
    key: &'static str,
    container: String,
    blobs: usize,
    blob_bytes: u64,
}

impl DataSet {
    fn all(args: &Args) -> Vec<DataSet> {
        let set = |key: &'static str, blobs: usize, blob_bytes: u64| DataSet {
            key,
            container: format!("e2e-{key}"),
            blobs,
            blob_bytes,
        };
        let mut sets = vec![set("small", args.small, KIB)];
        if args.medium > 0 {
            sets.push(set("medium", args.medium, MIB));
        }
        if !args.no_large {
            sets.push(set("large", 1, args.large_mib * MIB));
        }
        sets
    }

    /// Blob `i`: day partitions, as a data lake is laid out (lakevault shards at `/`).
    fn name(i: usize) -> String {
        let partition = i % (12 * 28);
        format!(
            "dt=2026-{:02}-{:02}/part-{i:07}.bin",
            1 + partition / 28,
            1 + partition % 28
        )
    }

    fn total_bytes(&self) -> u64 {
        self.blobs as u64 * self.blob_bytes
    }

    /// `20,000 × 1 KiB (19.5 MiB in all)`.
    fn describe(&self) -> String {
        format!(
            "{} × {} ({} in all)",
            thousands(self.blobs as u64),
            bytes(self.blob_bytes),
            bytes(self.total_bytes())
        )
    }
}

/// Deterministic incompressible content.
fn content(seed: u64, len: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
    rng.fill(&mut buf[..]);
    buf
}

/// Seeds a set with parallel Put Blob (a large blob with Put Block and Put Block List, so
/// that neither this process nor one request holds it whole).
async fn seed(store: &AzureStore, set: &DataSet) -> anyhow::Result<()> {
    store.create_container(&set.container).await?;
    let container = set.container.as_str();
    if set.blob_bytes > BLOCK_SIZE {
        for i in 0..set.blobs {
            seed_in_blocks(
                store,
                BlobRef::new(container, &DataSet::name(i)),
                set.blob_bytes,
            )
            .await?;
        }
        return Ok(());
    }
    // Enough puts in flight to keep the emulator busy, without holding much in memory.
    let parallel = if set.blob_bytes >= MIB { 8 } else { 64 };
    futures::stream::iter(0..set.blobs)
        .map(|i| async move {
            let name = DataSet::name(i);
            store
                .put(
                    BlobRef::new(container, &name),
                    content(i as u64, set.blob_bytes),
                    Condition::None,
                )
                .await
                .with_context(|| format!("seeding {container}/{name}"))
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<String>>()
        .await?;
    Ok(())
}

async fn seed_in_blocks(store: &AzureStore, blob: BlobRef<'_>, size: u64) -> anyhow::Result<()> {
    let ids = block_ids(size);
    futures::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| async move {
            let offset = i as u64 * BLOCK_SIZE;
            let body = content(offset, BLOCK_SIZE.min(size - offset));
            store.stage_block(blob, id, body).await
        })
        .buffer_unordered(2)
        .try_collect::<Vec<()>>()
        .await
        .with_context(|| format!("seeding {}/{}", blob.container, blob.name))?;
    store
        .commit_blocks(blob, &ids, Commit::default())
        .await
        .with_context(|| format!("committing {}/{}", blob.container, blob.name))?;
    Ok(())
}

/// Block ids of a blob cut into `BLOCK_SIZE` ranges (ids of one blob have one length).
fn block_ids(size: u64) -> Vec<Vec<u8>> {
    (0..size.div_ceil(BLOCK_SIZE))
        .map(|i| format!("{i:06}").into_bytes())
        .collect()
}

async fn list_all(store: &AzureStore, container: &str) -> anyhow::Result<Vec<Listed>> {
    store
        .list(container, ListOptions::default())
        .try_collect()
        .await
        .with_context(|| format!("listing {}/{container}", store.alias()))
}

/// The source of a set as listed after seeding: what every backup of it must hold.
#[derive(Debug)]
struct Truth {
    /// Name → (size, Content-MD5).
    blobs: BTreeMap<String, (u64, Option<Vec<u8>>)>,
}

impl Truth {
    async fn read(store: &AzureStore, set: &DataSet) -> anyhow::Result<Self> {
        let blobs: BTreeMap<_, _> = list_all(store, &set.container)
            .await?
            .into_iter()
            .map(|b| (b.name, (b.size, b.content_md5)))
            .collect();
        ensure!(
            blobs.len() == set.blobs,
            "the source container {} holds {} blobs, {} were seeded",
            set.container,
            blobs.len(),
            set.blobs
        );
        Ok(Self { blobs })
    }

    /// Source blobs that carry a Content-MD5 (the copies' MD5 is compared with theirs).
    fn with_md5(&self) -> usize {
        self.blobs.values().filter(|(_, md5)| md5.is_some()).count()
    }

    /// Lists `container` and fails unless it holds exactly the source's blobs (names,
    /// sizes, and Content-MD5 where both sides have one). Returns the number of blobs whose
    /// copy has no Content-MD5 while the source has one.
    async fn check(&self, store: &AzureStore, container: &str, who: &str) -> anyhow::Result<u64> {
        let listed = list_all(store, container).await?;
        let mut problems = Vec::new();
        let mut md5_missing = 0;
        let mut seen = 0usize;
        for b in &listed {
            match self.blobs.get(&b.name) {
                None => problems.push(format!("not in the source: {}", b.name)),
                Some((size, md5)) => {
                    seen += 1;
                    if *size != b.size {
                        problems.push(format!("{}: {} bytes, source {size}", b.name, b.size));
                    }
                    match (md5, &b.content_md5) {
                        (Some(want), Some(got)) if want != got => {
                            problems.push(format!("{}: Content-MD5 differs", b.name));
                        }
                        (Some(_), None) => md5_missing += 1,
                        _ => {}
                    }
                }
            }
        }
        if seen < self.blobs.len() {
            problems.push(format!("{} source blobs missing", self.blobs.len() - seen));
        }
        if !problems.is_empty() {
            bail!(
                "{who}: the backup container {container} holds {} blobs, the source {}; {}",
                listed.len(),
                self.blobs.len(),
                problems
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        Ok(md5_missing)
    }
}

/// The requests of one run, from the proxy's counts before and after it.
#[derive(Debug, Default, Clone, Serialize)]
struct Requests {
    /// Blob service requests the system sent (both accounts, every try).
    blob: u64,
    /// Queue service requests the system sent.
    queue: u64,
    /// Requests the emulator sent to itself to check copy sources (not charged to the system).
    emulator: u64,
    /// `service origin account operation` → requests.
    by_operation: BTreeMap<String, u64>,
}

impl Requests {
    fn between(before: &proxy::Counts, after: &proxy::Counts) -> Self {
        let mut r = Requests::default();
        for (key, n) in after {
            let n = n.saturating_sub(before.get(key).copied().unwrap_or(0));
            if n == 0 {
                continue;
            }
            let mut parts = key.split(' ');
            match (parts.next(), parts.next()) {
                (_, Some("emulator")) => r.emulator += n,
                (Some("queue"), _) => r.queue += n,
                _ => r.blob += n,
            }
            r.by_operation.insert(key.clone(), n);
        }
        r
    }

    /// Storage requests the system sent: blob and queue.
    fn sent(&self) -> u64 {
        self.blob + self.queue
    }

    /// Requests the system sent of one operation, over both accounts.
    fn of(&self, operation: &str) -> u64 {
        self.by_operation
            .iter()
            .filter(|(k, _)| k.contains(" client ") && k.ends_with(&format!(" {operation}")))
            .map(|(_, n)| n)
            .sum()
    }

    /// `2,000 copy_blob_from_url, 1 list_blobs` (requests the system sent, both accounts
    /// together, most first).
    fn summary(&self) -> String {
        let mut by_op: BTreeMap<&str, u64> = BTreeMap::new();
        for (key, n) in &self.by_operation {
            // `service origin account operation`; the operation may hold a space.
            let parts: Vec<&str> = key.splitn(4, ' ').collect();
            if let [_, "client", _, op] = parts[..] {
                *by_op.entry(op).or_default() += n;
            }
        }
        let mut ops: Vec<(&str, u64)> = by_op.into_iter().collect();
        ops.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        ops.iter()
            .map(|(op, n)| format!("{} {op}", thousands(*n)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// ---------------------------------------------------------------------------------------
// Measuring processes.

/// A child process of one run, its output read on threads.
#[derive(Debug)]
struct Proc {
    label: String,
    child: Child,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    status: Option<ExitStatus>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished process printed.
#[derive(Debug)]
struct Finished {
    label: String,
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Finished {
    /// Fails, with the end of what it printed, unless it exited 0.
    fn ok(self) -> anyhow::Result<Self> {
        if !self.status.success() {
            let err = String::from_utf8_lossy(&self.stderr);
            let lines: Vec<&str> = err.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            bail!(
                "{} exited with {}:\n{}\n{tail}",
                self.label,
                self.status,
                String::from_utf8_lossy(&self.stdout)
            );
        }
        Ok(self)
    }

    /// Standard output as one JSON document (a worker's summary, a coordinator's plan).
    fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.stdout).with_context(|| {
            format!(
                "{} printed no JSON: {}",
                self.label,
                String::from_utf8_lossy(&self.stdout)
            )
        })
    }
}

/// The processes of one system, sampled (CPU, peak RSS from `/proc`) until they exit.
#[derive(Debug, Default)]
struct Fleet {
    procs: Vec<Proc>,
    sampler: Sampler,
}

impl Fleet {
    fn start(&mut self, label: &str, command: &mut Command) -> anyhow::Result<()> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {label} ({:?})", command.get_program()))?;
        let stdout = child.stdout.take().map(read_all);
        let stderr = child.stderr.take().map(read_all);
        self.sampler.watch(child.id());
        self.procs.push(Proc {
            label: label.to_string(),
            child,
            stdout,
            stderr,
            status: None,
        });
        Ok(())
    }

    /// Samples every process once, then reaps those that exited; true once none runs.
    /// (CPU used after a process's last sample, under one polling interval, is not seen.)
    fn poll(&mut self) -> anyhow::Result<bool> {
        self.sampler.sample();
        for p in &mut self.procs {
            if p.status.is_none() {
                p.status = p.child.try_wait().context("waiting for a child")?;
            }
        }
        Ok(self.procs.iter().all(|p| p.status.is_some()))
    }

    async fn wait(&mut self, deadline: Instant) -> anyhow::Result<()> {
        while !self.poll()? {
            if Instant::now() > deadline {
                bail!("{} did not finish in time", self.running());
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    fn running(&self) -> String {
        self.procs
            .iter()
            .filter(|p| p.status.is_none())
            .map(|p| p.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// SIGTERM to every process still running (workers then stop receiving and exit).
    fn terminate(&self) {
        for p in self.procs.iter().filter(|p| p.status.is_none()) {
            let _ = Command::new("kill")
                .args(["-TERM", &p.child.id().to_string()])
                .status();
        }
    }

    /// (CPU seconds summed over the processes, largest peak RSS in KiB.)
    fn usage(&self) -> (f64, u64) {
        let u = self.sampler.usage(clock_ticks_per_second());
        (u.cpu_seconds, u.max_peak_rss_kib)
    }

    /// The processes started since the last call, all exited, in start order (their CPU
    /// and memory stay in `usage`).
    fn take_finished(&mut self) -> anyhow::Result<Vec<Finished>> {
        let mut out = Vec::new();
        for mut p in self.procs.drain(..) {
            let status = p.status.context("a process is still running")?;
            let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
                h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
            };
            out.push(Finished {
                label: p.label.clone(),
                status,
                stdout: join(p.stdout.take()),
                stderr: join(p.stderr.take()),
            });
        }
        Ok(out)
    }
}

/// This process's peak RSS is reset (writing 5 to `clear_refs`), so that an in-process
/// run's peak is its own, not the seeding's. False where the kernel refuses.
fn reset_own_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The emulator's two processes: this process's children running Azurite's blob and
/// queue services (`Azurite` starts them as `node …/azurite-blob`, `…/azurite-queue`).
fn azurite_pids() -> anyhow::Result<(u32, u32)> {
    let me = std::process::id();
    let (mut blob, mut queue) = (None, None);
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let parent = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent != Some(me) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("azurite-blob") {
            blob = Some(pid);
        } else if cmdline.contains("azurite-queue") {
            queue = Some(pid);
        }
    }
    match (blob, queue) {
        (Some(b), Some(q)) => Ok((b, q)),
        _ => bail!("cannot find the Azurite processes among this process's children"),
    }
}

/// CPU counters of the long-lived processes every run shares: the emulator and the proxy.
#[derive(Debug)]
struct Meter {
    azurite_blob: u32,
    azurite_queue: u32,
    proxy: u32,
    ticks_per_second: f64,
}

/// The shared processes' counters at one instant.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    azurite_blob: u64,
    azurite_queue: u64,
    proxy: u64,
}

/// Wall time and the shared processes' CPU between a mark and now.
#[derive(Debug, Clone, Copy)]
struct Span {
    wall_seconds: f64,
    azurite_blob_cpu_seconds: f64,
    azurite_queue_cpu_seconds: f64,
    proxy_cpu_seconds: f64,
}

impl Meter {
    fn mark(&self) -> Mark {
        Mark {
            at: Instant::now(),
            azurite_blob: cpu_ticks(self.azurite_blob).unwrap_or(0),
            azurite_queue: cpu_ticks(self.azurite_queue).unwrap_or(0),
            proxy: cpu_ticks(self.proxy).unwrap_or(0),
        }
    }

    fn since(&self, from: &Mark) -> Span {
        let now = self.mark();
        let secs = |a: u64, b: u64| a.saturating_sub(b) as f64 / self.ticks_per_second;
        Span {
            wall_seconds: from.at.elapsed().as_secs_f64(),
            azurite_blob_cpu_seconds: secs(now.azurite_blob, from.azurite_blob),
            azurite_queue_cpu_seconds: secs(now.azurite_queue, from.azurite_queue),
            proxy_cpu_seconds: secs(now.proxy, from.proxy),
        }
    }
}

// ---------------------------------------------------------------------------------------
// What a run records.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    /// Into an empty backup container.
    Copy,
    /// Again, nothing changed in the source.
    Rerun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Ceiling,
    Rclone,
    Lakevault,
    Listing,
}

#[derive(Debug, Clone, Serialize)]
struct Run {
    set: &'static str,
    /// Short and stable: `ceiling`, `rclone`, `lakevault-w2`, `listing`, ...
    key: String,
    /// As the report shows it.
    system: String,
    kind: Kind,
    phase: Phase,
    /// Blobs copied (copies) or blobs in the source (reruns).
    blobs: u64,
    bytes: u64,
    load_before: f64,
    wall_seconds: f64,
    /// CPU of the system's own processes (user + system).
    cpu_seconds: f64,
    /// The largest peak RSS of any of its processes.
    peak_rss_mib: f64,
    processes: usize,
    azurite_blob_cpu_seconds: f64,
    azurite_queue_cpu_seconds: f64,
    /// The counting proxy's CPU during the run (overhead every system pays per request).
    proxy_cpu_seconds: f64,
    requests: Requests,
    /// What the run did, in words (`copied 2,000`, `nothing planned`, ...).
    did: String,
    /// System-specific figures: rclone's stats, the plan, the workers' summaries.
    detail: serde_json::Value,
}

impl Run {
    fn blobs_per_second(&self) -> f64 {
        self.blobs as f64 / self.wall_seconds
    }

    fn mib_per_second(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.wall_seconds
    }

    fn cpu_ms_per_blob(&self) -> f64 {
        self.cpu_seconds * 1000.0 / self.blobs.max(1) as f64
    }

    fn requests_per_blob(&self) -> f64 {
        self.requests.sent() as f64 / self.blobs.max(1) as f64
    }

    /// Azurite's CPU (blob + queue services) over the run, in cores.
    fn azurite_cores(&self) -> f64 {
        (self.azurite_blob_cpu_seconds + self.azurite_queue_cpu_seconds) / self.wall_seconds
    }
}

/// Everything measured about a run but its identity and outcome.
#[derive(Debug, Clone, Copy)]
struct Measured {
    load_before: f64,
    span: Span,
    cpu_seconds: f64,
    peak_rss_kib: u64,
    processes: usize,
}

// ---------------------------------------------------------------------------------------
// Number formatting shared by the progress lines and the report.

/// `20,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 KiB`, `19.5 MiB`, `1 GiB`.
fn bytes(n: u64) -> String {
    let (value, unit) = if n >= GIB {
        (n as f64 / GIB as f64, "GiB")
    } else if n >= MIB {
        (n as f64 / MIB as f64, "MiB")
    } else if n >= KIB {
        (n as f64 / KIB as f64, "KiB")
    } else {
        (n as f64, "B")
    };
    if value.fract() == 0.0 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}
