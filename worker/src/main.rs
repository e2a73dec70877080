use clap::Parser;
use lakevault_worker::cli::{Cli, run};
use std::io::Write;

// jemalloc keeps peak RSS flat over long listings and copy runs, where glibc malloc's
// per-thread arenas held on to freed page buffers (docs/benchmarks.md); how soon it gives
// freed pages back is set in .cargo/config.toml.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let lakevault_worker::cli::Command::Run(args) = &cli.command;
    let serves_metrics = args.health_listen.is_some();
    let telemetry = lakevault_common::telemetry::init(
        &cli.common.telemetry("lakevault-worker", serves_metrics),
    );
    let signals = lakevault_common::shutdown::cancel_on_signals(
        "stopping: finishing work in flight (send the signal again to exit now)",
        "second signal: exiting now; unfinished messages reappear after their visibility timeout",
    );
    let outcome = tokio::select! {
        outcome = run(cli, signals.stop) => Some(outcome),
        _ = signals.abort.cancelled() => None,
    };
    let code = match outcome {
        Some(Ok(code)) => code,
        Some(Err(e)) => {
            let _ = writeln!(
                std::io::stderr(),
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
