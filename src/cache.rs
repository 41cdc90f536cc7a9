//! The process's one view of the cluster: one watch per shared kind, and what the API server
//! serves. Nodes (metadata only, slimmed), RuntimeClasses, KataConfigs and Namespaces (metadata
//! only, labels) are read by the reconciler and by the webhooks alike, so each is listed and
//! watched once; API discovery ([`crate::discovery`]) is re-checked on an interval. Subscribers
//! learn what changed in a way that matters (a fingerprint of the fields anyone reads), so a
//! heartbeat never wakes them.
//!
//! [`spawn_reflector`] is also how the reconciler runs the watches of what it alone reads.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{KataConfig, active_kata_config, kata_config_in_force};
use crate::discovery::{self, ServedApis};
use crate::observability::metrics::Metrics;
use crate::plan::NodeInfo;
use crate::plan::nodes::slim_node;

/// Which shared kind changed in a way some reader cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Labels or MCO annotations of a node, or the set of nodes.
    Nodes,
    RuntimeClasses,
    KataConfigs,
    /// Labels of a namespace, or the set of namespaces.
    Namespaces,
    /// What the API server serves ([`ClusterCache::served_apis`]).
    ServedApis,
}

/// Read side of the shared watches. Cheap to clone.
#[derive(Clone)]
pub struct ClusterCache {
    nodes: Store<PartialObjectMeta<Node>>,
    runtime_classes: Store<RuntimeClass>,
    kata_configs: Store<KataConfig>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    served: watch::Receiver<Option<ServedApis>>,
    changes: broadcast::Sender<Change>,
}

/// Write side, fed by the watches in production and by tests directly.
pub struct CacheWriters {
    pub nodes: Writer<PartialObjectMeta<Node>>,
    pub runtime_classes: Writer<RuntimeClass>,
    pub kataconfigs: Writer<KataConfig>,
    pub namespaces: Writer<PartialObjectMeta<Namespace>>,
    /// What discovery found (`None`: not known yet).
    pub served: watch::Sender<Option<ServedApis>>,
}

fn fingerprint<T: Hash>(v: &T) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Fingerprint of an object's resourceVersion: any change of it.
pub fn rv_fingerprint<K: Resource>(o: &K) -> u64 {
    fingerprint(&o.meta().resource_version)
}

/// Node fingerprint: its labels and the MCO annotations (all that is kept of it).
fn node_fingerprint(n: &PartialObjectMeta<Node>) -> u64 {
    fingerprint(&(n.labels(), n.annotations()))
}

fn namespace_fingerprint(n: &PartialObjectMeta<Namespace>) -> u64 {
    fingerprint(n.labels())
}

impl ClusterCache {
    /// Empty caches and their writers (tests fill them by hand).
    pub fn new() -> (ClusterCache, CacheWriters) {
        let (nodes, node_w) = reflector::store();
        let (runtime_classes, rc_w) = reflector::store();
        let (kata_configs, kc_w) = reflector::store();
        let (namespaces, ns_w) = reflector::store();
        let (served_w, served) = watch::channel(None);
        let (changes, _) = broadcast::channel(64);
        (
            ClusterCache {
                nodes,
                runtime_classes,
                kata_configs,
                namespaces,
                served,
                changes,
            },
            CacheWriters {
                nodes: node_w,
                runtime_classes: rc_w,
                kataconfigs: kc_w,
                namespaces: ns_w,
                served: served_w,
            },
        )
    }

