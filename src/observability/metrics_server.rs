//! `:8443/metrics`: HTTPS with bearer-token authentication and authorization by default, plain
//! HTTP without either under `--metrics-insecure`. No side-car proxy needed.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::auth::{AccessDecision, Authorizer, BearerToken, METRICS_PATH, METRICS_VERB, one_line};
use super::metrics::Metrics;

/// Longest a scrape waits for the API server's reviews; Prometheus gives up after its own
/// scrape timeout (10 s by default) anyway, and a stuck review must not pin a connection.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Content type of the Prometheus text exposition format the registry encodes.
pub const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How `/metrics` is protected.
pub enum MetricsSecurity {
    /// Plain HTTP, no authentication (`--metrics-insecure`, local use only).
    Insecure,
    /// TLS, and every request needs a bearer token allowed to `get` `/metrics`.
    Secure {
        tls: Arc<rustls::ServerConfig>,
        authorizer: Arc<dyn Authorizer>,
    },
}

#[derive(Clone)]
struct MetricsState {
    metrics: Arc<Metrics>,
    authorizer: Option<Arc<dyn Authorizer>>,
}

/// The `/metrics` router; with an authorizer every request is authenticated and authorized.
pub fn metrics_router(metrics: Arc<Metrics>, authorizer: Option<Arc<dyn Authorizer>>) -> Router {
    Router::new()
        .route(METRICS_PATH, get(scrape))
        .with_state(MetricsState {
            metrics,
            authorizer,
        })
}

/// Serves `/metrics` on `listener` until `shutdown`, then drains in-flight scrapes.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    security: MetricsSecurity,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    match security {
        MetricsSecurity::Insecure => {
            warn!(%addr, "serving /metrics over plain HTTP without authentication (--metrics-insecure)");
            crate::server::serve(listener, metrics_router(metrics, None), None, shutdown).await
        }
        MetricsSecurity::Secure { tls, authorizer } => {
            info!(%addr, "serving /metrics over HTTPS with TokenReview/SubjectAccessReview");
            let router = metrics_router(metrics, Some(authorizer));
            crate::server::serve(listener, router, Some(tls), shutdown).await
        }
    }
}

async fn scrape(State(state): State<MetricsState>, headers: HeaderMap) -> Response {
    if let Some(authorizer) = &state.authorizer
        && let Err(denied) = check(authorizer.as_ref(), &headers).await
    {
        return denied;
    }
    (
        [(header::CONTENT_TYPE, EXPOSITION_CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

/// `Ok` when the request's token may read `/metrics`, else the 401/403/500 to send.
async fn check(authorizer: &dyn Authorizer, headers: &HeaderMap) -> Result<(), Response> {
    let token = BearerToken::from_headers(headers).map_err(|reason| {
        debug!(%reason, "metrics request without a usable bearer token");
        unauthorized(&reason)
    })?;
    let Ok(review) = tokio::time::timeout(REVIEW_TIMEOUT, authorizer.review(&token)).await else {
        warn!(timeout = ?REVIEW_TIMEOUT, "metrics request review timed out");
        return Err(plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!(
                "could not check the bearer token: the API server did not answer within {}s",
                REVIEW_TIMEOUT.as_secs()
            ),
        ));
    };
    match review {
        Ok(AccessDecision::Allowed { user }) => {
            debug!(user = %user.username, "metrics scrape authorized");
            Ok(())
        }
        Ok(AccessDecision::Unauthenticated { reason }) => {
            debug!(%reason, "metrics request with a token that does not authenticate");
            Err(unauthorized(&reason))
        }
        Ok(AccessDecision::Forbidden { user, reason }) => {
            info!(user = %user.username, %reason, "metrics request forbidden");
            let mut message = format!(
                "forbidden: user {:?} may not {METRICS_VERB} the non-resource URL {METRICS_PATH} \
                 (needs RBAC nonResourceURLs [\"{METRICS_PATH}\"] verbs [\"{METRICS_VERB}\"])",
                user.username
            );
            if !reason.is_empty() {
                message.push_str(": ");
                message.push_str(&reason);
            }
            Err(plain(StatusCode::FORBIDDEN, &message))
        }
        Err(e) => {
            warn!(error = %e, "could not review a metrics request");
            Err(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("could not check the bearer token: {e}"),
            ))
        }
    }
}

fn unauthorized(reason: &str) -> Response {
    let mut response = plain(StatusCode::UNAUTHORIZED, &format!("unauthorized: {reason}"));
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// A one-line `text/plain` body.
fn plain(status: StatusCode, message: &str) -> Response {
    (status, format!("{}\n", one_line(message))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::auth::AuthError;
    use futures::future::BoxFuture;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// Never answers, like an API server that accepted the connection and hung.
    struct Hanging;

    impl Authorizer for Hanging {
        fn review<'a>(
            &'a self,
            _token: &'a BearerToken,
        ) -> BoxFuture<'a, Result<AccessDecision, AuthError>> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_review_ends_in_500_after_the_timeout() {
        let router = metrics_router(Arc::new(Metrics::new()), Some(Arc::new(Hanging)));
        let request = http::Request::get(METRICS_PATH)
            .header(header::AUTHORIZATION, "Bearer some-token")
            .body(axum::body::Body::empty())
            .expect("request");
        let response = router.oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(
            body,
            "could not check the bearer token: the API server did not answer within 10s\n"
        );
    }
}
