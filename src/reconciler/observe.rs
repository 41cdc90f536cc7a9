//! What the reconciler sees: one snapshot of the cluster, read from watch caches (no API reads
//! per reconcile). Nodes, RuntimeClasses, KataConfigs and the served APIs come from the
//! process's shared caches ([`crate::cache`]); the objects only the reconciler reads (the node
//! installer's DaemonSet and pods; where the MCO is served, pools, MachineConfigs and the
//! ContainerRuntimeConfig; during uninstall, pods) are watched here, for as long as this
//! reconciler runs.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{
    ContainerRuntimeConfig, KataConfig, MachineConfig, MachineConfigPool, active_kata_config,
};
use crate::cache::{ClusterCache, InitialList, rv_fingerprint, spawn_reflector, store_ready};
use crate::discovery::ServedApis;
use crate::names::{
    CONTAINER_RUNTIME_CONFIG, CRIO_DROPIN_MC, EXTENSION_MC, KATA_POOL, MASTER_POOL, NODE_INSTALLER,
    RUNTIME_CLASS, WORKER_POOL,
};
use crate::observability::Metrics;
use crate::plan::NodeInfo;
use crate::plan::node_installer::InstallerPod;

use super::error::Error;

/// A pod that might block uninstall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub runtime_class: Option<String>,
    pub phase: Option<String>,
}

impl PodInfo {
    pub fn from_pod(p: &Pod) -> Self {
        PodInfo {
            namespace: p.namespace().unwrap_or_default(),
            name: p.name_any(),
            runtime_class: p.spec.as_ref().and_then(|s| s.runtime_class_name.clone()),
            phase: p.status.as_ref().and_then(|s| s.phase.clone()),
        }
    }

    /// Succeeded and Failed pods hold no sandbox any more and never block uninstall.
    pub fn is_terminal(&self) -> bool {
        matches!(self.phase.as_deref(), Some("Succeeded" | "Failed"))
    }
}

/// One consistent-enough view of everything the decision reads.
#[derive(Debug, Clone)]
pub struct Observed {
    pub kata_config: KataConfig,
    /// Name of the KataConfig the operator acts on (see [`active_kata_config`]).
    pub active: Option<String>,
    pub nodes: Vec<NodeInfo>,
    pub pools: BTreeMap<String, MachineConfigPool>,
    /// Only the operator's MachineConfigs, by name.
    pub machine_configs: BTreeMap<String, MachineConfig>,
    pub container_runtime_config: Option<ContainerRuntimeConfig>,
    pub runtime_class: Option<RuntimeClass>,
    /// Pods that use a RuntimeClass; `None` when not watched (only watched during uninstall).
    pub pods: Option<Vec<PodInfo>>,
    /// What the API server serves (decides the backend).
    pub served: ServedApis,
    /// The operator namespace (where the node installer runs).
    pub operator_namespace: String,
    /// The node installer's DaemonSet and pods (empty where the MCO installs kata).
    pub installer: InstallerObserved,
    pub now: Time,
}

/// The node installer as observed.
#[derive(Debug, Clone, Default)]
pub struct InstallerObserved {
    pub config_map: Option<ConfigMap>,
    pub daemon_set: Option<DaemonSet>,
    pub pods: Vec<InstallerPod>,
}

/// Waiting reasons that mean the installer will not get anywhere by itself.
const FAILING_WAIT_REASONS: [&str; 6] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// An installer pod as progress reads it: node, readiness, termination, and why it keeps
/// failing (the waiting reason with the container's last termination).
pub fn installer_pod(p: &Pod) -> InstallerPod {
    let status = p.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let failure = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let why = waiting.reason.as_deref()?;
            if !FAILING_WAIT_REASONS.contains(&why) {
                return None;
            }
            let last = c
                .last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .map(|t| {
                    let mut s = format!(
                        "last terminated with {} (exit code {})",
                        t.reason.as_deref().unwrap_or("no reason"),
                        t.exit_code
                    );
                    if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
                        s.push_str(": ");
                        s.push_str(m);
                    }
                    s
                });
            let detail = last.or_else(|| waiting.message.clone());
            Some(match detail {
                Some(d) => format!("{why}, {d}"),
                None => why.to_string(),
            })
        });
    InstallerPod {
        name: p.name_any(),
        node: p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        ready,
        terminating: p.metadata.deletion_timestamp.is_some(),
        failure,
    }
}

