//! Shared by lakevault's integration tests and its demo: a private Azurite per run, a
//! sample data lake (seed, modify, verify), and helpers that run the real binaries.

pub mod azurite;
pub mod lake;
pub mod scenario;

use lakevault_common::config::Config;
use lakevault_common::storage::{NetworkOptions, StorageAccount};

/// The config's source and destination accounts.
pub fn accounts(config: &Config) -> anyhow::Result<(StorageAccount, StorageAccount)> {
    let make = |alias: &str| -> anyhow::Result<StorageAccount> {
        Ok(StorageAccount::from_config(
            alias,
            config.account(alias)?,
            NetworkOptions::default(),
        )?)
    };
    Ok((
        make(&config.backup.source)?,
        make(&config.backup.destination)?,
    ))
}
