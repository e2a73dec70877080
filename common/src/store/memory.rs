//! An in-memory Blob service behind [`BlobStore`], for tests that need to schedule
//! requests in a chosen order or fail a chosen one, which the emulator cannot do.
//!
//! It behaves as the REST reference says the service behaves, for the operations
//! lakevault uses (the conformance suite in `tests/src/conformance.rs` runs the same cases
//! here and against the emulator):
//!
//! - ETags change on every write of content or properties, not on Set Blob Tags
//!   (<https://learn.microsoft.com/rest/api/storageservices/set-blob-tags>).
//! - `If-Match` on a write to a missing blob, or with another ETag: 412 `ConditionNotMet`;
//!   `If-None-Match: *` on an existing blob: 409 `BlobAlreadyExists`
//!   (<https://learn.microsoft.com/rest/api/storageservices/specifying-conditional-headers-for-blob-service-operations>).
//! - Copy Blob From URL and Put Block From URL read the source at the `x-ms-source-if-match`
//!   version or fail with 412 `SourceConditionNotMet`; an unreadable source is 404
//!   `CannotVerifyCopySource`; the copy carries content, content headers and metadata, and
//!   only the tags given in `x-ms-tags`
//!   (<https://learn.microsoft.com/rest/api/storageservices/copy-blob-from-url>).
//! - Snapshots are read-only copies of the blob, its properties, metadata and tags, with
//!   the blob's ETag; deleting a blob that has snapshots needs `x-ms-delete-snapshots`,
//!   else 409 `SnapshotsPresent` (<https://learn.microsoft.com/rest/api/storageservices/delete-blob>).
//! - A leased blob refuses writes and deletes without the lease id (412 `LeaseIdMissing`);
//!   a second lease is 409 `LeaseAlreadyPresent`; leases expire after their duration, on
//!   tokio's clock, so paused-time tests can expire them
//!   (<https://learn.microsoft.com/rest/api/storageservices/lease-blob>).
//! - Listings are in UTF-16 code unit order; with snapshots, each name's base blob comes
//!   first, then its snapshots oldest first (as the emulator lists them; the reference
//!   does not fix where the base blob stands, so lakevault does not rely on it)
//!   (<https://learn.microsoft.com/rest/api/storageservices/list-blobs>).
//!
//! Not modelled: page and append blobs, access tiers' effects, versioning, soft delete,
//! hierarchical namespaces, request size limits.
//!
//! Every operation first consults the world's [`Fault`]s: a test can fail the n-th call of
//! an operation on a chosen blob (before or after it takes effect), or pause it at a
//! [`Gate`] until the test lets it through.

use super::{
    AccessControl, BlobProperties, BlobRef, BlobStore, Commit, Condition, ContentHeaders,
    CopyFromUrl, ListOptions, Listed, PutFromUrl, SnapshotTaken, StorageErrorCode as Code,
    StoreError, Transport,
};
use crate::record::rfc3339;
use crate::storage::CopySource;
use futures::StreamExt;
use futures::stream::BoxStream;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The operations of [`BlobStore`], to aim faults at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Properties,
    Tags,
    SetTags,
    Snapshot,
    Delete,
    CopySource,
    CopyFromUrl,
    PutFromUrl,
    StageBlockFromUrl,
    StageBlock,
    CommitBlocks,
    ReadRange,
    AcquireLease,
    RenewLease,
    ReleaseLease,
    Put,
    Get,
    List,
    CreateDirectory,
    SetAccessControl,
}

/// Where an operation waits until the test lets it through.
#[derive(Debug)]
pub struct Gate {
    arrived: tokio::sync::Semaphore,
    passes: tokio::sync::Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            arrived: tokio::sync::Semaphore::new(0),
            passes: tokio::sync::Semaphore::new(0),
        }
    }
}

impl Gate {
    /// Waits until an operation has arrived at the gate.
    pub async fn arrived(&self) {
        if let Ok(permit) = self.arrived.acquire().await {
            permit.forget();
        }
    }

    /// Lets one waiting (or future) operation through.
    pub fn release(&self) {
        self.passes.add_permits(1);
    }

    async fn wait(&self) {
        self.arrived.add_permits(1);
        if let Ok(permit) = self.passes.acquire().await {
            permit.forget();
        }
    }
}

/// What a fault does to a matching call.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer with this status and code; the operation does not take effect.
    Fail(u16, Code),
    /// The operation takes effect, then the caller sees this status and code (a response
    /// lost on the way back).
    FailAfter(u16, Code),
    /// No answer: a connection error; the operation does not take effect.
    Disconnect,
    /// Wait at the gate, then carry on.
    Pause(Arc<Gate>),
}

/// A fault aimed at calls of one operation (optionally on one account and one blob name):
/// the calls after the first `skip` matches, `times` of them (`None`: all).
#[derive(Debug, Clone)]
pub struct Fault {
    pub op: Op,
    pub account: Option<String>,
    pub name: Option<String>,
    pub skip: usize,
    pub times: Option<usize>,
    pub action: Action,
    matched: usize,
    fired: usize,
}

