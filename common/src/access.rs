//! The POSIX access control of a path on an account with a hierarchical namespace (ADLS
//! Gen2): owner, group, permissions and ACL (access entries, and `default:` entries on a
//! directory), and where lakevault keeps it in the backup.
//!
//! It is captured from the source listing (List Blobs with `include=permissions` returns
//! `Owner`, `Group`, `Permissions` and `Acl` for every entry: no request per path;
//! <https://learn.microsoft.com/rest/api/storageservices/list-blobs>) and kept, per backed-up
//! version, in blob index tags of the backup blob beside the record: the backup account is
//! flat and has tags, an HNS source has none of its own (so the nine tags the record leaves
//! are free), tags are written by the same request as the copy (`x-ms-tags`), a snapshot
//! keeps the tags its version had, and the backup listing returns them (`include=tags`),
//! so a full diff compares access control without a request per path. Metadata could not
//! hold it: a server-side copy carries the source's metadata as it is, and anything added
//! would replace it.
//!
//! Tag values allow only letters, digits, space and `+ - . / : = _` and 256 characters;
//! ACLs hold `,`. The fields are serialised as JSON (verbatim: an ACL lakevault cannot parse
//! is kept and restored as it is), compressed with DEFLATE and written in base64 across up to
//! `room` tags `lakevault-acl0`, `lakevault-acl1`, ... — 9 × 256 base64 characters, 1,728
//! compressed bytes, which holds the largest ACL Azure allows (32 access and 32 default
//! entries with object ids) with room to spare. Should it not fit, the tags hold its
//! SHA-256 digest instead: a change is still detected, the data is still backed up, and
//! restore says that this path's access control could not be kept.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// Index tag keys holding the access control start with this (`lakevault-acl0`, ...).
pub const ACCESS_TAG_PREFIX: &str = "lakevault-acl";
/// Longest index tag value the service takes.
const TAG_VALUE_MAX: usize = 256;
/// First character of the first tag: how the rest reads.
const KEPT: char = 'z';
const DIGEST_ONLY: char = 'h';

/// What an HNS listing says of one path's access control, as the service wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PathAccess {
    /// A directory (`ResourceType` `directory`), not a file.
    #[serde(rename = "d", default, skip_serializing_if = "std::ops::Not::not")]
    pub directory: bool,
    #[serde(rename = "o")]
    pub owner: String,
    #[serde(rename = "g")]
    pub group: String,
    /// `rwxr-x---`, with a `+` when the ACL has named entries or a mask, and `t` for the
    /// sticky bit.
    #[serde(rename = "p")]
    pub permissions: String,
    /// `user::rwx,user:<id>:r-x,group::r-x,mask::r-x,other::---,default:...`
    #[serde(rename = "a")]
    pub acl: String,
}

/// What a backup blob's tags say of its version's access control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptAccess {
    /// Nothing recorded (a flat source, or a backup from before access control was kept).
    None,
    Kept(PathAccess),
    /// Too long for the tags: only its digest was kept, to tell a change.
    DigestOnly(String),
    /// Tags that do not decode (written by something else).
    Unreadable,
}

impl PathAccess {
    fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn digest(&self) -> String {
        hex::encode(sha2::Sha256::digest(self.json().as_bytes()))
    }

    /// The tags keeping this access control, at most `room` of them.
    pub fn to_tags(&self, room: usize) -> BTreeMap<String, String> {
        let mut deflate =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let compressed = deflate
            .write_all(self.json().as_bytes())
            .and_then(|()| deflate.finish())
            .unwrap_or_default();
        let text = format!(
            "{KEPT}{}",
            base64::engine::general_purpose::STANDARD.encode(compressed)
        );
        let chunks: Vec<&str> = text
            .as_bytes()
            .chunks(TAG_VALUE_MAX)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        if chunks.len() <= room {
            return chunks
                .into_iter()
                .enumerate()
                .map(|(i, c)| (format!("{ACCESS_TAG_PREFIX}{i}"), c.to_string()))
                .collect();
        }
        if room == 0 {
            return BTreeMap::new();
        }
        BTreeMap::from([(
            format!("{ACCESS_TAG_PREFIX}0"),
            format!("{DIGEST_ONLY}{}", self.digest()),
        )])
    }

    /// Whether `kept` records this access control (in full, or by its digest).
    pub fn matches(&self, kept: &KeptAccess) -> bool {
        match kept {
            KeptAccess::Kept(k) => k == self,
            KeptAccess::DigestOnly(d) => *d == self.digest(),
            KeptAccess::None | KeptAccess::Unreadable => false,
        }
    }
}

