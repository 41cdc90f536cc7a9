//! The steps both backends take the same way: repairing what differs (and telling drift from a
//! spec edit), keeping the RuntimeClass once the rollout is complete, the install conditions,
//! and an uninstall blocked by kata pods.

use k8s_openapi::api::node::v1::RuntimeClass;
use kube::ResourceExt;

use crate::api::{Backend, KataConfigStatus};
use crate::names::{KATA_ROLE_LABEL, RUNTIME_CLASS};
use crate::plan::progress::Progress;
use crate::plan::{LabelChange, NodeInfo};

use super::report::{Report, degraded_condition, finish};
use crate::reconciler::action::{Action, Decision, Desired, Outcome};
use crate::reconciler::diff::{foreign_keys_patch, needs_apply};
use crate::reconciler::events::{self, EventSpec};
use crate::reconciler::observe::{Observed, PodInfo};
use crate::reconciler::status::{self, IN_PROGRESS, READY, Wanted, reason};

/// The writes of one install decision, and the repairs among them (for the drift Event).
#[derive(Default)]
pub(super) struct Writes {
    pub(super) actions: Vec<Action>,
    pub(super) repaired: Vec<String>,
}

impl Writes {
    /// Applies `d`, first removing keys someone else added to its selectors; `present` tells an
    /// edit ("restored") from a deletion ("re-created") for the drift Event.
    pub(super) fn repair(&mut self, obs: &Observed, d: Desired, present: bool) {
        let verb = if present { "restored" } else { "re-created" };
        self.repaired.push(format!("{verb} {}", d.describe()));
        if let Some(patch) = foreign_keys(&d, obs) {
            self.actions.push(Action::RemoveForeignKeys {
                kind: d.kind(),
                name: d.name(),
                patch,
            });
        }
        self.actions.push(Action::Apply(Box::new(d)));
    }

    /// Whether anything but the finalizer is still to be written this round.
    pub(super) fn pending(&self) -> bool {
        self.actions.iter().any(Action::is_write_to_cluster_objects)
    }
}

/// The removal patch for keys others added to `d`'s selector-like maps, against what is observed.
fn foreign_keys(d: &Desired, obs: &Observed) -> Option<serde_json::Value> {
    match d {
        Desired::Pool(p) => obs
            .pools
            .get(&p.name_any())
            .and_then(|o| foreign_keys_patch(p, o)),
        Desired::MachineConfig(m) => obs
            .machine_configs
            .get(&m.name_any())
            .and_then(|o| foreign_keys_patch(m, o)),
        Desired::ContainerRuntimeConfig(c) => obs
            .container_runtime_config
            .as_ref()
            .and_then(|o| foreign_keys_patch(c, o)),
        Desired::RuntimeClass(r) => obs
            .runtime_class
            .as_ref()
            .and_then(|o| foreign_keys_patch(r, o)),
        Desired::DaemonSet(ds) => obs
            .installer
            .daemon_set
            .as_ref()
            .and_then(|o| foreign_keys_patch(&**ds, o)),
        Desired::ConfigMap(c) => obs
            .installer
            .config_map
            .as_ref()
            .and_then(|o| foreign_keys_patch(c, o)),
    }
}

/// The RuntimeClass appears once the rollout is complete; once it has existed it is kept (and
/// restored when deleted or edited). Returns `status.runtimeClasses`.
pub(super) fn keep_runtime_class(
    obs: &Observed,
    desired: &RuntimeClass,
    old: &KataConfigStatus,
    complete: bool,
    writes: &mut Writes,
) -> Vec<String> {
    let known =
        obs.runtime_class.is_some() || old.runtime_classes.iter().any(|r| r == RUNTIME_CLASS);
    let wanted = complete || known;
    if wanted && needs_apply(desired, obs.runtime_class.as_ref()) {
        let d = Desired::RuntimeClass(desired.clone());
        if known {
            writes.repair(obs, d, obs.runtime_class.is_some());
        } else {
            writes.actions.push(Action::Apply(Box::new(d)));
        }
    }
    if wanted {
        vec![RUNTIME_CLASS.to_string()]
    } else {
        Vec::new()
    }
}

/// Outcome and conditions: no kata node, installed, or still installing (in the backend's words,
/// from `in_progress`).
pub(super) fn install_conditions(
    kata_nodes: &[String],
    warnings: &[String],
    progress: &Progress,
    complete: bool,
    in_progress: impl FnOnce() -> String,
) -> (Outcome, Vec<Wanted>) {
    let degraded = degraded_condition(progress);
    let warnings = warnings.join("; ");
    if kata_nodes.is_empty() && progress.settled() {
        let msg = if warnings.is_empty() {
            "no node is selected for kata".to_string()
        } else {
            format!("no node is selected for kata: {warnings}")
        };
        return (
            Outcome::NoKataNodes,
            vec![
                Wanted::new(IN_PROGRESS, false, reason::NO_KATA_NODES, msg.clone()),
                Wanted::new(READY, false, reason::NO_KATA_NODES, msg),
                degraded,
            ],
        );
    }
    let notes = if warnings.is_empty() {
        String::new()
    } else {
        format!(". Note: {warnings}")
    };
    if complete {
        let msg = format!(
            "kata is installed on {} node(s): {}; RuntimeClass {RUNTIME_CLASS} is available{notes}",
            kata_nodes.len(),
            status::name_list(kata_nodes, 20)
        );
        return (
            Outcome::Installed,
            vec![
                Wanted::new(IN_PROGRESS, false, reason::INSTALLED, msg.clone()),
                Wanted::new(READY, true, reason::INSTALLED, msg),
                degraded,
            ],
        );
    }
    let msg = in_progress() + &notes;
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
}

