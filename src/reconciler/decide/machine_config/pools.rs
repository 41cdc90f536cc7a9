//! Pool state as progress needs it, and node progress in the MCO's words.

use crate::names::WORKER_POOL;
use crate::plan::Topology;
use crate::plan::progress::{PoolRender, Progress};
use crate::reconciler::decide::steps::progress_parts;
use crate::reconciler::observe::Observed;

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
    let mut parts = progress_parts(p, uninstalling);
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