    /// Starts the four watches and discovery every [`discovery::DEFAULT_INTERVAL`]; they run
    /// until `shutdown`, reconnecting with backoff.
    pub fn start(client: Client, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Self {
        Self::start_with(client, metrics, discovery::DEFAULT_INTERVAL, shutdown)
    }

    /// [`ClusterCache::start`] with another discovery interval.
    pub fn start_with(
        client: Client,
        metrics: Arc<Metrics>,
        discovery_interval: std::time::Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let (cache, w) = ClusterCache::new();
        spawn_discovery(
            client.clone(),
            w.served,
            cache.changes.clone(),
            discovery_interval,
            shutdown.clone(),
        );
        let cfg = watcher::Config::default;
        let notify = |change: Change| {
            let tx = cache.changes.clone();
            // No subscriber yet is fine: readers look at the stores when they start.
            move || {
                let _ = tx.send(change);
                true
            }
        };
        let nodes = watcher::watcher(Api::<PartialObjectMeta<Node>>::all(client.clone()), cfg())
            .modify(slim_node);
        spawn_reflector(
            w.nodes,
            nodes,
            node_fingerprint,
            notify(Change::Nodes),
            &metrics,
            &shutdown,
        );
        spawn_reflector(
            w.runtime_classes,
            watcher::watcher(Api::<RuntimeClass>::all(client.clone()), cfg()),
            rv_fingerprint,
            notify(Change::RuntimeClasses),
            &metrics,
            &shutdown,
        );
        spawn_reflector(
            w.kataconfigs,
            watcher::watcher(Api::<KataConfig>::all(client.clone()), cfg()),
            rv_fingerprint,
            notify(Change::KataConfigs),
            &metrics,
            &shutdown,
        );
        // Only the policy label is read; namespaces are many.
        let namespaces = watcher::watcher(Api::<PartialObjectMeta<Namespace>>::all(client), cfg())
            .modify(|ns| {
                ns.managed_fields_mut().clear();
                ns.annotations_mut().clear();
            });
        spawn_reflector(
            w.namespaces,
            namespaces,
            namespace_fingerprint,
            notify(Change::Namespaces),
            &metrics,
            &shutdown,
        );
        cache
    }

    /// What the API server serves; `None` until discovery first answered.
    pub fn served_apis(&self) -> Option<ServedApis> {
        *self.served.borrow()
    }

    /// Waits for the first discovery answer (`None` if discovery stopped before one).
    pub async fn served_apis_ready(&self) -> Option<ServedApis> {
        let mut rx = self.served.clone();
        rx.wait_for(Option::is_some).await.ok().and_then(|v| *v)
    }

    /// Changes from now on. A receiver that falls behind gets `Lagged`: treat it as "anything
    /// may have changed".
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Waits until every shared cache has its first full list.
    pub async fn wait_synced(&self) -> Result<(), CacheNotSynced> {
        let ready = |r: Result<(), reflector::store::WriterDropped>, name| {
            r.map_err(|_| CacheNotSynced(name))
        };
        ready(store_ready(&self.nodes).await, "nodes")?;
        ready(store_ready(&self.runtime_classes).await, "runtimeclasses")?;
        ready(store_ready(&self.kata_configs).await, "kataconfigs")?;
        ready(store_ready(&self.namespaces).await, "namespaces")?;
        Ok(())
    }

    /// The planner's view of every node.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes
            .state()
            .iter()
            .map(|n| NodeInfo::from_meta(&n.metadata))
            .collect()
    }

    pub fn runtime_class(&self, name: &str) -> Option<Arc<RuntimeClass>> {
        self.runtime_classes.get(&reflector::ObjectRef::new(name))
    }

    pub fn kata_configs(&self) -> Vec<Arc<KataConfig>> {
        self.kata_configs.state()
    }

    /// The KataConfig the operator acts on (see [`active_kata_config`]).
    pub fn active_kata_config(&self) -> Option<Arc<KataConfig>> {
        let all = self.kata_configs.state();
        let name = active_kata_config(all.iter().map(AsRef::as_ref))?.name_any();
        all.into_iter().find(|k| k.name_any() == name)
    }

    /// The KataConfig admission enforces (see [`kata_config_in_force`]).
    pub fn kata_config_in_force(&self) -> Option<Arc<KataConfig>> {
        let all = self.kata_configs.state();
        let name = kata_config_in_force(all.iter().map(AsRef::as_ref))?.name_any();
        all.into_iter().find(|k| k.name_any() == name)
    }

    /// The KataConfig store itself (the reconciler's controller reads from it).
    pub fn kata_config_store(&self) -> Store<KataConfig> {
        self.kata_configs.clone()
    }

    /// Labels of a namespace; `None` when it is not (yet) in the cache.
    pub fn namespace_labels(
        &self,
        name: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        self.namespaces
            .get(&reflector::ObjectRef::new(name))
            .map(|ns| ns.metadata.labels.clone().unwrap_or_default())
    }
}

