//! Uninstall, decided purely from observed state (so a crash anywhere resumes):
//!
//! 1. blocked while a non-terminal pod uses a managed RuntimeClass (named in the condition);
//! 2. one step removing the RuntimeClass, the ContainerRuntimeConfig, both MachineConfigs and the
//!    kata node label together, so every node leaves `kata-oc` once and reboots once;
//! 3. wait until every node is back on the worker (or plain master) rendering;
//! 4. delete `kata-oc` and drop the finalizer.

use crate::api::Backend;
use crate::names::{
    CONTAINER_RUNTIME_CONFIG, KATA_POOL, KATA_ROLE_LABEL, RUNTIME_CLASS, WORKER_POOL,
};
use crate::plan::Topology;
use crate::plan::progress::{self, ProgressInput};

use super::pools::{pool_render, progress_message};
use crate::reconciler::action::{Action, Decision, Kind};
use crate::reconciler::decide::steps::{
    blocked, blocking_pods, checking_pods, finalize, managed_runtime_classes, uninstalling,
};
use crate::reconciler::observe::Observed;

pub(in crate::reconciler::decide) fn decide_uninstall(obs: &Observed) -> Decision {
    let old = obs.kata_config.status.clone().unwrap_or_default();
    let topology = Topology::detect(&obs.nodes);
    let Some(pods) = &obs.pods else {
        return checking_pods(obs, Backend::MachineConfig);
    };
    let managed = managed_runtime_classes(&old.runtime_classes);
    let blocking = blocking_pods(pods, &managed);
    if !blocking.is_empty() {
        let progress = classify(obs, topology);
        return blocked(obs, Backend::MachineConfig, &managed, &blocking, &progress);
    }
    let actions = removals(obs);
    // Progress as it will be once the labels are gone.
    let mut after = obs.clone();
    for n in &mut after.nodes {
        n.labels.remove(KATA_ROLE_LABEL);
    }
    let prog = classify(&after, topology);
    if actions.is_empty() && prog.settled() && back_on_plain_rendering(obs, topology) {
        // Every node is back on the plain rendering: the pool goes, then the finalizer.
        let pool = obs.pools.contains_key(KATA_POOL).then(|| Action::Delete {
            kind: Kind::Pool,
            name: KATA_POOL.to_string(),
        });
        return finalize(obs, pool.into_iter().collect());
    }
    let msg = progress_message(&prog, obs, topology.pool_name(), topology, true);
    uninstalling(obs, Backend::MachineConfig, &prog, msg, actions)
}

/// Everything that still exists goes in one step. Labels first: nodes leave `kata-oc` for
/// `worker` (which never had kata) before the kata pool is re-rendered, so no node starts an
/// update inside `kata-oc` first: one reboot each.
fn removals(obs: &Observed) -> Vec<Action> {
    let mut actions: Vec<Action> = obs
        .nodes
        .iter()
        .filter(|n| n.has_label(KATA_ROLE_LABEL))
        .map(|n| Action::UnlabelNode(n.name.to_string()))
        .collect();
    if obs.runtime_class.is_some() {
        actions.push(Action::Delete {
            kind: Kind::RuntimeClass,
            name: RUNTIME_CLASS.to_string(),
        });
    }
    if obs.container_runtime_config.is_some() {
        actions.push(Action::Delete {
            kind: Kind::ContainerRuntimeConfig,
            name: CONTAINER_RUNTIME_CONFIG.to_string(),
        });
    }
    for name in obs.machine_configs.keys() {
        actions.push(Action::Delete {
            kind: Kind::MachineConfig,
            name: name.clone(),
        });
    }
    actions
}

fn classify(obs: &Observed, topology: Topology) -> progress::Progress {
    progress::classify(
        &obs.nodes,
        &ProgressInput {
            topology,
            uninstalling: true,
            kata_pool: pool_render(obs, topology.pool_name()),
            worker_pool: pool_render(obs, WORKER_POOL),
        },
    )
}

