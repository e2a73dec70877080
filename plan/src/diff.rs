//! The source-versus-backup diff as a merge-join of two listings in the same sorted
//! order. Memory is constant: only the head of each stream is held, whatever the number
//! of blobs (a map of one side, as `azcopy sync` keeps, grows without bound).

use crate::listing::ListedBlob;
use futures::{Stream, StreamExt};
use lakevault_common::record::BackupRecord;
use std::cmp::Ordering;

/// How one name compares between the source and the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// In the source only: copy.
    New(ListedBlob),
    /// In both, but the backup holds another source version (or has no record): copy.
    Changed(ListedBlob),
    /// In both, and the backup's record names the source's current ETag.
    Unchanged(ListedBlob),
    /// In the backup only: the source blob was deleted.
    Deleted(ListedBlob),
}

impl Change {
    pub fn needs_copy(&self) -> bool {
        matches!(self, Change::New(_) | Change::Changed(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("listing failed: {0}")]
    Listing(#[from] azure_core::Error),
    #[error("{0}")]
    Consumer(String),
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
/// tombstone: a source blob back under a tombstoned name is copied again).
pub fn is_current(source: &ListedBlob, backup: &ListedBlob) -> bool {
    BackupRecord::from_tags(&backup.tags)
        .is_some_and(|r| r.source_etag == source.etag && r.deleted_at.is_none())
}

/// Pulls the next entry of one side and checks that names strictly increase.
async fn next_checked<S>(
    stream: &mut S,
    previous: &mut Option<String>,
    side: &'static str,
) -> Result<Option<ListedBlob>, DiffError>
where
    S: Stream<Item = azure_core::Result<ListedBlob>> + Unpin,
{
    match stream.next().await {
        None => Ok(None),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(b)) => {
            if let Some(p) = previous
                && cmp_names(p, &b.name) != Ordering::Less
            {
                return Err(DiffError::OutOfOrder {
                    side,
                    previous: p.clone(),
                    next: b.name,
                });
            }
            *previous = Some(b.name.clone());
            Ok(Some(b))
        }
    }
}

/// One name of a merge-join: in the source only, in both, or in the backup only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pair {
    SourceOnly(ListedBlob),
    Both(ListedBlob, ListedBlob),
    BackupOnly(ListedBlob),
}

/// Merge-joins the two sorted listings, calling `on_pair` for every name, in order.
pub async fn join_pairs<S, B, F>(source: S, backup: B, mut on_pair: F) -> Result<(), DiffError>
where
    S: Stream<Item = azure_core::Result<ListedBlob>>,
    B: Stream<Item = azure_core::Result<ListedBlob>>,
    F: AsyncFnMut(Pair) -> Result<(), DiffError>,
{
    let mut source = std::pin::pin!(source);
    let mut backup = std::pin::pin!(backup);
    let (mut prev_s, mut prev_b) = (None, None);
    let mut s = next_checked(&mut source, &mut prev_s, "source").await?;
    let mut b = next_checked(&mut backup, &mut prev_b, "backup").await?;
    loop {
        match (s.take(), b.take()) {
            (None, None) => return Ok(()),
            (Some(src), None) => {
                on_pair(Pair::SourceOnly(src)).await?;
                s = next_checked(&mut source, &mut prev_s, "source").await?;
            }
            (None, Some(bak)) => {
                on_pair(Pair::BackupOnly(bak)).await?;
                b = next_checked(&mut backup, &mut prev_b, "backup").await?;
            }
            (Some(src), Some(bak)) => match cmp_names(&src.name, &bak.name) {
                Ordering::Less => {
                    on_pair(Pair::SourceOnly(src)).await?;
                    s = next_checked(&mut source, &mut prev_s, "source").await?;
                    b = Some(bak);
                }
                Ordering::Greater => {
                    on_pair(Pair::BackupOnly(bak)).await?;
                    b = next_checked(&mut backup, &mut prev_b, "backup").await?;
                    s = Some(src);
                }
                Ordering::Equal => {
                    on_pair(Pair::Both(src, bak)).await?;
                    s = next_checked(&mut source, &mut prev_s, "source").await?;
                    b = next_checked(&mut backup, &mut prev_b, "backup").await?;
                }
            },
        }
    }
}

/// Merge-joins the two sorted listings, calling `on_change` for every name, in order.
pub async fn merge_join<S, B, F>(source: S, backup: B, mut on_change: F) -> Result<(), DiffError>
where
    S: Stream<Item = azure_core::Result<ListedBlob>>,
    B: Stream<Item = azure_core::Result<ListedBlob>>,
    F: AsyncFnMut(Change) -> Result<(), DiffError>,
{
    join_pairs(source, backup, async |pair| {
        let change = match pair {
            Pair::SourceOnly(src) => Change::New(src),
            Pair::BackupOnly(bak) => Change::Deleted(bak),
            Pair::Both(src, bak) if is_current(&src, &bak) => Change::Unchanged(src),
            Pair::Both(src, _) => Change::Changed(src),
        };
        on_change(change).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakevault_common::record::RECORD_TAG;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn blob(name: &str, etag: &str) -> ListedBlob {
        ListedBlob {
            name: name.into(),
            etag: etag.into(),
            size: 1,
            last_modified: String::new(),
            blob_type: None,
            tags: BTreeMap::new(),
            content_md5: None,
        }
    }

    fn backup_of(name: &str, source_etag: &str) -> ListedBlob {
        let mut b = blob(name, "backup-etag");
        let record = BackupRecord {
            source_etag: source_etag.into(),
            source_last_modified: "t".into(),
            backed_up_at: "t".into(),
            job: "j".into(),
            deleted_at: None,
        };
        b.tags.insert(RECORD_TAG.into(), record.to_tag_value());
        b
    }

    async fn run(src: Vec<ListedBlob>, bak: Vec<ListedBlob>) -> Result<Vec<Change>, DiffError> {
        let mut out = Vec::new();
        merge_join(
            futures::stream::iter(src.into_iter().map(Ok)),
            futures::stream::iter(bak.into_iter().map(Ok)),
            async |c| {
                out.push(c);
                Ok(())
            },
        )
        .await?;
        Ok(out)
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
                Change::Changed(b) => ("changed", b.name.as_str()),
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
                    Change::New(b) | Change::Changed(b) => { copy.insert(b.name.clone()); order.push(b.name.clone()); }
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
