//! Processing one queue message: decode, keep it invisible while working, copy every
//! item, then settle it. The original message is deleted only after every item's outcome
//! is durable: copied, re-enqueued for a retry, or recorded in the poison queue.

use crate::copy::{CopyEngine, ItemFailure, ItemOutcome};
use crate::poison::{self, FailedItem, PoisonContext};
use futures::StreamExt;
use lakevault_common::error::FailureClass;
use lakevault_common::queue::{QueueError, ReceivedMessage, WorkQueue};
use lakevault_common::wire::{CopyBatch, CopyItem};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(Debug, Clone)]
pub struct MessagePolicy {
    /// How long a received message stays invisible; extended at half this interval.
    pub visibility: Duration,
    /// Attempts per item (each retry is a new, smaller message) before it is poisoned.
    pub max_attempts: u32,
    /// Receives of one message (crashed or timed-out workers) before it is poisoned.
    pub max_dequeue: u64,
    /// Base delay before a retried item becomes visible again (doubles per attempt).
    pub retry_delay: Duration,
}

impl Default for MessagePolicy {
    fn default() -> Self {
        Self {
            visibility: Duration::from_secs(60),
            max_attempts: 5,
            max_dequeue: 5,
            retry_delay: Duration::from_secs(5),
        }
    }
}

/// What happened to one message, for the run summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MessageReport {
    pub copied: u64,
    pub bytes: u64,
    pub source_gone: u64,
    pub retried: u64,
    pub poisoned: u64,
    /// The message was left in the queue (shutdown, or credentials failing).
    pub released: bool,
    /// A credential failure: the worker should stop, the work stays queued.
    pub auth_failure: Option<String>,
}

pub struct Context {
    pub engine: Arc<CopyEngine>,
    pub queue: Arc<dyn WorkQueue>,
    pub poison: Arc<dyn WorkQueue>,
    pub copy_slots: Arc<Semaphore>,
    pub policy: MessagePolicy,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("queue", &self.queue.name())
            .finish_non_exhaustive()
    }
}

