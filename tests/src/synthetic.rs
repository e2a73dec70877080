//! A synthetic storage endpoint, for planning at a scale no emulator holds: List Blobs of
//! chosen containers is answered from a generator (1 million to hundreds of millions of
//! names, nothing stored), every other request is relayed to an emulator behind it (the
//! queue is the emulator's own; ledger and watermark writes, container checks and account
//! information go to its blob service).
//!
//! The generated lake has a source side and a backup side over one universe of names:
//! each name is, by a hash of its index, unchanged (on both sides, the backup's record
//! naming the source's ETag), changed (the record names an older ETag), new (source only)
//! or deleted (backup only). So the plan's counts are known exactly
//! ([`Lake::expected`]) and a bench can check them.
//!
//! What it imitates of List Blobs
//! (<https://learn.microsoft.com/rest/api/storageservices/list-blobs>):
//! - `prefix`, `delimiter=/` (a `BlobPrefix` per sub-directory, counted in the page like a
//!   blob), `marker` / `NextMarker` (opaque to the client), `maxresults` (default and
//!   ceiling 5,000), `include=tags` (the backup's record tags as a `Tags` element);
//! - each entry with the properties Azure returns for a block blob (Creation-Time,
//!   Last-Modified, Etag, Content-Length, Content-Type, Content-MD5, BlobType, AccessTier,
//!   lease state, ServerEncrypted), so parsing a page costs what it costs against Azure;
//! - a fixed latency per page (`latency`, e.g. 30 ms) on top of the generation work, which
//!   is proportional to the page: a page costs the same whatever the container's size or
//!   the page's prefix, as on Azure (the emulator scans its whole store per page instead).
//!
//! Writes of blobs in a served backup container (the workers' copies, history snapshots
//! and tombstone tags) are accepted and forgotten, answered as Azure answers them
//! (<https://learn.microsoft.com/rest/api/storageservices/copy-blob-from-url>: 202 with
//! `x-ms-copy-status: success`; <https://learn.microsoft.com/rest/api/storageservices/snapshot-blob>:
//! 201 with `x-ms-snapshot`; <https://learn.microsoft.com/rest/api/storageservices/set-blob-tags>:
//! 204; Put Blob, Put Block (From URL), Put Block List: 201), so a fleet of workers can
//! scan and copy at this scale: the listings do not change, and the writes are counted.
//!
//! What it does not imitate: names that need escaping or `Encoded="true"` (its names are
//! ASCII), metadata, snapshots and versions in listings, throttling (503), the account's
//! request rate limits, the conditions (`If-Match`, `If-None-Match`) of the writes it
//! accepts, and any read of a blob in its containers.

use crate::fault_proxy::{relay, relay_client, serve_on_loopback};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The most entries one List Blobs page holds (and the default).
pub const MAX_RESULTS: usize = 5_000;

/// The job id written in the backup side's records.
pub const SEED_JOB: &str = "synthetic-seed";

/// The lake's directory tree: `datasets` top directories, each with `days` partitions of
/// `files` files (`ds0042/day=00731/part-00017-c000.snappy.parquet`). Fixed-width numbers
/// make the name order the index order, which is what lets a page start anywhere in
/// O(log n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub datasets: u64,
    pub days: u64,
    pub files: u64,
}

impl Layout {
    /// A layout of about `names` names: 1,000 files a partition, 10 to 100 datasets.
    pub fn for_names(names: u64) -> Self {
        let files = 1_000.min(names.max(1));
        let datasets = (names / 100_000).clamp(10, 100);
        let days = names.div_ceil(files * datasets).max(1);
        Layout {
            datasets,
            days,
            files,
        }
    }

    pub fn universe(&self) -> u64 {
        self.datasets * self.days * self.files
    }
}

/// Fractions of the universe of names that are new, changed and deleted in the source;
/// the rest is unchanged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    pub new: f64,
    pub changed: f64,
    pub deleted: f64,
}

/// What a name is, on the two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unchanged,
    Changed,
    New,
    Deleted,
}

