//! A façade that presents one emulator account as an account with a hierarchical
//! namespace (ADLS Gen2), the way `fault_proxy.rs` sits in front of the emulator: point an
//! account's blob endpoint at `url()`. Azurite has no hierarchical namespace, so what
//! lakevault must do with one is tested against what the REST documentation says Azure
//! does, behaviour by behaviour (each cites its page below). Everything else is passed
//! through unchanged (Shared Key signatures cover the path and headers, not the host).
//!
//! Behaviours so far:
//! - Get Account Information answers `x-ms-is-hns-enabled: true`
//!   (<https://learn.microsoft.com/rest/api/storageservices/get-account-information>:
//!   "x-ms-is-hns-enabled ... indicates whether the account has a hierarchical namespace
//!   enabled", version 2019-07-07 and later).
//! - Blob index tags are refused: Get Blob Tags and Set Blob Tags (`comp=tags`) and List
//!   Blobs with `include=tags` answer `400 InvalidQueryParameterValue`, as on an account
//!   with a hierarchical namespace, where blob index tags are not supported
//!   (<https://learn.microsoft.com/azure/storage/blobs/storage-feature-support-in-storage-accounts>,
//!   "Blob index tags": not available with a hierarchical namespace;
//!   <https://learn.microsoft.com/rest/api/storageservices/get-blob-tags>).
//!
//! - List Blobs answers from the façade's own view of the container (read from the emulator
//!   on every request, the names under the request's prefix only; a dfs request on one
//!   path reads that path): a directory for every path above a blob (created in the
//!   emulator as an empty blob with `hdi_isfolder=true` when missing, so that it can be
//!   read and copied), and a
//!   blob with metadata `hdi_isfolder=true` is a directory too
//!   (<https://learn.microsoft.com/azure/storage/blobs/data-lake-storage-namespace>);
//!   entries in the order a hierarchical namespace lists them, a depth-first walk with
//!   siblings in name order (`plan::hns::cmp_hns`); every entry with `ResourceType` `file` or
//!   `directory` (<https://learn.microsoft.com/rest/api/storageservices/list-blobs>, "for
//!   version 2020-10-02 and later, for accounts with a hierarchical namespace enabled, List
//!   Blobs returns the ResourceType property element"); with `delimiter=/`, a directory as an
//!   entry and as a `BlobPrefix` right after it (as Azure answers, see
//!   <https://github.com/microsoft/ALAppExtensions/issues/24891>); continuation markers of
//!   its own (opaque, not the emulator's).
//!
//! - Access control (<https://learn.microsoft.com/azure/storage/blobs/data-lake-storage-access-control>):
//!   the façade keeps an owner, owning group, permissions and ACL per path (`Access`, strings
//!   as given). A path gets one when first seen: a write relayed with success (Put Blob,
//!   Copy Blob From URL or Copy Blob, Put Block List: "the creator of a file or directory
//!   becomes the owner", `$superuser` under Shared Key), a path first found in the façade's
//!   view of the container (written to the emulator directly: seen by a listing under it,
//!   a dfs request on it, or a setAccessControl on a directory above it, which looks at
//!   everything below first), a directory the façade creates. Without a default ACL on the parent directory it gets Azure's defaults, the
//!   default permission (0777 for a directory, 0666 for a file) less the default umask 0027
//!   (Path - Create, `x-ms-umask`: "The default permission is 0777 for a directory and 0666
//!   for a file. The default umask is 0027"): `rwxr-x---` and `rw-r-----` with the matching
//!   `user::`, `group::`, `other::` entries. With one it inherits ("the default ACL on the
//!   parent directory determines: A child directory's default ACL and access ACL. A child
//!   file's access ACL"): the parent's `default:` entries as its access ACL, and for a
//!   directory as its default ACL too. Either way "the owning group is copied from the
//!   owning group of the parent directory" (the root directory, the container, starts as
//!   `$superuser`/`$superuser`: "If the container is created using Shared Key ... the owner
//!   and owning group are set to $superuser"). An overwrite keeps the ACL ("permissions for
//!   an item are stored on the item itself"); a delete relayed with `202` drops it (Delete
//!   Container: every path of it), so a path written again inherits afresh. `permissions` is derived from the ACL: the
//!   `user::` bits, the `mask::` bits if there is a mask else the `group::` bits, the
//!   `other::` bits, and a `+` when the ACL has named entries or a mask ("the mask limits
//!   access for named users, the owning group, and named groups").
//! - List Blobs with `include=permissions` adds `Owner`, `Group`, `Permissions` and `Acl` to
//!   every entry's `Properties`, where the documentation's example puts them, after `Etag`
//!   (<https://learn.microsoft.com/rest/api/storageservices/list-blobs>: "permissions:
//!   Version 2020-06-12 and newer. Only for accounts with a hierarchical namespace enabled.
//!   If a request includes this parameter, the owner, group, permissions, and access control
//!   list for the listed blobs or directories will be included in the enumeration").
//! - A subset of the Data Lake Storage (dfs) endpoint, on the same port and path style as the
//!   blob requests (`/<account>/<container>/<path>`; Azure serves it on
//!   `<account>.dfs.core.windows.net`): a request whose query has `action=` or `resource=`
//!   (the Blob service uses neither) is a dfs request, answered by the façade. Errors as the
//!   dfs endpoint answers them: status, `x-ms-error-code`, and but for `HEAD` a JSON body
//!   `{"error":{"code":...,"message":...}}` (the `StorageError` of the Data Lake Storage
//!   REST API), codes and messages from the list on each Path page ("Other Status Codes").
//!   - Path - Create, directory: `PUT ...?resource=directory`
//!     (<https://learn.microsoft.com/rest/api/storageservices/datalakestoragegen2/path/create>):
//!     creates the directory and any missing parent in the emulator (empty blobs with
//!     `hdi_isfolder=true`), `201` with `ETag` and `Last-Modified`. `If-None-Match: *` on an
//!     existing path: `409 PathAlreadyExists` ("To fail if the destination already exists,
//!     use a conditional request with If-None-Match: \"*\""); a file at the path:
//!     `409 ResourceTypeMismatch`; a file at a parent path: `409 PathConflict` ("The
//!     specified path, or an element of the path, exists and its resource type is invalid
//!     for this operation"). The request headers `x-ms-owner`, `x-ms-group`, `x-ms-acl`
//!     (listed for Path - Create) replace the inherited values; `x-ms-permissions` and
//!     `x-ms-umask` give the permissions when the parent has no default ACL ("the resulting
//!     permission is given by p bitwise and not u").
//!   - Path - Update, `PATCH ...?action=setAccessControl`
//!     (<https://learn.microsoft.com/rest/api/storageservices/datalakestoragegen2/path/update>):
//!     `x-ms-owner`, `x-ms-group`, `x-ms-permissions` (symbolic `rwxr-x---` or 4-digit octal)
//!     and `x-ms-acl` (replaces the whole ACL: "fully replaces the existing access control
//!     list") each replace their field; `x-ms-permissions` with `x-ms-acl` is
//!     `400 InvalidHeaderValue` ("the x-ms-permissions and x-ms-acl request headers are
//!     mutually exclusive"), so is a malformed value; a path not in the container:
//!     `404 PathNotFound`; `200` with `ETag` and `Last-Modified`. A façade started with
//!     `start_refusing_owner_changes` stands for a caller that is no super-user ("Only
//!     super-users can change the owning user of a file or directory"): an `x-ms-owner` is
//!     answered `403 AuthorizationPermissionMismatch` (Path - Create too) and nothing changes.
//!   - Path - Get Properties, `HEAD ...?action=getAccessControl`
//!     (<https://learn.microsoft.com/rest/api/storageservices/datalakestoragegen2/path/get-properties>):
//!     `200` with `x-ms-owner`, `x-ms-group`, `x-ms-permissions`, `x-ms-acl`,
//!     `x-ms-resource-type`, `ETag`, `Last-Modified`; `404 PathNotFound` without a body.
//!   - Any other dfs request: `400 UnsupportedQueryParameter`, naming what the façade does not
//!     emulate.
//!
//! Not emulated yet: a file with names below it (the emulator can hold `a` and `a/b`; an HNS
//! account cannot: the façade shows `a` as a directory); the rest of the dfs endpoint
//! (creating files, rename, delete, append and flush, List Paths, setAccessControlRecursive,
//! filesystem operations); authorization of dfs requests (none is checked, the caller is
//! taken as a super-user unless the façade refuses owner changes; the façade checks no group
//! membership for `x-ms-group`); conditional headers on dfs requests other than
//! `If-None-Match: *` on Path - Create; Path - Create on an existing directory without it
//! answers `201` and changes nothing; the umask Azure applies to inherited entries ("for
//! other, remove all permissions on the child's access ACL"): inherited entries are taken
//! as they are; the mask Azure computes for named entries set without one; the sticky bit
//! (`t`/`T` in `x-ms-permissions` are read as `x`/`-`); `upn`; default entries on a file are
//! kept, not refused; a path deleted or rewritten in the emulator directly (bypassing the
//! façade) keeps the access control the façade held for it; the `ETag` and `Last-Modified`
//! of a path do not change with its access control.

