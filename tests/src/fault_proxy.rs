//! A fault-injecting HTTP proxy in front of the emulator: requests pass through unchanged
//! until a rule matches, then the proxy answers with a storage error (e.g. `503
//! ServerBusy`) or drops the connection mid-response, as a real network and a throttled
//! account do. Point an account's endpoint at `url()` to put it in the path.
//!
//! Shared Key signatures cover the path and headers, not the host, so a signed request
//! stays valid through the proxy.

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::Response;
use futures::TryStreamExt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What to do to a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and storage error code, without forwarding.
    Status(u16, &'static str),
    /// Forward, then cut the response body off after its headers (a reset connection).
    Reset,
    /// Never answer: the request hangs until the client gives up (a stalled network).
    Hang,
}

/// Faults `fault` on requests matching `method`, every `contains` fragment of the path
/// and query and none of `lacks`: after letting `skip` matches through, the next `times` matches (`None`:
/// all of them) fail.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Option<&'static str>,
    pub contains: Vec<String>,
    /// Fragments that must not appear.
    pub lacks: Vec<String>,
    pub skip: usize,
    pub times: Option<usize>,
    pub fault: Fault,
    /// Every `every`-th match fails (1: all), for scattered faults.
    pub every: usize,
}

impl Rule {
    pub fn new(fault: Fault) -> Self {
        Rule {
            method: None,
            contains: Vec::new(),
            lacks: Vec::new(),
            skip: 0,
            times: None,
            fault,
            every: 1,
        }
    }

    pub fn method(mut self, method: &'static str) -> Self {
        self.method = Some(method);
        self
    }

    pub fn containing(mut self, fragment: impl Into<String>) -> Self {
        self.contains.push(fragment.into());
        self
    }

    pub fn lacking(mut self, fragment: impl Into<String>) -> Self {
        self.lacks.push(fragment.into());
        self
    }

    pub fn skip(mut self, n: usize) -> Self {
        self.skip = n;
        self
    }

    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    pub fn every(mut self, n: usize) -> Self {
        self.every = n.max(1);
        self
    }
}

#[derive(Debug, Default)]
struct RuleState {
    rule: Option<Rule>,
    matched: usize,
    faulted: usize,
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    client: reqwest::Client,
    rules: Mutex<Vec<RuleState>>,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`
    /// (`http://127.0.0.1:port`, no path).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: relay_client()?,
            rules: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let (addr, task) = serve_on_loopback(app, "the fault proxy").await?;
        Ok(Self { addr, shared, task })
    }

    /// The proxy's base URL (`http://127.0.0.1:port`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add(&self, rule: Rule) {
        self.lock().push(RuleState {
            rule: Some(rule),
            ..Default::default()
        });
    }

    /// Removes every rule: everything passes again.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Faults injected so far, over all rules.
    pub fn faulted(&self) -> usize {
        self.lock().iter().map(|r| r.faulted).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RuleState>> {
        self.shared.rules.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The HTTP client that passes requests on: bodies as they are (no decompression).
pub(crate) fn relay_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .no_deflate()
        .no_zstd()
        .build()
}

/// Serves `app` on a free loopback port until the task is aborted.
pub(crate) async fn serve_on_loopback(
    app: axum::Router,
    what: &str,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .with_context(|| format!("binding {what}"))?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

/// The fault for this request, if a rule says so (counting the match either way).
fn decide(shared: &Shared, method: &str, target: &str) -> Option<Fault> {
    let mut rules = shared.rules.lock().unwrap_or_else(|p| p.into_inner());
    for state in rules.iter_mut() {
        let Some(rule) = &state.rule else { continue };
        let matches = rule.method.is_none_or(|m| m == method)
            && rule.contains.iter().all(|f| target.contains(f.as_str()))
            && !rule.lacks.iter().any(|f| target.contains(f.as_str()));
        if !matches {
            continue;
        }
        state.matched += 1;
        let n = state.matched;
        if n <= rule.skip
            || rule.times.is_some_and(|t| state.faulted >= t)
            || (n - rule.skip) % rule.every != 0
        {
            continue;
        }
        state.faulted += 1;
        return Some(rule.fault.clone());
    }
    None
}

fn error_response(status: u16, code: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>injected by the fault proxy</Message></Error>"
    );
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("x-ms-error-code", code)
        .header("content-type", "application/xml")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// Headers that belong to one hop, not to the request or response.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade" | "host"
    )
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().as_str().to_string();
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let fault = decide(&shared, &method, &target);
    if std::env::var_os("LAKEVAULT_FAULT_PROXY_LOG").is_some() {
        eprintln!("fault proxy: {method} {target} -> {fault:?}");
    }
    if let Some(Fault::Status(status, code)) = fault {
        return error_response(status, code);
    }
    if matches!(fault, Some(Fault::Hang)) {
        std::future::pending::<()>().await;
    }
    relay(
        &shared.client,
        &shared.upstream,
        request,
        matches!(fault, Some(Fault::Reset)),
    )
    .await
}

/// Sends `request` on to `upstream` (`http://host:port`) unchanged and returns its answer;
/// with `reset`, the answer's body is cut off after its headers. Shared with the HNS façade.
pub(crate) async fn relay(
    client: &reqwest::Client,
    upstream: &str,
    request: Request,
    reset: bool,
) -> Response {
    let method = request.method().as_str().to_string();
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let url = format!("{upstream}{target}");
    let mut headers = HeaderMap::new();
    for (name, value) in request.headers() {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let body = reqwest::Body::wrap_stream(request.into_body().into_data_stream());
    let upstream = match client
        .request(method, url)
        .headers(headers)
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "fault proxy: upstream request failed");
            return error_response(502, "ProxyUpstreamError");
        }
    };
    let mut builder = Response::builder().status(upstream.status().as_u16());
    for (name, value) in upstream.headers() {
        if !hop_by_hop(name) {
            builder = builder.header(name, value);
        }
    }
    let body = if reset {
        // Headers go out, then the body stream fails: the client sees the connection cut.
        Body::from_stream(futures::stream::once(async {
            Err::<bytes::Bytes, std::io::Error>(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected reset",
            ))
        }))
    } else {
        Body::from_stream(upstream.bytes_stream().map_err(std::io::Error::other))
    };
    builder.body(body).unwrap_or_default()
}
