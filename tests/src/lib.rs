//! Shared by lakevault's integration tests and its demo: a private Azurite per run, a
//! sample data lake (seed, modify, verify), and helpers that run the real binaries.

pub mod azurite;
pub mod conformance;
pub mod fault_proxy;
pub mod hns_facade;
pub mod lake;
pub mod measure;
pub mod put_from_url_facade;
pub mod scenario;
pub mod soak;
pub mod synthetic;

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

/// One test's world: a private emulator, a config file for it in a temporary directory,
/// and the config's source and backup accounts. Dropping it stops the emulator.
#[derive(Debug)]
pub struct Lab {
    pub azurite: azurite::Azurite,
    pub dir: tempfile::TempDir,
    /// The config file (`lakevault.toml` in `dir`).
    pub path: std::path::PathBuf,
    pub config: Config,
    pub src: StorageAccount,
    pub bak: StorageAccount,
}

impl Lab {
    /// Starts an emulator and writes a config backing up `containers` through `queue`.
    pub fn start(queue: &str, containers: &[&str]) -> anyhow::Result<Self> {
        let azurite = azurite::Azurite::start()?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("lakevault.toml");
        std::fs::write(&path, azurite.config_toml(queue, containers))?;
        let config = Config::load(&path)?;
        let (src, bak) = accounts(&config)?;
        Ok(Self {
            azurite,
            dir,
            path,
            config,
            src,
            bak,
        })
    }

    /// The emulator's blob service (`http://127.0.0.1:port`), what a façade in front of
    /// `account` relays to.
    pub fn upstream(&self, account: &str) -> String {
        self.azurite
            .blob_endpoint(account)
            .trim_end_matches(&format!("/{account}"))
            .to_string()
    }

    /// The text of this lab's config with `account` reached through a façade at
    /// `facade_url` (`http://127.0.0.1:port`) instead of the emulator.
    pub fn config_through(&self, account: &str, facade_url: &str) -> String {
        let direct = self.azurite.blob_endpoint(account);
        let text = std::fs::read_to_string(&self.path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.path.display()));
        let routed = text.replace(&direct, &format!("{facade_url}/{account}"));
        assert_ne!(routed, text, "the endpoint of {account} is in the config");
        routed
    }

    /// The text of this lab's config with both accounts' blob services reached through
    /// `url` (`http://127.0.0.1:port`): a façade or synthetic endpoint in front of the
    /// emulator's blob service. Queues stay on the emulator.
    pub fn config_with_blob_service_at(&self, url: &str) -> String {
        let text = std::fs::read_to_string(&self.path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.path.display()));
        let routed = [azurite::SOURCE_ACCOUNT, azurite::BACKUP_ACCOUNT]
            .iter()
            .fold(text, |text, account| {
                text.replace(
                    &self.azurite.blob_endpoint(account),
                    &format!("{url}/{account}"),
                )
            });
        assert!(
            !routed.contains(&self.upstream(azurite::SOURCE_ACCOUNT)),
            "every blob endpoint of the config is routed"
        );
        routed
    }

    /// Runs the coordinator with `args` and `--output json`; fails the test with its
    /// output unless it exits 0. Returns the JSON report.
    pub fn coordinator_ok(&self, args: &[&str]) -> serde_json::Value {
        scenario::coordinator_json(&self.path, args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Verifies blob by blob (content, metadata, tags) that every source blob of each
    /// `(source, backup)` container pair is in the backup; `blobs` source blobs in all.
    pub async fn assert_backup_matches(&self, pairs: &[(&str, &str)], blobs: u64) {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(s, b)| (s.to_string(), b.to_string()))
            .collect();
        let report = lake::verify(&self.src, &self.bak, &pairs)
            .await
            .expect("reading both sides");
        assert!(
            report.problems.is_empty(),
            "the backup does not match: {:#?}",
            &report.problems[..report.problems.len().min(10)]
        );
        assert_eq!(report.blobs, blobs, "source blobs verified");
    }
}
