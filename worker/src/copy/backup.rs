//! One backup item: what the backup holds decides whether to copy at all (already
//! current), whether to keep the version being replaced (history), and the copy follows
//! the source if it changed since planning, or stops if it is gone.

use super::lease::SourceLease;
use super::write::{Source, Target};
use super::{CopyEngine, ItemFailure, ItemOutcome, Refusal};
use lakevault_common::access::{PathAccess, kept_access};
use lakevault_common::error::FailureClass;
use lakevault_common::record::{BackupRecord, normalise_etag, parse_rfc3339, rfc3339, tag_set};
use lakevault_common::store::{BlobRef, BlobStore, Condition, Side, StorageErrorCode, StoreError};
use lakevault_common::wire::{CopyBatch, CopyItem, PlannedBackup};
use std::collections::BTreeMap;

/// Rounds of judge-and-write one item may take while the source or the backup keeps
/// changing under it; then it is tried again later.
const MAX_ROUNDS: usize = 4;

/// Source version being copied.
#[derive(Debug, Clone)]
struct SourceVersion {
    etag: String,
    size: u64,
    last_modified: String,
    /// The source's index tags when re-read during the copy; `None`: as planned.
    tags: Option<BTreeMap<String, String>>,
    /// An HNS path's access control, as the plan listed it (kept when the copy follows
    /// the source to a newer version: a read of the blob does not return it; the next full
    /// diff compares it again).
    access: Option<Box<PathAccess>>,
}

/// What the engine knows of the backup blob under an item's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Known {
    /// Nothing yet: read before writing.
    Unknown,
    /// No blob: the write is `If-None-Match: *`.
    Absent,
    /// A blob that does not hold the version being copied, with its ETag when known.
    Differs(Option<String>),
}

impl Known {
    fn planned(planned: &PlannedBackup) -> Self {
        match planned {
            PlannedBackup::Unknown => Known::Unknown,
            PlannedBackup::Absent => Known::Absent,
            PlannedBackup::Etag(e) => Known::Differs(Some(normalise_etag(e))),
        }
    }
}

/// What to do with the backup blob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// Nothing to write.
    Done(ItemOutcome),
    /// Create it: `If-None-Match: *`.
    Create,
    /// Replace the version it holds (with this ETag, when known).
    Replace(Option<String>),
}

/// How the version a backup record names compares with an immutable source version
/// (a source snapshot) about to be copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// The record names this very version.
    Same,
    /// The record names a version written after it: writing would go back in time.
    BackupNewer,
    /// The record names an older version.
    BackupOlder,
    /// Both were written in the same second (Last-Modified has whole seconds), or a time
    /// does not parse: only the source can tell.
    Unclear,
}

/// Compares a backup record with the version of a source snapshot.
pub(super) fn order(record: &BackupRecord, etag: &str, last_modified: &str) -> Order {
    if record.source_etag == etag {
        return Order::Same;
    }
    match (
        parse_rfc3339(&record.source_last_modified),
        parse_rfc3339(last_modified),
    ) {
        (Some(held), Some(ours)) if held > ours => Order::BackupNewer,
        (Some(held), Some(ours)) if held < ours => Order::BackupOlder,
        _ => Order::Unclear,
    }
}

/// Whether a failed write says that the backup or the source is not as judged: read both
/// again and decide again. The emulator answers a failed source condition with the
/// destination's code, so the two are not told apart here.
fn is_conflict(failure: &ItemFailure) -> bool {
    failure.class == FailureClass::SourceChanged
        || failure.has_service_code(StorageErrorCode::ConditionNotMet)
        || failure.has_service_code(StorageErrorCode::SourceConditionNotMet)
        || failure.has_service_code(StorageErrorCode::BlobAlreadyExists)
}

