//! `serve`: the HTTP trigger and the schedule.

use super::{Env, ScanArgs};
use crate::backup::{BackupOptions, Mode};
use anyhow::Context;
use lakevault_common::queue::AzureQueue;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LAKEVAULT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// File holding the API bearer token (otherwise LAKEVAULT_API_TOKEN).
    #[arg(long, env = "LAKEVAULT_API_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Cron expression (5 fields, UTC) for scheduled backups of the configured scope.
    #[arg(long, env = "LAKEVAULT_SCHEDULE")]
    pub schedule: Option<String>,
    /// Mode of scheduled backups.
    #[arg(
        long,
        env = "LAKEVAULT_SCHEDULE_MODE",
        value_enum,
        default_value = "incremental"
    )]
    pub schedule_mode: Mode,
    /// See `backup --max-tombstones`.
    #[arg(long, env = "LAKEVAULT_MAX_TOMBSTONES", default_value_t = 1000)]
    pub max_tombstones: u64,
    /// See `backup --safety-margin-secs`.
    #[arg(long, env = "LAKEVAULT_SAFETY_MARGIN_SECS", default_value_t = 900)]
    pub safety_margin_secs: u64,
    /// Backups planned at once (requested over the API or scheduled); the others wait.
    #[arg(long, env = "LAKEVAULT_MAX_CONCURRENT_PLANS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent_plans: u64,
    /// Requested backups waiting for a planning slot, beyond which requests are answered
    /// 503 with Retry-After.
    #[arg(long, env = "LAKEVAULT_MAX_WAITING_PLANS", default_value_t = 64)]
    pub max_waiting_plans: usize,
    #[command(flatten)]
    pub scan: ScanArgs,
}

pub(super) async fn run(env: &Env, args: ServeArgs) -> anyhow::Result<i32> {
    let config = &env.config;
    let account = |alias: &str| env.account(alias);
    let cancel = env.cancel.clone();
    let token = match (&args.token_file, std::env::var("LAKEVAULT_API_TOKEN")) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map(|t| t.trim().to_string())
            .with_context(|| format!("--token-file {}", path.display()))?,
        (None, Ok(token)) => token.trim().to_string(),
        (None, Err(_)) => anyhow::bail!(
            "serve needs an API bearer token: set LAKEVAULT_API_TOKEN or --token-file"
        ),
    };
    if token.len() < 16 {
        anyhow::bail!("the API bearer token must be at least 16 characters");
    }
    let schedule = args
        .schedule
        .as_deref()
        .map(|expr| {
            expr.parse::<croner::Cron>()
                .map_err(|e| anyhow::anyhow!("--schedule `{expr}` is not a cron expression: {e}"))
        })
        .transpose()?;
    let queue_account = account(&config.queue.account)?;
    let state = std::sync::Arc::new(crate::serve::ServeState::new(
        config.clone(),
        account(&config.backup.source)?,
        account(&config.backup.destination)?,
        AzureQueue::new(&config.queue.name, queue_account.queue(&config.queue.name)?),
        queue_account,
        lakevault_common::secret::SecretString::new(token),
        {
            let mut options = BackupOptions {
                max_tombstones: args.max_tombstones,
                safety_margin: std::time::Duration::from_secs(args.safety_margin_secs),
                ..Default::default()
            };
            args.scan.apply(&mut options);
            options
        },
        crate::serve::PlanLimits {
            concurrent: usize::try_from(args.max_concurrent_plans).unwrap_or(usize::MAX),
            waiting: args.max_waiting_plans,
        },
        cancel.clone(),
    ));
    if let Some(schedule) = schedule {
        state.spawn(crate::serve::run_schedule(
            state.clone(),
            schedule,
            args.schedule_mode,
        ));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    println!(
        "lakevault-coordinator serving on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, crate::serve::router(state.clone()))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await?;
    // Plans in flight stop at their next listing entry; wait for them.
    state.drain().await;
    Ok(lakevault_common::exit::OK)
}
