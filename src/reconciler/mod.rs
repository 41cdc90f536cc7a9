//! The `KataConfig` reconciler: a kube-runtime Controller over the pipeline
//! observe ([`observe`]: watch caches) → validate + build + decide (pure, [`mod@decide`]) → apply
//! ([`apply`]: SSA with one field manager) → status (status subresource, only when changed) →
//! events ([`events`]: transitions only). This file is the outer loop only.
//!
//! | file | what |
//! |---|---|
//! | `action.rs` | the types handed from the decision to the writer |
//! | `decide/` | the pure decision: dispatch, install, uninstall, the reported status |
//! | `diff.rs` | does an observed object differ from the desired one (pure) |
//! | `observe.rs` | the snapshot, and the watches only the reconciler needs |
//! | `apply.rs` | the writer |
//! | `status.rs`, `events.rs`, `error.rs` | conditions, Events, classified errors |
//! | `upgradeable.rs` | `Upgradeable` for OLM's OperatorCondition, derived from each decision |
//!
//! Progress is event-driven: the shared caches (nodes, RuntimeClasses, KataConfigs), and the
//! reconciler's own (MachineConfigPools, our MachineConfigs, the ContainerRuntimeConfig and,
//! during uninstall, pods) trigger reconciles when something the decision reads changes. There
//! is no periodic requeue.

pub mod action;
pub mod apply;
pub mod decide;
pub mod diff;
pub mod error;
pub mod events;
#[cfg(test)]
mod fixtures;
pub mod observe;
pub mod status;
pub mod upgradeable;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::api::{Backend, KataConfig};
use crate::cache::{Change, ClusterCache};
use crate::kubeapi::WriteFence;
use crate::names::FIELD_MANAGER;
use crate::observability::{Heartbeat, Liveness, Metrics, Readiness};

pub use action::{Action, Decision, Outcome};
pub use decide::decide;
pub use error::Error;
pub use observe::Observed;

/// Readiness component registered by [`run`], and the name of its liveness heartbeat.
pub const READINESS_COMPONENT: &str = "controller";

/// Tunables of the reconciler. `Default` is what `run` uses in production.
#[derive(Debug, Clone)]
pub struct Config {
    /// Pod name (Events' `reportingInstance`).
    pub instance: Option<String>,
    /// Upper bound on any single write to the API server.
    pub request_timeout: Duration,
    /// First retry delay after an API error; doubles per consecutive failure.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The operator namespace (the node installer runs there).
    pub namespace: String,
    /// OLM's OperatorCondition for this operator: `Upgradeable` is kept there. `None` outside OLM.
    pub operator_condition: Option<upgradeable::OperatorConditionRef>,
    /// Writes are sent only while this is open: the leadership term's fence under leader
    /// election, always open without it.
    pub fence: WriteFence,
    /// Where the reconciler's heartbeat is registered (`/healthz`).
    pub liveness: Liveness,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: std::env::var("POD_NAMESPACE")
                .unwrap_or_else(|_| crate::names::DEFAULT_OPERATOR_NAMESPACE.to_string()),
            instance: std::env::var("POD_NAME").ok(),
            request_timeout: crate::kubeapi::REQUEST_TIMEOUT,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            operator_condition: None,
            fence: WriteFence::always_open(),
            liveness: Liveness::new(),
        }
    }
}

impl Config {
    /// A reconcile is wedged when none of its steps completed for this long: every step (a cache
    /// wait, a write, an Event) is bounded by `request_timeout`, so twice that is never normal.
    pub fn wedged_after(&self) -> Duration {
        self.request_timeout * 2
    }
}

/// Shared state of the reconciler.
pub struct Context {
    cluster: ClusterCache,
    owned: observe::OwnedCaches,
    writer: apply::Writer,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    config: Config,
    /// Consecutive failures per KataConfig, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The `Upgradeable` last written by this reconciler (a new leader writes once, then only
    /// changes).
    upgradeable: Mutex<Option<crate::api::operator_condition::Upgradeable>>,
    /// Armed while a reconcile runs, beaten after each of its steps.
    heartbeat: Heartbeat,
}

