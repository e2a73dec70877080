//! The `backup` command: for every selected source container, split its key space into
//! shards, diff each shard of the source against the backup, and enqueue copy batches for
//! what is new or changed — scanning the shards here with bounded parallelism, or handing
//! them to the workers as scan tasks.

use crate::listing::{Include, Lister, list_container_names};
use crate::probe;
use crate::scan::{self, Accounts, ContainerScan, ContainerTotals, ScanError, ShardScan};
use crate::watermark;
use futures::StreamExt;
use lakevault_common::config::Config;
use lakevault_common::error::describe;
use lakevault_common::ledger::{self, JobPlan, PlannedContainer, ScanCounts};
use lakevault_common::progress::Progress;
use lakevault_common::queue::WorkQueue;
use lakevault_common::record::rfc3339;
use lakevault_common::select::is_glob;
use lakevault_common::storage::{Namespace, StorageAccount};
use lakevault_common::wire::{Location, MessageKind, ScanTask, WIRE_VERSION};
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
    /// Shards per container to aim for (1: one listing per container; `None`: chosen per
    /// container, [`probe`]).
    pub shards: Option<usize>,
    /// Shards scanned at once by the coordinator (`None`: chosen per container).
    pub scan_parallelism: Option<usize>,
    /// Hand shards to the workers as scan tasks instead of scanning them here. Dry runs
    /// always scan here (a scan task enqueues copies).
    pub distributed: bool,
    /// Blobs compared, on the terminal of an interactive run.
    pub progress: Progress,
    /// Entries per listing page; `None`: one page budget shared by the parallel shards
    /// ([`scan::page_size_for`]).
    pub page_size: Option<u32>,
}

impl Default for BackupOptions {
    /// A full, unsharded scan that writes watermarks, with the CLI's default limits.
    fn default() -> Self {
        Self {
            job_id: String::new(),
            dry_run: false,
            sample: 0,
            max_tombstones: 1000,
            mode: Mode::Full,
            snapshot: false,
            lease: false,
            write_watermarks: true,
            safety_margin: Duration::from_secs(900),
            shards: Some(1),
            scan_parallelism: Some(1),
            distributed: false,
            progress: Progress::hidden(),
            page_size: None,
        }
    }
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
    /// Shards the container was split into.
    pub shards: u64,
    /// Shards listed at once (by the coordinator).
    pub scan_parallelism: u64,
    /// Why the container was scanned in this shape, when lakevault chose it (`--shards
    /// auto`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<String>,
    /// `coordinator`, or `workers` for a distributed scan (the counts are then in the
    /// ledger, filled in by the workers; see `status`).
    pub scanned_by: &'static str,
    #[serde(flatten)]
    pub counts: ScanCounts,
    /// Tombstone marks enqueued this run (0 when suppressed).
    pub tombstones: u64,
    /// `deleted_in_source` crossed `max_tombstones`: nothing was marked.
    pub tombstones_suppressed: bool,
    pub sample: Vec<String>,
}

