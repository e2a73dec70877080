//! The work queue: a narrow trait with an Azure Storage Queue implementation and an
//! in-memory double for fast unit tests.
//!
//! Delivery is at-least-once: a received message stays invisible while its owner works and
//! extends the lease; it is deleted only after its outcome is durable. A message whose
//! owner dies reappears after the visibility timeout and is processed again, which is
//! harmless because every write lakevault makes is idempotent.

use crate::error::{FailureClass, classify, describe};
use async_trait::async_trait;
use azure_core::http::RequestContent;
use azure_storage_queue::QueueClient;
use azure_storage_queue::models::{
    QueueClientGetPropertiesResultHeaders, QueueClientReceiveMessagesOptions,
    QueueClientSendMessageOptions, QueueClientUpdateMessageOptions, QueueMessage,
};
#[cfg(any(test, feature = "testkit"))]
use std::collections::VecDeque;
#[cfg(any(test, feature = "testkit"))]
use std::sync::Mutex;
use std::time::Duration;
#[cfg(any(test, feature = "testkit"))]
use tokio::time::Instant;

pub const POISON_SUFFIX: &str = "-poison";

/// The queue service hands out at most 32 messages per receive.
pub const MAX_RECEIVE: u8 = 32;

#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub id: String,
    pub pop_receipt: String,
    pub text: String,
    pub dequeue_count: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The message is gone or owned by someone else now (`MessageNotFound`,
    /// `PopReceiptMismatch`): benign for a delete, a lost lease for an update.
    #[error("message no longer owned: {0}")]
    Lost(String),
    #[error("{message}")]
    Failed {
        class: FailureClass,
        message: String,
    },
}

impl QueueError {
    fn from_sdk(err: azure_core::Error) -> Self {
        match crate::error::error_code(&err) {
            Some("MessageNotFound" | "PopReceiptMismatch") => QueueError::Lost(describe(&err)),
            _ => QueueError::Failed {
                class: classify(&err),
                message: describe(&err),
            },
        }
    }
}

#[async_trait]
pub trait WorkQueue: Send + Sync + std::fmt::Debug {
    /// The queue's name (for logs and the poison queue's name).
    fn name(&self) -> &str;
    /// Creates the queue if it does not exist.
    async fn ensure_exists(&self) -> Result<(), QueueError>;
    /// Sends one message, visible after `delay`.
    async fn send(&self, text: &str, delay: Duration) -> Result<(), QueueError>;
    /// Receives up to `max` (≤ 32) messages, each invisible to others for `visibility`.
    async fn receive(
        &self,
        max: u8,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError>;
    /// Update Message: keeps a message invisible for `visibility` from now, replacing its
    /// text when `text` is given (the message keeps its id and dequeue count); returns the
    /// new pop receipt.
    async fn extend(
        &self,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
        text: Option<&str>,
    ) -> Result<String, QueueError>;
    async fn delete(&self, id: &str, pop_receipt: &str) -> Result<(), QueueError>;
    /// The approximate number of messages (what autoscalers such as KEDA read).
    async fn approximate_len(&self) -> Result<u64, QueueError>;
}

/// An Azure Storage Queue.
pub struct AzureQueue {
    name: String,
    client: QueueClient,
    /// Requests made, for the run summary's queue requests per blob.
    requests: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for AzureQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureQueue")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl AzureQueue {
    pub fn new(name: impl Into<String>, client: QueueClient) -> Self {
        Self {
            name: name.into(),
            client,
            requests: Default::default(),
        }
    }

    /// Queue service requests this handle has made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self) {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

#[async_trait]
impl WorkQueue for AzureQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn ensure_exists(&self) -> Result<(), QueueError> {
        self.count();
        match self.client.create(None).await {
            Ok(_) => Ok(()),
            Err(e) if crate::error::error_code(&e) == Some("QueueAlreadyExists") => Ok(()),
            Err(e) => Err(QueueError::from_sdk(e)),
        }
    }

