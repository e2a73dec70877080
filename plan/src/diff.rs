//! The source-versus-backup diff as a merge-join of two listings in the same sorted
//! order. Memory is constant: only the head of each stream is held, whatever the number
//! of blobs (a map of one side, as `azcopy sync` keeps, grows without bound).
//!
//! The join is a `Send` stream that the caller pulls: it can be spawned on any runtime
//! thread, and a caller stops it (cancellation) by not pulling any more.

use crate::listing::ListedBlob;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use lakevault_common::access::kept_access;
use lakevault_common::record::BackupRecord;
use std::cmp::Ordering;

/// How one name compares between the source and the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// In the source only: copy.
    New(ListedBlob),
    /// In both, but the backup holds another source version (or has no record): copy,
    /// replacing the backup blob as listed (`backup`) and no other.
    Changed {
        source: ListedBlob,
        backup: ListedBlob,
    },
    /// In both, and the backup's record names the source's current ETag.
    Unchanged(ListedBlob),
    /// In the backup only: the source blob was deleted.
    Deleted(ListedBlob),
}

impl Change {
    pub fn needs_copy(&self) -> bool {
        matches!(self, Change::New(_) | Change::Changed { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("listing failed: {0}")]
    Listing(#[from] azure_core::Error),
    #[error(
        "the {side} listing is not in ascending order (`{previous}` came before `{next}`); the merge-join cannot continue"
    )]
    OutOfOrder {
        side: &'static str,
        previous: String,
        next: String,
    },
}

/// The order in which the Blob service lists names: by UTF-16 code units, not by UTF-8
/// bytes or code points (they differ when a name has characters above U+FFFF, such as
/// emoji, at the same position as characters in U+E000..U+FFFF, such as full-width forms).
/// Azure and the emulator agree on this for accounts without a hierarchical namespace.
pub fn cmp_names(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Whether the backup blob records the source blob's current version (and is not a
/// tombstone: a source blob back under a tombstoned name is copied again), with the
/// access control the source listing shows (HNS sources). A change of access control alone
/// leaves the ETag and Last-Modified as they were: it is told only by comparing the ACL
/// itself, which both listings carry.
pub fn is_current(source: &ListedBlob, backup: &ListedBlob) -> bool {
    BackupRecord::from_tags(&backup.tags)
        .is_some_and(|r| r.source_etag == source.etag && r.deleted_at.is_none())
        && source
            .access
            .as_ref()
            .is_none_or(|a| a.matches(&kept_access(&backup.tags)))
}

/// One name of a merge-join: in the source only, in both, or in the backup only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pair {
    SourceOnly(ListedBlob),
    Both(ListedBlob, ListedBlob),
    BackupOnly(ListedBlob),
}

impl Pair {
    /// What the pair means for a backup.
    pub fn into_change(self) -> Change {
        match self {
            Pair::SourceOnly(src) => Change::New(src),
            Pair::BackupOnly(bak) => Change::Deleted(bak),
            Pair::Both(src, bak) if is_current(&src, &bak) => Change::Unchanged(src),
            Pair::Both(source, backup) => Change::Changed { source, backup },
        }
    }
}

/// One side of the join: its listing, the last name seen (to check the order), the
/// entry at its head, and whether that head was handed out and must be replaced.
struct Side<'a> {
    name: &'static str,
    listing: BoxStream<'a, azure_core::Result<ListedBlob>>,
    previous: Option<String>,
    head: Option<ListedBlob>,
    consumed: bool,
}

impl<'a> Side<'a> {
    fn new(name: &'static str, listing: BoxStream<'a, azure_core::Result<ListedBlob>>) -> Self {
        Self {
            name,
            listing,
            previous: None,
            head: None,
            consumed: true,
        }
    }

    /// Replaces a consumed head with the next entry, checking that names strictly increase.
    /// Pulled lazily, so a listing error surfaces only after every earlier pair was taken.
    async fn refill(&mut self) -> Result<(), DiffError> {
        if !self.consumed {
            return Ok(());
        }
        self.head = match self.listing.try_next().await? {
            None => None,
            Some(b) => {
                if let Some(p) = &self.previous
                    && cmp_names(p, &b.name) != Ordering::Less
                {
                    return Err(DiffError::OutOfOrder {
                        side: self.name,
                        previous: p.clone(),
                        next: b.name,
                    });
                }
                self.previous = Some(b.name.clone());
                Some(b)
            }
        };
        self.consumed = false;
        Ok(())
    }

    fn take(&mut self) -> ListedBlob {
        self.consumed = true;
        self.head.take().expect("a head to take")
    }
}

