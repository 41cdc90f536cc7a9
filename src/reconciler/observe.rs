//! What the reconciler sees: one snapshot of the cluster, read from watch caches (no API reads
//! per reconcile), and the watch caches themselves.
//!
//! Every cache is a reflector whose events also trigger the controller, filtered by a
//! fingerprint of the fields the decision reads (e.g. node labels and MCO annotations, not
//! heartbeats), so progress is event-driven and a quiet cluster causes no reconciles at all.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::channel::mpsc::UnboundedSender;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use crate::api::{ContainerRuntimeConfig, KataConfig, MachineConfig, MachineConfigPool};
use crate::metrics::Metrics;
use crate::names::{
    CONTAINER_RUNTIME_CONFIG, CRIO_DROPIN_MC, EXTENSION_MC, FINALIZER, KATA_POOL, MASTER_POOL,
    MCO_CURRENT_CONFIG, MCO_DESIRED_CONFIG, MCO_REASON, MCO_STATE, RUNTIME_CLASS, WORKER_POOL,
};
use crate::plan::NodeInfo;

use super::error::{Error, kube_category};

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

/// The one KataConfig the operator acts on: the oldest (creationTimestamp, then name), ignoring
/// objects that are already going away without our finalizer.
pub fn active_kata_config<'a>(all: impl IntoIterator<Item = &'a KataConfig>) -> Option<String> {
    all.into_iter()
        .filter(|kc| kc.metadata.deletion_timestamp.is_none() || has_finalizer(kc))
        .min_by(|a, b| {
            let ka = (
                a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                a.name_any(),
            );
            let kb = (
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                b.name_any(),
            );
            ka.cmp(&kb)
        })
        .map(|kc| kc.name_any())
}

pub fn has_finalizer(kc: &KataConfig) -> bool {
    kc.finalizers().iter().any(|f| f == FINALIZER)
}

/// The watch caches the reconciler reads, plus the lazily started pod watch.
pub struct Caches {
    pub nodes: Store<PartialObjectMeta<Node>>,
    pub pools: Store<MachineConfigPool>,
    pub machine_configs: Store<MachineConfig>,
    pub crcs: Store<ContainerRuntimeConfig>,
    pub runtime_classes: Store<RuntimeClass>,
    tasks: Vec<JoinHandle<()>>,
    pods: tokio::sync::Mutex<Option<PodWatch>>,
    client: Client,
    trigger: UnboundedSender<()>,
    metrics: Arc<Metrics>,
}

struct PodWatch {
    store: Store<Pod>,
    task: JoinHandle<()>,
}

impl Drop for Caches {
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

fn fingerprint<T: Hash>(v: &T) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// The only node annotations the decision reads.
const NODE_ANNOTATIONS: [&str; 4] = [
    MCO_CURRENT_CONFIG,
    MCO_DESIRED_CONFIG,
    MCO_STATE,
    MCO_REASON,
];

/// Node fingerprint: labels and the MCO annotations; status heartbeats do not trigger.
fn node_fp(n: &PartialObjectMeta<Node>) -> u64 {
    let anns: Vec<_> = NODE_ANNOTATIONS
        .iter()
        .map(|k| n.annotations().get(*k))
        .collect();
    fingerprint(&(n.labels(), anns))
}

/// Keeps in the node cache only what the decision reads: real nodes carry kilobytes of
/// managedFields and network-plugin annotations each, which would dominate the cache (and be
/// copied into every snapshot) on a large cluster.
pub fn slim_node(n: &mut PartialObjectMeta<Node>) {
    n.managed_fields_mut().clear();
    n.annotations_mut()
        .retain(|k, _| NODE_ANNOTATIONS.contains(&k.as_str()));
}

fn rv_fp<K: Resource>(o: &K) -> u64 {
    fingerprint(&o.meta().resource_version)
}

fn pod_fp(p: &Pod) -> u64 {
    let i = PodInfo::from_pod(p);
    fingerprint(&(i.runtime_class, i.phase))
}

impl Caches {
    /// Starts every watch. Each event that changes a fingerprint sends on `trigger`.
    pub fn start(client: Client, trigger: UnboundedSender<()>, metrics: Arc<Metrics>) -> Self {
        let mut tasks = Vec::new();
        // Metadata-only: labels and annotations are all the planner needs from a Node.
        let nodes = spawn_cache(
            watcher::watcher(
                Api::<PartialObjectMeta<Node>>::all(client.clone()),
                watcher::Config::default(),
            )
            .modify(slim_node),
            node_fp,
            &trigger,
            &metrics,
            &mut tasks,
        );
        let pools = spawn_cache(
            watcher::watcher(Api::all(client.clone()), watcher::Config::default()),
            // Only our pool and the ones nodes move between matter.
            |p: &MachineConfigPool| {
                if [KATA_POOL, WORKER_POOL, MASTER_POOL].contains(&p.name_any().as_str()) {
                    rv_fp(p)
                } else {
                    0
                }
            },
            &trigger,
            &metrics,
            &mut tasks,
        );
        // Rendered MachineConfigs are large and many; only ours are cached (by name filter).
        let machine_configs = spawn_cache(
            watcher::watcher(Api::all(client.clone()), watcher::Config::default()).modify(
                |mc: &mut MachineConfig| {
                    if !is_ours_mc(&mc.name_any()) {
                        mc.spec = Default::default();
                    }
                    mc.managed_fields_mut().clear();
                },
            ),
            |mc: &MachineConfig| {
                if is_ours_mc(&mc.name_any()) {
                    rv_fp(mc)
                } else {
                    0
                }
            },
            &trigger,
            &metrics,
            &mut tasks,
        );
        let crcs = spawn_cache(
            watcher::watcher(Api::all(client.clone()), watcher::Config::default()),
            |c: &ContainerRuntimeConfig| {
                if c.name_any() == CONTAINER_RUNTIME_CONFIG {
                    rv_fp(c)
                } else {
                    0
                }
            },
            &trigger,
            &metrics,
            &mut tasks,
        );
        let runtime_classes = spawn_cache(
            watcher::watcher(Api::all(client.clone()), watcher::Config::default()),
            |rc: &RuntimeClass| {
                if rc.name_any() == RUNTIME_CLASS {
                    rv_fp(rc)
                } else {
                    0
                }
            },
            &trigger,
            &metrics,
            &mut tasks,
        );
        Caches {
            nodes,
            pools,
            machine_configs,
            crcs,
            runtime_classes,
            tasks,
            pods: tokio::sync::Mutex::new(None),
            client,
            trigger,
            metrics,
        }
    }

