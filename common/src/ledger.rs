//! The job ledger: what each backup job planned and what became of every batch, kept as
//! small JSON blobs in the ops account (the queue's account) under
//! `lakevault-state/jobs/<job>/`. The coordinator writes `plan.json` once planning ends;
//! each worker writes `outcomes/<message id>.json` once a message is settled. A message
//! redelivered after a crash overwrites its own outcome, so nothing is counted twice.

use crate::storage::StorageAccount;
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
    pub copied: u64,
    pub bytes: u64,
    pub source_gone: u64,
    pub tombstoned: u64,
    pub superseded: u64,
    /// Items handed back to the queue for another attempt (they settle in a later batch).
    pub retried: u64,
    pub poisoned: u64,
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

/// A job's progress, derived from its plan and outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobStatus {
    pub job: String,
    /// `planning`, `running`, `completed`, `completed_with_failures`.
    pub state: String,
    pub planned_items: u64,
    pub done: u64,
    pub copied: u64,
    pub bytes: u64,
    pub poisoned: u64,
    pub pending: u64,
    pub batches: u64,
    pub failed_containers: Vec<FailedContainer>,
    pub failures: Vec<OutcomeFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<JobPlan>,
}

impl JobStatus {
    pub fn from_parts(job: &str, plan: Option<JobPlan>, outcomes: &[BatchOutcome]) -> Self {
        let mut s = JobStatus {
            job: job.to_string(),
            ..Default::default()
        };
        for o in outcomes {
            s.batches += 1;
            s.copied += o.copied;
            s.bytes += o.bytes;
            s.done += o.copied + o.source_gone + o.tombstoned + o.superseded;
            s.poisoned += o.poisoned;
            for f in &o.failures {
                if s.failures.len() < 50 {
                    s.failures.push(f.clone());
                }
            }
        }
        match &plan {
            None => s.state = "planning".into(),
            Some(p) => {
                s.planned_items = p.containers.iter().map(|c| c.items).sum();
                s.failed_containers = p.failed.clone();
                s.pending = s.planned_items.saturating_sub(s.done + s.poisoned);
                s.state = match (s.pending, s.poisoned + p.failed.len() as u64) {
                    (0, 0) => "completed",
                    (0, _) => "completed_with_failures",
                    _ => "running",
                }
                .into();
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
    account.ensure_container(STATE_CONTAINER).await?;
    let body = serde_json::to_vec(value).map_err(other)?;
    account
        .blob(STATE_CONTAINER, name)
        .map_err(other)?
        .upload(RequestContent::from(body), None)
        .await
        .map(|_| ())
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

/// A job's plan and every outcome recorded so far.
pub async fn read_job(
    account: &StorageAccount,
    job: &str,
) -> azure_core::Result<(Option<JobPlan>, Vec<BatchOutcome>)> {
    let plan = get_json::<JobPlan>(account, &format!("jobs/{job}/plan.json")).await?;
    let container = account.container(STATE_CONTAINER).map_err(other)?;
    if !container.exists().await? {
        return Ok((plan, Vec::new()));
    }
    let options = azure_storage_blob::models::BlobContainerClientListBlobsOptions {
        prefix: Some(format!("jobs/{job}/outcomes/")),
        ..Default::default()
    };
    let mut names = Vec::new();
    let mut pager = container.list_blobs(Some(options))?;
    while let Some(item) = pager.next().await {
        if let Some(name) = item?.name {
            names.push(name);
        }
    }
    let mut outcomes = Vec::new();
    for name in names {
        if let Some(o) = get_json::<BatchOutcome>(account, &name).await? {
            outcomes.push(o);
        }
    }
    Ok((plan, outcomes))
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
            copied,
            poisoned,
            ..Default::default()
        }
    }

    #[test]
    fn status_follows_plan_and_outcomes() {
        assert_eq!(
            JobStatus::from_parts("j", None, &[outcome(3, 0)]).state,
            "planning"
        );
        let s = JobStatus::from_parts("j", Some(plan(10, 0)), &[outcome(4, 0)]);
        assert_eq!((s.state.as_str(), s.pending, s.done), ("running", 6, 4));
        let s = JobStatus::from_parts("j", Some(plan(10, 0)), &[outcome(4, 0), outcome(6, 0)]);
        assert_eq!((s.state.as_str(), s.pending), ("completed", 0));
        let s = JobStatus::from_parts("j", Some(plan(10, 0)), &[outcome(9, 1)]);
        assert_eq!(s.state, "completed_with_failures");
        let s = JobStatus::from_parts("j", Some(plan(0, 1)), &[]);
        assert_eq!(s.state, "completed_with_failures");
    }
}