use crate::fault_proxy::{relay, relay_client, serve_on_loopback};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use futures::TryStreamExt;
use lakevault_common::storage::StorageAccount;
use lakevault_plan::hns::cmp_hns;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The owner, owning group, permissions and ACL of one path, as the dfs endpoint writes
/// them (`x-ms-owner`, `x-ms-group`, `x-ms-permissions`, `x-ms-acl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub owner: String,
    pub group: String,
    pub permissions: String,
    pub acl: String,
}

const SUPERUSER: &str = "$superuser";

impl Access {
    /// What a path gets with no default ACL above it: the default permission less the
    /// default umask 0027, owned by `$superuser` in `group`.
    fn initial(directory: bool, group: &str) -> Self {
        let bits = if directory { 0o777 } else { 0o666 } & !DEFAULT_UMASK;
        Self::from_bits(bits, group)
    }

    fn from_bits(bits: u32, group: &str) -> Self {
        let acl = format!(
            "user::{},group::{},other::{}",
            triple(bits >> 6),
            triple(bits >> 3),
            triple(bits)
        );
        Access {
            owner: SUPERUSER.to_string(),
            group: group.to_string(),
            permissions: permissions_of(&acl),
            acl,
        }
    }

    /// What a new child of a directory with access `parent` gets: the parent's default
    /// entries if it has any, else the defaults; the parent's owning group.
    fn inherited(parent: &Access, directory: bool) -> Self {
        let defaults: Vec<&str> = parent
            .acl
            .split(',')
            .map(str::trim)
            .filter(|e| e.starts_with("default:"))
            .collect();
        if defaults.is_empty() {
            return Self::initial(directory, &parent.group);
        }
        let mut entries: Vec<&str> = defaults.iter().map(|e| &e["default:".len()..]).collect();
        if directory {
            entries.extend(defaults.iter().copied());
        }
        let acl = entries.join(",");
        Access {
            owner: SUPERUSER.to_string(),
            group: parent.group.clone(),
            permissions: permissions_of(&acl),
            acl,
        }
    }

    fn has_default_entries(&self) -> bool {
        self.acl
            .split(',')
            .any(|e| e.trim().starts_with("default:"))
    }
}

const DEFAULT_UMASK: u32 = 0o027;

fn triple(bits: u32) -> String {
    let mut s = String::with_capacity(3);
    s.push(if bits & 4 != 0 { 'r' } else { '-' });
    s.push(if bits & 2 != 0 { 'w' } else { '-' });
    s.push(if bits & 1 != 0 { 'x' } else { '-' });
    s
}

/// One ACL entry: `[default:]type:[id]:perms`.
#[derive(Debug, Clone)]
struct Ace {
    default: bool,
    kind: String,
    id: String,
    perms: String,
}

impl Ace {
    fn render(&self) -> String {
        format!(
            "{}{}:{}:{}",
            if self.default { "default:" } else { "" },
            self.kind,
            self.id,
            self.perms
        )
    }
}

