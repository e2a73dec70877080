//! Processing one queue message: decode, keep it invisible while working, copy every
//! item, then settle it. The original message is deleted only after every item's outcome
//! is durable: copied, re-enqueued for a retry, or recorded in the poison queue.

mod decide;
mod keeper;

/// The decision alone, for the copy engine's randomized histories.
#[cfg(test)]
pub(crate) use decide::decide;
pub use decide::{Decision, ItemResult, Release};

use keeper::{Keeper, Progress};

use crate::copy::{Copier, ItemFailure, ItemOutcome};
use crate::poison::{self, FailedItem, PoisonContext};
use crate::scan::Scanner;
use futures::StreamExt;
use lakevault_common::error::FailureClass;
use lakevault_common::ledger::{self, BatchOutcome, OutcomeFailure};
use lakevault_common::queue::{QueueError, ReceivedMessage, WorkQueue};
use lakevault_common::tally::Tally;
use lakevault_common::throttle::AdaptiveLimit;
use lakevault_common::wire::{CopyBatch, CopyItem, MessageKind, ScanTask, WorkMessage};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(Debug, Clone)]
pub struct MessagePolicy {
    /// How long a received message stays invisible; extended at half this interval.
    pub visibility: Duration,
    /// Attempts per item (each retry is a new, smaller message) before it is poisoned.
    pub max_attempts: u32,
    /// Deliveries of one message that finished nothing (crashed or timed-out workers)
    /// before it is poisoned: `dequeue_count - handed_back`.
    pub max_dequeue: u64,
    /// Base delay before a retried item becomes visible again (doubles per attempt, and
    /// per outage waited out, up to [`MAX_WAIT_DOUBLINGS`] doublings for the latter).
    pub retry_delay: Duration,
    /// Snapshot mode: the copy engine deletes an item's source snapshot at its final
    /// outcome (off with `--keep-source-snapshots`), counted as released.
    pub releases_source_snapshots: bool,
}

/// An outage is waited out for ever, but polled at most every `retry_delay * 2^6`
/// (5 min 20 s with the default delay).
pub const MAX_WAIT_DOUBLINGS: u32 = 6;

impl MessagePolicy {
    /// Whether the engine released (deleted) a source snapshot when `item` of `batch`
    /// reached its outcome: backup items taken from a source snapshot, in snapshot mode.
    /// A restore item at a snapshot reads a kept version of the backup, which stays.
    pub fn released_snapshot(&self, batch: &CopyBatch, item: &CopyItem) -> bool {
        self.releases_source_snapshots && batch.kind == MessageKind::Copy && item.snapshot.is_some()
    }

    /// How long items wait before their next try after `waits` outages.
    pub fn wait_delay(&self, waits: u32) -> Duration {
        self.retry_delay
            .saturating_mul(2u32.pow(waits.min(MAX_WAIT_DOUBLINGS)))
    }
}

impl Default for MessagePolicy {
    fn default() -> Self {
        Self {
            visibility: Duration::from_secs(60),
            max_attempts: 5,
            max_dequeue: 5,
            retry_delay: Duration::from_secs(5),
            releases_source_snapshots: true,
        }
    }
}

/// What happened to one message, for the run summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MessageReport {
    /// Items by outcome.
    pub tally: Tally,
    /// The message was left in the queue (shutdown, or credentials failing).
    pub released: bool,
    /// Scan tasks completed, and the copies they enqueued.
    pub scans: u64,
    pub scan_copies: u64,
    /// A credential failure: the worker should stop, the work stays queued.
    pub auth_failure: Option<String>,
}

pub struct Context {
    pub copier: Arc<dyn Copier>,
    /// Runs scan tasks; `None`: scan tasks are poisoned (this worker cannot scan).
    pub scanner: Option<Arc<dyn Scanner>>,
    /// Where batch outcomes are recorded (the ops account); `None` records nothing.
    pub ledger: Option<lakevault_common::storage::StorageAccount>,
    pub queue: Arc<dyn WorkQueue>,
    pub poison: Arc<dyn WorkQueue>,
    /// Copies in flight across the worker: lowered when the service is busy.
    pub copy_slots: Arc<AdaptiveLimit>,
    pub policy: MessagePolicy,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("queue", &self.queue.name())
            .finish_non_exhaustive()
    }
}

/// Processes one message to completion (or release on cancellation), in a `work_item`
/// span: every copy, scan and queue request of the message nests under it.
pub async fn process(
    ctx: &Context,
    message: ReceivedMessage,
    cancel: &CancellationToken,
) -> MessageReport {
    let span = tracing::info_span!(
        "work_item",
        message_id = %message.id,
        dequeue_count = message.dequeue_count,
        kind = tracing::field::Empty,
        job = tracing::field::Empty,
        container = tracing::field::Empty,
        items = tracing::field::Empty,
    );
    process_message(ctx, message, cancel).instrument(span).await
}

