//! `verify`: proves that the backup matches the source, with the same streaming merge-join
//! as the diff. Every source blob must be in the backup with a live record naming its
//! current ETag, the same size, and the same Content-MD5 where both sides store one.
//! `--deep` also hashes the content of both sides (SHA-256, streamed) for blobs that lack
//! a stored MD5 on either side, so a backup altered behind lakevault's back is caught.

use crate::backup::{BackupError, FailedContainer, SkippedContainer, selected_containers};
use crate::diff::{Pair, join_pairs};
use crate::listing::{Include, ListedBlob, Lister};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use lakevault_common::access::{KeptAccess, kept_access};
use lakevault_common::config::Config;
use lakevault_common::error::describe;
use lakevault_common::record::BackupRecord;
use lakevault_common::storage::StorageAccount;
use serde::Serialize;
use sha2::Digest;

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Hash content on both sides where Content-MD5 cannot be compared.
    pub deep: bool,
    /// Content hashes computed at once (each streams one blob from each side).
    pub deep_parallelism: usize,
    /// Problems listed per container (all are counted).
    pub max_listed: usize,
    /// Blobs checked, on the terminal of an interactive run.
    pub progress: lakevault_common::progress::Progress,
}

/// What is wrong with one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// In the source, not in the backup.
    Missing,
    /// The backup blob has no lakevault record.
    Unrecorded,
    /// The backup marks the blob deleted, but the source has it.
    Tombstoned,
    /// The backup records another source version (changed since the last backup).
    Stale,
    /// Sizes differ although the record names the current version.
    Size,
    /// Content-MD5 differs.
    Md5,
    /// The content hashes differ (`--deep`).
    Content,
    /// A side could not be read for hashing.
    Unreadable,
    /// An HNS source path's owner, group, permissions or ACL differ from what the backup
    /// keeps for its version (changed since the last backup, or kept only as a digest).
    Access,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub name: String,
    pub kind: ProblemKind,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ContainerVerify {
    pub source_container: String,
    pub destination_container: String,
    /// Source blobs checked.
    pub checked: u64,
    pub ok: u64,
    pub problems: u64,
    /// Blobs whose content was hashed on both sides.
    pub deep_hashed: u64,
    /// Backup blobs whose source is gone and that are not yet marked as tombstones (the
    /// next full backup marks them): not a problem.
    pub deleted_in_source: u64,
    pub tombstoned: u64,
    /// Backup blobs not written by lakevault (outside the source's names).
    pub unmanaged: u64,
    /// The first problems, with what is wrong.
    pub listed: Vec<Problem>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub deep: bool,
    pub containers: Vec<ContainerVerify>,
    pub skipped: Vec<SkippedContainer>,
    pub failed: Vec<FailedContainer>,
}

impl VerifyReport {
    pub fn problems(&self) -> u64 {
        self.containers.iter().map(|c| c.problems).sum()
    }

    /// Whether the backup is proven to match: no problem, no container left unchecked.
    pub fn passed(&self) -> bool {
        self.problems() == 0 && self.failed.is_empty()
    }
}

impl ContainerVerify {
    fn problem(&mut self, name: &str, kind: ProblemKind, detail: impl Into<String>, max: usize) {
        self.problems += 1;
        if self.listed.len() < max {
            self.listed.push(Problem {
                name: name.to_string(),
                kind,
                detail: detail.into(),
            });
        }
    }
}

