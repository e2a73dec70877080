//! The work-item wire format carried in queue messages: versioned JSON, many items per
//! message. A message never carries a credential, only account aliases that each process
//! resolves from its own configuration.
//!
//! ```json
//! {"v":1,"kind":"copy","job":"5f0c…","attempt":0,
//!  "source":{"account":"source","container":"raw"},
//!  "destination":{"account":"backup","container":"raw"},
//!  "items":[{"name":"sales/2024/01.csv","etag":"0x8DC…","size":1234,
//!            "last_modified":"2026-11-22T03:07:23Z"}]}
//! ```

use crate::access::PathAccess;
use crate::tally::Tally;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The version this build writes and reads.
pub const WIRE_VERSION: u32 = 1;

/// The queue service accepts 64 KiB of message text. Stay a little below it so that
/// nothing about escaping on the wire can push a message over.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 - 1024;

/// Where a batch reads from or writes to: an account alias and a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub account: String,
    pub container: String,
}

/// One blob to copy, as the coordinator saw it when planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyItem {
    pub name: String,
    /// Source ETag without quotes; the copy is conditional on it.
    pub etag: String,
    pub size: u64,
    /// Source Last-Modified, RFC 3339.
    pub last_modified: String,
    /// The source's blob index tags, carried to the backup blob.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Snapshot mode: the source snapshot (its timestamp) to copy instead of the live blob.
    /// `etag` and `last_modified` then describe the snapshot's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// What the plan saw of the backup blob under this name.
    #[serde(default, skip_serializing_if = "PlannedBackup::is_unknown")]
    pub backup: PlannedBackup,
    /// A source with a hierarchical namespace: the path's access control as listed, kept
    /// with the version (backup), or applied to the restored path (restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Box<PathAccess>>,
}

/// What the plan saw of the backup blob under an item's name, so that the worker can write
/// conditionally without reading it first. A hint, never trusted for safety: every write
/// is conditional on it, and a stale hint costs a conflict and a re-read, never a wrong
/// write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlannedBackup {
    /// Not looked at (an incremental plan lists only the source): the worker reads it.
    #[default]
    Unknown,
    /// No backup blob: the copy is `If-None-Match: *`.
    Absent,
    /// A backup blob with this ETag (without quotes) that does not hold the planned
    /// version: the version it holds is kept and replaced under `If-Match` on it.
    Etag(String),
}

impl PlannedBackup {
    pub fn is_unknown(&self) -> bool {
        matches!(self, PlannedBackup::Unknown)
    }
}

/// A batch of copies between one source container and one backup container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyBatch {
    pub v: u32,
    pub kind: MessageKind,
    pub job: String,
    /// How many times these items were already tried and handed back for a retry.
    #[serde(default)]
    pub attempt: u32,
    /// Deliveries of this message that do not count against the dequeue limit: hand-backs
    /// without a try (credentials failed, shutdown) and deliveries that made progress
    /// before the worker died. What is left counts the deliveries that died without
    /// finishing a single item.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub handed_back: u32,
    /// How many times these items waited out an outage (the service unreachable or
    /// throttling) without using up an attempt: only the delay before the next try grows.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waits: u32,
    /// Outcomes of the items earlier deliveries of this message finished and removed from
    /// it (progress kept across a crash); added to the message's ledger record.
    #[serde(default, skip_serializing_if = "Tally::is_empty")]
    pub carried: Tally,
    pub source: Location,
    pub destination: Location,
    /// Lease mode: hold a lease on each source blob while copying it, so writers that
    /// honour leases cannot change it mid-copy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lease: bool,
    /// Restore: names are written under this prefix in the destination container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_prefix: Option<String>,
    /// Restore: replace blobs that exist at the target (otherwise they are left alone and
    /// counted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overwrite: bool,
    /// The source account has a hierarchical namespace (ADLS Gen2): it has no blob index
    /// tags, so none are read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_hierarchical: bool,
    /// Restore into an account with a hierarchical namespace: set each item's recorded
    /// owner, group and ACL on the path written (off with `restore --no-acls`; items then
    /// still say which paths are directories).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub apply_access: bool,
    pub items: Vec<CopyItem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Copy each item from the source container into the backup container.
    Copy,
    /// Mark each item's backup blob as deleted in the source (a tombstone: the blob and its
    /// content stay). For these, an item's `etag` is the *backup* blob's ETag (the write is
    /// conditional on it) and `tags` are the backup blob's tags, record included.
    Tombstone,
    /// Scan one shard of a container: list it, diff it against the backup, and enqueue the
    /// copy batches (a [`ScanTask`], not a [`CopyBatch`]).
    Scan,
    /// Restore: copy each item from the backup container (the batch's `source`; the
    /// version named by `snapshot`, or the base blob at `etag`) to the restore target
    /// (`destination`, names under `destination_prefix`), with the version's user tags and
    /// no lakevault record.
    Restore,
}

