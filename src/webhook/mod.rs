//! Admission webhooks (HTTPS on :9443): `/validate-kataconfig`, `/mutate-pod`, `/validate-pod`.
//!
//! Layout: [`review`] is the thin HTTP layer (content type, body limit, parsing, metrics);
//! [`kataconfig`], [`pod`] and [`policy`] are pure decisions; [`snapshot`] is what they read of
//! the shared caches; [`registration`] keeps the operator's own webhook configurations current,
//! and, where the API server serves it, the ValidatingAdmissionPolicy [`admission_policy`]
//! builds from the same policy table (the namespace gate that survives a webhook outage).
//! Certificates come from [`crate::certs`]. Entry point: [`run`].

pub mod admission_policy;
pub mod kataconfig;
pub mod pod;
pub mod policy;
pub mod registration;
pub mod review;
pub mod snapshot;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tracing::{info, warn};

use crate::api::KataConfig;
use crate::cache::ClusterCache;
use crate::certs::CertStore;
use crate::certs::issue::{Lifetimes, service_hosts};
use crate::certs::secret::{SECRET_NAME, SecretConfig};
use crate::names::{MUTATE_POD_PATH, VALIDATE_KATACONFIG_PATH, VALIDATE_POD_PATH};
use crate::observability::Metrics;
use crate::observability::Readiness;

pub use registration::{Owner, Target};

/// Readiness component name.
pub const READINESS: &str = "webhook";
/// Longest a request may take end to end (body upload included), well under `timeoutSeconds`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the serving certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertMode {
    /// A self-managed CA and certificate in a Secret of the operator's namespace.
    Secret { name: String },
    /// `tls.crt`/`tls.key` (and optional `ca.crt`) in a directory, reloaded on change.
    Dir(PathBuf),
}

pub struct Config {
    pub namespace: String,
    pub cert_mode: CertMode,
    pub target: Target,
    pub owner: Owner,
    /// The certificate store; share it with the metrics server (`certs.resolver()`).
    pub certs: Arc<CertStore>,
}

impl Config {
    /// From the `run` flags: `--webhook-url` (else the Service), `--cert-dir` (else a Secret).
    pub fn from_run_args(
        args: &crate::cli::RunArgs,
        certs: Arc<CertStore>,
    ) -> anyhow::Result<Config> {
        let target = match &args.webhook_url {
            Some(url) => {
                url_host(url)?;
                Target::Url(url.clone())
            }
            None => Target::Service {
                namespace: args.namespace.clone(),
                name: args.webhook_service.clone(),
            },
        };
        Ok(Config {
            namespace: args.namespace.clone(),
            cert_mode: match &args.cert_dir {
                Some(d) => CertMode::Dir(d.clone()),
                None => CertMode::Secret {
                    name: SECRET_NAME.to_string(),
                },
            },
            target,
            owner: Owner::Crd,
            certs,
        })
    }

    /// Hosts the managed certificate must cover.
    pub fn cert_hosts(&self) -> anyhow::Result<Vec<String>> {
        Ok(match &self.target {
            Target::Url(url) => vec![url_host(url)?],
            Target::Service { namespace, name } => service_hosts(name, namespace),
        })
    }
}

/// The host of an `https://HOST[:PORT]` URL (brackets of an IPv6 literal removed).
pub fn url_host(url: &str) -> anyhow::Result<String> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("--webhook-url {url:?} is not a URL; use https://HOST:PORT"))?;
    if uri.scheme_str() != Some("https") {
        anyhow::bail!(
            "--webhook-url {url:?} must use https:// (the API server only calls webhooks over TLS)"
        );
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .with_context(|| format!("--webhook-url {url:?} has no host; use https://HOST:PORT"))?;
    Ok(host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string())
}

/// What the handlers share.
#[derive(Clone)]
pub struct WebhookState {
    cache: ClusterCache,
    operator_namespace: Arc<str>,
    kataconfig_metrics: Arc<review::AdmissionMetrics>,
    mutate_metrics: Arc<review::AdmissionMetrics>,
    validate_metrics: Arc<review::AdmissionMetrics>,
}

impl WebhookState {
    pub fn new(cache: ClusterCache, operator_namespace: &str, metrics: &Metrics) -> WebhookState {
        let m = |w| Arc::new(review::AdmissionMetrics::new(metrics, w));
        WebhookState {
            cache,
            operator_namespace: Arc::from(operator_namespace),
            kataconfig_metrics: m("validate-kataconfig"),
            mutate_metrics: m("mutate-pod"),
            validate_metrics: m("validate-pod"),
        }
    }
}

async fn validate_kataconfig(
    State(s): State<WebhookState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Node selection is linear in the node count: off the async workers.
    let joined = tokio::task::spawn_blocking(move || {
        review::handle::<KataConfig, _>(&s.kataconfig_metrics, &headers, &body, |req| {
            let env = snapshot::kata_env(&s.cache);
            kataconfig::validate(
                &req.operation,
                req.object.as_ref(),
                req.old_object.as_ref(),
                &env,
            )
        })
    })
    .await;
    joined.unwrap_or_else(|e| {
        warn!(error = %e, "KataConfig review task failed");
        axum::response::IntoResponse::into_response((
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
        ))
    })
}

