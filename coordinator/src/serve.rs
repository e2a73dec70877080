//! `serve`: a long-running coordinator with an HTTP API for ingestion pipelines ("this
//! container/prefix changed, back it up now") and an optional cron schedule.
//!
//! - `POST /v1/backups` `{"account": "<source alias>", "container": "...", "prefix": "..."}`
//!   plans a backup of that scope (a full diff of just that scope, so changes and
//!   deletions there are both seen) and answers `202 {"job": "...", "status_url": "..."}`.
//! - `GET /v1/jobs/{id}` returns the job's status from the ledger.
//! - `GET /healthz` answers `ok` (no authentication).
//! - `GET /metrics` serves the service's metrics in the Prometheus text format (no
//!   authentication, like `/healthz`: request counts by route and status, jobs started,
//!   process figures; nothing about the data).
//!
//! Every `/v1` request needs `Authorization: Bearer <token>`; the token comes from
//! `LAKEVAULT_API_TOKEN` or a file. Without it: 401, and nothing is enqueued.

use crate::backup::{self, BackupOptions, Mode};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lakevault_common::config::{Config, SPECIAL_CONTAINERS, validate_container_name};
use lakevault_common::error::describe;
use lakevault_common::ledger::{self, JobStatus};
use lakevault_common::queue::AzureQueue;
use lakevault_common::record::rfc3339;
use lakevault_common::secret::SecretString;
use lakevault_common::storage::StorageAccount;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything a request handler needs.
pub struct ServeState {
    pub config: Config,
    pub source: StorageAccount,
    pub destination: StorageAccount,
    pub queue: AzureQueue,
    pub ledger: StorageAccount,
    pub token: SecretString,
    pub defaults: BackupOptions,
    /// Jobs accepted by this process whose plan is not in the ledger yet.
    jobs: Mutex<HashMap<String, Accepted>>,
    cancel: CancellationToken,
    /// Every plan task and the schedule: awaited before the process exits, so no plan is
    /// cut off between enqueueing its work and writing its ledger record.
    tasks: TaskTracker,
    /// Plans running at once; the others wait for a permit.
    planning: Arc<Semaphore>,
    limits: PlanLimits,
}

/// How much planning one serving coordinator takes on.
#[derive(Debug, Clone, Copy)]
pub struct PlanLimits {
    /// Plans running at once (each lists two accounts and enqueues).
    pub concurrent: usize,
    /// Accepted jobs not planned yet, beyond which a request is answered 503.
    pub waiting: usize,
}

impl PlanLimits {
    /// Whether one more job is taken on while `planning` are running or waiting.
    fn admits(&self, planning: usize) -> bool {
        planning < self.concurrent.max(1).saturating_add(self.waiting)
    }
}

impl Default for PlanLimits {
    fn default() -> Self {
        Self {
            concurrent: 4,
            waiting: 64,
        }
    }
}

/// A job accepted by this process, before its plan is in the ledger.
#[derive(Debug, Clone)]
enum Accepted {
    Planning,
    Failed(String),
}

impl std::fmt::Debug for ServeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeState").finish_non_exhaustive()
    }
}

impl ServeState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        source: StorageAccount,
        destination: StorageAccount,
        queue: AzureQueue,
        ledger: StorageAccount,
        token: SecretString,
        defaults: BackupOptions,
        limits: PlanLimits,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            tasks: TaskTracker::new(),
            planning: Arc::new(Semaphore::new(limits.concurrent.max(1))),
            limits,
            config,
            source,
            destination,
            queue,
            ledger,
            token,
            defaults,
            jobs: Mutex::default(),
            cancel,
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Accepted>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts a job unless too many are waiting to be planned already.
    fn admit(&self, job: &str) -> bool {
        let mut jobs = self.jobs();
        let planning = jobs
            .values()
            .filter(|s| matches!(s, Accepted::Planning))
            .count();
        if !self.limits.admits(planning) {
            return false;
        }
        jobs.insert(job.to_string(), Accepted::Planning);
        true
    }

    /// Waits for the plans and the schedule to finish (they stop early once cancelled).
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Runs `task` on the runtime, tracked so that [`ServeState::drain`] waits for it.
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Constant-time comparison of the presented bearer token with the configured one.
fn authorized(state: &ServeState, headers: &HeaderMap) -> bool {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = state.token.expose().as_bytes();
    let presented = presented.as_bytes();
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRequest {
    account: String,
    container: String,
    #[serde(default)]
    prefix: Option<String>,
}

pub fn router(state: Arc<ServeState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/backups", post(post_backup))
        .route("/v1/jobs/{id}", get(get_job))
        .route_layer(axum::middleware::from_fn(count_request))
        .fallback(|| async {
            lakevault_common::metrics::http_request("unmatched", 404);
            StatusCode::NOT_FOUND
        })
        .with_state(state)
}

/// Counts every answered request by its route template (never the raw path: job ids
/// would make a label per job) and status.
async fn count_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    lakevault_common::metrics::http_request(&route, response.status().as_u16());
    response
}