/// A part of a container's key space that is listed on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    /// Names starting with this prefix (`""`: the whole container).
    pub prefix: String,
    /// Only the names directly under `prefix`, without a further `/`: the names below
    /// them belong to other shards.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub level: bool,
}

impl Shard {
    pub fn whole(prefix: impl Into<String>) -> Self {
        Shard {
            prefix: prefix.into(),
            level: false,
        }
    }

    /// Whether `name` falls into this shard.
    pub fn contains(&self, name: &str) -> bool {
        match name.strip_prefix(self.prefix.as_str()) {
            None => false,
            Some(rest) => !self.level || !rest.contains('/'),
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix = if self.prefix.is_empty() {
            "(container)"
        } else {
            &self.prefix
        };
        if self.level {
            write!(f, "{prefix} (this level)")
        } else {
            write!(f, "{prefix}")
        }
    }
}

/// A scan of one shard, executed by any worker: the same listing, diff and batching the
/// coordinator does itself, so a plan is identical whoever scans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanTask {
    pub v: u32,
    pub kind: MessageKind,
    pub job: String,
    pub source: Location,
    pub destination: Location,
    pub shard: Shard,
    /// This shard's index among the container's shards, and their count: the worker that
    /// records the last shard result finishes the container (tombstones, watermark).
    pub shard_index: u32,
    pub shard_count: u32,
    /// Blob selection rules, as configured for the coordinator.
    #[serde(default)]
    pub filter: crate::select::BlobFilter,
    /// Incremental scans: select blobs modified after this time (RFC 3339); no backup
    /// listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_since: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lease: bool,
    pub max_tombstones: u64,
    /// When the coordinator started this container's scan; becomes its watermark if every
    /// shard succeeds and `write_watermark` is set.
    pub scan_started_at: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub write_watermark: bool,
    /// The source account has a hierarchical namespace: its directories are walked into
    /// the flat order, and it has no blob index tags.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_hierarchical: bool,
    /// Deliveries handed back without a try (credentials failed, shutdown): they do not
    /// count against the dequeue limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub handed_back: u32,
}

impl ScanTask {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| panic!("a ScanTask always serialises: {e}"))
    }
}

/// Any message a worker may receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkMessage {
    Batch(CopyBatch),
    Scan(ScanTask),
}

impl WorkMessage {
    /// Decodes a message by its `v` and `kind`.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let value = versioned(text)?;
        if value.get("kind").and_then(serde_json::Value::as_str) == Some("scan") {
            return serde_json::from_value(value)
                .map(WorkMessage::Scan)
                .map_err(|e| DecodeError::Shape(e.to_string()));
        }
        CopyBatch::from_value(value).map(WorkMessage::Batch)
    }
}

/// Parses JSON and checks the wire version before anything else.
fn versioned(text: &str) -> Result<serde_json::Value, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        None => Err(DecodeError::NoVersion),
        Some(v) if v != u64::from(WIRE_VERSION) => Err(DecodeError::UnsupportedVersion(v)),
        Some(_) => Ok(value),
    }
}

/// One item of a poison record: its name, failure class and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedItem {
    pub name: String,
    pub class: String,
    pub reason: String,
}

/// One message of the poison queue (`<queue>-poison`): what could not be done and why,
/// with the work to re-drive when it is lakevault work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoisonRecord {
    pub v: u32,
    pub kind: String,
    /// Why the message (or these items) could not be processed.
    pub reason: String,
    pub queue: String,
    pub message_id: String,
    pub dequeue_count: u64,
    pub failed_at: String,
    /// The items that failed, as a batch that can be re-driven onto the work queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<CopyBatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<FailedItem>,
    /// The original text of a message that could not be decoded (a part of it when split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    /// `[index, count]` when the original text was split over several records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<[u32; 2]>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("message is not JSON: {0}")]
    NotJson(String),
    #[error("message has no numeric `v` (wire version) field; it was not written by lakevault")]
    NoVersion,
    #[error("message has wire version {0}; this worker understands version {WIRE_VERSION}")]
    UnsupportedVersion(u64),
    #[error("message does not match wire version {WIRE_VERSION}: {0}")]
    Shape(String),
    #[error("message is a copy batch without items")]
    Empty,
}

