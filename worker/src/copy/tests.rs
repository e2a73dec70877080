//! The copy engine's decisions on the in-memory store: what it copies, keeps, skips and
//! refuses, and what it does when a request is paused or fails at a chosen point.

use super::*;
use lakevault_common::record::{BackupRecord, RECORD_TAG};
use lakevault_common::store::memory::{Action, Fault, MemoryStore, Op, World};
use lakevault_common::store::{BlobRef, Condition, StorageErrorCode as Code};
use lakevault_common::wire::{Location, PlannedBackup, WIRE_VERSION};
use std::collections::BTreeMap;

struct Rig {
    world: World,
    src: MemoryStore,
    bak: MemoryStore,
}

fn rig() -> Rig {
    let world = World::new();
    let (src, bak) = (world.account("src"), world.account("bak"));
    src.create_container("data");
    bak.create_container("data");
    Rig { world, src, bak }
}

fn engine(rig: &Rig, options: CopyOptions) -> CopyEngine {
    CopyEngine::with_stores(
        vec![Arc::new(rig.src.clone()), Arc::new(rig.bak.clone())],
        options,
    )
}

fn batch(kind: MessageKind) -> CopyBatch {
    CopyBatch {
        v: WIRE_VERSION,
        kind,
        job: "job-1".into(),
        attempt: 0,
        source: Location {
            account: "src".into(),
            container: "data".into(),
        },
        destination: Location {
            account: "bak".into(),
            container: "data".into(),
        },
        lease: false,
        destination_prefix: None,
        overwrite: false,
        items: Vec::new(),
        handed_back: 0,
        waits: 0,
        source_hierarchical: false,
        apply_access: false,
        carried: Default::default(),
    }
}

/// The item a scan would plan for the source blob as it is now.
async fn planned(rig: &Rig, name: &str) -> CopyItem {
    let p = rig
        .src
        .properties(BlobRef::new("data", name))
        .await
        .expect("source blob");
    CopyItem {
        access: None,
        name: name.into(),
        etag: p.etag,
        size: p.size,
        last_modified: p.last_modified,
        tags: rig
            .src
            .tags(BlobRef::new("data", name))
            .await
            .unwrap_or_default(),
        snapshot: None,
        backup: Default::default(),
    }
}

async fn record(store: &MemoryStore, name: &str) -> BackupRecord {
    let tags = store
        .tags(BlobRef::new("data", name))
        .await
        .expect("backup tags");
    BackupRecord::from_tags(&tags).expect("a record")
}

fn content(store: &MemoryStore, name: &str) -> Option<Vec<u8>> {
    store.content(BlobRef::new("data", name))
}

#[tokio::test]
async fn a_new_blob_is_copied_with_its_record_and_tags() {
    let rig = rig();
    let etag = rig
        .src
        .write("data", "a.csv", b"a,b\n1,2\n", &[("owner", "sales")]);
    let tags = BTreeMap::from([("project".to_string(), "alpha".to_string())]);
    rig.src
        .set_tags(BlobRef::new("data", "a.csv"), &tags, Condition::None)
        .await
        .unwrap();
    let item = planned(&rig, "a.csv").await;
    let outcome = engine(&rig, CopyOptions::default())
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .expect("copied");
    assert_eq!(
        outcome,
        ItemOutcome::Copied {
            bytes: 8,
            source_etag: etag.clone(),
            kept_previous: false
        }
    );
    assert_eq!(
        content(&rig.bak, "a.csv").as_deref(),
        Some(&b"a,b\n1,2\n"[..])
    );
    let props = rig
        .bak
        .properties(BlobRef::new("data", "a.csv"))
        .await
        .unwrap();
    assert_eq!(
        props.metadata.get("owner").map(String::as_str),
        Some("sales")
    );
    let backup_tags = rig.bak.tags(BlobRef::new("data", "a.csv")).await.unwrap();
    assert_eq!(
        backup_tags.get("project").map(String::as_str),
        Some("alpha")
    );
    assert_eq!(record(&rig.bak, "a.csv").await.source_etag, etag);
}

#[tokio::test]
async fn a_redelivered_item_is_already_current_after_one_tag_read() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"x", &[]);
    let item = planned(&rig, "a.csv").await;
    let engine = engine(&rig, CopyOptions::default());
    engine
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .unwrap();
    let (tags_before, copies_before) = (
        rig.world.calls("bak", Op::Tags),
        rig.world.calls("bak", Op::CopyFromUrl),
    );
    let again = engine
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .unwrap();
    assert_eq!(again, ItemOutcome::AlreadyCurrent);
    assert_eq!(rig.world.calls("bak", Op::Tags), tags_before + 1);
    assert_eq!(rig.world.calls("bak", Op::CopyFromUrl), copies_before);
    assert!(
        rig.bak.snapshot_ids("data", "a.csv").is_empty(),
        "nothing to keep"
    );
}

#[tokio::test]
async fn a_source_changed_since_planning_is_copied_at_its_new_version() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"old", &[]);
    let item = planned(&rig, "a.csv").await;
    let newer = rig.src.write("data", "a.csv", b"newer", &[]);
    let outcome = engine(&rig, CopyOptions::default())
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        ItemOutcome::Copied {
            bytes: 5,
            source_etag: newer.clone(),
            kept_previous: false
        }
    );
    assert_eq!(content(&rig.bak, "a.csv").as_deref(), Some(&b"newer"[..]));
    assert_eq!(record(&rig.bak, "a.csv").await.source_etag, newer);
}

#[tokio::test]
async fn a_source_deleted_since_planning_is_gone_and_nothing_is_written() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"x", &[]);
    let item = planned(&rig, "a.csv").await;
    rig.src
        .delete(BlobRef::new("data", "a.csv"), Condition::None, true)
        .await
        .unwrap();
    let outcome = engine(&rig, CopyOptions::default())
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .unwrap();
    assert_eq!(outcome, ItemOutcome::SourceGone);
    assert!(content(&rig.bak, "a.csv").is_none());
}

#[tokio::test]
async fn a_404_of_the_backup_account_is_a_failure_not_a_source_gone() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"x", &[]);
    let item = planned(&rig, "a.csv").await;
    let mut to_missing = batch(MessageKind::Copy);
    to_missing.destination.container = "removed".into();
    let failure = engine(&rig, CopyOptions::default())
        .copy_item(&to_missing, &item)
        .await
        .expect_err("the backup container is missing");
    assert_eq!(failure.class, FailureClass::Permanent, "{failure:?}");
    assert!(
        failure.has_service_code(Code::ContainerNotFound),
        "{failure:?}"
    );
}

#[tokio::test]
async fn the_version_replaced_is_kept_as_a_snapshot() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"v1", &[]);
    let engine = engine(&rig, CopyOptions::default());
    let first = planned(&rig, "a.csv").await;
    engine
        .copy_item(&batch(MessageKind::Copy), &first)
        .await
        .unwrap();
    rig.src.write("data", "a.csv", b"v2", &[]);
    let second = planned(&rig, "a.csv").await;
    let outcome = engine
        .copy_item(&batch(MessageKind::Copy), &second)
        .await
        .unwrap();
    assert!(matches!(
        outcome,
        ItemOutcome::Copied {
            kept_previous: true,
            ..
        }
    ));
    let kept = rig.bak.snapshot_ids("data", "a.csv");
    assert_eq!(kept.len(), 1);
    let old = BlobRef::new("data", "a.csv").at_snapshot(Some(&kept[0]));
    assert_eq!(rig.bak.content(old).as_deref(), Some(&b"v1"[..]));
    assert_eq!(content(&rig.bak, "a.csv").as_deref(), Some(&b"v2"[..]));
}

#[tokio::test]
async fn without_history_the_backup_is_overwritten_in_place() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"v1", &[]);
    let engine = engine(
        &rig,
        CopyOptions {
            keep_history: false,
            ..Default::default()
        },
    );
    let first = planned(&rig, "a.csv").await;
    engine
        .copy_item(&batch(MessageKind::Copy), &first)
        .await
        .unwrap();
    rig.src.write("data", "a.csv", b"v2", &[]);
    let second = planned(&rig, "a.csv").await;
    engine
        .copy_item(&batch(MessageKind::Copy), &second)
        .await
        .unwrap();
    assert!(rig.bak.snapshot_ids("data", "a.csv").is_empty());
    assert_eq!(content(&rig.bak, "a.csv").as_deref(), Some(&b"v2"[..]));
    assert!(
        record(&rig.bak, "a.csv").await.history_in_versions,
        "the record says where the replaced versions are, for restore"
    );
}

