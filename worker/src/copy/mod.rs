//! The copy engine: server-side copies from a source account into the backup account,
//! written against the storage seam ([`BlobStore`]), so its decisions run the same on
//! Azure, the emulator and the in-memory store.
//!
//! | module | path |
//! |---|---|
//! | `backup` | one backup item: already current, keep history, follow a changed source, source gone |
//! | `write` | the one request builder: a version of a source blob written to a destination, by size |
//! | `whole` | 256 MiB – 5,000 MiB: one Put Blob From URL, where the service has it |
//! | `blocks` | above, or where it has not: Put Block From URL over ranges in parallel + Put Block List |
//! | `stream` | the fallback when the backup service cannot read the source: through the worker |
//! | `lease` | lease mode: the source leased for the length of its copy |
//! | `restore` | one restore item: a backed-up version to the target |
//! | `tombstone` | a backup blob marked deleted in the source |
//!
//! Every request that reads the source carries the source ETag as a condition, so a blob
//! that changes mid-copy fails the copy instead of mixing versions; the engine then re-reads
//! the source and copies the newer version. The backup's record (an index tag) always
//! names the ETag of the bytes that were copied.
//! Put Blob From URL covers up to 5,000 MiB in one request on Azure; a service that
//! answers it `501 Not Implemented` (the storage emulator) is remembered as one, and its
//! large blobs take the block path from then on.

mod backup;
mod blocks;
mod lease;
mod restore;
mod stream;
mod tombstone;
mod whole;
mod write;

pub use blocks::{MAX_BLOCK_SIZE, MAX_BLOCKS, block_ids, effective_block_size};

use lakevault_common::clock::{Clock, SystemClock};
use lakevault_common::error::{FailureClass, classify, describe};
use lakevault_common::storage::StorageAccount;
use lakevault_common::store::azure::AzureStore;
use lakevault_common::store::{
    AccessTier, BlobStore, Side, StorageErrorCode, StoreError, Transport,
};
use lakevault_common::wire::{CopyBatch, CopyItem, MessageKind};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Copy Blob From URL accepts sources up to 256 MiB.
pub const SYNC_COPY_MAX: u64 = 256 * 1024 * 1024;
/// Put Blob From URL accepts sources up to 5,000 MiB.
pub const PUT_FROM_URL_MAX: u64 = 5000 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Largest source copied with one synchronous Copy Blob From URL.
    pub sync_copy_max: u64,
    /// Largest source copied with one Put Blob From URL (above `sync_copy_max`), where the
    /// service has it; 0: never.
    pub put_from_url_max: u64,
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
            put_from_url_max: PUT_FROM_URL_MAX,
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

/// Where this worker's configuration lets each kind of work write. A queue message names
/// accounts by alias, and anyone who can write to the queue can write a message: the
/// message is checked against this, never trusted.
#[derive(Debug, Clone)]
pub struct WritePolicy {
    /// Backups read from this account...
    pub backup_source: String,
    /// ...and write only into this one (tombstones too).
    pub backup_destination: String,
    /// Restores read from the backup destination and write only into these.
    pub restore_targets: Vec<String>,
    /// Restores may replace existing blobs.
    pub restore_overwrite: bool,
}

impl WritePolicy {
    /// From the configuration file the worker runs with.
    pub fn from_config(config: &lakevault_common::config::Config) -> Self {
        Self {
            backup_source: config.backup.source.clone(),
            backup_destination: config.backup.destination.clone(),
            restore_targets: config.restore_targets(),
            restore_overwrite: config.restore.allow_overwrite,
        }
    }

