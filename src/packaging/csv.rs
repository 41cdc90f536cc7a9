//! The ClusterServiceVersion: OperatorHub metadata, the owned CRD with descriptors, native API
//! dependencies, install modes, the upgrade edge and the install strategy (the Deployment and
//! RBAC of `manifests` / `rbac`). Follows `reference/olm.md` sections 2, 4, 5 and 6.

use base64::Engine as _;
use serde_json::{Value, json};

use super::identity::{IMAGE, MIN_KUBE_VERSION, OPERATOR_NAME, PACKAGE, REPOSITORY, Release};
use super::manifests::POD_SECURITY_ENFORCE;
use super::manifests::deployment_spec;
use super::rbac::{Scope, installer_policy_rules, policy_rules};
use crate::api::NamespacePolicy;
use crate::names::{DEFAULT_OPERATOR_NAMESPACE, GROUP, LOG_LEVELS, NODE_INSTALLER};

const ICON_SVG: &str = include_str!("icon.svg");

/// Install modes. Only OwnNamespace: the operator's namespaced grants (Secrets, Leases) must stay
/// in its own namespace, and OLM turns `permissions` into ClusterRoles under AllNamespaces and
/// copies them into target namespaces under Single/MultiNamespace. The operator watches only
/// cluster-scoped objects plus pods and namespaces cluster-wide, so nothing is lost.
pub const INSTALL_MODES: [(&str, bool); 4] = [
    ("OwnNamespace", true),
    ("SingleNamespace", false),
    ("MultiNamespace", false),
    ("AllNamespaces", false),
];

/// `features.operators.openshift.io/*` with honest values (see docs/packaging.md for why each).
pub const FEATURES: [(&str, &str); 10] = [
    // relatedImages are tags, not digests, until the release pipeline pins them.
    ("disconnected", "false"),
    // rustls uses `ring`, which is not a FIPS-validated module.
    ("fips-compliant", "false"),
    // The operator only talks to the API server and passes no proxy settings to operands.
    ("proxy-aware", "false"),
    // The webhook and metrics TLS settings do not follow the cluster TLS security profile.
    ("tls-profiles", "false"),
    ("token-auth-aws", "false"),
    ("token-auth-azure", "false"),
    ("token-auth-gcp", "false"),
    ("cnf", "false"),
    ("cni", "false"),
    ("csi", "false"),
];

/// The KataConfig offered in the console's "Create" form and as alm-example.
pub fn example_kataconfig() -> Value {
    json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "KataConfig",
        "metadata": {"name": "example-kataconfig"},
        "spec": {
            "checkNodeEligibility": false,
            "enablePeerPods": false,
            "logLevel": "info",
        },
    })
}

fn descriptor(path: &str, name: &str, description: &str, x: &[String]) -> Value {
    json!({"path": path, "displayName": name, "description": description, "x-descriptors": x})
}

