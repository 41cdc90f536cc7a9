//! Watched caches the admission decisions read (never an API call per request): Namespaces and
//! Nodes (metadata only), RuntimeClasses and KataConfigs. Each request takes a small snapshot
//! ([`PodEnv`], [`KataEnv`]) and hands it to a pure decision function.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::api::KataConfig;
use crate::plan::NodeInfo;

/// What the pod decisions need to know about the cluster.
#[derive(Debug, Clone, Default)]
pub struct PodEnv {
    pub operator_namespace: String,
    /// Labels of the pod's namespace; `None` when the namespace is not (yet) in the cache.
    pub namespace_labels: Option<BTreeMap<String, String>>,
    /// The active KataConfig, if any.
    pub kata: Option<KataState>,
}

/// The active KataConfig as the pod decisions see it.
#[derive(Debug, Clone, Default)]
pub struct KataState {
    pub name: String,
    /// `spec.namespacePolicy.default`.
    pub default_policy: String,
    /// `status.runtimeClasses`: the RuntimeClasses this operator manages ("kata RuntimeClasses").
    pub runtime_class_names: Vec<String>,
    /// Those of them that exist, in `status.runtimeClasses` order; the first is injected.
    pub runtime_classes: Vec<Arc<RuntimeClass>>,
}

impl KataState {
    pub fn is_kata(&self, runtime_class: &str) -> bool {
        self.runtime_class_names.iter().any(|n| n == runtime_class)
    }
}

/// What the KataConfig decision needs: the KataConfigs that exist and the nodes.
#[derive(Debug, Clone, Default)]
pub struct KataEnv {
    pub existing: Vec<Arc<KataConfig>>,
    pub nodes: Vec<NodeInfo>,
}

