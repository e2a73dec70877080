//! How to scan a container when the operator did not say (`--shards auto`, the default):
//! one listing, or shards listed side by side. Which is faster depends on the service, not
//! on lakevault, so it is measured on the container itself before the scan:
//!
//! 1. One full page (5,000 entries) of the source. If it holds the whole listing, one
//!    listing it is: shards would only add requests.
//! 2. The same page again, alone, timed, with the part of it spent parsing here. Not the
//!    first page's time: that one pays for whatever is cold on either side.
//! 3. Two of the same page at once, timed. Azure Storage serves listings side by side, so
//!    two take about as long as one, and a page's time is mostly waiting: shards listed in
//!    parallel hide that wait. A service that answers one request at a time (the emulator,
//!    a single Node.js process, which also scans its whole store for every prefixed page)
//!    takes up to twice as long for two, and shards only add requests to it
//!    ([`QUEUEING_RATIO`], [`QUEUEING_PARSES`]).
//!
//! Shards in parallel, when chosen, are as many as keep this process's CPUs busy while
//! pages are in flight: `ceil(page time × CPUs / CPU per page)`, with the CPU a page costs
//! here taken as twice its parsing (the diff and the batches cost about as much again),
//! from 2 to [`MAX_AUTO_PARALLELISM`]; and four shards per parallel listing, so that
//! unevenly sized subtrees still keep every listing busy. The probe costs four page
//! requests (one for a listing of one page).
//!
//! What a probe measured of a container listing more than one page is remembered in the
//! backup account's state container ([`remember`], [`recall`]) and reused by the runs of
//! the next [`REMEMBER_FOR`]: the service behind a container does not change from one run
//! to the next, the four pages are a quarter of a small container's listing on a service
//! that answers one page at a time, and a remembered verdict keeps the shape of a daily
//! run from changing with one noisy measurement. The shape itself is chosen again from it
//! on every run, with this host's CPUs.

use crate::listing::{Include, Lister, PageTiming};
use lakevault_common::ledger;
use lakevault_common::record::{parse_rfc3339, rfc3339};
use lakevault_common::storage::StorageAccount;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use time::OffsetDateTime;

/// How long a remembered probe is reused.
pub const REMEMBER_FOR: Duration = Duration::from_secs(24 * 3600);

/// The most shards an automatic choice lists at once.
pub const MAX_AUTO_PARALLELISM: usize = 16;
/// Shards planned per listing in flight.
pub const SHARDS_PER_LISTING: usize = 4;
/// A service queues listings (answers one at a time) when two pages at once take at least
/// this many times one page...
pub const QUEUEING_RATIO: f64 = 1.25;
/// ...and the second page adds more than this many times what parsing a page costs here.
/// Both, because each alone misleads on a shared machine: a service that generates its
/// pages on the same CPUs as this process (the synthetic endpoint) takes 1.4× for two
/// pages with the second adding only twice a page's parsing, while a latency-bound service
/// answering with some jitter adds tens of milliseconds at a ratio near 1. The emulator
/// adds hundreds of milliseconds at 1.4× (20,000 blobs) to 2× (200,000).
pub const QUEUEING_PARSES: f64 = 5.0;

/// What the probe measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// The first page held the whole listing.
    pub one_page: bool,
    /// One full page, request to parsed, after the first.
    pub page: Duration,
    /// The part of `page` spent parsing here.
    pub parse: Duration,
    /// Two of the same page requested at once, both parsed.
    pub two_at_once: Duration,
}

/// How a container is scanned, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub shards: usize,
    pub parallelism: usize,
    pub reason: String,
}