/// Repairs of a completed install whose spec did not change are drift, worth an Event.
pub(super) fn drift_event(
    obs: &Observed,
    old: &KataConfigStatus,
    repaired: &[String],
) -> Vec<EventSpec> {
    let settled_before = status::find(&old.conditions, READY).is_some_and(|c| {
        c.status == "True" && c.observed_generation == obs.kata_config.metadata.generation
    });
    if settled_before && !repaired.is_empty() {
        vec![EventSpec::warning(
            events::DRIFT_REPAIRED,
            format!("{} (changed outside the operator)", repaired.join(", ")),
        )]
    } else {
        Vec::new()
    }
}

/// The RuntimeClasses whose pods block uninstall: those in the status, and `kata` always.
pub(super) fn managed_runtime_classes(in_status: &[String]) -> Vec<&str> {
    let mut managed: Vec<&str> = in_status.iter().map(String::as_str).collect();
    if !managed.contains(&RUNTIME_CLASS) {
        managed.push(RUNTIME_CLASS);
    }
    managed
}

/// `namespace/name` of every pod still running (or about to) on a managed RuntimeClass.
pub(super) fn blocking_pods(pods: &[PodInfo], managed: &[&str]) -> Vec<String> {
    pods.iter()
        .filter(|p| !p.is_terminal())
        .filter(|p| {
            p.runtime_class
                .as_deref()
                .is_some_and(|rc| managed.contains(&rc))
        })
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

/// Nothing is removed while kata pods run; the condition and its Event name them.
pub(super) fn blocked(
    obs: &Observed,
    backend: Backend,
    managed: &[&str],
    blocking: &[String],
    progress: &Progress,
) -> Decision {
    let old = obs.kata_config.status.clone().unwrap_or_default();
    let msg = format!(
        "uninstall is waiting for {} pod(s) using RuntimeClass {} to finish or be deleted: {}; it resumes by itself once they are gone",
        blocking.len(),
        managed.join(", "),
        status::name_list(blocking, 20)
    );
    let report = Report {
        backend: Some(backend),
        runtime_classes: old.runtime_classes,
        kata_nodes: old.kata_nodes,
        conditions: vec![
            Wanted::new(IN_PROGRESS, false, reason::BLOCKED, msg.clone()),
            Wanted::new(READY, false, reason::UNINSTALLING, msg),
            degraded_condition(progress),
        ],
    };
    finish(obs, Outcome::Blocked, Vec::new(), Some(report), Vec::new())
}

/// Uninstall has not looked at pods yet (the pod watch is starting).
pub(super) fn checking_pods(obs: &Observed, backend: Backend) -> Decision {
    let old = obs.kata_config.status.clone().unwrap_or_default();
    let msg = "uninstalling: checking for pods that still use kata";
    let report = Report {
        backend: Some(backend),
        runtime_classes: old.runtime_classes,
        kata_nodes: old.kata_nodes,
        conditions: vec![
            Wanted::new(IN_PROGRESS, true, reason::UNINSTALLING, msg),
            Wanted::new(READY, false, reason::UNINSTALLING, msg),
        ],
    };
    finish(
        obs,
        Outcome::Uninstalling,
        Vec::new(),
        Some(report),
        Vec::new(),
    )
}

/// The last step of either uninstall: drop the finalizer (after `last`), with the Event.
pub(super) fn finalize(obs: &Observed, mut last: Vec<Action>) -> Decision {
    last.push(Action::RemoveFinalizer);
    let note = format!(
        "kata removed from every node; deleted everything the operator created for KataConfig {}",
        obs.kata_config.name_any()
    );
    finish(
        obs,
        Outcome::Uninstalled,
        last,
        None,
        vec![EventSpec::normal(events::UNINSTALLED, note)],
    )
}

/// Label changes for the selection, and the nodes as they will be once those land. Nodes leave
/// at once; they join only when `join_now` (the MCO backend waits for the kata pool to render).
pub(super) fn move_nodes(
    obs: &Observed,
    changes: &[LabelChange],
    join_now: bool,
    actions: &mut Vec<Action>,
) -> Vec<NodeInfo> {
    let mut nodes = obs.nodes.clone();
    for change in changes {
        match change {
            LabelChange::Add { node, .. } => {
                if join_now {
                    actions.push(Action::LabelNode(node.clone()));
                }
                if let Some(n) = nodes.iter_mut().find(|n| *n.name == **node) {
                    n.labels.insert(KATA_ROLE_LABEL.to_string(), String::new());
                }
            }
            LabelChange::Remove { node, .. } => {
                actions.push(Action::UnlabelNode(node.clone()));
                if let Some(n) = nodes.iter_mut().find(|n| *n.name == **node) {
                    n.labels.remove(KATA_ROLE_LABEL);
                }
            }
        }
    }
    nodes
}

/// The head of every progress message: how far the install is, and the nodes of each list.
pub(super) fn progress_parts(p: &Progress, uninstalling: bool) -> Vec<String> {
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
    parts
}

/// An uninstall still under way: `actions` now, progress in `msg`.
pub(super) fn uninstalling(
    obs: &Observed,
    backend: Backend,
    progress: &Progress,
    msg: String,
    actions: Vec<Action>,
) -> Decision {
    let report = Report {
        backend: Some(backend),
        runtime_classes: Vec::new(),
        kata_nodes: progress.nodes.clone(),
        conditions: vec![
            Wanted::new(IN_PROGRESS, true, reason::UNINSTALLING, msg.clone()),
            Wanted::new(READY, false, reason::UNINSTALLING, msg),
            degraded_condition(progress),
        ],
    };
    finish(
        obs,
        Outcome::Uninstalling,
        actions,
        Some(report),
        Vec::new(),
    )
}
