//! Test fixtures of the pure decision: a KataConfig, nodes and an observed snapshot, and a tiny
//! synchronous cluster (apply the actions, let a one-step MCO render) to drive decisions to the
//! end of an install or uninstall.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::ResourceExt;

use crate::api::mco::{ObjectReferenceLite, PoolCondition, PoolConfiguration};
use crate::api::{KataConfig, KataConfigSpec, MachineConfigPool, MachineConfigPoolStatus};
use crate::discovery::ServedApis;
use crate::names::{
    CRIO_DROPIN_MC, EXTENSION_MC, FINALIZER, KATA_POOL, KATA_ROLE_LABEL, MCO_CURRENT_CONFIG,
    MCO_STATE, WORKER_POOL, WORKER_ROLE_LABEL,
};
use crate::plan::NodeInfo;

use super::action::{Action, Decision, Desired, Kind};
use super::decide::decide;
use super::observe::Observed;
use super::status;

pub fn now() -> Time {
    Time("2026-01-01T00:00:00Z".parse().expect("ts"))
}

pub fn kc(spec: serde_json::Value) -> KataConfig {
    let spec: KataConfigSpec = serde_json::from_value(spec).expect("spec");
    let mut k = KataConfig::new("example", spec);
    k.metadata = ObjectMeta {
        name: Some("example".into()),
        uid: Some("uid-1".into()),
        generation: Some(1),
        resource_version: Some("1".into()),
        creation_timestamp: Some(now()),
        ..Default::default()
    };
    k
}

pub fn worker(name: &str, extra: &[(&str, &str)]) -> NodeInfo {
    let mut labels = BTreeMap::from([(WORKER_ROLE_LABEL.to_string(), String::new())]);
    for (k, v) in extra {
        labels.insert(k.to_string(), v.to_string());
    }
    NodeInfo {
        name: name.into(),
        labels: labels.into(),
        annotations: BTreeMap::from([
            (MCO_STATE.to_string(), "Done".to_string()),
            (
                MCO_CURRENT_CONFIG.to_string(),
                "rendered-worker-0".to_string(),
            ),
        ])
        .into(),
    }
}

pub fn observed(kc: KataConfig, nodes: Vec<NodeInfo>) -> Observed {
    let mut worker_pool = MachineConfigPool::new(WORKER_POOL, Default::default());
    worker_pool.spec.configuration = Some(PoolConfiguration {
        name: Some("rendered-worker-0".into()),
        source: vec![],
    });
    worker_pool.status = Some(pool_status(true));
    Observed {
        active: kc.metadata.name.clone(),
        kata_config: kc,
        nodes,
        pools: BTreeMap::from([(WORKER_POOL.to_string(), worker_pool)]),
        machine_configs: BTreeMap::new(),
        container_runtime_config: None,
        runtime_class: None,
        pods: None,
        served: ServedApis {
            machine_config: true,
            validating_admission_policy: true,
            ..Default::default()
        },
        operator_namespace: "openshift-sandboxed-containers-operator".into(),
        installer: Default::default(),
        now: now(),
    }
}

pub fn pool_status(updated: bool) -> MachineConfigPoolStatus {
    let c = |t: &str, s: bool| PoolCondition {
        type_: t.into(),
        status: if s { "True" } else { "False" }.into(),
        ..Default::default()
    };
    MachineConfigPoolStatus {
        conditions: vec![c("Updated", updated), c("Updating", !updated)],
        ..Default::default()
    }
}

/// Executes the decision on the snapshot the way the API server would (without the MCO).
pub fn apply_all(obs: &mut Observed, d: &Decision) {
    for a in &d.actions {
        apply_one(obs, a);
    }
    if let Some(s) = &d.status {
        obs.kata_config.status = Some(s.clone());
    }
}

