//! Lease mode: workers hold a lease on each source blob while copying it and release it
//! afterwards, also when the copy fails; a blob leased by another writer is retried
//! later, not poisoned.

use azure_storage_blob::models::{
    BlobClientAcquireLeaseOptions, BlobClientGetPropertiesResultHeaders, LeaseState,
};
use lakevault_tests::Lab;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{coordinator, drain};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_held_for_the_copy_and_always_released() {
    let Lab {
        azurite: _azurite,
        dir: _dir,
        path,
        config: _config,
        src,
        bak,
    } = Lab::start("lease", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 20,
        large_bytes: 0,
        seed: 8,
    };
    lake::seed(&src, &spec).await.expect("seed");
    // This one cannot be copied (no room for the record among 10 user tags).
    lake::put_uncopyable(&src, "data", "fails.csv")
        .await
        .expect("upload");

    let out = coordinator(&path)
        .expect("bin")
        .args(["backup", "--lease"])
        .output()
        .expect("plan");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Another writer holds a lease on one blob for a few seconds.
    let held = lake::blob_name(2);
    let foreign = src.blob("data", &held).expect("client");
    let foreign_id = "00000000-0000-0000-0000-00000000f00d".to_string();
    foreign
        .acquire_lease(
            -1,
            Some(BlobClientAcquireLeaseOptions {
                proposed_lease_id: Some(foreign_id.clone()),
                ..Default::default()
            }),
        )
        .await
        .expect("foreign lease");
    let release_later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        foreign
            .release_lease(foreign_id, None)
            .await
            .expect("release foreign lease");
    });

    let pass = drain(&path, 1, &["--max-attempts", "8", "--lease-secs", "15"]).expect("workers");
    release_later.await.expect("released");
    assert!(
        pass.retried >= 1,
        "the blob leased by another writer waited for its lease: {pass:?}"
    );
    assert_eq!(
        (pass.copied, pass.poisoned),
        (20, 1),
        "the leased blob is retried, the bad one poisoned: {pass:?}"
    );

    // Every source blob is unleased again, including the one whose copy failed.
    for name in (0..20)
        .map(lake::blob_name)
        .chain(["fails.csv".to_string()])
    {
        let props = src
            .blob("data", &name)
            .expect("client")
            .get_properties(None)
            .await
            .expect("props");
        assert_eq!(
            props.lease_state().expect("state"),
            Some(LeaseState::Available),
            "{name} still leased"
        );
    }
    let report = lake::verify(&src, &bak, &[("data".into(), "data".into())])
        .await
        .expect("verify");
    let problems: Vec<&String> = report
        .problems
        .iter()
        .filter(|p| !p.contains("fails.csv"))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
}
