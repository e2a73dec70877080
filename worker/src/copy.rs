//! The copy engine: server-side copies from a source account into the backup account.
//!
//! | source size | call |
//! |---|---|
//! | ≤ 256 MiB | Copy Blob From URL (`x-ms-requires-sync: true`): one request, carries metadata and content headers |
//! | > 256 MiB | Put Block From URL over ranges in parallel + Put Block List |
//!
//! Every request that reads the source carries the source ETag as a condition, so a blob
//! that changes mid-copy fails the copy instead of mixing versions; the engine then re-reads
//! the source and copies the newer version. The backup's record (an index tag) always
//! names the ETag of the bytes that were copied.
//! Put Blob From URL would cover up to 5,000 MiB in one request on Azure, but the storage
//! emulator does not implement it (501), so the block path is used above 256 MiB.

use azure_core::http::{ClientMethodOptions, Etag, RequestContent};
use azure_storage_blob::models::{
    AccessTier, BlobClientAcquireLeaseOptions, BlobClientAcquireLeaseResultHeaders,
    BlobClientGetPropertiesResultHeaders, BlobClientSetTagsOptions,
    BlobClientStartCopyFromUrlOptions, BlobClientStartCopyFromUrlResultHeaders, BlobTag, BlobTags,
    BlobType, BlockBlobClientCommitBlockListOptions, BlockBlobClientStageBlockFromUrlOptions,
    BlockLookupList, CopyStatus, HttpRange,
};
use futures::StreamExt;
use lakevault_common::error::{FailureClass, classify, describe};
use lakevault_common::extra_headers::ExtraHeaders;
use lakevault_common::record::{
    BackupRecord, RECORD_TAG, normalise_etag, rfc3339, tags_header, user_tags,
};
use lakevault_common::storage::{CopySource, StorageAccount};
use lakevault_common::wire::{CopyBatch, CopyItem, MessageKind};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Failure code of an item whose user tags leave no room for lakevault's record tag.
const NO_ROOM_FOR_RECORD: &str = "NoRoomForRecordTag";

/// Copy Blob From URL accepts sources up to 256 MiB.
pub const SYNC_COPY_MAX: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Largest source copied with one synchronous Copy Blob From URL.
    pub sync_copy_max: u64,
    /// Range size of each Put Block From URL above that.
    pub block_size: u64,
    /// Ranges of one blob copied at once.
    pub block_parallelism: usize,
    /// Lifetime of the read SAS generated for a source.
    pub source_sas_validity: Duration,
    /// Snapshot mode: delete the source snapshot once its copy is done.
    pub delete_source_snapshots: bool,
    /// Lease mode: lease duration on the source (15–60 s), renewed at half of it.
    pub lease_duration: Duration,
    /// Snapshot a backup blob before overwriting it with a newer source version, so every
    /// backed-up version stays restorable. Off only where the backup account keeps
    /// versions itself (blob versioning).
    pub keep_history: bool,
    /// Access tier of the backup blobs written; `None`: the account's default.
    pub access_tier: Option<AccessTier>,
    /// When the backup service cannot read the source but the worker can (a firewall or
    /// private endpoint between the accounts), stream the bytes through the worker instead
    /// of poisoning the item.
    pub stream_fallback: bool,
    /// Carry the source's user index tags to the backup blob (the record tag is always
    /// written).
    pub copy_tags: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            sync_copy_max: SYNC_COPY_MAX,
            block_size: 64 * 1024 * 1024,
            block_parallelism: 4,
            source_sas_validity: Duration::from_secs(2 * 3600),
            delete_source_snapshots: true,
            lease_duration: Duration::from_secs(30),
            keep_history: true,
            access_tier: None,
            stream_fallback: false,
            copy_tags: true,
        }
    }
}

/// A finished item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Copied; the backup now holds the source version with this ETag. `kept_previous`:
    /// the version it replaced was kept as a snapshot of the backup blob.
    Copied {
        bytes: u64,
        source_etag: String,
        kept_previous: bool,
    },
    /// The backup already records this source version (a redelivered or re-planned item):
    /// one tag read, no copy.
    AlreadyCurrent,
    /// The source blob no longer exists: nothing to copy (a later full scan records the
    /// deletion).
    SourceGone,
    /// The backup blob is now marked deleted in the source.
    Tombstoned,
    /// Nothing to do any more: the backup blob changed or went away since planning (a newer
    /// copy, an operator's delete).
    Superseded,
    /// Restore without `overwrite`: a blob exists at the target and was left alone.
    TargetExists,
}

/// A failed item, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ItemFailure {
    pub class: FailureClass,
    pub reason: String,
    /// The storage error code, when the service gave one.
    pub code: Option<String>,
}

impl ItemFailure {
    pub fn new(class: FailureClass, reason: impl Into<String>) -> Self {
        Self {
            class,
            reason: reason.into(),
            code: None,
        }
    }

    fn permanent(reason: impl Into<String>) -> Self {
        Self::new(FailureClass::Permanent, reason)
    }

    pub fn from_sdk(context: &str, err: &azure_core::Error) -> Self {
        Self {
            class: classify(err),
            reason: format!("{context}: {}", describe(err)),
            code: lakevault_common::error::error_code(err).map(str::to_string),
        }
    }
}

