//! Items by outcome: one type for what a message did, what a batch's ledger record says,
//! and what a worker's run did, so the outcomes are named and added up in one place.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tally {
    /// Copied; the backup now holds the planned (or a newer) source version.
    pub copied: u64,
    /// Bytes of the copied items.
    pub bytes: u64,
    /// The source blob was gone: nothing to copy.
    pub source_gone: u64,
    /// Backup blobs marked deleted in the source.
    pub tombstoned: u64,
    /// Nothing to do any more: the backup changed or went away since planning.
    pub superseded: u64,
    /// Items the backup already held at the planned version (nothing copied).
    pub already_current: u64,
    /// Copies that kept the replaced backup version as a snapshot.
    pub kept_previous: u64,
    /// Restore items left alone because the target exists.
    pub target_exists: u64,
    /// Items handed back to the queue for another attempt (they settle in a later batch).
    pub retried: u64,
    /// Items that waited out an outage (the service unreachable or throttling) and were
    /// handed back without using up an attempt.
    pub waiting: u64,
    /// Items moved to the poison queue.
    pub poisoned: u64,
    /// Snapshot mode: source snapshots deleted once their item was final.
    pub snapshots_released: u64,
}

impl Tally {
    pub fn is_empty(&self) -> bool {
        *self == Tally::default()
    }

    pub fn add(&mut self, other: &Tally) {
        self.copied += other.copied;
        self.bytes += other.bytes;
        self.source_gone += other.source_gone;
        self.tombstoned += other.tombstoned;
        self.superseded += other.superseded;
        self.already_current += other.already_current;
        self.kept_previous += other.kept_previous;
        self.target_exists += other.target_exists;
        self.retried += other.retried;
        self.waiting += other.waiting;
        self.poisoned += other.poisoned;
        self.snapshots_released += other.snapshots_released;
    }

    /// Items finished without failing: copied, or nothing left to do.
    pub fn done(&self) -> u64 {
        self.copied
            + self.source_gone
            + self.tombstoned
            + self.superseded
            + self.already_current
            + self.target_exists
    }

    /// Item counts by the `outcome` label of `lakevault_blobs_total`.
    pub fn by_outcome(&self) -> [(&'static str, u64); 9] {
        [
            ("copied", self.copied),
            ("already_current", self.already_current),
            ("target_exists", self.target_exists),
            ("gone", self.source_gone),
            ("tombstoned", self.tombstoned),
            ("superseded", self.superseded),
            ("retried", self.retried),
            ("waiting", self.waiting),
            ("poisoned", self.poisoned),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_and_keeps_its_json_keys() {
        let mut total = Tally {
            copied: 2,
            bytes: 10,
            poisoned: 1,
            ..Default::default()
        };
        total.add(&Tally {
            copied: 1,
            already_current: 3,
            retried: 2,
            ..Default::default()
        });
        assert_eq!((total.copied, total.done(), total.retried), (3, 6, 2));
        let json = serde_json::to_value(total).unwrap();
        assert_eq!(json["already_current"], 3);
        // Records written before a field existed still read.
        let old: Tally = serde_json::from_str(r#"{"copied": 4}"#).unwrap();
        assert_eq!(old.copied, 4);
    }
}
