//! Azure Storage connection strings, including the emulator shorthand
//! `UseDevelopmentStorage=true`.
//! <https://learn.microsoft.com/azure/storage/common/storage-configure-connection-string>

use crate::secret::SecretString;
use url::Url;

/// The well-known account of the storage emulator (published by Microsoft, not a secret).
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
pub const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// What a connection string resolves to.
#[derive(Debug, Clone)]
pub struct ParsedConnectionString {
    pub account_name: Option<String>,
    pub account_key: Option<SecretString>,
    pub sas_token: Option<SecretString>,
    pub blob_endpoint: Option<Url>,
    pub queue_endpoint: Option<Url>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnectionStringError {
    #[error("connection string part `{0}` is not of the form Key=Value")]
    Malformed(String),
    #[error("connection string has an unknown key `{0}`")]
    UnknownKey(String),
    #[error(
        "this is not a connection string (a part of {0} characters, not shown, has no key name); an account key goes in `account_key` with kind = \"shared_key\", a SAS in `sas_token` with kind = \"sas\""
    )]
    NotAConnectionString(usize),
    #[error("connection string key `{key}` has an invalid URL: {reason}")]
    BadUrl { key: String, reason: String },
    #[error(
        "connection string names no account: give AccountName (with AccountKey) or explicit BlobEndpoint/QueueEndpoint"
    )]
    NoAccount,
    #[error("connection string gives no credential: add AccountKey or SharedAccessSignature")]
    NoCredential,
}

pub fn parse(text: &str) -> Result<ParsedConnectionString, ConnectionStringError> {
    let mut protocol = "https".to_string();
    let mut suffix = "core.windows.net".to_string();
    let mut out = ParsedConnectionString {
        account_name: None,
        account_key: None,
        sas_token: None,
        blob_endpoint: None,
        queue_endpoint: None,
    };
    let mut dev_storage = false;
    let mut dev_proxy: Option<String> = None;
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        // Values (keys, SAS tokens) may themselves contain '=': split on the first one only.
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| ConnectionStringError::Malformed(key_only(part)))?;
        let url = |v: &str| {
            Url::parse(v.trim_end_matches('/')).map_err(|e| ConnectionStringError::BadUrl {
                key: key.to_string(),
                reason: e.to_string(),
            })
        };
        match key.to_ascii_lowercase().as_str() {
            "usedevelopmentstorage" => dev_storage = value.eq_ignore_ascii_case("true"),
            "developmentstorageproxyuri" => dev_proxy = Some(value.trim_end_matches('/').into()),
            "defaultendpointsprotocol" => protocol = value.to_ascii_lowercase(),
            "accountname" => out.account_name = Some(value.to_string()),
            "accountkey" => out.account_key = Some(SecretString::new(value)),
            "sharedaccesssignature" => {
                out.sas_token = Some(SecretString::new(value.trim_start_matches('?')))
            }
            "endpointsuffix" => suffix = value.to_string(),
            "blobendpoint" => out.blob_endpoint = Some(url(value)?),
            "queueendpoint" => out.queue_endpoint = Some(url(value)?),
            // Other services of the account are irrelevant to lakevault but legal.
            "tableendpoint" | "fileendpoint" | "dfsendpoint" => {}
            _ => return Err(unknown_key(key)),
        }
    }
    if dev_storage {
        let host = dev_proxy.unwrap_or_else(|| "http://127.0.0.1".to_string());
        let acct = EMULATOR_ACCOUNT;
        out.account_name.get_or_insert_with(|| acct.to_string());
        out.account_key
            .get_or_insert_with(|| SecretString::new(EMULATOR_KEY));
        if out.blob_endpoint.is_none() {
            out.blob_endpoint = Some(built_url(
                "DevelopmentStorageProxyUri",
                &format!("{host}:10000/{acct}"),
            )?);
        }
        if out.queue_endpoint.is_none() {
            out.queue_endpoint = Some(built_url(
                "DevelopmentStorageProxyUri",
                &format!("{host}:10001/{acct}"),
            )?);
        }
    }
    if let Some(name) = &out.account_name {
        if out.blob_endpoint.is_none() {
            out.blob_endpoint = Some(built_url(
                "AccountName",
                &format!("{protocol}://{name}.blob.{suffix}"),
            )?);
        }
        if out.queue_endpoint.is_none() {
            out.queue_endpoint = Some(built_url(
                "AccountName",
                &format!("{protocol}://{name}.queue.{suffix}"),
            )?);
        }
    }
    if out.blob_endpoint.is_none() && out.queue_endpoint.is_none() {
        return Err(ConnectionStringError::NoAccount);
    }
    if out.account_key.is_none() && out.sas_token.is_none() {
        return Err(ConnectionStringError::NoCredential);
    }
    Ok(out)
}

