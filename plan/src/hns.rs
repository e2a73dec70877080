//! Listing order on accounts with a hierarchical namespace (ADLS Gen2), and a walk that
//! brings such an account's entries into the order a flat account lists, in bounded
//! memory, so that an HNS source can be diffed against a flat backup by the same merge-join.
//!
//! A flat account lists names in one order ([`cmp_names`]): `A, A-B, A-B-C, A-B/dat2,
//! A/dat1, AB, AB.txt, AB/AB, AB/dat4`. An HNS account lists a depth-first walk of its
//! directory tree, siblings in name order, which is the same as comparing names segment by
//! segment ([`cmp_hns`]): `A, A/dat1, A-B, A-B/dat2, A-B-C, AB, AB/AB, AB/dat4, AB.txt`.
//! The two differ wherever a directory `X` has siblings that start with `X` and go on with a
//! character that sorts below `/` (`-`, `.`, space, ...), which in a data lake is almost
//! everywhere (`sales/` next to `sales-2024/` or `sales.csv`).
//!
//! [`walk_in_flat_order`] lists one directory at a time (`delimiter=/`). Within a directory
//! both kinds of account list the entries directly under it in the same order; only the
//! sub-directory prefixes stand elsewhere: HNS lists `X/` where `X` stands, a flat order
//! wants it after every sibling `X` + (something below `/`). A prefix can only come *later*
//! in flat order than where HNS lists it, never earlier, so each directory keeps the
//! prefixes it has seen but not yet walked in a small min-heap and walks one as soon as the
//! next entry would pass it. Memory grows with the sub-directories of the directories on
//! the current path (and one listing page per level), never with the container.
//!
//! The order of what HNS lists is checked (a listing that violates it stops the walk with
//! an error), and so is the order of what the walk yields.

use crate::diff::cmp_names;
use crate::listing::{LevelEntry, ListedBlob};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// The order an account with a hierarchical namespace lists names in: segment by segment
/// (`/` separates), each segment in the order of [`cmp_names`]. A name sorts right before
/// the names below it.
pub fn cmp_hns(a: &str, b: &str) -> Ordering {
    let mut left = a.split('/');
    let mut right = b.split('/');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(l), Some(r)) => match cmp_names(l, r) {
                Ordering::Equal => continue,
                other => return other,
            },
        }
    }
}

/// Why a walk stopped.
#[derive(Debug, thiserror::Error)]
pub enum WalkError<E> {
    #[error("listing `{prefix}` failed: {source}")]
    Listing { prefix: String, source: E },
    /// A directory listing broke the order the hierarchical namespace lists in, or the
    /// walk would yield names out of the flat order: nothing after it can be trusted.
    #[error(
        "the hierarchical listing of `{prefix}` is not in the order expected (`{previous}` came before `{next}`); the walk cannot continue"
    )]
    OutOfOrder {
        prefix: String,
        previous: String,
        next: String,
    },
}

/// Lists the entries directly under a prefix (`""`: the container's top level; otherwise
/// ending with `/`) as a hierarchical namespace does: blobs (files, and directories as
/// entries) and the prefixes of sub-directories, in [`cmp_hns`] order.
pub trait Directories: Send + Sync {
    type Error: Send + 'static;
    fn list(&self, prefix: &str) -> BoxStream<'static, Result<LevelEntry, Self::Error>>;
}

/// The directories of one container, listed through the Blob service (`delimiter=/`,
/// with every entry's access control, without index tags: an account with a hierarchical
/// namespace has none).
pub struct ContainerDirectories {
    pub lister: crate::listing::Lister,
    /// Entries per listing page (`None`: the service's maximum).
    pub page_size: Option<u32>,
}

impl std::fmt::Debug for ContainerDirectories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerDirectories")
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl Directories for ContainerDirectories {
    type Error = azure_core::Error;
    fn list(&self, prefix: &str) -> BoxStream<'static, Result<LevelEntry, azure_core::Error>> {
        self.lister
            .level(
                prefix.to_string(),
                crate::listing::Include::Permissions,
                self.page_size,
            )
            .boxed()
    }
}

