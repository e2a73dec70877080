//! Turning a configured account into SDK clients: endpoints, the authentication policy of
//! its credential kind, a transport with connect timeouts, and one retry configuration.
//! Also builds the source URL (and authorization) a server-side copy reads from.

use crate::config::{AccountConfig, CopySourceAuth};
use crate::connection_string;
use crate::extra_headers::ExtraHeadersPolicy;
use crate::request_count::BlobRequestCounter;
use crate::sas::{self, SasResource};
use crate::secret::SecretString;
use crate::shared_key::SharedKeyPolicy;
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{
    ClientOptions, Context, ExponentialRetryOptions, Request, RetryOptions, Transport,
};
use azure_storage_blob::{
    BlobClient, BlobClientOptions, BlobContainerClient, BlobServiceClient, BlobServiceClientOptions,
};
use azure_storage_queue::{QueueClient, QueueServiceClient, QueueServiceClientOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;
use url::Url;

const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// Network behaviour shared by every client: fail fast on unreachable endpoints, retry
/// what the SDK classifies as transient, within bounds.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    pub connect_timeout: Duration,
    /// Upper bound for one request (a 256 MiB synchronous copy must fit).
    pub request_timeout: Duration,
    pub max_retries: u32,
    pub max_retry_elapsed: Duration,
    /// PEM files of extra trusted root certificates (a private CA, a TLS-inspecting proxy,
    /// the emulator's self-signed certificate).
    pub extra_ca_files: Vec<PathBuf>,
    /// Adaptive copy concurrency and request-rate cap, fed by every response (workers).
    pub throttle: crate::throttle::ThrottlePolicy,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(600),
            max_retries: 4,
            max_retry_elapsed: Duration::from_secs(30),
            extra_ca_files: Vec::new(),
            throttle: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("account `{alias}`: {message}")]
    Invalid { alias: String, message: String },
    #[error("account `{alias}`")]
    Sas {
        alias: String,
        source: sas::SasError,
    },
    #[error("account `{alias}`: cannot create the {kind} credential: {message}")]
    Credential {
        alias: String,
        kind: &'static str,
        message: String,
    },
    #[error("account `{alias}`: {message}")]
    Client { alias: String, message: String },
}

/// Where a SAS token comes from. A file is re-read when it changes, so a token rotated on
/// disk (a mounted secret) is picked up without a restart.
#[derive(Debug)]
enum SasSource {
    Static(SecretString),
    File {
        path: PathBuf,
        cached: Mutex<Option<(SystemTime, SecretString)>>,
    },
}

impl SasSource {
    fn current(&self) -> std::io::Result<SecretString> {
        match self {
            SasSource::Static(t) => Ok(t.clone()),
            SasSource::File { path, cached } => {
                let mtime = std::fs::metadata(path)?.modified()?;
                let mut guard = cached.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((seen, token)) = guard.as_ref()
                    && *seen == mtime
                {
                    return Ok(token.clone());
                }
                let token = SecretString::new(read_secret_file(path)?.trim_start_matches('?'));
                *guard = Some((mtime, token.clone()));
                Ok(token)
            }
        }
    }
}

/// How requests to one account are authorised.
#[derive(Debug, Clone)]
enum Auth {
    SharedKey { key: SecretString },
    Sas(Arc<SasSource>),
    Token(Arc<dyn TokenCredential>),
}

/// A configured storage account, ready to make clients.
#[derive(Debug, Clone)]
pub struct StorageAccount {
    pub alias: String,
    pub account_name: Option<String>,
    pub blob_endpoint: Url,
    pub queue_endpoint: Url,
    auth: Auth,
    /// Shared by every client made for this account, so they share one transport and its
    /// connection pool.
    options: ClientOptions,
    /// Entra kinds: how copy sources in this account are authorised.
    copy_source_auth: CopySourceAuth,
    /// The user delegation key in use (`CopySourceAuth::UserDelegationSas`), shared by
    /// clones and renewed before it expires.
    delegation_key: Arc<tokio::sync::Mutex<Option<sas::DelegationKey>>>,
    /// Requests sent to the blob endpoint by every client of this account and its clones.
    blob_requests: Arc<BlobRequestCounter>,
    /// The pipeline of requests sent without an SDK client ([`Self::pipeline`]), made once
    /// and shared by clones: its bearer-token policy keeps the token it got.
    pipeline: Arc<std::sync::OnceLock<azure_core::http::Pipeline>>,
}

/// The URL a server-side copy reads from, with its authorization. The URL may contain a
/// SAS signature: log it only through [`crate::secret::redact_url`].
#[derive(Clone)]
pub struct CopySource {
    pub url: String,
    /// A `Bearer …` value for `x-ms-copy-source-authorization`, for Entra-authenticated
    /// sources.
    pub authorization: Option<SecretString>,
}

