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

/// What the signals ask of a binary: `stop` is cancelled by the first SIGTERM/SIGINT
/// (finish or release what is in flight), `abort` by the second (exit now).
#[derive(Debug, Clone, Default)]
pub struct Signals {
    pub stop: tokio_util::sync::CancellationToken,
    pub abort: tokio_util::sync::CancellationToken,
}

/// The binary's [`Signals`], driven by SIGTERM/SIGINT. The messages say what each signal
/// does for this binary. The binary's `main` decides how to exit on `abort` (code 130):
/// library code never ends the process.
pub fn cancel_on_signals(on_first: &'static str, on_second: &'static str) -> Signals {
    let signals = Signals::default();
    let driven = signals.clone();
    tokio::spawn(async move {
        // Said before acting: once `abort` is cancelled the process may exit at once.
        wait_for_signal().await;
        say(on_first);
        driven.stop.cancel();
        wait_for_signal().await;
        say(on_second);
        driven.abort.cancel();
    });
    signals
}

/// Tells the operator on stderr, if anyone still reads it: a log collector that went
/// away (a closed pipe) must not keep the signal from taking effect (`eprintln!` would
/// panic here and the signal would be lost). Never panics.
fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// The exit code of a process ended by a second signal (128 + SIGINT).
pub const ABORTED: i32 = 130;
