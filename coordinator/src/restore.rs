//! `restore`: plans a point-in-time restore from a backup container and hands it to the
//! workers as restore batches, through the same queue as backups (so it scales the same
//! way and shows up in `status`).
//!
//! Every version of a backup blob — the base blob and the snapshots kept before each
//! overwrite — carries lakevault's record of its time: when it was backed up, and when the
//! source was seen deleted. For a time T, a name is restored from its version with the
//! latest backup time at or before T, unless that version was already marked deleted at T;
//! a name first backed up after T is not restored. Without `--as-of`, T is now: the
//! current, live version of every name.

use futures::TryStreamExt;
use lakevault_common::config::Config;
use lakevault_common::ledger::{JobPlan, PlannedContainer};
use lakevault_common::queue::WorkQueue;
use lakevault_common::record::rfc3339;
use lakevault_common::store::{BlobStore, ListOptions, StorageErrorCode, StoreError};
use lakevault_common::wire::{
    BatchBuilder, CopyBatch, Location, MAX_MESSAGE_BYTES, MessageKind, WIRE_VERSION,
};
use lakevault_plan::versions::{self, AccessKept, RestoreChoice};
use serde::Serialize;
use std::time::Duration;
use time::OffsetDateTime;

/// Where a restore writes: an account alias, a container, and a prefix for the names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub account: String,
    pub container: String,
    pub prefix: Option<String>,
}

impl Target {
    /// Parses `alias/container[/prefix]`; the prefix is a directory the names go below.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(account), Some(container), prefix)
                if !account.is_empty() && !container.is_empty() =>
            {
                Ok(Target {
                    account: account.to_string(),
                    container: container.to_string(),
                    // A directory: `restored/2026` puts `a.csv` at `restored/2026/a.csv`.
                    prefix: prefix.filter(|p| !p.is_empty()).map(|p| {
                        if p.ends_with('/') {
                            p.to_string()
                        } else {
                            format!("{p}/")
                        }
                    }),
                })
            }
            _ => Err(format!(
                "`{text}` is not `<account alias>/<container>[/<prefix>]`"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub job_id: String,
    /// The backup account alias and container to restore from.
    pub from_account: String,
    pub from_container: String,
    /// Only names under this prefix.
    pub prefix: Option<String>,
    pub as_of: Option<OffsetDateTime>,
    pub to: Target,
    pub overwrite: bool,
    pub dry_run: bool,
    pub sample: usize,
    /// Backup versions read, on the terminal of an interactive run.
    pub progress: lakevault_common::progress::Progress,
    /// What is done with the access control kept with HNS versions.
    pub access: AccessRestore,
}

/// What a restore does with the owner, group and ACL kept with versions backed up from an
/// account with a hierarchical namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessRestore {
    /// Set them on every path restored (the target has a hierarchical namespace).
    Apply,
    /// `--no-acls`: directories are still created as directories; paths get what the
    /// target gives them.
    Skip,
    /// The target has no hierarchical namespace, so no ACLs: the data is restored, and the
    /// report says once that access control was not applied and why.
    FlatTarget,
}

/// What became of the access control kept with the versions restored.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccessReport {
    /// Paths whose recorded access control the workers set.
    pub applied: u64,
    /// Paths with recorded access control that is not applied (`--no-acls`, or a flat
    /// target; `reason` says which).
    pub not_applied: u64,
    /// Paths whose access control was too long to keep in full (only its digest was
    /// kept) or is unreadable: restored with what the target gives them.
    pub not_kept: u64,
    /// Why access control is not applied, once per job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    pub job_id: String,
    pub dry_run: bool,
    pub from: String,
    pub to: String,
    pub as_of: Option<String>,
    /// Names planned for restore, and of those the ones restored from an older version.
    pub restore: u64,
    pub from_older_versions: u64,
    pub bytes: u64,
    pub messages: u64,
    /// Names whose first backup is after the restore time.
    pub not_yet_backed_up: u64,
    /// Names backed up after the restore time without history snapshots (`run
    /// --no-history`): their state at that time, if any, is in the backup account's blob
    /// versions, which restore does not read. Not restored; the run fails.
    pub in_blob_versions: u64,
    /// Names deleted in the source at the restore time (tombstoned).
    pub deleted_at_time: u64,
    /// Backup blobs without a lakevault record: not restored.
    pub unrecorded: u64,
    /// Owner, group and ACL of paths backed up from an HNS source.
    pub access: AccessReport,
    pub sample: Vec<String>,
    pub elapsed_seconds: f64,
}