#[tokio::test]
async fn a_source_rewritten_while_the_copy_waits_is_followed_to_its_newest_version() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"v1", &[]);
    let item = planned(&rig, "a.csv").await;
    // The copy request is held before the service acts on it; meanwhile a writer
    // replaces the source.
    let gate = rig.world.pause(Op::CopyFromUrl, |f| f.account("bak"));
    let engine = Arc::new(engine(&rig, CopyOptions::default()));
    let copying = {
        let (engine, item) = (engine.clone(), item.clone());
        tokio::spawn(async move { engine.copy_item(&batch(MessageKind::Copy), &item).await })
    };
    gate.arrived().await;
    let v2 = rig.src.write("data", "a.csv", b"v2", &[]);
    gate.release();
    let outcome = copying.await.unwrap().unwrap();
    assert_eq!(
        outcome,
        ItemOutcome::Copied {
            bytes: 2,
            source_etag: v2.clone(),
            kept_previous: false
        },
        "the stale read failed its source condition and the newer version was copied"
    );
    assert_eq!(record(&rig.bak, "a.csv").await.source_etag, v2);
    assert_eq!(content(&rig.bak, "a.csv").as_deref(), Some(&b"v2"[..]));
}

#[tokio::test]
async fn a_throttled_copy_waits_and_writes_nothing() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"x", &[]);
    let item = planned(&rig, "a.csv").await;
    rig.world
        .inject(Fault::on(Op::CopyFromUrl, Action::Fail(503, Code::ServerBusy)).account("bak"));
    let failure = engine(&rig, CopyOptions::default())
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .expect_err("throttled");
    assert_eq!(failure.class, FailureClass::Unavailable);
    assert!(content(&rig.bak, "a.csv").is_none());
}

#[tokio::test]
async fn a_copy_whose_answer_was_lost_is_already_current_when_retried() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"x", &[]);
    let item = planned(&rig, "a.csv").await;
    rig.world.inject(
        Fault::on(Op::CopyFromUrl, Action::FailAfter(500, Code::InternalError)).account("bak"),
    );
    let engine = engine(&rig, CopyOptions::default());
    let failure = engine
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .expect_err("the answer was lost");
    assert_eq!(failure.class, FailureClass::Unavailable);
    let retried = engine
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .unwrap();
    assert_eq!(retried, ItemOutcome::AlreadyCurrent);
    assert!(rig.bak.snapshot_ids("data", "a.csv").is_empty());
}

#[tokio::test]
async fn large_blobs_go_by_blocks_where_put_blob_from_url_is_off() {
    let rig = rig();
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    rig.src
        .write("data", "big.bin", &bytes, &[("origin", "lake")]);
    let item = planned(&rig, "big.bin").await;
    let engine = engine(
        &rig,
        CopyOptions {
            sync_copy_max: 1024,
            put_from_url_max: 0,
            block_size: 3000,
            ..Default::default()
        },
    );
    engine
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .unwrap();
    assert_eq!(content(&rig.bak, "big.bin"), Some(bytes));
    assert_eq!(rig.world.calls("bak", Op::StageBlockFromUrl), 4);
    assert_eq!(rig.world.calls("bak", Op::CopyFromUrl), 0);
    let props = rig
        .bak
        .properties(BlobRef::new("data", "big.bin"))
        .await
        .unwrap();
    assert_eq!(
        props.metadata.get("origin").map(String::as_str),
        Some("lake")
    );
    assert_eq!(record(&rig.bak, "big.bin").await.source_etag, item.etag);
}

#[tokio::test]
async fn a_source_the_service_cannot_read_is_refused_or_streamed_through_the_worker() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"through the worker", &[]);
    let item = planned(&rig, "a.csv").await;
    let unreadable = || {
        Fault::on(
            Op::CopyFromUrl,
            Action::Fail(403, Code::CannotVerifyCopySource),
        )
        .account("bak")
    };
    rig.world.inject(unreadable());
    let failure = engine(&rig, CopyOptions::default())
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .expect_err("the service cannot read the source");
    assert_eq!(failure.class, FailureClass::Permanent);
    assert!(failure.reason.contains("--stream-fallback"), "{failure:?}");
    rig.world.inject(unreadable());
    let outcome = engine(
        &rig,
        CopyOptions {
            stream_fallback: true,
            ..Default::default()
        },
    )
    .copy_item(&batch(MessageKind::Copy), &item)
    .await
    .unwrap();
    assert!(matches!(outcome, ItemOutcome::Copied { bytes: 18, .. }));
    assert_eq!(
        content(&rig.bak, "a.csv").as_deref(),
        Some(&b"through the worker"[..])
    );
}

#[tokio::test]
async fn lease_mode_waits_for_another_writers_lease_and_releases_its_own() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"x", &[]);
    let item = planned(&rig, "a.csv").await;
    let mut leased = batch(MessageKind::Copy);
    leased.lease = true;
    let blob = BlobRef::new("data", "a.csv");
    let other = "11111111-2222-4333-8444-555555555555";
    rig.src
        .acquire_lease(blob, std::time::Duration::from_secs(15), other)
        .await
        .unwrap();
    let engine = engine(&rig, CopyOptions::default());
    let failure = engine
        .copy_item(&leased, &item)
        .await
        .expect_err("leased by another writer");
    assert_eq!(failure.class, FailureClass::Transient);
    rig.src.release_lease(blob, other).await.unwrap();
    assert!(matches!(
        engine.copy_item(&leased, &item).await.unwrap(),
        ItemOutcome::Copied { .. }
    ));
    // Released: another writer can lease the source at once.
    rig.src
        .acquire_lease(blob, std::time::Duration::from_secs(15), other)
        .await
        .expect("the engine's lease was released");
}

fn tombstone_item(etag: &str, name: &str) -> CopyItem {
    let record = BackupRecord {
        source_etag: "0x1".into(),
        source_last_modified: "2026-01-01T00:00:00Z".into(),
        backed_up_at: "2026-01-01T00:00:00Z".into(),
        job: "j".into(),
        deleted_at: None,
        history_in_versions: false,
    };
    CopyItem {
        access: None,
        name: name.into(),
        etag: etag.into(),
        size: 1,
        last_modified: String::new(),
        tags: BTreeMap::from([(RECORD_TAG.to_string(), record.to_tag_value())]),
        snapshot: None,
        backup: Default::default(),
    }
}