/// The copy backend a worker drives, one item of a batch at a time. The production
/// implementation is [`CopyEngine`]; tests of message handling use a scripted double.
#[async_trait::async_trait]
pub trait Copier: Send + Sync + std::fmt::Debug {
    async fn copy_item(
        &self,
        batch: &CopyBatch,
        item: &CopyItem,
    ) -> Result<ItemOutcome, ItemFailure>;
}

/// Copies blobs between configured accounts. Accounts are resolved from the worker's own
/// configuration by the aliases a batch names.
#[derive(Debug)]
pub struct CopyEngine {
    accounts: HashMap<String, StorageAccount>,
    options: CopyOptions,
}

/// Source version being copied.
#[derive(Debug, Clone)]
struct SourceVersion {
    etag: String,
    size: u64,
    last_modified: String,
    /// The source's index tags when re-read during the copy; `None`: as planned.
    tags: Option<BTreeMap<String, String>>,
}

fn quoted(etag: &str) -> Etag {
    Etag::from(format!("\"{}\"", normalise_etag(etag)))
}

/// A lease held on a source blob for the length of its copy, renewed in the background.
/// Released on every path: explicitly after the copy, and from `Drop` when the copy is
/// abandoned (shutdown), so a lease never outlives the work by more than its duration.
struct SourceLease {
    client: std::sync::Arc<azure_storage_blob::BlobClient>,
    id: String,
    stop: tokio_util::sync::CancellationToken,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl SourceLease {
    /// Acquires the lease; `None` if the blob is gone. A blob leased by someone else is a
    /// transient failure: the item is retried later.
    async fn acquire(
        client: azure_storage_blob::BlobClient,
        duration: Duration,
    ) -> Result<Option<Self>, ItemFailure> {
        let client = std::sync::Arc::new(client);
        let seconds = duration.as_secs().clamp(15, 60);
        let proposed = uuid::Uuid::new_v4().to_string();
        let options = BlobClientAcquireLeaseOptions {
            proposed_lease_id: Some(proposed.clone()),
            ..Default::default()
        };
        let response = match client.acquire_lease(seconds as i32, Some(options)).await {
            Ok(r) => r,
            Err(e) if e.http_status().map(u16::from) == Some(404) => return Ok(None),
            Err(e) if e.http_status().map(u16::from) == Some(409) => {
                return Err(ItemFailure::new(
                    FailureClass::Transient,
                    format!("source is leased by another writer: {}", describe(&e)),
                ));
            }
            Err(e) => return Err(ItemFailure::from_sdk("acquiring the source lease", &e)),
        };
        let id = response.lease_id().ok().flatten().unwrap_or(proposed);
        let stop = tokio_util::sync::CancellationToken::new();
        let (renew_client, renew_id, renew_stop) = (client.clone(), id.clone(), stop.clone());
        let renewer = tokio::spawn(tracing::Instrument::in_current_span(async move {
            let interval = Duration::from_secs(seconds / 2);
            loop {
                tokio::select! {
                    _ = renew_stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                if let Err(e) = renew_client.renew_lease(renew_id.clone(), None).await {
                    tracing::warn!(error = %describe(&e), "source lease renewal failed");
                }
            }
        }));
        Ok(Some(Self {
            client,
            id,
            stop,
            renewer: Some(renewer),
        }))
    }

    async fn release(mut self) {
        self.stop.cancel();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.await;
        }
        let id = std::mem::take(&mut self.id);
        if let Err(e) = self.client.release_lease(id, None).await {
            tracing::warn!(error = %describe(&e), "source lease not released; it expires on its own");
        }
    }
}

impl Drop for SourceLease {
    fn drop(&mut self) {
        self.stop.cancel();
        if self.id.is_empty() {
            return;
        }
        // Abandoned mid-copy: release in the background (best effort).
        let (client, id) = (self.client.clone(), std::mem::take(&mut self.id));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(tracing::Instrument::in_current_span(async move {
                let _ = client.release_lease(id, None).await;
            }));
        }
    }
}

/// How the backup service reads the source for a ranged copy.
struct SourceRead<'a> {
    /// The source blob (or snapshot), for its properties.
    client: azure_storage_blob::BlobClient,
    /// The URL and authorization the service reads through.
    copy: &'a CopySource,
    /// `x-ms-source-if-match`: the planned ETag of a live blob; none for a snapshot.
    condition: Option<Etag>,
}

/// A client for one blob of an account; a name that makes no valid URL fails the item.
fn blob_client(
    account: &StorageAccount,
    container: &str,
    name: &str,
) -> Result<azure_storage_blob::BlobClient, ItemFailure> {
    account
        .blob(container, name)
        .map_err(|e| ItemFailure::permanent(e.to_string()))
}

#[async_trait::async_trait]
impl Copier for CopyEngine {
    async fn copy_item(
        &self,
        batch: &CopyBatch,
        item: &CopyItem,
    ) -> Result<ItemOutcome, ItemFailure> {
        if batch.kind == MessageKind::Tombstone {
            let destination = self.account(&batch.destination.account)?;
            return tombstone(destination, &batch.destination.container, item).await;
        }
        if batch.kind == MessageKind::Restore {
            return self.restore_item(batch, item).await;
        }
        let source = self.account(&batch.source.account)?;
        // Lease mode: no writer that honours leases can change the blob while it is read.
        // A snapshot is immutable and needs none.
        let lease = if batch.lease && item.snapshot.is_none() {
            let client = blob_client(source, &batch.source.container, &item.name)?;
            match SourceLease::acquire(client, self.options.lease_duration).await? {
                Some(lease) => Some(lease),
                None => return Ok(ItemOutcome::SourceGone),
            }
        } else {
            None
        };
        let result = self.copy_following_source(batch, item).await;
        if let Some(lease) = lease {
            lease.release().await;
        }
        result
    }
}

