//! The `KataConfig` custom resource (`kataconfiguration.openshift.io/v1`, cluster-scoped).
//!
//! Field names follow the upstream Go operator so existing manifests keep working. Free-form
//! strings (`logLevel`, `namespacePolicy.default`) stay `String` here: the CRD schema restricts
//! them with enums, and the reconciler re-validates them so an object that slipped past an older
//! CRD becomes a status condition instead of a deserialization failure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of sandboxed containers on the cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kataconfiguration.openshift.io",
    version = "v1",
    kind = "KataConfig",
    plural = "kataconfigs",
    singular = "kataconfig",
    status = "KataConfigStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"InProgress","type":"string","description":"Status of the installation","jsonPath":".status.conditions[?(@.type=='InProgress')].status"}"#,
    printcolumn = r#"{"name":"Completed","type":"integer","description":"Number of nodes with kata installed","jsonPath":".status.kataNodes.readyNodeCount"}"#,
    printcolumn = r#"{"name":"Total","type":"integer","description":"Total number of kata nodes","jsonPath":".status.kataNodes.nodeCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KataConfigSpec {
    /// Selects the worker nodes that get kata. Absent means every worker node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kata_config_pool_selector: Option<LabelSelector>,
    /// Only install on nodes that Node Feature Discovery labels
    /// `feature.node.kubernetes.io/runtime.kata=true`.
    #[serde(default)]
    pub check_node_eligibility: bool,
    /// CRI-O log level on kata nodes (fatal, panic, error, warn, info, debug, trace).
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Accepted for compatibility with the upstream operator; peer pods are not supported yet.
    #[serde(default)]
    pub enable_peer_pods: bool,
    /// Settings of the `kata` RuntimeClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class: Option<RuntimeClassSettings>,
    /// Admission policy for namespaces without the `kataconfiguration.openshift.io/policy` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_policy: Option<NamespacePolicySettings>,
    /// The node installer used where the Machine Config Operator is not served (vanilla
    /// Kubernetes): a DaemonSet running the kata-deploy image on every kata node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_installer: Option<NodeInstallerSettings>,
}

/// How the node-installer DaemonSet runs (ignored where the Machine Config Operator installs kata).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeInstallerSettings {
    /// The kata-deploy image; defaults to the one of the Kata release this operator pins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `Always`, `IfNotPresent` (default) or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// The Kubernetes distribution, which decides where its containerd configuration lives:
    /// `k8s` (default), `k3s`, `rke2`, `k0s` or `microk8s`. CRI-O is found either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<String>,
    /// Tolerations of the installer pods, e.g. to reach tainted kata nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Resources of the installer container (defaults: requests 50m CPU, 64Mi memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl NodeInstallerSettings {
    /// `distribution`, or `k8s`.
    pub fn distribution(&self) -> &str {
        self.distribution.as_deref().unwrap_or("k8s")
    }
}

/// Which mechanism installs kata on the nodes, chosen from what the API server serves.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Backend {
    /// OpenShift: the Machine Config Operator (RHCOS extension, CRI-O drop-in, a reboot per node).
    MachineConfig,
    /// Kubernetes without the MCO: the node-installer DaemonSet (kata-deploy, no reboot).
    NodeInstaller,
}

impl Backend {
    /// The MCO's API group is served: install through it; otherwise through the installer.
    pub fn for_cluster(machine_config_served: bool) -> Backend {
        if machine_config_served {
            Backend::MachineConfig
        } else {
            Backend::NodeInstaller
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::MachineConfig => "MachineConfig",
            Backend::NodeInstaller => "NodeInstaller",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub fn default_log_level() -> String {
    "info".to_string()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeClassSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead: Option<OverheadSettings>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverheadSettings {
    /// Fixed resources a kata pod's VM costs on top of its containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_fixed: Option<BTreeMap<String, Quantity>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacePolicySettings {
    /// Policy for unlabelled namespaces: require, default, allow or deny.
    #[serde(default = "default_namespace_policy")]
    pub default: String,
}

pub fn default_namespace_policy() -> String {
    "allow".to_string()
}

/// Observed state, recomputed from the cluster on every reconcile.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KataConfigStatus {
    /// Names of the RuntimeClasses this operator created and manages.
    #[serde(default)]
    pub runtime_classes: Vec<String>,
    #[serde(default)]
    pub kata_nodes: KataNodesStatus,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// How kata is installed on this cluster: `MachineConfig` or `NodeInstaller`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
}

/// Node-by-node progress. Every kata-relevant node appears in exactly one list.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KataNodesStatus {
    /// Nodes that carry (or are getting) the kata node role.
    #[serde(default)]
    pub node_count: i32,
    /// Nodes where kata is installed and ready.
    #[serde(default)]
    pub ready_node_count: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installing: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_to_install: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_to_install: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uninstalling: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_to_uninstall: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_to_uninstall: Vec<String>,
}

impl KataConfigSpec {
    /// `spec.runtimeClass.overhead.podFixed`, or the upstream-validated default (250m, 350Mi).
    pub fn pod_fixed_overhead(&self) -> BTreeMap<String, Quantity> {
        self.runtime_class
            .as_ref()
            .and_then(|rc| rc.overhead.as_ref())
            .and_then(|o| o.pod_fixed.clone())
            .unwrap_or_else(default_pod_fixed_overhead)
    }

    /// `spec.namespacePolicy.default`, or `allow`.
    pub fn default_namespace_policy(&self) -> &str {
        self.namespace_policy
            .as_ref()
            .map(|p| p.default.as_str())
            .unwrap_or("allow")
    }
}

pub fn default_pod_fixed_overhead() -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_string(), Quantity("250m".to_string())),
        ("memory".to_string(), Quantity("350Mi".to_string())),
    ])
}

