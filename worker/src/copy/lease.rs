//! Lease mode: a lease held on a source blob for the length of its copy, renewed in the
//! background, so no writer that honours leases changes the blob while it is read.

use super::ItemFailure;
use lakevault_common::error::FailureClass;
use lakevault_common::store::{BlobRef, BlobStore, Side};
use std::sync::Arc;
use std::time::Duration;

/// Released on every path: explicitly after the copy, and from `Drop` when the copy is
/// abandoned (shutdown), so a lease never outlives the work by more than its duration.
pub(super) struct SourceLease {
    store: Arc<dyn BlobStore>,
    container: String,
    name: String,
    id: String,
    stop: tokio_util::sync::CancellationToken,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl SourceLease {
    /// Acquires the lease; `None` if the blob is gone. A blob leased by someone else is a
    /// transient failure: the item is retried later.
    pub async fn acquire(
        store: Arc<dyn BlobStore>,
        blob: BlobRef<'_>,
        duration: Duration,
    ) -> Result<Option<Self>, ItemFailure> {
        let seconds = duration.as_secs().clamp(15, 60);
        let proposed = uuid::Uuid::new_v4().to_string();
        let id = match store
            .acquire_lease(blob, Duration::from_secs(seconds), &proposed)
            .await
        {
            Ok(id) => id,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) if e.is_conflict() => {
                return Err(ItemFailure::new(
                    FailureClass::Transient,
                    format!("source is leased by another writer: {}", e.message),
                ));
            }
            Err(e) => {
                return Err(ItemFailure::from_store(
                    "acquiring the source lease",
                    Side::Source,
                    &e,
                ));
            }
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let (container, name) = (blob.container.to_string(), blob.name.to_string());
        let renewer = {
            let (store, container, name, id, stop) = (
                store.clone(),
                container.clone(),
                name.clone(),
                id.clone(),
                stop.clone(),
            );
            tokio::spawn(tracing::Instrument::in_current_span(async move {
                let interval = Duration::from_secs(seconds / 2);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(interval) => {}
                    }
                    if let Err(e) = store
                        .renew_lease(BlobRef::new(&container, &name), &id)
                        .await
                    {
                        tracing::warn!(error = %e, "source lease renewal failed");
                    }
                }
            }))
        };
        Ok(Some(Self {
            store,
            container,
            name,
            id,
            stop,
            renewer: Some(renewer),
        }))
    }

    pub async fn release(mut self) {
        self.stop.cancel();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.await;
        }
        let id = std::mem::take(&mut self.id);
        let blob = BlobRef::new(&self.container, &self.name);
        if let Err(e) = self.store.release_lease(blob, &id).await {
            tracing::warn!(error = %e, "source lease not released; it expires on its own");
        }
    }
}

impl Drop for SourceLease {
    fn drop(&mut self) {
        self.stop.cancel();
        if self.id.is_empty() {
            return;
        }
        // Abandoned mid-copy: release in the background (best effort).
        let (store, id) = (self.store.clone(), std::mem::take(&mut self.id));
        let (container, name) = (self.container.clone(), self.name.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(tracing::Instrument::in_current_span(async move {
                let _ = store
                    .release_lease(BlobRef::new(&container, &name), &id)
                    .await;
            }));
        }
    }
}
