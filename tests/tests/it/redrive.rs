//! A poisoned item carries its reason; once the cause is fixed, `redrive` moves it back to
//! the work queue and a worker completes it. Poison messages that are not lakevault work
//! stay where they are, and are reported.

use azure_core::http::RequestContent;
use azure_storage_blob::models::BlockBlobClientUploadOptions;
use lakevault_common::queue::{AzureQueue, WorkQueue};
use lakevault_common::wire::PoisonRecord;
use lakevault_tests::Lab;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{drain, plan};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_brings_poisoned_work_back_once_the_cause_is_fixed() {
    let lab = Lab::start("redrive", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 10,
        large_bytes: 0,
        seed: 2,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    // Ten user tags leave no room for lakevault's record: poisoned with that reason.
    lake::put_uncopyable(&lab.src, "data", "ten tags.csv")
        .await
        .expect("upload");
    plan(&lab.path).expect("plan");
    let first = drain(&lab.path, 1, &[]).expect("workers");
    assert_eq!((first.copied, first.poisoned), (10, 1));

    let poison = AzureQueue::new(
        "redrive-poison",
        lab.bak.queue("redrive-poison").expect("client"),
    );
    let held = poison
        .receive(32, Duration::from_secs(1))
        .await
        .expect("receive");
    assert_eq!(held.len(), 1);
    let record: PoisonRecord = serde_json::from_str(&held[0].text).expect("record");
    assert!(
        record.failures[0].reason.contains("tag"),
        "the reason says what is wrong: {record:?}"
    );
    // Something else in the poison queue that is not lakevault work.
    poison
        .send("left here by someone else", Duration::ZERO)
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The cause is fixed: the blob is rewritten with fewer tags (a new version).
    lab.src
        .blob("data", "ten tags.csv")
        .expect("client")
        .upload(
            RequestContent::from(b"fixed".to_vec()),
            Some(BlockBlobClientUploadOptions {
                blob_tags_string: Some("team=data".into()),
                ..Default::default()
            }),
        )
        .await
        .expect("rewrite");
    let report = lab.coordinator_ok(&["redrive"]);
    assert_eq!(
        (
            report["redriven"].as_u64(),
            report["items"].as_u64(),
            report["kept"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{report}"
    );
    let second = drain(&lab.path, 1, &[]).expect("workers");
    assert_eq!((second.copied, second.poisoned), (1, 0));
    lab.assert_backup_matches(&[("data", "data")], 11).await;
    let left = poison
        .receive(32, Duration::from_secs(1))
        .await
        .expect("receive");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].text, "left here by someone else");
}