fn xs(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn spec_descriptors() -> Vec<Value> {
    let select = |values: &[&str]| -> Vec<String> {
        values
            .iter()
            .map(|v| format!("urn:alm:descriptor:com.tectonic.ui:select:{v}"))
            .collect()
    };
    vec![
        descriptor(
            "kataConfigPoolSelector",
            "Node selector",
            "Worker nodes that get Kata Containers. Empty: every worker node.",
            &xs(&["urn:alm:descriptor:com.tectonic.ui:selector:core:v1:Node"]),
        ),
        descriptor(
            "checkNodeEligibility",
            "Check node eligibility",
            "Only install on nodes that Node Feature Discovery labels feature.node.kubernetes.io/runtime.kata=true.",
            &xs(&["urn:alm:descriptor:com.tectonic.ui:booleanSwitch"]),
        ),
        descriptor(
            "logLevel",
            "CRI-O log level",
            "Log level of CRI-O on the kata nodes.",
            &select(&LOG_LEVELS),
        ),
        descriptor(
            "enablePeerPods",
            "Enable peer pods",
            "Accepted for compatibility; peer pods are not supported yet.",
            &xs(&[
                "urn:alm:descriptor:com.tectonic.ui:booleanSwitch",
                "urn:alm:descriptor:com.tectonic.ui:advanced",
            ]),
        ),
        descriptor(
            "runtimeClass.overhead.podFixed",
            "Pod overhead",
            "Fixed resources each kata pod's VM costs (RuntimeClass overhead.podFixed).",
            &xs(&["urn:alm:descriptor:com.tectonic.ui:advanced"]),
        ),
        descriptor(
            "namespacePolicy.default",
            "Default namespace policy",
            "Policy for namespaces without the kataconfiguration.openshift.io/policy label.",
            &select(&NamespacePolicy::VALUES),
        ),
    ]
}

fn status_descriptors() -> Vec<Value> {
    vec![
        descriptor(
            "conditions",
            "Conditions",
            "InProgress, Ready and Degraded.",
            &xs(&["urn:alm:descriptor:io.kubernetes.conditions"]),
        ),
        descriptor(
            "runtimeClasses",
            "RuntimeClasses",
            "RuntimeClasses created for kata.",
            &[],
        ),
        descriptor(
            "kataNodes.nodeCount",
            "Kata nodes",
            "Nodes selected for kata.",
            &xs(&["urn:alm:descriptor:text"]),
        ),
        descriptor(
            "kataNodes.readyNodeCount",
            "Ready kata nodes",
            "Nodes where kata is installed.",
            &xs(&["urn:alm:descriptor:text"]),
        ),
        descriptor(
            "kataNodes.failedToInstall",
            "Failed to install",
            "Nodes the Machine Config Operator reports Degraded while installing.",
            &[],
        ),
    ]
}

const DESCRIPTION: &str = r#"OpenShift sandboxed containers runs each pod in its own lightweight virtual machine with
[Kata Containers](https://katacontainers.io), adding a second isolation boundary for untrusted
or sensitive workloads while keeping the Kubernetes pod experience.

Create one `KataConfig` and the operator installs kata on the selected nodes the way the cluster
allows, and reports which in `status.backend`:

* **OpenShift** (the Machine Config Operator is served): it enables the `kata-containers` RHCOS
  extension and a CRI-O runtime handler through MachineConfigs on the selected worker nodes
  (pool `kata-oc`; the `master` pool on three-node and single-node clusters). Nodes reboot once
  while the MCO rolls out.
* **Kubernetes without the MCO** (containerd or CRI-O; k3s, rke2, k0s, microk8s): it runs the
  kata-deploy image of a pinned Kata release in the `kata-node-installer` DaemonSet on the
  selected nodes (no reboot), and removes it node by node on uninstall.

Either way it creates the `kata` RuntimeClass with pod overhead and node scheduling, reports
progress node by node in the KataConfig status, optionally defaults pods to kata per namespace
(label `kataconfiguration.openshift.io/policy`: `require`, `default`, `allow`, `deny`), and
uninstalls cleanly when the KataConfig is deleted, once no kata pod is left.

Run a pod in a VM with `spec.runtimeClassName: kata`.

The operator exports Prometheus metrics and ships alerts for failed installations, degraded
nodes, webhook errors and an expiring webhook certificate.
"#;

fn annotations(release: &Release) -> anyhow::Result<Value> {
    let mut a = json!({
        "alm-examples": serde_json::to_string_pretty(&json!([example_kataconfig()]))?,
        "capabilities": "Full Lifecycle",
        "categories": "OpenShift Optional, Security",
        "certified": "false",
        "containerImage": IMAGE,
        "createdAt": release.created_at,
        "description": "Runs pods in lightweight virtual machines with Kata Containers for stronger workload isolation.",
        "operatorframework.io/suggested-namespace": DEFAULT_OPERATOR_NAMESPACE,
        // The node installer (clusters without the MCO) mounts host paths in this namespace.
        "operatorframework.io/suggested-namespace-template": serde_json::to_string(&json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": DEFAULT_OPERATOR_NAMESPACE, "labels": {
                POD_SECURITY_ENFORCE: "privileged",
                "openshift.io/cluster-monitoring": "true",
            }},
        }))?,
        "operatorframework.io/cluster-monitoring": "true",
        "operatorframework.io/initialization-resource": serde_json::to_string(&example_kataconfig())?,
        "operators.openshift.io/valid-subscription": serde_json::to_string(&["OpenShift Container Platform", "OpenShift Platform Plus"])?,
        "repository": REPOSITORY,
        "support": "Red Hat",
    });
    for (feature, value) in FEATURES {
        a[format!("features.operators.openshift.io/{feature}")] = json!(value);
    }
    if let Some(range) = release.skip_range() {
        a["olm.skipRange"] = json!(range);
    }
    Ok(a)
}

