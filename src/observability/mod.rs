//! Observability of the running operator: the `/metrics` endpoint (HTTPS with
//! TokenReview/SubjectAccessReview, or plain HTTP with `--metrics-insecure`), the `/healthz` and
//! `/readyz` endpoints, structured logging and the process shutdown signal.
//!
//! The metric families themselves live in `crate::metrics`; the listeners use `crate::server`.

pub mod auth;
pub mod health_server;
pub mod logging;
pub mod metrics_server;
pub mod signals;

pub use auth::{
    AuthError, Authorizer, BearerToken, CachedAuthorizer, Decision, KubeAuthorizer, UserInfo,
    kube_authorizer,
};
pub use health_server::{health_router, serve_health};
pub use logging::init as init_logging;
pub use metrics_server::{MetricsSecurity, metrics_router, serve_metrics};
pub use signals::shutdown_on_signal;
