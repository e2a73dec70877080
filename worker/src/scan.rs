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
use lakevault_common::storage::StorageAccount;
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
    ledger: StorageAccount,
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
            ledger,
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
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
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
        ledger::put_json(&self.ledger, &name, result)
            .await
            .map_err(|e| ItemFailure::from_sdk("recording the shard result", &e))
    }

    /// Finishes the container if every shard is recorded. Exactly one worker finishes: the
    /// first to create the claim blob, or the same task redelivered after a crash.
    async fn finish_if_last(
        &self,
        task: &ScanTask,
        message_id: &str,
        scan: &ContainerScan,
        destination: &StorageAccount,
    ) -> Result<(), ItemFailure> {
        let io = |what: &'static str| move |e: azure_core::Error| ItemFailure::from_sdk(what, &e);
        let base = format!("jobs/{}/scans/{}/", task.job, task.source.container);
        let recorded = ledger::list_state(&self.ledger, &format!("{base}shards/"))
            .await
            .map_err(io("listing shard results"))?;
        if recorded.len() < task.shard_count as usize {
            return Ok(());
        }
        let claim_name = format!("{base}finisher.json");
        let claim = Claim {
            message_id: message_id.to_string(),
        };
        if !ledger::create_json(&self.ledger, &claim_name, &claim)
            .await
            .map_err(io("claiming the container finish"))?
        {
            let holder = ledger::get_json::<Claim>(&self.ledger, &claim_name)
                .await
                .map_err(io("reading the finish claim"))?;
            if holder.is_none_or(|h| h.message_id != message_id) {
                return Ok(());
            }
        }
        let finish_name = ledger::scan_finish_name(&task.job, &task.source.container);
        if ledger::get_json::<ScanFinish>(&self.ledger, &finish_name)
            .await
            .map_err(io("reading the finish record"))?
            .is_some()
        {
            return Ok(());
        }
        let mut totals = ContainerTotals::default();
        let mut failures = Vec::new();
        for name in &recorded {
            let Some(result) = ledger::get_json::<ShardResult>(&self.ledger, name)
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
        ledger::put_json(&self.ledger, &finish_name, &finish)
            .await
            .map_err(io("recording the finish"))?;
        tracing::info!(job = %task.job, container = %task.source.container, shards = task.shard_count, copies = finish.counts.copies(), tombstones, "distributed scan finished");
        Ok(())
    }

    async fn write_watermark(&self, task: &ScanTask, destination: &StorageAccount) {
        let Ok(started) = time::OffsetDateTime::parse(
            &task.scan_started_at,
            &time::format_description::well_known::Rfc3339,
        ) else {
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