impl ContainerPlan {
    /// Items enqueued: copies plus tombstone marks.
    pub fn items(&self) -> u64 {
        self.counts.copies() + self.tombstones
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
    /// What kind of namespace each account has (`null`: it could not be told).
    pub namespaces: Namespaces,
    pub elapsed_seconds: f64,
}

/// The namespace of the source and of the backup account, as Get Account Information said.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Namespaces {
    pub source: Option<Namespace>,
    pub destination: Option<Namespace>,
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
                    items: c.items(),
                    messages: c.counts.messages,
                    bytes: c.counts.bytes_to_copy,
                    distributed_shards: if c.scanned_by == WORKERS { c.shards } else { 0 },
                    snapshots: c.counts.snapshots,
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
    /// An account whose namespace this version cannot work with.
    #[error("{0}")]
    Namespace(String),
    #[error("container `{container}`: {message}")]
    Scan { container: String, message: String },
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
pub(crate) async fn selected_containers(
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

/// Asks both accounts what namespace they have, before anything is planned. A backup
/// account with a hierarchical namespace is refused: lakevault keeps its record of each
/// backed-up version in a blob index tag and older versions as snapshots, and such an
/// account has neither. A source with one is walked directory by directory. An account
/// that cannot be asked (a SAS without service-level access) is taken as flat, with a
/// warning.
async fn check_namespaces(
    config: &Config,
    source: &StorageAccount,
    destination: &StorageAccount,
) -> Result<Namespaces, BackupError> {
    let ask = async |account: &StorageAccount| match account.namespace().await {
        Ok(namespace) => Some(namespace),
        Err(e) => {
            tracing::warn!(account = %account.alias, error = %describe(&e), "cannot tell the account's namespace (Get Account Information); taking it as flat");
            None
        }
    };
    let namespaces = Namespaces {
        source: ask(source).await,
        destination: ask(destination).await,
    };
    if namespaces.destination == Some(Namespace::Hierarchical) {
        return Err(BackupError::Namespace(format!(
            "backup account `{}` has a hierarchical namespace (ADLS Gen2): lakevault records each backed-up version in a blob index tag and keeps older versions as snapshots, and such an account has neither; back up into a storage account without a hierarchical namespace (set backup.destination to one)",
            config.backup.destination
        )));
    }
    Ok(namespaces)
}

/// One container of a job: where it goes and since when it is scanned.
#[derive(Debug, Clone, Copy)]
struct ContainerTarget<'a> {
    container: &'a str,
    dest_name: &'a str,
    /// Incremental: the watermark minus the safety margin.
    modified_since: Option<time::OffsetDateTime>,
    scan_started: time::OffsetDateTime,
    /// The source account has a hierarchical namespace.
    source_hierarchical: bool,
}

/// Plans (and unless dry-run, enqueues) one backup job.
#[tracing::instrument(name = "job", skip_all, fields(job = %options.job_id, mode = ?options.mode, dry_run = options.dry_run))]
pub async fn run(
    config: &Config,
    source: &StorageAccount,
    destination: &StorageAccount,
    queue: &dyn WorkQueue,
    options: &BackupOptions,
    cancel: &CancellationToken,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let namespaces = check_namespaces(config, source, destination).await?;
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
        namespaces,
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
        let accounts = Accounts {
            source,
            destination,
            queue,
        };
        let planned = plan_container(
            accounts,
            config,
            options,
            ContainerTarget {
                container: &container,
                dest_name: &dest_name,
                modified_since: since,
                scan_started,
                source_hierarchical: namespaces.source == Some(Namespace::Hierarchical),
            },
            cancel,
        )
        .await;
        let plan = match planned {
            Ok(plan) => plan,
            Err(BackupError::Cancelled) => return Err(BackupError::Cancelled),
            Err(e) => {
                // Work already enqueued for this container stays valid; the next run
                // plans the rest.
                let reason = lakevault_common::error::chain(&e);
                tracing::error!(container = %container, %reason, "container could not be planned");
                report.failed.push(FailedContainer { container, reason });
                continue;
            }
        };
        // A distributed scan's watermark is written by the worker that finishes it.
        if !options.dry_run && options.write_watermarks && plan.scanned_by == COORDINATOR {
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
            shards = plan.shards,
            scanned_by = plan.scanned_by,
            new = plan.counts.new,
            changed = plan.counts.changed,
            unchanged = plan.counts.unchanged,
            messages = plan.counts.messages,
            "container planned"
        );
        report.containers.push(plan);
    }
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Shards a distributed scan hands out when the operator did not say: enough for a fleet
/// to share, whatever this host measures.
pub const DISTRIBUTED_SHARDS: usize = 16;

/// Shards to aim for and shards listed at once, as the options say or, where they say
/// `auto`, as the probe of the source argues ([`probe`]); with the reason when chosen.
async fn scan_shape(
    accounts: Accounts<'_>,
    scan: &ContainerScan,
    options: &BackupOptions,
) -> Result<(usize, usize, Option<String>), scan::ScanError> {
    if options.distributed && !options.dry_run {
        return Ok((options.shards.unwrap_or(DISTRIBUTED_SHARDS), 1, None));
    }
    if let (Some(shards), Some(parallelism)) = (options.shards, options.scan_parallelism) {
        return Ok((shards, parallelism, None));
    }
    let lister = Lister::new(accounts.source, &scan.container)?;
    let include = if scan.source_hierarchical {
        Include::Permissions
    } else {
        Include::Tags
    };
    let root = scan.roots().into_iter().next().filter(|r| !r.is_empty());
    // The memo names the listing without its query (a SAS would be a secret in it).
    let mut url = lister.url().clone();
    url.set_query(None);
    let (url, root_text) = (url.to_string(), root.clone().unwrap_or_default());
    let state = accounts.destination;
    let now = time::OffsetDateTime::now_utc();
    let recalled = probe::recall(
        state,
        &scan.source_alias,
        &scan.container,
        &url,
        &root_text,
        now,
    )
    .await;
    let (measured, probed_at) = match recalled {
        Some((measured, at)) => (measured, Some(at)),
        None => {
            let measured = probe::probe(&lister, root, include)
                .await
                .map_err(scan::listing_error)?;
            if !measured.one_page && !options.dry_run {
                let memo = probe::Remembered::new(&url, &root_text, &measured, now);
                if let Err(e) =
                    probe::remember(state, &scan.source_alias, &scan.container, &memo).await
                {
                    // Only the next run's shortcut is lost.
                    tracing::warn!(container = %scan.container, error = %describe(&e), "could not remember the scan probe");
                }
            }
            (measured, None)
        }
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut shape = probe::choose(&measured, cpus);
    if let Some(at) = probed_at {
        shape.reason = format!(
            "{} (as probed at {at}; probed again after 24 h)",
            shape.reason
        );
    }
    let parallelism = options.scan_parallelism.unwrap_or(shape.parallelism);
    let shards = options.shards.unwrap_or(if parallelism > 1 {
        (parallelism * probe::SHARDS_PER_LISTING).max(shape.shards)
    } else {
        shape.shards
    });
    tracing::info!(
        container = %scan.container,
        shards,
        parallelism,
        reason = %shape.reason,
        "scan shape chosen"
    );
    Ok((shards, parallelism, Some(shape.reason)))
}

pub const COORDINATOR: &str = "coordinator";
pub const WORKERS: &str = "workers";

async fn plan_container(
    accounts: Accounts<'_>,
    config: &Config,
    options: &BackupOptions,
    target: ContainerTarget<'_>,
    cancel: &CancellationToken,
) -> Result<ContainerPlan, BackupError> {
    let ContainerTarget {
        container,
        dest_name,
        modified_since,
        scan_started,
        ..
    } = target;
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        BackupError::Destination(format!("{what} `{dest_name}`: {e}"))
    };
    if !options.dry_run {
        accounts
            .destination
            .ensure_container(dest_name)
            .await
            .map_err(|e| failed("creating backup container", &describe(&e)))?;
    }
    // A backup container that does not exist yet (dry run) lists as empty.
    let backup_exists = accounts
        .destination
        .container(dest_name)?
        .exists()
        .await
        .map_err(|e| failed("checking backup container", &describe(&e)))?;
    let scan = ContainerScan {
        job: options.job_id.clone(),
        source_alias: config.backup.source.clone(),
        destination_alias: config.backup.destination.clone(),
        container: container.to_string(),
        destination_container: dest_name.to_string(),
        filter: config.backup.filter(),
        modified_since,
        snapshot: options.snapshot,
        lease: options.lease,
        source_hierarchical: target.source_hierarchical,
        max_tombstones: options.max_tombstones,
        sample: options.sample,
        dry_run: options.dry_run,
        backup_exists,
        progress: options.progress.clone(),
        page_size: None,
        cancel: cancel.clone(),
    };
    let scan_err = |e: scan::ScanError| match e {
        scan::ScanError::Cancelled => BackupError::Cancelled,
        e => BackupError::Scan {
            container: container.to_string(),
            message: e.to_string(),
        },
    };
    let (shards_wanted, parallelism, shape) = scan_shape(accounts, &scan, options)
        .await
        .map_err(scan_err)?;
    let shards = scan::plan_shards(accounts, &scan, shards_wanted, parallelism.max(4))
        .await
        .map_err(scan_err)?;
    // The page budget is shared by the listings that run at once: no more than there
    // are shards.
    let scan = ContainerScan {
        page_size: options
            .page_size
            .or_else(|| scan::page_size_for(parallelism.min(shards.len()))),
        ..scan
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
        shards: shards.len() as u64,
        scan_parallelism: parallelism as u64,
        shape,
        scanned_by: COORDINATOR,
        ..Default::default()
    };
    if options.distributed && !options.dry_run {
        plan.scanned_by = WORKERS;
        let count = u32::try_from(shards.len()).unwrap_or(u32::MAX);
        for (index, shard) in shards.into_iter().enumerate() {
            let task = ScanTask {
                v: WIRE_VERSION,
                kind: MessageKind::Scan,
                job: options.job_id.clone(),
                source: Location {
                    account: scan.source_alias.clone(),
                    container: container.to_string(),
                },
                destination: Location {
                    account: scan.destination_alias.clone(),
                    container: dest_name.to_string(),
                },
                shard,
                shard_index: u32::try_from(index).unwrap_or(u32::MAX),
                shard_count: count,
                filter: scan.filter.clone(),
                modified_since: modified_since.map(rfc3339),
                snapshot: options.snapshot,
                lease: options.lease,
                max_tombstones: options.max_tombstones,
                scan_started_at: rfc3339(scan_started),
                write_watermark: options.write_watermarks,
                source_hierarchical: scan.source_hierarchical,
                handed_back: 0,
            };
            accounts
                .queue
                .send(&task.encode(), Duration::ZERO)
                .await
                .map_err(|e| BackupError::Enqueue {
                    queue: accounts.queue.name().to_string(),
                    message: e.to_string(),
                })?;
        }
        return Ok(plan);
    }
    // Shards are scanned concurrently; each enqueues its own copy batches. Tombstones wait
    // until every shard is in: only then is it known whether they stay under the cap.
    let mut totals = ContainerTotals::default();
    // Collected first (a future does nothing until polled): a closure mapped over the
    // shards inside the stream would not be provably `Send` for every borrow lifetime.
    let mut shard_scans: Vec<futures::future::BoxFuture<'_, Result<ShardScan, ScanError>>> =
        Vec::with_capacity(shards.len());
    for (index, shard) in shards.iter().enumerate() {
        let span =
            tracing::info_span!("shard", container = %container, shard = index, prefix = %shard);
        shard_scans.push(Box::pin(tracing::Instrument::instrument(
            scan::scan_shard(accounts, &scan, shard),
            span,
        )));
    }
    let mut scans = futures::stream::iter(shard_scans).buffer_unordered(parallelism.max(1));
    let mut scanned = 0;
    while let Some(result) = scans.next().await {
        totals.add(result.map_err(scan_err)?, scan.max_tombstones, scan.sample);
        scanned += 1;
        options.progress.set_message(format!(
            "{container}: {scanned}/{} shards, {} to copy",
            shards.len(),
            totals.counts.new + totals.counts.changed
        ));
    }
    drop(scans);
    let (tombstones, tombstone_messages) = totals
        .enqueue_tombstones(accounts, &scan)
        .await
        .map_err(scan_err)?;
    plan.counts = totals.counts;
    plan.counts.messages += tombstone_messages;
    plan.tombstones = tombstones;
    plan.tombstones_suppressed = totals.tombstones_suppressed;
    plan.sample = totals.sample;
    Ok(plan)
}
