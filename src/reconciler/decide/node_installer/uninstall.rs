//! Uninstall with the installer, decided purely from observed state (so a crash anywhere
//! resumes):
//!
//! 1. blocked while a non-terminal pod uses a managed RuntimeClass (named in the condition);
//! 2. one step removing the RuntimeClass and the kata role label of every node: the DaemonSet
//!    no longer selects them, so each installer pod is deleted and cleans its node up as
//!    kata-deploy does on termination;
//! 3. wait until no node carries the installed label and no installer pod is left;
//! 4. delete the DaemonSet and drop the finalizer.

use crate::api::Backend;
use crate::names::{KATA_ROLE_LABEL, KATA_RUNTIME_LABEL, NODE_INSTALLER, RUNTIME_CLASS};
use crate::plan::node_installer;

use super::progress_words::progress_message;
use crate::reconciler::action::{Action, Decision, Kind};
use crate::reconciler::decide::steps::{
    blocked, blocking_pods, checking_pods, finalize, managed_runtime_classes, uninstalling,
};
use crate::reconciler::observe::Observed;

pub(in crate::reconciler::decide) fn decide_uninstall(obs: &Observed) -> Decision {
    let old = obs.kata_config.status.clone().unwrap_or_default();
    let Some(pods) = &obs.pods else {
        return checking_pods(obs, Backend::NodeInstaller);
    };
    let managed = managed_runtime_classes(&old.runtime_classes);
    let blocking = blocking_pods(pods, &managed);
    if !blocking.is_empty() {
        let progress = node_installer::classify(&obs.nodes, &obs.installer.pods, true);
        return blocked(obs, Backend::NodeInstaller, &managed, &blocking, &progress);
    }
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
    let progress = node_installer::classify(&obs.nodes, &obs.installer.pods, true);
    let cleaned = !obs
        .nodes
        .iter()
        .any(|n| n.labels.contains_key(KATA_RUNTIME_LABEL))
        && obs.installer.pods.is_empty();
    if actions.is_empty() && cleaned {
        let daemon_set = obs.installer.daemon_set.is_some().then(|| Action::Delete {
            kind: Kind::DaemonSet,
            name: NODE_INSTALLER.to_string(),
        });
        let config_map = obs.installer.config_map.is_some().then(|| Action::Delete {
            kind: Kind::ConfigMap,
            name: NODE_INSTALLER.to_string(),
        });
        return finalize(obs, daemon_set.into_iter().chain(config_map).collect());
    }
    let msg = progress_message(&progress, obs, true);
    uninstalling(obs, Backend::NodeInstaller, &progress, msg, actions)
}

#[cfg(test)]
mod tests {
    use crate::api::Backend;
    use crate::discovery::ServedApis;
    use crate::names::{FINALIZER, KATA_ROLE_LABEL, KATA_RUNTIME_LABEL};
    use crate::reconciler::action::{Action, Kind, Outcome};
    use crate::reconciler::decide::{backend_for, decide};
    use crate::reconciler::fixtures::{apply_all, apply_one, installer_settle, kc, now, vanilla};
    use crate::reconciler::observe::{Observed, PodInfo};
    use crate::reconciler::status::{self, IN_PROGRESS};
    use kube::ResourceExt;
    use serde_json::json;

    fn installed() -> Observed {
        let mut obs = vanilla(kc(json!({})), &["a", "b"]);
        for _ in 0..5 {
            let d = decide(&obs);
            apply_all(&mut obs, &d);
            installer_settle(&mut obs, &[]);
        }
        assert_eq!(
            obs.kata_config
                .status
                .as_ref()
                .expect("st")
                .kata_nodes
                .installed,
            ["a", "b"]
        );
        obs.kata_config.metadata.deletion_timestamp = Some(now());
        obs.pods = Some(Vec::new());
        obs
    }