async fn process_message(
    ctx: &Context,
    message: ReceivedMessage,
    cancel: &CancellationToken,
) -> MessageReport {
    let poison_ctx = PoisonContext {
        queue: ctx.queue.name().to_string(),
        message_id: message.id.clone(),
        dequeue_count: message.dequeue_count,
    };
    let batch = match WorkMessage::decode(&message.text) {
        Ok(WorkMessage::Batch(b)) => {
            tracing::Span::current()
                .record("kind", kind_name(b.kind))
                .record("job", b.job.as_str())
                .record("container", b.source.container.as_str())
                .record("items", b.items.len());
            b
        }
        Ok(WorkMessage::Scan(task)) => {
            tracing::Span::current()
                .record("kind", kind_name(task.kind))
                .record("job", task.job.as_str())
                .record("container", task.source.container.as_str());
            return process_scan(ctx, message, task, cancel).await;
        }
        Err(e) => {
            tracing::warn!(message_id = %message.id, reason = %e, "undecodable message moved to the poison queue");
            let records = poison::for_original(&poison_ctx, &e.to_string(), &message.text);
            return poison_unprocessed(ctx, &message, records, 1).await;
        }
    };
    // Deliveries handed back without a try, or that finished items before their worker
    // died, do not count: only those that died without finishing anything do.
    let fruitless = message
        .dequeue_count
        .saturating_sub(u64::from(batch.handed_back));
    if fruitless > ctx.policy.max_dequeue {
        let reason = format!(
            "received {} times, {fruitless} of them ended without finishing any item (a worker crashing or timing out on these items); limit {}",
            message.dequeue_count, ctx.policy.max_dequeue
        );
        tracing::warn!(message_id = %message.id, %reason, "message moved to the poison queue");
        let failed = batch
            .items
            .iter()
            .map(|i| {
                (
                    i.clone(),
                    FailedItem {
                        name: i.name.clone(),
                        class: "permanent".into(),
                        reason: reason.clone(),
                    },
                )
            })
            .collect();
        let records = poison::for_items(&poison_ctx, &reason, &batch, failed);
        let report = poison_unprocessed(ctx, &message, records, batch.items.len() as u64).await;
        count_blobs(&batch, &report);
        let failures = vec![OutcomeFailure {
            name: format!("{} items", batch.items.len()),
            reason,
        }];
        record_outcome(ctx, &message, &batch, &report, failures).await;
        return report;
    }

    let progress = Arc::new(Mutex::new(Progress::new(&batch, ctx.policy.clone())));
    let keeper = Keeper::start(
        ctx.queue.clone(),
        &message,
        ctx.policy.visibility,
        Some(progress.clone()),
    );
    let results = copy_all(ctx, &batch, &progress, cancel).await;
    let decision = decide::decide(&batch, results, &ctx.policy);
    let report = decision.report;
    if let Some(release) = decision.release {
        // A credential failure waits a little before the message is visible again; a
        // shutdown hands it back at once. Either way what finished is kept, and the
        // delivery does not count against the dequeue limit: nothing was really tried.
        let (delay, waited) = match &release {
            Release::Credentials(_) => (ctx.policy.visibility, false),
            Release::Interrupted => (Duration::ZERO, false),
            Release::Outage { reason, delay } => {
                tracing::warn!(message_id = %message.id, %reason, delay_secs = delay.as_secs(), "service unavailable; message handed back to wait out the outage");
                (*delay, true)
            }
        };
        let receipt = keeper.finish().await;
        let mut remaining = progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remaining();
        remaining.waits = remaining.waits.saturating_add(u32::from(waited));
        let text = keeper::fitting(remaining.encode());
        if let Err(e) = ctx
            .queue
            .extend(&message.id, &receipt, delay, text.as_deref())
            .await
        {
            tracing::debug!(message_id = %message.id, error = %e, "release failed; message reappears after its visibility timeout");
        }
        return report;
    }
    let mut retries = Vec::new();
    if !decision.retry.is_empty() {
        let delay = ctx
            .policy
            .retry_delay
            .saturating_mul(2u32.saturating_pow(batch.attempt.min(10)));
        let header = batch.with_items(Vec::new(), batch.attempt + 1);
        retries.extend(encode_retries(&header, decision.retry, delay));
    }
    if !decision.wait.is_empty() {
        let mut header = batch.with_items(Vec::new(), batch.attempt);
        header.waits = batch.waits.saturating_add(1);
        let delay = ctx.policy.wait_delay(batch.waits);
        retries.extend(encode_retries(&header, decision.wait, delay));
    }
    let failures: Vec<OutcomeFailure> = decision
        .poison
        .iter()
        .take(MAX_LEDGER_FAILURES)
        .map(|(_, f)| OutcomeFailure {
            name: f.name.clone(),
            reason: f.reason.clone(),
        })
        .collect();
    let records = if decision.poison.is_empty() {
        Vec::new()
    } else {
        poison::for_items(&poison_ctx, "items failed", &batch, decision.poison)
    };
    progress
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .settling();
    settle(ctx, &message, Receipt::Kept(keeper), retries, records).await;
    count_blobs(&batch, &report);
    record_outcome(ctx, &message, &batch, &report, failures).await;
    report
}

/// Items to try again, as messages of `header`'s kind visible after `delay`.
fn encode_retries(
    header: &CopyBatch,
    items: Vec<CopyItem>,
    delay: Duration,
) -> impl Iterator<Item = (String, Duration)> {
    let (batches, _) =
        lakevault_common::wire::pack(header, items, lakevault_common::wire::MAX_MESSAGE_BYTES);
    batches.into_iter().map(move |b| (b.encode(), delay))
}

fn kind_name(kind: lakevault_common::wire::MessageKind) -> &'static str {
    use lakevault_common::wire::MessageKind;
    match kind {
        MessageKind::Copy => "copy",
        MessageKind::Tombstone => "tombstone",
        MessageKind::Scan => "scan",
        MessageKind::Restore => "restore",
    }
}

