//! What a copy batch's item results mean for its message, decided without any I/O: which
//! outcomes are counted, which items are retried in a new message, which are poisoned
//! and why, and whether the whole message is handed back instead (shutdown, credentials).
//! Settling (queue and ledger writes) is in `mod.rs`; this is table-tested here.

use super::{MessagePolicy, MessageReport};
use crate::copy::{ItemFailure, ItemOutcome};
use crate::poison::FailedItem;
use lakevault_common::error::FailureClass;
use lakevault_common::tally::Tally;
use lakevault_common::wire::{CopyBatch, CopyItem};
use std::time::Duration;

/// How one item of a batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    Done(ItemOutcome),
    Failed(ItemFailure),
    /// Stopped by shutdown before or during its copy: not an attempt, never a failure.
    Cancelled,
}

impl From<Option<Result<ItemOutcome, ItemFailure>>> for ItemResult {
    fn from(r: Option<Result<ItemOutcome, ItemFailure>>) -> Self {
        match r {
            None => ItemResult::Cancelled,
            Some(Ok(o)) => ItemResult::Done(o),
            Some(Err(f)) => ItemResult::Failed(f),
        }
    }
}

/// Why a whole message goes back to the queue untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Shutdown interrupted an item: visible again at once, for another worker.
    Interrupted,
    /// Every failing item was denied access and none succeeded: a credential problem.
    /// The worker stops; the message waits one visibility timeout.
    Credentials(String),
    /// Every item not finished waited out an outage (the service unreachable or
    /// throttling): the message comes back after `delay`, without what finished and
    /// without using up an attempt.
    Outage { reason: String, delay: Duration },
}

/// The decision for one batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Outcome counts (`retried` and `poisoned` included).
    pub report: MessageReport,
    /// Items to enqueue again as a new message (attempt + 1).
    pub retry: Vec<CopyItem>,
    /// Items that waited out an outage, to enqueue again without using up an attempt
    /// (when others of the batch are retried or poisoned; otherwise [`Release::Outage`]).
    pub wait: Vec<CopyItem>,
    /// Items for the poison queue, with their reasons.
    pub poison: Vec<(CopyItem, FailedItem)>,
    /// `Some`: hand the message back instead of settling it.
    pub release: Option<Release>,
}

/// Decides a batch from its items' results.
pub fn decide(
    batch: &CopyBatch,
    results: Vec<(CopyItem, ItemResult)>,
    policy: &MessagePolicy,
) -> Decision {
    let mut d = Decision::default();
    // A credential problem (expired SAS, revoked key) fails every item alike. If others in
    // the same batch succeeded, the denial is about this blob alone (a name the source
    // service will not sign for, a per-blob policy): poison it with its reason instead of
    // stopping the worker.
    let any_success = results
        .iter()
        .any(|(_, r)| matches!(r, ItemResult::Done(_)));
    let mut interrupted = false;
    let mut denied = None;
    let mut outage = None;
    let r = &mut d.report.tally;
    for (item, result) in results {
        match result {
            ItemResult::Cancelled => interrupted = true,
            ItemResult::Done(outcome) => {
                count_done(r, &outcome, policy.released_snapshot(batch, &item));
            }
            // The account's credential itself failed (a SAS expiring mid-batch, a rotated
            // key): whatever succeeded before, every item after it would fail too.
            ItemResult::Failed(f)
                if f.class == FailureClass::Auth
                    && (!any_success || f.is_account_credential_failure()) =>
            {
                denied.get_or_insert(f.reason);
            }
            ItemResult::Failed(f) if f.class == FailureClass::Auth => {
                tracing::warn!(blob = %item.name, reason = %f.reason, "access denied for this blob only");
                let reason = format!(
                    "access denied for this blob while others in the batch succeeded: {}",
                    f.reason
                );
                d.poison.push(failed(item, "access-denied", reason));
            }
            // Nothing is wrong with the item: it is tried again, as often as it takes,
            // with a growing delay (invariant I5).
            ItemResult::Failed(f) if f.class == FailureClass::Unavailable => {
                tracing::info!(blob = %item.name, reason = %f.reason, "service unavailable; will wait and retry");
                d.wait.push(item);
                outage = Some(f.reason);
            }
            ItemResult::Failed(f)
                if f.class.is_retryable() && batch.attempt + 1 < policy.max_attempts =>
            {
                tracing::info!(blob = %item.name, reason = %f.reason, "copy failed; will retry");
                d.retry.push(item);
            }
            ItemResult::Failed(f) => {
                let code = f.code.as_ref().map(crate::copy::FailureCode::as_str);
                tracing::warn!(blob = %item.name, code, reason = %f.reason, "copy failed permanently");
                let class = if f.class.is_retryable() {
                    "retries-exhausted"
                } else {
                    "permanent"
                };
                d.poison.push(failed(item, class, f.reason));
            }
        }
    }
    // Either way the whole message goes back: everything already copied is idempotent to
    // redo, and nothing is dropped or counted failed. A credential problem is reported
    // even during a shutdown, so the worker says why it stops.
    d.release = match (denied, interrupted, outage) {
        (Some(reason), _, _) => Some(Release::Credentials(reason)),
        (None, true, _) => Some(Release::Interrupted),
        // Only waiting items are left: the message itself comes back later.
        (None, false, Some(reason)) if d.retry.is_empty() && d.poison.is_empty() => {
            d.report.tally.waiting = d.wait.len() as u64;
            Some(Release::Outage {
                reason,
                delay: policy.wait_delay(batch.waits),
            })
        }
        (None, false, _) => None,
    };
    if let Some(Release::Credentials(reason)) = &d.release {
        d.report.auth_failure = Some(reason.clone());
    }
    if d.release.is_some() {
        d.report.released = true;
        d.retry.clear();
        d.wait.clear();
        d.poison.clear();
        return d;
    }
    d.report.tally.retried = d.retry.len() as u64;
    d.report.tally.waiting = d.wait.len() as u64;
    d.report.tally.poisoned = d.poison.len() as u64;
    d
}

