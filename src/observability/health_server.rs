//! `:8081/healthz` (alive unless a task is wedged: [`super::liveness`]) and `/readyz` (ready once
//! every registered component — informer caches, listeners — reports ready). Plain HTTP: it
//! carries no data.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::liveness::Liveness;
use super::readiness::Readiness;

pub const HEALTHZ_PATH: &str = "/healthz";
pub const READYZ_PATH: &str = "/readyz";

/// The `/healthz` and `/readyz` router.
pub fn health_router(readiness: Readiness, liveness: Liveness) -> Router {
    Router::new()
        .route(HEALTHZ_PATH, get(healthz))
        .with_state(liveness)
        .route(READYZ_PATH, get(readyz).with_state(readiness))
}

/// Serves the health endpoints on `listener` until `shutdown`.
pub async fn serve_health(
    listener: TcpListener,
    readiness: Readiness,
    liveness: Liveness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    info!(addr = %listener.local_addr()?, "serving /healthz and /readyz");
    crate::server::serve(listener, health_router(readiness, liveness), None, shutdown).await
}

async fn healthz(State(liveness): State<Liveness>) -> (StatusCode, String) {
    match liveness.check() {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(wedged) => {
            let list: Vec<String> = wedged.iter().map(ToString::to_string).collect();
            tracing::error!(wedged = %list.join("; "), "liveness check failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("wedged: {}\n", list.join("; ")),
            )
        }
    }
}

async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, String) {
    match readiness.check() {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(waiting) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: waiting for {}\n", waiting.join(", ")),
        ),
    }
}