/// A prefix waiting to be walked, ordered as the flat order places it.
#[derive(Debug, PartialEq, Eq)]
struct Pending(String);

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_names(&self.0, &other.0)
    }
}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One directory being walked.
struct Frame<E> {
    prefix: String,
    listing: BoxStream<'static, Result<LevelEntry, E>>,
    /// Sub-directory prefixes listed but not walked yet.
    pending: BinaryHeap<Reverse<Pending>>,
    /// A blob read from the listing that has to wait for a pending prefix to be walked.
    held: Option<ListedBlob>,
    /// The listing's previous entry (its name, and whether it was a prefix), for the order
    /// check.
    previous: Option<(String, bool)>,
    done: bool,
}

impl<E> Frame<E> {
    fn new(prefix: String, listing: BoxStream<'static, Result<LevelEntry, E>>) -> Self {
        Self {
            prefix,
            listing,
            pending: BinaryHeap::new(),
            held: None,
            previous: None,
            done: false,
        }
    }

    /// Checks that `entry` comes after the previous entry in HNS order. A directory is
    /// listed twice, as an entry `X` and as a prefix `X/`: the two compare equal.
    fn check_order(&mut self, name: &str, is_prefix: bool) -> Result<(), WalkError<E>> {
        let key = name.strip_suffix('/').filter(|_| is_prefix).unwrap_or(name);
        if let Some((previous, previous_is_prefix)) = &self.previous {
            let previous_key = previous
                .strip_suffix('/')
                .filter(|_| *previous_is_prefix)
                .unwrap_or(previous);
            let ok = match cmp_hns(previous_key, key) {
                Ordering::Less => true,
                Ordering::Equal => *previous_is_prefix != is_prefix,
                Ordering::Greater => false,
            };
            if !ok {
                return Err(WalkError::OutOfOrder {
                    prefix: self.prefix.clone(),
                    previous: previous.clone(),
                    next: name.to_string(),
                });
            }
        }
        self.previous = Some((name.to_string(), is_prefix));
        Ok(())
    }
}

struct Walk<L: Directories> {
    lister: L,
    stack: Vec<Frame<L::Error>>,
    /// The last name yielded, for the final order check.
    last: Option<String>,
}

/// Every entry under `root` (`""`: the whole container; otherwise ending with `/`), in the
/// order a flat account lists names ([`cmp_names`]), from directory listings in HNS order.
pub fn walk_in_flat_order<L>(
    lister: L,
    root: String,
) -> impl Stream<Item = Result<ListedBlob, WalkError<L::Error>>> + Send
where
    L: Directories + 'static,
{
    let first = Frame::new(root.clone(), lister.list(&root));
    let walk = Walk {
        lister,
        stack: vec![first],
        last: None,
    };
    futures::stream::unfold(Some(walk), |state| async move {
        let mut walk = state?;
        match walk.next().await {
            Some(Ok(blob)) => Some((Ok(blob), Some(walk))),
            // An error ends the walk.
            Some(Err(e)) => Some((Err(e), None)),
            None => None,
        }
    })
}