/// The one KataConfig the operator acts on: not being deleted; the oldest if (against the
/// webhook's will) several exist.
pub fn active_kataconfig(all: &[Arc<KataConfig>]) -> Option<Arc<KataConfig>> {
    all.iter()
        .filter(|kc| kc.metadata.deletion_timestamp.is_none())
        .min_by(|a, b| {
            let key = |k: &KataConfig| {
                (
                    k.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    k.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        })
        .cloned()
}

/// Read side of the caches.
#[derive(Clone)]
pub struct Caches {
    namespaces: Store<PartialObjectMeta<Namespace>>,
    nodes: Store<PartialObjectMeta<Node>>,
    runtime_classes: Store<RuntimeClass>,
    kataconfigs: Store<KataConfig>,
    /// Woken on every KataConfig or RuntimeClass event (registration follows the active one).
    pub changed: Arc<Notify>,
}

/// Write side, fed by watchers in production and by tests directly.
pub struct CacheWriters {
    pub namespaces: Writer<PartialObjectMeta<Namespace>>,
    pub nodes: Writer<PartialObjectMeta<Node>>,
    pub runtime_classes: Writer<RuntimeClass>,
    pub kataconfigs: Writer<KataConfig>,
}

impl Caches {
    /// Empty caches and their writers.
    pub fn new() -> (Caches, CacheWriters) {
        let (namespaces, ns_w) = reflector::store();
        let (nodes, node_w) = reflector::store();
        let (runtime_classes, rc_w) = reflector::store();
        let (kataconfigs, kc_w) = reflector::store();
        (
            Caches {
                namespaces,
                nodes,
                runtime_classes,
                kataconfigs,
                changed: Arc::new(Notify::new()),
            },
            CacheWriters {
                namespaces: ns_w,
                nodes: node_w,
                runtime_classes: rc_w,
                kataconfigs: kc_w,
            },
        )
    }

    /// Starts the four watches; they run until `shutdown`.
    pub fn start(client: kube::Client, shutdown: CancellationToken) -> Caches {
        let (caches, w) = Caches::new();
        let cfg = watcher::Config::default;
        spawn_watch(
            "namespaces",
            reflector::reflector(
                w.namespaces,
                watcher(
                    Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                    cfg(),
                )
                // Only the policy label is read; namespaces are many.
                .modify(|ns| {
                    ns.managed_fields_mut().clear();
                    ns.annotations_mut().clear();
                })
                .default_backoff(),
            ),
            None,
            shutdown.clone(),
        );
        spawn_watch(
            "nodes",
            reflector::reflector(
                w.nodes,
                watcher(Api::<PartialObjectMeta<Node>>::all(client.clone()), cfg())
                    // Labels (and MCO annotations) are all the KataConfig checks read.
                    .modify(crate::reconciler::observe::slim_node)
                    .default_backoff(),
            ),
            None,
            shutdown.clone(),
        );
        spawn_watch(
            "runtimeclasses",
            reflector::reflector(
                w.runtime_classes,
                watcher(Api::<RuntimeClass>::all(client.clone()), cfg()).default_backoff(),
            ),
            Some(caches.changed.clone()),
            shutdown.clone(),
        );
        spawn_watch(
            "kataconfigs",
            reflector::reflector(
                w.kataconfigs,
                watcher(Api::<KataConfig>::all(client), cfg()).default_backoff(),
            ),
            Some(caches.changed.clone()),
            shutdown,
        );
        caches
    }

    /// Waits until every cache has its initial list.
    pub async fn wait_synced(&self) -> anyhow::Result<()> {
        crate::health::store_ready(&self.namespaces).await?;
        crate::health::store_ready(&self.nodes).await?;
        crate::health::store_ready(&self.runtime_classes).await?;
        crate::health::store_ready(&self.kataconfigs).await?;
        Ok(())
    }

    pub fn active_kataconfig(&self) -> Option<Arc<KataConfig>> {
        active_kataconfig(&self.kataconfigs.state())
    }

    pub fn kata_state(&self) -> Option<KataState> {
        let kc = self.active_kataconfig()?;
        let names = kc
            .status
            .as_ref()
            .map(|s| s.runtime_classes.clone())
            .unwrap_or_default();
        let runtime_classes = names
            .iter()
            .filter_map(|n| self.runtime_classes.get(&ObjectRef::new(n)))
            .collect();
        Some(KataState {
            name: kc.metadata.name.clone().unwrap_or_default(),
            default_policy: kc.spec.default_namespace_policy().to_string(),
            runtime_class_names: names,
            runtime_classes,
        })
    }

    pub fn pod_env(&self, namespace: &str, operator_namespace: &str) -> PodEnv {
        PodEnv {
            operator_namespace: operator_namespace.to_string(),
            namespace_labels: self
                .namespaces
                .get(&ObjectRef::new(namespace))
                .map(|ns| ns.metadata.labels.clone().unwrap_or_default()),
            kata: self.kata_state(),
        }
    }

    pub fn kata_env(&self) -> KataEnv {
        KataEnv {
            existing: self.kataconfigs.state(),
            nodes: self
                .nodes
                .state()
                .iter()
                .map(|n| NodeInfo::from_meta(&n.metadata))
                .collect(),
        }
    }
}

fn spawn_watch<K, S>(
    what: &'static str,
    stream: S,
    notify: Option<Arc<Notify>>,
    shutdown: CancellationToken,
) where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                () = shutdown.cancelled() => return,
            };
            match next {
                Some(Ok(_)) => {
                    if let Some(n) = &notify {
                        n.notify_one();
                    }
                }
                // The backoff retries; the cache keeps its last state meanwhile.
                Some(Err(e)) => warn!(cache = what, error = %e, "watch failed; retrying"),
                None => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn kc(name: &str, created: i64, deleting: bool) -> Arc<KataConfig> {
        let mut k = KataConfig::new(name, Default::default());
        k.metadata.creation_timestamp = Some(Time(
            jiff::Timestamp::from_second(created).expect("valid time"),
        ));
        if deleting {
            k.metadata.deletion_timestamp = k.metadata.creation_timestamp.clone();
        }
        Arc::new(k)
    }

    #[test]
    fn active_kataconfig_is_the_oldest_not_being_deleted() {
        let all = vec![kc("b", 20, false), kc("a", 10, true), kc("c", 30, false)];
        let active = active_kataconfig(&all).expect("one active");
        assert_eq!(active.metadata.name.as_deref(), Some("b"));
        assert!(active_kataconfig(&[kc("x", 1, true)]).is_none());
    }

    #[tokio::test]
    async fn snapshots_come_from_the_stores() {
        let (caches, mut w) = Caches::new();
        let mut k = (*kc("example", 1, false)).clone();
        k.status = Some(crate::api::KataConfigStatus {
            runtime_classes: vec!["kata".into(), "kata-missing".into()],
            ..Default::default()
        });
        w.kataconfigs.apply_watcher_event(&watcher::Event::Apply(k));
        let rc = RuntimeClass {
            metadata: ObjectMeta {
                name: Some("kata".into()),
                ..Default::default()
            },
            handler: "kata".into(),
            ..Default::default()
        };
        w.runtime_classes
            .apply_watcher_event(&watcher::Event::Apply(rc));
        let mut ns = PartialObjectMeta::<Namespace>::default();
        ns.metadata.name = Some("team".into());
        ns.metadata.labels = Some(BTreeMap::from([("a".into(), "b".into())]));
        w.namespaces.apply_watcher_event(&watcher::Event::Apply(ns));

        let env = caches.pod_env("team", "op");
        assert_eq!(env.namespace_labels.expect("cached")["a"], "b");
        let kata = env.kata.expect("active");
        assert_eq!(kata.runtime_class_names, ["kata", "kata-missing"]);
        assert_eq!(kata.runtime_classes.len(), 1, "only existing classes");
        assert!(kata.is_kata("kata-missing"));
        assert_eq!(kata.default_policy, "allow");
        assert!(caches.pod_env("unknown", "op").namespace_labels.is_none());
    }
}