/// The `outcome` of one item, as in `lakevault_blobs_total` and the copy span.
fn outcome_label(result: &Result<ItemOutcome, ItemFailure>) -> &'static str {
    match result {
        Ok(ItemOutcome::Copied { .. }) => "copied",
        Ok(ItemOutcome::AlreadyCurrent) => "already_current",
        Ok(ItemOutcome::TargetExists) => "target_exists",
        Ok(ItemOutcome::SourceGone) => "gone",
        Ok(ItemOutcome::Tombstoned) => "tombstoned",
        Ok(ItemOutcome::Superseded) => "superseded",
        Err(_) => lakevault_common::metrics::FAILED,
    }
}

/// Counts a settled batch's items by outcome, as recorded in the ledger.
fn count_blobs(batch: &CopyBatch, report: &MessageReport) {
    use lakevault_common::metrics;
    let container = batch.source.container.as_str();
    for (outcome, count) in report.tally.by_outcome() {
        metrics::blobs(container, outcome, count);
    }
    metrics::bytes_copied(container, report.tally.bytes);
}

/// Runs a scan task: lists, diffs and enqueues one shard's copies. A transient failure
/// hands the task back with a growing delay (its dequeue count rises each time); once
/// `max_dequeue` is passed, or on a permanent failure, the shard is recorded as failed
/// (its container then finishes as failed) and the task goes to the poison queue.
async fn process_scan(
    ctx: &Context,
    message: ReceivedMessage,
    task: ScanTask,
    cancel: &CancellationToken,
) -> MessageReport {
    let poison_ctx = PoisonContext {
        queue: ctx.queue.name().to_string(),
        message_id: message.id.clone(),
        dequeue_count: message.dequeue_count,
    };
    let Some(scanner) = ctx.scanner.clone() else {
        let reason = "this worker does not run scan tasks";
        let records = poison::for_original(&poison_ctx, reason, &message.text);
        return poison_unprocessed(ctx, &message, records, 1).await;
    };
    let give_up = async |reason: String| {
        tracing::warn!(message_id = %message.id, shard = %task.shard, %reason, "scan task moved to the poison queue");
        scanner.give_up(&task, &message.id, &reason).await;
        let records = poison::for_original(&poison_ctx, &reason, &message.text);
        poison_unprocessed(ctx, &message, records, 1).await
    };
    if message
        .dequeue_count
        .saturating_sub(u64::from(task.handed_back))
        > ctx.policy.max_dequeue
    {
        return give_up(format!(
            "received {} times without being completed (worker crashes, timeouts or repeated failures); limit {}",
            message.dequeue_count, ctx.policy.max_dequeue
        ))
        .await;
    }
    let keeper = Keeper::start(ctx.queue.clone(), &message, ctx.policy.visibility, None);
    let span = tracing::info_span!("shard", job = %task.job, container = %task.source.container, shard = task.shard_index, prefix = %task.shard);
    let outcome = tokio::select! {
        r = scanner.scan(&task, &message.id, cancel).instrument(span) => Some(r),
        _ = cancel.cancelled() => None,
    };
    let receipt = keeper.finish().await;
    let mut report = MessageReport::default();
    // `untried`: handed back without a real try (shutdown, credentials), which does not
    // count against the dequeue limit.
    let hand_back = async |delay: Duration, untried: bool| {
        let text = untried.then(|| {
            let mut task = task.clone();
            task.handed_back = task.handed_back.saturating_add(1);
            task.encode()
        });
        if let Err(e) = ctx
            .queue
            .extend(&message.id, &receipt, delay, text.as_deref())
            .await
        {
            tracing::debug!(message_id = %message.id, error = %e, "release failed; message reappears after its visibility timeout");
        }
    };
    match outcome {
        None => {
            hand_back(Duration::ZERO, true).await;
            report.released = true;
        }
        Some(Ok(copies)) => {
            report.scans = 1;
            report.scan_copies = copies;
            settle(
                ctx,
                &message,
                Receipt::Known(receipt.clone()),
                Vec::new(),
                Vec::new(),
            )
            .await;
        }
        Some(Err(f)) if f.class == FailureClass::Auth => {
            hand_back(ctx.policy.visibility, true).await;
            report.released = true;
            report.auth_failure = Some(f.reason);
        }
        // An outage is waited out without counting against the dequeue limit.
        Some(Err(f)) if f.class == FailureClass::Unavailable => {
            let delay = ctx.policy.wait_delay(task.handed_back);
            tracing::warn!(message_id = %message.id, reason = %f.reason, delay_secs = delay.as_secs(), "service unavailable; scan task handed back to wait out the outage");
            hand_back(delay, true).await;
            report.released = true;
            report.tally.waiting = 1;
        }
        Some(Err(f)) if f.class.is_retryable() => {
            let exponent =
                u32::try_from(message.dequeue_count.saturating_sub(1).min(10)).unwrap_or(10);
            let delay = ctx
                .policy
                .retry_delay
                .saturating_mul(2u32.saturating_pow(exponent));
            tracing::info!(message_id = %message.id, reason = %f.reason, delay_secs = delay.as_secs(), "scan failed; will retry");
            hand_back(delay, false).await;
            report.tally.retried = 1;
        }
        Some(Err(f)) => return give_up(f.reason).await,
    }
    report
}

/// Failures listed per outcome in the ledger (the poison queue keeps every one).
const MAX_LEDGER_FAILURES: usize = 20;

