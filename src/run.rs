//! `sandboxed-containers-operator run`: one process, one shutdown signal fanned out to the
//! reconciler (under leader election), the webhook server, the metrics server and the health
//! server. Any task failing stops the others and the process exits non-zero.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::cache::ClusterCache;
use crate::certs::CertStore;
use crate::cli::RunArgs;
use crate::observability::{self, Metrics, MetricsSecurity, Readiness};

/// How long a TokenReview/SubjectAccessReview decision is reused for the same token.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(60);

/// Entry point of `run`: logging, the signal handler and the in-cluster (or kubeconfig) client.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    observability::init_logging(args.log_format)?;
    let shutdown = observability::shutdown_on_signal();
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client: run in a pod or set KUBECONFIG")?;
    run_with(
        client,
        args,
        Arc::new(Metrics::new()),
        Readiness::new(),
        shutdown,
    )
    .await
}

/// A part of the process: its name (for logs) and the future that runs it to the end.
type Part = (&'static str, BoxFuture<'static, anyhow::Result<()>>);

/// Runs every enabled part against `client` until `shutdown` (tests drive this in-process).
pub async fn run_with(
    client: kube::Client,
    args: RunArgs,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let certs = CertStore::new(Some(metrics.clone()));
    // One watch per shared kind, read by the reconciler and the webhooks alike.
    let cluster = (!args.disable_controller || !args.disable_webhooks).then(|| {
        ClusterCache::start_with(
            client.clone(),
            metrics.clone(),
            Duration::from_secs(args.discovery_interval_seconds),
            shutdown.clone(),
        )
    });

    let mut parts: Vec<Part> = Vec::new();
    let health = bind(args.health_bind, "health").await?;
    parts.push((
        "health",
        Box::pin({
            let (readiness, shutdown) = (readiness.clone(), shutdown.clone());
            async move { Ok(observability::serve_health(health, readiness, shutdown).await?) }
        }),
    ));
    if let Some(cluster) = cluster.clone().filter(|_| !args.disable_webhooks) {
        let config = crate::webhook::Config::from_run_args(&args, certs.clone())?;
        parts.push((
            "webhook",
            Box::pin(crate::webhook::run(
                client.clone(),
                cluster,
                config,
                metrics.clone(),
                readiness.clone(),
                shutdown.clone(),
            )),
        ));
    }
    if !args.disable_metrics {
        let listener = bind(args.metrics_bind, "metrics").await?;
        let security = metrics_security(&args, &client, &certs)?;
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        parts.push((
            "metrics",
            Box::pin(async move {
                Ok(observability::serve_metrics(listener, metrics, security, shutdown).await?)
            }),
        ));
    }
    if let (Some(cluster), Some(deployment)) = (
        cluster.clone(),
        args.owner_deployment.as_deref().filter(|d| !d.is_empty()),
    ) {
        parts.push((
            "monitoring",
            Box::pin(crate::monitoring_objects::run(
                client.clone(),
                cluster,
                crate::monitoring_objects::Config::new(&args.namespace, deployment),
                shutdown.clone(),
            )),
        ));
    }
    if let Some(cluster) = cluster.filter(|_| !args.disable_controller) {
        parts.push((
            "controller",
            Box::pin(controller(
                client,
                cluster,
                args.clone(),
                metrics,
                readiness,
                shutdown.clone(),
            )),
        ));
    }
    info!(namespace = %args.namespace, "operator started");
    supervise(parts, shutdown).await
}

/// HTTPS with TokenReview/SubjectAccessReview (serving the webhook certificate), or plain HTTP
/// with `--metrics-insecure`.
fn metrics_security(
    args: &RunArgs,
    client: &kube::Client,
    certs: &Arc<CertStore>,
) -> anyhow::Result<MetricsSecurity> {
    if args.metrics_insecure {
        return Ok(MetricsSecurity::Insecure);
    }
    if args.disable_webhooks && args.cert_dir.is_none() {
        anyhow::bail!(
            "secure metrics need a serving certificate: keep the webhooks enabled, pass --cert-dir, or use --metrics-insecure"
        );
    }
    Ok(MetricsSecurity::Secure {
        tls: crate::server::tls_config(certs.resolver()),
        authorizer: observability::kube_authorizer(client.clone(), AUTH_CACHE_TTL),
    })
}

