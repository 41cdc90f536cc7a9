//! `sandboxed-containers-operator run`: one process, one shutdown signal fanned out to the
//! reconciler (under leader election), the webhook server, the metrics server and the health
//! server.
//!
//! Leadership governs the reconciler only: losing the Lease stops the reconciler and the process
//! campaigns again, while the webhooks, metrics and health keep serving (see [`crate::leader`]).
//! The process ends only on a shutdown signal (`Ok`) or a [`Failure`] it cannot recover from: a
//! flag value it cannot use, an environment it cannot start in, or a part that failed or
//! panicked while running, which stops the others.

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
use crate::leader::{Election, Term};
use crate::observability::{self, Liveness, Metrics, MetricsSecurity, Readiness};

/// How long a TokenReview/SubjectAccessReview decision is reused for the same token.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(60);

/// Why `run` ended with an error; `src/main.rs` turns it into the exit status. Attached to the
/// error as context, so `{:#}` reads e.g. `cannot start: cannot listen on 0.0.0.0:9443 ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A flag, or `RUST_LOG`, has a value the operator cannot use. Exit status 2.
    Usage,
    /// The environment does not let it start: no Kubernetes client configuration, a port that
    /// cannot be bound. Exit status 3.
    Startup,
    /// A part failed, panicked or ended while it should run; the others were stopped. Exit
    /// status 1.
    Runtime,
}

impl Failure {
    /// The class of a `run` error (a failure not marked otherwise happened while running).
    pub fn of(e: &anyhow::Error) -> Failure {
        e.downcast_ref::<Failure>()
            .copied()
            .unwrap_or(Failure::Runtime)
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Failure::Runtime => 1,
            Failure::Usage => 2,
            Failure::Startup => 3,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Failure::Usage => "invalid configuration",
            Failure::Startup => "cannot start",
            Failure::Runtime => "stopped after a failure",
        })
    }
}

/// Entry point of `run`: logging, the signal handler and the in-cluster (or kubeconfig) client.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    observability::init_logging(args.log_format).context(Failure::Usage)?;
    let shutdown = observability::shutdown_on_signal();
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client: run in a pod or set KUBECONFIG")
        .context(Failure::Startup)?;
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

/// What every part may report to.
#[derive(Clone)]
struct Reporting {
    metrics: Arc<Metrics>,
    readiness: Readiness,
    liveness: Liveness,
}

/// The servers' configurations and bound listeners: what can refuse to start.
struct Listeners {
    webhook: Option<(crate::webhook::Config, TcpListener)>,
    metrics: Option<(MetricsSecurity, TcpListener)>,
    health: TcpListener,
}

impl Listeners {
    /// Checks the flags ([`Failure::Usage`]) and binds every port ([`Failure::Startup`]).
    async fn open(
        args: &RunArgs,
        client: &kube::Client,
        certs: &Arc<CertStore>,
    ) -> anyhow::Result<Listeners> {
        let webhook = if args.disable_webhooks {
            None
        } else {
            let config = crate::webhook::Config::from_run_args(args, certs.clone())
                .context(Failure::Usage)?;
            Some((config, bind(args.webhook_bind, "webhook").await?))
        };
        let metrics = if args.disable_metrics {
            None
        } else {
            let security = metrics_security(args, client, certs).context(Failure::Usage)?;
            Some((security, bind(args.metrics_bind, "metrics").await?))
        };
        let health = bind(args.health_bind, "health").await?;
        Ok(Listeners {
            webhook,
            metrics,
            health,
        })
    }
}