/// SHA-256 of a blob's content, streamed.
async fn sha256(account: &StorageAccount, container: &str, name: &str) -> Result<String, String> {
    let client = account.blob(container, name).map_err(|e| e.to_string())?;
    let mut body = client.download(None).await.map_err(|e| describe(&e))?.body;
    let mut hasher = sha2::Sha256::new();
    while let Some(chunk) = body.next().await {
        hasher.update(chunk.map_err(|e| describe(&e))?);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A blob's name and the content hashes of (source, backup), or why they could not be read.
type HashResult = (String, Result<(String, String), String>);

/// What one pair of blobs says, before any content hashing.
enum Verdict {
    Ok,
    Problem(ProblemKind, String),
    /// Record and size agree but MD5 cannot be compared: hash in deep mode.
    NeedsHash,
}

fn judge(source: &ListedBlob, backup: &ListedBlob) -> Verdict {
    let Some(record) = BackupRecord::from_tags(&backup.tags) else {
        return Verdict::Problem(
            ProblemKind::Unrecorded,
            "the backup blob has no lakevault record".into(),
        );
    };
    if let Some(at) = &record.deleted_at {
        return Verdict::Problem(
            ProblemKind::Tombstoned,
            format!("the backup marks it deleted since {at}, but the source has it"),
        );
    }
    if record.source_etag != source.etag {
        return Verdict::Problem(
            ProblemKind::Stale,
            format!(
                "the backup holds source version {} (backed up {}), the source is at {}",
                record.source_etag, record.backed_up_at, source.etag
            ),
        );
    }
    if let Some(access) = &source.access {
        let kept = kept_access(&backup.tags);
        if !access.matches(&kept) {
            let detail = match kept {
                KeptAccess::Kept(k) => format!(
                    "the source has owner {} group {} acl {}; the backup keeps owner {} group {} acl {}",
                    access.owner, access.group, access.acl, k.owner, k.group, k.acl
                ),
                KeptAccess::DigestOnly(_) => {
                    "the source's access control changed since the backup (the backup keeps only its digest: it was too long for the tags)".into()
                }
                KeptAccess::None | KeptAccess::Unreadable => format!(
                    "the backup keeps no readable access control for it; the source has owner {} group {} acl {}",
                    access.owner, access.group, access.acl
                ),
            };
            return Verdict::Problem(ProblemKind::Access, detail);
        }
    }
    if source.size != backup.size {
        return Verdict::Problem(
            ProblemKind::Size,
            format!(
                "{} bytes in the source, {} in the backup",
                source.size, backup.size
            ),
        );
    }
    match (&source.content_md5, &backup.content_md5) {
        (Some(a), Some(b)) if a != b => Verdict::Problem(
            ProblemKind::Md5,
            format!("Content-MD5 {a} in the source, {b} in the backup"),
        ),
        (Some(_), Some(_)) => Verdict::Ok,
        _ => Verdict::NeedsHash,
    }
}

async fn verify_container(
    source: &StorageAccount,
    destination: &StorageAccount,
    config: &Config,
    options: &VerifyOptions,
    (container, dest_name, hierarchical): (&str, &str, bool),
) -> Result<ContainerVerify, String> {
    let mut report = ContainerVerify {
        source_container: container.to_string(),
        destination_container: dest_name.to_string(),
        ..Default::default()
    };
    let filter = config.backup.filter();
    let source_lister = Lister::new(source, container).map_err(|e| e.to_string())?;
    let dest_lister = Lister::new(destination, dest_name).map_err(|e| e.to_string())?;
    let backup_exists = destination
        .container(dest_name)
        .map_err(|e| e.to_string())?
        .exists()
        .await
        .map_err(|e| describe(&e))?;
    let max = options.max_listed;
    for prefix in filter.listing_prefixes() {
        let selected = |b: &ListedBlob| futures::future::ready(filter.matches(&b.name));
        let src: futures::stream::BoxStream<'static, azure_core::Result<ListedBlob>> =
            if hierarchical {
                let directories = lakevault_plan::hns::ContainerDirectories {
                    lister: source_lister.clone(),
                    page_size: None,
                };
                Box::pin(
                    lakevault_plan::hns::walk_in_flat_order(
                        directories,
                        prefix.clone().unwrap_or_default(),
                    )
                    .map_err(lakevault_plan::scan::walk_error),
                )
            } else {
                Box::pin(source_lister.blobs(prefix.clone(), Include::Tags, None))
            };
        let src = src.try_filter(selected);
        let bak: futures::stream::BoxStream<'static, azure_core::Result<ListedBlob>> =
            if backup_exists {
                let filter = filter.clone();
                Box::pin(
                    dest_lister
                        .blobs(prefix.clone(), Include::Tags, None)
                        .try_filter(move |b| futures::future::ready(filter.matches(&b.name))),
                )
            } else {
                Box::pin(futures::stream::empty())
            };
        // Deep hashes run beside the listing, at most `deep_parallelism` at once.
        let mut hashing: FuturesUnordered<futures::future::BoxFuture<'_, HashResult>> =
            FuturesUnordered::new();
        let settle =
            |report: &mut ContainerVerify, name: String, r: Result<(String, String), String>| {
                report.deep_hashed += 1;
                match r {
                    Ok((a, b)) if a == b => report.ok += 1,
                    Ok((a, b)) => report.problem(
                        &name,
                        ProblemKind::Content,
                        format!("content SHA-256 {a} in the source, {b} in the backup"),
                        max,
                    ),
                    Err(e) => report.problem(&name, ProblemKind::Unreadable, e, max),
                }
            };
        let mut pairs = join_pairs(src, bak);
        while let Some(pair) = pairs.try_next().await.map_err(|e| e.to_string())? {
            options.progress.inc(1);
            match pair {
                Pair::SourceOnly(s) => {
                    report.checked += 1;
                    report.problem(
                        &s.name,
                        ProblemKind::Missing,
                        "in the source, not in the backup",
                        max,
                    );
                }
                Pair::BackupOnly(b) => match BackupRecord::from_tags(&b.tags) {
                    None => report.unmanaged += 1,
                    Some(r) if r.deleted_at.is_some() => report.tombstoned += 1,
                    Some(_) => report.deleted_in_source += 1,
                },
                Pair::Both(s, b) => {
                    report.checked += 1;
                    match judge(&s, &b) {
                        Verdict::Ok => report.ok += 1,
                        Verdict::Problem(kind, detail) => {
                            report.problem(&s.name, kind, detail, max)
                        }
                        Verdict::NeedsHash if !options.deep => report.ok += 1,
                        Verdict::NeedsHash => {
                            if hashing.len() >= options.deep_parallelism.max(1)
                                && let Some((name, r)) = hashing.next().await
                            {
                                settle(&mut report, name, r);
                            }
                            let name = s.name;
                            hashing.push(Box::pin(async move {
                                let both = futures::try_join!(
                                    sha256(source, container, &name),
                                    sha256(destination, dest_name, &name)
                                );
                                (name, both)
                            }));
                        }
                    }
                }
            }
        }
        while let Some((name, r)) = hashing.next().await {
            settle(&mut report, name, r);
        }
    }
    Ok(report)
}

/// Verifies every selected container.
pub async fn run(
    config: &Config,
    source: &StorageAccount,
    destination: &StorageAccount,
    options: &VerifyOptions,
) -> Result<VerifyReport, BackupError> {
    let mut report = VerifyReport {
        deep: options.deep,
        ..Default::default()
    };
    let containers =
        selected_containers(config, source, &mut report.skipped, &mut report.failed).await?;
    // A source with a hierarchical namespace is walked into the flat order, without tags.
    let hierarchical = match source.namespace().await {
        Ok(namespace) => namespace == lakevault_common::storage::Namespace::Hierarchical,
        Err(e) => {
            tracing::warn!(account = %source.alias, error = %describe(&e), "cannot tell the source's namespace; taking it as flat");
            false
        }
    };
    for (container, dest_name) in containers {
        let target = (container.as_str(), dest_name.as_str(), hierarchical);
        match verify_container(source, destination, config, options, target).await {
            Ok(c) => {
                tracing::info!(container = %container, checked = c.checked, problems = c.problems, "container verified");
                report.containers.push(c);
            }
            Err(reason) => report.failed.push(FailedContainer { container, reason }),
        }
    }
    Ok(report)
}
