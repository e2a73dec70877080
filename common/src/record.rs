//! lakevault's own bookkeeping on a backup blob: which source version it holds.
//!
//! The record lives in one blob index tag (`lakevault`), not in metadata. A server-side
//! copy carries the source's user metadata byte for byte, including the case of its keys;
//! writing our own keys into metadata would mean re-sending the user's metadata through an
//! HTTP stack that lowercases header names. Tags are set in the same copy request
//! (`x-ms-tags`), come back in the backup listing (`include=tags`), and leave metadata
//! untouched. Index tags allow 10 per blob: the record takes one, user tags keep nine. A
//! source with a hierarchical namespace has no index tags; its paths' access control takes
//! the nine (`crate::access`).

use crate::access::{PathAccess, is_access_tag};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::collections::BTreeMap;

/// The index tag key holding the record.
pub const RECORD_TAG: &str = "lakevault";
/// The service's limit on index tags per blob.
pub const MAX_TAGS: usize = 10;

/// What lakevault knows about the source version a backup blob holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRecord {
    /// Source ETag, without quotes.
    pub source_etag: String,
    /// Source Last-Modified, RFC 3339.
    pub source_last_modified: String,
    /// When the backup copy was made, RFC 3339.
    pub backed_up_at: String,
    pub job: String,
    /// Set when the source blob was seen deleted (RFC 3339): the backup blob is a
    /// tombstone, kept, never deleted by a backup run.
    pub deleted_at: Option<String>,
    /// Written without history snapshots (`run --no-history`): the versions this copy
    /// replaced live in the backup account's blob versions, which restore does not read.
    pub history_in_versions: bool,
}

/// Times in records and work items: RFC 3339, UTC.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Reads a time written by [`rfc3339`] (or by the service, or an operator: snapshot ids,
/// listings and `--as-of` are RFC 3339 too). The one place times are parsed.
pub fn read_rfc3339(text: &str) -> Result<time::OffsetDateTime, time::error::Parse> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
}

/// [`read_rfc3339`], `None` if the text is not a time.
pub fn parse_rfc3339(text: &str) -> Option<time::OffsetDateTime> {
    read_rfc3339(text).ok()
}

/// Longest job id accepted.
pub const MAX_JOB_ID: usize = 64;

/// A job id is written into every backup blob's record tag and names the job's ledger
/// documents, so it keeps to characters both allow: 1 to 64 of `A-Z a-z 0-9 . _ : -`.
pub fn validate_job_id(id: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:-".contains(c);
    if id.is_empty() || id.len() > MAX_JOB_ID || !id.chars().all(allowed) {
        return Err(format!(
            "`{id}` is not a job id: use 1 to {MAX_JOB_ID} of A-Z a-z 0-9 . _ : - (no spaces)"
        ));
    }
    Ok(id.to_string())
}

/// Strips the quotes that response headers (but not listings) put around ETags.
pub fn normalise_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_string()
}

impl BackupRecord {
    /// Tag values allow letters, digits, space and `+ - . / : = _`: every field here fits.
    pub fn to_tag_value(&self) -> String {
        let mut value = format!(
            "v1 etag={} mtime={} at={} job={}",
            self.source_etag, self.source_last_modified, self.backed_up_at, self.job
        );
        if self.history_in_versions {
            value.push_str(" history=versions");
        }
        if let Some(deleted) = &self.deleted_at {
            value.push_str(&format!(" deleted={deleted}"));
        }
        value
    }

    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split(' ');
        if parts.next()? != "v1" {
            return None;
        }
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        // A token without `=` is the tail of a value with a space in it (a job id from a
        // version that did not check them): it is skipped, so the fields that matter
        // (ETag, times, deletion) still read.
        for (k, v) in parts.filter_map(|p| p.split_once('=')) {
            fields.insert(k, v);
        }
        Some(Self {
            source_etag: fields.get("etag")?.to_string(),
            source_last_modified: fields.get("mtime")?.to_string(),
            backed_up_at: fields.get("at")?.to_string(),
            job: fields.get("job").copied().unwrap_or_default().to_string(),
            deleted_at: fields.get("deleted").map(|d| d.to_string()),
            history_in_versions: fields.get("history") == Some(&"versions"),
        })
    }

    /// Finds and parses the record among a blob's tags.
    pub fn from_tags(tags: &BTreeMap<String, String>) -> Option<Self> {
        tags.get(RECORD_TAG).and_then(|v| Self::parse(v))
    }
}

/// Characters left as they are in an `x-ms-tags` header value (everything else is
/// percent-encoded, as a URL query would be).
const TAG_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the source blob has {0} index tags; with lakevault's record that exceeds the limit of {MAX_TAGS}"
)]
pub struct TooManyTags(pub usize);

