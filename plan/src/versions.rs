//! Version choice for restore and purge: the versions of one backup name (the base blob
//! and the snapshots kept before each overwrite), grouped as a listing with snapshots
//! returns them, and what each command does with a group.
//!
//! Every version carries lakevault's record of its time (when it was backed up, and when
//! the source was seen deleted), so both decisions are pure functions of the group and a
//! time, tested here without a service.

use futures::{Stream, StreamExt};
use lakevault_common::access::{KeptAccess, kept_access};
use lakevault_common::record::{BackupRecord, parse_rfc3339, user_tags};
use lakevault_common::store::Listed;
use lakevault_common::wire::CopyItem;
use time::OffsetDateTime;

/// One version of a backup blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub listed: Listed,
    pub record: Option<BackupRecord>,
}

impl Version {
    pub fn new(listed: Listed) -> Self {
        let record = BackupRecord::from_tags(&listed.tags);
        Self { listed, record }
    }

    pub fn is_snapshot(&self) -> bool {
        self.listed.snapshot.is_some()
    }
}

/// The versions of each name, in listing order. A listing with snapshots returns the
/// versions of one name next to each other (in which order is not relied on), so one
/// group at a time is held.
pub fn by_name<S, E>(listing: S) -> impl Stream<Item = Result<Vec<Version>, E>>
where
    S: Stream<Item = Result<Listed, E>>,
{
    let listing = Box::pin(listing.fuse());
    futures::stream::unfold(
        (listing, None::<Vec<Version>>, false),
        |(mut listing, mut group, done)| async move {
            if done {
                return None;
            }
            loop {
                match listing.next().await {
                    Some(Ok(listed)) => {
                        let version = Version::new(listed);
                        match group.as_mut() {
                            Some(g) if g[0].listed.name == version.listed.name => g.push(version),
                            Some(_) => {
                                let full = group.replace(vec![version]);
                                return Some((
                                    Ok(full.unwrap_or_default()),
                                    (listing, group, false),
                                ));
                            }
                            None => group = Some(vec![version]),
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (listing, None, true))),
                    None => {
                        return group.map(|g| (Ok(g), (listing, None, true)));
                    }
                }
            }
        },
    )
}

/// What the versions of one name say for a restore to time `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreChoice {
    /// Restore this version (`item.access`: the path's access control kept with it, when
    /// kept in full).
    Restore {
        item: CopyItem,
        /// An older version (a snapshot).
        older: bool,
        /// What the version's tags keep of the path's access control.
        access: AccessKept,
    },
    /// First backed up after `at`.
    NotYet,
    /// Backed up after `at` by workers without history snapshots (`run --no-history`):
    /// what the name held at `at`, if anything, lives in the backup account's blob
    /// versions, which restore does not read. Never skipped silently.
    InBlobVersions,
    /// The version current at `at` was already marked deleted in the source.
    Deleted,
    /// No version carries a lakevault record.
    Unrecorded,
}

/// What a version's tags keep of its path's access control (an HNS source's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKept {
    /// Nothing (a flat source).
    Nothing,
    /// In full: on the item.
    InFull,
    /// Only a digest (too long for the tags), or tags that do not read.
    NotInFull,
}

