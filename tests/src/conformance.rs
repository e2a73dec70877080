//! One conformance suite for [`BlobStore`], run against the in-memory store and against
//! the emulator (`tests/tests/it/conformance.rs`), so that what the copy engine's unit tests
//! assume of the in-memory store is what the service does.
//!
//! Where Azure and the emulator answer the same failure with different codes, a case
//! asserts what lakevault relies on (the status class and the state left behind), and the
//! difference is named beside it.

use futures::TryStreamExt;
use lakevault_common::error::FailureClass;
use lakevault_common::store::{
    BlobRef, BlobStore, Commit, Condition, ContentHeaders, CopyFromUrl, ListOptions, Side,
    StorageErrorCode as Code,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where a service is known to differ from the REST reference, measured against it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quirks {
    /// Set Blob Tags ignores its ETag condition (the SDK sends it as `x-ms-blob-if-match`;
    /// the emulator applies the tags whatever the blob's ETag).
    pub set_tags_ignores_etag_condition: bool,
}

impl Quirks {
    /// The emulator's, as measured by this suite.
    pub const EMULATOR: Quirks = Quirks {
        set_tags_ignores_etag_condition: true,
    };
}

/// Runs every case. `source` and `backup` are two accounts of the same service; `tag`
/// keeps this run's containers apart from another's.
pub async fn run_all(source: &dyn BlobStore, backup: &dyn BlobStore, tag: &str, quirks: Quirks) {
    conditional_puts(backup, &format!("cput{tag}")).await;
    properties_and_not_found(source, backup, &format!("props{tag}")).await;
    tags_do_not_change_the_etag(backup, &format!("tags{tag}"), quirks).await;
    snapshots_keep_the_old_version(backup, &format!("snap{tag}")).await;
    copy_from_url_carries_content_and_honours_conditions(source, backup, &format!("copy{tag}"))
        .await;
    blocks_from_url_and_commit(source, backup, &format!("blocks{tag}")).await;
    ranged_reads_are_conditional(source, &format!("range{tag}")).await;
    leases_exclude_other_writers(source, &format!("lease{tag}")).await;
    listings_are_in_utf16_order(source, &format!("list{tag}")).await;
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn conditional_puts(store: &dyn BlobStore, c: &str) {
    store.create_container(c).await.expect("container");
    let b = BlobRef::new(c, "state.json");
    let first = store
        .put(b, b"one".to_vec(), Condition::IfAbsent)
        .await
        .expect("a new blob under If-None-Match: *");
    let refused = store
        .put(b, b"two".to_vec(), Condition::IfAbsent)
        .await
        .expect_err("If-None-Match: * on an existing blob");
    // Azure: 409 BlobAlreadyExists; the emulator may answer 412 ConditionNotMet.
    assert!(
        refused.is_conflict() || refused.is_condition_not_met(),
        "{}: {refused}",
        store.alias()
    );
    assert_eq!(store.get(b).await.expect("get").0, b"one");
    let second = store
        .put(b, b"two".to_vec(), Condition::IfMatch(first.clone()))
        .await
        .expect("If-Match on the current ETag");
    assert_ne!(first, second, "a write changes the ETag");
    let stale = store
        .put(b, b"three".to_vec(), Condition::IfMatch(first))
        .await
        .expect_err("If-Match on a stale ETag");
    assert!(stale.is_condition_not_met(), "{}: {stale}", store.alias());
    let (bytes, etag) = store.get(b).await.expect("get");
    assert_eq!(bytes, b"two");
    assert_eq!(etag, second, "get returns the ETag of what it read");
    let missing = store
        .put(
            BlobRef::new(c, "never-written"),
            b"x".to_vec(),
            Condition::IfMatch(second),
        )
        .await
        .expect_err("If-Match on a missing blob");
    assert!(
        missing.is_condition_not_met() || missing.is_not_found(),
        "{missing}"
    );
}

async fn properties_and_not_found(source: &dyn BlobStore, backup: &dyn BlobStore, c: &str) {
    source.create_container(c).await.expect("container");
    backup.create_container(c).await.expect("container");
    let b = BlobRef::new(c, "a/b.csv");
    let etag = source
        .put(b, vec![7; 1000], Condition::None)
        .await
        .expect("put");
    let p = source.properties(b).await.expect("properties");
    assert_eq!(p.etag, etag);
    assert_eq!(p.size, 1000);
    assert!(p.is_block_blob());
    assert!(
        time::OffsetDateTime::parse(
            &p.last_modified,
            &time::format_description::well_known::Rfc3339
        )
        .is_ok(),
        "{}",
        p.last_modified
    );
    for (store, side) in [(source, Side::Source), (backup, Side::Backup)] {
        let e = store
            .properties(BlobRef::new(c, "missing.csv"))
            .await
            .expect_err("missing blob");
        assert!(e.is_not_found(), "{e}");
        assert_eq!(e.account, store.alias(), "the error names who answered");
        let expected = match side {
            Side::Source => FailureClass::SourceMissing,
            _ => FailureClass::Permanent,
        };
        assert_eq!(e.class(side), expected, "a 404 of the {side:?} account");
    }
    let e = source
        .properties(BlobRef::new(&format!("{c}-none"), "x"))
        .await
        .expect_err("missing container");
    assert!(e.is_not_found(), "{e}");
    // Purge and restore tell a missing container from an empty one by the listing's code.
    let listed: Result<Vec<_>, _> = source
        .list(&format!("{c}-none"), ListOptions::default())
        .try_collect()
        .await;
    let e = listed.expect_err("listing a missing container");
    assert!(e.has_code(Code::ContainerNotFound), "{e}");
    source
        .create_container(&format!("{c}-empty"))
        .await
        .expect("container");
    let empty: Vec<_> = source
        .list(&format!("{c}-empty"), ListOptions::default())
        .try_collect()
        .await
        .expect("an empty container lists");
    assert!(empty.is_empty());
}

async fn tags_do_not_change_the_etag(store: &dyn BlobStore, c: &str, quirks: Quirks) {
    store.create_container(c).await.expect("container");
    let b = BlobRef::new(c, "t.bin");
    let etag = store
        .put(b, b"x".to_vec(), Condition::None)
        .await
        .expect("put");
    let set = tags(&[
        ("project", "alpha beta"),
        ("lakevault", "etag=0x1 job=j/2:3+4_5"),
    ]);
    store
        .set_tags(b, &set, Condition::IfMatch(etag.clone()))
        .await
        .expect("set tags under If-Match");
    assert_eq!(store.tags(b).await.expect("tags"), set);
    assert_eq!(
        store.properties(b).await.expect("props").etag,
        etag,
        "Set Blob Tags leaves the ETag alone"
    );
    store
        .put(b, b"y".to_vec(), Condition::None)
        .await
        .expect("put");
    let stale = store
        .set_tags(b, &tags(&[("k", "v")]), Condition::IfMatch(etag))
        .await;
    if quirks.set_tags_ignores_etag_condition {
        assert!(
            stale.is_ok(),
            "{}: the quirk is gone; drop it from Quirks::EMULATOR",
            store.alias()
        );
    } else {
        let stale = stale.expect_err("tags under a stale ETag");
        assert!(stale.is_condition_not_met(), "{stale}");
    }
    let invalid = store
        .set_tags(b, &tags(&[("k", "semi;colon")]), Condition::None)
        .await
        .expect_err("a character tags may not hold");
    // Azure: 400 InvalidTag; the emulator: 400 DuplicateTagNames.
    assert_eq!(invalid.status, Some(400), "{invalid}");
    let e = store
        .tags(BlobRef::new(c, "missing"))
        .await
        .expect_err("tags of a missing blob");
    assert!(e.is_not_found(), "{e}");
}

async fn snapshots_keep_the_old_version(store: &dyn BlobStore, c: &str) {
    store.create_container(c).await.expect("container");
    let b = BlobRef::new(c, "s.txt");
    let etag = store
        .put(b, b"old".to_vec(), Condition::None)
        .await
        .expect("put");
    store
        .set_tags(b, &tags(&[("v", "1")]), Condition::None)
        .await
        .expect("tags");
    let snap = store
        .snapshot(b, Condition::IfMatch(etag.clone()))
        .await
        .expect("snapshot under the current ETag");
    assert_eq!(snap.etag, etag, "a snapshot has the blob's ETag");
    // The history kept before an overwrite is of the version that was judged, or none.
    let stale = store
        .snapshot(b, Condition::IfMatch("0x8D0000000000000".into()))
        .await
        .expect_err("a snapshot under a stale ETag");
    assert!(stale.is_condition_not_met(), "{stale}");
    store
        .put(b, b"new".to_vec(), Condition::None)
        .await
        .expect("put");
    let at = b.at_snapshot(Some(&snap.snapshot));
    assert_eq!(store.get(at).await.expect("snapshot read").0, b"old");
    assert_eq!(
        store.tags(at).await.expect("snapshot tags"),
        tags(&[("v", "1")])
    );
    assert_eq!(store.properties(at).await.expect("props").etag, etag);
    let listed: Vec<_> = store
        .list(
            c,
            ListOptions {
                snapshots: true,
                ..Default::default()
            },
        )
        .try_collect()
        .await
        .expect("list");
    // Both are listed under the name. Where the base blob stands among its snapshots is
    // not relied on (the emulator lists it first; the reference does not say): lakevault
    // groups versions by name and orders them by snapshot time itself.
    let mut shape: Vec<(String, Option<String>)> = listed
        .iter()
        .map(|l| (l.name.clone(), l.snapshot.clone()))
        .collect();
    shape.sort();
    assert_eq!(
        shape,
        vec![
            ("s.txt".to_string(), None),
            ("s.txt".to_string(), Some(snap.snapshot.clone()))
        ]
    );
    let refused = store
        .delete(b, Condition::None, false)
        .await
        .expect_err("a blob with snapshots");
    assert!(refused.has_code(Code::SnapshotsPresent), "{refused}");
    store
        .delete(at, Condition::None, false)
        .await
        .expect("delete the snapshot");
    assert!(store.get(at).await.expect_err("gone").is_not_found());
    store
        .delete(b, Condition::None, false)
        .await
        .expect("delete without snapshots");
    // Deletes are conditional like writes: a blob rewritten since it was judged stays.
    let judged = store
        .put(b, b"judged".to_vec(), Condition::None)
        .await
        .expect("put");
    store.snapshot(b, Condition::None).await.expect("snapshot");
    store
        .put(b, b"rewritten".to_vec(), Condition::None)
        .await
        .expect("put");
    let stale = store
        .delete(b, Condition::IfMatch(judged), true)
        .await
        .expect_err("a delete under a stale ETag");
    assert!(stale.is_condition_not_met(), "{stale}");
    let current = store.properties(b).await.expect("still there").etag;
    store
        .delete(b, Condition::IfMatch(current), true)
        .await
        .expect("a delete with its snapshots under the current ETag");
    assert!(store.properties(b).await.expect_err("gone").is_not_found());
    let listed: Vec<_> = store
        .list(
            c,
            ListOptions {
                snapshots: true,
                ..Default::default()
            },
        )
        .try_collect()
        .await
        .expect("list");
    assert!(listed.is_empty(), "the snapshots went with it: {listed:?}");
}

async fn copy_from_url_carries_content_and_honours_conditions(
    source: &dyn BlobStore,
    backup: &dyn BlobStore,
    c: &str,
) {
    source.create_container(c).await.expect("container");
    backup.create_container(c).await.expect("container");
    let name = "dir/naïve name #1.parquet";
    let src = BlobRef::new(c, name);
    let etag = source
        .put(src, b"source bytes".to_vec(), Condition::None)
        .await
        .expect("put");
    source
        .set_tags(src, &tags(&[("from", "source")]), Condition::None)
        .await
        .expect("tags");
    let url = source
        .copy_source(src, Duration::from_secs(600))
        .await
        .expect("copy source");
    let dst = BlobRef::new(c, name);
    let record = tags(&[("lakevault", "r")]);
    backup
        .copy_from_url(
            dst,
            CopyFromUrl {
                source: &url,
                source_if_match: Some(&etag),
                condition: Condition::IfAbsent,
                tags: Some(&record),
                tier: None,
            },
        )
        .await
        .expect("copy");
    let (bytes, copied) = backup.get(dst).await.expect("get");
    assert_eq!(bytes, b"source bytes");
    assert_eq!(
        backup.tags(dst).await.expect("tags"),
        record,
        "only the tags given travel"
    );
    // A stale source condition.
    source
        .put(src, b"newer".to_vec(), Condition::None)
        .await
        .expect("put");
    let changed = backup
        .copy_from_url(
            dst,
            CopyFromUrl {
                source: &url,
                source_if_match: Some(&etag),
                condition: Condition::IfMatch(copied.clone()),
                tags: Some(&record),
                tier: None,
            },
        )
        .await
        .expect_err("the source changed");
    // Azure: 412 SourceConditionNotMet; the emulator: 412 ConditionNotMet.
    assert!(changed.is_condition_not_met(), "{changed}");
    assert_eq!(changed.class(Side::Backup), FailureClass::SourceChanged);
    assert_eq!(backup.get(dst).await.expect("get").0, b"source bytes");
    // A stale destination condition: the backup is not replaced.
    let current = source.properties(src).await.expect("props").etag;
    let refused = backup
        .copy_from_url(
            dst,
            CopyFromUrl {
                source: &url,
                source_if_match: Some(&current),
                condition: Condition::IfMatch("0x8D0000000000000".into()),
                tags: None,
                tier: None,
            },
        )
        .await
        .expect_err("the backup changed");
    assert!(refused.is_condition_not_met(), "{refused}");
    assert_eq!(backup.get(dst).await.expect("get").0, b"source bytes");
    // A source that is gone: the backup service says it cannot read it.
    source
        .delete(src, Condition::None, true)
        .await
        .expect("delete");
    let gone = backup
        .copy_from_url(
            BlobRef::new(c, "other"),
            CopyFromUrl {
                source: &url,
                source_if_match: None,
                condition: Condition::None,
                tags: None,
                tier: None,
            },
        )
        .await
        .expect_err("the source is gone");
    assert!(gone.is_not_found(), "{gone}");
    assert!(gone.has_code(Code::CannotVerifyCopySource), "{gone}");
    assert_eq!(
        gone.class(Side::Backup),
        FailureClass::SourceMissing,
        "CannotVerifyCopySource is about the source whoever answered"
    );
}

async fn blocks_from_url_and_commit(source: &dyn BlobStore, backup: &dyn BlobStore, c: &str) {
    source.create_container(c).await.expect("container");
    backup.create_container(c).await.expect("container");
    let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let src = BlobRef::new(c, "big.bin");
    let etag = source
        .put(src, content.clone(), Condition::None)
        .await
        .expect("put");
    let url = source
        .copy_source(src, Duration::from_secs(600))
        .await
        .expect("copy source");
    let dst = BlobRef::new(c, "big.bin");
    let ids: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("block-{i:04}").into_bytes())
        .collect();
    let ranges = [(0u64, 4096u64), (4096, 4096), (8192, 1808)];
    for (id, (offset, length)) in ids.iter().zip(ranges) {
        backup
            .stage_block_from_url(dst, id, &url, Some(&etag), offset, length)
            .await
            .expect("stage");
    }
    assert!(
        backup
            .properties(dst)
            .await
            .expect_err("uncommitted")
            .is_not_found(),
        "staged blocks are not a blob yet"
    );
    let headers = ContentHeaders {
        content_type: Some("application/octet-stream".into()),
        cache_control: Some("no-cache".into()),
        ..Default::default()
    };
    let meta: BTreeMap<String, String> = tags(&[("origin", "lake")]);
    let record = tags(&[("lakevault", "r")]);
    backup
        .commit_blocks(
            dst,
            &ids,
            Commit {
                headers: headers.clone(),
                metadata: meta.clone(),
                tags: Some(&record),
                tier: None,
                condition: Condition::IfAbsent,
            },
        )
        .await
        .expect("commit");
    assert_eq!(backup.get(dst).await.expect("get").0, content);
    let p = backup.properties(dst).await.expect("props");
    assert_eq!(p.headers.content_type, headers.content_type);
    assert_eq!(p.headers.cache_control, headers.cache_control);
    assert_eq!(p.metadata, meta);
    assert_eq!(backup.tags(dst).await.expect("tags"), record);
    let stale = backup
        .stage_block_from_url(dst, &ids[0], &url, Some("0x8D0000000000000"), 0, 10)
        .await
        .expect_err("stale source condition");
    assert!(stale.is_condition_not_met(), "{stale}");
    let unknown = backup
        .commit_blocks(
            BlobRef::new(c, "other.bin"),
            &[b"never-staged".to_vec()],
            Commit::default(),
        )
        .await
        .expect_err("unknown block");
    assert_eq!(unknown.status, Some(400), "{unknown}");
}

async fn ranged_reads_are_conditional(store: &dyn BlobStore, c: &str) {
    store.create_container(c).await.expect("container");
    let b = BlobRef::new(c, "r.bin");
    let etag = store
        .put(b, b"0123456789".to_vec(), Condition::None)
        .await
        .expect("put");
    assert_eq!(
        store.read_range(b, 2, 5, Some(&etag)).await.expect("range"),
        b"23456"
    );
    let stale = store
        .read_range(b, 0, 2, Some("0x8D0000000000000"))
        .await
        .expect_err("stale");
    assert!(stale.is_condition_not_met(), "{stale}");
}

async fn leases_exclude_other_writers(store: &dyn BlobStore, c: &str) {
    store.create_container(c).await.expect("container");
    let b = BlobRef::new(c, "leased.bin");
    store
        .put(b, b"x".to_vec(), Condition::None)
        .await
        .expect("put");
    let id = "6a2f1a4e-7a51-4a8e-9a0e-5c1d7b3e2f10";
    let lease = store
        .acquire_lease(b, Duration::from_secs(15), id)
        .await
        .expect("lease");
    assert_eq!(lease, id);
    let taken = store
        .acquire_lease(
            b,
            Duration::from_secs(15),
            "0b6a3c52-1111-4222-8333-444455556666",
        )
        .await
        .expect_err("a second lease");
    assert!(taken.is_conflict(), "{taken}");
    let blocked = store
        .put(b, b"y".to_vec(), Condition::None)
        .await
        .expect_err("a write without the lease id");
    assert!(blocked.is_condition_not_met(), "{blocked}");
    // Reads need no lease id: a source leased by lakevault (lease mode) or by an
    // application can have its properties and index tags read, and a 403 there would be
    // a credential problem, never the lease. (Get Blob Tags and Get Blob Properties take
    // `x-ms-lease-id` as an optional condition only.)
    // https://learn.microsoft.com/rest/api/storageservices/get-blob-tags
    store
        .tags(b)
        .await
        .expect("tags of a leased blob, without its lease id");
    store
        .properties(b)
        .await
        .expect("properties of a leased blob, without its lease id");
    store.renew_lease(b, id).await.expect("renew");
    store.release_lease(b, id).await.expect("release");
    store
        .put(b, b"y".to_vec(), Condition::None)
        .await
        .expect("written once released");
    let gone = store
        .acquire_lease(BlobRef::new(c, "missing"), Duration::from_secs(15), id)
        .await
        .expect_err("lease on a missing blob");
    assert!(gone.is_not_found(), "{gone}");
}

async fn listings_are_in_utf16_order(store: &dyn BlobStore, c: &str) {
    store.create_container(c).await.expect("container");
    // U+1F600 (a surrogate pair, D83D DE00) sorts before U+FF01 by UTF-16 code units,
    // after it by UTF-8 bytes.
    let names = ["p/a！", "p/a😀", "p/a-b", "p/a/b", "q/z", "p/A"];
    for n in names {
        store
            .put(BlobRef::new(c, n), n.as_bytes().to_vec(), Condition::None)
            .await
            .expect("put");
    }
    store
        .set_tags(
            BlobRef::new(c, "p/a-b"),
            &tags(&[("k", "v")]),
            Condition::None,
        )
        .await
        .expect("tags");
    let listed: Vec<_> = store
        .list(
            c,
            ListOptions {
                prefix: Some("p/".into()),
                tags: true,
                page_size: Some(2),
                ..Default::default()
            },
        )
        .try_collect()
        .await
        .expect("list");
    let order: Vec<&str> = listed.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(order, vec!["p/A", "p/a-b", "p/a/b", "p/a😀", "p/a！"]);
    assert_eq!(listed[1].tags, tags(&[("k", "v")]));
    assert!(listed[0].tags.is_empty());
    assert_eq!(listed[4].size, "p/a！".len() as u64);
}
