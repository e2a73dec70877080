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

use crate::listing::ListedBlob;
use azure_storage_blob::models::{
    BlobContainerClientListBlobsOptions, BlobItem, ListBlobsIncludeItem,
};
use futures::TryStreamExt;
use lakevault_common::config::Config;
use lakevault_common::error::describe;
use lakevault_common::ledger::{JobPlan, PlannedContainer};
use lakevault_common::queue::WorkQueue;
use lakevault_common::record::{BackupRecord, rfc3339, user_tags};
use lakevault_common::storage::StorageAccount;
use lakevault_common::wire::{
    BatchBuilder, CopyBatch, CopyItem, Location, MAX_MESSAGE_BYTES, MessageKind, WIRE_VERSION,
};
use serde::Serialize;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Where a restore writes: an account alias, a container, and a prefix for the names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub account: String,
    pub container: String,
    pub prefix: Option<String>,
}

impl Target {
    /// Parses `alias/container[/prefix]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(account), Some(container), prefix)
                if !account.is_empty() && !container.is_empty() =>
            {
                Ok(Target {
                    account: account.to_string(),
                    container: container.to_string(),
                    prefix: prefix.filter(|p| !p.is_empty()).map(str::to_string),
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
    /// Names deleted in the source at the restore time (tombstoned).
    pub deleted_at_time: u64,
    /// Backup blobs without a lakevault record: not restored.
    pub unrecorded: u64,
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

/// One version of a backup blob.
struct Version {
    blob: ListedBlob,
    snapshot: Option<String>,
    record: Option<BackupRecord>,
}

fn version_of(item: BlobItem) -> Option<Version> {
    let snapshot = item.snapshot.clone();
    let blob = ListedBlob::from_item(item)?;
    let record = BackupRecord::from_tags(&blob.tags);
    Some(Version {
        blob,
        snapshot,
        record,
    })
}

fn parse_time(t: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t, &Rfc3339).ok()
}

/// What the versions of one name say for time `at`.
enum Choice {
    Restore(CopyItem, bool),
    NotYet,
    Deleted,
    Unrecorded,
}

fn choose(versions: Vec<Version>, at: OffsetDateTime) -> Choice {
    let mut best: Option<(OffsetDateTime, Version)> = None;
    let mut any_record = false;
    for v in versions {
        let Some(record) = &v.record else { continue };
        any_record = true;
        let Some(start) = parse_time(&record.backed_up_at) else {
            continue;
        };
        if start <= at && best.as_ref().is_none_or(|(t, _)| start > *t) {
            best = Some((start, v));
        }
    }
    let Some((_, v)) = best else {
        return if any_record {
            Choice::NotYet
        } else {
            Choice::Unrecorded
        };
    };
    let deleted = v
        .record
        .as_ref()
        .and_then(|r| r.deleted_at.as_deref())
        .and_then(parse_time)
        .is_some_and(|d| d <= at);
    if deleted {
        return Choice::Deleted;
    }
    let older = v.snapshot.is_some();
    Choice::Restore(
        CopyItem {
            name: v.blob.name.clone(),
            etag: v.blob.etag.clone(),
            size: v.blob.size,
            last_modified: v.blob.last_modified.clone(),
            tags: user_tags(&v.blob.tags),
            snapshot: v.snapshot,
        },
        older,
    )
}

/// Plans (and unless dry-run, enqueues) a restore.
pub async fn run(
    backup: &StorageAccount,
    target: Option<&StorageAccount>,
    queue: &dyn WorkQueue,
    options: &RestoreOptions,
) -> anyhow::Result<RestoreReport> {
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
    let container = backup.container(&options.from_container)?;
    if !container
        .exists()
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))?
    {
        anyhow::bail!(
            "backup container `{}` does not exist in account `{}`",
            options.from_container,
            options.from_account
        );
    }
    if !options.dry_run {
        queue
            .ensure_exists()
            .await
            .map_err(|e| anyhow::anyhow!("queue `{}`: {e}", queue.name()))?;
        if let Some(target) = target {
            target
                .ensure_container(&options.to.container)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("creating `{}`: {}", options.to.container, describe(&e))
                })?;
        }
    }
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
    };
    let mut builder = BatchBuilder::new(header, MAX_MESSAGE_BYTES);
    let list_options = BlobContainerClientListBlobsOptions {
        include: Some(vec![
            ListBlobsIncludeItem::Snapshots,
            ListBlobsIncludeItem::Tags,
        ]),
        prefix: options.prefix.clone(),
        ..Default::default()
    };
    let mut pager = container.list_blobs(Some(list_options))?;
    // The versions of one name come together in the listing.
    let mut group: Vec<Version> = Vec::new();
    let send = async |batch: CopyBatch, report: &mut RestoreReport| -> anyhow::Result<()> {
        report.messages += 1;
        if options.dry_run {
            return Ok(());
        }
        queue
            .send(&batch.encode(), Duration::ZERO)
            .await
            .map_err(|e| anyhow::anyhow!("enqueueing to `{}`: {e}", queue.name()))
    };
    let mut decide = async |group: Vec<Version>,
                            report: &mut RestoreReport|
           -> anyhow::Result<()> {
        if group.is_empty() {
            return Ok(());
        }
        match choose(group, at) {
            Choice::NotYet => report.not_yet_backed_up += 1,
            Choice::Deleted => report.deleted_at_time += 1,
            Choice::Unrecorded => report.unrecorded += 1,
            Choice::Restore(item, older) => {
                report.restore += 1;
                report.from_older_versions += u64::from(older);
                report.bytes += item.size;
                if report.sample.len() < options.sample {
                    report.sample.push(item.name.clone());
                }
                match builder.push(item) {
                    Ok(Some(full)) => send(full, report).await?,
                    Ok(None) => {}
                    Err(item) => anyhow::bail!("`{}` does not fit in a queue message", item.name),
                }
            }
        }
        Ok(())
    };
    while let Some(item) = pager
        .try_next()
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))?
    {
        options.progress.inc(1);
        let Some(version) = version_of(item) else {
            continue;
        };
        if group
            .first()
            .is_some_and(|g| g.blob.name != version.blob.name)
        {
            decide(std::mem::take(&mut group), &mut report).await?;
        }
        group.push(version);
    }
    decide(group, &mut report).await?;
    if let Some(last) = builder.finish() {
        send(last, &mut report).await?;
    }
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn version(at: &str, deleted: Option<&str>, snapshot: Option<&str>) -> Version {
        let record = BackupRecord {
            source_etag: "0x1".into(),
            source_last_modified: at.into(),
            backed_up_at: at.into(),
            job: "j".into(),
            deleted_at: deleted.map(str::to_string),
        };
        let mut tags = BTreeMap::new();
        tags.insert("team".to_string(), "data".to_string());
        Version {
            blob: ListedBlob {
                name: "n".into(),
                etag: format!("e-{at}"),
                size: 1,
                last_modified: at.into(),
                blob_type: None,
                tags,
                content_md5: None,
            },
            snapshot: snapshot.map(str::to_string),
            record: Some(record),
        }
    }

    fn t(s: &str) -> OffsetDateTime {
        parse_time(s).unwrap()
    }

    #[test]
    fn the_version_current_at_the_time_is_chosen() {
        let versions = || {
            vec![
                version("2026-01-01T00:00:00Z", None, Some("s1")),
                version(
                    "2026-01-03T00:00:00Z",
                    Some("2026-01-04T00:00:00Z"),
                    Some("s2"),
                ),
                version("2026-01-05T00:00:00Z", None, None),
            ]
        };
        assert!(matches!(
            choose(versions(), t("2025-12-31T00:00:00Z")),
            Choice::NotYet
        ));
        match choose(versions(), t("2026-01-02T00:00:00Z")) {
            Choice::Restore(item, older) => {
                assert_eq!(item.snapshot.as_deref(), Some("s1"));
                assert!(older);
                assert_eq!(item.tags.get("team").map(String::as_str), Some("data"));
            }
            _ => panic!("restored from the first version"),
        }
        assert!(matches!(
            choose(versions(), t("2026-01-04T12:00:00Z")),
            Choice::Deleted
        ));
        match choose(versions(), t("2026-01-06T00:00:00Z")) {
            Choice::Restore(item, older) => {
                assert_eq!(item.snapshot, None);
                assert!(!older);
            }
            _ => panic!("restored from the base blob"),
        }
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("lake/raw/restored/2026").unwrap(),
            Target {
                account: "lake".into(),
                container: "raw".into(),
                prefix: Some("restored/2026".into()),
            }
        );
        assert!(Target::parse("lake").is_err());
        assert!(Target::parse("/raw").is_err());
    }
}
