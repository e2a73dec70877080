//! One backup item: what the backup holds decides whether to copy at all (already
//! current), whether to keep the version being replaced (history), and the copy follows
//! the source if it changed since planning, or stops if it is gone.

use super::lease::SourceLease;
use super::write::{Source, Target};
use super::{CopyEngine, ItemFailure, ItemOutcome, Refusal};
use lakevault_common::error::FailureClass;
use lakevault_common::record::{BackupRecord, normalise_etag, rfc3339, tag_set};
use lakevault_common::store::{BlobRef, BlobStore, Condition, Side, StorageErrorCode};
use lakevault_common::wire::{CopyBatch, CopyItem};
use std::collections::BTreeMap;

/// A blob rewritten continuously could change under every attempt; give up after a few.
const MAX_SOURCE_CHANGES: usize = 3;

/// Source version being copied.
#[derive(Debug, Clone)]
struct SourceVersion {
    etag: String,
    size: u64,
    last_modified: String,
    /// The source's index tags when re-read during the copy; `None`: as planned.
    tags: Option<BTreeMap<String, String>>,
}

/// What the backup holds under an item's name before the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BackupState {
    Missing,
    /// A live lakevault record naming this source ETag.
    Holds(String),
    /// A blob without a live record (tombstoned, or not written by lakevault).
    Unrecorded,
}

/// Reads the backup blob's record (one Get Blob Tags request).
pub(super) async fn backup_state(
    backup: &dyn BlobStore,
    blob: BlobRef<'_>,
) -> Result<BackupState, ItemFailure> {
    match backup.tags(blob).await {
        Ok(tags) => Ok(match BackupRecord::from_tags(&tags) {
            Some(r) if r.deleted_at.is_none() => BackupState::Holds(r.source_etag),
            _ => BackupState::Unrecorded,
        }),
        Err(e) if e.is_not_found() => Ok(BackupState::Missing),
        Err(e) => Err(ItemFailure::from_store(
            "reading the backup blob's record",
            Side::Backup,
            &e,
        )),
    }
}

/// What reading the source directly says about a `CannotVerifyCopySource`.
enum Unreadable {
    /// Listed at planning time, gone now: deleted meanwhile.
    Gone,
    /// The worker can read it, the backup service cannot: this blob, or the network path
    /// between the services. The failure explains it.
    ByServiceOnly(ItemFailure),
}

impl CopyEngine {
    /// A backup item, in lease mode under a lease on the source.
    pub(super) async fn backup_item(
        &self,
        batch: &CopyBatch,
        item: &CopyItem,
    ) -> Result<ItemOutcome, ItemFailure> {
        // Lease mode: no writer that honours leases can change the blob while it is read.
        // A snapshot is immutable and needs none.
        let lease = if batch.lease && item.snapshot.is_none() {
            let store = self.shared_store(&batch.source.account)?;
            let blob = BlobRef::new(&batch.source.container, &item.name);
            match SourceLease::acquire(store, blob, self.options.lease_duration).await? {
                Some(lease) => Some(lease),
                None => return Ok(ItemOutcome::SourceGone),
            }
        } else {
            None
        };
        let result = self.copy_following_source(batch, item).await;
        if let Some(lease) = lease {
            lease.release().await;
        }
        result
    }

