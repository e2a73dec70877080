//! The one request builder of the copy engine: a version of a source blob written to a
//! destination blob, with one synchronous Copy Blob From URL up to `sync_copy_max`, one
//! Put Blob From URL up to `put_from_url_max` where the service has it, and ranged blocks
//! above. Backup and restore differ only in what they pass.

use super::blocks::source_properties;
use super::{CopyEngine, ItemFailure};
use lakevault_common::store::{AccessTier, BlobRef, BlobStore, Condition, CopyFromUrl, Side};
use std::collections::BTreeMap;

/// The source version a write reads.
#[derive(Debug, Clone, Copy)]
pub(super) struct Source<'a> {
    pub store: &'a dyn BlobStore,
    /// The blob, or the snapshot, read.
    pub blob: BlobRef<'a>,
    /// The ETag of the version (the snapshot's, for a snapshot).
    pub etag: &'a str,
    pub size: u64,
}

impl Source<'_> {
    /// `x-ms-source-if-match`: a live blob is read only at the version planned; a snapshot
    /// cannot change.
    pub fn condition(&self) -> Option<&str> {
        self.blob.snapshot.is_none().then_some(self.etag)
    }
}

/// Where a write goes and what the new blob carries besides the source's content,
/// content headers and metadata.
#[derive(Debug, Clone)]
pub(super) struct Target<'a> {
    pub store: &'a dyn BlobStore,
    pub blob: BlobRef<'a>,
    /// The complete tag set of the new blob.
    pub tags: Option<&'a BTreeMap<String, String>>,
    pub tier: Option<AccessTier>,
    /// On the destination blob.
    pub condition: Condition,
}

impl CopyEngine {
    /// Writes `source` to `target`: one request up to `sync_copy_max`, one Put Blob From
    /// URL (and a read of the source's properties) up to `put_from_url_max`, blocks above
    /// or where the destination service does not implement Put Blob From URL.
    pub(super) async fn write(
        &self,
        source: Source<'_>,
        target: Target<'_>,
    ) -> Result<(), ItemFailure> {
        if source.size <= self.options.sync_copy_max {
            let url = sign(source, self.options.source_sas_validity).await?;
            return target
                .store
                .copy_from_url(
                    target.blob,
                    CopyFromUrl {
                        source: &url,
                        source_if_match: source.condition(),
                        condition: target.condition.clone(),
                        tags: target.tags,
                        tier: target.tier.clone(),
                    },
                )
                .await
                .map_err(|e| ItemFailure::from_store("copy blob from URL", Side::Backup, &e));
        }
        // Both paths below give the source's content headers and metadata (neither
        // request copies them): read once, whichever path the blob takes.
        let props = source_properties(source).await?;
        if source.size <= self.options.put_from_url_max
            && let Some(done) = self.whole_copy(source, target.clone(), &props).await
        {
            return done;
        }
        self.block_copy(source, target, props).await
    }
}

/// The URL (and authorization) the destination service reads `source` through, valid for
/// `validity` from now.
pub(super) async fn sign(
    source: Source<'_>,
    validity: std::time::Duration,
) -> Result<lakevault_common::storage::CopySource, ItemFailure> {
    source
        .store
        .copy_source(source.blob, validity)
        .await
        .map_err(|e| ItemFailure::from_store("authorizing the source read", Side::Source, &e))
}
