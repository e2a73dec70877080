//! The bench: seeding, the systems side by side (ceiling, rclone, lakevault, bare
//! listing), and how each run is measured and checked.

use super::*;

/// Accounts for the store seam, through the proxy (measured runs) or straight to the
/// emulator (seeding, checking, cleaning up: never counted).
#[derive(Debug)]
pub(super) struct Pair {
    pub src: AzureStore,
    pub bak: AzureStore,
    /// The backup account, for its queue client.
    pub bak_account: StorageAccount,
}

#[derive(Debug)]
pub(super) struct Bins {
    pub coordinator: PathBuf,
    pub worker: PathBuf,
    pub rclone: PathBuf,
}

/// The emulator, the proxy in front of it, and what every run needs.
#[derive(Debug)]
pub(super) struct World {
    pub args: Args,
    pub bins: Bins,
    pub dir: tempfile::TempDir,
    pub proxy: proxy::CountingProxy,
    pub meter: Meter,
    pub direct: Pair,
    pub proxied: Pair,
    /// Held, not read: dropping it stops the emulator, after every client above.
    _azurite: Azurite,
}

/// The start of a measured run.
#[derive(Debug)]
pub(super) struct Start {
    load: f64,
    counts: proxy::Counts,
    pub mark: Mark,
}

/// A lakevault config for the emulator: source and backup by shared key, as an operator
/// would write it, with both services at `blob` and `queue` (proxy or emulator).
fn config_toml(blob: &str, queue: &str, container: &str, template: &str, q: &str) -> String {
    format!(
        r#"[accounts.source]
kind = "shared_key"
account_name = "{SOURCE_ACCOUNT}"
account_key = "{SOURCE_KEY}"
blob_endpoint = "{blob}/{SOURCE_ACCOUNT}"
queue_endpoint = "{queue}/{SOURCE_ACCOUNT}"

[accounts.backup]
kind = "shared_key"
account_name = "{BACKUP_ACCOUNT}"
account_key = "{BACKUP_KEY}"
blob_endpoint = "{blob}/{BACKUP_ACCOUNT}"
queue_endpoint = "{queue}/{BACKUP_ACCOUNT}"

[backup]
source = "source"
destination = "backup"
containers = ["{container}"]
container_template = "{template}"

[queue]
account = "backup"
name = "{q}"
"#
    )
}

impl Bins {
    fn find(args: &Args) -> anyhow::Result<Self> {
        let here = std::env::current_exe()?
            .parent()
            .context("the bench binary has no directory")?
            .to_path_buf();
        let rclone = args
            .rclone
            .clone()
            .unwrap_or_else(|| repo_root().join("target/tools/rclone/rclone"));
        let bins = Self {
            coordinator: here.join("lakevault-coordinator"),
            worker: here.join("lakevault-worker"),
            rclone,
        };
        for bin in [&bins.coordinator, &bins.worker, &bins.rclone] {
            ensure!(
                bin.exists(),
                "{} not found: scripts/bench-e2e.sh builds and installs everything",
                bin.display()
            );
        }
        Ok(bins)
    }
}

impl World {
    async fn start(args: Args, bins: Bins) -> anyhow::Result<Self> {
        let azurite = Azurite::start()?;
        let (azurite_blob, azurite_queue) = azurite_pids()?;
        let direct_blob = format!("http://127.0.0.1:{}", azurite.blob_port);
        let direct_queue = format!("http://127.0.0.1:{}", azurite.queue_port);
        let proxy = proxy::CountingProxy::start(&direct_blob, &direct_queue)?;
        let dir = tempfile::tempdir()?;
        let pair = |name: &str, blob: &str, queue: &str| -> anyhow::Result<Pair> {
            let path = dir.path().join(name);
            std::fs::write(
                &path,
                config_toml(blob, queue, "unused", "{container}", "unused"),
            )?;
            let (src, bak) = lakevault_tests::accounts(&Config::load(&path)?)?;
            Ok(Pair {
                src: AzureStore::new(src),
                bak: AzureStore::new(bak.clone()),
                bak_account: bak,
            })
        };
        let direct = pair("direct.toml", &direct_blob, &direct_queue)?;
        let proxied = pair("proxied.toml", &proxy.blob_url, &proxy.queue_url)?;
        let meter = Meter {
            azurite_blob,
            azurite_queue,
            proxy: proxy.pid(),
            ticks_per_second: clock_ticks_per_second(),
        };
        Ok(Self {
            args,
            bins,
            dir,
            proxy,
            meter,
            direct,
            proxied,
            _azurite: azurite,
        })
    }

