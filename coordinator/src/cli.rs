//! Command-line interface. Every flag can also come from a `LAKEVAULT_*` environment
//! variable; topology (accounts, containers, queue) comes from the config file.

use crate::backup::{self, BackupOptions, BackupReport, Mode};
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use lakevault_common::cli::CommonArgs;
use lakevault_common::error::describe;
use lakevault_common::ledger::{self, JobStatus};
use lakevault_common::progress::{self, Progress};
use lakevault_common::queue::AzureQueue;
use lakevault_common::record::rfc3339;
use lakevault_common::storage::StorageAccount;
use lakevault_common::store::azure::AzureStore;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "lakevault-coordinator",
    version,
    about = "Plans lakevault backups: finds what changed and enqueues copy work for the workers"
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
    /// Diff every selected source container against the backup and enqueue copies of
    /// what is new or changed.
    Backup(BackupArgs),
    /// Show a job's progress from the ledger: planned items, done, poisoned, pending.
    Status(StatusArgs),
    /// Run as a service: an HTTP API that ingestion pipelines call to back up a scope
    /// now, and an optional cron schedule. The bearer token comes from
    /// LAKEVAULT_API_TOKEN or --token-file.
    Serve(ServeArgs),
    /// Check that the backup matches the source: every source blob present with a record
    /// of its current version, same size, same Content-MD5; `--deep` also compares content
    /// hashes where there is no MD5 to compare. Exit code 1 when anything differs.
    Verify(VerifyArgs),
    /// Restore a backup container (or a prefix of it) as it was at a point in time, through
    /// the queue and the workers; progress with `status`.
    Restore(RestoreArgs),
    /// Retention: delete backup versions that stopped being current longer ago than
    /// --keep-versions-for, and blobs marked deleted in the source longer ago than
    /// --tombstones-for (with their versions). Run with --dry-run first.
    Purge(PurgeArgs),
    /// Move poison records back to the work queue once their cause is fixed: failed items
    /// as a fresh batch, whole messages as they were. Records that are not lakevault work
    /// stay, and are reported.
    Redrive(RedriveArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Hash the content of both sides (streamed SHA-256) for blobs without a Content-MD5
    /// on both sides. Reads every such blob twice: plan for the egress.
    #[arg(long, env = "LAKEVAULT_VERIFY_DEEP")]
    pub deep: bool,
    /// Blobs hashed at once in deep mode.
    #[arg(long, env = "LAKEVAULT_VERIFY_PARALLELISM", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub parallelism: u64,
    /// Problems listed per container (all are counted).
    #[arg(long, env = "LAKEVAULT_VERIFY_MAX_LISTED", default_value_t = 100)]
    pub max_listed: usize,
    /// Output format of the report on stdout.
    #[arg(long, env = "LAKEVAULT_OUTPUT", value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup container to restore from: `<container>` in the backup account, or
    /// `<account alias>/<container>`.
    #[arg(long, env = "LAKEVAULT_RESTORE_FROM")]
    pub from: String,
    /// Only names under this prefix.
    #[arg(long, env = "LAKEVAULT_RESTORE_PREFIX")]
    pub prefix: Option<String>,
    /// Restore the versions current at this time (RFC 3339, e.g. 2026-11-22T04:00:00Z);
    /// default: now.
    #[arg(long, env = "LAKEVAULT_RESTORE_AS_OF")]
    pub as_of: Option<String>,
    /// Where to write: `<account alias>/<container>[/<prefix>]`. Default: the original
    /// location (the configured source account and the container the backup was made from).
    #[arg(long, env = "LAKEVAULT_RESTORE_TO")]
    pub to: Option<String>,
    /// Replace blobs that exist at the target (otherwise they are left alone and counted).
    #[arg(long, env = "LAKEVAULT_RESTORE_OVERWRITE")]
    pub overwrite: bool,
    /// Print the plan, enqueue nothing.
    #[arg(long, env = "LAKEVAULT_DRY_RUN")]
    pub dry_run: bool,
    /// Job id to use (default: a new UUID).
    #[arg(long, env = "LAKEVAULT_JOB_ID")]
    pub job_id: Option<String>,
    /// Blob names listed in the plan.
    #[arg(long, env = "LAKEVAULT_SAMPLE", default_value_t = 0)]
    pub sample: usize,
    /// Output format of the plan on stdout.
    #[arg(long, env = "LAKEVAULT_OUTPUT", value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    /// Keep old versions this long after they were replaced (`30d`, `12h`, `45m`, `90s`).
    /// The current version of a blob is always kept.
    #[arg(long, env = "LAKEVAULT_KEEP_VERSIONS_FOR", value_parser = crate::purge::parse_window)]
    pub keep_versions_for: time::Duration,
    /// Delete blobs marked deleted in the source this long ago, with all their versions.
    /// Without it, tombstoned blobs are kept for ever.
    #[arg(long, env = "LAKEVAULT_TOMBSTONES_FOR", value_parser = crate::purge::parse_window)]
    pub tombstones_for: Option<time::Duration>,
    /// Most deletions per container in one run; a container above it loses nothing (exit
    /// code 1): check, then raise it deliberately.
    #[arg(long, env = "LAKEVAULT_MAX_DELETES", default_value_t = 10_000)]
    pub max_deletes: u64,
    /// Report what would be deleted, delete nothing.
    #[arg(long, env = "LAKEVAULT_DRY_RUN")]
    pub dry_run: bool,
    /// Blob names shown per container.
    #[arg(long, env = "LAKEVAULT_SAMPLE", default_value_t = 0)]
    pub sample: usize,
    /// Output format of the report on stdout.
    #[arg(long, env = "LAKEVAULT_OUTPUT", value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct RedriveArgs {
    /// Only records of this job.
    #[arg(long, env = "LAKEVAULT_REDRIVE_JOB")]
    pub job: Option<String>,
    /// Re-drive at most this many records.
    #[arg(long, env = "LAKEVAULT_REDRIVE_LIMIT")]
    pub limit: Option<u64>,
    /// Output format of the summary on stdout.
    #[arg(long, env = "LAKEVAULT_OUTPUT", value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LAKEVAULT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// File holding the API bearer token (otherwise LAKEVAULT_API_TOKEN).
    #[arg(long, env = "LAKEVAULT_API_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Cron expression (5 fields, UTC) for scheduled backups of the configured scope.
    #[arg(long, env = "LAKEVAULT_SCHEDULE")]
    pub schedule: Option<String>,
    /// Mode of scheduled backups.
    #[arg(
        long,
        env = "LAKEVAULT_SCHEDULE_MODE",
        value_enum,
        default_value = "incremental"
    )]
    pub schedule_mode: Mode,
    /// See `backup --max-tombstones`.
    #[arg(long, env = "LAKEVAULT_MAX_TOMBSTONES", default_value_t = 1000)]
    pub max_tombstones: u64,
    /// See `backup --safety-margin-secs`.
    #[arg(long, env = "LAKEVAULT_SAFETY_MARGIN_SECS", default_value_t = 900)]
    pub safety_margin_secs: u64,
    /// Backups planned at once (requested over the API or scheduled); the others wait.
    #[arg(long, env = "LAKEVAULT_MAX_CONCURRENT_PLANS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent_plans: u64,
    /// Requested backups waiting for a planning slot, beyond which requests are answered
    /// 503 with Retry-After.
    #[arg(long, env = "LAKEVAULT_MAX_WAITING_PLANS", default_value_t = 64)]
    pub max_waiting_plans: usize,
    #[command(flatten)]
    pub scan: ScanArgs,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Job id (default: the most recently started job).
    pub job: Option<String>,
    /// Output format on stdout.
    #[arg(long, env = "LAKEVAULT_OUTPUT", value_enum, default_value = "table")]
    pub output: Output,
    /// Refresh every this many seconds until the job has no pending items.
    #[arg(long, env = "LAKEVAULT_WATCH_SECS", num_args = 0..=1, default_missing_value = "5")]
    pub watch: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Print the plan, enqueue nothing.
    #[arg(long, env = "LAKEVAULT_DRY_RUN")]
    pub dry_run: bool,
    /// Job id to use (default: a new UUID).
    #[arg(long, env = "LAKEVAULT_JOB_ID")]
    pub job_id: Option<String>,
    /// Output format of the plan on stdout.
    #[arg(long, env = "LAKEVAULT_OUTPUT", value_enum, default_value = "table")]
    pub output: Output,
    /// Blob names listed per container in the plan.
    #[arg(long, env = "LAKEVAULT_SAMPLE", default_value_t = 0)]
    pub sample: usize,
    /// Most source deletions per container marked as tombstones in one run. Above it the
    /// container's deletions are not recorded at all (exit code 1) and the backup stays
    /// untouched: raise it deliberately after checking the source.
    #[arg(long, env = "LAKEVAULT_MAX_TOMBSTONES", default_value_t = 1000)]
    pub max_tombstones: u64,
    /// `full` reconciles source and backup listings (catches everything, records
    /// deletions); `incremental` lists the source only and selects what changed since the
    /// last scan's watermark.
    #[arg(long, env = "LAKEVAULT_MODE", value_enum, default_value = "full")]
    pub mode: Mode,
    /// Incremental mode looks this many seconds before the watermark (clock skew, writes
    /// in flight during the last scan).
    #[arg(long, env = "LAKEVAULT_SAFETY_MARGIN_SECS", default_value_t = 900)]
    pub safety_margin_secs: u64,
    /// Take a snapshot of each blob to copy before enqueueing it; workers copy that
    /// immutable version and then delete the snapshot.
    #[arg(long, env = "LAKEVAULT_SNAPSHOT")]
    pub snapshot: bool,
    /// Mark items for lease mode: workers hold a lease on each source blob while copying
    /// it, so writers that honour leases cannot change it mid-copy.
    #[arg(long, env = "LAKEVAULT_LEASE")]
    pub lease: bool,
    #[command(flatten)]
    pub scan: ScanArgs,
}

