//! Incremental-mode watermarks: per source container, the time a successful scan started.
//! Kept as small JSON blobs in the backup account, in the `lakevault-state` container, so
//! they live with the backup they describe and need no other store.

use lakevault_common::ledger;
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

/// The stored watermark, if any. One that cannot be read is treated as absent: the
/// container then gets a full scan, which is always safe.
pub async fn read(
    state: &StorageAccount,
    source_alias: &str,
    container: &str,
) -> azure_core::Result<Option<(Watermark, OffsetDateTime)>> {
    let mark = match ledger::get_json::<Watermark>(state, &blob_name(source_alias, container)).await
    {
        Ok(Some(mark)) => mark,
        Ok(None) => return Ok(None),
        Err(e) if e.http_status().is_none() => {
            tracing::warn!(
                container,
                "unreadable watermark ignored; running a full scan"
            );
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    Ok(lakevault_common::record::parse_rfc3339(&mark.scan_started_at).map(|t| (mark, t)))
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
    let mark = Watermark {
        v: 1,
        scan_started_at: rfc3339(scan_started_at),
        job: job.to_string(),
        mode: mode.to_string(),
    };
    ledger::put_json(state, &blob_name(source_alias, container), &mark).await
}
