use clap::Parser;
use lakevault_worker::cli::{Cli, run};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let _telemetry = lakevault_common::telemetry::init(
        "lakevault-worker",
        cli.log_format,
        lakevault_common::telemetry::DEFAULT_FILTER,
    );
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        lakevault_common::shutdown::wait_for_signal().await;
        eprintln!("stopping: finishing work in flight (send the signal again to exit now)");
        on_signal.cancel();
        lakevault_common::shutdown::wait_for_signal().await;
        eprintln!(
            "second signal: exiting now; unfinished messages reappear after their visibility timeout"
        );
        std::process::exit(130);
    });
    let code = match run(cli, stop).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            lakevault_common::exit::code_for(&e)
        }
    };
    std::process::exit(code);
}