/// For time `at`, the version with the latest backup time at or before `at`, unless it was
/// already marked deleted at `at`. Versions whose record has no readable backup time are
/// never chosen.
///
/// Copies of one version can be there more than once with the same record (a copy that
/// kept the backup's version as a snapshot and then failed, tried again): they are one
/// version. It counts as deleted when any of its copies says so (the base blob carries
/// the mark; the snapshots were taken before it), and the base blob is preferred.
pub fn choose_for_restore(versions: Vec<Version>, at: OffsetDateTime) -> RestoreChoice {
    let mut latest: Option<OffsetDateTime> = None;
    let mut any_record = false;
    let mut in_versions = false;
    for record in versions.iter().filter_map(|v| v.record.as_ref()) {
        any_record = true;
        in_versions |= record.history_in_versions;
        if let Some(backed_up) = parse_rfc3339(&record.backed_up_at)
            && backed_up <= at
            && latest.is_none_or(|t| backed_up > t)
        {
            latest = Some(backed_up);
        }
    }
    let Some(latest) = latest else {
        return if in_versions {
            RestoreChoice::InBlobVersions
        } else if any_record {
            RestoreChoice::NotYet
        } else {
            RestoreChoice::Unrecorded
        };
    };
    let copies: Vec<Version> = versions
        .into_iter()
        .filter(|v| {
            v.record
                .as_ref()
                .and_then(|r| parse_rfc3339(&r.backed_up_at))
                == Some(latest)
        })
        .collect();
    let deleted = copies.iter().any(|v| {
        v.record
            .as_ref()
            .and_then(|r| r.deleted_at.as_deref())
            .and_then(parse_rfc3339)
            .is_some_and(|d| d <= at)
    });
    if deleted {
        return RestoreChoice::Deleted;
    }
    let Some(v) = copies
        .iter()
        .position(|v| !v.is_snapshot())
        .or((!copies.is_empty()).then_some(0))
        .map(|i| copies[i].clone())
    else {
        return RestoreChoice::NotYet;
    };
    let older = v.is_snapshot();
    let l = v.listed;
    let (access, kept) = match kept_access(&l.tags) {
        KeptAccess::None => (None, AccessKept::Nothing),
        KeptAccess::Kept(a) => (Some(Box::new(a)), AccessKept::InFull),
        KeptAccess::DigestOnly(_) | KeptAccess::Unreadable => (None, AccessKept::NotInFull),
    };
    RestoreChoice::Restore {
        item: CopyItem {
            access,
            tags: user_tags(&l.tags),
            name: l.name,
            etag: l.etag,
            size: l.size,
            last_modified: l.last_modified,
            snapshot: l.snapshot,
            backup: Default::default(),
        },
        older,
        access: kept,
    }
}

/// Retention windows, measured back from `now`.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub now: OffsetDateTime,
    /// Old versions that stopped being current longer ago than this go.
    pub keep_versions_for: time::Duration,
    /// Tombstoned blobs deleted in the source longer ago than this go, with every version.
    pub tombstones_for: Option<time::Duration>,
}

/// What purge does with the versions of one name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PurgeChoice {
    /// Old versions past the window (snapshot ids), when the name itself stays.
    pub snapshots: Vec<String>,
    /// The name goes with all its versions: its tombstone is past the window. The ETag
    /// is the base blob's as listed, so the delete applies to exactly that blob.
    pub whole_blob: Option<String>,
    /// Versions that go with the whole blob.
    pub versions_with_blob: u64,
}

