//! Command-line interface of the worker. Every flag can also come from a `LAKEVAULT_*`
//! environment variable.

use crate::copy::{CopyEngine, CopyOptions};
use crate::message::{Context, MessagePolicy};
use crate::run::{self, RunError, RunOptions};
use clap::{Parser, Subcommand};
use lakevault_common::cli::CommonArgs;
use lakevault_common::queue::{AzureQueue, POISON_SUFFIX};
use lakevault_common::storage::StorageAccount;
use lakevault_common::throttle::{AdaptiveLimit, RateCap, ThrottlePolicy};
use std::io::Write;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "lakevault-worker",
    version,
    about = "Copies blobs server-side for lakevault, fed by the work queue"
,
    after_help = lakevault_common::exit::HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive and process work until stopped (SIGTERM/SIGINT) or, with
    /// --exit-when-idle, until the queue is drained.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Copies in flight at once.
    #[arg(long, env = "LAKEVAULT_CONCURRENCY", default_value = "16")]
    pub concurrency: NonZeroUsize,
    /// Cap on storage and queue requests per second from this worker (retries included);
    /// none by default. Busy answers (503, 500 OperationTimeout) lower the copy
    /// concurrency on their own.
    #[arg(long, env = "LAKEVAULT_MAX_REQUESTS_PER_SECOND", value_parser = positive_rate)]
    pub max_requests_per_second: Option<f64>,
    /// Messages held at once.
    #[arg(long, env = "LAKEVAULT_PREFETCH", default_value = "4")]
    pub prefetch: NonZeroUsize,
    /// Seconds a received message stays invisible; extended while work continues.
    #[arg(long, env = "LAKEVAULT_VISIBILITY_TIMEOUT_SECS", default_value_t = 60)]
    pub visibility_timeout_secs: u64,
    /// Exit once the queue has been empty for this many seconds (batch runs, tests).
    #[arg(long, env = "LAKEVAULT_EXIT_WHEN_IDLE", num_args = 0..=1, default_missing_value = "3")]
    pub exit_when_idle: Option<u64>,
    /// Attempts per item before it goes to the poison queue. An outage (the service
    /// unreachable, throttling, 5xx) uses up no attempt: it is waited out.
    #[arg(long, env = "LAKEVAULT_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,
    /// Deliveries of one message that end without finishing any item (a worker crashing or
    /// timing out on it) before it goes to the poison queue. Hand-backs (shutdown,
    /// credentials) and deliveries that made progress do not count.
    #[arg(long, env = "LAKEVAULT_MAX_DEQUEUE", default_value_t = 5)]
    pub max_dequeue: u64,
    /// Seconds before the first retry of a failed item (doubles per attempt, and per
    /// outage waited out up to 64 times this).
    #[arg(long, env = "LAKEVAULT_RETRY_DELAY_SECS", default_value_t = 5)]
    pub retry_delay_secs: u64,
    /// Seconds in-flight work may finish after SIGTERM before it is handed back.
    /// The default stays under Kubernetes' 30 s termination grace period, so released
    /// messages are visible again before the pod is killed.
    #[arg(long, env = "LAKEVAULT_DRAIN_TIMEOUT_SECS", default_value_t = 25)]
    pub drain_timeout_secs: u64,
    /// Sources up to this many MiB use one Copy Blob From URL; larger ones are copied in
    /// ranges (the service limit is 256).
    #[arg(long, env = "LAKEVAULT_SYNC_COPY_MAX_MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub sync_copy_max_mib: u64,
    /// Sources up to this many MiB (and above the single-copy limit) use one Put Blob From
    /// URL where the backup service has it (the service limit is 5,000; 0: never). A
    /// service that answers it 501, like the storage emulator, gets ranged copies.
    #[arg(long, env = "LAKEVAULT_PUT_FROM_URL_MAX_MIB", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=5000))]
    pub put_from_url_max_mib: u64,
    /// Range size in MiB for ranged copies.
    #[arg(long, env = "LAKEVAULT_BLOCK_SIZE_MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4000))]
    pub block_size_mib: u64,
    /// Lease mode: seconds of each source lease (renewed at half of it while copying).
    #[arg(long, env = "LAKEVAULT_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(15..=60))]
    pub lease_secs: u64,
    /// Snapshot mode: keep the source snapshot after its copy (default: delete it).
    #[arg(long, env = "LAKEVAULT_KEEP_SOURCE_SNAPSHOTS")]
    pub keep_source_snapshots: bool,
    /// Access tier of the backup blobs written (default: the backup account's default
    /// tier). History before an overwrite is a snapshot of the backup blob: where the
    /// service refuses to snapshot an archived blob, the item is poisoned with that reason
    /// rather than overwriting the only copy (`--no-history` where the account keeps
    /// versions).
    #[arg(long, env = "LAKEVAULT_ACCESS_TIER", value_enum)]
    pub access_tier: Option<Tier>,
    /// Overwrite backup blobs without keeping the replaced version as a snapshot. Only for
    /// backup accounts with blob versioning on, which keep old versions themselves.
    #[arg(long, env = "LAKEVAULT_NO_HISTORY")]
    pub no_history: bool,
    /// When the backup service cannot read a source the worker can read (a firewall or
    /// private endpoint between the accounts), copy it through the worker: ranged reads
    /// and Put Block, 8 MiB per blob in memory at a time. Off: such items are poisoned
    /// with that explanation.
    #[arg(long, env = "LAKEVAULT_STREAM_FALLBACK")]
    pub stream_fallback: bool,
    /// Do not carry the source's user index tags to the backup (lakevault's record tag is
    /// still written).
    #[arg(long, env = "LAKEVAULT_SKIP_SOURCE_TAGS")]
    pub skip_source_tags: bool,
    /// Serve `/healthz` and `/readyz` (probes) and `/metrics` (Prometheus) on this
    /// address (e.g. `0.0.0.0:8081`).
    #[arg(long, env = "LAKEVAULT_HEALTH_LISTEN")]
    pub health_listen: Option<std::net::SocketAddr>,
    /// Print the run summary as JSON on stdout when the worker exits.
    #[arg(long, env = "LAKEVAULT_SUMMARY_JSON")]
    pub summary_json: bool,
}