    async fn send(&self, text: &str, delay: Duration) -> Result<(), QueueError> {
        self.count();
        let message = QueueMessage {
            message_text: Some(text.to_string()),
        };
        let content: RequestContent<QueueMessage, _> =
            message.try_into().map_err(QueueError::from_sdk)?;
        let options = QueueClientSendMessageOptions {
            visibility_timeout: (!delay.is_zero()).then(|| secs(delay)),
            // Work must not silently expire from the queue.
            message_time_to_live: Some(-1),
            ..Default::default()
        };
        self.client
            .send_message(content, Some(options))
            .await
            .map(|_| ())
            .map_err(QueueError::from_sdk)
    }

    async fn receive(
        &self,
        max: u8,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.count();
        let options = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(i32::from(max.clamp(1, MAX_RECEIVE))),
            visibility_timeout: Some(secs(visibility).max(1)),
            ..Default::default()
        };
        let response = self
            .client
            .receive_messages(Some(options))
            .await
            .map_err(QueueError::from_sdk)?;
        let body = response.into_model().map_err(QueueError::from_sdk)?;
        Ok(body
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(ReceivedMessage {
                    id: m.message_id?,
                    pop_receipt: m.pop_receipt?,
                    text: m.message_text.unwrap_or_default(),
                    dequeue_count: m.dequeue_count.unwrap_or(1).max(0) as u64,
                })
            })
            .collect())
    }

    async fn extend(
        &self,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
        text: Option<&str>,
    ) -> Result<String, QueueError> {
        self.count();
        let options = match text {
            None => None,
            Some(text) => Some(QueueClientUpdateMessageOptions {
                queue_message: Some(
                    QueueMessage {
                        message_text: Some(text.to_string()),
                    }
                    .try_into()
                    .map_err(QueueError::from_sdk)?,
                ),
                ..Default::default()
            }),
        };
        let response = self
            .client
            .update_message(id, pop_receipt, secs(visibility).max(1), options)
            .await
            .map_err(QueueError::from_sdk)?;
        // Update Message has no body: the new receipt is in a response header.
        response
            .headers()
            .get_optional_string(&azure_core::http::headers::HeaderName::from_static(
                "x-ms-popreceipt",
            ))
            .ok_or_else(|| QueueError::Failed {
                class: FailureClass::Permanent,
                message: "update message returned no x-ms-popreceipt header".into(),
            })
    }

    async fn delete(&self, id: &str, pop_receipt: &str) -> Result<(), QueueError> {
        self.count();
        self.client
            .delete_message(id, pop_receipt, None)
            .await
            .map(|_| ())
            .map_err(QueueError::from_sdk)
    }

    async fn approximate_len(&self) -> Result<u64, QueueError> {
        self.count();
        let response = self
            .client
            .get_properties(None)
            .await
            .map_err(QueueError::from_sdk)?;
        Ok(response
            .approximate_messages_count()
            .map_err(QueueError::from_sdk)?
            .unwrap_or(0)
            .max(0) as u64)
    }
}

/// An in-memory queue with the same visibility semantics, for unit tests. Its clock is
/// tokio's, so a test with paused time moves visibility timeouts and delays forward at
/// once (`tokio::time::advance`). Built with the `testkit` feature (and in this crate's
/// own tests).
#[cfg(any(test, feature = "testkit"))]
#[derive(Debug, Default)]
pub struct MemoryQueue {
    name: String,
    inner: Mutex<MemoryState>,
}

#[cfg(any(test, feature = "testkit"))]
#[derive(Debug, Default)]
struct MemoryState {
    next_id: u64,
    messages: VecDeque<MemoryMessage>,
    /// Create Queue requests (`ensure_exists`) so far.
    creates: usize,
}

#[cfg(any(test, feature = "testkit"))]
#[derive(Debug, Clone)]
struct MemoryMessage {
    id: String,
    pop_receipt: String,
    text: String,
    visible_at: Instant,
    dequeue_count: u64,
}

