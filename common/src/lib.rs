//! Shared pieces of lakevault: the configuration model, storage account access
//! (credentials, Shared Key signing, SAS), the work-item wire format, the work queue,
//! failure classification, telemetry and metrics.

pub mod access;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connection_string;
pub mod error;
pub mod exit;
pub mod extra_headers;
pub mod ledger;
pub mod metrics;
pub mod progress;
pub mod queue;
pub mod record;
pub mod request_count;
pub mod sas;
pub mod sdk_tracing;
pub mod secret;
pub mod select;
pub mod shared_key;
pub mod shutdown;
pub mod state;
pub mod storage;
pub mod store;
pub mod tally;
pub mod telemetry;
pub mod throttle;
pub mod wire;
