//! Accounts with a hierarchical namespace (ADLS Gen2), presented by the HNS façade in front
//! of the emulator: the coordinator asks each account what namespace it has before it plans
//! anything, reports it, and refuses what this version cannot do, saying why.

use lakevault_common::store::azure::AzureStore;
use lakevault_common::store::{AccessControl, BlobRef, BlobStore};
use lakevault_tests::Lab;
use lakevault_tests::azurite::{BACKUP_ACCOUNT, SOURCE_ACCOUNT};
use lakevault_tests::hns_facade::{HnsEntry, HnsFacade};
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{coordinator, coordinator_json, drain};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A config whose `account` blob endpoint is the façade's.
async fn behind_facade(lab: &Lab, account: &str) -> (HnsFacade, PathBuf) {
    let upstream = lab.upstream(account);
    let straight = if account == SOURCE_ACCOUNT {
        lab.src.clone()
    } else {
        lab.bak.clone()
    };
    let facade = HnsFacade::start(&upstream, straight).await.expect("facade");
    let text = lab.config_through(account, &facade.url());
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

/// Writes [`LAKE`] into the source's `data` container (and, with `empty_directory`, the
/// empty directory `staging`).
async fn seed_lake(lab: &Lab, empty_directory: bool) {
    lab.src.ensure_container("data").await.expect("container");
    for name in LAKE {
        lake::put(&lab.src, "data", name, name.as_bytes())
            .await
            .expect("put");
    }
    if empty_directory {
        lake::put_directory(&lab.src, "data", "staging")
            .await
            .expect("directory");
    }
}

/// A hierarchical source, planned through the façade: directories are walked into the
/// flat order the backup lists in, nothing asks for index tags, every file and directory
/// (also an empty one) is backed up, and a full re-plan, sharded or not, finds nothing
/// to do: the diff of an HNS source against its flat backup holds its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hierarchical_source_is_backed_up_with_its_directories() {
    let lab = Lab::start("ns-src", &["data"]).expect("lab");
    seed_lake(&lab, true).await;
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
    seed_lake(&lab, false).await;
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
    use lakevault_plan::listing::{Include, Lister};
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
    let container = Lister::new(&hns, "data").expect("client");

    let listed: Vec<String> = container
        .blobs(None, Include::Nothing, Some(3))
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
    let refused = container
        .blobs(None, Include::Tags, None)
        .try_collect::<Vec<_>>()
        .await;
    assert!(refused.is_err(), "index tags are refused");
    assert_eq!(facade.refused(), 1);

    let directories = ContainerDirectories {
        lister: Lister::new(&hns, "data").expect("client"),
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

async fn hns_entries(
    account: &lakevault_common::storage::StorageAccount,
    container: &str,
) -> BTreeMap<String, HnsEntry> {
    lakevault_tests::hns_facade::hns_entries(account, container)
        .await
        .expect("walk")
}

/// A named entry's ACL: the owning user's and group's bits, one named user, a mask.
fn acl_with(user: &str, bits: &str) -> String {
    format!("user::rwx,user:{user}:{bits},group::r-x,mask::r-x,other::---")
}

async fn set_acl(store: &AzureStore, container: &str, path: &str, owner: Option<&str>, acl: &str) {
    store
        .set_access_control(
            BlobRef::new(container, path),
            &AccessControl {
                owner,
                group: None,
                acl,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("setting the ACL of {path}: {e}"));
}

/// The coordinator's JSON report for `args` through `config`; the test fails unless it
/// exits 0.
fn run_ok(config: &std::path::Path, args: &[&str]) -> serde_json::Value {
    coordinator_json(config, args).unwrap_or_else(|e| panic!("{e:#}"))
}

fn planned(report: &serde_json::Value, field: &str) -> u64 {
    report["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| c[field].as_u64().unwrap_or(0))
        .sum()
}

/// An ADLS Gen2 lake of more than 5,000 entries (Hive partitions, `_SUCCESS` markers, the
/// ordering traps, empty directories, access and default ACLs, a named owner) through the
/// façade: a full backup, verify, an incremental backup, a full one that finds a change of
/// ACL alone, a distributed scan, and a point-in-time restore into a hierarchical target
/// that brings back every directory and file with its access control, compared entry by
/// entry with the lake as it was at that time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adls_lake_is_backed_up_and_restored_with_its_directories_and_acls() {
    use futures::{StreamExt, TryStreamExt};
    let lab = Lab::start("adls-lake", &["data"]).expect("lab");
    lab.src.ensure_container("data").await.expect("container");
    let names = lake::partitioned_lake(4_200);
    futures::stream::iter(names.iter())
        .map(|name| lake::put(&lab.src, "data", name, name.as_bytes()))
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .expect("seeding");
    for empty in ["staging", "sales/year=2025"] {
        lake::put_directory(&lab.src, "data", empty)
            .await
            .expect("directory");
    }
    let (facade, path) = behind_facade(&lab, SOURCE_ACCOUNT).await;
    let config = lakevault_common::config::Config::load(&path).expect("config");
    let (hns, _) = lakevault_tests::accounts(&config).expect("accounts");
    let dfs = AzureStore::new(hns.clone());
    // Access control as a lake team sets it, through the dfs endpoint: default ACLs on two
    // tables, a named owner on one, named users on some files and on an empty directory.
    let analyst = "6b1d2e3f-0000-4000-8000-00000000a11c";
    let owner = "0f9e8d7c-0000-4000-8000-00000000beef";
    for table in ["sales", "événements"] {
        let acl = format!(
            "{},default:user::rwx,default:user:{analyst}:r-x,default:group::r-x,default:mask::r-x,default:other::---",
            acl_with(analyst, "r-x")
        );
        set_acl(&dfs, "data", table, Some(owner), &acl).await;
    }
    set_acl(&dfs, "data", "staging", None, &acl_with(analyst, "rwx")).await;
    for name in names.iter().step_by(97) {
        set_acl(&dfs, "data", name, None, &acl_with(analyst, "r--")).await;
    }

    let at_first = hns_entries(&hns, "data").await;
    let entries = at_first.len() as u64;
    assert!(entries >= 5_000, "{entries} entries");
    assert!(
        at_first.values().all(|(_, _, access)| access.is_some()),
        "every entry lists its access control"
    );
    let directories = at_first
        .values()
        .filter(|(_, _, a)| a.as_ref().is_some_and(|a| a.directory))
        .count();
    assert!(directories > 500, "{directories} directories");

    // A full backup: planned through the façade, copied by workers straight from the
    // emulator (which cannot read a copy source at the façade's address).
    let full = run_ok(&path, &["backup"]);
    assert_eq!(planned(&full, "new"), entries, "{full}");
    let pass = drain(&lab.path, 2, &[]).expect("workers");
    assert_eq!((pass.copied, pass.poisoned), (entries, 0), "{pass:?}");
    assert_eq!(facade.refused(), 0, "no index tags asked of the source");
    // The restore below goes back to this point.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let first_time = lakevault_common::record::rfc3339(time::OffsetDateTime::now_utc());
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;

    // Changes: new content, a new file, a deletion, and a change of ACL alone (which moves
    // neither the ETag nor Last-Modified).
    let rewritten = &names[10];
    let acl_only = &names[11];
    let deleted = &names[12];
    lake::put(&lab.src, "data", rewritten, b"new content")
        .await
        .expect("put");
    lake::put(
        &lab.src,
        "data",
        "sales/year=2024/month=01/day=01/late.parquet",
        b"late",
    )
    .await
    .expect("put");
    lab.src
        .blob("data", deleted)
        .expect("client")
        .delete(None)
        .await
        .expect("delete");
    set_acl(&dfs, "data", acl_only, None, &acl_with(analyst, "rw-")).await;
    verify_finds(&path, "access", 1);

    // An incremental run plans what was written since its watermark; the change of ACL
    // alone waits for the next full run.
    let incremental = run_ok(
        &path,
        &[
            "backup",
            "--mode",
            "incremental",
            "--safety-margin-secs",
            "0",
        ],
    );
    assert_eq!(planned(&incremental, "new"), 2, "{incremental}");
    assert_eq!(drain(&lab.path, 1, &[]).expect("workers").copied, 2);
    let full = run_ok(&path, &["backup"]);
    assert_eq!(
        (
            planned(&full, "new"),
            planned(&full, "changed"),
            planned(&full, "deleted_in_source")
        ),
        (0, 1, 1),
        "the change of ACL alone, and the deletion: {full}"
    );
    let pass = drain(&lab.path, 1, &[]).expect("workers");
    assert_eq!((pass.copied, pass.poisoned), (1, 0), "{pass:?}");
    let verified = verify_finds(&path, "access", 0);
    assert_eq!(verified["containers"][0]["ok"], entries, "{verified}");

    // A distributed scan of the whole lake (workers walk their shards through the façade)
    // finds exactly what changed since: one more ACL change and one new file.
    set_acl(&dfs, "data", &names[20], None, &acl_with(analyst, "--x")).await;
    lake::put(&lab.src, "data", "A/late.txt", b"late")
        .await
        .expect("put");
    run_ok(&path, &["backup", "--distributed-scan", "--shards", "6"]);
    let pass = drain(&path, 2, &["--stream-fallback"]).expect("workers");
    assert_eq!((pass.copied, pass.poisoned), (2, 0), "{pass:?}");

    // Restore the lake as it was after the first backup into a container of the
    // hierarchical account: directories first-class, every path with its access control.
    let plan = run_ok(
        &path,
        &[
            "restore",
            "--from",
            "data",
            "--as-of",
            &first_time,
            "--to",
            "source/restored",
        ],
    );
    assert_eq!(plan["restore"], entries, "{plan}");
    assert_eq!(plan["access"]["applied"], entries, "{plan}");
    let pass = drain(&path, 2, &[]).expect("workers");
    // A directory restored after a file below it (workers run batches in parallel) exists
    // already: left as it is, and given its recorded access control all the same.
    assert_eq!(
        (pass.copied + pass.target_exists, pass.poisoned),
        (entries, 0),
        "{pass:?}"
    );
    assert!(pass.target_exists <= directories as u64, "{pass:?}");
    let restored = hns_entries(&hns, "restored").await;
    let mismatches: Vec<_> = at_first
        .iter()
        .filter(|(name, entry)| restored.get(*name) != Some(entry))
        .map(|(name, entry)| (name, entry, restored.get(name)))
        .take(5)
        .collect();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    assert_eq!(restored.len(), at_first.len(), "no path more, no path less");
}

/// Runs `verify` through `config` and checks how many problems of `kind` it reports (and,
/// for none, that it reports no problem at all). Returns the report.
fn verify_finds(config: &std::path::Path, kind: &str, expected: usize) -> serde_json::Value {
    let out = coordinator(config)
        .expect("bin")
        .args(["verify", "--output", "json"])
        .output()
        .expect("verify");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let found = report["containers"][0]["listed"]
        .as_array()
        .map_or(0, |p| p.iter().filter(|p| p["kind"] == kind).count());
    assert_eq!(found, expected, "{report}");
    if expected == 0 {
        assert_eq!(report["containers"][0]["problems"], 0, "{report}");
    }
    report
}

/// A small HNS lake with access control set, backed up; returns the façade, its config,
/// the lake's entries with their access control, and the config's text.
async fn backed_up_hns_lake(lab: &Lab) -> (HnsFacade, PathBuf, BTreeMap<String, HnsEntry>) {
    seed_lake(lab, true).await;
    let (facade, path) = behind_facade(lab, SOURCE_ACCOUNT).await;
    // Restores may write to either account.
    let mut text = std::fs::read_to_string(&path).expect("config");
    text.push_str("\n[restore]\ntargets = [\"source\", \"backup\"]\n");
    std::fs::write(&path, text).expect("config");
    let config = lakevault_common::config::Config::load(&path).expect("config");
    let (hns, _) = lakevault_tests::accounts(&config).expect("accounts");
    let dfs = AzureStore::new(hns.clone());
    let analyst = "6b1d2e3f-0000-4000-8000-00000000a11c";
    set_acl(
        &dfs,
        "data",
        "sales",
        Some("0f9e8d7c-0000-4000-8000-00000000beef"),
        &format!(
            "{},default:user::rwx,default:group::r-x,default:other::---",
            acl_with(analyst, "r-x")
        ),
    )
    .await;
    set_acl(&dfs, "data", "AB.txt", None, &acl_with(analyst, "r--")).await;
    let entries = hns_entries(&hns, "data").await;
    run_ok(&path, &["backup"]);
    let pass = drain(&lab.path, 1, &[]).expect("workers");
    assert_eq!(
        (pass.copied, pass.poisoned),
        (entries.len() as u64, 0),
        "{pass:?}"
    );
    (facade, path, entries)
}

fn restore(config: &std::path::Path, to: &str, extra: &[&str]) -> (serde_json::Value, String) {
    let out = coordinator(config)
        .expect("bin")
        .args(["restore", "--from", "data", "--to", to, "--output", "json"])
        .args(extra)
        .output()
        .expect("restore");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    (
        serde_json::from_slice(&out.stdout).expect("restore plan"),
        stderr,
    )
}

/// What a restore does with access control it cannot or may not apply: into a flat
/// account the data comes back and the plan says once why the ACLs do not; with
/// `--no-acls` directories are still directories and paths get what the target gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_control_not_applied_is_said_once_and_the_data_still_lands() {
    let lab = Lab::start("adls-noacl", &["data"]).expect("lab");
    let (facade, path, entries) = backed_up_hns_lake(&lab).await;
    let n = entries.len() as u64;

    let asked_before = facade.access_requests();
    let (plan, stderr) = restore(&path, "backup/flat", &[]);
    assert_eq!(plan["restore"], n, "{plan}");
    assert_eq!(plan["access"]["not_applied"], n, "{plan}");
    assert_eq!(plan["access"]["applied"], 0, "{plan}");
    assert!(
        plan["access"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no hierarchical namespace")),
        "{plan}"
    );
    assert_eq!(
        stderr.matches("no hierarchical namespace").count(),
        1,
        "said once per job: {stderr}"
    );
    let pass = drain(&path, 1, &[]).expect("workers");
    assert_eq!((pass.copied, pass.poisoned), (n, 0), "{pass:?}");
    assert_eq!(
        facade.access_requests(),
        asked_before,
        "nothing asked of a dfs endpoint"
    );

    let (plan, stderr) = restore(&path, "source/plain", &["--no-acls"]);
    assert_eq!(plan["access"]["not_applied"], n, "{plan}");
    assert!(stderr.contains("--no-acls"), "{stderr}");
    let pass = drain(&path, 1, &[]).expect("workers");
    assert_eq!(
        (pass.copied + pass.target_exists, pass.poisoned),
        (n, 0),
        "{pass:?}"
    );
    let config = lakevault_common::config::Config::load(&path).expect("config");
    let (hns, _) = lakevault_tests::accounts(&config).expect("accounts");
    let plain = hns_entries(&hns, "plain").await;
    assert_eq!(
        plain.keys().collect::<Vec<_>>(),
        entries.keys().collect::<Vec<_>>()
    );
    for (name, (_, _, access)) in &entries {
        let restored = plain[name].2.as_ref().expect("listed with access control");
        let recorded = access.as_ref().expect("recorded");
        assert_eq!(restored.directory, recorded.directory, "{name}");
    }
    let ab = plain["AB.txt"].2.as_ref().expect("access");
    assert!(
        !ab.acl.contains("6b1d2e3f"),
        "--no-acls: the recorded named entry is not applied: {ab:?}"
    );
}

/// A target where the restoring identity may not set owners: every path still gets its
/// data and its ACL, and each item says, in the poison queue and the job's status, that
/// its owner was not restored and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_without_owner_rights_gets_data_and_acls_and_each_item_says_so() {
    let lab = Lab::start("adls-owner", &["data"]).expect("lab");
    let (_facade, path, entries) = backed_up_hns_lake(&lab).await;
    let n = entries.len() as u64;
    // The same account behind a façade that refuses owner changes.
    let direct = lab.azurite.blob_endpoint(SOURCE_ACCOUNT);
    let strict = HnsFacade::start_refusing_owner_changes(
        direct.trim_end_matches(&format!("/{SOURCE_ACCOUNT}")),
        lab.src.clone(),
    )
    .await
    .expect("facade");
    let text = std::fs::read_to_string(&path).expect("config");
    let strict_path = lab.dir.path().join("strict.toml");
    let facade_url = text
        .split('"')
        .find(|s| s.contains("BlobEndpoint=http://127.0.0.1"))
        .and_then(|cs| cs.split(';').find(|p| p.starts_with("BlobEndpoint=")))
        .map(|p| p.trim_start_matches("BlobEndpoint=").to_string())
        .expect("the source's blob endpoint");
    std::fs::write(
        &strict_path,
        text.replace(&facade_url, &format!("{}/{SOURCE_ACCOUNT}", strict.url())),
    )
    .expect("config");
    let (plan, _) = restore(&strict_path, "source/owners", &[]);
    assert_eq!(plan["access"]["applied"], n, "{plan}");
    let job = plan["job_id"].as_str().expect("job").to_string();
    let pass = drain(&strict_path, 1, &["--max-attempts", "1"]).expect("workers");
    assert_eq!(
        pass.poisoned, n,
        "each item says its owner was not restored: {pass:?}"
    );
    let out = coordinator(&strict_path)
        .expect("bin")
        .args(["status", &job, "--output", "json"])
        .output()
        .expect("status");
    assert_eq!(out.status.code(), Some(1), "a job with failures exits 1");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["poisoned"], n, "{status}");
    let reasons = status["failures"].to_string();
    assert!(
        reasons.contains("owner") && reasons.contains("Storage Blob Data Owner"),
        "{status}"
    );
    for (name, (size, _, access)) in &entries {
        let restored = strict.access("owners", name).expect("restored path");
        let recorded = access.as_ref().expect("recorded");
        assert_eq!(restored.acl, recorded.acl, "{name}: the ACL is applied");
        assert_eq!(restored.owner, "$superuser", "{name}: the owner is not");
        if !recorded.directory {
            let landed = AzureStore::new(lab.src.clone())
                .properties(BlobRef::new("owners", name))
                .await
                .expect("the data landed");
            assert_eq!(landed.size, *size, "{name}");
        }
    }
}

/// A hierarchical listing that breaks its own order stops the container with an error
/// that says so, and marks nothing deleted: a deletion is only believed from a listing
/// that held its order to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_out_of_its_own_order_stops_the_container_without_tombstones() {
    let lab = Lab::start("adls-order", &["data"]).expect("lab");
    let (facade, path, _) = backed_up_hns_lake(&lab).await;
    lab.src
        .blob("data", "sales.csv")
        .expect("client")
        .delete(None)
        .await
        .expect("delete");
    facade.misorder_listings();
    let out = coordinator(&path)
        .expect("bin")
        .args(["backup", "--output", "json"])
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("report");
    let failed = report["failed"].to_string();
    assert!(
        // The walk of a directory, or the merge-join of the top level's entries, says so.
        failed.contains("\"data\"")
            && failed.contains(" order")
            && failed.contains("cannot continue"),
        "{report}"
    );
    assert_eq!(planned(&report, "deleted_in_source"), 0, "{report}");
    let pass = drain(&lab.path, 1, &[]).expect("workers");
    assert_eq!(
        (pass.copied, pass.poisoned),
        (0, 0),
        "nothing was enqueued: {pass:?}"
    );
    let tags = AzureStore::new(lab.bak.clone())
        .tags(BlobRef::new("data", "sales.csv"))
        .await
        .expect("the backup blob");
    let record = lakevault_common::record::BackupRecord::from_tags(&tags).expect("record");
    assert_eq!(record.deleted_at, None, "not marked deleted");
}
