//! The job ledger: what each backup job planned and what became of every batch, kept as
//! small JSON blobs in the ops account (the queue's account) under
//! `lakevault-state/jobs/<job>/`. The coordinator writes `plan.json` once planning ends;
//! each worker writes `outcomes/<message id>.json` once a message is settled. A message
//! redelivered after a crash overwrites its own outcome, so nothing is counted twice.
//! Containers scanned by workers (distributed scans) add `scans/<container>/shards/<i>.json`
//! per shard and `scans/<container>/finish.json` once every shard is in.

use crate::storage::StorageAccount;
use crate::tally::Tally;
use crate::wire::{CopyItem, Shard};
use azure_core::http::RequestContent;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// The container holding lakevault's own state (ledger, watermarks).
pub const STATE_CONTAINER: &str = "lakevault-state";

/// What a job planned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPlan {
    pub v: u32,
    pub job: String,
    pub mode: String,
    pub started_at: String,
    pub finished_at: String,
    pub containers: Vec<PlannedContainer>,
    /// Containers that could not be planned, with the reason.
    #[serde(default)]
    pub failed: Vec<FailedContainer>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedContainer {
    pub source_container: String,
    pub destination_container: String,
    /// Items enqueued: copies plus tombstone marks.
    pub items: u64,
    pub messages: u64,
    pub bytes: u64,
    /// Distributed scans: the number of shards handed to workers (the counts above are then
    /// 0 and come from the shard results). 0 when the coordinator scanned the container.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub distributed_shards: u64,
    /// Snapshot mode: source snapshots taken for the copies enqueued.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub snapshots: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a scan found, for a shard or a whole container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanCounts {
    pub new: u64,
    pub changed: u64,
    pub unchanged: u64,
    /// Backup blobs whose source is gone (newly seen this run). They are kept and marked
    /// as tombstones, never deleted.
    pub deleted_in_source: u64,
    /// Backup blobs already marked as tombstones by an earlier run.
    pub already_tombstoned: u64,
    /// Backup blobs without a lakevault record (not written by lakevault): left alone.
    pub unmanaged: u64,
    /// Snapshot mode: blobs deleted between listing and snapshot (not enqueued).
    pub vanished: u64,
    pub bytes_to_copy: u64,
    /// Copy messages enqueued (tombstone messages are counted by the container).
    pub messages: u64,
    /// Snapshot mode: source snapshots taken for the copies enqueued.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub snapshots: u64,
}

impl ScanCounts {
    pub fn add(&mut self, o: &ScanCounts) {
        self.new += o.new;
        self.changed += o.changed;
        self.unchanged += o.unchanged;
        self.deleted_in_source += o.deleted_in_source;
        self.already_tombstoned += o.already_tombstoned;
        self.unmanaged += o.unmanaged;
        self.vanished += o.vanished;
        self.bytes_to_copy += o.bytes_to_copy;
        self.messages += o.messages;
        self.snapshots += o.snapshots;
    }

    /// Copy items enqueued.
    pub fn copies(&self) -> u64 {
        (self.new + self.changed).saturating_sub(self.vanished)
    }
}

/// What the scan of one shard found and enqueued (distributed scans).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardResult {
    pub v: u32,
    pub job: String,
    pub source_container: String,
    pub destination_container: String,
    pub shard_index: u32,
    pub shard_count: u32,
    pub shard: Shard,
    #[serde(flatten)]
    pub counts: ScanCounts,
    #[serde(default)]
    pub sample: Vec<String>,
    /// Source deletions found in this shard, held here until every shard is in: only then
    /// is it known whether the container stays under `max_tombstones`. Empty when this
    /// shard alone crossed the cap.
    #[serde(default)]
    pub tombstones: Vec<CopyItem>,
    /// Why the shard could not be scanned (its copies may be partly enqueued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub recorded_at: String,
}

