//! Signal handling for the binaries: SIGTERM (Kubernetes, systemd) and SIGINT (Ctrl-C)
//! both mean "stop taking work, finish or release what is in flight".

/// Resolves on the next SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A token cancelled by the first SIGTERM/SIGINT; a second signal exits the process at
/// once with code 130. The messages say what each signal does for this binary.
pub fn cancel_on_signals(
    on_first: &'static str,
    on_second: &'static str,
) -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("{on_first}");
        cancel.cancel();
        wait_for_signal().await;
        eprintln!("{on_second}");
        std::process::exit(130);
    });
    token
}