#[tokio::test]
async fn a_tombstone_is_written_only_on_the_backup_version_planned() {
    let rig = rig();
    let etag = rig.bak.write("data", "gone.csv", b"x", &[]);
    let engine = engine(&rig, CopyOptions::default());
    let outcome = engine
        .copy_item(
            &batch(MessageKind::Tombstone),
            &tombstone_item(&etag, "gone.csv"),
        )
        .await
        .unwrap();
    assert_eq!(outcome, ItemOutcome::Tombstoned);
    assert!(record(&rig.bak, "gone.csv").await.deleted_at.is_some());
    // The backup blob was rewritten after planning: the mark is not applied.
    let stale = rig.bak.write("data", "other.csv", b"x", &[]);
    rig.bak.write("data", "other.csv", b"y", &[]);
    let outcome = engine
        .copy_item(
            &batch(MessageKind::Tombstone),
            &tombstone_item(&stale, "other.csv"),
        )
        .await
        .unwrap();
    assert_eq!(outcome, ItemOutcome::Superseded);
    assert!(
        rig.bak
            .tags(BlobRef::new("data", "other.csv"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_restore_never_replaces_a_target_blob_without_overwrite() {
    let rig = rig();
    // The backup holds v1 as a snapshot and v2 as the base blob.
    rig.src.write("data", "a.csv", b"v1", &[]);
    let engine = engine(&rig, CopyOptions::default());
    engine
        .copy_item(&batch(MessageKind::Copy), &planned(&rig, "a.csv").await)
        .await
        .unwrap();
    rig.src.write("data", "a.csv", b"v2", &[]);
    engine
        .copy_item(&batch(MessageKind::Copy), &planned(&rig, "a.csv").await)
        .await
        .unwrap();
    let snapshot = rig.bak.snapshot_ids("data", "a.csv").remove(0);
    let v1 = rig
        .bak
        .properties(BlobRef::new("data", "a.csv").at_snapshot(Some(&snapshot)))
        .await
        .unwrap();
    let mut restore = batch(MessageKind::Restore);
    restore.source = Location {
        account: "bak".into(),
        container: "data".into(),
    };
    restore.destination = Location {
        account: "src".into(),
        container: "restored".into(),
    };
    rig.src.create_container("restored");
    let item = CopyItem {
        access: None,
        name: "a.csv".into(),
        etag: v1.etag,
        size: v1.size,
        last_modified: v1.last_modified,
        tags: BTreeMap::new(),
        snapshot: Some(snapshot),
        backup: Default::default(),
    };
    assert!(matches!(
        engine.copy_item(&restore, &item).await.unwrap(),
        ItemOutcome::Copied { .. }
    ));
    let target = BlobRef::new("restored", "a.csv");
    assert_eq!(rig.src.content(target).as_deref(), Some(&b"v1"[..]));
    assert!(
        rig.src.tags(target).await.unwrap().is_empty(),
        "a restored blob carries no backup record"
    );
    rig.src.write("restored", "a.csv", b"someone else's", &[]);
    assert_eq!(
        engine.copy_item(&restore, &item).await.unwrap(),
        ItemOutcome::TargetExists
    );
    assert_eq!(
        rig.src.content(target).as_deref(),
        Some(&b"someone else's"[..])
    );
    restore.overwrite = true;
    engine.copy_item(&restore, &item).await.unwrap();
    assert_eq!(rig.src.content(target).as_deref(), Some(&b"v1"[..]));
}

#[tokio::test]
async fn an_unknown_account_alias_is_refused_with_its_own_code() {
    let rig = rig();
    let mut b = batch(MessageKind::Copy);
    b.source.account = "nope".into();
    let failure = engine(&rig, CopyOptions::default())
        .copy_item(&b, &tombstone_item("0x1", "a"))
        .await
        .expect_err("unknown alias");
    assert!(failure.is(Refusal::UnknownAccount), "{failure:?}");
    assert_eq!(failure.class, FailureClass::Permanent);
}

#[test]
fn block_ids_cover_the_blob_and_have_equal_length() {
    let ids = block_ids("a.bin", "0x1", 300 * 1024 * 1024, 64 * 1024 * 1024);
    assert_eq!(ids.len(), 5);
    assert!(ids.iter().all(|i| i.len() == ids[0].len()));
    let other = block_ids("a.bin", "0x2", 300 * 1024 * 1024, 64 * 1024 * 1024);
    assert_ne!(ids[0], other[0]);
    assert_eq!(block_ids("x", "e", 0, 10).len(), 1);
}

#[test]
fn block_size_grows_to_stay_within_50000_blocks() {
    const MIB: u64 = 1024 * 1024;
    assert_eq!(effective_block_size(300 * MIB, 64 * MIB).unwrap(), 64 * MIB);
    // 4 TiB with 64 MiB blocks would be 65,536 blocks.
    let size = 4 * 1024 * 1024 * MIB;
    let grown = effective_block_size(size, 64 * MIB).unwrap();
    assert!(size.div_ceil(grown) <= MAX_BLOCKS);
    assert_eq!(grown % MIB, 0);
    assert!(grown < 90 * MIB);
    // Exactly at the limit stays as configured.
    assert_eq!(effective_block_size(MAX_BLOCKS * MIB, MIB).unwrap(), MIB);
    assert!(effective_block_size(MAX_BLOCKS * MAX_BLOCK_SIZE + 1, MIB).is_err());
}

fn ten_tags() -> BTreeMap<String, String> {
    (0..10)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect()
}

#[tokio::test]
async fn tags_that_leave_no_room_for_the_record_are_judged_by_the_source_now() {
    let rig = rig();
    let blob = BlobRef::new("data", "tagged.csv");
    rig.src.write("data", "tagged.csv", b"x", &[]);
    rig.src
        .set_tags(blob, &ten_tags(), Condition::None)
        .await
        .unwrap();
    let stale = planned(&rig, "tagged.csv").await;
    let engine = engine(&rig, CopyOptions::default());
    let refused = engine
        .copy_item(&batch(MessageKind::Copy), &stale)
        .await
        .expect_err("ten user tags and the record do not fit");
    assert!(refused.is(Refusal::NoRoomForRecord), "{refused:?}");
    assert_eq!(refused.class, FailureClass::Permanent);
    // Fixed at the source (a new version with one tag); the planned item still carries
    // the ten tags and the old ETag, as a redriven item does.
    let fixed = rig.src.write("data", "tagged.csv", b"fixed", &[]);
    rig.src
        .set_tags(
            blob,
            &BTreeMap::from([("team".to_string(), "data".to_string())]),
            Condition::None,
        )
        .await
        .unwrap();
    let outcome = engine
        .copy_item(&batch(MessageKind::Copy), &stale)
        .await
        .expect("copied at the source's current version");
    assert!(
        matches!(outcome, ItemOutcome::Copied { ref source_etag, .. } if *source_etag == fixed)
    );
    let tags = rig
        .bak
        .tags(BlobRef::new("data", "tagged.csv"))
        .await
        .unwrap();
    assert_eq!(tags.get("team").map(String::as_str), Some("data"));
    assert_eq!(tags.len(), 2, "the user's tag and the record: {tags:?}");
}

#[tokio::test(start_paused = true)]
async fn a_copy_that_outlasts_its_lease_keeps_it_by_renewing() {
    let rig = rig();
    rig.src.write("data", "slow.bin", b"x", &[]);
    let item = planned(&rig, "slow.bin").await;
    let mut leased = batch(MessageKind::Copy);
    leased.lease = true;
    // The copy request is held for far longer than the 30 s lease.
    let gate = rig.world.pause(Op::CopyFromUrl, |f| f.account("bak"));
    let engine = Arc::new(engine(&rig, CopyOptions::default()));
    let copying = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.copy_item(&leased, &item).await })
    };
    gate.arrived().await;
    tokio::time::sleep(std::time::Duration::from_secs(300)).await;
    assert!(
        rig.world.calls("src", Op::RenewLease) >= 10,
        "renewed every 15 s"
    );
    let other = "11111111-2222-4333-8444-555555555555";
    let blob = BlobRef::new("data", "slow.bin");
    let refused = rig
        .src
        .acquire_lease(blob, std::time::Duration::from_secs(15), other)
        .await
        .expect_err("the source is still leased five minutes in");
    assert!(refused.is_conflict(), "{refused}");
    gate.release();
    assert!(matches!(
        copying.await.unwrap().unwrap(),
        ItemOutcome::Copied { .. }
    ));
    rig.src
        .acquire_lease(blob, std::time::Duration::from_secs(15), other)
        .await
        .expect("released once the copy is done");
}

#[tokio::test]
async fn a_large_restore_never_replaces_a_target_that_appears_while_it_copies() {
    let rig = rig();
    let bytes: Vec<u8> = (0..5_000u32).map(|i| (i % 251) as u8).collect();
    rig.bak.write("data", "big.bin", &bytes, &[]);
    let v = rig
        .bak
        .properties(BlobRef::new("data", "big.bin"))
        .await
        .unwrap();
    rig.src.create_container("restored");
    let mut restore = batch(MessageKind::Restore);
    restore.source = Location {
        account: "bak".into(),
        container: "data".into(),
    };
    restore.destination = Location {
        account: "src".into(),
        container: "restored".into(),
    };
    let item = CopyItem {
        access: None,
        name: "big.bin".into(),
        etag: v.etag,
        size: v.size,
        last_modified: v.last_modified,
        tags: BTreeMap::new(),
        snapshot: None,
        backup: Default::default(),
    };
    // The block path: the target is checked, blocks are staged, then committed. Someone
    // writes the target after the check, while the commit waits.
    let gate = rig.world.pause(Op::CommitBlocks, |f| f.account("src"));
    let engine = Arc::new(engine(
        &rig,
        CopyOptions {
            sync_copy_max: 1024,
            put_from_url_max: 0,
            block_size: 2048,
            ..Default::default()
        },
    ));
    let restoring = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.copy_item(&restore, &item).await })
    };
    gate.arrived().await;
    rig.src
        .write("restored", "big.bin", b"written meanwhile", &[]);
    gate.release();
    assert_eq!(
        restoring.await.unwrap().unwrap(),
        ItemOutcome::TargetExists,
        "the commit is conditional on the target being absent"
    );
    assert_eq!(
        rig.src
            .content(BlobRef::new("restored", "big.bin"))
            .as_deref(),
        Some(&b"written meanwhile"[..])
    );
}