impl Shape {
    pub fn single(reason: impl Into<String>) -> Self {
        Shape {
            shards: 1,
            parallelism: 1,
            reason: reason.into(),
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// The shape the probe argues for, on a machine with `cpus` CPUs.
pub fn choose(probe: &Probe, cpus: usize) -> Shape {
    if probe.one_page {
        return Shape::single("the source lists in one page");
    }
    let one = probe.page.as_secs_f64().max(1e-6);
    let ratio = probe.two_at_once.as_secs_f64() / one;
    let added = probe.two_at_once.as_secs_f64() - one;
    if ratio >= QUEUEING_RATIO && added > QUEUEING_PARSES * probe.parse.as_secs_f64() {
        return Shape::single(format!(
            "two pages at once took {ratio:.1}× one ({}): the service answers listings one at a time, so shards would only add requests",
            ms(probe.page)
        ));
    }
    let cpu_per_page = (probe.parse.as_secs_f64() * 2.0).max(1e-6);
    let wanted = (one * cpus.max(1) as f64 / cpu_per_page).ceil();
    let parallelism = (wanted as usize).clamp(2, MAX_AUTO_PARALLELISM);
    Shape {
        shards: parallelism * SHARDS_PER_LISTING,
        parallelism,
        reason: format!(
            "a page takes {} ({} of it parsing here) and two at once {ratio:.1}× that: {parallelism} listings in flight keep {cpus} CPUs busy",
            ms(probe.page),
            ms(probe.parse)
        ),
    }
}

/// Measures the source listing under `prefix` (see the module's description).
pub async fn probe(
    lister: &Lister,
    prefix: Option<String>,
    include: Include,
) -> azure_core::Result<Probe> {
    let first = lister.timed_first_page(prefix.clone(), include).await?;
    if !first.more {
        return Ok(Probe {
            one_page: true,
            page: first.total,
            parse: first.parse,
            two_at_once: first.total,
        });
    }
    // Not the first page's time: it pays for whatever is cold on either side (the
    // emulator's first listing of a container took long enough to make two pages at once
    // look parallel, and the plan was sharded).
    let alone = lister.timed_first_page(prefix.clone(), include).await?;
    let started = std::time::Instant::now();
    let (a, b): (
        azure_core::Result<PageTiming>,
        azure_core::Result<PageTiming>,
    ) = futures::join!(
        lister.timed_first_page(prefix.clone(), include),
        lister.timed_first_page(prefix, include)
    );
    a?;
    b?;
    Ok(Probe {
        one_page: false,
        page: alone.total,
        parse: alone.parse,
        two_at_once: started.elapsed(),
    })
}

/// A probe as remembered: which listing it measured, when, and what it measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub v: u32,
    /// The container's URL (without query): a config pointing the same alias at another
    /// account or endpoint does not reuse it.
    pub url: String,
    /// The prefix the probe listed under (`""`: the whole container).
    pub root: String,
    pub probed_at: String,
    /// Nanoseconds, so that the shape chosen from a remembered probe is the one chosen
    /// when it was measured.
    pub page_ns: u64,
    pub parse_ns: u64,
    pub two_at_once_ns: u64,
}

fn memo_name(source_alias: &str, container: &str) -> String {
    format!("probes/{source_alias}/{container}.json")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Remembered {
    pub fn new(url: &str, root: &str, probe: &Probe, at: OffsetDateTime) -> Self {
        Remembered {
            v: 1,
            url: url.to_string(),
            root: root.to_string(),
            probed_at: rfc3339(at),
            page_ns: nanos(probe.page),
            parse_ns: nanos(probe.parse),
            two_at_once_ns: nanos(probe.two_at_once),
        }
    }

    /// The probe, if it measured this listing less than [`REMEMBER_FOR`] before `now`
    /// (a time in the future, a clock set back, is not trusted).
    pub fn usable(&self, url: &str, root: &str, now: OffsetDateTime) -> Option<Probe> {
        let at = parse_rfc3339(&self.probed_at)?;
        let age = now - at;
        let fresh = age >= time::Duration::ZERO && age < REMEMBER_FOR;
        (self.v == 1 && self.url == url && self.root == root && fresh).then(|| Probe {
            one_page: false,
            page: Duration::from_nanos(self.page_ns),
            parse: Duration::from_nanos(self.parse_ns),
            two_at_once: Duration::from_nanos(self.two_at_once_ns),
        })
    }
}

/// A remembered probe of this listing, with when it was taken, if one is fresh. Any
/// failure to read it is a reason to probe again, not to fail the plan.
pub async fn recall(
    state: &StorageAccount,
    source_alias: &str,
    container: &str,
    url: &str,
    root: &str,
    now: OffsetDateTime,
) -> Option<(Probe, String)> {
    match ledger::get_json::<Remembered>(state, &memo_name(source_alias, container)).await {
        Ok(Some(memo)) => memo
            .usable(url, root, now)
            .map(|probe| (probe, memo.probed_at)),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(container, error = %e, "remembered scan probe unreadable; probing again");
            None
        }
    }
}

/// Remembers a probe of a listing of more than one page (one page is re-measured each
/// time: it costs one request, and the container may have grown).
pub async fn remember(
    state: &StorageAccount,
    source_alias: &str,
    container: &str,
    memo: &Remembered,
) -> azure_core::Result<()> {
    ledger::put_json(state, &memo_name(source_alias, container), memo).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_probe_serves_the_same_listing_for_a_day() {
        let at = time::macros::datetime!(2026-12-01 10:00:00 UTC);
        // Durations that are not whole microseconds come back exactly.
        let measured = Probe {
            page: Duration::from_nanos(450_000_123),
            ..probe(450, 8, 650)
        };
        let memo = Remembered::new("http://a/c", "", &measured, at);
        let url = "http://a/c";
        let hour = time::Duration::hours(1);
        assert_eq!(memo.usable(url, "", at + hour), Some(measured));
        assert_eq!(
            choose(&memo.usable(url, "", at + hour).unwrap(), 2),
            choose(&measured, 2)
        );
        assert_eq!(memo.usable(url, "", at + 23 * hour), Some(measured));
        // Stale, from the future, another endpoint, another root: probe again.
        assert_eq!(memo.usable(url, "", at + 24 * hour), None);
        assert_eq!(memo.usable(url, "", at - hour), None);
        assert_eq!(memo.usable("http://b/c", "", at + hour), None);
        assert_eq!(memo.usable(url, "raw/", at + hour), None);
        // A record of another version is not understood.
        let other = Remembered { v: 2, ..memo };
        assert_eq!(other.usable(url, "", at + hour), None);
    }

    fn probe(page_ms: u64, parse_ms: u64, two_ms: u64) -> Probe {
        Probe {
            one_page: false,
            page: Duration::from_millis(page_ms),
            parse: Duration::from_millis(parse_ms),
            two_at_once: Duration::from_millis(two_ms),
        }
    }

    #[test]
    fn a_container_of_one_page_is_one_listing() {
        let p = Probe {
            one_page: true,
            ..probe(900, 10, 900)
        };
        assert_eq!(choose(&p, 8).shards, 1);
    }

    #[test]
    fn a_service_that_answers_one_request_at_a_time_gets_one_listing() {
        // The emulator at 200,000 blobs: a page takes 1.6 s, two take 3.3 s.
        let shape = choose(&probe(1_600, 8, 3_300), 2);
        assert_eq!((shape.shards, shape.parallelism), (1, 1));
        assert!(shape.reason.contains("one at a time"), "{}", shape.reason);
        // At 20,000 blobs: 450 ms a page, two in 650 ms (1.44×, 200 ms more).
        assert_eq!(choose(&probe(450, 8, 650), 2).shards, 1);
    }

    #[test]
    fn a_service_that_shares_this_hosts_cpus_or_jitters_is_still_parallel() {
        // The synthetic endpoint on the same 2 CPUs: 48 ms a page, 10 ms parsing, two
        // at once 67 ms (1.4×, but only 19 ms more).
        assert!(choose(&probe(48, 10, 67), 2).parallelism > 1);
        // A latency-bound service with jitter: 200 ms, then 230 ms for two.
        assert!(choose(&probe(200, 5, 230), 2).parallelism > 1);
    }

    #[test]
    fn latency_is_hidden_by_as_many_listings_as_keep_the_cpus_busy() {
        // 45 ms a page, 7 ms parsing (14 ms of CPU a page), 2 CPUs: 7 listings.
        let shape = choose(&probe(45, 7, 50), 2);
        assert_eq!(shape.parallelism, 7);
        assert_eq!(shape.shards, 28);
        // A slower service or more CPUs: more, up to the cap.
        assert_eq!(
            choose(&probe(300, 7, 310), 2).parallelism,
            MAX_AUTO_PARALLELISM
        );
        // A fast service: at least two.
        assert_eq!(choose(&probe(10, 9, 11), 1).parallelism, 2);
    }
}