/// Access tiers a backup can be written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tier {
    Hot,
    Cool,
    Cold,
    Archive,
}

impl Tier {
    fn into_sdk(self) -> azure_storage_blob::models::AccessTier {
        use azure_storage_blob::models::AccessTier;
        match self {
            Tier::Hot => AccessTier::Hot,
            Tier::Cool => AccessTier::Cool,
            Tier::Cold => AccessTier::Cold,
            Tier::Archive => AccessTier::Archive,
        }
    }
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a positive number of requests per second"
        )),
    }
}

/// Exit codes: 0 done, 2 bad configuration or setup, 3 credentials failed (work kept).
pub async fn run(cli: Cli, stop: CancellationToken) -> anyhow::Result<i32> {
    let config = cli.common.load_config()?;
    let mut network = cli.common.network();
    let Command::Run(args) = cli.command;
    // Busy answers from any account lower the copy concurrency; successes raise it back.
    let copy_slots = AdaptiveLimit::new(args.concurrency.get());
    lakevault_common::metrics::observe_copy_concurrency(copy_slots.clone());
    network.throttle = ThrottlePolicy {
        limit: Some(copy_slots.clone()),
        rate: args.max_requests_per_second.map(RateCap::per_second),
    };
    let mut accounts = Vec::new();
    for (alias, account) in &config.accounts {
        accounts.push(StorageAccount::from_config(
            alias,
            account,
            network.clone(),
        )?);
    }
    let queue_account = accounts
        .iter()
        .find(|a| a.alias == config.queue.account)
        .ok_or_else(|| anyhow::anyhow!("queue.account `{}` is not defined", config.queue.account))?
        .clone();
    let queue = Arc::new(AzureQueue::new(
        &config.queue.name,
        queue_account.queue(&config.queue.name)?,
    ));
    let poison_name = format!("{}{POISON_SUFFIX}", config.queue.name);
    let poison = Arc::new(AzureQueue::new(
        &poison_name,
        queue_account.queue(&poison_name)?,
    ));
    let copy_options = CopyOptions {
        sync_copy_max: args.sync_copy_max_mib * 1024 * 1024,
        put_from_url_max: args.put_from_url_max_mib * 1024 * 1024,
        block_size: args.block_size_mib * 1024 * 1024,
        delete_source_snapshots: !args.keep_source_snapshots,
        lease_duration: Duration::from_secs(args.lease_secs),
        keep_history: !args.no_history,
        access_tier: args.access_tier.map(Tier::into_sdk),
        stream_fallback: args.stream_fallback,
        copy_tags: !args.skip_source_tags,
        ..Default::default()
    };
    let copier = Arc::new(CopyEngine::new(
        accounts.clone(),
        copy_options,
        crate::copy::WritePolicy::from_config(&config),
    ));
    let scanner = Arc::new(crate::scan::ScanEngine::new(
        accounts.clone(),
        queue_account.clone(),
        queue.clone(),
    ));
    let ledger = Some(queue_account.clone());
    let ctx = Arc::new(Context {
        scanner: Some(scanner),
        copier,
        ledger,
        queue: queue.clone(),
        poison: poison.clone(),
        copy_slots: copy_slots.clone(),
        policy: MessagePolicy {
            visibility: Duration::from_secs(args.visibility_timeout_secs.max(2)),
            max_attempts: args.max_attempts.max(1),
            max_dequeue: args.max_dequeue.max(1),
            retry_delay: Duration::from_secs(args.retry_delay_secs),
            releases_source_snapshots: !args.keep_source_snapshots,
        },
    });
    // Probes answer for the whole life of the process, draining included.
    let health = crate::health::Health::new();
    let probes_stop = CancellationToken::new();
    let _stop_probes = probes_stop.clone().drop_guard();
    if let Some(addr) = args.health_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("--health-listen {addr}: {e}"))?;
        tracing::info!(addr = %listener.local_addr()?, "health endpoints: /healthz /readyz /metrics");
        tokio::spawn(crate::health::serve(
            listener,
            health.clone(),
            probes_stop.clone(),
        ));
    }
    let options = RunOptions {
        prefetch: args.prefetch.get(),
        exit_when_idle: args.exit_when_idle.map(Duration::from_secs),
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        health: Some(health),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let result = run::run(ctx, options, stop).await;
    let elapsed = started.elapsed().as_secs_f64();
    match result {
        Ok(mut summary) => {
            summary.queue_requests = queue.requests() + poison.requests();
            // One entry per configured account (the queue's is among them); clones used by
            // the copy engine, the scanner and the ledger share its counter.
            summary.storage_requests = accounts.iter().map(|a| a.blob_requests()).sum();
            summary.lowest_concurrency = copy_slots.lowest();
            tracing::info!(
                messages = summary.messages,
                copied = summary.tally.copied,
                bytes = summary.tally.bytes,
                retried = summary.tally.retried,
                poisoned = summary.tally.poisoned,
                queue_requests = summary.queue_requests,
                storage_requests = summary.storage_requests,
                elapsed_seconds = elapsed,
                "worker finished"
            );
            // Written if anyone still reads it: a closed pipe does not change the exit code.
            if args.summary_json {
                let text = serde_json::to_string(&summary)?;
                let _ = writeln!(std::io::stdout(), "{text}");
            }
            Ok(0)
        }
        Err(RunError::Auth(reason)) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: credentials failed, stopping; no work was dropped: {reason}"
            );
            Ok(lakevault_common::exit::CREDENTIALS)
        }
        Err(e) => Err(e.into()),
    }
}
