use clap::Parser;
use lakevault_worker::cli::{Cli, run};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let _telemetry = lakevault_common::telemetry::init(
        "lakevault-worker",
        cli.common.log_format,
        lakevault_common::telemetry::DEFAULT_FILTER,
    );
    let stop = lakevault_common::shutdown::cancel_on_signals(
        "stopping: finishing work in flight (send the signal again to exit now)",
        "second signal: exiting now; unfinished messages reappear after their visibility timeout",
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
