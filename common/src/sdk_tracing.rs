//! The Azure SDK's distributed tracing, bridged into `tracing`: the SDK opens a span per
//! client method (`Storage.Blob.BlobClient.copyFromUrl`, …) and one per HTTP try (`PUT`),
//! through a `TracerProvider` in the client options. This provider turns them into
//! `tracing` spans (target `azure_core`, level info), so they nest under whatever
//! lakevault span is current — a copy, a shard — and are exported with it. The SDK takes
//! `url.full` before lakevault's SAS policy appends a token, and replaces query values it
//! does not know to be safe (`sig` among them) by `REDACTED`; string attributes are
//! scrubbed again here.
//!
//! Installed only when traces are exported ([`crate::telemetry::sdk_tracer_provider`]).

use azure_core::http::{Context, Request};
use azure_core::tracing::{
    AsAny, Attribute, AttributeValue, Span, SpanGuard, SpanKind, SpanStatus, Tracer, TracerProvider,
};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

pub(crate) fn provider() -> Arc<dyn TracerProvider> {
    Arc::new(Bridge)
}

#[derive(Debug)]
struct Bridge;

impl TracerProvider for Bridge {
    fn get_tracer(
        &self,
        namespace: Option<&'static str>,
        _crate_name: &'static str,
        _crate_version: Option<&'static str>,
    ) -> Arc<dyn Tracer> {
        Arc::new(BridgeTracer { namespace })
    }
}

#[derive(Debug)]
struct BridgeTracer {
    namespace: Option<&'static str>,
}

/// Declares every attribute the SDK sets, so that it can be recorded later.
macro_rules! sdk_span {
    ($name:literal, $parent:expr, $otel_name:expr, $kind:expr) => {
        tracing::info_span!(
            target: "azure_core",
            parent: $parent,
            $name,
            otel.name = %$otel_name,
            otel.kind = $kind,
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
            az.namespace = tracing::field::Empty,
            az.client_request_id = tracing::field::Empty,
            az.service_request.id = tracing::field::Empty,
            http.request.method = tracing::field::Empty,
            http.request.resend_count = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            url.full = tracing::field::Empty,
            server.address = tracing::field::Empty,
            server.port = tracing::field::Empty,
            error.type = tracing::field::Empty,
        )
    };
}

fn start(
    name: Cow<'static, str>,
    kind: SpanKind,
    attributes: Vec<Attribute>,
    parent: Option<tracing::Id>,
) -> Arc<dyn Span> {
    let parent = parent.or_else(|| tracing::Span::current().id());
    let span = match kind {
        SpanKind::Client => sdk_span!("http_request", parent, name, "client"),
        _ => sdk_span!("sdk_call", parent, name, "internal"),
    };
    let bridged = BridgedSpan {
        span: Mutex::new(Some(span)),
    };
    for a in attributes {
        bridged.record(&a.key, &a.value);
    }
    Arc::new(bridged)
}

impl Tracer for BridgeTracer {
    fn start_span(
        &self,
        name: Cow<'static, str>,
        kind: SpanKind,
        attributes: Vec<Attribute>,
    ) -> Arc<dyn Span> {
        start(name, kind, attributes, None)
    }

    fn start_span_with_parent(
        &self,
        name: Cow<'static, str>,
        kind: SpanKind,
        attributes: Vec<Attribute>,
        parent: Arc<dyn Span>,
    ) -> Arc<dyn Span> {
        let parent = parent
            .as_any()
            .downcast_ref::<BridgedSpan>()
            .and_then(BridgedSpan::id);
        start(name, kind, attributes, parent)
    }

    fn namespace(&self) -> Option<&'static str> {
        self.namespace
    }
}

/// A `tracing` span held for the SDK; ended (dropped) by [`Span::end`].
struct BridgedSpan {
    span: Mutex<Option<tracing::Span>>,
}

impl BridgedSpan {
    fn with<R>(&self, f: impl FnOnce(&tracing::Span) -> R) -> Option<R> {
        self.span
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(f)
    }

    fn id(&self) -> Option<tracing::Id> {
        self.with(tracing::Span::id).flatten()
    }

