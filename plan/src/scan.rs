//! Scanning: list one shard of a container on both sides, diff, and enqueue copy batches.
//! The coordinator runs this for its own shards, and workers run the very same code for
//! scan tasks, so a plan does not depend on who scanned.

use crate::diff::{Change, DiffError, changes, cmp_names};
use crate::hns::{ContainerDirectories, WalkError, walk_in_flat_order};
use crate::listing::{Include, LevelEntry, ListedBlob, Lister, MAX_PAGE_SIZE};
use crate::shard::{self, MAX_CHILDREN};
use azure_storage_blob::models::BlobClientCreateSnapshotResultHeaders;
use futures::TryStreamExt;
use futures::stream::BoxStream;
use lakevault_common::error::{FailureClass, classify, describe};
use lakevault_common::ledger::ScanCounts;
use lakevault_common::progress::Progress;
use lakevault_common::queue::WorkQueue;
use lakevault_common::record::{BackupRecord, normalise_etag, rfc3339};
use lakevault_common::select::BlobFilter;
use lakevault_common::storage::StorageAccount;
use lakevault_common::wire::{
    BatchBuilder, CopyBatch, CopyItem, Location, MAX_MESSAGE_BYTES, MessageKind, PlannedBackup,
    Shard, WIRE_VERSION, pack,
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where a scan reads and writes.
#[derive(Clone, Copy)]
pub struct Accounts<'a> {
    pub source: &'a StorageAccount,
    pub destination: &'a StorageAccount,
    pub queue: &'a dyn WorkQueue,
}

impl std::fmt::Debug for Accounts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("source", &self.source.alias)
            .field("destination", &self.destination.alias)
            .field("queue", &self.queue.name())
            .finish()
    }
}

/// Everything that decides what a container's scan plans. Built by the coordinator from
/// its options, or by a worker from a scan task.
#[derive(Debug, Clone)]
pub struct ContainerScan {
    pub job: String,
    /// Account aliases, as written into copy batches.
    pub source_alias: String,
    pub destination_alias: String,
    pub container: String,
    pub destination_container: String,
    pub filter: BlobFilter,
    /// Incremental: only blobs modified after this time, and no backup listing.
    pub modified_since: Option<time::OffsetDateTime>,
    pub snapshot: bool,
    pub lease: bool,
    /// The source account has a hierarchical namespace (ADLS Gen2): it is walked directory
    /// by directory into the flat order the backup lists in, without index tags.
    pub source_hierarchical: bool,
    pub max_tombstones: u64,
    /// Blob names to keep as a sample of what is copied.
    pub sample: usize,
    pub dry_run: bool,
    /// Whether the backup container exists (it lists as empty if not, e.g. in a dry run).
    pub backup_exists: bool,
    /// Counts every blob compared (the coordinator's terminal bar; hidden in workers).
    pub progress: Progress,
    /// Entries per listing page (`None`: 5,000). Shards scanned side by side share one
    /// page budget ([`page_size_for`]), so memory does not grow with parallelism.
    pub page_size: Option<u32>,
    /// Stops the scan between two entries (shutdown). What was enqueued stays valid.
    pub cancel: CancellationToken,
}

/// Listing entries that shards scanned side by side hold at once, per side: four full
/// pages. With pages kept compactly ([`crate::page`], about 250 bytes an entry) that is a
/// few MiB, and it is what lets two shards list full pages with their next page read
/// ahead, which a service that pays a latency per page needs: a listing's pages come one
/// after the other (each needs the marker of the one before), so every halving of the
/// page doubles the time a shard takes.
pub const ENTRIES_IN_FLIGHT: u32 = 4 * MAX_PAGE_SIZE;

/// The listing page size for `parallel` listings at once in one process, each holding
/// its current page and the one read ahead: together they hold [`ENTRIES_IN_FLIGHT`]
/// entries per side, so memory does not grow with parallelism, nor as shards fill up
/// their pages. Floor 500 entries a page, so requests per blob stay bounded; one or two
/// listings use full pages.
pub fn page_size_for(parallel: usize) -> Option<u32> {
    match parallel {
        0 | 1 => None,
        n => {
            let pages = u32::try_from(n).unwrap_or(u32::MAX / 2).saturating_mul(2);
            Some((ENTRIES_IN_FLIGHT / pages).clamp(500, MAX_PAGE_SIZE))
        }
    }
}

