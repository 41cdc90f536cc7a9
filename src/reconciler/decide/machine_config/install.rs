//! Install, update and repair: apply what differs from the plan (drift included), move nodes
//! in and out of the kata pool once it renders kata, create the RuntimeClass when the rollout is
//! complete, and report progress node by node.

use kube::ResourceExt;

use crate::api::Backend;
use crate::names::{CONTAINER_RUNTIME_CONFIG, KATA_POOL, WORKER_POOL};
use crate::plan;
use crate::plan::progress::{self, ProgressInput};

use super::pools::{pool_render, pool_updated, progress_message};
use crate::reconciler::action::{Action, Decision, Desired, Kind};
use crate::reconciler::decide::report::{Report, finish, namespace_policy_condition};
use crate::reconciler::decide::steps::{
    Writes, drift_event, install_conditions, keep_runtime_class, move_nodes,
};
use crate::reconciler::diff::needs_apply;
use crate::reconciler::observe::Observed;

pub(in crate::reconciler::decide) fn decide_install(
    obs: &Observed,
    desired: plan::DesiredState,
) -> Decision {
    let kc = &obs.kata_config;
    let old = kc.status.clone().unwrap_or_default();
    let mut writes = Writes::default();
    if !kc.has_finalizer() {
        writes.actions.push(Action::AddFinalizer);
    }
    apply_machine_config_objects(obs, &desired, &mut writes);
    // Nodes join `kata-oc` only once the MCO has rendered it with both kata MachineConfigs, so
    // no node starts an update to an intermediate rendering: one reboot per node.
    let pool_renders_kata = pool_render(obs, KATA_POOL).is_some_and(|r| r.has_kata);
    let changes = &desired.selection.label_changes;
    let nodes = move_nodes(obs, changes, pool_renders_kata, &mut writes.actions);
    let pool_name = desired.pool_name();
    let progress = progress::classify(
        &nodes,
        &ProgressInput {
            topology: desired.topology(),
            uninstalling: false,
            kata_pool: pool_render(obs, pool_name),
            worker_pool: pool_render(obs, WORKER_POOL),
        },
    );
    let kata_nodes = &desired.selection.kata_nodes;
    let rolled_out = !writes.pending()
        && progress.settled()
        && pool_updated(obs, pool_name)
        && progress.nodes.installed == *kata_nodes;
    let complete = rolled_out && !kata_nodes.is_empty();
    let runtime_classes =
        keep_runtime_class(obs, &desired.runtime_class, &old, complete, &mut writes);
    let (outcome, mut conditions) =
        install_conditions(kata_nodes, &desired.warnings, &progress, complete, || {
            progress_message(&progress, obs, pool_name, desired.topology(), false)
        });
    conditions.extend(namespace_policy_condition(obs));
    let extra = drift_event(obs, &old, &writes.repaired);
    let report = Report {
        backend: Some(Backend::MachineConfig),
        runtime_classes,
        kata_nodes: progress.nodes,
        conditions,
    };
    finish(obs, outcome, writes.actions, Some(report), extra)
}

/// The pool, both MachineConfigs and the ContainerRuntimeConfig (deleted when no longer wanted).
fn apply_machine_config_objects(obs: &Observed, desired: &plan::DesiredState, writes: &mut Writes) {
    if let Some(pool) = &desired.pool {
        let seen = obs.pools.get(KATA_POOL);
        if needs_apply(pool, seen) {
            writes.repair(obs, Desired::Pool(pool.clone()), seen.is_some());
        }
    }
    for mc in &desired.machine_configs {
        let seen = obs.machine_configs.get(&mc.name_any());
        if needs_apply(mc, seen) {
            writes.repair(obs, Desired::MachineConfig(mc.clone()), seen.is_some());
        }
    }
    match (
        &desired.container_runtime_config,
        &obs.container_runtime_config,
    ) {
        (Some(crc), seen) => {
            if needs_apply(crc, seen.as_ref()) {
                let d = Desired::ContainerRuntimeConfig(crc.clone());
                writes.repair(obs, d, seen.is_some());
            }
        }
        (None, Some(_)) => writes.actions.push(Action::Delete {
            kind: Kind::ContainerRuntimeConfig,
            name: CONTAINER_RUNTIME_CONFIG.to_string(),
        }),
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::mco::{ObjectReferenceLite, PoolConfiguration};
    use crate::names::{CRIO_DROPIN_MC, EXTENSION_MC, MCO_REASON, MCO_STATE};
    use crate::plan::NodeInfo;
    use crate::reconciler::action::Outcome;
    use crate::reconciler::decide::decide;
    use crate::reconciler::events;
    use crate::reconciler::events::EventSpec;
    use crate::reconciler::fixtures::{
        apply_all, cond, converge, kc, mco_settle, observed, pool_status, three_workers, worker,
    };
    use crate::reconciler::observe::PodInfo;
    use crate::reconciler::status::DEGRADED;
    use crate::reconciler::status::{self, IN_PROGRESS, READY, reason};
    use serde_json::json;

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
        let n = obs.nodes.iter_mut().find(|n| &*n.name == "w1").expect("w1");
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
        let n = obs.nodes.iter_mut().find(|n| &*n.name == "w1").expect("w1");
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