fn pod_review(
    s: &WebhookState,
    metrics: &review::AdmissionMetrics,
    headers: &HeaderMap,
    body: &Bytes,
    decide: fn(
        &pod::PodView,
        &str,
        &kube::core::admission::Operation,
        &snapshot::PodEnv,
    ) -> review::Verdict,
) -> Response {
    review::handle::<pod::PodView, _>(metrics, headers, body, |req| {
        let Some(p) = req.object.as_ref() else {
            return review::Verdict::allow();
        };
        let ns = req
            .namespace
            .as_deref()
            .or(p.metadata.namespace.as_deref())
            .unwrap_or_default();
        let env = snapshot::pod_env(&s.cache, ns, &s.operator_namespace);
        decide(p, ns, &req.operation, &env)
    })
}

async fn mutate_pod(State(s): State<WebhookState>, headers: HeaderMap, body: Bytes) -> Response {
    pod_review(&s, &s.mutate_metrics, &headers, &body, pod::mutate)
}

async fn validate_pod(State(s): State<WebhookState>, headers: HeaderMap, body: Bytes) -> Response {
    pod_review(&s, &s.validate_metrics, &headers, &body, pod::validate)
}

/// The three endpoints with their body limit and time bound.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route(VALIDATE_KATACONFIG_PATH, post(validate_kataconfig))
        .route(MUTATE_POD_PATH, post(mutate_pod))
        .route(VALIDATE_POD_PATH, post(validate_pod))
        .layer(DefaultBodyLimit::max(review::MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

/// Runs the webhook server on `listener`, certificate management and registration until
/// `shutdown`, reading the process's shared caches. Ready (component `webhook`) once they are
/// synced and a certificate is loaded. Needs no leadership: every replica serves.
pub async fn run(
    client: kube::Client,
    cache: ClusterCache,
    config: Config,
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    readiness.register(READINESS);
    let certs = config.certs.clone();
    start_certificates(&client, &config, &shutdown).await?;
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "webhook server listening");
    }
    let state = WebhookState::new(cache.clone(), &config.namespace, &metrics);
    let registration = registration::RegistrationConfig {
        target: config.target.clone(),
        owner: config.owner.clone(),
        operator_namespace: config.namespace.clone(),
        resync: Duration::from_secs(600),
    };
    tokio::spawn(register_when_ready(
        client,
        registration,
        cache,
        certs.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));
    let tls = crate::server::tls_config(certs.resolver());
    crate::server::serve(listener, router(state), Some(tls), shutdown).await?;
    readiness.set(READINESS, false);
    Ok(())
}

/// Keeps the serving certificate in the store current: the self-managed Secret, or the files
/// of `--cert-dir`.
async fn start_certificates(
    client: &kube::Client,
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let certs = config.certs.clone();
    match &config.cert_mode {
        CertMode::Secret { name } => {
            let cfg = SecretConfig {
                namespace: config.namespace.clone(),
                name: name.clone(),
                hosts: config.cert_hosts()?,
                lifetimes: Lifetimes::default(),
            };
            tokio::spawn(crate::certs::secret::run(
                client.clone(),
                cfg,
                certs,
                shutdown.clone(),
            ));
        }
        CertMode::Dir(dir) => {
            if let Err(e) = crate::certs::dir::load_once(&certs, dir).await {
                warn!(error = %e, "no serving certificate yet; waiting for the files");
            }
            tokio::spawn(crate::certs::dir::watch(
                certs,
                dir.clone(),
                crate::certs::dir::DEFAULT_POLL,
                shutdown.clone(),
            ));
        }
    }
    Ok(())
}

/// Once the caches are synced and a certificate is loaded: ready, then keep the webhook
/// configurations registered (nothing is registered before we can answer).
async fn register_when_ready(
    client: kube::Client,
    registration: registration::RegistrationConfig,
    cache: ClusterCache,
    certs: Arc<CertStore>,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let mut changes = certs.subscribe();
    let ready = async {
        cache.wait_synced().await?;
        while !certs.is_loaded() {
            changes.changed().await?;
        }
        anyhow::Ok(())
    };
    tokio::select! {
        r = ready => if let Err(e) = r {
            warn!(error = %e, "webhook caches or certificate never became ready");
            return;
        },
        () = shutdown.cancelled() => return,
    }
    readiness.set(READINESS, true);
    info!("webhooks ready");
    registration::run(client, registration, cache, certs, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_url_host_covers_names_and_ips() {
        assert_eq!(url_host("https://127.0.0.1:9443").expect("ok"), "127.0.0.1");
        assert_eq!(url_host("https://[::1]:9443").expect("ok"), "::1");
        assert_eq!(
            url_host("https://dev.example:9443/x").expect("ok"),
            "dev.example"
        );
        let e = url_host("http://127.0.0.1:9443").expect_err("http");
        assert!(e.to_string().contains("must use https://"), "{e}");
        let e = url_host("not a url").expect_err("junk");
        assert!(e.to_string().contains("use https://HOST:PORT"), "{e}");
    }
}