/// The current version is never touched by the version window. An older version stopped
/// being current, for a restore, when the next version was backed up: the smallest backup
/// time after its own. That moment can come after the snapshot that kept it (a copy stamps
/// its record in the round that writes, after a conflict perhaps after keeping the old
/// version), so the snapshot's time is not used while a record tells. A second copy of the
/// version the base blob holds (left by a copy that failed after keeping it) goes by its
/// snapshot time, as does a snapshot without a record; one whose id is not a time, or
/// that names a version newer than the base blob's, is kept.
pub fn choose_for_purge(versions: &[Version], retention: Retention) -> PurgeChoice {
    let version_cutoff = retention.now - retention.keep_versions_for;
    let base = versions.iter().find(|v| !v.is_snapshot());
    let tombstone_expired = match (
        retention.tombstones_for,
        base.and_then(|b| b.record.as_ref()),
    ) {
        (Some(window), Some(record)) => record
            .deleted_at
            .as_deref()
            .and_then(parse_rfc3339)
            .is_some_and(|t| t < retention.now - window),
        _ => false,
    };
    let snapshots = versions.iter().filter_map(|v| v.listed.snapshot.as_deref());
    if tombstone_expired {
        return PurgeChoice {
            snapshots: Vec::new(),
            whole_blob: base.map(|b| b.listed.etag.clone()),
            versions_with_blob: snapshots.count() as u64,
        };
    }
    let backed_up = |v: &Version| {
        v.record
            .as_ref()
            .and_then(|r| parse_rfc3339(&r.backed_up_at))
    };
    let times: Vec<OffsetDateTime> = versions.iter().filter_map(backed_up).collect();
    let taken = |v: &Version| v.listed.snapshot.as_deref().and_then(parse_rfc3339);
    let current_until = |v: &Version| -> Option<OffsetDateTime> {
        let Some(own) = backed_up(v) else {
            return taken(v);
        };
        match times.iter().filter(|t| **t > own).min() {
            Some(next) => Some(*next),
            // A second copy of the version the base blob holds: it adds nothing to any
            // restore, and goes by its snapshot time.
            None if base.and_then(backed_up) == Some(own) => taken(v),
            None => None,
        }
    };
    PurgeChoice {
        snapshots: versions
            .iter()
            .filter(|v| v.is_snapshot())
            .filter(|v| current_until(v).is_some_and(|t| t < version_cutoff))
            .filter_map(|v| v.listed.snapshot.clone())
            .collect(),
        whole_blob: None,
        versions_with_blob: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakevault_common::record::RECORD_TAG;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn t(s: &str) -> OffsetDateTime {
        parse_rfc3339(s).expect("time")
    }

    fn version(snapshot: Option<&str>, backed_up: &str, deleted: Option<&str>) -> Version {
        let record = BackupRecord {
            source_etag: "0x1".into(),
            source_last_modified: backed_up.into(),
            backed_up_at: backed_up.into(),
            job: "j".into(),
            deleted_at: deleted.map(str::to_string),
            history_in_versions: false,
        };
        let mut tags = BTreeMap::from([("team".to_string(), "data".to_string())]);
        tags.insert(RECORD_TAG.into(), record.to_tag_value());
        Version::new(Listed {
            name: "a.csv".into(),
            snapshot: snapshot.map(str::to_string),
            etag: format!("etag-{backed_up}"),
            size: 3,
            last_modified: backed_up.into(),
            tags,
            content_md5: None,
        })
    }

    fn history() -> Vec<Version> {
        vec![
            // The base blob: backed up on the 3rd, its source deleted on the 5th.
            version(None, "2026-11-03T00:00:00Z", Some("2026-11-05T00:00:00Z")),
            // Kept versions, each taken when the next backup overwrote it.
            version(
                Some("2026-11-02T00:00:00.0000000Z"),
                "2026-11-01T00:00:00Z",
                None,
            ),
            version(
                Some("2026-11-03T00:00:00.0000000Z"),
                "2026-11-02T00:00:00Z",
                None,
            ),
        ]
    }

    #[test]
    fn restore_takes_the_version_current_at_the_time() {
        let pick = |at: &str| choose_for_restore(history(), t(at));
        assert_eq!(pick("2026-10-31T00:00:00Z"), RestoreChoice::NotYet);
        match pick("2026-11-01T12:00:00Z") {
            RestoreChoice::Restore { item, older, .. } => {
                assert!(older);
                assert_eq!(item.etag, "etag-2026-11-01T00:00:00Z");
                assert_eq!(
                    item.snapshot.as_deref(),
                    Some("2026-11-02T00:00:00.0000000Z")
                );
                assert!(!item.tags.contains_key(RECORD_TAG), "no record is restored");
                assert_eq!(item.tags.get("team").map(String::as_str), Some("data"));
            }
            other => panic!("{other:?}"),
        }
        match pick("2026-11-04T00:00:00Z") {
            RestoreChoice::Restore { item, older, .. } => {
                assert!(!older);
                assert_eq!(item.snapshot, None);
            }
            other => panic!("{other:?}"),
        }
        // At the exact backup time the version counts; at the deletion time it is gone.
        assert!(matches!(
            pick("2026-11-02T00:00:00Z"),
            RestoreChoice::Restore { ref item, older: true, .. } if item.etag == "etag-2026-11-02T00:00:00Z"
        ));
        assert_eq!(pick("2026-11-05T00:00:00Z"), RestoreChoice::Deleted);
        assert_eq!(pick("2026-12-01T00:00:00Z"), RestoreChoice::Deleted);
    }

    #[test]
    fn a_name_whose_history_lives_in_blob_versions_is_never_skipped_silently() {
        // Backed up on the 3rd by workers with `--no-history`: what the name held on the
        // 2nd is in the account's blob versions, not in a snapshot.
        let mut v = version(None, "2026-11-03T00:00:00Z", None);
        let mut record = v.record.clone().unwrap();
        record.history_in_versions = true;
        v.listed
            .tags
            .insert(RECORD_TAG.into(), record.to_tag_value());
        let v = Version::new(v.listed);
        assert!(
            v.record.as_ref().unwrap().history_in_versions,
            "the record says so"
        );
        assert_eq!(
            choose_for_restore(vec![v.clone()], t("2026-11-02T00:00:00Z")),
            RestoreChoice::InBlobVersions
        );
        assert!(matches!(
            choose_for_restore(vec![v], t("2026-11-04T00:00:00Z")),
            RestoreChoice::Restore { older: false, .. }
        ));
    }

    /// A copy that kept the backup's version as a snapshot and then failed leaves a second
    /// copy of that version, listed before the base blob. Once the source deletes the
    /// blob, only the base carries the mark: the version is deleted all the same.
    #[test]
    fn a_second_copy_of_a_version_does_not_bring_it_back_after_its_deletion() {
        let group = vec![
            version(
                Some("2026-11-04T00:00:00.0000000Z"),
                "2026-11-03T00:00:00Z",
                None,
            ),
            version(None, "2026-11-03T00:00:00Z", Some("2026-11-05T00:00:00Z")),
        ];
        assert_eq!(
            choose_for_restore(group.clone(), t("2026-11-06T00:00:00Z")),
            RestoreChoice::Deleted
        );
        match choose_for_restore(group, t("2026-11-04T12:00:00Z")) {
            RestoreChoice::Restore { item, older, .. } => {
                assert!(!older, "the base blob is preferred to its copy");
                assert_eq!(item.snapshot, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn restore_ignores_blobs_without_a_record() {
        let mut v = version(None, "2026-11-01T00:00:00Z", None);
        v.record = None;
        assert_eq!(
            choose_for_restore(vec![v], t("2026-12-01T00:00:00Z")),
            RestoreChoice::Unrecorded
        );
    }

    #[test]
    fn purge_keeps_the_current_version_and_recent_ones() {
        let keep = |now: &str, days: i64| {
            choose_for_purge(
                &history()[..],
                Retention {
                    now: t(now),
                    keep_versions_for: time::Duration::days(days),
                    tombstones_for: None,
                },
            )
        };
        assert_eq!(keep("2026-11-04T00:00:00Z", 30), PurgeChoice::default());
        let choice = keep("2026-11-04T00:00:00Z", 1);
        assert_eq!(
            choice.snapshots,
            vec!["2026-11-02T00:00:00.0000000Z".to_string()]
        );
        assert_eq!(
            choice.whole_blob, None,
            "the base blob is never in the version window"
        );
    }

    #[test]
    fn purge_takes_a_tombstoned_name_whole_once_past_its_window() {
        let retention = |now: &str| Retention {
            now: t(now),
            keep_versions_for: time::Duration::days(365),
            tombstones_for: Some(time::Duration::days(10)),
        };
        assert_eq!(
            choose_for_purge(&history(), retention("2026-11-10T00:00:00Z")),
            PurgeChoice::default()
        );
        let choice = choose_for_purge(&history(), retention("2026-11-20T00:00:00Z"));
        assert_eq!(
            choice.whole_blob.as_deref(),
            Some("etag-2026-11-03T00:00:00Z")
        );
        assert_eq!(choice.versions_with_blob, 2);
        assert!(choice.snapshots.is_empty());
    }

    /// A version stays current, for a restore, until the next version's backup time, which
    /// can come after the snapshot that kept it (a copy that met a conflict after keeping
    /// the version stamps its record in a later round). Judged by its snapshot time, it
    /// went while a restore inside the window still chose it.
    #[test]
    fn purge_keeps_a_version_a_restore_inside_the_window_still_chooses() {
        let group = vec![
            version(None, "2026-11-03T10:00:05Z", None),
            version(
                Some("2026-11-03T10:00:01.0000000Z"),
                "2026-11-03T09:00:00Z",
                None,
            ),
        ];
        let retention = Retention {
            now: t("2026-11-03T10:00:06Z"),
            keep_versions_for: time::Duration::seconds(3),
            tombstones_for: None,
        };
        assert!(matches!(
            choose_for_restore(group.clone(), t("2026-11-03T10:00:04Z")),
            RestoreChoice::Restore { older: true, .. }
        ));
        assert_eq!(choose_for_purge(&group, retention), PurgeChoice::default());
        // Once the next version is older than the window, the old one goes.
        let later = Retention {
            now: t("2026-11-03T10:00:09Z"),
            ..retention
        };
        assert_eq!(
            choose_for_purge(&group, later).snapshots,
            vec!["2026-11-03T10:00:01.0000000Z".to_string()]
        );
    }

    /// What a restore chooses, as the backup time of the version it names (copies of one
    /// version share it; `None`: nothing to restore).
    fn restored(group: &[Version], at: OffsetDateTime) -> Option<String> {
        match choose_for_restore(group.to_vec(), at) {
            RestoreChoice::Restore { item, .. } => group
                .iter()
                .find(|v| v.listed.etag == item.etag && v.listed.snapshot == item.snapshot)
                .and_then(|v| v.record.as_ref())
                .map(|r| r.backed_up_at.clone()),
            _ => None,
        }
    }

    fn at(seconds: i64) -> OffsetDateTime {
        t("2026-11-01T00:00:00Z") + time::Duration::seconds(seconds)
    }

    fn stamp(t: OffsetDateTime) -> String {
        lakevault_common::record::rfc3339(t)
    }

    prop_compose! {
        /// A name's versions: the base and up to 5 snapshots (copies of the base's
        /// version among them), with backup times, snapshot times and a deletion time in
        /// any order retries and races leave, listed in any order. The base holds the
        /// newest version (I2).
        fn group()(
            base_at in 0..40i64,
            base_deleted in prop::option::of(0..40i64),
            snapshots in prop::collection::vec((0..=40i64, 0..40i64, any::<bool>()), 0..5),
            base_position in 0..6usize,
        ) -> Vec<Version> {
            let mut group = Vec::new();
            for (i, (backed_up, taken, recorded)) in snapshots.into_iter().enumerate() {
                let mut v = version(
                    Some(&stamp(at(taken) + time::Duration::nanoseconds(i as i64))),
                    &stamp(at(backed_up.min(base_at))),
                    None,
                );
                v.listed.etag = format!("etag-{i}");
                if !recorded {
                    v.listed.tags.remove(RECORD_TAG);
                    v = Version::new(v.listed);
                }
                group.push(v);
            }
            let base = version(
                None,
                &stamp(at(base_at)),
                base_deleted.map(|d| stamp(at(base_at.max(d)))).as_deref(),
            );
            group.insert(base_position.min(group.len()), base);
            group
        }
    }

    proptest::proptest! {
        /// I4 for the choice itself: deleting what purge chooses changes no restore inside
        /// the retention window (`keep_versions_for`, or `tombstones_for` for a name that
        /// goes whole). Restore choices change only at backup and deletion times, so those
        /// (and the window's start) are the times tried.
        #[test]
        fn purging_changes_no_restore_inside_the_window(
            group in group(),
            now in 0..60i64,
            keep in 0..30i64,
            tombstones in prop::option::of(0..30i64),
        ) {
            let retention = Retention {
                now: at(now),
                keep_versions_for: time::Duration::seconds(keep),
                tombstones_for: tombstones.map(time::Duration::seconds),
            };
            let choice = choose_for_purge(&group, retention);
            let (kept, window_start): (Vec<Version>, OffsetDateTime) = match &choice.whole_blob {
                Some(_) => (Vec::new(), at(now) - time::Duration::seconds(tombstones.unwrap_or(0))),
                None => (
                    group
                        .iter()
                        .filter(|v| v.listed.snapshot.as_ref().is_none_or(|s| !choice.snapshots.contains(s)))
                        .cloned()
                        .collect(),
                    at(now) - time::Duration::seconds(keep),
                ),
            };
            let mut probes = vec![window_start];
            for v in &group {
                if let Some(r) = &v.record {
                    probes.extend(parse_rfc3339(&r.backed_up_at));
                    probes.extend(r.deleted_at.as_deref().and_then(parse_rfc3339));
                }
            }
            for probe in probes.into_iter().filter(|p| *p >= window_start) {
                proptest::prop_assert_eq!(
                    restored(&group, probe),
                    restored(&kept, probe),
                    "restore as of {} changed by purging {:?}",
                    stamp(probe),
                    choice
                );
            }
        }
    }

    #[tokio::test]
    async fn versions_are_grouped_by_name_whatever_their_order_within() {
        let mut a = history();
        a.swap(0, 2);
        let mut b = version(None, "2026-11-03T00:00:00Z", None);
        b.listed.name = "b.csv".into();
        let listing = a.into_iter().chain([b]).map(|v| Ok::<_, ()>(v.listed));
        let groups: Vec<Vec<Version>> = by_name(futures::stream::iter(listing))
            .map(|g| g.expect("group"))
            .collect()
            .await;
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].len(), 3);
        assert_eq!(groups[1][0].listed.name, "b.csv");
        let failing = futures::stream::iter(vec![Ok(history()[0].listed.clone()), Err("boom")]);
        let out: Vec<_> = by_name(failing).collect().await;
        assert_eq!(out.len(), 1, "the error ends the stream");
        assert!(out[0].is_err());
    }
}