impl CopyEngine {
    /// Copies one item, following the source if it changed since planning.
    async fn copy_following_source(
        &self,
        batch: &CopyBatch,
        item: &CopyItem,
    ) -> Result<ItemOutcome, ItemFailure> {
        let source = self.account(&batch.source.account)?;
        let destination = self.account(&batch.destination.account)?;
        let mut version = SourceVersion {
            etag: normalise_etag(&item.etag),
            size: item.size,
            last_modified: item.last_modified.clone(),
            tags: None,
        };
        let dest = blob_client(destination, &batch.destination.container, &item.name)?;
        let mut kept_previous = false;
        let mut backup = backup_state(&dest).await?;
        // A blob rewritten continuously could change under every attempt; give up after a few.
        const MAX_SOURCE_CHANGES: usize = 3;
        for _ in 0..MAX_SOURCE_CHANGES {
            match &backup {
                BackupState::Missing => {}
                BackupState::Holds(etag) if *etag == version.etag => {
                    return Ok(ItemOutcome::AlreadyCurrent);
                }
                BackupState::Holds(_) | BackupState::Unrecorded if self.options.keep_history => {
                    keep_previous(&dest).await?;
                    kept_previous = true;
                    // Kept once; a retry against a newer source version overwrites what
                    // this attempt may have written, not an older backup.
                    backup = BackupState::Missing;
                }
                BackupState::Holds(_) | BackupState::Unrecorded => {}
            }
            match self
                .copy_version(batch, item, &version, source, destination)
                .await
            {
                Ok(bytes) => {
                    if let Some(snapshot) = &item.snapshot
                        && self.options.delete_source_snapshots
                    {
                        delete_snapshot(source, &batch.source.container, &item.name, snapshot)
                            .await;
                    }
                    return Ok(ItemOutcome::Copied {
                        bytes,
                        source_etag: version.etag,
                        kept_previous,
                    });
                }
                // Before `SourceMissing`: a 404 CannotVerifyCopySource only says the backup
                // service could not read the source, which is not proof the blob is gone.
                Err(f) if f.code.as_deref() == Some("CannotVerifyCopySource") => {
                    match diagnose_unreadable_source(source, &batch.source.container, item, f)
                        .await?
                    {
                        Unreadable::Gone => return Ok(ItemOutcome::SourceGone),
                        Unreadable::ByServiceOnly(f) if !self.options.stream_fallback => {
                            return Err(f);
                        }
                        Unreadable::ByServiceOnly(_) => {
                            let bytes = self
                                .stream_copy(batch, item, &version, source, &dest)
                                .await?;
                            return Ok(ItemOutcome::Copied {
                                bytes,
                                source_etag: version.etag,
                                kept_previous,
                            });
                        }
                    }
                }
                Err(f) if f.class == FailureClass::SourceMissing => {
                    return Ok(ItemOutcome::SourceGone);
                }
                // The planned tags leave no room for the record. They may be stale (tags
                // change without a new ETag; a re-driven item carries its planning-time
                // tags): judge by the source's current tags once.
                Err(f)
                    if f.code.as_deref() == Some(NO_ROOM_FOR_RECORD) && version.tags.is_none() =>
                {
                    version.tags =
                        Some(read_tags(source, &batch.source.container, &item.name).await?);
                }
                Err(f) if f.class == FailureClass::SourceChanged => {
                    tracing::debug!(blob = %item.name, "source changed during copy; copying the newer version");
                    match read_source(source, &batch.source.container, &item.name).await? {
                        Some(mut v) => {
                            // The planned tags belong to the old version.
                            v.tags =
                                Some(read_tags(source, &batch.source.container, &item.name).await?);
                            version = v;
                        }
                        None => return Ok(ItemOutcome::SourceGone),
                    }
                }

                Err(f) => return Err(f),
            }
        }
        Err(ItemFailure::new(
            FailureClass::Transient,
            format!("source changed {MAX_SOURCE_CHANGES} times while being copied"),
        ))
    }