/// Which side of the lake a container serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Source,
    Backup,
}

/// Counts a correct full plan of the lake finds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expected {
    pub new: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub deleted: u64,
}

impl Expected {
    pub fn source_blobs(&self) -> u64 {
        self.new + self.changed + self.unchanged
    }

    pub fn backup_blobs(&self) -> u64 {
        self.changed + self.unchanged + self.deleted
    }
}

/// A generated lake. Nothing is stored: every property is a function of the index.
#[derive(Debug, Clone)]
pub struct Lake {
    pub layout: Layout,
    pub mix: Mix,
    pub seed: u64,
    widths: (usize, usize, usize),
    /// Thresholds of the hash for new, +deleted, +changed.
    cuts: (u64, u64, u64),
    /// Precomputed times (RFC 1123 for properties, RFC 3339 for records), picked by hash.
    http_dates: Vec<String>,
    record_dates: Vec<String>,
}

/// splitmix64: a fast, well-mixed hash of an index.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn digits(n: u64) -> usize {
    n.saturating_sub(1).max(1).to_string().len()
}

const TIMES: usize = 1024;

impl Lake {
    pub fn new(layout: Layout, mix: Mix, seed: u64) -> Self {
        let cut = |f: f64| (f.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
        let new = cut(mix.new);
        let deleted = new.saturating_add(cut(mix.deleted));
        let changed = deleted.saturating_add(cut(mix.changed));
        let base = time::macros::datetime!(2024-01-01 00:00:00 UTC);
        let times: Vec<time::OffsetDateTime> = (0..TIMES)
            .map(|k| base + time::Duration::minutes(k as i64 * 517))
            .collect();
        let http = time::format_description::parse_borrowed::<2>(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT",
        )
        .expect("a valid format");
        Lake {
            widths: (
                digits(layout.datasets),
                digits(layout.days),
                digits(layout.files),
            ),
            layout,
            mix,
            seed,
            cuts: (new, deleted, changed),
            http_dates: times
                .iter()
                .map(|t| t.format(&http).unwrap_or_default())
                .collect(),
            record_dates: times
                .iter()
                .map(|t| lakevault_common::record::rfc3339(*t))
                .collect(),
        }
    }

    pub fn universe(&self) -> u64 {
        self.layout.universe()
    }

    fn hash(&self, i: u64) -> u64 {
        mix64(self.seed ^ mix64(i))
    }

    pub fn kind(&self, i: u64) -> Kind {
        let h = self.hash(i);
        let (new, deleted, changed) = self.cuts;
        if h < new {
            Kind::New
        } else if h < deleted {
            Kind::Deleted
        } else if h < changed {
            Kind::Changed
        } else {
            Kind::Unchanged
        }
    }

    fn present(&self, side: Side, i: u64) -> bool {
        !matches!(
            (side, self.kind(i)),
            (Side::Source, Kind::Deleted) | (Side::Backup, Kind::New)
        )
    }

    /// Appends the name of index `i`.
    pub fn name_into(&self, i: u64, out: &mut String) {
        let l = &self.layout;
        let (wa, wb, wc) = self.widths;
        let (a, b, c) = (i / (l.days * l.files), (i / l.files) % l.days, i % l.files);
        let _ = write!(
            out,
            "ds{a:0wa$}/day={b:0wb$}/part-{c:0wc$}-c000.snappy.parquet"
        );
    }

    pub fn name(&self, i: u64) -> String {
        let mut s = String::with_capacity(48);
        self.name_into(i, &mut s);
        s
    }

    /// The first index whose name is not below `key`.
    pub fn lower_bound(&self, key: &str) -> u64 {
        let (mut lo, mut hi) = (0, self.universe());
        let mut buf = String::with_capacity(64);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            buf.clear();
            self.name_into(mid, &mut buf);
            if buf.as_str() < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The source ETag of index `i` at version `v` (a changed blob is at version 1; its
    /// backup's record names version 0).
    fn etag(&self, i: u64, v: u64) -> u64 {
        mix64(self.hash(i) ^ v.wrapping_mul(0xA24B_AED4_963E_E407)) & 0x000F_FFFF_FFFF_FFFF
    }

    /// Counts of a correct plan, by going through every index (about a second per 100
    /// million).
    pub fn expected(&self) -> Expected {
        let mut e = Expected::default();
        for i in 0..self.universe() {
            match self.kind(i) {
                Kind::New => e.new += 1,
                Kind::Changed => e.changed += 1,
                Kind::Unchanged => e.unchanged += 1,
                Kind::Deleted => e.deleted += 1,
            }
        }
        e
    }

    /// Appends one `<Blob>` entry of `side`, as Azure writes it.
    fn blob_xml(&self, side: Side, i: u64, name: &str, tags: bool, out: &mut String) {
        let h = self.hash(i);
        let size = 1_024 + (h >> 40) % 100_000;
        let when = (h >> 8) as usize % TIMES;
        let (etag, modified) = match side {
            Side::Source => {
                let v = u64::from(self.kind(i) == Kind::Changed);
                (
                    self.etag(i, v),
                    &self.http_dates[(when + v as usize) % TIMES],
                )
            }
            Side::Backup => (mix64(h ^ 0xB5), &self.http_dates[(when + 7) % TIMES]),
        };
        let md5 = azure_core::base64::encode(
            [mix64(h ^ 1).to_le_bytes(), mix64(h ^ 2).to_le_bytes()].concat(),
        );
        let _ = write!(
            out,
            "<Blob><Name>{name}</Name><Properties><Creation-Time>{created}</Creation-Time>\
             <Last-Modified>{modified}</Last-Modified><Etag>0x8DC{etag:013X}</Etag>\
             <Content-Length>{size}</Content-Length><Content-Type>application/octet-stream</Content-Type>\
             <Content-Encoding /><Content-Language /><Content-CRC64 /><Content-MD5>{md5}</Content-MD5>\
             <Cache-Control /><Content-Disposition /><BlobType>BlockBlob</BlobType>\
             <AccessTier>Hot</AccessTier><AccessTierInferred>true</AccessTierInferred>\
             <LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState>\
             <ServerEncrypted>true</ServerEncrypted></Properties><OrMetadata />",
            created = self.http_dates[when],
        );
        if tags && side == Side::Backup {
            let recorded = self.etag(i, 0);
            let _ = write!(
                out,
                "<Tags><TagSet><Tag><Key>{key}</Key><Value>v1 etag=0x8DC{recorded:013X} mtime={mtime} at={at} job={SEED_JOB}</Value></Tag></TagSet></Tags>",
                key = lakevault_common::record::RECORD_TAG,
                mtime = self.record_dates[when],
                at = self.record_dates[(when + 3) % TIMES],
            );
        }
        out.push_str("</Blob>");
    }

    /// One List Blobs page of `side`: the XML body and how many entries it holds.
    pub fn page(&self, side: Side, query: &ListQuery, container: &str) -> (String, usize) {
        let max = query.max_results;
        let prefix = query.prefix.as_str();
        let start = if query.marker.as_str() > prefix {
            query.marker.as_str()
        } else {
            prefix
        };
        let mut out = String::with_capacity(max.min(MAX_RESULTS) * 700 + 512);
        let _ = write!(
            out,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint=\"http://synthetic/\" ContainerName=\"{}\"><Prefix>{}</Prefix><Marker>{}</Marker><MaxResults>{max}</MaxResults>",
            escape(container),
            escape(prefix),
            escape(&query.marker)
        );
        if query.delimiter {
            out.push_str("<Delimiter>/</Delimiter>");
        }
        out.push_str("<Blobs>");
        let mut i = self.lower_bound(start);
        let mut n = 0;
        let mut next = None;
        let mut name = String::with_capacity(64);
        while i < self.universe() {
            name.clear();
            self.name_into(i, &mut name);
            if !name.starts_with(prefix) {
                break;
            }
            if n == max {
                next = Some(name.clone());
                break;
            }
            if query.delimiter
                && let Some(k) = name[prefix.len()..].find('/')
            {
                let dir = &name[..prefix.len() + k + 1];
                let _ = write!(out, "<BlobPrefix><Name>{dir}</Name></BlobPrefix>");
                n += 1;
                // Past every name under `dir`: `/` + 1 is `0`.
                let after = format!("{}0", &dir[..dir.len() - 1]);
                i = self.lower_bound(&after);
                continue;
            }
            if self.present(side, i) {
                self.blob_xml(side, i, &name, query.tags, &mut out);
                n += 1;
            }
            i += 1;
        }
        out.push_str("</Blobs>");
        match next {
            Some(marker) => {
                let _ = write!(out, "<NextMarker>{}</NextMarker>", escape(&marker));
            }
            None => out.push_str("<NextMarker />"),
        }
        out.push_str("</EnumerationResults>");
        (out, n)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The parameters of a List Blobs request that shape its page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub prefix: String,
    pub marker: String,
    pub max_results: usize,
    pub delimiter: bool,
    pub tags: bool,
}

impl ListQuery {
    /// `None` unless the query is a List Blobs request (`restype=container&comp=list`).
    /// A delimiter other than `/` is refused (lakevault sends none).
    pub fn parse(query: &str) -> Option<Result<Self, String>> {
        let mut q = ListQuery {
            max_results: MAX_RESULTS,
            ..Default::default()
        };
        let (mut restype, mut comp) = (false, false);
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "restype" => restype = v == "container",
                "comp" => comp = v == "list",
                "prefix" => q.prefix = v.into_owned(),
                "marker" => q.marker = v.into_owned(),
                "maxresults" => match v.parse::<usize>() {
                    Ok(n) if n > 0 => q.max_results = n.min(MAX_RESULTS),
                    _ => return Some(Err(format!("maxresults `{v}` is not a positive number"))),
                },
                "delimiter" if v == "/" => q.delimiter = true,
                "delimiter" => return Some(Err(format!("delimiter `{v}` is not served"))),
                "include" => q.tags = v.split(',').any(|i| i == "tags"),
                _ => {}
            }
        }
        (restype && comp).then_some(Ok(q))
    }
}

/// Requests the endpoint answered.
#[derive(Debug, Default)]
pub struct Stats {
    /// List Blobs pages generated, per side.
    pub source_pages: AtomicU64,
    pub backup_pages: AtomicU64,
    /// Entries (blobs and prefixes) in those pages.
    pub source_entries: AtomicU64,
    pub backup_entries: AtomicU64,
    /// Requests relayed to the emulator.
    pub relayed: AtomicU64,
    /// Blob writes accepted in backup containers: copies (Copy Blob From URL, Put Blob,
    /// Put Block List), and separately snapshots and tag writes.
    pub blobs_written: AtomicU64,
    pub snapshots: AtomicU64,
    pub tags_written: AtomicU64,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    lake: RwLock<Arc<Lake>>,
    /// `(account, container)` → the side it serves.
    containers: RwLock<HashMap<(String, String), Side>>,
    latency: RwLock<Duration>,
    stats: Stats,
    /// Writes accepted so far, of any kind.
    writes: AtomicU64,
}

/// A running synthetic endpoint; stops when dropped.
pub struct SyntheticEndpoint {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SyntheticEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticEndpoint")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for SyntheticEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SyntheticEndpoint {
    /// Starts on a free loopback port in front of `upstream` (an emulator's blob service,
    /// `http://127.0.0.1:port`), serving `lake` with `latency` per page.
    pub async fn start(upstream: &str, lake: Lake, latency: Duration) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: relay_client()?,
            lake: RwLock::new(Arc::new(lake)),
            containers: RwLock::new(HashMap::new()),
            latency: RwLock::new(latency),
            stats: Stats::default(),
            writes: AtomicU64::new(0),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let (addr, task) = serve_on_loopback(app, "the synthetic endpoint").await?;
        Ok(Self { addr, shared, task })
    }

    /// The endpoint's base URL (`http://127.0.0.1:port`); an account's blob endpoint is
    /// this plus `/<account>`, as on the emulator.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `side` of the lake as `container` of `account`.
    pub fn serve(&self, account: &str, container: &str, side: Side) {
        self.shared
            .containers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((account.to_string(), container.to_string()), side);
    }

    pub fn set_lake(&self, lake: Lake) {
        *self.shared.lake.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(lake);
    }

    pub fn set_latency(&self, latency: Duration) {
        *self
            .shared
            .latency
            .write()
            .unwrap_or_else(|p| p.into_inner()) = latency;
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }
}

fn xml_error(status: StatusCode, code: &str, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header("x-ms-error-code", code)
        .header("content-type", "application/xml")
        .body(Body::from(format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{}</Message></Error>",
            escape(message)
        )))
        .unwrap_or_default()
}

