//! Runs the real `lakevault-coordinator` and `lakevault-worker` binaries as separate
//! processes, as an operator would.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();

/// The directory holding the workspace's binaries (`target/<profile>`). Under cargo the
/// binaries are rebuilt first (a no-op when current), so a test never runs a stale binary.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    BUILT
        .get_or_init(|| {
            if let Ok(cargo) = std::env::var("CARGO") {
                let status = Command::new(cargo)
                    .current_dir(crate::azurite::repo_root())
                    .args([
                        "build",
                        "--quiet",
                        "-p",
                        "lakevault-coordinator",
                        "-p",
                        "lakevault-worker",
                    ])
                    .status()
                    .map_err(|e| e.to_string())?;
                if !status.success() {
                    return Err(format!("building the binaries failed: {status}"));
                }
            }
            find_bin_dir().map_err(|e| e.to_string())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        if d.join("lakevault-coordinator").exists() && d.join("lakevault-worker").exists() {
            return Ok(d);
        }
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(crate::azurite::repo_root())
        .args([
            "build",
            "-p",
            "lakevault-coordinator",
            "-p",
            "lakevault-worker",
        ])
        .status()?;
    if !status.success() {
        bail!("building the binaries failed");
    }
    let debug = crate::azurite::repo_root().join("target/debug");
    if debug.join("lakevault-coordinator").exists() {
        return Ok(debug);
    }
    bail!("cannot find lakevault-coordinator and lakevault-worker binaries")
}

pub fn coordinator(config: &Path) -> anyhow::Result<Command> {
    let mut c = Command::new(bin_dir()?.join("lakevault-coordinator"));
    c.arg("--config").arg(config).env_remove("RUST_LOG");
    Ok(c)
}

pub fn worker(config: &Path) -> anyhow::Result<Command> {
    let mut c = Command::new(bin_dir()?.join("lakevault-worker"));
    c.arg("--config").arg(config).env_remove("RUST_LOG");
    Ok(c)
}

/// Runs the coordinator with `args` and `--output json` through `config`; its JSON report,
/// or an error with its output unless it exits 0.
pub fn coordinator_json(config: &Path, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = coordinator(config)?
        .args(args)
        .args(["--output", "json"])
        .output()
        .context("running the coordinator")?;
    let out = checked(out, &format!("lakevault-coordinator {}", args.join(" ")))?;
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Output of a finished command, failing with its stderr if it did not succeed.
pub fn checked(output: Output, what: &str) -> anyhow::Result<Output> {
    if !output.status.success() {
        bail!(
            "{what} exited with {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// What one backup pass did.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub planned: u64,
    pub messages: u64,
    pub copied: u64,
    /// Items found already in the backup at their planned version (redeliveries).
    pub already_current: u64,
    /// Items whose source was gone when they ran (deleted since planning).
    pub source_gone: u64,
    /// Items with nothing left to do: the backup changed or went away since planning.
    pub superseded: u64,
    /// Restore items left alone because the target exists.
    pub target_exists: u64,
    pub bytes: u64,
    pub poisoned: u64,
    /// Items handed back for another attempt.
    pub retried: u64,
    /// Queue service requests: one per message sent by the coordinator plus every
    /// request the workers made.
    pub queue_requests: u64,
    /// Blob service requests the workers made (copies, reads, snapshots), every try.
    pub storage_requests: u64,
    pub seconds: f64,
    /// The lowest copy concurrency any worker went down to (busy service).
    pub lowest_concurrency: Option<u64>,
}

/// What a plan enqueued: (blobs planned, messages).
pub fn plan(config: &Path) -> anyhow::Result<(u64, u64)> {
    let out = checked(
        coordinator(config)?
            .args(["backup", "--output", "json"])
            .output()
            .context("running the coordinator")?,
        "lakevault-coordinator backup",
    )?;
    let plan: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("coordinator JSON output")?;
    let sum = |key: &str| -> u64 {
        plan["containers"]
            .as_array()
            .map(|cs| cs.iter().map(|c| c[key].as_u64().unwrap_or(0)).sum())
            .unwrap_or(0)
    };
    Ok((sum("new") + sum("changed"), sum("messages")))
}

/// A worker that exits once the queue is drained, printing its summary as JSON.
pub fn batch_worker(config: &Path, extra: &[&str]) -> anyhow::Result<Command> {
    let mut c = worker(config)?;
    c.args([
        "run",
        "--exit-when-idle",
        "2",
        "--summary-json",
        "--retry-delay-secs",
        "1",
    ])
    .args(extra)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    Ok(c)
}

/// A process a test started, killed and reaped when dropped: a test that fails part-way
/// (a panic unwinds through it) leaves no worker running behind it.
#[derive(Debug)]
pub struct Spawned(Option<Child>);

impl Spawned {
    pub fn start(command: &mut Command) -> anyhow::Result<Self> {
        let child = command.spawn().context("spawning a process")?;
        Ok(Self(Some(child)))
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// Waits for the process to end on its own and returns what it printed.
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        match self.0.take() {
            Some(child) => child.wait_with_output(),
            None => Err(std::io::Error::other("already waited for")),
        }
    }

    /// The process itself, to signal or wait for; still killed when dropped.
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("not waited for yet")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for batch workers and adds up their summaries. Every worker is waited for (or
/// killed) before a failure is reported, so none is left running.
pub fn collect(children: Vec<Child>, report: &mut PassReport) -> anyhow::Result<()> {
    let outputs: Vec<std::io::Result<Output>> = children
        .into_iter()
        .map(|c| Spawned(Some(c)).wait_with_output())
        .collect();
    for out in outputs {
        let out = checked(out?, "lakevault-worker run")?;
        let summary: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("worker summary JSON")?;
        report.copied += summary["copied"].as_u64().unwrap_or(0);
        report.already_current += summary["already_current"].as_u64().unwrap_or(0);
        report.source_gone += summary["source_gone"].as_u64().unwrap_or(0);
        report.superseded += summary["superseded"].as_u64().unwrap_or(0);
        report.target_exists += summary["target_exists"].as_u64().unwrap_or(0);
        report.bytes += summary["bytes"].as_u64().unwrap_or(0);
        report.poisoned += summary["poisoned"].as_u64().unwrap_or(0);
        report.retried += summary["retried"].as_u64().unwrap_or(0);
        report.queue_requests += summary["queue_requests"].as_u64().unwrap_or(0);
        report.storage_requests += summary["storage_requests"].as_u64().unwrap_or(0);
        if let Some(low) = summary["lowest_concurrency"].as_u64() {
            report.lowest_concurrency = Some(report.lowest_concurrency.map_or(low, |l| l.min(low)));
        }
    }
    Ok(())
}

/// Runs `workers` batch workers (with `extra` flags) until the queue is drained.
pub fn drain(config: &Path, workers: usize, extra: &[&str]) -> anyhow::Result<PassReport> {
    let started = Instant::now();
    let children: Vec<Child> = (0..workers)
        .map(|_| {
            batch_worker(config, extra)?
                .spawn()
                .context("spawning a worker")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut report = PassReport::default();
    collect(children, &mut report)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Runs the coordinator once, then `workers` worker processes until the queue is drained.
pub fn backup_pass(config: &Path, workers: usize) -> anyhow::Result<PassReport> {
    let started = Instant::now();
    let (planned, messages) = plan(config)?;
    let mut report = drain(config, workers, &[])?;
    report.planned = planned;
    report.messages = messages;
    report.queue_requests += messages;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
