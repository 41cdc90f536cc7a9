//! Pool state as progress needs it, and node progress in the MCO's words.

use crate::names::WORKER_POOL;
use crate::plan::Topology;
use crate::plan::progress::{PoolRender, Progress};
use crate::reconciler::observe::Observed;
use crate::reconciler::status;

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
