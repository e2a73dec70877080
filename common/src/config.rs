//! The topology file: which accounts exist, how to authenticate to each, what to back up
//! where, and which queue carries the work. Unknown fields are refused so that a typo is
//! an error at start-up, not a silently ignored setting.

use crate::secret::SecretString;
use crate::select::{BlobFilter, glob_match, is_glob};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use url::Url;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Storage accounts by alias.
    pub accounts: BTreeMap<String, AccountConfig>,
    pub backup: BackupConfig,
    pub queue: QueueConfig,
    #[serde(default)]
    pub restore: RestoreConfig,
}

/// Where restores may write. Workers refuse restore work outside it, whatever a queue
/// message says: a message can name any configured account.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// Account aliases restores may write to (default: the backup source).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Whether a restore may replace blobs that exist at its target (`restore
    /// --overwrite`). Off by default: without it, restores only add missing blobs.
    #[serde(default)]
    pub allow_overwrite: bool,
}

impl Config {
    /// The accounts restores may write to.
    pub fn restore_targets(&self) -> Vec<String> {
        if self.restore.targets.is_empty() {
            vec![self.backup.source.clone()]
        } else {
            self.restore.targets.clone()
        }
    }
}

/// One storage account and the explicit way to authenticate to it. There is no silent
/// credential chain: the kind says exactly what is used.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AccountConfig {
    /// A connection string, including `UseDevelopmentStorage=true`.
    ConnectionString {
        connection_string: Option<SecretString>,
        connection_string_env: Option<String>,
        connection_string_file: Option<PathBuf>,
    },
    /// Account name and key (Shared Key signing; read SAS generated from it for copies).
    SharedKey {
        account_name: String,
        account_key: Option<SecretString>,
        account_key_env: Option<String>,
        account_key_file: Option<PathBuf>,
        blob_endpoint: Option<Url>,
        queue_endpoint: Option<Url>,
    },
    /// A SAS token given by the operator (account or service SAS).
    Sas {
        account_name: Option<String>,
        sas_token: Option<SecretString>,
        sas_token_env: Option<String>,
        sas_token_file: Option<PathBuf>,
        blob_endpoint: Option<Url>,
        queue_endpoint: Option<Url>,
    },
    /// Managed identity of the VM / node (system-assigned, or user-assigned by client id).
    ManagedIdentity {
        account_name: String,
        client_id: Option<String>,
        blob_endpoint: Option<Url>,
        queue_endpoint: Option<Url>,
        /// How the backup service is authorised to read this account as a copy source.
        #[serde(default)]
        copy_source: CopySourceAuth,
    },
    /// AKS workload identity (federated token file from the pod's environment).
    WorkloadIdentity {
        account_name: String,
        tenant_id: Option<String>,
        client_id: Option<String>,
        token_file: Option<PathBuf>,
        blob_endpoint: Option<Url>,
        queue_endpoint: Option<Url>,
        /// How the backup service is authorised to read this account as a copy source.
        #[serde(default)]
        copy_source: CopySourceAuth,
    },
    /// A service principal with a client secret.
    ClientSecret {
        account_name: String,
        tenant_id: String,
        client_id: String,
        client_secret: Option<SecretString>,
        client_secret_env: Option<String>,
        client_secret_file: Option<PathBuf>,
        blob_endpoint: Option<Url>,
        queue_endpoint: Option<Url>,
        /// How the backup service is authorised to read this account as a copy source.
        #[serde(default)]
        copy_source: CopySourceAuth,
    },
    /// The operator's own login from the Azure CLI / Azure Developer CLI.
    DeveloperTools {
        account_name: String,
        blob_endpoint: Option<Url>,
        queue_endpoint: Option<Url>,
        /// How the backup service is authorised to read this account as a copy source.
        #[serde(default)]
        copy_source: CopySourceAuth,
    },
}

/// How a server-side copy's source read is authorised for an account reached with an
/// Entra credential.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopySourceAuth {
    /// The worker's Entra token in `x-ms-copy-source-authorization` (needs a data-reader
    /// role on the source).
    #[default]
    Bearer,
    /// A read-only user delegation SAS per blob, signed with a key from Get User Delegation
    /// Key (also needs the `generateUserDelegationKey` action, e.g. Storage Blob Delegator).
    UserDelegationSas,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Alias of the account to back up.
    pub source: String,
    /// Alias of the account that receives the backup.
    pub destination: String,
    /// Containers to back up: names, or globs (`raw-*`, `logs-202?`, `*` for all).
    pub containers: Vec<String>,
    /// Destination container name; `{container}` is replaced by the source container name.
    #[serde(default = "default_container_template")]
    pub container_template: String,
    /// Only blobs whose names start with one of these (default: all).
    #[serde(default)]
    pub include_prefixes: Vec<String>,
    /// Never blobs whose names start with one of these.
    #[serde(default)]
    pub exclude_prefixes: Vec<String>,
    /// Only blobs whose names match one of these globs (`*` crosses `/`).
    #[serde(default)]
    pub include_patterns: Vec<String>,
    /// Never blobs whose names match one of these globs (e.g. `*.tmp`, `*/_temporary/*`).
    #[serde(default)]
    pub exclude_patterns: Vec<String>,
}