/// Probes now and every `interval` until `shutdown`; each change is stored, logged once and
/// announced as [`Change::ServedApis`].
fn spawn_discovery(
    client: Client,
    served: watch::Sender<Option<ServedApis>>,
    changes: broadcast::Sender<Change>,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            match discovery::probe(&client).await {
                Ok(now) if *served.borrow() != Some(now) => {
                    tracing::info!(
                        validating_admission_policy = now.validating_admission_policy,
                        machine_config = now.machine_config,
                        monitoring = now.monitoring,
                        "API discovery: served APIs changed"
                    );
                    served.send_replace(Some(now));
                    let _ = changes.send(Change::ServedApis);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "API discovery failed; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return,
            }
        }
    });
}

/// A cache that never completed its first list (its watch task ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {0} watch cache has not synced")]
pub struct CacheNotSynced(pub &'static str);

/// Waits until a reflector store has its first full list.
///
/// kube's `Store::wait_until_ready` wakes only the most recent of several concurrent waiters (it
/// keeps a single oneshot receiver), so a readiness task and a reconcile waiting at the same time
/// could hang forever. Re-polling every 50 ms re-registers each waiter's waker.
pub async fn store_ready<K>(store: &Store<K>) -> Result<(), reflector::store::WriterDropped>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    loop {
        if let Ok(result) = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            store.wait_until_ready(),
        )
        .await
        {
            return result;
        }
    }
}

/// Runs one reflector into `writer` until `shutdown` (or until `on_change` returns false because
/// nobody listens any more). `on_change` runs when an object's fingerprint changes, when one is
/// deleted, and after a (re)list that changed anything. Watch errors are counted in
/// `kata_operator_api_errors_total{category}`; the watcher retries with backoff.
pub fn spawn_reflector<K, S>(
    writer: Writer<K>,
    stream: S,
    fp: fn(&K) -> u64,
    on_change: impl Fn() -> bool + Send + 'static,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    let metrics = metrics.clone();
    let shutdown = shutdown.clone();
    let stream = reflector::reflector(writer, stream.default_backoff());
    tokio::spawn(async move {
        let mut changes = Fingerprints::default();
        let mut stream = std::pin::pin!(stream);
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                () = shutdown.cancelled() => return,
            };
            let Some(ev) = ev else { return };
            let fire = match ev {
                Ok(ev) => changes.observe(&ev, fp),
                Err(e) => {
                    let category = crate::kubeapi::watch_error_category(&e);
                    metrics
                        .api_errors
                        .with_label_values(&[category.as_str()])
                        .inc();
                    tracing::debug!(error = %e, "watch error; the watcher retries with backoff");
                    false
                }
            };
            if fire && !on_change() {
                return;
            }
        }
    })
}

/// The fingerprints last seen per object, to tell a change that matters from one that does not.
#[derive(Default)]
struct Fingerprints {
    seen: HashMap<(Option<String>, String), u64>,
    relist: HashMap<(Option<String>, String), u64>,
}

