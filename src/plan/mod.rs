//! The pure core: from a `KataConfig` and the cluster's nodes to every object the reconciler
//! applies. Used by the reconciler and by the offline `render` command alike. Two backends:
//! the Machine Config Operator's ([`desired_state`], [`objects`], [`progress`]) and the
//! node installer's where the MCO is not served ([`node_installer`], [`installer_objects`]).

pub mod installer_objects;
pub mod node_installer;
pub mod nodes;
pub mod objects;
pub mod progress;

use std::fmt;

use k8s_openapi::api::node::v1::RuntimeClass;

use crate::api::{
    ContainerRuntimeConfig, KataConfig, KataConfigSpec, MachineConfig, MachineConfigPool,
    NamespacePolicy,
};
use crate::names::LOG_LEVELS;
use crate::selector::FieldError;

pub use nodes::{LabelChange, NodeInfo, NodeLabels, NodeSelection, Topology};

/// A spec the operator cannot act on. The reconciler reports it as a condition and waits for the
/// object to change; `render` prints it and exits non-zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub errors: Vec<FieldError>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for SpecError {}

/// The image pull policies `spec.nodeInstaller.imagePullPolicy` accepts.
pub const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];

/// Checks the fields the CRD schema also restricts, plus the selector rules, so an object that
/// got past an older CRD or a disabled webhook is still reported precisely.
pub fn validate_spec(spec: &KataConfigSpec) -> Result<(), SpecError> {
    let mut errors = Vec::new();
    if let Some(sel) = &spec.kata_config_pool_selector {
        errors.extend(crate::selector::validate(
            sel,
            "spec.kataConfigPoolSelector",
        ));
    }
    if !LOG_LEVELS.contains(&spec.log_level.as_str()) {
        errors.push(FieldError {
            field: "spec.logLevel".into(),
            message: format!(
                "unsupported CRI-O log level {:?}: use one of {}",
                spec.log_level,
                LOG_LEVELS.join(", ")
            ),
        });
    }
    if let Some(policy) = &spec.namespace_policy
        && NamespacePolicy::parse(&policy.default).is_none()
    {
        errors.push(FieldError {
            field: "spec.namespacePolicy.default".into(),
            message: format!(
                "unknown policy {:?}: use one of {}",
                policy.default,
                NamespacePolicy::valid_values()
            ),
        });
    }
    if let Some(installer) = &spec.node_installer {
        errors.extend(validate_installer(installer));
    }
    if let Some(fixed) = spec
        .runtime_class
        .as_ref()
        .and_then(|rc| rc.overhead.as_ref())
        .and_then(|o| o.pod_fixed.as_ref())
    {
        for (name, q) in fixed {
            if q.0.trim().is_empty() {
                errors.push(FieldError {
                    field: format!("spec.runtimeClass.overhead.podFixed.{name}"),
                    message: "must be a quantity such as 250m or 350Mi".into(),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SpecError { errors })
    }
}

fn validate_installer(installer: &crate::api::NodeInstallerSettings) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(policy) = &installer.image_pull_policy
        && !PULL_POLICIES.contains(&policy.as_str())
    {
        errors.push(FieldError {
            field: "spec.nodeInstaller.imagePullPolicy".into(),
            message: format!(
                "unknown pull policy {policy:?}: use one of {}",
                PULL_POLICIES.join(", ")
            ),
        });
    }
    let known: Vec<&str> = installer_objects::DISTRIBUTIONS
        .iter()
        .map(|(d, _)| *d)
        .collect();
    if let Some(d) = &installer.distribution
        && !known.contains(&d.as_str())
    {
        errors.push(FieldError {
            field: "spec.nodeInstaller.distribution".into(),
            message: format!(
                "unknown distribution {d:?}: use one of {} (it decides where the containerd configuration is)",
                known.join(", ")
            ),
        });
    }
    if installer
        .image
        .as_deref()
        .is_some_and(|i| i.trim().is_empty())
    {
        errors.push(FieldError {
            field: "spec.nodeInstaller.image".into(),
            message: "must name an image; remove the field to use the pinned kata-deploy image"
                .into(),
        });
    }
    errors
}

/// Everything the reconciler wants to exist while the KataConfig is installed.
#[derive(Debug, Clone)]
pub struct DesiredState {
    pub selection: NodeSelection,
    /// `kata-oc` on regular clusters, `None` on converged ones (the `master` pool is the MCO's).
    pub pool: Option<MachineConfigPool>,
    /// Extension first, then the CRI-O drop-in.
    pub machine_configs: Vec<MachineConfig>,
    pub container_runtime_config: Option<ContainerRuntimeConfig>,
    pub runtime_class: RuntimeClass,
    pub warnings: Vec<String>,
}

impl DesiredState {
    pub fn topology(&self) -> Topology {
        self.selection.topology
    }

    /// Name of the pool that carries the kata MachineConfigs.
    pub fn pool_name(&self) -> &'static str {
        self.selection.topology.pool_name()
    }
}

/// Builds the desired state. Fails only on a spec the operator cannot act on.
pub fn desired_state(kc: &KataConfig, nodes: &[NodeInfo]) -> Result<DesiredState, SpecError> {
    validate_spec(&kc.spec)?;
    let selection = nodes::select_nodes(&kc.spec, nodes).map_err(|errors| SpecError { errors })?;
    let topology = selection.topology;
    let pool_name = topology.pool_name();
    let kc_name = kc.metadata.name.as_deref().unwrap_or_default();
    let mut warnings = selection.warnings.clone();
    if kc.spec.enable_peer_pods {
        warnings.push("spec.enablePeerPods is accepted for compatibility, but peer pods are not supported yet: nothing is installed for them".into());
    }
    Ok(DesiredState {
        pool: (topology == Topology::Regular).then(objects::kata_pool),
        machine_configs: vec![
            objects::extension_machine_config(pool_name, kc_name),
            objects::crio_dropin_machine_config(pool_name, kc_name),
        ],
        container_runtime_config: objects::container_runtime_config(pool_name, &kc.spec.log_level),
        runtime_class: objects::runtime_class(kc, topology),
        selection,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::nodes::tests::{master, worker};
    use serde_json::json;

    fn kc(spec: serde_json::Value) -> KataConfig {
        let spec: KataConfigSpec = serde_json::from_value(spec).expect("spec");
        KataConfig::new("example", spec)
    }

    #[test]
    fn a_blank_installer_image_names_the_field_and_the_fix() {
        let e = validate_spec(&kc(json!({"nodeInstaller": {"image": "  "}})).spec)
            .expect_err("blank image");
        assert_eq!(
            e.to_string(),
            "spec.nodeInstaller.image: must name an image; remove the field to use the pinned kata-deploy image"
        );
    }

    #[test]
    fn regular_cluster_gets_pool_two_mcs_and_runtime_class() {
        let nodes = vec![master("m0", false), worker("w0", &[]), worker("w1", &[])];
        let d = desired_state(&kc(json!({})), &nodes).expect("valid");
        assert_eq!(d.pool_name(), "kata-oc");
        assert!(d.pool.is_some());
        let names: Vec<_> = d
            .machine_configs
            .iter()
            .map(|m| m.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            [
                "50-enable-sandboxed-containers-extension",
                "50-kata-crio-dropin"
            ]
        );
        assert!(d.container_runtime_config.is_none());
        assert_eq!(d.selection.kata_nodes, ["w0", "w1"]);
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn converged_cluster_has_no_kata_pool_and_targets_master() {
        let nodes = vec![master("m0", true), master("m1", true), master("m2", true)];
        let d = desired_state(&kc(json!({"logLevel": "debug"})), &nodes).expect("valid");
        assert!(d.pool.is_none());
        for mc in &d.machine_configs {
            assert_eq!(
                mc.metadata.labels.as_ref().expect("labels")["machineconfiguration.openshift.io/role"],
                "master"
            );
        }
        assert!(d.container_runtime_config.is_some());
    }

    #[test]
    fn bad_log_level_and_policy_name_their_fields() {
        let err = desired_state(
            &kc(json!({"logLevel": "verbose", "namespacePolicy": {"default": "maybe"}})),
            &[],
        )
        .expect_err("invalid");
        let fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.logLevel", "spec.namespacePolicy.default"]);
        assert!(
            err.to_string()
                .contains("use one of fatal, panic, error, warn, info, debug, trace")
        );
        assert!(
            err.to_string()
                .contains("use one of require, default, allow, deny")
        );
    }

    #[test]
    fn peer_pods_request_is_reported_not_acted_on() {
        let d = desired_state(&kc(json!({"enablePeerPods": true})), &[worker("w0", &[])])
            .expect("valid");
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("peer pods are not supported yet"))
        );
    }

    #[test]
    fn empty_spec_gets_upstream_defaults() {
        let k = kc(json!({}));
        assert_eq!(k.spec.log_level, "info");
        assert!(!k.spec.check_node_eligibility);
        assert_eq!(k.spec.default_namespace_policy(), "allow");
    }
}