/// The watches of what only the reconciler reads: the node installer's DaemonSet and pods (in
/// the operator namespace), the MCO's objects (started once the MCO is served), and the pod
/// watch of an uninstall (started on first use). Dropping it stops them all.
pub struct OwnedCaches {
    installer: InstallerWatches,
    mco: tokio::sync::Mutex<Option<McoWatches>>,
    pods: tokio::sync::Mutex<Option<PodWatch>>,
    client: Client,
    namespace: String,
    trigger: UnboundedSender<()>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    /// Streaming or paged lists, as the shared caches found the server.
    initial_list: InitialList,
}

struct McoWatches {
    pools: Store<MachineConfigPool>,
    machine_configs: Store<MachineConfig>,
    crcs: Store<ContainerRuntimeConfig>,
    tasks: Vec<JoinHandle<()>>,
}

struct InstallerWatches {
    config_maps: Store<ConfigMap>,
    daemon_sets: Store<DaemonSet>,
    pods: Store<Pod>,
    tasks: Vec<JoinHandle<()>>,
}

struct PodWatch {
    store: Store<Pod>,
    task: JoinHandle<()>,
}

impl Drop for OwnedCaches {
    fn drop(&mut self) {
        for t in &self.installer.tasks {
            t.abort();
        }
        if let Ok(mut mco) = self.mco.try_lock()
            && let Some(w) = mco.take()
        {
            for t in &w.tasks {
                t.abort();
            }
        }
        if let Ok(mut pods) = self.pods.try_lock()
            && let Some(w) = pods.take()
        {
            w.task.abort();
        }
    }
}

fn pod_fingerprint(p: &Pod) -> u64 {
    let i = PodInfo::from_pod(p);
    let mut h = DefaultHasher::new();
    (i.runtime_class, i.phase).hash(&mut h);
    h.finish()
}

fn installer_pod_fingerprint(p: &Pod) -> u64 {
    let mut h = DefaultHasher::new();
    installer_pod(p).hash(&mut h);
    h.finish()
}

/// Only our pool and the ones nodes move between matter.
fn pool_fingerprint(p: &MachineConfigPool) -> u64 {
    if [KATA_POOL, WORKER_POOL, MASTER_POOL].contains(&p.name_any().as_str()) {
        rv_fingerprint(p)
    } else {
        0
    }
}

fn machine_config_fingerprint(mc: &MachineConfig) -> u64 {
    if is_ours_mc(&mc.name_any()) {
        rv_fingerprint(mc)
    } else {
        0
    }
}

fn crc_fingerprint(c: &ContainerRuntimeConfig) -> u64 {
    if c.name_any() == CONTAINER_RUNTIME_CONFIG {
        rv_fingerprint(c)
    } else {
        0
    }
}

/// A trigger for the controller; false once it is gone.
fn trigger(tx: &UnboundedSender<()>) -> impl Fn() -> bool + Send + 'static {
    let tx = tx.clone();
    move || tx.unbounded_send(()).is_ok()
}

impl OwnedCaches {
    /// Starts the installer's watches in `namespace`, each getting its first state by
    /// `initial_list` (see [`ClusterCache::initial_list`]). Each change of something the decision
    /// reads sends on `trigger`.
    pub fn start(
        client: Client,
        namespace: &str,
        initial_list: InitialList,
        trigger_tx: UnboundedSender<()>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let installer = InstallerWatches::start(
            &client,
            namespace,
            initial_list,
            &trigger_tx,
            &metrics,
            &shutdown,
        );
        OwnedCaches {
            installer,
            mco: tokio::sync::Mutex::new(None),
            pods: tokio::sync::Mutex::new(None),
            client,
            namespace: namespace.to_string(),
            trigger: trigger_tx,
            metrics,
            shutdown,
            initial_list,
        }
    }

    /// Starts the MCO watches if they are not running yet (only where the MCO is served: on
    /// other clusters their lists would fail forever).
    pub async fn watch_machine_configs(&self) {
        let mut guard = self.mco.lock().await;
        if guard.is_none() {
            *guard = Some(McoWatches::start(
                &self.client,
                self.initial_list,
                &self.trigger,
                &self.metrics,
                &self.shutdown,
            ));
        }
    }

