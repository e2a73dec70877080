//! Splitting a container's key space into shards that can be listed independently.
//!
//! A shard is either every name under a prefix, or only the names directly at one
//! "directory level" of a prefix (no further `/`). The planner starts from the listing
//! roots (the whole container, or each include prefix) and splits breadth-first: a prefix
//! becomes its own level plus one shard per sub-prefix found by a hierarchical listing
//! (`delimiter=/`) of the source and, in a full scan, of the backup — so a directory that
//! exists only in the backup (deleted in the source) is still covered and its deletions
//! seen. Splitting stops when the target number of shards is reached; the top of the tree
//! splits first, so the large subtrees of a partitioned lake are the ones divided.
//!
//! Shards are disjoint and together cover every name under the roots, which is what makes
//! a sharded plan identical to an unsharded one.

use lakevault_common::select::BlobFilter;
use lakevault_common::wire::Shard;
use std::collections::VecDeque;
use std::future::Future;

/// Most sub-prefixes a prefix may have to be split; above it, the prefix stays one shard
/// (holding an unbounded list of prefixes would make planning memory grow with the lake).
pub const MAX_CHILDREN: usize = 10_000;

/// Plans at least `target` shards under `roots` where the tree allows it. `children(prefix)` returns the sub-prefixes one `/`
/// below `prefix` (each ending with `/`), or `None` when there are more than it is willing
/// to hold. Prefixes that `filter` excludes entirely are dropped: listing them would find
/// nothing selected on either side.
pub async fn plan_shards<F, Fut, E>(
    roots: Vec<String>,
    target: usize,
    filter: &BlobFilter,
    mut children: F,
) -> Result<Vec<Shard>, E>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Option<Vec<String>>, E>>,
{
    let mut shards: Vec<Shard> = Vec::new();
    let mut frontier: VecDeque<String> = roots.into();
    while let Some(prefix) = frontier.pop_front() {
        // Splitting turns one shard into at least two: stop once the target is reached.
        if shards.len() + frontier.len() + 1 >= target.max(1) {
            shards.push(Shard::whole(prefix));
            continue;
        }
        match children(prefix.clone()).await? {
            Some(kids) if !kids.is_empty() => {
                shards.push(Shard {
                    prefix,
                    level: true,
                });
                frontier.extend(kids.into_iter().filter(|k| !excluded(filter, k)));
            }
            _ => shards.push(Shard::whole(prefix)),
        }
    }
    shards.sort();
    Ok(shards)
}

/// Whether every name under `prefix` is excluded by an exclude prefix.
fn excluded(filter: &BlobFilter, prefix: &str) -> bool {
    filter
        .exclude_prefixes
        .iter()
        .any(|x| prefix.starts_with(x.as_str()))
}

/// Merges two sorted, deduplicated prefix lists into one.
pub fn union_sorted(a: Vec<String>, b: Vec<String>) -> Vec<String> {
    let mut all = a;
    all.extend(b);
    all.sort();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Sub-prefixes one level below `prefix`, as a hierarchical listing reports them.
    fn model_children(names: &BTreeSet<String>, prefix: &str) -> Vec<String> {
        let mut out: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_prefix(prefix))
            .filter_map(|rest| rest.find('/').map(|i| format!("{prefix}{}", &rest[..=i])))
            .collect();
        out.dedup();
        out
    }

    async fn shards_of(names: &BTreeSet<String>, roots: Vec<String>, target: usize) -> Vec<Shard> {
        plan_shards(roots, target, &BlobFilter::default(), |p| {
            let kids = model_children(names, &p);
            async move { Ok::<_, ()>(Some(kids)) }
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn splits_breadth_first_up_to_the_target() {
        let names: BTreeSet<String> = ["a/1", "a/x/2", "b/3", "root.txt", "c/d/e/4", "c/d/f/5"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            shards_of(&names, vec![String::new()], 1).await,
            vec![Shard::whole("")]
        );
        let shards = shards_of(&names, vec![String::new()], 4).await;
        assert_eq!(
            shards,
            vec![
                Shard {
                    prefix: "".into(),
                    level: true
                },
                Shard::whole("a/"),
                Shard::whole("b/"),
                Shard::whole("c/"),
            ]
        );
        let many = shards_of(&names, vec![String::new()], 100).await;
        assert!(many.len() > 4);
    }

    #[tokio::test]
    async fn excluded_prefixes_are_not_scanned() {
        let filter = BlobFilter {
            exclude_prefixes: vec!["tmp/".into()],
            ..Default::default()
        };
        let shards = plan_shards(vec![String::new()], 10, &filter, |_p| async {
            Ok::<_, ()>(Some(vec!["data/".to_string(), "tmp/".to_string()]))
        })
        .await
        .unwrap();
        assert!(shards.iter().all(|s| !s.prefix.starts_with("tmp/")));
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        // Short segments from a small alphabet so that names share prefixes, with `/`
        // anywhere (including doubled and trailing) and some non-ASCII.
        proptest::collection::vec(
            prop_oneof![
                Just("a"),
                Just("b"),
                Just("/"),
                Just("é"),
                Just("-"),
                Just("日")
            ],
            1..8,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        /// Every name lands in exactly one shard, whatever the target.
        #[test]
        fn shards_partition_the_names(
            names in proptest::collection::btree_set(name_strategy(), 0..60),
            target in 1usize..40,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let shards = rt.block_on(shards_of(&names, vec![String::new()], target));
            for n in &names {
                let owners = shards.iter().filter(|s| s.contains(n)).count();
                prop_assert_eq!(owners, 1, "{:?} in {} shards of {:?}", n, owners, shards);
            }
        }
    }
}