    /// Restores one version from the backup (the batch's source) to the target: the same
    /// copy paths as a backup, reading the named snapshot (or the base blob at its planned
    /// ETag), writing the version's user tags and no record. Without `overwrite`, the
    /// write is conditional on the target not existing.
    async fn restore_item(
        &self,
        batch: &CopyBatch,
        item: &CopyItem,
    ) -> Result<ItemOutcome, ItemFailure> {
        let backup = self.account(&batch.source.account)?;
        let target = self.account(&batch.destination.account)?;
        let target_name = format!(
            "{}{}",
            batch.destination_prefix.as_deref().unwrap_or_default(),
            item.name
        );
        let dest = blob_client(target, &batch.destination.container, &target_name)?;
        let snapshot = item.snapshot.as_deref();
        let source = backup
            .copy_source(
                &batch.source.container,
                &item.name,
                snapshot,
                self.options.source_sas_validity,
            )
            .await
            .map_err(|e| ItemFailure::from_sdk("authorizing the backup read", &e))?;
        let condition = snapshot
            .is_none()
            .then(|| quoted(&normalise_etag(&item.etag)));
        let tags = record_free_tags(&item.tags);
        let only_if_absent = (!batch.overwrite).then(|| Etag::from("*"));
        let result = if item.size <= self.options.sync_copy_max {
            restore_sync_copy(&dest, condition, &source, tags, only_if_absent).await
        } else {
            let mut src = blob_client(backup, &batch.source.container, &item.name)?;
            if let Some(s) = snapshot {
                src = src
                    .with_snapshot(s)
                    .map_err(|e| ItemFailure::from_sdk("snapshot URL", &e))?;
            }
            let version = SourceVersion {
                etag: normalise_etag(&item.etag),
                size: item.size,
                last_modified: item.last_modified.clone(),
                tags: None,
            };
            let read = SourceRead {
                client: src,
                copy: &source,
                condition,
            };
            if only_if_absent.is_some()
                && dest
                    .exists()
                    .await
                    .map_err(|e| ItemFailure::from_sdk("checking the restore target", &e))?
            {
                return Ok(ItemOutcome::TargetExists);
            }
            self.block_copy_with(&read, &dest, &target_name, &version, tags, None)
                .await
        };
        match result {
            Ok(()) => Ok(ItemOutcome::Copied {
                bytes: item.size,
                source_etag: normalise_etag(&item.etag),
                kept_previous: false,
            }),
            Err(f) if matches!(f.code.as_deref(), Some("BlobAlreadyExists")) => {
                Ok(ItemOutcome::TargetExists)
            }
            // A failed `If-None-Match: *` may come back as 412 ConditionNotMet, which the
            // emulator also uses for a failed source condition: the target tells which.
            Err(f)
                if !batch.overwrite
                    && f.code.as_deref() == Some("ConditionNotMet")
                    && dest.exists().await.unwrap_or(false) =>
            {
                Ok(ItemOutcome::TargetExists)
            }
            Err(f) if f.class == FailureClass::SourceChanged => {
                Err(ItemFailure::permanent(format!(
                    "the backup blob changed since the restore was planned (a backup ran meanwhile); plan the restore again: {}",
                    f.reason
                )))
            }
            Err(f) => Err(f),
        }
    }

