//! `:8081/healthz` (alive while the process serves) and `/readyz` (ready once every registered
//! component — informer caches, listeners — reports ready). Plain HTTP: it carries no data.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::readiness::Readiness;

pub const HEALTHZ_PATH: &str = "/healthz";
pub const READYZ_PATH: &str = "/readyz";

/// The `/healthz` and `/readyz` router.
pub fn health_router(readiness: Readiness) -> Router {
    Router::new()
        .route(HEALTHZ_PATH, get(|| async { "ok\n" }))
        .route(READYZ_PATH, get(readyz))
        .with_state(readiness)
}

/// Serves the health endpoints on `listener` until `shutdown`.
pub async fn serve_health(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    info!(addr = %listener.local_addr()?, "serving /healthz and /readyz");
    crate::server::serve(listener, health_router(readiness), None, shutdown).await
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