impl std::fmt::Debug for CopySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopySource")
            .field("url", &crate::secret::redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

fn read_secret_file(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

fn resolve_secret(
    alias: &str,
    field: &str,
    value: &Option<SecretString>,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<SecretString, AccountError> {
    let invalid = |message: String| AccountError::Invalid {
        alias: alias.to_string(),
        message,
    };
    if let Some(v) = value {
        return Ok(v.clone());
    }
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(SecretString::new(v.trim())),
            _ => Err(invalid(format!(
                "`{field}_env` names the environment variable `{var}`, which is not set or empty"
            ))),
        };
    }
    if let Some(path) = file {
        return read_secret_file(path)
            .map(SecretString::new)
            .map_err(|e| invalid(format!("`{field}_file` {}: {e}", path.display())));
    }
    Err(invalid(format!("`{field}` is not set")))
}

fn default_endpoint(alias: &str, service: &str, account: &str) -> Result<Url, AccountError> {
    Url::parse(&format!("https://{account}.{service}.core.windows.net")).map_err(|e| {
        AccountError::Invalid {
            alias: alias.to_string(),
            message: format!("`account_name` `{account}` does not make a valid endpoint URL: {e}"),
        }
    })
}

fn endpoint_pair(
    alias: &str,
    account_name: Option<&str>,
    blob: &Option<Url>,
    queue: &Option<Url>,
) -> Result<(Url, Url), AccountError> {
    let pick = |service: &str, explicit: &Option<Url>| -> Result<Url, AccountError> {
        match (explicit, account_name) {
            (Some(u), _) => Ok(normalise_endpoint(u)),
            (None, Some(name)) => default_endpoint(alias, service, name),
            (None, None) => Err(AccountError::Invalid {
                alias: alias.to_string(),
                message: format!("set `account_name` or `{service}_endpoint`"),
            }),
        }
    };
    Ok((pick("blob", blob)?, pick("queue", queue)?))
}

/// Drops a trailing slash on path-style (emulator) endpoints: `/acct//container` is a 400.
fn normalise_endpoint(u: &Url) -> Url {
    let mut u = u.clone();
    if u.path().len() > 1 && u.path().ends_with('/') {
        let p = u.path().trim_end_matches('/').to_string();
        u.set_path(&p);
    }
    u.set_query(None);
    u
}

/// What one config entry resolves to before any client is built.
struct Resolved {
    account_name: Option<String>,
    blob_endpoint: Url,
    queue_endpoint: Url,
    auth: Auth,
}

fn invalid(alias: &str, message: String) -> AccountError {
    AccountError::Invalid {
        alias: alias.to_string(),
        message,
    }
}

/// `kind = "connection_string"`: an account key or a SAS, and the endpoints, from one string.
fn resolve_connection_string(
    alias: &str,
    config: &AccountConfig,
) -> Result<Resolved, AccountError> {
    let AccountConfig::ConnectionString {
        connection_string,
        connection_string_env,
        connection_string_file,
    } = config
    else {
        unreachable!("called for connection strings only")
    };
    let text = resolve_secret(
        alias,
        "connection_string",
        connection_string,
        connection_string_env,
        connection_string_file,
    )?;
    let parsed = connection_string::parse(text.expose())
        .map_err(|e| invalid(alias, format!("`connection_string`: {e}")))?;
    let auth = match (&parsed.account_key, &parsed.sas_token, &parsed.account_name) {
        (Some(key), _, Some(_)) => Auth::SharedKey { key: key.clone() },
        (_, Some(token), _) => Auth::Sas(Arc::new(SasSource::Static(token.clone()))),
        _ => {
            return Err(invalid(
                alias,
                "`connection_string` has AccountKey but no AccountName".into(),
            ));
        }
    };
    let (blob_endpoint, queue_endpoint) = endpoint_pair(
        alias,
        parsed.account_name.as_deref(),
        &parsed.blob_endpoint,
        &parsed.queue_endpoint,
    )?;
    Ok(Resolved {
        account_name: parsed.account_name,
        blob_endpoint,
        queue_endpoint,
        auth,
    })
}

/// `kind = "shared_key"`: the account key, checked to be base64.
fn resolve_shared_key(alias: &str, config: &AccountConfig) -> Result<Resolved, AccountError> {
    let AccountConfig::SharedKey {
        account_name,
        account_key,
        account_key_env,
        account_key_file,
        blob_endpoint,
        queue_endpoint,
    } = config
    else {
        unreachable!("called for shared keys only")
    };
    let key = resolve_secret(
        alias,
        "account_key",
        account_key,
        account_key_env,
        account_key_file,
    )?;
    if azure_core::base64::decode(key.expose()).is_err() {
        return Err(invalid(
            alias,
            "`account_key` is not valid base64; copy the key exactly as the portal or `az storage account keys list` shows it".into(),
        ));
    }
    let (blob_endpoint, queue_endpoint) =
        endpoint_pair(alias, Some(account_name), blob_endpoint, queue_endpoint)?;
    Ok(Resolved {
        account_name: Some(account_name.clone()),
        blob_endpoint,
        queue_endpoint,
        auth: Auth::SharedKey { key },
    })
}

/// `kind = "sas"`: a token, or a file re-read when it changes; refused if already expired.
fn resolve_sas(alias: &str, config: &AccountConfig) -> Result<Resolved, AccountError> {
    let AccountConfig::Sas {
        account_name,
        sas_token,
        sas_token_env,
        sas_token_file,
        blob_endpoint,
        queue_endpoint,
    } = config
    else {
        unreachable!("called for SAS tokens only")
    };
    let source = match sas_token_file {
        Some(path) => SasSource::File {
            path: path.clone(),
            cached: Mutex::new(None),
        },
        None => SasSource::Static(SecretString::new(
            resolve_secret(alias, "sas_token", sas_token, sas_token_env, &None)?
                .expose()
                .trim_start_matches('?'),
        )),
    };
    let token = source
        .current()
        .map_err(|e| invalid(alias, format!("`sas_token_file`: {e}")))?;
    sas::check_not_expired(token.expose(), OffsetDateTime::now_utc()).map_err(|source| {
        AccountError::Sas {
            alias: alias.to_string(),
            source,
        }
    })?;
    let (blob_endpoint, queue_endpoint) = endpoint_pair(
        alias,
        account_name.as_deref(),
        blob_endpoint,
        queue_endpoint,
    )?;
    Ok(Resolved {
        account_name: account_name.clone(),
        blob_endpoint,
        queue_endpoint,
        auth: Auth::Sas(Arc::new(source)),
    })
}

/// The Entra kinds: a token credential from `azure_identity`, and the account's endpoints.
fn resolve_entra(alias: &str, config: &AccountConfig) -> Result<Resolved, AccountError> {
    let failed = |kind: &'static str| {
        move |e: azure_core::Error| AccountError::Credential {
            alias: alias.to_string(),
            kind,
            message: crate::error::describe(&e),
        }
    };
    let (account_name, blob_endpoint, queue_endpoint, credential): (
        &String,
        &Option<Url>,
        &Option<Url>,
        Arc<dyn TokenCredential>,
    ) = match config {
        AccountConfig::ManagedIdentity {
            account_name,
            client_id,
            blob_endpoint,
            queue_endpoint,
            ..
        } => {
            let options = azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: client_id
                    .clone()
                    .map(azure_identity::UserAssignedId::ClientId),
                ..Default::default()
            };
            let credential = azure_identity::ManagedIdentityCredential::new(Some(options))
                .map_err(failed("managed_identity"))?;
            (account_name, blob_endpoint, queue_endpoint, credential)
        }
        AccountConfig::WorkloadIdentity {
            account_name,
            tenant_id,
            client_id,
            token_file,
            blob_endpoint,
            queue_endpoint,
            ..
        } => {
            let options = azure_identity::WorkloadIdentityCredentialOptions {
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                token_file_path: token_file.clone(),
                ..Default::default()
            };
            let credential = azure_identity::WorkloadIdentityCredential::new(Some(options))
                .map_err(failed("workload_identity"))?;
            (account_name, blob_endpoint, queue_endpoint, credential)
        }
        AccountConfig::ClientSecret {
            account_name,
            tenant_id,
            client_id,
            client_secret,
            client_secret_env,
            client_secret_file,
            blob_endpoint,
            queue_endpoint,
            ..
        } => {
            let secret = resolve_secret(
                alias,
                "client_secret",
                client_secret,
                client_secret_env,
                client_secret_file,
            )?;
            let credential = azure_identity::ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                azure_core::credentials::Secret::new(secret.expose().to_string()),
                None,
            )
            .map_err(failed("client_secret"))?;
            (account_name, blob_endpoint, queue_endpoint, credential)
        }
        AccountConfig::DeveloperTools {
            account_name,
            blob_endpoint,
            queue_endpoint,
            ..
        } => {
            let credential = azure_identity::DeveloperToolsCredential::new(None)
                .map_err(failed("developer_tools"))?;
            (account_name, blob_endpoint, queue_endpoint, credential)
        }
        AccountConfig::ConnectionString { .. }
        | AccountConfig::SharedKey { .. }
        | AccountConfig::Sas { .. } => unreachable!("called for Entra kinds only"),
    };
    let (blob_endpoint, queue_endpoint) =
        endpoint_pair(alias, Some(account_name), blob_endpoint, queue_endpoint)?;
    Ok(Resolved {
        account_name: Some(account_name.clone()),
        blob_endpoint,
        queue_endpoint,
        auth: Auth::Token(credential),
    })
}

