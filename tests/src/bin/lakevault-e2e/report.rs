//! The report: Markdown tables, raw JSON and SVG charts, and the targets this run met.

use super::*;

#[derive(Debug, Clone, Serialize)]
pub(super) struct Meta {
    pub started_utc: String,
    pub command: String,
    pub cpus: usize,
    pub memory_total_mib: u64,
    pub azurite: String,
    pub rclone: String,
    pub lakevault_revision: String,
    pub concurrency: usize,
    pub workers: Vec<usize>,
    pub seed_seconds: f64,
    pub bench_seconds: f64,
    pub azurite_peak_rss_mib: f64,
    /// Per set: source blobs with a Content-MD5, compared with their copies'.
    pub source_blobs_with_md5: BTreeMap<String, usize>,
}

fn first_line(program: &Path, args: &[&str], dir: Option<&Path>) -> String {
    let mut c = Command::new(program);
    c.args(args);
    if let Some(d) = dir {
        c.current_dir(d);
    }
    c.output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".to_string())
}

impl Meta {
    pub fn collect(args: &Args, bins: &bench::Bins) -> anyhow::Result<Self> {
        let package: serde_json::Value =
            std::fs::read_to_string(repo_root().join("azurite/package.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
        let memory_total_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
            / 1024;
        Ok(Self {
            started_utc: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)?,
            command: std::env::args().collect::<Vec<_>>().join(" "),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_total_mib,
            azurite: format!(
                "Azurite {} (in memory)",
                package["dependencies"]["azurite"].as_str().unwrap_or("?")
            ),
            rclone: first_line(&bins.rclone, &["version"], None),
            lakevault_revision: first_line(
                Path::new("git"),
                &["describe", "--always", "--dirty"],
                Some(&repo_root()),
            ),
            concurrency: args.concurrency,
            workers: args.workers.clone(),
            seed_seconds: 0.0,
            bench_seconds: 0.0,
            azurite_peak_rss_mib: 0.0,
            source_blobs_with_md5: BTreeMap::new(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Bound {
    AtLeast,
    AtMost,
}

/// One target of the small set, checked against every lakevault run it concerns.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Target {
    pub target: String,
    pub bound: Bound,
    pub limit: f64,
    /// (lakevault run, measured ratio).
    pub measured: Vec<(String, f64)>,
    pub met_by: Vec<String>,
}

impl Target {
    fn new(target: &str, bound: Bound, limit: f64, measured: Vec<(String, f64)>) -> Self {
        let met_by = measured
            .iter()
            .filter(|(_, v)| match bound {
                Bound::AtLeast => *v >= limit,
                Bound::AtMost => *v <= limit,
            })
            .map(|(who, _)| who.clone())
            .collect();
        Self {
            target: target.to_string(),
            bound,
            limit,
            measured,
            met_by,
        }
    }
}

/// The set the targets are about.
const TARGET_SET: &str = "small";

fn find<'a>(runs: &'a [Run], set: &str, key: &str) -> Option<&'a Run> {
    runs.iter().find(|r| r.set == set && r.key == key)
}

/// `f(run) / f(reference)` for every lakevault copy of the target set.
fn against(runs: &[Run], reference: &str, f: fn(&Run) -> f64) -> Vec<(String, f64)> {
    let Some(base) = find(runs, TARGET_SET, reference) else {
        return Vec::new();
    };
    runs.iter()
        .filter(|r| r.set == TARGET_SET && r.kind == Kind::Lakevault && r.phase == Phase::Copy)
        .map(|r| (r.system.clone(), f(r) / f(base)))
        .collect()
}

pub(super) fn targets(runs: &[Run]) -> Vec<Target> {
    let rerun = match (
        find(runs, TARGET_SET, "lakevault-rerun"),
        find(runs, TARGET_SET, "listing"),
    ) {
        (Some(r), Some(l)) => vec![(r.system.clone(), r.wall_seconds / l.wall_seconds)],
        _ => Vec::new(),
    };
    vec![
        Target::new(
            "lakevault blobs/s ≥ 0.9 × ceiling (small blobs)",
            Bound::AtLeast,
            0.9,
            against(runs, "ceiling", Run::blobs_per_second),
        ),
        Target::new(
            "lakevault blobs/s ≥ 1.3 × rclone (small blobs)",
            Bound::AtLeast,
            1.3,
            against(runs, "rclone", Run::blobs_per_second),
        ),
        Target::new(
            "lakevault no-change rerun ≤ 1.5 × bare listing of both sides (small blobs)",
            Bound::AtMost,
            1.5,
            rerun,
        ),
        Target::new(
            "lakevault CPU per blob ≤ 0.5 × rclone's (small blobs)",
            Bound::AtMost,
            0.5,
            against(runs, "rclone", Run::cpu_ms_per_blob),
        ),
    ]
}

// -- Formatting ----------------------------------------------------------------------

/// Three significant digits (`0.0421`, `4.21`, `421`, `4,210`).
pub(super) fn sig(x: f64) -> String {
    if !x.is_finite() {
        return "–".to_string();
    }
    let a = x.abs();
    if a >= 1000.0 {
        thousands(x.round() as u64)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a == 0.0 {
        "0".to_string()
    } else {
        let digits = (2 - a.log10().floor() as i32).max(0) as usize;
        format!("{x:.digits$}")
    }
}

fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}×")
    } else {
        "–".to_string()
    }
}

fn copy_table(runs: &[&Run], ceiling: Option<&Run>, rclone: Option<&Run>) -> String {
    let mut t = String::from(
        "| system | wall s | blobs/s | MiB/s | × ceiling | × rclone | CPU ms/blob | CPU × rclone | peak RSS MiB | requests/blob | Azurite CPU | load |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let vs =
        |r: &Run, base: Option<&Run>, f: fn(&Run) -> f64| base.map_or(f64::NAN, |b| f(r) / f(b));
    for r in runs {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.0}% | {:.2} |",
            r.system,
            sig(r.wall_seconds),
            sig(r.blobs_per_second()),
            sig(r.mib_per_second()),
            ratio(vs(r, ceiling, Run::blobs_per_second)),
            ratio(vs(r, rclone, Run::blobs_per_second)),
            sig(r.cpu_ms_per_blob()),
            ratio(vs(r, rclone, Run::cpu_ms_per_blob)),
            r.peak_rss_mib,
            r.requests_per_blob(),
            r.azurite_cores() * 100.0,
            r.load_before
        );
    }
    t
}

