//! Self-tests of the testkit: the in-memory API server, its authorizer, the MCO simulator and the
//! envtest tier, driven through kube's own client so they prove what the operator will see. One
//! test binary (one link) with a module per suite; the fixtures they share are here.

mod authorization;
mod envtest;
mod fake_api;
mod mco_sim;

use k8s_openapi::api::core::v1::ConfigMap;
use sandboxed_containers_operator::api::KataConfig;
use serde_json::{Value, json};

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "ns1", "labels": labels},
        "data": {"k": "v"},
    }))
    .expect("valid ConfigMap")
}

fn kata(name: &str) -> KataConfig {
    serde_json::from_value(json!({
        "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
        "metadata": {"name": name}, "spec": {},
    }))
    .expect("valid KataConfig")
}

fn api_code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn node(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
}

fn mc(name: &str, role: &str) -> Value {
    json!({"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
           "metadata": {"name": name, "labels": {"machineconfiguration.openshift.io/role": role}},
           "spec": {"extensions": [name]}})
}