/// A distributed container scan, finished by the worker that recorded its last shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanFinish {
    pub v: u32,
    pub job: String,
    pub source_container: String,
    pub destination_container: String,
    pub shards: u32,
    #[serde(flatten)]
    pub counts: ScanCounts,
    /// Tombstone marks enqueued.
    pub tombstones: u64,
    pub tombstones_suppressed: bool,
    #[serde(default)]
    pub sample: Vec<String>,
    /// Shards that failed, with reasons: the container is reported failed and keeps its
    /// watermark, so the next run scans it again.
    #[serde(default)]
    pub failures: Vec<String>,
    pub finished_at: String,
}

impl ScanFinish {
    /// Items enqueued for this container: copies plus tombstone marks.
    pub fn items(&self) -> u64 {
        self.counts.copies() + self.tombstones
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedContainer {
    pub container: String,
    pub reason: String,
}

/// What one settled message did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcome {
    pub v: u32,
    pub job: String,
    pub message_id: String,
    pub attempt: u32,
    pub source_container: String,
    pub items: u64,
    #[serde(flatten)]
    pub tally: Tally,
    /// The first few failures, with their reasons (the poison queue has all of them).
    #[serde(default)]
    pub failures: Vec<OutcomeFailure>,
    pub recorded_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeFailure {
    pub name: String,
    pub reason: String,
}

/// Everything the ledger holds about one job.
#[derive(Debug, Clone, Default)]
pub struct JobRecord {
    pub plan: Option<JobPlan>,
    pub outcomes: Vec<BatchOutcome>,
    /// Distributed scans: the shards recorded so far, and the containers finished.
    pub shards: Vec<ShardResult>,
    pub finishes: Vec<ScanFinish>,
}

/// Where a job stands, as `status` and the API report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// No plan in the ledger yet.
    #[default]
    Planning,
    /// A distributed scan: some containers' shards are still being scanned by workers.
    Scanning,
    /// Planned work is still pending.
    Running,
    /// Everything planned is done.
    Completed,
    /// Done, but items were poisoned or containers failed.
    CompletedWithFailures,
}

impl JobState {
    /// Nothing more will happen to the job.
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Completed | JobState::CompletedWithFailures)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Planning => "planning",
            JobState::Scanning => "scanning",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::CompletedWithFailures => "completed_with_failures",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's progress, derived from its plan and outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobStatus {
    pub job: String,
    pub state: JobState,
    /// Distributed scans: shards scanned by workers so far, of how many.
    #[serde(skip_serializing_if = "is_zero")]
    pub shards_scanned: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub shards_total: u64,
    pub planned_items: u64,
    pub done: u64,
    pub copied: u64,
    pub bytes: u64,
    pub poisoned: u64,
    pub pending: u64,
    pub batches: u64,
    /// Snapshot mode: source snapshots taken for this job, and those not yet deleted (their
    /// items are pending, failed or poisoned: a re-drive copies from them and then deletes
    /// them). Each one holds storage on the production lake and blocks deleting its blob
    /// without `include snapshots`.
    #[serde(skip_serializing_if = "is_zero")]
    pub source_snapshots_taken: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub source_snapshots_held: u64,
    pub failed_containers: Vec<FailedContainer>,
    pub failures: Vec<OutcomeFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<JobPlan>,
}

