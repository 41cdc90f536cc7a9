//! One shutdown signal for the whole process: SIGTERM (kubelet) or SIGINT (Ctrl-C) cancels a
//! `CancellationToken` that every task holds a clone or child of. A second signal exits at once
//! for when draining hangs.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Returns the process shutdown token and spawns the task that cancels it on the first SIGTERM
/// or SIGINT. Must be called inside the Tokio runtime. The signal handlers are installed before
/// this returns, so a signal sent afterwards is never missed.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    spawn_listener(token.clone());
    token
}

#[cfg(unix)]
fn spawn_listener(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop the process gracefully");
            spawn_ctrl_c(token);
            return;
        }
    };
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = first, "shutting down: finishing in-flight work");
        token.cancel();
        let (second, code) = tokio::select! {
            _ = term.recv() => ("SIGTERM", 143),
            _ = int.recv() => ("SIGINT", 130),
        };
        warn!(signal = second, "second signal: exiting without waiting");
        std::process::exit(code);
    });
}

#[cfg(not(unix))]
fn spawn_listener(token: CancellationToken) {
    spawn_ctrl_c(token);
}

fn spawn_ctrl_c(token: CancellationToken) {
    tokio::spawn(async move {
        match tokio::signal::ctrl_c().await {
            Ok(()) => {
                info!(signal = "SIGINT", "shutting down: finishing in-flight work");
                token.cancel();
            }
            Err(e) => warn!(error = %e, "cannot listen for Ctrl-C"),
        }
    });
}