/// Writes the settled message's outcome to the job ledger. Best effort: the work is done
/// and durable; a missing outcome only makes `status` undercount until a rerun.
async fn record_outcome(
    ctx: &Context,
    message: &ReceivedMessage,
    batch: &CopyBatch,
    report: &MessageReport,
    failures: Vec<OutcomeFailure>,
) {
    let Some(ledger) = &ctx.ledger else { return };
    // Items earlier deliveries finished (and removed from the message) count here too.
    let mut tally = batch.carried;
    tally.add(&report.tally);
    let outcome = BatchOutcome {
        v: 1,
        job: batch.job.clone(),
        message_id: message.id.clone(),
        attempt: batch.attempt,
        source_container: batch.source.container.clone(),
        items: batch.items.len() as u64 + batch.carried.done(),
        tally,
        failures,
        recorded_at: lakevault_common::record::rfc3339(time::OffsetDateTime::now_utc()),
    };
    if let Err(e) = ledger::write_outcome(ledger, &outcome).await {
        tracing::warn!(job = %batch.job, message_id = %message.id, error = %lakevault_common::error::describe(&e), "ledger outcome not recorded");
    }
}

/// Copies every item of a batch, at most `copy_slots.limit()` at once across the worker.
/// `None` marks an item interrupted by shutdown.
async fn copy_all(
    ctx: &Context,
    batch: &CopyBatch,
    progress: &Mutex<Progress>,
    cancel: &CancellationToken,
) -> Vec<(CopyItem, ItemResult)> {
    // Boxed with an explicit `Send` bound: without it rustc cannot prove these borrowing
    // futures `Send` for every lifetime when the message task is spawned.
    let mut running: futures::stream::FuturesUnordered<futures::future::BoxFuture<'_, _>> =
        futures::stream::FuturesUnordered::new();
    for (index, item) in batch.items.iter().enumerate() {
        running.push(Box::pin(async move {
            (index, copy_one(ctx, batch, item, cancel).await)
        }));
    }
    let mut results = Vec::with_capacity(batch.items.len());
    while let Some((index, (item, r))) = running.next().await {
        let result = ItemResult::from(r);
        if let ItemResult::Done(outcome) = &result {
            progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .finish(index, outcome);
        }
        results.push((item, result));
    }
    results
}