// Conditional writes (I2: the base backup blob holds the newest version any worker
// copied; I1: every version reported copied stays restorable).

/// The item for a source blob, as a full scan would plan it against the backup as it is.
async fn planned_against_backup(rig: &Rig, name: &str) -> CopyItem {
    let mut item = planned(rig, name).await;
    item.backup = match rig.bak.properties(BlobRef::new("data", name)).await {
        Ok(p) => PlannedBackup::Etag(p.etag),
        Err(_) => PlannedBackup::Absent,
    };
    item
}

/// The versions the backup holds for a name, oldest first: snapshots, then the base blob.
fn history(rig: &Rig, name: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = rig
        .bak
        .snapshot_ids("data", name)
        .iter()
        .filter_map(|id| {
            rig.bak
                .content(BlobRef::new("data", name).at_snapshot(Some(id)))
        })
        .collect();
    out.extend(content(&rig.bak, name));
    out
}

#[tokio::test]
async fn a_slow_block_copy_of_an_older_version_never_lands_on_top_of_a_newer_one() {
    let rig = rig();
    let v1: Vec<u8> = vec![1; 5000];
    let v2: Vec<u8> = vec![2; 5000];
    rig.src.write("data", "big.bin", &v1, &[]);
    let old = planned_against_backup(&rig, "big.bin").await;
    let options = CopyOptions {
        sync_copy_max: 1024,
        put_from_url_max: 0,
        block_size: 3000,
        ..Default::default()
    };
    let engine = Arc::new(engine(&rig, options));
    // Worker A has staged v1's blocks and is about to commit them...
    let gate = rig
        .world
        .pause(Op::CommitBlocks, |f| f.account("bak").times(Some(1)));
    let slow = {
        let (engine, old) = (engine.clone(), old.clone());
        tokio::spawn(async move { engine.copy_item(&batch(MessageKind::Copy), &old).await })
    };
    gate.arrived().await;
    // ...when the source is rewritten and worker B copies v2 to the end.
    let v2_etag = rig.src.write("data", "big.bin", &v2, &[]);
    let new = planned_against_backup(&rig, "big.bin").await;
    let fast = engine
        .copy_item(&batch(MessageKind::Copy), &new)
        .await
        .expect("v2 copied");
    assert!(matches!(fast, ItemOutcome::Copied { .. }), "{fast:?}");
    gate.release();
    let late = slow.await.unwrap().expect("the slow copy settles");
    assert_eq!(
        late,
        ItemOutcome::AlreadyCurrent,
        "A's commit was conditional on the backup as planned (absent), failed, and A judged again"
    );
    assert_eq!(content(&rig.bak, "big.bin"), Some(v2));
    assert_eq!(record(&rig.bak, "big.bin").await.source_etag, v2_etag);
}

#[tokio::test]
async fn two_workers_replacing_the_same_version_both_keep_it_and_the_newest_wins() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"v1", &[]);
    let engine = Arc::new(engine(&rig, CopyOptions::default()));
    let first = planned_against_backup(&rig, "a.csv").await;
    engine
        .copy_item(&batch(MessageKind::Copy), &first)
        .await
        .unwrap();
    // Two plans saw v1 in the backup; the source moved to v2, then v3.
    rig.src.write("data", "a.csv", b"v2", &[]);
    let to_v2 = planned_against_backup(&rig, "a.csv").await;
    // Worker A, copying v2, is held just before its copy request.
    let gate = rig
        .world
        .pause(Op::CopyFromUrl, |f| f.account("bak").times(Some(1)));
    let slow = {
        let (engine, item) = (engine.clone(), to_v2.clone());
        tokio::spawn(async move { engine.copy_item(&batch(MessageKind::Copy), &item).await })
    };
    gate.arrived().await;
    let v3 = rig.src.write("data", "a.csv", b"v3", &[]);
    let to_v3 = planned_against_backup(&rig, "a.csv").await;
    assert_eq!(to_v3.backup, to_v2.backup, "both planned against v1's copy");
    let fast = engine
        .copy_item(&batch(MessageKind::Copy), &to_v3)
        .await
        .unwrap();
    assert!(matches!(
        fast,
        ItemOutcome::Copied {
            kept_previous: true,
            ..
        }
    ));
    gate.release();
    let late = slow.await.unwrap().unwrap();
    assert_eq!(late, ItemOutcome::AlreadyCurrent, "{late:?}");
    assert_eq!(record(&rig.bak, "a.csv").await.source_etag, v3);
    // Both workers kept v1 before replacing it: neither can know that the other did
    // without reading the history. A duplicate, never a loss.
    assert_eq!(
        history(&rig, "a.csv"),
        vec![b"v1".to_vec(), b"v1".to_vec(), b"v3".to_vec()],
    );
}

#[tokio::test]
async fn a_worker_that_finds_the_backup_replaced_under_it_judges_again_without_keeping_more() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"v1", &[]);
    let engine = Arc::new(engine(&rig, CopyOptions::default()));
    let first = planned_against_backup(&rig, "a.csv").await;
    engine
        .copy_item(&batch(MessageKind::Copy), &first)
        .await
        .unwrap();
    rig.src.write("data", "a.csv", b"v2", &[]);
    let to_v2 = planned_against_backup(&rig, "a.csv").await;
    // Worker A is held before it keeps v1; worker B copies v3 to the end.
    let gate = rig
        .world
        .pause(Op::Snapshot, |f| f.account("bak").times(Some(1)));
    let slow = {
        let (engine, item) = (engine.clone(), to_v2.clone());
        tokio::spawn(async move { engine.copy_item(&batch(MessageKind::Copy), &item).await })
    };
    gate.arrived().await;
    let v3 = rig.src.write("data", "a.csv", b"v3", &[]);
    let to_v3 = planned_against_backup(&rig, "a.csv").await;
    engine
        .copy_item(&batch(MessageKind::Copy), &to_v3)
        .await
        .unwrap();
    gate.release();
    assert_eq!(slow.await.unwrap().unwrap(), ItemOutcome::AlreadyCurrent);
    assert_eq!(record(&rig.bak, "a.csv").await.source_etag, v3);
    assert_eq!(
        history(&rig, "a.csv"),
        vec![b"v1".to_vec(), b"v3".to_vec()],
        "A's snapshot under v1's ETag failed; it followed the source to v3 and found it copied"
    );
}

#[tokio::test]
async fn two_snapshots_copied_out_of_order_leave_the_newer_on_top() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"v1", &[]);
    let engine = Arc::new(engine(&rig, CopyOptions::default()));
    let older = snapshot_item(&rig, "a.csv").await;
    let v2 = rig.src.write("data", "a.csv", b"v2", &[]);
    let newer = snapshot_item(&rig, "a.csv").await;
    // Both were planned with no backup blob; the older one's copy is held...
    let gate = rig
        .world
        .pause(Op::CopyFromUrl, |f| f.account("bak").times(Some(1)));
    let slow = {
        let (engine, item) = (engine.clone(), older.clone());
        tokio::spawn(async move { engine.copy_item(&batch(MessageKind::Copy), &item).await })
    };
    gate.arrived().await;
    // ...while the newer one is copied.
    engine
        .copy_item(&batch(MessageKind::Copy), &newer)
        .await
        .unwrap();
    gate.release();
    assert_eq!(slow.await.unwrap().unwrap(), ItemOutcome::Superseded);
    assert_eq!(content(&rig.bak, "a.csv").as_deref(), Some(&b"v2"[..]));
    assert_eq!(record(&rig.bak, "a.csv").await.source_etag, v2);
}

/// A source snapshot of `content` planned now, as snapshot mode plans it.
async fn snapshot_item(rig: &Rig, name: &str) -> CopyItem {
    let mut item = planned_against_backup(rig, name).await;
    let taken = rig
        .src
        .snapshot(BlobRef::new("data", name), Condition::None)
        .await
        .unwrap();
    item.etag = taken.etag;
    item.last_modified = taken.last_modified;
    item.snapshot = Some(taken.snapshot);
    item
}

