//! Every externally observable name of the contract (`DESIGN.md`) in one place, so tests and
//! builders cannot drift apart.

pub const GROUP: &str = "kataconfiguration.openshift.io";
pub const FINALIZER: &str = "kataconfiguration.openshift.io/finalizer";
/// Field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "sandboxed-containers-operator";
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "openshift-sandboxed-containers-operator";

pub const WORKER_ROLE_LABEL: &str = "node-role.kubernetes.io/worker";
pub const MASTER_ROLE_LABEL: &str = "node-role.kubernetes.io/master";
pub const CONTROL_PLANE_ROLE_LABEL: &str = "node-role.kubernetes.io/control-plane";
pub const KATA_ROLE_LABEL: &str = "node-role.kubernetes.io/kata-oc";
pub const NFD_KATA_LABEL: &str = "feature.node.kubernetes.io/runtime.kata";

pub const KATA_POOL: &str = "kata-oc";
pub const MASTER_POOL: &str = "master";
pub const WORKER_POOL: &str = "worker";
pub const POOL_LABEL_PREFIX: &str = "pools.operator.machineconfiguration.openshift.io/";
pub const MC_ROLE_LABEL: &str = "machineconfiguration.openshift.io/role";

pub const EXTENSION_MC: &str = "50-enable-sandboxed-containers-extension";
pub const CRIO_DROPIN_MC: &str = "50-kata-crio-dropin";
pub const KATA_EXTENSION: &str = "kata-containers";
pub const CRIO_DROPIN_PATH: &str = "/etc/crio/crio.conf.d/50-kata";
pub const IGNITION_VERSION: &str = "3.2.0";
pub const CONTAINER_RUNTIME_CONFIG: &str = "kata-crio-config";

/// Where the MCO is not served: the node-installer DaemonSet and its ServiceAccount (operator
/// namespace).
pub const NODE_INSTALLER: &str = "kata-node-installer";
/// The label the installer (kata-deploy) sets on a node once kata is usable there (`true`).
pub const KATA_RUNTIME_LABEL: &str = "katacontainers.io/kata-runtime";

pub const RUNTIME_CLASS: &str = "kata";
pub const RUNTIME_HANDLER: &str = "kata";

/// MCO node annotations.
pub const MCO_CURRENT_CONFIG: &str = "machineconfiguration.openshift.io/currentConfig";
pub const MCO_DESIRED_CONFIG: &str = "machineconfiguration.openshift.io/desiredConfig";
pub const MCO_STATE: &str = "machineconfiguration.openshift.io/state";
pub const MCO_REASON: &str = "machineconfiguration.openshift.io/reason";

/// The ValidatingAdmissionPolicy (and its binding) that holds the namespace policy inside the
/// API server.
pub const NAMESPACE_POLICY: &str = "sandboxed-containers-operator-namespace-policy";

/// Namespace label that selects the admission policy for kata pods.
pub const NAMESPACE_POLICY_LABEL: &str = "kataconfiguration.openshift.io/policy";
/// Label put on every object the operator creates, so they can be listed and cleaned up.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "sandboxed-containers-operator";

pub const WEBHOOK_PORT: u16 = 9443;
pub const METRICS_PORT: u16 = 8443;
pub const HEALTH_PORT: u16 = 8081;
pub const VALIDATE_KATACONFIG_PATH: &str = "/validate-kataconfig";
pub const MUTATE_POD_PATH: &str = "/mutate-pod";
pub const VALIDATE_POD_PATH: &str = "/validate-pod";

/// The CRI-O levels `spec.logLevel` accepts.
pub const LOG_LEVELS: [&str; 7] = ["fatal", "panic", "error", "warn", "info", "debug", "trace"];