impl CopyBatch {
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        Self::from_value(versioned(text)?)
    }

    fn from_value(value: serde_json::Value) -> Result<Self, DecodeError> {
        let batch: CopyBatch =
            serde_json::from_value(value).map_err(|e| DecodeError::Shape(e.to_string()))?;
        if batch.kind == MessageKind::Scan {
            return Err(DecodeError::Shape(
                "kind `scan` is a scan task, not a copy batch".into(),
            ));
        }
        if batch.items.is_empty() {
            return Err(DecodeError::Empty);
        }
        Ok(batch)
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| panic!("a CopyBatch always serialises: {e}"))
    }

    /// A new message of the same job and locations (its own deliveries, nothing carried).
    pub fn with_items(&self, items: Vec<CopyItem>, attempt: u32) -> Self {
        CopyBatch {
            items,
            attempt,
            handed_back: 0,
            waits: 0,
            carried: Tally::default(),
            ..self.clone()
        }
    }
}

/// Fills messages one at a time while items stream in: holds at most one message's worth
/// of items, so planning memory does not grow with the number of blobs.
#[derive(Debug)]
pub struct BatchBuilder {
    header: CopyBatch,
    max_bytes: usize,
    empty_len: usize,
    current: Vec<CopyItem>,
    current_len: usize,
}

impl BatchBuilder {
    pub fn new(header: CopyBatch, max_bytes: usize) -> Self {
        // Outages waited out stay with the items; what a delivery carried does not.
        let header = CopyBatch {
            waits: header.waits,
            ..header.with_items(Vec::new(), header.attempt)
        };
        let empty_len = header.encode().len();
        Self {
            header,
            max_bytes,
            empty_len,
            current: Vec::new(),
            current_len: empty_len,
        }
    }

    /// Adds an item; returns a full batch when the item did not fit beside the ones held.
    /// An item that cannot fit even alone comes back as `Err` (impossible within Azure's
    /// limits on names and tags, but not assumed).
    pub fn push(&mut self, item: CopyItem) -> Result<Option<CopyBatch>, Box<CopyItem>> {
        let item_len = serde_json::to_string(&item)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if self.empty_len.saturating_add(item_len) > self.max_bytes {
            return Err(Box::new(item));
        }
        let separator = usize::from(!self.current.is_empty());
        let full = if self.current_len + separator + item_len > self.max_bytes {
            self.current_len = self.empty_len;
            Some(CopyBatch {
                items: std::mem::take(&mut self.current),
                ..self.header.clone()
            })
        } else {
            None
        };
        self.current_len += usize::from(!self.current.is_empty()) + item_len;
        self.current.push(item);
        Ok(full)
    }

    /// The last, partly filled batch.
    pub fn finish(self) -> Option<CopyBatch> {
        (!self.current.is_empty()).then_some(CopyBatch {
            items: self.current,
            ..self.header
        })
    }
}