/// Whether the backup blob's tags keep the access control the plan saw (nothing to keep
/// on a flat source). A change of access control alone leaves the source's ETag as it was;
/// it is a change to back up all the same.
fn access_kept(access: Option<&PathAccess>, tags: &BTreeMap<String, String>) -> bool {
    access.is_none_or(|a| a.matches(&kept_access(tags)))
}

/// What reading the source directly says about a `CannotVerifyCopySource` (or a `404
/// BlobNotFound` answered to the copy).
enum Unreadable {
    /// Listed at planning time, gone now: deleted meanwhile.
    Gone,
    /// The source holds another version than the one copied now (deleted and written
    /// again while the copy read it): judged again, like a failed source condition.
    Changed,
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
        // Snapshot mode: the source snapshot has served its purpose once the item has a
        // final outcome (copied, already current, superseded, source gone). A failed
        // item keeps it: a retry or a re-drive copies from it.
        if result.is_ok()
            && let Some(snapshot) = item.snapshot.as_deref()
        {
            let source = self.store(&batch.source.account)?;
            let blob = BlobRef::new(&batch.source.container, &item.name);
            self.drop_source_snapshot(source, blob.at_snapshot(Some(snapshot)))
                .await?;
        }
        result
    }

    /// Copies one item, following the source if it changed since planning. Every write is
    /// conditional on the backup blob as judged (`If-Match` on its ETag, `If-None-Match: *`
    /// for a new one); a conflict means both sides are read again and judged again.
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
            access: item.access.clone(),
        };
        let mut known = Known::planned(&item.backup);
        // The backup ETag whose version this item already kept as a snapshot: kept once,
        // however many rounds the item takes.
        let mut kept: Option<String> = None;
        for _ in 0..MAX_ROUNDS {
            let decision = self
                .decide(source, source_blob, backup, backup_blob, &known, &version)
                .await?;
            let replace = match decision {
                Decision::Done(outcome) => return Ok(outcome),
                Decision::Create => None,
                Decision::Replace(etag) => Some(etag),
            };
            // Refused before anything is written when the record does not fit.
            match self.backup_tags(batch, item, &version) {
                Ok(_) => {}
                // The planned tags leave no room for the record. They may be stale (tags
                // change without a new ETag; a re-driven item carries its planning-time
                // tags): judge by the source's current tags once.
                Err(_) if version.tags.is_none() => {
                    version.tags =
                        Some(read_tags(source, source_blob, batch.source_hierarchical).await?);
                    self.backup_tags(batch, item, &version)?;
                }
                Err(refused) => return Err(refused),
            }
            let condition = match replace {
                None => Condition::IfAbsent,
                Some(etag) => {
                    match self
                        .replace_condition(backup, backup_blob, etag, &mut kept)
                        .await?
                    {
                        Some(condition) => condition,
                        // Another writer got there first, likely with a newer version.
                        None => {
                            if !follow_source(
                                source,
                                source_blob,
                                &mut version,
                                batch.source_hierarchical,
                            )
                            .await?
                            {
                                return Ok(ItemOutcome::SourceGone);
                            }
                            known = Known::Unknown;
                            continue;
                        }
                    }
                }
            };
            // Stamped once the version it replaces was kept and the condition taken: any
            // write that landed before is then older, so backup times follow the order the
            // writes land in (a restore as of now takes the base blob, and purge ages a
            // kept version from the next one's backup time).
            let tags = self.backup_tags(batch, item, &version)?;
            let copy_source = Source {
                store: source,
                blob: source_blob,
                etag: &version.etag,
                size: version.size,
            };
            let target = Target {
                store: backup,
                blob: backup_blob,
                tags: Some(&tags),
                tier: self.options.access_tier.clone(),
                condition,
            };
            let failure = match self.write(copy_source, target.clone()).await {
                Ok(()) => {
                    return Ok(ItemOutcome::Copied {
                        bytes: version.size,
                        source_etag: version.etag,
                        kept_previous: kept.is_some(),
                    });
                }
                Err(f) => f,
            };
            // Before `SourceMissing`: a 404 CannotVerifyCopySource only says the backup
            // service could not read the source, which is not proof the blob is gone. A
            // 404 BlobNotFound of the write names no side either: Azurite answers it for
            // a source deleted between its check of the source and the copy, and it can
            // be about the backup blob the condition named. Only a read of the source
            // tells.
            let not_found = failure.has_service_code(StorageErrorCode::BlobNotFound);
            if not_found || failure.has_service_code(StorageErrorCode::CannotVerifyCopySource) {
                match diagnose_unreadable_source(source, source_blob, &version.etag, failure)
                    .await?
                {
                    Unreadable::Gone => return Ok(ItemOutcome::SourceGone),
                    // Replaced while the service read it: judged again below.
                    Unreadable::Changed => {}
                    // The source is there at this version: the 404 was the backup
                    // blob's (removed since it was read), judged again below.
                    Unreadable::ByServiceOnly(_) if not_found => {}
                    Unreadable::ByServiceOnly(f) if !self.options.stream_fallback => {
                        return Err(f);
                    }
                    Unreadable::ByServiceOnly(_) => {
                        let bytes = self.stream_copy(copy_source, target).await?;
                        return Ok(ItemOutcome::Copied {
                            bytes,
                            source_etag: version.etag,
                            kept_previous: kept.is_some(),
                        });
                    }
                }
            } else if is_conflict(&failure) {
                tracing::debug!(blob = %item.name, reason = %failure.reason, "conflict; reading source and backup again");
            } else {
                return match failure.class {
                    FailureClass::SourceMissing => Ok(ItemOutcome::SourceGone),
                    _ => Err(failure),
                };
            };
            // The source or the backup changed: read both again and judge again.
            if !follow_source(source, source_blob, &mut version, batch.source_hierarchical).await? {
                return Ok(ItemOutcome::SourceGone);
            }
            known = Known::Unknown;
        }
        Err(ItemFailure {
            code: Some(super::FailureCode::Refusal(Refusal::SourceKeptChanging)),
            ..ItemFailure::new(
                FailureClass::Transient,
                format!(
                    "source or backup changed {MAX_ROUNDS} times while being copied; tried again later"
                ),
            )
        })
    }

    /// What to do with the backup blob, reading it when the plan did not say.
    async fn decide(
        &self,
        source: &dyn BlobStore,
        source_blob: BlobRef<'_>,
        backup: &dyn BlobStore,
        backup_blob: BlobRef<'_>,
        known: &Known,
        version: &SourceVersion,
    ) -> Result<Decision, ItemFailure> {
        let access = version.access.as_deref();
        let read_failed =
            |e: &StoreError| ItemFailure::from_store("reading the backup blob", Side::Backup, e);
        match known {
            Known::Absent => Ok(Decision::Create),
            Known::Differs(etag) => Ok(Decision::Replace(etag.clone())),
            // A live source is copied under `x-ms-source-if-match`, so what lands is its
            // current version, never older than anything copied before: the record only
            // says whether there is anything to do (one Get Blob Tags request).
            Known::Unknown if source_blob.snapshot.is_none() => {
                match backup.tags(backup_blob).await {
                    Ok(tags) => Ok(match BackupRecord::from_tags(&tags) {
                        Some(r)
                            if r.deleted_at.is_none()
                                && r.source_etag == version.etag
                                && access_kept(access, &tags) =>
                        {
                            Decision::Done(ItemOutcome::AlreadyCurrent)
                        }
                        _ => Decision::Replace(None),
                    }),
                    Err(e) if e.is_not_found() => Ok(Decision::Create),
                    Err(e) => Err(read_failed(&e)),
                }
            }
            // A source snapshot may be older than what the backup holds now (a re-driven
            // item, a slow worker): the ETag, then the record of that ETag or a newer one,
            // and the two versions compared.
            Known::Unknown => {
                let etag = match backup.properties(backup_blob).await {
                    Ok(p) => p.etag,
                    Err(e) if e.is_not_found() => return Ok(Decision::Create),
                    Err(e) => return Err(read_failed(&e)),
                };
                let tags = match backup.tags(backup_blob).await {
                    Ok(tags) => tags,
                    Err(e) if e.is_not_found() => return Ok(Decision::Create),
                    Err(e) => return Err(read_failed(&e)),
                };
                let Some(record) = BackupRecord::from_tags(&tags) else {
                    return Ok(Decision::Replace(Some(etag)));
                };
                Ok(
                    match order(&record, &version.etag, &version.last_modified) {
                        Order::Same
                            if record.deleted_at.is_none() && access_kept(access, &tags) =>
                        {
                            Decision::Done(ItemOutcome::AlreadyCurrent)
                        }
                        // The same content, its access control changed since.
                        Order::Same if record.deleted_at.is_none() => Decision::Replace(Some(etag)),
                        // Marked deleted since: not brought back from an old snapshot.
                        Order::Same | Order::BackupNewer => Decision::Done(ItemOutcome::Superseded),
                        Order::BackupOlder => Decision::Replace(Some(etag)),
                        // The source's current version settles it when it is one of the
                        // two; when it is a third, newer one, neither is known to be the
                        // newer: tried again later, once the newest is backed up.
                        Order::Unclear => match read_source(source, source_blob).await? {
                            Some(live) if live.etag == version.etag => {
                                Decision::Replace(Some(etag))
                            }
                            Some(live) if live.etag == record.source_etag => {
                                Decision::Done(ItemOutcome::Superseded)
                            }
                            None => Decision::Done(ItemOutcome::SourceGone),
                            Some(_) => {
                                return Err(ItemFailure {
                                    code: Some(super::FailureCode::Refusal(
                                        Refusal::VersionOrderUnclear,
                                    )),
                                    ..ItemFailure::new(
                                        FailureClass::Transient,
                                        "the backup holds another version written in the same second as this snapshot, and the source has moved on: tried again once the newest version is backed up",
                                    )
                                });
                            }
                        },
                    },
                )
            }
        }
    }

    /// The condition of the write that replaces the backup blob (`etag`: as judged, when
    /// known), after keeping the version it holds as a snapshot when history is kept.
    /// `None`: the blob changed meanwhile; judge again.
    async fn replace_condition(
        &self,
        backup: &dyn BlobStore,
        blob: BlobRef<'_>,
        etag: Option<String>,
        kept: &mut Option<String>,
    ) -> Result<Option<Condition>, ItemFailure> {
        let keep_failed = |e: &StoreError| {
            ItemFailure::from_store("snapshotting the previous backup", Side::Backup, e)
        };
        let history = self.options.keep_history;
        let etag = match etag {
            Some(etag) => etag,
            // Snapshot Blob answers with the ETag of the version it kept: one request keeps
            // it and gives the condition. (Only for a live source: see `decide`.)
            None if history && kept.is_none() => {
                return match backup.snapshot(blob, Condition::None).await {
                    Ok(taken) => {
                        *kept = Some(taken.etag.clone());
                        Ok(Some(Condition::IfMatch(taken.etag)))
                    }
                    Err(e) if e.is_not_found() => Ok(Some(Condition::IfAbsent)),
                    Err(e) => Err(keep_failed(&e)),
                };
            }
            None => match backup.properties(blob).await {
                Ok(p) => p.etag,
                Err(e) if e.is_not_found() => return Ok(Some(Condition::IfAbsent)),
                Err(e) => {
                    return Err(ItemFailure::from_store(
                        "reading the backup blob",
                        Side::Backup,
                        &e,
                    ));
                }
            },
        };
        if history && kept.as_deref() != Some(etag.as_str()) {
            match backup
                .snapshot(blob, Condition::IfMatch(etag.clone()))
                .await
            {
                Ok(_) => *kept = Some(etag.clone()),
                Err(e) if e.is_not_found() || e.is_condition_not_met() => return Ok(None),
                Err(e) => return Err(keep_failed(&e)),
            }
        }
        Ok(Some(Condition::IfMatch(etag)))
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
            backed_up_at: rfc3339(self.clock.now()),
            job: batch.job.clone(),
            deleted_at: None,
            history_in_versions: !self.options.keep_history,
        };
        let none = BTreeMap::new();
        let user = if self.options.copy_tags {
            version.tags.as_ref().unwrap_or(&item.tags)
        } else {
            &none
        };
        tag_set(user, &record, version.access.as_deref())
            .map_err(|e| ItemFailure::refused(Refusal::NoRoomForRecord, e.to_string()))
    }

    /// Snapshot mode: deletes the source snapshot taken for an item, after its copy. Until
    /// it is gone the item is not final (I6): a snapshot left on the production lake holds
    /// storage and makes the lake's own deletes fail with `SnapshotsPresent`. A failure
    /// fails the item, classified as usual (an outage waits; a denied delete is a
    /// credential problem); its next try finds the backup current and deletes it then.
    async fn drop_source_snapshot(
        &self,
        source: &dyn BlobStore,
        blob: BlobRef<'_>,
    ) -> Result<(), ItemFailure> {
        if blob.snapshot.is_none() || !self.options.delete_source_snapshots {
            return Ok(());
        }
        match source.delete(blob, Condition::None, false).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(ItemFailure::from_store(
                "deleting the source snapshot the item was copied from (snapshot mode needs \
                 the `d` permission on the source)",
                Side::Source,
                &e,
            )),
        }
    }
}

