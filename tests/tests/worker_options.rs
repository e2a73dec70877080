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