    /// Resolves once every started cache has completed its first list.
    pub async fn wait_until_ready(&self) -> Result<(), Error> {
        let ready = |r: Result<(), reflector::store::WriterDropped>, name| {
            r.map_err(|_| Error::CacheNotReady(name))
        };
        ready(store_ready(&self.installer.config_maps).await, "configmaps")?;
        ready(store_ready(&self.installer.daemon_sets).await, "daemonsets")?;
        ready(store_ready(&self.installer.pods).await, "installer pods")?;
        let mco = self
            .mco
            .lock()
            .await
            .as_ref()
            .map(|w| (w.pools.clone(), w.machine_configs.clone(), w.crcs.clone()));
        if let Some((pools, mcs, crcs)) = mco {
            ready(store_ready(&pools).await, "machineconfigpools")?;
            ready(store_ready(&mcs).await, "machineconfigs")?;
            ready(store_ready(&crcs).await, "containerruntimeconfigs")?;
        }
        Ok(())
    }

    /// Pods using a RuntimeClass, from a pod watch started on first use (uninstall only).
    /// Every change of such a pod's phase triggers a reconcile, so a blocked uninstall resumes
    /// by itself as soon as the last kata pod finishes.
    pub async fn kata_pods(&self) -> Result<Vec<PodInfo>, Error> {
        let mut guard = self.pods.lock().await;
        if guard.is_none() {
            let (store, writer) = reflector::store();
            let pods = watcher::watcher(
                Api::<Pod>::all(self.client.clone()),
                self.initial_list.watcher_config(),
            )
            .modify(|p: &mut Pod| {
                // Keep only what the decision reads; pods are many.
                p.managed_fields_mut().clear();
                if let Some(spec) = p.spec.as_mut() {
                    spec.containers.clear();
                    spec.init_containers = None;
                    spec.volumes = None;
                }
                if let Some(st) = p.status.as_mut() {
                    st.container_statuses = None;
                    st.init_container_statuses = None;
                    st.conditions = None;
                }
            });
            let task = spawn_reflector(
                writer,
                pods,
                pod_fingerprint,
                trigger(&self.trigger),
                &self.metrics,
                &self.shutdown,
            );
            *guard = Some(PodWatch { store, task });
        }
        let store = match guard.as_ref() {
            Some(w) => w.store.clone(),
            None => return Err(Error::CacheNotReady("pods")),
        };
        drop(guard);
        store_ready(&store)
            .await
            .map_err(|_| Error::CacheNotReady("pods"))?;
        let mut pods: Vec<PodInfo> = store
            .state()
            .iter()
            .map(|p| PodInfo::from_pod(p))
            .filter(|p| p.runtime_class.is_some())
            .collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(pods)
    }

    /// Stops the pod watch once no uninstall needs it.
    pub async fn stop_pod_watch(&self) {
        if let Some(w) = self.pods.lock().await.take() {
            w.task.abort();
        }
    }

    pub async fn pod_watch_running(&self) -> bool {
        self.pods.lock().await.is_some()
    }

