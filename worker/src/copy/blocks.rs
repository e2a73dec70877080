//! Blobs above `sync_copy_max`: Put Block From URL per range, in parallel, then Put Block
//! List with the source's content headers and metadata.

use super::write::{Source, Target, sign};
use super::{CopyEngine, ItemFailure, Refusal};
use futures::StreamExt;
use lakevault_common::error::FailureClass;
use lakevault_common::store::{BlobProperties, Commit, Side};
use sha2::Digest;

/// A block blob has at most 50,000 committed blocks.
pub const MAX_BLOCKS: u64 = 50_000;
/// Put Block From URL stages at most 4,000 MiB per block.
pub const MAX_BLOCK_SIZE: u64 = 4000 * 1024 * 1024;

impl CopyEngine {
    /// Copies `source` in ranges. Content headers and metadata are set on commit, so
    /// `props` are the source's, read and checked to belong to the version being copied
    /// ([`source_properties`]).
    pub(super) async fn block_copy(
        &self,
        source: Source<'_>,
        target: Target<'_>,
        props: BlobProperties,
    ) -> Result<(), ItemFailure> {
        let block_size = effective_block_size(source.size, self.options.block_size)?;
        let ids = block_ids(source.blob.name, source.etag, source.size, block_size);
        let parallelism = self.options.block_parallelism.max(1);
        // Futures collected first: a closure mapped inside the stream would not be
        // provably `Send` for every borrow lifetime.
        let mut stages: Vec<futures::future::BoxFuture<'_, Result<(), ItemFailure>>> =
            Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let offset = i as u64 * block_size;
            let length = block_size.min(source.size - offset);
            stages.push(Box::pin(stage(
                &target,
                id,
                source,
                self.options.source_sas_validity,
                offset,
                length,
            )));
        }
        let mut staged = futures::stream::iter(stages).buffer_unordered(parallelism);
        while let Some(result) = staged.next().await {
            result?;
        }
        drop(staged);
        commit(target, &props, &ids).await
    }
}

/// Put Block From URL of one range. The source is signed for each range: a copy of a
/// large blob can outlast a SAS or a token, and a range must never present an expired one
/// (the service would answer `CannotVerifyCopySource`). Signing a SAS is local; a token
/// comes from the credential's cache.
async fn stage(
    target: &Target<'_>,
    id: &[u8],
    source: Source<'_>,
    validity: std::time::Duration,
    offset: u64,
    length: u64,
) -> Result<(), ItemFailure> {
    let url = sign(source, validity).await?;
    target
        .store
        .stage_block_from_url(target.blob, id, &url, source.condition(), offset, length)
        .await
        .map_err(|e| ItemFailure::from_store("put block from URL", Side::Backup, &e))
}

/// Put Block List with the source's content headers and metadata, the tags and the tier.
pub(super) async fn commit(
    target: Target<'_>,
    props: &BlobProperties,
    ids: &[Vec<u8>],
) -> Result<(), ItemFailure> {
    target
        .store
        .commit_blocks(
            target.blob,
            ids,
            Commit {
                headers: props.headers.clone(),
                metadata: props.metadata.clone(),
                tags: target.tags,
                tier: target.tier.clone(),
                condition: target.condition.clone(),
            },
        )
        .await
        .map_err(|e| ItemFailure::from_store("put block list", Side::Backup, &e))
}

/// The properties of a source a write sets on the destination itself (content headers,
/// metadata): those of the version being copied, of a block blob.
pub(super) async fn source_properties(source: Source<'_>) -> Result<BlobProperties, ItemFailure> {
    let props = properties_of_version(source).await?;
    if !props.is_block_blob() {
        return Err(ItemFailure::refused(
            Refusal::NotABlockBlob,
            format!(
                "source is a {}; only block blobs are copied",
                props.blob_type
            ),
        ));
    }
    Ok(props)
}

/// The source's properties (content headers, metadata), provided they still belong to the
/// version being copied; `SourceChanged` otherwise.
pub(super) async fn properties_of_version(
    source: Source<'_>,
) -> Result<BlobProperties, ItemFailure> {
    let props = source
        .store
        .properties(source.blob)
        .await
        .map_err(|e| ItemFailure::from_store("reading source properties", Side::Source, &e))?;
    if props.etag != source.etag {
        return Err(ItemFailure::new(
            FailureClass::SourceChanged,
            "source ETag changed since it was read",
        ));
    }
    Ok(props)
}

/// The configured block size, raised (in whole MiB) when the blob would need more than
/// 50,000 blocks of it.
pub fn effective_block_size(size: u64, configured: u64) -> Result<u64, ItemFailure> {
    const MIB: u64 = 1024 * 1024;
    let configured = configured.max(1);
    if size.div_ceil(configured) <= MAX_BLOCKS {
        return Ok(configured);
    }
    let needed = size.div_ceil(MAX_BLOCKS).div_ceil(MIB) * MIB;
    if needed > MAX_BLOCK_SIZE {
        return Err(ItemFailure::refused(
            Refusal::TooLarge,
            format!("{size} bytes exceed what a block blob can hold (50,000 blocks of 4,000 MiB)"),
        ));
    }
    Ok(needed)
}

/// Block ids for a ranged copy: equal length (the service requires it), and derived from
/// the blob name and source ETag so that two workers copying different versions of the
/// same blob at once never commit each other's blocks.
pub fn block_ids(name: &str, etag: &str, size: u64, block_size: u64) -> Vec<Vec<u8>> {
    let digest = sha2::Sha256::digest(format!("{name}\n{etag}").as_bytes());
    let prefix = hex::encode(&digest[..8]);
    let count = size.div_ceil(block_size.max(1)).max(1);
    (0..count)
        .map(|i| format!("{prefix}-{i:06}").into_bytes())
        .collect()
}