/// The entries of an ACL, or `None` when it is not in the documented format
/// "[scope:][type]:[id]:[permissions]" (types `user`, `group`, `mask`, `other`; permissions
/// three of `r`, `w`, `x` or `-`).
fn parse_acl(acl: &str) -> Option<Vec<Ace>> {
    let mut out = Vec::new();
    for entry in acl.split(',').map(str::trim) {
        let (default, rest) = match entry.strip_prefix("default:") {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let [kind, id, perms] = parts.as_slice() else {
            return None;
        };
        let valid_perms = perms.len() == 3
            && perms
                .chars()
                .zip(["r-", "w-", "x-"])
                .all(|(c, allowed)| allowed.contains(c));
        let valid_kind = match *kind {
            "user" | "group" => true,
            "mask" | "other" => id.is_empty(),
            _ => false,
        };
        if !valid_perms || !valid_kind {
            return None;
        }
        out.push(Ace {
            default,
            kind: kind.to_string(),
            id: id.to_string(),
            perms: perms.to_string(),
        });
    }
    Some(out)
}

/// The permissions string of an ACL: owner, mask (or owning group), other, and `+` when it
/// has named entries or a mask. Entries it cannot read count as `---`.
fn permissions_of(acl: &str) -> String {
    let mut user = "---".to_string();
    let mut group = "---".to_string();
    let mut other = "---".to_string();
    let mut mask: Option<String> = None;
    let mut extended = false;
    for entry in acl.split(',').map(str::trim) {
        if entry.starts_with("default:") {
            continue;
        }
        let parts: Vec<&str> = entry.split(':').collect();
        let [kind, id, perms] = parts.as_slice() else {
            continue;
        };
        match (*kind, id.is_empty()) {
            ("user", true) => user = perms.to_string(),
            ("group", true) => group = perms.to_string(),
            ("other", _) => other = perms.to_string(),
            ("mask", _) => {
                mask = Some(perms.to_string());
                extended = true;
            }
            ("user" | "group", false) => extended = true,
            _ => {}
        }
    }
    format!(
        "{user}{}{other}{}",
        mask.unwrap_or(group),
        if extended { "+" } else { "" }
    )
}

/// `x-ms-permissions` as nine `rwx-` characters: symbolic (`rwxr-x---`) or 4-digit octal
/// (`0750`), as the documentation allows ("Both symbolic (rwxrw-rw-) and 4-digit octal
/// notation (e.g. 0766) are supported"). The sticky bit is accepted and dropped.
fn parse_permissions(value: &str) -> Option<String> {
    let value = value.trim();
    if value.len() == 4 && value.chars().all(|c| ('0'..='7').contains(&c)) {
        let bits = u32::from_str_radix(value, 8).ok()?;
        if bits >> 9 > 1 {
            return None;
        }
        return Some(format!(
            "{}{}{}",
            triple(bits >> 6),
            triple(bits >> 3),
            triple(bits)
        ));
    }
    let chars: Vec<char> = value.chars().collect();
    if chars.len() != 9 {
        return None;
    }
    let mut out = String::with_capacity(9);
    for (i, c) in chars.into_iter().enumerate() {
        let c = match (i % 3, c) {
            (0, 'r') | (1, 'w') | (2, 'x') | (_, '-') => c,
            (2, 't') if i == 8 => 'x',
            (2, 'T') if i == 8 => '-',
            _ => return None,
        };
        out.push(c);
    }
    Some(out)
}

/// Nine permission characters as bits.
fn bits_of(permissions: &str) -> u32 {
    permissions
        .chars()
        .take(9)
        .fold(0, |bits, c| bits << 1 | u32::from(c != '-'))
}

/// `x-ms-umask`: "The umask must be specified in 4-digit octal notation".
fn parse_umask(value: &str) -> Option<u32> {
    let value = value.trim();
    (value.len() == 4 && value.chars().all(|c| ('0'..='7').contains(&c)))
        .then(|| u32::from_str_radix(value, 8).ok())
        .flatten()
        .map(|u| u & 0o777)
}

/// The ACL with its owner, owning group (or mask) and other entries set to `permissions`
/// (nine characters), the way `x-ms-permissions` sets them; every other entry kept.
fn apply_permissions(acl: &str, permissions: &str) -> String {
    let mut entries = parse_acl(acl).unwrap_or_default();
    let has_mask = entries.iter().any(|e| !e.default && e.kind == "mask");
    let targets = [
        ("user", &permissions[0..3]),
        (if has_mask { "mask" } else { "group" }, &permissions[3..6]),
        ("other", &permissions[6..9]),
    ];
    for (kind, perms) in targets {
        match entries
            .iter_mut()
            .find(|e| !e.default && e.kind == kind && e.id.is_empty())
        {
            Some(e) => e.perms = perms.to_string(),
            None => entries.push(Ace {
                default: false,
                kind: kind.to_string(),
                id: String::new(),
                perms: perms.to_string(),
            }),
        }
    }
    entries
        .iter()
        .map(Ace::render)
        .collect::<Vec<_>>()
        .join(",")
}

/// Access control per (container, path); the container's root directory is path `""`.
type AccessMap = BTreeMap<(String, String), Access>;

/// The access of `path`, giving it (and first every directory above it) one if it has
/// none: inherited from its parent at this moment.
fn ensure(map: &mut AccessMap, container: &str, path: &str, directory: bool) -> Access {
    let key = (container.to_string(), path.to_string());
    if let Some(access) = map.get(&key) {
        return access.clone();
    }
    let access = if path.is_empty() {
        Access::initial(true, SUPERUSER)
    } else {
        let parent = ensure(map, container, parent_of(path), true);
        Access::inherited(&parent, directory)
    };
    map.insert(key, access.clone());
    access
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map(|(up, _)| up).unwrap_or("")
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    /// The account, straight to the emulator: what the façade reads its view from.
    direct: StorageAccount,
    client: reqwest::Client,
    /// Requests the façade answered itself with a refusal.
    refused: AtomicUsize,
    /// List Blobs requests answered.
    listings: AtomicUsize,
    /// dfs Path - Create (directory), setAccessControl and getAccessControl requests
    /// answered.
    access_requests: AtomicUsize,
    /// Whether the caller may change owners (a super-user).
    owner_changes: bool,
    /// A fault for tests: listing pages come with their entries in reverse order (a
    /// service that breaks its own order).
    misordered: std::sync::atomic::AtomicBool,
    access: Mutex<AccessMap>,
}

impl Shared {
    fn access(&self) -> MutexGuard<'_, AccessMap> {
        self.access.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running façade; stops when dropped.
#[derive(Debug)]
pub struct HnsFacade {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HnsFacade {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HnsFacade {
    /// Starts a façade on a free loopback port in front of `upstream`
    /// (`http://127.0.0.1:port`, no path: the blob service of the emulator).
    pub async fn start(upstream: &str, direct: StorageAccount) -> anyhow::Result<Self> {
        Self::start_with(upstream, direct, true).await
    }

    /// Like `start`, for a caller that is no super-user: a setAccessControl (or a directory
    /// create) that sets `x-ms-owner` is answered `403 AuthorizationPermissionMismatch`, as
    /// a restore target without owner rights answers it.
    pub async fn start_refusing_owner_changes(
        upstream: &str,
        direct: StorageAccount,
    ) -> anyhow::Result<Self> {
        Self::start_with(upstream, direct, false).await
    }

    async fn start_with(
        upstream: &str,
        direct: StorageAccount,
        owner_changes: bool,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            direct,
            client: relay_client()?,
            refused: AtomicUsize::new(0),
            listings: AtomicUsize::new(0),
            access_requests: AtomicUsize::new(0),
            owner_changes,
            misordered: std::sync::atomic::AtomicBool::new(false),
            access: Mutex::new(BTreeMap::new()),
        });
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(shared.clone());
        let (addr, task) = serve_on_loopback(app, "the HNS façade").await?;
        Ok(Self { addr, shared, task })
    }

    /// The façade's base URL (`http://127.0.0.1:port`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests refused as Azure refuses them on an account with a hierarchical namespace
    /// (blob index tags).
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// From now on, listing pages come with their entries in reverse order, as a service
    /// that broke its own order would send them (a fault for tests).
    pub fn misorder_listings(&self) {
        self.shared.misordered.store(true, Ordering::SeqCst);
    }

    /// List Blobs requests answered so far (pages, each one request).
    pub fn listings(&self) -> usize {
        self.shared.listings.load(Ordering::SeqCst)
    }

    /// dfs requests answered so far: Path - Create (directory), setAccessControl and
    /// getAccessControl, whatever the answer.
    pub fn access_requests(&self) -> usize {
        self.shared.access_requests.load(Ordering::SeqCst)
    }

    /// The access control the façade holds now for `path` in `container` (`""`: the root
    /// directory), if it has seen the path.
    pub fn access(&self, container: &str, path: &str) -> Option<Access> {
        self.shared
            .access()
            .get(&(container.to_string(), path.trim_matches('/').to_string()))
            .cloned()
    }

    /// Sets the access control of `path` in `container` (`""`: the root directory), as
    /// if set through the dfs endpoint, without checking that the path exists.
    pub fn set_access(&self, container: &str, path: &str, access: Access) {
        self.shared.access().insert(
            (container.to_string(), path.trim_matches('/').to_string()),
            access,
        );
    }
}

/// The query's `name=value` pairs, as sent (values not decoded: only ASCII values are
/// looked at).
fn query_pairs(request: &Request) -> Vec<(String, String)> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), v.to_string()),
            None => (p.to_ascii_lowercase(), String::new()),
        })
        .collect()
}