/// How an account names its blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Namespace {
    /// Names are flat; `/` is a character like any other (Blob Storage).
    Flat,
    /// A hierarchical namespace (ADLS Gen2): directories are entries, files carry POSIX
    /// ACLs, there are no blob index tags and listings come in another order.
    Hierarchical,
}

impl StorageAccount {
    /// Resolves an account's credential (reading env vars and files) and endpoints.
    pub fn from_config(
        alias: &str,
        config: &AccountConfig,
        network: NetworkOptions,
    ) -> Result<Self, AccountError> {
        let Resolved {
            account_name,
            blob_endpoint,
            queue_endpoint,
            auth,
        } = match config {
            AccountConfig::ConnectionString { .. } => resolve_connection_string(alias, config)?,
            AccountConfig::SharedKey { .. } => resolve_shared_key(alias, config)?,
            AccountConfig::Sas { .. } => resolve_sas(alias, config)?,
            AccountConfig::ManagedIdentity { .. }
            | AccountConfig::WorkloadIdentity { .. }
            | AccountConfig::ClientSecret { .. }
            | AccountConfig::DeveloperTools { .. } => resolve_entra(alias, config)?,
        };
        if matches!(auth, Auth::Token(_)) && blob_endpoint.scheme() != "https" {
            return Err(invalid(
                alias,
                format!(
                    "kind `{}` sends Entra tokens, which need an https endpoint (blob endpoint is {blob_endpoint})",
                    config.kind()
                ),
            ));
        }
        let blob_requests = BlobRequestCounter::new(&blob_endpoint);
        let options = client_options(
            alias,
            account_name.as_deref(),
            &auth,
            &network,
            &blob_requests,
        )?;
        Ok(Self {
            alias: alias.to_string(),
            account_name,
            blob_endpoint,
            queue_endpoint,
            auth,
            options,
            copy_source_auth: config.copy_source(),
            delegation_key: Default::default(),
            blob_requests,
            pipeline: Default::default(),
        })
    }