/// What a request is, for this endpoint.
enum Route {
    /// List Blobs of a served container.
    List(Side, Result<ListQuery, String>),
    /// A write of a blob in a served backup container.
    Write,
    /// Anything else: the emulator's.
    Relay,
}

fn route(shared: &Shared, method: &axum::http::Method, path: &str, query: &str) -> Route {
    let Some((account, rest)) = path.split_once('/') else {
        return Route::Relay;
    };
    let (container, blob) = rest.split_once('/').unwrap_or((rest, ""));
    let side = shared
        .containers
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(account.to_string(), container.to_string()))
        .copied();
    match (side, blob.is_empty()) {
        (Some(side), true) if method == axum::http::Method::GET => ListQuery::parse(query)
            .map(|q| Route::List(side, q))
            .unwrap_or(Route::Relay),
        (Some(Side::Backup), false) if method == axum::http::Method::PUT => Route::Write,
        _ => Route::Relay,
    }
}

/// Accepts a blob write as Azure would answer it, and forgets it.
fn accept_write(shared: &Shared, request: &Request) -> Response {
    let now = time::OffsetDateTime::now_utc();
    // Each write gets its own ETag and request id.
    let n = shared.writes.fetch_add(1, Ordering::Relaxed);
    let query = request.uri().query().unwrap_or_default();
    let comp = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "comp")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let headers = request.headers();
    let response = Response::builder()
        .header("x-ms-version", "2025-11-05")
        .header("x-ms-request-id", format!("synthetic-{n}"))
        .header("date", http_date(now))
        .header(
            "etag",
            format!("\"0x8DD{:013X}\"", mix64(n) & 0x000F_FFFF_FFFF_FFFF),
        )
        .header("last-modified", http_date(now));
    let response = match comp.as_str() {
        "snapshot" => {
            shared.stats.snapshots.fetch_add(1, Ordering::Relaxed);
            let id = lakevault_common::record::rfc3339(now);
            response.status(StatusCode::CREATED).header(
                "x-ms-snapshot",
                // Seven fractional digits, as the service writes snapshot ids.
                format!("{}.{:07}Z", &id[..19], now.nanosecond() / 100),
            )
        }
        "tags" => {
            shared.stats.tags_written.fetch_add(1, Ordering::Relaxed);
            response.status(StatusCode::NO_CONTENT)
        }
        // Put Block and Put Block From URL: the blob is counted at its block list.
        "block" => response.status(StatusCode::CREATED),
        _ => {
            shared.stats.blobs_written.fetch_add(1, Ordering::Relaxed);
            let synchronous_copy = headers.contains_key("x-ms-copy-source")
                && headers
                    .get("x-ms-requires-sync")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
            if synchronous_copy {
                response
                    .status(StatusCode::ACCEPTED)
                    .header("x-ms-copy-id", format!("{:032x}", mix64(n)))
                    .header("x-ms-copy-status", "success")
            } else {
                response
                    .status(StatusCode::CREATED)
                    .header("x-ms-request-server-encrypted", "true")
            }
        }
    };
    response.body(Body::empty()).unwrap_or_default()
}