fn has(query: &[(String, String)], key: &str, value: &str) -> bool {
    query.iter().any(|(k, v)| {
        k == key
            && percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .split(',')
                .any(|item| item.eq_ignore_ascii_case(value))
    })
}

fn answer(status: StatusCode, headers: &[(&str, &str)], code: Option<&str>) -> Response {
    let mut builder = Response::builder()
        .status(status)
        .header("x-ms-version", "2025-11-05")
        .header("x-ms-request-id", uuid::Uuid::new_v4().to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = match code {
        Some(code) => {
            builder = builder
                .header("x-ms-error-code", code)
                .header("content-type", "application/xml");
            Body::from(format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>not supported on an account with a hierarchical namespace (HNS façade)</Message></Error>"
            ))
        }
        None => Body::empty(),
    };
    builder.body(body).unwrap_or_default()
}

async fn serve(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let query = query_pairs(&request);
    if query.iter().any(|(k, _)| k == "action" || k == "resource") {
        return dfs(&shared, request, &query).await;
    }
    if has(&query, "restype", "account") && has(&query, "comp", "properties") {
        return answer(
            StatusCode::OK,
            &[
                ("x-ms-is-hns-enabled", "true"),
                ("x-ms-account-kind", "StorageV2"),
                ("x-ms-sku-name", "Standard_LRS"),
            ],
            None,
        );
    }
    if has(&query, "comp", "tags") || has(&query, "include", "tags") {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return answer(
            StatusCode::BAD_REQUEST,
            &[],
            Some("InvalidQueryParameterValue"),
        );
    }
    if has(&query, "restype", "container") && has(&query, "comp", "list") {
        let path = request.uri().path().to_string();
        shared.listings.fetch_add(1, Ordering::SeqCst);
        return list_blobs(&shared, &path, &query).await;
    }
    relay_tracking_access(&shared, request, &query).await
}

/// The container and path a request names (`/<account>/<container>/<path>`), decoded; the
/// path without leading or trailing `/`, `""` for the container itself.
fn target(uri_path: &str) -> Option<(String, String)> {
    let mut parts = uri_path.trim_start_matches('/').splitn(3, '/');
    let _account = parts.next()?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let container = decode(parts.next()?);
    if container.is_empty() {
        return None;
    }
    let path = decode(parts.next().unwrap_or_default());
    Some((container, path.trim_matches('/').to_string()))
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// What a relayed request does to the namespace, for the access control the façade keeps.
enum Effect {
    /// Put Blob, Copy Blob From URL or Copy Blob, Put Block List: the path exists.
    Write(String, String),
    /// Delete Blob of the base blob: the path is gone.
    Delete(String, String),
    /// Delete Container: every path of it is gone.
    DeleteContainer(String),
    None,
}

/// Relays the request and keeps the façade's access control in step with what it did.
async fn relay_tracking_access(
    shared: &Shared,
    request: Request,
    query: &[(String, String)],
) -> Response {
    let method = request.method().clone();
    let copy = request.headers().contains_key("x-ms-copy-source");
    let only_snapshots = header(request.headers(), "x-ms-delete-snapshots")
        .is_some_and(|v| v.eq_ignore_ascii_case("only"));
    let key = |k: &str| query.iter().any(|(q, _)| q == k);
    let effect = match target(request.uri().path()) {
        Some((container, path)) if !path.is_empty() && !key("restype") => {
            if method == Method::PUT && (!key("comp") || has(query, "comp", "blocklist")) {
                Effect::Write(container, path)
            } else if method == Method::DELETE
                && !key("comp")
                && !key("snapshot")
                && !key("versionid")
                && !only_snapshots
            {
                Effect::Delete(container, path)
            } else {
                Effect::None
            }
        }
        Some((container, path))
            if path.is_empty()
                && method == Method::DELETE
                && has(query, "restype", "container") =>
        {
            Effect::DeleteContainer(container)
        }
        _ => Effect::None,
    };
    let response = relay(&shared.client, &shared.upstream, request, false).await;
    let status = response.status();
    match effect {
        // Copy Blob (asynchronous) answers 202; everything else that writes a blob, 201.
        Effect::Write(container, path)
            if status == StatusCode::CREATED || (copy && status == StatusCode::ACCEPTED) =>
        {
            written(shared, &container, &path).await;
        }
        Effect::Delete(container, path) if status == StatusCode::ACCEPTED => {
            shared.access().remove(&(container, path));
        }
        Effect::DeleteContainer(container) if status == StatusCode::ACCEPTED => {
            shared.access().retain(|(c, _), _| *c != container);
        }
        _ => {}
    }
    response
}

/// A path was written: if the façade has not seen it, it gets its access control now,
/// inherited from its parent (a directory if the emulator holds it with `hdi_isfolder`).
async fn written(shared: &Shared, container: &str, path: &str) {
    let key = (container.to_string(), path.to_string());
    if shared.access().contains_key(&key) {
        return;
    }
    let directory = emulator_kind(&shared.direct, container, path)
        .await
        .unwrap_or(false);
    ensure(&mut shared.access(), container, path, directory);
}

/// The container as a hierarchical namespace holds it (`namespace_view`), every path in it
/// given its access control if the façade sees it for the first time (parents first).
async fn view_with_access(
    shared: &Shared,
    container: &str,
    prefix: &str,
) -> anyhow::Result<Vec<Entry>> {
    let view = namespace_view(&shared.direct, container, prefix).await?;
    let mut map = shared.access();
    ensure(&mut map, container, "", true);
    for entry in &view {
        ensure(&mut map, container, &entry.name, entry.directory);
    }
    Ok(view)
}

/// An `ETag` header value: quoted, as the service sends it.
fn quoted(etag: &str) -> String {
    format!("\"{}\"", etag.trim_matches('"'))
}

/// The `ETag` and `Last-Modified` of a container (its root directory).
async fn root_properties(direct: &StorageAccount, container: &str) -> (String, String) {
    use azure_storage_blob::models::BlobContainerClientGetPropertiesResultHeaders;
    let Ok(client) = direct.container(container) else {
        return Default::default();
    };
    match client.get_properties(None).await {
        Ok(props) => (
            props
                .etag()
                .ok()
                .flatten()
                .map(|e| quoted(e.as_ref()))
                .unwrap_or_default(),
            props
                .last_modified()
                .ok()
                .flatten()
                .map(|t| azure_core::time::to_rfc7231(&t))
                .unwrap_or_default(),
        ),
        Err(_) => Default::default(),
    }
}

/// The `ETag` and `Last-Modified` of a path of the view (`""`: the root directory).
async fn properties_of(
    direct: &StorageAccount,
    container: &str,
    entry: Option<&Entry>,
) -> (String, String) {
    match entry {
        Some(e) => (quoted(&e.etag), e.last_modified.clone()),
        None => root_properties(direct, container).await,
    }
}

/// An error as the dfs endpoint answers it: `x-ms-error-code` and, but for `HEAD`, the
/// JSON `StorageError` body (`{"error":{"code":...,"message":...}}`).
fn dfs_error(status: StatusCode, code: &str, message: &str, head: bool) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut builder = Response::builder()
        .status(status)
        .header("x-ms-version", "2025-11-05")
        .header("x-ms-request-id", request_id.as_str())
        .header("x-ms-error-code", code);
    let body = if head {
        Body::empty()
    } else {
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        builder = builder.header("content-type", "application/json;charset=utf-8");
        Body::from(
            serde_json::json!({
                "error": {
                    "code": code,
                    "message": format!("{message}\nRequestId:{request_id}\nTime:{time}"),
                }
            })
            .to_string(),
        )
    };
    builder.body(body).unwrap_or_default()
}

