//! What one admission decision reads, taken from the process's shared caches
//! ([`crate::cache::ClusterCache`]; never an API call per request): a small snapshot
//! ([`PodEnv`], [`KataEnv`]) handed to a pure decision function.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::node::v1::RuntimeClass;

use crate::api::KataConfig;
use crate::cache::ClusterCache;
use crate::plan::NodeInfo;

/// What the pod decisions need to know about the cluster.
#[derive(Debug, Clone, Default)]
pub struct PodEnv {
    pub operator_namespace: String,
    /// Labels of the pod's namespace; `None` when the namespace is not (yet) in the cache.
    pub namespace_labels: Option<BTreeMap<String, String>>,
    /// The KataConfig in force, if any.
    pub kata: Option<KataState>,
}

/// The KataConfig in force as the pod decisions see it.
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

/// The KataConfig in force, as the pod decisions see it.
pub fn kata_state(cache: &ClusterCache) -> Option<KataState> {
    let kc = cache.kata_config_in_force()?;
    let names = kc
        .status
        .as_ref()
        .map(|s| s.runtime_classes.clone())
        .unwrap_or_default();
    let runtime_classes = names
        .iter()
        .filter_map(|n| cache.runtime_class(n))
        .collect();
    Some(KataState {
        name: kc.metadata.name.clone().unwrap_or_default(),
        default_policy: kc.spec.default_namespace_policy().to_string(),
        runtime_class_names: names,
        runtime_classes,
    })
}

pub fn pod_env(cache: &ClusterCache, namespace: &str, operator_namespace: &str) -> PodEnv {
    PodEnv {
        operator_namespace: operator_namespace.to_string(),
        namespace_labels: cache.namespace_labels(namespace),
        kata: kata_state(cache),
    }
}

pub fn kata_env(cache: &ClusterCache) -> KataEnv {
    KataEnv {
        existing: cache.kata_configs(),
        nodes: cache.nodes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use kube::core::PartialObjectMeta;
    use kube::runtime::watcher;

    fn kc(name: &str, created: i64, deleting: bool) -> KataConfig {
        let mut k = KataConfig::new(name, Default::default());
        k.metadata.creation_timestamp = Some(Time(
            jiff::Timestamp::from_second(created).expect("valid time"),
        ));
        if deleting {
            k.metadata.deletion_timestamp = k.metadata.creation_timestamp.clone();
        }
        k
    }

    #[test]
    fn the_kata_config_in_force_is_the_oldest_not_being_deleted() {
        let (cache, mut w) = ClusterCache::new();
        for k in [kc("b", 20, false), kc("a", 10, true), kc("c", 30, false)] {
            w.kataconfigs.apply_watcher_event(&watcher::Event::Apply(k));
        }
        assert_eq!(kata_state(&cache).expect("one in force").name, "b");
        let (cache, mut w) = ClusterCache::new();
        w.kataconfigs
            .apply_watcher_event(&watcher::Event::Apply(kc("x", 1, true)));
        assert!(kata_state(&cache).is_none());
    }

    #[tokio::test]
    async fn snapshots_come_from_the_stores() {
        let (cache, mut w) = ClusterCache::new();
        let mut k = kc("example", 1, false);
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
        let mut ns = PartialObjectMeta::<k8s_openapi::api::core::v1::Namespace>::default();
        ns.metadata.name = Some("team".into());
        ns.metadata.labels = Some(BTreeMap::from([("a".into(), "b".into())]));
        w.namespaces.apply_watcher_event(&watcher::Event::Apply(ns));

        let env = pod_env(&cache, "team", "op");
        assert_eq!(env.namespace_labels.expect("cached")["a"], "b");
        let kata = env.kata.expect("in force");
        assert_eq!(kata.runtime_class_names, ["kata", "kata-missing"]);
        assert_eq!(kata.runtime_classes.len(), 1, "only existing classes");
        assert!(kata.is_kata("kata-missing"));
        assert_eq!(kata.default_policy, "allow");
        assert!(pod_env(&cache, "unknown", "op").namespace_labels.is_none());
    }
}
