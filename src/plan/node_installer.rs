//! The node-installer backend's pure core, for clusters without the Machine Config Operator:
//! which nodes get kata, the DaemonSet that runs the kata-deploy image on them, the RuntimeClass
//! that schedules only onto nodes where the installer finished, and node-by-node progress from
//! the installer pods and the label the installer sets.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::node::v1::RuntimeClass;

use crate::api::KataConfig;
use crate::names::{KATA_ROLE_LABEL, KATA_RUNTIME_LABEL};

use super::nodes::{self, NodeInfo, NodeSelection};
use super::progress::Progress;
use super::{SpecError, installer_objects, validate_spec};

/// Everything the reconciler wants to exist while kata is installed through the installer.
#[derive(Debug, Clone)]
pub struct InstallerState {
    pub selection: NodeSelection,
    /// The installer's custom runtimes (the `kata` handler); it must exist before the pods.
    pub config_map: ConfigMap,
    pub daemon_set: DaemonSet,
    pub runtime_class: RuntimeClass,
    pub warnings: Vec<String>,
}

/// Builds the desired state for the operator namespace `namespace`.
pub fn desired_state(
    kc: &KataConfig,
    nodes: &[NodeInfo],
    namespace: &str,
) -> Result<InstallerState, SpecError> {
    validate_spec(&kc.spec)?;
    let selection =
        nodes::select_installer_nodes(&kc.spec, nodes).map_err(|errors| SpecError { errors })?;
    let mut warnings = selection.warnings.clone();
    if kc.spec.enable_peer_pods {
        warnings.push("spec.enablePeerPods is accepted for compatibility, but peer pods are not supported yet: nothing is installed for them".into());
    }
    if kc.spec.log_level != "info" {
        warnings.push(format!(
            "spec.logLevel {:?} sets the CRI-O log level through the Machine Config Operator, which this cluster does not have: it is not applied",
            kc.spec.log_level
        ));
    }
    Ok(InstallerState {
        config_map: installer_objects::config_map(kc, namespace),
        daemon_set: installer_objects::daemon_set(kc, namespace),
        runtime_class: installer_objects::runtime_class(kc),
        selection,
        warnings,
    })
}

/// An installer pod as progress sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstallerPod {
    pub name: String,
    /// `spec.nodeName`; empty while unscheduled.
    pub node: String,
    /// The pod's `Ready` condition is True.
    pub ready: bool,
    /// Being deleted: the installer is cleaning the node up.
    pub terminating: bool,
    /// Why the installer keeps failing (crash loop, image pull), with the container's last
    /// termination reason, if it does.
    pub failure: Option<String>,
}

/// Whether the installer reported kata usable on the node (`katacontainers.io/kata-runtime=true`).
pub fn installed_label_set(node: &NodeInfo) -> bool {
    node.labels.get(KATA_RUNTIME_LABEL) == Some("true")
}

