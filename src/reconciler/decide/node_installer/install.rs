//! Install, update and repair with the installer: keep the DaemonSet as planned, move nodes in
//! and out with the kata role label (the DaemonSet follows it), keep the RuntimeClass (it only
//! schedules onto nodes the installer finished, so it exists from the start), and report
//! progress node by node.

use crate::api::Backend;
use crate::plan::node_installer::{self, InstallerState};

use super::progress_words::progress_message;
use crate::reconciler::action::{Action, Decision, Desired};
use crate::reconciler::decide::report::{Report, finish, namespace_policy_condition};
use crate::reconciler::decide::steps::{
    Writes, drift_event, install_conditions, keep_runtime_class, move_nodes,
};
use crate::reconciler::diff::needs_apply;
use crate::reconciler::observe::Observed;

pub(in crate::reconciler::decide) fn decide_install(
    obs: &Observed,
    desired: InstallerState,
) -> Decision {
    let kc = &obs.kata_config;
    let old = kc.status.clone().unwrap_or_default();
    let mut writes = Writes::default();
    if !kc.has_finalizer() {
        writes.actions.push(Action::AddFinalizer);
    }
    let seen = obs.installer.config_map.as_ref();
    if needs_apply(&desired.config_map, seen) {
        let d = Desired::ConfigMap(desired.config_map.clone());
        writes.repair(obs, d, seen.is_some());
    }
    let seen = obs.installer.daemon_set.as_ref();
    if needs_apply(&desired.daemon_set, seen) {
        let d = Desired::DaemonSet(Box::new(desired.daemon_set.clone()));
        writes.repair(obs, d, seen.is_some());
    }
    // The DaemonSet's node selector is the label, so labelling a node is what starts its install.
    let changes = &desired.selection.label_changes;
    let nodes = move_nodes(obs, changes, true, &mut writes.actions);
    let progress = node_installer::classify(&nodes, &obs.installer.pods, false);
    let kata_nodes = &desired.selection.kata_nodes;
    let complete = !writes.pending()
        && progress.settled()
        && progress.nodes.installed == *kata_nodes
        && !kata_nodes.is_empty();
    let runtime_classes = keep_runtime_class(obs, &desired.runtime_class, &old, true, &mut writes);
    let (outcome, mut conditions) =
        install_conditions(kata_nodes, &desired.warnings, &progress, complete, || {
            progress_message(&progress, obs, false)
        });
    conditions.extend(namespace_policy_condition(obs));
    let extra = drift_event(obs, &old, &writes.repaired);
    let report = Report {
        backend: Some(Backend::NodeInstaller),
        runtime_classes,
        kata_nodes: progress.nodes,
        conditions,
    };
    finish(obs, outcome, writes.actions, Some(report), extra)
}

#[cfg(test)]
mod tests {
    use crate::api::Backend;
    use crate::names::{KATA_ROLE_LABEL, KATA_RUNTIME_LABEL};
    use crate::reconciler::action::{Action, Desired, Outcome};
    use crate::reconciler::decide::decide;
    use crate::reconciler::events;
    use crate::reconciler::fixtures::{apply_all, cond, installer_settle, kc, vanilla};
    use crate::reconciler::observe::Observed;
    use crate::reconciler::status::{DEGRADED, READY, reason};
    use serde_json::json;