impl KataConfig {
    /// Carries the operator's finalizer: uninstall has not finished.
    pub fn has_finalizer(&self) -> bool {
        self.finalizers()
            .iter()
            .any(|f| f == crate::names::FINALIZER)
    }

    pub fn is_being_deleted(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }
}

/// The one KataConfig the operator acts on: the oldest (creationTimestamp, then name). One being
/// deleted stays active until its uninstall drops our finalizer, so a KataConfig created
/// meanwhile waits its turn; one going away without our finalizer is ignored.
pub fn active_kata_config<'a>(
    all: impl IntoIterator<Item = &'a KataConfig>,
) -> Option<&'a KataConfig> {
    all.into_iter()
        .filter(|kc| !kc.is_being_deleted() || kc.has_finalizer())
        .min_by(|a, b| {
            let key = |k: &KataConfig| {
                (
                    k.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    k.name_any(),
                )
            };
            key(a).cmp(&key(b))
        })
}

/// The active KataConfig unless it is being uninstalled: what admission enforces (its pod
/// webhooks, its RuntimeClasses). During uninstall nothing is in force, so no new pod gets kata.
pub fn kata_config_in_force<'a>(
    all: impl IntoIterator<Item = &'a KataConfig>,
) -> Option<&'a KataConfig> {
    active_kata_config(all).filter(|kc| !kc.is_being_deleted())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn kc(name: &str, created: &str, deleting: bool, finalizer: bool) -> KataConfig {
        let mut k = KataConfig::new(name, KataConfigSpec::default());
        k.metadata = ObjectMeta {
            name: Some(name.into()),
            creation_timestamp: Some(Time(created.parse().expect("ts"))),
            deletion_timestamp: deleting.then(|| Time("2026-01-02T00:00:00Z".parse().expect("ts"))),
            finalizers: finalizer.then(|| vec![crate::names::FINALIZER.to_string()]),
            ..Default::default()
        };
        k
    }

    fn name(k: Option<&KataConfig>) -> Option<&str> {
        k.and_then(|k| k.metadata.name.as_deref())
    }

    #[test]
    fn oldest_kata_config_is_active_then_name_breaks_ties() {
        let a = kc("b-second", "2026-01-01T00:00:01Z", false, true);
        let b = kc("a-first", "2026-01-01T00:00:00Z", false, false);
        let c = kc("a-tie", "2026-01-01T00:00:01Z", false, false);
        assert_eq!(name(active_kata_config([&a, &b, &c])), Some("a-first"));
        assert_eq!(name(active_kata_config([&a, &c])), Some("a-tie"));
        assert_eq!(name(active_kata_config([])), None);
    }

    #[test]
    fn a_deleting_config_stays_active_until_its_finalizer_is_gone_but_is_not_in_force() {
        let old = kc("old", "2026-01-01T00:00:00Z", true, true);
        let new = kc("new", "2026-01-01T00:00:05Z", false, false);
        assert_eq!(name(active_kata_config([&old, &new])), Some("old"));
        assert_eq!(
            name(kata_config_in_force([&old, &new])),
            None,
            "uninstalling"
        );
        let gone = kc("old", "2026-01-01T00:00:00Z", true, false);
        assert_eq!(name(active_kata_config([&gone, &new])), Some("new"));
        assert_eq!(name(kata_config_in_force([&gone, &new])), Some("new"));
    }
}