/// On a converged cluster the master pool must have been re-rendered without kata (the nodes
/// never change pools, so `settled` alone cannot tell).
fn back_on_plain_rendering(obs: &Observed, topology: Topology) -> bool {
    match topology {
        Topology::Regular => true,
        Topology::Converged => pool_render(obs, topology.pool_name()).is_none_or(|r| !r.has_kata),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{FINALIZER, MCO_CURRENT_CONFIG, MCO_REASON, MCO_STATE};
    use crate::reconciler::action::Outcome;
    use crate::reconciler::decide::decide as decide_any;
    use crate::reconciler::fixtures::{
        actions_of_an_uninterrupted_run, apply_all, converge, kc, mco_settle, now, observed,
        run_until_crash, worker,
    };
    use crate::reconciler::observe::PodInfo;
    use crate::reconciler::status;
    use crate::reconciler::status::IN_PROGRESS;
    use serde_json::json;

    fn pod(ns: &str, name: &str, rc: &str, phase: &str) -> PodInfo {
        PodInfo {
            namespace: ns.into(),
            name: name.into(),
            runtime_class: Some(rc.into()),
            phase: Some(phase.into()),
        }
    }

    fn installed() -> Observed {
        let mut obs = observed(
            kc(json!({"logLevel": "debug"})),
            vec![worker("w0", &[]), worker("w1", &[]), worker("w2", &[])],
        );
        converge(&mut obs);
        obs.kata_config.metadata.deletion_timestamp = Some(now());
        obs.pods = Some(Vec::new());
        obs
    }

    #[test]
    fn running_kata_pods_block_and_are_named_terminal_ones_do_not() {
        let mut obs = installed();
        obs.pods = Some(vec![
            pod("team-a", "web", "kata", "Running"),
            pod("team-b", "batch", "kata", "Succeeded"),
            pod("team-c", "crashed", "kata", "Failed"),
            pod("team-d", "plain", "runc", "Running"),
            pod("team-e", "starting", "kata", "Pending"),
        ]);
        let d = decide_any(&obs);
        assert_eq!(d.outcome, Outcome::Blocked);
        assert!(d.actions.is_empty(), "nothing is removed while blocked");
        let st = d.status.expect("status");
        let c = status::find(&st.conditions, IN_PROGRESS).expect("cond");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "BlockedByExistingKataPods")
        );
        assert!(
            c.message.contains("team-a/web, team-e/starting"),
            "{}",
            c.message
        );
        assert!(
            !c.message.contains("batch")
                && !c.message.contains("crashed")
                && !c.message.contains("plain")
        );
        assert!(
            d.events
                .iter()
                .any(|e| e.reason == "BlockedByExistingKataPods" && e.note.contains("team-a/web"))
        );
    }

    #[test]
    fn unblocked_uninstall_removes_everything_in_one_step_then_waits_then_finalizes() {
        let mut obs = installed();
        let d = decide_any(&obs);
        assert_eq!(d.outcome, Outcome::Uninstalling);
        let deletes: Vec<_> = d
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect();
        assert_eq!(
            deletes,
            [
                Kind::RuntimeClass,
                Kind::ContainerRuntimeConfig,
                Kind::MachineConfig,
                Kind::MachineConfig
            ]
        );
        let unlabels = d
            .actions
            .iter()
            .filter(|a| matches!(a, Action::UnlabelNode(_)))
            .count();
        assert_eq!(
            unlabels, 3,
            "labels go in the same step as the MachineConfigs"
        );
        let st = d.status.clone().expect("status");
        assert_eq!(st.kata_nodes.waiting_to_uninstall, ["w0", "w1", "w2"]);
        assert!(st.runtime_classes.is_empty());
        assert!(d.events.iter().any(|e| e.reason == "Uninstalling"));
        apply_all(&mut obs, &d);
        // Nodes still on the kata rendering: waiting, nothing more to write.
        let d = decide_any(&obs);
        assert!(d.actions.is_empty());
        assert_eq!(d.outcome, Outcome::Uninstalling);
        apply_all(&mut obs, &d);
        mco_settle(&mut obs);
        let d = decide_any(&obs);
        assert_eq!(d.outcome, Outcome::Uninstalled);
        assert_eq!(
            d.actions,
            [
                Action::Delete {
                    kind: Kind::Pool,
                    name: KATA_POOL.into()
                },
                Action::RemoveFinalizer
            ]
        );
        assert!(d.events.iter().any(|e| e.reason == "Uninstalled"));
    }

    #[test]
    fn a_degraded_node_during_uninstall_is_named_and_holds_the_finalizer() {
        let mut obs = installed();
        let d = decide_any(&obs);
        apply_all(&mut obs, &d);
        mco_settle(&mut obs);
        let n = obs.nodes.iter_mut().find(|n| &*n.name == "w2").expect("w2");
        n.annotations.insert(MCO_STATE.into(), "Degraded".into());
        n.annotations
            .insert(MCO_CURRENT_CONFIG.into(), "rendered-kata-oc-k".into());
        n.annotations
            .insert(MCO_REASON.into(), "unexpected on-disk state".into());
        let d = decide_any(&obs);
        assert_eq!(d.outcome, Outcome::Uninstalling);
        assert!(!d.actions.contains(&Action::RemoveFinalizer));
        let st = d.status.expect("st");
        assert_eq!(st.kata_nodes.failed_to_uninstall, ["w2"]);
        let deg = status::find(&st.conditions, "Degraded").expect("deg");
        assert_eq!(deg.message, "Node w2 Degraded: unexpected on-disk state");
    }

    /// Crash after any prefix of any decision's actions: re-deciding from what was observed
    /// reaches the same end state (finalizer gone, nothing of ours left).
    #[test]
    fn crash_between_any_two_uninstall_steps_resumes_to_the_same_end() {
        let base = installed();
        // Record the full action sequence of an uninterrupted run.
        let total = actions_of_an_uninterrupted_run(&base);
        assert!(
            total >= 8,
            "expected a multi-step uninstall, got {total} actions"
        );
        for crash_after in 0..=total {
            let mut obs = run_until_crash(&base, crash_after);
            // Restart: a fresh reconciler sees only the cluster.
            for _ in 0..10 {
                let d = decide_any(&obs);
                apply_all(&mut obs, &d);
                mco_settle(&mut obs);
            }
            let fin = obs
                .kata_config
                .metadata
                .finalizers
                .clone()
                .unwrap_or_default();
            assert!(
                !fin.iter().any(|f| f == FINALIZER),
                "crash after {crash_after}: finalizer left"
            );
            assert!(obs.machine_configs.is_empty(), "crash after {crash_after}");
            assert!(obs.runtime_class.is_none() && obs.container_runtime_config.is_none());
            assert!(!obs.pools.contains_key(KATA_POOL));
            assert!(obs.nodes.iter().all(|n| !n.has_label(KATA_ROLE_LABEL)));
        }
    }

    #[test]
    fn crash_between_any_two_install_steps_resumes_to_the_same_end() {
        let fresh = observed(
            kc(json!({"logLevel": "debug"})),
            vec![worker("w0", &[]), worker("w1", &[]), worker("w2", &[])],
        );
        let mut reference = fresh.clone();
        converge(&mut reference);
        // Every action of the whole install, in order.
        let total = actions_of_an_uninterrupted_run(&fresh);
        assert!(
            total >= 9,
            "finalizer, pool, 2 MCs, CRC, 3 labels, RuntimeClass: {total}"
        );
        for crash_after in 0..=total {
            let mut obs = run_until_crash(&fresh, crash_after);
            mco_settle(&mut obs);
            converge(&mut obs);
            assert_eq!(
                obs.runtime_class, reference.runtime_class,
                "crash after {crash_after}"
            );
            assert_eq!(obs.machine_configs, reference.machine_configs);
            assert_eq!(obs.nodes, reference.nodes);
            assert_eq!(
                obs.kata_config.status.as_ref().map(|s| &s.kata_nodes),
                reference.kata_config.status.as_ref().map(|s| &s.kata_nodes)
            );
        }
    }

    #[test]
    fn deleting_without_our_finalizer_does_nothing() {
        let mut obs = installed();
        obs.kata_config.metadata.finalizers = None;
        let d = decide_any(&obs);
        assert_eq!(d.outcome, Outcome::Gone);
        assert!(d.actions.is_empty() && d.status.is_none());
    }
}