fn dfs_ok(status: StatusCode, headers: &[(&str, &str)]) -> Response {
    let mut builder = Response::builder()
        .status(status)
        .header("x-ms-version", "2025-11-05")
        .header("x-ms-request-id", uuid::Uuid::new_v4().to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).unwrap_or_default()
}

const PATH_NOT_FOUND: &str = "The specified path does not exist.";
const INVALID_HEADER: &str = "The value for one of the HTTP headers is not in the correct format.";

/// `400 InvalidHeaderValue`, naming the header.
fn invalid_header(what: &str) -> Response {
    dfs_error(
        StatusCode::BAD_REQUEST,
        "InvalidHeaderValue",
        &format!("{INVALID_HEADER} ({what})"),
        false,
    )
}

/// The access-control headers of a dfs request, checked.
#[derive(Clone)]
struct AccessHeaders {
    owner: Option<String>,
    group: Option<String>,
    /// Nine `rwx-` characters.
    permissions: Option<String>,
    acl: Option<String>,
}

impl AccessHeaders {
    /// The headers, or which of them is malformed.
    fn read(sent: &HeaderMap) -> Result<Self, &'static str> {
        let permissions = header(sent, "x-ms-permissions");
        let acl = header(sent, "x-ms-acl");
        if permissions.is_some() && acl.is_some() {
            return Err("x-ms-permissions is invalid in conjunction with x-ms-acl");
        }
        let permissions = match permissions {
            Some(p) => match parse_permissions(&p) {
                Some(p) => Some(p),
                None => return Err("x-ms-permissions"),
            },
            None => None,
        };
        if let Some(acl) = &acl
            && parse_acl(acl).is_none()
        {
            return Err("x-ms-acl");
        }
        Ok(AccessHeaders {
            owner: header(sent, "x-ms-owner"),
            group: header(sent, "x-ms-group"),
            permissions,
            acl,
        })
    }

    /// `access` with these headers applied.
    fn apply(&self, mut access: Access) -> Access {
        if let Some(acl) = &self.acl {
            access.acl = acl.clone();
        }
        if let Some(permissions) = &self.permissions {
            access.acl = apply_permissions(&access.acl, permissions);
        }
        if self.acl.is_some() || self.permissions.is_some() {
            access.permissions = permissions_of(&access.acl);
        }
        if let Some(owner) = &self.owner {
            access.owner = owner.clone();
        }
        if let Some(group) = &self.group {
            access.group = group.clone();
        }
        access
    }
}

/// The dfs requests the façade answers; any other is refused, naming it.
async fn dfs(shared: &Shared, request: Request, query: &[(String, String)]) -> Response {
    let method = request.method().clone();
    let head = method == Method::HEAD;
    let action = value(query, "action");
    let resource = value(query, "resource");
    let is =
        |v: &Option<String>, want: &str| v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(want));
    let kind = if method == Method::PUT && action.is_none() && is(&resource, "directory") {
        "create"
    } else if method == Method::PATCH && resource.is_none() && is(&action, "setAccessControl") {
        "set"
    } else if method == Method::HEAD && resource.is_none() && is(&action, "getAccessControl") {
        "get"
    } else {
        let what = match (&action, &resource) {
            (Some(a), _) => format!("action={a}"),
            (None, Some(r)) => format!("resource={r}"),
            (None, None) => String::new(),
        };
        return dfs_error(
            StatusCode::BAD_REQUEST,
            "UnsupportedQueryParameter",
            &format!(
                "One of the query parameters specified in the request URI is not supported. \
                     The HNS façade does not emulate {method} with {what}: of the dfs endpoint it \
                     answers only PUT resource=directory, PATCH action=setAccessControl and HEAD \
                     action=getAccessControl."
            ),
            head,
        );
    };
    shared.access_requests.fetch_add(1, Ordering::SeqCst);
    let Some((container, path)) = target(request.uri().path()) else {
        return dfs_error(
            StatusCode::BAD_REQUEST,
            "InvalidUri",
            "The request URI is invalid.",
            head,
        );
    };
    match kind {
        "create" => create_directory(shared, request.headers(), &container, &path).await,
        "set" => set_access_control(shared, request.headers(), &container, &path).await,
        _ => get_access_control(shared, &container, &path).await,
    }
}

/// The view of the paths at and below `path` (and siblings that start with its name),
/// read from the emulator with that prefix: a request about one path costs what lies below
/// it, not the whole container.
async fn view_or_error(
    shared: &Shared,
    container: &str,
    path: &str,
    head: bool,
) -> Result<Vec<Entry>, Response> {
    view_with_access(shared, container, path)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "HNS façade: reading the container failed");
            dfs_error(
                StatusCode::NOT_FOUND,
                "FilesystemNotFound",
                "The specified filesystem does not exist.",
                head,
            )
        })
}

fn refuse_owner_change(shared: &Shared, headers: &AccessHeaders) -> Option<Response> {
    (!shared.owner_changes && headers.owner.is_some()).then(|| {
        dfs_error(
            StatusCode::FORBIDDEN,
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission. \
             (Only super-users can change the owning user of a file or directory.)",
            false,
        )
    })
}

