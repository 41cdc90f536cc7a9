//! The pure decision: from an observed snapshot to the writes to make, the status to report and
//! the events to publish. No API access, so every scenario is unit-testable; the caller executes
//! the actions in order and derives nothing else.
//!
//! Because the decision depends only on observed state, a crash between any two actions is
//! harmless: the next reconcile observes what was done and decides the rest.

use k8s_openapi::api::node::v1::RuntimeClass;
use kube::ResourceExt;

use crate::api::{ContainerRuntimeConfig, KataConfigStatus, MachineConfig, MachineConfigPool};
use crate::names::{
    CONTAINER_RUNTIME_CONFIG, KATA_POOL, KATA_ROLE_LABEL, RUNTIME_CLASS, WORKER_POOL,
};
use crate::plan::progress::{self, PoolRender, Progress, ProgressInput};
use crate::plan::{self, LabelChange, SpecError, Topology};

use super::apply::{foreign_keys_patch, needs_apply};
use super::events::{self, EventSpec};
use super::observe::{Observed, has_finalizer};
use super::status::{self, DEGRADED, IN_PROGRESS, READY, Wanted, reason};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pool,
    MachineConfig,
    ContainerRuntimeConfig,
    RuntimeClass,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Desired {
    Pool(MachineConfigPool),
    MachineConfig(MachineConfig),
    ContainerRuntimeConfig(ContainerRuntimeConfig),
    RuntimeClass(RuntimeClass),
}

impl Desired {
    pub fn kind(&self) -> Kind {
        match self {
            Desired::Pool(_) => Kind::Pool,
            Desired::MachineConfig(_) => Kind::MachineConfig,
            Desired::ContainerRuntimeConfig(_) => Kind::ContainerRuntimeConfig,
            Desired::RuntimeClass(_) => Kind::RuntimeClass,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Desired::Pool(p) => p.name_any(),
            Desired::MachineConfig(m) => m.name_any(),
            Desired::ContainerRuntimeConfig(c) => c.name_any(),
            Desired::RuntimeClass(r) => r.name_any(),
        }
    }

    /// The removal patch for keys others added, against the observed object.
    fn foreign_keys(&self, observed: &Observed) -> Option<serde_json::Value> {
        match self {
            Desired::Pool(p) => observed
                .pools
                .get(&p.name_any())
                .and_then(|o| foreign_keys_patch(p, o)),
            Desired::MachineConfig(m) => observed
                .machine_configs
                .get(&m.name_any())
                .and_then(|o| foreign_keys_patch(m, o)),
            Desired::ContainerRuntimeConfig(c) => observed
                .container_runtime_config
                .as_ref()
                .and_then(|o| foreign_keys_patch(c, o)),
            Desired::RuntimeClass(r) => observed
                .runtime_class
                .as_ref()
                .and_then(|o| foreign_keys_patch(r, o)),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Desired::Pool(p) => format!("MachineConfigPool {}", p.name_any()),
            Desired::MachineConfig(m) => format!("MachineConfig {}", m.name_any()),
            Desired::ContainerRuntimeConfig(c) => {
                format!("ContainerRuntimeConfig {}", c.name_any())
            }
            Desired::RuntimeClass(r) => format!("RuntimeClass {}", r.name_any()),
        }
    }
}

/// One write. Executed in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    AddFinalizer,
    Apply(Box<Desired>),
    Delete {
        kind: Kind,
        name: String,
    },
    /// Merge patch nulling keys others added to a selector-like map of ours.
    RemoveForeignKeys {
        kind: Kind,
        name: String,
        patch: serde_json::Value,
    },
    LabelNode(String),
    UnlabelNode(String),
    RemoveFinalizer,
}

impl Action {
    pub fn is_write_to_cluster_objects(&self) -> bool {
        !matches!(self, Action::AddFinalizer | Action::RemoveFinalizer)
    }
}

/// Where the KataConfig stands after this decision (also the metrics `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Another KataConfig is the active one; this one is only told so.
    Duplicate,
    InvalidSpec,
    NoKataNodes,
    Installing,
    Installed,
    Blocked,
    Uninstalling,
    /// The last step of uninstall: the finalizer goes now.
    Uninstalled,
    /// Being deleted without our finalizer: nothing to do.
    Gone,
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: Outcome,
    pub actions: Vec<Action>,
    /// New status, or `None` when it is unchanged (or the object is going away).
    pub status: Option<KataConfigStatus>,
    /// The full status as decided (for metrics), changed or not.
    pub reported: Option<KataConfigStatus>,
    pub events: Vec<EventSpec>,
}

