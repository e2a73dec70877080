//! The counting proxy, run as its own process: every system's blob and queue requests go
//! through it, counted by operation and account.

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::response::Response;
use futures::TryStreamExt;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// Where the proxy answers with its counts (no account is named `_e2e`).
const COUNTS_PATH: &str = "/_e2e/counts";

/// Requests seen, by `service origin account operation`.
pub type Counts = BTreeMap<String, u64>;

#[derive(Debug, Clone, Copy)]
enum Service {
    Blob,
    Queue,
}

#[derive(Debug)]
struct Hop {
    service: Service,
    upstream: String,
    client: reqwest::Client,
    counts: Arc<Mutex<Counts>>,
}

/// Runs the proxy (in its own process): one port in front of the blob service, one in
/// front of the queue service. Prints `BLOB_PORT QUEUE_PORT` on a line, then serves
/// until its standard input closes (the bench ended, however it ended).
pub async fn serve(blob_upstream: &str, queue_upstream: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .no_deflate()
        .no_zstd()
        .build()?;
    let counts = Arc::new(Mutex::new(Counts::new()));
    let hop = |service, upstream: &str| {
        Arc::new(Hop {
            service,
            upstream: upstream.trim_end_matches('/').to_string(),
            client: client.clone(),
            counts: counts.clone(),
        })
    };
    let blob = axum::Router::new()
        .route(COUNTS_PATH, axum::routing::get(report))
        .fallback(forward)
        .with_state(hop(Service::Blob, blob_upstream));
    let queue = axum::Router::new()
        .fallback(forward)
        .with_state(hop(Service::Queue, queue_upstream));
    let blob_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let queue_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "{} {}",
        blob_listener.local_addr()?.port(),
        queue_listener.local_addr()?.port()
    );
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    });
    tokio::select! {
        r = axum::serve(blob_listener, blob) => r.context("blob proxy")?,
        r = axum::serve(queue_listener, queue) => r.context("queue proxy")?,
        _ = stdin_closed => {}
    }
    Ok(())
}

async fn report(State(hop): State<Arc<Hop>>) -> axum::Json<Counts> {
    axum::Json(hop.counts.lock().map(|c| c.clone()).unwrap_or_default())
}

async fn forward(State(hop): State<Arc<Hop>>, request: Request) -> Response {
    let key = classify(hop.service, &request);
    if let Ok(mut counts) = hop.counts.lock() {
        *counts.entry(key).or_default() += 1;
    }
    relay(&hop, request).await
}

/// `service origin account operation` of one request. The origin is `emulator` for the
/// requests Azurite sends itself (with axios) to check a copy source, `client` otherwise.
fn classify(service: Service, request: &Request) -> String {
    let headers = request.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let origin = if header("user-agent").is_some_and(|ua| ua.starts_with("axios")) {
        "emulator"
    } else {
        "client"
    };
    let path = request.uri().path();
    let mut segments = path.trim_start_matches('/').split('/');
    let account = segments.next().unwrap_or("");
    let rest: Vec<&str> = segments.filter(|s| !s.is_empty()).collect();
    let query = request.uri().query().unwrap_or("");
    let param = |key: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
    };
    let method = request.method();
    let operation = match service {
        Service::Queue => queue_operation(method, &rest, param("comp")),
        Service::Blob => blob_operation(
            method,
            rest.len(),
            param("comp"),
            param("restype"),
            header("x-ms-copy-source").is_some(),
            header("x-ms-requires-sync") == Some("true"),
            header("x-ms-blob-type").is_some(),
        ),
    };
    let service = match service {
        Service::Blob => "blob",
        Service::Queue => "queue",
    };
    format!("{service} {origin} {account} {operation}")
}

fn queue_operation(method: &Method, rest: &[&str], comp: Option<&str>) -> String {
    let messages = rest.get(1) == Some(&"messages");
    let one_message = messages && rest.len() > 2;
    match (method.as_str(), messages, one_message, comp) {
        ("POST", true, false, _) => "send",
        ("GET", true, false, _) => "receive",
        ("PUT", true, true, _) => "update_message",
        ("DELETE", true, true, _) => "delete_message",
        ("GET" | "HEAD", false, _, Some("metadata")) => "queue_properties",
        ("PUT", false, _, None) => "create_queue",
        ("DELETE", false, _, None) => "delete_queue",
        (m, _, _, c) => return format!("{m} {}", c.unwrap_or("-")),
    }
    .to_string()
}

