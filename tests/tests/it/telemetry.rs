//! Telemetry of the real binaries: the worker's `/metrics` after a backup counts exactly
//! what was copied; spans exported over OTLP hold each work item's copy spans, with the
//! SDK's spans under them; and at trace level no credential reaches any output.

use lakevault_common::config::AccountConfig;
use lakevault_common::sas;
use lakevault_common::secret::SecretString;
use lakevault_common::storage::{NetworkOptions, StorageAccount};
use lakevault_tests::Lab;
use lakevault_tests::azurite::{Azurite, BACKUP_ACCOUNT, BACKUP_KEY, SOURCE_ACCOUNT, SOURCE_KEY};
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{batch_worker, checked, coordinator, plan, worker};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    lakevault_tests::azurite::free_port().expect("a free loopback port")
}

/// Stops a child process when dropped (a failing assertion must not leave it running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// SIGTERM, then the exit code.
    fn stop(mut self) -> Option<i32> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// One sample of the Prometheus text format: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels = body
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").expect("label");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            Sample {
                name,
                labels,
                value: value.parse().expect("value"),
            }
        })
        .collect()
}

/// The sum of every sample of `name` whose labels include `matching`.
fn sum(samples: &[Sample], name: &str, matching: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            matching
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(base: &str) -> Option<String> {
    let response = reqwest::get(format!("{base}/metrics")).await.ok()?;
    if response.status() != 200 {
        return None;
    }
    response.text().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_metrics_count_exactly_what_was_copied() {
    let lab = Lab::start("metrics", &["alpha", "beta"]).expect("lab");
    let seed = |container: &str, blobs: usize, seed: u64| LakeSpec {
        containers: vec![container.into()],
        blobs,
        large_bytes: 0,
        seed,
    };
    let (alpha_blobs, alpha_bytes) = lake::seed(&lab.src, &seed("alpha", 30, 11))
        .await
        .expect("seed alpha");
    let (beta_blobs, beta_bytes) = lake::seed(&lab.src, &seed("beta", 20, 12))
        .await
        .expect("seed beta");
    // One blob whose ten tags leave no room for the record: poisoned.
    lake::put_uncopyable(&lab.src, "alpha", "tagged/ten tags.bin")
        .await
        .expect("uncopyable");
    // Planned twice before any worker runs: every item is enqueued twice. Taking one
    // message at a time, the worker copies each blob once and finds it current the
    // second time.
    for _ in 0..2 {
        let (planned, _) = plan(&lab.path).expect("plan");
        assert_eq!(planned, alpha_blobs + beta_blobs + 1);
    }
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = lab.dir.path().join("worker.log");
    let child = worker(&lab.path)
        .expect("bin")
        .args([
            "run",
            "--health-listen",
            &format!("127.0.0.1:{port}"),
            "--prefetch",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    let child = Running(child);
    let items = 2 * (alpha_blobs + beta_blobs + 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    let samples = loop {
        if let Some(text) = scrape(&base).await {
            let samples = parse_exposition(&text);
            if sum(&samples, "lakevault_blobs_total", &[]) >= items as f64
                && sum(&samples, "lakevault_messages_in_flight", &[]) == 0.0
            {
                break samples;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not settle {items} items in time: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let blobs = |container: &str, outcome: &str| {
        sum(
            &samples,
            "lakevault_blobs_total",
            &[("container", container), ("outcome", outcome)],
        ) as u64
    };
    assert_eq!(blobs("alpha", "copied"), alpha_blobs);
    assert_eq!(blobs("beta", "copied"), beta_blobs);
    assert_eq!(blobs("alpha", "already_current"), alpha_blobs);
    assert_eq!(blobs("beta", "already_current"), beta_blobs);
    assert_eq!(blobs("alpha", "poisoned"), 2);
    assert_eq!(blobs("beta", "poisoned"), 0);
    assert_eq!(
        sum(&samples, "lakevault_blobs_total", &[]) as u64,
        items,
        "no other outcome"
    );
    let bytes = |container: &str| {
        sum(
            &samples,
            "lakevault_bytes_copied_total",
            &[("container", container)],
        ) as u64
    };
    assert_eq!(bytes("alpha"), alpha_bytes);
    assert_eq!(bytes("beta"), beta_bytes);
    let copies = |outcome: &str| {
        sum(
            &samples,
            "lakevault_copy_duration_seconds_count",
            &[("outcome", outcome)],
        ) as u64
    };
    assert_eq!(copies("copied"), alpha_blobs + beta_blobs);
    assert_eq!(copies("already_current"), alpha_blobs + beta_blobs);
    assert_eq!(copies("failed"), 2);
    assert_eq!(
        sum(
            &samples,
            "lakevault_copy_duration_seconds_bucket",
            &[("outcome", "copied"), ("le", "+Inf")]
        ) as u64,
        alpha_blobs + beta_blobs
    );
    assert!(
        sum(
            &samples,
            "lakevault_queue_receive_duration_seconds_count",
            &[]
        ) >= 1.0
    );
    assert_eq!(sum(&samples, "lakevault_copy_concurrency", &[]), 16.0);
    assert!(sum(&samples, "process_resident_memory_bytes", &[]) > 0.0);
    // Low-cardinality labels only: never a blob name.
    for s in samples.iter().filter(|s| s.name.starts_with("lakevault_")) {
        for key in s.labels.keys() {
            assert!(
                ["container", "outcome", "le"].contains(&key.as_str()),
                "{s:?}"
            );
        }
    }
    assert_eq!(child.stop(), Some(0));
}

/// Spans received by a local OTLP/HTTP endpoint.
type Received = Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>>>;

async fn otlp_receiver() -> (String, Received) {
    use axum::routing::post;
    use prost::Message;
    let received: Received = Arc::default();
    let store = received.clone();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(move |body: axum::body::Bytes| {
                let store = store.clone();
                async move {
                    let request = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(body)
                        .expect("an OTLP trace export");
                    store.lock().expect("lock").extend(request.resource_spans);
                    axum::http::StatusCode::OK
                }
            }),
        )
        .route("/v1/metrics", post(|| async { axum::http::StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, received)
}

fn attribute(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        other => Some(format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_work_item_spans_hold_their_copy_spans() {
    let lab = Lab::start("spans", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 12,
        large_bytes: 0,
        seed: 5,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    let (planned, _) = plan(&lab.path).expect("plan");
    assert_eq!(planned, 12);
    let (endpoint, received) = otlp_receiver().await;
    let out = tokio::task::spawn_blocking({
        let path = lab.path.clone();
        move || {
            batch_worker(&path, &[])
                .expect("bin")
                // The default export delay (5 s) outlasts this run: what arrives was
                // flushed at exit.
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
                .output()
                .expect("worker")
        }
    })
    .await
    .expect("join");
    let out = checked(out, "lakevault-worker run").expect("worker ran");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["copied"], 12);

    let resource_spans = received.lock().unwrap().clone();
    assert!(!resource_spans.is_empty(), "nothing exported");
    let service = resource_spans[0]
        .resource
        .as_ref()
        .and_then(|r| attribute(&r.attributes, "service.name"));
    assert_eq!(service.as_deref(), Some("lakevault-worker"));
    let spans: Vec<_> = resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect();
    let by_id: HashMap<Vec<u8>, &opentelemetry_proto::tonic::trace::v1::Span> =
        spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let parent_of = |s: &opentelemetry_proto::tonic::trace::v1::Span| by_id.get(&s.parent_span_id);

    let copies: Vec<_> = spans.iter().filter(|s| s.name == "copy").collect();
    assert_eq!(copies.len(), 12, "one copy span per item");
    for copy in &copies {
        let parent = parent_of(copy).expect("the copy span's parent was exported");
        assert_eq!(parent.name, "work_item");
        assert_eq!(parent.trace_id, copy.trace_id);
        assert_eq!(
            attribute(&parent.attributes, "kind").as_deref(),
            Some("copy")
        );
        assert_eq!(
            attribute(&parent.attributes, "container").as_deref(),
            Some("data")
        );
        assert_eq!(
            attribute(&copy.attributes, "outcome").as_deref(),
            Some("copied")
        );
        assert_eq!(
            attribute(&copy.attributes, "container").as_deref(),
            Some("data")
        );
    }
    // Every item of the work items is there.
    let work_items: Vec<_> = spans.iter().filter(|s| s.name == "work_item").collect();
    let items: u64 = work_items
        .iter()
        .filter_map(|w| attribute(&w.attributes, "items")?.parse::<u64>().ok())
        .sum();
    assert_eq!(items, 12);
    // The SDK's spans nest under the copies: a client call, with its HTTP request under it.
    let sdk_calls: Vec<_> = spans
        .iter()
        .filter(|s| {
            s.name.starts_with("Storage.Blob.") && parent_of(s).is_some_and(|p| p.name == "copy")
        })
        .collect();
    assert!(
        sdk_calls
            .iter()
            .any(|s| s.name.ends_with("startCopyFromUrl")),
        "{:?}",
        sdk_calls.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let requests = spans.iter().filter(|s| {
        attribute(&s.attributes, "http.request.method").is_some()
            && parent_of(s).is_some_and(|p| p.name.ends_with("startCopyFromUrl"))
    });
    let request = requests
        .into_iter()
        .next()
        .expect("an HTTP request span under a copy call");
    assert_eq!(request.name, "PUT");
    let url = attribute(&request.attributes, "url.full").expect("url.full");
    assert!(!url.is_empty());
    // No attribute carries a signature.
    for s in &spans {
        for kv in &s.attributes {
            let value = attribute(std::slice::from_ref(kv), &kv.key).unwrap_or_default();
            assert!(
                leaked_signature(&value).is_none(),
                "{}: {}={value}",
                s.name,
                kv.key
            );
        }
    }
}

/// The first `sig=` (plain or percent-encoded) followed by anything but `REDACTED`.
fn leaked_signature(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    for marker in ["sig=", "sig%3d"] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(marker) {
            let at = from + i + marker.len();
            if !text[at..].starts_with("REDACTED") {
                let end = (at + 40).min(text.len());
                let start = at.saturating_sub(80);
                return Some(String::from_utf8_lossy(&text.as_bytes()[start..end]).into_owned());
            }
            from = at;
        }
    }
    None
}

/// Every way `secret` could be written: as is, percent-encoded, JSON-escaped.
fn forms(secret: &str) -> Vec<String> {
    let encoded = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let json = serde_json::to_string(secret).expect("json");
    vec![
        secret.to_string(),
        encoded.clone(),
        encoded.to_lowercase(),
        json.trim_matches('"').to_string(),
    ]
}

const API_TOKEN: &str = "telemetry-api-token-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_reaches_any_output_at_trace_level() {
    let az = Azurite::start().expect("azurite");
    let dir = tempfile::tempdir().expect("dir");
    // The source through an account SAS (in every request URL, and in the copy source the
    // backup service reads), the backup and queue through a connection string with the
    // account key (Shared Key signatures on every request).
    let source_sas_expiry = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .replace_nanosecond(0)
        .expect("whole seconds");
    let source_sas = sas::account_sas(
        SOURCE_ACCOUNT,
        &SecretString::new(SOURCE_KEY),
        "rl",
        source_sas_expiry,
    )
    .expect("sas");
    let signature = source_sas
        .split('&')
        .find_map(|kv| kv.strip_prefix("sig="))
        .expect("sig")
        .to_string();
    let decoded_signature = percent_encoding::percent_decode_str(&signature)
        .decode_utf8()
        .expect("utf-8")
        .into_owned();
    let config = format!(
        r#"[accounts.source]
kind = "sas"
account_name = "{SOURCE_ACCOUNT}"
sas_token = "{source_sas}"
blob_endpoint = "{}"
queue_endpoint = "{}"

[accounts.backup]
kind = "connection_string"
connection_string = "{}"

[backup]
source = "source"
destination = "backup"
containers = ["data"]

[queue]
account = "backup"
name = "redact"
"#,
        az.blob_endpoint(SOURCE_ACCOUNT),
        az.queue_endpoint(SOURCE_ACCOUNT),
        az.connection_string(BACKUP_ACCOUNT, BACKUP_KEY),
    );
    let path = dir.path().join("lakevault.toml");
    std::fs::write(&path, config).expect("config");
    let seeder = StorageAccount::from_config(
        "seed",
        &toml::from_str::<AccountConfig>(&format!(
            "kind = \"connection_string\"\nconnection_string = \"{}\"",
            az.connection_string(SOURCE_ACCOUNT, SOURCE_KEY)
        ))
        .expect("account config"),
        NetworkOptions::default(),
    )
    .expect("account");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 10,
        large_bytes: 0,
        seed: 9,
    };
    lake::seed(&seeder, &spec).await.expect("seed");

    let mut outputs: Vec<(String, String)> = Vec::new();
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    // Every process also exports its spans, which must be as clean as its logs.
    let (endpoint, received) = otlp_receiver().await;

    // The service at trace level: a backup over the API.
    let mut serve = coordinator(&path)
        .expect("bin")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "trace")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("LAKEVAULT_API_TOKEN", API_TOKEN)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log("serve")).expect("log"))
        .spawn()
        .expect("serve");
    let mut stdout = BufReader::new(serve.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("address line");
    let serve_out = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
        rest
    });
    let serve = Running(serve);
    let base = line.trim().rsplit(' ').next().expect("url").to_string();
    let client = reqwest::Client::new();
    let accepted = client
        .post(format!("{base}/v1/backups"))
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"account": "source", "container": "data"}"#)
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("body");
    let accepted: serde_json::Value = serde_json::from_str(&accepted).expect("json");
    let job = accepted["job"].as_str().expect("job").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = client
            .get(format!("{base}/v1/jobs/{job}"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("body");
        let status: serde_json::Value = serde_json::from_str(&status).expect("json");
        if status["planned_items"] == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "not planned: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let unauthorized = client
        .post(format!("{base}/v1/backups"))
        .bearer_auth("wrong-token-wrong-token-wrong-token")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(unauthorized.status(), 401);
    // `/metrics` needs no token; routes are counted by template, never by raw path.
    let metrics = parse_exposition(&scrape(&base).await.expect("serve /metrics"));
    let requests = |route: &str, status: &str| {
        sum(
            &metrics,
            "lakevault_http_requests_total",
            &[("route", route), ("status", status)],
        ) as u64
    };
    assert_eq!(requests("/v1/backups", "202"), 1);
    assert_eq!(requests("/v1/backups", "401"), 1);
    assert!(requests("/v1/jobs/{id}", "200") >= 1);
    assert!(
        metrics
            .iter()
            .all(|s| !s.labels.values().any(|v| v.contains(&job))),
        "no job id in a label"
    );
    assert_eq!(
        sum(
            &metrics,
            "lakevault_jobs_started_total",
            &[("trigger", "api")]
        ),
        1.0
    );
    // The SAS expiry an alert watches: the source's token, by account alias.
    assert_eq!(
        sum(
            &metrics,
            "lakevault_sas_expiry_timestamp_seconds",
            &[("account", "source")]
        ),
        source_sas_expiry.unix_timestamp() as f64
    );
    assert_eq!(serve.stop(), Some(0));
    outputs.push((
        "serve stdout".into(),
        line + &serve_out.join().unwrap_or_default(),
    ));
    outputs.push((
        "serve stderr".into(),
        std::fs::read_to_string(log("serve")).expect("serve log"),
    ));

    // The same from the command line, and a worker in text format.
    let out = coordinator(&path)
        .expect("bin")
        .args(["backup", "--output", "json"])
        .env("RUST_LOG", "trace")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .output()
        .expect("backup");
    let out = checked(out, "lakevault-coordinator backup").expect("backup ran");
    outputs.push((
        "backup stdout".into(),
        String::from_utf8_lossy(&out.stdout).into(),
    ));
    outputs.push((
        "backup stderr".into(),
        String::from_utf8_lossy(&out.stderr).into(),
    ));
    let out = batch_worker(&path, &["--log-format", "text"])
        .expect("bin")
        .env("RUST_LOG", "trace")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .output()
        .expect("worker");
    let out = checked(out, "lakevault-worker run").expect("worker ran");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["copied"], 10, "copied through the source's SAS");
    outputs.push((
        "worker stdout".into(),
        String::from_utf8_lossy(&out.stdout).into(),
    ));
    outputs.push((
        "worker stderr".into(),
        String::from_utf8_lossy(&out.stderr).into(),
    ));

    let all: String = outputs.iter().map(|(_, text)| text.as_str()).collect();
    // The outputs really are trace logs of requests made with these credentials.
    assert!(all.len() > 100_000, "trace logs: {} bytes", all.len());
    assert!(
        all.contains("sig=REDACTED"),
        "a signed URL was logged, redacted"
    );
    // Every attribute and event of the exported spans, as text.
    let spans = format!("{:?}", received.lock().expect("lock"));
    assert!(
        spans.contains("url.full") && spans.contains(&format!("/{SOURCE_ACCOUNT}")),
        "the SDK's spans of requests to the source (signed with the SAS) were exported"
    );
    outputs.push(("exported spans".into(), spans));
    for (what, text) in &outputs {
        if let Some(context) = leaked_signature(text) {
            panic!("{what}: a SAS signature: …{context}…");
        }
        let mut secrets = vec![
            signature.clone(),
            decoded_signature.clone(),
            API_TOKEN.to_string(),
        ];
        secrets.extend(forms(SOURCE_KEY));
        secrets.extend(forms(BACKUP_KEY));
        for secret in secrets {
            assert!(!text.contains(&secret), "{what} holds a secret: {secret}");
        }
        for marker in ["Bearer ", "SharedKey "] {
            let mut from = 0;
            while let Some(i) = text[from..].find(marker) {
                let at = from + i + marker.len();
                let value = &text[at..(at + 60).min(text.len())];
                let value = value
                    .split(|c: char| c.is_whitespace() || c == '"')
                    .next()
                    .unwrap_or("");
                let secret_part = value.rsplit(':').next().unwrap_or(value);
                assert!(
                    secret_part.is_empty() || secret_part.starts_with("REDACTED"),
                    "{what}: {marker}{value}"
                );
                from = at;
            }
        }
    }
}
