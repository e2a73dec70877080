//! Bad input gets a clear error and loses nothing: config mistakes exit non-zero naming the
//! field, an unreachable endpoint fails fast, and a message that is not lakevault JSON is
//! moved to the poison queue with its reason while the worker keeps going.

use lakevault_common::config::Config;
use lakevault_common::queue::{AzureQueue, WorkQueue};
use lakevault_common::storage::{NetworkOptions, StorageAccount};
use lakevault_tests::azurite::Azurite;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{checked, coordinator, worker};
use std::time::{Duration, Instant};

fn run_coordinator_with(config_text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config_text).expect("write");
    let out = coordinator(&path)
        .expect("binary")
        .args(["backup"])
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BASE: &str = r#"
[accounts.source]
kind = "connection_string"
connection_string = "UseDevelopmentStorage=true"

[accounts.backup]
kind = "shared_key"
account_name = "backupaccount"
account_key = "a2V5"

[backup]
source = "source"
destination = "backup"
containers = ["*"]

[queue]
account = "backup"
name = "work"
"#;

#[test]
fn config_errors_name_the_field() {
    let cases = [
        (
            BASE.replace("name = \"work\"", "name = \"work\"\nvisibility = 3"),
            "visibility",
        ),
        (
            BASE.replace("destination = \"backup\"", "destination = \"vault\""),
            "backup.destination",
        ),
        (
            BASE.replace("kind = \"shared_key\"", "kind = \"access_key\""),
            "access_key",
        ),
        (
            BASE.replace(
                "account_key = \"a2V5\"",
                "account_key_env = \"LAKEVAULT_TEST_UNSET_VAR\"",
            ),
            "LAKEVAULT_TEST_UNSET_VAR",
        ),
    ];
    for (text, field) in cases {
        let (code, stderr) = run_coordinator_with(&text);
        assert_ne!(code, 0, "must fail for {field}");
        assert!(
            stderr.contains(field),
            "error for `{field}` must name it; got: {stderr}"
        );
    }
    let (code, stderr) = run_coordinator_with("this is [not toml");
    assert_ne!(code, 0);
    assert!(stderr.contains("invalid config file"), "{stderr}");
}

#[test]
fn unreachable_endpoint_fails_fast_with_a_clear_error() {
    // Port 9 on loopback: nothing listens, connections are refused.
    let text = BASE.replace(
        "connection_string = \"UseDevelopmentStorage=true\"",
        &format!(
            "connection_string = \"AccountName=devstoreaccount1;AccountKey={};BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1\"",
            lakevault_tests::azurite::SOURCE_KEY
        ),
    );
    let started = Instant::now();
    let (code, stderr) = run_coordinator_with(&text);
    // A generous bound: this detects a hang, it is not a performance target.
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("127.0.0.1:9") || stderr.to_lowercase().contains("connect"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_go_to_the_poison_queue_and_work_continues() {
    let azurite = Azurite::start().expect("azurite");
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("lakevault.toml");
    std::fs::write(&config_path, azurite.config_toml("poisontest", &["data"])).expect("config");
    let config = Config::load(&config_path).expect("config");
    let (src, _) = lakevault_tests::accounts(&config).expect("clients");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 20,
        large_bytes: 0,
        seed: 3,
    };
    lake::seed(&src, &spec).await.expect("seed");

    let backup = StorageAccount::from_config(
        "backup",
        config.account("backup").expect("alias"),
        NetworkOptions::default(),
    )
    .expect("account");
    let queue = AzureQueue::new("poisontest", backup.queue("poisontest").expect("queue"));
    queue.ensure_exists().await.expect("create");
    queue
        .send("this is not json", Duration::ZERO)
        .await
        .expect("send");
    queue
        .send(r#"{"v":99,"kind":"copy"}"#, Duration::ZERO)
        .await
        .expect("send");
    // Real work enqueued after the bad messages must still be done.
    checked(
        coordinator(&config_path)
            .expect("bin")
            .args(["backup"])
            .output()
            .expect("run"),
        "coordinator",
    )
    .expect("plan");
    let out = checked(
        worker(&config_path)
            .expect("bin")
            .args(["run", "--exit-when-idle", "1", "--summary-json"])
            .output()
            .expect("run"),
        "worker",
    )
    .expect("worker succeeds");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["copied"], 20, "{summary}");
    assert_eq!(summary["poisoned"], 2, "{summary}");

    let poison = AzureQueue::new(
        "poisontest-poison",
        backup.queue("poisontest-poison").expect("queue"),
    );
    let records = poison
        .receive(32, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(records.len(), 2);
    let mut reasons: Vec<(String, String)> = records
        .iter()
        .map(|m| {
            let v: serde_json::Value =
                serde_json::from_str(&m.text).expect("poison record is JSON");
            (
                v["original"].as_str().unwrap_or("").to_string(),
                v["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons[0].0, "this is not json");
    assert!(reasons[0].1.contains("not JSON"), "{reasons:?}");
    assert!(reasons[1].1.contains("version 99"), "{reasons:?}");
    assert_eq!(
        queue.approximate_len().await.expect("len"),
        0,
        "bad messages are deleted after poisoning"
    );
}
