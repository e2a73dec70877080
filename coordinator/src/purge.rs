//! `purge`: retention for the backup, applied to every selected container (the rules and
//! the deletes are [`lakevault_plan::purge`]).

use crate::backup::{BackupError, FailedContainer, SkippedContainer, selected_containers};
use lakevault_common::config::Config;
use lakevault_common::storage::StorageAccount;
use lakevault_common::store::BlobStore;
use lakevault_plan::purge::purge_container;
pub use lakevault_plan::purge::{ContainerPurge, PurgeOptions};
use serde::Serialize;
use time::OffsetDateTime;

#[derive(Debug, Clone, Default, Serialize)]
pub struct PurgeReport {
    pub dry_run: bool,
    pub containers: Vec<ContainerPurge>,
    pub skipped: Vec<SkippedContainer>,
    pub failed: Vec<FailedContainer>,
}

/// Parses `30d`, `12h`, `45m`, `90s` (or a plain number of seconds).
pub fn parse_window(text: &str) -> Result<time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: i64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30d, 12h, 45m or 90s"))?;
    match unit {
        "d" => Ok(time::Duration::days(n)),
        "h" => Ok(time::Duration::hours(n)),
        "m" => Ok(time::Duration::minutes(n)),
        "s" => Ok(time::Duration::seconds(n)),
        _ => Err(format!(
            "`{text}`: unknown unit `{unit}` (use d, h, m or s)"
        )),
    }
}

/// Applies retention to every selected container's backup.
pub async fn run(
    config: &Config,
    source: &StorageAccount,
    backup: &dyn BlobStore,
    options: &PurgeOptions,
) -> Result<PurgeReport, BackupError> {
    let mut report = PurgeReport {
        dry_run: options.dry_run,
        ..Default::default()
    };
    let containers =
        selected_containers(config, source, &mut report.skipped, &mut report.failed).await?;
    let now = OffsetDateTime::now_utc();
    for (_, dest_name) in containers {
        match purge_container(backup, &dest_name, options, now).await {
            Ok(c) => report.containers.push(c),
            Err(reason) => report.failed.push(FailedContainer {
                container: dest_name,
                reason,
            }),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_with_units() {
        assert_eq!(parse_window("30d"), Ok(time::Duration::days(30)));
        assert_eq!(parse_window("12h"), Ok(time::Duration::hours(12)));
        assert_eq!(parse_window("45m"), Ok(time::Duration::minutes(45)));
        assert_eq!(parse_window("90"), Ok(time::Duration::seconds(90)));
        assert!(parse_window("3w").is_err());
        assert!(parse_window("d").is_err());
    }
}