impl Fault {
    pub fn on(op: Op, action: Action) -> Self {
        Self {
            op,
            account: None,
            name: None,
            skip: 0,
            times: Some(1),
            action,
            matched: 0,
            fired: 0,
        }
    }

    pub fn account(mut self, alias: &str) -> Self {
        self.account = Some(alias.to_string());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    pub fn skip(mut self, n: usize) -> Self {
        self.skip = n;
        self
    }

    pub fn times(mut self, n: Option<usize>) -> Self {
        self.times = n;
        self
    }
}

#[derive(Debug, Clone)]
struct Version {
    content: Arc<Vec<u8>>,
    etag: String,
    last_modified: time::OffsetDateTime,
    headers: ContentHeaders,
    metadata: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Lease {
    id: String,
    until: tokio::time::Instant,
    /// A renewal restarts the lease for the duration it was acquired with.
    duration: Duration,
}

#[derive(Debug, Clone, Default)]
struct Blob {
    current: Option<Version>,
    /// Oldest first.
    snapshots: Vec<(String, Version)>,
    lease: Option<Lease>,
    staged: HashMap<Vec<u8>, Vec<u8>>,
    /// Owner, group and ACL set on the dfs endpoint (a hierarchical namespace's path).
    access: Option<(Option<String>, Option<String>, String)>,
}

impl Blob {
    fn leased(&self) -> Option<&Lease> {
        self.lease
            .as_ref()
            .filter(|l| l.until > tokio::time::Instant::now())
    }
}

type Containers = BTreeMap<String, BTreeMap<Vec<u16>, (String, Blob)>>;

#[derive(Debug, Default)]
struct State {
    /// Account alias → container → UTF-16 name → (name, blob).
    accounts: HashMap<String, Containers>,
    faults: Vec<Fault>,
    calls: HashMap<(String, Op), usize>,
    etags: u64,
    last_snapshot: Option<time::OffsetDateTime>,
    /// Added to the wall clock: lets a test move the service's time forward.
    clock_offset: time::Duration,
    /// How a copy whose source is missing is answered: Azure's `404
    /// CannotVerifyCopySource`, or (`true`) Azurite's `404 BlobNotFound`, which it gives
    /// for a source deleted between its check of the source and the copy.
    missing_source_as_blob_not_found: bool,
}

/// Every account of one in-memory service; copies between its accounts resolve here.
#[derive(Debug, Clone, Default)]
pub struct World {
    state: Arc<Mutex<State>>,
}

const SCHEME: &str = "memory://";

impl World {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers a copy from a missing source as Azurite can, `404 BlobNotFound` (from the
    /// account written to), instead of `404 CannotVerifyCopySource`.
    pub fn answer_missing_copy_sources_like_azurite(&self) {
        self.lock().missing_source_as_blob_not_found = true;
    }

    /// A store for the account `alias` (created empty the first time).
    pub fn account(&self, alias: &str) -> MemoryStore {
        self.lock().accounts.entry(alias.to_string()).or_default();
        MemoryStore {
            alias: alias.to_string(),
            world: self.clone(),
        }
    }

    /// Adds a fault; the first matching fault of a call acts.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Pauses the next call matching `fault`'s aim at a gate the test controls.
    pub fn pause(&self, op: Op, aim: impl FnOnce(Fault) -> Fault) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        self.inject(aim(Fault::on(op, Action::Pause(gate.clone()))));
        gate
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Calls of `op` made on account `alias` so far (faulted ones included).
    pub fn calls(&self, alias: &str, op: Op) -> usize {
        self.lock()
            .calls
            .get(&(alias.to_string(), op))
            .copied()
            .unwrap_or(0)
    }

    /// Moves the service's clock forward (Last-Modified of later writes, snapshot times).
    pub fn advance_clock(&self, by: std::time::Duration) {
        let mut s = self.lock();
        s.clock_offset += time::Duration::try_from(by).unwrap_or(time::Duration::ZERO);
    }

    /// Storage requests made on account `alias` so far, of any operation. Signing a copy
    /// source URL is local work (a SAS, or a token the identity service issues), not a
    /// request to the account.
    pub fn requests(&self, alias: &str) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|((a, op), _)| a == alias && *op != Op::CopySource)
            .map(|(_, n)| n)
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The service's clock, moved by [`World::advance_clock`]: a copy engine or purge on it
/// stamps records on the same timeline as the service's snapshots and Last-Modified.
impl crate::clock::Clock for World {
    fn now(&self) -> time::OffsetDateTime {
        self.lock().now()
    }
}

/// One account of a [`World`].
#[derive(Debug, Clone)]
pub struct MemoryStore {
    alias: String,
    world: World,
}

fn key(name: &str) -> Vec<u16> {
    name.encode_utf16().collect()
}

impl State {
    fn next_etag(&mut self) -> String {
        self.etags += 1;
        format!("0x8DE{:012X}", self.etags)
    }

    fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + self.clock_offset
    }

    fn next_snapshot_time(&mut self) -> time::OffsetDateTime {
        let mut t = self.now();
        if let Some(last) = self.last_snapshot
            && t <= last
        {
            t = last + time::Duration::nanoseconds(100);
        }
        self.last_snapshot = Some(t);
        t
    }