    pub async fn begin(&self) -> anyhow::Result<Start> {
        let load = load_average();
        let counts = self.proxy.counts().await?;
        Ok(Start {
            load,
            counts,
            mark: self.meter.mark(),
        })
    }

    pub async fn requests_since(&self, start: &Start) -> anyhow::Result<Requests> {
        Ok(Requests::between(
            &start.counts,
            &self.proxy.counts().await?,
        ))
    }

    /// A lakevault config through the proxy, backing `set` up into `template`.
    pub fn write_config(
        &self,
        set: &DataSet,
        template: &str,
        queue: &str,
    ) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(format!("{queue}.toml"));
        let text = config_toml(
            &self.proxy.blob_url,
            &self.proxy.queue_url,
            &set.container,
            template,
            queue,
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }

    pub fn azurite_peak_rss_mib(&self) -> f64 {
        vm_hwm_kib(self.meter.azurite_blob).unwrap_or(0) as f64 / 1024.0
    }

    async fn delete_backup_container(&self, container: &str) -> anyhow::Result<()> {
        self.direct
            .bak_account
            .container(container)?
            .delete(None)
            .await
            .with_context(|| format!("deleting {container}"))?;
        Ok(())
    }
}

impl Start {
    pub fn measured(
        &self,
        span: Span,
        cpu_seconds: f64,
        peak_rss_kib: u64,
        processes: usize,
    ) -> Measured {
        Measured {
            load_before: self.load,
            span,
            cpu_seconds,
            peak_rss_kib,
            processes,
        }
    }
}

/// Which run of a set this is.
#[derive(Debug, Clone, Copy)]
pub(super) struct Label<'a> {
    pub key: &'a str,
    pub system: &'a str,
    pub kind: Kind,
    pub phase: Phase,
}

/// What a run did, besides what was measured.
#[derive(Debug)]
pub(super) struct Outcome {
    pub requests: Requests,
    pub did: String,
    pub detail: serde_json::Value,
}

/// A run's record from its measurement and outcome.
pub(super) fn record(set: &DataSet, label: Label<'_>, m: Measured, outcome: Outcome) -> Run {
    Run {
        set: set.key,
        key: label.key.to_string(),
        system: label.system.to_string(),
        kind: label.kind,
        phase: label.phase,
        blobs: set.blobs as u64,
        bytes: set.total_bytes(),
        load_before: m.load_before,
        wall_seconds: m.span.wall_seconds,
        cpu_seconds: m.cpu_seconds,
        peak_rss_mib: m.peak_rss_kib as f64 / 1024.0,
        processes: m.processes,
        azurite_blob_cpu_seconds: m.span.azurite_blob_cpu_seconds,
        azurite_queue_cpu_seconds: m.span.azurite_queue_cpu_seconds,
        proxy_cpu_seconds: m.span.proxy_cpu_seconds,
        requests: outcome.requests,
        did: outcome.did,
        detail: outcome.detail,
    }
}

/// Fails unless the run's blob count matches the set (a system that copied nothing).
fn expect_blobs(what: &str, got: u64, set: &DataSet) -> anyhow::Result<()> {
    ensure!(
        got == set.blobs as u64,
        "{what}: {got} blobs, the source holds {}",
        set.blobs
    );
    Ok(())
}

// -- The ceiling ---------------------------------------------------------------------

/// List the source, then copy every blob, `concurrency` in flight. Returns the count.
async fn ceiling_copy(
    pair: &Pair,
    from: &str,
    to: &str,
    concurrency: usize,
) -> anyhow::Result<u64> {
    let listed = list_all(&pair.src, from).await?;
    let copied: Vec<()> = futures::stream::iter(listed.iter())
        .map(|blob| copy_blob(pair, from, to, blob, concurrency))
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    Ok(copied.len() as u64)
}

