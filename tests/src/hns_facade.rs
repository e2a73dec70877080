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
//!   in full): a directory for every path above a blob (created in the emulator as an empty
//!   blob with `hdi_isfolder=true` when missing, so that it can be read and copied), and a
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
//! Not emulated yet: `include=permissions` (owner, group, permissions, ACL), the dfs
//! endpoint (directories, access control), and a file with names below it (the emulator
//! can hold `a` and `a/b`; an HNS account cannot: the façade shows `a` as a directory).

use crate::fault_proxy::{relay, relay_client, serve_on_loopback};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures::TryStreamExt;
use lakevault_common::storage::StorageAccount;
use lakevault_plan::hns::cmp_hns;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            direct,
            client: relay_client()?,
            refused: AtomicUsize::new(0),
            listings: AtomicUsize::new(0),
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

    /// List Blobs requests answered so far (pages, each one request).
    pub fn listings(&self) -> usize {
        self.shared.listings.load(Ordering::SeqCst)
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
    relay(&shared.client, &shared.upstream, request, false).await
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
async fn namespace_view(direct: &StorageAccount, container: &str) -> anyhow::Result<Vec<Entry>> {
    let view = read_view(direct, container).await?;
    let missing: Vec<&Entry> = view.iter().filter(|e| e.etag.is_empty()).collect();
    if missing.is_empty() {
        return Ok(view);
    }
    for dir in missing {
        crate::lake::put_directory(direct, container, &dir.name).await?;
    }
    read_view(direct, container).await
}

async fn read_view(direct: &StorageAccount, container: &str) -> anyhow::Result<Vec<Entry>> {
    use azure_storage_blob::models::{BlobContainerClientListBlobsOptions, ListBlobsIncludeItem};
    let client = direct.container(container)?;
    let options = BlobContainerClientListBlobsOptions {
        include: Some(vec![ListBlobsIncludeItem::Metadata]),
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

fn render(item: &Item) -> String {
    match item {
        Item::Prefix(p) => format!("<BlobPrefix>{}</BlobPrefix>", xml_name(p)),
        Item::Blob(e) => {
            let mut props = format!(
                "<Last-Modified>{}</Last-Modified><Etag>{}</Etag><Content-Length>{}</Content-Length>",
                e.last_modified,
                xml_text(&e.etag),
                e.size
            );
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
    let view = match namespace_view(&shared.direct, &container).await {
        Ok(view) => view,
        Err(e) => {
            tracing::warn!(error = %e, "HNS façade: reading the container failed");
            return answer(StatusCode::NOT_FOUND, &[], Some("ContainerNotFound"));
        }
    };
    let prefix = value(query, "prefix").unwrap_or_default();
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
    let body: String = page.iter().take(max).map(render).collect();
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
