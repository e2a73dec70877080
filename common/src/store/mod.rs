//! The storage seam: what lakevault asks of a blob service, as one narrow trait.
//!
//! The copy engine's decisions (already current, keep history, source changed, source
//! gone, tombstone) are written against [`BlobStore`], so they run the same way against
//! Azure or the emulator ([`azure::AzureStore`]) and against an in-memory service
//! ([`memory::MemoryStore`]) that honours ETags, conditions, snapshots, tags and leases,
//! and can pause or fail any operation at a point a test chooses. One conformance suite
//! (`tests/src/conformance.rs`) runs the same cases against both, so they cannot drift.
//!
//! Errors are typed at this boundary ([`StoreError`]): HTTP status, the service's
//! `StorageErrorCode`, and which account answered, so a caller can tell a 404 of the
//! backup from a 404 of the source.

pub mod azure;
#[cfg(any(test, feature = "testkit"))]
pub mod memory;

use crate::error::FailureClass;
use crate::storage::CopySource;
pub use azure_storage_blob::models::{AccessTier, StorageErrorCode};
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use std::time::Duration;

/// One blob, or one snapshot of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRef<'a> {
    pub container: &'a str,
    pub name: &'a str,
    /// A snapshot's timestamp id; `None`: the base blob.
    pub snapshot: Option<&'a str>,
}

impl<'a> BlobRef<'a> {
    pub fn new(container: &'a str, name: &'a str) -> Self {
        Self {
            container,
            name,
            snapshot: None,
        }
    }

    pub fn at_snapshot(self, snapshot: Option<&'a str>) -> Self {
        Self { snapshot, ..self }
    }
}

/// A precondition on the blob a request writes (or on the version a request reads).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Condition {
    #[default]
    None,
    /// `If-Match`: the blob exists with exactly this ETag.
    IfMatch(String),
    /// `If-None-Match: *`: the blob does not exist.
    IfAbsent,
}

/// Content headers a blob carries, copied onto a backup written from blocks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContentHeaders {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    pub content_md5: Option<Vec<u8>>,
}

/// What Get Blob Properties tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobProperties {
    /// Without quotes.
    pub etag: String,
    pub size: u64,
    /// RFC 3339.
    pub last_modified: String,
    /// `BlockBlob`, `PageBlob`, `AppendBlob`.
    pub blob_type: String,
    pub headers: ContentHeaders,
    pub metadata: BTreeMap<String, String>,
}

impl BlobProperties {
    pub fn is_block_blob(&self) -> bool {
        self.blob_type == "BlockBlob"
    }
}

/// A snapshot just taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTaken {
    pub snapshot: String,
    pub etag: String,
    pub last_modified: String,
}

/// Copy Blob From URL, synchronous (`x-ms-requires-sync: true`).
#[derive(Debug, Clone)]
pub struct CopyFromUrl<'a> {
    pub source: &'a CopySource,
    /// `x-ms-source-if-match`: the source version that may be read.
    pub source_if_match: Option<&'a str>,
    /// On the destination blob.
    pub condition: Condition,
    /// The complete tag set of the new blob (`None`: no tags).
    pub tags: Option<&'a BTreeMap<String, String>>,
    pub tier: Option<AccessTier>,
}

/// Put Blob From URL: a whole block blob written from a source URL in one request (up
/// to 5,000 MiB; <https://learn.microsoft.com/rest/api/storageservices/put-blob-from-url>).
/// Unlike Copy Blob From URL it does not carry the source's metadata, so the content
/// headers and metadata are given, read from the source version being copied.
#[derive(Debug, Clone)]
pub struct PutFromUrl<'a> {
    pub source: &'a CopySource,
    /// `x-ms-source-if-match`: the source version that may be read.
    pub source_if_match: Option<&'a str>,
    pub headers: ContentHeaders,
    pub metadata: BTreeMap<String, String>,
    /// The complete tag set of the new blob (`None`: no tags).
    pub tags: Option<&'a BTreeMap<String, String>>,
    pub tier: Option<AccessTier>,
    /// On the destination blob.
    pub condition: Condition,
}

/// What Set Access Control writes on a path.
#[derive(Debug, Clone, Copy)]
pub struct AccessControl<'a> {
    /// `None`: left as it is (setting an owner takes super-user rights).
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
    pub acl: &'a str,
}