    fn described(d: &crate::reconciler::Decision) -> Vec<String> {
        d.actions
            .iter()
            .map(|a| match a {
                Action::Apply(x) => x.describe(),
                Action::LabelNode(n) => format!("label {n}"),
                Action::UnlabelNode(n) => format!("unlabel {n}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// Decide, write, let the installer work, until nothing changes.
    fn converge(obs: &mut Observed, crashing: &[&str]) {
        for _ in 0..10 {
            installer_settle(obs, crashing);
            let d = decide(obs);
            if d.actions.is_empty() && d.status.is_none() {
                return;
            }
            apply_all(obs, &d);
        }
        panic!("did not converge: {:?}", decide(obs));
    }

    #[test]
    fn first_reconcile_writes_config_map_daemon_set_labels_and_runtime_class() {
        let obs = vanilla(kc(json!({})), &["a", "b"]);
        let d = decide(&obs);
        assert_eq!(d.actions[0], Action::AddFinalizer);
        assert_eq!(
            described(&d)[1..],
            [
                "ConfigMap kata-node-installer",
                "DaemonSet kata-node-installer",
                "label a",
                "label b",
                "RuntimeClass kata",
            ]
        );
        let Some(Action::Apply(rc)) = d.actions.last() else {
            panic!("RuntimeClass last");
        };
        let Desired::RuntimeClass(rc) = rc.as_ref() else {
            panic!("RuntimeClass");
        };
        assert_eq!(
            rc.scheduling.as_ref().and_then(|s| s.node_selector.clone()),
            Some([(KATA_RUNTIME_LABEL.to_string(), "true".to_string())].into())
        );
        let st = d.status.expect("status");
        assert_eq!(st.backend, Some(Backend::NodeInstaller));
        assert_eq!(st.kata_nodes.waiting_to_install, ["a", "b"]);
        assert_eq!(
            st.runtime_classes,
            ["kata"],
            "the RuntimeClass only schedules onto finished nodes"
        );
        assert_eq!(d.outcome, Outcome::Installing);
    }

    #[test]
    fn nodes_are_installed_once_their_pod_is_ready_and_the_label_is_true_then_nothing_is_written() {
        let mut obs = vanilla(kc(json!({})), &["a", "b"]);
        let d = decide(&obs);
        apply_all(&mut obs, &d);
        // Pods exist but the installer has not finished: installing, not installed.
        installer_settle(&mut obs, &[]);
        for n in &mut obs.nodes {
            n.labels.insert(KATA_RUNTIME_LABEL.into(), "false".into());
        }
        let d = decide(&obs);
        assert_eq!(
            d.status.as_ref().expect("status").kata_nodes.installing,
            ["a", "b"]
        );
        installer_settle(&mut obs, &[]);
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::Installed);
        assert!(d.actions.is_empty(), "{:?}", d.actions);
        assert_eq!(cond(&d, READY).status, "True");
        assert!(
            cond(&d, READY)
                .message
                .contains("kata is installed on 2 node(s): a, b")
        );
        apply_all(&mut obs, &d);
        let again = decide(&obs);
        assert!(
            again.actions.is_empty() && again.status.is_none(),
            "settled: no writes"
        );
    }

    #[test]
    fn a_crash_looping_installer_is_failed_to_install_with_its_reason_and_degraded() {
        let mut obs = vanilla(kc(json!({})), &["a", "b"]);
        converge(&mut obs, &["b"]);
        let st = obs.kata_config.status.clone().expect("status");
        assert_eq!(st.kata_nodes.installed, ["a"]);
        assert_eq!(st.kata_nodes.failed_to_install, ["b"]);
        let deg = crate::reconciler::status::find(&st.conditions, DEGRADED).expect("degraded");
        assert_eq!(deg.status, "True");
        assert_eq!(
            deg.message,
            "Node b Degraded: installer pod kata-node-installer-b: CrashLoopBackOff, last terminated with Error (exit code 1): containerd config not found"
        );
        let ready = crate::reconciler::status::find(&st.conditions, READY).expect("ready");
        assert_eq!(ready.reason, reason::NODE_DEGRADED);
        // Fixed: it recovers by itself.
        converge(&mut obs, &[]);
        let st = obs.kata_config.status.clone().expect("status");
        assert_eq!(st.kata_nodes.installed, ["a", "b"]);
    }

    #[test]
    fn a_selector_edit_moves_nodes_in_and_out() {
        let mut obs = vanilla(
            kc(json!({"kataConfigPoolSelector": {"matchLabels": {"zone": "x"}}})),
            &["a", "b"],
        );
        obs.nodes[0].labels.insert("zone".into(), "x".into());
        converge(&mut obs, &[]);
        assert_eq!(
            obs.kata_config
                .status
                .as_ref()
                .expect("st")
                .kata_nodes
                .installed,
            ["a"]
        );
        obs.kata_config.spec = serde_json::from_value(
            json!({"kataConfigPoolSelector": {"matchLabels": {"zone": "y"}}}),
        )
        .expect("spec");
        obs.kata_config.metadata.generation = Some(2);
        obs.nodes[1].labels.insert("zone".into(), "y".into());
        let d = decide(&obs);
        assert_eq!(described(&d), ["unlabel a", "label b"]);
        converge(&mut obs, &[]);
        let st = obs.kata_config.status.clone().expect("st");
        assert_eq!(st.kata_nodes.installed, ["b"]);
        assert!(!obs.nodes[0].has_label(KATA_ROLE_LABEL));
        assert!(
            !obs.nodes[0].labels.contains_key(KATA_RUNTIME_LABEL),
            "a cleaned up"
        );
    }

    #[test]
    fn drift_of_the_daemon_set_config_map_runtime_class_and_labels_is_repaired() {
        let mut base = vanilla(kc(json!({})), &["a"]);
        converge(&mut base, &[]);
        type Edit = fn(&mut Observed);
        let cases: [(&str, Edit); 5] = [
            ("DaemonSet kata-node-installer", |o| {
                o.installer.daemon_set = None
            }),
            ("DaemonSet kata-node-installer", |o| {
                if let Some(spec) = o
                    .installer
                    .daemon_set
                    .as_mut()
                    .and_then(|d| d.spec.as_mut())
                    .and_then(|s| s.template.spec.as_mut())
                {
                    spec.containers[0].image = Some("someone/else:latest".into());
                }
            }),
            ("ConfigMap kata-node-installer", |o| {
                o.installer.config_map = None
            }),
            ("RuntimeClass kata", |o| {
                if let Some(rc) = o.runtime_class.as_mut() {
                    rc.scheduling = None;
                }
            }),
            ("label a", |o| {
                o.nodes[0].labels.remove(KATA_ROLE_LABEL);
            }),
        ];
        for (what, edit) in cases {
            let mut obs = base.clone();
            edit(&mut obs);
            let d = decide(&obs);
            assert_eq!(described(&d), [what], "{what}");
            if what != "label a" {
                assert!(
                    d.events
                        .iter()
                        .any(|e| e.reason == events::DRIFT_REPAIRED && e.note.contains(what)),
                    "{what}: {:?}",
                    d.events
                );
            }
            apply_all(&mut obs, &d);
            installer_settle(&mut obs, &[]);
            assert!(decide(&obs).actions.is_empty(), "{what} repaired");
        }
    }

    #[test]
    fn a_bad_installer_setting_is_reported_on_its_field_and_nothing_is_written() {
        let obs = vanilla(
            kc(
                json!({"nodeInstaller": {"distribution": "openshift", "imagePullPolicy": "Sometimes"}}),
            ),
            &["a"],
        );
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::InvalidSpec);
        assert!(d.actions.is_empty());
        let msg = &cond(&d, READY).message;
        assert!(msg.contains("spec.nodeInstaller.imagePullPolicy: unknown pull policy \"Sometimes\": use one of Always, IfNotPresent, Never"), "{msg}");
        assert!(msg.contains("spec.nodeInstaller.distribution: unknown distribution \"openshift\": use one of k8s, k3s, rke2, k0s, microk8s"), "{msg}");
    }
}