    fn record(&self, key: &str, value: &AttributeValue) {
        self.with(|span| match value {
            AttributeValue::Bool(v) => {
                span.record(key, v);
            }
            AttributeValue::I64(v) => {
                span.record(key, v);
            }
            AttributeValue::F64(v) => {
                span.record(key, v);
            }
            AttributeValue::String(v) => {
                span.record(key, crate::secret::scrub(v).as_ref());
            }
            other => {
                span.record(key, crate::secret::scrub(&format!("{other:?}")).as_ref());
            }
        });
    }
}

impl AsAny for BridgedSpan {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

struct NoGuard;

impl SpanGuard for NoGuard {
    fn end(self) {}
}

impl Span for BridgedSpan {
    fn is_recording(&self) -> bool {
        self.with(|s| !s.is_disabled()).unwrap_or(false)
    }

    fn span_id(&self) -> [u8; 8] {
        self.id()
            .map(|id| id.into_u64().to_be_bytes())
            .unwrap_or_default()
    }

    fn end(&self) {
        // Dropping the last handle closes the span (children close first).
        self.span.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn set_status(&self, status: SpanStatus) {
        if let SpanStatus::Error { description } = status {
            self.with(|s| {
                s.record("otel.status_code", "ERROR");
                if !description.is_empty() {
                    s.record(
                        "otel.status_message",
                        crate::secret::scrub(&description).as_ref(),
                    );
                }
            });
        }
    }

    fn set_attribute(&self, key: &'static str, value: AttributeValue) {
        self.record(key, &value);
    }

    fn record_error(&self, error: &dyn std::error::Error) {
        let text = error.to_string();
        self.with(|s| {
            s.record("error.type", crate::secret::scrub(&text).as_ref());
        });
    }

    fn set_current(&self, _context: &Context) -> Box<dyn SpanGuard> {
        // `tracing` decides what is current by what is entered; the SDK passes its spans
        // along in the request context instead.
        Box::new(NoGuard)
    }

    fn propagate_headers(&self, _request: &mut Request) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tracing_subscriber::layer::SubscriberExt;

    /// Records (span name, parent name, `otel.name`) of every new span.
    #[derive(Default)]
    struct Spans(Mutex<Vec<(String, Option<String>, String)>>, AtomicUsize);

    struct Capture(Arc<Spans>);

    struct OtelName(String);

    impl tracing::field::Visit for OtelName {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "otel.name" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl<S> tracing_subscriber::Layer<S> for Capture
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            id: &tracing::Id,
            ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let span = ctx.span(id).expect("span");
            let parent = span.parent().map(|p| p.name().to_string());
            let mut name = OtelName(String::new());
            attrs.record(&mut name);
            self.0
                .0
                .lock()
                .unwrap()
                .push((span.name().to_string(), parent, name.0));
        }

        fn on_close(&self, _id: tracing::Id, _ctx: tracing_subscriber::layer::Context<'_, S>) {
            self.0.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn sdk_spans_nest_under_the_current_span_and_close_when_ended() {
        let spans = Arc::new(Spans::default());
        let subscriber = tracing_subscriber::registry().with(Capture(spans.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let tracer =
                provider().get_tracer(Some("Microsoft.Storage"), "azure_storage_blob", None);
            let copy = tracing::info_span!("copy");
            let call = copy.in_scope(|| {
                tracer.start_span(
                    "Storage.Blob.BlobClient.copyFromUrl".into(),
                    SpanKind::Internal,
                    Vec::new(),
                )
            });
            let request = tracer.start_span_with_parent(
                "PUT".into(),
                SpanKind::Client,
                vec![Attribute {
                    key: "url.full".into(),
                    value: AttributeValue::String("http://h/c/b?sig=REDACTED".into()),
                }],
                call.clone(),
            );
            request.set_attribute("http.response.status_code", AttributeValue::I64(201));
            assert!(request.is_recording());
            request.end();
            call.end();
            drop((request, call));
            assert_eq!(spans.1.load(Ordering::SeqCst), 2, "both SDK spans closed");
        });
        let seen = spans.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                ("copy".to_string(), None, String::new()),
                (
                    "sdk_call".to_string(),
                    Some("copy".to_string()),
                    "Storage.Blob.BlobClient.copyFromUrl".to_string()
                ),
                (
                    "http_request".to_string(),
                    Some("sdk_call".to_string()),
                    "PUT".to_string()
                ),
            ]
        );
    }
}
