//! `make soak`: 20,000 blobs backed up while one of three workers is killed every few
//! seconds, a fault proxy fails and cuts writes to the backup account, and a writer rewrites
//! and deletes a tenth of the lake; then three independent checks. Prints the figures and
//! writes them as JSON to `target/soak.json`; exits 1 if anything was lost, poisoned or
//! restored wrong.

use lakevault_tests::soak::{self, SoakSpec};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut spec = SoakSpec::full();
    if let Some(blobs) = std::env::args().nth(1) {
        spec.blobs = blobs.parse()?;
    }
    println!(
        "soak: {} blobs, one worker of {} killed every {:?} for {:?}, {:.0}% churn, a fault in every {} writes",
        spec.blobs,
        spec.steady_workers + 1,
        spec.kill_every,
        spec.kill_for,
        spec.churn * 100.0,
        spec.fault_every
    );
    let report = soak::run(&spec).await?;
    println!("{}", soak::describe(&report));
    for p in &report.problems {
        println!("  problem: {p}");
    }
    let out = lakevault_tests::azurite::repo_root().join("target/soak.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("report: {}", out.display());
    let ok = report.lost == 0
        && report.poisoned == 0
        && report.restore_mismatches == 0
        && report.verify_deep_exit == 0;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
