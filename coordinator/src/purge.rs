//! `purge`: retention for the backup. Old versions (snapshots kept before an overwrite)
//! are deleted once they stopped being current longer ago than `--keep-versions-for`; the
//! current version of a blob is never touched by that window. Blobs marked deleted in the
//! source (tombstones) are deleted, with all their versions, once they have been deleted
//! longer than `--tombstones-for`. Like tombstoning, a cap protects the backup: a container
//! that would lose more than `--max-deletes` blobs and versions in one run loses nothing.

use crate::backup::{FailedContainer, SkippedContainer, selected_containers};
use azure_storage_blob::models::{
    BlobClientDeleteOptions, BlobContainerClientListBlobsOptions, DeleteSnapshotsOptionType,
    ListBlobsIncludeItem,
};
use futures::TryStreamExt;
use lakevault_common::config::Config;
use lakevault_common::error::describe;
use lakevault_common::record::BackupRecord;
use lakevault_common::storage::StorageAccount;
use serde::Serialize;
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Clone)]
pub struct PurgeOptions {
    /// Versions that stopped being current longer ago than this are deleted.
    pub keep_versions_for: time::Duration,
    /// Tombstoned blobs deleted in the source longer ago than this are deleted.
    pub tombstones_for: Option<time::Duration>,
    /// Most deletions per container in one run; above it the container is left alone.
    pub max_deletes: u64,
    pub dry_run: bool,
    /// Names shown per container.
    pub sample: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ContainerPurge {
    pub container: String,
    /// Old versions (snapshots) past the window.
    pub versions: u64,
    /// Tombstoned blobs past their window (deleted with their versions).
    pub tombstoned_blobs: u64,
    /// Versions that go with those blobs.
    pub tombstoned_versions: u64,
    /// Deletions done (0 in a dry run or when capped).
    pub deleted: u64,
    /// The container crossed `max_deletes`: nothing was deleted.
    pub capped: bool,
    pub sample: Vec<String>,
}

impl ContainerPurge {
    pub fn planned(&self) -> u64 {
        self.versions + self.tombstoned_blobs
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PurgeReport {
    pub dry_run: bool,
    pub containers: Vec<ContainerPurge>,
    pub skipped: Vec<SkippedContainer>,
    pub failed: Vec<FailedContainer>,
}

/// Parses `30d`, `12h`, `45m`, `90s` (or a plain number of seconds).
pub fn parse_window(text: &str) -> Result<time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: i64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30d, 12h, 45m or 90s"))?;
    match unit {
        "d" => Ok(time::Duration::days(n)),
        "h" => Ok(time::Duration::hours(n)),
        "m" => Ok(time::Duration::minutes(n)),
        "s" => Ok(time::Duration::seconds(n)),
        _ => Err(format!(
            "`{text}`: unknown unit `{unit}` (use d, h, m or s)"
        )),
    }
}

fn parse_time(t: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t, &Rfc3339).ok()
}

/// What will go, held until the container has been listed completely (at most
/// `max_deletes + 1` entries).
#[derive(Debug, Default)]
struct Doomed {
    /// (name, snapshot) versions.
    versions: Vec<(String, String)>,
    /// Tombstoned base blobs, deleted with their snapshots.
    blobs: Vec<String>,
}

async fn purge_container(
    destination: &StorageAccount,
    container: &str,
    options: &PurgeOptions,
    now: OffsetDateTime,
) -> Result<ContainerPurge, String> {
    let mut report = ContainerPurge {
        container: container.to_string(),
        ..Default::default()
    };
    let client = destination
        .container(container)
        .map_err(|e| e.to_string())?;
    if !client.exists().await.map_err(|e| describe(&e))? {
        return Ok(report);
    }
    let list_options = BlobContainerClientListBlobsOptions {
        include: Some(vec![
            ListBlobsIncludeItem::Snapshots,
            ListBlobsIncludeItem::Tags,
        ]),
        ..Default::default()
    };
    let mut pager = client
        .list_blobs(Some(list_options))
        .map_err(|e| describe(&e))?;
    let mut doomed = Doomed::default();
    let version_cutoff = now - options.keep_versions_for;
    // The versions of one name come together in the listing; the base blob's record says
    // whether the whole name goes (tombstone past its window).
    let mut group: Option<(String, Vec<String>, bool)> = None;
    let mut over_cap = false;
    let flush = |group: Option<(String, Vec<String>, bool)>,
                 doomed: &mut Doomed,
                 report: &mut ContainerPurge,
                 over_cap: &mut bool| {
        let Some((name, snapshots, tombstone_expired)) = group else {
            return;
        };
        if report.sample.len() < options.sample && (tombstone_expired || !snapshots.is_empty()) {
            report.sample.push(name.clone());
        }
        if tombstone_expired {
            report.tombstoned_blobs += 1;
            report.tombstoned_versions += snapshots.len() as u64;
            if !*over_cap {
                doomed.blobs.push(name.clone());
            }
        } else {
            for snapshot in snapshots {
                report.versions += 1;
                if !*over_cap {
                    doomed.versions.push((name.clone(), snapshot));
                }
            }
        }
        if report.planned() > options.max_deletes {
            *over_cap = true;
            *doomed = Doomed::default();
        }
    };
    while let Some(item) = pager.try_next().await.map_err(|e| describe(&e))? {
        let Some(name) = item.name.clone() else {
            continue;
        };
        if group.as_ref().is_none_or(|(n, _, _)| *n != name) {
            flush(group.take(), &mut doomed, &mut report, &mut over_cap);
            group = Some((name.clone(), Vec::new(), false));
        }
        let Some((_, snapshots, tombstone_expired)) = group.as_mut() else {
            continue;
        };
        match &item.snapshot {
            Some(snapshot) => {
                // A snapshot stopped being current when it was taken.
                if parse_time(snapshot).is_some_and(|t| t < version_cutoff) {
                    snapshots.push(snapshot.clone());
                }
            }
            None => {
                let tags: BTreeMap<String, String> = item
                    .blob_tags
                    .and_then(|t| t.blob_tag_set)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|t| Some((t.key?, t.value?)))
                    .collect();
                if let (Some(window), Some(record)) =
                    (options.tombstones_for, BackupRecord::from_tags(&tags))
                {
                    *tombstone_expired = record
                        .deleted_at
                        .as_deref()
                        .and_then(parse_time)
                        .is_some_and(|t| t < now - window);
                }
            }
        }
    }
    flush(group.take(), &mut doomed, &mut report, &mut over_cap);
    if over_cap {
        report.capped = true;
        tracing::error!(
            container,
            planned = report.planned(),
            max = options.max_deletes,
            "purge would delete more than --max-deletes: nothing deleted"
        );
        return Ok(report);
    }
    if options.dry_run {
        return Ok(report);
    }
    for (name, snapshot) in &doomed.versions {
        let blob = destination
            .blob(container, name)
            .map_err(|e| e.to_string())?
            .with_snapshot(snapshot)
            .map_err(|e| describe(&e))?;
        match blob.delete(None).await {
            Ok(_) => report.deleted += 1,
            Err(e) if e.http_status().map(u16::from) == Some(404) => {}
            Err(e) => {
                return Err(format!(
                    "deleting {name} version {snapshot}: {}",
                    describe(&e)
                ));
            }
        }
    }
    for name in &doomed.blobs {
        let options = BlobClientDeleteOptions {
            delete_snapshots: Some(DeleteSnapshotsOptionType::Include),
            ..Default::default()
        };
        match destination
            .blob(container, name)
            .map_err(|e| e.to_string())?
            .delete(Some(options))
            .await
        {
            Ok(_) => report.deleted += 1,
            Err(e) if e.http_status().map(u16::from) == Some(404) => {}
            Err(e) => return Err(format!("deleting tombstoned {name}: {}", describe(&e))),
        }
    }
    Ok(report)
}

/// Applies retention to every selected container's backup.
pub async fn run(
    config: &Config,
    source: &StorageAccount,
    destination: &StorageAccount,
    options: &PurgeOptions,
) -> anyhow::Result<PurgeReport> {
    let mut report = PurgeReport {
        dry_run: options.dry_run,
        ..Default::default()
    };
    let containers =
        selected_containers(config, source, &mut report.skipped, &mut report.failed).await?;
    let now = OffsetDateTime::now_utc();
    for (_, dest_name) in containers {
        match purge_container(destination, &dest_name, options, now).await {
            Ok(c) => report.containers.push(c),
            Err(reason) => report.failed.push(FailedContainer {
                container: dest_name,
                reason,
            }),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_with_units() {
        assert_eq!(parse_window("30d"), Ok(time::Duration::days(30)));
        assert_eq!(parse_window("12h"), Ok(time::Duration::hours(12)));
        assert_eq!(parse_window("45m"), Ok(time::Duration::minutes(45)));
        assert_eq!(parse_window("90"), Ok(time::Duration::seconds(90)));
        assert!(parse_window("3w").is_err());
        assert!(parse_window("d").is_err());
    }
}