impl Context {
    /// One step of a reconcile completed.
    fn progress(&self) {
        self.heartbeat.beat();
    }
}

/// What a stopped reconciler leaves behind: nothing that speaks for the cluster. Dropped when
/// [`run`] returns or its task is aborted, so a replica that stepped down reports what a follower
/// does: not waited for by `/readyz`, no installation result, no node counts (the leader's
/// gauges alone count; sums over replicas stay right).
struct StepDown {
    readiness: Readiness,
    metrics: Arc<Metrics>,
}

impl Drop for StepDown {
    fn drop(&mut self) {
        self.readiness.withdraw(READINESS_COMPONENT);
        self.metrics.installation_success.set(0.0);
        self.metrics.set_nodes(&Default::default());
    }
}

/// Runs the reconciler until `shutdown` is cancelled, then lets in-flight reconciles finish.
/// `cluster` is the process's shared cache (its watches outlive this reconciler); the watches of
/// what only the reconciler reads start here and stop with it.
///
/// Registers the readiness component `controller`, ready once every watch cache has synced, and
/// withdraws it when it stops; its heartbeat `controller` is armed while a reconcile runs.
/// Writes go through `config.fence`. Nothing of one run survives into the next: every watch,
/// queue, backoff counter and reported gauge is this run's own.
pub async fn run(
    client: Client,
    cluster: ClusterCache,
    config: Config,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    readiness.register(READINESS_COMPONENT);
    let _step_down = StepDown {
        readiness: readiness.clone(),
        metrics: metrics.clone(),
    };
    let heartbeat = config
        .liveness
        .heartbeat(READINESS_COMPONENT, config.wedged_after());
    heartbeat.rest();
    let (trigger_tx, trigger_rx) = futures::channel::mpsc::unbounded();
    let owned = observe::OwnedCaches::start(
        client.clone(),
        &config.namespace,
        cluster.initial_list().await,
        trigger_tx.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    let forward = tokio::spawn(forward_shared_changes(
        cluster.clone(),
        trigger_tx.clone(),
        shutdown.clone(),
    ));
    // The KataConfigs come from the shared cache; every trigger reconciles all of them (one is
    // active, the others are only told so).
    let controller =
        Controller::for_stream(futures::stream::pending(), cluster.kata_config_store())
            // One KataConfig is active; never reconcile two at once.
            .with_config(controller::Config::default().concurrency(1))
            .reconcile_all_on(trigger_rx)
            .graceful_shutdown_on(shutdown.clone().cancelled_owned());
    let ctx = Arc::new(Context {
        cluster,
        owned,
        writer: apply::Writer {
            client: client.clone(),
            timeout: config.request_timeout,
            namespace: config.namespace.clone(),
            fence: config.fence.clone(),
        },
        recorder: Recorder::new(
            client,
            Reporter {
                controller: FIELD_MANAGER.to_string(),
                instance: config.instance.clone(),
            },
        ),
        metrics,
        config,
        failures: Mutex::new(HashMap::new()),
        upgradeable: Mutex::new(None),
        heartbeat,
    });

    let ready_task = tokio::spawn(report_ready_when_synced(ctx.clone(), readiness, trigger_tx));
    controller
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move { log_outcome(res) })
        .await;
    ready_task.abort();
    forward.abort();
    ctx.owned.stop_pod_watch().await;
    tracing::info!("reconciler stopped");
    Ok(())
}

/// Marks the component `controller` ready once every watch cache has synced, and triggers one
/// reconcile then (the shared caches may have synced before this reconciler subscribed).
async fn report_ready_when_synced(
    ctx: Arc<Context>,
    readiness: Readiness,
    trigger: futures::channel::mpsc::UnboundedSender<()>,
) {
    let synced = async {
        let cluster = &ctx.cluster;
        cluster
            .wait_synced()
            .await
            .map_err(|e| Error::CacheNotReady(e.0))?;
        let served = cluster
            .served_apis_ready()
            .await
            .ok_or(Error::CacheNotReady("discovery"))?;
        if served.machine_config {
            ctx.owned.watch_machine_configs().await;
        }
        ctx.owned.wait_until_ready().await
    };
    match synced.await {
        Ok(()) => {
            tracing::info!("controller watch caches synced");
            readiness.set(READINESS_COMPONENT, true);
            let _ = trigger.unbounded_send(());
        }
        Err(e) => tracing::warn!(error = %e, "controller caches did not sync"),
    }
}

