//! What a backup must never do, end to end with the real binaries: count a blob as done
//! that is not in the backup.

use lakevault_tests::Lab;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{coordinator, drain};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_container_removed_after_planning_is_a_failure_not_a_source_gone() {
    let lab = Lab::start("removed-backup", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 30,
        large_bytes: 0,
        seed: 12,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    let plan = lab.coordinator_ok(&["backup"]);
    let job = plan["job_id"].as_str().expect("job").to_string();
    // An operator removes the backup container between planning and copying.
    lab.bak
        .container("data")
        .expect("client")
        .delete(None)
        .await
        .expect("delete the backup container");
    let pass = drain(&lab.path, 1, &["--max-attempts", "1"]).expect("worker");
    assert_eq!(pass.copied, 0, "{pass:?}");
    assert_eq!(
        pass.poisoned, 30,
        "every item failed and is kept for a redrive, none is 'source gone': {pass:?}"
    );
    let out = coordinator(&lab.path)
        .expect("coordinator binary")
        .args(["status", &job, "--output", "json"])
        .output()
        .expect("status");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["state"], "completed_with_failures", "{status}");
    assert_eq!(status["poisoned"], 30, "{status}");
    assert_eq!(out.status.code(), Some(1), "a job with failures exits 1");
}

#[test]
fn a_job_id_that_records_cannot_hold_is_refused_before_anything_runs() {
    for command in ["backup", "restore"] {
        let mut args = vec![command, "--job-id", "nightly run"];
        if command == "restore" {
            args.extend(["--from", "data"]);
        }
        let out = coordinator(std::path::Path::new("/nonexistent/lakevault.toml"))
            .expect("coordinator binary")
            .args(&args)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("--job-id") && stderr.contains("A-Z a-z 0-9"),
            "{command}: the error names the flag and what it accepts: {stderr}"
        );
    }
}