    /// Copies one item, following the source if it changed since planning.
    async fn copy_following_source(
        &self,
        batch: &CopyBatch,
        item: &CopyItem,
    ) -> Result<ItemOutcome, ItemFailure> {
        let source = self.store(&batch.source.account)?;
        let backup = self.store(&batch.destination.account)?;
        let source_blob =
            BlobRef::new(&batch.source.container, &item.name).at_snapshot(item.snapshot.as_deref());
        let backup_blob = BlobRef::new(&batch.destination.container, &item.name);
        let mut version = SourceVersion {
            etag: normalise_etag(&item.etag),
            size: item.size,
            last_modified: item.last_modified.clone(),
            tags: None,
        };
        let mut kept_previous = false;
        let mut state = backup_state(backup, backup_blob).await?;
        for _ in 0..MAX_SOURCE_CHANGES {
            match &state {
                BackupState::Missing => {}
                BackupState::Holds(etag) if *etag == version.etag => {
                    return Ok(ItemOutcome::AlreadyCurrent);
                }
                BackupState::Holds(_) | BackupState::Unrecorded if self.options.keep_history => {
                    keep_previous(backup, backup_blob).await?;
                    kept_previous = true;
                    // Kept once; a retry against a newer source version overwrites what
                    // this attempt may have written, not an older backup.
                    state = BackupState::Missing;
                }
                BackupState::Holds(_) | BackupState::Unrecorded => {}
            }
            let copy_source = Source {
                store: source,
                blob: source_blob,
                etag: &version.etag,
                size: version.size,
            };
            let tags = self.backup_tags(batch, item, &version);
            let written = match &tags {
                Ok(tags) => {
                    let target = Target {
                        store: backup,
                        blob: backup_blob,
                        tags: Some(tags),
                        tier: self.options.access_tier.clone(),
                        condition: Condition::None,
                    };
                    self.write(copy_source, target).await
                }
                Err(refused) => Err(refused.clone()),
            };
            let failure = match written {
                Ok(()) => {
                    self.drop_source_snapshot(source, source_blob).await;
                    return Ok(ItemOutcome::Copied {
                        bytes: version.size,
                        source_etag: version.etag,
                        kept_previous,
                    });
                }
                Err(f) => f,
            };
            // Before `SourceMissing`: a 404 CannotVerifyCopySource only says the backup
            // service could not read the source, which is not proof the blob is gone.
            if failure.has_service_code(StorageErrorCode::CannotVerifyCopySource) {
                return match diagnose_unreadable_source(source, source_blob, failure).await? {
                    Unreadable::Gone => Ok(ItemOutcome::SourceGone),
                    Unreadable::ByServiceOnly(f) if !self.options.stream_fallback => Err(f),
                    Unreadable::ByServiceOnly(_) => {
                        let tags = tags?;
                        let target = Target {
                            store: backup,
                            blob: backup_blob,
                            tags: Some(&tags),
                            tier: self.options.access_tier.clone(),
                            condition: Condition::None,
                        };
                        let bytes = self.stream_copy(copy_source, target).await?;
                        Ok(ItemOutcome::Copied {
                            bytes,
                            source_etag: version.etag,
                            kept_previous,
                        })
                    }
                };
            }
            match failure.class {
                FailureClass::SourceMissing => return Ok(ItemOutcome::SourceGone),
                // The planned tags leave no room for the record. They may be stale (tags
                // change without a new ETag; a re-driven item carries its planning-time
                // tags): judge by the source's current tags once.
                _ if failure.is(Refusal::NoRoomForRecord) && version.tags.is_none() => {
                    version.tags = Some(read_tags(source, source_blob).await?);
                }
                FailureClass::SourceChanged => {
                    tracing::debug!(blob = %item.name, "source changed during copy; copying the newer version");
                    match read_source(source, source_blob).await? {
                        Some(mut v) => {
                            // The planned tags belong to the old version.
                            v.tags = Some(read_tags(source, source_blob).await?);
                            version = v;
                        }
                        None => return Ok(ItemOutcome::SourceGone),
                    }
                }
                _ => return Err(failure),
            }
        }
        Err(ItemFailure {
            code: Some(super::FailureCode::Refusal(Refusal::SourceKeptChanging)),
            ..ItemFailure::new(
                FailureClass::Transient,
                format!("source changed {MAX_SOURCE_CHANGES} times while being copied"),
            )
        })
    }

