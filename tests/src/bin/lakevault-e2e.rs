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
//! asserts on a time: the report states the targets and whether this run met them.

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

// ---------------------------------------------------------------------------------------
// The counting proxy: every system's blob and queue requests go through it.

mod proxy {
    use anyhow::Context;
    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
    use axum::response::Response;
    use futures::TryStreamExt;
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};

    /// Where the proxy answers with its counts (no account is named `_e2e`).
    const COUNTS_PATH: &str = "/_e2e/counts";

    /// Requests seen, by `service origin account operation`.
    pub type Counts = BTreeMap<String, u64>;

    #[derive(Debug, Clone, Copy)]
    enum Service {
        Blob,
        Queue,
    }

    #[derive(Debug)]
    struct Hop {
        service: Service,
        upstream: String,
        client: reqwest::Client,
        counts: Arc<Mutex<Counts>>,
    }

    /// Runs the proxy (in its own process): one port in front of the blob service, one in
    /// front of the queue service. Prints `BLOB_PORT QUEUE_PORT` on a line, then serves
    /// until its standard input closes (the bench ended, however it ended).
    pub async fn serve(blob_upstream: &str, queue_upstream: &str) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            .build()?;
        let counts = Arc::new(Mutex::new(Counts::new()));
        let hop = |service, upstream: &str| {
            Arc::new(Hop {
                service,
                upstream: upstream.trim_end_matches('/').to_string(),
                client: client.clone(),
                counts: counts.clone(),
            })
        };
        let blob = axum::Router::new()
            .route(COUNTS_PATH, axum::routing::get(report))
            .fallback(forward)
            .with_state(hop(Service::Blob, blob_upstream));
        let queue = axum::Router::new()
            .fallback(forward)
            .with_state(hop(Service::Queue, queue_upstream));
        let blob_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let queue_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!(
            "{} {}",
            blob_listener.local_addr()?.port(),
            queue_listener.local_addr()?.port()
        );
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        });
        tokio::select! {
            r = axum::serve(blob_listener, blob) => r.context("blob proxy")?,
            r = axum::serve(queue_listener, queue) => r.context("queue proxy")?,
            _ = stdin_closed => {}
        }
        Ok(())
    }

    async fn report(State(hop): State<Arc<Hop>>) -> axum::Json<Counts> {
        axum::Json(hop.counts.lock().map(|c| c.clone()).unwrap_or_default())
    }

    async fn forward(State(hop): State<Arc<Hop>>, request: Request) -> Response {
        let key = classify(hop.service, &request);
        if let Ok(mut counts) = hop.counts.lock() {
            *counts.entry(key).or_default() += 1;
        }
        relay(&hop, request).await
    }

    /// `service origin account operation` of one request. The origin is `emulator` for the
    /// requests Azurite sends itself (with axios) to check a copy source, `client` otherwise.
    fn classify(service: Service, request: &Request) -> String {
        let headers = request.headers();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let origin = if header("user-agent").is_some_and(|ua| ua.starts_with("axios")) {
            "emulator"
        } else {
            "client"
        };
        let path = request.uri().path();
        let mut segments = path.trim_start_matches('/').split('/');
        let account = segments.next().unwrap_or("");
        let rest: Vec<&str> = segments.filter(|s| !s.is_empty()).collect();
        let query = request.uri().query().unwrap_or("");
        let param = |key: &str| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
        };
        let method = request.method();
        let operation = match service {
            Service::Queue => queue_operation(method, &rest, param("comp")),
            Service::Blob => blob_operation(
                method,
                rest.len(),
                param("comp"),
                param("restype"),
                header("x-ms-copy-source").is_some(),
                header("x-ms-requires-sync") == Some("true"),
                header("x-ms-blob-type").is_some(),
            ),
        };
        let service = match service {
            Service::Blob => "blob",
            Service::Queue => "queue",
        };
        format!("{service} {origin} {account} {operation}")
    }

    fn queue_operation(method: &Method, rest: &[&str], comp: Option<&str>) -> String {
        let messages = rest.get(1) == Some(&"messages");
        let one_message = messages && rest.len() > 2;
        match (method.as_str(), messages, one_message, comp) {
            ("POST", true, false, _) => "send",
            ("GET", true, false, _) => "receive",
            ("PUT", true, true, _) => "update_message",
            ("DELETE", true, true, _) => "delete_message",
            ("GET" | "HEAD", false, _, Some("metadata")) => "queue_properties",
            ("PUT", false, _, None) => "create_queue",
            ("DELETE", false, _, None) => "delete_queue",
            (m, _, _, c) => return format!("{m} {}", c.unwrap_or("-")),
        }
        .to_string()
    }

    /// The Blob service operation of a request, from its method, path depth (0: the
    /// account, 1: a container, more: a blob) and the query and headers that tell them apart.
    fn blob_operation(
        method: &Method,
        depth: usize,
        comp: Option<&str>,
        restype: Option<&str>,
        copy_source: bool,
        requires_sync: bool,
        blob_type: bool,
    ) -> String {
        let m = method.as_str();
        let name = match (depth, restype, comp, m) {
            (0, _, Some("list"), _) => "list_containers",
            (0, _, Some("properties"), _) => "account_properties",
            (_, Some("account"), _, _) => "account_information",
            (1, Some("container"), Some("list"), _) => "list_blobs",
            (1, Some("container"), None, "PUT") => "create_container",
            (1, Some("container"), None, "DELETE") => "delete_container",
            (1, Some("container"), None, _) => "container_properties",
            (_, _, Some("block"), "PUT") if copy_source => "put_block_from_url",
            (_, _, Some("block"), "PUT") => "put_block",
            (_, _, Some("blocklist"), "PUT") => "put_block_list",
            (_, _, Some("blocklist"), _) => "get_block_list",
            (_, _, Some("metadata"), "PUT") => "set_metadata",
            (_, _, Some("metadata"), _) => "get_metadata",
            (_, _, Some("properties"), "PUT") => "set_properties",
            (_, _, Some("tags"), "PUT") => "set_tags",
            (_, _, Some("tags"), _) => "get_tags",
            (_, _, Some("tier"), _) => "set_tier",
            (_, _, Some("lease"), _) => "lease",
            (_, _, Some("snapshot"), _) => "snapshot",
            (_, _, None, "PUT") if copy_source && requires_sync => "copy_blob_from_url",
            (_, _, None, "PUT") if copy_source && blob_type => "put_blob_from_url",
            // Copy Blob: the asynchronous copy (the service completes it when it can).
            (_, _, None, "PUT") if copy_source => "copy_blob",
            (_, _, None, "PUT") => "put_blob",
            (_, _, None, "HEAD") => "get_properties",
            (_, _, None, "GET") => "get_blob",
            (_, _, None, "DELETE") => "delete_blob",
            (_, _, c, _) => return format!("{m} {}", c.unwrap_or("-")),
        };
        name.to_string()
    }

    /// Headers of one hop. The Host header is kept: Azurite accepts a copy source only on
    /// the host the copy request was sent to, and Shared Key signatures do not cover it.
    fn hop_by_hop(name: &HeaderName) -> bool {
        matches!(
            name.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade"
        )
    }

    async fn relay(hop: &Hop, request: Request) -> Response {
        let target = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let mut headers = HeaderMap::new();
        for (name, value) in request.headers() {
            if !hop_by_hop(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let body = reqwest::Body::wrap_stream(request.into_body().into_data_stream());
        let answer = match hop
            .client
            .request(method, format!("{}{target}", hop.upstream))
            .headers(headers)
            .body(body)
            .send()
            .await
        {
            Ok(a) => a,
            Err(e) => {
                return Response::builder()
                    .status(StatusCode::BAD_GATEWAY)
                    .body(Body::from(format!("counting proxy: {e}")))
                    .unwrap_or_default();
            }
        };
        let mut builder = Response::builder().status(answer.status().as_u16());
        for (name, value) in answer.headers() {
            if !hop_by_hop(name) {
                builder = builder.header(name, value);
            }
        }
        builder
            .body(Body::from_stream(
                answer.bytes_stream().map_err(std::io::Error::other),
            ))
            .unwrap_or_default()
    }

    /// The proxy process, seen from the bench; killed when dropped.
    #[derive(Debug)]
    pub struct CountingProxy {
        child: Child,
        pub blob_url: String,
        pub queue_url: String,
        http: reqwest::Client,
    }

    impl CountingProxy {
        /// Starts this binary as the proxy in front of Azurite's two services.
        pub fn start(blob_upstream: &str, queue_upstream: &str) -> anyhow::Result<Self> {
            let mut child = Command::new(std::env::current_exe()?)
                .args(["counting-proxy", "--blob-upstream", blob_upstream])
                .args(["--queue-upstream", queue_upstream])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting the counting proxy")?;
            let mut line = String::new();
            BufReader::new(child.stdout.take().context("proxy stdout")?)
                .read_line(&mut line)
                .context("reading the proxy's ports")?;
            let ports: Vec<u16> = line
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            let (Some(blob), Some(queue)) = (ports.first(), ports.get(1)) else {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the counting proxy did not print its ports (got `{line}`)");
            };
            Ok(Self {
                child,
                blob_url: format!("http://127.0.0.1:{blob}"),
                queue_url: format!("http://127.0.0.1:{queue}"),
                http: reqwest::Client::new(),
            })
        }

        pub fn pid(&self) -> u32 {
            self.child.id()
        }

        /// Every request counted since the proxy started.
        pub async fn counts(&self) -> anyhow::Result<Counts> {
            let body = self
                .http
                .get(format!("{}{COUNTS_PATH}", self.blob_url))
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            Ok(serde_json::from_slice(&body)?)
        }
    }

    impl Drop for CountingProxy {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
// The bench.

mod bench {
    use super::*;

    /// Accounts for the store seam, through the proxy (measured runs) or straight to the
    /// emulator (seeding, checking, cleaning up: never counted).
    #[derive(Debug)]
    pub(super) struct Pair {
        pub src: AzureStore,
        pub bak: AzureStore,
        /// The backup account, for its queue client.
        pub bak_account: StorageAccount,
    }

    #[derive(Debug)]
    pub(super) struct Bins {
        pub coordinator: PathBuf,
        pub worker: PathBuf,
        pub rclone: PathBuf,
    }

    /// The emulator, the proxy in front of it, and what every run needs.
    #[derive(Debug)]
    pub(super) struct World {
        pub args: Args,
        pub bins: Bins,
        pub dir: tempfile::TempDir,
        pub proxy: proxy::CountingProxy,
        pub meter: Meter,
        pub direct: Pair,
        pub proxied: Pair,
        /// Held, not read: dropping it stops the emulator, after every client above.
        _azurite: Azurite,
    }

    /// The start of a measured run.
    #[derive(Debug)]
    pub(super) struct Start {
        load: f64,
        counts: proxy::Counts,
        pub mark: Mark,
    }

    /// A lakevault config for the emulator: source and backup by shared key, as an operator
    /// would write it, with both services at `blob` and `queue` (proxy or emulator).
    fn config_toml(blob: &str, queue: &str, container: &str, template: &str, q: &str) -> String {
        format!(
            r#"[accounts.source]
kind = "shared_key"
account_name = "{SOURCE_ACCOUNT}"
account_key = "{SOURCE_KEY}"
blob_endpoint = "{blob}/{SOURCE_ACCOUNT}"
queue_endpoint = "{queue}/{SOURCE_ACCOUNT}"

[accounts.backup]
kind = "shared_key"
account_name = "{BACKUP_ACCOUNT}"
account_key = "{BACKUP_KEY}"
blob_endpoint = "{blob}/{BACKUP_ACCOUNT}"
queue_endpoint = "{queue}/{BACKUP_ACCOUNT}"

[backup]
source = "source"
destination = "backup"
containers = ["{container}"]
container_template = "{template}"

[queue]
account = "backup"
name = "{q}"
"#
        )
    }

    impl Bins {
        fn find(args: &Args) -> anyhow::Result<Self> {
            let here = std::env::current_exe()?
                .parent()
                .context("the bench binary has no directory")?
                .to_path_buf();
            let rclone = args
                .rclone
                .clone()
                .unwrap_or_else(|| repo_root().join("target/tools/rclone/rclone"));
            let bins = Self {
                coordinator: here.join("lakevault-coordinator"),
                worker: here.join("lakevault-worker"),
                rclone,
            };
            for bin in [&bins.coordinator, &bins.worker, &bins.rclone] {
                ensure!(
                    bin.exists(),
                    "{} not found: scripts/bench-e2e.sh builds and installs everything",
                    bin.display()
                );
            }
            Ok(bins)
        }
    }

    impl World {
        async fn start(args: Args, bins: Bins) -> anyhow::Result<Self> {
            let azurite = Azurite::start()?;
            let (azurite_blob, azurite_queue) = azurite_pids()?;
            let direct_blob = format!("http://127.0.0.1:{}", azurite.blob_port);
            let direct_queue = format!("http://127.0.0.1:{}", azurite.queue_port);
            let proxy = proxy::CountingProxy::start(&direct_blob, &direct_queue)?;
            let dir = tempfile::tempdir()?;
            let pair = |name: &str, blob: &str, queue: &str| -> anyhow::Result<Pair> {
                let path = dir.path().join(name);
                std::fs::write(
                    &path,
                    config_toml(blob, queue, "unused", "{container}", "unused"),
                )?;
                let (src, bak) = lakevault_tests::accounts(&Config::load(&path)?)?;
                Ok(Pair {
                    src: AzureStore::new(src),
                    bak: AzureStore::new(bak.clone()),
                    bak_account: bak,
                })
            };
            let direct = pair("direct.toml", &direct_blob, &direct_queue)?;
            let proxied = pair("proxied.toml", &proxy.blob_url, &proxy.queue_url)?;
            let meter = Meter {
                azurite_blob,
                azurite_queue,
                proxy: proxy.pid(),
                ticks_per_second: clock_ticks_per_second(),
            };
            Ok(Self {
                args,
                bins,
                dir,
                proxy,
                meter,
                direct,
                proxied,
                _azurite: azurite,
            })
        }

        pub async fn begin(&self) -> anyhow::Result<Start> {
            let load = load_average();
            let counts = self.proxy.counts().await?;
            Ok(Start {
                load,
                counts,
                mark: self.meter.mark(),
            })
        }

        pub async fn requests_since(&self, start: &Start) -> anyhow::Result<Requests> {
            Ok(Requests::between(
                &start.counts,
                &self.proxy.counts().await?,
            ))
        }

        /// A lakevault config through the proxy, backing `set` up into `template`.
        pub fn write_config(
            &self,
            set: &DataSet,
            template: &str,
            queue: &str,
        ) -> anyhow::Result<PathBuf> {
            let path = self.dir.path().join(format!("{queue}.toml"));
            let text = config_toml(
                &self.proxy.blob_url,
                &self.proxy.queue_url,
                &set.container,
                template,
                queue,
            );
            std::fs::write(&path, text)?;
            Ok(path)
        }

        pub fn azurite_peak_rss_mib(&self) -> f64 {
            vm_hwm_kib(self.meter.azurite_blob).unwrap_or(0) as f64 / 1024.0
        }

        async fn delete_backup_container(&self, container: &str) -> anyhow::Result<()> {
            self.direct
                .bak_account
                .container(container)?
                .delete(None)
                .await
                .with_context(|| format!("deleting {container}"))?;
            Ok(())
        }
    }

    impl Start {
        pub fn measured(
            &self,
            span: Span,
            cpu_seconds: f64,
            peak_rss_kib: u64,
            processes: usize,
        ) -> Measured {
            Measured {
                load_before: self.load,
                span,
                cpu_seconds,
                peak_rss_kib,
                processes,
            }
        }
    }

    /// Which run of a set this is.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Label<'a> {
        pub key: &'a str,
        pub system: &'a str,
        pub kind: Kind,
        pub phase: Phase,
    }

    /// What a run did, besides what was measured.
    #[derive(Debug)]
    pub(super) struct Outcome {
        pub requests: Requests,
        pub did: String,
        pub detail: serde_json::Value,
    }

    /// A run's record from its measurement and outcome.
    pub(super) fn record(set: &DataSet, label: Label<'_>, m: Measured, outcome: Outcome) -> Run {
        Run {
            set: set.key,
            key: label.key.to_string(),
            system: label.system.to_string(),
            kind: label.kind,
            phase: label.phase,
            blobs: set.blobs as u64,
            bytes: set.total_bytes(),
            load_before: m.load_before,
            wall_seconds: m.span.wall_seconds,
            cpu_seconds: m.cpu_seconds,
            peak_rss_mib: m.peak_rss_kib as f64 / 1024.0,
            processes: m.processes,
            azurite_blob_cpu_seconds: m.span.azurite_blob_cpu_seconds,
            azurite_queue_cpu_seconds: m.span.azurite_queue_cpu_seconds,
            proxy_cpu_seconds: m.span.proxy_cpu_seconds,
            requests: outcome.requests,
            did: outcome.did,
            detail: outcome.detail,
        }
    }

    /// Fails unless the run's blob count matches the set (a system that copied nothing).
    fn expect_blobs(what: &str, got: u64, set: &DataSet) -> anyhow::Result<()> {
        ensure!(
            got == set.blobs as u64,
            "{what}: {got} blobs, the source holds {}",
            set.blobs
        );
        Ok(())
    }

    // -- The ceiling ---------------------------------------------------------------------

    /// List the source, then copy every blob, `concurrency` in flight. Returns the count.
    async fn ceiling_copy(
        pair: &Pair,
        from: &str,
        to: &str,
        concurrency: usize,
    ) -> anyhow::Result<u64> {
        let listed = list_all(&pair.src, from).await?;
        let copied: Vec<()> = futures::stream::iter(listed.iter())
            .map(|blob| copy_blob(pair, from, to, blob, concurrency))
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        Ok(copied.len() as u64)
    }

    async fn copy_blob(
        pair: &Pair,
        from: &str,
        to: &str,
        blob: &Listed,
        concurrency: usize,
    ) -> anyhow::Result<()> {
        // Signing a SAS is local: no request.
        let source = pair
            .src
            .copy_source(BlobRef::new(from, &blob.name), SAS_VALIDITY)
            .await?;
        let target = BlobRef::new(to, &blob.name);
        if blob.size <= SYNC_COPY_MAX {
            let request = CopyFromUrl {
                source: &source,
                source_if_match: None,
                condition: Condition::None,
                tags: None,
                tier: None,
            };
            pair.bak
                .copy_from_url(target, request)
                .await
                .with_context(|| format!("ceiling: copying {}", blob.name))?;
        } else {
            copy_in_ranges(&pair.bak, target, &source, blob, concurrency).await?;
        }
        Ok(())
    }

    /// Put Block From URL of every range, then Put Block List (with the Content-MD5 the
    /// listing gave, so the copy carries it as a single copy would).
    async fn copy_in_ranges(
        bak: &AzureStore,
        target: BlobRef<'_>,
        source: &CopySource,
        blob: &Listed,
        concurrency: usize,
    ) -> anyhow::Result<()> {
        let ids = block_ids(blob.size);
        futures::stream::iter(ids.iter().enumerate())
            .map(|(i, id)| {
                let offset = i as u64 * BLOCK_SIZE;
                let length = BLOCK_SIZE.min(blob.size - offset);
                bak.stage_block_from_url(target, id, source, None, offset, length)
            })
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await
            .with_context(|| format!("ceiling: staging {}", blob.name))?;
        let commit = Commit {
            headers: ContentHeaders {
                content_md5: blob.content_md5.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        bak.commit_blocks(target, &ids, commit)
            .await
            .with_context(|| format!("ceiling: committing {}", blob.name))?;
        Ok(())
    }

    async fn ceiling(world: &World, set: &DataSet, truth: &Truth) -> anyhow::Result<Run> {
        let dest = format!("{}-ceiling", set.container);
        world.direct.bak.create_container(&dest).await?;
        let start = world.begin().await?;
        let rss_reset = reset_own_peak_rss();
        let cpu_before = own_cpu_seconds();
        let copied = ceiling_copy(
            &world.proxied,
            &set.container,
            &dest,
            world.args.concurrency,
        )
        .await?;
        let span = world.meter.since(&start.mark);
        let cpu = own_cpu_seconds() - cpu_before;
        let peak = vm_hwm_kib(std::process::id()).unwrap_or(0);
        let requests = world.requests_since(&start).await?;
        expect_blobs("ceiling", copied, set)?;
        let md5_missing = truth.check(&world.direct.bak, &dest, "ceiling").await?;
        world.delete_backup_container(&dest).await?;
        let label = Label {
            key: "ceiling",
            system: "ceiling (Copy Blob From URL loop)",
            kind: Kind::Ceiling,
            phase: Phase::Copy,
        };
        let outcome = Outcome {
            requests,
            did: format!("copied {}", thousands(copied)),
            detail: serde_json::json!({ "peak_rss_reset": rss_reset, "md5_missing": md5_missing }),
        };
        Ok(record(
            set,
            label,
            start.measured(span, cpu, peak, 1),
            outcome,
        ))
    }

    /// Blobs copied to warm the emulator up before anything is measured.
    const WARM_UP_COPIES: usize = 500;

    /// Copies some blobs of `set` and sends a few queue messages through the proxy, not
    /// measured: the emulator's JavaScript is compiled as it runs, so without this the
    /// first system measured would pay for the emulator's start.
    async fn warm_up(world: &World, set: &DataSet) -> anyhow::Result<()> {
        let scratch = "e2e-warm-up";
        world.direct.bak.create_container(scratch).await?;
        let listed = list_all(&world.proxied.src, &set.container).await?;
        let concurrency = world.args.concurrency;
        futures::stream::iter(listed.iter().take(WARM_UP_COPIES))
            .map(|blob| copy_blob(&world.proxied, &set.container, scratch, blob, concurrency))
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        world.delete_backup_container(scratch).await?;
        let queue = AzureQueue::new(scratch, world.proxied.bak_account.queue(scratch)?);
        queue.ensure_exists().await?;
        for _ in 0..20 {
            queue.send("warm-up", Duration::ZERO).await?;
        }
        loop {
            let received = queue.receive(32, Duration::from_secs(30)).await?;
            if received.is_empty() {
                break;
            }
            for m in received {
                queue.delete(&m.id, &m.pop_receipt).await?;
            }
        }
        world
            .direct
            .bak_account
            .queue(scratch)?
            .delete(None)
            .await?;
        Ok(())
    }

    // -- rclone --------------------------------------------------------------------------

    /// `rclone sync`, remotes from the environment only (`src:`, `dst:`).
    fn rclone_command(world: &World, set: &DataSet, dest: &str, checksum: bool) -> Command {
        let mut c = Command::new(&world.bins.rclone);
        c.env("RCLONE_CONFIG", "/dev/null");
        for (remote, account, key) in [
            ("SRC", SOURCE_ACCOUNT, SOURCE_KEY),
            ("DST", BACKUP_ACCOUNT, BACKUP_KEY),
        ] {
            // Account and key (not a connection string): a server-side copy across
            // accounts needs rclone to sign the source itself.
            c.env(format!("RCLONE_CONFIG_{remote}_TYPE"), "azureblob")
                .env(format!("RCLONE_CONFIG_{remote}_ACCOUNT"), account)
                .env(format!("RCLONE_CONFIG_{remote}_KEY"), key)
                .env(
                    format!("RCLONE_CONFIG_{remote}_ENDPOINT"),
                    format!("{}/{account}", world.proxy.blob_url),
                );
        }
        let concurrency = world.args.concurrency.to_string();
        c.arg("sync")
            .arg(format!("src:{}", set.container))
            .arg(format!("dst:{dest}"))
            .args(["--server-side-across-configs", "--fast-list"])
            .args(["--azureblob-no-check-container", "--retries", "1"])
            .args(["--transfers", &concurrency, "--checkers", &concurrency])
            // rclone's default verbosity; only its final stats, as one JSON line.
            .args([
                "--use-json-log",
                "--stats-log-level",
                "NOTICE",
                "--stats",
                "24h",
            ]);
        if checksum {
            c.arg("--checksum");
        }
        c
    }

    /// rclone's final stats: the last log line carrying them.
    fn rclone_stats(stderr: &[u8]) -> anyhow::Result<serde_json::Value> {
        String::from_utf8_lossy(stderr)
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v.get("stats").cloned())
            .context("rclone printed no final stats")
    }

    /// One `rclone sync` into `dest`, measured.
    async fn rclone_run(
        world: &World,
        set: &DataSet,
        dest: &str,
        checksum: bool,
        label: Label<'_>,
    ) -> anyhow::Result<Run> {
        let start = world.begin().await?;
        let mut fleet = Fleet::default();
        fleet.start("rclone", &mut rclone_command(world, set, dest, checksum))?;
        fleet.wait(Instant::now() + RUN_TIMEOUT).await?;
        let span = world.meter.since(&start.mark);
        let (cpu, peak) = fleet.usage();
        let requests = world.requests_since(&start).await?;
        let finished = fleet
            .take_finished()?
            .pop()
            .context("rclone output")?
            .ok()?;
        let stats = rclone_stats(&finished.stderr)?;
        let n = |k: &str| stats[k].as_u64().unwrap_or(0);
        ensure!(n("errors") == 0, "rclone reports errors: {stats}");
        let copies = n("serverSideCopies");
        if label.phase == Phase::Copy {
            expect_blobs("rclone server-side copies", copies, set)?;
        }
        // Without --checksum a blob rclone finds equal in size but not in modification
        // time gets its time written (Set Blob Metadata), or is copied again.
        let mut did = format!(
            "copied {}, checked {}",
            thousands(n("transfers")),
            thousands(n("checks"))
        );
        let rewrites = requests.of("set_metadata") + requests.of("set_properties");
        if rewrites > 0 {
            let _ = write!(did, ", {} modtimes rewritten", thousands(rewrites));
        }
        let outcome = Outcome {
            requests,
            did,
            detail: serde_json::json!({ "stats": stats, "checksum": checksum }),
        };
        Ok(record(
            set,
            label,
            start.measured(span, cpu, peak, 1),
            outcome,
        ))
    }

    fn rclone_label<'a>(key: &'a str, system: &'a str, phase: Phase) -> Label<'a> {
        Label {
            key,
            system,
            kind: Kind::Rclone,
            phase,
        }
    }

    /// rclone's copy, then its reruns with nothing changed.
    async fn rclone(
        world: &World,
        set: &DataSet,
        truth: &Truth,
        runs: &mut Vec<Run>,
    ) -> anyhow::Result<()> {
        let dest = format!("{}-rclone", set.container);
        world.direct.bak.create_container(&dest).await?;
        let copy = rclone_label("rclone", "rclone sync", Phase::Copy);
        let mut copy = rclone_run(world, set, &dest, true, copy).await?;
        report_progress(&copy);
        copy.detail["md5_missing"] = truth
            .check(&world.direct.bak, &dest, "rclone")
            .await?
            .into();
        runs.push(copy);
        let label = rclone_label(
            "rclone-rerun-checksum",
            "rclone sync --checksum",
            Phase::Rerun,
        );
        let with_checksum = rclone_run(world, set, &dest, true, label).await?;
        report_progress(&with_checksum);
        runs.push(with_checksum);
        let label = rclone_label(
            "rclone-rerun-modtime",
            "rclone sync (size, modtime)",
            Phase::Rerun,
        );
        let modtime = rclone_run(world, set, &dest, false, label).await?;
        report_progress(&modtime);
        // The first such rerun may write modification times or copy again; when it did,
        // the next one shows the steady state.
        let changed = modtime.requests.of("set_metadata")
            + modtime.requests.of("set_properties")
            + modtime.detail["stats"]["transfers"].as_u64().unwrap_or(0);
        runs.push(modtime);
        if changed > 0 {
            let label = rclone_label(
                "rclone-rerun-modtime-2",
                "rclone sync (size, modtime), again",
                Phase::Rerun,
            );
            let again = rclone_run(world, set, &dest, false, label).await?;
            report_progress(&again);
            runs.push(again);
        }
        truth
            .check(&world.direct.bak, &dest, "rclone after its reruns")
            .await?;
        world.delete_backup_container(&dest).await
    }

    // -- lakevault -----------------------------------------------------------------------

    fn coordinator(world: &World, config: &Path, job: &str) -> Command {
        let mut c = Command::new(&world.bins.coordinator);
        c.arg("--config")
            .arg(config)
            .args(["backup", "--output", "json", "--job-id", job])
            .env_remove("RUST_LOG");
        c
    }

    /// A worker that stops once the queue is empty (nothing visible, nothing in flight).
    fn worker(world: &World, config: &Path, concurrency: usize) -> Command {
        let mut c = Command::new(&world.bins.worker);
        c.arg("--config")
            .arg(config)
            .args(["run", "--exit-when-idle", "0", "--summary-json"])
            .args(["--concurrency", &concurrency.to_string()])
            .env_remove("RUST_LOG");
        c
    }

    /// Blobs to copy and messages in a coordinator's JSON plan.
    fn planned(plan: &serde_json::Value) -> (u64, u64) {
        let sum = |k: &str| -> u64 {
            plan["containers"]
                .as_array()
                .map(|cs| cs.iter().map(|c| c[k].as_u64().unwrap_or(0)).sum())
                .unwrap_or(0)
        };
        (sum("new") + sum("changed"), sum("messages"))
    }

    /// The coordinator plans into an empty backup container, then `workers` processes
    /// drain the queue. The run ends when the queue is empty (every message settled); the
    /// workers, idle by then, are stopped, their CPU counted to their exit.
    async fn lakevault_copy(
        world: &World,
        set: &DataSet,
        truth: &Truth,
        workers: usize,
    ) -> anyhow::Result<Run> {
        let label = format!("w{workers}");
        let dest = format!("{}-{label}", set.container);
        let config = world.write_config(set, &format!("{{container}}-{label}"), &dest)?;
        world.direct.bak.create_container(&dest).await?;
        let queue = AzureQueue::new(&dest, world.direct.bak_account.queue(&dest)?);
        let deadline = Instant::now() + RUN_TIMEOUT;

        let start = world.begin().await?;
        let mut fleet = Fleet::default();
        fleet.start(
            "lakevault-coordinator",
            &mut coordinator(world, &config, &dest),
        )?;
        fleet.wait(deadline).await?;
        let plan_seconds = start.mark.at.elapsed().as_secs_f64();
        let plan = fleet
            .take_finished()?
            .pop()
            .context("coordinator output")?
            .ok()?
            .json()?;
        let (to_copy, messages) = planned(&plan);
        expect_blobs("lakevault plan", to_copy, set)?;
        let per_worker = world.args.concurrency / workers;
        for i in 0..workers {
            fleet.start(
                &format!("lakevault-worker {i}"),
                &mut worker(world, &config, per_worker),
            )?;
        }
        // Processes are sampled every POLL, the queue asked less often: each ask is a
        // request to the emulator's queue service.
        let mut asked: Option<Instant> = None;
        loop {
            if fleet.poll()? {
                break;
            }
            if asked.is_none_or(|t| t.elapsed() >= QUEUE_POLL) {
                asked = Some(Instant::now());
                if queue.approximate_len().await? == 0 {
                    break;
                }
            }
            ensure!(
                Instant::now() < deadline,
                "lakevault workers did not drain the queue in time"
            );
            tokio::time::sleep(POLL).await;
        }
        let span = world.meter.since(&start.mark);
        fleet.terminate();
        fleet.wait(deadline).await?;
        let (cpu, peak) = fleet.usage();
        let requests = world.requests_since(&start).await?;

        let mut summaries = Vec::new();
        for f in fleet.take_finished()? {
            summaries.push(f.ok()?.json()?);
        }
        let total = |k: &str| -> u64 { summaries.iter().map(|s| s[k].as_u64().unwrap_or(0)).sum() };
        ensure!(
            total("poisoned") == 0,
            "lakevault poisoned {} items",
            total("poisoned")
        );
        expect_blobs("lakevault workers' copies", total("copied"), set)?;
        let md5_missing = truth
            .check(&world.direct.bak, &dest, &format!("lakevault {label}"))
            .await?;
        let detail = serde_json::json!({
            "plan_seconds": plan_seconds,
            "plan": plan,
            "messages": messages,
            "concurrency_per_worker": per_worker,
            "workers": summaries,
            // lakevault's own counts, to compare with the proxy's.
            "self_reported_storage_requests": total("storage_requests"),
            "self_reported_queue_requests": total("queue_requests") + messages,
            "md5_missing": md5_missing,
        });
        let noun = if workers == 1 { "worker" } else { "workers" };
        let label = Label {
            key: &format!("lakevault-{label}"),
            system: &format!("lakevault, {workers} {noun}"),
            kind: Kind::Lakevault,
            phase: Phase::Copy,
        };
        let outcome = Outcome {
            requests,
            did: format!(
                "copied {} ({messages} messages)",
                thousands(total("copied"))
            ),
            detail,
        };
        Ok(record(
            set,
            label,
            start.measured(span, cpu, peak, 1 + workers),
            outcome,
        ))
    }

    /// The coordinator's plan with nothing changed. No worker runs: nothing is enqueued,
    /// and workers in service would only be waiting on an empty queue anyway.
    async fn lakevault_rerun(world: &World, set: &DataSet, dest: &str) -> anyhow::Result<Run> {
        let config = world.dir.path().join(format!("{dest}.toml"));
        let start = world.begin().await?;
        let mut fleet = Fleet::default();
        fleet.start(
            "lakevault-coordinator",
            &mut coordinator(world, &config, &format!("{dest}-rerun")),
        )?;
        fleet.wait(Instant::now() + RUN_TIMEOUT).await?;
        let span = world.meter.since(&start.mark);
        let (cpu, peak) = fleet.usage();
        let requests = world.requests_since(&start).await?;
        let plan = fleet
            .take_finished()?
            .pop()
            .context("coordinator output")?
            .ok()?
            .json()?;
        let (to_copy, messages) = planned(&plan);
        ensure!(
            to_copy == 0 && messages == 0,
            "lakevault's rerun planned {to_copy} copies in {messages} messages; nothing changed"
        );
        let unchanged: u64 = plan["containers"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| c["unchanged"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        expect_blobs("lakevault rerun: unchanged", unchanged, set)?;
        let label = Label {
            key: "lakevault-rerun",
            system: "lakevault plan",
            kind: Kind::Lakevault,
            phase: Phase::Rerun,
        };
        let outcome = Outcome {
            requests,
            did: format!("nothing planned ({} unchanged)", thousands(unchanged)),
            detail: serde_json::json!({ "plan": plan }),
        };
        Ok(record(
            set,
            label,
            start.measured(span, cpu, peak, 1),
            outcome,
        ))
    }

    // -- The bare listing ----------------------------------------------------------------

    async fn count_listed(store: &AzureStore, container: &str) -> anyhow::Result<u64> {
        store
            .list(container, ListOptions::default())
            .try_fold(0u64, |n, _| async move { Ok(n + 1) })
            .await
            .with_context(|| format!("listing {container}"))
    }

    /// List Blobs of the source and of `backup`, side by side, full pages.
    async fn bare_listing(world: &World, set: &DataSet, backup: &str) -> anyhow::Result<Run> {
        let start = world.begin().await?;
        let rss_reset = reset_own_peak_rss();
        let cpu_before = own_cpu_seconds();
        let (source, copy) = tokio::try_join!(
            count_listed(&world.proxied.src, &set.container),
            count_listed(&world.proxied.bak, backup)
        )?;
        let span = world.meter.since(&start.mark);
        let cpu = own_cpu_seconds() - cpu_before;
        let peak = vm_hwm_kib(std::process::id()).unwrap_or(0);
        let requests = world.requests_since(&start).await?;
        expect_blobs("bare listing of the source", source, set)?;
        expect_blobs("bare listing of the backup", copy, set)?;
        let label = Label {
            key: "listing",
            system: "bare listing, both sides",
            kind: Kind::Listing,
            phase: Phase::Rerun,
        };
        let outcome = Outcome {
            requests,
            did: format!("listed {} + {}", thousands(source), thousands(copy)),
            detail: serde_json::json!({ "peak_rss_reset": rss_reset }),
        };
        Ok(record(
            set,
            label,
            start.measured(span, cpu, peak, 1),
            outcome,
        ))
    }

    // -- One set, then the whole bench ---------------------------------------------------

    fn report_progress(r: &Run) {
        let speed = match r.phase {
            Phase::Copy => format!("{:.1} blobs/s", r.blobs_per_second()),
            Phase::Rerun => "rerun".to_string(),
        };
        eprintln!(
            "  {:<36} {:>8.2} s  {speed:>15}  CPU {:>7.2} s  {:>6.1} MiB  {:>6} requests  Azurite {:>3.0}%  load {:.2}  {}",
            r.system,
            r.wall_seconds,
            r.cpu_seconds,
            r.peak_rss_mib,
            r.requests.sent(),
            r.azurite_cores() * 100.0,
            r.load_before,
            r.did
        );
    }

    /// Every system on one set. Returns how many of its source blobs carry a Content-MD5.
    async fn bench_set(world: &World, set: &DataSet, runs: &mut Vec<Run>) -> anyhow::Result<usize> {
        let truth = Truth::read(&world.direct.src, set).await?;
        eprintln!(
            "{}: {}, {} with a Content-MD5",
            set.key,
            set.describe(),
            thousands(truth.with_md5() as u64)
        );
        let r = ceiling(world, set, &truth).await?;
        report_progress(&r);
        runs.push(r);
        rclone(world, set, &truth, runs).await?;
        let mut last = None;
        for (i, &workers) in world.args.workers.iter().enumerate() {
            let r = lakevault_copy(world, set, &truth, workers).await?;
            report_progress(&r);
            runs.push(r);
            let dest = format!("{}-w{workers}", set.container);
            if i + 1 < world.args.workers.len() {
                world.delete_backup_container(&dest).await?;
            } else {
                last = Some(dest);
            }
        }
        let backup = last.context("no lakevault run")?;
        let r = bare_listing(world, set, &backup).await?;
        report_progress(&r);
        runs.push(r);
        let r = lakevault_rerun(world, set, &backup).await?;
        report_progress(&r);
        runs.push(r);
        world.delete_backup_container(&backup).await?;
        Ok(truth.with_md5())
    }

    fn validate(args: &Args) -> anyhow::Result<()> {
        ensure!(args.small > 0, "--small must be at least 1");
        ensure!(args.concurrency > 0, "--concurrency must be at least 1");
        ensure!(
            !args.workers.is_empty(),
            "--workers needs at least one count"
        );
        for &w in &args.workers {
            ensure!(
                w > 0 && args.concurrency.is_multiple_of(w),
                "--workers {w}: each count must divide --concurrency {} (copies in flight are split evenly)",
                args.concurrency
            );
        }
        Ok(())
    }

    /// Azurite holds blobs in memory, and the memory of a deleted copy only when its
    /// garbage collector runs (every 10 minutes). The large blob's source and every ranged
    /// copy of it (ceiling, up to three by rclone, three by lakevault) must fit, below the
    /// emulator's default limit of half the RAM, with room to spare.
    fn check_memory(sets: &[DataSet]) -> anyhow::Result<()> {
        let Some(large) = sets.iter().find(|s| s.key == "large") else {
            return Ok(());
        };
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| -> Option<u64> {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib * KIB)
        };
        let (Some(available), Some(total)) = (field("MemAvailable:"), field("MemTotal:")) else {
            return Ok(());
        };
        let need = large.total_bytes() * 8 + 2 * GIB;
        ensure!(
            need <= available && need <= total / 2,
            "the large blob needs about {} of memory in the in-memory emulator (its default limit is half of RAM, {}), {} is available: pass --no-large or a smaller --large-mib",
            bytes(need),
            bytes(total / 2),
            bytes(available)
        );
        Ok(())
    }

    pub(super) async fn run(args: Args) -> anyhow::Result<()> {
        validate(&args)?;
        let sets = DataSet::all(&args);
        check_memory(&sets)?;
        let bins = Bins::find(&args)?;
        let out = if args.out.is_absolute() {
            args.out.clone()
        } else {
            repo_root().join(&args.out)
        };
        std::fs::create_dir_all(&out)?;
        let started = Instant::now();
        let mut meta = report::Meta::collect(&args, &bins)?;
        let world = World::start(args, bins).await?;

        let seeding = Instant::now();
        for set in &sets {
            eprintln!("seeding {}: {}", set.key, set.describe());
            seed(&world.direct.src, set).await?;
        }
        meta.seed_seconds = seeding.elapsed().as_secs_f64();
        eprintln!("warming the emulator up (not measured)");
        warm_up(&world, &sets[0]).await?;

        let mut runs = Vec::new();
        for set in &sets {
            let with_md5 = bench_set(&world, set, &mut runs).await?;
            meta.source_blobs_with_md5
                .insert(set.key.to_string(), with_md5);
            meta.azurite_peak_rss_mib = world.azurite_peak_rss_mib();
            meta.bench_seconds = started.elapsed().as_secs_f64();
            report::write(&out, &meta, &sets, &runs)?;
        }
        if world.args.docs {
            report::copy_charts_to_docs(&out)?;
        }
        println!("{}", std::fs::read_to_string(out.join("e2e.md"))?);
        println!("report: {}", out.join("e2e.md").display());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The report: Markdown tables, raw JSON, SVG charts.

mod report {
    use super::*;

    #[derive(Debug, Clone, Serialize)]
    pub(super) struct Meta {
        pub started_utc: String,
        pub command: String,
        pub cpus: usize,
        pub memory_total_mib: u64,
        pub azurite: String,
        pub rclone: String,
        pub lakevault_revision: String,
        pub concurrency: usize,
        pub workers: Vec<usize>,
        pub seed_seconds: f64,
        pub bench_seconds: f64,
        pub azurite_peak_rss_mib: f64,
        /// Per set: source blobs with a Content-MD5, compared with their copies'.
        pub source_blobs_with_md5: BTreeMap<String, usize>,
    }

    fn first_line(program: &Path, args: &[&str], dir: Option<&Path>) -> String {
        let mut c = Command::new(program);
        c.args(args);
        if let Some(d) = dir {
            c.current_dir(d);
        }
        c.output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "unknown".to_string())
    }

    impl Meta {
        pub fn collect(args: &Args, bins: &bench::Bins) -> anyhow::Result<Self> {
            let package: serde_json::Value =
                std::fs::read_to_string(repo_root().join("azurite/package.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
            let memory_total_mib = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find_map(|l| l.strip_prefix("MemTotal:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                })
                .unwrap_or(0)
                / 1024;
            Ok(Self {
                started_utc: time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)?,
                command: std::env::args().collect::<Vec<_>>().join(" "),
                cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
                memory_total_mib,
                azurite: format!(
                    "Azurite {} (in memory)",
                    package["dependencies"]["azurite"].as_str().unwrap_or("?")
                ),
                rclone: first_line(&bins.rclone, &["version"], None),
                lakevault_revision: first_line(
                    Path::new("git"),
                    &["describe", "--always", "--dirty"],
                    Some(&repo_root()),
                ),
                concurrency: args.concurrency,
                workers: args.workers.clone(),
                seed_seconds: 0.0,
                bench_seconds: 0.0,
                azurite_peak_rss_mib: 0.0,
                source_blobs_with_md5: BTreeMap::new(),
            })
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
    #[serde(rename_all = "snake_case")]
    pub(super) enum Bound {
        AtLeast,
        AtMost,
    }

    /// One target of the small set, checked against every lakevault run it concerns.
    #[derive(Debug, Clone, Serialize)]
    pub(super) struct Target {
        pub target: String,
        pub bound: Bound,
        pub limit: f64,
        /// (lakevault run, measured ratio).
        pub measured: Vec<(String, f64)>,
        pub met_by: Vec<String>,
    }

    impl Target {
        fn new(target: &str, bound: Bound, limit: f64, measured: Vec<(String, f64)>) -> Self {
            let met_by = measured
                .iter()
                .filter(|(_, v)| match bound {
                    Bound::AtLeast => *v >= limit,
                    Bound::AtMost => *v <= limit,
                })
                .map(|(who, _)| who.clone())
                .collect();
            Self {
                target: target.to_string(),
                bound,
                limit,
                measured,
                met_by,
            }
        }
    }

    /// The set the targets are about.
    const TARGET_SET: &str = "small";

    fn find<'a>(runs: &'a [Run], set: &str, key: &str) -> Option<&'a Run> {
        runs.iter().find(|r| r.set == set && r.key == key)
    }

    /// `f(run) / f(reference)` for every lakevault copy of the target set.
    fn against(runs: &[Run], reference: &str, f: fn(&Run) -> f64) -> Vec<(String, f64)> {
        let Some(base) = find(runs, TARGET_SET, reference) else {
            return Vec::new();
        };
        runs.iter()
            .filter(|r| r.set == TARGET_SET && r.kind == Kind::Lakevault && r.phase == Phase::Copy)
            .map(|r| (r.system.clone(), f(r) / f(base)))
            .collect()
    }

    pub(super) fn targets(runs: &[Run]) -> Vec<Target> {
        let rerun = match (
            find(runs, TARGET_SET, "lakevault-rerun"),
            find(runs, TARGET_SET, "listing"),
        ) {
            (Some(r), Some(l)) => vec![(r.system.clone(), r.wall_seconds / l.wall_seconds)],
            _ => Vec::new(),
        };
        vec![
            Target::new(
                "lakevault blobs/s ≥ 0.9 × ceiling (small blobs)",
                Bound::AtLeast,
                0.9,
                against(runs, "ceiling", Run::blobs_per_second),
            ),
            Target::new(
                "lakevault blobs/s ≥ 1.3 × rclone (small blobs)",
                Bound::AtLeast,
                1.3,
                against(runs, "rclone", Run::blobs_per_second),
            ),
            Target::new(
                "lakevault no-change rerun ≤ 1.5 × bare listing of both sides (small blobs)",
                Bound::AtMost,
                1.5,
                rerun,
            ),
            Target::new(
                "lakevault CPU per blob ≤ 0.5 × rclone's (small blobs)",
                Bound::AtMost,
                0.5,
                against(runs, "rclone", Run::cpu_ms_per_blob),
            ),
        ]
    }

    // -- Formatting ----------------------------------------------------------------------

    /// Three significant digits (`0.0421`, `4.21`, `421`, `4,210`).
    pub(super) fn sig(x: f64) -> String {
        if !x.is_finite() {
            return "–".to_string();
        }
        let a = x.abs();
        if a >= 1000.0 {
            thousands(x.round() as u64)
        } else if a >= 100.0 {
            format!("{x:.0}")
        } else if a >= 10.0 {
            format!("{x:.1}")
        } else if a >= 1.0 {
            format!("{x:.2}")
        } else if a == 0.0 {
            "0".to_string()
        } else {
            let digits = (2 - a.log10().floor() as i32).max(0) as usize;
            format!("{x:.digits$}")
        }
    }

    fn ratio(x: f64) -> String {
        if x.is_finite() {
            format!("{x:.2}×")
        } else {
            "–".to_string()
        }
    }

    fn copy_table(runs: &[&Run], ceiling: Option<&Run>, rclone: Option<&Run>) -> String {
        let mut t = String::from(
            "| system | wall s | blobs/s | MiB/s | × ceiling | × rclone | CPU ms/blob | CPU × rclone | peak RSS MiB | requests/blob | Azurite CPU | load |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let vs = |r: &Run, base: Option<&Run>, f: fn(&Run) -> f64| {
            base.map_or(f64::NAN, |b| f(r) / f(b))
        };
        for r in runs {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.0}% | {:.2} |",
                r.system,
                sig(r.wall_seconds),
                sig(r.blobs_per_second()),
                sig(r.mib_per_second()),
                ratio(vs(r, ceiling, Run::blobs_per_second)),
                ratio(vs(r, rclone, Run::blobs_per_second)),
                sig(r.cpu_ms_per_blob()),
                ratio(vs(r, rclone, Run::cpu_ms_per_blob)),
                r.peak_rss_mib,
                r.requests_per_blob(),
                r.azurite_cores() * 100.0,
                r.load_before
            );
        }
        t
    }

    fn rerun_table(runs: &[&Run], listing: Option<&Run>) -> String {
        let mut t = String::from(
            "| system | wall s | × bare listing | CPU s | peak RSS MiB | requests | what it did | Azurite CPU | load |\n\
             |---|---:|---:|---:|---:|---:|---|---:|---:|\n",
        );
        for r in runs {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {:.0} | {} | {} | {:.0}% | {:.2} |",
                r.system,
                sig(r.wall_seconds),
                ratio(listing.map_or(f64::NAN, |l| r.wall_seconds / l.wall_seconds)),
                sig(r.cpu_seconds),
                r.peak_rss_mib,
                thousands(r.requests.sent()),
                r.did,
                r.azurite_cores() * 100.0,
                r.load_before
            );
        }
        t
    }

    fn targets_table(targets: &[Target]) -> String {
        let mut t = String::from("| target | measured | met |\n|---|---|---|\n");
        for target in targets {
            let measured = if target.measured.is_empty() {
                "not measured".to_string()
            } else {
                target
                    .measured
                    .iter()
                    .map(|(who, v)| format!("{who}: {v:.2}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let met = if target.measured.is_empty() {
                "–".to_string()
            } else if target.met_by.is_empty() {
                "**no**".to_string()
            } else if target.met_by.len() == target.measured.len() {
                "yes".to_string()
            } else {
                format!("only by {}", target.met_by.join(", "))
            };
            let _ = writeln!(t, "| {} | {measured} | {met} |", target.target);
        }
        t
    }

    /// A warning when other work competed for the CPUs during the runs.
    fn load_caution(meta: &Meta, runs: &[Run]) -> String {
        let busy: Vec<f64> = runs
            .iter()
            .map(|r| r.load_before)
            .filter(|&l| l > meta.cpus as f64)
            .collect();
        if busy.is_empty() {
            return String::new();
        }
        format!(
            "**Caution:** the load average was above the number of CPUs ({}) before {} of the {} runs (up to {:.1}): other work competed for the CPUs. Every figure is a single run, and under such load they can be off by tens of percent; rerun on a quiet machine before drawing conclusions.\n\n",
            meta.cpus,
            busy.len(),
            runs.len(),
            busy.iter().copied().fold(0.0, f64::max)
        )
    }

    pub(super) fn markdown(
        meta: &Meta,
        sets: &[DataSet],
        runs: &[Run],
        targets: &[Target],
    ) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# lakevault end to end: ceiling, rclone and lakevault on one emulator\n"
        );
        let _ = writeln!(
            md,
            "Run {} on {} CPUs, {} MiB of memory; {}, {}, lakevault {}. Every system copies the same seeded blobs from `{SOURCE_ACCOUNT}` to `{BACKUP_ACCOUNT}` with {} copies in flight in total (lakevault: split evenly between its workers). Seeding took {:.1} s, the whole bench {:.0} s; the emulator's blob service peaked at {:.0} MiB RSS.\n",
            meta.started_utc,
            meta.cpus,
            meta.memory_total_mib,
            meta.azurite,
            meta.rclone,
            meta.lakevault_revision,
            meta.concurrency,
            meta.seed_seconds,
            meta.bench_seconds,
            meta.azurite_peak_rss_mib
        );
        let _ = writeln!(md, "`{}`\n", meta.command);
        md.push_str(&load_caution(meta, runs));
        md.push_str("## Targets, this run\n\n");
        md.push_str(&targets_table(targets));
        md.push('\n');
        for set in sets {
            let of_set: Vec<&Run> = runs.iter().filter(|r| r.set == set.key).collect();
            if of_set.is_empty() {
                continue;
            }
            let _ = writeln!(md, "## {}: {}\n", set.key, set.describe());
            if let Some(n) = meta.source_blobs_with_md5.get(set.key) {
                let _ = writeln!(
                    md,
                    "{} of the source blobs carry a Content-MD5; every copy was checked against the source (names, sizes, MD5 where both have one).\n",
                    thousands(*n as u64)
                );
            }
            let copies: Vec<&Run> = of_set
                .iter()
                .copied()
                .filter(|r| r.phase == Phase::Copy)
                .collect();
            let reruns: Vec<&Run> = of_set
                .iter()
                .copied()
                .filter(|r| r.phase == Phase::Rerun)
                .collect();
            let _ = writeln!(md, "Copy into an empty backup container:\n");
            md.push_str(&copy_table(
                &copies,
                find(runs, set.key, "ceiling"),
                find(runs, set.key, "rclone"),
            ));
            md.push('\n');
            for r in copies.iter().filter(|r| r.kind == Kind::Lakevault) {
                let _ = writeln!(
                    md,
                    "- {}: plan {:.2} s of the {:.2} s; {}.",
                    r.system,
                    r.detail["plan_seconds"].as_f64().unwrap_or(f64::NAN),
                    r.wall_seconds,
                    r.did
                );
            }
            let _ = writeln!(md, "\nNo-change rerun (nothing changed in the source):\n");
            md.push_str(&rerun_table(&reruns, find(runs, set.key, "listing")));
            let _ = writeln!(md, "\nRequests sent, by operation (both accounts):\n");
            for r in &of_set {
                let _ = writeln!(md, "- {}: {}", r.system, r.requests.summary());
            }
            md.push('\n');
        }
        md.push_str(HOW_MEASURED);
        md
    }

    const HOW_MEASURED: &str = "## How this is measured\n\n\
- One Azurite (blob and queue services, one Node.js process each, in memory) with two accounts, seeded once and warmed up with 500 copies and a few queue messages that are not measured; the systems then run one after the other in the order of the tables, once each; each system copies into its own empty backup container, which is then listed and compared with the source (names, sizes, Content-MD5 where both have one; a difference stops the bench) and deleted.\n\
- On the emulator, Copy Blob and Copy Blob From URL record a reference to the source's bytes, so their cost does not grow with the blob's size: the 1 MiB set measures the cost per copy again, and its MiB/s says nothing of Azure, where the service copies the bytes. Put Block From URL (blobs above 256 MiB) does read and write them.\n\
- **ceiling**: this bench's own loop through lakevault's store seam: List Blobs of the source, then one synchronous Copy Blob From URL per blob (a read SAS signed locally), all copies in flight at once up to the concurrency; above 256 MiB, Put Block From URL of 64 MiB ranges and Put Block List. No retries beyond the SDK's, no records, no queue.\n\
- **rclone**: `rclone sync --server-side-across-configs --fast-list --checksum --transfers N --checkers N --retries 1` at its default verbosity, remotes from environment variables (account and key). Its reruns: with `--checksum`, then without (size and modification time); when that one changed anything, once more.\n\
- **lakevault**: the release `lakevault-coordinator backup` plans and enqueues, then the `lakevault-worker run --exit-when-idle 0` processes start and drain the queue. Wall time runs from the coordinator's start until the queue is empty (asked every 50 ms); the workers, idle by then, are stopped with SIGTERM and their CPU counted until they exit. The no-change rerun is the coordinator's plan alone: it enqueues nothing, so there is nothing for workers to do.\n\
- **bare listing**: List Blobs (pages of 5,000) of the source and of lakevault's backup container, the two listings side by side, from this bench: the floor of any rerun that reads both sides.\n\
- **CPU** and **peak RSS** are read from `/proc` every 20 ms for child processes (summed CPU, largest peak); for the in-process ceiling and listing, this process's CPU over the run and its peak RSS after a reset (`clear_refs`). CPU is counted in clock ticks (10 ms per process), so runs of a few hundred milliseconds are coarse. **Azurite CPU** is the emulator's CPU (both services) over the run's wall time, in % of one core: near 100% its blob service, one Node.js thread, is the bound. **load** is the 1-minute load average before the run.\n\
- **requests** are counted by an HTTP proxy that all of every system's blob and queue traffic goes through (it adds the same hop to everyone): every try of every request the system sent, both accounts. The HEAD requests the emulator sends itself to check a copy source are not counted (Azure does that check inside the service). The bench's own requests (seeding, checking, asking the queue whether it is drained) go straight to the emulator and are not counted.\n\
- The proxy's own CPU is in e2e.json (`proxy_cpu_seconds`), not in any system's. The seeded blobs have the Content-MD5 the service computes for Put Blob, except the large blob, committed from blocks without one (as most uploaders of large blobs leave it). rclone without `--checksum` compares sizes and modification times, and where the times differ, hashes: it writes the time when the hashes match, and copies again a blob that has none to compare. The column *what it did* says which each rerun did.\n\
- Nothing here is asserted: the targets are stated with what this run measured.\n";

    // -- Charts --------------------------------------------------------------------------

    struct Bar {
        label: String,
        value: f64,
        text: String,
        color: &'static str,
    }

    struct Group {
        title: String,
        bars: Vec<Bar>,
    }

    fn color(kind: Kind) -> &'static str {
        match kind {
            Kind::Lakevault => "#2b6cb0",
            Kind::Rclone => "#dd6b20",
            Kind::Ceiling => "#4a5568",
            Kind::Listing => "#a0aec0",
        }
    }

    fn xml(text: &str) -> String {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    }

    /// Horizontal bars, one group per data set, each group on its own scale.
    fn chart(title: &str, groups: &[Group]) -> String {
        const WIDTH: f64 = 780.0;
        const LABEL: f64 = 250.0;
        const BARS: f64 = 420.0;
        const ROW: f64 = 22.0;
        let rows: usize = groups.iter().map(|g| g.bars.len() + 1).sum();
        let height = 50.0 + rows as f64 * ROW + groups.len() as f64 * 10.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="10" y="24" font-size="15" font-weight="bold">{}</text>"#,
            xml(title)
        );
        let mut y = 44.0;
        for g in groups {
            let _ = writeln!(
                s,
                r#"<text x="10" y="{}" font-weight="bold">{}</text>"#,
                y + 14.0,
                xml(&g.title)
            );
            y += ROW;
            let max = g.bars.iter().map(|b| b.value).fold(0.0f64, f64::max);
            for b in &g.bars {
                let w = if max > 0.0 && b.value.is_finite() {
                    (b.value / max * BARS).max(1.0)
                } else {
                    0.0
                };
                let _ = writeln!(
                    s,
                    r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                    LABEL - 8.0,
                    y + 13.0,
                    xml(&b.label)
                );
                let _ = writeln!(
                    s,
                    r#"<rect x="{LABEL}" y="{}" width="{w:.1}" height="16" fill="{}"/>"#,
                    y + 2.0,
                    b.color
                );
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{}">{}</text>"#,
                    LABEL + w + 6.0,
                    y + 14.0,
                    xml(&b.text)
                );
                y += ROW;
            }
            y += 10.0;
        }
        s.push_str("</svg>\n");
        s
    }

    fn groups(
        sets: &[DataSet],
        runs: &[Run],
        keep: impl Fn(&Run) -> bool,
        value: impl Fn(&Run, &DataSet) -> (f64, String),
        unit: impl Fn(&DataSet) -> String,
    ) -> Vec<Group> {
        sets.iter()
            .filter_map(|set| {
                let bars: Vec<Bar> = runs
                    .iter()
                    .filter(|r| r.set == set.key && keep(r))
                    .map(|r| {
                        let (v, text) = value(r, set);
                        Bar {
                            label: r.system.clone(),
                            value: v,
                            text,
                            color: color(r.kind),
                        }
                    })
                    .collect();
                (!bars.is_empty()).then(|| Group {
                    title: format!("{}: {} — {}", set.key, set.describe(), unit(set)),
                    bars,
                })
            })
            .collect()
    }

    /// The charts' file names, in the order `charts` returns them.
    pub(super) const CHARTS: [&str; 3] = [
        "e2e-throughput.svg",
        "e2e-cpu-per-blob.svg",
        "e2e-rerun.svg",
    ];

    /// (file name, SVG) of every chart.
    pub(super) fn charts(sets: &[DataSet], runs: &[Run]) -> Vec<(&'static str, String)> {
        let copies = |r: &Run| r.phase == Phase::Copy;
        // One blob a second says little about a large blob: its set is shown in MiB/s.
        let by_blobs = |set: &DataSet| set.blobs > 1;
        let throughput = groups(
            sets,
            runs,
            copies,
            |r, set| {
                let v = if by_blobs(set) {
                    r.blobs_per_second()
                } else {
                    r.mib_per_second()
                };
                (v, sig(v))
            },
            |set| {
                if by_blobs(set) {
                    "blobs/s".into()
                } else {
                    "MiB/s".into()
                }
            },
        );
        let cpu = groups(
            sets,
            runs,
            copies,
            |r, _| (r.cpu_ms_per_blob(), sig(r.cpu_ms_per_blob())),
            |_| "CPU ms per blob".into(),
        );
        let rerun = groups(
            sets,
            runs,
            |r| r.phase == Phase::Rerun,
            |r, _| (r.wall_seconds, format!("{} s", sig(r.wall_seconds))),
            |_| "seconds".into(),
        );
        let svgs = [
            chart("Copy into an empty backup (higher is better)", &throughput),
            chart(
                "CPU per copied blob, all of a system's processes (lower is better)",
                &cpu,
            ),
            chart(
                "No-change rerun vs the bare listing of both sides (lower is better)",
                &rerun,
            ),
        ];
        CHARTS.into_iter().zip(svgs).collect()
    }

    #[derive(Serialize)]
    struct Json<'a> {
        meta: &'a Meta,
        sets: Vec<serde_json::Value>,
        targets: &'a [Target],
        runs: &'a [Run],
    }

    pub(super) fn write(
        out: &Path,
        meta: &Meta,
        sets: &[DataSet],
        runs: &[Run],
    ) -> anyhow::Result<()> {
        let targets = targets(runs);
        std::fs::write(out.join("e2e.md"), markdown(meta, sets, runs, &targets))?;
        let json = Json {
            meta,
            sets: sets
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "set": s.key,
                        "container": s.container,
                        "blobs": s.blobs,
                        "blob_bytes": s.blob_bytes,
                    })
                })
                .collect(),
            targets: &targets,
            runs,
        };
        std::fs::write(out.join("e2e.json"), serde_json::to_string_pretty(&json)?)?;
        for (name, svg) in charts(sets, runs) {
            std::fs::write(out.join(name), svg)?;
        }
        Ok(())
    }

    pub(super) fn copy_charts_to_docs(out: &Path) -> anyhow::Result<()> {
        let docs = repo_root().join("docs/bench");
        std::fs::create_dir_all(&docs)?;
        for name in CHARTS {
            std::fs::copy(out.join(name), docs.join(name))
                .with_context(|| format!("copying {name} to {}", docs.display()))?;
        }
        eprintln!("charts copied to {}", docs.display());
        Ok(())
    }
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