fn http_date(t: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&format).unwrap_or_default()
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let path = request.uri().path().trim_start_matches('/').to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let (side, parsed) = match route(&shared, request.method(), &path, &query) {
        Route::List(side, parsed) => (side, parsed),
        Route::Write => return accept_write(&shared, &request),
        Route::Relay => {
            shared.stats.relayed.fetch_add(1, Ordering::Relaxed);
            return relay(&shared.client, &shared.upstream, request, false).await;
        }
    };
    let q = match parsed {
        Ok(q) => q,
        Err(message) => {
            return xml_error(
                StatusCode::BAD_REQUEST,
                "InvalidQueryParameterValue",
                &message,
            );
        }
    };
    let latency = *shared.latency.read().unwrap_or_else(|p| p.into_inner());
    let lake = shared
        .lake
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let container = path
        .split_once('/')
        .map(|(_, c)| c.to_string())
        .unwrap_or_default();
    // The latency is waited first, so it overlaps other pages' generation as the service's
    // would; generation then costs in proportion to the page.
    tokio::time::sleep(latency).await;
    let (body, entries) = lake.page(side, &q, &container);
    let (pages, counted) = match side {
        Side::Source => (&shared.stats.source_pages, &shared.stats.source_entries),
        Side::Backup => (&shared.stats.backup_pages, &shared.stats.backup_entries),
    };
    pages.fetch_add(1, Ordering::Relaxed);
    counted.fetch_add(entries as u64, Ordering::Relaxed);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/xml")
        .header("x-ms-version", "2025-11-05")
        .body(Body::from(body))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lake(names: u64) -> Lake {
        Lake::new(
            Layout::for_names(names),
            Mix {
                new: 0.05,
                changed: 0.05,
                deleted: 0.05,
            },
            7,
        )
    }

    /// Every name of a small lake, listed the slow way.
    fn all_names(lake: &Lake) -> Vec<String> {
        (0..lake.universe()).map(|i| lake.name(i)).collect()
    }

    #[test]
    fn names_sort_in_index_order_and_lower_bound_finds_them() {
        let lake = lake(30_000);
        let names = all_names(&lake);
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        for (i, n) in names.iter().enumerate().step_by(997) {
            assert_eq!(lake.lower_bound(n), i as u64);
            assert_eq!(lake.lower_bound(&format!("{n}\u{0}")), i as u64 + 1);
        }
        assert_eq!(lake.lower_bound(""), 0);
        assert_eq!(lake.lower_bound("zzz"), lake.universe());
    }

    /// Follows NextMarker to the end, as a client does.
    fn list_all(lake: &Lake, side: Side, prefix: &str, delimiter: bool, max: usize) -> Vec<String> {
        let mut q = ListQuery {
            prefix: prefix.into(),
            marker: String::new(),
            max_results: max,
            delimiter,
            tags: true,
        };
        let mut names = Vec::new();
        loop {
            let (body, n) = lake.page(side, &q, "c");
            let found: Vec<String> = body
                .split("<Name>")
                .skip(1)
                .map(|s| s[..s.find("</Name>").unwrap()].to_string())
                .collect();
            assert_eq!(found.len(), n);
            assert!(n <= max);
            names.extend(found);
            let next = body
                .split("<NextMarker>")
                .nth(1)
                .map(|s| s[..s.find("</NextMarker>").unwrap()].to_string());
            match next {
                Some(m) if !m.is_empty() => q.marker = m,
                _ => return names,
            }
        }
    }

    #[test]
    fn pages_list_each_side_in_order_under_any_prefix_and_page_size() {
        let lake = lake(20_000);
        let names = all_names(&lake);
        for (side, absent) in [(Side::Source, Kind::Deleted), (Side::Backup, Kind::New)] {
            let want: Vec<&String> = names
                .iter()
                .enumerate()
                .filter(|(i, _)| lake.kind(*i as u64) != absent)
                .map(|(_, n)| n)
                .collect();
            for max in [1, 7, 5_000] {
                let got = list_all(&lake, side, "", false, max);
                assert_eq!(got.iter().collect::<Vec<_>>(), want, "{side:?} max {max}");
            }
            // A prefix that ends inside a directory's name.
            let third = lake.name(lake.universe() / 3);
            let prefix = &third[..third.find("day=").unwrap() + 5];
            let got = list_all(&lake, side, prefix, false, 333);
            let want_p: Vec<&String> = want
                .iter()
                .filter(|n| n.starts_with(prefix))
                .copied()
                .collect();
            assert!(!want_p.is_empty());
            assert_eq!(got.iter().collect::<Vec<_>>(), want_p);
        }
    }

    #[test]
    fn a_delimiter_listing_shows_each_directory_once() {
        let lake = lake(20_000);
        let top = list_all(&lake, Side::Source, "", true, 3);
        assert_eq!(top.len() as u64, lake.layout.datasets);
        let first = lake.name(0);
        assert_eq!(top[0], first[..=first.find('/').unwrap()]);
        let days = list_all(&lake, Side::Source, &top[1], true, 5_000);
        assert_eq!(days.len() as u64, lake.layout.days);
        assert!(
            days.iter()
                .all(|d| d.starts_with(&format!("{}day=", top[1])) && d.ends_with('/'))
        );
        let files = list_all(&lake, Side::Backup, &days[1], true, 100);
        assert!(
            !files.is_empty()
                && files
                    .iter()
                    .all(|f| f.starts_with(&days[1]) && f.ends_with(".parquet"))
        );
    }

    #[test]
    fn the_backup_records_name_the_source_etag_except_for_changed_blobs() {
        let lake = lake(20_000);
        let q = ListQuery {
            max_results: 5_000,
            tags: true,
            ..Default::default()
        };
        let (src, _) = lake.page(Side::Source, &q, "c");
        let (bak, _) = lake.page(Side::Backup, &q, "c");
        let etags = |body: &str, open: &str, close: &str| -> HashMap<String, String> {
            body.split("<Blob><Name>")
                .skip(1)
                .filter_map(|b| {
                    let name = b[..b.find('<')?].to_string();
                    let start = b.find(open)? + open.len();
                    let end = start + b[start..].find(close)?;
                    Some((name, b[start..end].to_string()))
                })
                .collect()
        };
        let source = etags(&src, "<Etag>", "</Etag>");
        let records = etags(&bak, "etag=", " ");
        let (mut same, mut differ) = (0, 0);
        for (name, etag) in &records {
            let Some(s) = source.get(name) else { continue };
            let i = lake.lower_bound(name);
            if lake.kind(i) == Kind::Changed {
                assert_ne!(s, etag, "{name}");
                differ += 1;
            } else {
                assert_eq!(s, etag, "{name}");
                same += 1;
            }
        }
        assert!(same > 1_000 && differ > 50, "{same} {differ}");
    }

    #[test]
    fn expected_counts_add_up_and_follow_the_mix() {
        let lake = lake(100_000);
        let e = lake.expected();
        assert_eq!(e.new + e.changed + e.unchanged + e.deleted, lake.universe());
        for n in [e.new, e.changed, e.deleted] {
            let f = n as f64 / lake.universe() as f64;
            assert!((0.04..0.06).contains(&f), "{f}");
        }
    }

    #[test]
    fn only_list_blobs_requests_are_generated() {
        assert!(ListQuery::parse("restype=container").is_none());
        assert!(ListQuery::parse("comp=list").is_none());
        let q = ListQuery::parse("restype=container&comp=list&prefix=a%2Fb&maxresults=9000&include=metadata,tags&delimiter=%2F")
            .unwrap()
            .unwrap();
        assert_eq!(q.prefix, "a/b");
        assert_eq!(q.max_results, MAX_RESULTS);
        assert!(q.delimiter && q.tags);
        assert!(
            ListQuery::parse("restype=container&comp=list&delimiter=-")
                .unwrap()
                .is_err()
        );
    }
}
