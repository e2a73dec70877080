//! Secrets that never print: keys, SAS tokens, client secrets, connection strings.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A string that must never reach a log, an error message or a `Debug` dump.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call only where it is used (signing, an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretString)
    }
}

/// Query parameters whose values are credentials and are replaced by `REDACTED` when a
/// URL is logged or put into an error message.
const SECRET_QUERY_PARAMS: &[&str] = &["sig", "skoid", "sktid", "saoid", "suoid"];

/// Returns the URL with every SAS signature (and signed key identity) redacted.
pub fn redact_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if SECRET_QUERY_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                format!("{k}=REDACTED")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", redacted.join("&"))
}

/// Redacts every `sig=` value found anywhere in free text (error messages from the SDK
/// may quote the request URL), and every other credential [`scrub`] recognises.
pub fn redact_text(text: &str) -> String {
    scrub(text).into_owned()
}

const REDACTED: &str = "REDACTED";

/// One kind of credential recognisable in free text: a marker, and where its value is.
struct Pattern {
    /// Matched case-insensitively unless `exact`.
    marker: &'static str,
    exact: bool,
    /// The marker must not follow a letter or digit (`sig=` but not `design=`).
    word_start: bool,
    /// Where the secret is in the text after the marker: (offset, length); length 0:
    /// nothing to redact here.
    value: fn(&str) -> (usize, usize),
}

/// Length of a value: up to whitespace, a quote, a JSON or URL separator, or one of
/// `also`; a percent-encoded `&` ends a value inside an encoded URL.
fn value_len(text: &str, also: &[char]) -> usize {
    let end = text
        .find(|c: char| {
            c.is_whitespace()
                || matches!(c, '"' | '\'' | '\\' | ',' | '<' | '>' | '}' | ']' | ')')
                || also.contains(&c)
        })
        .unwrap_or(text.len());
    let encoded_amp = text[..end].to_ascii_lowercase().find("%26").unwrap_or(end);
    encoded_amp.min(end)
}

fn query_value(text: &str) -> (usize, usize) {
    (0, value_len(text, &['&', ';', '#']))
}

fn token_value(text: &str) -> (usize, usize) {
    (0, value_len(text, &[';']))
}

/// `SharedKey <account>:<signature>`: the account name stays, the signature goes.
fn shared_key_value(text: &str) -> (usize, usize) {
    let word = value_len(text, &[';']);
    match text[..word].find(':') {
        Some(colon) => (colon + 1, word - colon - 1),
        None => (0, word),
    }
}

/// `authorization: <value>`, `authorization=<value>` or `"authorization":"<value>"`
/// (header dumps): the value, which may hold a space (`Bearer x`, `SharedKey a:b`).
fn header_value(text: &str) -> (usize, usize) {
    let bytes = text.as_bytes();
    let mut i = 0;
    if bytes.first() == Some(&b'"') {
        i += 1;
    }
    if !matches!(bytes.get(i), Some(b':' | b'=')) {
        return (0, 0);
    }
    i += 1;
    while bytes.get(i) == Some(&b' ') {
        i += 1;
    }
    if bytes.get(i) == Some(&b'"') {
        i += 1;
    }
    let rest = &text[i..];
    let end = rest
        .find(['"', '\\', ',', '}', '\n', '\r'])
        .unwrap_or(rest.len());
    (i, end)
}

const PATTERNS: &[Pattern] = &[
    Pattern {
        marker: "sig=",
        exact: false,
        word_start: true,
        value: query_value,
    },
    Pattern {
        marker: "sig%3d",
        exact: false,
        word_start: true,
        value: query_value,
    },
    Pattern {
        marker: "accountkey=",
        exact: false,
        word_start: true,
        value: query_value,
    },
    Pattern {
        marker: "Bearer ",
        exact: true,
        word_start: true,
        value: token_value,
    },
    Pattern {
        marker: "SharedKey ",
        exact: true,
        word_start: true,
        value: shared_key_value,
    },
    Pattern {
        marker: "authorization",
        exact: false,
        word_start: false,
        value: header_value,
    },
];

/// The first match of `p` at or after `from`.
fn find_marker(text: &str, lower: &str, p: &Pattern, mut from: usize) -> Option<usize> {
    loop {
        let hit = if p.exact {
            text[from..].find(p.marker)
        } else {
            lower[from..].find(p.marker)
        }?;
        let at = from + hit;
        // After a separator, or after a percent-encoded `&` or `?` (an encoded URL).
        let starts_word = at == 0
            || !text.as_bytes()[at - 1].is_ascii_alphanumeric()
            || lower[..at].ends_with("%26")
            || lower[..at].ends_with("%3f");
        if !p.word_start || starts_word {
            return Some(at);
        }
        from = at + 1;
    }
}

