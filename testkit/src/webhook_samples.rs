//! The cluster state the sample AdmissionReviews in `webhooks/samples/` assume: namespaces
//! `team-require`, `team-default`, `team-allow`, `team-deny` (labelled with that policy) and
//! `capture-demo` (unlabelled), the KataConfig `example-kataconfig` with RuntimeClass `kata`
//! (overhead 250m/350Mi, node selector `node-role.kubernetes.io/kata-oc`), and two workers.
//! Used by the tests, the benchmark and the local sample server behind the README's curl
//! examples — never by the operator itself.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::node::v1::{Overhead, RuntimeClass, Scheduling};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;

use sandboxed_containers_operator::api::{KataConfig, KataConfigStatus};
use sandboxed_containers_operator::cache::CacheWriters;
use sandboxed_containers_operator::names::{
    KATA_ROLE_LABEL, NAMESPACE_POLICY_LABEL, WORKER_ROLE_LABEL,
};

pub const POLICY_NAMESPACES: [(&str, &str); 4] = [
    ("team-require", "require"),
    ("team-default", "default"),
    ("team-allow", "allow"),
    ("team-deny", "deny"),
];
pub const KATACONFIG: &str = "example-kataconfig";

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn namespace(name: &str, label_pairs: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
    let mut ns = PartialObjectMeta::<Namespace>::default();
    ns.metadata.name = Some(name.to_string());
    let mut l = labels(label_pairs);
    l.insert("kubernetes.io/metadata.name".into(), name.to_string());
    ns.metadata.labels = Some(l);
    ns
}

pub fn kata_runtime_class() -> RuntimeClass {
    RuntimeClass {
        metadata: ObjectMeta {
            name: Some("kata".into()),
            ..Default::default()
        },
        handler: "kata".into(),
        overhead: Some(Overhead {
            pod_fixed: Some(BTreeMap::from([
                ("cpu".into(), Quantity("250m".into())),
                ("memory".into(), Quantity("350Mi".into())),
            ])),
        }),
        scheduling: Some(Scheduling {
            node_selector: Some(labels(&[(KATA_ROLE_LABEL, "")])),
            tolerations: None,
        }),
    }
}

pub fn kataconfig(default_policy: &str) -> KataConfig {
    let mut kc = KataConfig::new(
        KATACONFIG,
        serde_json::from_value(serde_json::json!({"namespacePolicy": {"default": default_policy}}))
            .unwrap_or_default(),
    );
    kc.metadata.uid = Some("6e0c1f4e-6d1e-4a7e-9d49-000000000001".into());
    kc.status = Some(KataConfigStatus {
        runtime_classes: vec!["kata".into()],
        ..Default::default()
    });
    kc
}

/// Fills the caches with the sample cluster, as a watcher's initial list would (which also
/// marks them ready).
pub fn populate(w: &mut CacheWriters) {
    let mut namespaces: Vec<_> = POLICY_NAMESPACES
        .iter()
        .map(|(name, policy)| namespace(name, &[(NAMESPACE_POLICY_LABEL, policy)]))
        .collect();
    namespaces.push(namespace("capture-demo", &[]));
    let nodes: Vec<_> = [
        ("worker-0", ("custom-kata1", "test")),
        ("worker-1", ("zone", "b")),
    ]
    .into_iter()
    .map(|(name, extra)| {
        let mut n = sandboxed_containers_operator::cache::NodeMeta::default();
        n.metadata.name = Some(name.into());
        n.metadata.labels = Some(labels(&[
            (WORKER_ROLE_LABEL, ""),
            ("kubernetes.io/arch", "amd64"),
            extra,
        ]));
        n
    })
    .collect();
    initial_list(&mut w.namespaces, namespaces);
    w.nodes.apply_watcher_event(&Event::Init);
    for n in nodes {
        w.nodes.apply_watcher_event(&Event::InitApply(n));
    }
    w.nodes.apply_watcher_event(&Event::InitDone);
    initial_list(&mut w.runtime_classes, vec![kata_runtime_class()]);
    initial_list(&mut w.kataconfigs, vec![kataconfig("allow")]);
}

/// Replaces a cache's content the way a watcher's (re)list does.
pub fn initial_list<K>(w: &mut kube::runtime::reflector::store::Writer<K>, objects: Vec<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    w.apply_watcher_event(&Event::Init);
    for o in objects {
        w.apply_watcher_event(&Event::InitApply(o));
    }
    w.apply_watcher_event(&Event::InitDone);
}