impl RestoreReport {
    /// The ledger's record of the restore job.
    pub fn job_plan(&self, options: &RestoreOptions, started_at: String) -> JobPlan {
        JobPlan {
            v: 1,
            job: self.job_id.clone(),
            mode: "restore".into(),
            started_at,
            finished_at: rfc3339(OffsetDateTime::now_utc()),
            containers: vec![PlannedContainer {
                source_container: options.from_container.clone(),
                destination_container: options.to.container.clone(),
                items: self.restore,
                messages: self.messages,
                bytes: self.bytes,
                distributed_shards: 0,
                snapshots: 0,
            }],
            failed: Vec::new(),
        }
    }
}

/// The source container a backup container was made from, by inverting
/// `backup.container_template` (`None` if it does not fit the template).
pub fn source_container_of(config: &Config, backup_container: &str) -> Option<String> {
    let template = &config.backup.container_template;
    let (before, after) = template.split_once("{container}")?;
    let middle = backup_container.strip_prefix(before)?.strip_suffix(after)?;
    if middle.is_empty() {
        return None;
    }
    // `$root` and `$web` were backed up without their `$`; whether the original had one is
    // only known if the source still has such a container, so the plain name is used.
    Some(middle.to_string())
}

/// Why a restore could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("backup container `{container}` does not exist in account `{account}`")]
    NoBackupContainer { account: String, container: String },
    #[error("reading backup container `{container}`: {source}")]
    Backup {
        container: String,
        source: StoreError,
    },
    #[error("creating restore container `{container}`: {source}")]
    Target {
        container: String,
        source: StoreError,
    },
    #[error("queue `{queue}`: {message}")]
    Queue { queue: String, message: String },
    #[error("`{0}` does not fit in a queue message")]
    TooLarge(String),
}

