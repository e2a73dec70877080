//! Per-call request headers that the generated SDK clients do not expose, such as
//! `x-ms-requires-sync` (which turns Copy Blob into the synchronous Copy Blob From URL)
//! and `x-ms-copy-source-authorization`. The caller puts an [`ExtraHeaders`] value into
//! the method options' `Context`; this policy adds the headers before signing.
//! [`ExtraQuery`] does the same for query parameters (`delimiter` on List Blobs, which the
//! generated client does not offer).

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct ExtraHeaders(pub Vec<(&'static str, String)>);

impl std::fmt::Debug for ExtraHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may hold a bearer token: print names only.
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

impl ExtraHeaders {
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.0.push((name, value.into()));
        self
    }

    /// A context carrying these headers, for a method's `method_options.context`.
    pub fn into_context(self) -> Context<'static> {
        Context::new().with_value(self)
    }
}

/// Query parameters to add to a request, e.g. `delimiter=/` for a hierarchical listing.
#[derive(Clone, Debug, Default)]
pub struct ExtraQuery(pub Vec<(&'static str, String)>);

#[derive(Debug, Default)]
pub struct ExtraHeadersPolicy;

#[async_trait]
impl Policy for ExtraHeadersPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if let Some(extra) = ctx.value::<ExtraHeaders>() {
            for (name, value) in &extra.0 {
                request.insert_header(*name, value.clone());
            }
        }
        if let Some(extra) = ctx.value::<ExtraQuery>() {
            let mut url = request.url().clone();
            {
                let mut pairs = url.query_pairs_mut();
                for (name, value) in &extra.0 {
                    pairs.append_pair(name, value);
                }
            }
            *request.url_mut() = url;
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}