/// One key or value of an `x-ms-tags` header, percent-encoded.
pub fn encode_tag_part(part: &str) -> String {
    utf8_percent_encode(part, TAG_ENCODE).to_string()
}

/// The complete tag set of a backup blob: the user's tags, lakevault's record and the
/// source path's access control (HNS sources, which have no tags of their own, so it has
/// the tags the record leaves), or [`TooManyTags`] when the user's leave no room for the
/// record.
pub fn tag_set(
    user_tags: &BTreeMap<String, String>,
    record: &BackupRecord,
    access: Option<&PathAccess>,
) -> Result<BTreeMap<String, String>, TooManyTags> {
    let mut tags = self::user_tags(user_tags);
    if tags.len() + 1 > MAX_TAGS {
        return Err(TooManyTags(tags.len()));
    }
    tags.insert(RECORD_TAG.to_string(), record.to_tag_value());
    if let Some(access) = access {
        tags.extend(access.to_tags(MAX_TAGS - tags.len()));
    }
    Ok(tags)
}

/// The user's tags on a backup blob: all of them but lakevault's (the record, and the
/// access control kept).
pub fn user_tags(tags: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    tags.iter()
        .filter(|(k, _)| k.as_str() != RECORD_TAG && !is_access_tag(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> BackupRecord {
        BackupRecord {
            source_etag: "0x8DC1234ABCD".into(),
            source_last_modified: "2026-11-22T03:07:23Z".into(),
            backed_up_at: "2026-11-22T04:00:00Z".into(),
            job: "6f1c2b1e-0000-4000-8000-000000000000".into(),
            deleted_at: None,
            history_in_versions: false,
        }
    }

    #[test]
    fn tombstone_round_trips() {
        let mut r = record();
        r.deleted_at = Some("2026-11-23T00:00:00Z".into());
        let v = r.to_tag_value();
        assert!(
            v.ends_with(" deleted=2026-11-23T00:00:00Z") && v.len() <= 256,
            "{v}"
        );
        assert_eq!(BackupRecord::parse(&v), Some(r));
    }

    #[test]
    fn record_round_trips_and_fits_a_tag() {
        let v = record().to_tag_value();
        assert!(v.len() <= 256);
        assert!(
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || " +-./:=_".contains(c)),
            "{v}"
        );
        assert_eq!(BackupRecord::parse(&v), Some(record()));
        assert_eq!(BackupRecord::parse("v2 etag=x"), None);
        assert_eq!(BackupRecord::parse("garbage"), None);
    }

    #[test]
    fn the_tag_set_encodes_and_leaves_room_for_the_record() {
        let mut user = BTreeMap::new();
        user.insert("Project Name".to_string(), "a&b=c".to_string());
        let set = tag_set(&user, &record(), None).unwrap();
        let h = crate::store::azure::tags_header(&set).unwrap();
        assert!(
            h.starts_with("Project%20Name=a%26b%3Dc&lakevault=v1%20etag%3D0x8DC1234ABCD"),
            "{h}"
        );
        for i in 0..9 {
            user.insert(format!("k{i}"), "v".into());
        }
        assert_eq!(tag_set(&user, &record(), None), Err(TooManyTags(10)));
    }

    #[test]
    fn a_record_with_a_job_it_did_not_write_still_reads() {
        // Written by a version that accepted any job id: the etag, times and tombstone
        // must still be read, or the blob looks unrecorded and is copied every run.
        let value = "v1 etag=0x8D1 mtime=2026-11-22T03:07:23Z at=2026-11-22T04:00:00Z job=nightly run deleted=2026-11-23T00:00:00Z";
        let r = BackupRecord::parse(value).expect("a record");
        assert_eq!(r.source_etag, "0x8D1");
        assert_eq!(r.job, "nightly");
        assert_eq!(r.deleted_at.as_deref(), Some("2026-11-23T00:00:00Z"));
    }

    #[test]
    fn job_ids_are_checked() {
        for ok in [
            "nightly-2026-12-03",
            "6f1c2b1e-0000-4000-8000-000000000000",
            "a.b_c:d",
        ] {
            assert_eq!(validate_job_id(ok), Ok(ok.to_string()), "{ok}");
        }
        for bad in ["", "nightly run", "a/b", "naïve", &"x".repeat(65)] {
            let err = validate_job_id(bad).expect_err(bad);
            assert!(err.contains("A-Z"), "the error says what is allowed: {err}");
        }
    }

    #[test]
    fn etags_are_compared_without_quotes() {
        assert_eq!(normalise_etag("\"0x8D1\""), "0x8D1");
        assert_eq!(normalise_etag("0x8D1"), "0x8D1");
    }
}
