//! Shared by lakevault's integration tests and its demo: a private Azurite per run, a
//! sample data lake (seed, modify, verify), and helpers that run the real binaries.

pub mod azurite;
pub mod lake;
pub mod scenario;

use lakevault_common::config::Config;
use lakevault_common::storage::{NetworkOptions, StorageAccount};

/// Blob service clients for the config's source and destination accounts.
pub fn services(
    config: &Config,
) -> anyhow::Result<(
    azure_storage_blob::BlobServiceClient,
    azure_storage_blob::BlobServiceClient,
)> {
    let make = |alias: &str| -> anyhow::Result<azure_storage_blob::BlobServiceClient> {
        Ok(
            StorageAccount::from_config(alias, config.account(alias)?, NetworkOptions::default())?
                .blob_service()?,
        )
    };
    Ok((
        make(&config.backup.source)?,
        make(&config.backup.destination)?,
    ))
}
