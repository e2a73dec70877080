//! Measuring child processes for the benchmarks: wall time, CPU time and peak resident
//! memory, read from `/proc` while the process runs (Linux). Measurements, not
//! assertions: the benches report them, no test compares them with a time.

use anyhow::{Context, bail};
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often a running child's memory and CPU counters are read.
pub const POLL: Duration = Duration::from_millis(20);

/// The process's high-water mark of resident memory (`VmHWM`), in KiB. `None` once it has
/// exited (a zombie's status has no memory lines) or if it cannot be read.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU time of a live process, in clock ticks (fields 14 and 15 of
/// `/proc/<pid>/stat`, counted after the parenthesised command name, which may hold spaces).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second for [`cpu_ticks`] (100 on every mainstream Linux build).
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds this process (the bench itself, with any in-process server) has used.
pub fn own_cpu_seconds() -> f64 {
    cpu_ticks(std::process::id()).unwrap_or(0) as f64 / clock_ticks_per_second()
}

/// The 1-minute load average: above the CPU count, something else was competing.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Reads a pipe to its end on a thread (so a chatty child never blocks on a full pipe).
pub fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error only truncates the captured output, which the caller then fails to
        // parse and reports.
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// The counters of a group of processes, sampled until each has exited.
#[derive(Debug, Default, Clone)]
pub struct Usage {
    /// Sum over the processes of their CPU seconds (user + system).
    pub cpu_seconds: f64,
    /// The largest peak RSS of any one process, KiB.
    pub max_peak_rss_kib: u64,
    /// Sum of the processes' peak RSS, KiB (an upper bound of what they held together).
    pub sum_peak_rss_kib: u64,
}

/// Samples the CPU and peak RSS of a set of live processes. VmHWM and the CPU counters
/// only grow, so the last values read before a process exits are its totals up to then;
/// what happens in the final polling interval (~20 ms) is not seen.
#[derive(Debug, Default)]
pub struct Sampler {
    /// (pid, peak KiB, CPU ticks) per process.
    seen: Vec<(u32, u64, u64)>,
}

impl Sampler {
    pub fn watch(&mut self, pid: u32) {
        self.seen.push((pid, 0, 0));
    }

    /// Reads every watched process's counters once.
    pub fn sample(&mut self) {
        for (pid, peak, ticks) in &mut self.seen {
            if let Some(kib) = vm_hwm_kib(*pid) {
                *peak = (*peak).max(kib);
            }
            if let Some(t) = cpu_ticks(*pid) {
                *ticks = (*ticks).max(t);
            }
        }
    }

    pub fn usage(&self, ticks_per_second: f64) -> Usage {
        Usage {
            cpu_seconds: self.seen.iter().map(|s| s.2).sum::<u64>() as f64 / ticks_per_second,
            max_peak_rss_kib: self.seen.iter().map(|s| s.1).max().unwrap_or(0),
            sum_peak_rss_kib: self.seen.iter().map(|s| s.1).sum(),
        }
    }
}

/// One measured run of a child process.
#[derive(Debug)]
pub struct Measured {
    pub status: ExitStatus,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
    /// The 1-minute load average when the run started.
    pub load_at_start: f64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Spawns `command` with its output captured and samples it until it exits; killed (an
/// error) after `timeout`. Blocking: call from a blocking thread.
pub fn run_measured(command: &mut Command, timeout: Duration) -> anyhow::Result<Measured> {
    let load_at_start = load_average();
    let started = Instant::now();
    let mut child: Child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    let stdout = read_all(child.stdout.take().context("child stdout")?);
    let stderr = read_all(child.stderr.take().context("child stderr")?);
    let mut sampler = Sampler::default();
    sampler.watch(child.id());
    let status = loop {
        sampler.sample();
        if let Some(status) = child.try_wait().context("waiting for the child")? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{:?} did not finish within {timeout:?}",
                command.get_program()
            );
        }
        std::thread::sleep(POLL);
    };
    let wall_seconds = started.elapsed().as_secs_f64();
    let usage = sampler.usage(clock_ticks_per_second());
    let join = |h: std::thread::JoinHandle<Vec<u8>>| {
        h.join()
            .map_err(|_| anyhow::anyhow!("an output reader panicked"))
    };
    Ok(Measured {
        status,
        wall_seconds,
        cpu_seconds: usage.cpu_seconds,
        peak_rss_kib: usage.max_peak_rss_kib,
        load_at_start,
        stdout: join(stdout)?,
        stderr: join(stderr)?,
    })
}
