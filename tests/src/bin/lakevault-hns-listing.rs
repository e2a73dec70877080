//! `make bench-hns`: what listing an account with a hierarchical namespace costs.
//!
//! Seeds a partitioned data lake (`events/year=2024/month=MM/day=DD/part-N.parquet`, a
//! `_SUCCESS` marker per day, and the siblings that put the two orders apart:
//! `events-archive/`, `events.csv`) on a private Azurite, puts the HNS façade in front of
//! it, and counts the List Blobs requests of three listings of the same lake:
//! - the flat listing of a flat account (the emulator itself, the backup side's listing);
//! - the flat listing of the HNS account (through the façade: HNS order, unusable for the
//!   merge-join against a flat backup, shown for scale);
//! - the walk lakevault does on an HNS source (`plan::hns::walk_in_flat_order`, one
//!   listing per directory at least).
//!
//! Request counts do not depend on the machine; nothing here is timed. Writes a Markdown
//! table to stdout and to `target/hns-listing.md`.

use anyhow::Context;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use lakevault_plan::hns::{ContainerDirectories, walk_in_flat_order};
use lakevault_plan::listing::{Include, Lister};
use lakevault_tests::Lab;
use lakevault_tests::azurite::SOURCE_ACCOUNT;
use lakevault_tests::hns_facade::HnsFacade;
use std::fmt::Write as _;

const CONTAINER: &str = "lake";

#[derive(Debug, Parser)]
#[command(
    name = "lakevault-hns-listing",
    about = "Counts the listing requests of an HNS walk next to a flat listing of the same lake"
)]
struct Args {
    /// Data files per day directory.
    #[arg(long, value_delimiter = ',', default_value = "15,150")]
    files_per_day: Vec<usize>,
    /// Months of day directories (28 days each). The façade answers every listing from a
    /// read of the names under its prefix, so large lakes take long here (not in Azure).
    #[arg(long, default_value_t = 2)]
    months: u32,
}

/// The lake's names: day partitions with data files and a marker, plus ordering traps.
fn lake(months: u32, files_per_day: usize) -> Vec<String> {
    let mut names = Vec::new();
    for month in 1..=months {
        for day in 1..=28 {
            let dir = format!("events/year=2024/month={month:02}/day={day:02}");
            for part in 0..files_per_day {
                names.push(format!("{dir}/part-{part:05}.parquet"));
            }
            names.push(format!("{dir}/_SUCCESS"));
        }
    }
    names.push("events-archive/2023.parquet".into());
    names.push("events.csv".into());
    names
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut table = String::from(
        "| entries (files + directories) | directories | flat account: requests | HNS account, flat listing: requests | HNS walk: requests | HNS walk: requests per 1,000 entries |\n|---|---|---|---|---|---|\n",
    );
    for files_per_day in args.files_per_day {
        let lab = Lab::start("hns-listing", &[CONTAINER])?;
        lab.src.ensure_container(CONTAINER).await?;
        let names = lake(args.months, files_per_day);
        futures::stream::iter(names.iter())
            .map(|name| lakevault_tests::lake::put(&lab.src, CONTAINER, name, b"x"))
            .buffer_unordered(32)
            .try_collect::<Vec<()>>()
            .await
            .context("seeding")?;
        let direct_endpoint = lab.azurite.blob_endpoint(SOURCE_ACCOUNT);
        let facade = HnsFacade::start(
            direct_endpoint.trim_end_matches(&format!("/{SOURCE_ACCOUNT}")),
            lab.src.clone(),
        )
        .await?;
        let text = std::fs::read_to_string(&lab.path)?.replace(
            &direct_endpoint,
            &format!("{}/{SOURCE_ACCOUNT}", facade.url()),
        );
        let path = lab.dir.path().join("hns.toml");
        std::fs::write(&path, text)?;
        let config = lakevault_common::config::Config::load(&path)?;
        let (hns, _) = lakevault_tests::accounts(&config)?;

        // The façade creates the directories an HNS account holds: list through it once
        // first, so that every count below sees the same entries.
        let hns_entries = Lister::new(&hns, CONTAINER)?
            .blobs(None, Include::Nothing, None)
            .try_fold(0u64, |n, _| async move { Ok(n + 1) })
            .await?;
        let directories = hns_entries - names.len() as u64;

        let before = lab.src.blob_requests();
        let flat_entries = Lister::new(&lab.src, CONTAINER)?
            .blobs(None, Include::Nothing, None)
            .try_fold(0u64, |n, _| async move { Ok(n + 1) })
            .await?;
        let flat_requests = lab.src.blob_requests() - before;
        anyhow::ensure!(
            flat_entries == hns_entries,
            "both sides hold the same entries"
        );

        let before = facade.listings();
        Lister::new(&hns, CONTAINER)?
            .blobs(None, Include::Nothing, None)
            .try_fold(0u64, |n, _| async move { Ok(n + 1) })
            .await?;
        let hns_flat_requests = facade.listings() - before;

        let before = facade.listings();
        let walk = ContainerDirectories {
            lister: Lister::new(&hns, CONTAINER)?,
            page_size: None,
        };
        let walked = walk_in_flat_order(walk, String::new())
            .try_fold(0u64, |n, _| async move { Ok(n + 1) })
            .await
            .map_err(|e| anyhow::anyhow!("walk: {e}"))?;
        let walk_requests = (facade.listings() - before) as u64;
        anyhow::ensure!(walked == hns_entries, "the walk yields every entry");
        writeln!(
            table,
            "| {hns_entries} | {directories} | {flat_requests} | {hns_flat_requests} | {walk_requests} | {:.1} |",
            walk_requests as f64 * 1000.0 / hns_entries as f64
        )?;
    }
    print!("{table}");
    let out = lakevault_tests::azurite::repo_root().join("target/hns-listing.md");
    std::fs::write(&out, &table)?;
    eprintln!("report: {}", out.display());
    Ok(())
}