/// Whether `key` is one of the tags keeping access control.
pub fn is_access_tag(key: &str) -> bool {
    key.strip_prefix(ACCESS_TAG_PREFIX)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads the access control a backup blob's tags keep.
pub fn kept_access(tags: &BTreeMap<String, String>) -> KeptAccess {
    let mut text = String::new();
    for i in 0.. {
        match tags.get(&format!("{ACCESS_TAG_PREFIX}{i}")) {
            Some(chunk) => text.push_str(chunk),
            None => break,
        }
    }
    let mut chars = text.chars();
    match chars.next() {
        None => KeptAccess::None,
        Some(DIGEST_ONLY) => KeptAccess::DigestOnly(chars.as_str().to_string()),
        Some(KEPT) => base64::engine::general_purpose::STANDARD
            .decode(chars.as_str())
            .ok()
            .and_then(|compressed| {
                let mut json = String::new();
                flate2::read::DeflateDecoder::new(compressed.as_slice())
                    .read_to_string(&mut json)
                    .ok()?;
                serde_json::from_str(&json).ok()
            })
            .map_or(KeptAccess::Unreadable, KeptAccess::Kept),
        Some(_) => KeptAccess::Unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn oid(n: u32) -> String {
        format!("{n:08x}-1f0e-4c2a-9b7d-{:012x}", u64::from(n) * 7_919)
    }

    fn access(named: u32, default: bool) -> PathAccess {
        let mut acl = vec!["user::rwx".to_string()];
        acl.extend((0..named).map(|n| format!("user:{}:r-x", oid(n))));
        acl.extend(["group::r-x".into(), "mask::r-x".into(), "other::---".into()]);
        if default {
            acl.push("default:user::rwx".into());
            acl.extend((0..named).map(|n| format!("default:group:{}:r-x", oid(n + 100))));
            acl.extend([
                "default:group::r-x".into(),
                "default:mask::r-x".into(),
                "default:other::---".into(),
            ]);
        }
        PathAccess {
            directory: default,
            owner: oid(999),
            group: "$superuser".into(),
            permissions: "rwxr-x---+".into(),
            acl: acl.join(","),
        }
    }

    fn tag_value_allowed(v: &str) -> bool {
        v.len() <= TAG_VALUE_MAX
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || " +-./:=_".contains(c))
    }

    #[test]
    fn the_largest_acl_azure_allows_is_kept_in_full() {
        // 32 entries per ACL, access and default, four of them unnamed: 28 named in each.
        let largest = access(28, true);
        let tags = largest.to_tags(9);
        // Under half the room: 9 tags hold 9 × 256 characters.
        let characters: usize = tags.values().map(String::len).sum();
        assert!(
            characters < 9 * 256 / 2,
            "{characters} characters in {} tags",
            tags.len()
        );
        assert!(tags.values().all(|v| tag_value_allowed(v)), "{tags:?}");
        assert!(tags.keys().all(|k| is_access_tag(k)));
        assert_eq!(kept_access(&tags), KeptAccess::Kept(largest.clone()));
        assert!(largest.matches(&kept_access(&tags)));
    }

    #[test]
    fn without_room_only_the_digest_is_kept_and_still_tells_a_change() {
        let a = access(28, true);
        let tags = a.to_tags(1);
        assert_eq!(tags.len(), 1);
        assert!(matches!(kept_access(&tags), KeptAccess::DigestOnly(_)));
        assert!(a.matches(&kept_access(&tags)));
        let mut changed = a.clone();
        changed.acl = changed.acl.replace("user::rwx", "user::rw-");
        assert!(!changed.matches(&kept_access(&tags)));
    }

    #[test]
    fn no_tags_and_foreign_tags_read_as_such() {
        assert_eq!(kept_access(&BTreeMap::new()), KeptAccess::None);
        let foreign = BTreeMap::from([("lakevault-acl0".to_string(), "zzz".to_string())]);
        assert_eq!(kept_access(&foreign), KeptAccess::Unreadable);
        assert!(!access(0, false).matches(&KeptAccess::None));
        assert!(!is_access_tag("lakevault-acl"));
        assert!(!is_access_tag("lakevault-aclx"));
        assert!(!is_access_tag("lakevault"));
    }

    proptest! {
        /// Any text, also what lakevault cannot parse as an ACL, comes back verbatim.
        #[test]
        fn access_control_round_trips_verbatim(
            directory in any::<bool>(),
            owner in ".{0,40}",
            group in ".{0,40}",
            permissions in ".{0,12}",
            acl in ".{0,300}",
        ) {
            let a = PathAccess { directory, owner, group, permissions, acl };
            let tags = a.to_tags(9);
            prop_assert!(tags.values().all(|v| tag_value_allowed(v)));
            prop_assert!(a.matches(&kept_access(&tags)));
        }
    }
}