/// The decision for one KataConfig.
pub fn decide(obs: &Observed) -> Decision {
    let kc = &obs.kata_config;
    let deleting = kc.metadata.deletion_timestamp.is_some();
    if obs.active.as_deref() != Some(kc.name_any().as_str()) {
        return duplicate(obs, deleting);
    }
    if deleting {
        return if has_finalizer(kc) {
            super::uninstall::decide(obs)
        } else {
            finish(obs, Outcome::Gone, Vec::new(), None, Vec::new())
        };
    }
    match plan::desired_state(kc, &obs.nodes) {
        Ok(desired) => install(obs, desired),
        Err(e) => invalid(obs, &e),
    }
}

/// Status, events and the "unchanged → no write" rule, shared by every branch.
pub(super) fn finish(
    obs: &Observed,
    outcome: Outcome,
    actions: Vec<Action>,
    new: Option<(Vec<String>, crate::api::KataNodesStatus, Vec<Wanted>)>,
    mut extra_events: Vec<EventSpec>,
) -> Decision {
    let kc = &obs.kata_config;
    let old = kc.status.clone().unwrap_or_default();
    let Some((runtime_classes, kata_nodes, wanted)) = new else {
        return Decision {
            outcome,
            actions,
            status: None,
            reported: None,
            events: extra_events,
        };
    };
    let conditions = status::merge(&old.conditions, &wanted, kc.metadata.generation, &obs.now);
    let mut events = events::transitions(&old.conditions, &conditions);
    events.append(&mut extra_events);
    let status = KataConfigStatus {
        runtime_classes,
        kata_nodes,
        conditions,
    };
    Decision {
        outcome,
        actions,
        status: (status != old).then(|| status.clone()),
        reported: Some(status),
        events,
    }
}

fn duplicate(obs: &Observed, deleting: bool) -> Decision {
    let kc = &obs.kata_config;
    if deleting {
        // We never acted for it; never keep it from going away.
        let actions = if has_finalizer(kc) {
            vec![Action::RemoveFinalizer]
        } else {
            Vec::new()
        };
        return finish(obs, Outcome::Duplicate, actions, None, Vec::new());
    }
    let active = obs.active.clone().unwrap_or_default();
    let msg = format!(
        "only one KataConfig is allowed per cluster: {active:?} is the active one, so this one is ignored; delete it (or edit {active:?} instead)"
    );
    let wanted = vec![
        Wanted::new(IN_PROGRESS, false, reason::DUPLICATE, msg.clone()),
        Wanted::new(READY, false, reason::DUPLICATE, msg),
        Wanted::new(
            DEGRADED,
            false,
            reason::AS_EXPECTED,
            "this KataConfig is not acted on",
        ),
    ];
    finish(
        obs,
        Outcome::Duplicate,
        Vec::new(),
        Some((Vec::new(), Default::default(), wanted)),
        Vec::new(),
    )
}

fn invalid(obs: &Observed, e: &SpecError) -> Decision {
    let old = obs.kata_config.status.clone().unwrap_or_default();
    let msg = format!("the spec cannot be acted on, fix it and the install resumes: {e}");
    let mut wanted = vec![
        Wanted::new(IN_PROGRESS, false, reason::INVALID_SPEC, msg.clone()),
        Wanted::new(READY, false, reason::INVALID_SPEC, msg),
    ];
    if status::find(&old.conditions, DEGRADED).is_none() {
        wanted.push(Wanted::new(
            DEGRADED,
            false,
            reason::AS_EXPECTED,
            "no kata node is degraded",
        ));
    }
    // Nothing is changed in the cluster: what is installed stays as it is until the spec is fixed.
    finish(
        obs,
        Outcome::InvalidSpec,
        Vec::new(),
        Some((old.runtime_classes, old.kata_nodes, wanted)),
        Vec::new(),
    )
}

pub(super) fn pool_render(obs: &Observed, name: &str) -> Option<PoolRender> {
    obs.pools.get(name).and_then(PoolRender::of)
}