async fn metrics() -> Response {
    match lakevault_common::telemetry::prometheus_text() {
        Some(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                lakevault_common::telemetry::PROMETHEUS_CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "metrics are not kept by this process",
        ),
    }
}

async fn post_backup(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let request: BackupRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be JSON {{\"account\", \"container\", \"prefix\"?}}: {e}"),
            );
        }
    };
    if request.account != state.config.backup.source {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "account `{}` is not this coordinator's source (`{}`)",
                request.account, state.config.backup.source
            ),
        );
    }
    if !SPECIAL_CONTAINERS.contains(&request.container.as_str())
        && let Err(problem) = validate_container_name(&request.container)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("container `{}` {problem}", request.container),
        );
    }
    let mut config = state.config.clone();
    config.backup = match scope(
        &config.backup,
        &request.container,
        request.prefix.as_deref(),
    ) {
        Ok(scoped) => scoped,
        Err(problem) => return error(StatusCode::FORBIDDEN, problem),
    };
    let job = uuid::Uuid::new_v4().to_string();
    if !state.admit(&job) {
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} backups are waiting to be planned already; retry later",
                state
                    .limits
                    .concurrent
                    .max(1)
                    .saturating_add(state.limits.waiting)
            ),
        );
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("30"),
        );
        return response;
    }
    let scoped_to_prefix = request.prefix.as_deref().is_some_and(|p| !p.is_empty());
    let options = BackupOptions {
        job_id: job.clone(),
        mode: Mode::Full,
        // A prefix-scoped scan must not move the whole container's watermark.
        write_watermarks: !scoped_to_prefix,
        ..state.defaults.clone()
    };
    tracing::info!(%job, container = %request.container, "backup requested over the API");
    lakevault_common::metrics::job_started("api");
    spawn_plan(state.clone(), config, options);
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "job": job, "status_url": format!("/v1/jobs/{job}") })),
    )
        .into_response()
}

/// Plans a job in the background, once a planning permit is free. Stopped before its
/// turn came, the job is marked failed (nothing was enqueued for it).
fn spawn_plan(state: Arc<ServeState>, config: Config, options: BackupOptions) {
    let tracked = state.clone();
    tracked.spawn(async move {
        let permit = tokio::select! {
            permit = state.planning.clone().acquire_owned() => permit,
            _ = state.cancel.cancelled() => {
                state.jobs().insert(
                    options.job_id.clone(),
                    Accepted::Failed("stopped before planning began; nothing was enqueued".into()),
                );
                return;
            }
        };
        let _permit = permit;
        plan_job(state, config, options).await;
    });
}

/// Plans one job and records it in the ledger.
async fn plan_job(state: Arc<ServeState>, config: Config, options: BackupOptions) {
    let started_at = rfc3339(time::OffsetDateTime::now_utc());
    let job = options.job_id.clone();
    let result = backup::run(
        &config,
        &state.source,
        &state.destination,
        &state.queue,
        &options,
        &state.cancel,
    )
    .await;
    match result {
        Ok(report) => {
            let plan = report.job_plan(options.mode, started_at);
            match ledger::write_plan(&state.ledger, &plan).await {
                Ok(()) => {
                    state.jobs().remove(&job);
                }
                Err(e) => {
                    let reason =
                        format!("planned, but the ledger was not written: {}", describe(&e));
                    state.jobs().insert(job, Accepted::Failed(reason));
                }
            }
        }
        Err(e) => {
            let reason = lakevault_common::error::chain(&e);
            tracing::error!(%job, %reason, "planning failed");
            state.jobs().insert(job, Accepted::Failed(reason));
        }
    }
}

async fn get_job(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let pending = state.jobs().get(&id).cloned();
    if let Some(Accepted::Failed(reason)) = pending {
        return Json(serde_json::json!({ "job": id, "state": "failed", "reason": reason }))
            .into_response();
    }
    match ledger::read_job(&state.ledger, &id).await {
        Ok(record) if record.plan.is_none() && record.outcomes.is_empty() => match pending {
            Some(_) => Json(serde_json::json!({ "job": id, "state": "planning" })).into_response(),
            None => error(StatusCode::NOT_FOUND, format!("no job `{id}`")),
        },
        Ok(record) => Json(JobStatus::from_record(&id, record)).into_response(),
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            format!("reading the ledger: {}", describe(&e)),
        ),
    }
}