/// Put Block List.
#[derive(Debug, Clone, Default)]
pub struct Commit<'a> {
    pub headers: ContentHeaders,
    pub metadata: BTreeMap<String, String>,
    pub tags: Option<&'a BTreeMap<String, String>>,
    pub tier: Option<AccessTier>,
    pub condition: Condition,
}

/// A blob as a flat listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub snapshot: Option<String>,
    pub etag: String,
    pub size: u64,
    pub last_modified: String,
    pub tags: BTreeMap<String, String>,
    pub content_md5: Option<Vec<u8>>,
}

/// What a listing returns besides names.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub prefix: Option<String>,
    pub tags: bool,
    /// Snapshots too, under their blob's name, oldest first (where the base blob stands
    /// among them is not fixed).
    pub snapshots: bool,
    /// Entries per page (`None`: the service's maximum, 5,000).
    pub page_size: Option<u32>,
}

/// Which side of a backup an account plays in a request. A 404 means "the source is
/// gone" only when the source answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Backup,
    /// The ledger's state container.
    State,
}

/// How a request failed before an answer came (or how the answer was unusable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// An HTTP answer with an error status.
    Answered,
    /// No answer: connection refused, reset, timed out.
    Connection,
    /// A credential could not be obtained (expired SAS, token endpoint down).
    Credential,
    /// The request could not be built or the answer not read.
    Other,
}

/// A failed storage request, typed at the boundary.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// The account alias the request went to.
    pub account: String,
    pub transport: Transport,
    pub status: Option<u16>,
    pub code: Option<StorageErrorCode>,
    /// One line, secrets redacted.
    pub message: String,
}

impl StoreError {
    /// An answer with an error status, as the service (or the in-memory store) gives it.
    pub fn answered(account: &str, status: u16, code: StorageErrorCode, message: &str) -> Self {
        Self {
            account: account.to_string(),
            transport: Transport::Answered,
            status: Some(status),
            message: format!("HTTP {status} {code}: {message}"),
            code: Some(code),
        }
    }