/// The pool reports Updated and not Updating.
pub(super) fn pool_updated(obs: &Observed, name: &str) -> bool {
    obs.pools
        .get(name)
        .and_then(|p| p.status.as_ref())
        .is_some_and(|s| s.condition_true("Updated") && !s.condition_true("Updating"))
}

pub(super) fn degraded_condition(p: &Progress) -> Wanted {
    if p.degraded.is_empty() {
        Wanted::new(
            DEGRADED,
            false,
            reason::AS_EXPECTED,
            "no kata node is degraded",
        )
    } else {
        let parts: Vec<String> = p
            .degraded
            .iter()
            .map(|(node, why)| format!("Node {node} Degraded: {why}"))
            .collect();
        Wanted::new(DEGRADED, true, reason::NODE_DEGRADED, parts.join("; "))
    }
}

fn install(obs: &Observed, desired: plan::DesiredState) -> Decision {
    let kc = &obs.kata_config;
    let old = kc.status.clone().unwrap_or_default();
    let mut actions = Vec::new();
    if !has_finalizer(kc) {
        actions.push(Action::AddFinalizer);
    }
    let mut repaired = Vec::new();
    let mut apply = |d: Desired, present: bool, actions: &mut Vec<Action>| {
        if present {
            repaired.push(format!("restored {}", d.describe()));
        } else {
            repaired.push(format!("re-created {}", d.describe()));
        }
        if let Some(patch) = d.foreign_keys(obs) {
            actions.push(Action::RemoveForeignKeys {
                kind: d.kind(),
                name: d.name(),
                patch,
            });
        }
        actions.push(Action::Apply(Box::new(d)));
    };
    if let Some(pool) = &desired.pool {
        let seen = obs.pools.get(KATA_POOL);
        if needs_apply(pool, seen) {
            apply(Desired::Pool(pool.clone()), seen.is_some(), &mut actions);
        }
    }
    for mc in &desired.machine_configs {
        let seen = obs.machine_configs.get(&mc.name_any());
        if needs_apply(mc, seen) {
            apply(
                Desired::MachineConfig(mc.clone()),
                seen.is_some(),
                &mut actions,
            );
        }
    }
    match (
        &desired.container_runtime_config,
        &obs.container_runtime_config,
    ) {
        (Some(crc), seen) => {
            if needs_apply(crc, seen.as_ref()) {
                apply(
                    Desired::ContainerRuntimeConfig(crc.clone()),
                    seen.is_some(),
                    &mut actions,
                );
            }
        }
        (None, Some(_)) => actions.push(Action::Delete {
            kind: Kind::ContainerRuntimeConfig,
            name: CONTAINER_RUNTIME_CONFIG.to_string(),
        }),
        (None, None) => {}
    }
    // Progress as it will be once the label changes land, so a newly selected node shows up as
    // waiting at once instead of after the next event.
    let mut nodes = obs.nodes.clone();
    // Nodes join `kata-oc` only once the MCO has rendered it with both kata MachineConfigs, so
    // no node starts an update to an intermediate rendering: one reboot per node.
    let pool_renders_kata = pool_render(obs, KATA_POOL).is_some_and(|r| r.has_kata);
    for change in &desired.selection.label_changes {
        match change {
            LabelChange::Add { node, .. } => {
                if pool_renders_kata {
                    actions.push(Action::LabelNode(node.clone()));
                }
                if let Some(n) = nodes.iter_mut().find(|n| &n.name == node) {
                    n.labels.insert(KATA_ROLE_LABEL.to_string(), String::new());
                }
            }
            LabelChange::Remove { node, .. } => {
                actions.push(Action::UnlabelNode(node.clone()));
                if let Some(n) = nodes.iter_mut().find(|n| &n.name == node) {
                    n.labels.remove(KATA_ROLE_LABEL);
                }
            }
        }
    }
    let pool_name = desired.pool_name();
    let topology = desired.topology();
    let progress = progress::classify(
        &nodes,
        &ProgressInput {
            topology,
            uninstalling: false,
            kata_pool: pool_render(obs, pool_name),
            worker_pool: pool_render(obs, WORKER_POOL),
        },
    );
    let kata_nodes = &desired.selection.kata_nodes;
    let pending_changes = actions.iter().any(Action::is_write_to_cluster_objects);
    let rolled_out = !pending_changes
        && progress.settled()
        && pool_updated(obs, pool_name)
        && progress.nodes.installed == *kata_nodes;
    let complete = rolled_out && !kata_nodes.is_empty();

    // The RuntimeClass appears once the pool has rolled out; once it has existed it is kept
    // (and restored when deleted or edited).
    let rc_known =
        obs.runtime_class.is_some() || old.runtime_classes.iter().any(|r| r == RUNTIME_CLASS);
    let want_rc = complete || rc_known;
    if want_rc && needs_apply(&desired.runtime_class, obs.runtime_class.as_ref()) {
        let d = Desired::RuntimeClass(desired.runtime_class.clone());
        if rc_known {
            apply(d, obs.runtime_class.is_some(), &mut actions);
        } else {
            actions.push(Action::Apply(Box::new(d)));
        }
    }
    let runtime_classes = if want_rc {
        vec![RUNTIME_CLASS.to_string()]
    } else {
        Vec::new()
    };

    let degraded = degraded_condition(&progress);
    let notes = if desired.warnings.is_empty() {
        String::new()
    } else {
        format!(". Note: {}", desired.warnings.join("; "))
    };
    let (outcome, wanted) = if kata_nodes.is_empty() && progress.settled() {
        let msg = format!(
            "no node is selected for kata{}",
            if desired.warnings.is_empty() {
                String::new()
            } else {
                format!(": {}", desired.warnings.join("; "))
            }
        );
        (
            Outcome::NoKataNodes,
            vec![
                Wanted::new(IN_PROGRESS, false, reason::NO_KATA_NODES, msg.clone()),
                Wanted::new(READY, false, reason::NO_KATA_NODES, msg),
                degraded,
            ],
        )
    } else if complete {
        let msg = format!(
            "kata is installed on {} node(s): {}; RuntimeClass {RUNTIME_CLASS} is available{notes}",
            kata_nodes.len(),
            status::name_list(kata_nodes, 20)
        );
        (
            Outcome::Installed,
            vec![
                Wanted::new(IN_PROGRESS, false, reason::INSTALLED, msg.clone()),
                Wanted::new(READY, true, reason::INSTALLED, msg),
                degraded,
            ],
        )
    } else {
        let msg = progress_message(&progress, obs, pool_name, topology, false) + &notes;
        let ready_reason = if degraded.status {
            reason::NODE_DEGRADED
        } else {
            reason::INSTALLING
        };
        (
            Outcome::Installing,
            vec![
                Wanted::new(IN_PROGRESS, true, reason::INSTALLING, msg.clone()),
                Wanted::new(READY, false, ready_reason, msg),
                degraded,
            ],
        )
    };
    // Repairs of a completed install whose spec did not change are drift, worth an Event.
    let settled_before = status::find(&old.conditions, READY)
        .is_some_and(|c| c.status == "True" && c.observed_generation == kc.metadata.generation);
    let extra = if settled_before && !repaired.is_empty() {
        vec![EventSpec::warning(
            events::DRIFT_REPAIRED,
            format!("{} (changed outside the operator)", repaired.join(", ")),
        )]
    } else {
        Vec::new()
    };
    finish(
        obs,
        outcome,
        actions,
        Some((runtime_classes, progress.nodes, wanted)),
        extra,
    )
}

