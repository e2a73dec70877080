//! Scan tasks (distributed scans): a worker lists, diffs and enqueues the copies of one
//! shard with the coordinator's own scan code, and records the shard's result in the
//! ledger. The worker that records a container's last shard finishes the container:
//! it decides the tombstones against `max_tombstones`, enqueues them, writes the
//! container's watermark, and records `finish.json`.

use crate::copy::ItemFailure;
use async_trait::async_trait;
use lakevault_common::error::{FailureClass, describe};
use lakevault_common::ledger::{self, ScanFinish, ShardResult};
use lakevault_common::queue::WorkQueue;
use lakevault_common::record::rfc3339;
use lakevault_common::state::StateStore;
use lakevault_common::storage::StorageAccount;
use lakevault_common::store::azure::AzureStore;
use lakevault_common::store::{BlobStore, Side, StoreError};
use lakevault_common::wire::ScanTask;
use lakevault_plan::scan::{self, Accounts, ContainerScan, ContainerTotals, ShardScan};
use lakevault_plan::watermark;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Blob names kept per shard and container as a sample.
const SAMPLE: usize = 10;

/// Runs scan tasks. A trait so that message handling is testable without a service.
#[async_trait]
pub trait Scanner: Send + Sync {
    /// Scans the task's shard, records its result, and finishes the container if this was
    /// its last shard. `message_id` identifies the task across redeliveries.
    /// `cancel` stops the scan between two entries (shutdown); what it enqueued stays valid.
    async fn scan(
        &self,
        task: &ScanTask,
        message_id: &str,
        cancel: &CancellationToken,
    ) -> Result<u64, ItemFailure>;
    /// Records that the shard cannot be scanned (poisoned), so the container still
    /// finishes, as failed.
    async fn give_up(&self, task: &ScanTask, message_id: &str, reason: &str);
}

/// The scanner of a worker process.
#[derive(Debug)]
pub struct ScanEngine {
    accounts: HashMap<String, StorageAccount>,
    /// Where shard results and finishes are recorded (the queue's account).
    ledger_store: Arc<dyn BlobStore>,
    queue: Arc<dyn WorkQueue>,
}

impl ScanEngine {
    pub fn new(
        accounts: Vec<StorageAccount>,
        ledger: StorageAccount,
        queue: Arc<dyn WorkQueue>,
    ) -> Self {
        Self {
            accounts: accounts.into_iter().map(|a| (a.alias.clone(), a)).collect(),
            ledger_store: Arc::new(AzureStore::new(ledger)),
            queue,
        }
    }

    fn account(&self, alias: &str) -> Result<&StorageAccount, ItemFailure> {
        self.accounts.get(alias).ok_or_else(|| {
            ItemFailure::new(
                FailureClass::Permanent,
                format!("account alias `{alias}` is not in this worker's config"),
            )
        })
    }

    async fn run(
        &self,
        task: &ScanTask,
        message_id: &str,
        cancel: &CancellationToken,
    ) -> Result<u64, ItemFailure> {
        let source = self.account(&task.source.account)?;
        let destination = self.account(&task.destination.account)?;
        let modified_since = task
            .modified_since
            .as_deref()
            .map(|t| {
                lakevault_common::record::read_rfc3339(t).map_err(|e| {
                    ItemFailure::new(
                        FailureClass::Permanent,
                        format!("modified_since `{t}` is not RFC 3339: {e}"),
                    )
                })
            })
            .transpose()?;
        let backup_exists = destination
            .container(&task.destination.container)
            .map_err(|e| ItemFailure::new(FailureClass::Permanent, e.to_string()))?
            .exists()
            .await
            .map_err(|e| ItemFailure::from_sdk("checking the backup container", &e))?;
        let container_scan = container_scan(task, modified_since, backup_exists, cancel.clone());
        let accounts = Accounts {
            source,
            destination,
            queue: self.queue.as_ref(),
        };
        let found = scan::scan_shard(accounts, &container_scan, &task.shard)
            .await
            .map_err(|e| ItemFailure::new(e.class(), format!("shard {}: {e}", task.shard)))?;
        let copies = found.counts.copies();
        let result = ShardResult {
            counts: found.counts,
            sample: found.sample,
            tombstones: found.tombstones,
            ..shard_result(task)
        };
        self.record(&result).await?;
        self.finish_if_last(task, message_id, &container_scan, destination)
            .await?;
        Ok(copies)
    }