    /// Why `batch` may not run here, if it may not.
    pub fn refuses(&self, batch: &CopyBatch) -> Option<String> {
        let (from, to) = (&batch.source.account, &batch.destination.account);
        match batch.kind {
            MessageKind::Restore => {
                if *from != self.backup_destination {
                    Some(format!(
                        "a restore must read from the backup account `{}`, not `{from}`",
                        self.backup_destination
                    ))
                } else if !self.restore_targets.contains(to) {
                    Some(format!(
                        "restores may write only to {:?} (restore.targets), not to `{to}`",
                        self.restore_targets
                    ))
                } else if batch.overwrite && !self.restore_overwrite {
                    Some(
                        "this restore would replace existing blobs, which restore.allow_overwrite does not allow"
                            .into(),
                    )
                } else {
                    None
                }
            }
            _ if *from != self.backup_source || *to != self.backup_destination => Some(format!(
                "backups go from `{}` to `{}` only; this message says `{from}` to `{to}`",
                self.backup_source, self.backup_destination
            )),
            _ => None,
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

/// lakevault's own reasons for failing an item (beside the service's error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source's user tags leave no room for lakevault's record tag.
    NoRoomForRecord,
    /// Only block blobs are copied.
    NotABlockBlob,
    /// Larger than a block blob can hold.
    TooLarge,
    /// The item names an account this worker does not have.
    UnknownAccount,
    /// The backup version to restore changed since the restore was planned.
    RestoreSourceChanged,
    /// The source kept changing while being copied.
    SourceKeptChanging,
    /// A source snapshot and the version the backup holds were written in the same second,
    /// and the source holds a third: which of the two is newer is not known yet.
    VersionOrderUnclear,
    /// The message asks for a write this worker's configuration does not allow.
    NotAllowedHere,
    /// No request was sent: the account's credential cannot be used (an expired SAS, a
    /// token the identity service would not issue).
    CredentialUnusable,
    /// Restored with its ACL, but the target refused the recorded owner or group.
    OwnerNotRestored,
}

impl Refusal {
    /// The code written to poison records and failure metrics.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::NoRoomForRecord => "NoRoomForRecordTag",
            Refusal::NotABlockBlob => "NotABlockBlob",
            Refusal::TooLarge => "TooLargeForBlockBlob",
            Refusal::UnknownAccount => "UnknownAccount",
            Refusal::RestoreSourceChanged => "RestoreSourceChanged",
            Refusal::SourceKeptChanging => "SourceKeptChanging",
            Refusal::CredentialUnusable => "CredentialUnusable",
            Refusal::NotAllowedHere => "NotAllowedHere",
            Refusal::VersionOrderUnclear => "VersionOrderUnclear",
            Refusal::OwnerNotRestored => "OwnerNotRestored",
        }
    }
}

/// Who said why an item failed: the storage service (its error code), or lakevault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureCode {
    Service(StorageErrorCode),
    Refusal(Refusal),
}

impl FailureCode {
    /// The code as text, for logs and poison records.
    pub fn as_str(&self) -> &str {
        match self {
            FailureCode::Service(code) => code.as_ref(),
            FailureCode::Refusal(refusal) => refusal.code(),
        }
    }
}