/// Path - Get Properties with `action=getAccessControl`.
async fn get_access_control(shared: &Shared, container: &str, path: &str) -> Response {
    let entry = match path_entry(shared, container, path, true).await {
        Ok(entry) => entry,
        Err(response) => return response,
    };
    let entry = entry.as_ref();
    if entry.is_none() && !path.is_empty() {
        return dfs_error(StatusCode::NOT_FOUND, "PathNotFound", PATH_NOT_FOUND, true);
    }
    let directory = entry.is_none_or(|e| e.directory);
    let access = ensure(&mut shared.access(), container, path, directory);
    let (etag, last_modified) = properties_of(&shared.direct, container, entry).await;
    dfs_ok(
        StatusCode::OK,
        &[
            ("etag", &etag),
            ("last-modified", &last_modified),
            ("x-ms-owner", &access.owner),
            ("x-ms-group", &access.group),
            ("x-ms-permissions", &access.permissions),
            ("x-ms-acl", &access.acl),
            (
                "x-ms-resource-type",
                if directory { "directory" } else { "file" },
            ),
        ],
    )
}

/// Path - Update with `action=setAccessControl`.
async fn set_access_control(
    shared: &Shared,
    sent: &HeaderMap,
    container: &str,
    path: &str,
) -> Response {
    let headers = match AccessHeaders::read(sent) {
        Ok(headers) => headers,
        Err(what) => return invalid_header(what),
    };
    let entry = match path_entry(shared, container, path, false).await {
        Ok(entry) => entry,
        Err(response) => return response,
    };
    let entry = entry.as_ref();
    if entry.is_none() && !path.is_empty() {
        return dfs_error(StatusCode::NOT_FOUND, "PathNotFound", PATH_NOT_FOUND, false);
    }
    // Paths below a directory written straight to the emulator exist before its new
    // default ACL: they are seen (and given their access control) first, so that they do
    // not inherit what is set now.
    if entry.is_none_or(|e| e.directory) {
        let below = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        if let Err(response) = view_or_error(shared, container, &below, false).await {
            return response;
        }
    }
    if let Some(refusal) = refuse_owner_change(shared, &headers) {
        return refusal;
    }
    {
        let mut map = shared.access();
        let current = ensure(&mut map, container, path, entry.is_none_or(|e| e.directory));
        map.insert(
            (container.to_string(), path.to_string()),
            headers.apply(current),
        );
    }
    let (etag, last_modified) = properties_of(&shared.direct, container, entry).await;
    dfs_ok(
        StatusCode::OK,
        &[("etag", &etag), ("last-modified", &last_modified)],
    )
}

/// One path as the namespace holds it, read on its own (a request about one path should
/// cost a request or two, not a listing): the emulator's blob under that name, or a
/// directory implied by names below it (created in the emulator first, as
/// `namespace_view` does). `Ok(None)`: no such path; `""` is the root, never an entry.
async fn path_entry(
    shared: &Shared,
    container: &str,
    path: &str,
    head: bool,
) -> Result<Option<Entry>, Response> {
    use azure_storage_blob::models::BlobContainerClientListBlobsOptions;
    let missing = || {
        dfs_error(
            StatusCode::NOT_FOUND,
            "FilesystemNotFound",
            "The specified filesystem does not exist.",
            head,
        )
    };
    if path.is_empty() {
        return Ok(None);
    }
    if let Some(entry) = emulator_entry(&shared.direct, container, path).await {
        ensure(&mut shared.access(), container, path, entry.directory);
        return Ok(Some(entry));
    }
    let client = shared.direct.container(container).map_err(|_| missing())?;
    let options = BlobContainerClientListBlobsOptions {
        prefix: Some(format!("{path}/")),
        maxresults: Some(1),
        ..Default::default()
    };
    let below = match client.list_blobs(Some(options)) {
        Ok(pager) => {
            let mut pages = pager.into_pages();
            match pages.try_next().await {
                Ok(Some(page)) => page
                    .into_model()
                    .ok()
                    .and_then(|m| m.blob_items.first().cloned())
                    .is_some(),
                Ok(None) => false,
                Err(_) => return Err(missing()),
            }
        }
        Err(_) => return Err(missing()),
    };
    if !below {
        return Ok(None);
    }
    if let Err(e) = crate::lake::put_directory(&shared.direct, container, path).await {
        tracing::warn!(error = %e, "HNS façade: creating a directory failed");
    }
    let entry = emulator_entry(&shared.direct, container, path).await;
    if entry.is_some() {
        ensure(&mut shared.access(), container, path, true);
    }
    Ok(entry)
}

/// The emulator's blob under one name, as an entry of the namespace.
async fn emulator_entry(direct: &StorageAccount, container: &str, name: &str) -> Option<Entry> {
    use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders;
    let props = direct
        .blob(container, name)
        .ok()?
        .get_properties(None)
        .await
        .ok()?;
    let directory = props.metadata().is_ok_and(|m| {
        m.iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("hdi_isfolder") && v.eq_ignore_ascii_case("true"))
    });
    Some(Entry {
        name: name.to_string(),
        directory,
        etag: props
            .etag()
            .ok()
            .flatten()
            .map(|e| e.to_string())
            .unwrap_or_default(),
        size: props.content_length().ok().flatten().unwrap_or(0),
        last_modified: props
            .last_modified()
            .ok()
            .flatten()
            .map(|t| azure_core::time::to_rfc7231(&t))
            .unwrap_or_default(),
        content_md5: None,
        content_type: None,
    })
}

/// What the emulator holds under one name: `Some(true)` a directory blob (`hdi_isfolder`),
/// `Some(false)` a file, `None` nothing.
async fn emulator_kind(direct: &StorageAccount, container: &str, name: &str) -> Option<bool> {
    emulator_entry(direct, container, name)
        .await
        .map(|e| e.directory)
}