#[tokio::test]
async fn a_redriven_old_snapshot_never_replaces_a_newer_backup() {
    for hint in ["as planned", "unknown"] {
        let rig = rig();
        rig.src.write("data", "a.csv", b"v1", &[]);
        let engine = engine(&rig, CopyOptions::default());
        let mut old = snapshot_item(&rig, "a.csv").await;
        if hint == "unknown" {
            old.backup = PlannedBackup::Unknown;
        }
        // The item fails (say, poisoned); meanwhile the source moves on and v2 is backed up.
        // Rewriting within the same second leaves the two versions' order unclear from
        // Last-Modified alone; the engine must still get it right.
        let v2 = rig.src.write("data", "a.csv", b"v2", &[]);
        let newer = snapshot_item(&rig, "a.csv").await;
        engine
            .copy_item(&batch(MessageKind::Copy), &newer)
            .await
            .unwrap();
        let before = rig.world.calls("bak", Op::Snapshot);
        let redriven = engine
            .copy_item(&batch(MessageKind::Copy), &old)
            .await
            .unwrap();
        assert_eq!(redriven, ItemOutcome::Superseded, "{hint}");
        assert_eq!(
            content(&rig.bak, "a.csv").as_deref(),
            Some(&b"v2"[..]),
            "{hint}"
        );
        assert_eq!(record(&rig.bak, "a.csv").await.source_etag, v2, "{hint}");
        assert_eq!(rig.world.calls("bak", Op::Snapshot), before, "{hint}");
        assert!(
            rig.src.snapshot_ids("data", "a.csv").is_empty(),
            "{hint}: both source snapshots deleted once their items were final"
        );
    }
}

#[test]
fn a_record_is_ordered_against_a_snapshot_by_last_modified() {
    let record = |etag: &str, lm: &str| BackupRecord {
        source_etag: etag.into(),
        source_last_modified: lm.into(),
        backed_up_at: "2026-01-01T00:00:00Z".into(),
        job: "j".into(),
        deleted_at: None,
        history_in_versions: false,
    };
    let r = record("e2", "2026-05-01T10:00:05Z");
    assert_eq!(
        backup::order(&r, "e2", "2026-05-01T10:00:05Z"),
        backup::Order::Same
    );
    assert_eq!(
        backup::order(&r, "e1", "2026-05-01T10:00:04Z"),
        backup::Order::BackupNewer
    );
    assert_eq!(
        backup::order(&r, "e3", "2026-05-01T10:00:06Z"),
        backup::Order::BackupOlder
    );
    assert_eq!(
        backup::order(&r, "e3", "2026-05-01T10:00:05Z"),
        backup::Order::Unclear
    );
    assert_eq!(backup::order(&r, "e3", "yesterday"), backup::Order::Unclear);
}

#[tokio::test]
async fn a_planned_new_blob_costs_one_backup_request_and_a_changed_one_two() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"v1", &[]);
    let engine = engine(&rig, CopyOptions::default());
    // Requests of both accounts made by one item's copy.
    let cost = |item: CopyItem| {
        let engine = &engine;
        let world = &rig.world;
        async move {
            let before = world.requests("bak") + world.requests("src");
            engine
                .copy_item(&batch(MessageKind::Copy), &item)
                .await
                .unwrap();
            world.requests("bak") + world.requests("src") - before
        }
    };
    let new = planned_against_backup(&rig, "a.csv").await;
    assert_eq!(new.backup, PlannedBackup::Absent);
    // The read SAS is signed locally, not requested.
    assert_eq!(
        cost(new).await,
        1,
        "Copy Blob From URL (If-None-Match: *) only"
    );
    rig.src.write("data", "a.csv", b"v2", &[]);
    let changed = planned_against_backup(&rig, "a.csv").await;
    assert_eq!(
        cost(changed).await,
        2,
        "Snapshot Blob (If-Match) and Copy Blob From URL (If-Match)"
    );
    assert_eq!(history(&rig, "a.csv"), vec![b"v1".to_vec(), b"v2".to_vec()]);
    // An incremental plan does not list the backup: one tag read says what it holds,
    // and the snapshot's answer gives the ETag the copy is conditional on.
    rig.src.write("data", "a.csv", b"v3", &[]);
    let incremental = planned(&rig, "a.csv").await;
    assert_eq!(cost(incremental).await, 3);
    assert_eq!(
        history(&rig, "a.csv"),
        vec![b"v1".to_vec(), b"v2".to_vec(), b"v3".to_vec()]
    );
}

#[tokio::test]
async fn a_stale_plan_is_read_again_and_judged_again() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"v1", &[]);
    let engine = engine(&rig, CopyOptions::default());
    // Planned as new, but another job copied it first.
    let new = planned_against_backup(&rig, "a.csv").await;
    engine
        .copy_item(&batch(MessageKind::Copy), &new)
        .await
        .unwrap();
    assert_eq!(
        engine
            .copy_item(&batch(MessageKind::Copy), &new)
            .await
            .unwrap(),
        ItemOutcome::AlreadyCurrent
    );
    // Planned against v1's copy, but v2 was copied meanwhile: nothing kept twice.
    rig.src.write("data", "a.csv", b"v2", &[]);
    let changed = planned_against_backup(&rig, "a.csv").await;
    engine
        .copy_item(&batch(MessageKind::Copy), &changed)
        .await
        .unwrap();
    assert_eq!(
        engine
            .copy_item(&batch(MessageKind::Copy), &changed)
            .await
            .unwrap(),
        ItemOutcome::AlreadyCurrent
    );
    assert_eq!(history(&rig, "a.csv"), vec![b"v1".to_vec(), b"v2".to_vec()]);
    // A blob an operator put under the name after planning (replacing v2's copy: that
    // is the operator's doing) is kept, then replaced.
    rig.bak.write("data", "a.csv", b"operator's", &[]);
    rig.src.write("data", "a.csv", b"v3", &[]);
    let mut stale = planned(&rig, "a.csv").await;
    stale.backup = changed.backup.clone();
    engine
        .copy_item(&batch(MessageKind::Copy), &stale)
        .await
        .unwrap();
    assert_eq!(
        history(&rig, "a.csv"),
        vec![b"v1".to_vec(), b"operator's".to_vec(), b"v3".to_vec()]
    );
}

#[tokio::test]
async fn snapshot_mode_deletes_the_source_snapshot_on_every_final_outcome() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"v1", &[]);
    let engine = engine(&rig, CopyOptions::default());
    let item = snapshot_item(&rig, "a.csv").await;
    engine
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .unwrap();
    assert!(rig.src.snapshot_ids("data", "a.csv").is_empty(), "copied");
    // Re-planned by an incremental run inside the safety margin: already current, and its
    // snapshot goes too.
    let mut again = snapshot_item(&rig, "a.csv").await;
    again.backup = PlannedBackup::Unknown;
    assert_eq!(
        engine
            .copy_item(&batch(MessageKind::Copy), &again)
            .await
            .unwrap(),
        ItemOutcome::AlreadyCurrent
    );
    assert!(rig.src.snapshot_ids("data", "a.csv").is_empty(), "current");
    // A failed item keeps its snapshot: the retry copies from it.
    rig.src.write("data", "a.csv", b"v2", &[]);
    let failing = snapshot_item(&rig, "a.csv").await;
    rig.world
        .inject(Fault::on(Op::CopyFromUrl, Action::Fail(503, Code::ServerBusy)).account("bak"));
    engine
        .copy_item(&batch(MessageKind::Copy), &failing)
        .await
        .expect_err("throttled");
    assert_eq!(rig.src.snapshot_ids("data", "a.csv").len(), 1, "failed");
}