pub fn apply_one(obs: &mut Observed, a: &Action) {
    let kc = &mut obs.kata_config;
    match a {
        Action::AddFinalizer => kc
            .metadata
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(FINALIZER.into()),
        Action::RemoveFinalizer => kc.metadata.finalizers = None,
        Action::Apply(d) => match d.as_ref() {
            Desired::Pool(p) => {
                let prev = obs.pools.remove(KATA_POOL);
                let mut p = p.clone();
                if let Some(prev) = prev {
                    p.spec.configuration = prev.spec.configuration;
                    p.status = prev.status;
                }
                obs.pools.insert(KATA_POOL.into(), p);
            }
            Desired::MachineConfig(m) => {
                obs.machine_configs.insert(m.name_any(), m.clone());
            }
            Desired::ContainerRuntimeConfig(c) => obs.container_runtime_config = Some(c.clone()),
            Desired::RuntimeClass(r) => obs.runtime_class = Some(r.clone()),
            Desired::DaemonSet(ds) => obs.installer.daemon_set = Some((**ds).clone()),
            Desired::ConfigMap(c) => obs.installer.config_map = Some(c.clone()),
        },
        Action::Delete { kind, name } => match kind {
            Kind::Pool => {
                obs.pools.remove(name);
            }
            Kind::MachineConfig => {
                obs.machine_configs.remove(name);
            }
            Kind::ContainerRuntimeConfig => obs.container_runtime_config = None,
            Kind::RuntimeClass => obs.runtime_class = None,
            Kind::DaemonSet => obs.installer.daemon_set = None,
            Kind::ConfigMap => obs.installer.config_map = None,
        },
        Action::RemoveForeignKeys { kind, name, patch } => {
            fn merged<T: serde::Serialize + serde::de::DeserializeOwned>(
                o: &T,
                patch: &serde_json::Value,
            ) -> T {
                let mut v = serde_json::to_value(o).expect("json");
                json_patch::merge(&mut v, patch);
                serde_json::from_value(v).expect("typed")
            }
            match kind {
                Kind::Pool => {
                    if let Some(p) = obs.pools.get_mut(name) {
                        *p = merged(p, patch);
                    }
                }
                Kind::MachineConfig => {
                    if let Some(m) = obs.machine_configs.get_mut(name) {
                        *m = merged(m, patch);
                    }
                }
                Kind::ContainerRuntimeConfig => {
                    obs.container_runtime_config = obs
                        .container_runtime_config
                        .as_ref()
                        .map(|c| merged(c, patch))
                }
                Kind::RuntimeClass => {
                    obs.runtime_class = obs.runtime_class.as_ref().map(|c| merged(c, patch))
                }
                Kind::DaemonSet => {
                    let ds = obs.installer.daemon_set.as_ref();
                    obs.installer.daemon_set = ds.map(|d| merged(d, patch))
                }
                Kind::ConfigMap => {
                    let cm = obs.installer.config_map.as_ref();
                    obs.installer.config_map = cm.map(|c| merged(c, patch))
                }
            }
        }
        Action::LabelNode(n) => {
            if let Some(node) = obs.nodes.iter_mut().find(|x| *x.name == **n) {
                node.labels.insert(KATA_ROLE_LABEL.into(), String::new());
            }
        }
        Action::UnlabelNode(n) => {
            if let Some(node) = obs.nodes.iter_mut().find(|x| *x.name == **n) {
                node.labels.remove(KATA_ROLE_LABEL);
            }
        }
    }
}

/// A tiny synchronous MCO: renders the pools from the MachineConfigs present and moves every
/// node of a pool onto its rendering (one step = the whole rollout).
pub fn mco_settle(obs: &mut Observed) {
    let has_kata = obs.machine_configs.len() == 2;
    if let Some(pool) = obs.pools.get_mut(KATA_POOL) {
        let name = if has_kata {
            "rendered-kata-oc-k"
        } else {
            "rendered-kata-oc-0"
        };
        pool.spec.configuration = Some(PoolConfiguration {
            name: Some(name.into()),
            source: if has_kata {
                [EXTENSION_MC, CRIO_DROPIN_MC]
                    .iter()
                    .map(|n| ObjectReferenceLite {
                        name: Some(n.to_string()),
                        ..Default::default()
                    })
                    .collect()
            } else {
                vec![]
            },
        });
        pool.status = Some(pool_status(true));
    }
    let kata_render = obs
        .pools
        .get(KATA_POOL)
        .and_then(|p| p.spec.configuration.as_ref())
        .and_then(|c| c.name.clone());
    for n in &mut obs.nodes {
        let target = if n.has_label(KATA_ROLE_LABEL) {
            kata_render.clone()
        } else {
            Some("rendered-worker-0".into())
        };
        if let Some(t) = target {
            n.annotations.insert(MCO_CURRENT_CONFIG.into(), t);
            n.annotations.insert(MCO_STATE.into(), "Done".into());
        }
    }
}