fn rerun_table(runs: &[&Run], listing: Option<&Run>) -> String {
    let mut t = String::from(
        "| system | wall s | × bare listing | CPU s | peak RSS MiB | requests | what it did | Azurite CPU | load |\n\
         |---|---:|---:|---:|---:|---:|---|---:|---:|\n",
    );
    for r in runs {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {:.0}% | {:.2} |",
            r.system,
            sig(r.wall_seconds),
            ratio(listing.map_or(f64::NAN, |l| r.wall_seconds / l.wall_seconds)),
            sig(r.cpu_seconds),
            r.peak_rss_mib,
            thousands(r.requests.sent()),
            r.did,
            r.azurite_cores() * 100.0,
            r.load_before
        );
    }
    t
}

fn targets_table(targets: &[Target]) -> String {
    let mut t = String::from("| target | measured | met |\n|---|---|---|\n");
    for target in targets {
        let measured = if target.measured.is_empty() {
            "not measured".to_string()
        } else {
            target
                .measured
                .iter()
                .map(|(who, v)| format!("{who}: {v:.2}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let met = if target.measured.is_empty() {
            "–".to_string()
        } else if target.met_by.is_empty() {
            "**no**".to_string()
        } else if target.met_by.len() == target.measured.len() {
            "yes".to_string()
        } else {
            format!("only by {}", target.met_by.join(", "))
        };
        let _ = writeln!(t, "| {} | {measured} | {met} |", target.target);
    }
    t
}

/// A warning when other work competed for the CPUs during the runs.
fn load_caution(meta: &Meta, runs: &[Run]) -> String {
    let busy: Vec<f64> = runs
        .iter()
        .map(|r| r.load_before)
        .filter(|&l| l > meta.cpus as f64)
        .collect();
    if busy.is_empty() {
        return String::new();
    }
    format!(
        "**Caution:** the load average was above the number of CPUs ({}) before {} of the {} runs (up to {:.1}): other work competed for the CPUs. Every figure is a single run, and under such load they can be off by tens of percent; rerun on a quiet machine before drawing conclusions.\n\n",
        meta.cpus,
        busy.len(),
        runs.len(),
        busy.iter().copied().fold(0.0, f64::max)
    )
}

pub(super) fn markdown(meta: &Meta, sets: &[DataSet], runs: &[Run], targets: &[Target]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# lakevault end to end: ceiling, rclone and lakevault on one emulator\n"
    );
    let _ = writeln!(
        md,
        "Run {} on {} CPUs, {} MiB of memory; {}, {}, lakevault {}. Every system copies the same seeded blobs from `{SOURCE_ACCOUNT}` to `{BACKUP_ACCOUNT}` with {} copies in flight in total (lakevault: split evenly between its workers). Seeding took {:.1} s, the whole bench {:.0} s; the emulator's blob service peaked at {:.0} MiB RSS.\n",
        meta.started_utc,
        meta.cpus,
        meta.memory_total_mib,
        meta.azurite,
        meta.rclone,
        meta.lakevault_revision,
        meta.concurrency,
        meta.seed_seconds,
        meta.bench_seconds,
        meta.azurite_peak_rss_mib
    );
    let _ = writeln!(md, "`{}`\n", meta.command);
    md.push_str(&load_caution(meta, runs));
    md.push_str("## Targets, this run\n\n");
    md.push_str(&targets_table(targets));
    md.push('\n');
    for set in sets {
        let of_set: Vec<&Run> = runs.iter().filter(|r| r.set == set.key).collect();
        if of_set.is_empty() {
            continue;
        }
        let _ = writeln!(md, "## {}: {}\n", set.key, set.describe());
        if let Some(n) = meta.source_blobs_with_md5.get(set.key) {
            let _ = writeln!(
                md,
                "{} of the source blobs carry a Content-MD5; every copy was checked against the source (names, sizes, MD5 where both have one).\n",
                thousands(*n as u64)
            );
        }
        let copies: Vec<&Run> = of_set
            .iter()
            .copied()
            .filter(|r| r.phase == Phase::Copy)
            .collect();
        let reruns: Vec<&Run> = of_set
            .iter()
            .copied()
            .filter(|r| r.phase == Phase::Rerun)
            .collect();
        let _ = writeln!(md, "Copy into an empty backup container:\n");
        md.push_str(&copy_table(
            &copies,
            find(runs, set.key, "ceiling"),
            find(runs, set.key, "rclone"),
        ));
        md.push('\n');
        for r in copies.iter().filter(|r| r.kind == Kind::Lakevault) {
            let _ = writeln!(
                md,
                "- {}: plan {:.2} s of the {:.2} s; {}.",
                r.system,
                r.detail["plan_seconds"].as_f64().unwrap_or(f64::NAN),
                r.wall_seconds,
                r.did
            );
        }
        let _ = writeln!(md, "\nNo-change rerun (nothing changed in the source):\n");
        md.push_str(&rerun_table(&reruns, find(runs, set.key, "listing")));
        let _ = writeln!(md, "\nRequests sent, by operation (both accounts):\n");
        for r in &of_set {
            let _ = writeln!(md, "- {}: {}", r.system, r.requests.summary());
        }
        md.push('\n');
    }
    md.push_str(HOW_MEASURED);
    md
}

const HOW_MEASURED: &str = "## How this is measured\n\n\
- One Azurite (blob and queue services, one Node.js process each, in memory) with two accounts, seeded once and warmed up with 500 copies and a few queue messages that are not measured; the systems then run one after the other in the order of the tables, once each; each system copies into its own empty backup container, which is then listed and compared with the source (names, sizes, Content-MD5 where both have one; a difference stops the bench) and deleted.\n\
- On the emulator, Copy Blob and Copy Blob From URL record a reference to the source's bytes, so their cost does not grow with the blob's size: the 1 MiB set measures the cost per copy again, and its MiB/s says nothing of Azure, where the service copies the bytes. Put Block From URL (blobs above 256 MiB) does read and write them.\n\
- **ceiling**: this bench's own loop through lakevault's store seam: List Blobs of the source, then one synchronous Copy Blob From URL per blob (a read SAS signed locally), all copies in flight at once up to the concurrency; above 256 MiB, Put Block From URL of 64 MiB ranges and Put Block List. No retries beyond the SDK's, no records, no queue.\n\
- **rclone**: `rclone sync --server-side-across-configs --fast-list --checksum --transfers N --checkers N --retries 1` at its default verbosity, remotes from environment variables (account and key). Its reruns: with `--checksum`, then without (size and modification time); when that one changed anything, once more.\n\
- **lakevault**: the release `lakevault-coordinator backup` plans and enqueues, then the `lakevault-worker run --exit-when-idle 0` processes start and drain the queue. Wall time runs from the coordinator's start until the queue is empty (asked every 50 ms); the workers, idle by then, are stopped with SIGTERM and their CPU counted until they exit. The no-change rerun is the coordinator's plan alone: it enqueues nothing, so there is nothing for workers to do.\n\
- **bare listing**: List Blobs (pages of 5,000) of the source and of lakevault's backup container, the two listings side by side, from this bench: the floor of any rerun that reads both sides.\n\
- **CPU** and **peak RSS** are read from `/proc` every 20 ms for child processes (summed CPU, largest peak); for the in-process ceiling and listing, this process's CPU over the run and its peak RSS after a reset (`clear_refs`). CPU is counted in clock ticks (10 ms per process), so runs of a few hundred milliseconds are coarse. **Azurite CPU** is the emulator's CPU (both services) over the run's wall time, in % of one core: near 100% its blob service, one Node.js thread, is the bound. **load** is the 1-minute load average before the run.\n\
- **requests** are counted by an HTTP proxy that all of every system's blob and queue traffic goes through (it adds the same hop to everyone): every try of every request the system sent, both accounts. The HEAD requests the emulator sends itself to check a copy source are not counted (Azure does that check inside the service). The bench's own requests (seeding, checking, asking the queue whether it is drained) go straight to the emulator and are not counted.\n\
- The proxy's own CPU is in e2e.json (`proxy_cpu_seconds`), not in any system's. The seeded blobs have the Content-MD5 the service computes for Put Blob, except the large blob, committed from blocks without one (as most uploaders of large blobs leave it). rclone without `--checksum` compares sizes and modification times, and where the times differ, hashes: it writes the time when the hashes match, and copies again a blob that has none to compare. The column *what it did* says which each rerun did.\n\
- Nothing here is asserted: the targets are stated with what this run measured.\n";

// -- Charts --------------------------------------------------------------------------

struct Bar {
    label: String,
    value: f64,
    text: String,
    color: &'static str,
}

struct Group {
    title: String,
    bars: Vec<Bar>,
}

fn color(kind: Kind) -> &'static str {
    match kind {
        Kind::Lakevault => "#2b6cb0",
        Kind::Rclone => "#dd6b20",
        Kind::Ceiling => "#4a5568",
        Kind::Listing => "#a0aec0",
    }
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Horizontal bars, one group per data set, each group on its own scale.
fn chart(title: &str, groups: &[Group]) -> String {
    const WIDTH: f64 = 780.0;
    const LABEL: f64 = 250.0;
    const BARS: f64 = 420.0;
    const ROW: f64 = 22.0;
    let rows: usize = groups.iter().map(|g| g.bars.len() + 1).sum();
    let height = 50.0 + rows as f64 * ROW + groups.len() as f64 * 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="24" font-size="15" font-weight="bold">{}</text>"#,
        xml(title)
    );
    let mut y = 44.0;
    for g in groups {
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}" font-weight="bold">{}</text>"#,
            y + 14.0,
            xml(&g.title)
        );
        y += ROW;
        let max = g.bars.iter().map(|b| b.value).fold(0.0f64, f64::max);
        for b in &g.bars {
            let w = if max > 0.0 && b.value.is_finite() {
                (b.value / max * BARS).max(1.0)
            } else {
                0.0
            };
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                LABEL - 8.0,
                y + 13.0,
                xml(&b.label)
            );
            let _ = writeln!(
                s,
                r#"<rect x="{LABEL}" y="{}" width="{w:.1}" height="16" fill="{}"/>"#,
                y + 2.0,
                b.color
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}">{}</text>"#,
                LABEL + w + 6.0,
                y + 14.0,
                xml(&b.text)
            );
            y += ROW;
        }
        y += 10.0;
    }
    s.push_str("</svg>\n");
    s
}

