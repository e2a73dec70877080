//! `purge`: retention for the backup.

use super::{Env, Output};
use anyhow::Context;
use lakevault_common::store::azure::AzureStore;

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

pub(super) async fn run(env: &Env, args: PurgeArgs) -> anyhow::Result<i32> {
    let config = &env.config;
    let account = |alias: &str| env.account(alias);
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
    let report = crate::purge::run(config, &source, &destination, &options)
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
