//! Counts the requests one account's clients send to its blob endpoint, every try
//! included (a request the pipeline retries costs the account twice), so that a run can
//! report its storage requests per copied blob.

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A per-try policy counting the requests whose URL is under `endpoint`. The queue service
/// of the same account is not counted here (the queue handles count their own calls).
#[derive(Debug)]
pub struct BlobRequestCounter {
    endpoint: String,
    count: AtomicU64,
}

impl BlobRequestCounter {
    pub fn new(blob_endpoint: &url::Url) -> Arc<Self> {
        Arc::new(Self {
            endpoint: blob_endpoint.as_str().trim_end_matches('/').to_string(),
            count: AtomicU64::new(0),
        })
    }

    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn counts(&self, url: &url::Url) -> bool {
        url.as_str()
            .strip_prefix(&self.endpoint)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
    }
}

#[async_trait]
impl Policy for BlobRequestCounter {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if self.counts(request.url()) {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_blob_endpoint_is_counted() {
        let counter =
            BlobRequestCounter::new(&"http://127.0.0.1:10000/devstoreaccount1/".parse().unwrap());
        let yes = |u: &str| counter.counts(&u.parse().unwrap());
        assert!(yes(
            "http://127.0.0.1:10000/devstoreaccount1/c/a.csv?comp=tags"
        ));
        assert!(yes("http://127.0.0.1:10000/devstoreaccount1?comp=list"));
        assert!(!yes(
            "http://127.0.0.1:10001/devstoreaccount1/work/messages"
        ));
        assert!(!yes("http://127.0.0.1:10000/devstoreaccount10/c/a"));
        let azure =
            BlobRequestCounter::new(&"https://lake.blob.core.windows.net/".parse().unwrap());
        assert!(azure.counts(&"https://lake.blob.core.windows.net/c/a".parse().unwrap()));
        assert!(
            !azure.counts(
                &"https://lake.queue.core.windows.net/q/messages"
                    .parse()
                    .unwrap()
            )
        );
    }
}
