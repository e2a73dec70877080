//! Put Blob From URL: a source of up to 5,000 MiB written in one request
//! (<https://learn.microsoft.com/rest/api/storageservices/put-blob-from-url>) instead of a
//! Put Block From URL per range and a Put Block List. The request does not carry the
//! source's metadata, so the source's properties, read first by the caller and checked
//! to belong to the version being copied, are given. A destination service that answers
//! `501 Not Implemented` (the storage emulator) is remembered as one: the caller takes
//! the block path with the same properties, now and for every later blob written to that
//! account.

use super::write::{Source, Target, sign};
use super::{CopyEngine, ItemFailure};
use lakevault_common::store::{BlobProperties, PutFromUrl, Side};

/// `501 Not Implemented`: the service does not have the operation.
const NOT_IMPLEMENTED: u16 = 501;

impl CopyEngine {
    /// Copies `source` with one Put Blob From URL; `None` when the destination's service
    /// does not implement it (known before, or learnt from this request's answer).
    pub(super) async fn whole_copy(
        &self,
        source: Source<'_>,
        target: Target<'_>,
        props: &BlobProperties,
    ) -> Option<Result<(), ItemFailure>> {
        let alias = target.store.alias();
        if self.lacks_put_from_url(alias) {
            return None;
        }
        let url = match sign(source, self.options.source_sas_validity).await {
            Ok(url) => url,
            Err(failure) => return Some(Err(failure)),
        };
        let answer = target
            .store
            .put_from_url(
                target.blob,
                PutFromUrl {
                    source: &url,
                    source_if_match: source.condition(),
                    headers: props.headers.clone(),
                    metadata: props.metadata.clone(),
                    tags: target.tags,
                    tier: target.tier,
                    condition: target.condition,
                },
            )
            .await;
        match answer {
            Err(e) if e.status == Some(NOT_IMPLEMENTED) => {
                tracing::info!(
                    account = alias,
                    "the backup service does not implement Put Blob From URL (501): blobs above the single-copy limit are copied in ranges"
                );
                self.without_put_from_url
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(alias.to_string());
                None
            }
            answer => Some(
                answer.map_err(|e| ItemFailure::from_store("put blob from URL", Side::Backup, &e)),
            ),
        }
    }

    fn lacks_put_from_url(&self, alias: &str) -> bool {
        self.without_put_from_url
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(alias)
    }
}
