//! The fallback when the backup service cannot read the source (a firewall or private
//! endpoint between the accounts): the worker reads ranges with its own credential,
//! conditional on the ETag, and uploads them with Put Block, one range of at most
//! `STREAM_RANGE` bytes in memory per blob at a time.

use super::blocks::{block_ids, commit, effective_block_size, properties_of_version};
use super::write::{Source, Target};
use super::{CopyEngine, ItemFailure};
use lakevault_common::error::FailureClass;
use lakevault_common::store::Side;

const STREAM_RANGE: u64 = 8 * 1024 * 1024;

impl CopyEngine {
    pub(super) async fn stream_copy(
        &self,
        source: Source<'_>,
        target: Target<'_>,
    ) -> Result<u64, ItemFailure> {
        let props = properties_of_version(source).await?;
        let range = effective_block_size(source.size, STREAM_RANGE)?;
        let ids = block_ids(source.blob.name, source.etag, source.size, range);
        let put_failed = |e| ItemFailure::from_store("put block", Side::Backup, &e);
        for (i, id) in ids.iter().enumerate() {
            let offset = i as u64 * range;
            let length = range.min(source.size - offset);
            if length == 0 {
                // An empty blob: one empty block.
                target
                    .store
                    .stage_block(target.blob, id, Vec::new())
                    .await
                    .map_err(put_failed)?;
                continue;
            }
            let bytes = source
                .store
                .read_range(source.blob, offset, length, source.condition())
                .await
                .map_err(|e| ItemFailure::from_store("reading a source range", Side::Source, &e))?;
            if bytes.len() as u64 != length {
                return Err(ItemFailure::new(
                    FailureClass::Transient,
                    format!(
                        "source range at {offset}: {} of {length} bytes",
                        bytes.len()
                    ),
                ));
            }
            target
                .store
                .stage_block(target.blob, id, bytes)
                .await
                .map_err(put_failed)?;
        }
        commit(target, &props, &ids).await?;
        Ok(source.size)
    }
}
