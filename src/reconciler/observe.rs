//! What the reconciler sees: one snapshot of the cluster, read from watch caches (no API reads
//! per reconcile). Nodes, RuntimeClasses and KataConfigs come from the process's shared caches
//! ([`crate::cache`]); the objects only the reconciler reads (pools, MachineConfigs, the
//! ContainerRuntimeConfig and, during uninstall, pods) are watched here, for as long as this
//! reconciler runs.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::Pod;
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
use crate::names::{
    CONTAINER_RUNTIME_CONFIG, CRIO_DROPIN_MC, EXTENSION_MC, KATA_POOL, MASTER_POOL, RUNTIME_CLASS,
    WORKER_POOL,
};
use crate::observability::Metrics;
use crate::plan::NodeInfo;

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
    pub now: Time,
}

/// The watches of what only the reconciler reads, plus the lazily started pod watch. Dropping
/// it stops them all.
pub struct OwnedCaches {
    pools: Store<MachineConfigPool>,
    machine_configs: Store<MachineConfig>,
    crcs: Store<ContainerRuntimeConfig>,
    tasks: Vec<JoinHandle<()>>,
    pods: tokio::sync::Mutex<Option<PodWatch>>,
    client: Client,
    trigger: UnboundedSender<()>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    /// Streaming or paged lists, as the shared caches found the server.
    initial_list: InitialList,
}

struct PodWatch {
    store: Store<Pod>,
    task: JoinHandle<()>,
}

impl Drop for OwnedCaches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
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
    /// Starts the watches, their first state by `initial_list` (see
    /// [`ClusterCache::initial_list`]). Each change of something the decision reads sends on
    /// `trigger`.
    pub fn start(
        client: Client,
        initial_list: InitialList,
        trigger_tx: UnboundedSender<()>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
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
                trigger(&trigger_tx),
                &metrics,
                &shutdown,
            ),
            spawn_reflector(
                mcs_w,
                mcs,
                machine_config_fingerprint,
                trigger(&trigger_tx),
                &metrics,
                &shutdown,
            ),
            spawn_reflector(
                crcs_w,
                watcher::watcher(Api::all(client.clone()), cfg()),
                crc_fingerprint,
                trigger(&trigger_tx),
                &metrics,
                &shutdown,
            ),
        ];
        OwnedCaches {
            pools,
            machine_configs,
            crcs,
            tasks,
            pods: tokio::sync::Mutex::new(None),
            client,
            trigger: trigger_tx,
            metrics,
            shutdown,
            initial_list,
        }
    }

    /// Resolves once every cache has completed its first list.
    pub async fn wait_until_ready(&self) -> Result<(), Error> {
        let ready = |r: Result<(), reflector::store::WriterDropped>, name| {
            r.map_err(|_| Error::CacheNotReady(name))
        };
        ready(store_ready(&self.pools).await, "machineconfigpools")?;
        ready(store_ready(&self.machine_configs).await, "machineconfigs")?;
        ready(store_ready(&self.crcs).await, "containerruntimeconfigs")?;
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
    pub fn snapshot(&self, cluster: &ClusterCache, kc: &KataConfig, now: Time) -> Observed {
        let mut nodes = cluster.nodes();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let all = cluster.kata_configs();
        Observed {
            kata_config: kc.clone(),
            active: active_kata_config(all.iter().map(AsRef::as_ref)).map(|k| k.name_any()),
            nodes,
            pools: self
                .pools
                .state()
                .iter()
                .map(|p| (p.name_any(), (**p).clone()))
                .collect(),
            machine_configs: self
                .machine_configs
                .state()
                .iter()
                .filter(|m| is_ours_mc(&m.name_any()))
                .map(|m| (m.name_any(), (**m).clone()))
                .collect(),
            container_runtime_config: self
                .crcs
                .state()
                .iter()
                .find(|c| c.name_any() == CONTAINER_RUNTIME_CONFIG)
                .map(|c| (**c).clone()),
            runtime_class: cluster.runtime_class(RUNTIME_CLASS).map(|c| (*c).clone()),
            pods: None,
            now,
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