    /// An account authorised by a caller-supplied Entra credential (for embedding lakevault
    /// as a library, or a credential the config kinds do not cover). https only.
    pub fn with_token_credential(
        alias: &str,
        account_name: &str,
        blob_endpoint: Url,
        queue_endpoint: Url,
        credential: Arc<dyn TokenCredential>,
        network: NetworkOptions,
    ) -> Result<Self, AccountError> {
        if blob_endpoint.scheme() != "https" || queue_endpoint.scheme() != "https" {
            return Err(AccountError::Invalid {
                alias: alias.to_string(),
                message: "Entra tokens need https endpoints".into(),
            });
        }
        let auth = Auth::Token(credential);
        let blob_endpoint = normalise_endpoint(&blob_endpoint);
        let blob_requests = BlobRequestCounter::new(&blob_endpoint);
        let options = client_options(alias, Some(account_name), &auth, &network, &blob_requests)?;
        Ok(Self {
            alias: alias.to_string(),
            account_name: Some(account_name.to_string()),
            blob_endpoint,
            queue_endpoint: normalise_endpoint(&queue_endpoint),
            auth,
            options,
            copy_source_auth: CopySourceAuth::Bearer,
            delegation_key: Default::default(),
            blob_requests,
            pipeline: Default::default(),
        })
    }

    /// How copy sources in this account are authorised (Entra credentials only).
    pub fn with_copy_source_auth(mut self, mode: CopySourceAuth) -> Self {
        self.copy_source_auth = mode;
        self
    }