impl JobStatus {
    pub fn from_record(job: &str, record: JobRecord) -> Self {
        let JobRecord {
            plan,
            outcomes,
            shards,
            finishes,
        } = record;
        let mut s = JobStatus {
            job: job.to_string(),
            ..Default::default()
        };
        let mut released = 0;
        for o in &outcomes {
            s.batches += 1;
            s.copied += o.tally.copied;
            s.bytes += o.tally.bytes;
            s.done += o.tally.done();
            s.poisoned += o.tally.poisoned;
            released += o.tally.snapshots_released;
            for f in &o.failures {
                if s.failures.len() < 50 {
                    s.failures.push(f.clone());
                }
            }
        }
        match &plan {
            None => s.state = JobState::Planning,
            Some(p) => {
                s.failed_containers = p.failed.clone();
                let mut scanning = false;
                for c in &p.containers {
                    if c.distributed_shards == 0 {
                        s.planned_items += c.items;
                        s.source_snapshots_taken += c.snapshots;
                        continue;
                    }
                    s.shards_total += c.distributed_shards;
                    let finish = finishes
                        .iter()
                        .find(|f| f.source_container == c.source_container);
                    match finish {
                        Some(f) => {
                            s.shards_scanned += u64::from(f.shards);
                            s.planned_items += f.items();
                            s.source_snapshots_taken += f.counts.snapshots;
                            if !f.failures.is_empty() {
                                s.failed_containers.push(FailedContainer {
                                    container: c.source_container.clone(),
                                    reason: f.failures.join("; "),
                                });
                            }
                        }
                        None => {
                            // Still scanning: count what the shards recorded so far.
                            scanning = true;
                            for r in shards
                                .iter()
                                .filter(|r| r.source_container == c.source_container)
                            {
                                s.shards_scanned += 1;
                                s.planned_items += r.counts.copies();
                                s.source_snapshots_taken += r.counts.snapshots;
                            }
                        }
                    }
                }
                s.pending = s.planned_items.saturating_sub(s.done + s.poisoned);
                s.source_snapshots_held = s.source_snapshots_taken.saturating_sub(released);
                s.state = match (
                    scanning,
                    s.pending,
                    s.poisoned + s.failed_containers.len() as u64,
                ) {
                    (true, _, _) => JobState::Scanning,
                    (false, 0, 0) => JobState::Completed,
                    (false, 0, _) => JobState::CompletedWithFailures,
                    _ => JobState::Running,
                };
            }
        }
        s.plan = plan;
        s
    }
}

fn other(e: impl std::fmt::Display) -> azure_core::Error {
    azure_core::Error::with_message(azure_core::error::ErrorKind::Other, e.to_string())
}

/// Writes a JSON state blob (creating the state container if needed).
pub async fn put_json<T: Serialize>(
    account: &StorageAccount,
    name: &str,
    value: &T,
) -> azure_core::Result<()> {
    let body = serde_json::to_vec(value).map_err(other)?;
    let client = account.blob(STATE_CONTAINER, name).map_err(other)?;
    // One request per write: the state container is created on the first write that
    // finds it missing, not checked before every write.
    match client
        .upload(RequestContent::from(body.clone()), None)
        .await
    {
        Err(e) if crate::error::error_code(&e) == Some("ContainerNotFound") => {
            account.ensure_container(STATE_CONTAINER).await?;
            client
                .upload(RequestContent::from(body), None)
                .await
                .map(|_| ())
        }
        r => r.map(|_| ()),
    }
}