type ReconcileResult = Result<
    (kube::runtime::reflector::ObjectRef<KataConfig>, Requeue),
    controller::Error<Error, kube::runtime::watcher::Error>,
>;

/// One log line per reconcile outcome.
fn log_outcome(res: ReconcileResult) {
    match res {
        Ok((obj, _)) => tracing::debug!(kataconfig = %obj.name, "reconciled"),
        Err(controller::Error::ReconcilerFailed(e, obj))
            if e.category() == error::Category::NotLeader =>
        {
            tracing::info!(kataconfig = %obj.name, error = %e, "reconcile cut short: the leadership term ended")
        }
        Err(controller::Error::ReconcilerFailed(e, obj)) => {
            tracing::warn!(kataconfig = %obj.name, category = e.category().as_str(), error = %e, "reconcile failed; retrying with backoff")
        }
        Err(e) => tracing::debug!(error = %e, "controller event"),
    }
}

/// Turns changes of the shared caches the decision reads into reconcile triggers.
async fn forward_shared_changes(
    cluster: ClusterCache,
    trigger: futures::channel::mpsc::UnboundedSender<()>,
    shutdown: CancellationToken,
) {
    let mut changes = cluster.subscribe();
    loop {
        let change = tokio::select! {
            c = changes.recv() => c,
            () = shutdown.cancelled() => return,
        };
        let fire = match change {
            Ok(
                Change::Nodes | Change::RuntimeClasses | Change::KataConfigs | Change::ServedApis,
            ) => true,
            Ok(Change::Namespaces) => false,
            // Fell behind: anything may have changed.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if fire && trigger.unbounded_send(()).is_err() {
            return;
        }
    }
}

async fn reconcile(kc: Arc<KataConfig>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    ctx.progress();
    let result = reconcile_inner(&kc, &ctx).await;
    ctx.heartbeat.rest();
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let label = match &result {
        Ok(Outcome::InvalidSpec) => "invalid_spec",
        Ok(_) => "success",
        Err(_) => "error",
    };
    ctx.metrics
        .reconciliations
        .with_label_values(&[label])
        .inc();
    match result {
        Ok(_) => {
            if let Ok(mut f) = ctx.failures.lock() {
                f.remove(&kc.name_any());
            }
            Ok(Requeue::await_change())
        }
        Err(e) => {
            if e.is_api() {
                ctx.metrics
                    .api_errors
                    .with_label_values(&[e.category().as_str()])
                    .inc();
            }
            Err(e)
        }
    }
}

/// Waits for a cache, but never longer than one request timeout: a cache that cannot sync
/// (missing CRD, RBAC) must not wedge the controller; the error is retried with backoff and
/// the cache's own first sync triggers a reconcile anyway.
async fn bounded<T>(
    ctx: &Context,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(ctx.config.request_timeout, fut)
        .await
        .unwrap_or(Err(Error::CacheNotReady(what)))
}

