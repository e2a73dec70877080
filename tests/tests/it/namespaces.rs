//! Accounts with a hierarchical namespace (ADLS Gen2), presented by the HNS façade in front
//! of the emulator: the coordinator asks each account what namespace it has before it plans
//! anything, reports it, and refuses what this version cannot do, saying why.

use lakevault_tests::Lab;
use lakevault_tests::azurite::{BACKUP_ACCOUNT, SOURCE_ACCOUNT};
use lakevault_tests::hns_facade::HnsFacade;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{coordinator, drain};
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

/// The names of a data lake that put the two orders apart: a directory next to siblings
/// that start with its name and go on below `/` (`-`, `.`, space), partitions, markers,
/// an empty directory.
const LAKE: [&str; 14] = [
    "A/dat1",
    "A-B/dat2",
    "A-B-C",
    "AB/AB",
    "AB/dat4",
    "AB.txt",
    "sales/year=2024/month=01/part-0.parquet",
    "sales/year=2024/month=01/_SUCCESS",
    "sales/year=2024/month=02/part-0.parquet",
    "sales-2024/summary.csv",
    "sales.csv",
    "sales 2023/old.csv",
    "raw/événements/e1.json",
    "raw/événements-archive/e0.json",
];

/// A hierarchical source, planned through the façade: directories are walked into the
/// flat order the backup lists in, nothing asks for index tags, every file and directory
/// (also an empty one) is backed up, and a full re-plan, sharded or not, finds nothing
/// to do: the diff of an HNS source against its flat backup holds its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hierarchical_source_is_backed_up_with_its_directories() {
    let lab = Lab::start("ns-src", &["data"]).expect("lab");
    lab.src.ensure_container("data").await.expect("container");
    for name in LAKE {
        lake::put(&lab.src, "data", name, name.as_bytes())
            .await
            .expect("put");
    }
    lake::put_directory(&lab.src, "data", "staging")
        .await
        .expect("directory");
    let (facade, path) = behind_facade(&lab, SOURCE_ACCOUNT).await;
    // The files, their 12 directories, and the empty one.
    let entries = LAKE.len() as u64 + 13;

    // The coordinator plans through the façade; workers copy straight from the emulator
    // (which cannot fetch a copy source from another address).
    let (code, stdout, stderr) = backup(&path);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("report");
    assert_eq!(report["namespaces"]["source"], "hierarchical", "{report}");
    assert_eq!(report["containers"][0]["new"], entries, "{report}");
    assert_eq!(facade.refused(), 0, "no index tags asked of the source");
    let pass = drain(&lab.path, 1, &[]).expect("workers");
    assert_eq!((pass.copied, pass.poisoned), (entries, 0), "{pass:?}");
    lab.assert_backup_matches(&[("data", "data")], entries)
        .await;
    // verify walks the source the same way.
    let out = coordinator(&path)
        .expect("bin")
        .args(["verify", "--deep", "--output", "json"])
        .output()
        .expect("verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified: serde_json::Value = serde_json::from_str(&stdout).expect("verify report");
    assert_eq!(verified["containers"][0]["checked"], entries, "{verified}");
    assert_eq!(verified["containers"][0]["ok"], entries, "{verified}");
    assert_eq!(facade.refused(), 0, "no index tags asked of the source");

    for shards in ["1", "6"] {
        let out = coordinator(&path)
            .expect("bin")
            .args(["backup", "--output", "json", "--shards", shards])
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(&stdout).expect("report");
        let containers = report["containers"].as_array().expect("containers");
        let planned: u64 = containers
            .iter()
            .map(|c| c["new"].as_u64().unwrap_or(0) + c["changed"].as_u64().unwrap_or(0))
            .sum();
        let unchanged: u64 = containers
            .iter()
            .map(|c| c["unchanged"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(
            (planned, unchanged),
            (0, entries),
            "{shards} shards: {report}"
        );
    }
}

/// A distributed scan of a hierarchical source: workers run the scan tasks through the
/// façade (walking their shard), then copy what they planned. The emulator cannot fetch a
/// copy source from the façade's address, so these workers copy through themselves
/// (`--stream-fallback`), as a worker does when a firewall sits between two accounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_scan_of_a_hierarchical_source_plans_what_one_scan_plans() {
    let lab = Lab::start("ns-dist", &["data"]).expect("lab");
    lab.src.ensure_container("data").await.expect("container");
    for name in LAKE {
        lake::put(&lab.src, "data", name, name.as_bytes())
            .await
            .expect("put");
    }
    let (facade, path) = behind_facade(&lab, SOURCE_ACCOUNT).await;
    let entries = LAKE.len() as u64 + 12;
    let out = coordinator(&path)
        .expect("bin")
        .args([
            "backup",
            "--output",
            "json",
            "--distributed-scan",
            "--shards",
            "6",
        ])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pass = drain(&path, 2, &["--stream-fallback"]).expect("workers");
    assert_eq!((pass.copied, pass.poisoned), (entries, 0), "{pass:?}");
    assert_eq!(facade.refused(), 0, "no index tags asked of the source");
    lab.assert_backup_matches(&[("data", "data")], entries)
        .await;
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
        client: std::sync::Arc::new(hns.container("data").expect("client")),
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