    async fn record(&self, result: &ShardResult) -> Result<(), ItemFailure> {
        let name =
            ledger::shard_result_name(&result.job, &result.source_container, result.shard_index);
        StateStore::new(self.ledger_store.as_ref())
            .put(&name, result)
            .await
            .map_err(|e| ItemFailure::from_store("recording the shard result", Side::State, &e))
    }

    /// Finishes the container if this task is elected ([`elect`]): adds up the shard
    /// results, enqueues the tombstones, writes the watermark and the finish record.
    async fn finish_if_last(
        &self,
        task: &ScanTask,
        message_id: &str,
        scan: &ContainerScan,
        destination: &StorageAccount,
    ) -> Result<(), ItemFailure> {
        let io = |what: &'static str| {
            move |e: StoreError| ItemFailure::from_store(what, Side::State, &e)
        };
        let state = StateStore::new(self.ledger_store.as_ref());
        let recorded = match elect(state, task, message_id)
            .await
            .map_err(io("electing the container's finisher"))?
        {
            Election::Won(recorded) => recorded,
            Election::NotLast | Election::Lost | Election::AlreadyFinished => return Ok(()),
        };
        let finish_name = ledger::scan_finish_name(&task.job, &task.source.container);
        let mut totals = ContainerTotals::default();
        let mut failures = Vec::new();
        for name in &recorded {
            let Some(result) = state
                .get::<ShardResult>(name)
                .await
                .map_err(io("reading a shard result"))?
            else {
                continue;
            };
            if let Some(error) = &result.error {
                failures.push(format!("shard {}: {error}", result.shard));
            }
            totals.add(
                ShardScan {
                    counts: result.counts,
                    sample: result.sample,
                    tombstones: result.tombstones,
                },
                task.max_tombstones,
                SAMPLE,
            );
        }
        let accounts = Accounts {
            source: self.account(&task.source.account)?,
            destination,
            queue: self.queue.as_ref(),
        };
        let (mut tombstones, mut tombstone_messages) = (0, 0);
        if failures.is_empty() {
            (tombstones, tombstone_messages) = totals
                .enqueue_tombstones(accounts, scan)
                .await
                .map_err(|e| ItemFailure::new(e.class(), format!("enqueueing tombstones: {e}")))?;
            if task.write_watermark {
                self.write_watermark(task, destination).await;
            }
        } else {
            // Deletions seen by the shards that worked are not a complete picture: the cap
            // cannot be judged, so none are recorded; the next full scan sees them again.
            tracing::error!(job = %task.job, container = %task.source.container, failures = failures.len(), "distributed scan incomplete: no tombstones, watermark unchanged");
        }
        let mut counts = totals.counts;
        counts.messages += tombstone_messages;
        let finish = ScanFinish {
            v: 1,
            job: task.job.clone(),
            source_container: task.source.container.clone(),
            destination_container: task.destination.container.clone(),
            shards: task.shard_count,
            counts,
            tombstones,
            tombstones_suppressed: totals.tombstones_suppressed,
            sample: totals.sample,
            failures,
            finished_at: rfc3339(time::OffsetDateTime::now_utc()),
        };
        state
            .put(&finish_name, &finish)
            .await
            .map_err(io("recording the finish"))?;
        tracing::info!(job = %task.job, container = %task.source.container, shards = task.shard_count, copies = finish.counts.copies(), tombstones, "distributed scan finished");
        Ok(())
    }

    async fn write_watermark(&self, task: &ScanTask, destination: &StorageAccount) {
        let Some(started) = lakevault_common::record::parse_rfc3339(&task.scan_started_at) else {
            tracing::warn!(job = %task.job, value = %task.scan_started_at, "scan_started_at is not RFC 3339; watermark not written");
            return;
        };
        let mode = if task.modified_since.is_some() {
            "incremental"
        } else {
            "full"
        };
        if let Err(e) = watermark::write(
            destination,
            &task.source.account,
            &task.source.container,
            started,
            &task.job,
            mode,
        )
        .await
        {
            // The copies are enqueued; only the next incremental run loses its shortcut.
            tracing::warn!(job = %task.job, container = %task.source.container, error = %describe(&e), "watermark not written");
        }
    }
}

