//! Command-line interface. Every flag can also come from a `LAKEVAULT_*` environment
//! variable; topology (accounts, containers, queue) comes from the config file.

//!
//! `run` is a dispatcher: each command is a module of its own, with its flags, what it
//! does, and how it prints its report.

mod backup;
mod purge;
mod redrive;
mod restore;
mod serve;
mod status;
mod verify;

pub use backup::BackupArgs;
pub use purge::PurgeArgs;
pub use redrive::RedriveArgs;
pub use restore::RestoreArgs;
pub use serve::ServeArgs;
pub use status::StatusArgs;
pub use verify::VerifyArgs;

use crate::backup::BackupOptions;
use clap::{Parser, Subcommand, ValueEnum};
use lakevault_common::cli::CommonArgs;
use lakevault_common::storage::StorageAccount;
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

/// How containers are split and scanned (shared by `backup` and `serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct ScanArgs {
    /// Shards per container to aim for: the key space is split at `/` boundaries (top
    /// directories first) into at least this many parts where the tree allows. 1 lists
    /// each container in one pass. `auto`: chosen per container from four timed pages of
    /// its listing (one pass if it fits in a page or the service answers one request at a
    /// time; otherwise 4 shards per listing in flight); the plan says why.
    #[arg(long, env = "LAKEVAULT_SHARDS", default_value = "auto", value_parser = auto_or(1, 100_000))]
    pub shards: Auto,
    /// Shards the coordinator scans at once. `auto`: as many as keep this host's CPUs busy
    /// while pages are in flight (at most 16), or 1 where shards do not help.
    #[arg(long, env = "LAKEVAULT_SCAN_PARALLELISM", default_value = "auto", value_parser = auto_or(1, 256))]
    pub scan_parallelism: Auto,
    /// Hand the shards to the workers as scan tasks (each lists, diffs and enqueues its
    /// shard's copies), so scanning scales with the fleet. Progress: `status`.
    #[arg(long, env = "LAKEVAULT_DISTRIBUTED_SCAN")]
    pub distributed_scan: bool,
    /// Entries per List Blobs page (1–5000). Default: 5000 for one or two listings at a
    /// time, and 20,000 / (2 × listings in flight), at least 500, when more shards are
    /// scanned side by side, so memory stays that of two full listings with their next
    /// pages read ahead.
    #[arg(long, env = "LAKEVAULT_LIST_PAGE_SIZE", value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub list_page_size: Option<u32>,
}

impl ScanArgs {
    fn apply(&self, options: &mut BackupOptions) {
        options.shards = self.shards.0;
        options.scan_parallelism = self.scan_parallelism.0;
        options.distributed = self.distributed_scan;
        options.page_size = self.list_page_size;
    }
}

/// A count, or `auto` (`None`): lakevault chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auto(pub Option<usize>);

/// Parses `auto` or a whole number from `min` to `max`.
fn auto_or(min: usize, max: usize) -> impl Fn(&str) -> Result<Auto, String> + Clone {
    move |text: &str| {
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Auto(None));
        }
        match text.parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Auto(Some(n))),
            _ => Err(format!(
                "`{text}` is neither `auto` nor a number from {min} to {max}"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// What every command needs: the config, the network options accounts are built with,
/// and the stop signal.
pub(crate) struct Env {
    pub config: lakevault_common::config::Config,
    network: lakevault_common::storage::NetworkOptions,
    pub cancel: CancellationToken,
}

impl Env {
    /// The configured account `alias`, with its SDK clients.
    pub fn account(&self, alias: &str) -> anyhow::Result<StorageAccount> {
        Ok(StorageAccount::from_config(
            alias,
            self.config.account(alias)?,
            self.network.clone(),
        )?)
    }
}

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli, cancel: CancellationToken) -> anyhow::Result<i32> {
    let env = Env {
        config: cli.common.load_config()?,
        network: cli.common.network(),
        cancel,
    };
    match cli.command {
        Command::Backup(args) => backup::run(&env, args).await,
        Command::Status(args) => status::run(&env, args).await,
        Command::Serve(args) => serve::run(&env, args).await,
        Command::Verify(args) => verify::run(&env, args).await,
        Command::Restore(args) => restore::run(&env, args).await,
        Command::Purge(args) => purge::run(&env, args).await,
        Command::Redrive(args) => redrive::run(&env, args).await,
    }
}