impl<L: Directories> Walk<L> {
    async fn next(&mut self) -> Option<Result<ListedBlob, WalkError<L::Error>>> {
        loop {
            let frame = self.stack.last_mut()?;
            if frame.held.is_none() && !frame.done {
                match frame.listing.next().await {
                    None => frame.done = true,
                    Some(Err(source)) => {
                        return Some(Err(WalkError::Listing {
                            prefix: frame.prefix.clone(),
                            source,
                        }));
                    }
                    Some(Ok(LevelEntry::Prefix(prefix))) => {
                        if let Err(e) = frame.check_order(&prefix, true) {
                            return Some(Err(e));
                        }
                        frame.pending.push(Reverse(Pending(prefix)));
                        continue;
                    }
                    Some(Ok(LevelEntry::Blob(blob))) => {
                        if let Err(e) = frame.check_order(&blob.name, false) {
                            return Some(Err(e));
                        }
                        frame.held = Some(blob);
                    }
                }
            }
            // The smallest prefix waiting goes first if the held blob (or the end of the
            // listing) comes after it.
            let prefix_first = match (&frame.held, frame.pending.peek()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(blob), Some(Reverse(Pending(p)))) => {
                    cmp_names(p, &blob.name) == Ordering::Less
                }
            };
            if prefix_first && let Some(Reverse(Pending(prefix))) = frame.pending.pop() {
                let listing = self.lister.list(&prefix);
                self.stack.push(Frame::new(prefix, listing));
                continue;
            }
            match frame.held.take() {
                Some(blob) => {
                    if let Some(last) = &self.last
                        && cmp_names(last, &blob.name) != Ordering::Less
                    {
                        return Some(Err(WalkError::OutOfOrder {
                            prefix: frame.prefix.clone(),
                            previous: last.clone(),
                            next: blob.name,
                        }));
                    }
                    self.last = Some(blob.name.clone());
                    return Some(Ok(blob));
                }
                // Listed and walked to the end.
                None => {
                    self.stack.pop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// The example of the issue tracker and the REST documentation's ordering rule: a
    /// flat account and an HNS account list the same names in these two orders.
    const FLAT: [&str; 9] = [
        "A", "A-B", "A-B-C", "A-B/dat2", "A/dat1", "AB", "AB.txt", "AB/AB", "AB/dat4",
    ];
    const HNS: [&str; 9] = [
        "A", "A/dat1", "A-B", "A-B/dat2", "A-B-C", "AB", "AB/AB", "AB/dat4", "AB.txt",
    ];

    /// A tree as an HNS account holds it: every entry, and which are directories.
    #[derive(Debug, Clone, Default)]
    struct Tree {
        entries: BTreeSet<String>,
        directories: BTreeSet<String>,
    }

    impl Tree {
        /// Paths become files, their parents directories; a path that is also a parent
        /// is a directory (a file and a directory cannot share a path). `dirs` are kept
        /// as directories even when empty.
        fn new(files: &[String], dirs: &[String]) -> Self {
            let mut tree = Tree::default();
            for path in files.iter().chain(dirs) {
                let segments: Vec<&str> = path.split('/').collect();
                for i in 1..segments.len() {
                    let parent = segments[..i].join("/");
                    tree.directories.insert(parent.clone());
                    tree.entries.insert(parent);
                }
                tree.entries.insert(path.clone());
            }
            for d in dirs {
                tree.directories.insert(d.clone());
            }
            tree
        }

        fn blob(name: &str) -> ListedBlob {
            ListedBlob {
                access: None,
                name: name.to_string(),
                etag: format!("etag-{name}"),
                size: 0,
                last_modified: String::new(),
                blob_type: Some("BlockBlob".into()),
                tags: Default::default(),
                content_md5: None,
            }
        }
    }

    /// Lists a [`Tree`] one directory at a time, as an HNS account does; counts requests.
    #[derive(Clone)]
    struct TreeLister {
        tree: std::sync::Arc<Tree>,
        listings: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl TreeLister {
        fn new(tree: Tree) -> Self {
            Self {
                tree: std::sync::Arc::new(tree),
                listings: Default::default(),
            }
        }
    }

    impl Directories for TreeLister {
        type Error = String;
        fn list(&self, prefix: &str) -> BoxStream<'static, Result<LevelEntry, String>> {
            self.listings
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut level: Vec<(String, bool)> = Vec::new();
            for e in &self.tree.entries {
                let Some(rest) = e.strip_prefix(prefix) else {
                    continue;
                };
                if rest.is_empty() || rest.contains('/') {
                    continue;
                }
                level.push((e.clone(), false));
                if self.tree.directories.contains(e) {
                    level.push((format!("{e}/"), true));
                }
            }
            // HNS order: by name segment by segment, a directory's entry before its prefix.
            level.sort_by(|(a, a_prefix), (b, b_prefix)| {
                let key = |n: &str, p: bool| {
                    if p {
                        n.trim_end_matches('/').to_string()
                    } else {
                        n.to_string()
                    }
                };
                cmp_hns(&key(a, *a_prefix), &key(b, *b_prefix)).then(a_prefix.cmp(b_prefix))
            });
            let entries: Vec<Result<LevelEntry, String>> = level
                .into_iter()
                .map(|(name, is_prefix)| {
                    Ok(if is_prefix {
                        LevelEntry::Prefix(name)
                    } else {
                        LevelEntry::Blob(Tree::blob(&name))
                    })
                })
                .collect();
            futures::stream::iter(entries).boxed()
        }
    }

    fn walk(tree: Tree) -> (Vec<String>, usize) {
        let lister = TreeLister::new(tree);
        let counter = lister.listings.clone();
        let names = futures::executor::block_on(
            walk_in_flat_order(lister, String::new())
                .map(|r| r.expect("walk").name)
                .collect::<Vec<_>>(),
        );
        (names, counter.load(std::sync::atomic::Ordering::SeqCst))
    }

    #[test]
    fn the_two_orders_of_the_example() {
        let mut names: Vec<&str> = FLAT.to_vec();
        names.sort_by(|a, b| cmp_names(a, b));
        assert_eq!(names, FLAT);
        names.sort_by(|a, b| cmp_hns(a, b));
        assert_eq!(names, HNS);
    }

    #[test]
    fn the_walk_brings_the_example_into_flat_order() {
        let files: Vec<String> = ["A/dat1", "A-B/dat2", "A-B-C", "AB/AB", "AB/dat4", "AB.txt"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let tree = Tree::new(&files, &[]);
        assert_eq!(tree.entries.len(), 9, "{tree:?}");
        let (names, listings) = walk(tree);
        assert_eq!(names, FLAT);
        // The top level and the directories A, A-B and AB.
        assert_eq!(listings, 4);
    }

    #[test]
    fn a_listing_out_of_hns_order_stops_the_walk() {
        struct Broken;
        impl Directories for Broken {
            type Error = String;
            fn list(&self, _prefix: &str) -> BoxStream<'static, Result<LevelEntry, String>> {
                futures::stream::iter(vec![
                    Ok(LevelEntry::Blob(Tree::blob("b"))),
                    Ok(LevelEntry::Blob(Tree::blob("a"))),
                ])
                .boxed()
            }
        }
        let out: Vec<_> =
            futures::executor::block_on(walk_in_flat_order(Broken, String::new()).collect());
        assert!(out[0].is_ok());
        assert!(matches!(
            &out[1],
            Err(WalkError::OutOfOrder { previous, next, .. }) if previous == "b" && next == "a"
        ));
        assert_eq!(out.len(), 2, "nothing after the error");
    }

    fn segment() -> impl Strategy<Value = String> {
        // Characters around `/` in both orders, and beyond the Basic Multilingual Plane.
        let chars = prop::sample::select(vec![
            'a',
            'b',
            'A',
            '-',
            '.',
            ' ',
            '0',
            '_',
            '=',
            'é',
            '\u{FF21}',
            '\u{1D11E}',
        ]);
        prop::collection::vec(chars, 1..4).prop_map(|c| c.into_iter().collect())
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 1..5).prop_map(|s| s.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        /// The walk yields exactly what sorting every entry in flat order yields, and lists
        /// each directory once.
        #[test]
        fn the_walk_plans_what_sorting_everything_plans(
            files in prop::collection::vec(path(), 0..60),
            dirs in prop::collection::vec(path(), 0..6),
        ) {
            let tree = Tree::new(&files, &dirs);
            let mut expected: Vec<String> = tree.entries.iter().cloned().collect();
            expected.sort_by(|a, b| cmp_names(a, b));
            let directories = tree.directories.len();
            let (names, listings) = walk(tree);
            prop_assert_eq!(names, expected);
            prop_assert_eq!(listings, directories + 1);
        }
    }
}