/// How containers are split and scanned (shared by `backup` and `serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct ScanArgs {
    /// Shards per container to aim for: the key space is split at `/` boundaries (top
    /// directories first) into at least this many parts where the tree allows. 1 lists
    /// each container in one pass.
    #[arg(long, env = "LAKEVAULT_SHARDS", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub shards: u64,
    /// Shards the coordinator scans at once.
    #[arg(long, env = "LAKEVAULT_SCAN_PARALLELISM", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub scan_parallelism: u64,
    /// Hand the shards to the workers as scan tasks (each lists, diffs and enqueues its
    /// shard's copies), so scanning scales with the fleet. Progress: `status`.
    #[arg(long, env = "LAKEVAULT_DISTRIBUTED_SCAN")]
    pub distributed_scan: bool,
    /// Entries per List Blobs page (1–5000). Default: 5000 for one shard at a time, and
    /// 5000 / --scan-parallelism (at least 500) when shards are scanned side by side, so
    /// that memory stays that of one full listing.
    #[arg(long, env = "LAKEVAULT_LIST_PAGE_SIZE", value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub list_page_size: Option<u32>,
}

impl ScanArgs {
    fn apply(&self, options: &mut BackupOptions) {
        options.shards = usize::try_from(self.shards).unwrap_or(usize::MAX);
        options.scan_parallelism = usize::try_from(self.scan_parallelism).unwrap_or(1);
        options.distributed = self.distributed_scan;
        options.page_size = self.list_page_size;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli, cancel: CancellationToken) -> anyhow::Result<i32> {
    let config = cli.common.load_config()?;
    let network = cli.common.network();
    let account = |alias: &str| -> anyhow::Result<StorageAccount> {
        Ok(StorageAccount::from_config(
            alias,
            config.account(alias)?,
            network.clone(),
        )?)
    };
    match cli.command {
        Command::Status(args) => status(&account(&config.queue.account)?, &args, &cancel).await,
        Command::Verify(args) => {
            let source = account(&config.backup.source)?;
            let destination = account(&config.backup.destination)?;
            let options = crate::verify::VerifyOptions {
                deep: args.deep,
                deep_parallelism: usize::try_from(args.parallelism).unwrap_or(4),
                max_listed: args.max_listed,
                progress: Progress::counter(
                    progress::wanted(args.output == Output::Table),
                    "verify",
                    "blobs checked",
                ),
            };
            let report = crate::verify::run(&config, &source, &destination, &options).await;
            options.progress.finish();
            let report = report.context("verification failed")?;
            match args.output {
                Output::Json => println!("{}", serde_json::to_string(&report)?),
                Output::Table => print_verify(&report),
            }
            Ok(if report.passed() {
                lakevault_common::exit::OK
            } else {
                lakevault_common::exit::PARTIAL
            })
        }
        Command::Restore(args) => {
            use crate::restore::{RestoreOptions, Target, source_container_of};
            let (from_account, from_container) = match args.from.split_once('/') {
                Some((a, c)) => (a.to_string(), c.to_string()),
                None => (config.backup.destination.clone(), args.from.clone()),
            };
            let to = match &args.to {
                Some(t) => Target::parse(t).map_err(|e| anyhow::anyhow!("--to {e}"))?,
                None => Target {
                    account: config.backup.source.clone(),
                    container: source_container_of(&config, &from_container).ok_or_else(|| {
                        anyhow::anyhow!(
                            "--from `{from_container}` does not fit backup.container_template `{}`; give --to <alias>/<container>",
                            config.backup.container_template
                        )
                    })?,
                    prefix: None,
                },
            };
            let as_of = args
                .as_of
                .as_deref()
                .map(|t| {
                    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| anyhow::anyhow!("--as-of `{t}` is not an RFC 3339 time: {e}"))
                })
                .transpose()?;
            let backup = account(&from_account)?;
            let target = account(&to.account)?;
            let queue_account = account(&config.queue.account)?;
            let queue =
                AzureQueue::new(&config.queue.name, queue_account.queue(&config.queue.name)?);
            let options = RestoreOptions {
                job_id: args
                    .job_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                from_account,
                from_container,
                prefix: args.prefix.clone(),
                as_of,
                to,
                overwrite: args.overwrite,
                dry_run: args.dry_run,
                sample: args.sample,
                progress: Progress::counter(
                    progress::wanted(args.output == Output::Table),
                    "restore",
                    "backup versions read",
                ),
            };
            let started_at = rfc3339(time::OffsetDateTime::now_utc());
            let (backup, target) = (AzureStore::new(backup), AzureStore::new(target));
            let report = crate::restore::run(&backup, Some(&target), &queue, &options).await;
            options.progress.finish();
            let report = report.context("restore planning failed")?;
            if !report.dry_run
                && let Err(e) =
                    ledger::write_plan(&queue_account, &report.job_plan(&options, started_at)).await
            {
                eprintln!(
                    "warning: restore {} planned, but its ledger entry was not written: {}",
                    report.job_id,
                    describe(&e)
                );
            }
            match args.output {
                Output::Json => println!("{}", serde_json::to_string(&report)?),
                Output::Table => {
                    println!(
                        "restore {} from {} to {} as of {}{}",
                        report.job_id,
                        report.from,
                        report.to,
                        report.as_of.as_deref().unwrap_or("now"),
                        if report.dry_run {
                            " (dry run: nothing enqueued)"
                        } else {
                            ""
                        }
                    );
                    println!(
                        "{} blobs ({} bytes; {} from older versions) in {} messages; not restored: {} first backed up later, {} deleted at that time, {} without a record",
                        report.restore,
                        report.bytes,
                        report.from_older_versions,
                        report.messages,
                        report.not_yet_backed_up,
                        report.deleted_at_time,
                        report.unrecorded
                    );
                    for name in &report.sample {
                        println!("    {name}");
                    }
                }
            }
            Ok(lakevault_common::exit::OK)
        }
        Command::Purge(args) => {
            let source = account(&config.backup.source)?;
            let destination = account(&config.backup.destination)?;
            let options = crate::purge::PurgeOptions {
                keep_versions_for: args.keep_versions_for,
                tombstones_for: args.tombstones_for,
                max_deletes: args.max_deletes,
                dry_run: args.dry_run,
                sample: args.sample,
            };
            let destination = AzureStore::new(destination);
            let report = crate::purge::run(&config, &source, &destination, &options)
                .await
                .context("purge failed")?;
            match args.output {
                Output::Json => println!("{}", serde_json::to_string(&report)?),
                Output::Table => {
                    for c in &report.containers {
                        println!(
                            "{}: {} old versions, {} tombstoned blobs (with {} versions){}",
                            c.container,
                            c.versions,
                            c.tombstoned_blobs,
                            c.tombstoned_versions,
                            if report.dry_run {
                                " would be deleted (dry run)".to_string()
                            } else if c.capped {
                                format!(
                                    " — MORE THAN --max-deletes {}: nothing deleted",
                                    args.max_deletes
                                )
                            } else if c.changed_since_listed > 0 {
                                format!(
                                    "; {} deletions done, {} tombstoned blobs kept: backed up again since listed",
                                    c.deleted, c.changed_since_listed
                                )
                            } else {
                                format!("; {} deletions done", c.deleted)
                            }
                        );
                        for name in &c.sample {
                            println!("    {name}");
                        }
                    }
                    for f in &report.failed {
                        println!("FAILED container {}: {}", f.container, f.reason);
                    }
                }
            }
            let capped = report.containers.iter().any(|c| c.capped);
            Ok(if capped || !report.failed.is_empty() {
                lakevault_common::exit::PARTIAL
            } else {
                lakevault_common::exit::OK
            })
        }
        Command::Redrive(args) => {
            let queue_account = account(&config.queue.account)?;
            let poison_name = format!(
                "{}{}",
                config.queue.name,
                lakevault_common::queue::POISON_SUFFIX
            );
            let poison = AzureQueue::new(&poison_name, queue_account.queue(&poison_name)?);
            let work =
                AzureQueue::new(&config.queue.name, queue_account.queue(&config.queue.name)?);
            let options = crate::redrive::RedriveOptions {
                job: args.job.clone(),
                limit: args.limit,
            };
            let report = crate::redrive::redrive(&poison, &work, &options)
                .await
                .with_context(|| format!("re-driving `{poison_name}`"))?;
            match args.output {
                Output::Json => println!("{}", serde_json::to_string(&report)?),
                Output::Table => {
                    println!(
                        "re-drove {} records ({} items) from {} to {}; {} kept",
                        report.redriven,
                        report.items,
                        report.poison_queue,
                        report.work_queue,
                        report.kept
                    );
                    for (reason, n) in &report.kept_reasons {
                        println!("  kept {n}: {reason}");
                    }
                }
            }
            Ok(lakevault_common::exit::OK)
        }
        Command::Serve(args) => {
            let token = match (&args.token_file, std::env::var("LAKEVAULT_API_TOKEN")) {
                (Some(path), _) => std::fs::read_to_string(path)
                    .map(|t| t.trim().to_string())
                    .with_context(|| format!("--token-file {}", path.display()))?,
                (None, Ok(token)) => token.trim().to_string(),
                (None, Err(_)) => anyhow::bail!(
                    "serve needs an API bearer token: set LAKEVAULT_API_TOKEN or --token-file"
                ),
            };
            if token.len() < 16 {
                anyhow::bail!("the API bearer token must be at least 16 characters");
            }
            let schedule = args
                .schedule
                .as_deref()
                .map(|expr| {
                    expr.parse::<croner::Cron>().map_err(|e| {
                        anyhow::anyhow!("--schedule `{expr}` is not a cron expression: {e}")
                    })
                })
                .transpose()?;
            let queue_account = account(&config.queue.account)?;
            let state = std::sync::Arc::new(crate::serve::ServeState::new(
                config.clone(),
                account(&config.backup.source)?,
                account(&config.backup.destination)?,
                AzureQueue::new(&config.queue.name, queue_account.queue(&config.queue.name)?),
                queue_account,
                lakevault_common::secret::SecretString::new(token),
                {
                    let mut options = BackupOptions {
                        job_id: String::new(),
                        dry_run: false,
                        sample: 0,
                        max_tombstones: args.max_tombstones,
                        mode: Mode::Full,
                        snapshot: false,
                        lease: false,
                        write_watermarks: true,
                        safety_margin: std::time::Duration::from_secs(args.safety_margin_secs),
                        shards: 1,
                        scan_parallelism: 1,
                        distributed: false,
                        page_size: None,
                        progress: Progress::hidden(),
                    };
                    args.scan.apply(&mut options);
                    options
                },
                crate::serve::PlanLimits {
                    concurrent: usize::try_from(args.max_concurrent_plans).unwrap_or(usize::MAX),
                    waiting: args.max_waiting_plans,
                },
                cancel.clone(),
            ));
            if let Some(schedule) = schedule {
                state.spawn(crate::serve::run_schedule(
                    state.clone(),
                    schedule,
                    args.schedule_mode,
                ));
            }
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("listening on {}", args.listen))?;
            println!(
                "lakevault-coordinator serving on http://{}",
                listener.local_addr()?
            );
            axum::serve(listener, crate::serve::router(state.clone()))
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await?;
            // Plans in flight stop at their next listing entry; wait for them.
            state.drain().await;
            Ok(lakevault_common::exit::OK)
        }
        Command::Backup(args) => {
            let source = account(&config.backup.source)?;
            let destination = account(&config.backup.destination)?;
            let queue_account = account(&config.queue.account)?;
            let queue =
                AzureQueue::new(&config.queue.name, queue_account.queue(&config.queue.name)?);
            let mut options = BackupOptions {
                job_id: args
                    .job_id
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                dry_run: args.dry_run,
                sample: args.sample,
                max_tombstones: args.max_tombstones,
                mode: args.mode,
                snapshot: args.snapshot,
                lease: args.lease,
                write_watermarks: true,
                safety_margin: std::time::Duration::from_secs(args.safety_margin_secs),
                shards: 1,
                scan_parallelism: 1,
                distributed: false,
                page_size: None,
                progress: Progress::counter(
                    progress::wanted(args.output == Output::Table),
                    "backup",
                    "blobs compared",
                ),
            };
            args.scan.apply(&mut options);
            let started_at = rfc3339(time::OffsetDateTime::now_utc());
            let report =
                backup::run(&config, &source, &destination, &queue, &options, &cancel).await;
            options.progress.finish();
            let report = report.context("backup planning failed")?;
            if !report.dry_run {
                let plan = report.job_plan(args.mode, started_at);
                if let Err(e) = ledger::write_plan(&queue_account, &plan).await {
                    // The work is enqueued; only `status` lacks the plan.
                    eprintln!(
                        "warning: job {} planned, but its ledger entry was not written: {}",
                        report.job_id,
                        describe(&e)
                    );
                }
            }
            match args.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Table => print_table(&report),
            }
            let suppressed = report.containers.iter().any(|c| c.tombstones_suppressed);
            if report.failed.is_empty() && !suppressed {
                Ok(lakevault_common::exit::OK)
            } else {
                Ok(lakevault_common::exit::PARTIAL)
            }
        }
    }
}