    /// The user tags the backup blob gets: the source's (as re-read, or as planned), or
    /// none with `copy_tags` off.
    fn user_tags<'a>(
        &self,
        item: &'a CopyItem,
        version: &'a SourceVersion,
    ) -> &'a BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        if self.options.copy_tags {
            version.tags.as_ref().unwrap_or(&item.tags)
        } else {
            &NONE
        }
    }

    pub fn new(accounts: Vec<StorageAccount>, options: CopyOptions) -> Self {
        let accounts = accounts.into_iter().map(|a| (a.alias.clone(), a)).collect();
        Self { accounts, options }
    }

    fn account(&self, alias: &str) -> Result<&StorageAccount, ItemFailure> {
        self.accounts.get(alias).ok_or_else(|| {
            ItemFailure::permanent(format!(
                "account alias `{alias}` is not defined in this worker's config"
            ))
        })
    }

    async fn copy_version(
        &self,
        batch: &CopyBatch,
        item: &CopyItem,
        version: &SourceVersion,
        source_account: &StorageAccount,
        destination: &StorageAccount,
    ) -> Result<u64, ItemFailure> {
        let record = BackupRecord {
            source_etag: version.etag.clone(),
            source_last_modified: version.last_modified.clone(),
            backed_up_at: rfc3339(time::OffsetDateTime::now_utc()),
            job: batch.job.clone(),
            deleted_at: None,
        };
        let user_tags = self.user_tags(item, version);
        let tags = tags_header(user_tags, &record).map_err(|e| ItemFailure {
            code: Some(NO_ROOM_FOR_RECORD.into()),
            ..ItemFailure::permanent(e.to_string())
        })?;
        let snapshot = item.snapshot.as_deref();
        let source = source_account
            .copy_source(
                &batch.source.container,
                &item.name,
                snapshot,
                self.options.source_sas_validity,
            )
            .await
            .map_err(|e| ItemFailure::from_sdk("authorizing the source read", &e))?;
        // A snapshot cannot change; a live blob is read only at the version planned.
        let condition = snapshot.is_none().then(|| quoted(&version.etag));
        let dest = blob_client(destination, &batch.destination.container, &item.name)?;
        if version.size <= self.options.sync_copy_max {
            sync_copy(
                &dest,
                condition,
                &source,
                tags,
                self.options.access_tier.clone(),
            )
            .await?;
        } else {
            let mut src = blob_client(source_account, &batch.source.container, &item.name)?;
            if let Some(s) = snapshot {
                src = src
                    .with_snapshot(s)
                    .map_err(|e| ItemFailure::from_sdk("snapshot URL", &e))?;
            }
            let read = SourceRead {
                client: src,
                copy: &source,
                condition,
            };
            self.block_copy(&read, &dest, &item.name, version, tags)
                .await?;
        }
        Ok(version.size)
    }

    /// Put Block From URL per range, then Put Block List with the source's content
    /// headers and metadata.
    async fn block_copy(
        &self,
        source: &SourceRead<'_>,
        dest: &azure_storage_blob::BlobClient,
        name: &str,
        version: &SourceVersion,
        tags: String,
    ) -> Result<(), ItemFailure> {
        self.block_copy_with(
            source,
            dest,
            name,
            version,
            Some(tags),
            self.options.access_tier.clone(),
        )
        .await
    }

    /// [`Self::block_copy`] with optional tags (a restore may have none to write).
    async fn block_copy_with(
        &self,
        source: &SourceRead<'_>,
        dest: &azure_storage_blob::BlobClient,
        name: &str,
        version: &SourceVersion,
        tags: Option<String>,
        tier: Option<AccessTier>,
    ) -> Result<(), ItemFailure> {
        // Content headers and metadata are set on commit, so read them from the source
        // and make sure they belong to the version being copied.
        let props = properties_of_version(&source.client, version).await?;
        if let Ok(Some(t)) = props.blob_type()
            && t != BlobType::BlockBlob
        {
            return Err(ItemFailure::permanent(format!(
                "source is a {t:?}; only block blobs are copied"
            )));
        }
        let block_size = effective_block_size(version.size, self.options.block_size)?;
        let block_ids = block_ids(name, &version.etag, version.size, block_size);
        let dest = dest.block_blob_client();
        let parallelism = self.options.block_parallelism.max(1);
        let mut pending = block_ids.iter().enumerate();
        let mut running: futures::stream::FuturesUnordered<
            futures::future::BoxFuture<'_, Result<(), ItemFailure>>,
        > = futures::stream::FuturesUnordered::new();
        loop {
            while running.len() < parallelism {
                let Some((i, id)) = pending.next() else { break };
                let offset = i as u64 * block_size;
                let length = block_size.min(version.size - offset);
                running.push(Box::pin(stage_range(
                    &dest,
                    id,
                    offset,
                    length,
                    source.copy,
                    source.condition.clone(),
                )));
            }
            match running.next().await {
                Some(result) => result?,
                None => break,
            }
        }
        drop(running);
        self.commit(&dest, &props, block_ids, tags, tier).await
    }

    /// Fallback when the backup service cannot read the source: the worker reads ranges
    /// with its own credential (conditional on the ETag) and uploads them with Put Block,
    /// one range of at most `STREAM_RANGE` bytes in memory per blob at a time.
    async fn stream_copy(
        &self,
        batch: &CopyBatch,
        item: &CopyItem,
        version: &SourceVersion,
        source: &StorageAccount,
        dest: &azure_storage_blob::BlobClient,
    ) -> Result<u64, ItemFailure> {
        const STREAM_RANGE: u64 = 8 * 1024 * 1024;
        let mut src = blob_client(source, &batch.source.container, &item.name)?;
        if let Some(s) = &item.snapshot {
            src = src
                .with_snapshot(s)
                .map_err(|e| ItemFailure::from_sdk("snapshot URL", &e))?;
        }
        let props = properties_of_version(&src, version).await?;
        let record = BackupRecord {
            source_etag: version.etag.clone(),
            source_last_modified: version.last_modified.clone(),
            backed_up_at: rfc3339(time::OffsetDateTime::now_utc()),
            job: batch.job.clone(),
            deleted_at: None,
        };
        let tags = tags_header(self.user_tags(item, version), &record)
            .map_err(|e| ItemFailure::permanent(e.to_string()))?;
        let range = effective_block_size(version.size, STREAM_RANGE)?;
        let ids = block_ids(&item.name, &version.etag, version.size, range);
        let block_blob = dest.block_blob_client();
        let condition = item.snapshot.is_none().then(|| quoted(&version.etag));
        for (i, id) in ids.iter().enumerate() {
            let offset = i as u64 * range;
            let length = range.min(version.size - offset);
            if length == 0 {
                // An empty blob: one empty block.
                block_blob
                    .stage_block(id, 0, RequestContent::from(Vec::new()), None)
                    .await
                    .map_err(|e| ItemFailure::from_sdk("put block", &e))?;
                continue;
            }
            let options = azure_storage_blob::models::BlobClientDownloadOptions {
                range: Some(HttpRange::new(offset, length)),
                if_match: condition.clone(),
                parallel: std::num::NonZero::new(1),
                ..Default::default()
            };
            let mut body = src
                .download(Some(options))
                .await
                .map_err(|e| ItemFailure::from_sdk("reading a source range", &e))?
                .body;
            let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
            while let Some(chunk) = body.next().await {
                bytes.extend_from_slice(
                    &chunk.map_err(|e| ItemFailure::from_sdk("reading a source range", &e))?,
                );
            }
            if bytes.len() as u64 != length {
                return Err(ItemFailure::new(
                    FailureClass::Transient,
                    format!(
                        "source range at {offset}: {} of {length} bytes",
                        bytes.len()
                    ),
                ));
            }
            block_blob
                .stage_block(id, length, RequestContent::from(bytes), None)
                .await
                .map_err(|e| ItemFailure::from_sdk("put block", &e))?;
        }
        self.commit(
            &block_blob,
            &props,
            ids,
            Some(tags),
            self.options.access_tier.clone(),
        )
        .await?;
        Ok(version.size)
    }

    /// Put Block List with the source's content headers, metadata, the tags and the tier.
    async fn commit(
        &self,
        dest: &azure_storage_blob::BlockBlobClient,
        props: &azure_core::http::Response<
            azure_storage_blob::models::BlobClientGetPropertiesResult,
            azure_core::http::NoFormat,
        >,
        block_ids: Vec<Vec<u8>>,
        tags: Option<String>,
        tier: Option<AccessTier>,
    ) -> Result<(), ItemFailure> {
        let list = BlockLookupList {
            latest: Some(block_ids),
            ..Default::default()
        };
        let content: RequestContent<BlockLookupList, _> = list
            .try_into()
            .map_err(|e: azure_core::Error| ItemFailure::from_sdk("encoding block list", &e))?;
        let metadata = props.metadata().unwrap_or_default();
        let options = BlockBlobClientCommitBlockListOptions {
            blob_cache_control: props.cache_control().ok().flatten(),
            blob_content_disposition: props.content_disposition().ok().flatten(),
            blob_content_encoding: props.content_encoding().ok().flatten(),
            blob_content_language: props.content_language().ok().flatten(),
            blob_content_md5: props.content_md5().ok().flatten(),
            blob_content_type: props.content_type().ok().flatten(),
            blob_tags_string: tags,
            metadata: (!metadata.is_empty()).then_some(metadata),
            tier,
            ..Default::default()
        };
        dest.commit_block_list(content, Some(options))
            .await
            .map_err(|e| ItemFailure::from_sdk("put block list", &e))?;
        Ok(())
    }
}