    #[test]
    fn running_kata_pods_block_and_are_named() {
        let mut obs = installed();
        obs.pods = Some(vec![PodInfo {
            namespace: "team".into(),
            name: "web".into(),
            runtime_class: Some("kata".into()),
            phase: Some("Running".into()),
        }]);
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::Blocked);
        assert!(d.actions.is_empty());
        let st = d.status.expect("status");
        let c = status::find(&st.conditions, IN_PROGRESS).expect("cond");
        assert_eq!(c.reason, "BlockedByExistingKataPods");
        assert!(c.message.contains("team/web"), "{}", c.message);
        assert_eq!(st.backend, Some(Backend::NodeInstaller));
    }

    #[test]
    fn unlabelling_lets_each_installer_clean_up_then_the_daemon_set_goes_with_the_finalizer() {
        let mut obs = installed();
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::Uninstalling);
        assert_eq!(
            d.actions,
            [
                Action::UnlabelNode("a".into()),
                Action::UnlabelNode("b".into()),
                Action::Delete {
                    kind: Kind::RuntimeClass,
                    name: "kata".into()
                },
            ]
        );
        apply_all(&mut obs, &d);
        // The DaemonSet deletes the pods; their cleanup is running.
        for p in &mut obs.installer.pods {
            p.terminating = true;
        }
        let d = decide(&obs);
        assert!(d.actions.is_empty());
        assert_eq!(d.status.expect("st").kata_nodes.uninstalling, ["a", "b"]);
        installer_settle(&mut obs, &[]);
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::Uninstalled);
        assert_eq!(
            d.actions,
            [
                Action::Delete {
                    kind: Kind::DaemonSet,
                    name: "kata-node-installer".into()
                },
                Action::Delete {
                    kind: Kind::ConfigMap,
                    name: "kata-node-installer".into()
                },
                Action::RemoveFinalizer,
            ]
        );
    }

    #[test]
    fn a_node_whose_cleanup_did_not_finish_holds_the_finalizer_and_is_named() {
        let mut obs = installed();
        let d = decide(&obs);
        apply_all(&mut obs, &d);
        installer_settle(&mut obs, &[]);
        obs.nodes[1]
            .labels
            .insert(KATA_RUNTIME_LABEL.into(), "true".into());
        let d = decide(&obs);
        assert!(!d.actions.contains(&Action::RemoveFinalizer));
        let st = d.status.expect("st");
        assert_eq!(st.kata_nodes.failed_to_uninstall, ["b"]);
        let deg = status::find(&st.conditions, "Degraded").expect("degraded");
        assert!(
            deg.message
                .starts_with("Node b Degraded: the installer pod is gone"),
            "{}",
            deg.message
        );
    }

    #[test]
    fn the_recorded_backend_decides_the_uninstall_even_if_discovery_changed() {
        let mut obs = installed();
        let mco_back = ServedApis {
            machine_config: true,
            ..Default::default()
        };
        assert_eq!(
            backend_for(&obs.kata_config, &mco_back),
            Backend::NodeInstaller
        );
        obs.kata_config.metadata.deletion_timestamp = None;
        assert_eq!(
            backend_for(&obs.kata_config, &mco_back),
            Backend::MachineConfig
        );
    }

    /// Crash after any prefix of the whole install and uninstall: re-deciding from what was
    /// observed reaches the same end state.
    #[test]
    fn crash_between_any_two_writes_resumes_to_the_same_end() {
        let fresh = vanilla(kc(json!({})), &["a", "b"]);
        let run = |obs: &mut Observed, budget: &mut Option<usize>| {
            for _ in 0..12 {
                let d = decide(obs);
                for a in &d.actions {
                    if *budget == Some(0) {
                        return;
                    }
                    apply_one(obs, a);
                    *budget = budget.map(|b| b - 1);
                }
                if let Some(s) = &d.status {
                    obs.kata_config.status = Some(s.clone());
                }
                installer_settle(obs, &[]);
                if obs
                    .kata_config
                    .status
                    .as_ref()
                    .is_some_and(|s| s.kata_nodes.installed.len() == 2)
                    && obs.kata_config.metadata.deletion_timestamp.is_none()
                {
                    obs.kata_config.metadata.deletion_timestamp = Some(now());
                    obs.pods = Some(Vec::new());
                }
            }
        };
        let mut total = fresh.clone();
        let mut unlimited = None;
        run(&mut total, &mut unlimited);
        assert!(
            !total
                .kata_config
                .finalizers()
                .iter()
                .any(|f| f == FINALIZER),
            "an uninterrupted run ends uninstalled"
        );
        for crash_after in 0..12 {
            let mut obs = fresh.clone();
            run(&mut obs, &mut Some(crash_after));
            // Restart: a fresh reconciler sees only the cluster.
            run(&mut obs, &mut None);
            assert!(
                !obs.kata_config.finalizers().iter().any(|f| f == FINALIZER),
                "crash after {crash_after}: finalizer left"
            );
            assert!(obs.installer.daemon_set.is_none() && obs.installer.config_map.is_none());
            assert!(obs.runtime_class.is_none());
            assert!(obs.nodes.iter().all(
                |n| !n.has_label(KATA_ROLE_LABEL) && !n.labels.contains_key(KATA_RUNTIME_LABEL)
            ));
        }
    }
}