    fn container(
        &mut self,
        alias: &str,
        container: &str,
    ) -> Result<&mut BTreeMap<Vec<u16>, (String, Blob)>, StoreError> {
        self.accounts
            .get_mut(alias)
            .and_then(|a| a.get_mut(container))
            .ok_or_else(|| {
                StoreError::answered(
                    alias,
                    404,
                    Code::ContainerNotFound,
                    "The specified container does not exist.",
                )
            })
    }

    /// The blob a reference names, for a change; 404 unless it (or the snapshot) exists.
    fn existing(&mut self, alias: &str, blob: BlobRef<'_>) -> Result<&mut Blob, StoreError> {
        self.version(alias, blob)?;
        let blobs = self.container(alias, blob.container)?;
        Ok(&mut blobs
            .get_mut(&key(blob.name))
            .expect("the version was found")
            .1)
    }

    /// The version a reference names: the base blob's current one or a snapshot.
    fn version(&mut self, alias: &str, blob: BlobRef<'_>) -> Result<Version, StoreError> {
        let not_found = || {
            StoreError::answered(
                alias,
                404,
                Code::BlobNotFound,
                "The specified blob does not exist.",
            )
        };
        let entry = self
            .container(alias, blob.container)?
            .get(&key(blob.name))
            .ok_or_else(not_found)?;
        let b = &entry.1;
        match blob.snapshot {
            None => b.current.clone().ok_or_else(not_found),
            Some(s) => b
                .snapshots
                .iter()
                .find(|(id, _)| id == s)
                .map(|(_, v)| v.clone())
                .ok_or_else(not_found),
        }
    }
}

/// Last-Modified as the service gives it: an HTTP date, whole seconds (in headers and in
/// listings alike).
fn http_time(t: time::OffsetDateTime) -> String {
    rfc3339(t.replace_nanosecond(0).unwrap_or(t))
}

/// Whether a write may proceed on the blob as it is.
fn check_write(alias: &str, blob: Option<&Blob>, condition: &Condition) -> Result<(), StoreError> {
    let current = blob.and_then(|b| b.current.as_ref());
    match (condition, current) {
        (Condition::IfMatch(e), Some(v)) if *e == v.etag => {}
        (Condition::IfMatch(_), _) => {
            return Err(StoreError::answered(
                alias,
                412,
                Code::ConditionNotMet,
                "The condition specified using HTTP conditional header(s) is not met.",
            ));
        }
        (Condition::IfAbsent, Some(_)) => {
            return Err(StoreError::answered(
                alias,
                409,
                Code::BlobAlreadyExists,
                "The specified blob already exists.",
            ));
        }
        _ => {}
    }
    if blob.is_some_and(|b| b.leased().is_some()) {
        return Err(StoreError::answered(
            alias,
            412,
            Code::LeaseIdMissing,
            "There is currently a lease on the blob and no lease ID was specified in the request.",
        ));
    }
    Ok(())
}

impl MemoryStore {
    pub fn world(&self) -> &World {
        &self.world
    }

    /// Creates a container (no error if it exists).
    pub fn create_container(&self, container: &str) {
        self.world
            .lock()
            .accounts
            .entry(self.alias.clone())
            .or_default()
            .entry(container.to_string())
            .or_default();
    }

    /// Writes a blob as a client outside lakevault would (no conditions): its new ETag.
    pub fn write(
        &self,
        container: &str,
        name: &str,
        content: &[u8],
        metadata: &[(&str, &str)],
    ) -> String {
        self.write_with_headers(
            container,
            name,
            content,
            metadata,
            ContentHeaders::default(),
        )
    }

    /// [`MemoryStore::write`] with content headers (a Content-MD5, as Put Blob stores one).
    pub fn write_with_headers(
        &self,
        container: &str,
        name: &str,
        content: &[u8],
        metadata: &[(&str, &str)],
        headers: ContentHeaders,
    ) -> String {
        self.create_container(container);
        let mut state = self.world.lock();
        let etag = state.next_etag();
        let version = Version {
            content: Arc::new(content.to_vec()),
            etag: etag.clone(),
            last_modified: state.now(),
            headers,
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tags: BTreeMap::new(),
        };
        let blobs = state
            .container(&self.alias, container)
            .expect("container just created");
        let entry = blobs
            .entry(key(name))
            .or_insert_with(|| (name.to_string(), Blob::default()));
        entry.1.current = Some(version);
        etag
    }

    /// The content of a blob or snapshot, for assertions.
    pub fn content(&self, blob: BlobRef<'_>) -> Option<Vec<u8>> {
        let mut state = self.world.lock();
        state
            .version(&self.alias, blob)
            .ok()
            .map(|v| v.content.to_vec())
    }

    /// What Set Access Control last wrote on a path: (owner, group, ACL), for assertions.
    pub fn access_of(
        &self,
        container: &str,
        name: &str,
    ) -> Option<(Option<String>, Option<String>, String)> {
        let mut state = self.world.lock();
        state
            .container(&self.alias, container)
            .ok()
            .and_then(|c| c.get(&key(name)))
            .and_then(|(_, b)| b.access.clone())
    }