    /// Reads the snapshot for one KataConfig.
    pub async fn snapshot(
        &self,
        cluster: &ClusterCache,
        served: ServedApis,
        kc: &KataConfig,
        now: Time,
    ) -> Observed {
        let mut nodes = cluster.nodes();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let all = cluster.kata_configs();
        let mco = self.mco.lock().await;
        let from = |store: Option<&Store<MachineConfigPool>>| {
            store
                .map(|s| {
                    s.state()
                        .iter()
                        .map(|p| (p.name_any(), (**p).clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut installer_pods: Vec<InstallerPod> = self
            .installer
            .pods
            .state()
            .iter()
            .map(|p| installer_pod(p))
            .collect();
        installer_pods.sort_by(|a, b| (&a.node, &a.name).cmp(&(&b.node, &b.name)));
        Observed {
            kata_config: kc.clone(),
            active: active_kata_config(all.iter().map(AsRef::as_ref)).map(|k| k.name_any()),
            nodes,
            pools: from(mco.as_ref().map(|w| &w.pools)),
            machine_configs: mco
                .as_ref()
                .map(|w| {
                    w.machine_configs
                        .state()
                        .iter()
                        .filter(|m| is_ours_mc(&m.name_any()))
                        .map(|m| (m.name_any(), (**m).clone()))
                        .collect()
                })
                .unwrap_or_default(),
            container_runtime_config: mco.as_ref().and_then(|w| {
                w.crcs
                    .state()
                    .iter()
                    .find(|c| c.name_any() == CONTAINER_RUNTIME_CONFIG)
                    .map(|c| (**c).clone())
            }),
            runtime_class: cluster.runtime_class(RUNTIME_CLASS).map(|c| (*c).clone()),
            pods: None,
            served,
            operator_namespace: self.namespace.clone(),
            installer: InstallerObserved {
                config_map: self
                    .installer
                    .config_maps
                    .state()
                    .iter()
                    .find(|c| c.name_any() == NODE_INSTALLER)
                    .map(|c| (**c).clone()),
                daemon_set: self
                    .installer
                    .daemon_sets
                    .state()
                    .iter()
                    .find(|d| d.name_any() == NODE_INSTALLER)
                    .map(|d| (**d).clone()),
                pods: installer_pods,
            },
            now,
        }
    }
}

impl McoWatches {
    fn start(
        client: &Client,
        initial_list: InitialList,
        trigger_tx: &UnboundedSender<()>,
        metrics: &Arc<Metrics>,
        shutdown: &CancellationToken,
    ) -> Self {
        let cfg = || initial_list.watcher_config();
        let (pools, pools_w) = reflector::store();
        let (machine_configs, mcs_w) = reflector::store();
        let (crcs, crcs_w) = reflector::store();
        // Rendered MachineConfigs are large and many; only ours are kept whole.
        let mcs = watcher::watcher(Api::<MachineConfig>::all(client.clone()), cfg()).modify(
            |mc: &mut MachineConfig| {
                if !is_ours_mc(&mc.name_any()) {
                    mc.spec = Default::default();
                }
                mc.managed_fields_mut().clear();
            },
        );
        let tasks = vec![
            spawn_reflector(
                pools_w,
                watcher::watcher(Api::all(client.clone()), cfg()),
                pool_fingerprint,
                trigger(trigger_tx),
                metrics,
                shutdown,
            ),
            spawn_reflector(
                mcs_w,
                mcs,
                machine_config_fingerprint,
                trigger(trigger_tx),
                metrics,
                shutdown,
            ),
            spawn_reflector(
                crcs_w,
                watcher::watcher(Api::all(client.clone()), cfg()),
                crc_fingerprint,
                trigger(trigger_tx),
                metrics,
                shutdown,
            ),
        ];
        McoWatches {
            pools,
            machine_configs,
            crcs,
            tasks,
        }
    }
}

impl InstallerWatches {
    fn start(
        client: &Client,
        namespace: &str,
        initial_list: InitialList,
        trigger_tx: &UnboundedSender<()>,
        metrics: &Arc<Metrics>,
        shutdown: &CancellationToken,
    ) -> Self {
        let (config_maps, cm_w) = reflector::store();
        let (daemon_sets, ds_w) = reflector::store();
        let (pods, pods_w) = reflector::store();
        let by_name = initial_list
            .watcher_config()
            .fields(&format!("metadata.name={NODE_INSTALLER}"));
        let selector = crate::plan::installer_objects::pod_selector_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let tasks = vec![
            spawn_reflector(
                cm_w,
                watcher::watcher(
                    Api::<ConfigMap>::namespaced(client.clone(), namespace),
                    by_name.clone(),
                ),
                rv_fingerprint,
                trigger(trigger_tx),
                metrics,
                shutdown,
            ),
            spawn_reflector(
                ds_w,
                watcher::watcher(
                    Api::<DaemonSet>::namespaced(client.clone(), namespace),
                    by_name,
                ),
                rv_fingerprint,
                trigger(trigger_tx),
                metrics,
                shutdown,
            ),
            spawn_reflector(
                pods_w,
                watcher::watcher(
                    Api::<Pod>::namespaced(client.clone(), namespace),
                    initial_list.watcher_config().labels(&selector),
                )
                .modify(|p: &mut Pod| p.managed_fields_mut().clear()),
                installer_pod_fingerprint,
                trigger(trigger_tx),
                metrics,
                shutdown,
            ),
        ];
        InstallerWatches {
            config_maps,
            daemon_sets,
            pods,
            tasks,
        }
    }
}

pub fn is_ours_mc(name: &str) -> bool {
    name == EXTENSION_MC || name == CRIO_DROPIN_MC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_pods_never_block() {
        let p = |phase: &str| PodInfo {
            namespace: "ns".into(),
            name: "p".into(),
            runtime_class: Some("kata".into()),
            phase: Some(phase.into()),
        };
        assert!(p("Succeeded").is_terminal());
        assert!(p("Failed").is_terminal());
        assert!(!p("Running").is_terminal());
        assert!(!p("Pending").is_terminal());
        assert!(!p("Unknown").is_terminal());
    }
}
