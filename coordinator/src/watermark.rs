//! Incremental-mode watermarks: per source container, the time a successful scan started.
//! Kept as small JSON blobs in the backup account, in the `lakevault-state` container, so
//! they live with the backup they describe and need no other store.

use azure_core::http::RequestContent;
use futures::StreamExt;
use lakevault_common::record::rfc3339;
use lakevault_common::storage::StorageAccount;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use lakevault_common::ledger::STATE_CONTAINER;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    pub v: u32,
    /// Start of the last successful scan of the container (RFC 3339). The next incremental
    /// scan selects blobs modified after this minus the safety margin.
    pub scan_started_at: String,
    pub job: String,
    pub mode: String,
}

fn blob_name(source_alias: &str, container: &str) -> String {
    format!("watermarks/{source_alias}/{container}.json")
}

/// The stored watermark, if any.
pub async fn read(
    state: &StorageAccount,
    source_alias: &str,
    container: &str,
) -> azure_core::Result<Option<(Watermark, OffsetDateTime)>> {
    let client = state
        .blob(STATE_CONTAINER, &blob_name(source_alias, container))
        .map_err(|e| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Other, e.to_string())
        })?;
    let result = match client.download(None).await {
        Ok(r) => r,
        Err(e) if e.http_status().map(u16::from) == Some(404) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut body = result.body;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    // A watermark that cannot be read is treated as absent: the container gets a full
    // scan, which is always safe.
    let Ok(mark) = serde_json::from_slice::<Watermark>(&bytes) else {
        tracing::warn!(
            container,
            "unreadable watermark ignored; running a full scan"
        );
        return Ok(None);
    };
    match OffsetDateTime::parse(
        &mark.scan_started_at,
        &time::format_description::well_known::Rfc3339,
    ) {
        Ok(t) => Ok(Some((mark, t))),
        Err(_) => Ok(None),
    }
}

/// Stores the watermark after a container was planned completely.
pub async fn write(
    state: &StorageAccount,
    source_alias: &str,
    container: &str,
    scan_started_at: OffsetDateTime,
    job: &str,
    mode: &str,
) -> azure_core::Result<()> {
    state.ensure_container(STATE_CONTAINER).await?;
    let mark = Watermark {
        v: 1,
        scan_started_at: rfc3339(scan_started_at),
        job: job.to_string(),
        mode: mode.to_string(),
    };
    let body = serde_json::to_vec(&mark).map_err(|e| {
        azure_core::Error::with_message(azure_core::error::ErrorKind::DataConversion, e.to_string())
    })?;
    state
        .blob(STATE_CONTAINER, &blob_name(source_alias, container))
        .map_err(|e| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Other, e.to_string())
        })?
        .upload(RequestContent::from(body), None)
        .await
        .map(|_| ())
}