impl ContainerScan {
    fn header(&self, kind: MessageKind) -> CopyBatch {
        CopyBatch {
            v: WIRE_VERSION,
            kind,
            job: self.job.clone(),
            attempt: 0,
            source: Location {
                account: self.source_alias.clone(),
                container: self.container.clone(),
            },
            destination: Location {
                account: self.destination_alias.clone(),
                container: self.destination_container.clone(),
            },
            lease: self.lease && kind == MessageKind::Copy,
            destination_prefix: None,
            overwrite: false,
            items: Vec::new(),
            handed_back: 0,
            waits: 0,
            source_hierarchical: self.source_hierarchical,
            apply_access: false,
            carried: Default::default(),
        }
    }

    /// Whether the backup side is listed (full scans of an existing backup container).
    fn lists_backup(&self) -> bool {
        self.backup_exists && self.modified_since.is_none()
    }

    /// The roots the shards split: the container, or each include prefix.
    pub fn roots(&self) -> Vec<String> {
        self.filter
            .listing_prefixes()
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect()
    }
}

/// What scanning one shard found. Copies are already enqueued; tombstones are held for
/// the container's decision against `max_tombstones`.
#[derive(Debug, Clone, Default)]
pub struct ShardScan {
    pub counts: ScanCounts,
    pub sample: Vec<String>,
    /// Source deletions with a live record. Emptied once this shard alone crosses the cap.
    pub tombstones: Vec<CopyItem>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("listing: {message}")]
    Listing {
        class: FailureClass,
        message: String,
    },
    #[error(transparent)]
    Diff(#[from] DiffError),
    /// A snapshot or an enqueue failed, classified like the request that failed.
    #[error("{message}")]
    Write {
        class: FailureClass,
        message: String,
    },
    #[error(transparent)]
    Account(#[from] lakevault_common::storage::AccountError),
    /// Stopped by shutdown; not a failure of the shard.
    #[error("scan stopped by shutdown")]
    Cancelled,
}

impl ScanError {
    /// Whether trying again may help (for scan tasks run by workers).
    pub fn class(&self) -> FailureClass {
        match self {
            ScanError::Listing { class, .. } => *class,
            ScanError::Diff(DiffError::Listing(e)) => classify(e),
            ScanError::Write { class, .. } => *class,
            ScanError::Cancelled => FailureClass::Transient,
            ScanError::Diff(DiffError::OutOfOrder { .. }) | ScanError::Account(_) => {
                FailureClass::Permanent
            }
        }
    }
}

pub fn listing_error(e: azure_core::Error) -> ScanError {
    ScanError::Listing {
        class: classify(&e),
        message: describe(&e),
    }
}

/// The blobs of one shard, in the flat listing order. An account with a hierarchical
/// namespace (`hierarchical`) has no index tags, and its whole-prefix shards are walked
/// directory by directory into that order ([`crate::hns`]); within one level both kinds of
/// account list blobs in the same order.
fn shard_listing(
    lister: &Lister,
    shard: &Shard,
    page_size: Option<u32>,
    hierarchical: bool,
) -> BoxStream<'static, azure_core::Result<ListedBlob>> {
    // Index tags on a flat account; access control on a hierarchical one, which has no tags.
    let include = if hierarchical {
        Include::Permissions
    } else {
        Include::Tags
    };
    if hierarchical && !shard.level {
        let directories = ContainerDirectories {
            lister: lister.clone(),
            page_size,
        };
        return Box::pin(walk_in_flat_order(directories, shard.prefix.clone()).map_err(walk_error));
    }
    if shard.level {
        Box::pin(
            lister
                .level(shard.prefix.clone(), include, page_size)
                .try_filter_map(|e| async move {
                    Ok(match e {
                        LevelEntry::Blob(b) => Some(b),
                        LevelEntry::Prefix(_) => None,
                    })
                }),
        )
    } else {
        let prefix = (!shard.prefix.is_empty()).then(|| shard.prefix.clone());
        Box::pin(lister.blobs(prefix, include, page_size))
    }
}

/// A walk that stopped, as a listing error (a failed listing keeps its status and code).
pub fn walk_error(e: WalkError<azure_core::Error>) -> azure_core::Error {
    match e {
        WalkError::Listing { source, .. } => source,
        other => azure_core::Error::with_message(
            azure_core::error::ErrorKind::DataConversion,
            other.to_string(),
        ),
    }
}

