use clap::Parser;
use lakevault_coordinator::cli::{Cli, run};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let _telemetry = lakevault_common::telemetry::init(
        "lakevault-coordinator",
        cli.common.log_format,
        lakevault_common::telemetry::DEFAULT_FILTER,
    );
    let stop = lakevault_common::shutdown::cancel_on_signals(
        "stopping: signal received",
        "second signal: exiting now",
    );
    let code = match run(cli, stop).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            lakevault_common::exit::code_for(&e)
        }
    };
    std::process::exit(code);
}
