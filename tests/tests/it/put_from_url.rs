//! Blobs above the single-copy limit: one Put Blob From URL where the backup service has
//! it (a façade in front of the emulator, `tests/src/put_from_url_facade.rs`), and ranged
//! Put Block From URL where it answers 501, as the emulator itself does. Both run the real
//! coordinator and workers; the limit is lowered to 1 MiB so a 3 MiB blob is "large".

use futures::TryStreamExt;
use lakevault_common::config::Config;
use lakevault_common::storage::CopySource;
use lakevault_common::store::azure::AzureStore;
use lakevault_common::store::{BlobRef, BlobStore, Condition, PutFromUrl};
use lakevault_tests::Lab;
use lakevault_tests::azurite::BACKUP_ACCOUNT;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::put_from_url_facade::PutFromUrlFacade;
use lakevault_tests::scenario::{drain, plan};

const MIB: u64 = 1024 * 1024;
const LARGE: u64 = 3 * MIB + 17;

fn spec() -> LakeSpec {
    LakeSpec {
        containers: vec!["data".into()],
        blobs: 8,
        large_bytes: LARGE,
        seed: 14,
    }
}

/// Workers with a 1 MiB single-copy limit and 1 MiB ranges.
const LARGE_ABOVE_1_MIB: [&str; 4] = ["--sync-copy-max-mib", "1", "--block-size-mib", "1"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_answers_put_blob_from_url_501() {
    let lab = Lab::start("pfu-501", &["data"]).expect("lab");
    lab.src.ensure_container("data").await.expect("container");
    lab.bak.ensure_container("data").await.expect("container");
    lake::seed(&lab.src, &spec()).await.expect("seed");
    let src = AzureStore::new(lab.src.clone());
    let bak = AzureStore::new(lab.bak.clone());
    let source: CopySource = src
        .copy_source(
            BlobRef::new("data", "large/big file ü.bin"),
            std::time::Duration::from_secs(600),
        )
        .await
        .expect("sign");
    let answer = bak
        .put_from_url(
            BlobRef::new("data", "copy.bin"),
            PutFromUrl {
                source: &source,
                source_if_match: None,
                headers: Default::default(),
                metadata: Default::default(),
                tags: None,
                tier: None,
                condition: Condition::None,
            },
        )
        .await
        .expect_err("the emulator does not implement Put Blob From URL");
    assert_eq!(answer.status, Some(501), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_the_service_answers_501_large_blobs_are_copied_in_ranges() {
    let lab = Lab::start("pfu-ranges", &["data"]).expect("lab");
    let (blobs, _) = lake::seed(&lab.src, &spec()).await.expect("seed");
    plan(&lab.path).expect("plan");
    let pass = drain(&lab.path, 1, &LARGE_ABOVE_1_MIB).expect("workers");
    assert_eq!((pass.copied, pass.poisoned), (blobs, 0), "{pass:?}");
    lab.assert_backup_matches(&[("data", "data")], blobs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_the_service_has_put_blob_from_url_a_large_blob_is_one_request() {
    let lab = Lab::start("pfu-whole", &["data"]).expect("lab");
    let upstream = lab.upstream(BACKUP_ACCOUNT);
    let facade = PutFromUrlFacade::start(&upstream, lab.bak.clone())
        .await
        .expect("facade");
    // The backup account is reached through the façade.
    let text = lab.config_through(BACKUP_ACCOUNT, &facade.url());
    Config::parse(&text).expect("config");
    std::fs::write(&lab.path, text).expect("config");

    let (blobs, _) = lake::seed(&lab.src, &spec()).await.expect("seed");
    let large = AzureStore::new(lab.src.clone())
        .list("data", Default::default())
        .try_fold(0, |n, b| async move { Ok(n + usize::from(b.size > MIB)) })
        .await
        .expect("listing");
    assert!(large >= 1, "the lake has blobs above 1 MiB");
    plan(&lab.path).expect("plan");
    let pass = drain(&lab.path, 1, &LARGE_ABOVE_1_MIB).expect("workers");
    assert_eq!((pass.copied, pass.poisoned), (blobs, 0), "{pass:?}");
    assert_eq!(
        facade.served(),
        large,
        "each blob above 1 MiB went in one request"
    );
    // Content, metadata and tags as in the source: the metadata was given, since Put Blob
    // From URL does not copy it.
    lab.assert_backup_matches(&[("data", "data")], blobs).await;

    // The source changes: the next run rewrites the large blob the same way, over the
    // version it holds (If-Match on the backup blob).
    let newer: Vec<u8> = (0..LARGE as usize + 5).map(|i| (i % 241) as u8).collect();
    lab.src
        .blob("data", "large/big file ü.bin")
        .expect("client")
        .upload(azure_core::http::RequestContent::from(newer), None)
        .await
        .expect("rewrite");
    plan(&lab.path).expect("plan");
    let pass = drain(&lab.path, 1, &LARGE_ABOVE_1_MIB).expect("workers");
    assert_eq!((pass.copied, pass.poisoned), (1, 0), "{pass:?}");
    assert_eq!(facade.served(), large + 1);
    lab.assert_backup_matches(&[("data", "data")], blobs).await;
}
