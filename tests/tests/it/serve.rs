//! `serve`: the HTTP trigger (authenticated, validated, scoped to a container and prefix),
//! job status over HTTP, health, a cron schedule, and a clean stop on SIGTERM.

use lakevault_common::config::Config;
use lakevault_common::queue::{AzureQueue, WorkQueue};
use lakevault_tests::Lab;
use lakevault_tests::azurite::{Azurite, SOURCE_ACCOUNT, SOURCE_KEY};
use lakevault_tests::lake;
use lakevault_tests::scenario::{coordinator, drain};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "s3rve-t0ken-for-tests-0123456789";

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(path: &std::path::Path, extra: &[&str]) -> Server {
    let mut child = coordinator(path)
        .expect("bin")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("LAKEVAULT_API_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let base = line.trim().rsplit(' ').next().expect("url").to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    Server { child, base }
}

async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method, url);
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        request = request
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

async fn wait_for_state(base: &str, job: &str, wanted: &[&str]) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let (status, body) = call(
            reqwest::Method::GET,
            &format!("{base}/v1/jobs/{job}"),
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if wanted.contains(&body["state"].as_str().unwrap_or("")) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "job stuck: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_trigger_backs_up_a_scope_and_reports_status() {
    let Lab {
        azurite,
        dir: _dir,
        path,
        config: _config,
        src,
        bak,
    } = Lab::start("serve", &["data"]).expect("lab");
    src.ensure_container("data").await.expect("container");
    for name in ["in/a.csv", "in/b.csv", "in/sub/c.csv", "out/d.csv"] {
        lake::raw_put_blob(
            &azurite.blob_endpoint(SOURCE_ACCOUNT),
            SOURCE_ACCOUNT,
            SOURCE_KEY,
            "data",
            name,
            name.as_bytes(),
            &[],
        )
        .expect("put");
    }
    let server = start(&path, &[]);
    let base = server.base.clone();
    let queue = AzureQueue::new("serve", bak.queue("serve").expect("queue"));

    let (status, body) = call(reqwest::Method::GET, &format!("{base}/healthz"), None, None).await;
    assert_eq!((status, body.as_str()), (200, Some("ok")));

    // Unauthenticated or wrongly authenticated: 401, nothing enqueued.
    let good = r#"{"account":"source","container":"data","prefix":"in/"}"#;
    for token in [None, Some("wrong-token-wrong-token-wrong")] {
        let (status, body) = call(
            reqwest::Method::POST,
            &format!("{base}/v1/backups"),
            token,
            Some(good),
        )
        .await;
        assert_eq!(status, 401, "{body}");
        assert!(body["error"].is_string());
    }
    assert!(
        queue
            .approximate_len()
            .await
            .map(|n| n == 0)
            .unwrap_or(true),
        "nothing enqueued"
    );

    // Malformed requests: 400 with a JSON error, nothing enqueued.
    for bad in [
        "not json",
        r#"{"account":"source"}"#,
        r#"{"account":"source","container":"data","extra":1}"#,
        r#"{"account":"elsewhere","container":"data"}"#,
        r#"{"account":"source","container":"Not_A_Container"}"#,
    ] {
        let (status, body) = call(
            reqwest::Method::POST,
            &format!("{base}/v1/backups"),
            Some(TOKEN),
            Some(bad),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    assert!(
        queue
            .approximate_len()
            .await
            .map(|n| n == 0)
            .unwrap_or(true),
        "nothing enqueued"
    );

    let (status, body) = call(
        reqwest::Method::POST,
        &format!("{base}/v1/backups"),
        Some(TOKEN),
        Some(good),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let job = body["job"].as_str().expect("job").to_string();
    assert_eq!(body["status_url"], format!("/v1/jobs/{job}"));
    let planned = wait_for_state(&base, &job, &["running", "completed"]).await;
    assert_eq!(planned["planned_items"], 3, "only the prefix: {planned}");
    drain(&path, 1, &[]).expect("workers");
    let done = wait_for_state(&base, &job, &["completed"]).await;
    assert_eq!(done["copied"], 3, "{done}");
    let report = lake::verify(&src, &bak, &[("data".into(), "data".into())])
        .await
        .expect("verify");
    let missing: Vec<&String> = report
        .problems
        .iter()
        .filter(|p| p.contains("missing"))
        .collect();
    assert_eq!(
        missing.len(),
        1,
        "only out/d.csv is outside the scope: {:#?}",
        report.problems
    );
    assert!(missing[0].contains("out/d.csv"));

    let (status, _) = call(
        reqwest::Method::GET,
        &format!("{base}/v1/jobs/{job}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(
        reqwest::Method::GET,
        &format!("{base}/v1/jobs/nope"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // SIGTERM stops the service cleanly.
    let mut server = server;
    std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_runs_backups_and_bad_setups_are_refused() {
    let azurite = Azurite::start().expect("azurite");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lakevault.toml");
    std::fs::write(&path, azurite.config_toml("sched", &["data"])).expect("config");
    let config = Config::load(&path).expect("config");
    let (src, _) = lakevault_tests::accounts(&config).expect("accounts");
    src.ensure_container("data").await.expect("container");
    lake::raw_put_blob(
        &azurite.blob_endpoint(SOURCE_ACCOUNT),
        SOURCE_ACCOUNT,
        SOURCE_KEY,
        "data",
        "x.csv",
        b"x",
        &[],
    )
    .expect("put");

    // Every two seconds (six-field cron with seconds).
    let server = start(
        &path,
        &["--schedule", "*/2 * * * * *", "--schedule-mode", "full"],
    );
    let started = Instant::now();
    loop {
        let out = coordinator(&path)
            .expect("bin")
            .args(["status", "--output", "json"])
            .output()
            .expect("status");
        if out.status.code() != Some(2) {
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            assert_eq!(s["planned_items"], 1, "{s}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no scheduled job appeared"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(server);

    let out = coordinator(&path)
        .expect("bin")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("LAKEVAULT_API_TOKEN")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LAKEVAULT_API_TOKEN"));
    let out = coordinator(&path)
        .expect("bin")
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--schedule",
            "every tuesday",
        ])
        .env("LAKEVAULT_API_TOKEN", TOKEN)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--schedule"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
