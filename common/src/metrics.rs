//! The metrics lakevault records, as OpenTelemetry instruments on the global meter
//! provider: scraped as Prometheus text on `/metrics` and/or exported over OTLP
//! ([`crate::telemetry`]). Without a provider installed they cost next to nothing.
//!
//! | Prometheus name | kind | labels |
//! |---|---|---|
//! | `lakevault_blobs_total` | counter | `container`, `outcome` |
//! | `lakevault_bytes_copied_total` | counter | `container` |
//! | `lakevault_copy_duration_seconds` | histogram | `outcome` |
//! | `lakevault_messages_in_flight` | gauge | – |
//! | `lakevault_throttled_responses_total` | counter | – |
//! | `lakevault_copy_concurrency` | gauge | – |
//! | `lakevault_queue_receive_duration_seconds` | histogram | – |
//! | `lakevault_http_requests_total` | counter | `route`, `status` |
//! | `lakevault_jobs_started_total` | counter | `trigger` |
//! | `lakevault_sas_expiry_timestamp_seconds` | gauge | `account` |
//! | `process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds` | gauge, counter, gauge | – |
//!
//! Instrument names follow OpenTelemetry (counters without `_total`, units apart); the
//! Prometheus exporter adds the `_total` and unit suffixes. Labels are low-cardinality by
//! construction: container names, outcome names, route templates, status codes — never a
//! blob name, a URL or anything secret.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Outcome label of items that failed this attempt (retried or poisoned afterwards).
pub const FAILED: &str = "failed";

#[derive(Debug)]
struct Instruments {
    blobs: Counter<u64>,
    bytes_copied: Counter<u64>,
    copy_duration: Histogram<f64>,
    messages_in_flight: UpDownCounter<i64>,
    throttled: Counter<u64>,
    queue_receive: Histogram<f64>,
    http_requests: Counter<u64>,
    jobs_started: Counter<u64>,
    sas_expiry: Gauge<f64>,
}

fn meter() -> Meter {
    opentelemetry::global::meter("lakevault")
}

/// Created on first use, after the binary installed its meter provider.
fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = meter();
        Instruments {
            blobs: meter
                .u64_counter("lakevault_blobs")
                .with_description("Work items settled by workers, by source container and outcome")
                .build(),
            bytes_copied: meter
                // No unit: the exporter would name it `…_bytes_copied_bytes_total`.
                .u64_counter("lakevault_bytes_copied")
                .with_description("Bytes of blobs copied, by source container")
                .build(),
            copy_duration: meter
                .f64_histogram("lakevault_copy_duration")
                .with_unit("s")
                .with_description(
                    "Time to copy one work item (its requests, retries included), by outcome",
                )
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0, 300.0, 600.0,
                ])
                .build(),
            messages_in_flight: meter
                .i64_up_down_counter("lakevault_messages_in_flight")
                .with_description("Queue messages this worker holds and works on")
                .build(),
            throttled: meter
                .u64_counter("lakevault_throttled_responses")
                .with_description(
                    "Busy answers from storage (503, 500 OperationTimeout), retries included",
                )
                .build(),
            queue_receive: meter
                .f64_histogram("lakevault_queue_receive_duration")
                .with_unit("s")
                .with_description("Time of one receive request to the work queue")
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
                .build(),
            http_requests: meter
                .u64_counter("lakevault_http_requests")
                .with_description("HTTP requests answered, by route template and status")
                .build(),
            jobs_started: meter
                .u64_counter("lakevault_jobs_started")
                .with_description("Backup jobs started by the service, by trigger")
                .build(),
            sas_expiry: meter
                .f64_gauge("lakevault_sas_expiry_timestamp")
                .with_unit("s")
                .with_description(
                    "Expiry (se=) of the SAS token in use, Unix seconds, by account alias",
                )
                .build(),
        }
    })
}