/// Reconcile + MCO until nothing changes; returns the number of rounds.
pub fn converge(obs: &mut Observed) -> usize {
    for round in 1..20 {
        let d = decide(obs);
        let idle = d.actions.is_empty() && d.status.is_none();
        apply_all(obs, &d);
        mco_settle(obs);
        if idle {
            return round;
        }
    }
    panic!("did not converge: {:?}", decide(obs));
}

/// Ten rounds of reconcile + MCO from `obs` without interruption: how many actions they took.
pub fn actions_of_an_uninterrupted_run(obs: &Observed) -> usize {
    let mut obs = obs.clone();
    let mut total = 0;
    for _ in 0..10 {
        let d = decide(&obs);
        total += d.actions.len();
        apply_all(&mut obs, &d);
        mco_settle(&mut obs);
    }
    total
}

/// The same rounds, cut short after `crash_after` actions (a crash between two writes): what a
/// restarted reconciler finds. Each round that finished also wrote its status.
pub fn run_until_crash(obs: &Observed, crash_after: usize) -> Observed {
    let mut obs = obs.clone();
    let mut done = 0;
    for _ in 0..10 {
        let d = decide(&obs);
        for a in &d.actions {
            if done == crash_after {
                return obs;
            }
            apply_one(&mut obs, a);
            done += 1;
        }
        if let Some(s) = &d.status {
            obs.kata_config.status = Some(s.clone());
        }
        mco_settle(&mut obs);
    }
    obs
}

pub fn three_workers() -> Vec<NodeInfo> {
    vec![worker("w0", &[]), worker("w1", &[]), worker("w2", &[])]
}

pub fn cond<'a>(d: &'a Decision, t: &str) -> &'a Condition {
    status::find(&d.status.as_ref().expect("status").conditions, t).expect("condition")
}

/// A cluster without the Machine Config Operator: nodes with no role labels, no pools.
pub fn vanilla(kc: KataConfig, names: &[&str]) -> Observed {
    let nodes = names
        .iter()
        .map(|n| NodeInfo {
            name: (*n).into(),
            ..Default::default()
        })
        .collect();
    let mut obs = observed(kc, nodes);
    obs.served.machine_config = false;
    obs.pools.clear();
    obs
}

/// A tiny synchronous DaemonSet controller, kubelet and kata-deploy: every node with the kata
/// role label runs a Ready installer pod and carries `katacontainers.io/kata-runtime=true`;
/// every other node's pod and label are gone (cleanup done). Nodes in `crashing` crash-loop.
pub fn installer_settle(obs: &mut Observed, crashing: &[&str]) {
    use crate::names::KATA_RUNTIME_LABEL;
    use crate::plan::node_installer::InstallerPod;
    if obs.installer.daemon_set.is_none() {
        obs.installer.pods.clear();
    }
    let mut pods = Vec::new();
    for n in &mut obs.nodes {
        let selected = n.has_label(KATA_ROLE_LABEL) && obs.installer.daemon_set.is_some();
        let crash = crashing.contains(&&*n.name);
        if selected {
            pods.push(InstallerPod {
                name: format!("kata-node-installer-{}", n.name),
                node: n.name.to_string(),
                ready: !crash,
                terminating: false,
                failure: crash.then(|| "CrashLoopBackOff, last terminated with Error (exit code 1): containerd config not found".to_string()),
            });
            if !crash {
                n.labels.insert(KATA_RUNTIME_LABEL.into(), "true".into());
            }
        } else {
            n.labels.remove(KATA_RUNTIME_LABEL);
        }
    }
    obs.installer.pods = pods;
}