/// Runs every enabled part against `client` until `shutdown` (tests drive this in-process).
pub async fn run_with(
    client: kube::Client,
    args: RunArgs,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let report = Reporting {
        metrics,
        readiness,
        liveness: Liveness::new(),
    };
    let certs = CertStore::new(Some(report.metrics.clone()));
    // Everything that can refuse to start does so before anything runs.
    let Listeners {
        webhook,
        metrics: metrics_server,
        health,
    } = Listeners::open(&args, &client, &certs).await?;

    // One watch per shared kind, read by the reconciler and the webhooks alike. Its watches
    // outlive leadership terms and reconnect with backoff on their own.
    let cluster = (!args.disable_controller || !args.disable_webhooks).then(|| {
        ClusterCache::start_with(
            client.clone(),
            report.metrics.clone(),
            Duration::from_secs(args.discovery_interval_seconds),
            shutdown.clone(),
        )
    });
    let mut parts: Vec<Part> = Vec::new();
    parts.push((
        "health",
        Box::pin({
            let (readiness, liveness) = (report.readiness.clone(), report.liveness.clone());
            let shutdown = shutdown.clone();
            async move {
                Ok(observability::serve_health(health, readiness, liveness, shutdown).await?)
            }
        }),
    ));
    if let (Some((config, listener)), Some(cluster)) = (webhook, cluster.clone()) {
        parts.push((
            "webhook",
            Box::pin(crate::webhook::run(
                client.clone(),
                cluster,
                config,
                listener,
                report.metrics.clone(),
                report.readiness.clone(),
                shutdown.clone(),
            )),
        ));
    }
    if let Some((security, listener)) = metrics_server {
        let (metrics, shutdown) = (report.metrics.clone(), shutdown.clone());
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
                report,
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

/// The reconciler, under leader election unless `--no-leader-elect`: one fresh reconciler per
/// leadership term (its own watches and queues; writes through the term's fence).
async fn controller(
    client: kube::Client,
    cluster: ClusterCache,
    args: RunArgs,
    report: Reporting,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let base = crate::reconciler::Config {
        liveness: report.liveness.clone(),
        ..reconciler_config(&args)
    };
    if args.no_leader_elect {
        return crate::reconciler::run(
            client,
            cluster,
            base,
            report.metrics,
            report.readiness,
            shutdown,
        )
        .await;
    }
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", crate::names::FIELD_MANAGER, std::process::id()));
    let lead = {
        let (client, metrics, readiness) = (
            client.clone(),
            report.metrics.clone(),
            report.readiness.clone(),
        );
        move |term: Term| {
            info!(
                term = term.number,
                "starting the reconciler for this leadership term"
            );
            let config = crate::reconciler::Config {
                fence: term.fence,
                ..base.clone()
            };
            crate::reconciler::run(
                client.clone(),
                cluster.clone(),
                config,
                metrics.clone(),
                readiness.clone(),
                term.stop,
            )
        }
    };
    let election = Election {
        client,
        namespace: args.namespace.clone(),
        identity,
        config: leader_config(args.lease_duration_seconds),
        metrics: report.metrics,
        liveness: report.liveness,
    };
    election.run(shutdown, lead).await
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
/// others; the first failure is the process's error ([`Failure::Runtime`]).
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
        Some(e) => Err(e.context(Failure::Runtime)),
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
    TcpListener::bind(addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {addr} for the {what} server (use --{what}-bind to change it)"
            )
        })
        .context(Failure::Startup)
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
    fn failures_map_to_exit_codes_and_read_in_the_message() {
        let usage = anyhow::anyhow!("--webhook-url \"x\" is not a URL").context(Failure::Usage);
        assert_eq!(Failure::of(&usage).exit_code(), 2);
        assert_eq!(
            format!("{usage:#}"),
            "invalid configuration: --webhook-url \"x\" is not a URL"
        );
        let startup = anyhow::anyhow!("cannot listen on 0.0.0.0:9443").context(Failure::Startup);
        assert_eq!(Failure::of(&startup).exit_code(), 3);
        assert_eq!(
            format!("{startup:#}"),
            "cannot start: cannot listen on 0.0.0.0:9443"
        );
        let runtime = anyhow::anyhow!("webhook stopped unexpectedly").context(Failure::Runtime);
        assert_eq!(Failure::of(&runtime).exit_code(), 1);
        assert_eq!(
            format!("{runtime:#}"),
            "stopped after a failure: webhook stopped unexpectedly"
        );
        // Unmarked errors are failures while running.
        assert_eq!(Failure::of(&anyhow::anyhow!("x")), Failure::Runtime);
    }

    #[tokio::test]
    async fn a_port_in_use_is_a_startup_failure_naming_the_flag() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let e = bind(addr, "health").await.expect_err("in use");
        assert_eq!(Failure::of(&e), Failure::Startup);
        assert!(
            format!("{e:#}").starts_with(&format!(
                "cannot start: cannot listen on {addr} for the health server (use --health-bind to change it)"
            )),
            "{e:#}"
        );
    }

    #[tokio::test]
    async fn a_part_ending_before_shutdown_stops_the_others_as_a_runtime_failure() {
        let shutdown = CancellationToken::new();
        let waits = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                Ok(())
            }
        };
        let parts: Vec<Part> = vec![
            ("webhook", Box::pin(async { Ok(()) })),
            ("health", Box::pin(waits)),
        ];
        let e = supervise(parts, shutdown.clone())
            .await
            .expect_err("a part ended early");
        assert!(shutdown.is_cancelled(), "the others were stopped");
        assert_eq!(Failure::of(&e).exit_code(), 1);
        assert_eq!(
            format!("{e:#}"),
            "stopped after a failure: webhook stopped unexpectedly"
        );
    }

    #[tokio::test]
    async fn a_shutdown_ends_every_part_cleanly() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let parts: Vec<Part> = vec![("health", Box::pin(async { Ok(()) }))];
        supervise(parts, shutdown).await.expect("clean stop");
    }

    #[test]
    fn short_leases_scale_renew_and_retry() {
        let c = leader_config(3);
        assert_eq!(c.lease_duration, Duration::from_secs(3));
        assert_eq!(c.renew_interval, Duration::from_secs(1));
        assert_eq!(c.retry_interval, Duration::from_millis(400));
    }
}