/// A failed item, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ItemFailure {
    pub class: FailureClass,
    pub reason: String,
    /// Why, when the service gave an error code or lakevault refused the item.
    pub code: Option<FailureCode>,
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

    /// lakevault refuses the item (permanent).
    pub fn refused(refusal: Refusal, reason: impl Into<String>) -> Self {
        Self {
            code: Some(FailureCode::Refusal(refusal)),
            ..Self::permanent(reason)
        }
    }

    pub fn from_sdk(context: &str, err: &azure_core::Error) -> Self {
        Self {
            class: classify(err),
            reason: format!("{context}: {}", describe(err)),
            code: lakevault_common::error::error_code(err)
                .map(|c| FailureCode::Service(c.parse().unwrap_or_else(|e| match e {}))),
        }
    }

    /// A failed storage request, classified by the side its account played.
    pub fn from_store(context: &str, side: Side, err: &StoreError) -> Self {
        let code = match err.transport {
            Transport::Credential => Some(FailureCode::Refusal(Refusal::CredentialUnusable)),
            _ => err.code.clone().map(FailureCode::Service),
        };
        Self {
            class: err.class(side),
            reason: format!("{context}: {}", err.message),
            code,
        }
    }

    /// A credential failure that concerns the whole account, not one blob: the credential
    /// could not be used at all, or the service rejected the signature or token itself
    /// (a rotated key, an expired SAS, a revoked token). Unlike a 403 on one blob (an ACL,
    /// a per-blob policy), it fails every item that comes after it.
    pub fn is_account_credential_failure(&self) -> bool {
        self.class == FailureClass::Auth
            && matches!(
                &self.code,
                Some(FailureCode::Refusal(Refusal::CredentialUnusable))
                    | Some(FailureCode::Service(
                        StorageErrorCode::AuthenticationFailed
                            | StorageErrorCode::InvalidAuthenticationInfo
                            | StorageErrorCode::NoAuthenticationInformation
                    ))
            )
    }

    /// Whether lakevault refused the item for this reason.
    pub fn is(&self, refusal: Refusal) -> bool {
        self.code == Some(FailureCode::Refusal(refusal))
    }

    /// Whether the service failed the request with this error code.
    pub fn has_service_code(&self, code: StorageErrorCode) -> bool {
        self.code == Some(FailureCode::Service(code))
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

/// Copies blobs between configured accounts. Accounts are resolved by the aliases a batch
/// names, among the worker's own.
#[derive(Debug)]
pub struct CopyEngine {
    stores: HashMap<String, Arc<dyn BlobStore>>,
    options: CopyOptions,
    /// `None`: any batch naming known accounts runs (tests of the engine's decisions).
    policy: Option<WritePolicy>,
    /// Stamps records: the backup time of a copy, the deletion time of a tombstone.
    clock: Arc<dyn Clock>,
    /// Accounts that answered Put Blob From URL `501 Not Implemented`: asked once.
    without_put_from_url: std::sync::Mutex<std::collections::HashSet<String>>,
}

#[async_trait::async_trait]
impl Copier for CopyEngine {
    async fn copy_item(
        &self,
        batch: &CopyBatch,
        item: &CopyItem,
    ) -> Result<ItemOutcome, ItemFailure> {
        if let Some(policy) = &self.policy
            && let Some(reason) = policy.refuses(batch)
        {
            return Err(ItemFailure::refused(Refusal::NotAllowedHere, reason));
        }
        match batch.kind {
            MessageKind::Tombstone => {
                let backup = self.store(&batch.destination.account)?;
                tombstone::tombstone(backup, &batch.destination.container, item, self.clock.now())
                    .await
            }
            MessageKind::Restore => self.restore_item(batch, item).await,
            _ => self.backup_item(batch, item).await,
        }
    }
}

impl CopyEngine {
    /// An engine on the Azure SDK, one store per configured account, writing only where
    /// `policy` allows.
    pub fn new(accounts: Vec<StorageAccount>, options: CopyOptions, policy: WritePolicy) -> Self {
        Self::with_stores(
            accounts
                .into_iter()
                .map(|a| Arc::new(AzureStore::new(a)) as Arc<dyn BlobStore>)
                .collect(),
            options,
        )
        .with_policy(policy)
    }

    /// Restricts where batches may write.
    pub fn with_policy(mut self, policy: WritePolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// An engine on any stores (the in-memory one in unit tests).
    pub fn with_stores(stores: Vec<Arc<dyn BlobStore>>, options: CopyOptions) -> Self {
        let stores = stores
            .into_iter()
            .map(|s| (s.alias().to_string(), s))
            .collect();
        Self {
            stores,
            options,
            policy: None,
            clock: Arc::new(SystemClock),
            without_put_from_url: Default::default(),
        }
    }

    /// The engine with its records stamped by `clock` (tests on the in-memory service's
    /// clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn store(&self, alias: &str) -> Result<&dyn BlobStore, ItemFailure> {
        self.stores
            .get(alias)
            .map(|s| s.as_ref())
            .ok_or_else(|| unknown_account(alias))
    }

    /// The store, for a task that outlives the borrow (the lease renewer).
    fn shared_store(&self, alias: &str) -> Result<Arc<dyn BlobStore>, ItemFailure> {
        self.stores
            .get(alias)
            .cloned()
            .ok_or_else(|| unknown_account(alias))
    }
}

fn unknown_account(alias: &str) -> ItemFailure {
    ItemFailure::refused(
        Refusal::UnknownAccount,
        format!("account alias `{alias}` is not defined in this worker's config"),
    )
}

#[cfg(test)]
mod histories;
#[cfg(test)]
mod tests;