/// Sub-prefixes one level below `prefix` (at most [`MAX_CHILDREN`]; `None` above that).
async fn child_prefixes(lister: &Lister, prefix: &str) -> azure_core::Result<Option<Vec<String>>> {
    let mut out = Vec::new();
    let mut entries = Box::pin(lister.level(prefix.to_string(), Include::Nothing, None));
    while let Some(entry) = entries.try_next().await? {
        if let LevelEntry::Prefix(p) = entry {
            if out.len() == MAX_CHILDREN {
                return Ok(None);
            }
            out.push(p);
        }
    }
    // An account with a hierarchical namespace lists `a/` before `a-b/`.
    out.sort_by(|a, b| cmp_names(a, b));
    Ok(Some(out))
}

/// Plans the shards of a container: at least `target` where its tree allows, listing
/// `concurrency` prefixes at a time. The backup's prefixes count too in a full scan, so
/// directories deleted in the source are scanned.
pub async fn plan_shards(
    accounts: Accounts<'_>,
    scan: &ContainerScan,
    target: usize,
    concurrency: usize,
) -> Result<Vec<Shard>, ScanError> {
    let roots = scan.roots();
    if target <= 1 {
        return Ok(roots.into_iter().map(Shard::whole).collect());
    }
    let source = Lister::new(accounts.source, &scan.container)?;
    let backup = Lister::new(accounts.destination, &scan.destination_container)?;
    let with_backup = scan.lists_backup();
    shard::plan_shards(roots, target, concurrency, &scan.filter, |prefix| {
        let (source, backup) = (&source, &backup);
        async move {
            let Some(a) = child_prefixes(source, &prefix)
                .await
                .map_err(listing_error)?
            else {
                return Ok(None);
            };
            if !with_backup {
                return Ok(Some(a));
            }
            let Some(b) = child_prefixes(backup, &prefix)
                .await
                .map_err(listing_error)?
            else {
                return Ok(None);
            };
            Ok(Some(shard::union_sorted(a, b)))
        }
    })
    .await
}

/// Whether a listed blob may have been modified after `t` (an unparsable time counts as
/// modified: copying too much is safe, missing a change is not). Last-Modified has whole
/// seconds, so a blob written in the second of `t`, after `t`, shows a time *before* `t`:
/// the comparison is made at the service's granularity, so that even a zero safety margin
/// and a sub-second watermark never skip a write.
fn modified_after(blob: &ListedBlob, t: time::OffsetDateTime) -> bool {
    let second = t.replace_nanosecond(0).unwrap_or(t);
    lakevault_common::record::parse_rfc3339(&blob.last_modified).is_none_or(|m| m >= second)
}

pub fn copy_item(blob: ListedBlob) -> CopyItem {
    CopyItem {
        access: blob.access,
        name: blob.name,
        etag: blob.etag,
        size: blob.size,
        last_modified: blob.last_modified,
        tags: blob.tags,
        snapshot: None,
        backup: PlannedBackup::Unknown,
    }
}

/// Snapshot mode: takes a snapshot of the source blob and points the item at it, with the
/// snapshot's own ETag and Last-Modified (the blob may have changed since it was listed).
/// `None` when the blob is gone meanwhile.
async fn snapshot_item(
    source: &StorageAccount,
    container: &str,
    mut item: CopyItem,
) -> Result<Option<CopyItem>, ScanError> {
    let failed = |e: &azure_core::Error| ScanError::Write {
        class: classify(e),
        message: format!("snapshot of `{}`: {}", item.name, describe(e)),
    };
    let client = source.blob(container, &item.name)?;
    let response = match client.create_snapshot(None).await {
        Ok(r) => r,
        Err(e) if e.http_status().map(u16::from) == Some(404) => return Ok(None),
        Err(e) => return Err(failed(&e)),
    };
    let snapshot = response.snapshot().map_err(|e| failed(&e))?;
    let Some(snapshot) = snapshot else {
        return Err(ScanError::Write {
            class: FailureClass::Transient,
            message: format!(
                "snapshot of `{}`: the service returned no snapshot id",
                item.name
            ),
        });
    };
    if let Ok(Some(etag)) = response.etag() {
        item.etag = normalise_etag(etag.as_ref());
    }
    if let Ok(Some(t)) = response.last_modified() {
        item.last_modified = rfc3339(t);
    }
    item.snapshot = Some(snapshot);
    Ok(Some(item))
}

