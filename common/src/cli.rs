//! Options every lakevault binary takes, each also readable from a `LAKEVAULT_*`
//! environment variable.

use crate::config::{Config, ConfigError};
use crate::storage::NetworkOptions;
use crate::telemetry::LogFormat;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Topology file: accounts, what to back up, the queue.
    #[arg(
        long,
        short,
        env = "LAKEVAULT_CONFIG",
        global = true,
        default_value = "lakevault.toml"
    )]
    pub config: PathBuf,
    /// Log format on stderr: `auto` is text on a terminal, JSON otherwise.
    #[arg(
        long,
        env = "LAKEVAULT_LOG_FORMAT",
        global = true,
        value_enum,
        default_value = "auto"
    )]
    pub log_format: LogFormat,
    /// Log level (`error`, `warn`, `info`, `debug`, `trace`; the Azure SDK's own logs stay
    /// at `warn` or less) or a filter in `RUST_LOG` syntax. `RUST_LOG` wins when set.
    #[arg(
        long,
        env = "LAKEVAULT_LOG_LEVEL",
        global = true,
        default_value = "info",
        value_parser = crate::telemetry::parse_log_level
    )]
    pub log_level: String,
    /// Seconds to wait for a TCP connection before calling an endpoint unreachable.
    #[arg(
        long,
        env = "LAKEVAULT_CONNECT_TIMEOUT_SECS",
        global = true,
        default_value_t = 3
    )]
    pub connect_timeout_secs: u64,
    /// Extra trusted root certificates (PEM), for a private CA or a TLS-inspecting proxy.
    #[arg(long, env = "LAKEVAULT_CA_FILE", global = true)]
    pub ca_file: Vec<PathBuf>,
}

impl CommonArgs {
    /// Telemetry for a binary; `prometheus`: it serves `/metrics`.
    pub fn telemetry(
        &self,
        service_name: &'static str,
        prometheus: bool,
    ) -> crate::telemetry::TelemetryOptions {
        crate::telemetry::TelemetryOptions {
            service_name,
            log_format: self.log_format,
            log_level: self.log_level.clone(),
            prometheus,
        }
    }

    pub fn load_config(&self) -> Result<Config, ConfigError> {
        Config::load(&self.config)
    }

    pub fn network(&self) -> NetworkOptions {
        NetworkOptions {
            connect_timeout: Duration::from_secs(self.connect_timeout_secs.max(1)),
            extra_ca_files: self.ca_file.clone(),
            ..Default::default()
        }
    }
}
