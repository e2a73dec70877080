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
/// may quote the request URL).
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = find_sig(rest) {
        let (head, tail) = rest.split_at(pos + 4);
        out.push_str(head);
        out.push_str("REDACTED");
        let end = tail
            .find(|c: char| c == '&' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn find_sig(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("sig=") {
        let at = from + i;
        if at == 0 || matches!(lower.as_bytes()[at - 1], b'?' | b'&' | b' ' | b';') {
            return Some(at);
        }
        from = at + 4;
    }
    None
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
    }
}