/// One synchronous Copy Blob From URL: content, content headers and user metadata are
/// carried by the service; the record goes in as an index tag.
async fn sync_copy(
    dest: &azure_storage_blob::BlobClient,
    condition: Option<Etag>,
    source: &CopySource,
    tags: String,
    tier: Option<AccessTier>,
) -> Result<(), ItemFailure> {
    let mut extra = ExtraHeaders::default().with("x-ms-requires-sync", "true");
    if let Some(auth) = &source.authorization {
        extra = extra.with("x-ms-copy-source-authorization", auth.expose());
    }
    let options = BlobClientStartCopyFromUrlOptions {
        source_if_match: condition,
        blob_tags_string: Some(tags),
        tier,
        method_options: ClientMethodOptions {
            context: extra.into_context(),
        },
        ..Default::default()
    };
    let response = dest
        .start_copy_from_url(source.url.clone(), Some(options))
        .await
        .map_err(|e| ItemFailure::from_sdk("copy blob from URL", &e))?;
    match response.copy_status() {
        Ok(Some(CopyStatus::Success)) | Ok(None) => Ok(()),
        Ok(Some(other)) => Err(ItemFailure::new(
            FailureClass::Transient,
            format!("copy blob from URL finished with status {other:?}"),
        )),
        Err(e) => Err(ItemFailure::from_sdk("reading copy status", &e)),
    }
}

/// What the backup holds under an item's name before the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BackupState {
    Missing,
    /// A live lakevault record naming this source ETag.
    Holds(String),
    /// A blob without a live record (tombstoned, or not written by lakevault).
    Unrecorded,
}

/// Reads the backup blob's record (one Get Blob Tags request).
async fn backup_state(dest: &azure_storage_blob::BlobClient) -> Result<BackupState, ItemFailure> {
    match dest.get_tags(None).await {
        Ok(response) => {
            let tags = response
                .into_model()
                .map_err(|e| ItemFailure::from_sdk("reading backup tags", &e))?;
            let tags: BTreeMap<String, String> = tags
                .blob_tag_set
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| Some((t.key?, t.value?)))
                .collect();
            Ok(match BackupRecord::from_tags(&tags) {
                Some(r) if r.deleted_at.is_none() => BackupState::Holds(r.source_etag),
                _ => BackupState::Unrecorded,
            })
        }
        Err(e) if e.http_status().map(u16::from) == Some(404) => Ok(BackupState::Missing),
        Err(e) => Err(ItemFailure::from_sdk(
            "reading the backup blob's record",
            &e,
        )),
    }
}

/// Keeps the backup blob's current version as a snapshot (content, properties and
/// metadata of its time) before it is overwritten.
async fn keep_previous(dest: &azure_storage_blob::BlobClient) -> Result<(), ItemFailure> {
    match dest.create_snapshot(None).await {
        Ok(_) => Ok(()),
        // Gone meanwhile: nothing to keep.
        Err(e) if e.http_status().map(u16::from) == Some(404) => Ok(()),
        Err(e) => Err(ItemFailure::from_sdk(
            "snapshotting the previous backup",
            &e,
        )),
    }
}

/// The source's properties (content headers, metadata), provided they still belong to the
/// version being copied; `SourceChanged` otherwise.
async fn properties_of_version(
    source: &azure_storage_blob::BlobClient,
    version: &SourceVersion,
) -> Result<
    azure_core::http::Response<
        azure_storage_blob::models::BlobClientGetPropertiesResult,
        azure_core::http::NoFormat,
    >,
    ItemFailure,
> {
    let props = source
        .get_properties(None)
        .await
        .map_err(|e| ItemFailure::from_sdk("reading source properties", &e))?;
    let current = props
        .etag()
        .ok()
        .flatten()
        .map(|e| normalise_etag(e.as_ref()));
    if current.as_deref() != Some(version.etag.as_str()) {
        return Err(ItemFailure::new(
            FailureClass::SourceChanged,
            "source ETag changed since it was read",
        ));
    }
    Ok(props)
}

