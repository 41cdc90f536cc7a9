//! Observability of the running operator: the metric registry ([`metrics`]) and the `/metrics`
//! endpoint (HTTPS with TokenReview/SubjectAccessReview, or plain HTTP with
//! `--metrics-insecure`), readiness ([`readiness`]) and liveness ([`liveness`]) bookkeeping and the `/healthz`
//! and `/readyz` endpoints, structured logging and the process shutdown signal. The listeners use
//! `crate::server`.

pub mod auth;
pub mod health_server;
pub mod liveness;
pub mod logging;
pub mod metrics;
pub mod metrics_server;
pub mod readiness;
pub mod signals;

pub use auth::{
    AccessDecision, AuthError, Authorizer, BearerToken, CachedAuthorizer, KubeAuthorizer, UserInfo,
    kube_authorizer,
};
pub use health_server::{health_router, serve_health};
pub use liveness::{Heartbeat, Liveness, Wedged};
pub use logging::init as init_logging;
pub use metrics::Metrics;
pub use metrics_server::{MetricsSecurity, metrics_router, serve_metrics};
pub use readiness::Readiness;
pub use signals::shutdown_on_signal;
