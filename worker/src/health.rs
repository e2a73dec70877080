//! Probe endpoints for orchestrators: `GET /healthz` answers 200 while the process runs
//! its loop; `GET /readyz` answers 200 while the worker can take work (the queue answered
//! its last request and no stop was signalled) and 503 with the reason otherwise, so a
//! draining or cut-off worker is taken out of rotation without being restarted.
//! `GET /metrics` serves the worker's metrics in the Prometheus text format.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct Health {
    queue_ok: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The queue answered (or failed to answer) the last request.
    pub fn set_queue_ok(&self, ok: bool) {
        self.queue_ok.store(ok, Ordering::SeqCst);
    }

    /// The worker stopped taking work (stop signal, credential failure).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// `None` when ready, else why not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::SeqCst) {
            Some("draining: not taking new work")
        } else if !self.queue_ok.load(Ordering::SeqCst) {
            Some("the work queue is not answering")
        } else {
            None
        }
    }
}

pub fn router(health: Arc<Health>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/readyz", axum::routing::get(readyz))
        .route("/metrics", axum::routing::get(metrics))
        .with_state(health)
}

/// The Prometheus text exposition of this process's metrics (404 when the process keeps
/// none: telemetry was not set up for a scrape).
pub async fn metrics() -> axum::response::Response {
    match lakevault_common::telemetry::prometheus_text() {
        Some(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                lakevault_common::telemetry::PROMETHEUS_CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not kept by this process",
        )
            .into_response(),
    }
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match health.not_ready() {
        None => (StatusCode::OK, Json(serde_json::json!({ "ready": true }))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "reason": reason })),
        ),
    }
}

/// Serves the probes until `stop` (the process's final shutdown, after draining).
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let result = axum::serve(listener, router(health))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "health endpoints stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_queue_and_draining() {
        let h = Health::new();
        assert!(
            h.not_ready().is_some(),
            "not ready before the queue answered"
        );
        h.set_queue_ok(true);
        assert!(h.not_ready().is_none());
        h.set_queue_ok(false);
        assert_eq!(h.not_ready(), Some("the work queue is not answering"));
        h.set_queue_ok(true);
        h.set_draining();
        assert_eq!(h.not_ready(), Some("draining: not taking new work"));
    }
}
