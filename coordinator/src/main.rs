use clap::Parser;
use lakevault_coordinator::cli::{Cli, run};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let _telemetry = lakevault_common::telemetry::init(
        "lakevault-coordinator",
        cli.log_format,
        lakevault_common::telemetry::DEFAULT_FILTER,
    );
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        lakevault_common::shutdown::wait_for_signal().await;
        eprintln!("stopping: signal received");
        on_signal.cancel();
        lakevault_common::shutdown::wait_for_signal().await;
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
    let code = match run(cli, cancel).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            lakevault_common::exit::code_for(&e)
        }
    };
    std::process::exit(code);
}
