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
//! Not emulated yet: the listing order and directories as entries, `include=permissions`,
//! and the dfs endpoint (directories, access control).

use crate::fault_proxy::relay;
use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
struct Shared {
    upstream: String,
    client: reqwest::Client,
    /// Requests the façade answered itself with a refusal.
    refused: AtomicUsize,
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
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .no_gzip()
                .no_brotli()
                .no_deflate()
                .no_zstd()
                .build()?,
            refused: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the HNS façade")?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
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
    relay(&shared.client, &shared.upstream, request, false).await
}