    /// The snapshot ids of a blob, oldest first.
    pub fn snapshot_ids(&self, container: &str, name: &str) -> Vec<String> {
        let mut state = self.world.lock();
        state
            .container(&self.alias, container)
            .ok()
            .and_then(|c| c.get(&key(name)))
            .map(|(_, b)| b.snapshots.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default()
    }

    /// Consults the faults for a call; `Ok(Some(..))`: fail after the operation.
    async fn enter(&self, op: Op, name: Option<&str>) -> Result<Option<StoreError>, StoreError> {
        let action = {
            let mut state = self.world.lock();
            *state.calls.entry((self.alias.clone(), op)).or_default() += 1;
            let mut chosen = None;
            for fault in state.faults.iter_mut() {
                let aimed = fault.op == op
                    && fault.account.as_deref().is_none_or(|a| a == self.alias)
                    && fault.name.as_deref().is_none_or(|n| Some(n) == name);
                if !aimed {
                    continue;
                }
                fault.matched += 1;
                if fault.matched <= fault.skip || fault.times.is_some_and(|t| fault.fired >= t) {
                    continue;
                }
                fault.fired += 1;
                chosen = Some(fault.action.clone());
                break;
            }
            chosen
        };
        match action {
            None => Ok(None),
            Some(Action::Fail(status, code)) => Err(StoreError::answered(
                &self.alias,
                status,
                code,
                "injected by the in-memory store",
            )),
            Some(Action::FailAfter(status, code)) => Ok(Some(StoreError::answered(
                &self.alias,
                status,
                code,
                "injected by the in-memory store after the operation took effect",
            ))),
            Some(Action::Disconnect) => Err(StoreError {
                account: self.alias.clone(),
                transport: Transport::Connection,
                status: None,
                code: None,
                message: "connection reset (injected by the in-memory store)".into(),
            }),
            Some(Action::Pause(gate)) => {
                gate.wait().await;
                Ok(None)
            }
        }
    }

    /// Runs `op`'s effect after its faults, turning a fail-after fault into the result.
    async fn call<T>(
        &self,
        op: Op,
        name: Option<&str>,
        effect: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let after = self.enter(op, name).await?;
        let result = effect(&mut self.world.lock());
        match (result, after) {
            (Ok(_), Some(lost)) => Err(lost),
            (result, _) => result,
        }
    }

    /// Reads a copy source named by one of this world's `memory://` URLs.
    fn read_source(
        &self,
        state: &mut State,
        source: &CopySource,
        source_if_match: Option<&str>,
    ) -> Result<Version, StoreError> {
        let unreadable = || {
            StoreError::answered(
                &self.alias,
                404,
                Code::CannotVerifyCopySource,
                "The specified blob does not exist.",
            )
        };
        let rest = source.url.strip_prefix(SCHEME).ok_or_else(|| {
            StoreError::answered(
                &self.alias,
                400,
                Code::CannotVerifyCopySource,
                "not a URL of this in-memory service",
            )
        })?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let param = |key: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        };
        let snapshot = param("snapshot");
        let mut parts = path.splitn(3, '/');
        let (Some(account), Some(container), Some(encoded)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(unreadable());
        };
        let name = percent_encoding::percent_decode_str(encoded)
            .decode_utf8()
            .map_err(|_| unreadable())?
            .into_owned();
        let blob = BlobRef::new(container, &name).at_snapshot(snapshot);
        let version = state.version(account, blob).map_err(|_| {
            if state.missing_source_as_blob_not_found {
                StoreError::answered(
                    &self.alias,
                    404,
                    Code::BlobNotFound,
                    "The specified blob does not exist.",
                )
            } else {
                unreadable()
            }
        })?;
        if let Some(expected) = source_if_match
            && expected != version.etag
        {
            return Err(StoreError::answered(
                &self.alias,
                412,
                Code::SourceConditionNotMet,
                "The source condition specified using HTTP conditional header(s) is not met.",
            ));
        }
        Ok(version)
    }

    /// A copy request's source authorization is judged when the request arrives (before
    /// any pause a test holds it at: a request that starts before the SAS expires
    /// completes); an expired one is 403 `CannotVerifyCopySource`.
    /// https://learn.microsoft.com/rest/api/storageservices/copy-blob-from-url
    fn check_source_expiry(&self, source: &CopySource) -> Result<(), StoreError> {
        let expiry = source
            .url
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("se=")))
            .and_then(|v| v.parse::<i64>().ok());
        match expiry {
            Some(se) if self.world.lock().now().unix_timestamp() > se => Err(StoreError::answered(
                &self.alias,
                403,
                Code::CannotVerifyCopySource,
                "Server failed to authenticate the request. Signed expiry time has passed.",
            )),
            _ => Ok(()),
        }
    }

