//! `backup`: plans a backup job and enqueues its work.

use super::{Env, Output, ScanArgs};
use crate::backup::{self as planner, BackupOptions, BackupReport, Mode};
use anyhow::Context;
use lakevault_common::error::describe;
use lakevault_common::ledger;
use lakevault_common::progress::{self, Progress};
use lakevault_common::queue::AzureQueue;
use lakevault_common::record::rfc3339;

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Print the plan, enqueue nothing.
    #[arg(long, env = "LAKEVAULT_DRY_RUN")]
    pub dry_run: bool,
    /// Job id to use (default: a new UUID): 1 to 64 of A-Z a-z 0-9 . _ : -.
    #[arg(long, env = "LAKEVAULT_JOB_ID", value_parser = lakevault_common::record::validate_job_id)]
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

pub(super) async fn run(env: &Env, args: BackupArgs) -> anyhow::Result<i32> {
    let config = &env.config;
    let account = |alias: &str| env.account(alias);
    let cancel = env.cancel.clone();
    let source = account(&config.backup.source)?;
    let destination = account(&config.backup.destination)?;
    let queue_account = account(&config.queue.account)?;
    let queue = AzureQueue::new(&config.queue.name, queue_account.queue(&config.queue.name)?);
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
        safety_margin: std::time::Duration::from_secs(args.safety_margin_secs),
        progress: Progress::counter(
            progress::wanted(args.output == Output::Table),
            "backup",
            "blobs compared",
        ),
        ..Default::default()
    };
    args.scan.apply(&mut options);
    let started_at = rfc3339(time::OffsetDateTime::now_utc());
    let report = planner::run(config, &source, &destination, &queue, &options, &cancel).await;
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
        if c.scanned_by == planner::WORKERS {
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
        if let Some(shape) = &c.shape {
            println!(
                "    scanned as {} shard(s), {} at a time: {shape}",
                c.shards, c.scan_parallelism
            );
        }
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