    /// Resolves once every cache has completed its first list.
    pub async fn wait_until_ready(&self) -> Result<(), Error> {
        let ready = |r: Result<(), reflector::store::WriterDropped>, name| {
            r.map_err(|_| Error::CacheNotReady(name))
        };
        ready(crate::health::store_ready(&self.nodes).await, "nodes")?;
        ready(
            crate::health::store_ready(&self.pools).await,
            "machineconfigpools",
        )?;
        ready(
            crate::health::store_ready(&self.machine_configs).await,
            "machineconfigs",
        )?;
        ready(
            crate::health::store_ready(&self.crcs).await,
            "containerruntimeconfigs",
        )?;
        ready(
            crate::health::store_ready(&self.runtime_classes).await,
            "runtimeclasses",
        )?;
        Ok(())
    }

    /// Pods using a RuntimeClass, from a pod watch started on first use (uninstall only).
    /// Every change of such a pod's phase triggers a reconcile, so a blocked uninstall resumes
    /// by itself as soon as the last kata pod finishes.
    pub async fn kata_pods(&self) -> Result<Vec<PodInfo>, Error> {
        let mut guard = self.pods.lock().await;
        if guard.is_none() {
            let mut tasks = Vec::new();
            let store = spawn_cache(
                watcher::watcher(
                    Api::<Pod>::all(self.client.clone()),
                    watcher::Config::default(),
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
                }),
                pod_fp,
                &self.trigger,
                &self.metrics,
                &mut tasks,
            );
            let task = tasks.pop().ok_or(Error::CacheNotReady("pods"))?;
            *guard = Some(PodWatch { store, task });
        }
        let store = match guard.as_ref() {
            Some(w) => w.store.clone(),
            None => return Err(Error::CacheNotReady("pods")),
        };
        drop(guard);
        store
            .wait_until_ready()
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