    /// Replaces the base blob's current version (a write of content).
    fn replace(
        &self,
        state: &mut State,
        blob: BlobRef<'_>,
        condition: &Condition,
        make: impl FnOnce(String) -> Version,
    ) -> Result<String, StoreError> {
        let etag = state.next_etag();
        let blobs = state.container(&self.alias, blob.container)?;
        check_write(
            &self.alias,
            blobs.get(&key(blob.name)).map(|(_, b)| b),
            condition,
        )?;
        let entry = blobs
            .entry(key(blob.name))
            .or_insert_with(|| (blob.name.to_string(), Blob::default()));
        entry.1.current = Some(make(etag.clone()));
        entry.1.staged.clear();
        Ok(etag)
    }

    fn base_only(&self, blob: BlobRef<'_>) -> Result<(), StoreError> {
        match blob.snapshot {
            None => Ok(()),
            Some(_) => Err(StoreError::answered(
                &self.alias,
                400,
                Code::InvalidQueryParameterValue,
                "This operation is not permitted on a snapshot.",
            )),
        }
    }
}

/// A blob written whole from a source URL in one request (Copy Blob From URL, Put Blob From
/// URL): what the two have in common.
struct WholeWrite<'a> {
    op: Op,
    source: &'a CopySource,
    source_if_match: Option<&'a str>,
    condition: &'a Condition,
    tags: Option<&'a BTreeMap<String, String>>,
}

impl MemoryStore {
    /// Reads the source version under its condition and writes it to `blob` under the
    /// destination's, with the content headers and metadata `properties` picks.
    async fn write_whole(
        &self,
        blob: BlobRef<'_>,
        write: WholeWrite<'_>,
        properties: impl FnOnce(&Version) -> (ContentHeaders, BTreeMap<String, String>),
    ) -> Result<(), StoreError> {
        self.base_only(blob)?;
        check_tags(&self.alias, write.tags)?;
        let authorised = self.check_source_expiry(write.source);
        self.call(write.op, Some(blob.name), |s| {
            authorised?;
            let source = self.read_source(s, write.source, write.source_if_match)?;
            let (headers, metadata) = properties(&source);
            let tags = write.tags.cloned().unwrap_or_default();
            let now = s.now();
            self.replace(s, blob, write.condition, |etag| Version {
                content: source.content.clone(),
                etag,
                last_modified: now,
                headers,
                metadata,
                tags,
            })
            .map(|_| ())
        })
        .await
    }
}

/// Tag keys (1–128) and values (0–256) of letters, digits, space and `+ - . / : = _`
/// (<https://learn.microsoft.com/rest/api/storageservices/set-blob-tags>), at most 10.
fn check_tags(alias: &str, tags: Option<&BTreeMap<String, String>>) -> Result<(), StoreError> {
    let Some(tags) = tags else { return Ok(()) };
    let allowed = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " +-./:=_".contains(c))
    };
    let valid = tags.len() <= 10
        && tags.iter().all(|(k, v)| {
            (1..=128).contains(&k.len()) && v.len() <= 256 && allowed(k) && allowed(v)
        });
    if valid {
        Ok(())
    } else {
        Err(StoreError::answered(
            alias,
            400,
            Code::UnknownValue("InvalidTag".into()),
            "The tags specified are invalid.",
        ))
    }
}

fn lease_conflict(alias: &str, code: Code, message: &str) -> StoreError {
    StoreError::answered(alias, 409, code, message)
}

#[async_trait::async_trait]
impl BlobStore for MemoryStore {
    fn alias(&self) -> &str {
        &self.alias
    }

    async fn create_container(&self, container: &str) -> Result<(), StoreError> {
        MemoryStore::create_container(self, container);
        Ok(())
    }

    async fn properties(&self, blob: BlobRef<'_>) -> Result<BlobProperties, StoreError> {
        self.call(Op::Properties, Some(blob.name), |s| {
            let v = s.version(&self.alias, blob)?;
            Ok(BlobProperties {
                etag: v.etag,
                size: v.content.len() as u64,
                last_modified: http_time(v.last_modified),
                blob_type: "BlockBlob".into(),
                headers: v.headers,
                metadata: v.metadata,
            })
        })
        .await
    }

    async fn tags(&self, blob: BlobRef<'_>) -> Result<BTreeMap<String, String>, StoreError> {
        self.call(Op::Tags, Some(blob.name), |s| {
            Ok(s.version(&self.alias, blob)?.tags)
        })
        .await
    }

    async fn set_tags(
        &self,
        blob: BlobRef<'_>,
        tags: &BTreeMap<String, String>,
        condition: Condition,
    ) -> Result<(), StoreError> {
        self.base_only(blob)?;
        check_tags(&self.alias, Some(tags))?;
        self.call(Op::SetTags, Some(blob.name), |s| {
            let b = s.existing(&self.alias, blob)?;
            check_write(&self.alias, Some(b), &condition)?;
            if let Some(v) = b.current.as_mut() {
                v.tags = tags.clone();
            }
            Ok(())
        })
        .await
    }

