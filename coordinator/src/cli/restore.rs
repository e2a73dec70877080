//! `restore`: plans a point-in-time restore and enqueues it.

use super::{Env, Output};
use anyhow::Context;
use lakevault_common::error::describe;
use lakevault_common::ledger;
use lakevault_common::progress::{self, Progress};
use lakevault_common::queue::AzureQueue;
use lakevault_common::record::rfc3339;
use lakevault_common::storage::Namespace;
use lakevault_common::store::azure::AzureStore;

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
    /// Where to write: `<account alias>/<container>[/<prefix>]`; names go below the prefix
    /// as a directory (`.../restored` writes `restored/<name>`). Default: the original
    /// location (the configured source account and the container the backup was made from).
    #[arg(long, env = "LAKEVAULT_RESTORE_TO")]
    pub to: Option<String>,
    /// Replace blobs that exist at the target (otherwise they are left alone and counted).
    #[arg(long, env = "LAKEVAULT_RESTORE_OVERWRITE")]
    pub overwrite: bool,
    /// Do not set the owner, group and ACLs kept with paths backed up from an account
    /// with a hierarchical namespace (they are set by default when the target has one);
    /// directories are still restored as directories.
    #[arg(long, env = "LAKEVAULT_RESTORE_NO_ACLS")]
    pub no_acls: bool,
    /// Print the plan, enqueue nothing.
    #[arg(long, env = "LAKEVAULT_DRY_RUN")]
    pub dry_run: bool,
    /// Job id to use (default: a new UUID): 1 to 64 of A-Z a-z 0-9 . _ : -.
    #[arg(long, env = "LAKEVAULT_JOB_ID", value_parser = lakevault_common::record::validate_job_id)]
    pub job_id: Option<String>,
    /// Blob names listed in the plan.
    #[arg(long, env = "LAKEVAULT_SAMPLE", default_value_t = 0)]
    pub sample: usize,
    /// Output format of the plan on stdout.
    #[arg(long, env = "LAKEVAULT_OUTPUT", value_enum, default_value = "table")]
    pub output: Output,
}

pub(super) async fn run(env: &Env, args: RestoreArgs) -> anyhow::Result<i32> {
    let config = &env.config;
    let account = |alias: &str| env.account(alias);
    use crate::restore::{AccessRestore, RestoreOptions, Target, source_container_of};
    let (from_account, from_container) = match args.from.split_once('/') {
        Some((a, c)) => (a.to_string(), c.to_string()),
        None => (config.backup.destination.clone(), args.from.clone()),
    };
    let to = match &args.to {
        Some(t) => Target::parse(t).map_err(|e| anyhow::anyhow!("--to {e}"))?,
        None => Target {
            account: config.backup.source.clone(),
            container: source_container_of(config, &from_container).ok_or_else(|| {
                anyhow::anyhow!(
                    "--from `{from_container}` does not fit backup.container_template `{}`; give --to <alias>/<container>",
                    config.backup.container_template
                )
            })?,
            prefix: None,
        },
    };
    // What workers would refuse is refused here, before anything is enqueued.
    if from_account != config.backup.destination {
        anyhow::bail!(
            "--from `{from_account}/…`: restores read from the backup account `{}` (backup.destination); workers refuse any other",
            config.backup.destination
        );
    }
    let targets = config.restore_targets();
    if !targets.contains(&to.account) {
        anyhow::bail!(
            "--to `{}`: restores may write only to {targets:?}; add the alias to restore.targets in the config (workers and coordinator read the same file)",
            to.account
        );
    }
    if args.overwrite && !config.restore.allow_overwrite {
        anyhow::bail!(
            "--overwrite replaces existing blobs at the target, which the config does not allow: set restore.allow_overwrite = true (workers refuse overwriting restores without it)"
        );
    }
    let as_of = args
        .as_of
        .as_deref()
        .map(|t| {
            lakevault_common::record::read_rfc3339(t)
                .map_err(|e| anyhow::anyhow!("--as-of `{t}` is not an RFC 3339 time: {e}"))
        })
        .transpose()?;
    let backup = account(&from_account)?;
    let target = account(&to.account)?;
    // Access control goes only to a target with a hierarchical namespace.
    let target_namespace = match target.namespace().await {
        Ok(namespace) => namespace,
        Err(e) => {
            tracing::warn!(account = %target.alias, error = %describe(&e), "cannot tell the restore target's namespace (Get Account Information); taking it as flat");
            Namespace::Flat
        }
    };
    let access = match (target_namespace, args.no_acls) {
        (Namespace::Flat, _) => AccessRestore::FlatTarget,
        (Namespace::Hierarchical, true) => AccessRestore::Skip,
        (Namespace::Hierarchical, false) => AccessRestore::Apply,
    };
    let queue_account = account(&config.queue.account)?;
    let queue = AzureQueue::new(&config.queue.name, queue_account.queue(&config.queue.name)?);
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
        access,
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
            let access = &report.access;
            if access.applied + access.not_applied + access.not_kept > 0 {
                println!(
                    "access control: {} paths get their recorded owner, group and ACL; {} not applied; {} not kept in full by the backup",
                    access.applied, access.not_applied, access.not_kept
                );
            }
            for name in &report.sample {
                println!("    {name}");
            }
        }
    }
    if let Some(reason) = &report.access.reason {
        // Once per job, whatever the output format.
        eprintln!("note: {reason}");
    }
    if report.access.not_kept > 0 {
        eprintln!(
            "note: {} paths had access control too long to keep in full in the backup (only its digest was kept): they are restored with what the target gives them",
            report.access.not_kept
        );
    }
    if report.in_blob_versions > 0 {
        // The rest is restored; these names are not, and that is never silent.
        eprintln!(
            "error: {} names were backed up after {} without history snapshots (workers ran with --no-history): their state at that time, if any, is in the backup account's blob versions, which restore does not read. Restore those versions with the portal or azcopy (--list-of-versions), or restore as of a later time.",
            report.in_blob_versions,
            report.as_of.as_deref().unwrap_or("now")
        );
        return Ok(lakevault_common::exit::PARTIAL);
    }
    Ok(lakevault_common::exit::OK)
}