#[tokio::test]
async fn a_block_copy_that_outlasts_its_source_sas_signs_each_range_afresh() {
    let rig = rig();
    let bytes: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
    rig.src.write("data", "big.bin", &bytes, &[]);
    let item = planned(&rig, "big.bin").await;
    let engine = Arc::new(engine(
        &rig,
        CopyOptions {
            sync_copy_max: 1024,
            put_from_url_max: 0,
            block_size: 3000,
            block_parallelism: 1,
            source_sas_validity: std::time::Duration::from_secs(3600),
            ..Default::default()
        },
    ));
    // The first range takes two hours (a slow link, a huge range): the read SAS it was
    // signed with expires meanwhile.
    let gate = rig
        .world
        .pause(Op::StageBlockFromUrl, |f| f.account("bak").times(Some(1)));
    let copying = {
        let (engine, item) = (engine.clone(), item.clone());
        tokio::spawn(async move { engine.copy_item(&batch(MessageKind::Copy), &item).await })
    };
    gate.arrived().await;
    rig.world
        .advance_clock(std::time::Duration::from_secs(2 * 3600));
    gate.release();
    let outcome = copying
        .await
        .unwrap()
        .expect("every range presented a valid SAS");
    assert!(matches!(outcome, ItemOutcome::Copied { .. }), "{outcome:?}");
    assert_eq!(content(&rig.bak, "big.bin"), Some(bytes));
    assert_eq!(
        rig.world.calls("src", Op::CopySource),
        3,
        "one signature per range"
    );
}

#[tokio::test]
async fn a_worker_writes_only_where_its_config_lets_each_kind_of_work_write() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"lake", &[]);
    rig.bak.write("data", "a.csv", b"backup", &[]);
    let policy = WritePolicy {
        backup_source: "src".into(),
        backup_destination: "bak".into(),
        restore_targets: vec!["src".into()],
        restore_overwrite: false,
    };
    let engine = engine(&rig, CopyOptions::default()).with_policy(policy);
    let refused = |batch: CopyBatch, item: CopyItem| {
        let engine = &engine;
        async move {
            let f = engine.copy_item(&batch, &item).await.expect_err("refused");
            assert!(f.is(Refusal::NotAllowedHere), "{f:?}");
            assert_eq!(f.class, FailureClass::Permanent);
        }
    };
    // A "backup" from the backup into the source would overwrite the lake.
    let mut reversed = batch(MessageKind::Copy);
    std::mem::swap(&mut reversed.source, &mut reversed.destination);
    let mut item = planned(&rig, "a.csv").await;
    item.etag = rig
        .bak
        .properties(BlobRef::new("data", "a.csv"))
        .await
        .unwrap()
        .etag;
    refused(reversed, item.clone()).await;
    // A restore that overwrites, or reads from anywhere but the backup.
    let mut restore = batch(MessageKind::Restore);
    std::mem::swap(&mut restore.source, &mut restore.destination);
    restore.overwrite = true;
    refused(restore.clone(), item.clone()).await;
    let mut from_the_lake = restore.clone();
    from_the_lake.overwrite = false;
    from_the_lake.source.account = "src".into();
    refused(from_the_lake, item.clone()).await;
    assert_eq!(content(&rig.src, "a.csv").as_deref(), Some(&b"lake"[..]));
    // What the config allows runs: a restore that only adds.
    restore.overwrite = false;
    assert_eq!(
        engine.copy_item(&restore, &item).await.unwrap(),
        ItemOutcome::TargetExists
    );
    assert_eq!(content(&rig.src, "a.csv").as_deref(), Some(&b"lake"[..]));
}

/// Two deliveries of one changed blob: the first is held at its Snapshot Blob (it keeps
/// whatever the backup holds by then) while the second copies the version. The first then
/// writes the same version again over the second's copy: its record must not be stamped
/// before the second's, or a restore as of now would take the kept copy instead of the base
/// blob, and purge would age the kept copy from the wrong time.
#[tokio::test]
async fn backup_times_follow_the_order_the_writes_land_in() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"v1", &[]);
    let engine = Arc::new(engine(&rig, CopyOptions::default()));
    let first = planned(&rig, "a.csv").await;
    engine
        .copy_item(&batch(MessageKind::Copy), &first)
        .await
        .unwrap();
    rig.src.write("data", "a.csv", b"v2", &[]);
    let item = planned(&rig, "a.csv").await;
    let gate = rig
        .world
        .pause(Op::Snapshot, |f| f.account("bak").name("a.csv"));
    let held = {
        let (engine, item) = (engine.clone(), item.clone());
        tokio::spawn(async move { engine.copy_item(&batch(MessageKind::Copy), &item).await })
    };
    gate.arrived().await;
    rig.world.clear_faults();
    engine
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .unwrap();
    gate.release();
    held.await.unwrap().unwrap();
    let base = record(&rig.bak, "a.csv").await;
    for id in rig.bak.snapshot_ids("data", "a.csv") {
        let tags = rig
            .bak
            .tags(BlobRef::new("data", "a.csv").at_snapshot(Some(&id)))
            .await
            .unwrap();
        let kept = BackupRecord::from_tags(&tags).expect("a record");
        let at = |r: &BackupRecord| lakevault_common::record::parse_rfc3339(&r.backed_up_at);
        assert!(
            at(&kept) <= at(&base),
            "a kept version ({}) is stamped after the base blob ({})",
            kept.backed_up_at,
            base.backed_up_at
        );
    }
}

/// A copy is done, but the source snapshot it came from cannot be deleted now (the source
/// account throttles): the item is not final, or the snapshot would outlive it on the
/// production lake (I6). It waits, and its next try finds the backup current and deletes
/// the snapshot.
#[tokio::test]
async fn a_source_snapshot_that_cannot_be_deleted_keeps_its_item_open() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"v1", &[]);
    let engine = engine(&rig, CopyOptions::default());
    let item = snapshot_item(&rig, "a.csv").await;
    rig.world
        .inject(Fault::on(Op::Delete, Action::Fail(503, Code::ServerBusy)).account("src"));
    let failure = engine
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .expect_err("the snapshot is still there");
    assert_eq!(failure.class, FailureClass::Unavailable, "{failure:?}");
    assert_eq!(rig.src.snapshot_ids("data", "a.csv").len(), 1);
    assert_eq!(content(&rig.bak, "a.csv").as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        engine
            .copy_item(&batch(MessageKind::Copy), &item)
            .await
            .unwrap(),
        ItemOutcome::AlreadyCurrent
    );
    assert!(rig.src.snapshot_ids("data", "a.csv").is_empty());
}

/// A source with a hierarchical namespace has no index tags and refuses to read them: a
/// copy that follows the source to a newer version (which re-reads the tags of a flat
/// source) reads none, and the backup blob carries only the record.
#[tokio::test]
async fn a_hierarchical_source_is_copied_without_reading_index_tags() {
    let rig = rig();
    rig.src.write("data", "dir/a.csv", b"v1", &[]);
    let item = planned(&rig, "dir/a.csv").await;
    let v2 = rig.src.write("data", "dir/a.csv", b"v2", &[]);
    let planning_reads = rig.world.calls("src", Op::Tags);
    rig.world.inject(
        Fault::on(
            Op::Tags,
            Action::Fail(400, Code::InvalidQueryParameterValue),
        )
        .account("src"),
    );
    let hns = CopyBatch {
        source_hierarchical: true,
        ..batch(MessageKind::Copy)
    };
    let outcome = engine(&rig, CopyOptions::default())
        .copy_item(&hns, &item)
        .await
        .expect("copied");
    assert!(
        matches!(&outcome, ItemOutcome::Copied { source_etag, .. } if *source_etag == v2),
        "{outcome:?}"
    );
    assert_eq!(rig.world.calls("src", Op::Tags), planning_reads);
    let tags = rig
        .bak
        .tags(BlobRef::new("data", "dir/a.csv"))
        .await
        .unwrap();
    assert_eq!(tags.keys().collect::<Vec<_>>(), [RECORD_TAG]);
}

/// The backup service answers `CannotVerifyCopySource` because the source blob was deleted
/// while it read it, and by the time the worker looks the blob is back with new content.
/// That is a changed source, not a path the service cannot take: the copy follows it to
/// its new version instead of poisoning the item as unreachable.
#[tokio::test]
async fn a_source_replaced_while_the_service_read_it_is_followed_not_poisoned() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"v1", &[]);
    let item = planned(&rig, "a.csv").await;
    let v2 = rig.src.write("data", "a.csv", b"v2", &[]);
    rig.world.inject(
        Fault::on(
            Op::CopyFromUrl,
            Action::Fail(404, Code::CannotVerifyCopySource),
        )
        .account("bak"),
    );
    let outcome = engine(&rig, CopyOptions::default())
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .expect("followed to the new version");
    assert!(
        matches!(&outcome, ItemOutcome::Copied { source_etag, .. } if *source_etag == v2),
        "{outcome:?}"
    );
    assert_eq!(content(&rig.bak, "a.csv").as_deref(), Some(&b"v2"[..]));
}