/// Runs scheduled backups of the whole configured scope until cancelled.
pub async fn run_schedule(state: Arc<ServeState>, schedule: croner::Cron, mode: Mode) {
    loop {
        let now = chrono::Utc::now();
        let Ok(next) = schedule.find_next_occurrence(&now, false) else {
            tracing::error!("the schedule has no next occurrence; scheduled backups stop");
            return;
        };
        let wait = (next - now).to_std().unwrap_or_default();
        tracing::info!(next = %next.to_rfc3339(), "next scheduled backup");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.cancel.cancelled() => return,
        }
        let options = BackupOptions {
            job_id: uuid::Uuid::new_v4().to_string(),
            mode,
            write_watermarks: true,
            ..state.defaults.clone()
        };
        tracing::info!(job = %options.job_id, ?mode, "scheduled backup starting");
        lakevault_common::metrics::job_started("schedule");
        state
            .jobs()
            .insert(options.job_id.clone(), Accepted::Planning);
        // One scheduled run at a time: the next tick waits for this plan to finish.
        let _permit = tokio::select! {
            permit = state.planning.clone().acquire_owned() => permit,
            _ = state.cancel.cancelled() => return,
        };
        plan_job(state.clone(), state.config.clone(), options).await;
    }
}

/// The configured selection narrowed to what a request asks for, never widened: the
/// container must be one the configuration selects (and never lakevault's own state
/// container unless configured by name), and a prefix must fall inside the configured
/// include prefixes. Exclusions and patterns stay as configured.
fn scope(
    configured: &lakevault_common::config::BackupConfig,
    container: &str,
    prefix: Option<&str>,
) -> Result<lakevault_common::config::BackupConfig, String> {
    let state_container = lakevault_common::ledger::STATE_CONTAINER;
    let named = configured.containers.iter().any(|c| c == container);
    if !configured.selects_container(container) || (container == state_container && !named) {
        return Err(format!(
            "container `{container}` is not in this coordinator's selection (backup.containers = {:?})",
            configured.containers
        ));
    }
    let mut scoped = configured.clone();
    scoped.containers = vec![container.to_string()];
    if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
        scoped.include_prefixes = if configured.include_prefixes.is_empty() {
            vec![prefix.to_string()]
        } else {
            // The intersection of two prefixes is the longer one, when one extends the other.
            configured
                .include_prefixes
                .iter()
                .filter_map(|p| {
                    if prefix.starts_with(p.as_str()) {
                        Some(prefix.to_string())
                    } else if p.starts_with(prefix) {
                        Some(p.clone())
                    } else {
                        None
                    }
                })
                .collect()
        };
        if scoped.include_prefixes.is_empty() {
            return Err(format!(
                "prefix `{prefix}` is outside the configured include_prefixes {:?}",
                configured.include_prefixes
            ));
        }
    }
    Ok(scoped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_requests_stay_inside_the_configured_selection() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let configured = lakevault_common::config::BackupConfig {
            source: "lake".into(),
            destination: "vault".into(),
            containers: strings(&["raw-*", "curated"]),
            container_template: "{container}".into(),
            include_prefixes: strings(&["sales/", "hr/2026/"]),
            exclude_prefixes: Vec::new(),
            include_patterns: Vec::new(),
            exclude_patterns: strings(&["*.tmp"]),
        };
        let ok = scope(&configured, "raw-eu", Some("sales/2026/")).unwrap();
        assert_eq!(ok.containers, ["raw-eu"]);
        assert_eq!(ok.include_prefixes, ["sales/2026/"]);
        assert_eq!(ok.exclude_patterns, ["*.tmp"], "exclusions stay");
        // A wider prefix is narrowed to what is configured, not widened.
        assert_eq!(
            scope(&configured, "curated", Some("hr/"))
                .unwrap()
                .include_prefixes,
            ["hr/2026/"]
        );
        assert_eq!(
            scope(&configured, "curated", None)
                .unwrap()
                .include_prefixes,
            ["sales/", "hr/2026/"]
        );
        for (container, prefix) in [
            ("lakevault-state", None),
            ("finance", None),
            ("raw-eu", Some("hr/2025/")),
            ("raw-eu", Some("secrets/")),
        ] {
            let e = scope(&configured, container, prefix).expect_err(container);
            assert!(
                e.contains("not in this coordinator's selection") || e.contains("outside"),
                "{e}"
            );
        }
        // The state container only when configured by name.
        let mut everything = configured.clone();
        everything.containers = vec!["*".into()];
        assert!(scope(&everything, "lakevault-state", None).is_err());
        everything.containers.push("lakevault-state".into());
        assert!(scope(&everything, "lakevault-state", None).is_ok());
    }

    #[test]
    fn admission_counts_running_and_waiting_plans() {
        let limits = PlanLimits {
            concurrent: 2,
            waiting: 3,
        };
        assert!(limits.admits(0));
        assert!(limits.admits(4));
        assert!(!limits.admits(5), "2 running + 3 waiting is the most");
        let none_waiting = PlanLimits {
            concurrent: 1,
            waiting: 0,
        };
        assert!(none_waiting.admits(0));
        assert!(!none_waiting.admits(1));
        // A zero concurrency would deadlock every plan; it counts as one.
        let zero = PlanLimits {
            concurrent: 0,
            waiting: 0,
        };
        assert!(zero.admits(0));
        assert!(!zero.admits(1));
    }
}
