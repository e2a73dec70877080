//! Restore items: a backed-up version (a snapshot of the backup blob, or the base blob at
//! its planned ETag) written to the target through the same request builder as a backup,
//! with the version's user tags and no record. Without `overwrite`, the write is
//! conditional on the target not existing.
//!
//! Into an account with a hierarchical namespace, an item recorded as a directory is
//! created with Path - Create on the dfs endpoint (an empty directory is an entry of its
//! own), and with `apply_access` every path written gets the owner, group and ACL recorded
//! with its version (Path - Update `setAccessControl`), so nothing is left to inheritance
//! from whichever parent happened to exist first. A directory is not data: its recorded
//! access control is set even when it already existed (the restore of a file below it may
//! have created it first, with inherited entries); a file that existed is left alone, as
//! without ACLs.

use super::write::{Source, Target};
use super::{CopyEngine, ItemFailure, ItemOutcome, Refusal};
use lakevault_common::access::PathAccess;
use lakevault_common::error::FailureClass;
use lakevault_common::record::{normalise_etag, user_tags};
use lakevault_common::store::{
    AccessControl, BlobRef, BlobStore, Condition, Side, StorageErrorCode, StoreError,
};
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
        let access = item.access.as_deref();
        if access.is_some_and(|a| a.directory) {
            // A directory that exists is the directory, overwrite or not; a file in its
            // place (409 `ResourceTypeMismatch`) is not replaced by one.
            let outcome = match target_store
                .create_directory(target_blob, Condition::IfAbsent)
                .await
            {
                Ok(()) => ItemOutcome::Copied {
                    bytes: 0,
                    source_etag: etag.clone(),
                    kept_previous: false,
                },
                Err(e) if e.code_str() == Some("PathAlreadyExists") => ItemOutcome::TargetExists,
                Err(e) => {
                    return Err(ItemFailure::from_store(
                        "creating the directory (dfs Path - Create)",
                        Side::Backup,
                        &e,
                    ));
                }
            };
            if batch.apply_access
                && let Some(access) = access
            {
                set_access(target_store, target_blob, access).await?;
            }
            return Ok(outcome);
        }
        // Blocks are staged before the conditional commit: check first, rather than
        // copy gigabytes to be refused.
        let outcome = if !batch.overwrite
            && item.size > self.options.sync_copy_max
            && exists(target_store, target_blob).await?
        {
            ItemOutcome::TargetExists
        } else {
            self.write_version(batch, source, target).await?
        };
        if batch.apply_access
            && let Some(access) = access
        {
            let ours = match &outcome {
                ItemOutcome::Copied { .. } => true,
                // A try before this one may have written it and failed to set its ACL:
                // the same content as the version restored is taken as that write.
                ItemOutcome::TargetExists => {
                    same_content(source.store, source.blob, target_store, target_blob).await?
                }
                _ => false,
            };
            if ours {
                set_access(target_store, target_blob, access).await?;
            }
        }
        Ok(outcome)
    }

    /// Writes the version to the target: `Copied`, or `TargetExists` without overwrite.
    async fn write_version(
        &self,
        batch: &CopyBatch,
        source: Source<'_>,
        target: Target<'_>,
    ) -> Result<ItemOutcome, ItemFailure> {
        let (etag, size) = (source.etag.to_string(), source.size);
        let (target_store, target_blob) = (target.store, target.blob);
        match self.write(source, target).await {
            Ok(()) => Ok(ItemOutcome::Copied {
                bytes: size,
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

/// Sets the recorded owner, group and ACL on a restored path. A target that refuses the
/// owner (setting one takes super-user rights: the Storage Blob Data Owner role) still gets
/// the ACL, and the item fails with a reason that says so; the data stays where it landed.
async fn set_access(
    store: &dyn BlobStore,
    blob: BlobRef<'_>,
    access: &PathAccess,
) -> Result<(), ItemFailure> {
    let failed = |e: &StoreError| {
        ItemFailure::from_store(
            "setting the recorded access control (dfs setAccessControl)",
            Side::Backup,
            e,
        )
    };
    let full = AccessControl {
        owner: Some(&access.owner)
            .filter(|o| !o.is_empty())
            .map(|o| o.as_str()),
        group: Some(&access.group)
            .filter(|g| !g.is_empty())
            .map(|g| g.as_str()),
        acl: &access.acl,
    };
    match store.set_access_control(blob, &full).await {
        Ok(()) => Ok(()),
        Err(e) if e.status == Some(403) && (full.owner.is_some() || full.group.is_some()) => {
            let acl_only = AccessControl {
                owner: None,
                group: None,
                acl: &access.acl,
            };
            // Refused again: the identity may not change access control at all, which is
            // a credential problem like any other 403.
            store
                .set_access_control(blob, &acl_only)
                .await
                .map_err(|e| failed(&e))?;
            Err(ItemFailure::refused(
                Refusal::OwnerNotRestored,
                format!(
                    "restored with its ACL, but the target refused owner `{}` and group `{}` (HTTP 403 {}): setting an owner takes super-user rights on the target (the Storage Blob Data Owner role, or the owning user for the group); grant them and restore again with --overwrite, or restore with --no-acls",
                    access.owner,
                    access.group,
                    e.code_str().unwrap_or("without a code")
                ),
            ))
        }
        Err(e) => Err(failed(&e)),
    }
}

/// Whether the target holds the content of the backup version (size and Content-MD5;
/// without an MD5 on both sides it cannot be told, and the target is left alone).
async fn same_content(
    backup: &dyn BlobStore,
    version: BlobRef<'_>,
    target: &dyn BlobStore,
    blob: BlobRef<'_>,
) -> Result<bool, ItemFailure> {
    let read = |side: Side, what: &'static str| {
        move |e: StoreError| ItemFailure::from_store(what, side, &e)
    };
    let ours = backup
        .properties(version)
        .await
        .map_err(read(Side::Source, "reading the backup version"))?;
    let theirs = target
        .properties(blob)
        .await
        .map_err(read(Side::Backup, "reading the restore target"))?;
    Ok(ours.size == theirs.size
        && ours.headers.content_md5.is_some()
        && ours.headers.content_md5 == theirs.headers.content_md5)
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