/// Merge-joins the two sorted listings into one stream of pairs, in name order. The
/// stream ends after its first error.
pub fn join_pairs<'a, S, B>(source: S, backup: B) -> BoxStream<'a, Result<Pair, DiffError>>
where
    S: Stream<Item = azure_core::Result<ListedBlob>> + Send + 'a,
    B: Stream<Item = azure_core::Result<ListedBlob>> + Send + 'a,
{
    let sides = (
        Side::new("source", source.boxed()),
        Side::new("backup", backup.boxed()),
    );
    futures::stream::try_unfold(sides, |(mut s, mut b)| async move {
        s.refill().await?;
        b.refill().await?;
        let pair = match (&s.head, &b.head) {
            (None, None) => return Ok(None),
            (Some(_), None) => Pair::SourceOnly(s.take()),
            (None, Some(_)) => Pair::BackupOnly(b.take()),
            (Some(src), Some(bak)) => match cmp_names(&src.name, &bak.name) {
                Ordering::Less => Pair::SourceOnly(s.take()),
                Ordering::Greater => Pair::BackupOnly(b.take()),
                Ordering::Equal => Pair::Both(s.take(), b.take()),
            },
        };
        Ok(Some((pair, (s, b))))
    })
    .boxed()
}

/// The diff as a stream of changes, in name order.
pub fn changes<'a, S, B>(source: S, backup: B) -> BoxStream<'a, Result<Change, DiffError>>
where
    S: Stream<Item = azure_core::Result<ListedBlob>> + Send + 'a,
    B: Stream<Item = azure_core::Result<ListedBlob>> + Send + 'a,
{
    join_pairs(source, backup).map_ok(Pair::into_change).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakevault_common::record::RECORD_TAG;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn blob(name: &str, etag: &str) -> ListedBlob {
        ListedBlob {
            access: None,
            name: name.into(),
            etag: etag.into(),
            size: 1,
            last_modified: String::new(),
            blob_type: None,
            tags: BTreeMap::new(),
            content_md5: None,
        }
    }

    fn acl(acl: &str) -> lakevault_common::access::PathAccess {
        lakevault_common::access::PathAccess {
            directory: false,
            owner: "4f1c2b1e-0000-4000-8000-000000000001".into(),
            group: "$superuser".into(),
            permissions: "rw-r-----+".into(),
            acl: acl.into(),
        }
    }

    /// An HNS path whose ACL changed and nothing else (ETag as it was) is a change; the
    /// same ACL is not; a flat source (no access control listed) compares as before.
    #[test]
    fn a_change_of_access_control_alone_is_a_change() {
        let before = acl("user::rw-,user:ab12:r--,group::r--,mask::r--,other::---");
        let after = acl("user::rw-,user:ab12:rw-,group::r--,mask::rw-,other::---");
        let mut backup = backup_of("dir/a.csv", "e1");
        backup.tags.extend(before.to_tags(9));
        let source = |access: Option<lakevault_common::access::PathAccess>| ListedBlob {
            access: access.map(Box::new),
            ..blob("dir/a.csv", "e1")
        };
        assert!(is_current(&source(Some(before.clone())), &backup));
        assert!(!is_current(&source(Some(after)), &backup));
        assert!(is_current(&source(None), &backup));
        // Backed up before access control was kept: copied once more to keep it.
        assert!(!is_current(
            &source(Some(before)),
            &backup_of("dir/a.csv", "e1")
        ));
    }

    fn backup_of(name: &str, source_etag: &str) -> ListedBlob {
        let mut b = blob(name, "backup-etag");
        let record = BackupRecord {
            source_etag: source_etag.into(),
            source_last_modified: "t".into(),
            backed_up_at: "t".into(),
            job: "j".into(),
            deleted_at: None,
            history_in_versions: false,
        };
        b.tags.insert(RECORD_TAG.into(), record.to_tag_value());
        b
    }

    async fn run(src: Vec<ListedBlob>, bak: Vec<ListedBlob>) -> Result<Vec<Change>, DiffError> {
        changes(
            futures::stream::iter(src.into_iter().map(Ok)),
            futures::stream::iter(bak.into_iter().map(Ok)),
        )
        .try_collect()
        .await
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn the_diff_is_a_send_stream() {
        // The point of the stream shape: a scan built on it can be spawned on any
        // runtime thread, without a blocking thread driving it.
        let stream = changes(futures::stream::empty(), futures::stream::empty());
        assert_send(&stream);
    }

    #[tokio::test]
    async fn a_listing_error_comes_after_the_pairs_before_it() {
        let failing = futures::stream::iter(vec![
            Ok(blob("a", "1")),
            Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Io,
                "connection reset",
            )),
        ]);
        let mut joined = join_pairs(failing, futures::stream::empty());
        assert!(matches!(
            joined.next().await,
            Some(Ok(Pair::SourceOnly(b))) if b.name == "a"
        ));
        assert!(matches!(
            joined.next().await,
            Some(Err(DiffError::Listing(_)))
        ));
        assert!(
            joined.next().await.is_none(),
            "the stream ends after an error"
        );
    }

    #[tokio::test]
    async fn classifies_each_case() {
        let src = vec![
            blob("a", "1"),
            blob("b", "2"),
            blob("c", "3"),
            blob("e", "5"),
        ];
        let bak = vec![
            backup_of("b", "2"),
            backup_of("c", "old"),
            backup_of("d", "4"),
            blob("e", "x"),
        ];
        let out = run(src, bak).await.unwrap();
        let kinds: Vec<(&str, &str)> = out
            .iter()
            .map(|c| match c {
                Change::New(b) => ("new", b.name.as_str()),
                Change::Changed { source: b, .. } => ("changed", b.name.as_str()),
                Change::Unchanged(b) => ("unchanged", b.name.as_str()),
                Change::Deleted(b) => ("deleted", b.name.as_str()),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("new", "a"),
                ("unchanged", "b"),
                ("changed", "c"),
                ("deleted", "d"),
                ("changed", "e")
            ]
        );
    }

    #[test]
    fn names_compare_by_utf16_code_units() {
        // U+1F600 is the surrogate pair D83D DE00, which sorts before U+FF01.
        assert_eq!(cmp_names("a😀", "a！"), Ordering::Less);
        assert_eq!(
            "a😀".cmp("a！"),
            Ordering::Greater,
            "UTF-8 order differs, which is the point"
        );
        assert_eq!(cmp_names("a-b", "a/b"), Ordering::Less);
        assert_eq!(cmp_names("A", "a"), Ordering::Less);
    }

    #[tokio::test]
    async fn refuses_unsorted_input() {
        let err = run(vec![blob("b", "1"), blob("a", "1")], vec![])
            .await
            .unwrap_err();
        assert!(
            matches!(err, DiffError::OutOfOrder { side: "source", .. }),
            "{err}"
        );
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        // Shared prefixes, separators, Unicode (including astral plane) and spaces.
        proptest::string::string_regex(
            "(dir/|dir2/|d/|é/|日本/|d-/)?[a-c üＡ！😀\u{FFFD}-]{0,4}(\\.csv)?",
        )
        .expect("valid regex")
        .prop_filter("non-empty", |s| !s.is_empty())
    }

    proptest! {
        #[test]
        fn matches_a_naive_model(
            source in proptest::collection::btree_map(name_strategy(), 0u8..3, 0..60),
            backup in proptest::collection::btree_map(name_strategy(), 0u8..3, 0..60),
        ) {
            // Naive model: maps of both sides. The listings come in the service's order.
            let mut src: Vec<ListedBlob> = source.iter().map(|(n, e)| blob(n, &e.to_string())).collect();
            let mut bak: Vec<ListedBlob> = backup.iter().map(|(n, e)| backup_of(n, &e.to_string())).collect();
            src.sort_by(|a, b| cmp_names(&a.name, &b.name));
            bak.sort_by(|a, b| cmp_names(&a.name, &b.name));
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let out = rt.block_on(run(src, bak)).expect("diff");

            let mut expected_copy = BTreeSet::new();
            let mut expected_deleted = BTreeSet::new();
            let mut expected_same = BTreeSet::new();
            for (n, e) in &source {
                match backup.get(n) {
                    Some(be) if be == e => { expected_same.insert(n.clone()); }
                    _ => { expected_copy.insert(n.clone()); }
                }
            }
            for n in backup.keys() {
                if !source.contains_key(n) { expected_deleted.insert(n.clone()); }
            }
            let mut copy = BTreeSet::new();
            let mut deleted = BTreeSet::new();
            let mut same = BTreeSet::new();
            let mut order = Vec::new();
            for c in &out {
                match c {
                    Change::New(b) | Change::Changed { source: b, .. } => { copy.insert(b.name.clone()); order.push(b.name.clone()); }
                    Change::Unchanged(b) => { same.insert(b.name.clone()); order.push(b.name.clone()); }
                    Change::Deleted(b) => { deleted.insert(b.name.clone()); order.push(b.name.clone()); }
                }
            }
            prop_assert_eq!(copy, expected_copy);
            prop_assert_eq!(deleted, expected_deleted);
            prop_assert_eq!(same, expected_same);
            // Every name reported once, in the service's ascending order.
            let mut sorted = order.clone();
            sorted.sort_by(|a, b| cmp_names(a, b));
            sorted.dedup();
            prop_assert_eq!(order, sorted);
        }
    }
}
