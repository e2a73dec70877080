//! Shared Key request signing as an SDK pipeline policy. The SDK 1.x crates sign only with
//! Entra tokens; this policy sits in `per_try_policies` so every retry is re-dated and
//! re-signed.
//! <https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key>

use crate::secret::SecretString;
use async_trait::async_trait;
use azure_core::credentials::Secret;
use azure_core::http::Context;
use azure_core::http::Request;
use azure_core::http::policies::{Policy, PolicyResult};
use std::sync::Arc;

#[derive(Clone)]
pub struct SharedKeyPolicy {
    account: String,
    key: Secret,
}

impl std::fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKeyPolicy")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl SharedKeyPolicy {
    pub fn new(account: impl Into<String>, key: &SecretString) -> Self {
        Self {
            account: account.into(),
            key: Secret::new(key.expose().to_string()),
        }
    }
}

/// Signs `string_to_sign` with the base64 account key; returns the base64 signature.
pub fn sign(key: &Secret, string_to_sign: &str) -> azure_core::Result<String> {
    azure_core::hmac::hmac_sha256(string_to_sign, key)
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let now = time::OffsetDateTime::now_utc();
        request.insert_header("x-ms-date", azure_core::time::to_rfc7231(&now));
        let to_sign = string_to_sign(&self.account, request);
        let signature = sign(&self.key, &to_sign)?;
        request.insert_header(
            "authorization",
            format!("SharedKey {}:{signature}", self.account),
        );
        next[0].send(ctx, request, &next[1..]).await
    }
}

fn header<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers()
        .iter()
        .find(|(k, _)| k.as_str().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// The Shared Key string-to-sign for the Blob and Queue services (version 2009-09-19+).
pub(crate) fn string_to_sign(account: &str, request: &Request) -> String {
    // The transport adds Content-Length from the body later, so derive it here; an empty
    // body signs as the empty string, not "0".
    let content_length = match header(request, "content-length") {
        "" => request
            .body()
            .len()
            .map(|n| n.to_string())
            .unwrap_or_default(),
        v => v.to_string(),
    };
    let content_length = if content_length == "0" {
        String::new()
    } else {
        content_length
    };

    let mut ms_headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-ms-"))
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.as_str().trim().to_string(),
            )
        })
        .collect();
    ms_headers.sort();
    let canonical_headers: String = ms_headers
        .iter()
        .map(|(k, v)| format!("{k}:{v}\n"))
        .collect();

    let method = request.method().to_string().to_ascii_uppercase();
    format!(
        "{method}\n{}\n{}\n{content_length}\n{}\n{}\n\n{}\n{}\n{}\n{}\n{}\n{canonical_headers}{}",
        header(request, "content-encoding"),
        header(request, "content-language"),
        header(request, "content-md5"),
        header(request, "content-type"),
        header(request, "if-modified-since"),
        header(request, "if-match"),
        header(request, "if-none-match"),
        header(request, "if-unmodified-since"),
        header(request, "range"),
        canonical_resource(account, request.url()),
    )
}

/// `/account/encoded-path` followed by `\nname:v1,v2` for every query parameter, names
/// lowercased and sorted, values decoded and sorted.
fn canonical_resource(account: &str, url: &url::Url) -> String {
    let mut out = format!("/{account}{}", url.path());
    let mut params: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (k, v) in url.query_pairs() {
        params
            .entry(k.to_ascii_lowercase())
            .or_default()
            .push(v.into_owned());
    }
    for (k, mut values) in params {
        values.sort();
        out.push_str(&format!("\n{k}:{}", values.join(",")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::{Method, Url};

    #[test]
    fn canonical_string_matches_the_documented_shape() {
        let url = Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/c%20x/a%2Fb?restype=container&comp=list&include=metadata,tags",
        )
        .unwrap();
        let mut req = Request::new(url, Method::Get);
        req.insert_header("x-ms-version", "2026-04-06");
        req.insert_header("x-ms-date", "Sun, 22 Nov 2026 03:00:00 GMT");
        let s = string_to_sign("devstoreaccount1", &req);
        assert_eq!(
            s,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Sun, 22 Nov 2026 03:00:00 GMT\nx-ms-version:2026-04-06\n\
             /devstoreaccount1/devstoreaccount1/c%20x/a%2Fb\ncomp:list\ninclude:metadata,tags\nrestype:container"
        );
    }

    #[test]
    fn content_length_comes_from_the_body() {
        let url = Url::parse("https://a.queue.core.windows.net/q/messages").unwrap();
        let mut req = Request::new(url, Method::Post);
        req.set_body(azure_core::Bytes::from_static(b"hello"));
        let s = string_to_sign("a", &req);
        assert!(s.starts_with("POST\n\n\n5\n"), "{s:?}");
    }
}
