//! Retention for one backup container: old versions (snapshots kept before an overwrite)
//! are deleted once they stopped being current longer ago than `keep_versions_for`; the
//! current version of a blob is never touched by that window. Blobs marked deleted in the
//! source (tombstones) are deleted, with all their versions, once they have been deleted
//! longer than `tombstones_for`. A cap protects the backup: a container that would lose
//! more than `max_deletes` blobs and versions in one run loses nothing. What goes is
//! chosen per name by [`versions::choose_for_purge`]; every delete is conditional on what
//! was judged.

use crate::versions::{self, Retention};
use futures::TryStreamExt;
use lakevault_common::store::{BlobRef, BlobStore, Condition, ListOptions, StorageErrorCode};
use serde::Serialize;
use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub struct PurgeOptions {
    /// Versions that stopped being current longer ago than this are deleted.
    pub keep_versions_for: time::Duration,
    /// Tombstoned blobs deleted in the source longer ago than this are deleted.
    pub tombstones_for: Option<time::Duration>,
    /// Most deletions per container in one run; above it the container is left alone.
    pub max_deletes: u64,
    pub dry_run: bool,
    /// Names shown per container.
    pub sample: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ContainerPurge {
    pub container: String,
    /// Old versions (snapshots) past the window.
    pub versions: u64,
    /// Tombstoned blobs past their window (deleted with their versions).
    pub tombstoned_blobs: u64,
    /// Versions that go with those blobs.
    pub tombstoned_versions: u64,
    /// Deletions done (0 in a dry run or when capped).
    pub deleted: u64,
    /// The container crossed `max_deletes`: nothing was deleted.
    pub capped: bool,
    /// Tombstoned blobs left alone because they changed after the listing (backed up
    /// again: the source came back).
    pub changed_since_listed: u64,
    pub sample: Vec<String>,
}

impl ContainerPurge {
    /// Deletions planned: old versions, tombstoned blobs, and the versions that go with
    /// those blobs (each is a blob the backup loses, so each counts toward the cap).
    pub fn planned(&self) -> u64 {
        self.versions + self.tombstoned_blobs + self.tombstoned_versions
    }
}

/// What will go, held until the container has been listed completely (at most
/// `max_deletes + 1` entries).
#[derive(Debug, Default)]
struct Doomed {
    /// (name, snapshot) versions.
    versions: Vec<(String, String)>,
    /// Tombstoned base blobs with the ETag they were listed with, deleted with their
    /// snapshots only if still at that ETag.
    blobs: Vec<(String, String)>,
}

pub async fn purge_container(
    backup: &dyn BlobStore,
    container: &str,
    options: &PurgeOptions,
    now: OffsetDateTime,
) -> Result<ContainerPurge, String> {
    let mut report = ContainerPurge {
        container: container.to_string(),
        ..Default::default()
    };
    let retention = Retention {
        now,
        keep_versions_for: options.keep_versions_for,
        tombstones_for: options.tombstones_for,
    };
    let listing = backup.list(
        container,
        ListOptions {
            tags: true,
            snapshots: true,
            ..Default::default()
        },
    );
    let mut groups = std::pin::pin!(versions::by_name(listing));
    let mut doomed = Doomed::default();
    let mut over_cap = false;
    loop {
        let group = match groups.try_next().await {
            Ok(Some(group)) => group,
            Ok(None) => break,
            // A backup container that does not exist has nothing to purge.
            Err(e) if e.has_code(StorageErrorCode::ContainerNotFound) => return Ok(report),
            Err(e) => return Err(e.to_string()),
        };
        let name = group[0].listed.name.clone();
        let choice = versions::choose_for_purge(&group, retention);
        if report.sample.len() < options.sample
            && (choice.whole_blob.is_some() || !choice.snapshots.is_empty())
        {
            report.sample.push(name.clone());
        }
        if let Some(etag) = choice.whole_blob {
            report.tombstoned_blobs += 1;
            report.tombstoned_versions += choice.versions_with_blob;
            if !over_cap {
                doomed.blobs.push((name.clone(), etag));
            }
        }
        for snapshot in choice.snapshots {
            report.versions += 1;
            if !over_cap {
                doomed.versions.push((name.clone(), snapshot));
            }
        }
        if report.planned() > options.max_deletes {
            over_cap = true;
            doomed = Doomed::default();
        }
    }
    if over_cap {
        report.capped = true;
        tracing::error!(
            container,
            planned = report.planned(),
            max = options.max_deletes,
            "purge would delete more than --max-deletes: nothing deleted"
        );
        return Ok(report);
    }
    if options.dry_run {
        return Ok(report);
    }
    for (name, snapshot) in &doomed.versions {
        // A snapshot cannot change: no condition is needed.
        let version = BlobRef::new(container, name).at_snapshot(Some(snapshot));
        match backup.delete(version, Condition::None, false).await {
            Ok(()) => report.deleted += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(format!("deleting {name} version {snapshot}: {e}")),
        }
    }
    for (name, etag) in &doomed.blobs {
        // Only the tombstone that was judged: a blob backed up again since the listing
        // (the source came back) has another ETag and stays.
        let blob = BlobRef::new(container, name);
        match backup
            .delete(blob, Condition::IfMatch(etag.clone()), true)
            .await
        {
            Ok(()) => report.deleted += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) if e.is_condition_not_met() => report.changed_since_listed += 1,
            Err(e) => return Err(format!("deleting tombstoned {name}: {e}")),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakevault_common::record::{BackupRecord, RECORD_TAG, rfc3339};
    use lakevault_common::store::memory::{MemoryStore, Op, World};
    use std::collections::BTreeMap;

    fn record(deleted_at: Option<OffsetDateTime>) -> BTreeMap<String, String> {
        let record = BackupRecord {
            source_etag: "0x1".into(),
            source_last_modified: "2026-01-01T00:00:00Z".into(),
            backed_up_at: "2026-01-01T00:00:00Z".into(),
            job: "j".into(),
            deleted_at: deleted_at.map(rfc3339),
            history_in_versions: false,
        };
        BTreeMap::from([(RECORD_TAG.to_string(), record.to_tag_value())])
    }

    async fn backed_up(store: &MemoryStore, name: &str, deleted_at: Option<OffsetDateTime>) {
        store.write("data", name, name.as_bytes(), &[]);
        store
            .set_tags(
                BlobRef::new("data", name),
                &record(deleted_at),
                Condition::None,
            )
            .await
            .unwrap();
    }

    fn options(max_deletes: u64) -> PurgeOptions {
        PurgeOptions {
            // Every snapshot taken in this test is already past the window.
            keep_versions_for: time::Duration::seconds(-60),
            tombstones_for: Some(time::Duration::days(1)),
            max_deletes,
            dry_run: false,
            sample: 10,
        }
    }

    #[tokio::test]
    async fn old_versions_and_expired_tombstones_go_the_rest_stays() {
        let world = World::new();
        let bak = world.account("bak");
        let long_ago = OffsetDateTime::now_utc() - time::Duration::days(30);
        backed_up(&bak, "live.csv", None).await;
        bak.snapshot(BlobRef::new("data", "live.csv"), Condition::None)
            .await
            .unwrap();
        backed_up(&bak, "gone.csv", Some(long_ago)).await;
        bak.snapshot(BlobRef::new("data", "gone.csv"), Condition::None)
            .await
            .unwrap();
        backed_up(&bak, "recently-gone.csv", Some(OffsetDateTime::now_utc())).await;
        let report = purge_container(&bak, "data", &options(10), OffsetDateTime::now_utc())
            .await
            .unwrap();
        assert_eq!((report.versions, report.tombstoned_blobs), (1, 1));
        assert_eq!(report.tombstoned_versions, 1);
        assert_eq!(report.deleted, 2);
        assert!(bak.snapshot_ids("data", "live.csv").is_empty());
        assert!(bak.content(BlobRef::new("data", "live.csv")).is_some());
        assert!(bak.content(BlobRef::new("data", "gone.csv")).is_none());
        assert!(
            bak.content(BlobRef::new("data", "recently-gone.csv"))
                .is_some()
        );
    }

    #[tokio::test]
    async fn over_the_cap_nothing_is_deleted() {
        let world = World::new();
        let bak = world.account("bak");
        let long_ago = OffsetDateTime::now_utc() - time::Duration::days(30);
        for n in ["a", "b", "c"] {
            backed_up(&bak, n, Some(long_ago)).await;
        }
        let report = purge_container(&bak, "data", &options(2), OffsetDateTime::now_utc())
            .await
            .unwrap();
        assert!(report.capped);
        assert_eq!(report.deleted, 0);
        assert_eq!(world.calls("bak", Op::Delete), 0);
    }

    #[tokio::test]
    async fn a_tombstone_backed_up_again_after_the_listing_is_kept() {
        let world = World::new();
        let bak = world.account("bak");
        let long_ago = OffsetDateTime::now_utc() - time::Duration::days(30);
        backed_up(&bak, "back.csv", Some(long_ago)).await;
        // The delete waits until the source came back and a backup rewrote the blob.
        let gate = world.pause(Op::Delete, |f| f.name("back.csv"));
        let purging = {
            let bak = bak.clone();
            tokio::spawn(async move {
                purge_container(&bak, "data", &options(10), OffsetDateTime::now_utc()).await
            })
        };
        gate.arrived().await;
        backed_up(&bak, "back.csv", None).await;
        gate.release();
        let report = purging.await.unwrap().unwrap();
        assert_eq!(report.tombstoned_blobs, 1, "judged expired when listed");
        assert_eq!((report.deleted, report.changed_since_listed), (0, 1));
        assert!(bak.content(BlobRef::new("data", "back.csv")).is_some());
    }

    #[tokio::test]
    async fn the_cap_counts_every_version_that_goes_with_a_tombstoned_blob() {
        let world = World::new();
        let bak = world.account("bak");
        let long_ago = OffsetDateTime::now_utc() - time::Duration::days(30);
        backed_up(&bak, "many.csv", None).await;
        for _ in 0..3 {
            bak.snapshot(BlobRef::new("data", "many.csv"), Condition::None)
                .await
                .unwrap();
        }
        backed_up(&bak, "many.csv", Some(long_ago)).await;
        // One blob and its three kept versions: four deletions, over a cap of three.
        let report = purge_container(&bak, "data", &options(3), OffsetDateTime::now_utc())
            .await
            .unwrap();
        assert_eq!(
            (report.tombstoned_blobs, report.tombstoned_versions),
            (1, 3)
        );
        assert!(report.capped, "{report:?}");
        assert_eq!(world.calls("bak", Op::Delete), 0);
    }

    #[tokio::test]
    async fn a_missing_backup_container_has_nothing_to_purge() {
        let world = World::new();
        let bak = world.account("bak");
        let report = purge_container(&bak, "never", &options(10), OffsetDateTime::now_utc())
            .await
            .unwrap();
        assert_eq!(report.planned(), 0);
    }
}
