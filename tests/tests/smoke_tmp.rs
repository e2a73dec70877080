use lakevault_tests::azurite::Azurite;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::backup_pass;
use lakevault_common::config::Config;

#[tokio::test(flavor = "multi_thread")]
async fn smoke() {
    let az = Azurite::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, az.config_toml("smoke", &["*"])).unwrap();
    let config = Config::load(&p).unwrap();
    let (src, bak) = lakevault_tests::services(&config).unwrap();
    let spec = LakeSpec { containers: vec!["raw".into(), "cur".into()], blobs: 40, large_bytes: 0, seed: 1 };
    lake::seed(&src, &spec).await.unwrap();
    let r = backup_pass(&p, 2).unwrap();
    println!("{r:?}");
    let v = lake::verify(&src, &bak, &[("raw".into(), "raw".into()), ("cur".into(), "cur".into())]).await.unwrap();
    println!("{:?}", &v.problems[..v.problems.len().min(5)]);
    assert!(v.problems.is_empty());
}