async fn status(
    account: &StorageAccount,
    args: &StatusArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<i32> {
    let job = match &args.job {
        Some(job) => job.clone(),
        None => ledger::latest_job(account)
            .await
            .map_err(|e| anyhow::anyhow!("reading the ledger: {}", describe(&e)))?
            .ok_or_else(|| anyhow::anyhow!("no jobs in the ledger yet"))?,
    };
    // Watching on a terminal: one bar of items done, the table once at the end.
    let bar = Progress::bar(
        args.watch.is_some() && progress::wanted(args.output == Output::Table),
        "status",
        0,
        "items",
    );
    let result = watch_status(account, args, cancel, &job, &bar).await;
    bar.finish();
    result
}

async fn watch_status(
    account: &StorageAccount,
    args: &StatusArgs,
    cancel: &CancellationToken,
    job: &str,
    bar: &Progress,
) -> anyhow::Result<i32> {
    loop {
        let record = ledger::read_job(account, job)
            .await
            .map_err(|e| anyhow::anyhow!("reading job {job}: {}", describe(&e)))?;
        if record.plan.is_none() && record.outcomes.is_empty() {
            anyhow::bail!("job {job} is not in the ledger");
        }
        let s = JobStatus::from_record(job, record);
        let finished = s.state.starts_with("completed");
        if bar.is_visible() && !finished {
            bar.set_length(s.planned_items);
            bar.set_position(s.done);
            bar.set_message(format!(
                "{}: {} poisoned, {} pending",
                s.state, s.poisoned, s.pending
            ));
        } else {
            bar.finish();
            match args.output {
                Output::Json => println!("{}", serde_json::to_string(&s)?),
                Output::Table => print_status(&s),
            }
        }
        match args.watch {
            Some(secs) if !finished => {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(secs.max(1))) => {}
                    _ = cancel.cancelled() => {
                        // Stopped while the bar stood in for the table: leave the last
                        // status on the screen.
                        if bar.is_visible() {
                            bar.finish();
                            print_status(&s);
                        }
                        return Ok(lakevault_common::exit::OK);
                    }
                }
            }
            _ => {
                return Ok(if s.state == "completed_with_failures" {
                    lakevault_common::exit::PARTIAL
                } else {
                    lakevault_common::exit::OK
                });
            }
        }
    }
}