/// The outcome of a finisher election for one container's distributed scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Election {
    /// Not every shard has recorded its result yet.
    NotLast,
    /// Another task holds the claim.
    Lost,
    /// The container was finished already (this task is a late redelivery).
    AlreadyFinished,
    /// This task finishes the container; the names of the shard results to add up.
    Won(Vec<String>),
}

/// Elects the finisher of a container's distributed scan. Only once every shard recorded
/// its result does any task compete; exactly one wins: the first to create the claim
/// (`If-None-Match: *`), or the same task redelivered after a crash, which resumes its
/// own claim. A container with a finish record is never finished twice.
pub async fn elect(
    state: StateStore<'_>,
    task: &ScanTask,
    message_id: &str,
) -> Result<Election, StoreError> {
    let base = format!("jobs/{}/scans/{}/", task.job, task.source.container);
    let recorded = state.list(&format!("{base}shards/")).await?;
    if recorded.len() < task.shard_count as usize {
        return Ok(Election::NotLast);
    }
    let claim_name = format!("{base}finisher.json");
    let claim = Claim {
        message_id: message_id.to_string(),
    };
    if !state.create(&claim_name, &claim).await? {
        let holder = state.get::<Claim>(&claim_name).await?;
        if holder.is_none_or(|h| h.message_id != message_id) {
            return Ok(Election::Lost);
        }
    }
    let finish_name = ledger::scan_finish_name(&task.job, &task.source.container);
    if state.get::<ScanFinish>(&finish_name).await?.is_some() {
        return Ok(Election::AlreadyFinished);
    }
    Ok(Election::Won(recorded))
}