fn groups(
    sets: &[DataSet],
    runs: &[Run],
    keep: impl Fn(&Run) -> bool,
    value: impl Fn(&Run, &DataSet) -> (f64, String),
    unit: impl Fn(&DataSet) -> String,
) -> Vec<Group> {
    sets.iter()
        .filter_map(|set| {
            let bars: Vec<Bar> = runs
                .iter()
                .filter(|r| r.set == set.key && keep(r))
                .map(|r| {
                    let (v, text) = value(r, set);
                    Bar {
                        label: r.system.clone(),
                        value: v,
                        text,
                        color: color(r.kind),
                    }
                })
                .collect();
            (!bars.is_empty()).then(|| Group {
                title: format!("{}: {} — {}", set.key, set.describe(), unit(set)),
                bars,
            })
        })
        .collect()
}

/// The charts' file names, in the order `charts` returns them.
pub(super) const CHARTS: [&str; 3] = [
    "e2e-throughput.svg",
    "e2e-cpu-per-blob.svg",
    "e2e-rerun.svg",
];

/// (file name, SVG) of every chart.
pub(super) fn charts(sets: &[DataSet], runs: &[Run]) -> Vec<(&'static str, String)> {
    let copies = |r: &Run| r.phase == Phase::Copy;
    // One blob a second says little about a large blob: its set is shown in MiB/s.
    let by_blobs = |set: &DataSet| set.blobs > 1;
    let throughput = groups(
        sets,
        runs,
        copies,
        |r, set| {
            let v = if by_blobs(set) {
                r.blobs_per_second()
            } else {
                r.mib_per_second()
            };
            (v, sig(v))
        },
        |set| {
            if by_blobs(set) {
                "blobs/s".into()
            } else {
                "MiB/s".into()
            }
        },
    );
    let cpu = groups(
        sets,
        runs,
        copies,
        |r, _| (r.cpu_ms_per_blob(), sig(r.cpu_ms_per_blob())),
        |_| "CPU ms per blob".into(),
    );
    let rerun = groups(
        sets,
        runs,
        |r| r.phase == Phase::Rerun,
        |r, _| (r.wall_seconds, format!("{} s", sig(r.wall_seconds))),
        |_| "seconds".into(),
    );
    let svgs = [
        chart("Copy into an empty backup (higher is better)", &throughput),
        chart(
            "CPU per copied blob, all of a system's processes (lower is better)",
            &cpu,
        ),
        chart(
            "No-change rerun vs the bare listing of both sides (lower is better)",
            &rerun,
        ),
    ];
    CHARTS.into_iter().zip(svgs).collect()
}