/// Reads a JSON state blob; `None` if it does not exist.
pub async fn get_json<T: for<'de> Deserialize<'de>>(
    account: &StorageAccount,
    name: &str,
) -> azure_core::Result<Option<T>> {
    let client = account.blob(STATE_CONTAINER, name).map_err(other)?;
    let result = match client.download(None).await {
        Ok(r) => r,
        Err(e) if e.http_status().map(u16::from) == Some(404) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut body = result.body;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(other)
}

pub async fn write_plan(account: &StorageAccount, plan: &JobPlan) -> azure_core::Result<()> {
    put_json(account, &format!("jobs/{}/plan.json", plan.job), plan).await
}

pub async fn write_outcome(
    account: &StorageAccount,
    outcome: &BatchOutcome,
) -> azure_core::Result<()> {
    put_json(
        account,
        &format!("jobs/{}/outcomes/{}.json", outcome.job, outcome.message_id),
        outcome,
    )
    .await
}

pub fn shard_result_name(job: &str, container: &str, index: u32) -> String {
    format!("jobs/{job}/scans/{container}/shards/{index:06}.json")
}

pub fn scan_finish_name(job: &str, container: &str) -> String {
    format!("jobs/{job}/scans/{container}/finish.json")
}

/// Names of the state blobs under `prefix`.
pub async fn list_state(account: &StorageAccount, prefix: &str) -> azure_core::Result<Vec<String>> {
    let container = account.container(STATE_CONTAINER).map_err(other)?;
    let options = azure_storage_blob::models::BlobContainerClientListBlobsOptions {
        prefix: Some(prefix.to_string()),
        ..Default::default()
    };
    let mut names = Vec::new();
    let mut pager = container.list_blobs(Some(options))?;
    while let Some(item) = pager.next().await {
        match item {
            Ok(item) => names.extend(item.name),
            Err(e) if e.http_status().map(u16::from) == Some(404) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(names)
}

/// A job's plan and every outcome and scan result recorded so far.
pub async fn read_job(account: &StorageAccount, job: &str) -> azure_core::Result<JobRecord> {
    let mut record = JobRecord {
        plan: get_json::<JobPlan>(account, &format!("jobs/{job}/plan.json")).await?,
        ..Default::default()
    };
    for name in list_state(account, &format!("jobs/{job}/")).await? {
        if name.contains("/outcomes/") {
            record
                .outcomes
                .extend(get_json::<BatchOutcome>(account, &name).await?);
        } else if name.contains("/shards/") {
            record
                .shards
                .extend(get_json::<ShardResult>(account, &name).await?);
        } else if name.ends_with("/finish.json") {
            record
                .finishes
                .extend(get_json::<ScanFinish>(account, &name).await?);
        }
    }
    Ok(record)
}

/// The most recently started job that has a plan, if any.
pub async fn latest_job(account: &StorageAccount) -> azure_core::Result<Option<String>> {
    let container = account.container(STATE_CONTAINER).map_err(other)?;
    if !container.exists().await? {
        return Ok(None);
    }
    let options = azure_storage_blob::models::BlobContainerClientListBlobsOptions {
        prefix: Some("jobs/".into()),
        ..Default::default()
    };
    let mut latest: Option<(String, String)> = None;
    let mut pager = container.list_blobs(Some(options))?;
    while let Some(item) = pager.next().await {
        let Some(name) = item?.name else { continue };
        if !name.ends_with("/plan.json") {
            continue;
        }
        if let Some(plan) = get_json::<JobPlan>(account, &name).await?
            && latest.as_ref().is_none_or(|(t, _)| plan.started_at > *t)
        {
            latest = Some((plan.started_at, plan.job));
        }
    }
    Ok(latest.map(|(_, job)| job))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(items: u64, failed: usize) -> JobPlan {
        JobPlan {
            v: 1,
            job: "j".into(),
            containers: vec![PlannedContainer {
                items,
                ..Default::default()
            }],
            failed: (0..failed).map(|_| FailedContainer::default()).collect(),
            ..Default::default()
        }
    }

    fn outcome(copied: u64, poisoned: u64) -> BatchOutcome {
        BatchOutcome {
            tally: Tally {
                copied,
                poisoned,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn status_follows_plan_and_outcomes() {
        let from_parts = |plan: Option<JobPlan>, outcomes: &[BatchOutcome]| {
            JobStatus::from_record(
                "j",
                JobRecord {
                    plan,
                    outcomes: outcomes.to_vec(),
                    ..Default::default()
                },
            )
        };
        assert_eq!(from_parts(None, &[outcome(3, 0)]).state, JobState::Planning);
        let s = from_parts(Some(plan(10, 0)), &[outcome(4, 0)]);
        assert_eq!((s.state, s.pending, s.done), (JobState::Running, 6, 4));
        let s = from_parts(Some(plan(10, 0)), &[outcome(4, 0), outcome(6, 0)]);
        assert_eq!((s.state, s.pending), (JobState::Completed, 0));
        let s = from_parts(Some(plan(10, 0)), &[outcome(9, 1)]);
        assert_eq!(s.state, JobState::CompletedWithFailures);
        let s = from_parts(Some(plan(0, 1)), &[]);
        assert_eq!(s.state, JobState::CompletedWithFailures);
    }
}
