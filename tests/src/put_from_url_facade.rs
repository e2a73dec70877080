//! A façade that gives one emulator account Put Blob From URL, which the emulator answers
//! `501 Not Implemented`, the way `fault_proxy.rs` sits in front of the emulator: point an
//! account's blob endpoint at `url()`. Every other request is relayed unchanged.
//!
//! What it imitates of Put Blob From URL
//! (<https://learn.microsoft.com/rest/api/storageservices/put-blob-from-url>): a `PUT` of a
//! blob with `x-ms-copy-source` and `x-ms-blob-type: BlockBlob`, without
//! `x-ms-requires-sync` (that is Copy Blob From URL) and without `comp` (that is Put Block
//! From URL):
//! - the source is read from the URL given (a SAS in the URL, or a bearer token in
//!   `x-ms-copy-source-authorization`), under `x-ms-source-if-match`; a failed source
//!   condition is `412 SourceConditionNotMet`, an unreadable source
//!   `404 CannotVerifyCopySource` (as for Copy Blob From URL,
//!   <https://learn.microsoft.com/rest/api/storageservices/copy-blob-from-url>);
//! - the new blob takes the content headers given (`x-ms-blob-content-*`,
//!   `x-ms-blob-cache-control`), the metadata given (`x-ms-meta-*`: the source's metadata is
//!   not copied), the tags (`x-ms-tags`) and tier given, under the destination conditions
//!   (`If-Match`, `If-None-Match`); `201 Created` with the new `ETag`.
//!
//! It writes through the emulator's own Put Blob, so a blob it writes is an ordinary blob
//! of the emulator. What it does not imitate: `x-ms-copy-source-blob-properties: true`
//! (the source's content headers copied; lakevault always sends `false` and the headers),
//! `x-ms-copy-source-tag-option`, source ranges or MD5 checks, encryption scopes, the
//! 5,000 MiB limit, and the signature of the request (not checked: the request is not
//! relayed, and the write to the emulator is signed afresh).

use crate::fault_proxy::{relay, relay_client, serve_on_loopback};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use azure_core::http::RequestContent;
use azure_storage_blob::models::BlockBlobClientUploadOptions;
use lakevault_common::storage::StorageAccount;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
struct Shared {
    upstream: String,
    /// The account behind the façade, for the writes the façade makes itself.
    direct: StorageAccount,
    client: reqwest::Client,
    /// Put Blob From URL requests answered with success.
    served: AtomicUsize,
}

/// A running façade; stops when dropped.
#[derive(Debug)]
pub struct PutFromUrlFacade {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PutFromUrlFacade {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PutFromUrlFacade {
    /// Starts the façade on a free loopback port in front of `upstream`
    /// (`http://127.0.0.1:port`, no path), writing as `direct` (the same account, reached
    /// at the emulator itself).
    pub async fn start(upstream: &str, direct: StorageAccount) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            direct,
            client: relay_client()?,
            served: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(shared.clone());
        let (addr, task) = serve_on_loopback(app, "the Put Blob From URL façade").await?;
        Ok(Self { addr, shared, task })
    }