/// Keeps a message invisible while it is worked on, always with the latest pop receipt.
struct VisibilityKeeper {
    receipt: Arc<Mutex<String>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl VisibilityKeeper {
    fn start(queue: Arc<dyn WorkQueue>, message: &ReceivedMessage, visibility: Duration) -> Self {
        let receipt = Arc::new(Mutex::new(message.pop_receipt.clone()));
        let stop = CancellationToken::new();
        let (r, s, id) = (receipt.clone(), stop.clone(), message.id.clone());
        let task = tokio::spawn(async move {
            let interval = visibility / 2;
            loop {
                tokio::select! {
                    _ = s.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                let current = r.lock().unwrap_or_else(|p| p.into_inner()).clone();
                match queue.extend(&id, &current, visibility).await {
                    Ok(new) => *r.lock().unwrap_or_else(|p| p.into_inner()) = new,
                    Err(QueueError::Lost(e)) => {
                        tracing::warn!(message_id = %id, error = %e, "lost ownership of message; another worker may redo it");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(message_id = %id, error = %e, "visibility extension failed; will retry")
                    }
                }
            }
        });
        Self {
            receipt,
            stop,
            task,
        }
    }

    async fn finish(self) -> String {
        self.stop.cancel();
        let _ = self.task.await;
        self.receipt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Processes one message to completion (or release on cancellation).
pub async fn process(
    ctx: &Context,
    message: ReceivedMessage,
    cancel: &CancellationToken,
) -> MessageReport {
    let mut report = MessageReport::default();
    let poison_ctx = PoisonContext {
        queue: ctx.queue.name().to_string(),
        message_id: message.id.clone(),
        dequeue_count: message.dequeue_count,
    };
    let batch = match CopyBatch::decode(&message.text) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(message_id = %message.id, reason = %e, "undecodable message moved to the poison queue");
            let records = poison::for_original(&poison_ctx, &e.to_string(), &message.text);
            report.poisoned = 1;
            settle(
                ctx,
                &message,
                message.pop_receipt.clone(),
                Vec::new(),
                records,
            )
            .await;
            return report;
        }
    };
    if message.dequeue_count > ctx.policy.max_dequeue {
        let reason = format!(
            "received {} times without being completed (worker crashes or timeouts); limit {}",
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
        report.poisoned = batch.items.len() as u64;
        settle(
            ctx,
            &message,
            message.pop_receipt.clone(),
            Vec::new(),
            records,
        )
        .await;
        return report;
    }

    let keeper = VisibilityKeeper::start(ctx.queue.clone(), &message, ctx.policy.visibility);
    let span = tracing::info_span!("batch", job = %batch.job, container = %batch.source.container, items = batch.items.len());
    let results = copy_all(ctx, &batch, cancel).instrument(span).await;
    let receipt = keeper.finish().await;

    let mut retry = Vec::new();
    let mut failed = Vec::new();
    let mut interrupted = false;
    for (item, outcome) in results {
        match outcome {
            None => interrupted = true,
            Some(Ok(ItemOutcome::Copied { bytes, .. })) => {
                report.copied += 1;
                report.bytes += bytes;
            }
            Some(Ok(ItemOutcome::SourceGone)) => report.source_gone += 1,
            Some(Err(f)) if f.class == FailureClass::Auth => {
                report.auth_failure.get_or_insert(f.reason.clone());
            }
            Some(Err(f))
                if f.class.is_retryable() && batch.attempt + 1 < ctx.policy.max_attempts =>
            {
                tracing::info!(blob = %item.name, reason = %f.reason, "copy failed; will retry");
                retry.push(item)
            }
            Some(Err(f)) => {
                tracing::warn!(blob = %item.name, reason = %f.reason, "copy failed permanently");
                let class = if f.class.is_retryable() {
                    "retries-exhausted"
                } else {
                    "permanent"
                };
                failed.push((
                    item.clone(),
                    FailedItem {
                        name: item.name,
                        class: class.into(),
                        reason: f.reason,
                    },
                ))
            }
        }
    }
    if interrupted || report.auth_failure.is_some() {
        // Leave the whole message for later: everything already copied is idempotent to
        // redo, and nothing is dropped. A credential failure waits a little before the
        // message is visible again; a shutdown hands it back at once.
        let delay = if report.auth_failure.is_some() {
            ctx.policy.visibility
        } else {
            Duration::ZERO
        };
        if let Err(e) = ctx.queue.extend(&message.id, &receipt, delay).await {
            tracing::debug!(message_id = %message.id, error = %e, "release failed; message reappears after its visibility timeout");
        }
        report.released = true;
        return report;
    }
    let mut retries = Vec::new();
    if !retry.is_empty() {
        report.retried = retry.len() as u64;
        let (batches, _) = lakevault_common::wire::pack(
            &batch.with_items(Vec::new(), batch.attempt + 1),
            retry,
            lakevault_common::wire::MAX_MESSAGE_BYTES,
        );
        retries = batches.iter().map(CopyBatch::encode).collect();
    }
    let mut records = Vec::new();
    if !failed.is_empty() {
        report.poisoned = failed.len() as u64;
        records = poison::for_items(&poison_ctx, "items failed", &batch, failed);
    }
    let delay = ctx.policy.retry_delay * 2u32.saturating_pow(batch.attempt.min(10));
    settle_with_delay(ctx, &message, receipt, retries, delay, records).await;
    report
}

/// Copies every item of a batch, at most `copy_slots` at once across the whole worker.
/// `None` marks an item interrupted by shutdown.
async fn copy_all(
    ctx: &Context,
    batch: &CopyBatch,
    cancel: &CancellationToken,
) -> Vec<(CopyItem, Option<Result<ItemOutcome, ItemFailure>>)> {
    // Boxed with an explicit `Send` bound: without it rustc cannot prove these borrowing
    // futures `Send` for every lifetime when the message task is spawned.
    let mut running: futures::stream::FuturesUnordered<futures::future::BoxFuture<'_, _>> =
        futures::stream::FuturesUnordered::new();
    for item in &batch.items {
        running.push(Box::pin(copy_one(ctx, batch, item, cancel)));
    }
    let mut results = Vec::with_capacity(batch.items.len());
    while let Some(r) = running.next().await {
        results.push(r);
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
        p = ctx.copy_slots.clone().acquire_owned() => p.ok(),
        _ = cancel.cancelled() => None,
    };
    let Some(_permit) = permit else {
        return (item.clone(), None);
    };
    let outcome = tokio::select! {
        r = ctx.engine.copy_item(batch, item) => Some(r),
        _ = cancel.cancelled() => None,
    };
    (item.clone(), outcome)
}

async fn settle(
    ctx: &Context,
    message: &ReceivedMessage,
    receipt: String,
    retries: Vec<String>,
    poison_records: Vec<String>,
) {
    settle_with_delay(
        ctx,
        message,
        receipt,
        retries,
        Duration::ZERO,
        poison_records,
    )
    .await
}

/// Makes every outcome durable (retry messages, poison records), then deletes the
/// original. If any of the writes fails, the original is not deleted: it reappears and is
/// processed again, which repeats only idempotent work.
async fn settle_with_delay(
    ctx: &Context,
    message: &ReceivedMessage,
    receipt: String,
    retries: Vec<String>,
    delay: Duration,
    poison_records: Vec<String>,
) {
    if ctx.poison.name() != ctx.queue.name() {
        // Created lazily: most runs never poison anything.
        let _ = ctx.poison.ensure_exists().await;
    }
    for text in &poison_records {
        if let Err(e) = ctx.poison.send(text.as_str(), Duration::ZERO).await {
            tracing::error!(message_id = %message.id, error = %e, "cannot write to the poison queue; message kept");
            return;
        }
    }
    for text in &retries {
        if let Err(e) = ctx.queue.send(text.as_str(), delay).await {
            tracing::error!(message_id = %message.id, error = %e, "cannot enqueue retry; message kept");
            return;
        }
    }
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