    /// A directory is an empty blob with metadata `hdi_isfolder=true`, as the Blob API
    /// shows one (<https://learn.microsoft.com/azure/storage/blobs/data-lake-storage-namespace>).
    async fn create_directory(
        &self,
        blob: BlobRef<'_>,
        condition: Condition,
    ) -> Result<(), StoreError> {
        self.base_only(blob)?;
        self.call(Op::CreateDirectory, Some(blob.name), |s| {
            let etag = s.next_etag();
            let now = s.now();
            let blobs = s.container(&self.alias, blob.container)?;
            let existing = blobs
                .get(&key(blob.name))
                .and_then(|(_, b)| b.current.as_ref());
            if existing.is_some() && condition == Condition::IfAbsent {
                return Err(StoreError::answered(
                    &self.alias,
                    409,
                    Code::UnknownValue("PathAlreadyExists".into()),
                    "The specified path already exists.",
                ));
            }
            let entry = blobs
                .entry(key(blob.name))
                .or_insert_with(|| (blob.name.to_string(), Blob::default()));
            if entry.1.current.is_none() {
                entry.1.current = Some(Version {
                    content: Arc::new(Vec::new()),
                    etag,
                    last_modified: now,
                    headers: ContentHeaders::default(),
                    metadata: BTreeMap::from([("hdi_isfolder".into(), "true".into())]),
                    tags: BTreeMap::new(),
                });
            }
            Ok(())
        })
        .await
    }

    async fn set_access_control(
        &self,
        blob: BlobRef<'_>,
        access: &AccessControl<'_>,
    ) -> Result<(), StoreError> {
        self.base_only(blob)?;
        self.call(Op::SetAccessControl, Some(blob.name), |s| {
            let blobs = s.container(&self.alias, blob.container)?;
            let Some((_, b)) = blobs
                .get_mut(&key(blob.name))
                .filter(|(_, b)| b.current.is_some())
            else {
                return Err(StoreError::answered(
                    &self.alias,
                    404,
                    Code::UnknownValue("PathNotFound".into()),
                    "The specified path does not exist.",
                ));
            };
            b.access = Some((
                access.owner.map(str::to_string),
                access.group.map(str::to_string),
                access.acl.to_string(),
            ));
            Ok(())
        })
        .await
    }