    /// The backup blob's tags: the source's user tags (as re-read, or as planned; none
    /// with `copy_tags` off) and the record naming the version copied.
    fn backup_tags(
        &self,
        batch: &CopyBatch,
        item: &CopyItem,
        version: &SourceVersion,
    ) -> Result<BTreeMap<String, String>, ItemFailure> {
        let record = BackupRecord {
            source_etag: version.etag.clone(),
            source_last_modified: version.last_modified.clone(),
            backed_up_at: rfc3339(time::OffsetDateTime::now_utc()),
            job: batch.job.clone(),
            deleted_at: None,
        };
        let none = BTreeMap::new();
        let user = if self.options.copy_tags {
            version.tags.as_ref().unwrap_or(&item.tags)
        } else {
            &none
        };
        tag_set(user, &record)
            .map_err(|e| ItemFailure::refused(Refusal::NoRoomForRecord, e.to_string()))
    }

    /// Snapshot mode: deletes the source snapshot taken for an item, after its copy. Best
    /// effort: a snapshot left behind costs storage, not correctness.
    async fn drop_source_snapshot(&self, source: &dyn BlobStore, blob: BlobRef<'_>) {
        let Some(snapshot) = blob.snapshot else {
            return;
        };
        if !self.options.delete_source_snapshots {
            return;
        }
        match source.delete(blob, Condition::None, false).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(blob = %blob.name, %snapshot, error = %e, "source snapshot not deleted")
            }
        }
    }
}

/// Keeps the backup blob's current version as a snapshot (content, properties and
/// metadata of its time) before it is overwritten.
async fn keep_previous(backup: &dyn BlobStore, blob: BlobRef<'_>) -> Result<(), ItemFailure> {
    match backup.snapshot(blob).await {
        Ok(_) => Ok(()),
        // Gone meanwhile: nothing to keep.
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(ItemFailure::from_store(
            "snapshotting the previous backup",
            Side::Backup,
            &e,
        )),
    }
}

/// The source's current version (of the base blob), or `None` if it no longer exists.
async fn read_source(
    source: &dyn BlobStore,
    blob: BlobRef<'_>,
) -> Result<Option<SourceVersion>, ItemFailure> {
    match source.properties(blob.at_snapshot(None)).await {
        Ok(p) => Ok(Some(SourceVersion {
            etag: p.etag,
            size: p.size,
            last_modified: p.last_modified,
            tags: None,
        })),
        Err(e) if e.class(Side::Source) == FailureClass::SourceMissing => Ok(None),
        Err(e) => Err(ItemFailure::from_store(
            "reading source properties",
            Side::Source,
            &e,
        )),
    }
}

/// The source's current index tags.
async fn read_tags(
    source: &dyn BlobStore,
    blob: BlobRef<'_>,
) -> Result<BTreeMap<String, String>, ItemFailure> {
    source.tags(blob.at_snapshot(None)).await.map_err(|e| {
        ItemFailure::from_store(
            "reading source index tags (needs the `t` permission)",
            Side::Source,
            &e,
        )
    })
}

/// The backup service could not read the source (`CannotVerifyCopySource`). Whether that
/// is a credential problem (stop: every copy will fail) or about this blob or the network
/// path between the services is told by reading the source directly with the worker's own
/// credential.
async fn diagnose_unreadable_source(
    source: &dyn BlobStore,
    blob: BlobRef<'_>,
    failure: ItemFailure,
) -> Result<Unreadable, ItemFailure> {
    match read_source(source, blob).await {
        Ok(None) => Ok(Unreadable::Gone),
        Ok(Some(_)) => Ok(Unreadable::ByServiceOnly(ItemFailure {
            class: FailureClass::Permanent,
            reason: format!(
                "the backup service cannot read this source blob although the worker can \
                 (a firewall or private endpoint between the accounts, or a name the source \
                 will not authorise by SAS; `--stream-fallback` copies through the worker): {}",
                failure.reason
            ),
            code: failure.code,
        })),
        Err(direct) if direct.class == FailureClass::Auth => Err(failure),
        Err(direct) => Err(direct),
    }
}