/// Replaces every credential recognisable in `text` with `REDACTED`: SAS signatures
/// (`sig=`, also percent-encoded), `AccountKey=` of connection strings, `Bearer` tokens,
/// Shared Key signatures, and the values of `Authorization`-style headers. Every log line
/// passes through here before it is written; text without any of them comes back as is.
pub fn scrub(text: &str) -> std::borrow::Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    let mut out: Option<String> = None;
    // `text[..copied]` is in `out` already.
    let mut copied = 0;
    let mut pos = 0;
    while pos < text.len() {
        let next = PATTERNS
            .iter()
            .filter_map(|p| find_marker(text, &lower, p, pos).map(|at| (at, p)))
            .min_by_key(|(at, _)| *at);
        let Some((at, p)) = next else { break };
        let after = at + p.marker.len();
        let (offset, len) = (p.value)(&text[after..]);
        let start = after + offset;
        let value = &text[start..start + len];
        if len > 0 && !value.starts_with(REDACTED) {
            let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
            buf.push_str(&text[copied..start]);
            buf.push_str(REDACTED);
            copied = start + len;
        }
        pos = (start + len).max(at + 1);
    }
    match out {
        None => std::borrow::Cow::Borrowed(text),
        Some(mut buf) => {
            buf.push_str(&text[copied..]);
            std::borrow::Cow::Owned(buf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let s = SecretString::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn redacts_signature_in_urls() {
        let url = "https://a.blob.core.windows.net/c/b?sv=2024-01-01&sig=abc%2Bdef&se=2030";
        let r = redact_url(url);
        assert!(!r.contains("abc"), "{r}");
        assert!(r.contains("sv=2024-01-01") && r.contains("se=2030"));
    }

    #[test]
    fn redacts_signature_in_text() {
        let t = "copy of http://x/y?sp=r&sig=SECRETVALUE failed; sig=OTHER end";
        let r = redact_text(t);
        assert!(!r.contains("SECRETVALUE") && !r.contains("OTHER"), "{r}");
        assert!(r.ends_with(" end"));
    }

    #[test]
    fn leaves_unrelated_words_alone() {
        assert_eq!(redact_text("design=good"), "design=good");
        for text in [
            "missing or wrong bearer token",
            "the authorization failed",
            "sig=REDACTED&se=2030",
            "{\"fields\":{\"message\":\"copied\",\"blob\":\"a/b c\"}}",
        ] {
            assert!(
                matches!(scrub(text), std::borrow::Cow::Borrowed(_)),
                "{text}"
            );
        }
    }

    #[test]
    fn scrubs_every_kind_of_credential() {
        let cases = [
            (
                "GET http://h/c/b?sv=1&sig=abc%2Bdef%3D&se=2 failed",
                "GET http://h/c/b?sv=1&sig=REDACTED&se=2 failed",
            ),
            (
                "x-ms-copy-source=http%3A%2F%2Fh%2Fc%2Fb%3Fsv%3D1%26sig%3Dabc%252B%26se%3D2",
                "x-ms-copy-source=http%3A%2F%2Fh%2Fc%2Fb%3Fsv%3D1%26sig%3DREDACTED%26se%3D2",
            ),
            (
                "{\"url\":\"http://h/?SIG=abc\"}",
                "{\"url\":\"http://h/?SIG=REDACTED\"}",
            ),
            (
                "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=Zm9v+/==;BlobEndpoint=x",
                "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=REDACTED;BlobEndpoint=x",
            ),
            (
                "headers: Bearer eyJ0eXAi.eyJhdWQi.c2ln done",
                "headers: Bearer REDACTED done",
            ),
            (
                "SharedKey backupaccount:c2lnbmF0dXJl end",
                "SharedKey backupaccount:REDACTED end",
            ),
            (
                "{\"authorization\": \"Basic dXNlcjpwYXNz\", \"x\": 1}",
                "{\"authorization\": \"REDACTED\", \"x\": 1}",
            ),
            (
                "x-ms-copy-source-authorization: Bearer abc, accept: */*",
                "x-ms-copy-source-authorization: REDACTED, accept: */*",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(scrub(input), expected, "{input}");
            assert_eq!(scrub(expected), expected, "idempotent: {expected}");
        }
    }
}