fn print_status(s: &JobStatus) {
    println!(
        "job {}: {} — {} of {} items done, {} poisoned, {} pending ({} batches, {} bytes copied)",
        s.job, s.state, s.done, s.planned_items, s.poisoned, s.pending, s.batches, s.bytes
    );
    if s.shards_total > 0 {
        println!(
            "  distributed scan: {} of {} shards scanned",
            s.shards_scanned, s.shards_total
        );
    }
    for f in &s.failed_containers {
        println!("  container {} not planned: {}", f.container, f.reason);
    }
    for f in &s.failures {
        println!("  failed {}: {}", f.name, f.reason);
    }
}

fn print_verify(report: &crate::verify::VerifyReport) {
    println!(
        "{:<28} {:<28} {:>9} {:>9} {:>9} {:>8} {:>11} {:>10}",
        "source container",
        "backup container",
        "checked",
        "ok",
        "problems",
        "hashed",
        "src-deleted",
        "tombstoned"
    );
    for c in &report.containers {
        println!(
            "{:<28} {:<28} {:>9} {:>9} {:>9} {:>8} {:>11} {:>10}",
            c.source_container,
            c.destination_container,
            c.checked,
            c.ok,
            c.problems,
            c.deep_hashed,
            c.deleted_in_source,
            c.tombstoned
        );
    }
    for c in &report.containers {
        for p in &c.listed {
            let kind = serde_json::to_value(p.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_uppercase))
                .unwrap_or_default();
            println!("{kind} {}/{}: {}", c.source_container, p.name, p.detail);
        }
        if c.problems > c.listed.len() as u64 {
            println!(
                "  … and {} more problems in {} (--max-listed)",
                c.problems - c.listed.len() as u64,
                c.source_container
            );
        }
    }
    for f in &report.failed {
        println!("FAILED container {}: {}", f.container, f.reason);
    }
    if report.passed() {
        println!(
            "verify: PASSED — every source blob is in the backup at its current version{}",
            if report.deep {
                " (content hashed where no MD5 to compare)"
            } else {
                ""
            }
        );
    } else {
        println!(
            "verify: FAILED — {} problems, {} containers not checked",
            report.problems(),
            report.failed.len()
        );
    }
}

