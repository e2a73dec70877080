use clap::Parser;
use lakevault_coordinator::cli::{Cli, run};

// jemalloc keeps peak RSS flat over long listings and copy runs, where glibc malloc's
// per-thread arenas held on to freed page buffers (docs/benchmarks.md); how soon it gives
// freed pages back is set in .cargo/config.toml.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let serves_metrics = matches!(cli.command, lakevault_coordinator::cli::Command::Serve(_));
    let telemetry = lakevault_common::telemetry::init(
        &cli.common
            .telemetry("lakevault-coordinator", serves_metrics),
    );
    let signals = lakevault_common::shutdown::cancel_on_signals(
        "stopping: signal received",
        "second signal: exiting now",
    );
    let outcome = tokio::select! {
        outcome = run(cli, signals.stop) => Some(outcome),
        _ = signals.abort.cancelled() => None,
    };
    let code = match outcome {
        Some(Ok(code)) => code,
        Some(Err(e)) => {
            eprintln!(
                "error: {}",
                lakevault_common::secret::scrub(&format!("{e:#}"))
            );
            lakevault_common::exit::code_for(&e)
        }
        None => lakevault_common::shutdown::ABORTED,
    };
    // Flushes spans and metrics: `exit` runs no destructors.
    drop(telemetry);
    std::process::exit(code);
}