/// Azurite checks a copy's source with a read, then copies it: a source deleted in
/// between is answered `404 BlobNotFound` by the backup account. That 404 names no side;
/// only a read of the source proves the blob gone, and then the item is done.
#[tokio::test]
async fn a_blob_not_found_from_the_copy_of_a_deleted_source_is_source_gone() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"v1", &[]);
    let item = planned(&rig, "a.csv").await;
    rig.src
        .delete(BlobRef::new("data", "a.csv"), Condition::None, true)
        .await
        .unwrap();
    rig.world
        .inject(Fault::on(Op::CopyFromUrl, Action::Fail(404, Code::BlobNotFound)).account("bak"));
    let outcome = engine(&rig, CopyOptions::default())
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .expect("the source read proves it gone");
    assert!(matches!(outcome, ItemOutcome::SourceGone), "{outcome:?}");
}

/// The same 404 while the source is still there at the planned version: the backup blob
/// the write was conditional on may have gone (purge, an operator). Read both again and
/// decide again; the item is copied, not poisoned.
#[tokio::test]
async fn a_blob_not_found_from_the_copy_of_a_live_source_is_judged_again() {
    let rig = rig();
    rig.src.write("data", "a.csv", b"v1", &[]);
    let item = planned(&rig, "a.csv").await;
    rig.world
        .inject(Fault::on(Op::CopyFromUrl, Action::Fail(404, Code::BlobNotFound)).account("bak"));
    let outcome = engine(&rig, CopyOptions::default())
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .expect("copied on the second round");
    assert!(matches!(outcome, ItemOutcome::Copied { .. }), "{outcome:?}");
    assert_eq!(content(&rig.bak, "a.csv").as_deref(), Some(&b"v1"[..]));
}

fn hns_access(acl: &str) -> lakevault_common::access::PathAccess {
    lakevault_common::access::PathAccess {
        directory: false,
        owner: "4f1c2b1e-0000-4000-8000-000000000001".into(),
        group: "$superuser".into(),
        permissions: "rw-r-----+".into(),
        acl: acl.into(),
    }
}

/// An HNS path's access control goes with its version into the backup's tags. A change of
/// the ACL alone (same ETag) is backed up as a new version, and the version it replaces
/// is kept with the ACL it had.
#[tokio::test]
async fn access_control_is_kept_with_each_version_and_a_change_of_it_alone_is_backed_up() {
    use lakevault_common::access::{KeptAccess, kept_access};
    let rig = rig();
    rig.src.write("data", "dir/a.csv", b"v1", &[]);
    let mut hns = batch(MessageKind::Copy);
    hns.source_hierarchical = true;
    let before = hns_access("user::rw-,user:ab12:r--,group::r--,mask::r--,other::---");
    let after = hns_access("user::rw-,user:ab12:rw-,group::r--,mask::rw-,other::---");
    let engine = engine(&rig, CopyOptions::default());
    let first = CopyItem {
        access: Some(Box::new(before.clone())),
        ..planned(&rig, "dir/a.csv").await
    };
    engine.copy_item(&hns, &first).await.expect("copied");
    let blob = BlobRef::new("data", "dir/a.csv");
    let tags = rig.bak.tags(blob).await.unwrap();
    assert_eq!(kept_access(&tags), KeptAccess::Kept(before.clone()));
    // Planned again as it is: nothing to do.
    let again = engine.copy_item(&hns, &first).await.expect("judged");
    assert!(matches!(again, ItemOutcome::AlreadyCurrent), "{again:?}");
    // The ACL alone changed.
    let changed = CopyItem {
        access: Some(Box::new(after.clone())),
        ..first.clone()
    };
    let outcome = engine.copy_item(&hns, &changed).await.expect("copied");
    assert!(
        matches!(
            outcome,
            ItemOutcome::Copied {
                kept_previous: true,
                ..
            }
        ),
        "{outcome:?}"
    );
    let tags = rig.bak.tags(blob).await.unwrap();
    assert_eq!(kept_access(&tags), KeptAccess::Kept(after));
    let kept = rig.bak.snapshot_ids("data", "dir/a.csv");
    assert_eq!(kept.len(), 1);
    let old = rig
        .bak
        .tags(blob.at_snapshot(Some(&kept[0])))
        .await
        .unwrap();
    assert_eq!(kept_access(&old), KeptAccess::Kept(before));
}

/// A restore batch from the backup's `data` into the source account's `restored`, onto a
/// target with a hierarchical namespace (`apply_access`), and the item of the backup's
/// current version of `name` with the access control `access`.
async fn hns_restore(
    rig: &Rig,
    name: &str,
    access: lakevault_common::access::PathAccess,
) -> (CopyBatch, CopyItem) {
    let mut restore = batch(MessageKind::Restore);
    restore.source = Location {
        account: "bak".into(),
        container: "data".into(),
    };
    restore.destination = Location {
        account: "src".into(),
        container: "restored".into(),
    };
    restore.apply_access = true;
    rig.src.create_container("restored");
    let p = rig
        .bak
        .properties(BlobRef::new("data", name))
        .await
        .expect("backup blob");
    let item = CopyItem {
        access: Some(Box::new(access)),
        name: name.into(),
        etag: p.etag,
        size: p.size,
        last_modified: p.last_modified,
        tags: BTreeMap::new(),
        snapshot: None,
        backup: Default::default(),
    };
    (restore, item)
}

/// Into an HNS target, a directory is created as a directory (also an empty one) and each
/// path gets the owner, group and ACL recorded with its version.
#[tokio::test]
async fn a_restore_into_a_hierarchical_namespace_creates_directories_and_sets_access_control() {
    let rig = rig();
    rig.bak
        .write("data", "empty", b"", &[("hdi_isfolder", "true")]);
    rig.bak.write("data", "empty/../x.csv", b"x", &[]);
    let engine = engine(&rig, CopyOptions::default());
    let mut dir = hns_access(
        "user::rwx,group::r-x,other::---,default:user::rwx,default:group::r-x,default:other::---",
    );
    dir.directory = true;
    let (restore, item) = hns_restore(&rig, "empty", dir.clone()).await;
    let outcome = engine.copy_item(&restore, &item).await.expect("created");
    assert!(matches!(outcome, ItemOutcome::Copied { .. }), "{outcome:?}");
    assert_eq!(rig.world.calls("src", Op::CreateDirectory), 1);
    assert_eq!(
        rig.world.calls("src", Op::CopyFromUrl),
        0,
        "no data to copy"
    );
    assert_eq!(
        rig.src.access_of("restored", "empty"),
        Some((
            Some(dir.owner.clone()),
            Some(dir.group.clone()),
            dir.acl.clone()
        ))
    );
    // Again (a redelivery, or the directory made by a file restored below it first):
    // it exists, and still gets its recorded access control.
    let again = engine.copy_item(&restore, &item).await.expect("exists");
    assert_eq!(again, ItemOutcome::TargetExists);
    assert_eq!(rig.world.calls("src", Op::SetAccessControl), 2);

    let file = hns_access("user::rw-,user:ab12:r--,group::r--,mask::r--,other::---");
    let (restore, item) = hns_restore(&rig, "empty/../x.csv", file.clone()).await;
    let outcome = engine.copy_item(&restore, &item).await.expect("copied");
    assert!(matches!(outcome, ItemOutcome::Copied { .. }), "{outcome:?}");
    assert_eq!(
        rig.src
            .content(BlobRef::new("restored", "empty/../x.csv"))
            .as_deref(),
        Some(&b"x"[..])
    );
    assert_eq!(
        rig.src.access_of("restored", "empty/../x.csv"),
        Some((Some(file.owner), Some(file.group), file.acl))
    );
    // `--no-acls`: the directory is still a directory, and nothing is set.
    let (mut restore, item) = hns_restore(&rig, "empty", dir).await;
    restore.apply_access = false;
    restore.destination.container = "plain".into();
    rig.src.create_container("plain");
    engine.copy_item(&restore, &item).await.expect("created");
    assert_eq!(rig.world.calls("src", Op::CreateDirectory), 3);
    assert_eq!(rig.src.access_of("plain", "empty"), None);
}