async fn send(queue: &dyn WorkQueue, dry_run: bool, batch: &CopyBatch) -> Result<(), ScanError> {
    if dry_run {
        return Ok(());
    }
    queue
        .send(&batch.encode(), Duration::ZERO)
        .await
        .map_err(|e| ScanError::Write {
            class: match &e {
                lakevault_common::queue::QueueError::Failed { class, .. } => *class,
                lakevault_common::queue::QueueError::Lost(_) => FailureClass::Transient,
            },
            message: format!("enqueueing to `{}` failed: {e}", queue.name()),
        })
}

/// Lists one shard of source and backup, diffs them, and enqueues copy batches for what is
/// new or changed (nothing in a dry run). Memory holds one listing page per side, one
/// message's items, and at most `max_tombstones` tombstones.
pub async fn scan_shard(
    accounts: Accounts<'_>,
    scan: &ContainerScan,
    shard: &Shard,
) -> Result<ShardScan, ScanError> {
    let source_lister = Lister::new(accounts.source, &scan.container)?;
    let dest_lister = Lister::new(accounts.destination, &scan.destination_container)?;
    let filter = &scan.filter;
    let modified_since = scan.modified_since;
    // Both sides go through the same filter, so a backup blob outside the selection is
    // never mistaken for one deleted in the source. Incremental: only what changed since
    // the watermark, and no backup listing (every selected blob is planned as new; copying
    // a version the backup has is harmless).
    let source_listing = shard_listing(
        &source_lister,
        shard,
        scan.page_size,
        scan.source_hierarchical,
    )
    .try_filter(move |blob| {
        futures::future::ready(
            filter.matches(&blob.name) && modified_since.is_none_or(|t| modified_after(blob, t)),
        )
    });
    let backup_listing: BoxStream<'static, azure_core::Result<ListedBlob>> = if scan.lists_backup()
    {
        let filter = filter.clone();
        Box::pin(
            shard_listing(&dest_lister, shard, scan.page_size, false)
                .try_filter(move |blob| futures::future::ready(filter.matches(&blob.name))),
        )
    } else {
        Box::pin(futures::stream::empty())
    };

    let mut result = ShardScan::default();
    let mut builder = BatchBuilder::new(scan.header(MessageKind::Copy), MAX_MESSAGE_BYTES);
    let counts = &mut result.counts;
    let mut diff = changes(source_listing, backup_listing);
    loop {
        // Between two entries, shutdown wins: batches already sent stay valid, the items
        // of the unsent batch are planned again by the next scan.
        let change = tokio::select! {
            biased;
            _ = scan.cancel.cancelled() => return Err(ScanError::Cancelled),
            next = diff.try_next() => match next? {
                Some(change) => change,
                None => break,
            },
        };
        scan.progress.inc(1);
        match &change {
            Change::New(_) => counts.new += 1,
            Change::Changed { .. } => counts.changed += 1,
            Change::Unchanged(_) => counts.unchanged += 1,
            Change::Deleted(backup) => match BackupRecord::from_tags(&backup.tags) {
                None => counts.unmanaged += 1,
                Some(record) if record.deleted_at.is_some() => counts.already_tombstoned += 1,
                Some(_) => {
                    counts.deleted_in_source += 1;
                    if counts.deleted_in_source > scan.max_tombstones {
                        result.tombstones = Vec::new();
                    } else {
                        result.tombstones.push(copy_item(backup.clone()));
                    }
                }
            },
        }
        // What the backup holds goes with the item, so the worker's write is conditional
        // on it without reading it first. An incremental plan does not list the backup.
        let (blob, planned) = match change {
            Change::New(blob) if scan.lists_backup() || !scan.backup_exists => {
                (blob, PlannedBackup::Absent)
            }
            Change::New(blob) => (blob, PlannedBackup::Unknown),
            Change::Changed { source, backup } => (source, PlannedBackup::Etag(backup.etag)),
            Change::Unchanged(_) | Change::Deleted(_) => continue,
        };
        counts.bytes_to_copy += blob.size;
        if result.sample.len() < scan.sample {
            result.sample.push(blob.name.clone());
        }
        let mut item = copy_item(blob);
        item.backup = planned;
        if scan.snapshot && !scan.dry_run {
            match snapshot_item(accounts.source, &scan.container, item).await? {
                Some(snapshotted) => {
                    item = snapshotted;
                    counts.snapshots += 1;
                }
                None => {
                    counts.vanished += 1;
                    continue;
                }
            }
        }
        match builder.push(item) {
            Ok(Some(full)) => {
                counts.messages += 1;
                send(accounts.queue, scan.dry_run, &full).await?;
            }
            Ok(None) => {}
            Err(item) => {
                tracing::error!(blob = %item.name, "blob entry too large for a queue message; skipped")
            }
        }
    }
    if let Some(last) = builder.finish() {
        result.counts.messages += 1;
        send(accounts.queue, scan.dry_run, &last).await?;
    }
    Ok(result)
}