#[cfg(any(test, feature = "testkit"))]
impl MemoryQueue {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            inner: Mutex::default(),
        }
    }

    /// Create Queue requests made so far (`ensure_exists`), each a request to the service.
    pub fn creates(&self) -> usize {
        self.lock().creates
    }

    /// Every message text, visible or not (test inspection).
    pub fn texts(&self) -> Vec<String> {
        self.lock()
            .messages
            .iter()
            .map(|m| m.text.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
#[cfg(any(test, feature = "testkit"))]
impl WorkQueue for MemoryQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn ensure_exists(&self) -> Result<(), QueueError> {
        self.lock().creates += 1;
        Ok(())
    }

    async fn send(&self, text: &str, delay: Duration) -> Result<(), QueueError> {
        let mut s = self.lock();
        s.next_id += 1;
        let id = format!("m{}", s.next_id);
        s.messages.push_back(MemoryMessage {
            pop_receipt: String::new(),
            id,
            text: text.to_string(),
            visible_at: Instant::now() + delay,
            dequeue_count: 0,
        });
        Ok(())
    }

    async fn receive(
        &self,
        max: u8,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let now = Instant::now();
        let mut s = self.lock();
        let mut out = Vec::new();
        for m in s.messages.iter_mut() {
            if out.len() >= usize::from(max) {
                break;
            }
            if m.visible_at <= now {
                m.visible_at = now + visibility;
                m.dequeue_count += 1;
                m.pop_receipt = uuid::Uuid::new_v4().to_string();
                out.push(ReceivedMessage {
                    id: m.id.clone(),
                    pop_receipt: m.pop_receipt.clone(),
                    text: m.text.clone(),
                    dequeue_count: m.dequeue_count,
                });
            }
        }
        Ok(out)
    }

    async fn extend(
        &self,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
        text: Option<&str>,
    ) -> Result<String, QueueError> {
        let mut s = self.lock();
        let m = s
            .messages
            .iter_mut()
            .find(|m| m.id == id && m.pop_receipt == pop_receipt)
            .ok_or_else(|| QueueError::Lost(format!("{id}: pop receipt mismatch")))?;
        m.visible_at = Instant::now() + visibility;
        if let Some(text) = text {
            m.text = text.to_string();
        }
        m.pop_receipt = uuid::Uuid::new_v4().to_string();
        Ok(m.pop_receipt.clone())
    }

    async fn delete(&self, id: &str, pop_receipt: &str) -> Result<(), QueueError> {
        let mut s = self.lock();
        let before = s.messages.len();
        s.messages
            .retain(|m| !(m.id == id && m.pop_receipt == pop_receipt));
        if s.messages.len() == before {
            return Err(QueueError::Lost(format!("{id}: not found")));
        }
        Ok(())
    }

    async fn approximate_len(&self) -> Result<u64, QueueError> {
        Ok(self.lock().messages.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_queue_visibility_and_receipts() {
        let q = MemoryQueue::new("q");
        q.send("a", Duration::ZERO).await.unwrap();
        q.send("b", Duration::from_secs(60)).await.unwrap();
        let got = q.receive(32, Duration::from_secs(30)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(
            q.receive(32, Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty()
        );
        let new_receipt = q
            .extend(
                &got[0].id,
                &got[0].pop_receipt,
                Duration::from_secs(30),
                None,
            )
            .await
            .unwrap();
        assert!(matches!(
            q.delete(&got[0].id, &got[0].pop_receipt).await,
            Err(QueueError::Lost(_))
        ));
        q.delete(&got[0].id, &new_receipt).await.unwrap();
        assert_eq!(q.approximate_len().await.unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn delays_and_visibility_timeouts_run_on_tokio_time() {
        let q = MemoryQueue::new("q");
        q.send("later", Duration::from_secs(60)).await.unwrap();
        assert!(
            q.receive(1, Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty()
        );
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(
            q.receive(1, Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty()
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let got = q.receive(1, Duration::from_secs(30)).await.unwrap();
        assert_eq!((got.len(), got[0].dequeue_count), (1, 1));
        // Held for 30 s: invisible until then, then delivered again with a new count.
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(
            q.receive(1, Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty()
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let again = q.receive(1, Duration::from_secs(30)).await.unwrap();
        assert_eq!(
            (again[0].id.as_str(), again[0].dequeue_count),
            (got[0].id.as_str(), 2)
        );
        // The first receipt no longer owns the message.
        assert!(matches!(
            q.delete(&got[0].id, &got[0].pop_receipt).await,
            Err(QueueError::Lost(_))
        ));
        // Extending keeps it invisible past its first timeout.
        let receipt = q
            .extend(
                &again[0].id,
                &again[0].pop_receipt,
                Duration::from_secs(120),
                None,
            )
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            q.receive(1, Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty()
        );
        q.delete(&again[0].id, &receipt).await.unwrap();
        assert_eq!(q.approximate_len().await.unwrap(), 0);
    }
}
