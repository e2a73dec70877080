//! Restore items: a backed-up version (a snapshot of the backup blob, or the base blob at
//! its planned ETag) written to the target through the same request builder as a backup,
//! with the version's user tags and no record. Without `overwrite`, the write is
//! conditional on the target not existing.

use super::write::{Source, Target};
use super::{CopyEngine, ItemFailure, ItemOutcome, Refusal};
use lakevault_common::error::FailureClass;
use lakevault_common::record::{normalise_etag, user_tags};
use lakevault_common::store::{BlobRef, BlobStore, Condition, Side, StorageErrorCode};
use lakevault_common::wire::{CopyBatch, CopyItem};

impl CopyEngine {
    pub(super) async fn restore_item(
        &self,
        batch: &CopyBatch,
        item: &CopyItem,
    ) -> Result<ItemOutcome, ItemFailure> {
        let backup = self.store(&batch.source.account)?;
        let target_store = self.store(&batch.destination.account)?;
        let target_name = format!(
            "{}{}",
            batch.destination_prefix.as_deref().unwrap_or_default(),
            item.name
        );
        let target_blob = BlobRef::new(&batch.destination.container, &target_name);
        let etag = normalise_etag(&item.etag);
        let source = Source {
            store: backup,
            blob: BlobRef::new(&batch.source.container, &item.name)
                .at_snapshot(item.snapshot.as_deref()),
            etag: &etag,
            size: item.size,
        };
        let tags = user_tags(&item.tags);
        let target = Target {
            store: target_store,
            blob: target_blob,
            tags: (!tags.is_empty()).then_some(&tags),
            // The target account's default tier.
            tier: None,
            condition: if batch.overwrite {
                Condition::None
            } else {
                Condition::IfAbsent
            },
        };
        // Blocks are staged before the conditional commit: check first, rather than
        // copy gigabytes to be refused.
        if !batch.overwrite
            && item.size > self.options.sync_copy_max
            && exists(target_store, target_blob).await?
        {
            return Ok(ItemOutcome::TargetExists);
        }
        match self.write(source, target).await {
            Ok(()) => Ok(ItemOutcome::Copied {
                bytes: item.size,
                source_etag: etag,
                kept_previous: false,
            }),
            Err(f) if f.has_service_code(StorageErrorCode::BlobAlreadyExists) => {
                Ok(ItemOutcome::TargetExists)
            }
            // A failed `If-None-Match: *` may come back as 412 ConditionNotMet, which the
            // emulator also uses for a failed source condition: the target tells which.
            Err(f)
                if !batch.overwrite
                    && f.has_service_code(StorageErrorCode::ConditionNotMet)
                    && exists(target_store, target_blob).await.unwrap_or(false) =>
            {
                Ok(ItemOutcome::TargetExists)
            }
            Err(f) if f.class == FailureClass::SourceChanged => Err(ItemFailure::refused(
                Refusal::RestoreSourceChanged,
                format!(
                    "the backup blob changed since the restore was planned (a backup ran meanwhile); plan the restore again: {}",
                    f.reason
                ),
            )),
            Err(f) => Err(f),
        }
    }
}

/// Whether a blob exists at the restore target.
async fn exists(store: &dyn BlobStore, blob: BlobRef<'_>) -> Result<bool, ItemFailure> {
    match store.properties(blob).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(ItemFailure::from_store(
            "checking the restore target",
            Side::Backup,
            &e,
        )),
    }
}
