//! The `backup` command: for every selected source container, diff the source against the
//! backup and enqueue copy batches for what is new or changed.

use crate::diff::{Change, DiffError, merge_join};
use crate::listing::{ListedBlob, list_blobs, list_container_names};
use crate::watermark;
use azure_storage_blob::models::BlobClientCreateSnapshotResultHeaders;
use futures::TryStreamExt;
use lakevault_common::config::Config;
use lakevault_common::error::describe;
use lakevault_common::ledger::{self, JobPlan, PlannedContainer};
use lakevault_common::queue::WorkQueue;
use lakevault_common::record::{BackupRecord, normalise_etag, rfc3339};
use lakevault_common::select::is_glob;
use lakevault_common::storage::StorageAccount;
use lakevault_common::wire::{
    BatchBuilder, CopyBatch, CopyItem, Location, MAX_MESSAGE_BYTES, MessageKind, WIRE_VERSION, pack,
};
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub job_id: String,
    /// Plan and report, enqueue nothing.
    pub dry_run: bool,
    /// Blob names shown per container in a dry run.
    pub sample: usize,
    /// Most source deletions per container recorded in one run; above it the container's
    /// tombstone phase is skipped and the backup left untouched (a source that looks empty
    /// for a minute must not mark a whole backup deleted).
    pub max_tombstones: u64,
    pub mode: Mode,
    /// Snapshot each blob to copy before enqueueing it, so the worker copies an immutable
    /// version.
    pub snapshot: bool,
    /// Mark copy items for lease mode: workers hold a source lease while copying.
    pub lease: bool,
    /// Record each container's watermark after planning it. Off for runs scoped to a
    /// prefix, which must not move the whole container's watermark.
    pub write_watermarks: bool,
    /// Incremental mode selects blobs modified after the watermark minus this margin
    /// (clock skew between this host and the service, writes in flight during a scan).
    pub safety_margin: Duration,
}

/// How a container is compared with its backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// List source and backup and reconcile them: catches everything, records deletions.
    Full,
    /// List the source only and select blobs modified since the last scan's watermark (a
    /// container without a watermark gets a full scan). Sees no deletions.
    Incremental,
}

/// What the plan found for one container.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ContainerPlan {
    pub source_container: String,
    pub destination_container: String,
    /// The mode this container was actually scanned in.
    pub mode: Option<Mode>,
    /// Incremental scans: blobs modified after this time were selected (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_since: Option<String>,
    pub new: u64,
    pub changed: u64,
    pub unchanged: u64,
    /// Backup blobs whose source is gone (newly seen this run). They are kept and marked
    /// as tombstones, never deleted.
    pub deleted_in_source: u64,
    /// Tombstone marks enqueued this run (0 when suppressed).
    pub tombstones: u64,
    /// `deleted_in_source` crossed `max_tombstones`: nothing was marked.
    pub tombstones_suppressed: bool,
    /// Backup blobs already marked as tombstones by an earlier run.
    pub already_tombstoned: u64,
    /// Backup blobs without a lakevault record (not written by lakevault): left alone.
    pub unmanaged: u64,
    /// Snapshot mode: blobs deleted between listing and snapshot (not enqueued).
    pub vanished: u64,
    pub bytes_to_copy: u64,
    pub messages: u64,
    pub sample: Vec<String>,
}