async fn copy_one(
    ctx: &Context,
    batch: &CopyBatch,
    item: &CopyItem,
    cancel: &CancellationToken,
) -> (CopyItem, Option<Result<ItemOutcome, ItemFailure>>) {
    let permit = tokio::select! {
        p = ctx.copy_slots.acquire() => Some(p),
        _ = cancel.cancelled() => None,
    };
    let Some(_permit) = permit else {
        return (item.clone(), None);
    };
    // The copy itself, not the wait for a slot; the SDK's spans nest under it.
    let span = tracing::info_span!(
        "copy",
        container = %batch.source.container,
        blob = %item.name,
        size = item.size,
        outcome = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let outcome = tokio::select! {
        r = ctx.copier.copy_item(batch, item).instrument(span.clone()) => Some(r),
        _ = cancel.cancelled() => None,
    };
    if let Some(result) = &outcome {
        let label = outcome_label(result);
        span.record("outcome", label);
        lakevault_common::metrics::copy_duration(label, started.elapsed());
    }
    (item.clone(), outcome)
}

/// The pop receipt a settled message is deleted with.
enum Receipt {
    Known(String),
    /// Held by a keeper that goes on extending the message until the outcomes are durable.
    Kept(Keeper),
}

impl Receipt {
    async fn latest(self) -> String {
        match self {
            Receipt::Known(r) => r,
            Receipt::Kept(keeper) => keeper.finish().await,
        }
    }
}

/// Settles a message that is poisoned without any copy being tried.
async fn poison_unprocessed(
    ctx: &Context,
    message: &ReceivedMessage,
    records: Vec<String>,
    poisoned: u64,
) -> MessageReport {
    let receipt = Receipt::Known(message.pop_receipt.clone());
    settle(ctx, message, receipt, Vec::new(), records).await;
    MessageReport {
        tally: Tally {
            poisoned,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Makes every outcome durable (retry messages, poison records), then deletes the
/// original. If any of the writes fails, the original is not deleted: it reappears and is
/// processed again, which repeats only idempotent work.
async fn settle(
    ctx: &Context,
    message: &ReceivedMessage,
    receipt: Receipt,
    retries: Vec<(String, Duration)>,
    poison_records: Vec<String>,
) {
    if !poison_records.is_empty() && ctx.poison.name() != ctx.queue.name() {
        // Created lazily, when there is something to poison: most messages have nothing,
        // and a Create Queue per message would be a request per batch for nothing.
        let _ = ctx.poison.ensure_exists().await;
    }
    for text in &poison_records {
        if let Err(e) = ctx.poison.send(text.as_str(), Duration::ZERO).await {
            tracing::error!(message_id = %message.id, error = %e, "cannot write to the poison queue; message kept");
            return;
        }
    }
    for (text, delay) in &retries {
        if let Err(e) = ctx.queue.send(text.as_str(), *delay).await {
            tracing::error!(message_id = %message.id, error = %e, "cannot enqueue retry; message kept");
            return;
        }
    }
    let receipt = receipt.latest().await;
    match ctx.queue.delete(&message.id, &receipt).await {
        Ok(()) => {}
        Err(QueueError::Lost(e)) => {
            tracing::info!(message_id = %message.id, error = %e, "message already gone or owned by another worker")
        }
        Err(e) => {
            tracing::warn!(message_id = %message.id, error = %e, "delete failed; message will be processed again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::Copier;
    use lakevault_common::queue::MemoryQueue;
    use lakevault_common::wire::{CopyBatch, CopyItem, Location, MessageKind, WIRE_VERSION};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Outcome by name prefix: ok, gone, transient, down, perm, auth, slow.
    #[derive(Debug, Default)]
    struct ScriptedCopier {
        calls: AtomicUsize,
        /// The outage `down` items meet is over: they copy.
        recovered: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl Copier for ScriptedCopier {
        async fn copy_item(
            &self,
            _batch: &CopyBatch,
            item: &CopyItem,
        ) -> Result<ItemOutcome, ItemFailure> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let fail = |class, reason: &str| Err(ItemFailure::new(class, reason));
            match item.name.split('-').next().unwrap_or("") {
                "ok" => Ok(ItemOutcome::Copied {
                    bytes: item.size,
                    source_etag: item.etag.clone(),
                    kept_previous: false,
                }),
                "current" => Ok(ItemOutcome::AlreadyCurrent),
                "gone" => Ok(ItemOutcome::SourceGone),
                "transient" => fail(FailureClass::Transient, "HTTP 409 LeaseAlreadyPresent"),
                "down" if !self.recovered.load(Ordering::SeqCst) => {
                    fail(FailureClass::Unavailable, "HTTP 503 ServerBusy")
                }
                "down" => Ok(ItemOutcome::Copied {
                    bytes: item.size,
                    source_etag: item.etag.clone(),
                    kept_previous: false,
                }),
                "perm" => fail(FailureClass::Permanent, "HTTP 400 InvalidHeaderValue"),
                "auth" => fail(
                    FailureClass::Auth,
                    "HTTP 403 AuthorizationPermissionMismatch",
                ),
                // The account's SAS expired: no request was sent.
                "expired" => Err(ItemFailure {
                    code: Some(crate::copy::FailureCode::Refusal(
                        crate::copy::Refusal::CredentialUnusable,
                    )),
                    ..ItemFailure::new(FailureClass::Auth, "the SAS expired")
                }),
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(ItemOutcome::SourceGone)
                }
                "tick" => {
                    tokio::time::sleep(Duration::from_secs(4)).await;
                    Ok(ItemOutcome::Copied {
                        bytes: item.size,
                        source_etag: item.etag.clone(),
                        kept_previous: false,
                    })
                }
                other => panic!("unscripted item {other}"),
            }
        }
    }

    struct Rig {
        ctx: Context,
        queue: Arc<MemoryQueue>,
        poison: Arc<MemoryQueue>,
        copier: Arc<ScriptedCopier>,
    }

    fn rig() -> Rig {
        let queue = Arc::new(MemoryQueue::new("work"));
        let poison = Arc::new(MemoryQueue::new("work-poison"));
        let copier = Arc::new(ScriptedCopier::default());
        let ctx = Context {
            scanner: None,
            copier: copier.clone(),
            ledger: None,
            queue: queue.clone(),
            poison: poison.clone(),
            copy_slots: AdaptiveLimit::new(4),
            policy: MessagePolicy {
                visibility: Duration::from_secs(30),
                max_attempts: 3,
                max_dequeue: 5,
                retry_delay: Duration::ZERO,
                releases_source_snapshots: true,
            },
        };
        Rig {
            ctx,
            queue,
            poison,
            copier,
        }
    }

    fn batch(names: &[&str], attempt: u32) -> CopyBatch {
        CopyBatch {
            v: WIRE_VERSION,
            kind: MessageKind::Copy,
            job: "job".into(),
            attempt,
            source: Location {
                account: "s".into(),
                container: "c".into(),
            },
            destination: Location {
                account: "d".into(),
                container: "c".into(),
            },
            lease: false,
            destination_prefix: None,
            overwrite: false,
            items: names
                .iter()
                .map(|n| CopyItem {
                    access: None,
                    name: n.to_string(),
                    etag: "0x1".into(),
                    size: 10,
                    last_modified: "2026-01-01T00:00:00Z".into(),
                    tags: Default::default(),
                    snapshot: None,
                    backup: Default::default(),
                })
                .collect(),
            handed_back: 0,
            waits: 0,
            source_hierarchical: false,
            apply_access: false,
            carried: Default::default(),
        }
    }

    async fn deliver(rig: &Rig, text: &str) -> MessageReport {
        rig.queue.send(text, Duration::ZERO).await.unwrap();
        let m = rig
            .queue
            .receive(1, Duration::from_secs(30))
            .await
            .unwrap()
            .remove(0);
        process(&rig.ctx, m, &CancellationToken::new()).await
    }

    fn poison_records(rig: &Rig) -> Vec<crate::poison::PoisonRecord> {
        rig.poison
            .texts()
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn successful_batch_is_deleted() {
        let rig = rig();
        let r = deliver(&rig, &batch(&["ok-1", "ok-2", "gone-3"], 0).encode()).await;
        assert_eq!(
            (
                r.tally.copied,
                r.tally.bytes,
                r.tally.source_gone,
                r.tally.poisoned
            ),
            (2, 20, 1, 0)
        );
        assert!(rig.queue.texts().is_empty() && rig.poison.texts().is_empty());
        assert_eq!(
            rig.poison.creates(),
            0,
            "nothing poisoned: no request to the poison queue"
        );
    }

    #[tokio::test]
    async fn transient_failures_come_back_as_a_smaller_message() {
        let rig = rig();
        let r = deliver(&rig, &batch(&["ok-1", "transient-2", "ok-3"], 0).encode()).await;
        assert_eq!((r.tally.copied, r.tally.retried), (2, 1));
        let texts = rig.queue.texts();
        assert_eq!(texts.len(), 1, "original deleted, one retry message");
        let retry = CopyBatch::decode(&texts[0]).unwrap();
        assert_eq!(retry.attempt, 1);
        assert_eq!(
            retry
                .items
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>(),
            ["transient-2"]
        );
    }

    #[tokio::test]
    async fn exhausted_retries_and_permanent_failures_are_poisoned_with_reasons() {
        let rig = rig();
        let r = deliver(&rig, &batch(&["transient-1", "perm-2", "ok-3"], 2).encode()).await;
        assert_eq!(
            (r.tally.copied, r.tally.poisoned, r.tally.retried),
            (1, 2, 0)
        );
        assert!(rig.queue.texts().is_empty());
        let records = poison_records(&rig);
        assert_eq!(records.len(), 1);
        let mut classes: Vec<(String, String)> = records[0]
            .failures
            .iter()
            .map(|f| (f.name.clone(), f.class.clone()))
            .collect();
        classes.sort();
        assert_eq!(
            classes,
            [
                ("perm-2".to_string(), "permanent".to_string()),
                ("transient-1".to_string(), "retries-exhausted".to_string())
            ]
        );
        assert!(
            records[0]
                .failures
                .iter()
                .any(|f| f.reason.contains("InvalidHeaderValue"))
        );
        let redrive = records[0].batch.as_ref().unwrap();
        assert_eq!(
            redrive.items.len(),
            2,
            "the poison record carries a re-drivable batch"
        );
    }

    #[tokio::test]
    async fn credential_failure_of_a_whole_batch_keeps_the_message() {
        let rig = rig();
        let r = deliver(&rig, &batch(&["auth-1", "auth-2"], 0).encode()).await;
        assert!(r.auth_failure.is_some() && r.released);
        assert_eq!(rig.queue.texts().len(), 1, "nothing dropped");
        assert!(rig.poison.texts().is_empty(), "nothing poisoned");
    }

    #[tokio::test]
    async fn a_single_denied_blob_does_not_stop_the_worker() {
        let rig = rig();
        let r = deliver(&rig, &batch(&["ok-1", "auth-2"], 0).encode()).await;
        assert!(r.auth_failure.is_none());
        assert_eq!((r.tally.copied, r.tally.poisoned), (1, 1));
        assert_eq!(poison_records(&rig)[0].failures[0].class, "access-denied");
    }

    #[tokio::test]
    async fn undecodable_and_overdelivered_messages_are_poisoned_without_copying() {
        let rig = rig();
        let r = deliver(&rig, "{\"hello\":1}").await;
        assert_eq!(r.tally.poisoned, 1);
        let rec = &poison_records(&rig)[0];
        assert_eq!(rec.original.as_deref(), Some("{\"hello\":1}"));
        assert!(rec.reason.contains("`v`"), "{}", rec.reason);

        let text = batch(&["ok-1"], 0).encode();
        rig.queue.send(&text, Duration::ZERO).await.unwrap();
        let mut m = rig
            .queue
            .receive(1, Duration::from_secs(30))
            .await
            .unwrap()
            .remove(0);
        m.dequeue_count = 6;
        let r = process(&rig.ctx, m, &CancellationToken::new()).await;
        assert_eq!(r.tally.poisoned, 1);
        assert_eq!(rig.copier.calls.load(Ordering::SeqCst), 0);
        assert!(rig.queue.texts().is_empty());
    }

    #[tokio::test]
    async fn interrupted_work_is_released_not_failed() {
        let rig = rig();
        rig.queue
            .send(&batch(&["ok-1", "slow-2"], 0).encode(), Duration::ZERO)
            .await
            .unwrap();
        let m = rig
            .queue
            .receive(1, Duration::from_secs(30))
            .await
            .unwrap()
            .remove(0);
        let cancel = CancellationToken::new();
        let stopper = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stopper.cancel();
        });
        let r = process(&rig.ctx, m, &cancel).await;
        assert!(r.released);
        assert_eq!(r.tally.poisoned, 0);
        assert!(rig.poison.texts().is_empty());
        // Released with no delay: visible again at once.
        assert_eq!(
            rig.queue
                .receive(1, Duration::from_secs(30))
                .await
                .unwrap()
                .len(),
            1
        );
    }

    /// Scan outcome by the shard's prefix: ok, transient, perm, auth.
    #[derive(Debug, Default)]
    struct ScriptedScanner {
        gave_up: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Scanner for ScriptedScanner {
        async fn scan(
            &self,
            task: &ScanTask,
            _message_id: &str,
            _cancel: &CancellationToken,
        ) -> Result<u64, ItemFailure> {
            match task.shard.prefix.as_str() {
                "ok/" => Ok(7),
                "transient/" => Err(ItemFailure::new(
                    FailureClass::Transient,
                    "snapshot of `a`: the service returned no snapshot id",
                )),
                "down/" => Err(ItemFailure::new(
                    FailureClass::Unavailable,
                    "listing: connection refused",
                )),
                "perm/" => Err(ItemFailure::new(FailureClass::Permanent, "out of order")),
                "auth/" => Err(ItemFailure::new(FailureClass::Auth, "HTTP 403")),
                other => panic!("unscripted shard {other}"),
            }
        }

        async fn give_up(&self, _task: &ScanTask, _message_id: &str, reason: &str) {
            self.gave_up.lock().unwrap().push(reason.to_string());
        }
    }

    fn scan_task(prefix: &str) -> String {
        ScanTask {
            v: WIRE_VERSION,
            kind: MessageKind::Scan,
            job: "job".into(),
            source: Location {
                account: "s".into(),
                container: "c".into(),
            },
            destination: Location {
                account: "d".into(),
                container: "c".into(),
            },
            shard: lakevault_common::wire::Shard::whole(prefix),
            shard_index: 0,
            shard_count: 1,
            filter: Default::default(),
            modified_since: None,
            snapshot: false,
            lease: false,
            max_tombstones: 10,
            scan_started_at: "2026-01-01T00:00:00Z".into(),
            write_watermark: true,
            source_hierarchical: false,
            handed_back: 0,
        }
        .encode()
    }

    fn scan_rig() -> (Rig, Arc<ScriptedScanner>) {
        let mut rig = rig();
        let scanner = Arc::new(ScriptedScanner::default());
        rig.ctx.scanner = Some(scanner.clone());
        (rig, scanner)
    }

    #[tokio::test]
    async fn a_scanned_shard_is_deleted() {
        let (rig, scanner) = scan_rig();
        let r = deliver(&rig, &scan_task("ok/")).await;
        assert_eq!((r.scans, r.scan_copies, r.tally.poisoned), (1, 7, 0));
        assert!(rig.queue.texts().is_empty() && rig.poison.texts().is_empty());
        assert!(scanner.gave_up.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_transient_scan_failure_hands_the_task_back() {
        let (rig, scanner) = scan_rig();
        let r = deliver(&rig, &scan_task("transient/")).await;
        assert_eq!((r.scans, r.tally.retried, r.tally.poisoned), (0, 1, 0));
        assert_eq!(rig.queue.texts().len(), 1, "the task stays queued");
        assert!(rig.poison.texts().is_empty());
        assert!(scanner.gave_up.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_permanent_scan_failure_is_recorded_and_poisoned() {
        let (rig, scanner) = scan_rig();
        let r = deliver(&rig, &scan_task("perm/")).await;
        assert_eq!(r.tally.poisoned, 1);
        assert!(rig.queue.texts().is_empty());
        let records = poison_records(&rig);
        assert!(
            records[0].reason.contains("out of order"),
            "{:?}",
            records[0]
        );
        assert_eq!(
            scanner.gave_up.lock().unwrap().len(),
            1,
            "the shard is recorded as failed"
        );
    }

    #[tokio::test]
    async fn a_scan_denied_by_credentials_stops_the_worker_and_keeps_the_task() {
        let (rig, scanner) = scan_rig();
        let r = deliver(&rig, &scan_task("auth/")).await;
        assert!(r.auth_failure.is_some() && r.released);
        assert_eq!(rig.queue.texts().len(), 1);
        assert!(rig.poison.texts().is_empty());
        assert!(scanner.gave_up.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_worker_without_a_scanner_poisons_scan_tasks_with_the_reason() {
        let rig = rig();
        let r = deliver(&rig, &scan_task("ok/")).await;
        assert_eq!(r.tally.poisoned, 1);
        assert!(poison_records(&rig)[0].reason.contains("scan"));
    }

    fn queued(rig: &Rig) -> CopyBatch {
        let texts = rig.queue.texts();
        assert_eq!(texts.len(), 1, "{texts:?}");
        CopyBatch::decode(&texts[0]).unwrap()
    }

    fn names(b: &CopyBatch) -> Vec<&str> {
        b.items.iter().map(|i| i.name.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_credential_expiring_mid_batch_hands_the_rest_back_instead_of_poisoning() {
        let rig = rig();
        let r = deliver(
            &rig,
            &batch(&["ok-1", "expired-2", "expired-3"], 0).encode(),
        )
        .await;
        assert!(r.released, "{r:?}");
        assert!(r.auth_failure.is_some());
        assert!(rig.poison.texts().is_empty(), "nothing poisoned");
        let back = queued(&rig);
        assert_eq!(
            names(&back),
            ["expired-2", "expired-3"],
            "what was done stays done"
        );
        assert_eq!(back.carried.copied, 1);
        assert_eq!(back.handed_back, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn hand_backs_for_credentials_never_add_up_to_poison() {
        let rig = rig();
        rig.queue
            .send(&batch(&["expired-1"], 0).encode(), Duration::ZERO)
            .await
            .unwrap();
        // A worker restarted again and again with a rotated key.
        for _ in 0..12 {
            tokio::time::advance(Duration::from_secs(31)).await;
            let m = rig
                .queue
                .receive(1, Duration::from_secs(30))
                .await
                .unwrap()
                .remove(0);
            let r = process(&rig.ctx, m, &CancellationToken::new()).await;
            assert!(r.released && r.tally.poisoned == 0, "{r:?}");
        }
        assert!(rig.poison.texts().is_empty());
        let back = queued(&rig);
        assert_eq!(names(&back), ["expired-1"]);
        assert_eq!(back.handed_back, 12);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_dies_mid_message_leaves_only_what_it_had_not_finished() {
        let mut rig = rig();
        // One copy at a time, 4 s each: every delivery finishes one item before the kill.
        rig.ctx.copy_slots = AdaptiveLimit::new(1);
        let rig = Arc::new(rig);
        let all: Vec<String> = (1..=12).map(|i| format!("tick-{i:02}")).collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        rig.queue
            .send(&batch(&refs, 0).encode(), Duration::ZERO)
            .await
            .unwrap();
        for round in 1..=12u64 {
            tokio::time::advance(Duration::from_secs(31)).await;
            let m = rig
                .queue
                .receive(1, Duration::from_secs(30))
                .await
                .unwrap()
                .remove(0);
            assert_eq!(m.dequeue_count, round);
            let worker = {
                let rig = rig.clone();
                tokio::spawn(async move { process(&rig.ctx, m, &CancellationToken::new()).await })
            };
            // A checkpoint is written after the first item finishes; then SIGKILL.
            tokio::time::sleep(Duration::from_secs(6)).await;
            worker.abort();
            let _ = worker.await;
            assert!(rig.poison.texts().is_empty(), "round {round}");
            if round < 12 {
                let back = queued(&rig);
                assert_eq!(names(&back), refs[round as usize..].to_vec());
                assert_eq!(back.carried.copied, round);
                assert_eq!(back.handed_back as u64, round);
            }
        }
        // Twelve deliveries, more than twice the dequeue limit, and every item copied
        // exactly once: the last delivery finished the message and deleted it.
        assert!(rig.queue.texts().is_empty());
        assert_eq!(rig.copier.calls.load(Ordering::SeqCst), 12 + 11);
    }

    /// I5: an outage longer than every retry a message has (here 20 deliveries against 3
    /// attempts and a dequeue limit of 5) uses up no attempt and poisons nothing; what
    /// finished before it stays finished, and the items copy once the service is back.
    #[tokio::test(start_paused = true)]
    async fn an_outage_longer_than_every_retry_never_poisons() {
        let rig = rig();
        rig.queue
            .send(
                &batch(&["ok-1", "down-2", "down-3"], 2).encode(),
                Duration::ZERO,
            )
            .await
            .unwrap();
        for delivery in 1..=20u32 {
            tokio::time::advance(Duration::from_secs(31)).await;
            let m = rig
                .queue
                .receive(1, Duration::from_secs(30))
                .await
                .unwrap()
                .remove(0);
            let r = process(&rig.ctx, m, &CancellationToken::new()).await;
            assert_eq!((r.tally.poisoned, r.tally.waiting), (0, 2), "{r:?}");
            let back = queued(&rig);
            assert_eq!(names(&back), ["down-2", "down-3"]);
            assert_eq!(back.attempt, 2, "no attempt used up");
            assert_eq!(back.waits, delivery);
            assert_eq!(back.carried.copied, 1, "the copied item stays counted");
        }
        assert!(rig.poison.texts().is_empty());
        rig.copier.recovered.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(31)).await;
        let m = rig
            .queue
            .receive(1, Duration::from_secs(30))
            .await
            .unwrap()
            .remove(0);
        let r = process(&rig.ctx, m, &CancellationToken::new()).await;
        assert_eq!((r.tally.copied, r.tally.poisoned), (2, 0), "{r:?}");
        assert!(rig.queue.texts().is_empty() && rig.poison.texts().is_empty());
    }

    /// Beside items that are retried or poisoned, the items waiting out an outage go back
    /// in a message of their own, at their attempt, after the outage's delay.
    #[tokio::test]
    async fn waiting_items_beside_failures_keep_their_attempt() {
        let mut rig = rig();
        rig.ctx.policy.retry_delay = Duration::from_secs(5);
        let mut sent = batch(&["down-1", "transient-2", "perm-3", "ok-4"], 1);
        sent.waits = 2;
        let r = deliver(&rig, &sent.encode()).await;
        assert_eq!(
            (
                r.tally.copied,
                r.tally.retried,
                r.tally.waiting,
                r.tally.poisoned
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(poison_records(&rig).len(), 1);
        // Not yet visible: both wait their delays.
        assert!(rig.queue.texts().len() == 2);
        let mut back: Vec<CopyBatch> = rig
            .queue
            .texts()
            .iter()
            .map(|t| CopyBatch::decode(t).unwrap())
            .collect();
        back.sort_by_key(|b| b.attempt);
        assert_eq!(names(&back[0]), ["down-1"]);
        assert_eq!((back[0].attempt, back[0].waits), (1, 3));
        assert_eq!(names(&back[1]), ["transient-2"]);
        assert_eq!((back[1].attempt, back[1].waits), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_scan_that_meets_an_outage_waits_and_is_never_given_up() {
        let (rig, scanner) = scan_rig();
        rig.queue
            .send(&scan_task("down/"), Duration::ZERO)
            .await
            .unwrap();
        for _ in 0..12 {
            tokio::time::advance(Duration::from_secs(31)).await;
            let m = rig
                .queue
                .receive(1, Duration::from_secs(30))
                .await
                .unwrap()
                .remove(0);
            let r = process(&rig.ctx, m, &CancellationToken::new()).await;
            assert_eq!(r.tally.poisoned, 0, "{r:?}");
        }
        assert!(rig.poison.texts().is_empty());
        assert!(scanner.gave_up.lock().unwrap().is_empty());
        assert_eq!(rig.queue.texts().len(), 1, "the task stays queued");
    }

    #[test]
    fn the_wait_grows_and_is_capped() {
        let policy = MessagePolicy::default();
        assert_eq!(policy.wait_delay(0), Duration::from_secs(5));
        assert_eq!(policy.wait_delay(3), Duration::from_secs(40));
        assert_eq!(
            policy.wait_delay(MAX_WAIT_DOUBLINGS),
            policy.wait_delay(100)
        );
        assert_eq!(policy.wait_delay(100), Duration::from_secs(320));
    }
}