    pub fn other(account: &str, message: impl Into<String>) -> Self {
        Self {
            account: account.to_string(),
            transport: Transport::Other,
            status: None,
            code: None,
            message: message.into(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    /// 412: a condition on the blob (or on the copy source) did not hold.
    pub fn is_condition_not_met(&self) -> bool {
        self.status == Some(412)
    }

    pub fn is_conflict(&self) -> bool {
        self.status == Some(409)
    }

    pub fn has_code(&self, code: StorageErrorCode) -> bool {
        self.code.as_ref() == Some(&code)
    }

    /// The service's error code as text (for poison records and metrics).
    pub fn code_str(&self) -> Option<&str> {
        self.code.as_ref().map(AsRef::as_ref)
    }

    /// What to do about the failure, knowing which side `self.account` played. Only the
    /// source can be "missing": a 404 of the backup or of the ledger is a failure like any
    /// other (a container removed under lakevault's feet).
    pub fn class(&self, side: Side) -> FailureClass {
        match self.transport {
            Transport::Connection => return FailureClass::Unavailable,
            Transport::Credential => return FailureClass::Auth,
            Transport::Other => return FailureClass::Permanent,
            Transport::Answered => {}
        }
        let status = self.status.unwrap_or(0);
        let class = crate::error::classify_status(status, self.code_str());
        match class {
            FailureClass::SourceMissing if side != Side::Source => {
                // CannotVerifyCopySource is about the copy's source whoever answered.
                if self.has_code(StorageErrorCode::CannotVerifyCopySource) {
                    class
                } else {
                    FailureClass::Permanent
                }
            }
            _ => class,
        }
    }
}

/// What lakevault asks of a blob service. One value per account; aliases name accounts in
/// errors. Every write that can replace something takes a [`Condition`].
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// The account's alias in the config.
    fn alias(&self) -> &str;

    /// Creates a container unless it exists.
    async fn create_container(&self, container: &str) -> Result<(), StoreError>;

    /// Get Blob Properties (of the base blob or a snapshot).
    async fn properties(&self, blob: BlobRef<'_>) -> Result<BlobProperties, StoreError>;

    /// Get Blob Tags (the whole set).
    async fn tags(&self, blob: BlobRef<'_>) -> Result<BTreeMap<String, String>, StoreError>;

    /// Set Blob Tags: replaces the whole set. The ETag does not change.
    async fn set_tags(
        &self,
        blob: BlobRef<'_>,
        tags: &BTreeMap<String, String>,
        condition: Condition,
    ) -> Result<(), StoreError>;

    /// Snapshot Blob, of the base blob as it is when `condition` holds (412
    /// `ConditionNotMet` otherwise). The snapshot has the base blob's ETag.
    async fn snapshot(
        &self,
        blob: BlobRef<'_>,
        condition: Condition,
    ) -> Result<SnapshotTaken, StoreError>;

    /// Delete Blob (a snapshot when `blob.snapshot` is set). A base blob with snapshots
    /// is refused (409 `SnapshotsPresent`) unless `with_snapshots`.
    async fn delete(
        &self,
        blob: BlobRef<'_>,
        condition: Condition,
        with_snapshots: bool,
    ) -> Result<(), StoreError>;

    /// The URL (and authorization) another account's service reads this blob through.
    async fn copy_source(
        &self,
        blob: BlobRef<'_>,
        valid_for: Duration,
    ) -> Result<CopySource, StoreError>;

    /// Copy Blob From URL into `blob`, synchronously.
    async fn copy_from_url(
        &self,
        blob: BlobRef<'_>,
        request: CopyFromUrl<'_>,
    ) -> Result<(), StoreError>;

    /// Put Blob From URL into `blob`. A service without it answers 501 (the emulator).
    async fn put_from_url(
        &self,
        blob: BlobRef<'_>,
        request: PutFromUrl<'_>,
    ) -> Result<(), StoreError>;

    /// Put Block From URL: stages `length` bytes of the source at `offset`.
    async fn stage_block_from_url(
        &self,
        blob: BlobRef<'_>,
        block_id: &[u8],
        source: &CopySource,
        source_if_match: Option<&str>,
        offset: u64,
        length: u64,
    ) -> Result<(), StoreError>;

    /// Put Block.
    async fn stage_block(
        &self,
        blob: BlobRef<'_>,
        block_id: &[u8],
        bytes: Vec<u8>,
    ) -> Result<(), StoreError>;

    /// Put Block List: the blob becomes the named staged blocks, in order.
    async fn commit_blocks(
        &self,
        blob: BlobRef<'_>,
        block_ids: &[Vec<u8>],
        commit: Commit<'_>,
    ) -> Result<(), StoreError>;

    /// Get Blob for one range, conditional on `if_match`.
    async fn read_range(
        &self,
        blob: BlobRef<'_>,
        offset: u64,
        length: u64,
        if_match: Option<&str>,
    ) -> Result<Vec<u8>, StoreError>;

    /// Acquire Lease for `duration` (15–60 s); returns the lease id.
    async fn acquire_lease(
        &self,
        blob: BlobRef<'_>,
        duration: Duration,
        proposed_id: &str,
    ) -> Result<String, StoreError>;

    async fn renew_lease(&self, blob: BlobRef<'_>, lease_id: &str) -> Result<(), StoreError>;

    async fn release_lease(&self, blob: BlobRef<'_>, lease_id: &str) -> Result<(), StoreError>;

    /// Put Blob (small state documents): writes `bytes` under `condition`, returns the
    /// new ETag.
    async fn put(
        &self,
        blob: BlobRef<'_>,
        bytes: Vec<u8>,
        condition: Condition,
    ) -> Result<String, StoreError>;

    /// Get Blob, whole: the bytes and the ETag they belong to.
    async fn get(&self, blob: BlobRef<'_>) -> Result<(Vec<u8>, String), StoreError>;

    /// Path - Create of a directory on the dfs endpoint (accounts with a hierarchical
    /// namespace), with its missing parents. `IfAbsent`: 409 `PathAlreadyExists` when the
    /// path exists.
    /// <https://learn.microsoft.com/rest/api/storageservices/datalakestoragegen2/path/create>
    async fn create_directory(
        &self,
        blob: BlobRef<'_>,
        condition: Condition,
    ) -> Result<(), StoreError>;

    /// Path - Update `action=setAccessControl` on the dfs endpoint: the owner and group
    /// (when given) and the ACL, which carries the permission bits (`x-ms-permissions` may
    /// not be sent with it).
    /// <https://learn.microsoft.com/rest/api/storageservices/datalakestoragegen2/path/update>
    async fn set_access_control(
        &self,
        blob: BlobRef<'_>,
        access: &AccessControl<'_>,
    ) -> Result<(), StoreError>;

    /// A flat listing of a container, in the service's order, page by page.
    fn list<'a>(
        &'a self,
        container: &'a str,
        options: ListOptions,
    ) -> BoxStream<'a, Result<Listed, StoreError>>;
}