    /// Reads the snapshot for one KataConfig. `all` are the KataConfigs of the controller cache.
    pub fn snapshot(&self, kc: &KataConfig, all: &[Arc<KataConfig>], now: Time) -> Observed {
        let mut nodes: Vec<NodeInfo> = self
            .nodes
            .state()
            .iter()
            .map(|n| NodeInfo::from_meta(&n.metadata))
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Observed {
            kata_config: kc.clone(),
            active: active_kata_config(all.iter().map(|k| k.as_ref())),
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
            runtime_class: self
                .runtime_classes
                .state()
                .iter()
                .find(|c| c.name_any() == RUNTIME_CLASS)
                .map(|c| (**c).clone()),
            pods: None,
            now,
        }
    }
}

pub fn is_ours_mc(name: &str) -> bool {
    name == EXTENSION_MC || name == CRIO_DROPIN_MC
}

/// Runs one reflector; triggers the controller when an object's fingerprint changes, when an
/// object is deleted, and after every (re)list.
fn spawn_cache<K, S>(
    stream: S,
    fp: fn(&K) -> u64,
    trigger: &UnboundedSender<()>,
    metrics: &Arc<Metrics>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let trigger = trigger.clone();
    let metrics = metrics.clone();
    let stream = reflector::reflector(writer, stream.default_backoff());
    tasks.push(tokio::spawn(async move {
        let mut seen: HashMap<(Option<String>, String), u64> = HashMap::new();
        let mut relist: HashMap<(Option<String>, String), u64> = HashMap::new();
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            let fire = match ev {
                Ok(Event::Apply(o)) => {
                    let f = fp(&o);
                    seen.insert((o.namespace(), o.name_any()), f) != Some(f)
                }
                Ok(Event::Delete(o)) => {
                    seen.remove(&(o.namespace(), o.name_any()));
                    true
                }
                Ok(Event::Init) => {
                    relist.clear();
                    false
                }
                Ok(Event::InitApply(o)) => {
                    relist.insert((o.namespace(), o.name_any()), fp(&o));
                    false
                }
                Ok(Event::InitDone) => {
                    let changed = relist != seen;
                    seen = std::mem::take(&mut relist);
                    changed
                }
                Err(e) => {
                    let category = match &e {
                        watcher::Error::InitialListFailed(k)
                        | watcher::Error::WatchStartFailed(k)
                        | watcher::Error::WatchFailed(k) => kube_category(k),
                        _ => "watch",
                    };
                    metrics.api_errors.with_label_values(&[category]).inc();
                    tracing::debug!(error = %e, "watch error; the watcher retries with backoff");
                    false
                }
            };
            if fire && trigger.unbounded_send(()).is_err() {
                // The controller is gone: nothing left to notify.
                break;
            }
        }
    }));
    store
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::KataConfigSpec;
    use kube::api::ObjectMeta;

    fn kc(name: &str, created: &str, deleting: bool, finalizer: bool) -> KataConfig {
        let mut k = KataConfig::new(name, KataConfigSpec::default());
        k.metadata = ObjectMeta {
            name: Some(name.into()),
            creation_timestamp: Some(Time(created.parse().expect("ts"))),
            deletion_timestamp: deleting.then(|| Time("2026-01-02T00:00:00Z".parse().expect("ts"))),
            finalizers: finalizer.then(|| vec![FINALIZER.to_string()]),
            ..Default::default()
        };
        k
    }

    #[test]
    fn oldest_kata_config_is_active_then_name_breaks_ties() {
        let a = kc("b-second", "2026-01-01T00:00:01Z", false, true);
        let b = kc("a-first", "2026-01-01T00:00:00Z", false, false);
        let c = kc("a-tie", "2026-01-01T00:00:01Z", false, false);
        assert_eq!(active_kata_config([&a, &b, &c]).as_deref(), Some("a-first"));
        assert_eq!(active_kata_config([&a, &c]).as_deref(), Some("a-tie"));
        assert_eq!(active_kata_config([]), None);
    }

    #[test]
    fn a_deleting_config_stays_active_until_its_finalizer_is_gone() {
        let old = kc("old", "2026-01-01T00:00:00Z", true, true);
        let new = kc("new", "2026-01-01T00:00:05Z", false, false);
        assert_eq!(active_kata_config([&old, &new]).as_deref(), Some("old"));
        let gone = kc("old", "2026-01-01T00:00:00Z", true, false);
        assert_eq!(active_kata_config([&gone, &new]).as_deref(), Some("new"));
    }

    #[test]
    fn node_cache_keeps_labels_and_mco_annotations_only() {
        let mut n: PartialObjectMeta<Node> = serde_json::from_value(serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {
                "name": "worker-0",
                "labels": {"node-role.kubernetes.io/worker": ""},
                "annotations": {
                    MCO_STATE: "Done", MCO_CURRENT_CONFIG: "rendered-a", MCO_DESIRED_CONFIG: "rendered-a",
                    MCO_REASON: "", "k8s.ovn.org/node-subnets": "{\"default\":[\"10.128.0.0/23\"]}",
                },
                "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}}],
            },
        }))
        .expect("node metadata");
        let before = node_fp(&n);
        slim_node(&mut n);
        assert!(n.metadata.managed_fields.as_ref().is_none_or(Vec::is_empty));
        let mut kept: Vec<_> = n.annotations().keys().map(String::as_str).collect();
        kept.sort_unstable();
        let mut want = NODE_ANNOTATIONS.to_vec();
        want.sort_unstable();
        assert_eq!(kept, want);
        assert_eq!(n.labels().len(), 1);
        assert_eq!(node_fp(&n), before, "slimming never changes what triggers");
        let info = NodeInfo::from_meta(&n.metadata);
        assert_eq!(info.annotation(MCO_CURRENT_CONFIG), Some("rendered-a"));
    }

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
