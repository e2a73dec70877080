//! Shared access signatures: generating short-lived service and account SAS tokens from an
//! account key, user delegation SAS tokens from a key obtained with an Entra credential,
//! and reading the expiry of a token given by an operator.
//! <https://learn.microsoft.com/rest/api/storageservices/create-service-sas>
//! <https://learn.microsoft.com/rest/api/storageservices/create-user-delegation-sas>
//! <https://learn.microsoft.com/rest/api/storageservices/create-account-sas>

use crate::secret::SecretString;
use azure_core::credentials::Secret;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// The service version the generated tokens are signed for (string-to-sign format of
/// 2020-12-06 and later).
pub const SAS_VERSION: &str = "2022-11-02";

/// What a service SAS grants access to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SasResource<'a> {
    Container {
        container: &'a str,
    },
    Blob {
        container: &'a str,
        blob: &'a str,
    },
    /// A snapshot of a blob (`sr=bs`), identified by its snapshot time.
    BlobSnapshot {
        container: &'a str,
        blob: &'a str,
        snapshot: &'a str,
    },
}

impl<'a> SasResource<'a> {
    /// The canonical resource (with the *decoded* blob name), `sr`, and the snapshot time
    /// (empty when none) that a signature covers.
    fn signed(self, account: &str) -> (String, &'static str, &'a str) {
        match self {
            SasResource::Container { container } => {
                (format!("/blob/{account}/{container}"), "c", "")
            }
            SasResource::Blob { container, blob } => {
                (format!("/blob/{account}/{container}/{blob}"), "b", "")
            }
            SasResource::BlobSnapshot {
                container,
                blob,
                snapshot,
            } => (
                format!("/blob/{account}/{container}/{blob}"),
                "bs",
                snapshot,
            ),
        }
    }

    /// A blob, or one of its snapshots.
    pub fn blob_or_snapshot(container: &'a str, blob: &'a str, snapshot: Option<&'a str>) -> Self {
        match snapshot {
            Some(snapshot) => SasResource::BlobSnapshot {
                container,
                blob,
                snapshot,
            },
            None => SasResource::Blob { container, blob },
        }
    }
}

/// Formats a time the way SAS fields want it: ISO 8601 UTC to the second.
fn sas_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// A service SAS for one container, blob or blob snapshot. `permissions` in the canonical
/// order (e.g. `r`, `rl`, `racwd`). The start is backdated a few minutes for clock skew.
pub fn service_sas(
    account: &str,
    key: &SecretString,
    resource: SasResource<'_>,
    permissions: &str,
    expiry: OffsetDateTime,
) -> azure_core::Result<String> {
    let start = sas_time(OffsetDateTime::now_utc() - Duration::minutes(5));
    let expiry = sas_time(expiry);
    let (canonical, sr, snapshot) = resource.signed(account);
    let to_sign = [
        permissions,
        &start,
        &expiry,
        &canonical,
        "", // signed identifier
        "", // signed IP
        "", // signed protocol: any, so the emulator's http works too
        SAS_VERSION,
        sr,
        snapshot,
        "", // encryption scope
        "", // rscc
        "", // rscd
        "", // rsce
        "", // rscl
        "", // rsct
    ]
    .join("\n");
    let sig = crate::shared_key::sign(&Secret::new(key.expose().to_string()), &to_sign)?;
    Ok(format!(
        "sv={SAS_VERSION}&sr={sr}&sp={}&st={}&se={}&sig={}",
        enc(permissions),
        enc(&start),
        enc(&expiry),
        enc(&sig)
    ))
}

/// A user delegation key (from Get User Delegation Key, requested with an Entra token):
/// signs SAS tokens on behalf of that identity until `expiry`.
#[derive(Clone)]
pub struct DelegationKey {
    pub object_id: String,
    pub tenant_id: String,
    pub start: OffsetDateTime,
    pub expiry: OffsetDateTime,
    pub service: String,
    pub version: String,
    /// The key, base64.
    pub value: SecretString,
}

impl std::fmt::Debug for DelegationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationKey")
            .field("object_id", &self.object_id)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

/// A user delegation SAS for one blob or snapshot (string-to-sign of 2020-12-06 and later).
/// The expiry is capped at the key's.
pub fn user_delegation_sas(
    account: &str,
    key: &DelegationKey,
    resource: SasResource<'_>,
    permissions: &str,
    expiry: OffsetDateTime,
) -> azure_core::Result<String> {
    let start = sas_time(OffsetDateTime::now_utc() - Duration::minutes(5));
    let expiry = sas_time(expiry.min(key.expiry));
    let (canonical, sr, snapshot) = resource.signed(account);
    let (key_start, key_expiry) = (sas_time(key.start), sas_time(key.expiry));
    let to_sign = [
        permissions,
        &start,
        &expiry,
        &canonical,
        &key.object_id,
        &key.tenant_id,
        &key_start,
        &key_expiry,
        &key.service,
        &key.version,
        "", // authorized user object id
        "", // unauthorized user object id
        "", // correlation id
        "", // signed IP
        "", // signed protocol
        SAS_VERSION,
        sr,
        snapshot,
        "", // encryption scope
        "", // rscc
        "", // rscd
        "", // rsce
        "", // rscl
        "", // rsct
    ]
    .join("\n");
    let sig = crate::shared_key::sign(&Secret::new(key.value.expose().to_string()), &to_sign)?;
    Ok(format!(
        "sv={SAS_VERSION}&sr={sr}&sp={}&st={}&se={}&skoid={}&sktid={}&skt={}&ske={}&sks={}&skv={}&sig={}",
        enc(permissions),
        enc(&start),
        enc(&expiry),
        enc(&key.object_id),
        enc(&key.tenant_id),
        enc(&key_start),
        enc(&key_expiry),
        enc(&key.service),
        enc(&key.version),
        enc(&sig)
    ))
}

