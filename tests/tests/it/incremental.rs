//! Incremental mode: the first run of a container without a watermark is a full scan; later
//! runs list the source only and select blobs modified since the watermark (minus the
//! safety margin). Deletions are left to full runs.

use lakevault_tests::Lab;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{coordinator, drain};
use std::time::Duration;

fn plan(path: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = coordinator(path)
        .expect("bin")
        .args(["backup", "--output", "json"])
        .args(args)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

const INCREMENTAL: &[&str] = &["--mode", "incremental", "--safety-margin-secs", "0"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_select_what_changed_since_the_watermark() {
    let Lab {
        azurite,
        dir,
        path,
        config: _,
        src,
        bak,
    } = Lab::start("incr", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 40,
        large_bytes: 0,
        seed: 9,
    };
    lake::seed(&src, &spec).await.expect("seed");
    // Last-Modified has whole seconds, so an incremental scan re-plans every blob written
    // in its watermark's second (it may have been written after the watermark). Start
    // the first scan in a later second than the seed, so that the second run plans only
    // what is modified below.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let first = plan(&path, INCREMENTAL);
    let c = &first["containers"][0];
    assert_eq!(
        (c["mode"].as_str(), c["new"].as_u64()),
        (Some("full"), Some(40)),
        "no watermark yet: {c}"
    );
    assert_eq!(drain(&path, 1, &[]).expect("workers").copied, 40);

    // Last-Modified has one-second resolution: let the clock move past the watermark.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    lake::modify(&src, &spec, 3, 1).await.expect("modify");
    let second = plan(&path, INCREMENTAL);
    let c = &second["containers"][0];
    assert_eq!(c["mode"], "incremental", "{c}");
    assert!(c["modified_since"].is_string(), "{c}");
    assert_eq!(
        (c["new"].as_u64(), c["unchanged"].as_u64()),
        (Some(3), Some(0)),
        "only what changed, no backup listing: {c}"
    );
    assert_eq!(drain(&path, 1, &[]).expect("workers").copied, 3);
    let report = lake::verify(&src, &bak, &[("data".into(), "data".into())])
        .await
        .expect("verify");
    assert!(report.problems.is_empty(), "{:#?}", report.problems);

    // Three blobs written in the second run's watermark second (and copied) are planned
    // again: the run cannot tell them from writes after the watermark. They are already
    // current; one second later nothing is planned.
    let third = plan(&path, INCREMENTAL);
    let planned_again = third["containers"][0]["new"].as_u64().expect("new");
    assert!(planned_again <= 3, "{third}");
    let pass = drain(&path, 1, &[]).expect("workers");
    assert_eq!(
        (pass.copied, pass.already_current),
        (0, planned_again),
        "{pass:?}"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let fourth = plan(&path, INCREMENTAL);
    assert_eq!(fourth["containers"][0]["new"], 0, "{fourth}");

    // A deletion is invisible to incremental runs and recorded by the next full run.
    src.blob("data", &lake::blob_name(0))
        .expect("client")
        .delete(None)
        .await
        .expect("delete");
    let incremental = plan(&path, INCREMENTAL);
    assert_eq!(incremental["containers"][0]["deleted_in_source"], 0);
    let full = plan(&path, &["--mode", "full"]);
    let c = &full["containers"][0];
    assert_eq!(
        (
            c["deleted_in_source"].as_u64(),
            c["tombstones"].as_u64(),
            c["new"].as_u64()
        ),
        (Some(1), Some(1), Some(0)),
        "{c}"
    );

    // A dry run leaves no watermark behind.
    src.ensure_container("fresh").await.expect("container");
    let fresh_path = dir.path().join("fresh.toml");
    std::fs::write(&fresh_path, azurite.config_toml("incr", &["fresh"])).expect("config");
    plan(&fresh_path, &["--mode", "incremental", "--dry-run"]);
    let again = plan(&fresh_path, &["--mode", "incremental", "--dry-run"]);
    assert_eq!(again["containers"][0]["mode"], "full", "{again}");
}