    /// The façade's base URL (`http://127.0.0.1:port`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Put Blob From URL requests served with success so far.
    pub fn served(&self) -> usize {
        self.shared.served.load(Ordering::SeqCst)
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn is_put_from_url(request: &Request) -> bool {
    let h = request.headers();
    request.method() == axum::http::Method::PUT
        && h.contains_key("x-ms-copy-source")
        && header(h, "x-ms-blob-type").as_deref() == Some("BlockBlob")
        && header(h, "x-ms-requires-sync").is_none()
        && !request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("comp=")))
}

async fn serve(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if !is_put_from_url(&request) {
        return relay(&shared.client, &shared.upstream, request, false).await;
    }
    let path = request.uri().path().to_string();
    let headers = request.headers().clone();
    // `/{account}/{container}/{blob}`, the blob name as sent (percent-encoded).
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let (Some(_account), Some(container), Some(encoded)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return error(StatusCode::BAD_REQUEST, "InvalidUri", "not a blob path");
    };
    let name = percent_encoding::percent_decode_str(encoded)
        .decode_utf8_lossy()
        .into_owned();
    let bytes = match read_source(&shared.client, &headers).await {
        Ok(bytes) => bytes,
        Err(answer) => return answer,
    };
    let answer = write(&shared.direct, container, &name, &headers, bytes).await;
    if answer.status() == StatusCode::CREATED {
        shared.served.fetch_add(1, Ordering::SeqCst);
    }
    answer
}

/// Get Blob of the copy source, under `x-ms-source-if-match`.
async fn read_source(client: &reqwest::Client, headers: &HeaderMap) -> Result<Vec<u8>, Response> {
    let source = header(headers, "x-ms-copy-source").unwrap_or_default();
    let mut get = client.get(&source).header("x-ms-version", "2025-11-05");
    if let Some(auth) = header(headers, "x-ms-copy-source-authorization") {
        get = get.header("authorization", auth);
    }
    if let Some(etag) = header(headers, "x-ms-source-if-match") {
        get = get.header("if-match", etag);
    }
    let answer = get.send().await.map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("reading the copy source: {e}"),
        )
    })?;
    match answer.status().as_u16() {
        200 => answer.bytes().await.map(|b| b.to_vec()).map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("reading the copy source: {e}"),
            )
        }),
        412 => Err(error(
            StatusCode::PRECONDITION_FAILED,
            "SourceConditionNotMet",
            "The source condition specified using HTTP conditional header(s) is not met.",
        )),
        status => Err(error(
            StatusCode::NOT_FOUND,
            "CannotVerifyCopySource",
            &format!("The copy source answered {status}."),
        )),
    }
}

/// Put Blob of `bytes` with the request's headers, metadata, tags, tier and conditions.
async fn write(
    direct: &StorageAccount,
    container: &str,
    name: &str,
    headers: &HeaderMap,
    bytes: Vec<u8>,
) -> Response {
    let metadata: HashMap<String, String> = headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix("x-ms-meta-")?;
            Some((key.to_string(), v.to_str().ok()?.to_string()))
        })
        .collect();
    let md5 =
        header(headers, "x-ms-blob-content-md5").and_then(|m| azure_core::base64::decode(m).ok());
    let options = BlockBlobClientUploadOptions {
        blob_content_type: header(headers, "x-ms-blob-content-type"),
        blob_content_encoding: header(headers, "x-ms-blob-content-encoding"),
        blob_content_language: header(headers, "x-ms-blob-content-language"),
        blob_content_disposition: header(headers, "x-ms-blob-content-disposition"),
        blob_cache_control: header(headers, "x-ms-blob-cache-control"),
        blob_content_md5: md5,
        metadata: (!metadata.is_empty()).then_some(metadata),
        blob_tags_string: header(headers, "x-ms-tags"),
        tier: header(headers, "x-ms-access-tier").and_then(|t| t.parse().ok()),
        if_match: header(headers, "if-match").map(Into::into),
        if_none_match: header(headers, "if-none-match").map(Into::into),
        ..Default::default()
    };
    let client = match direct.blob(container, name) {
        Ok(client) => client.block_blob_client(),
        Err(e) => return error(StatusCode::BAD_REQUEST, "InvalidUri", &e.to_string()),
    };
    match client
        .upload(RequestContent::from(bytes), Some(options))
        .await
    {
        Ok(answer) => {
            let mut response = Response::builder().status(StatusCode::CREATED);
            if let Some(etag) = answer.etag {
                response =
                    response.header("etag", format!("\"{}\"", etag.as_ref().trim_matches('"')));
            }
            response.body(Body::empty()).unwrap_or_default()
        }
        Err(e) => {
            let status = e.http_status().map(u16::from).unwrap_or(500);
            let code = match &e.kind() {
                azure_core::error::ErrorKind::HttpResponse {
                    error_code: Some(code),
                    ..
                } => code.clone(),
                _ => "InternalError".to_string(),
            };
            error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &code,
                &e.to_string(),
            )
        }
    }
}

/// A storage error answer: the status, `x-ms-error-code` and the XML body Azure sends.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{}</Message></Error>",
        message.replace('&', "&amp;").replace('<', "&lt;")
    );
    Response::builder()
        .status(status)
        .header("x-ms-error-code", code)
        .header("content-type", "application/xml")
        .body(Body::from(body))
        .unwrap_or_default()
}