/// The Blob service operation of a request, from its method, path depth (0: the
/// account, 1: a container, more: a blob) and the query and headers that tell them apart.
fn blob_operation(
    method: &Method,
    depth: usize,
    comp: Option<&str>,
    restype: Option<&str>,
    copy_source: bool,
    requires_sync: bool,
    blob_type: bool,
) -> String {
    let m = method.as_str();
    let name = match (depth, restype, comp, m) {
        (0, _, Some("list"), _) => "list_containers",
        (0, _, Some("properties"), _) => "account_properties",
        (_, Some("account"), _, _) => "account_information",
        (1, Some("container"), Some("list"), _) => "list_blobs",
        (1, Some("container"), None, "PUT") => "create_container",
        (1, Some("container"), None, "DELETE") => "delete_container",
        (1, Some("container"), None, _) => "container_properties",
        (_, _, Some("block"), "PUT") if copy_source => "put_block_from_url",
        (_, _, Some("block"), "PUT") => "put_block",
        (_, _, Some("blocklist"), "PUT") => "put_block_list",
        (_, _, Some("blocklist"), _) => "get_block_list",
        (_, _, Some("metadata"), "PUT") => "set_metadata",
        (_, _, Some("metadata"), _) => "get_metadata",
        (_, _, Some("properties"), "PUT") => "set_properties",
        (_, _, Some("tags"), "PUT") => "set_tags",
        (_, _, Some("tags"), _) => "get_tags",
        (_, _, Some("tier"), _) => "set_tier",
        (_, _, Some("lease"), _) => "lease",
        (_, _, Some("snapshot"), _) => "snapshot",
        (_, _, None, "PUT") if copy_source && requires_sync => "copy_blob_from_url",
        (_, _, None, "PUT") if copy_source && blob_type => "put_blob_from_url",
        // Copy Blob: the asynchronous copy (the service completes it when it can).
        (_, _, None, "PUT") if copy_source => "copy_blob",
        (_, _, None, "PUT") => "put_blob",
        (_, _, None, "HEAD") => "get_properties",
        (_, _, None, "GET") => "get_blob",
        (_, _, None, "DELETE") => "delete_blob",
        (_, _, c, _) => return format!("{m} {}", c.unwrap_or("-")),
    };
    name.to_string()
}

/// Headers of one hop. The Host header is kept: Azurite accepts a copy source only on
/// the host the copy request was sent to, and Shared Key signatures do not cover it.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade"
    )
}

async fn relay(hop: &Hop, request: Request) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let mut headers = HeaderMap::new();
    for (name, value) in request.headers() {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let body = reqwest::Body::wrap_stream(request.into_body().into_data_stream());
    let answer = match hop
        .client
        .request(method, format!("{}{target}", hop.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await
    {
        Ok(a) => a,
        Err(e) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from(format!("counting proxy: {e}")))
                .unwrap_or_default();
        }
    };
    let mut builder = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            builder = builder.header(name, value);
        }
    }
    builder
        .body(Body::from_stream(
            answer.bytes_stream().map_err(std::io::Error::other),
        ))
        .unwrap_or_default()
}

/// The proxy process, seen from the bench; killed when dropped.
#[derive(Debug)]
pub struct CountingProxy {
    child: Child,
    pub blob_url: String,
    pub queue_url: String,
    http: reqwest::Client,
}

impl CountingProxy {
    /// Starts this binary as the proxy in front of Azurite's two services.
    pub fn start(blob_upstream: &str, queue_upstream: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["counting-proxy", "--blob-upstream", blob_upstream])
            .args(["--queue-upstream", queue_upstream])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the counting proxy")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("proxy stdout")?)
            .read_line(&mut line)
            .context("reading the proxy's ports")?;
        let ports: Vec<u16> = line
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        let (Some(blob), Some(queue)) = (ports.first(), ports.get(1)) else {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the counting proxy did not print its ports (got `{line}`)");
        };
        Ok(Self {
            child,
            blob_url: format!("http://127.0.0.1:{blob}"),
            queue_url: format!("http://127.0.0.1:{queue}"),
            http: reqwest::Client::new(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every request counted since the proxy started.
    pub async fn counts(&self) -> anyhow::Result<Counts> {
        let body = self
            .http
            .get(format!("{}{COUNTS_PATH}", self.blob_url))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        Ok(serde_json::from_slice(&body)?)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