#[derive(Serialize)]
struct Json<'a> {
    meta: &'a Meta,
    sets: Vec<serde_json::Value>,
    /// With more than one round, the medians of `targets_per_round`.
    targets: &'a [Target],
    targets_per_round: &'a [Vec<Target>],
    runs: &'a [Run],
    /// The small set's rounds after the first.
    later_rounds: &'a [Vec<Run>],
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Each target with, per lakevault run, the median of its rounds' ratios.
fn median_targets(rounds: &[Vec<Target>]) -> Vec<Target> {
    let Some(first) = rounds.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let measured = t
                .measured
                .iter()
                .map(|(who, _)| {
                    let mut values: Vec<f64> = rounds
                        .iter()
                        .filter_map(|r| r.get(i)?.measured.iter().find(|(w, _)| w == who))
                        .map(|(_, v)| *v)
                        .collect();
                    (who.clone(), median(&mut values))
                })
                .collect();
            Target::new(&t.target, t.bound, t.limit, measured)
        })
        .collect()
}

/// Every round's ratio per target and lakevault run, and their median.
fn rounds_table(rounds: &[Vec<Target>], medians: &[Target]) -> String {
    let mut t = String::from("| target | lakevault run |");
    for r in 1..=rounds.len() {
        let _ = write!(t, " round {r} |");
    }
    t.push_str(" median | met |\n|---|---|");
    for _ in 0..=rounds.len() {
        t.push_str("---:|");
    }
    t.push_str("---|\n");
    for (i, m) in medians.iter().enumerate() {
        for (who, median) in &m.measured {
            let _ = write!(t, "| {} | {who} |", m.target);
            for r in rounds {
                let v = r
                    .get(i)
                    .and_then(|x| x.measured.iter().find(|(w, _)| w == who))
                    .map_or(f64::NAN, |(_, v)| *v);
                let _ = write!(t, " {} |", ratio(v).trim_end_matches('×'));
            }
            let met = if m.met_by.contains(who) {
                "yes"
            } else {
                "**no**"
            };
            let _ = writeln!(t, " {} | {met} |", ratio(*median).trim_end_matches('×'));
        }
    }
    t
}

