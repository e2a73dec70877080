//! Keeps a message invisible while it is worked on, and its progress durable: every few
//! seconds, when items have finished, the message's text is replaced (Update Message,
//! same id and pop receipt chain) by the items still to do and the outcomes of those done.
//! A worker that dies then loses only the items in flight; the next delivery starts where
//! this one stopped, and does not count against the dequeue limit.

use super::MessagePolicy;
use super::decide::count_done;
use crate::copy::ItemOutcome;
use lakevault_common::queue::{QueueError, ReceivedMessage, WorkQueue};
use lakevault_common::tally::Tally;
use lakevault_common::wire::{CopyBatch, MAX_MESSAGE_BYTES};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Progress is written at most this often (and the visibility extended at half the
/// visibility timeout when there is none).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// What one delivery of a copy batch has finished so far.
#[derive(Debug)]
pub(super) struct Progress {
    received: CopyBatch,
    /// Tells which finished items released a source snapshot.
    policy: MessagePolicy,
    finished: Vec<bool>,
    /// Outcomes of this delivery's finished items.
    tally: Tally,
    /// Items finished since the message text was last replaced.
    unsaved: bool,
    settling: bool,
}

impl Progress {
    pub fn new(received: &CopyBatch, policy: MessagePolicy) -> Self {
        Self {
            policy,
            finished: vec![false; received.items.len()],
            received: received.clone(),
            tally: Tally::default(),
            unsaved: false,
            settling: false,
        }
    }

    /// Item `index` of the received batch has a final outcome.
    pub fn finish(&mut self, index: usize, outcome: &ItemOutcome) {
        if let Some(f) = self.finished.get_mut(index)
            && !*f
        {
            *f = true;
            let released = self
                .policy
                .released_snapshot(&self.received, &self.received.items[index]);
            count_done(&mut self.tally, outcome, released);
            self.unsaved = true;
        }
    }

    /// The message as it stands: the items not finished, the outcomes of the finished ones
    /// carried, and this delivery counted as handed back (it made progress, or it hands the
    /// message back without trying).
    pub fn remaining(&self) -> CopyBatch {
        let mut batch = self.received.clone();
        batch.items = self
            .received
            .items
            .iter()
            .zip(&self.finished)
            .filter(|(_, done)| !**done)
            .map(|(item, _)| item.clone())
            .collect();
        batch.carried.add(&self.tally);
        batch.handed_back = self.received.handed_back.saturating_add(1);
        batch
    }

    /// The message is being settled (its retries and poison records written, then it is
    /// deleted): no more progress is written into it, or a delete that fails would bring
    /// back items already handed on.
    pub fn settling(&mut self) {
        self.settling = true;
    }

    /// The text to write now, if anything finished since the last write.
    fn checkpoint(&mut self) -> Option<String> {
        if !self.unsaved || self.settling {
            return None;
        }
        self.unsaved = false;
        fitting(self.remaining().encode())
    }
}

/// A text the queue accepts (the received message fitted; what is carried adds a little).
pub(super) fn fitting(text: String) -> Option<String> {
    (text.len() <= MAX_MESSAGE_BYTES + 512).then_some(text)
}

/// Keeps one message invisible, always with the latest pop receipt, until `finish` (or
/// until dropped: a message task that ends any other way, a panic, lets its message
/// reappear after the visibility timeout).
pub(super) struct Keeper {
    receipt: Arc<Mutex<String>>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Keeper {
    pub fn start(
        queue: Arc<dyn WorkQueue>,
        message: &ReceivedMessage,
        visibility: Duration,
        progress: Option<Arc<Mutex<Progress>>>,
    ) -> Self {
        let receipt = Arc::new(Mutex::new(message.pop_receipt.clone()));
        let stop = CancellationToken::new();
        let (r, s, id) = (receipt.clone(), stop.clone(), message.id.clone());
        let extend_every = visibility / 2;
        let tick = (visibility / 4).min(CHECKPOINT_EVERY);
        let task = tokio::spawn(
            async move {
                let mut last_write = Instant::now();
                loop {
                    tokio::select! {
                        _ = s.cancelled() => return,
                        _ = tokio::time::sleep(tick) => {}
                    }
                    let text = progress
                        .as_ref()
                        .and_then(|p| lock(p).checkpoint());
                    if text.is_none() && last_write.elapsed() < extend_every {
                        continue;
                    }
                    let current = lock(&r).clone();
                    match queue.extend(&id, &current, visibility, text.as_deref()).await {
                        Ok(new) => {
                            *lock(&r) = new;
                            last_write = Instant::now();
                        }
                        Err(QueueError::Lost(e)) => {
                            tracing::warn!(message_id = %id, error = %e, "lost ownership of message; another worker may redo it");
                            return;
                        }
                        // Tried again at the next tick, not after a whole interval: the
                        // write is overdue (`last_write` did not move).
                        Err(e) => {
                            tracing::warn!(message_id = %id, error = %e, "visibility extension failed; trying again");
                            if text.is_some()
                                && let Some(p) = &progress
                            {
                                lock(p).unsaved = true;
                            }
                        }
                    }
                }
            }
            .in_current_span(),
        );
        Self {
            receipt,
            stop,
            task: Some(task),
        }
    }

    /// Stops keeping the message; returns the latest pop receipt.
    pub async fn finish(mut self) -> String {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        lock(&self.receipt).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