/// `count` work items of `container` settled with `outcome` (`copied`,
/// `already_current`, `poisoned`, …). Zero counts are not recorded.
pub fn blobs(container: &str, outcome: &'static str, count: u64) {
    if count > 0 {
        instruments().blobs.add(
            count,
            &[
                KeyValue::new("container", container.to_string()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }
}

pub fn bytes_copied(container: &str, bytes: u64) {
    if bytes > 0 {
        instruments()
            .bytes_copied
            .add(bytes, &[KeyValue::new("container", container.to_string())]);
    }
}

/// One item's copy took `elapsed` and ended with `outcome`.
pub fn copy_duration(outcome: &'static str, elapsed: Duration) {
    instruments()
        .copy_duration
        .record(elapsed.as_secs_f64(), &[KeyValue::new("outcome", outcome)]);
}

/// Counts a message as in flight until the returned guard is dropped.
pub fn message_in_flight() -> InFlight {
    instruments().messages_in_flight.add(1, &[]);
    InFlight(())
}

/// See [`message_in_flight`].
#[derive(Debug)]
pub struct InFlight(());

impl Drop for InFlight {
    fn drop(&mut self) {
        instruments().messages_in_flight.add(-1, &[]);
    }
}

/// A busy answer (503, 500 OperationTimeout) was seen.
pub fn throttled_response() {
    instruments().throttled.add(1, &[]);
}

/// The SAS token of account `alias` expires at `expiry` (recorded as each request is
/// signed, so a rotated token file shows its new date on the next request).
pub fn sas_expiry(alias: &str, expiry: time::OffsetDateTime) {
    instruments().sas_expiry.record(
        expiry.unix_timestamp() as f64,
        &[KeyValue::new("account", alias.to_string())],
    );
}

pub fn queue_receive(elapsed: Duration) {
    instruments()
        .queue_receive
        .record(elapsed.as_secs_f64(), &[]);
}

/// An HTTP request answered on `route` (the route template, e.g. `/v1/jobs/{id}`).
pub fn http_request(route: &str, status: u16) {
    instruments().http_requests.add(
        1,
        &[
            KeyValue::new("route", route.to_string()),
            KeyValue::new("status", i64::from(status)),
        ],
    );
}

/// A job was started by `trigger` (`api`, `schedule`).
pub fn job_started(trigger: &'static str) {
    instruments()
        .jobs_started
        .add(1, &[KeyValue::new("trigger", trigger)]);
}

/// Reports the current copy concurrency (the adaptive limit) as
/// `lakevault_copy_concurrency`.
pub fn observe_copy_concurrency(limit: Arc<crate::throttle::AdaptiveLimit>) {
    meter()
        .u64_observable_gauge("lakevault_copy_concurrency")
        .with_description("Copies this worker allows in flight now (lowered while storage is busy)")
        .with_callback(move |o| o.observe(limit.limit() as u64, &[]))
        .build();
}

/// Process metrics read from `/proc` when scraped (Linux; nothing elsewhere).
pub(crate) fn register_process_metrics() {
    if !std::path::Path::new("/proc/self/status").exists() {
        return;
    }
    let meter = meter();
    meter
        .u64_observable_gauge("process_resident_memory")
        .with_unit("By")
        .with_description("Resident memory size")
        .with_callback(|o| {
            if let Some(bytes) = resident_bytes() {
                o.observe(bytes, &[]);
            }
        })
        .build();
    meter
        .f64_observable_counter("process_cpu")
        .with_unit("s")
        .with_description("CPU time consumed by the process")
        .with_callback(|o| {
            if let Some(seconds) = cpu_seconds() {
                o.observe(seconds, &[]);
            }
        })
        .build();
    meter
        .u64_observable_gauge("process_open_fds")
        .with_description("Open file descriptors")
        .with_callback(|o| {
            if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
                o.observe(dir.count() as u64, &[]);
            }
        })
        .build();
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User plus system time of all threads, from `/proc/self/stat` (in clock ticks of
/// `USER_HZ`, 100 on Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_figures_are_read() {
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(super::resident_bytes().is_some_and(|b| b > 0));
            assert!(super::cpu_seconds().is_some());
        }
    }
}