/// Packs items into as few messages as possible, each at most `max_bytes` of JSON; items
/// too large for any message are returned separately.
pub fn pack(
    header: &CopyBatch,
    items: impl IntoIterator<Item = CopyItem>,
    max_bytes: usize,
) -> (Vec<CopyBatch>, Vec<CopyItem>) {
    let mut builder = BatchBuilder::new(header.clone(), max_bytes);
    let mut batches = Vec::new();
    let mut too_big = Vec::new();
    for item in items {
        match builder.push(item) {
            Ok(Some(full)) => batches.push(full),
            Ok(None) => {}
            Err(item) => too_big.push(*item),
        }
    }
    batches.extend(builder.finish());
    (batches, too_big)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> CopyBatch {
        CopyBatch {
            v: WIRE_VERSION,
            kind: MessageKind::Copy,
            job: "job-1".into(),
            attempt: 0,
            source: Location {
                account: "src".into(),
                container: "raw".into(),
            },
            destination: Location {
                account: "bak".into(),
                container: "raw".into(),
            },
            lease: false,
            destination_prefix: None,
            overwrite: false,
            items: vec![],
            handed_back: 0,
            waits: 0,
            source_hierarchical: false,
            apply_access: false,
            carried: Default::default(),
        }
    }

    fn item(name: &str) -> CopyItem {
        CopyItem {
            access: None,
            name: name.into(),
            etag: "0x8DC0000000000000".into(),
            size: 42,
            last_modified: "2026-11-22T03:07:23Z".into(),
            tags: BTreeMap::new(),
            snapshot: None,
            backup: PlannedBackup::Unknown,
        }
    }

    #[test]
    fn round_trips() {
        let b = header().with_items(vec![item("a b/ü \"q\".txt")], 0);
        assert_eq!(CopyBatch::decode(&b.encode()).unwrap(), b);
        let mut absent = item("new");
        absent.backup = PlannedBackup::Absent;
        let mut held = item("changed");
        held.backup = PlannedBackup::Etag("0x8DC1".into());
        let b = header().with_items(vec![absent, held], 0);
        let text = b.encode();
        assert!(text.contains(r#""backup":"absent""#), "{text}");
        assert!(text.contains(r#""backup":{"etag":"0x8DC1"}"#), "{text}");
        assert_eq!(CopyBatch::decode(&text).unwrap(), b);
    }

    #[test]
    fn packing_keeps_the_outages_waited_out_and_drops_what_a_delivery_carried() {
        let mut h = header();
        h.waits = 3;
        h.handed_back = 2;
        h.carried.copied = 7;
        let (batches, _) = pack(&h, (0..500).map(|i| item(&format!("n{i}"))), 4096);
        assert!(batches.len() > 1);
        for b in &batches {
            assert_eq!((b.waits, b.handed_back, b.carried.copied), (3, 0, 0));
        }
        assert!(batches[0].encode().contains(r#""waits":3"#));
        assert!(!header().encode().contains("waits"));
    }

    #[test]
    fn items_without_a_planned_backup_still_decode() {
        // Messages written before the field existed (or by an incremental plan).
        let text = r#"{"v":1,"kind":"copy","job":"j","source":{"account":"s","container":"c"},
            "destination":{"account":"b","container":"c"},
            "items":[{"name":"n","etag":"e","size":1,"last_modified":"2026-11-22T03:07:23Z"}]}"#;
        let b = CopyBatch::decode(text).unwrap();
        assert_eq!(b.items[0].backup, PlannedBackup::Unknown);
        assert!(!b.encode().contains("backup"));
    }

    #[test]
    fn decode_errors_say_what_is_wrong() {
        assert!(matches!(
            CopyBatch::decode("hello"),
            Err(DecodeError::NotJson(_))
        ));
        assert_eq!(CopyBatch::decode("{}"), Err(DecodeError::NoVersion));
        assert_eq!(
            CopyBatch::decode(r#"{"v":7}"#),
            Err(DecodeError::UnsupportedVersion(7))
        );
        assert!(matches!(
            CopyBatch::decode(r#"{"v":1,"kind":"copy"}"#),
            Err(DecodeError::Shape(_))
        ));
        let mut b = header().with_items(vec![item("x")], 0).encode();
        b = b.replace("\"attempt\"", "\"bogus\":1,\"attempt\"");
        assert!(matches!(CopyBatch::decode(&b), Err(DecodeError::Shape(_))));
        assert_eq!(
            CopyBatch::decode(&header().encode()),
            Err(DecodeError::Empty)
        );
    }

    proptest! {
        #[test]
        fn packing_keeps_every_item_in_order_and_under_the_limit(
            names in proptest::collection::vec("[a-zA-Z0-9 /\u{e9}\u{4e2d}\"\\\\]{1,300}", 0..400),
            limit in 2_000usize..20_000,
        ) {
            let items: Vec<CopyItem> = names.iter().map(|n| item(n)).collect();
            let (batches, too_big) = pack(&header(), items.clone(), limit);
            prop_assert!(too_big.is_empty());
            let mut seen = Vec::new();
            for b in &batches {
                prop_assert!(b.encode().len() <= limit, "batch of {} bytes", b.encode().len());
                prop_assert!(!b.items.is_empty());
                seen.extend(b.items.iter().cloned());
            }
            prop_assert_eq!(seen, items);
        }
    }

    #[test]
    fn many_items_per_message() {
        let items: Vec<CopyItem> = (0..1000)
            .map(|i| item(&format!("dir/{i:05}.parquet")))
            .collect();
        let (batches, _) = pack(&header(), items, MAX_MESSAGE_BYTES);
        assert!(
            batches.len() <= 3,
            "{} messages for 1000 items",
            batches.len()
        );
    }
}
