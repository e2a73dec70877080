//! Worker options an operator sets per deployment: the access tier of backup blobs, and the
//! health endpoints probes use.

use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders;
use lakevault_tests::Lab;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{drain, plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_blobs_are_written_in_the_requested_access_tier() {
    let lab = Lab::start("tier", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 6,
        large_bytes: 0,
        seed: 8,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    plan(&lab.path).expect("plan");
    let pass = drain(&lab.path, 1, &["--access-tier", "cool"]).expect("workers");
    assert_eq!(pass.copied, 6);
    for name in (0..6).map(lake::blob_name) {
        let props = lab
            .bak
            .blob("data", &name)
            .expect("client")
            .get_properties(None)
            .await
            .expect("properties");
        let tier = props.access_tier().expect("header");
        assert_eq!(tier.as_deref(), Some("Cool"), "{name}");
    }
}

fn free_port() -> u16 {
    lakevault_tests::azurite::free_port().expect("a free loopback port")
}

async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_while_running_and_the_worker_stops_cleanly() {
    let lab = Lab::start("probes", &["data"]).expect("lab");
    let port = free_port();
    let mut child = lakevault_tests::scenario::Spawned::start(
        lakevault_tests::scenario::worker(&lab.path)
            .expect("bin")
            .args(["run", "--health-listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )
    .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let ready = loop {
        if let Some((200, body)) = get(&format!("{base}/readyz")).await {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(ready.contains("\"ready\":true"), "{ready}");
    assert_eq!(
        get(&format!("{base}/healthz")).await,
        Some((200, "ok".to_string()))
    );
    // SIGTERM: the worker drains (nothing in flight) and exits 0.
    let pid = child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.child().wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(exit.code(), Some(0));
    assert!(
        get(&format!("{base}/healthz")).await.is_none(),
        "probes stop with the process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_tags_can_be_left_behind() {
    let lab = Lab::start("notags", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 12,
        large_bytes: 0,
        seed: 3,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    let tagged = lake::entries(&lab.src, "data", false)
        .await
        .expect("list")
        .into_iter()
        .filter(|e| !e.tags.is_empty())
        .count();
    assert!(tagged > 0, "the sample lake has tagged blobs");
    plan(&lab.path).expect("plan");
    let pass = drain(&lab.path, 1, &["--skip-source-tags"]).expect("workers");
    assert_eq!(pass.copied, 12);
    for e in lake::entries(&lab.bak, "data", false).await.expect("list") {
        assert_eq!(
            e.tags.keys().collect::<Vec<_>>(),
            ["lakevault"],
            "{}: only the record",
            e.name
        );
    }
}