/// Path - Create with `resource=directory`.
async fn create_directory(
    shared: &Shared,
    sent: &HeaderMap,
    container: &str,
    path: &str,
) -> Response {
    let headers = match AccessHeaders::read(sent) {
        Ok(headers) => headers,
        Err(what) => return invalid_header(what),
    };
    let umask = match header(sent, "x-ms-umask") {
        Some(u) => match parse_umask(&u) {
            Some(u) => u,
            None => return invalid_header("x-ms-umask"),
        },
        None => DEFAULT_UMASK,
    };
    let if_none_match = header(sent, "if-none-match").is_some_and(|v| v.trim_matches('"') == "*");
    let view = match view_or_error(shared, container, path, false).await {
        Ok(view) => view,
        Err(response) => return response,
    };
    let find = |name: &str| view.iter().find(|e| e.name == name);
    let existing = find(path);
    if existing.is_some_and(|e| !e.directory) {
        return dfs_error(
            StatusCode::CONFLICT,
            "ResourceTypeMismatch",
            "The resource type specified in the request does not match the type of the resource.",
            false,
        );
    }
    if existing.is_some() || path.is_empty() {
        if if_none_match {
            return dfs_error(
                StatusCode::CONFLICT,
                "PathAlreadyExists",
                "The specified path already exists.",
                false,
            );
        }
        let (etag, last_modified) = properties_of(&shared.direct, container, existing).await;
        return dfs_ok(
            StatusCode::CREATED,
            &[
                ("etag", &etag),
                ("last-modified", &last_modified),
                ("content-length", "0"),
            ],
        );
    }
    // The directories above, top down: each read on its own (the view holds only what is
    // below the path). `None`: no blob in the emulator (absent, or implied by names below).
    let ancestors: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
    let mut above: BTreeMap<&str, Option<bool>> = BTreeMap::new();
    for a in &ancestors {
        above.insert(a, emulator_kind(&shared.direct, container, a).await);
    }
    if above.values().any(|kind| *kind == Some(false)) {
        return dfs_error(
            StatusCode::CONFLICT,
            "PathConflict",
            "The specified path, or an element of the path, exists and its resource type is \
             invalid for this operation.",
            false,
        );
    }
    if let Some(refusal) = refuse_owner_change(shared, &headers) {
        return refusal;
    }
    let missing: Vec<String> = ancestors
        .iter()
        .filter(|a| above.get(*a).is_some_and(Option::is_none))
        .map(|a| a.to_string())
        .chain(std::iter::once(path.to_string()))
        .collect();
    for name in &missing {
        if let Err(e) = crate::lake::put_directory(&shared.direct, container, name).await {
            tracing::warn!(error = %e, "HNS façade: creating a directory failed");
            return dfs_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "The server encountered an internal error. Please retry the request.",
                false,
            );
        }
    }
    {
        let mut map = shared.access();
        for name in &missing {
            let parent = ensure(&mut map, container, parent_of(name), true);
            let access = if name == path {
                if parent.has_default_entries() {
                    headers.apply(Access::inherited(&parent, true))
                } else {
                    // "When creating a file or directory and the parent folder does not have
                    // a default ACL, the umask restricts the permissions".
                    let p = headers.permissions.as_deref().map_or(0o777, bits_of);
                    let rest = AccessHeaders {
                        permissions: None,
                        ..headers.clone()
                    };
                    rest.apply(Access::from_bits(p & !umask, &parent.group))
                }
            } else {
                Access::inherited(&parent, true)
            };
            map.insert((container.to_string(), name.clone()), access);
        }
    }
    let (etag, last_modified) = emulator_entry(&shared.direct, container, path)
        .await
        .map(|e| (quoted(&e.etag), e.last_modified))
        .unwrap_or_default();
    dfs_ok(
        StatusCode::CREATED,
        &[
            ("etag", &etag),
            ("last-modified", &last_modified),
            ("content-length", "0"),
        ],
    )
}

/// One entry of the hierarchical namespace.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    directory: bool,
    etag: String,
    size: u64,
    last_modified: String,
    content_md5: Option<String>,
    content_type: Option<String>,
}

/// What a listing page holds: an entry, or the prefix of a directory's children.
#[derive(Debug, Clone)]
enum Item {
    Blob(Entry),
    Prefix(String),
}

impl Item {
    /// Where the item stands in the listing: a directory's prefix right after its entry.
    fn position(&self) -> (&str, bool) {
        match self {
            Item::Blob(e) => (&e.name, false),
            Item::Prefix(p) => (p.trim_end_matches('/'), true),
        }
    }

    fn marker(&self) -> String {
        let (name, prefix) = self.position();
        format!("{}{}", if prefix { "p" } else { "b" }, hex::encode(name))
    }
}

/// A query value, decoded as a form value (`+` is a space; the SDK writes spaces so).
fn value(query: &[(String, String)], key: &str) -> Option<String> {
    query.iter().find(|(k, _)| k == key).map(|(_, v)| {
        percent_encoding::percent_decode_str(&v.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    })
}

/// The container as a hierarchical namespace holds it, in its listing order. A directory
/// the emulator holds no blob for (a path above a blob) is created there first, as an
/// empty blob with `hdi_isfolder=true`: on an HNS account every directory exists, and reads
/// and copies of it go straight to the emulator.
///
/// Only names starting with `prefix` are read (and only directories whose names start
/// with it are implied): what a listing with that prefix, or a request about that path,
/// needs.
async fn namespace_view(
    direct: &StorageAccount,
    container: &str,
    prefix: &str,
) -> anyhow::Result<Vec<Entry>> {
    let view = read_view(direct, container, prefix).await?;
    let missing: Vec<&Entry> = view.iter().filter(|e| e.etag.is_empty()).collect();
    if missing.is_empty() {
        return Ok(view);
    }
    for dir in missing {
        crate::lake::put_directory(direct, container, &dir.name).await?;
    }
    read_view(direct, container, prefix).await
}

async fn read_view(
    direct: &StorageAccount,
    container: &str,
    prefix: &str,
) -> anyhow::Result<Vec<Entry>> {
    use azure_storage_blob::models::{BlobContainerClientListBlobsOptions, ListBlobsIncludeItem};
    let client = direct.container(container)?;
    let options = BlobContainerClientListBlobsOptions {
        include: Some(vec![ListBlobsIncludeItem::Metadata]),
        prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
        ..Default::default()
    };
    let items: Vec<_> = client.list_blobs(Some(options))?.try_collect().await?;
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for item in items {
        let (Some(name), Some(props)) = (item.name, item.properties) else {
            continue;
        };
        let folder = item
            .metadata
            .and_then(|m| m.values)
            .is_some_and(|m| m.get("hdi_isfolder").is_some_and(|v| v == "true"));
        entries.insert(
            name.clone(),
            Entry {
                directory: folder,
                etag: props.etag.map(|e| e.to_string()).unwrap_or_default(),
                size: props.content_length.unwrap_or(0),
                last_modified: props
                    .last_modified
                    .map(|t| azure_core::time::to_rfc7231(&t))
                    .unwrap_or_default(),
                content_md5: props
                    .content_md5
                    .filter(|m| !m.is_empty())
                    .map(azure_core::base64::encode),
                content_type: props.content_type,
                name,
            },
        );
    }
    // Every path above an entry is a directory (also where the emulator holds a file).
    let names: Vec<String> = entries.keys().cloned().collect();
    for name in names {
        let mut parent = name.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            parent = up;
            // No ETag: not in the emulator yet (created by `namespace_view`).
            let implied = Entry {
                name: up.to_string(),
                directory: true,
                etag: String::new(),
                size: 0,
                last_modified: azure_core::time::to_rfc7231(&time::OffsetDateTime::UNIX_EPOCH),
                content_md5: None,
                content_type: None,
            };
            if !up.starts_with(prefix) {
                break;
            }
            let entry = entries.entry(up.to_string()).or_insert(implied);
            entry.directory = true;
        }
    }
    let mut view: Vec<Entry> = entries.into_values().collect();
    view.sort_by(|a, b| cmp_hns(&a.name, &b.name));
    Ok(view)
}