/// Restore's Copy Blob From URL: the version's user tags, the target account's default
/// tier, and (without overwrite) `If-None-Match: *` on the target.
async fn restore_sync_copy(
    dest: &azure_storage_blob::BlobClient,
    condition: Option<Etag>,
    source: &CopySource,
    tags: Option<String>,
    only_if_absent: Option<Etag>,
) -> Result<(), ItemFailure> {
    let mut extra = ExtraHeaders::default().with("x-ms-requires-sync", "true");
    if let Some(auth) = &source.authorization {
        extra = extra.with("x-ms-copy-source-authorization", auth.expose());
    }
    let options = BlobClientStartCopyFromUrlOptions {
        source_if_match: condition,
        blob_tags_string: tags,
        if_none_match: only_if_absent,
        method_options: ClientMethodOptions {
            context: extra.into_context(),
        },
        ..Default::default()
    };
    dest.start_copy_from_url(source.url.clone(), Some(options))
        .await
        .map_err(|e| ItemFailure::from_sdk("restore copy", &e))?;
    Ok(())
}

/// A version's user tags as an `x-ms-tags` value, lakevault's record left out.
fn record_free_tags(tags: &BTreeMap<String, String>) -> Option<String> {
    lakevault_common::record::user_tags_header(tags)
}

/// The source's current version, or `None` if it no longer exists.
async fn read_source(
    source: &StorageAccount,
    container: &str,
    name: &str,
) -> Result<Option<SourceVersion>, ItemFailure> {
    match blob_client(source, container, name)?
        .get_properties(None)
        .await
    {
        Ok(p) => Ok(Some(SourceVersion {
            etag: p
                .etag()
                .ok()
                .flatten()
                .map(|e| normalise_etag(e.as_ref()))
                .unwrap_or_default(),
            size: p.content_length().ok().flatten().unwrap_or(0),
            last_modified: p
                .last_modified()
                .ok()
                .flatten()
                .map(rfc3339)
                .unwrap_or_default(),
            tags: None,
        })),
        Err(e) if classify(&e) == FailureClass::SourceMissing => Ok(None),
        Err(e) => Err(ItemFailure::from_sdk("reading source properties", &e)),
    }
}

/// Marks a backup blob as deleted in the source by adding `deleted=<now>` to its record
/// tag, keeping its user tags. Conditional on the backup blob's ETag at planning time.
async fn tombstone(
    destination: &StorageAccount,
    container: &str,
    item: &CopyItem,
) -> Result<ItemOutcome, ItemFailure> {
    let mut record = BackupRecord::from_tags(&item.tags).ok_or_else(|| {
        ItemFailure::permanent("backup blob has no lakevault record; it is not tombstoned")
    })?;
    if record.deleted_at.is_some() {
        return Ok(ItemOutcome::Tombstoned);
    }
    record.deleted_at = Some(rfc3339(time::OffsetDateTime::now_utc()));
    let mut tags = user_tags(&item.tags);
    tags.insert(RECORD_TAG.to_string(), record.to_tag_value());
    let body = BlobTags {
        blob_tag_set: Some(
            tags.into_iter()
                .map(|(key, value)| BlobTag {
                    key: Some(key),
                    value: Some(value),
                })
                .collect(),
        ),
    };
    let content: RequestContent<BlobTags, _> = body
        .try_into()
        .map_err(|e: azure_core::Error| ItemFailure::from_sdk("encoding tags", &e))?;
    let options = BlobClientSetTagsOptions {
        if_match: Some(quoted(&item.etag)),
        ..Default::default()
    };
    match blob_client(destination, container, &item.name)?
        .set_tags(content, Some(options))
        .await
    {
        Ok(_) => Ok(ItemOutcome::Tombstoned),
        Err(e) if matches!(e.http_status().map(u16::from), Some(404 | 412)) => {
            Ok(ItemOutcome::Superseded)
        }
        Err(e) => Err(ItemFailure::from_sdk("set blob tags (tombstone)", &e)),
    }
}

/// Deletes the source snapshot taken for an item, after its copy. Best effort: a
/// snapshot left behind costs storage, not correctness, so a failure is only logged.
async fn delete_snapshot(source: &StorageAccount, container: &str, name: &str, snapshot: &str) {
    let result = match blob_client(source, container, name) {
        Ok(client) => match client.with_snapshot(snapshot) {
            Ok(client) => client.delete(None).await.map(|_| ()),
            Err(e) => Err(e),
        },
        Err(f) => {
            tracing::warn!(blob = %name, reason = %f.reason, "source snapshot not deleted");
            return;
        }
    };
    if let Err(e) = result
        && e.http_status().map(u16::from) != Some(404)
    {
        tracing::warn!(blob = %name, %snapshot, error = %describe(&e), "source snapshot not deleted");
    }
}

/// The source's current index tags.
async fn read_tags(
    source: &StorageAccount,
    container: &str,
    name: &str,
) -> Result<BTreeMap<String, String>, ItemFailure> {
    let response = blob_client(source, container, name)?
        .get_tags(None)
        .await
        .map_err(|e| {
            ItemFailure::from_sdk("reading source index tags (needs the `t` permission)", &e)
        })?;
    let tags = response
        .into_model()
        .map_err(|e| ItemFailure::from_sdk("reading source index tags", &e))?;
    Ok(tags
        .blob_tag_set
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| Some((t.key?, t.value?)))
        .collect())
}

