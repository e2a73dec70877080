//! `verify`: whether the backup matches the source.

use super::{Env, Output};
use anyhow::Context;
use lakevault_common::progress::{self, Progress};

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

pub(super) async fn run(env: &Env, args: VerifyArgs) -> anyhow::Result<i32> {
    let config = &env.config;
    let account = |alias: &str| env.account(alias);
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
    let report = crate::verify::run(config, &source, &destination, &options).await;
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