/// After a conflict: a live source is followed to its current version (a snapshot cannot
/// change). `false`: the source is gone.
async fn follow_source(
    source: &dyn BlobStore,
    blob: BlobRef<'_>,
    version: &mut SourceVersion,
    hierarchical: bool,
) -> Result<bool, ItemFailure> {
    if blob.snapshot.is_some() {
        return Ok(true);
    }
    match read_source(source, blob).await? {
        Some(current) if current.etag == version.etag => {}
        Some(mut current) => {
            // The planned tags belong to the old version.
            current.tags = Some(read_tags(source, blob, hierarchical).await?);
            current.access = version.access.take();
            *version = current;
        }
        None => return Ok(false),
    }
    Ok(true)
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
            access: None,
        })),
        Err(e) if e.class(Side::Source) == FailureClass::SourceMissing => Ok(None),
        Err(e) => Err(ItemFailure::from_store(
            "reading source properties",
            Side::Source,
            &e,
        )),
    }
}

/// The source's current index tags; none, without a request, on an account with a
/// hierarchical namespace (`hierarchical`), which has no index tags and refuses the read.
async fn read_tags(
    source: &dyn BlobStore,
    blob: BlobRef<'_>,
    hierarchical: bool,
) -> Result<BTreeMap<String, String>, ItemFailure> {
    if hierarchical {
        return Ok(BTreeMap::new());
    }
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
    copied_etag: &str,
    failure: ItemFailure,
) -> Result<Unreadable, ItemFailure> {
    // The very version the copy read: a source snapshot can be gone while the blob lives
    // on (deleted with its snapshots, then written again). A blob that is there with
    // another ETag was replaced while the copy read it: not a path the service cannot take.
    let direct = match source.properties(blob).await {
        Ok(p) if normalise_etag(&p.etag) != normalise_etag(copied_etag) => {
            return Ok(Unreadable::Changed);
        }
        Ok(_) => Ok(Some(())),
        Err(e) if e.class(Side::Source) == FailureClass::SourceMissing => Ok(None),
        Err(e) => Err(ItemFailure::from_store(
            "reading the source directly",
            Side::Source,
            &e,
        )),
    };
    match direct {
        Ok(None) => Ok(Unreadable::Gone),
        Ok(Some(())) => Ok(Unreadable::ByServiceOnly(ItemFailure {
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