fn print_table(report: &BackupReport) {
    let verb = if report.dry_run {
        "would enqueue"
    } else {
        "enqueued"
    };
    println!(
        "job {}{}",
        report.job_id,
        if report.dry_run {
            " (dry run: nothing enqueued)"
        } else {
            ""
        }
    );
    println!(
        "{:<28} {:<28} {:>9} {:>9} {:>10} {:>11} {:>10} {:>14} {:>9}",
        "source container",
        "backup container",
        "new",
        "changed",
        "unchanged",
        "src-deleted",
        "tombstoned",
        "bytes to copy",
        "messages"
    );
    for c in &report.containers {
        if c.scanned_by == backup::WORKERS {
            println!(
                "{:<28} {:<28} {} shards handed to the workers as scan tasks (progress: `status {}`)",
                c.source_container, c.destination_container, c.shards, report.job_id
            );
            continue;
        }
        println!(
            "{:<28} {:<28} {:>9} {:>9} {:>10} {:>11} {:>10} {:>14} {:>9}",
            c.source_container,
            c.destination_container,
            c.counts.new,
            c.counts.changed,
            c.counts.unchanged,
            c.counts.deleted_in_source,
            c.counts.already_tombstoned + c.tombstones,
            c.counts.bytes_to_copy,
            c.counts.messages
        );
        for name in &c.sample {
            println!("    {name}");
        }
    }
    for s in &report.skipped {
        println!("SKIPPED container {}: {}", s.container, s.reason);
    }
    for f in &report.failed {
        println!("FAILED container {}: {}", f.container, f.reason);
    }
    for c in report.containers.iter().filter(|c| c.tombstones_suppressed) {
        println!(
            "TOMBSTONES SUPPRESSED in {}: {} blobs are gone from the source, more than --max-tombstones; \
             none were marked and the backup is untouched. Check the source, then rerun with a higher --max-tombstones.",
            c.source_container, c.counts.deleted_in_source
        );
    }
    let to_copy = report.total(|c| c.counts.new + c.counts.changed);
    let messages = report.total(|c| c.counts.messages);
    println!(
        "plan: {} blobs to copy ({} bytes) in {} messages, {} unchanged, {} containers, {:.1}s; {verb} {} messages",
        to_copy,
        report.total(|c| c.counts.bytes_to_copy),
        messages,
        report.total(|c| c.counts.unchanged),
        report.containers.len(),
        report.elapsed_seconds,
        messages
    );
}