/// What reading the source directly says about a `CannotVerifyCopySource`.
enum Unreadable {
    /// Listed at planning time, gone now: deleted meanwhile.
    Gone,
    /// The worker can read it, the backup service cannot: this blob, or the network path
    /// between the services. The failure explains it.
    ByServiceOnly(ItemFailure),
}

/// The backup service could not read the source (`CannotVerifyCopySource`). Whether that
/// is a credential problem (stop: every copy will fail) or about this blob or the network
/// path between the services is told by reading the source directly with the worker's own
/// credential.
async fn diagnose_unreadable_source(
    source: &StorageAccount,
    container: &str,
    item: &CopyItem,
    failure: ItemFailure,
) -> Result<Unreadable, ItemFailure> {
    match read_source(source, container, &item.name).await {
        Ok(None) => Ok(Unreadable::Gone),
        Ok(Some(_)) => Ok(Unreadable::ByServiceOnly(ItemFailure {
            class: FailureClass::Permanent,
            reason: format!(
                "the backup service cannot read this source blob although the worker can \
                 (a firewall or private endpoint between the accounts, or a name the source \
                 will not authorise by SAS; `--stream-fallback` copies through the worker): {}",
                failure.reason
            ),
            code: failure.code,
        })),
        Err(direct) if direct.class == FailureClass::Auth => Err(failure),
        Err(direct) => Err(direct),
    }
}

/// Copies one source range into an uncommitted block, conditional on the source ETag
/// (unless the source is a snapshot).
async fn stage_range(
    dest: &azure_storage_blob::BlockBlobClient,
    id: &[u8],
    offset: u64,
    length: u64,
    source: &CopySource,
    condition: Option<Etag>,
) -> Result<(), ItemFailure> {
    let options = BlockBlobClientStageBlockFromUrlOptions {
        source_range: Some(HttpRange::new(offset, length)),
        source_if_match: condition,
        copy_source_authorization: source
            .authorization
            .as_ref()
            .map(|a| a.expose().to_string()),
        ..Default::default()
    };
    dest.stage_block_from_url(id, 0, source.url.clone(), Some(options))
        .await
        .map(|_| ())
        .map_err(|e| ItemFailure::from_sdk("put block from URL", &e))
}

/// Block ids for a ranged copy: equal length (the service requires it), and derived from
/// the blob name and source ETag so that two workers copying different versions of the
/// same blob at once never commit each other's blocks.
/// A block blob has at most 50,000 committed blocks.
pub const MAX_BLOCKS: u64 = 50_000;
/// Put Block From URL stages at most 4,000 MiB per block.
pub const MAX_BLOCK_SIZE: u64 = 4000 * 1024 * 1024;

/// The configured block size, raised (in whole MiB) when the blob would need more than
/// 50,000 blocks of it.
pub fn effective_block_size(size: u64, configured: u64) -> Result<u64, ItemFailure> {
    const MIB: u64 = 1024 * 1024;
    let configured = configured.max(1);
    if size.div_ceil(configured) <= MAX_BLOCKS {
        return Ok(configured);
    }
    let needed = size.div_ceil(MAX_BLOCKS).div_ceil(MIB) * MIB;
    if needed > MAX_BLOCK_SIZE {
        return Err(ItemFailure::permanent(format!(
            "{size} bytes exceed what a block blob can hold (50,000 blocks of 4,000 MiB)"
        )));
    }
    Ok(needed)
}

pub fn block_ids(name: &str, etag: &str, size: u64, block_size: u64) -> Vec<Vec<u8>> {
    let digest = sha2::Sha256::digest(format!("{name}\n{etag}").as_bytes());
    let prefix = hex::encode(&digest[..8]);
    let count = size.div_ceil(block_size.max(1)).max(1);
    (0..count)
        .map(|i| format!("{prefix}-{i:06}").into_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_cover_the_blob_and_have_equal_length() {
        let ids = block_ids("a.bin", "0x1", 300 * 1024 * 1024, 64 * 1024 * 1024);
        assert_eq!(ids.len(), 5);
        assert!(ids.iter().all(|i| i.len() == ids[0].len()));
        let other = block_ids("a.bin", "0x2", 300 * 1024 * 1024, 64 * 1024 * 1024);
        assert_ne!(ids[0], other[0]);
        assert_eq!(block_ids("x", "e", 0, 10).len(), 1);
    }

    #[test]
    fn block_size_grows_to_stay_within_50000_blocks() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(effective_block_size(300 * MIB, 64 * MIB).unwrap(), 64 * MIB);
        // 4 TiB with 64 MiB blocks would be 65,536 blocks.
        let size = 4 * 1024 * 1024 * MIB;
        let grown = effective_block_size(size, 64 * MIB).unwrap();
        assert!(size.div_ceil(grown) <= MAX_BLOCKS);
        assert_eq!(grown % MIB, 0);
        assert!(grown < 90 * MIB);
        // Exactly at the limit stays as configured.
        assert_eq!(effective_block_size(MAX_BLOCKS * MIB, MIB).unwrap(), MIB);
        assert!(effective_block_size(MAX_BLOCKS * MAX_BLOCK_SIZE + 1, MIB).is_err());
    }
}