/// An unknown key, named only if it looks like a key name: a pasted account key or SAS
/// (base64, with `=` padding) would otherwise be echoed.
fn unknown_key(key: &str) -> ConnectionStringError {
    let name_like = key.len() <= 40 && key.chars().all(|c| c.is_ascii_alphabetic());
    if name_like {
        ConnectionStringError::UnknownKey(key.to_string())
    } else {
        ConnectionStringError::NotAConnectionString(key.chars().count())
    }
}

fn key_only(part: &str) -> String {
    // Never echo a whole part back: it may be a pasted key.
    part.chars().take(24).collect::<String>() + if part.len() > 24 { "…" } else { "" }
}

fn built_url(key: &str, s: &str) -> Result<Url, ConnectionStringError> {
    Url::parse(s).map_err(|e| ConnectionStringError::BadUrl {
        key: key.to_string(),
        reason: format!("{s}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_storage() {
        let p = parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(p.account_name.as_deref(), Some(EMULATOR_ACCOUNT));
        assert_eq!(
            p.blob_endpoint.unwrap().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(
            p.queue_endpoint.unwrap().as_str(),
            "http://127.0.0.1:10001/devstoreaccount1"
        );
        assert_eq!(p.account_key.unwrap().expose(), EMULATOR_KEY);
    }

    #[test]
    fn explicit_endpoints_and_key_with_equals() {
        let p = parse(
            "DefaultEndpointsProtocol=http;AccountName=backupaccount;AccountKey=YWJj==;\
             BlobEndpoint=http://127.0.0.1:4100/backupaccount;QueueEndpoint=http://127.0.0.1:4101/backupaccount;",
        )
        .unwrap();
        assert_eq!(p.account_key.unwrap().expose(), "YWJj==");
        assert_eq!(
            p.blob_endpoint.unwrap().as_str(),
            "http://127.0.0.1:4100/backupaccount"
        );
        assert_eq!(p.queue_endpoint.unwrap().port(), Some(4101));
    }

    #[test]
    fn public_cloud_defaults() {
        let p = parse("AccountName=lake;AccountKey=a2V5").unwrap();
        assert_eq!(
            p.blob_endpoint.unwrap().as_str(),
            "https://lake.blob.core.windows.net/"
        );
    }

    #[test]
    fn sas_only() {
        let p = parse(
            "BlobEndpoint=https://x.blob.core.windows.net;SharedAccessSignature=?sv=1&sig=abc",
        )
        .unwrap();
        assert_eq!(p.sas_token.unwrap().expose(), "sv=1&sig=abc");
    }

    #[test]
    fn a_pasted_key_is_never_echoed() {
        // An account key pasted where a connection string belongs: base64 ending in `=`.
        let key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
        let err = parse(key).unwrap_err().to_string();
        assert!(!err.contains(&key[..8]), "{err}");
        assert!(
            err.contains("account_key"),
            "the error says where a key goes: {err}"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            parse("AccountName=a;Bogus=1;AccountKey=k").unwrap_err(),
            ConnectionStringError::UnknownKey("Bogus".into())
        );
        assert_eq!(
            parse("AccountName=a").unwrap_err(),
            ConnectionStringError::NoCredential
        );
        assert!(matches!(
            parse("nonsense").unwrap_err(),
            ConnectionStringError::Malformed(_)
        ));
        assert_eq!(
            parse("AccountKey=k").unwrap_err(),
            ConnectionStringError::NoAccount
        );
    }
}
