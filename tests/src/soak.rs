//! The soak: a backup run under fire, then checked three ways.
//!
//! A private emulator holds a lake of `blobs` blobs. The coordinator plans a full backup;
//! workers copy it through a fault proxy in front of the backup account that answers a
//! share of writes with 503 ServerBusy and cuts the connection after others have taken
//! effect (the answer is lost, the write is not). One of the workers is SIGKILLed every
//! `kill_every` and started again, for `kill_for`. Meanwhile a writer rewrites and deletes
//! `churn` of the source blobs. A second backup pass then records what the writer changed.
//!
//! Then: the test kit's own comparison of every source blob with its backup (content,
//! headers, metadata, tags, record) and of every deleted one with its tombstone; the
//! coordinator's `verify --deep`; and a restore drill (the backup restored into a new
//! container of the source account, compared with the source blob by blob). Nothing may be
//! lost and nothing poisoned.

use crate::Lab;
use crate::azurite::BACKUP_ACCOUNT;
use crate::fault_proxy::{Fault, FaultProxy, Rule};
use crate::lake::{self, LakeSpec};
use crate::scenario::{batch_worker, checked, collect, coordinator, drain, plan, worker};
use anyhow::Context;
use azure_core::http::RequestContent;
use futures::{StreamExt, TryStreamExt};
use lakevault_common::queue::{AzureQueue, WorkQueue};
use lakevault_common::record::BackupRecord;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const CONTAINER: &str = "data";
const QUEUE: &str = "soak";

#[derive(Debug, Clone)]
pub struct SoakSpec {
    pub blobs: usize,
    /// Workers besides the one that is killed.
    pub steady_workers: usize,
    pub kill_every: Duration,
    pub kill_for: Duration,
    /// Share of the source blobs the writer rewrites or deletes while the backup runs.
    pub churn: f64,
    /// One in this many writes to the backup account is answered 503, and one in
    /// `2 * fault_every + 1` has its answer cut off after it took effect.
    pub fault_every: usize,
    pub seed: u64,
}

impl SoakSpec {
    /// `make soak`.
    pub fn full() -> Self {
        Self {
            blobs: 20_000,
            steady_workers: 2,
            kill_every: Duration::from_secs(3),
            kill_for: Duration::from_secs(60),
            churn: 0.1,
            fault_every: 25,
            seed: 20_000,
        }
    }