/// Counts a finished item's outcome (and its source snapshot, deleted by the engine at a
/// final outcome, when `released_snapshot`).
pub(super) fn count_done(r: &mut Tally, outcome: &ItemOutcome, released_snapshot: bool) {
    r.snapshots_released += u64::from(released_snapshot);
    match outcome {
        ItemOutcome::Copied {
            bytes,
            kept_previous,
            ..
        } => {
            r.copied += 1;
            r.bytes += bytes;
            r.kept_previous += u64::from(*kept_previous);
        }
        ItemOutcome::AlreadyCurrent => r.already_current += 1,
        ItemOutcome::TargetExists => r.target_exists += 1,
        ItemOutcome::SourceGone => r.source_gone += 1,
        ItemOutcome::Tombstoned => r.tombstoned += 1,
        ItemOutcome::Superseded => r.superseded += 1,
    }
}

fn failed(item: CopyItem, class: &str, reason: String) -> (CopyItem, FailedItem) {
    let entry = FailedItem {
        name: item.name.clone(),
        class: class.into(),
        reason,
    };
    (item, entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakevault_common::wire::{Location, MessageKind, WIRE_VERSION};

    fn batch(attempt: u32) -> CopyBatch {
        CopyBatch {
            v: WIRE_VERSION,
            kind: MessageKind::Copy,
            job: "j".into(),
            attempt,
            source: Location {
                account: "s".into(),
                container: "c".into(),
            },
            destination: Location {
                account: "b".into(),
                container: "c".into(),
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

    fn item(n: usize) -> CopyItem {
        CopyItem {
            access: None,
            name: format!("b{n}"),
            etag: "0x1".into(),
            size: 10,
            last_modified: String::new(),
            tags: Default::default(),
            snapshot: None,
            backup: Default::default(),
        }
    }

    fn copied() -> ItemResult {
        ItemResult::Done(ItemOutcome::Copied {
            bytes: 10,
            source_etag: "0x1".into(),
            kept_previous: true,
        })
    }

    fn fail(class: FailureClass) -> ItemResult {
        ItemResult::Failed(ItemFailure::new(class, format!("{class:?}")))
    }

    /// (results, attempt) → ((copied, retried, waiting, poisoned), release, poison classes)
    #[test]
    fn decisions() {
        use FailureClass::*;
        type Row = (
            Vec<ItemResult>,
            u32,
            (u64, u64, u64, u64),
            Option<&'static str>,
            Vec<&'static str>,
        );
        let rows: Vec<Row> = vec![
            // Everything copied.
            (vec![copied(), copied()], 0, (2, 0, 0, 0), None, vec![]),
            // A transient failure is retried while attempts remain...
            (
                vec![copied(), fail(Transient)],
                0,
                (1, 1, 0, 0),
                None,
                vec![],
            ),
            // ...and poisoned as retries-exhausted on the last attempt.
            (
                vec![copied(), fail(Transient)],
                4,
                (1, 0, 0, 1),
                None,
                vec!["retries-exhausted"],
            ),
            // A permanent failure is poisoned at once.
            (
                vec![fail(Permanent)],
                0,
                (0, 0, 0, 1),
                None,
                vec!["permanent"],
            ),
            // Denied while another item succeeded: this blob alone, poisoned.
            (
                vec![copied(), fail(Auth)],
                0,
                (1, 0, 0, 1),
                None,
                vec!["access-denied"],
            ),
            // Denied everywhere: a credential problem; nothing retried or poisoned.
            (
                vec![fail(Auth), fail(Auth), fail(Transient)],
                4,
                (0, 0, 0, 0),
                Some("credentials"),
                vec![],
            ),
            // Shutdown: the message goes back whole, even with failures beside it.
            (
                vec![copied(), ItemResult::Cancelled, fail(Permanent)],
                0,
                (1, 0, 0, 0),
                Some("interrupted"),
                vec![],
            ),
            (
                vec![ItemResult::Cancelled, fail(Auth)],
                0,
                (0, 0, 0, 0),
                Some("credentials"),
                vec![],
            ),
            // An outage uses up no attempt, even on the last one: with nothing else left
            // to settle, the message itself waits and comes back.
            (
                vec![copied(), fail(Unavailable), fail(Unavailable)],
                4,
                (1, 0, 2, 0),
                Some("outage"),
                vec![],
            ),
            // Beside items that are retried or poisoned, waiting items get a message of
            // their own, at the same attempt.
            (
                vec![fail(Unavailable), fail(Transient), fail(Permanent)],
                0,
                (0, 1, 1, 1),
                None,
                vec!["permanent"],
            ),
            (
                vec![fail(Unavailable), fail(Transient)],
                4,
                (0, 0, 1, 1),
                None,
                vec!["retries-exhausted"],
            ),
            // A credential failure beside an outage: the worker stops, nothing waits.
            (
                vec![fail(Unavailable), fail(Auth)],
                0,
                (0, 0, 0, 0),
                Some("credentials"),
                vec![],
            ),
            // Outcomes that are not copies are counted, never failed.
            (
                vec![
                    ItemResult::Done(ItemOutcome::AlreadyCurrent),
                    ItemResult::Done(ItemOutcome::SourceGone),
                    ItemResult::Done(ItemOutcome::Superseded),
                ],
                0,
                (0, 0, 0, 0),
                None,
                vec![],
            ),
        ];
        let policy = MessagePolicy::default();
        for (i, (results, attempt, (copied, retried, waiting, poisoned), release, classes)) in
            rows.into_iter().enumerate()
        {
            let n = results.len();
            let results = results
                .into_iter()
                .enumerate()
                .map(|(k, r)| (item(k), r))
                .collect();
            let d = decide(&batch(attempt), results, &policy);
            let r = &d.report.tally;
            assert_eq!(
                (r.copied, r.retried, r.waiting, r.poisoned),
                (copied, retried, waiting, poisoned),
                "row {i}: {d:?}"
            );
            assert_eq!(d.retry.len() as u64, retried, "row {i}");
            let handed_back_whole = matches!(d.release, Some(Release::Outage { .. }));
            if !handed_back_whole {
                assert_eq!(d.wait.len() as u64, waiting, "row {i}");
            }
            let got_release = d.release.as_ref().map(|r| match r {
                Release::Interrupted => "interrupted",
                Release::Credentials(_) => "credentials",
                Release::Outage { .. } => "outage",
            });
            assert_eq!(got_release, release, "row {i}");
            assert_eq!(d.report.released, release.is_some(), "row {i}");
            assert_eq!(
                d.report.auth_failure.is_some(),
                release == Some("credentials"),
                "row {i}"
            );
            let got: Vec<&str> = d.poison.iter().map(|(_, f)| f.class.as_str()).collect();
            assert_eq!(got, classes, "row {i}");
            assert!(d.poison.len() + d.retry.len() + d.wait.len() <= n);
        }
    }

    /// Only a backup in snapshot mode releases source snapshots: a restore of an older
    /// version reads a snapshot of the backup blob, which is kept, and is not counted.
    #[test]
    fn only_backup_items_count_released_source_snapshots() {
        let at_snapshot = |n| CopyItem {
            snapshot: Some("2026-12-03T10:00:00.0000000Z".into()),
            ..item(n)
        };
        let policy = MessagePolicy {
            releases_source_snapshots: true,
            ..MessagePolicy::default()
        };
        let released = |kind| {
            let b = CopyBatch { kind, ..batch(0) };
            let results = vec![(at_snapshot(0), copied()), (item(1), copied())];
            decide(&b, results, &policy).report.tally.snapshots_released
        };
        assert_eq!(released(MessageKind::Copy), 1);
        assert_eq!(released(MessageKind::Restore), 0);
    }

    #[test]
    fn counts_every_kind_of_outcome() {
        let results = vec![
            (item(0), copied()),
            (item(1), ItemResult::Done(ItemOutcome::AlreadyCurrent)),
            (item(2), ItemResult::Done(ItemOutcome::TargetExists)),
            (item(3), ItemResult::Done(ItemOutcome::SourceGone)),
            (item(4), ItemResult::Done(ItemOutcome::Tombstoned)),
            (item(5), ItemResult::Done(ItemOutcome::Superseded)),
        ];
        let r = decide(&batch(0), results, &MessagePolicy::default())
            .report
            .tally;
        assert_eq!(
            (
                r.copied,
                r.bytes,
                r.kept_previous,
                r.already_current,
                r.target_exists,
                r.source_gone,
                r.tombstoned,
                r.superseded
            ),
            (1, 10, 1, 1, 1, 1, 1, 1)
        );
    }
}
