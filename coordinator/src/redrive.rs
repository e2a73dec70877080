//! `redrive`: moves poison records back to the work queue once their cause is fixed. A
//! record's `batch` (the failed items only) goes back as a fresh copy batch (attempt 0); a
//! whole lakevault message kept in `original` (a scan task, an over-delivered message)
//! goes back as it was. Records that are not lakevault work (undecodable text, parts of a
//! split original) stay in the poison queue, and are reported.
//!
//! `--discard` gives up on the records instead: each one is deleted, and first the source
//! snapshots its items were planned with (snapshot mode), which nothing else would delete.

use lakevault_common::queue::{QueueError, WorkQueue};
use lakevault_common::store::{BlobRef, BlobStore, Condition, StoreError};
use lakevault_common::wire::{PoisonRecord, WorkMessage};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct RedriveOptions {
    /// Only records of this job.
    pub job: Option<String>,
    /// Stop after this many records re-driven.
    pub limit: Option<u64>,
    /// Delete the records (and their items' source snapshots) instead of re-driving them.
    pub discard: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("deleting a discarded item's source snapshot: {0}")]
    Snapshot(#[from] StoreError),
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RedriveReport {
    pub poison_queue: String,
    pub work_queue: String,
    /// Poison records moved back, and the copy items they carried.
    pub redriven: u64,
    pub items: u64,
    /// `--discard`: records deleted, and the source snapshots deleted with them.
    pub discarded: u64,
    pub snapshots_deleted: u64,
    /// Records left in the poison queue (other jobs, or not lakevault work).
    pub kept: u64,
    /// Why records were kept, with counts.
    pub kept_reasons: Vec<(String, u64)>,
}

impl RedriveReport {
    fn keep(&mut self, reason: &str) {
        self.kept += 1;
        match self.kept_reasons.iter_mut().find(|(r, _)| r == reason) {
            Some((_, n)) => *n += 1,
            None => self.kept_reasons.push((reason.to_string(), 1)),
        }
    }
}

/// The copy batch a poison record holds, if any (its failed items, or the whole original).
fn batch_of(text: &str) -> Option<lakevault_common::wire::CopyBatch> {
    let record: PoisonRecord = serde_json::from_str(text).ok()?;
    match (record.batch, record.original, record.part) {
        (Some(batch), _, _) => Some(batch),
        (None, Some(original), None) => match WorkMessage::decode(&original) {
            Ok(WorkMessage::Batch(b)) => Some(b),
            _ => None,
        },
        _ => None,
    }
}

/// Deletes the source snapshots of a discarded batch's items; how many were there.
async fn delete_snapshots(
    source: &dyn BlobStore,
    batch: &lakevault_common::wire::CopyBatch,
) -> Result<u64, lakevault_common::store::StoreError> {
    let mut deleted = 0;
    for item in &batch.items {
        let Some(snapshot) = item.snapshot.as_deref() else {
            continue;
        };
        let blob = BlobRef::new(&batch.source.container, &item.name).at_snapshot(Some(snapshot));
        match source.delete(blob, Condition::None, false).await {
            Ok(()) => deleted += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// What to send back for one poison message, or why it stays.
fn work_of(text: &str, job: Option<&str>) -> Result<(String, u64), &'static str> {
    let record: PoisonRecord =
        serde_json::from_str(text).map_err(|_| "not a lakevault poison record")?;
    let (work, items, record_job) = if let Some(batch) = record.batch {
        let items = batch.items.len() as u64;
        let job = batch.job.clone();
        (
            batch.with_items(batch.items.clone(), 0).encode(),
            items,
            job,
        )
    } else if let (Some(original), None) = (record.original, record.part) {
        match WorkMessage::decode(&original) {
            Ok(WorkMessage::Batch(b)) => {
                let items = b.items.len() as u64;
                (b.with_items(b.items.clone(), 0).encode(), items, b.job)
            }
            Ok(WorkMessage::Scan(task)) => (original, 0, task.job),
            Err(_) => return Err("the original message is not lakevault work"),
        }
    } else if record.part.is_some() {
        return Err("part of a split message that is not lakevault work");
    } else {
        return Err("the record carries no work");
    };
    if job.is_some_and(|j| j != record_job) {
        return Err("another job");
    }
    Ok((work, items))
}

/// Moves re-drivable poison records to `work`. Records kept are held invisible until the
/// pass ends (so every record is looked at once), then released.
pub async fn redrive(
    poison: &dyn WorkQueue,
    work: &dyn WorkQueue,
    source: &dyn BlobStore,
    options: &RedriveOptions,
) -> Result<RedriveReport, RedriveError> {
    let mut report = RedriveReport {
        poison_queue: poison.name().to_string(),
        work_queue: work.name().to_string(),
        ..Default::default()
    };
    // Long enough that a kept record does not come round again in this pass.
    let hold = Duration::from_secs(300);
    work.ensure_exists().await?;
    let mut held = Vec::new();
    loop {
        if options
            .limit
            .is_some_and(|l| report.redriven + report.discarded >= l)
        {
            break;
        }
        let messages = poison.receive(32, hold).await?;
        if messages.is_empty() {
            break;
        }
        for m in messages {
            if options
                .limit
                .is_some_and(|l| report.redriven + report.discarded >= l)
            {
                // Hand it back untouched.
                poison
                    .extend(&m.id, &m.pop_receipt, Duration::ZERO, None)
                    .await?;
                continue;
            }
            match work_of(&m.text, options.job.as_deref()) {
                Ok((_, items)) if options.discard => {
                    // Snapshots first, then the record: a crash in between leaves a record
                    // whose snapshots are gone (a re-drive then finds its items gone).
                    let with_snapshots =
                        batch_of(&m.text).filter(|b| b.items.iter().any(|i| i.snapshot.is_some()));
                    if let Some(batch) = with_snapshots {
                        if batch.source.account != source.alias() {
                            report.keep("its snapshots are in an account other than backup.source");
                            held.push((m.id, m.pop_receipt));
                            continue;
                        }
                        report.snapshots_deleted += delete_snapshots(source, &batch).await?;
                    }
                    poison.delete(&m.id, &m.pop_receipt).await?;
                    report.discarded += 1;
                    report.items += items;
                }
                Ok((text, items)) => {
                    // Work first, then the record: a crash in between re-drives twice, which
                    // is harmless; the other order could lose it.
                    work.send(&text, Duration::ZERO).await?;
                    poison.delete(&m.id, &m.pop_receipt).await?;
                    report.redriven += 1;
                    report.items += items;
                }
                Err(reason) => {
                    // Held until the pass ends, so that it is not received again.
                    report.keep(reason);
                    held.push((m.id, m.pop_receipt));
                }
            }
        }
    }
    for (id, receipt) in held {
        if let Err(e) = poison.extend(&id, &receipt, Duration::ZERO, None).await {
            tracing::debug!(message_id = %id, error = %e, "kept record visible again after its hold");
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakevault_common::queue::MemoryQueue;
    use lakevault_common::wire::{
        CopyBatch, CopyItem, Location, MessageKind, ScanTask, Shard, WIRE_VERSION,
    };

    fn batch(job: &str, attempt: u32) -> CopyBatch {
        CopyBatch {
            v: WIRE_VERSION,
            kind: MessageKind::Copy,
            job: job.into(),
            attempt,
            source: Location {
                account: "s".into(),
                container: "c".into(),
            },
            destination: Location {
                account: "d".into(),
                container: "c".into(),
            },
            lease: false,
            destination_prefix: None,
            overwrite: false,
            items: vec![CopyItem {
                access: None,
                name: "a".into(),
                etag: "0x1".into(),
                size: 1,
                last_modified: "2026-01-01T00:00:00Z".into(),
                tags: Default::default(),
                snapshot: None,
                backup: Default::default(),
            }],
            handed_back: 0,
            waits: 0,
            source_hierarchical: false,
            apply_access: false,
            carried: Default::default(),
        }
    }

    fn record(batch: Option<CopyBatch>, original: Option<String>) -> String {
        serde_json::to_string(&PoisonRecord {
            v: 1,
            kind: "poison".into(),
            reason: "test".into(),
            queue: "work".into(),
            message_id: "m".into(),
            dequeue_count: 1,
            failed_at: "2026-01-01T00:00:00Z".into(),
            batch,
            failures: vec![],
            original,
            part: None,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn lakevault_work_goes_back_and_the_rest_stays() {
        let poison = MemoryQueue::new("work-poison");
        let work = MemoryQueue::new("work");
        let scan = ScanTask {
            v: WIRE_VERSION,
            kind: MessageKind::Scan,
            job: "j1".into(),
            source: batch("j1", 0).source,
            destination: batch("j1", 0).destination,
            shard: Shard::whole("x/"),
            shard_index: 0,
            shard_count: 1,
            filter: Default::default(),
            modified_since: None,
            snapshot: false,
            lease: false,
            max_tombstones: 1,
            scan_started_at: "2026-01-01T00:00:00Z".into(),
            write_watermark: false,
            source_hierarchical: false,
            handed_back: 0,
        };
        for text in [
            record(Some(batch("j1", 4)), None),
            record(None, Some(scan.encode())),
            record(None, Some("hello".into())),
            record(Some(batch("j2", 1)), None),
            "not json".to_string(),
        ] {
            poison.send(&text, Duration::ZERO).await.unwrap();
        }
        let options = RedriveOptions {
            job: Some("j1".into()),
            limit: None,
            discard: false,
        };
        let source = lakevault_common::store::memory::World::new().account("s");
        let report = redrive(&poison, &work, &source, &options).await.unwrap();
        assert_eq!((report.redriven, report.items, report.kept), (2, 1, 3));
        let sent = work.texts();
        assert_eq!(sent.len(), 2);
        let WorkMessage::Batch(b) = WorkMessage::decode(&sent[0]).unwrap() else {
            panic!("a batch first")
        };
        assert_eq!(b.attempt, 0, "re-driven items get fresh attempts");
        assert_eq!(
            WorkMessage::decode(&sent[1]).unwrap(),
            WorkMessage::Scan(scan)
        );
        assert_eq!(
            poison.texts().len(),
            3,
            "kept records stay in the poison queue"
        );
    }

    #[tokio::test]
    async fn discarding_a_poison_record_deletes_its_source_snapshots() {
        let poison = MemoryQueue::new("work-poison");
        let work = MemoryQueue::new("work");
        let source = lakevault_common::store::memory::World::new().account("s");
        source.write("c", "a", b"x", &[]);
        let taken = source
            .snapshot(BlobRef::new("c", "a"), Condition::None)
            .await
            .unwrap();
        let mut held = batch("j1", 2);
        held.items[0].snapshot = Some(taken.snapshot.clone());
        poison
            .send(&record(Some(held), None), Duration::ZERO)
            .await
            .unwrap();
        poison
            .send(&record(Some(batch("j2", 0)), None), Duration::ZERO)
            .await
            .unwrap();
        let options = RedriveOptions {
            job: Some("j1".into()),
            limit: None,
            discard: true,
        };
        let report = redrive(&poison, &work, &source, &options).await.unwrap();
        assert_eq!(
            (
                report.discarded,
                report.snapshots_deleted,
                report.redriven,
                report.kept
            ),
            (1, 1, 0, 1)
        );
        assert!(
            source.snapshot_ids("c", "a").is_empty(),
            "the snapshot went with it"
        );
        assert!(work.texts().is_empty(), "nothing re-driven");
        assert_eq!(poison.texts().len(), 1, "the other job's record stays");
    }
}