/// A target that refuses the owner (no super-user rights) still gets the data and the ACL;
/// the item fails with a reason that says what was not restored and what to do.
#[tokio::test]
async fn a_target_that_refuses_the_owner_gets_the_data_and_the_acl_and_the_item_says_so() {
    let rig = rig();
    rig.bak.write("data", "a.csv", b"a", &[]);
    let engine = engine(&rig, CopyOptions::default());
    let access = hns_access("user::rw-,group::r--,other::---");
    let (restore, item) = hns_restore(&rig, "a.csv", access.clone()).await;
    rig.world.inject(
        Fault::on(
            Op::SetAccessControl,
            Action::Fail(
                403,
                Code::UnknownValue("AuthorizationPermissionMismatch".into()),
            ),
        )
        .account("src"),
    );
    let failure = engine
        .copy_item(&restore, &item)
        .await
        .expect_err("the owner was not restored");
    assert_eq!(failure.class, FailureClass::Permanent, "{failure:?}");
    assert!(
        failure.reason.contains("owner") && failure.reason.contains("--no-acls"),
        "{}",
        failure.reason
    );
    assert_eq!(
        rig.src
            .content(BlobRef::new("restored", "a.csv"))
            .as_deref(),
        Some(&b"a"[..])
    );
    assert_eq!(
        rig.src.access_of("restored", "a.csv"),
        Some((None, None, access.acl))
    );
}

/// The data landed but setting its ACL failed (an outage): the item is tried again, finds
/// the target holding the very content it restores (size and Content-MD5), and sets the
/// ACL then. A file someone else wrote there is left alone, ACL included.
#[tokio::test]
async fn a_retried_restore_sets_the_acl_on_its_own_earlier_write_and_nowhere_else() {
    use lakevault_common::store::ContentHeaders;
    use sha2::Digest;
    let rig = rig();
    // Any 16 bytes that follow the content stand for its MD5 here.
    let md5 = |b: &[u8]| Some(sha2::Sha256::digest(b)[..16].to_vec());
    for (name, body) in [("a.csv", &b"a"[..]), ("b.csv", &b"b"[..])] {
        rig.bak.write_with_headers(
            "data",
            name,
            body,
            &[],
            ContentHeaders {
                content_md5: md5(body),
                ..Default::default()
            },
        );
    }
    let engine = engine(&rig, CopyOptions::default());
    let access = hns_access("user::rw-,user:ab12:r--,group::r--,mask::r--,other::---");
    let (restore, item) = hns_restore(&rig, "a.csv", access.clone()).await;
    rig.world.inject(
        Fault::on(Op::SetAccessControl, Action::Fail(503, Code::ServerBusy)).account("src"),
    );
    let failure = engine
        .copy_item(&restore, &item)
        .await
        .expect_err("the ACL was not set");
    assert_eq!(failure.class, FailureClass::Unavailable, "{failure:?}");
    assert_eq!(rig.src.access_of("restored", "a.csv"), None);
    let again = engine.copy_item(&restore, &item).await.expect("settled");
    assert_eq!(again, ItemOutcome::TargetExists);
    assert_eq!(
        rig.src.access_of("restored", "a.csv"),
        Some((
            Some(access.owner.clone()),
            Some(access.group.clone()),
            access.acl.clone()
        ))
    );

    rig.src.write("restored", "b.csv", b"someone else's", &[]);
    let (restore, item) = hns_restore(&rig, "b.csv", access).await;
    assert_eq!(
        engine.copy_item(&restore, &item).await.expect("left alone"),
        ItemOutcome::TargetExists
    );
    assert_eq!(rig.src.access_of("restored", "b.csv"), None);
}

/// Options that send blobs above 1 KiB through Put Blob From URL.
fn whole_copies() -> CopyOptions {
    CopyOptions {
        sync_copy_max: 1024,
        block_size: 3000,
        ..Default::default()
    }
}

#[tokio::test]
async fn large_blobs_go_in_one_put_blob_from_url_with_their_headers_and_metadata() {
    let rig = rig();
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    rig.src
        .write("data", "big.bin", &bytes, &[("origin", "lake")]);
    let item = planned(&rig, "big.bin").await;
    engine(&rig, whole_copies())
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .unwrap();
    assert_eq!(content(&rig.bak, "big.bin"), Some(bytes));
    assert_eq!(rig.world.calls("bak", Op::PutFromUrl), 1);
    assert_eq!(rig.world.calls("bak", Op::StageBlockFromUrl), 0);
    assert_eq!(rig.world.calls("bak", Op::CommitBlocks), 0);
    let (src, bak) = (
        rig.src
            .properties(BlobRef::new("data", "big.bin"))
            .await
            .unwrap(),
        rig.bak
            .properties(BlobRef::new("data", "big.bin"))
            .await
            .unwrap(),
    );
    assert_eq!(bak.metadata, src.metadata, "metadata is given, not implied");
    assert_eq!(bak.headers, src.headers);
    assert_eq!(record(&rig.bak, "big.bin").await.source_etag, item.etag);
}

#[tokio::test]
async fn a_service_without_put_blob_from_url_is_asked_once_then_copied_in_ranges() {
    let rig = rig();
    // The storage emulator's answer to Put Blob From URL.
    rig.world.inject(
        Fault::on(
            Op::PutFromUrl,
            Action::Fail(501, Code::UnknownValue("NotImplemented".into())),
        )
        .account("bak"),
    );
    let engine = engine(&rig, whole_copies());
    for name in ["a.bin", "b.bin"] {
        let bytes: Vec<u8> = (0..7_000u32).map(|i| (i % 249) as u8).collect();
        rig.src.write("data", name, &bytes, &[("origin", "lake")]);
        let item = planned(&rig, name).await;
        let reads = rig.world.calls("src", Op::Properties);
        engine
            .copy_item(&batch(MessageKind::Copy), &item)
            .await
            .unwrap();
        assert_eq!(
            rig.world.calls("src", Op::Properties) - reads,
            1,
            "{name}: the source's properties are read once, 501 or not"
        );
        assert_eq!(content(&rig.bak, name), Some(bytes));
        assert_eq!(record(&rig.bak, name).await.source_etag, item.etag);
    }
    assert_eq!(
        rig.world.calls("bak", Op::PutFromUrl),
        1,
        "a 501 is remembered for the account"
    );
    assert_eq!(rig.world.calls("bak", Op::StageBlockFromUrl), 6);
    assert_eq!(rig.world.calls("bak", Op::CommitBlocks), 2);
}

#[tokio::test]
async fn a_source_rewritten_while_its_put_blob_from_url_waits_is_followed_to_its_newest_version() {
    let rig = rig();
    let v1: Vec<u8> = vec![1; 5_000];
    rig.src.write("data", "big.bin", &v1, &[]);
    let item = planned(&rig, "big.bin").await;
    let gate = rig
        .world
        .pause(Op::PutFromUrl, |f| f.account("bak").times(Some(1)));
    let engine = Arc::new(engine(&rig, whole_copies()));
    let copying = {
        let (engine, item) = (engine.clone(), item.clone());
        tokio::spawn(async move { engine.copy_item(&batch(MessageKind::Copy), &item).await })
    };
    gate.arrived().await;
    let v2_bytes: Vec<u8> = vec![2; 6_000];
    let v2 = rig.src.write("data", "big.bin", &v2_bytes, &[]);
    gate.release();
    copying.await.unwrap().unwrap();
    assert_eq!(record(&rig.bak, "big.bin").await.source_etag, v2);
    assert_eq!(content(&rig.bak, "big.bin"), Some(v2_bytes));
}

#[tokio::test]
async fn a_throttled_put_blob_from_url_is_an_outage_not_a_missing_feature() {
    let rig = rig();
    rig.src.write("data", "big.bin", &vec![3; 5_000], &[]);
    let item = planned(&rig, "big.bin").await;
    rig.world.inject(
        Fault::on(Op::PutFromUrl, Action::Fail(503, Code::ServerBusy))
            .account("bak")
            .times(Some(1)),
    );
    let engine = engine(&rig, whole_copies());
    let failure = engine
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .expect_err("throttled");
    assert_eq!(failure.class, FailureClass::Unavailable);
    assert_eq!(content(&rig.bak, "big.bin"), None);
    engine
        .copy_item(&batch(MessageKind::Copy), &item)
        .await
        .unwrap();
    assert_eq!(rig.world.calls("bak", Op::PutFromUrl), 2);
    assert_eq!(rig.world.calls("bak", Op::StageBlockFromUrl), 0);
}
