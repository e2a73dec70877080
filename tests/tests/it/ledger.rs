//! The job ledger: the coordinator records each job's plan, workers record every settled
//! batch, and `status` reports progress, failures and completion.

use lakevault_common::config::Config;
use lakevault_tests::azurite::Azurite;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{coordinator, drain};

fn run(path: &std::path::Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = coordinator(path)
        .expect("bin")
        .args(args)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_progress_failures_and_completion() {
    let azurite = Azurite::start().expect("azurite");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lakevault.toml");
    std::fs::write(&path, azurite.config_toml("ledger", &["data"])).expect("config");
    let config = Config::load(&path).expect("config");
    let (src, _) = lakevault_tests::accounts(&config).expect("accounts");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 30,
        large_bytes: 0,
        seed: 4,
    };
    lake::seed(&src, &spec).await.expect("seed");

    let (code, _, stderr) = run(&path, &["status"]);
    assert_eq!(code, 2, "no jobs yet: {stderr}");
    assert!(stderr.contains("no jobs"), "{stderr}");

    let (_, plan, _) = run(&path, &["backup", "--output", "json"]);
    let job = plan["job_id"].as_str().expect("job id").to_string();
    let (code, s, _) = run(&path, &["status", &job, "--output", "json"]);
    assert_eq!(code, 0);
    assert_eq!(
        (
            s["state"].as_str(),
            s["planned_items"].as_u64(),
            s["pending"].as_u64()
        ),
        (Some("running"), Some(30), Some(30)),
        "{s}"
    );

    drain(&path, 1, &[]).expect("workers");
    let (code, s, _) = run(&path, &["status", "--output", "json"]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["job"], job.as_str(), "the latest job by default");
    assert_eq!(
        (
            s["state"].as_str(),
            s["done"].as_u64(),
            s["copied"].as_u64(),
            s["pending"].as_u64()
        ),
        (Some("completed"), Some(30), Some(30), Some(0)),
        "{s}"
    );

    // A blob that cannot be copied (10 user index tags leave no room for the record).
    lake::put_uncopyable(&src, "data", "too many tags.csv")
        .await
        .expect("upload");
    let (_, plan, _) = run(&path, &["backup", "--output", "json"]);
    let job2 = plan["job_id"].as_str().expect("job id").to_string();
    let pass = drain(&path, 1, &[]).expect("workers");
    assert_eq!(pass.poisoned, 1);
    let (code, s, _) = run(&path, &["status", &job2, "--output", "json"]);
    assert_eq!(code, 1, "failures are reported in the exit code: {s}");
    assert_eq!(
        (
            s["state"].as_str(),
            s["poisoned"].as_u64(),
            s["pending"].as_u64()
        ),
        (Some("completed_with_failures"), Some(1), Some(0)),
        "{s}"
    );
    assert_eq!(s["failures"][0]["name"], "too many tags.csv", "{s}");
    assert!(
        s["failures"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("index tags"),
        "{s}"
    );

    // The table form is readable and --watch stops once nothing is pending.
    let out = coordinator(&path)
        .expect("bin")
        .args(["status", &job, "--watch", "1"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("job {job}: completed")) && text.contains("30 of 30 items done"),
        "{text}"
    );

    let (code, _, stderr) = run(&path, &["status", "no-such-job"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no-such-job"), "{stderr}");
}