impl ContainerPlan {
    pub fn to_copy(&self) -> u64 {
        self.new + self.changed
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct BackupReport {
    pub job_id: String,
    pub dry_run: bool,
    pub containers: Vec<ContainerPlan>,
    /// Containers found by a pattern that cannot be backed up as configured, with the reason.
    pub skipped: Vec<SkippedContainer>,
    /// Containers that could not be planned (missing, listing failed), with the reason. The
    /// other containers are planned regardless.
    pub failed: Vec<FailedContainer>,
    pub elapsed_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedContainer {
    pub container: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SkippedContainer {
    pub container: String,
    pub reason: String,
}

impl BackupReport {
    /// The ledger's record of what a backup run planned.
    pub fn job_plan(&self, mode: Mode, started_at: String) -> JobPlan {
        JobPlan {
            v: 1,
            job: self.job_id.clone(),
            mode: format!("{mode:?}").to_lowercase(),
            started_at,
            finished_at: rfc3339(time::OffsetDateTime::now_utc()),
            containers: self
                .containers
                .iter()
                .map(|c| PlannedContainer {
                    source_container: c.source_container.clone(),
                    destination_container: c.destination_container.clone(),
                    items: c.to_copy() - c.vanished + c.tombstones,
                    messages: c.messages,
                    bytes: c.bytes_to_copy,
                })
                .collect(),
            failed: self
                .failed
                .iter()
                .map(|f| ledger::FailedContainer {
                    container: f.container.clone(),
                    reason: f.reason.clone(),
                })
                .collect(),
        }
    }

    pub fn total(&self, f: impl Fn(&ContainerPlan) -> u64) -> u64 {
        self.containers.iter().map(f).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Account(#[from] lakevault_common::storage::AccountError),
    #[error("listing containers of account `{account}` at {endpoint}: {message}")]
    ListContainers {
        account: String,
        endpoint: String,
        message: String,
    },
    #[error("{0}")]
    Destination(String),
    #[error("container `{container}`")]
    Diff {
        container: String,
        source: DiffError,
    },
    #[error("enqueueing to `{queue}`: {message}")]
    Enqueue { queue: String, message: String },
    #[error("interrupted")]
    Cancelled,
}

/// Resolves which source containers to back up and where each one goes. A container named
/// in the config must map to a valid backup container (or the run fails); one found by a
/// pattern that does not is skipped and reported. A named container that does not exist is
/// reported as failed without stopping the others. Two sources may never share a backup
/// container.
async fn selected_containers(
    config: &Config,
    source: &StorageAccount,
    skipped: &mut Vec<SkippedContainer>,
    failed: &mut Vec<FailedContainer>,
) -> Result<Vec<(String, String)>, BackupError> {
    let service = source.blob_service()?;
    let existing =
        list_container_names(&service)
            .await
            .map_err(|e| BackupError::ListContainers {
                account: source.alias.clone(),
                endpoint: source.blob_endpoint.to_string(),
                message: lakevault_common::error::describe(&e),
            })?;
    // A container named outright that does not exist is reported; the others go ahead.
    for wanted in config.backup.containers.iter().filter(|c| !is_glob(c)) {
        if !existing.contains(wanted) {
            tracing::warn!(container = %wanted, "configured container does not exist");
            failed.push(FailedContainer {
                container: wanted.clone(),
                reason: "does not exist in the source account".into(),
            });
        }
    }
    let mut out: Vec<(String, String)> = Vec::new();
    // lakevault's own state container is never backed up by a pattern (it exists in the
    // source only when an account is backed up into itself).
    let matched = existing.into_iter().filter(|c| {
        config.backup.selects_container(c)
            && (c != watermark::STATE_CONTAINER || config.backup.containers.contains(c))
    });
    for container in matched {
        let by_pattern = !config.backup.containers.contains(&container);
        match config.destination_container(&container) {
            Ok(destination) => {
                if let Some((other, _)) = out.iter().find(|(_, d)| *d == destination) {
                    return Err(BackupError::Destination(format!(
                        "source containers `{other}` and `{container}` both map to backup container `{destination}`; change backup.container_template or list the containers explicitly"
                    )));
                }
                out.push((container, destination));
            }
            Err(reason) if by_pattern => {
                tracing::warn!(container = %container, %reason, "container skipped");
                skipped.push(SkippedContainer { container, reason });
            }
            Err(reason) => return Err(BackupError::Destination(reason)),
        }
    }
    Ok(out)
}

/// Whether a listed blob was modified after `t` (an unparsable time counts as modified:
/// copying too much is safe, missing a change is not).
fn modified_after(blob: &ListedBlob, t: time::OffsetDateTime) -> bool {
    time::OffsetDateTime::parse(
        &blob.last_modified,
        &time::format_description::well_known::Rfc3339,
    )
    .map_or(true, |m| m > t)
}

fn copy_item(blob: ListedBlob) -> CopyItem {
    CopyItem {
        name: blob.name,
        etag: blob.etag,
        size: blob.size,
        last_modified: blob.last_modified,
        tags: blob.tags,
        snapshot: None,
    }
}

/// Snapshot mode: takes a snapshot of the source blob and points the item at it, with the
/// snapshot's own ETag and Last-Modified (the blob may have changed since it was listed).
/// `None` when the blob is gone meanwhile.
async fn snapshot_item(
    source: &StorageAccount,
    container: &str,
    mut item: CopyItem,
) -> Result<Option<CopyItem>, DiffError> {
    let failed = |e: &azure_core::Error| {
        DiffError::Consumer(format!("snapshot of `{}`: {}", item.name, describe(e)))
    };
    let client = source
        .blob(container, &item.name)
        .map_err(|e| DiffError::Consumer(e.to_string()))?;
    let response = match client.create_snapshot(None).await {
        Ok(r) => r,
        Err(e) if e.http_status().map(u16::from) == Some(404) => return Ok(None),
        Err(e) => return Err(failed(&e)),
    };
    let snapshot = response.snapshot().map_err(|e| failed(&e))?;
    let Some(snapshot) = snapshot else {
        return Err(DiffError::Consumer(format!(
            "snapshot of `{}`: the service returned no snapshot id",
            item.name
        )));
    };
    if let Ok(Some(etag)) = response.etag() {
        item.etag = normalise_etag(etag.as_ref());
    }
    if let Ok(Some(t)) = response.last_modified() {
        item.last_modified = rfc3339(t);
    }
    item.snapshot = Some(snapshot);
    Ok(Some(item))
}

/// Plans (and unless dry-run, enqueues) one backup job.
pub async fn run(
    config: &Config,
    source: &StorageAccount,
    destination: &StorageAccount,
    queue: &dyn WorkQueue,
    options: &BackupOptions,
    cancel: &CancellationToken,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let mut skipped = Vec::new();
    let mut failed = Vec::new();
    let containers = selected_containers(config, source, &mut skipped, &mut failed).await?;
    if !options.dry_run {
        queue
            .ensure_exists()
            .await
            .map_err(|e| BackupError::Enqueue {
                queue: queue.name().to_string(),
                message: e.to_string(),
            })?;
    }
    let mut report = BackupReport {
        job_id: options.job_id.clone(),
        dry_run: options.dry_run,
        skipped,
        failed,
        ..Default::default()
    };
    for (container, dest_name) in containers {
        if cancel.is_cancelled() {
            return Err(BackupError::Cancelled);
        }
        let scan_started = time::OffsetDateTime::now_utc();
        let since = match options.mode {
            Mode::Full => None,
            Mode::Incremental => {
                match watermark::read(destination, &config.backup.source, &container).await {
                    Ok(mark) => mark.map(|(_, t)| {
                        t - time::Duration::try_from(options.safety_margin)
                            .unwrap_or(time::Duration::minutes(15))
                    }),
                    Err(e) => {
                        let reason = format!("reading the watermark: {}", describe(&e));
                        report.failed.push(FailedContainer { container, reason });
                        continue;
                    }
                }
            }
        };
        let planned = plan_container(
            &Accounts {
                source,
                destination,
                queue,
            },
            config,
            options,
            &container,
            &dest_name,
            since,
        )
        .await;
        let plan = match planned {
            Ok(plan) => plan,
            Err(e) => {
                // Work already enqueued for this container stays valid; the next run
                // plans the rest.
                let reason = format!("{:#}", anyhow::Error::from(e));
                tracing::error!(container = %container, %reason, "container could not be planned");
                report.failed.push(FailedContainer { container, reason });
                continue;
            }
        };
        if !options.dry_run && options.write_watermarks {
            let mode = if since.is_some() {
                "incremental"
            } else {
                "full"
            };
            if let Err(e) = watermark::write(
                destination,
                &config.backup.source,
                &container,
                scan_started,
                &options.job_id,
                mode,
            )
            .await
            {
                // The plan is enqueued; only the next incremental run loses its shortcut.
                let reason = format!(
                    "planned, but storing the watermark failed: {}",
                    describe(&e)
                );
                report.failed.push(FailedContainer {
                    container: container.clone(),
                    reason,
                });
            }
        }
        tracing::info!(
            container = %container,
            new = plan.new,
            changed = plan.changed,
            unchanged = plan.unchanged,
            messages = plan.messages,
            "container planned"
        );
        report.containers.push(plan);
    }
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Where a plan reads and writes.
struct Accounts<'a> {
    source: &'a StorageAccount,
    destination: &'a StorageAccount,
    queue: &'a dyn WorkQueue,
}

async fn plan_container(
    accounts: &Accounts<'_>,
    config: &Config,
    options: &BackupOptions,
    container: &str,
    dest_name: &str,
    modified_since: Option<time::OffsetDateTime>,
) -> Result<ContainerPlan, BackupError> {
    let Accounts {
        source,
        destination,
        queue,
    } = *accounts;
    let diff_err = |source: DiffError| BackupError::Diff {
        container: container.to_string(),
        source,
    };
    let dest_client = destination.container(dest_name)?;
    if !options.dry_run {
        destination.ensure_container(dest_name).await.map_err(|e| {
            BackupError::Destination(format!(
                "creating backup container `{dest_name}`: {}",
                lakevault_common::error::describe(&e)
            ))
        })?;
    }
    let source_client = source.container(container)?;
    // A backup container that does not exist yet (dry run) lists as empty.
    let backup_exists = dest_client.exists().await.map_err(|e| diff_err(e.into()))?;
    let filter = config.backup.filter();

    let header = CopyBatch {
        v: WIRE_VERSION,
        kind: MessageKind::Copy,
        job: options.job_id.clone(),
        attempt: 0,
        source: Location {
            account: config.backup.source.clone(),
            container: container.to_string(),
        },
        destination: Location {
            account: config.backup.destination.clone(),
            container: dest_name.to_string(),
        },
        lease: options.lease,
        items: Vec::new(),
    };
    let mut plan = ContainerPlan {
        source_container: container.to_string(),
        destination_container: dest_name.to_string(),
        mode: Some(if modified_since.is_some() {
            Mode::Incremental
        } else {
            Mode::Full
        }),
        modified_since: modified_since.map(rfc3339),
        ..Default::default()
    };
    let tombstone_header = CopyBatch {
        kind: MessageKind::Tombstone,
        ..header.clone()
    };
    let mut builder = BatchBuilder::new(header, MAX_MESSAGE_BYTES);
    // Tombstones wait until the whole container is diffed: only then is it known whether
    // they stay under the cap. At most `max_tombstones` are held.
    let mut tombstones: Vec<CopyItem> = Vec::new();
    let send = async |batch: CopyBatch, plan: &mut ContainerPlan| -> Result<(), DiffError> {
        plan.messages += 1;
        if options.dry_run {
            return Ok(());
        }
        queue
            .send(&batch.encode(), Duration::ZERO)
            .await
            .map_err(|e| {
                DiffError::Consumer(format!("enqueueing to `{}` failed: {e}", queue.name()))
            })
    };
    // Both sides go through the same filter, so a backup blob outside the selection is
    // never mistaken for one deleted in the source.
    for prefix in filter.listing_prefixes() {
        // Incremental: only what changed since the watermark, and no backup listing (every
        // selected blob is planned as new; copying a version the backup has is harmless).
        let selected = |blob: &ListedBlob| {
            futures::future::ready(
                filter.matches(&blob.name)
                    && modified_since.is_none_or(|t| modified_after(blob, t)),
            )
        };
        let source_listing = list_blobs(&source_client, prefix.clone(), true)
            .map_err(|e| diff_err(e.into()))?
            .try_filter(selected);
        let backup_listing: futures::stream::BoxStream<'static, azure_core::Result<ListedBlob>> =
            if backup_exists && modified_since.is_none() {
                let filter = filter.clone();
                Box::pin(
                    list_blobs(&dest_client, prefix.clone(), true)
                        .map_err(|e| diff_err(e.into()))?
                        .try_filter(move |blob| futures::future::ready(filter.matches(&blob.name))),
                )
            } else {
                Box::pin(futures::stream::empty())
            };
        merge_join(source_listing, backup_listing, async |change| {
        match &change {
            Change::New(_) => plan.new += 1,
            Change::Changed(_) => plan.changed += 1,
            Change::Unchanged(_) => plan.unchanged += 1,
            Change::Deleted(backup) => match BackupRecord::from_tags(&backup.tags) {
                None => plan.unmanaged += 1,
                Some(record) if record.deleted_at.is_some() => plan.already_tombstoned += 1,
                Some(_) => {
                    plan.deleted_in_source += 1;
                    if plan.deleted_in_source > options.max_tombstones {
                        plan.tombstones_suppressed = true;
                        tombstones = Vec::new();
                    } else {
                        tombstones.push(copy_item(backup.clone()));
                    }
                }
            },
        }
        if let Change::New(blob) | Change::Changed(blob) = change {
            plan.bytes_to_copy += blob.size;
            if plan.sample.len() < options.sample {
                plan.sample.push(blob.name.clone());
            }
            let mut item = copy_item(blob);
            if options.snapshot && !options.dry_run {
                match snapshot_item(source, container, item).await? {
                    Some(snapshotted) => item = snapshotted,
                    None => {
                        plan.vanished += 1;
                        return Ok(());
                    }
                }
            }
            match builder.push(item) {
                Ok(Some(full)) => send(full, &mut plan).await?,
                Ok(None) => {}
                Err(item) => tracing::error!(blob = %item.name, "blob entry too large for a queue message; skipped"),
            }
        }
        Ok(())
    })
    .await
    .map_err(diff_err)?;
    }
    if let Some(last) = builder.finish() {
        send(last, &mut plan).await.map_err(diff_err)?;
    }
    if plan.tombstones_suppressed {
        tracing::error!(
            container = %container,
            deleted = plan.deleted_in_source,
            max_tombstones = options.max_tombstones,
            "source deletions exceed --max-tombstones: none recorded, backup left untouched"
        );
    } else if !tombstones.is_empty() {
        plan.tombstones = tombstones.len() as u64;
        let (batches, _) = pack(&tombstone_header, tombstones, MAX_MESSAGE_BYTES);
        for batch in batches {
            send(batch, &mut plan).await.map_err(diff_err)?;
        }
    }
    Ok(plan)
}