impl Fingerprints {
    /// Whether this event changed anything a reader looks at.
    fn observe<K: Resource>(&mut self, ev: &Event<K>, fp: fn(&K) -> u64) -> bool {
        let key = |o: &K| {
            (
                o.meta().namespace.clone(),
                o.meta().name.clone().unwrap_or_default(),
            )
        };
        match ev {
            Event::Apply(o) => {
                let f = fp(o);
                self.seen.insert(key(o), f) != Some(f)
            }
            Event::Delete(o) => {
                self.seen.remove(&key(o));
                true
            }
            Event::Init => {
                self.relist.clear();
                false
            }
            Event::InitApply(o) => {
                self.relist.insert(key(o), fp(o));
                false
            }
            Event::InitDone => {
                let changed = self.relist != self.seen;
                self.seen = std::mem::take(&mut self.relist);
                changed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], rv: &str) -> PartialObjectMeta<Node> {
        PartialObjectMeta {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_changes_of_read_fields_fire() {
        let mut f = Fingerprints::default();
        let fp: fn(&PartialObjectMeta<Node>) -> u64 = node_fingerprint;
        assert!(!f.observe(&Event::Init, fp));
        assert!(!f.observe(&Event::InitApply(node("a", &[("x", "1")], "1")), fp));
        assert!(
            f.observe(&Event::InitDone, fp),
            "the first list is a change"
        );
        // A heartbeat bumps the resourceVersion only.
        assert!(!f.observe(&Event::Apply(node("a", &[("x", "1")], "2")), fp));
        assert!(f.observe(&Event::Apply(node("a", &[("x", "2")], "3")), fp));
        assert!(f.observe(&Event::Delete(node("a", &[("x", "2")], "4")), fp));
        // A relist that finds what was already known changes nothing.
        assert!(!f.observe(&Event::Init, fp));
        assert!(!f.observe(&Event::InitDone, fp));
    }

    #[test]
    fn node_cache_keeps_labels_and_mco_annotations_only() {
        use crate::names::{MCO_CURRENT_CONFIG, MCO_DESIRED_CONFIG, MCO_REASON, MCO_STATE};
        use crate::plan::nodes::NODE_ANNOTATIONS;
        let raw = |ovn: &str| -> PartialObjectMeta<Node> {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": {
                    "name": "worker-0",
                    "labels": {"node-role.kubernetes.io/worker": ""},
                    "annotations": {
                        MCO_STATE: "Done", MCO_CURRENT_CONFIG: "rendered-a", MCO_DESIRED_CONFIG: "rendered-a",
                        MCO_REASON: "", "k8s.ovn.org/node-subnets": ovn,
                    },
                    "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}}],
                },
            }))
            .expect("node metadata")
        };
        let mut n = raw("{\"default\":[\"10.128.0.0/23\"]}");
        slim_node(&mut n);
        assert!(n.metadata.managed_fields.as_ref().is_none_or(Vec::is_empty));
        let mut kept: Vec<_> = n.annotations().keys().map(String::as_str).collect();
        kept.sort_unstable();
        let mut want = NODE_ANNOTATIONS.to_vec();
        want.sort_unstable();
        assert_eq!(kept, want);
        assert_eq!(n.labels().len(), 1);
        // What is dropped never triggers: another OVN annotation, same fingerprint.
        let mut other = raw("{\"default\":[\"10.129.0.0/23\"]}");
        slim_node(&mut other);
        assert_eq!(node_fingerprint(&n), node_fingerprint(&other));
        let info = NodeInfo::from_meta(&n.metadata);
        assert_eq!(info.annotation(MCO_CURRENT_CONFIG), Some("rendered-a"));
    }

    #[tokio::test]
    async fn concurrent_waiters_on_one_store_all_wake() {
        let (store, mut writer) = reflector::store::<Node>();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { store_ready(&s).await })
            })
            .collect();
        // Let every waiter register before the store becomes ready.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        for w in waiters {
            let woke = tokio::time::timeout(std::time::Duration::from_secs(10), w).await;
            assert!(
                matches!(woke, Ok(Ok(Ok(())))),
                "a waiter never woke: {woke:?}"
            );
        }
    }

    #[tokio::test]
    async fn readers_see_the_stores_and_the_rules_on_them() {
        let (cache, mut w) = ClusterCache::new();
        let mut kc = KataConfig::new("example", Default::default());
        kc.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(1).expect("time"),
            ));
        w.kataconfigs.apply_watcher_event(&Event::Apply(kc));
        let mut ns = PartialObjectMeta::<Namespace>::default();
        ns.metadata.name = Some("team".into());
        ns.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        w.namespaces.apply_watcher_event(&Event::Apply(ns));
        w.nodes
            .apply_watcher_event(&Event::Apply(node("w0", &[("k", "v")], "1")));
        assert_eq!(cache.namespace_labels("team").expect("cached")["a"], "b");
        assert!(cache.namespace_labels("other").is_none());
        assert_eq!(
            cache
                .active_kata_config()
                .and_then(|k| k.metadata.name.clone())
                .as_deref(),
            Some("example")
        );
        assert!(cache.kata_config_in_force().is_some());
        assert_eq!(cache.nodes()[0].labels["k"], "v");
    }
}