/// `runs`: every set, round 1; `extra`: the small set's later rounds, one list each.
pub(super) fn write(
    out: &Path,
    meta: &Meta,
    sets: &[DataSet],
    runs: &[Run],
    extra: &[Vec<Run>],
) -> anyhow::Result<()> {
    let per_round: Vec<Vec<Target>> = std::iter::once(targets(runs))
        .chain(extra.iter().map(|r| targets(r)))
        .collect();
    let targets = median_targets(&per_round);
    let mut md = markdown(meta, sets, runs, &targets);
    if !extra.is_empty() {
        md = md.replacen(
            "## Targets, this run",
            &format!(
                "## Targets, the median of {} rounds (below)",
                per_round.len()
            ),
            1,
        );
        let _ = write!(
            md,
            "\n## Rounds (small blobs)\n\nThe targets above are the medians of {} rounds. Round 1 is the run in the tables above; each later round ran, after every set, the small set's copies again (the ceiling, `rclone sync`, lakevault with each worker count, in an order rotated by one each round), then the bare listing and lakevault's no-change plan. Each round's ratios compare runs of that round only.\n\n{}",
            per_round.len(),
            rounds_table(&per_round, &targets)
        );
    }
    std::fs::write(out.join("e2e.md"), md)?;
    let json = Json {
        meta,
        sets: sets
            .iter()
            .map(|s| {
                serde_json::json!({
                    "set": s.key,
                    "container": s.container,
                    "blobs": s.blobs,
                    "blob_bytes": s.blob_bytes,
                })
            })
            .collect(),
        targets: &targets,
        targets_per_round: &per_round,
        runs,
        later_rounds: extra,
    };
    std::fs::write(out.join("e2e.json"), serde_json::to_string_pretty(&json)?)?;
    for (name, svg) in charts(sets, runs) {
        std::fs::write(out.join(name), svg)?;
    }
    Ok(())
}

pub(super) fn copy_charts_to_docs(out: &Path) -> anyhow::Result<()> {
    let docs = repo_root().join("docs/bench");
    std::fs::create_dir_all(&docs)?;
    for name in CHARTS {
        std::fs::copy(out.join(name), docs.join(name))
            .with_context(|| format!("copying {name} to {}", docs.display()))?;
    }
    eprintln!("charts copied to {}", docs.display());
    Ok(())
}
