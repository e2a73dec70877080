//! `redrive`: poison records back to the work queue.

use super::{Env, Output};
use anyhow::Context;
use lakevault_common::queue::AzureQueue;

#[derive(Debug, clap::Args)]
pub struct RedriveArgs {
    /// Only records of this job.
    #[arg(long, env = "LAKEVAULT_REDRIVE_JOB")]
    pub job: Option<String>,
    /// Re-drive at most this many records.
    #[arg(long, env = "LAKEVAULT_REDRIVE_LIMIT")]
    pub limit: Option<u64>,
    /// Give up on the records instead: delete them, and the source snapshots their items
    /// were planned with (snapshot mode). The items are not backed up by this.
    #[arg(long)]
    pub discard: bool,
    /// Output format of the summary on stdout.
    #[arg(long, env = "LAKEVAULT_OUTPUT", value_enum, default_value = "table")]
    pub output: Output,
}

pub(super) async fn run(env: &Env, args: RedriveArgs) -> anyhow::Result<i32> {
    let config = &env.config;
    let account = |alias: &str| env.account(alias);
    let queue_account = account(&config.queue.account)?;
    let poison_name = format!(
        "{}{}",
        config.queue.name,
        lakevault_common::queue::POISON_SUFFIX
    );
    let poison = AzureQueue::new(&poison_name, queue_account.queue(&poison_name)?);
    let work = AzureQueue::new(&config.queue.name, queue_account.queue(&config.queue.name)?);
    let options = crate::redrive::RedriveOptions {
        job: args.job.clone(),
        limit: args.limit,
        discard: args.discard,
    };
    let source = lakevault_common::store::azure::AzureStore::new(account(&config.backup.source)?);
    let report = crate::redrive::redrive(&poison, &work, &source, &options)
        .await
        .with_context(|| format!("re-driving `{poison_name}`"))?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&report)?),
        Output::Table => {
            if args.discard {
                println!(
                    "discarded {} records ({} items) from {}, and {} source snapshots; {} kept",
                    report.discarded,
                    report.items,
                    report.poison_queue,
                    report.snapshots_deleted,
                    report.kept
                );
            } else {
                println!(
                    "re-drove {} records ({} items) from {} to {}; {} kept",
                    report.redriven,
                    report.items,
                    report.poison_queue,
                    report.work_queue,
                    report.kept
                );
            }
            for (reason, n) in &report.kept_reasons {
                println!("  kept {n}: {reason}");
            }
        }
    }
    Ok(lakevault_common::exit::OK)
}
