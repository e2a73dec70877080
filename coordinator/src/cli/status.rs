//! `status`: a job's progress from the ledger.

use super::{Env, Output};
use lakevault_common::error::describe;
use lakevault_common::ledger::{self, JobStatus};
use lakevault_common::progress::{self, Progress};
use lakevault_common::storage::StorageAccount;
use tokio_util::sync::CancellationToken;

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

pub(super) async fn run(env: &Env, args: StatusArgs) -> anyhow::Result<i32> {
    status(&env.account(&env.config.queue.account)?, &args, &env.cancel).await
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
        let finished = s.state.is_finished();
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
                return Ok(if s.state == ledger::JobState::CompletedWithFailures {
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
    if s.source_snapshots_taken > 0 {
        println!(
            "  source snapshots: {} taken, {} still held on the source (pending, failed or poisoned items; a re-drive copies and deletes them)",
            s.source_snapshots_taken, s.source_snapshots_held
        );
    }
    for f in &s.failed_containers {
        println!("  container {} not planned: {}", f.container, f.reason);
    }
    for f in &s.failures {
        println!("  failed {}: {}", f.name, f.reason);
    }
}
