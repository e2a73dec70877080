//! `make demo`: the main job end to end on a private Azurite. Seeds a sample data lake,
//! backs it up with the real coordinator and two real worker processes, verifies every
//! blob, runs again unchanged (nothing to copy), changes three blobs and runs again
//! (exactly three copied). Then the same for an ADLS Gen2 lake (a hierarchical namespace,
//! presented by the test kit's HNS façade, since the emulator has none): partitions,
//! markers, an empty directory, the ordering traps and ACLs, backed up, changed, backed up
//! again, restored as of the first backup into a second hierarchical account and compared
//! entry by entry, data and ACLs. Stops everything it started.

use anyhow::{Context, bail};
use lakevault_common::config::Config;
use lakevault_common::store::azure::AzureStore;
use lakevault_common::store::{AccessControl, BlobRef, BlobStore};
use lakevault_tests::azurite::{Azurite, BACKUP_ACCOUNT, BACKUP_KEY, SOURCE_ACCOUNT, SOURCE_KEY};
use lakevault_tests::hns_facade::{HnsFacade, config_behind, hns_entries};
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{PassReport, backup_pass, coordinator_json};
use std::path::Path;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_pass(label: &str, p: &PassReport) {
    println!(
        "  {label:<28} planned {:>5}  copied {:>5}  {:>8.1} MiB  in {:>5.1}s  ({:>6.1} blobs/s)",
        p.planned,
        p.copied,
        mib(p.bytes),
        p.seconds,
        p.copied as f64 / p.seconds.max(0.001),
    );
    let per_copied = |n: u64| {
        if p.copied > 0 {
            format!(" ({:.3} per copied blob)", n as f64 / p.copied as f64)
        } else {
            String::new()
        }
    };
    println!(
        "  {:<28} storage requests by the workers {}{}; queue requests {}{}; {} messages",
        "",
        p.storage_requests,
        per_copied(p.storage_requests),
        p.queue_requests,
        per_copied(p.queue_requests),
        p.messages,
    );
}