/// A task's shard result with nothing found yet, stamped now.
fn shard_result(task: &ScanTask) -> ShardResult {
    ShardResult {
        v: 1,
        job: task.job.clone(),
        source_container: task.source.container.clone(),
        destination_container: task.destination.container.clone(),
        shard_index: task.shard_index,
        shard_count: task.shard_count,
        shard: task.shard.clone(),
        recorded_at: rfc3339(time::OffsetDateTime::now_utc()),
        ..Default::default()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claim {
    message_id: String,
}

fn container_scan(
    task: &ScanTask,
    modified_since: Option<time::OffsetDateTime>,
    backup_exists: bool,
    cancel: CancellationToken,
) -> ContainerScan {
    ContainerScan {
        job: task.job.clone(),
        source_alias: task.source.account.clone(),
        destination_alias: task.destination.account.clone(),
        container: task.source.container.clone(),
        destination_container: task.destination.container.clone(),
        filter: task.filter.clone(),
        modified_since,
        snapshot: task.snapshot,
        lease: task.lease,
        source_hierarchical: task.source_hierarchical,
        max_tombstones: task.max_tombstones,
        sample: SAMPLE,
        dry_run: false,
        backup_exists,
        progress: Default::default(),
        // One shard per scan task: full pages, as a single pass.
        page_size: None,
        cancel,
    }
}

#[async_trait]
impl Scanner for ScanEngine {
    async fn scan(
        &self,
        task: &ScanTask,
        message_id: &str,
        cancel: &CancellationToken,
    ) -> Result<u64, ItemFailure> {
        self.run(task, message_id, cancel).await
    }

    async fn give_up(&self, task: &ScanTask, message_id: &str, reason: &str) {
        self.record_failure(task, message_id, reason).await
    }
}

impl ScanEngine {
    async fn record_failure(&self, task: &ScanTask, message_id: &str, reason: &str) {
        let result = ShardResult {
            error: Some(reason.to_string()),
            ..shard_result(task)
        };
        let finished = async {
            self.record(&result).await?;
            let destination = self.account(&task.destination.account)?;
            let scan = container_scan(task, None, true, CancellationToken::new());
            self.finish_if_last(task, message_id, &scan, destination)
                .await
        };
        if let Err(e) = finished.await {
            tracing::error!(job = %task.job, shard = %task.shard, reason = %e.reason, "failed shard not recorded in the ledger");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakevault_common::store::memory::{Op, World};
    use lakevault_common::wire::{Location, MessageKind, Shard, WIRE_VERSION};

    fn task(shard_index: u32, shard_count: u32) -> ScanTask {
        ScanTask {
            v: WIRE_VERSION,
            kind: MessageKind::Scan,
            job: "job".into(),
            source: Location {
                account: "s".into(),
                container: "data".into(),
            },
            destination: Location {
                account: "b".into(),
                container: "data".into(),
            },
            shard: Shard::whole(format!("p{shard_index}/")),
            shard_index,
            shard_count,
            filter: Default::default(),
            modified_since: None,
            snapshot: false,
            lease: false,
            max_tombstones: 10,
            scan_started_at: "2026-01-01T00:00:00Z".into(),
            write_watermark: true,
            source_hierarchical: false,
            handed_back: 0,
        }
    }

    async fn record(state: StateStore<'_>, index: u32, count: u32) {
        let result = shard_result(&task(index, count));
        let name = ledger::shard_result_name("job", "data", index);
        state.put(&name, &result).await.unwrap();
    }

    #[tokio::test]
    async fn nobody_finishes_before_every_shard_is_in_and_then_exactly_one_does() {
        let world = World::new();
        let ops = world.account("ops");
        let state = StateStore::new(&ops);
        record(state, 0, 3).await;
        record(state, 1, 3).await;
        assert_eq!(
            elect(state, &task(1, 3), "m1").await.unwrap(),
            Election::NotLast
        );
        record(state, 2, 3).await;
        let won = elect(state, &task(2, 3), "m2").await.unwrap();
        assert!(
            matches!(won, Election::Won(ref names) if names.len() == 3),
            "{won:?}"
        );
        // A late task of the same container loses; the winner redelivered after a crash
        // resumes its own claim.
        assert_eq!(
            elect(state, &task(0, 3), "m0").await.unwrap(),
            Election::Lost
        );
        assert!(matches!(
            elect(state, &task(2, 3), "m2").await.unwrap(),
            Election::Won(_)
        ));
        // Once the finish is recorded, nobody finishes again.
        let finish = ScanFinish {
            v: 1,
            job: "job".into(),
            source_container: "data".into(),
            ..Default::default()
        };
        state
            .put(&ledger::scan_finish_name("job", "data"), &finish)
            .await
            .unwrap();
        assert_eq!(
            elect(state, &task(2, 3), "m2").await.unwrap(),
            Election::AlreadyFinished
        );
    }

    #[tokio::test]
    async fn two_last_shards_racing_elect_one_finisher() {
        let world = World::new();
        let ops = world.account("ops");
        for index in 0..2 {
            record(StateStore::new(&ops), index, 2).await;
        }
        // Worker A's claim is held on its way to the service while worker B claims.
        let gate = world.pause(Op::Put, |f| f.name("jobs/job/scans/data/finisher.json"));
        let a = {
            let ops = ops.clone();
            tokio::spawn(async move { elect(StateStore::new(&ops), &task(0, 2), "a").await })
        };
        gate.arrived().await;
        let b = elect(StateStore::new(&ops), &task(1, 2), "b")
            .await
            .unwrap();
        gate.release();
        let a = a.await.unwrap().unwrap();
        assert!(matches!(b, Election::Won(_)), "{b:?}");
        assert_eq!(a, Election::Lost, "the claim that arrives second loses");
    }
}