async fn reconcile_inner(kc: &KataConfig, ctx: &Context) -> Result<Outcome, Error> {
    bounded(ctx, "cluster", async {
        ctx.cluster
            .wait_synced()
            .await
            .map_err(|e| Error::CacheNotReady(e.0))
    })
    .await?;
    let served = bounded(ctx, "discovery", async {
        ctx.cluster
            .served_apis_ready()
            .await
            .ok_or(Error::CacheNotReady("discovery"))
    })
    .await?;
    if decide::backend_for(kc, &served) == Backend::MachineConfig {
        ctx.owned.watch_machine_configs().await;
    }
    bounded(ctx, "cluster", ctx.owned.wait_until_ready()).await?;
    ctx.progress();
    let all = ctx.cluster.kata_configs();
    let now = Time(jiff::Timestamp::now());
    let mut obs = ctx.owned.snapshot(&ctx.cluster, served, kc, now).await;
    let uninstalling = kc.is_being_deleted()
        && kc.has_finalizer()
        && obs.active.as_deref() == Some(kc.name_any().as_str());
    if uninstalling {
        obs.pods = Some(bounded(ctx, "pods", ctx.owned.kata_pods()).await?);
        ctx.progress();
    }
    let d = decide(&obs);
    tracing::debug!(kataconfig = %kc.name_any(), outcome = ?d.outcome, actions = d.actions.len(), "decided");
    for action in &d.actions {
        ctx.writer.execute(kc, action).await?;
        ctx.progress();
    }
    if let Some(status) = &d.status {
        ctx.writer.status(kc, status).await?;
        ctx.progress();
    }
    events::publish(
        &ctx.recorder,
        kc,
        &d.events,
        &ctx.config.fence,
        ctx.config.request_timeout,
        || ctx.progress(),
    )
    .await;
    if let Some(reported) = &d.reported
        && obs.active.as_deref() == Some(kc.name_any().as_str())
    {
        ctx.metrics.set_nodes(&reported.kata_nodes);
        ctx.metrics
            .installation_success
            .set(if d.outcome == Outcome::Installed {
                1.0
            } else {
                0.0
            });
    }
    if d.outcome == Outcome::Uninstalled {
        ctx.metrics.installation_success.set(0.0);
        ctx.metrics.set_nodes(&Default::default());
    }
    // The pod watch only serves a running uninstall.
    if !uninstalling || d.outcome == Outcome::Uninstalled {
        let any_uninstall = all
            .iter()
            .any(|k| k.is_being_deleted() && k.has_finalizer() && k.name_any() != kc.name_any());
        if !any_uninstall && ctx.owned.pod_watch_running().await {
            ctx.owned.stop_pod_watch().await;
        }
    }
    report_upgradeable(ctx, &d, &obs).await?;
    Ok(d.outcome)
}

/// Writes `Upgradeable` when the decision changes it. A failed write is the reconcile's error, so
/// it is retried with backoff even when nothing else will trigger another reconcile.
async fn report_upgradeable(ctx: &Context, d: &Decision, obs: &Observed) -> Result<(), Error> {
    let Some(target) = &ctx.config.operator_condition else {
        return Ok(());
    };
    let Some(want) = upgradeable::derive(d, obs) else {
        return Ok(());
    };
    let unchanged = ctx
        .upgradeable
        .lock()
        .map(|last| last.as_ref() == Some(&want))
        .unwrap_or(false);
    if unchanged {
        return Ok(());
    }
    let patched = upgradeable::write(
        &ctx.writer.client,
        target,
        &want,
        &obs.now,
        ctx.config.request_timeout,
    )
    .await
    .map_err(|e| {
        Error::call(
            format!(
                "setting Upgradeable={} on OperatorCondition {}/{} (OLM's OPERATOR_CONDITION_NAME)",
                want.upgradeable, target.namespace, target.name
            ),
            e,
        )
    })?;
    if patched {
        tracing::info!(upgradeable = want.upgradeable, reason = want.reason, message = %want.message, "OperatorCondition updated");
    }
    if let Ok(mut last) = ctx.upgradeable.lock() {
        *last = Some(want);
    }
    Ok(())
}

fn error_policy(kc: Arc<KataConfig>, err: &Error, ctx: Arc<Context>) -> Requeue {
    let failures = match ctx.failures.lock() {
        Ok(mut f) => {
            let n = f.entry(kc.name_any()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        }
        Err(_) => 1,
    };
    let delay = match err.retry() {
        error::Retry::Soon => ctx.config.backoff_base.min(Duration::from_millis(200)),
        error::Retry::Backoff => {
            error::backoff_delay(failures, ctx.config.backoff_base, ctx.config.backoff_max)
        }
    };
    Requeue::requeue(delay)
}
