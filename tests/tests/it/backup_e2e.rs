//! End to end: the real coordinator binary and two real worker processes back up 1,000+
//! blobs (one above the 256 MiB single-copy limit) on Azurite; every blob is verified by
//! content hash, metadata, tags and the recorded source ETag. A second pass copies
//! nothing; changing three blobs makes the third pass copy exactly those.

use lakevault_common::config::Config;
use lakevault_tests::azurite::{Azurite, SOURCE_ACCOUNT, SOURCE_KEY};
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::backup_pass;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_back_up_a_lake_incrementally() {
    let azurite = Azurite::start().expect("azurite");
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("lakevault.toml");
    std::fs::write(
        &config_path,
        azurite.config_toml("e2e", &["lake-a", "lake-b"]),
    )
    .expect("config");
    let config = Config::load(&config_path).expect("config loads");
    let (src, bak) = lakevault_tests::accounts(&config).expect("clients");
    let spec = LakeSpec {
        containers: vec!["lake-a".into(), "lake-b".into()],
        blobs: 1000,
        large_bytes: 260 * 1024 * 1024,
        seed: 42,
    };
    let (blobs, _) = lake::seed(&src, &spec).await.expect("seed");
    lake::raw_put_blob(
        &azurite.blob_endpoint(SOURCE_ACCOUNT),
        SOURCE_ACCOUNT,
        SOURCE_KEY,
        "lake-b",
        "other client/Mixed Case.txt",
        b"hello",
        &[("CamelKey", "Mixed Value"), ("ALLCAPS", "x")],
    )
    .expect("raw put");
    let blobs = blobs + 1;
    let pairs = vec![
        ("lake-a".to_string(), "lake-a".to_string()),
        ("lake-b".to_string(), "lake-b".to_string()),
    ];

    let first = backup_pass(&config_path, 2).expect("first pass");
    assert_eq!(first.planned, blobs);
    assert_eq!(first.copied, blobs, "{first:?}");
    assert_eq!(first.poisoned, 0);
    assert!(
        first.messages * 50 < blobs,
        "items must be batched many per message: {first:?}"
    );
    let report = lake::verify(&src, &bak, &pairs).await.expect("verify");
    assert_eq!(report.blobs, blobs);
    assert!(
        report.problems.is_empty(),
        "{:#?}",
        &report.problems[..report.problems.len().min(10)]
    );

    let second = backup_pass(&config_path, 2).expect("second pass");
    assert_eq!(
        (second.planned, second.copied, second.messages),
        (0, 0, 0),
        "{second:?}"
    );

    let changed = lake::modify(&src, &spec, 3, 1).await.expect("modify");
    assert_eq!(changed.len(), 3);
    let third = backup_pass(&config_path, 2).expect("third pass");
    assert_eq!((third.planned, third.copied), (3, 3), "{third:?}");
    let report = lake::verify(&src, &bak, &pairs).await.expect("verify");
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
}