/// A container's scan, assembled from its shards as they finish.
#[derive(Debug, Clone, Default)]
pub struct ContainerTotals {
    pub counts: ScanCounts,
    pub sample: Vec<String>,
    pub tombstones: Vec<CopyItem>,
    pub tombstones_suppressed: bool,
}

impl ContainerTotals {
    pub fn add(&mut self, shard: ShardScan, max_tombstones: u64, sample: usize) {
        self.counts.add(&shard.counts);
        for name in shard.sample {
            if self.sample.len() < sample {
                self.sample.push(name);
            }
        }
        if self.counts.deleted_in_source > max_tombstones {
            self.tombstones_suppressed = true;
            self.tombstones = Vec::new();
        } else {
            self.tombstones.extend(shard.tombstones);
        }
    }

    /// Ends the container: enqueues its tombstone marks unless the cap was crossed.
    /// Returns the number of marks and of messages enqueued.
    pub async fn enqueue_tombstones(
        &mut self,
        accounts: Accounts<'_>,
        scan: &ContainerScan,
    ) -> Result<(u64, u64), ScanError> {
        if self.tombstones_suppressed {
            tracing::error!(
                container = %scan.container,
                deleted = self.counts.deleted_in_source,
                max_tombstones = scan.max_tombstones,
                "source deletions exceed --max-tombstones: none recorded, backup left untouched"
            );
            return Ok((0, 0));
        }
        let mut tombstones = std::mem::take(&mut self.tombstones);
        // Shards finish in any order; marks go out in name order, as an unsharded scan
        // would send them.
        tombstones.sort_by(|a, b| crate::diff::cmp_names(&a.name, &b.name));
        let count = tombstones.len() as u64;
        let (batches, _) = pack(
            &scan.header(MessageKind::Tombstone),
            tombstones,
            MAX_MESSAGE_BYTES,
        );
        let messages = batches.len() as u64;
        for batch in batches {
            send(accounts.queue, scan.dry_run, &batch).await?;
        }
        Ok((count, messages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_shards_share_one_page_budget() {
        assert_eq!(page_size_for(0), None);
        assert_eq!(page_size_for(1), None);
        assert_eq!(page_size_for(2), Some(5_000));
        assert_eq!(page_size_for(4), Some(2_500));
        assert_eq!(page_size_for(8), Some(1_250));
        // The floor keeps pages useful however wide the scan.
        assert_eq!(page_size_for(64), Some(500));
        for n in 2..=20 {
            let per_page = page_size_for(n).expect("a budget");
            assert!(per_page as usize * 2 * n <= ENTRIES_IN_FLIGHT as usize);
        }
    }

    fn listed(last_modified: &str) -> ListedBlob {
        ListedBlob {
            access: None,
            name: "a".into(),
            etag: "0x1".into(),
            size: 1,
            last_modified: last_modified.into(),
            blob_type: None,
            tags: Default::default(),
            content_md5: None,
        }
    }

    #[test]
    fn a_write_in_the_watermarks_second_is_never_skipped() {
        let t = time::macros::datetime!(2026-01-01 10:00:00.500 UTC);
        // Written at 10:00:00.700, after the watermark: the service says 10:00:00.
        assert!(modified_after(&listed("2026-01-01T10:00:00Z"), t));
        assert!(modified_after(&listed("2026-01-01T10:00:01Z"), t));
        assert!(!modified_after(&listed("2026-01-01T09:59:59Z"), t));
        assert!(modified_after(&listed("not a time"), t));
    }
}
