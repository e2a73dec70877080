//! The receive loop: bounded prefetch of messages, bounded copies in flight, graceful
//! stop on cancellation, and an optional exit once the queue is drained.

use crate::message::{self, Context, MessageReport};
use lakevault_common::queue::{MAX_RECEIVE, QueueError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Messages held at once by this worker (each may carry hundreds of items).
    pub prefetch: usize,
    /// Exit once the queue has been empty (nothing visible, nothing in flight anywhere)
    /// for this long.
    pub exit_when_idle: Option<Duration>,
    /// Longest pause between receives when the queue is empty.
    pub max_poll_interval: Duration,
    /// How long in-flight messages may finish after a stop signal before they are
    /// released back to the queue.
    pub drain_timeout: Duration,
    /// Readiness for probes, kept current by the loop.
    pub health: Option<Arc<crate::health::Health>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            prefetch: 4,
            exit_when_idle: None,
            max_poll_interval: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            health: None,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunSummary {
    pub messages: u64,
    /// Items by outcome, over every message.
    #[serde(flatten)]
    pub tally: lakevault_common::tally::Tally,
    pub released: u64,
    /// Scan tasks completed, and the copies they enqueued.
    pub scans: u64,
    pub scan_copies: u64,
    /// The lowest copy concurrency the worker went down to (busy service).
    pub lowest_concurrency: usize,
    /// Requests to the work and poison queues (receive, extend, send, delete, properties).
    pub queue_requests: u64,
    /// Requests to the blob endpoints of the configured accounts (copies, reads, snapshots,
    /// scans' listings, ledger writes), every try of a retried request counted.
    pub storage_requests: u64,
}

impl RunSummary {
    fn add(&mut self, r: &MessageReport) {
        self.messages += 1;
        self.tally.add(&r.tally);
        self.released += u64::from(r.released);
        self.scans += r.scans;
        self.scan_copies += r.scan_copies;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("credentials failed; work left in the queue: {0}")]
    Auth(String),
    #[error("queue `{queue}` unusable: {message}")]
    Queue { queue: String, message: String },
    #[error("a message task panicked: {0}")]
    Panic(String),
}

/// Runs until cancelled, until the queue is drained (with `exit_when_idle`), or until a
/// credential failure makes further work pointless.
pub async fn run(
    ctx: Arc<Context>,
    options: RunOptions,
    stop: CancellationToken,
) -> Result<RunSummary, RunError> {
    // Copies in flight are cancelled separately from the receive loop, so that a stop
    // signal first drains and only then interrupts.
    let interrupt = CancellationToken::new();
    let mut tasks: JoinSet<MessageReport> = JoinSet::new();
    let mut summary = RunSummary::default();
    let mut fatal: Option<RunError> = None;
    let mut idle_since: Option<Instant> = None;
    let mut poll = Duration::from_millis(100);
    ctx.queue
        .ensure_exists()
        .await
        .map_err(|e| RunError::Queue {
            queue: ctx.queue.name().to_string(),
            message: e.to_string(),
        })?;
    let health = options.health.clone().unwrap_or_default();
    health.set_queue_ok(true);

    while !stop.is_cancelled() && fatal.is_none() {
        // Collect finished messages without waiting.
        while let Some(done) = tasks.try_join_next() {
            record(done, &mut summary, &mut fatal);
        }
        if fatal.is_some() {
            break;
        }
        let free = options.prefetch.saturating_sub(tasks.len());
        if free == 0 {
            tokio::select! {
                Some(done) = tasks.join_next() => record(done, &mut summary, &mut fatal),
                _ = stop.cancelled() => {}
            }
            continue;
        }
        let want = u8::try_from(free.min(usize::from(MAX_RECEIVE))).unwrap_or(MAX_RECEIVE);
        let receive_started = Instant::now();
        let received = tokio::select! {
            r = ctx.queue.receive(want, ctx.policy.visibility) => r,
            _ = stop.cancelled() => break,
        };
        lakevault_common::metrics::queue_receive(receive_started.elapsed());
        health.set_queue_ok(received.is_ok());
        let messages = match received {
            Ok(m) => m,
            Err(e) => {
                if let QueueError::Failed {
                    class: lakevault_common::error::FailureClass::Auth,
                    ..
                } = &e
                {
                    fatal = Some(RunError::Auth(e.to_string()));
                    break;
                }
                tracing::warn!(error = %e, "receive failed; backing off");
                sleep_or_stop(&stop, options.max_poll_interval).await;
                continue;
            }
        };
        if messages.is_empty() {
            if let Some(idle) = options.exit_when_idle
                && tasks.is_empty()
            {
                // The approximate count includes invisible messages: retries waiting out
                // their delay and messages other workers hold.
                let queued = ctx.queue.approximate_len().await.unwrap_or(1);
                if queued == 0 {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= idle {
                        tracing::info!("queue drained; exiting");
                        break;
                    }
                } else {
                    idle_since = None;
                }
            }
            sleep_or_stop(&stop, poll).await;
            poll = (poll * 2).min(options.max_poll_interval);
            continue;
        }
        idle_since = None;
        poll = Duration::from_millis(100);
        for m in messages {
            let ctx = ctx.clone();
            let interrupt = interrupt.clone();
            tasks.spawn(async move {
                let _in_flight = lakevault_common::metrics::message_in_flight();
                message::process(&ctx, m, &interrupt).await
            });
        }
    }

    health.set_draining();
    // Drain: let in-flight messages finish for a bounded time, then interrupt them (they
    // release their messages back to the queue).
    let deadline = tokio::time::sleep(options.drain_timeout);
    tokio::pin!(deadline);
    while !tasks.is_empty() {
        tokio::select! {
            Some(done) = tasks.join_next() => record(done, &mut summary, &mut fatal),
            _ = &mut deadline, if !interrupt.is_cancelled() => {
                tracing::warn!(in_flight = tasks.len(), "drain timeout; releasing in-flight messages");
                interrupt.cancel();
            }
        }
    }
    match fatal {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

fn record(
    done: Result<MessageReport, tokio::task::JoinError>,
    summary: &mut RunSummary,
    fatal: &mut Option<RunError>,
) {
    match done {
        Ok(report) => {
            summary.add(&report);
            if let Some(reason) = report.auth_failure
                && fatal.is_none()
            {
                *fatal = Some(RunError::Auth(reason));
            }
        }
        Err(e) => {
            if fatal.is_none() {
                *fatal = Some(RunError::Panic(e.to_string()));
            }
        }
    }
}

async fn sleep_or_stop(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.cancelled() => {}
    }
}