/// The CSV for a release.
pub fn cluster_service_version(release: &Release) -> anyhow::Result<Value> {
    let icon = base64::engine::general_purpose::STANDARD.encode(ICON_SVG.trim_end());
    let mut spec = json!({
        "displayName": "OpenShift sandboxed containers (Rust)",
        "description": DESCRIPTION,
        "version": release.version,
        "minKubeVersion": MIN_KUBE_VERSION,
        "maturity": "alpha",
        "keywords": ["sandboxed-containers", "kata", "kata-containers", "virtual machine", "isolation", "runtimeclass", "security"],
        "maintainers": [{"name": "Red Hat", "email": "support@redhat.com"}],
        "provider": {"name": "Red Hat", "url": "https://www.redhat.com"},
        "links": [
            {"name": "Source code", "url": REPOSITORY},
            {"name": "Documentation", "url": format!("{REPOSITORY}/blob/main/README.md")},
            {"name": "Kata Containers", "url": "https://katacontainers.io"},
        ],
        "icon": [{"base64data": icon, "mediatype": "image/svg+xml"}],
        "installModes": INSTALL_MODES.iter().map(|(t, s)| json!({"type": t, "supported": s})).collect::<Vec<_>>(),
        "customresourcedefinitions": {"owned": [{
            "name": format!("kataconfigs.{GROUP}"),
            "version": "v1",
            "kind": "KataConfig",
            "displayName": "KataConfig",
            "description": "Installs Kata Containers on the selected nodes. At most one per cluster.",
            "resources": [
                {"kind": "MachineConfig", "name": "machineconfigs", "version": "v1"},
                {"kind": "MachineConfigPool", "name": "machineconfigpools", "version": "v1"},
                {"kind": "ContainerRuntimeConfig", "name": "containerruntimeconfigs", "version": "v1"},
                {"kind": "RuntimeClass", "name": "runtimeclasses", "version": "v1"},
            ],
            "specDescriptors": spec_descriptors(),
            "statusDescriptors": status_descriptors(),
        }]},
        // No `nativeAPIs`: OLM would keep the CSV Pending on clusters without the Machine Config
        // Operator, where the node installer backend applies. Nor required CRDs: the operator
        // chooses its backend from discovery at run time.
        "install": {
            "strategy": "deployment",
            "spec": {
                "deployments": [{
                    "name": OPERATOR_NAME,
                    "label": {"app.kubernetes.io/name": OPERATOR_NAME},
                    "spec": serde_json::to_value(deployment_spec())?,
                }],
                "clusterPermissions": [
                    {
                        "serviceAccountName": OPERATOR_NAME,
                        "rules": serde_json::to_value(policy_rules(Scope::Cluster))?,
                    },
                    {
                        "serviceAccountName": NODE_INSTALLER,
                        "rules": serde_json::to_value(installer_policy_rules())?,
                    },
                ],
                "permissions": [{
                    "serviceAccountName": OPERATOR_NAME,
                    "rules": serde_json::to_value(policy_rules(Scope::OperatorNamespace))?,
                }],
            },
        },
        "relatedImages": [{"name": OPERATOR_NAME, "image": IMAGE}],
    });
    if let Some(replaces) = release.replaces() {
        spec["replaces"] = json!(replaces);
    }
    Ok(json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": format!("{PACKAGE}.v{}", release.version),
            "annotations": annotations(release)?,
            "labels": {
                "operatorframework.io/arch.amd64": "supported",
                "operatorframework.io/os.linux": "supported",
            },
        },
        "spec": spec,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_release_has_no_upgrade_edge() {
        let csv = cluster_service_version(&Release::CURRENT).expect("csv");
        assert_eq!(
            csv["metadata"]["name"],
            format!(
                "sandboxed-containers-operator.v{}",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(csv["spec"].get("replaces").is_none());
        assert!(
            csv["metadata"]["annotations"]
                .get("olm.skipRange")
                .is_none()
        );
    }

    #[test]
    fn next_release_replaces_its_predecessor_and_skips_the_range() {
        let next = Release {
            version: "0.3.0",
            previous: Some("0.2.1"),
            skip_floor: Some("0.1.0"),
            created_at: "2027-01-01T00:00:00Z",
        };
        let csv = cluster_service_version(&next).expect("csv");
        assert_eq!(
            csv["spec"]["replaces"],
            "sandboxed-containers-operator.v0.2.1"
        );
        assert_eq!(
            csv["metadata"]["annotations"]["olm.skipRange"],
            ">=0.1.0 <0.3.0"
        );
        assert_eq!(csv["spec"]["version"], "0.3.0");
    }

    #[test]
    fn alm_example_is_the_initialization_resource() {
        let csv = cluster_service_version(&Release::CURRENT).expect("csv");
        let ann = &csv["metadata"]["annotations"];
        let examples: Value =
            serde_json::from_str(ann["alm-examples"].as_str().expect("string")).expect("json");
        let init: Value = serde_json::from_str(
            ann["operatorframework.io/initialization-resource"]
                .as_str()
                .expect("string"),
        )
        .expect("json");
        assert_eq!(examples[0], init);
    }

    #[test]
    fn no_webhook_definitions_the_operator_registers_its_own() {
        let csv = cluster_service_version(&Release::CURRENT).expect("csv");
        assert!(csv["spec"].get("webhookdefinitions").is_none());
    }
}