/// The reconciler, under leader election unless `--no-leader-elect`.
async fn controller(
    client: kube::Client,
    cluster: ClusterCache,
    args: RunArgs,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = reconciler_config(&args);
    if args.no_leader_elect {
        return crate::reconciler::run(client, cluster, config, metrics, readiness, shutdown).await;
    }
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", crate::names::FIELD_MANAGER, std::process::id()));
    let lead = {
        let (client, metrics, readiness) = (client.clone(), metrics.clone(), readiness.clone());
        move |leading: CancellationToken| {
            crate::reconciler::run(client, cluster, config, metrics, readiness, leading)
        }
    };
    crate::leader::run_with_config(
        client,
        &args.namespace,
        identity,
        leader_config(args.lease_duration_seconds),
        metrics,
        shutdown,
        lead,
    )
    .await
}

/// The reconciler's settings from the `run` flags.
fn reconciler_config(args: &RunArgs) -> crate::reconciler::Config {
    crate::reconciler::Config {
        instance: args.identity.clone(),
        namespace: args.namespace.clone(),
        operator_condition: args
            .operator_condition
            .clone()
            .filter(|name| !name.is_empty())
            .map(
                |name| crate::reconciler::upgradeable::OperatorConditionRef {
                    namespace: args.namespace.clone(),
                    name,
                },
            ),
        ..Default::default()
    }
}

/// Runs the parts until all have stopped. Any part failing, or ending before shutdown, stops the
/// others; the first failure is the process's error.
async fn supervise(parts: Vec<Part>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    for (name, fut) in parts {
        tasks.spawn(async move { (name, fut.await) });
    }
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = match joined {
            Ok(done) => done,
            Err(e) => ("task", Err(anyhow::anyhow!("task panicked: {e}"))),
        };
        match result {
            Ok(()) if shutdown.is_cancelled() => info!(task = name, "stopped"),
            Ok(()) => {
                error!(task = name, "stopped unexpectedly; shutting down");
                failure.get_or_insert(anyhow::anyhow!("{name} stopped unexpectedly"));
                shutdown.cancel();
            }
            Err(e) => {
                error!(task = name, error = %format!("{e:#}"), "failed; shutting down");
                failure.get_or_insert(e.context(name));
                shutdown.cancel();
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Lease timings scaled from `--lease-duration-seconds`: renew every third, retry every
/// 2/15 (15 s gives client-go's usual 15/5/2 s).
fn leader_config(lease_seconds: u64) -> crate::leader::LeaderConfig {
    let lease_duration = Duration::from_secs(lease_seconds.max(1));
    crate::leader::LeaderConfig {
        lease_duration,
        renew_interval: lease_duration / 3,
        retry_interval: lease_duration * 2 / 15,
        ..Default::default()
    }
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for the {what} server (use --{what}-bind to change it)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lease_timings_match_the_leader_defaults() {
        let c = leader_config(15);
        let d = crate::leader::LeaderConfig::default();
        assert_eq!(
            (c.lease_duration, c.renew_interval, c.retry_interval),
            (d.lease_duration, d.renew_interval, d.retry_interval)
        );
        assert_eq!(c.lease_name, d.lease_name);
    }

    #[test]
    fn short_leases_scale_renew_and_retry() {
        let c = leader_config(3);
        assert_eq!(c.lease_duration, Duration::from_secs(3));
        assert_eq!(c.renew_interval, Duration::from_secs(1));
        assert_eq!(c.retry_interval, Duration::from_millis(400));
    }
}