/// Every kata-relevant node in exactly one list. `nodes` carry the kata role label as it will be
/// once this reconcile's label changes land; `uninstalling` means every node is heading away.
pub fn classify(nodes: &[NodeInfo], pods: &[InstallerPod], uninstalling: bool) -> Progress {
    let mut p = Progress::default();
    for node in nodes {
        let want = node.has_label(KATA_ROLE_LABEL) && !uninstalling;
        let on_node: Vec<&InstallerPod> = pods.iter().filter(|p| *p.node == *node.name).collect();
        // A node can briefly run a terminating pod next to its replacement.
        let pod = on_node
            .iter()
            .find(|p| !p.terminating)
            .or_else(|| on_node.first())
            .copied();
        let labelled = node.labels.contains_key(KATA_RUNTIME_LABEL);
        if !(want || labelled || pod.is_some()) {
            continue;
        }
        let name = node.name.to_string();
        if want {
            p.nodes.node_count += 1;
            match pod {
                Some(pod) if pod.failure.is_some() && !pod.terminating => {
                    let why = pod.failure.clone().unwrap_or_default();
                    p.degraded
                        .push((name.clone(), format!("installer pod {}: {why}", pod.name)));
                    p.nodes.failed_to_install.push(name);
                }
                Some(pod) if pod.ready && !pod.terminating && installed_label_set(node) => {
                    p.nodes.installed.push(name)
                }
                Some(pod) if !pod.terminating => p.nodes.installing.push(name),
                _ => p.nodes.waiting_to_install.push(name),
            }
        } else {
            match pod {
                Some(pod) if pod.terminating => p.nodes.uninstalling.push(name),
                // Still running: the DaemonSet has not noticed the label change yet.
                Some(_) => p.nodes.waiting_to_uninstall.push(name),
                None => {
                    p.degraded.push((
                        name.clone(),
                        format!(
                            "the installer pod is gone but the node still carries {KATA_RUNTIME_LABEL}: its cleanup did not finish; check the node's container runtime configuration, then remove the label"
                        ),
                    ));
                    p.nodes.failed_to_uninstall.push(name);
                }
            }
        }
    }
    p.nodes.ready_node_count = i32::try_from(p.nodes.installed.len()).unwrap_or(i32::MAX);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::KataConfigSpec;
    use crate::names::CONTROL_PLANE_ROLE_LABEL;
    use std::collections::BTreeMap;

    fn node(name: &str, labels: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
                .into(),
            annotations: BTreeMap::new().into(),
        }
    }

    fn pod(node: &str, ready: bool, terminating: bool, failure: Option<&str>) -> InstallerPod {
        InstallerPod {
            name: format!("kata-node-installer-{node}"),
            node: node.into(),
            ready,
            terminating,
            failure: failure.map(String::from),
        }
    }

    fn kc(spec: serde_json::Value) -> KataConfig {
        let spec: KataConfigSpec = serde_json::from_value(spec).expect("spec");
        KataConfig::new("example", spec)
    }

    #[test]
    fn without_a_selector_every_node_but_the_control_plane_is_selected() {
        let nodes = [
            node("cp", &[(CONTROL_PLANE_ROLE_LABEL, "")]),
            node("a", &[]),
            node("b", &[("zone", "x")]),
        ];
        let d = desired_state(&kc(serde_json::json!({})), &nodes, "ops").expect("valid");
        assert_eq!(d.selection.kata_nodes, ["a", "b"]);
        assert_eq!(d.selection.label_changes.len(), 2);
        let d = desired_state(
            &kc(serde_json::json!({"kataConfigPoolSelector": {"matchLabels": {"zone": "x"}}})),
            &nodes,
            "ops",
        )
        .expect("valid");
        assert_eq!(d.selection.kata_nodes, ["b"]);
    }

    #[test]
    fn an_explicit_selector_may_pick_control_plane_nodes_and_eligibility_applies() {
        let nodes = [
            node("cp", &[(CONTROL_PLANE_ROLE_LABEL, ""), ("kata", "yes")]),
            node(
                "a",
                &[("kata", "yes"), (crate::names::NFD_KATA_LABEL, "true")],
            ),
        ];
        let spec = serde_json::json!({"kataConfigPoolSelector": {"matchLabels": {"kata": "yes"}}});
        let d = desired_state(&kc(spec.clone()), &nodes, "ops").expect("valid");
        assert_eq!(d.selection.kata_nodes, ["a", "cp"]);
        let mut with_nfd = spec;
        with_nfd["checkNodeEligibility"] = serde_json::json!(true);
        let d = desired_state(&kc(with_nfd), &nodes, "ops").expect("valid");
        assert_eq!(d.selection.kata_nodes, ["a"]);
    }

    #[test]
    fn nothing_selected_is_a_warning_naming_nodes_and_log_level_is_reported_as_not_applied() {
        let d = desired_state(
            &kc(serde_json::json!({"kataConfigPoolSelector": {"matchLabels": {"zone": "none"}}, "logLevel": "debug"})),
            &[node("a", &[])],
            "ops",
        )
        .expect("valid");
        assert!(d.selection.kata_nodes.is_empty());
        assert!(
            d.warnings
                .iter()
                .any(|w| w == "no node matches spec.kataConfigPoolSelector"),
            "{:?}",
            d.warnings
        );
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("spec.logLevel \"debug\""))
        );
    }

    #[test]
    fn an_invalid_selector_names_its_field() {
        let e = desired_state(
            &kc(serde_json::json!({"kataConfigPoolSelector": {"matchExpressions": [{"key": "zone", "operator": "In"}]}})),
            &[],
            "ops",
        )
        .expect_err("invalid");
        assert!(
            e.to_string()
                .contains("spec.kataConfigPoolSelector.matchExpressions[0].values"),
            "{e}"
        );
    }

    #[test]
    fn each_node_is_in_exactly_one_list() {
        let role = (KATA_ROLE_LABEL, "");
        let done = (KATA_RUNTIME_LABEL, "true");
        let nodes = [
            node("waiting", &[role]),
            node("installing", &[role]),
            node("ready-no-label", &[role]),
            node("installed", &[role, done]),
            node("crashing", &[role]),
            node("leaving", &[done]),
            node("cleaning", &[done]),
            node("stuck", &[done]),
            node("unrelated", &[]),
        ];
        let pods = [
            pod("installing", false, false, None),
            pod("ready-no-label", true, false, None),
            pod("installed", true, false, None),
            pod(
                "crashing",
                false,
                false,
                Some("CrashLoopBackOff: Error (exit code 1)"),
            ),
            pod("leaving", true, false, None),
            pod("cleaning", false, true, None),
        ];
        let p = classify(&nodes, &pods, false);
        let n = &p.nodes;
        assert_eq!(n.waiting_to_install, ["waiting"]);
        assert_eq!(n.installing, ["installing", "ready-no-label"]);
        assert_eq!(n.installed, ["installed"]);
        assert_eq!(n.failed_to_install, ["crashing"]);
        assert_eq!(n.waiting_to_uninstall, ["leaving"]);
        assert_eq!(n.uninstalling, ["cleaning"]);
        assert_eq!(n.failed_to_uninstall, ["stuck"]);
        assert_eq!((n.node_count, n.ready_node_count), (5, 1));
        assert_eq!(
            p.degraded[0],
            (
                "crashing".to_string(),
                "installer pod kata-node-installer-crashing: CrashLoopBackOff: Error (exit code 1)"
                    .to_string()
            )
        );
        assert!(p.degraded[1].1.contains("cleanup did not finish"));
        assert!(!p.settled());
    }

    #[test]
    fn during_uninstall_every_node_heads_away_and_a_clean_cluster_is_settled() {
        let nodes = [node("a", &[(KATA_RUNTIME_LABEL, "true")]), node("b", &[])];
        let p = classify(&nodes, &[pod("a", false, true, None)], true);
        assert_eq!(p.nodes.uninstalling, ["a"]);
        assert_eq!(p.nodes.node_count, 0);
        let p = classify(&[node("a", &[]), node("b", &[])], &[], true);
        assert!(p.settled());
        assert_eq!(p.nodes, Default::default());
    }
}