impl BackupConfig {
    /// The include/exclude rules for blob names.
    pub fn filter(&self) -> BlobFilter {
        BlobFilter {
            include_prefixes: self.include_prefixes.clone(),
            exclude_prefixes: self.exclude_prefixes.clone(),
            include_patterns: self.include_patterns.clone(),
            exclude_patterns: self.exclude_patterns.clone(),
        }
    }

    /// Whether a source container is selected by `containers`.
    pub fn selects_container(&self, name: &str) -> bool {
        self.containers.iter().any(|c| {
            if is_glob(c) {
                glob_match(c, name)
            } else {
                c == name
            }
        })
    }
}

fn default_container_template() -> String {
    "{container}".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Alias of the account holding the work queue (ideally not the source account, so
    /// queue traffic does not eat the source's request budget).
    pub account: String,
    /// Queue name; failures go to `<name>-poison`.
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config file {path} (point --config or LAKEVAULT_CONFIG at the topology file)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: `{field}` {problem}")]
    Invalid { field: String, problem: String },
}

impl ConfigError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message,
        };
        let document =
            toml::Deserializer::parse(text).map_err(|e| parse_error(toml_error(text, &e)))?;
        // The path of the offending field leads the message (`queue.name: invalid type`):
        // the position alone does not say which table it is in.
        let config: Config = serde_path_to_error::deserialize(document).map_err(|e| {
            let field = e.path().to_string();
            let inner = toml_error(text, &e.into_inner());
            parse_error(if field == "." || field.is_empty() {
                inner
            } else {
                format!("`{field}`: {inner}")
            })
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, alias) in [
            ("backup.source", &self.backup.source),
            ("backup.destination", &self.backup.destination),
            ("queue.account", &self.queue.account),
        ] {
            if !self.accounts.contains_key(alias) {
                let known: Vec<&str> = self.accounts.keys().map(String::as_str).collect();
                return Err(ConfigError::invalid(
                    field,
                    format!(
                        "names account alias `{alias}`, which is not defined under [accounts] (defined: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
        for alias in &self.restore.targets {
            if !self.accounts.contains_key(alias) {
                return Err(ConfigError::invalid(
                    "restore.targets",
                    format!("names account alias `{alias}`, which is not defined under [accounts]"),
                ));
            }
        }
        if self.backup.containers.is_empty() {
            return Err(ConfigError::invalid(
                "backup.containers",
                "is empty: list container names or use [\"*\"] for all",
            ));
        }
        self.backup
            .filter()
            .validate()
            .map_err(|p| ConfigError::invalid("backup", p))?;
        for name in &self.backup.containers {
            if !is_glob(name) && !SPECIAL_CONTAINERS.contains(&name.as_str()) {
                validate_container_name(name).map_err(|p| {
                    ConfigError::invalid("backup.containers", format!("entry `{name}` {p}"))
                })?;
            }
        }
        if !self.backup.container_template.contains("{container}") {
            return Err(ConfigError::invalid(
                "backup.container_template",
                "must contain `{container}` so that source containers map to distinct backup containers",
            ));
        }
        let probe = self.backup.container_template.replace("{container}", "abc");
        validate_container_name(&probe).map_err(|p| {
            ConfigError::invalid(
                "backup.container_template",
                format!("produces invalid names: {p}"),
            )
        })?;
        validate_queue_name(&self.queue.name).map_err(|p| ConfigError::invalid("queue.name", p))?;
        for (alias, account) in &self.accounts {
            account.validate().map_err(|(field, problem)| {
                ConfigError::invalid(format!("accounts.{alias}.{field}"), problem)
            })?;
        }
        Ok(())
    }

    /// The backup container a source container maps to. The special containers `$root`
    /// and `$web` enter the template without their `$` (`$web` → `web`): a `$web` in the
    /// backup account would be served as a static website if that feature is on there.
    pub fn destination_container(&self, source_container: &str) -> Result<String, String> {
        let base = if SPECIAL_CONTAINERS.contains(&source_container) {
            source_container.trim_start_matches('$')
        } else {
            source_container
        };
        let name = self.backup.container_template.replace("{container}", base);
        validate_container_name(&name)
            .map(|_| name.clone())
            .map_err(|p| {
                format!("destination container `{name}` for source `{source_container}` {p}")
            })
    }

    pub fn account(&self, alias: &str) -> Result<&AccountConfig, ConfigError> {
        self.accounts
            .get(alias)
            .ok_or_else(|| ConfigError::invalid("accounts", format!("has no alias `{alias}`")))
    }
}

impl AccountConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        fn exactly_one(name: &'static str, set: [bool; 3]) -> Result<(), (&'static str, String)> {
            match set.iter().filter(|b| **b).count() {
                1 => Ok(()),
                0 => Err((
                    name,
                    format!("is missing: set `{name}`, `{name}_env` or `{name}_file`"),
                )),
                _ => Err((
                    name,
                    format!(
                        "is given more than once: set only one of `{name}`, `{name}_env`, `{name}_file`"
                    ),
                )),
            }
        }
        match self {
            AccountConfig::ConnectionString {
                connection_string,
                connection_string_env,
                connection_string_file,
            } => exactly_one(
                "connection_string",
                [
                    connection_string.is_some(),
                    connection_string_env.is_some(),
                    connection_string_file.is_some(),
                ],
            ),
            AccountConfig::SharedKey {
                account_key,
                account_key_env,
                account_key_file,
                ..
            } => exactly_one(
                "account_key",
                [
                    account_key.is_some(),
                    account_key_env.is_some(),
                    account_key_file.is_some(),
                ],
            ),
            AccountConfig::Sas {
                account_name,
                sas_token,
                sas_token_env,
                sas_token_file,
                blob_endpoint,
                ..
            } => {
                exactly_one(
                    "sas_token",
                    [
                        sas_token.is_some(),
                        sas_token_env.is_some(),
                        sas_token_file.is_some(),
                    ],
                )?;
                if account_name.is_none() && blob_endpoint.is_none() {
                    return Err((
                        "account_name",
                        "is missing: set `account_name` or `blob_endpoint`".into(),
                    ));
                }
                Ok(())
            }
            AccountConfig::ClientSecret {
                client_secret,
                client_secret_env,
                client_secret_file,
                ..
            } => exactly_one(
                "client_secret",
                [
                    client_secret.is_some(),
                    client_secret_env.is_some(),
                    client_secret_file.is_some(),
                ],
            ),
            AccountConfig::ManagedIdentity { .. }
            | AccountConfig::WorkloadIdentity { .. }
            | AccountConfig::DeveloperTools { .. } => Ok(()),
        }
    }

    /// The copy-source authorisation of an Entra kind (`Bearer` for the others, unused).
    pub fn copy_source(&self) -> CopySourceAuth {
        match self {
            AccountConfig::ManagedIdentity { copy_source, .. }
            | AccountConfig::WorkloadIdentity { copy_source, .. }
            | AccountConfig::ClientSecret { copy_source, .. }
            | AccountConfig::DeveloperTools { copy_source, .. } => *copy_source,
            _ => CopySourceAuth::Bearer,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            AccountConfig::ConnectionString { .. } => "connection_string",
            AccountConfig::SharedKey { .. } => "shared_key",
            AccountConfig::Sas { .. } => "sas",
            AccountConfig::ManagedIdentity { .. } => "managed_identity",
            AccountConfig::WorkloadIdentity { .. } => "workload_identity",
            AccountConfig::ClientSecret { .. } => "client_secret",
            AccountConfig::DeveloperTools { .. } => "developer_tools",
        }
    }
}

/// Containers with reserved names that a source account may have besides its own.
pub const SPECIAL_CONTAINERS: &[&str] = &["$root", "$web"];

/// Container names: 3–63 characters, lowercase letters, digits and single hyphens, starting
/// and ending with a letter or digit.
/// <https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata>
pub fn validate_container_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !(3..=63).contains(&name.len()) {
        return Err(format!(
            "must be 3 to 63 characters long (is {})",
            name.len()
        ));
    }
    if !ok_chars || name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err(
            "may contain only lowercase letters, digits and single hyphens, and must start and end with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

/// Queue names follow the container rules; the poison queue adds `-poison`, so the work
/// queue's name must leave room for it.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    validate_container_name(name)?;
    if name.len() + crate::queue::POISON_SUFFIX.len() > 63 {
        return Err(format!(
            "is too long: the poison queue `{name}{}` would exceed 63 characters",
            crate::queue::POISON_SUFFIX
        ));
    }
    Ok(())
}

/// A TOML error as its message and position, never the offending line itself: that line
/// may hold a secret (`client_secret = "…`).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {}", e.message().trim())
        }
        None => e.message().trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn syntax_errors_do_not_echo_the_line_that_may_hold_a_secret() {
        let text =
            "[accounts.a]\nkind = \"client_secret\"\nclient_secret = \"s3cr3t-Value-123\nx = 1\n";
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(err.contains("line 3"), "the error says where: {err}");
        let typed = "[accounts.a]\nkind = \"shared_key\"\naccount_name = \"a\"\naccount_key = [\"s3cr3t-Value-123\"]\n";
        let err = Config::parse(typed).unwrap_err().to_string();
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    use super::*;

    const GOOD: &str = r#"
[accounts.source]
kind = "connection_string"
connection_string = "UseDevelopmentStorage=true"

[accounts.backup]
kind = "shared_key"
account_name = "backupaccount"
account_key_env = "BACKUP_KEY"
blob_endpoint = "http://127.0.0.1:10000/backupaccount"

[backup]
source = "source"
destination = "backup"
containers = ["*"]

[queue]
account = "backup"
name = "lakevault-copy"
"#;

    #[test]
    fn parses_a_good_config() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.backup.container_template, "{container}");
        assert_eq!(c.accounts["backup"].kind(), "shared_key");
        assert_eq!(c.destination_container("raw").unwrap(), "raw");
        assert_eq!(c.destination_container("$web").unwrap(), "web");
        assert_eq!(c.destination_container("$root").unwrap(), "root");
    }

    #[test]
    fn restores_write_to_the_source_unless_configured_otherwise() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.restore_targets(), ["source"]);
        assert!(!c.restore.allow_overwrite);
        let c = Config::parse(&format!(
            "{GOOD}\n[restore]\ntargets = [\"source\", \"backup\"]\nallow_overwrite = true\n"
        ))
        .unwrap();
        assert_eq!(c.restore_targets(), ["source", "backup"]);
        assert!(c.restore.allow_overwrite);
        let err = Config::parse(&format!("{GOOD}\n[restore]\ntargets = [\"elsewhere\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("restore.targets") && err.contains("elsewhere"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_is_named() {
        let bad = GOOD.replace(
            "name = \"lakevault-copy\"",
            "name = \"lakevault-copy\"\nnmae = 1",
        );
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("nmae"), "{e}");
    }

    #[test]
    fn unknown_field_inside_an_account_is_named() {
        let bad = GOOD.replace("account_key_env", "acount_key_env");
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("acount_key_env"), "{e}");
    }

    #[test]
    fn unknown_credential_kind_is_named() {
        let bad = GOOD.replace("kind = \"shared_key\"", "kind = \"magic\"");
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("magic") && e.contains("shared_key"), "{e}");
    }

    #[test]
    fn missing_alias_is_named() {
        let bad = GOOD.replace("destination = \"backup\"", "destination = \"nowhere\"");
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(
            e.contains("backup.destination") && e.contains("nowhere"),
            "{e}"
        );
    }

    #[test]
    fn secret_given_twice_is_refused() {
        let bad = GOOD.replace(
            "account_key_env = \"BACKUP_KEY\"",
            "account_key_env = \"A\"\naccount_key = \"x\"",
        );
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("accounts.backup.account_key"), "{e}");
    }

    #[test]
    fn template_must_map_containers() {
        let bad = GOOD.replace(
            "containers = [\"*\"]",
            "containers = [\"*\"]\ncontainer_template = \"Backup_\"",
        );
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("backup.container_template"), "{e}");
    }

    #[test]
    fn container_globs_and_blob_rules() {
        let text = GOOD.replace(
            "containers = [\"*\"]",
            "containers = [\"raw-*\", \"curated\"]\nexclude_patterns = [\"*.tmp\"]",
        );
        let c = Config::parse(&text).unwrap();
        assert!(c.backup.selects_container("raw-2024"));
        assert!(c.backup.selects_container("curated"));
        assert!(!c.backup.selects_container("curated-old"));
        assert!(!c.backup.filter().matches("a/b.tmp"));
        let bad = GOOD.replace(
            "containers = [\"*\"]",
            "containers = [\"*\"]\nexclude_patterns = [\"\"]",
        );
        assert!(
            Config::parse(&bad)
                .unwrap_err()
                .to_string()
                .contains("exclude_patterns")
        );
    }

    #[test]
    fn container_names() {
        assert!(validate_container_name("raw-2024").is_ok());
        assert!(validate_container_name("ab").is_err());
        assert!(validate_container_name("Raw").is_err());
        assert!(validate_container_name("a--b").is_err());
        assert!(validate_queue_name(&"q".repeat(57)).is_err());
    }
}