/// Human summary of node progress, naming nodes per list.
pub(super) fn progress_message(
    p: &Progress,
    obs: &Observed,
    pool_name: &str,
    topology: Topology,
    uninstalling: bool,
) -> String {
    let n = &p.nodes;
    let mut parts = Vec::new();
    if uninstalling {
        parts.push("removing kata".to_string());
    } else {
        parts.push(format!(
            "kata is installed on {} of {} node(s)",
            n.ready_node_count, n.node_count
        ));
    }
    let lists: [(&str, &Vec<String>); 6] = [
        ("installing", &n.installing),
        ("waiting to install", &n.waiting_to_install),
        ("failed to install (see Degraded)", &n.failed_to_install),
        ("uninstalling", &n.uninstalling),
        ("waiting to uninstall", &n.waiting_to_uninstall),
        ("failed to uninstall (see Degraded)", &n.failed_to_uninstall),
    ];
    for (label, list) in lists {
        if !list.is_empty() {
            parts.push(format!("{label}: {}", status::name_list(list, 10)));
        }
    }
    let pool_label = match topology {
        Topology::Regular if uninstalling => WORKER_POOL,
        _ => pool_name,
    };
    if obs.pools.get(pool_label).and_then(PoolRender::of).is_none() {
        parts.push(format!(
            "waiting for the Machine Config Operator to render MachineConfigPool {pool_label}"
        ));
    } else if !pool_updated(obs, pool_label) {
        parts.push(format!("MachineConfigPool {pool_label} is updating"));
    }
    parts.join("; ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::mco::{ObjectReferenceLite, PoolCondition, PoolConfiguration};
    use crate::api::{KataConfig, KataConfigSpec, MachineConfigPoolStatus};
    use crate::names::{
        CRIO_DROPIN_MC, EXTENSION_MC, FINALIZER, MCO_CURRENT_CONFIG, MCO_REASON, MCO_STATE,
        WORKER_ROLE_LABEL,
    };
    use crate::plan::NodeInfo;
    use crate::reconciler::observe::PodInfo;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use serde_json::json;
    use std::collections::BTreeMap;

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
            labels,
            annotations: BTreeMap::from([
                (MCO_STATE.to_string(), "Done".to_string()),
                (
                    MCO_CURRENT_CONFIG.to_string(),
                    "rendered-worker-0".to_string(),
                ),
            ]),
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
            now: now(),
        }
    }

    fn pool_status(updated: bool) -> MachineConfigPoolStatus {
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
                Desired::ContainerRuntimeConfig(c) => {
                    obs.container_runtime_config = Some(c.clone())
                }
                Desired::RuntimeClass(r) => obs.runtime_class = Some(r.clone()),
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
                }
            }
            Action::LabelNode(n) => {
                if let Some(node) = obs.nodes.iter_mut().find(|x| &x.name == n) {
                    node.labels.insert(KATA_ROLE_LABEL.into(), String::new());
                }
            }
            Action::UnlabelNode(n) => {
                if let Some(node) = obs.nodes.iter_mut().find(|x| &x.name == n) {
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

    fn three_workers() -> Vec<NodeInfo> {
        vec![worker("w0", &[]), worker("w1", &[]), worker("w2", &[])]
    }

    fn cond<'a>(
        d: &'a Decision,
        t: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        status::find(&d.status.as_ref().expect("status").conditions, t).expect("condition")
    }

    #[test]
    fn nodes_are_labelled_only_once_the_pool_renders_kata() {
        let mut obs = observed(kc(json!({})), three_workers());
        let d = decide(&obs);
        assert!(!d.actions.iter().any(|a| matches!(a, Action::LabelNode(_))));
        apply_all(&mut obs, &d);
        // Pool rendered without the kata MachineConfigs yet: still no labels.
        if let Some(p) = obs.pools.get_mut(KATA_POOL) {
            p.spec.configuration = Some(PoolConfiguration {
                name: Some("rendered-kata-oc-partial".into()),
                source: vec![ObjectReferenceLite {
                    name: Some(EXTENSION_MC.into()),
                    ..Default::default()
                }],
            });
        }
        let d = decide(&obs);
        assert!(d.actions.is_empty(), "{:?}", d.actions);
        assert_eq!(
            d.reported
                .as_ref()
                .map(|s| s.kata_nodes.waiting_to_install.clone()),
            Some(vec!["w0".to_string(), "w1".into(), "w2".into()])
        );
        mco_settle(&mut obs);
        let d = decide(&obs);
        let labels: Vec<_> = d
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::LabelNode(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(labels, ["w0", "w1", "w2"]);
    }

    #[test]
    fn first_reconcile_adds_finalizer_pool_and_mcs_but_no_runtime_class() {
        let obs = observed(kc(json!({})), three_workers());
        let d = decide(&obs);
        assert_eq!(d.actions[0], Action::AddFinalizer);
        let described: Vec<String> = d
            .actions
            .iter()
            .map(|a| match a {
                Action::Apply(x) => x.describe(),
                Action::LabelNode(n) => format!("label {n}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            described[1..],
            [
                "MachineConfigPool kata-oc",
                "MachineConfig 50-enable-sandboxed-containers-extension",
                "MachineConfig 50-kata-crio-dropin",
            ]
        );
        assert_eq!(d.outcome, Outcome::Installing);
        let st = d.status.as_ref().expect("status");
        assert!(st.runtime_classes.is_empty());
        assert_eq!(st.kata_nodes.waiting_to_install, ["w0", "w1", "w2"]);
        assert_eq!(cond(&d, IN_PROGRESS).status, "True");
        assert_eq!(cond(&d, READY).status, "False");
        assert_eq!(
            d.events,
            [EventSpec::normal(
                reason::INSTALLING,
                cond(&d, IN_PROGRESS).message.clone()
            )]
        );
    }

    #[test]
    fn runtime_class_comes_with_the_rollout_and_then_nothing_is_written() {
        let mut obs = observed(kc(json!({})), three_workers());
        let d = decide(&obs);
        apply_all(&mut obs, &d);
        mco_settle(&mut obs);
        // The pool renders kata: the nodes join it.
        let d = decide(&obs);
        apply_all(&mut obs, &d);
        // Pool rendered but still updating: no RuntimeClass yet.
        mco_settle(&mut obs);
        if let Some(p) = obs.pools.get_mut(KATA_POOL) {
            p.status = Some(pool_status(false));
        }
        let d = decide(&obs);
        assert!(d.actions.is_empty(), "{:?}", d.actions);
        assert_eq!(d.outcome, Outcome::Installing);
        // Pool reports Updated: RuntimeClass and completion in the same reconcile.
        if let Some(p) = obs.pools.get_mut(KATA_POOL) {
            p.status = Some(pool_status(true));
        }
        let d = decide(&obs);
        assert!(
            matches!(&d.actions[..], [Action::Apply(x)] if matches!(x.as_ref(), Desired::RuntimeClass(_)))
        );
        assert_eq!(d.outcome, Outcome::Installed);
        let st = d.status.as_ref().expect("status");
        assert_eq!(st.runtime_classes, ["kata"]);
        assert_eq!(st.kata_nodes.installed, ["w0", "w1", "w2"]);
        assert_eq!(st.kata_nodes.ready_node_count, 3);
        assert_eq!(cond(&d, READY).status, "True");
        assert!(d.events.iter().any(|e| e.reason == reason::INSTALLED));
        apply_all(&mut obs, &d);
        let again = decide(&obs);
        assert!(again.actions.is_empty());
        assert!(
            again.status.is_none(),
            "settled cluster must not rewrite status"
        );
        assert!(again.events.is_empty());
    }

    #[test]
    fn converged_cluster_targets_master_pool_without_labels() {
        use crate::names::{CONTROL_PLANE_ROLE_LABEL, MASTER_ROLE_LABEL};
        let nodes: Vec<NodeInfo> = (0..3)
            .map(|i| {
                worker(
                    &format!("m{i}"),
                    &[(MASTER_ROLE_LABEL, ""), (CONTROL_PLANE_ROLE_LABEL, "")],
                )
            })
            .collect();
        let d = decide(&observed(kc(json!({})), nodes));
        assert!(!d.actions.iter().any(|a| matches!(a, Action::LabelNode(_))));
        assert!(
            !d.actions
                .iter()
                .any(|a| matches!(a, Action::Apply(x) if matches!(x.as_ref(), Desired::Pool(_))))
        );
        let mc = d.actions.iter().find_map(|a| match a {
            Action::Apply(x) => match x.as_ref() {
                Desired::MachineConfig(m) => Some(m.clone()),
                _ => None,
            },
            _ => None,
        });
        let mc = mc.expect("mc");
        assert_eq!(mc.labels()[crate::names::MC_ROLE_LABEL], "master");
    }

    #[test]
    fn full_install_converges_then_is_idle() {
        let mut obs = observed(kc(json!({"logLevel": "debug"})), three_workers());
        converge(&mut obs);
        let st = obs.kata_config.status.clone().expect("status");
        assert_eq!(st.kata_nodes.installed, ["w0", "w1", "w2"]);
        assert!(obs.container_runtime_config.is_some());
        assert!(obs.runtime_class.is_some());
        let d = decide(&obs);
        assert!(d.actions.is_empty() && d.status.is_none());
    }

    #[test]
    fn selector_edit_moves_nodes_in_and_out() {
        let mut obs = observed(
            kc(json!({"kataConfigPoolSelector": {"matchLabels": {"zone": "a"}}})),
            vec![
                worker("w0", &[("zone", "a")]),
                worker("w1", &[("zone", "b")]),
            ],
        );
        converge(&mut obs);
        assert_eq!(
            obs.kata_config
                .status
                .as_ref()
                .expect("st")
                .kata_nodes
                .installed,
            ["w0"]
        );
        obs.kata_config.spec = serde_json::from_value(
            json!({"kataConfigPoolSelector": {"matchLabels": {"zone": "b"}}}),
        )
        .expect("spec");
        obs.kata_config.metadata.generation = Some(2);
        let d = decide(&obs);
        assert!(d.actions.contains(&Action::LabelNode("w1".into())));
        assert!(d.actions.contains(&Action::UnlabelNode("w0".into())));
        let st = d.status.as_ref().expect("status");
        assert_eq!(st.kata_nodes.waiting_to_install, ["w1"]);
        assert_eq!(st.kata_nodes.waiting_to_uninstall, ["w0"]);
        assert_eq!(cond(&d, READY).observed_generation, Some(2));
        assert!(
            d.events.iter().all(|e| e.reason != events::DRIFT_REPAIRED),
            "a spec edit is not drift"
        );
        converge(&mut obs);
        let st = obs.kata_config.status.clone().expect("st");
        assert_eq!(st.kata_nodes.installed, ["w1"]);
        assert!(st.kata_nodes.waiting_to_uninstall.is_empty());
        assert!(status::is_true(&st.conditions, READY));
    }

    #[test]
    fn degraded_node_is_named_with_the_mco_reason_and_recovery_clears_it() {
        let mut obs = observed(kc(json!({})), three_workers());
        converge(&mut obs);
        let n = obs.nodes.iter_mut().find(|n| n.name == "w1").expect("w1");
        n.annotations.insert(MCO_STATE.into(), "Degraded".into());
        n.annotations.insert(
            MCO_REASON.into(),
            "failed to drain node: pod disruption budget".into(),
        );
        let d = decide(&obs);
        let deg = cond(&d, DEGRADED);
        assert_eq!(deg.status, "True");
        assert_eq!(
            deg.message,
            "Node w1 Degraded: failed to drain node: pod disruption budget"
        );
        assert_eq!(cond(&d, READY).reason, reason::NODE_DEGRADED);
        assert_eq!(
            d.status.as_ref().expect("st").kata_nodes.failed_to_install,
            ["w1"]
        );
        assert!(
            d.events
                .iter()
                .any(|e| e.reason == reason::NODE_DEGRADED && e.warning)
        );
        assert!(
            d.actions.is_empty(),
            "a degraded node does not make us rewrite anything"
        );
        apply_all(&mut obs, &d);
        let n = obs.nodes.iter_mut().find(|n| n.name == "w1").expect("w1");
        n.annotations.insert(MCO_STATE.into(), "Done".into());
        n.annotations.remove(MCO_REASON);
        let d = decide(&obs);
        assert_eq!(cond(&d, DEGRADED).status, "False");
        assert_eq!(cond(&d, READY).status, "True");
        assert!(d.events.iter().any(|e| e.reason == events::NODE_RECOVERED));
    }

    #[test]
    fn drift_of_each_owned_object_is_repaired_with_an_event() {
        let mut base = observed(kc(json!({"logLevel": "debug"})), three_workers());
        converge(&mut base);
        type Edit = fn(&mut Observed);
        let cases: [(&str, Edit); 8] = [
            ("RuntimeClass kata", |o| o.runtime_class = None),
            ("RuntimeClass kata", |o| {
                if let Some(rc) = o.runtime_class.as_mut() {
                    rc.handler = "runc".into();
                }
            }),
            ("MachineConfig 50-kata-crio-dropin", |o| {
                o.machine_configs.remove(CRIO_DROPIN_MC);
            }),
            (
                "MachineConfig 50-enable-sandboxed-containers-extension",
                |o| {
                    if let Some(m) = o.machine_configs.get_mut(EXTENSION_MC) {
                        m.spec.extensions.clear();
                    }
                },
            ),
            ("ContainerRuntimeConfig kata-crio-config", |o| {
                o.container_runtime_config = None
            }),
            ("ContainerRuntimeConfig kata-crio-config", |o| {
                if let Some(c) = o.container_runtime_config.as_mut() {
                    c.spec.container_runtime_config.log_level = Some("info".into());
                }
            }),
            ("MachineConfigPool kata-oc", |o| {
                if let Some(p) = o.pools.get_mut(KATA_POOL) {
                    p.spec.node_selector = None;
                }
            }),
            ("MachineConfigPool kata-oc", |o| {
                if let Some(ml) = o
                    .pools
                    .get_mut(KATA_POOL)
                    .and_then(|p| p.spec.node_selector.as_mut())
                    .and_then(|s| s.match_labels.as_mut())
                {
                    ml.insert("elsewhere".into(), String::new());
                }
            }),
        ];
        for (what, edit) in cases {
            let mut obs = base.clone();
            edit(&mut obs);
            let d = decide(&obs);
            let applied: Vec<String> = d
                .actions
                .iter()
                .filter_map(|a| match a {
                    Action::Apply(x) => Some(x.describe()),
                    _ => None,
                })
                .collect();
            assert_eq!(applied, [what], "{what}");
            assert!(
                d.events
                    .iter()
                    .any(|e| e.reason == events::DRIFT_REPAIRED && e.note.contains(what)),
                "{what}: {:?}",
                d.events
            );
            converge(&mut obs);
            assert!(decide(&obs).actions.is_empty());
        }
    }

    #[test]
    fn back_to_info_log_level_deletes_the_container_runtime_config() {
        let mut obs = observed(kc(json!({"logLevel": "debug"})), three_workers());
        converge(&mut obs);
        obs.kata_config.spec.log_level = "info".into();
        obs.kata_config.metadata.generation = Some(2);
        let d = decide(&obs);
        assert!(d.actions.contains(&Action::Delete {
            kind: Kind::ContainerRuntimeConfig,
            name: CONTAINER_RUNTIME_CONFIG.into()
        }));
    }

    #[test]
    fn invalid_spec_is_a_condition_and_touches_nothing() {
        let mut obs = observed(
            kc(
                json!({"kataConfigPoolSelector": {"matchExpressions": [{"key": "zone", "operator": "In"}]}}),
            ),
            three_workers(),
        );
        obs.kata_config.spec.log_level = "loud".into();
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::InvalidSpec);
        assert!(d.actions.is_empty());
        let msg = &cond(&d, READY).message;
        assert!(msg.contains("spec.logLevel"), "{msg}");
        assert!(msg.contains("fix it and the install resumes"), "{msg}");
        assert_eq!(cond(&d, IN_PROGRESS).reason, reason::INVALID_SPEC);
        assert!(
            d.events
                .iter()
                .any(|e| e.reason == reason::INVALID_SPEC && e.warning)
        );
    }

    #[test]
    fn a_second_kata_config_is_told_which_one_is_active_and_nothing_else() {
        let mut obs = observed(kc(json!({})), three_workers());
        obs.active = Some("first".into());
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::Duplicate);
        assert!(d.actions.is_empty(), "no finalizer, no objects");
        let msg = &cond(&d, READY).message;
        assert!(msg.contains("\"first\" is the active one"), "{msg}");
        assert_eq!(cond(&d, IN_PROGRESS).reason, reason::DUPLICATE);
        // Deleting a duplicate that somehow carries our finalizer only drops it.
        obs.kata_config.metadata.deletion_timestamp = Some(now());
        obs.kata_config.metadata.finalizers = Some(vec![FINALIZER.into()]);
        let d = decide(&obs);
        assert_eq!(d.actions, [Action::RemoveFinalizer]);
    }

    #[test]
    fn selector_matching_nothing_reports_no_kata_nodes() {
        let obs = observed(
            kc(json!({"kataConfigPoolSelector": {"matchLabels": {"zone": "nowhere"}}})),
            three_workers(),
        );
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::NoKataNodes);
        assert!(cond(&d, READY).message.contains("no worker node matches"));
    }

    #[test]
    fn peer_pods_note_is_reported_in_ready() {
        let mut obs = observed(kc(json!({"enablePeerPods": true})), three_workers());
        converge(&mut obs);
        let st = obs.kata_config.status.expect("st");
        let ready = status::find(&st.conditions, READY).expect("ready");
        assert!(ready.message.contains("peer pods are not supported yet"));
    }

    #[test]
    fn pods_are_unused_during_install() {
        let mut obs = observed(kc(json!({})), three_workers());
        obs.pods = Some(vec![PodInfo {
            namespace: "a".into(),
            name: "p".into(),
            runtime_class: Some("kata".into()),
            phase: Some("Running".into()),
        }]);
        assert_eq!(decide(&obs).outcome, Outcome::Installing);
    }
}
