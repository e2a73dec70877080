//! Shared pieces of lakevault: the configuration model, storage account access
//! (credentials, Shared Key signing, SAS), the work-item wire format, the work queue,
//! failure classification and telemetry.

pub mod cli;
pub mod config;
pub mod connection_string;
pub mod error;
pub mod exit;
pub mod extra_headers;
pub mod ledger;
pub mod queue;
pub mod record;
pub mod sas;
pub mod secret;
pub mod select;
pub mod shared_key;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod throttle;
pub mod wire;