    /// The short version in `make test`.
    pub fn short() -> Self {
        Self {
            blobs: 1_000,
            steady_workers: 2,
            kill_every: Duration::from_secs(2),
            kill_for: Duration::from_secs(12),
            churn: 0.1,
            fault_every: 20,
            seed: 1_000,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SoakReport {
    pub blobs: usize,
    pub kills: usize,
    pub faults_injected: usize,
    /// Items planned by the two backup passes.
    pub items: u64,
    pub rewritten: usize,
    pub deleted: usize,
    /// Deleted by the writer before any worker copied them (never in the backup).
    pub deleted_before_copy: u64,
    /// Source blobs as they are at the end, and the deleted ones the backup holds (as
    /// tombstones).
    pub versions_expected: u64,
    pub versions_found: u64,
    pub lost: u64,
    pub poisoned: u64,
    pub verify_deep_exit: i32,
    pub restored_checked: u64,
    pub restore_mismatches: u64,
    pub seconds: f64,
    /// The first problems found, if any.
    pub problems: Vec<String>,
}

/// A copy of the lab's config whose backup account's blob endpoint is `proxy`.
fn through_proxy(lab: &Lab, proxy: &FaultProxy) -> anyhow::Result<PathBuf> {
    let direct = lab.azurite.blob_endpoint(BACKUP_ACCOUNT);
    let text = std::fs::read_to_string(&lab.path)?
        .replace(&direct, &format!("{}/{BACKUP_ACCOUNT}", proxy.url()));
    anyhow::ensure!(text.contains(&proxy.url()), "backup endpoint not in config");
    let path = lab.dir.path().join("through-proxy.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

const WORKER_FLAGS: &[&str] = &["--visibility-timeout-secs", "10", "--prefetch", "2"];

/// Kills and restarts one worker every `every` for `duration`; returns the kills.
async fn killer(config: PathBuf, every: Duration, duration: Duration) -> anyhow::Result<usize> {
    let started = Instant::now();
    let mut kills = 0;
    while started.elapsed() < duration {
        let mut victim: Child = worker(&config)?
            .arg("run")
            .args(WORKER_FLAGS)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the victim")?;
        tokio::time::sleep(every).await;
        victim.kill().context("SIGKILL")?;
        victim.wait()?;
        kills += 1;
    }
    Ok(kills)
}

/// What the writer did to the source.
#[derive(Debug, Default)]
struct Churn {
    rewritten: BTreeSet<String>,
    deleted: BTreeSet<String>,
}

/// Rewrites and deletes `share` of the blobs, spread over `over`.
async fn writer(
    lab_src: lakevault_common::storage::StorageAccount,
    names: Vec<String>,
    share: f64,
    over: Duration,
    seed: u64,
) -> anyhow::Result<Churn> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let count = ((names.len() as f64) * share).round() as usize;
    let mut picked: Vec<String> = names;
    // A random selection, in a random order.
    for i in (1..picked.len()).rev() {
        let j = rng.random_range(0..=i);
        picked.swap(i, j);
    }
    picked.truncate(count);
    let pause = over / (count.max(1) as u32);
    let mut churn = Churn::default();
    for name in picked {
        let blob = lab_src.blob(CONTAINER, &name)?;
        if rng.random_bool(0.3) {
            blob.delete(None)
                .await
                .with_context(|| format!("deleting {name}"))?;
            churn.deleted.insert(name);
        } else {
            let body: Vec<u8> = (0..rng.random_range(1..4096))
                .map(|_| rng.random())
                .collect();
            blob.upload(RequestContent::from(body), None)
                .await
                .with_context(|| format!("rewriting {name}"))?;
            churn.rewritten.insert(name);
        }
        tokio::time::sleep(pause).await;
    }
    Ok(churn)
}

/// Names in a container of an account.
async fn names(
    account: &lakevault_common::storage::StorageAccount,
    container: &str,
) -> anyhow::Result<Vec<String>> {
    Ok(lake::entries(account, container, false)
        .await?
        .into_iter()
        .map(|e| e.name)
        .collect())
}

pub async fn run(spec: &SoakSpec) -> anyhow::Result<SoakReport> {
    let started = Instant::now();
    let lab = Lab::start(QUEUE, &[CONTAINER])?;
    let lake_spec = LakeSpec {
        containers: vec![CONTAINER.into()],
        blobs: spec.blobs,
        large_bytes: 0,
        seed: spec.seed,
    };
    lake::seed(&lab.src, &lake_spec).await?;
    let seeded = names(&lab.src, CONTAINER).await?;
    let direct = lab.azurite.blob_endpoint(BACKUP_ACCOUNT);
    let proxy = FaultProxy::start(direct.trim_end_matches(&format!("/{BACKUP_ACCOUNT}"))).await?;
    // Writes only: 503 before the write (nothing happens), a cut connection after it (it
    // happened, the worker does not know).
    proxy.add(
        Rule::new(Fault::Status(503, "ServerBusy"))
            .method("PUT")
            .every(spec.fault_every),
    );
    proxy.add(
        Rule::new(Fault::Reset)
            .method("PUT")
            .every(2 * spec.fault_every + 1),
    );
    let faulty = through_proxy(&lab, &proxy)?;

    let mut report = SoakReport {
        blobs: spec.blobs,
        ..Default::default()
    };
    let (planned, _) = plan(&lab.path)?;
    report.items += planned;

    let steady: Vec<Child> = (0..spec.steady_workers)
        .map(|_| {
            batch_worker(&faulty, WORKER_FLAGS)?
                .spawn()
                .context("spawning a worker")
        })
        .collect::<anyhow::Result<_>>()?;
    let kills = tokio::spawn(killer(faulty.clone(), spec.kill_every, spec.kill_for));
    let churn = tokio::spawn(writer(
        lab.src.clone(),
        seeded.clone(),
        spec.churn,
        spec.kill_for / 2,
        spec.seed ^ 0x5eed,
    ));
    let churn = churn.await??;
    report.kills = kills.await??;
    let mut first = crate::scenario::PassReport::default();
    tokio::task::spawn_blocking(move || collect(steady, &mut first).map(|()| first)).await??;
    report.rewritten = churn.rewritten.len();
    report.deleted = churn.deleted.len();

    // The next scheduled run: what the writer changed is planned and copied, what it
    // deleted is tombstoned. Faults stay on.
    let (planned, _) = plan(&lab.path)?;
    report.items += planned;
    drain(&faulty, spec.steady_workers, WORKER_FLAGS)?;
    report.faults_injected = proxy.faulted();
    proxy.clear();

    let poison = AzureQueue::new(
        format!("{QUEUE}-poison"),
        lab.bak.queue(&format!("{QUEUE}-poison"))?,
    );
    report.poisoned = poison.approximate_len().await.unwrap_or(0);
    // Why, when anything was: the records name each item and its reason.
    if report.poisoned > 0
        && let Ok(records) = poison.receive(32, Duration::from_secs(30)).await
    {
        report.problems.extend(
            records
                .into_iter()
                .take(10)
                .map(|r| format!("poisoned: {}", r.text)),
        );
    }

    // 1. The test kit's own comparison.
    let compared =
        lake::verify(&lab.src, &lab.bak, &[(CONTAINER.into(), CONTAINER.into())]).await?;
    let expected_live = compared.blobs;
    let bad_live = compared.problems.len() as u64;
    report
        .problems
        .extend(compared.problems.into_iter().take(10));
    let backup = lake::entries(&lab.bak, CONTAINER, false).await?;
    let mut tombstones_expected = 0u64;
    let mut tombstones_found = 0u64;
    for name in &churn.deleted {
        // A blob deleted before any worker reached it was never backed up: its copy ended
        // as "source gone", and there is nothing to mark.
        let Some(entry) = backup.iter().find(|e| e.name == *name) else {
            report.deleted_before_copy += 1;
            continue;
        };
        tombstones_expected += 1;
        if BackupRecord::from_tags(&entry.tags).is_some_and(|r| r.deleted_at.is_some()) {
            tombstones_found += 1;
        } else if report.problems.len() < 20 {
            report.problems.push(format!(
                "{CONTAINER}/{name}: deleted in the source, backed up, but not marked deleted"
            ));
        }
    }
    report.versions_expected = expected_live + tombstones_expected;
    report.versions_found = expected_live - bad_live + tombstones_found;
    report.lost = report.versions_expected - report.versions_found;

    // 2. The coordinator's own deep verify.
    let out = coordinator(&lab.path)?
        .args(["verify", "--deep", "--output", "json"])
        .output()?;
    report.verify_deep_exit = out.status.code().unwrap_or(-1);

    // 3. A restore drill: the latest backup into a new container, compared with the source.
    checked(
        coordinator(&lab.path)?
            .args([
                "restore",
                "--from",
                CONTAINER,
                "--to",
                "source/restored",
                "--output",
                "json",
            ])
            .output()?,
        "restore",
    )?;
    drain(&lab.path, spec.steady_workers, &[])?;
    let (mismatches, checked_count) = compare_restore(&lab).await?;
    report.restored_checked = checked_count;
    report.restore_mismatches = mismatches.len() as u64;
    report.problems.extend(mismatches.into_iter().take(10));
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Every source blob against its restored copy (content), and no restored blob the source
/// does not have.
async fn compare_restore(lab: &Lab) -> anyhow::Result<(Vec<String>, u64)> {
    let source: BTreeSet<String> = names(&lab.src, CONTAINER).await?.into_iter().collect();
    let restored: BTreeSet<String> = names(&lab.src, "restored").await?.into_iter().collect();
    let mut problems: Vec<String> = source
        .symmetric_difference(&restored)
        .map(|n| format!("{n}: in one of source and restored only"))
        .collect();
    let both: Vec<String> = source.intersection(&restored).cloned().collect();
    let checked_count = both.len() as u64;
    let differing: Vec<String> = futures::stream::iter(both)
        .map(|name| async move {
            let a = lake::sha256_of(&lab.src, CONTAINER, &name).await?;
            let b = lake::sha256_of(&lab.src, "restored", &name).await?;
            Ok::<_, anyhow::Error>((a != b).then(|| format!("{name}: restored content differs")))
        })
        .buffer_unordered(8)
        .try_filter_map(|x| async move { Ok(x) })
        .try_collect()
        .await?;
    problems.extend(differing);
    Ok((problems, checked_count))
}

/// The report as a few lines for a terminal.
pub fn describe(r: &SoakReport) -> String {
    format!(
        "soak: {} blobs, {} kills, {} faults injected, {} items planned, {} rewritten and {} deleted while the backup ran ({} of them before any copy)\n\
         versions expected {}, found {}, lost = {}; poisoned {}; verify --deep exit {}; restore drill: {} blobs compared, {} mismatches; {:.0}s",
        r.blobs,
        r.kills,
        r.faults_injected,
        r.items,
        r.rewritten,
        r.deleted,
        r.deleted_before_copy,
        r.versions_expected,
        r.versions_found,
        r.lost,
        r.poisoned,
        r.verify_deep_exit,
        r.restored_checked,
        r.restore_mismatches,
        r.seconds
    )
}