    /// A user delegation key valid for at least `needed` more, requested when there is none
    /// or the one held is about to expire. Keys last a day.
    async fn delegation_key(&self, needed: Duration) -> azure_core::Result<sas::DelegationKey> {
        let mut held = self.delegation_key.lock().await;
        let now = OffsetDateTime::now_utc();
        let margin = time::Duration::try_from(needed).unwrap_or(time::Duration::hours(2))
            + time::Duration::minutes(10);
        if let Some(key) = held.as_ref()
            && key.expiry - now > margin
        {
            return Ok(key.clone());
        }
        let info = azure_storage_blob::models::KeyInfo {
            start: Some(now - time::Duration::minutes(5)),
            expiry: Some(now + time::Duration::days(1)),
            ..Default::default()
        };
        let service = self.blob_service().map_err(|e| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Other, e.to_string())
        })?;
        let key = service
            .get_user_delegation_key(info.try_into()?, None)
            .await?
            .into_model()?;
        let missing = |what: &str| {
            azure_core::Error::with_message(
                azure_core::error::ErrorKind::DataConversion,
                format!(
                    "account `{}`: the user delegation key has no {what}",
                    self.alias
                ),
            )
        };
        let key = sas::DelegationKey {
            object_id: key.signed_oid.ok_or_else(|| missing("object id"))?,
            tenant_id: key.signed_tid.ok_or_else(|| missing("tenant id"))?,
            start: key.signed_start.ok_or_else(|| missing("start"))?,
            expiry: key.signed_expiry.ok_or_else(|| missing("expiry"))?,
            service: key.signed_service.unwrap_or_else(|| "b".into()),
            version: key.signed_version.ok_or_else(|| missing("version"))?,
            value: SecretString::new(azure_core::base64::encode(
                key.value.ok_or_else(|| missing("value"))?,
            )),
        };
        *held = Some(key.clone());
        Ok(key)
    }

    fn client_options(&self) -> ClientOptions {
        self.options.clone()
    }

    /// Requests this account's clients (and its clones') have sent to the blob endpoint,
    /// every try counted.
    pub fn blob_requests(&self) -> u64 {
        self.blob_requests.get()
    }

    fn token_credential(&self) -> Option<Arc<dyn TokenCredential>> {
        match &self.auth {
            Auth::Token(t) => Some(t.clone()),
            _ => None,
        }
    }

    /// Whether the account has a hierarchical namespace (ADLS Gen2), from Get Account
    /// Information (`x-ms-is-hns-enabled`; an account that does not say is flat).
    /// <https://learn.microsoft.com/rest/api/storageservices/get-account-information>
    pub async fn namespace(&self) -> azure_core::Result<Namespace> {
        use azure_storage_blob::models::BlobServiceClientGetAccountInfoResultHeaders;
        let service = self.blob_service().map_err(|e| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Other, e.to_string())
        })?;
        let response = service.get_account_info(None).await?;
        Ok(match response.is_hierarchical_namespace_enabled()? {
            Some(true) => Namespace::Hierarchical,
            _ => Namespace::Flat,
        })
    }

    pub fn blob_service(&self) -> Result<BlobServiceClient, AccountError> {
        let options = BlobServiceClientOptions {
            client_options: self.client_options(),
            ..Default::default()
        };
        BlobServiceClient::new(
            self.blob_endpoint.clone(),
            self.token_credential(),
            Some(options),
        )
        .map_err(|e| AccountError::Client {
            alias: self.alias.clone(),
            message: crate::error::describe(&e),
        })
    }

    /// The Data Lake Storage (dfs) endpoint of an account with a hierarchical namespace:
    /// `<account>.dfs.<suffix>` for a blob endpoint `<account>.blob.<suffix>`
    /// (<https://learn.microsoft.com/azure/storage/common/storage-account-overview#standard-endpoints>).
    /// An endpoint of another shape (the emulator's path style, a custom domain) is taken
    /// to serve both APIs.
    pub fn dfs_endpoint(&self) -> Url {
        let mut url = self.blob_endpoint.clone();
        if let Some(host) = url.host_str()
            && let Some((account, rest)) = host.split_once(".blob.")
        {
            let dfs = format!("{account}.dfs.{rest}");
            let _ = url.set_host(Some(&dfs));
        }
        url
    }

    /// The URL of a path on the dfs endpoint: segments percent-encoded one by one (the dfs
    /// endpoint reads `/` as the directory separator).
    pub fn dfs_url(&self, container: &str, path: &str) -> Url {
        let mut url = self.dfs_endpoint();
        let base = url.path().trim_end_matches('/').to_string();
        let encoded: Vec<String> = std::iter::once(container)
            .chain(path.split('/'))
            .map(|s| percent_encoding::utf8_percent_encode(s, BLOB_NAME_ENCODE).to_string())
            .collect();
        url.set_path(&format!("{base}/{}", encoded.join("/")));
        url
    }

    /// The pipeline for requests sent without an SDK client (listings read in one pass,
    /// the dfs endpoint's access control and directories), with the account's transport,
    /// retries and authorization. Made on first use, then shared by this account's clones.
    pub fn pipeline(&self) -> &azure_core::http::Pipeline {
        self.pipeline.get_or_init(|| self.raw_pipeline())
    }

    fn raw_pipeline(&self) -> azure_core::http::Pipeline {
        let mut per_try: Vec<Arc<dyn Policy>> = Vec::new();
        if let Some(credential) = self.token_credential() {
            per_try.push(Arc::new(
                azure_core::http::policies::auth::BearerTokenAuthorizationPolicy::new(
                    credential,
                    vec!["https://storage.azure.com/.default"],
                ),
            ));
        }
        azure_core::http::Pipeline::new(
            option_env!("CARGO_PKG_NAME"),
            option_env!("CARGO_PKG_VERSION"),
            self.client_options(),
            Vec::new(),
            per_try,
            None,
        )
    }

    pub fn container(&self, container: &str) -> Result<BlobContainerClient, AccountError> {
        Ok(self.blob_service()?.blob_container_client(container))
    }

    /// Creates a container unless it exists already.
    pub async fn ensure_container(&self, container: &str) -> Result<(), azure_core::Error> {
        let client = self.container(container).map_err(|e| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Other, e.to_string())
        })?;
        match client.create(None).await {
            Ok(_) => Ok(()),
            Err(e) if crate::error::error_code(&e) == Some("ContainerAlreadyExists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A client for one blob. Use this rather than `BlobServiceClient::blob_client`, whose
    /// URL building drops tabs and newlines from names and resolves `..` segments.
    pub fn blob(&self, container: &str, name: &str) -> Result<BlobClient, AccountError> {
        let client_error = |message: String| AccountError::Client {
            alias: self.alias.clone(),
            message,
        };
        let url = blob_url(&self.blob_endpoint, container, name)
            .map_err(|e| client_error(format!("blob URL for `{name}`: {e}")))?;
        let options = BlobClientOptions {
            client_options: self.client_options(),
            ..Default::default()
        };
        BlobClient::new(url, self.token_credential(), Some(options))
            .map_err(|e| client_error(crate::error::describe(&e)))
    }

    pub fn queue(&self, name: &str) -> Result<QueueClient, AccountError> {
        let options = QueueServiceClientOptions {
            client_options: self.client_options(),
            ..Default::default()
        };
        QueueServiceClient::new(
            self.queue_endpoint.clone(),
            self.token_credential(),
            Some(options),
        )
        .and_then(|s| s.queue_client(name))
        .map_err(|e| AccountError::Client {
            alias: self.alias.clone(),
            message: crate::error::describe(&e),
        })
    }

    /// The URL (and authorization) another account's blob service uses to read this blob
    /// during a server-side copy. Shared-key accounts get a short-lived read-only service
    /// SAS for exactly this blob; SAS accounts reuse the configured token; Entra accounts
    /// send a bearer token in `x-ms-copy-source-authorization`.
    pub async fn copy_source(
        &self,
        container: &str,
        blob: &str,
        snapshot: Option<&str>,
        valid_for: Duration,
    ) -> azure_core::Result<CopySource> {
        let mut url = blob_url(&self.blob_endpoint, container, blob).map_err(|e| {
            azure_core::Error::with_message(
                azure_core::error::ErrorKind::DataConversion,
                format!("blob URL: {e}"),
            )
        })?;
        if let Some(s) = snapshot {
            url.query_pairs_mut().append_pair("snapshot", s);
        }
        let mut url = url.to_string();
        let mut authorization = None;
        let append = |url: &mut String, q: &str| {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(q);
        };
        match &self.auth {
            Auth::SharedKey { key } => {
                let name = self.account_name.as_deref().unwrap_or_default();
                let expiry = OffsetDateTime::now_utc()
                    + time::Duration::try_from(valid_for).unwrap_or(time::Duration::hours(1));
                let resource = SasResource::blob_or_snapshot(container, blob, snapshot);
                let token = sas::service_sas(name, key, resource, "r", expiry)?;
                append(&mut url, &token);
            }
            Auth::Sas(source) => {
                let token = source.current().map_err(|e| {
                    azure_core::Error::with_message(
                        azure_core::error::ErrorKind::Credential,
                        format!("account `{}`: cannot read the SAS token: {e}", self.alias),
                    )
                })?;
                check_sas(&self.alias, &token)?;
                append(&mut url, token.expose());
            }
            Auth::Token(_) if self.copy_source_auth == CopySourceAuth::UserDelegationSas => {
                let key = self.delegation_key(valid_for).await?;
                let name = self.account_name.as_deref().unwrap_or_default();
                let expiry = OffsetDateTime::now_utc()
                    + time::Duration::try_from(valid_for).unwrap_or(time::Duration::hours(1));
                let resource = SasResource::blob_or_snapshot(container, blob, snapshot);
                let token = sas::user_delegation_sas(name, &key, resource, "r", expiry)?;
                append(&mut url, &token);
            }
            Auth::Token(cred) => {
                let token = cred.get_token(&[STORAGE_SCOPE], None).await?;
                authorization = Some(SecretString::new(format!(
                    "Bearer {}",
                    token.token.secret()
                )));
            }
        }
        Ok(CopySource { url, authorization })
    }
}

/// Transport, retry and authorisation policies for one account's clients.
fn client_options(
    alias: &str,
    account_name: Option<&str>,
    auth: &Auth,
    network: &NetworkOptions,
    blob_requests: &Arc<BlobRequestCounter>,
) -> Result<ClientOptions, AccountError> {
    let mut options = ClientOptions::default();
    let client_error = |message: String| AccountError::Client {
        alias: alias.to_string(),
        message,
    };
    // Bytes are bytes: a blob stored with `Content-Encoding: gzip` must come back as stored,
    // never transparently decompressed.
    let mut builder = reqwest::Client::builder()
        .no_gzip()
        .no_deflate()
        .no_brotli()
        .no_zstd()
        .connect_timeout(network.connect_timeout)
        .timeout(network.request_timeout);
    for path in &network.extra_ca_files {
        let pem = std::fs::read(path)
            .map_err(|e| client_error(format!("CA file {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| client_error(format!("CA file {} is not PEM: {e}", path.display())))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    let http = builder
        .build()
        .map_err(|e| client_error(format!("cannot build the HTTP client: {e}")))?;
    options.transport = Some(Transport::new(Arc::new(http)));
    options.retry = RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: time::Duration::milliseconds(200),
        max_retries: network.max_retries,
        max_total_elapsed: time::Duration::try_from(network.max_retry_elapsed)
            .unwrap_or(time::Duration::seconds(30)),
        max_delay: time::Duration::seconds(10),
    });
    options.per_call_policies.push(Arc::new(ExtraHeadersPolicy));
    options.per_try_policies.push(blob_requests.clone());
    // The SDK's spans (one per client method, one per HTTP try), when they go anywhere.
    options.instrumentation.tracer_provider = crate::telemetry::sdk_tracer_provider();
    if network.throttle.limit.is_some() || network.throttle.rate.is_some() {
        options
            .per_try_policies
            .push(Arc::new(network.throttle.clone()));
    }
    match auth {
        Auth::SharedKey { key } => options.per_try_policies.push(Arc::new(SharedKeyPolicy::new(
            account_name.unwrap_or_default(),
            key,
        ))),
        Auth::Sas(source) => options.per_try_policies.push(Arc::new(SasPolicy {
            alias: alias.to_string(),
            source: source.clone(),
        })),
        Auth::Token(_) => {}
    }
    Ok(options)
}

/// Characters of a blob name left as they are in its URL. Everything else is
/// percent-encoded, `/` included: the service accepts `%2F`, and it keeps names with
/// `..` segments, tabs or newlines addressable (a URL parser drops or resolves those).
const BLOB_NAME_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The URL of a blob, with the name encoded so that every legal name round-trips.
pub fn blob_url(endpoint: &Url, container: &str, name: &str) -> Result<Url, BlobUrlError> {
    // `.` and `..` are path steps to every URL parser and HTTP stack (percent-encoding them
    // does not help: `%2e%2e` is `..` too), so a request for them would reach the
    // container or the account instead. Refused before any request is made.
    if name == "." || name == ".." {
        return Err(BlobUrlError::DotSegment(name.to_string()));
    }
    let base = endpoint.as_str().trim_end_matches('/');
    let encode = |s: &str| percent_encoding::utf8_percent_encode(s, BLOB_NAME_ENCODE).to_string();
    Ok(Url::parse(&format!(
        "{base}/{}/{}",
        encode(container),
        encode(name)
    ))?)
}

#[derive(Debug, thiserror::Error)]
pub enum BlobUrlError {
    #[error(transparent)]
    Parse(#[from] url::ParseError),
    #[error(
        "a blob named `{0}` cannot be addressed by URL: it is a path step to every HTTP stack, so the request would reach another resource; rename it in the source"
    )]
    DotSegment(String),
}

fn check_sas(alias: &str, token: &SecretString) -> azure_core::Result<()> {
    sas::check_not_expired(token.expose(), OffsetDateTime::now_utc())
        .map(|expiry| crate::metrics::sas_expiry(alias, expiry))
        .map_err(|e| {
            azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                format!("account `{alias}`: {e}"),
            )
        })
}

/// Appends the account's SAS token to every request, re-reading a token file when it
/// changes, and refusing to send once the token has expired (a credential error that
/// stops work without dropping it).
#[derive(Debug)]
struct SasPolicy {
    alias: String,
    source: Arc<SasSource>,
}

#[async_trait]
impl Policy for SasPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let token = self.source.current().map_err(|e| {
            azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                format!("account `{}`: cannot read the SAS token: {e}", self.alias),
            )
        })?;
        check_sas(&self.alias, &token)?;
        let url = request.url_mut();
        // Each retry passes through here again: add the token only once.
        if !url.query_pairs().any(|(k, _)| k == "sig") {
            let merged = match url.query() {
                Some(q) if !q.is_empty() => format!("{q}&{}", token.expose()),
                _ => token.expose().to_string(),
            };
            url.set_query(Some(&merged));
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(toml_text: &str) -> Result<StorageAccount, AccountError> {
        let config: AccountConfig = toml::from_str(toml_text).expect("account config parses");
        StorageAccount::from_config("acct", &config, NetworkOptions::default())
    }

    #[test]
    fn entra_kinds_build_for_https_endpoints() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("federated-token");
        std::fs::write(&token_file, "eyJ.fake.jwt").unwrap();
        let workload = format!(
            "kind = \"workload_identity\"\naccount_name = \"lake\"\ntenant_id = \"00000000-0000-0000-0000-000000000002\"\nclient_id = \"app\"\ntoken_file = \"{}\"",
            token_file.display()
        );
        let ok = [
            "kind = \"managed_identity\"\naccount_name = \"lake\"",
            "kind = \"managed_identity\"\naccount_name = \"lake\"\nclient_id = \"00000000-0000-0000-0000-000000000001\"",
            "kind = \"client_secret\"\naccount_name = \"lake\"\ntenant_id = \"00000000-0000-0000-0000-000000000002\"\nclient_id = \"app\"\nclient_secret = \"s3cret\"",
            workload.as_str(),
            "kind = \"developer_tools\"\naccount_name = \"lake\"",
        ];
        for text in ok {
            let a = account(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                a.blob_endpoint.as_str(),
                "https://lake.blob.core.windows.net/"
            );
            assert_eq!(
                a.queue_endpoint.as_str(),
                "https://lake.queue.core.windows.net/"
            );
            assert!(a.blob("c", "a/b").is_ok());
        }
    }

    #[test]
    fn a_missing_federated_token_file_is_named() {
        let e = account("kind = \"workload_identity\"\naccount_name = \"lake\"\ntenant_id = \"00000000-0000-0000-0000-000000000002\"\nclient_id = \"app\"\ntoken_file = \"/nonexistent/lakevault-token\"")
            .expect_err("missing file refused");
        assert!(
            e.to_string().contains("/nonexistent/lakevault-token"),
            "{e}"
        );
    }

    #[test]
    fn entra_tokens_are_refused_over_http() {
        let e = account("kind = \"managed_identity\"\naccount_name = \"lake\"\nblob_endpoint = \"http://127.0.0.1:10000/lake\"")
            .expect_err("http refused");
        assert!(e.to_string().contains("https"), "{e}");
    }

    #[test]
    fn missing_secret_sources_name_the_field() {
        let e = account("kind = \"client_secret\"\naccount_name = \"lake\"\ntenant_id = \"t\"\nclient_id = \"app\"\nclient_secret_env = \"LAKEVAULT_TEST_NOT_SET\"")
            .expect_err("unset env refused");
        assert!(e.to_string().contains("LAKEVAULT_TEST_NOT_SET"), "{e}");
        let e = account(
            "kind = \"shared_key\"\naccount_name = \"lake\"\naccount_key = \"not base64!\"",
        )
        .expect_err("bad key refused");
        assert!(e.to_string().contains("base64"), "{e}");
    }

    #[test]
    fn blob_urls_keep_every_character_of_a_name() {
        let endpoint = Url::parse("http://127.0.0.1:10000/devstoreaccount1").unwrap();
        for name in [
            "a/b c",
            "tab\there",
            "dots/../x",
            "100%",
            "q?#&+",
            "日本/😀",
        ] {
            let url = blob_url(&endpoint, "c", name).unwrap();
            let encoded = url.path().trim_start_matches("/devstoreaccount1/c/");
            let decoded = percent_encoding::percent_decode_str(encoded)
                .decode_utf8()
                .unwrap();
            assert_eq!(decoded, name, "{url}");
            assert!(url.query().is_none());
        }
    }

    #[test]
    fn dot_names_are_refused_rather_than_resolved_to_another_resource() {
        let endpoint = Url::parse("http://127.0.0.1:10000/devstoreaccount1").unwrap();
        // What a URL parser makes of them: the container itself.
        assert_eq!(
            Url::parse("http://127.0.0.1:10000/devstoreaccount1/c/..")
                .unwrap()
                .path(),
            "/devstoreaccount1/"
        );
        for name in [".", ".."] {
            let e = blob_url(&endpoint, "c", name).expect_err(name);
            assert!(e.to_string().contains("cannot be addressed"), "{e}");
        }
        // Within a longer name the `/` is encoded, so the steps are plain characters.
        for name in ["./x", "x/..", "...", "a/./b"] {
            let url = blob_url(&endpoint, "c", name).unwrap();
            assert!(url.path().starts_with("/devstoreaccount1/c/"), "{url}");
        }
    }
}
