//! Accounts with a hierarchical namespace (ADLS Gen2), presented by the HNS façade in front
//! of the emulator: the coordinator asks each account what namespace it has before it plans
//! anything, reports it, and refuses what this version cannot do, saying why.

use lakevault_tests::Lab;
use lakevault_tests::azurite::{BACKUP_ACCOUNT, SOURCE_ACCOUNT};
use lakevault_tests::hns_facade::HnsFacade;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::coordinator;
use std::path::PathBuf;

/// A config whose `account` blob endpoint is the façade's.
async fn behind_facade(lab: &Lab, account: &str) -> (HnsFacade, PathBuf) {
    let direct = lab.azurite.blob_endpoint(account);
    let straight = if account == SOURCE_ACCOUNT {
        lab.src.clone()
    } else {
        lab.bak.clone()
    };
    let facade = HnsFacade::start(direct.trim_end_matches(&format!("/{account}")), straight)
        .await
        .expect("facade");
    let text = std::fs::read_to_string(&lab.path)
        .expect("config")
        .replace(&direct, &format!("{}/{account}", facade.url()));
    assert!(
        text.contains(&facade.url()),
        "the endpoint is in the config"
    );
    let path = lab.dir.path().join(format!("hns-{account}.toml"));
    std::fs::write(&path, text).expect("config");
    (facade, path)
}

fn backup(path: &std::path::Path) -> (i32, String, String) {
    let out = coordinator(path)
        .expect("bin")
        .args(["backup", "--output", "json"])
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_accounts_are_reported_flat_in_the_plan() {
    let lab = Lab::start("ns-flat", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 3,
        large_bytes: 0,
        seed: 5,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    let report = lab.coordinator_ok(&["backup", "--dry-run"]);
    assert_eq!(report["namespaces"]["source"], "flat", "{report}");
    assert_eq!(report["namespaces"]["destination"], "flat", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_account_with_a_hierarchical_namespace_is_refused_with_the_reason() {
    let lab = Lab::start("ns-dest", &["data"]).expect("lab");
    let (_facade, path) = behind_facade(&lab, BACKUP_ACCOUNT).await;
    let (code, stdout, stderr) = backup(&path);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("hierarchical namespace")
            && stderr.contains("blob index tag")
            && stderr.contains("backup.destination"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_with_a_hierarchical_namespace_is_refused_before_anything_is_planned() {
    let lab = Lab::start("ns-src", &["data"]).expect("lab");
    let (facade, path) = behind_facade(&lab, SOURCE_ACCOUNT).await;
    let (code, stdout, stderr) = backup(&path);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("source account `source` has a hierarchical namespace"),
        "{stderr}"
    );
    // Refused up front: no listing asked the façade for index tags.
    assert_eq!(facade.refused(), 0);
}

/// The façade lists the container as an account with a hierarchical namespace does (the
/// example of the ordering trap, an empty directory, pages of a few entries), refuses
/// index tags, and the walk brings its directory listings into the flat order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_facade_lists_in_hns_order_and_the_walk_brings_it_into_flat_order() {
    use futures::TryStreamExt;
    use lakevault_plan::hns::{ContainerDirectories, walk_in_flat_order};
    use lakevault_plan::listing::list_blobs;
    let lab = Lab::start("ns-order", &["data"]).expect("lab");
    lab.src.ensure_container("data").await.expect("container");
    for name in ["A/dat1", "A-B/dat2", "A-B-C", "AB/AB", "AB/dat4", "AB.txt"] {
        lake::put(&lab.src, "data", name, name.as_bytes())
            .await
            .expect("put");
    }
    lake::put_directory(&lab.src, "data", "empty")
        .await
        .expect("directory");
    let (facade, path) = behind_facade(&lab, SOURCE_ACCOUNT).await;
    let config = lakevault_common::config::Config::load(&path).expect("config");
    let (hns, _) = lakevault_tests::accounts(&config).expect("accounts");
    let container = hns.container("data").expect("client");

    let listed: Vec<String> = list_blobs(&container, None, false, Some(3))
        .expect("listing")
        .map_ok(|b| b.name)
        .try_collect()
        .await
        .expect("listed");
    assert_eq!(
        listed,
        [
            "A", "A/dat1", "A-B", "A-B/dat2", "A-B-C", "AB", "AB/AB", "AB/dat4", "AB.txt", "empty"
        ]
    );
    let refused = list_blobs(&container, None, true, None)
        .expect("listing")
        .try_collect::<Vec<_>>()
        .await;
    assert!(refused.is_err(), "index tags are refused");
    assert_eq!(facade.refused(), 1);

    let directories = ContainerDirectories {
        client: hns.container("data").expect("client"),
        page_size: Some(2),
    };
    let walked: Vec<String> = walk_in_flat_order(directories, String::new())
        .map_ok(|b| b.name)
        .try_collect()
        .await
        .expect("walk");
    assert_eq!(
        walked,
        [
            "A", "A-B", "A-B-C", "A-B/dat2", "A/dat1", "AB", "AB.txt", "AB/AB", "AB/dat4", "empty"
        ]
    );
}
