//! Logs, traces and metrics, set up once by each binary.
//!
//! - **Logs**: `tracing` events on stderr (stdout is for command output), human-readable on
//!   a terminal and JSON otherwise (`--log-format`), filtered by `RUST_LOG` or else
//!   `--log-level`. Every line passes through [`crate::secret::scrub`] on its way out.
//! - **Traces**: spans exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; the Azure SDK's own spans are bridged
//!   into `tracing` ([`crate::sdk_tracing`]) so they nest under lakevault's. Attribute
//!   values are scrubbed before export.
//! - **Metrics**: the instruments of [`crate::metrics`], exported over OTLP when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is set, and kept
//!   for a Prometheus scrape ([`prometheus_text`]) when the process serves `/metrics`.
//!
//! With none of the OTLP variables set and no `/metrics` to serve, no exporter, meter or
//! SDK span bridge is installed.

use opentelemetry_sdk::trace::{SpanData, SpanProcessor};
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

impl LogFormat {
    /// `Auto` decided by whether stderr is a terminal.
    pub fn resolve(self) -> LogFormat {
        match self {
            LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Text,
            LogFormat::Auto => LogFormat::Json,
            other => other,
        }
    }
}

/// The Azure SDK crates: their per-request logging is noisy, so they stay at `warn`
/// unless `RUST_LOG` (or a full filter in `--log-level`) says otherwise.
const SDK_CRATES: &[&str] = &[
    "azure_core",
    "typespec_client_core",
    "azure_storage_blob",
    "azure_storage_queue",
    "azure_identity",
];

/// The log filter for `--log-level`: a bare level applies to lakevault (and everything
/// else) with the SDK crates at most at `warn`; anything else is taken as a full filter
/// in `RUST_LOG` syntax.
pub fn log_filter(level: &str) -> String {
    let levels = ["off", "error", "warn", "info", "debug", "trace"];
    let Some(rank) = levels
        .iter()
        .position(|l| l.eq_ignore_ascii_case(level.trim()))
    else {
        return level.to_string();
    };
    let sdk = levels[rank.min(2)];
    let mut filter = levels[rank].to_string();
    for krate in SDK_CRATES {
        filter.push_str(&format!(",{krate}={sdk}"));
    }
    filter
}

/// Parses `--log-level` (a level, or a filter in `RUST_LOG` syntax).
pub fn parse_log_level(s: &str) -> Result<String, String> {
    EnvFilter::builder()
        .parse(log_filter(s))
        .map(|_| s.to_string())
        .map_err(|e| format!("`{s}` is neither a level nor a log filter: {e}"))
}

/// Writes each formatted log line to stderr with credentials scrubbed out, through
/// [`crate::progress::LogWriter`] (which lifts progress bars while a line is printed). The
/// fmt layer hands over one whole line per write.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrubbedStderr;

impl<'a> MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedStderr
    }
}

impl Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        crate::progress::LogWriter.write_all(crate::secret::scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Keeps the OpenTelemetry providers alive; flushes spans and metrics when dropped. A
/// binary drops it before `std::process::exit`, which runs no destructors.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    meter: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.tracer.take() {
            let _ = p.shutdown();
        }
        if let Some(p) = self.meter.take() {
            let _ = p.shutdown();
        }
    }
}

/// What a binary wants from telemetry.
#[derive(Debug, Clone)]
pub struct TelemetryOptions {
    pub service_name: &'static str,
    pub log_format: LogFormat,
    /// `--log-level`; `RUST_LOG` wins when set.
    pub log_level: String,
    /// Keep metrics for a Prometheus scrape (the process serves `/metrics`).
    pub prometheus: bool,
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Whether OTLP export of traces is configured by the standard variables.
pub fn otlp_traces_configured() -> bool {
    env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
}

/// Whether OTLP export of metrics is configured by the standard variables.
pub fn otlp_metrics_configured() -> bool {
    env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
}

static SDK_SPANS: AtomicBool = AtomicBool::new(false);
static PROMETHEUS: OnceLock<prometheus::Registry> = OnceLock::new();

/// The tracer provider for SDK clients: the bridge into `tracing` when traces are
/// exported, else none (no cost per request).
pub fn sdk_tracer_provider() -> Option<std::sync::Arc<dyn azure_core::tracing::TracerProvider>> {
    SDK_SPANS
        .load(Ordering::Relaxed)
        .then(crate::sdk_tracing::provider)
}

/// The current metrics in the Prometheus text format, when this process keeps them.
pub fn prometheus_text() -> Option<String> {
    use prometheus::Encoder as _;
    let registry = PROMETHEUS.get()?;
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .ok()?;
    String::from_utf8(out).ok()
}

/// Content type of [`prometheus_text`].
pub const PROMETHEUS_CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Scrubs credentials out of every attribute and event of a span before it is handed to
/// the exporter (log lines are scrubbed by [`ScrubbedStderr`]).
#[derive(Debug)]
struct ScrubbingProcessor<P>(P);

fn scrub_value(value: &mut opentelemetry::Value) {
    if let opentelemetry::Value::String(s) = value
        && let std::borrow::Cow::Owned(clean) = crate::secret::scrub(s.as_str())
    {
        *value = opentelemetry::Value::String(clean.into());
    }
}

impl<P: SpanProcessor> SpanProcessor for ScrubbingProcessor<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx)
    }

    fn on_end(&self, mut span: SpanData) {
        for kv in &mut span.attributes {
            scrub_value(&mut kv.value);
        }
        for event in &mut span.events.events {
            if let std::borrow::Cow::Owned(clean) = crate::secret::scrub(&event.name) {
                event.name = clean.into();
            }
            for kv in &mut event.attributes {
                scrub_value(&mut kv.value);
            }
        }
        if let opentelemetry::trace::Status::Error { description } = &mut span.status
            && let std::borrow::Cow::Owned(clean) = crate::secret::scrub(description)
        {
            *description = clean.into();
        }
        self.0.on_end(span)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource)
    }
}

