//! Tombstones: a backup blob marked as deleted in the source.

use super::{ItemFailure, ItemOutcome};
use lakevault_common::record::{BackupRecord, RECORD_TAG, rfc3339};
use lakevault_common::store::{BlobRef, BlobStore, Condition, Side};
use lakevault_common::wire::CopyItem;

/// Adds `deleted=<now>` to the backup blob's record tag, keeping its other tags.
/// Conditional on the backup blob's ETag at planning time: a blob rewritten or removed
/// since is left alone (`Superseded`).
pub(super) async fn tombstone(
    backup: &dyn BlobStore,
    container: &str,
    item: &CopyItem,
    now: time::OffsetDateTime,
) -> Result<ItemOutcome, ItemFailure> {
    let mut record = BackupRecord::from_tags(&item.tags).ok_or_else(|| {
        ItemFailure::permanent("backup blob has no lakevault record; it is not tombstoned")
    })?;
    if record.deleted_at.is_some() {
        return Ok(ItemOutcome::Tombstoned);
    }
    record.deleted_at = Some(rfc3339(now));
    // Every other tag stays: the user's, and the access control the version had.
    let mut tags = item.tags.clone();
    tags.insert(RECORD_TAG.to_string(), record.to_tag_value());
    let condition = Condition::IfMatch(lakevault_common::record::normalise_etag(&item.etag));
    match backup
        .set_tags(BlobRef::new(container, &item.name), &tags, condition)
        .await
    {
        Ok(()) => Ok(ItemOutcome::Tombstoned),
        Err(e) if e.is_not_found() || e.is_condition_not_met() => Ok(ItemOutcome::Superseded),
        Err(e) => Err(ItemFailure::from_store(
            "set blob tags (tombstone)",
            Side::Backup,
            &e,
        )),
    }
}