/// An account SAS for the blob and queue services.
pub fn account_sas(
    account: &str,
    key: &SecretString,
    permissions: &str,
    expiry: OffsetDateTime,
) -> azure_core::Result<String> {
    let start = sas_time(OffsetDateTime::now_utc() - Duration::minutes(5));
    let expiry = sas_time(expiry);
    let services = "bq";
    let resource_types = "sco";
    let to_sign = format!(
        "{account}\n{permissions}\n{services}\n{resource_types}\n{start}\n{expiry}\n\n\n{SAS_VERSION}\n\n"
    );
    let sig = crate::shared_key::sign(&Secret::new(key.expose().to_string()), &to_sign)?;
    Ok(format!(
        "sv={SAS_VERSION}&ss={services}&srt={resource_types}&sp={}&st={}&se={}&sig={}",
        enc(permissions),
        enc(&start),
        enc(&expiry),
        enc(&sig)
    ))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SasError {
    #[error("the SAS token has no `se=` (expiry) field; is it a complete token?")]
    NoExpiry,
    #[error("the SAS token's expiry `se={0}` is not a valid date")]
    BadExpiry(String),
    #[error(
        "the SAS token expired at {0}; issue a new token (az storage account generate-sas / container generate-sas) and update the config"
    )]
    Expired(String),
}

/// The expiry (`se=`) of a SAS token.
pub fn sas_expiry(token: &str) -> Result<OffsetDateTime, SasError> {
    let se = token
        .trim_start_matches('?')
        .split('&')
        .find_map(|kv| kv.strip_prefix("se="))
        .ok_or(SasError::NoExpiry)?;
    let decoded = percent_encoding::percent_decode_str(se)
        .decode_utf8_lossy()
        .into_owned();
    if let Ok(t) = crate::record::read_rfc3339(&decoded) {
        return Ok(t);
    }
    // Date-only and minute-precision forms are also accepted by the service.
    let fmt_min = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]Z");
    if let Ok(t) = time::PrimitiveDateTime::parse(&decoded, &fmt_min) {
        return Ok(t.assume_utc());
    }
    let fmt_day = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(&decoded, &fmt_day) {
        return Ok(d.midnight().assume_utc());
    }
    Err(SasError::BadExpiry(decoded))
}

/// Refuses a token that has expired (or expires within `margin`).
pub fn check_not_expired(token: &str, now: OffsetDateTime) -> Result<OffsetDateTime, SasError> {
    let expiry = sas_expiry(token)?;
    if expiry <= now {
        return Err(SasError::Expired(
            expiry
                .format(&Rfc3339)
                .unwrap_or_else(|_| expiry.to_string()),
        ));
    }
    Ok(expiry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_expiry_forms() {
        assert_eq!(
            sas_expiry("sv=2022-11-02&se=2030-01-02T03%3A04%3A05Z&sig=x").unwrap(),
            time::macros::datetime!(2030-01-02 03:04:05 UTC)
        );
        assert_eq!(
            sas_expiry("?se=2030-01-02&sp=r").unwrap(),
            time::macros::datetime!(2030-01-02 00:00:00 UTC)
        );
        assert_eq!(
            sas_expiry("se=2030-01-02T03:04Z").unwrap(),
            time::macros::datetime!(2030-01-02 03:04:00 UTC)
        );
        assert_eq!(sas_expiry("sp=r&sig=x"), Err(SasError::NoExpiry));
        assert!(matches!(
            sas_expiry("se=tomorrow"),
            Err(SasError::BadExpiry(_))
        ));
    }

    #[test]
    fn refuses_expired() {
        let now = time::macros::datetime!(2026-11-22 00:00:00 UTC);
        let e = check_not_expired("se=2020-01-01T00:00:00Z", now).unwrap_err();
        assert!(e.to_string().contains("expired at 2020-01-01"), "{e}");
        assert!(check_not_expired("se=2030-01-01T00:00:00Z", now).is_ok());
    }

    #[test]
    fn generated_token_has_expected_fields() {
        let key = SecretString::new(crate::connection_string::EMULATOR_KEY);
        let expiry = time::macros::datetime!(2030-01-01 00:00:00 UTC);
        let t = service_sas(
            "acct",
            &key,
            SasResource::Blob {
                container: "c",
                blob: "a b/ü.txt",
            },
            "r",
            expiry,
        )
        .unwrap();
        assert!(t.starts_with("sv=2022-11-02&sr=b&sp=r&st="), "{t}");
        assert_eq!(sas_expiry(&t).unwrap(), expiry);
        let a = account_sas("acct", &key, "rl", expiry).unwrap();
        assert!(a.contains("ss=bq&srt=sco&sp=rl"), "{a}");
    }
}