fn xml_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A name as List Blobs writes it: escaped, or percent-encoded (`Encoded="true"`) when it
/// holds characters XML 1.0 cannot carry.
fn xml_name(name: &str) -> String {
    if name
        .chars()
        .any(|c| (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r')
        || name.contains('\u{FFFE}')
        || name.contains('\u{FFFF}')
    {
        let encoded =
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
        format!("<Name Encoded=\"true\">{encoded}</Name>")
    } else {
        format!("<Name>{}</Name>", xml_text(name))
    }
}

/// An item as List Blobs writes it; with `access` (`include=permissions`), its owner,
/// group, permissions and ACL after the `Etag`, as in the documentation's example.
fn render(item: &Item, access: Option<&Access>) -> String {
    match item {
        Item::Prefix(p) => format!("<BlobPrefix>{}</BlobPrefix>", xml_name(p)),
        Item::Blob(e) => {
            let mut props = format!(
                "<Last-Modified>{}</Last-Modified><Etag>{}</Etag>",
                e.last_modified,
                xml_text(&e.etag)
            );
            if let Some(a) = access {
                props.push_str(&format!(
                    "<Owner>{}</Owner><Group>{}</Group><Permissions>{}</Permissions><Acl>{}</Acl>",
                    xml_text(&a.owner),
                    xml_text(&a.group),
                    xml_text(&a.permissions),
                    xml_text(&a.acl)
                ));
            }
            props.push_str(&format!("<Content-Length>{}</Content-Length>", e.size));
            if let Some(t) = &e.content_type {
                props.push_str(&format!("<Content-Type>{}</Content-Type>", xml_text(t)));
            }
            if let Some(m) = &e.content_md5 {
                props.push_str(&format!("<Content-MD5>{m}</Content-MD5>"));
            }
            props.push_str("<BlobType>BlockBlob</BlobType>");
            props.push_str(if e.directory {
                "<ResourceType>directory</ResourceType>"
            } else {
                "<ResourceType>file</ResourceType>"
            });
            let metadata = if e.directory {
                "<Metadata><hdi_isfolder>true</hdi_isfolder></Metadata>"
            } else {
                ""
            };
            format!(
                "<Blob>{}<Properties>{props}</Properties>{metadata}</Blob>",
                xml_name(&e.name)
            )
        }
    }
}

/// List Blobs, as an account with a hierarchical namespace answers it.
async fn list_blobs(shared: &Shared, path: &str, query: &[(String, String)]) -> Response {
    let path = path.trim_start_matches('/');
    let Some((_, container)) = path.split_once('/') else {
        return answer(StatusCode::BAD_REQUEST, &[], Some("InvalidUri"));
    };
    let container = percent_encoding::percent_decode_str(container)
        .decode_utf8_lossy()
        .into_owned();
    let prefix = value(query, "prefix").unwrap_or_default();
    let view = match view_with_access(shared, &container, &prefix).await {
        Ok(view) => view,
        Err(e) => {
            tracing::warn!(error = %e, "HNS façade: reading the container failed");
            return answer(StatusCode::NOT_FOUND, &[], Some("ContainerNotFound"));
        }
    };
    let hierarchical = value(query, "delimiter").is_some_and(|d| d == "/");
    let max: usize = value(query, "maxresults")
        .and_then(|m| m.parse().ok())
        .unwrap_or(5_000)
        .clamp(1, 5_000);
    let mut items = Vec::new();
    for entry in view.into_iter().filter(|e| e.name.starts_with(&prefix)) {
        if hierarchical {
            if entry.name[prefix.len()..].contains('/') {
                continue;
            }
            let directory = entry.directory.then(|| format!("{}/", entry.name));
            items.push(Item::Blob(entry));
            items.extend(directory.map(Item::Prefix));
        } else {
            items.push(Item::Blob(entry));
        }
    }
    let start = match value(query, "marker").filter(|m| !m.is_empty()) {
        Some(marker) => items
            .iter()
            .position(|i| i.marker() == marker)
            .unwrap_or(items.len()),
        None => 0,
    };
    let page = &items[start.min(items.len())..];
    let next = page.get(max).map(Item::marker);
    let permissions = has(query, "include", "permissions");
    let mut page: Vec<&Item> = page.iter().take(max).collect();
    if shared.misordered.load(Ordering::SeqCst) {
        page.reverse();
    }
    let body: String = {
        let map = shared.access();
        page.into_iter()
            .map(|item| {
                let access = match item {
                    Item::Blob(e) if permissions => map.get(&(container.clone(), e.name.clone())),
                    _ => None,
                };
                render(item, access)
            })
            .collect()
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ContainerName=\"{}\"><Prefix>{}</Prefix><MaxResults>{max}</MaxResults>{}<Blobs>{body}</Blobs><NextMarker>{}</NextMarker></EnumerationResults>",
        xml_text(&container),
        xml_text(&prefix),
        if hierarchical {
            "<Delimiter>/</Delimiter>"
        } else {
            ""
        },
        next.unwrap_or_default()
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/xml")
        .header("x-ms-version", "2025-11-05")
        .header("x-ms-request-id", uuid::Uuid::new_v4().to_string())
        .body(Body::from(xml))
        .unwrap_or_default()
}

/// One entry of a container on an account with a hierarchical namespace, as lakevault's
/// walk lists it: size, Content-MD5 and access control (with whether it is a directory).
pub type HnsEntry = (
    u64,
    Option<String>,
    Option<lakevault_common::access::PathAccess>,
);

/// Every entry of a container of an account with a hierarchical namespace (the façade's
/// account), walked the way lakevault walks a source, with access control.
pub async fn hns_entries(
    account: &StorageAccount,
    container: &str,
) -> anyhow::Result<BTreeMap<String, HnsEntry>> {
    use lakevault_plan::hns::{ContainerDirectories, walk_in_flat_order};
    let directories = ContainerDirectories {
        lister: lakevault_plan::listing::Lister::new(account, container)?,
        page_size: None,
    };
    walk_in_flat_order(directories, String::new())
        .map_ok(|b| (b.name, (b.size, b.content_md5, b.access.map(|a| *a))))
        .try_collect()
        .await
        .map_err(|e| anyhow::anyhow!("walking {container}: {e}"))
}

/// Writes a copy of the config at `path` to `out`, with `account`'s blob endpoint
/// (`direct`, the emulator's) replaced by the façade's.
pub fn config_behind(
    path: &std::path::Path,
    direct: &str,
    facade: &HnsFacade,
    account: &str,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    anyhow::ensure!(
        text.contains(direct),
        "the config does not name the endpoint {direct}"
    );
    std::fs::write(
        out,
        text.replace(direct, &format!("{}/{account}", facade.url())),
    )?;
    Ok(())
}