/// Plans (and unless dry-run, enqueues) a restore: lists every version of the backup
/// container (base blobs and snapshots, with tags), groups them by name, and enqueues the
/// version chosen for `as_of` (`versions::choose_for_restore`).
pub async fn run(
    backup: &dyn BlobStore,
    target: Option<&dyn BlobStore>,
    queue: &dyn WorkQueue,
    options: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    let started = std::time::Instant::now();
    let at = options.as_of.unwrap_or_else(OffsetDateTime::now_utc);
    let mut report = RestoreReport {
        job_id: options.job_id.clone(),
        dry_run: options.dry_run,
        from: format!("{}/{}", options.from_account, options.from_container),
        to: format!(
            "{}/{}{}",
            options.to.account,
            options.to.container,
            options
                .to
                .prefix
                .as_deref()
                .map(|p| format!("/{p}"))
                .unwrap_or_default()
        ),
        as_of: options.as_of.map(rfc3339),
        ..Default::default()
    };
    let header = CopyBatch {
        v: WIRE_VERSION,
        kind: MessageKind::Restore,
        job: options.job_id.clone(),
        attempt: 0,
        source: Location {
            account: options.from_account.clone(),
            container: options.from_container.clone(),
        },
        destination: Location {
            account: options.to.account.clone(),
            container: options.to.container.clone(),
        },
        lease: false,
        destination_prefix: options.to.prefix.clone(),
        overwrite: options.overwrite,
        items: Vec::new(),
        handed_back: 0,
        waits: 0,
        source_hierarchical: false,
        apply_access: options.access == AccessRestore::Apply,
        carried: Default::default(),
    };
    let mut builder = BatchBuilder::new(header, MAX_MESSAGE_BYTES);
    let listing = backup.list(
        &options.from_container,
        ListOptions {
            prefix: options.prefix.clone(),
            tags: true,
            snapshots: true,
            page_size: None,
        },
    );
    let mut groups = std::pin::pin!(versions::by_name(listing));
    let mut prepared = false;
    while let Some(group) = groups.try_next().await.map_err(|e| {
        if e.has_code(StorageErrorCode::ContainerNotFound) {
            RestoreError::NoBackupContainer {
                account: options.from_account.clone(),
                container: options.from_container.clone(),
            }
        } else {
            RestoreError::Backup {
                container: options.from_container.clone(),
                source: e,
            }
        }
    })? {
        if !prepared {
            // Only once the backup container is known to exist.
            prepare(target, queue, options).await?;
            prepared = true;
        }
        options.progress.inc(group.len() as u64);
        match versions::choose_for_restore(group, at) {
            RestoreChoice::NotYet => report.not_yet_backed_up += 1,
            RestoreChoice::InBlobVersions => report.in_blob_versions += 1,
            RestoreChoice::Deleted => report.deleted_at_time += 1,
            RestoreChoice::Unrecorded => report.unrecorded += 1,
            RestoreChoice::Restore {
                mut item,
                older,
                access,
            } => {
                account_access(&mut item, access, options, &mut report.access);
                report.restore += 1;
                report.from_older_versions += u64::from(older);
                report.bytes += item.size;
                if report.sample.len() < options.sample {
                    report.sample.push(item.name.clone());
                }
                match builder.push(item) {
                    Ok(Some(full)) => send(queue, options, full, &mut report).await?,
                    Ok(None) => {}
                    Err(item) => return Err(RestoreError::TooLarge(item.name)),
                }
            }
        }
    }
    if !prepared {
        // An empty (or missing) backup container: a missing one is an error.
        if !container_exists(backup, &options.from_container).await? {
            return Err(RestoreError::NoBackupContainer {
                account: options.from_account.clone(),
                container: options.from_container.clone(),
            });
        }
        prepare(target, queue, options).await?;
    }
    if let Some(last) = builder.finish() {
        send(queue, options, last, &mut report).await?;
    }
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Counts what happens to an item's kept access control, and keeps it on the item only
/// where the target can take it (a directory's kind goes with it: `--no-acls` still
/// restores a directory as a directory).
fn account_access(
    item: &mut lakevault_common::wire::CopyItem,
    kept: AccessKept,
    options: &RestoreOptions,
    report: &mut AccessReport,
) {
    match (kept, options.access) {
        (AccessKept::Nothing, _) => {}
        (_, AccessRestore::FlatTarget) => {
            item.access = None;
            report.not_applied += 1;
            report.reason.get_or_insert_with(|| {
                format!(
                    "target account `{}` has no hierarchical namespace, so no ACLs: the data is restored without the owner, group and ACLs kept with it",
                    options.to.account
                )
            });
        }
        (AccessKept::InFull, AccessRestore::Skip) => {
            report.not_applied += 1;
            report
                .reason
                .get_or_insert_with(|| "--no-acls: access control kept with the backup is not applied; paths get what the target gives them".into());
        }
        (AccessKept::InFull, AccessRestore::Apply) => report.applied += 1,
        (AccessKept::NotInFull, _) => report.not_kept += 1,
    }
}

/// Whether a container exists: an empty listing cannot tell, a 404 can.
async fn container_exists(store: &dyn BlobStore, container: &str) -> Result<bool, RestoreError> {
    let mut listing = store.list(
        container,
        ListOptions {
            page_size: Some(1),
            ..Default::default()
        },
    );
    match listing.try_next().await {
        Ok(_) => Ok(true),
        Err(e) if e.has_code(StorageErrorCode::ContainerNotFound) => Ok(false),
        Err(source) => Err(RestoreError::Backup {
            container: container.to_string(),
            source,
        }),
    }
}

/// The queue and the target container, unless this is a dry run.
async fn prepare(
    target: Option<&dyn BlobStore>,
    queue: &dyn WorkQueue,
    options: &RestoreOptions,
) -> Result<(), RestoreError> {
    if options.dry_run {
        return Ok(());
    }
    queue
        .ensure_exists()
        .await
        .map_err(|e| RestoreError::Queue {
            queue: queue.name().to_string(),
            message: e.to_string(),
        })?;
    if let Some(target) = target {
        target
            .create_container(&options.to.container)
            .await
            .map_err(|source| RestoreError::Target {
                container: options.to.container.clone(),
                source,
            })?;
    }
    Ok(())
}

async fn send(
    queue: &dyn WorkQueue,
    options: &RestoreOptions,
    batch: CopyBatch,
    report: &mut RestoreReport,
) -> Result<(), RestoreError> {
    report.messages += 1;
    if options.dry_run {
        return Ok(());
    }
    queue
        .send(&batch.encode(), Duration::ZERO)
        .await
        .map_err(|e| RestoreError::Queue {
            queue: queue.name().to_string(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakevault_common::queue::MemoryQueue;
    use lakevault_common::record::{BackupRecord, RECORD_TAG};
    use lakevault_common::store::memory::World;
    use lakevault_common::store::{BlobRef, Condition};
    use lakevault_common::wire::WorkMessage;
    use std::collections::BTreeMap;

    fn options(as_of: Option<OffsetDateTime>) -> RestoreOptions {
        RestoreOptions {
            job_id: "r".into(),
            from_account: "bak".into(),
            from_container: "data".into(),
            prefix: None,
            as_of,
            to: Target::parse("src/restored").unwrap(),
            overwrite: false,
            dry_run: false,
            sample: 0,
            progress: Default::default(),
            access: AccessRestore::Apply,
        }
    }

    #[tokio::test]
    async fn a_restore_plans_the_version_current_at_the_time() {
        let world = World::new();
        let (bak, src) = (world.account("bak"), world.account("src"));
        let tags = |backed_up: &str| {
            let record = BackupRecord {
                source_etag: "0x1".into(),
                source_last_modified: backed_up.into(),
                backed_up_at: backed_up.into(),
                job: "j".into(),
                deleted_at: None,
                history_in_versions: false,
            };
            BTreeMap::from([(RECORD_TAG.to_string(), record.to_tag_value())])
        };
        let blob = BlobRef::new("data", "a.csv");
        bak.write("data", "a.csv", b"v1", &[]);
        bak.set_tags(blob, &tags("2026-11-01T00:00:00Z"), Condition::None)
            .await
            .unwrap();
        let kept = bak.snapshot(blob, Condition::None).await.unwrap();
        bak.write("data", "a.csv", b"v2", &[]);
        bak.set_tags(blob, &tags("2026-11-03T00:00:00Z"), Condition::None)
            .await
            .unwrap();
        bak.write("data", "unrecorded.csv", b"?", &[]);
        let queue = MemoryQueue::new("q");
        let at = lakevault_common::record::parse_rfc3339("2026-11-02T00:00:00Z");
        let report = run(&bak, Some(&src), &queue, &options(at)).await.unwrap();
        assert_eq!((report.restore, report.from_older_versions), (1, 1));
        assert_eq!(report.unrecorded, 1);
        let texts = queue.texts();
        assert_eq!(texts.len(), 1);
        let Ok(WorkMessage::Batch(batch)) = WorkMessage::decode(&texts[0]) else {
            panic!("a restore batch: {}", texts[0]);
        };
        assert_eq!(batch.kind, MessageKind::Restore);
        assert_eq!(
            batch.items[0].snapshot.as_deref(),
            Some(kept.snapshot.as_str())
        );
        assert_eq!(batch.items[0].etag, kept.etag);
        // The target container was made ready for the workers.
        assert!(
            src.list("restored", ListOptions::default())
                .try_next()
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_missing_backup_container_is_an_error_that_names_it() {
        let world = World::new();
        let bak = world.account("bak");
        let queue = MemoryQueue::new("q");
        let err = run(&bak, None, &queue, &options(None))
            .await
            .expect_err("no backup container");
        assert!(
            matches!(err, RestoreError::NoBackupContainer { ref container, .. } if container == "data"),
            "{err}"
        );
        assert!(queue.texts().is_empty());
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("lake/raw/restored/2026").unwrap(),
            Target {
                account: "lake".into(),
                container: "raw".into(),
                prefix: Some("restored/2026/".into()),
            }
        );
        // The prefix is a directory: names go below it, never glued to its last segment.
        assert_eq!(
            Target::parse("lake/raw/restored/2026/").unwrap().prefix,
            Some("restored/2026/".into())
        );
        assert_eq!(Target::parse("lake/raw/").unwrap().prefix, None);
        assert!(Target::parse("lake").is_err());
        assert!(Target::parse("/raw").is_err());
    }
}
