//! The `KataConfig` custom resource (`kataconfiguration.openshift.io/v1`, cluster-scoped).
//!
//! Field names follow the upstream Go operator so existing manifests keep working. Free-form
//! strings (`logLevel`, `namespacePolicy.default`) stay `String` here: the CRD schema restricts
//! them with enums, and the reconciler re-validates them so an object that slipped past an older
//! CRD becomes a status condition instead of a deserialization failure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
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