async fn verify(config: &Config, spec: &LakeSpec) -> anyhow::Result<lake::VerifyReport> {
    let (src, bak) = lakevault_tests::accounts(config)?;
    let pairs: Vec<(String, String)> = spec
        .containers
        .iter()
        .map(|c| {
            Ok((
                c.clone(),
                config
                    .destination_container(c)
                    .map_err(anyhow::Error::msg)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let report = lake::verify(&src, &bak, &pairs).await?;
    if !report.problems.is_empty() {
        for p in report.problems.iter().take(20) {
            eprintln!("  MISMATCH {p}");
        }
        bail!(
            "{} of {} blobs did not verify",
            report.problems.len(),
            report.blobs
        );
    }
    Ok(report)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let spec = LakeSpec::demo();
    println!("lakevault demo: backing up a sample data lake on a local Azure Storage emulator");
    let azurite = Azurite::start().context("starting Azurite")?;
    println!(
        "- Azurite running: blob on 127.0.0.1:{}, queue on 127.0.0.1:{} (two accounts: source and backup)",
        azurite.blob_port, azurite.queue_port
    );
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("lakevault.toml");
    std::fs::write(&config_path, azurite.config_toml("lakevault-demo", &["*"]))?;
    let config = Config::load(&config_path)?;
    println!("- config: {}", config_path.display());

    let (src, _) = lakevault_tests::accounts(&config)?;
    let (blobs, bytes) = lake::seed(&src, &spec)
        .await
        .context("seeding the sample lake")?;
    // A few blobs written by "another client" with mixed-case metadata keys, which the
    // backup must keep exactly.
    for (i, name) in ["MixedCase/Report Q1.csv", "MixedCase/naïve café.txt"]
        .iter()
        .enumerate()
    {
        lake::raw_put_blob(
            &azurite.blob_endpoint(SOURCE_ACCOUNT),
            SOURCE_ACCOUNT,
            SOURCE_KEY,
            &spec.containers[1],
            name,
            format!("written by another client {i}").as_bytes(),
            &[
                ("CamelCaseKey", "Value One"),
                ("lowercase", "two"),
                ("UPPER", "THREE"),
            ],
        )?;
    }
    let blobs = blobs + 2;
    println!(
        "- seeded {} blobs ({:.1} MiB) in containers {}: nested directories, names with spaces, \
         punctuation and non-ASCII characters, content headers, metadata and index tags, one blob \
         of {:.0} MiB, and 2 blobs whose mixed-case metadata keys were written by another client",
        blobs,
        mib(bytes),
        spec.containers.join(", "),
        mib(spec.large_bytes)
    );

    println!("\nbackup passes (coordinator + 2 worker processes each):");
    let first = backup_pass(&config_path, 2)?;
    print_pass("1. initial backup", &first);
    if first.copied != blobs || first.poisoned != 0 {
        bail!(
            "initial backup copied {} of {blobs} blobs ({} poisoned)",
            first.copied,
            first.poisoned
        );
    }
    let v1 = verify(&config, &spec).await?;

    let second = backup_pass(&config_path, 2)?;
    print_pass("2. again, nothing changed", &second);
    if second.planned != 0 || second.copied != 0 {
        bail!(
            "unchanged lake: planned {}, copied {} (expected 0)",
            second.planned,
            second.copied
        );
    }

    let changed = lake::modify(&src, &spec, 3, 1).await?;
    let third = backup_pass(&config_path, 2)?;
    print_pass("3. after changing 3 blobs", &third);
    if third.copied != 3 || third.planned != 3 {
        bail!(
            "after changing 3 blobs: planned {}, copied {} (expected 3)",
            third.planned,
            third.copied
        );
    }
    let v3 = verify(&config, &spec).await?;

    println!("\nchanged blobs copied in pass 3:");
    for c in &changed {
        println!("  {c}");
    }
    println!(
        "\nverified: all {} blobs ({:.1} MiB) match their source after pass 1 and all {} after pass 3 \
         (SHA-256 of content, size, content type and other content headers, Content-MD5, metadata with \
         exact key case, index tags, recorded source ETag)",
        v1.blobs,
        mib(v1.bytes),
        v3.blobs
    );
    println!(
        "summary: {} blobs, {:.1} MiB backed up in {:.1}s wall time (plan + copy by 2 workers; {:.0} blobs/s); \
         re-run copied 0; 3 changes copied 3",
        first.copied,
        mib(first.bytes),
        first.seconds,
        first.copied as f64 / first.seconds.max(0.001)
    );
    adls(&azurite, dir.path(), &config_path).await?;
    drop(azurite);
    println!("stopped Azurite; demo OK");
    Ok(())
}

fn sum(report: &serde_json::Value, field: &str) -> u64 {
    report["containers"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c[field].as_u64()).sum())
        .unwrap_or(0)
}

/// The ADLS Gen2 part: an HNS lake through the façade, backed up, changed, backed up,
/// restored as of the first backup into a second HNS account, compared with its ACLs.
async fn adls(azurite: &Azurite, dir: &Path, config_path: &Path) -> anyhow::Result<()> {
    println!(
        "
ADLS Gen2 (hierarchical namespace; the emulator has none, so the test kit's HNS façade \
         presents its accounts as ADLS Gen2 accounts, dfs endpoint and ACLs included):"
    );
    let config = Config::load(config_path)?;
    let (src, bak) = lakevault_tests::accounts(&config)?;
    src.ensure_container("lake").await?;
    let mut names = Vec::new();
    for table in ["sales", "sales-2024", "events"] {
        for month in 1..=3 {
            let dir = format!("{table}/year=2024/month={month:02}");
            names.push(format!("{dir}/part-00000.snappy.parquet"));
            names.push(format!("{dir}/part-00001.snappy.parquet"));
            names.push(format!("{dir}/_SUCCESS"));
        }
    }
    names.extend(["sales.csv".to_string(), "events/README.md".to_string()]);
    for name in &names {
        lake::put(&src, "lake", name, format!("content of {name}").as_bytes()).await?;
    }
    lake::put_directory(&src, "lake", "staging").await?;

    // The source account and, for the restore, the backup account (a second account),
    // each behind a façade that presents it as an HNS account.
    let base = |account: &str| {
        azurite
            .blob_endpoint(account)
            .trim_end_matches(&format!("/{account}"))
            .to_string()
    };
    let source_facade = HnsFacade::start(&base(SOURCE_ACCOUNT), src.clone()).await?;
    let target_facade = HnsFacade::start(&base(BACKUP_ACCOUNT), bak.clone()).await?;
    let adls_config = dir.join("adls.toml");
    config_behind(
        config_path,
        &azurite.blob_endpoint(SOURCE_ACCOUNT),
        &source_facade,
        SOURCE_ACCOUNT,
        &adls_config,
    )?;
    let mut text = std::fs::read_to_string(&adls_config)?
        .replace("containers = [\"*\"]", "containers = [\"lake\"]");
    text.push_str(&format!(
        "\n[accounts.lake2]\nkind = \"shared_key\"\naccount_name = \"{BACKUP_ACCOUNT}\"\naccount_key = \"{BACKUP_KEY}\"\nblob_endpoint = \"{}/{BACKUP_ACCOUNT}\"\nqueue_endpoint = \"{}\"\n\n[restore]\ntargets = [\"lake2\"]\n",
        target_facade.url(),
        azurite.queue_endpoint(BACKUP_ACCOUNT)
    ));
    std::fs::write(&adls_config, text)?;
    let adls = Config::load(&adls_config)?;
    let (hns, _) = lakevault_tests::accounts(&adls)?;
    let dfs = AzureStore::new(hns.clone());
    let analyst = "6b1d2e3f-0000-4000-8000-00000000a11c";
    let set = |path: &'static str, acl: String| {
        let dfs = dfs.clone();
        async move {
            dfs.set_access_control(
                BlobRef::new("lake", path),
                &AccessControl {
                    owner: None,
                    group: None,
                    acl: &acl,
                },
            )
            .await
            .with_context(|| format!("setting the ACL of {path}"))
        }
    };
    set(
        "sales",
        format!(
            "user::rwx,user:{analyst}:r-x,group::r-x,mask::r-x,other::---,\
             default:user::rwx,default:user:{analyst}:r-x,default:group::r-x,default:mask::r-x,default:other::---"
        ),
    )
    .await?;
    set(
        "staging",
        format!("user::rwx,user:{analyst}:rwx,group::r-x,mask::rwx,other::---"),
    )
    .await?;
    let at_first = hns_entries(&hns, "lake").await?;
    let directories = at_first
        .values()
        .filter(|(_, _, a)| a.as_ref().is_some_and(|a| a.directory))
        .count();
    let named = at_first
        .values()
        .filter(|(_, _, a)| a.as_ref().is_some_and(|a| a.acl.contains(analyst)))
        .count();
    println!(
        "- seeded an ADLS lake `lake`: {} entries ({} files, {directories} directories, one of them \
         empty), Hive partitions with _SUCCESS markers, `sales/` beside `sales-2024/` and \
         `sales.csv`; {named} paths carry a named-user ACL entry (set through the dfs endpoint)",
        at_first.len(),
        at_first.len() - directories
    );

    // Plans through the façade; the workers copy from the emulator directly (it cannot
    // fetch a copy source at the façade's address).
    let plan = coordinator_json(&adls_config, &["backup"])?;
    let pass = lakevault_tests::scenario::drain(config_path, 2, &[])?;
    println!(
        "  1. backup of the HNS lake: source namespace {}, planned {} (directory by directory \
         into the flat order), copied {}, poisoned {}",
        plan["namespaces"]["source"],
        sum(&plan, "new"),
        pass.copied,
        pass.poisoned
    );
    if pass.copied != at_first.len() as u64 || pass.poisoned != 0 {
        bail!(
            "the HNS backup copied {} of {}",
            pass.copied,
            at_first.len()
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let first_time = lakevault_common::record::rfc3339(time::OffsetDateTime::now_utc());
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;

    // The lake moves on: a file rewritten, a file deleted, and an ACL changed (alone: the
    // file's ETag does not move).
    lake::put(&src, "lake", "sales.csv", b"rewritten").await?;
    src.blob("lake", "events/README.md")?.delete(None).await?;
    set(
        "sales-2024/year=2024/month=01/_SUCCESS",
        format!("user::rw-,user:{analyst}:r--,group::r--,mask::r--,other::---"),
    )
    .await?;
    let plan = coordinator_json(&adls_config, &["backup"])?;
    let pass = lakevault_tests::scenario::drain(config_path, 2, &[])?;
    println!(
        "  2. after a rewrite, a delete and a change of ACL alone: changed {} (the rewrite and \
         the ACL), deleted {}, copied {}",
        sum(&plan, "changed"),
        sum(&plan, "deleted_in_source"),
        pass.copied
    );
    if sum(&plan, "changed") != 2 || pass.copied != 2 {
        bail!("the second HNS backup planned {plan}");
    }
    let verified = coordinator_json(&adls_config, &["verify"])?;
    println!(
        "  verify through the façade: {} entries checked, {} ok (data, record and ACLs)",
        sum(&verified, "checked"),
        sum(&verified, "ok")
    );

    // Restore as of the first backup into the second HNS account.
    let plan = coordinator_json(
        &adls_config,
        &[
            "restore",
            "--from",
            "lake",
            "--as-of",
            &first_time,
            "--to",
            "lake2/lake-restored",
        ],
    )?;
    let pass = lakevault_tests::scenario::drain(&adls_config, 2, &[])?;
    let (target, _) = {
        let mut restored_config = adls.clone();
        restored_config.backup.source = "lake2".into();
        lakevault_tests::accounts(&restored_config)?
    };
    let restored = hns_entries(&target, "lake-restored").await?;
    let mismatches = at_first
        .iter()
        .filter(|(name, entry)| restored.get(*name) != Some(*entry))
        .count()
        + restored
            .keys()
            .filter(|n| !at_first.contains_key(*n))
            .count();
    println!(
        "  3. restore as of {first_time} into a second HNS account: {} paths ({} with their \
         recorded owner, group and ACL), {} written, {} directories already there; compared \
         entry by entry with the lake at that time (content MD5, size, directory or file, \
         owner, group, permissions, ACL): {mismatches} differences",
        plan["restore"], plan["access"]["applied"], pass.copied, pass.target_exists
    );
    if mismatches != 0 || pass.poisoned != 0 {
        bail!("the HNS restore differs from the lake at {first_time} in {mismatches} entries");
    }
    Ok(())
}