/// Installs the global subscriber (and the meter provider, if metrics go anywhere).
pub fn init(options: &TelemetryOptions) -> TelemetryGuard {
    let mut guard = TelemetryGuard::default();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(options.service_name)
        .build();

    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("warning: RUST_LOG `{v}` ignored: {e}");
            EnvFilter::new(log_filter(&options.log_level))
        }),
        _ => EnvFilter::try_new(log_filter(&options.log_level))
            .unwrap_or_else(|_| EnvFilter::new(log_filter("info"))),
    };
    let fmt_layer = match options.log_format.resolve() {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(ScrubbedStderr)
            .boxed(),
        _ => tracing_subscriber::fmt::layer()
            .with_writer(ScrubbedStderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .boxed(),
    }
    .with_filter(filter);

    let traces = otlp_traces_configured();
    let otel_layer = if traces {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => {
                use opentelemetry::trace::TracerProvider as _;
                let processor =
                    opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter).build();
                let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                    .with_span_processor(ScrubbingProcessor(processor))
                    .with_resource(resource.clone())
                    .build();
                let tracer = provider.tracer(options.service_name);
                guard.tracer = Some(provider);
                // lakevault's spans and the SDK's (bridged at info), whatever the log
                // level; events at info and above become span events.
                Some(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(EnvFilter::new("info")),
                )
            }
            Err(e) => {
                eprintln!("warning: OTLP trace export disabled: {e}");
                None
            }
        }
    } else {
        None
    };
    let exporting_traces = otel_layer.is_some();
    let _ = tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    // The SDK's spans are never entered (the SDK holds them across awaits), so log lines
    // do not show them: only an exporter has a use for them.
    SDK_SPANS.store(exporting_traces, Ordering::Relaxed);

    let otlp_metrics = otlp_metrics_configured();
    if options.prometheus || otlp_metrics {
        let mut builder =
            opentelemetry_sdk::metrics::SdkMeterProvider::builder().with_resource(resource);
        if options.prometheus {
            let registry = prometheus::Registry::new();
            match opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .without_target_info()
                .scope_info_enabled(false)
                .build()
            {
                Ok(exporter) => {
                    builder = builder.with_reader(exporter);
                    let _ = PROMETHEUS.set(registry);
                }
                Err(e) => eprintln!("warning: /metrics disabled: {e}"),
            }
        }
        if otlp_metrics {
            match opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .build()
            {
                Ok(exporter) => builder = builder.with_periodic_exporter(exporter),
                Err(e) => eprintln!("warning: OTLP metric export disabled: {e}"),
            }
        }
        let provider = builder.build();
        opentelemetry::global::set_meter_provider(provider.clone());
        crate::metrics::register_process_metrics();
        guard.meter = Some(provider);
    }
    guard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_keeps_the_sdk_quiet_and_a_filter_is_taken_as_is() {
        assert_eq!(
            log_filter("debug"),
            "debug,azure_core=warn,typespec_client_core=warn,azure_storage_blob=warn,azure_storage_queue=warn,azure_identity=warn"
        );
        assert!(log_filter("error").contains("azure_core=error"));
        assert_eq!(
            log_filter("lakevault_worker=trace,info"),
            "lakevault_worker=trace,info"
        );
        assert!(parse_log_level("INFO").is_ok());
        assert!(parse_log_level("lakevault_worker=debug").is_ok());
        assert!(parse_log_level("=!=").is_err());
    }

    #[test]
    fn explicit_formats_stay() {
        assert_eq!(LogFormat::Json.resolve(), LogFormat::Json);
        assert_eq!(LogFormat::Text.resolve(), LogFormat::Text);
        assert_ne!(LogFormat::Auto.resolve(), LogFormat::Auto);
    }
}