async fn copy_blob(
    pair: &Pair,
    from: &str,
    to: &str,
    blob: &Listed,
    concurrency: usize,
) -> anyhow::Result<()> {
    // Signing a SAS is local: no request.
    let source = pair
        .src
        .copy_source(BlobRef::new(from, &blob.name), SAS_VALIDITY)
        .await?;
    let target = BlobRef::new(to, &blob.name);
    if blob.size <= SYNC_COPY_MAX {
        let request = CopyFromUrl {
            source: &source,
            source_if_match: None,
            condition: Condition::None,
            tags: None,
            tier: None,
        };
        pair.bak
            .copy_from_url(target, request)
            .await
            .with_context(|| format!("ceiling: copying {}", blob.name))?;
    } else {
        copy_in_ranges(&pair.bak, target, &source, blob, concurrency).await?;
    }
    Ok(())
}

/// Put Block From URL of every range, then Put Block List (with the Content-MD5 the
/// listing gave, so the copy carries it as a single copy would).
async fn copy_in_ranges(
    bak: &AzureStore,
    target: BlobRef<'_>,
    source: &CopySource,
    blob: &Listed,
    concurrency: usize,
) -> anyhow::Result<()> {
    let ids = block_ids(blob.size);
    futures::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| {
            let offset = i as u64 * BLOCK_SIZE;
            let length = BLOCK_SIZE.min(blob.size - offset);
            bak.stage_block_from_url(target, id, source, None, offset, length)
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await
        .with_context(|| format!("ceiling: staging {}", blob.name))?;
    let commit = Commit {
        headers: ContentHeaders {
            content_md5: blob.content_md5.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    bak.commit_blocks(target, &ids, commit)
        .await
        .with_context(|| format!("ceiling: committing {}", blob.name))?;
    Ok(())
}

async fn ceiling(world: &World, set: &DataSet, truth: &Truth) -> anyhow::Result<Run> {
    let dest = format!("{}-ceiling", set.container);
    world.direct.bak.create_container(&dest).await?;
    let start = world.begin().await?;
    let rss_reset = reset_own_peak_rss();
    let cpu_before = own_cpu_seconds();
    let copied = ceiling_copy(
        &world.proxied,
        &set.container,
        &dest,
        world.args.concurrency,
    )
    .await?;
    let span = world.meter.since(&start.mark);
    let cpu = own_cpu_seconds() - cpu_before;
    let peak = vm_hwm_kib(std::process::id()).unwrap_or(0);
    let requests = world.requests_since(&start).await?;
    expect_blobs("ceiling", copied, set)?;
    let md5_missing = truth.check(&world.direct.bak, &dest, "ceiling").await?;
    world.delete_backup_container(&dest).await?;
    let label = Label {
        key: "ceiling",
        system: "ceiling (Copy Blob From URL loop)",
        kind: Kind::Ceiling,
        phase: Phase::Copy,
    };
    let outcome = Outcome {
        requests,
        did: format!("copied {}", thousands(copied)),
        detail: serde_json::json!({ "peak_rss_reset": rss_reset, "md5_missing": md5_missing }),
    };
    Ok(record(
        set,
        label,
        start.measured(span, cpu, peak, 1),
        outcome,
    ))
}

/// Blobs copied to warm the emulator up before anything is measured.
const WARM_UP_COPIES: usize = 500;

/// Copies some blobs of `set` and sends a few queue messages through the proxy, not
/// measured: the emulator's JavaScript is compiled as it runs, so without this the
/// first system measured would pay for the emulator's start.
async fn warm_up(world: &World, set: &DataSet) -> anyhow::Result<()> {
    let scratch = "e2e-warm-up";
    world.direct.bak.create_container(scratch).await?;
    let listed = list_all(&world.proxied.src, &set.container).await?;
    let concurrency = world.args.concurrency;
    futures::stream::iter(listed.iter().take(WARM_UP_COPIES))
        .map(|blob| copy_blob(&world.proxied, &set.container, scratch, blob, concurrency))
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    world.delete_backup_container(scratch).await?;
    let queue = AzureQueue::new(scratch, world.proxied.bak_account.queue(scratch)?);
    queue.ensure_exists().await?;
    for _ in 0..20 {
        queue.send("warm-up", Duration::ZERO).await?;
    }
    loop {
        let received = queue.receive(32, Duration::from_secs(30)).await?;
        if received.is_empty() {
            break;
        }
        for m in received {
            queue.delete(&m.id, &m.pop_receipt).await?;
        }
    }
    world
        .direct
        .bak_account
        .queue(scratch)?
        .delete(None)
        .await?;
    Ok(())
}

// -- rclone --------------------------------------------------------------------------

/// `rclone sync`, remotes from the environment only (`src:`, `dst:`).
fn rclone_command(world: &World, set: &DataSet, dest: &str, checksum: bool) -> Command {
    let mut c = Command::new(&world.bins.rclone);
    c.env("RCLONE_CONFIG", "/dev/null");
    for (remote, account, key) in [
        ("SRC", SOURCE_ACCOUNT, SOURCE_KEY),
        ("DST", BACKUP_ACCOUNT, BACKUP_KEY),
    ] {
        // Account and key (not a connection string): a server-side copy across
        // accounts needs rclone to sign the source itself.
        c.env(format!("RCLONE_CONFIG_{remote}_TYPE"), "azureblob")
            .env(format!("RCLONE_CONFIG_{remote}_ACCOUNT"), account)
            .env(format!("RCLONE_CONFIG_{remote}_KEY"), key)
            .env(
                format!("RCLONE_CONFIG_{remote}_ENDPOINT"),
                format!("{}/{account}", world.proxy.blob_url),
            );
    }
    let concurrency = world.args.concurrency.to_string();
    c.arg("sync")
        .arg(format!("src:{}", set.container))
        .arg(format!("dst:{dest}"))
        .args(["--server-side-across-configs", "--fast-list"])
        .args(["--azureblob-no-check-container", "--retries", "1"])
        .args(["--transfers", &concurrency, "--checkers", &concurrency])
        // rclone's default verbosity; only its final stats, as one JSON line.
        .args([
            "--use-json-log",
            "--stats-log-level",
            "NOTICE",
            "--stats",
            "24h",
        ]);
    if checksum {
        c.arg("--checksum");
    }
    c
}

/// rclone's final stats: the last log line carrying them.
fn rclone_stats(stderr: &[u8]) -> anyhow::Result<serde_json::Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("stats").cloned())
        .context("rclone printed no final stats")
}

/// One `rclone sync` into `dest`, measured.
async fn rclone_run(
    world: &World,
    set: &DataSet,
    dest: &str,
    checksum: bool,
    label: Label<'_>,
) -> anyhow::Result<Run> {
    let start = world.begin().await?;
    let mut fleet = Fleet::default();
    fleet.start("rclone", &mut rclone_command(world, set, dest, checksum))?;
    fleet.wait(Instant::now() + RUN_TIMEOUT).await?;
    let span = world.meter.since(&start.mark);
    let (cpu, peak) = fleet.usage();
    let requests = world.requests_since(&start).await?;
    let finished = fleet
        .take_finished()?
        .pop()
        .context("rclone output")?
        .ok()?;
    let stats = rclone_stats(&finished.stderr)?;
    let n = |k: &str| stats[k].as_u64().unwrap_or(0);
    ensure!(n("errors") == 0, "rclone reports errors: {stats}");
    let copies = n("serverSideCopies");
    if label.phase == Phase::Copy {
        expect_blobs("rclone server-side copies", copies, set)?;
    }
    // Without --checksum a blob rclone finds equal in size but not in modification
    // time gets its time written (Set Blob Metadata), or is copied again.
    let mut did = format!(
        "copied {}, checked {}",
        thousands(n("transfers")),
        thousands(n("checks"))
    );
    let rewrites = requests.of("set_metadata") + requests.of("set_properties");
    if rewrites > 0 {
        let _ = write!(did, ", {} modtimes rewritten", thousands(rewrites));
    }
    let outcome = Outcome {
        requests,
        did,
        detail: serde_json::json!({ "stats": stats, "checksum": checksum }),
    };
    Ok(record(
        set,
        label,
        start.measured(span, cpu, peak, 1),
        outcome,
    ))
}

fn rclone_label<'a>(key: &'a str, system: &'a str, phase: Phase) -> Label<'a> {
    Label {
        key,
        system,
        kind: Kind::Rclone,
        phase,
    }
}

/// rclone's copy, then its reruns with nothing changed.
/// `rclone sync` into an empty backup container, checked; the container is left for the
/// reruns.
async fn rclone_copy(world: &World, set: &DataSet, truth: &Truth) -> anyhow::Result<(Run, String)> {
    let dest = format!("{}-rclone", set.container);
    world.direct.bak.create_container(&dest).await?;
    let copy = rclone_label("rclone", "rclone sync", Phase::Copy);
    let mut copy = rclone_run(world, set, &dest, true, copy).await?;
    report_progress(&copy);
    copy.detail["md5_missing"] = truth
        .check(&world.direct.bak, &dest, "rclone")
        .await?
        .into();
    Ok((copy, dest))
}

async fn rclone(
    world: &World,
    set: &DataSet,
    truth: &Truth,
    runs: &mut Vec<Run>,
) -> anyhow::Result<()> {
    let (copy, dest) = rclone_copy(world, set, truth).await?;
    runs.push(copy);
    let label = rclone_label(
        "rclone-rerun-checksum",
        "rclone sync --checksum",
        Phase::Rerun,
    );
    let with_checksum = rclone_run(world, set, &dest, true, label).await?;
    report_progress(&with_checksum);
    runs.push(with_checksum);
    let label = rclone_label(
        "rclone-rerun-modtime",
        "rclone sync (size, modtime)",
        Phase::Rerun,
    );
    let modtime = rclone_run(world, set, &dest, false, label).await?;
    report_progress(&modtime);
    // The first such rerun may write modification times or copy again; when it did,
    // the next one shows the steady state.
    let changed = modtime.requests.of("set_metadata")
        + modtime.requests.of("set_properties")
        + modtime.detail["stats"]["transfers"].as_u64().unwrap_or(0);
    runs.push(modtime);
    if changed > 0 {
        let label = rclone_label(
            "rclone-rerun-modtime-2",
            "rclone sync (size, modtime), again",
            Phase::Rerun,
        );
        let again = rclone_run(world, set, &dest, false, label).await?;
        report_progress(&again);
        runs.push(again);
    }
    truth
        .check(&world.direct.bak, &dest, "rclone after its reruns")
        .await?;
    world.delete_backup_container(&dest).await
}

// -- lakevault -----------------------------------------------------------------------

fn coordinator(world: &World, config: &Path, job: &str) -> Command {
    let mut c = Command::new(&world.bins.coordinator);
    c.arg("--config")
        .arg(config)
        .args(["backup", "--output", "json", "--job-id", job])
        .env_remove("RUST_LOG");
    c
}

/// A worker that stops once the queue is empty (nothing visible, nothing in flight).
fn worker(world: &World, config: &Path, concurrency: usize) -> Command {
    let mut c = Command::new(&world.bins.worker);
    c.arg("--config")
        .arg(config)
        .args(["run", "--exit-when-idle", "0", "--summary-json"])
        .args(["--concurrency", &concurrency.to_string()])
        .env_remove("RUST_LOG");
    c
}

/// Blobs to copy and messages in a coordinator's JSON plan.
fn planned(plan: &serde_json::Value) -> (u64, u64) {
    let sum = |k: &str| -> u64 {
        plan["containers"]
            .as_array()
            .map(|cs| cs.iter().map(|c| c[k].as_u64().unwrap_or(0)).sum())
            .unwrap_or(0)
    };
    (sum("new") + sum("changed"), sum("messages"))
}

/// The coordinator plans into an empty backup container, then `workers` processes
/// drain the queue. The run ends when the queue is empty (every message settled); the
/// workers, idle by then, are stopped, their CPU counted to their exit.
async fn lakevault_copy(
    world: &World,
    set: &DataSet,
    truth: &Truth,
    workers: usize,
) -> anyhow::Result<Run> {
    let label = format!("w{workers}");
    let dest = format!("{}-{label}", set.container);
    let config = world.write_config(set, &format!("{{container}}-{label}"), &dest)?;
    world.direct.bak.create_container(&dest).await?;
    let queue = AzureQueue::new(&dest, world.direct.bak_account.queue(&dest)?);
    let deadline = Instant::now() + RUN_TIMEOUT;

    let start = world.begin().await?;
    let mut fleet = Fleet::default();
    fleet.start(
        "lakevault-coordinator",
        &mut coordinator(world, &config, &dest),
    )?;
    fleet.wait(deadline).await?;
    let plan_seconds = start.mark.at.elapsed().as_secs_f64();
    let plan = fleet
        .take_finished()?
        .pop()
        .context("coordinator output")?
        .ok()?
        .json()?;
    let (to_copy, messages) = planned(&plan);
    expect_blobs("lakevault plan", to_copy, set)?;
    let per_worker = world.args.concurrency / workers;
    for i in 0..workers {
        fleet.start(
            &format!("lakevault-worker {i}"),
            &mut worker(world, &config, per_worker),
        )?;
    }
    // Processes are sampled every POLL, the queue asked less often: each ask is a
    // request to the emulator's queue service.
    let mut asked: Option<Instant> = None;
    loop {
        if fleet.poll()? {
            break;
        }
        if asked.is_none_or(|t| t.elapsed() >= QUEUE_POLL) {
            asked = Some(Instant::now());
            if queue.approximate_len().await? == 0 {
                break;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "lakevault workers did not drain the queue in time"
        );
        tokio::time::sleep(POLL).await;
    }
    let span = world.meter.since(&start.mark);
    fleet.terminate();
    fleet.wait(deadline).await?;
    let (cpu, peak) = fleet.usage();
    let requests = world.requests_since(&start).await?;

    let mut summaries = Vec::new();
    for f in fleet.take_finished()? {
        summaries.push(f.ok()?.json()?);
    }
    let total = |k: &str| -> u64 { summaries.iter().map(|s| s[k].as_u64().unwrap_or(0)).sum() };
    ensure!(
        total("poisoned") == 0,
        "lakevault poisoned {} items",
        total("poisoned")
    );
    expect_blobs("lakevault workers' copies", total("copied"), set)?;
    let md5_missing = truth
        .check(&world.direct.bak, &dest, &format!("lakevault {label}"))
        .await?;
    let detail = serde_json::json!({
        "plan_seconds": plan_seconds,
        "plan": plan,
        "messages": messages,
        "concurrency_per_worker": per_worker,
        "workers": summaries,
        // lakevault's own counts, to compare with the proxy's.
        "self_reported_storage_requests": total("storage_requests"),
        "self_reported_queue_requests": total("queue_requests") + messages,
        "md5_missing": md5_missing,
    });
    let noun = if workers == 1 { "worker" } else { "workers" };
    let label = Label {
        key: &format!("lakevault-{label}"),
        system: &format!("lakevault, {workers} {noun}"),
        kind: Kind::Lakevault,
        phase: Phase::Copy,
    };
    let outcome = Outcome {
        requests,
        did: format!(
            "copied {} ({messages} messages)",
            thousands(total("copied"))
        ),
        detail,
    };
    Ok(record(
        set,
        label,
        start.measured(span, cpu, peak, 1 + workers),
        outcome,
    ))
}

/// The coordinator's plan with nothing changed. No worker runs: nothing is enqueued,
/// and workers in service would only be waiting on an empty queue anyway.
async fn lakevault_rerun(world: &World, set: &DataSet, dest: &str) -> anyhow::Result<Run> {
    let config = world.dir.path().join(format!("{dest}.toml"));
    let start = world.begin().await?;
    let mut fleet = Fleet::default();
    fleet.start(
        "lakevault-coordinator",
        &mut coordinator(world, &config, &format!("{dest}-rerun")),
    )?;
    fleet.wait(Instant::now() + RUN_TIMEOUT).await?;
    let span = world.meter.since(&start.mark);
    let (cpu, peak) = fleet.usage();
    let requests = world.requests_since(&start).await?;
    let plan = fleet
        .take_finished()?
        .pop()
        .context("coordinator output")?
        .ok()?
        .json()?;
    let (to_copy, messages) = planned(&plan);
    ensure!(
        to_copy == 0 && messages == 0,
        "lakevault's rerun planned {to_copy} copies in {messages} messages; nothing changed"
    );
    let unchanged: u64 = plan["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| c["unchanged"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    expect_blobs("lakevault rerun: unchanged", unchanged, set)?;
    let label = Label {
        key: "lakevault-rerun",
        system: "lakevault plan",
        kind: Kind::Lakevault,
        phase: Phase::Rerun,
    };
    let outcome = Outcome {
        requests,
        did: format!("nothing planned ({} unchanged)", thousands(unchanged)),
        detail: serde_json::json!({ "plan": plan }),
    };
    Ok(record(
        set,
        label,
        start.measured(span, cpu, peak, 1),
        outcome,
    ))
}

// -- The bare listing ----------------------------------------------------------------

async fn count_listed(store: &AzureStore, container: &str) -> anyhow::Result<u64> {
    store
        .list(container, ListOptions::default())
        .try_fold(0u64, |n, _| async move { Ok(n + 1) })
        .await
        .with_context(|| format!("listing {container}"))
}

/// List Blobs of the source and of `backup`, side by side, full pages.
async fn bare_listing(world: &World, set: &DataSet, backup: &str) -> anyhow::Result<Run> {
    let start = world.begin().await?;
    let rss_reset = reset_own_peak_rss();
    let cpu_before = own_cpu_seconds();
    let (source, copy) = tokio::try_join!(
        count_listed(&world.proxied.src, &set.container),
        count_listed(&world.proxied.bak, backup)
    )?;
    let span = world.meter.since(&start.mark);
    let cpu = own_cpu_seconds() - cpu_before;
    let peak = vm_hwm_kib(std::process::id()).unwrap_or(0);
    let requests = world.requests_since(&start).await?;
    expect_blobs("bare listing of the source", source, set)?;
    expect_blobs("bare listing of the backup", copy, set)?;
    let label = Label {
        key: "listing",
        system: "bare listing, both sides",
        kind: Kind::Listing,
        phase: Phase::Rerun,
    };
    let outcome = Outcome {
        requests,
        did: format!("listed {} + {}", thousands(source), thousands(copy)),
        detail: serde_json::json!({ "peak_rss_reset": rss_reset }),
    };
    Ok(record(
        set,
        label,
        start.measured(span, cpu, peak, 1),
        outcome,
    ))
}

// -- One set, then the whole bench ---------------------------------------------------

fn report_progress(r: &Run) {
    let speed = match r.phase {
        Phase::Copy => format!("{:.1} blobs/s", r.blobs_per_second()),
        Phase::Rerun => "rerun".to_string(),
    };
    eprintln!(
        "  {:<36} {:>8.2} s  {speed:>15}  CPU {:>7.2} s  {:>6.1} MiB  {:>6} requests  Azurite {:>3.0}%  load {:.2}  {}",
        r.system,
        r.wall_seconds,
        r.cpu_seconds,
        r.peak_rss_mib,
        r.requests.sent(),
        r.azurite_cores() * 100.0,
        r.load_before,
        r.did
    );
}

/// Every system on one set. Returns how many of its source blobs carry a Content-MD5.
async fn bench_set(world: &World, set: &DataSet, runs: &mut Vec<Run>) -> anyhow::Result<usize> {
    let truth = Truth::read(&world.direct.src, set).await?;
    eprintln!(
        "{}: {}, {} with a Content-MD5",
        set.key,
        set.describe(),
        thousands(truth.with_md5() as u64)
    );
    let r = ceiling(world, set, &truth).await?;
    report_progress(&r);
    runs.push(r);
    rclone(world, set, &truth, runs).await?;
    let mut last = None;
    for (i, &workers) in world.args.workers.iter().enumerate() {
        let r = lakevault_copy(world, set, &truth, workers).await?;
        report_progress(&r);
        runs.push(r);
        let dest = format!("{}-w{workers}", set.container);
        if i + 1 < world.args.workers.len() {
            world.delete_backup_container(&dest).await?;
        } else {
            last = Some(dest);
        }
    }
    let backup = last.context("no lakevault run")?;
    let r = bare_listing(world, set, &backup).await?;
    report_progress(&r);
    runs.push(r);
    let r = lakevault_rerun(world, set, &backup).await?;
    report_progress(&r);
    runs.push(r);
    world.delete_backup_container(&backup).await?;
    Ok(truth.with_md5())
}

/// What one round of the small set runs, in its order.
#[derive(Debug, Clone, Copy)]
enum Step {
    Ceiling,
    Rclone,
    Lakevault(usize),
}

/// A round after the first (`round` from 2): the small set's copies again, in an order
/// rotated by one each round, so that no system always follows the same one; then the
/// bare listing and lakevault's no-change plan, over the backup of lakevault's last
/// worker count.
async fn later_round(world: &World, set: &DataSet, round: usize) -> anyhow::Result<Vec<Run>> {
    let truth = Truth::read(&world.direct.src, set).await?;
    eprintln!("{}: round {round}", set.key);
    let mut steps = vec![Step::Ceiling, Step::Rclone];
    steps.extend(world.args.workers.iter().map(|&w| Step::Lakevault(w)));
    let turn = (round - 1) % steps.len();
    steps.rotate_left(turn);
    let kept = world
        .args
        .workers
        .last()
        .copied()
        .context("no worker count")?;
    let mut runs = Vec::new();
    for step in steps {
        match step {
            Step::Ceiling => runs.push(ceiling(world, set, &truth).await?),
            Step::Rclone => {
                let (run, dest) = rclone_copy(world, set, &truth).await?;
                world.delete_backup_container(&dest).await?;
                runs.push(run);
            }
            Step::Lakevault(workers) => {
                runs.push(lakevault_copy(world, set, &truth, workers).await?);
                if workers != kept {
                    let dest = format!("{}-w{workers}", set.container);
                    world.delete_backup_container(&dest).await?;
                }
            }
        }
        if let Some(r) = runs.last() {
            report_progress(r);
        }
    }
    let backup = format!("{}-w{kept}", set.container);
    for r in [
        bare_listing(world, set, &backup).await?,
        lakevault_rerun(world, set, &backup).await?,
    ] {
        report_progress(&r);
        runs.push(r);
    }
    world.delete_backup_container(&backup).await?;
    Ok(runs)
}

fn validate(args: &Args) -> anyhow::Result<()> {
    ensure!(args.small > 0, "--small must be at least 1");
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    ensure!(
        !args.workers.is_empty(),
        "--workers needs at least one count"
    );
    for &w in &args.workers {
        ensure!(
            w > 0 && args.concurrency.is_multiple_of(w),
            "--workers {w}: each count must divide --concurrency {} (copies in flight are split evenly)",
            args.concurrency
        );
    }
    Ok(())
}

/// Azurite holds blobs in memory, and the memory of a deleted copy only when its
/// garbage collector runs (every 10 minutes). The large blob's source and every ranged
/// copy of it (ceiling, up to three by rclone, three by lakevault) must fit, below the
/// emulator's default limit of half the RAM, with room to spare.
fn check_memory(sets: &[DataSet]) -> anyhow::Result<()> {
    let Some(large) = sets.iter().find(|s| s.key == "large") else {
        return Ok(());
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> Option<u64> {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * KIB)
    };
    let (Some(available), Some(total)) = (field("MemAvailable:"), field("MemTotal:")) else {
        return Ok(());
    };
    let need = large.total_bytes() * 8 + 2 * GIB;
    ensure!(
        need <= available && need <= total / 2,
        "the large blob needs about {} of memory in the in-memory emulator (its default limit is half of RAM, {}), {} is available: pass --no-large or a smaller --large-mib",
        bytes(need),
        bytes(total / 2),
        bytes(available)
    );
    Ok(())
}

pub(super) async fn run(args: Args) -> anyhow::Result<()> {
    validate(&args)?;
    let sets = DataSet::all(&args);
    check_memory(&sets)?;
    let bins = Bins::find(&args)?;
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        repo_root().join(&args.out)
    };
    std::fs::create_dir_all(&out)?;
    let started = Instant::now();
    let mut meta = report::Meta::collect(&args, &bins)?;
    let world = World::start(args, bins).await?;

    let seeding = Instant::now();
    for set in &sets {
        eprintln!("seeding {}: {}", set.key, set.describe());
        seed(&world.direct.src, set).await?;
    }
    meta.seed_seconds = seeding.elapsed().as_secs_f64();
    eprintln!("warming the emulator up (not measured)");
    warm_up(&world, &sets[0]).await?;

    let mut runs = Vec::new();
    for set in &sets {
        let with_md5 = bench_set(&world, set, &mut runs).await?;
        meta.source_blobs_with_md5
            .insert(set.key.to_string(), with_md5);
        meta.azurite_peak_rss_mib = world.azurite_peak_rss_mib();
        meta.bench_seconds = started.elapsed().as_secs_f64();
        report::write(&out, &meta, &sets, &runs, &[])?;
    }
    let mut later = Vec::new();
    for round in 2..=world.args.rounds {
        later.push(later_round(&world, &sets[0], round).await?);
        meta.azurite_peak_rss_mib = world.azurite_peak_rss_mib();
        meta.bench_seconds = started.elapsed().as_secs_f64();
        report::write(&out, &meta, &sets, &runs, &later)?;
    }
    if world.args.docs {
        report::copy_charts_to_docs(&out)?;
    }
    println!("{}", std::fs::read_to_string(out.join("e2e.md"))?);
    println!("report: {}", out.join("e2e.md").display());
    Ok(())
}