    async fn snapshot(
        &self,
        blob: BlobRef<'_>,
        condition: Condition,
    ) -> Result<SnapshotTaken, StoreError> {
        self.base_only(blob)?;
        self.call(Op::Snapshot, Some(blob.name), |s| {
            let version = s.version(&self.alias, blob)?;
            // Snapshot Blob takes If-Match / If-None-Match like any write, but no lease:
            // a leased blob can be snapshotted.
            // https://learn.microsoft.com/rest/api/storageservices/snapshot-blob
            let holds = match &condition {
                Condition::None => true,
                Condition::IfMatch(e) => *e == version.etag,
                Condition::IfAbsent => false,
            };
            if !holds {
                return Err(StoreError::answered(
                    &self.alias,
                    412,
                    Code::ConditionNotMet,
                    "The condition specified using HTTP conditional header(s) is not met.",
                ));
            }
            let at = s.next_snapshot_time();
            let id = at
                .format(time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
                ))
                .map_err(|e| StoreError::other(&self.alias, e.to_string()))?;
            let blobs = s.container(&self.alias, blob.container)?;
            let (_, b) = blobs.get_mut(&key(blob.name)).expect("version found");
            b.snapshots.push((id.clone(), version.clone()));
            Ok(SnapshotTaken {
                snapshot: id,
                etag: version.etag,
                last_modified: http_time(version.last_modified),
            })
        })
        .await
    }

    async fn delete(
        &self,
        blob: BlobRef<'_>,
        condition: Condition,
        with_snapshots: bool,
    ) -> Result<(), StoreError> {
        self.call(Op::Delete, Some(blob.name), |s| {
            s.version(&self.alias, blob)?;
            let blobs = s.container(&self.alias, blob.container)?;
            let k = key(blob.name);
            let (_, b) = blobs.get_mut(&k).expect("version found");
            if let Some(id) = blob.snapshot {
                b.snapshots.retain(|(s, _)| s != id);
            } else {
                check_write(&self.alias, Some(b), &condition)?;
                if !b.snapshots.is_empty() && !with_snapshots {
                    return Err(StoreError::answered(
                        &self.alias,
                        409,
                        Code::SnapshotsPresent,
                        "This operation is not permitted because the blob has snapshots.",
                    ));
                }
                b.current = None;
                b.snapshots.clear();
            }
            if b.current.is_none() && b.snapshots.is_empty() {
                blobs.remove(&k);
            }
            Ok(())
        })
        .await
    }

    async fn copy_source(
        &self,
        blob: BlobRef<'_>,
        valid_for: Duration,
    ) -> Result<CopySource, StoreError> {
        self.call(Op::CopySource, Some(blob.name), |s| {
            let name = percent_encoding::utf8_percent_encode(
                blob.name,
                percent_encoding::NON_ALPHANUMERIC,
            );
            // Like a SAS, the URL stops authorising the read at its expiry (`se`), on the
            // service's clock.
            let expiry =
                s.now() + time::Duration::try_from(valid_for).unwrap_or(time::Duration::ZERO);
            let mut url = format!(
                "{SCHEME}{}/{}/{name}?se={}",
                self.alias,
                blob.container,
                expiry.unix_timestamp()
            );
            if let Some(s) = blob.snapshot {
                url.push_str("&snapshot=");
                url.push_str(s);
            }
            Ok(CopySource {
                url,
                authorization: None,
            })
        })
        .await
    }

    async fn copy_from_url(
        &self,
        blob: BlobRef<'_>,
        request: CopyFromUrl<'_>,
    ) -> Result<(), StoreError> {
        let target = WholeWrite {
            op: Op::CopyFromUrl,
            source: request.source,
            source_if_match: request.source_if_match,
            condition: &request.condition,
            tags: request.tags,
        };
        // Copy Blob From URL carries the source's content headers and metadata.
        self.write_whole(blob, target, |source| {
            (source.headers.clone(), source.metadata.clone())
        })
        .await
    }

    /// As Azure does: the source read under `source_if_match`, the destination written
    /// under its condition, with the given content headers, metadata and tags (none of
    /// the source's metadata; <https://learn.microsoft.com/rest/api/storageservices/put-blob-from-url>).
    /// The emulator's `501` is a fault a test injects.
    async fn put_from_url(
        &self,
        blob: BlobRef<'_>,
        request: PutFromUrl<'_>,
    ) -> Result<(), StoreError> {
        let target = WholeWrite {
            op: Op::PutFromUrl,
            source: request.source,
            source_if_match: request.source_if_match,
            condition: &request.condition,
            tags: request.tags,
        };
        self.write_whole(blob, target, |_| {
            (request.headers.clone(), request.metadata.clone())
        })
        .await
    }

    async fn stage_block_from_url(
        &self,
        blob: BlobRef<'_>,
        block_id: &[u8],
        source: &CopySource,
        source_if_match: Option<&str>,
        offset: u64,
        length: u64,
    ) -> Result<(), StoreError> {
        self.base_only(blob)?;
        let authorised = self.check_source_expiry(source);
        self.call(Op::StageBlockFromUrl, Some(blob.name), |s| {
            authorised?;
            let version = self.read_source(s, source, source_if_match)?;
            let end = offset.saturating_add(length);
            if end > version.content.len() as u64 {
                return Err(StoreError::answered(
                    &self.alias,
                    416,
                    Code::InvalidRange,
                    "The range specified is invalid for the current size of the resource.",
                ));
            }
            let bytes = version.content[offset as usize..end as usize].to_vec();
            let blobs = s.container(&self.alias, blob.container)?;
            let entry = blobs
                .entry(key(blob.name))
                .or_insert_with(|| (blob.name.to_string(), Blob::default()));
            entry.1.staged.insert(block_id.to_vec(), bytes);
            Ok(())
        })
        .await
    }

    async fn stage_block(
        &self,
        blob: BlobRef<'_>,
        block_id: &[u8],
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.base_only(blob)?;
        self.call(Op::StageBlock, Some(blob.name), |s| {
            let blobs = s.container(&self.alias, blob.container)?;
            let entry = blobs
                .entry(key(blob.name))
                .or_insert_with(|| (blob.name.to_string(), Blob::default()));
            entry.1.staged.insert(block_id.to_vec(), bytes);
            Ok(())
        })
        .await
    }

    async fn commit_blocks(
        &self,
        blob: BlobRef<'_>,
        block_ids: &[Vec<u8>],
        commit: Commit<'_>,
    ) -> Result<(), StoreError> {
        self.base_only(blob)?;
        check_tags(&self.alias, commit.tags)?;
        self.call(Op::CommitBlocks, Some(blob.name), |s| {
            let content = {
                let blobs = s.container(&self.alias, blob.container)?;
                // Preconditions are evaluated before the request is acted on (RFC 9110
                // §13.2.2; https://learn.microsoft.com/rest/api/storageservices/specifying-conditional-headers-for-blob-service-operations):
                // a commit under a stale ETag is 412 even when another writer's commit
                // has discarded its uncommitted blocks.
                check_write(
                    &self.alias,
                    blobs.get(&key(blob.name)).map(|(_, b)| b),
                    &commit.condition,
                )?;
                let staged = blobs
                    .get(&key(blob.name))
                    .map(|(_, b)| &b.staged)
                    .cloned()
                    .unwrap_or_default();
                let mut content = Vec::new();
                for id in block_ids {
                    let Some(bytes) = staged.get(id) else {
                        return Err(StoreError::answered(
                            &self.alias,
                            400,
                            Code::InvalidBlockList,
                            "The specified block list is invalid.",
                        ));
                    };
                    content.extend_from_slice(bytes);
                }
                content
            };
            let tags = commit.tags.cloned().unwrap_or_default();
            let now = s.now();
            self.replace(s, blob, &commit.condition, |etag| Version {
                content: Arc::new(content),
                etag,
                last_modified: now,
                headers: commit.headers.clone(),
                metadata: commit.metadata.clone(),
                tags,
            })
            .map(|_| ())
        })
        .await
    }

    async fn read_range(
        &self,
        blob: BlobRef<'_>,
        offset: u64,
        length: u64,
        if_match: Option<&str>,
    ) -> Result<Vec<u8>, StoreError> {
        self.call(Op::ReadRange, Some(blob.name), |s| {
            let v = s.version(&self.alias, blob)?;
            if let Some(e) = if_match
                && e != v.etag
            {
                return Err(StoreError::answered(
                    &self.alias,
                    412,
                    Code::ConditionNotMet,
                    "The condition specified using HTTP conditional header(s) is not met.",
                ));
            }
            let size = v.content.len() as u64;
            if offset >= size && !(offset == 0 && size == 0) {
                return Err(StoreError::answered(
                    &self.alias,
                    416,
                    Code::InvalidRange,
                    "The range specified is invalid for the current size of the resource.",
                ));
            }
            let end = offset.saturating_add(length).min(size);
            Ok(v.content[offset as usize..end as usize].to_vec())
        })
        .await
    }

    async fn acquire_lease(
        &self,
        blob: BlobRef<'_>,
        duration: Duration,
        proposed_id: &str,
    ) -> Result<String, StoreError> {
        self.base_only(blob)?;
        self.call(Op::AcquireLease, Some(blob.name), |s| {
            let b = s.existing(&self.alias, blob)?;
            if let Some(lease) = b.leased()
                && lease.id != proposed_id
            {
                return Err(lease_conflict(
                    &self.alias,
                    Code::LeaseAlreadyPresent,
                    "There is already a lease present.",
                ));
            }
            let duration = Duration::from_secs(duration.as_secs().clamp(15, 60));
            b.lease = Some(Lease {
                id: proposed_id.to_string(),
                until: tokio::time::Instant::now() + duration,
                duration,
            });
            Ok(proposed_id.to_string())
        })
        .await
    }

    async fn renew_lease(&self, blob: BlobRef<'_>, lease_id: &str) -> Result<(), StoreError> {
        self.call(Op::RenewLease, Some(blob.name), |s| {
            let b = s.existing(&self.alias, blob)?;
            match b.lease.as_mut() {
                Some(lease) if lease.id == lease_id => {
                    lease.until = tokio::time::Instant::now() + lease.duration;
                    Ok(())
                }
                _ => Err(lease_conflict(
                    &self.alias,
                    Code::LeaseIdMismatchWithLeaseOperation,
                    "The lease ID specified did not match the lease ID for the blob.",
                )),
            }
        })
        .await
    }

    async fn release_lease(&self, blob: BlobRef<'_>, lease_id: &str) -> Result<(), StoreError> {
        self.call(Op::ReleaseLease, Some(blob.name), |s| {
            let b = s.existing(&self.alias, blob)?;
            match &b.lease {
                Some(lease) if lease.id == lease_id => {
                    b.lease = None;
                    Ok(())
                }
                _ => Err(lease_conflict(
                    &self.alias,
                    Code::LeaseIdMismatchWithLeaseOperation,
                    "The lease ID specified did not match the lease ID for the blob.",
                )),
            }
        })
        .await
    }

    async fn put(
        &self,
        blob: BlobRef<'_>,
        bytes: Vec<u8>,
        condition: Condition,
    ) -> Result<String, StoreError> {
        self.base_only(blob)?;
        self.call(Op::Put, Some(blob.name), |s| {
            let now = s.now();
            self.replace(s, blob, &condition, |etag| Version {
                content: Arc::new(bytes),
                etag,
                last_modified: now,
                headers: ContentHeaders::default(),
                metadata: BTreeMap::new(),
                tags: BTreeMap::new(),
            })
        })
        .await
    }

    async fn get(&self, blob: BlobRef<'_>) -> Result<(Vec<u8>, String), StoreError> {
        self.call(Op::Get, Some(blob.name), |s| {
            let v = s.version(&self.alias, blob)?;
            Ok((v.content.to_vec(), v.etag))
        })
        .await
    }

    fn list<'a>(
        &'a self,
        container: &'a str,
        options: ListOptions,
    ) -> BoxStream<'a, Result<Listed, StoreError>> {
        futures::stream::once(async move {
            self.call(Op::List, None, |s| {
                let blobs = s.container(&self.alias, container)?;
                let mut out = Vec::new();
                for (_, (name, b)) in blobs.iter() {
                    if options
                        .prefix
                        .as_deref()
                        .is_some_and(|p| !name.starts_with(p))
                    {
                        continue;
                    }
                    let entry = |snapshot: Option<&String>, v: &Version| Listed {
                        name: name.clone(),
                        snapshot: snapshot.cloned(),
                        etag: v.etag.clone(),
                        size: v.content.len() as u64,
                        last_modified: http_time(v.last_modified),
                        tags: if options.tags {
                            v.tags.clone()
                        } else {
                            BTreeMap::new()
                        },
                        content_md5: v.headers.content_md5.clone(),
                    };
                    if let Some(v) = &b.current {
                        out.push(entry(None, v));
                    }
                    if options.snapshots {
                        out.extend(b.snapshots.iter().map(|(id, v)| entry(Some(id), v)));
                    }
                }
                Ok(out)
            })
            .await
        })
        .flat_map(|listed| match listed {
            Ok(entries) => futures::stream::iter(entries.into_iter().map(Ok)).boxed(),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .boxed()
    }
}
