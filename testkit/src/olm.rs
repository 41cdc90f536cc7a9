//! What OLM v0 does around the operator, for tests: the objects it creates when it installs the
//! CSV (the Deployment from the install strategy, the OperatorCondition and the Role it grants on
//! it) and the ones it deletes when the CSV is deleted. The prometheus-operator CRDs a cluster may
//! or may not have are minimal stand-ins (they serve the kinds; the real ones validate more).

use serde_json::{Value, json};

use kube::CustomResourceExt;
use sandboxed_containers_operator::api::operator_condition::OperatorCondition;
use sandboxed_containers_operator::packaging::{
    METRICS_READER_ROLE, OPERATOR_NAME, PACKAGE, Release, manifests,
};

/// The OperatorCondition OLM creates, named like the CSV.
pub fn operator_condition_name() -> String {
    format!("{PACKAGE}.v{}", Release::CURRENT.version)
}

/// CustomResourceDefinitions of `monitoring.coreos.com/v1` ServiceMonitor and PrometheusRule.
pub fn monitoring_crds() -> Vec<Value> {
    [
        ("servicemonitors", "ServiceMonitor"),
        ("prometheusrules", "PrometheusRule"),
    ]
    .iter()
    .map(|(plural, kind)| {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
            "spec": {
                "group": "monitoring.coreos.com", "scope": "Namespaced",
                "names": {"plural": plural, "kind": kind, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                }}}],
            },
        })
    })
    .collect()
}

/// The OperatorCondition CRD, from the operator's own typed model (`operators.coreos.com/v2`).
pub fn operator_condition_crd() -> Value {
    serde_json::to_value(OperatorCondition::crd()).expect("the CRD serializes")
}

/// The operator's Deployment as OLM creates it from the CSV's install strategy.
pub fn operator_deployment(namespace: &str) -> Value {
    let mut d = serde_json::to_value(manifests::deployment(namespace)).expect("serializes");
    d["apiVersion"] = json!("apps/v1");
    d["kind"] = json!("Deployment");
    d
}

/// The OperatorCondition OLM creates for the CSV, and the Role and RoleBinding it grants the
/// operator's ServiceAccount on it (get/update/patch on that one name), in `namespace`.
pub fn operator_condition_objects(namespace: &str) -> Vec<Value> {
    let name = operator_condition_name();
    vec![
        json!({
            "apiVersion": "operators.coreos.com/v2", "kind": "OperatorCondition",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"deployments": [OPERATOR_NAME], "serviceAccounts": [OPERATOR_NAME]},
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": [{"apiGroups": ["operators.coreos.com"], "resources": ["operatorconditions"],
                       "resourceNames": [name], "verbs": ["get", "update", "patch"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_NAME, "namespace": namespace}],
        }),
    ]
}

/// One object OLM deletes: `(apiVersion, plural, namespace, name)`.
pub type Deleted = (&'static str, &'static str, Option<String>, String);

/// What OLM deletes (itself, or through the CSV's ownerReferences) when the CSV is deleted: the
/// Deployment, its ServiceAccount, the RBAC of `permissions`/`clusterPermissions`, the bundle's
/// Services and metrics-reader ClusterRole/ClusterRoleBinding (labelled `olm.owner`), and the
/// OperatorCondition with its Role and RoleBinding. OLM v0 keeps CRDs (and so custom resources).
pub fn deleted_with_the_csv(namespace: &str) -> Vec<Deleted> {
    let ns = || Some(namespace.to_string());
    let condition = operator_condition_name();
    let rbac = "rbac.authorization.k8s.io/v1";
    vec![
        ("apps/v1", "deployments", ns(), OPERATOR_NAME.into()),
        ("v1", "serviceaccounts", ns(), OPERATOR_NAME.into()),
        (rbac, "clusterroles", None, OPERATOR_NAME.into()),
        (rbac, "clusterrolebindings", None, OPERATOR_NAME.into()),
        (rbac, "roles", ns(), OPERATOR_NAME.into()),
        (rbac, "rolebindings", ns(), OPERATOR_NAME.into()),
        (
            "v1",
            "services",
            ns(),
            "sandboxed-containers-operator-webhook".into(),
        ),
        (
            "v1",
            "services",
            ns(),
            "sandboxed-containers-operator-metrics".into(),
        ),
        (rbac, "clusterroles", None, METRICS_READER_ROLE.into()),
        (
            rbac,
            "clusterrolebindings",
            None,
            METRICS_READER_ROLE.into(),
        ),
        (
            "operators.coreos.com/v2",
            "operatorconditions",
            ns(),
            condition.clone(),
        ),
        (rbac, "roles", ns(), condition.clone()),
        (rbac, "rolebindings", ns(), condition),
    ]
}

/// What OLM creates for the CSV in `namespace`, besides the operator's own RBAC (which
/// `FakeApi::grant_operator_rbac` and `EnvTest::operator_client` apply): the ServiceAccount, the
/// Deployment, the bundle's Services and metrics-reader ClusterRole/ClusterRoleBinding, and the
/// OperatorCondition with OLM's Role and RoleBinding on it. Its CRD must be served first
/// ([`operator_condition_crd`]).
pub fn installed_objects(namespace: &str) -> Vec<Value> {
    let mut out = vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": OPERATOR_NAME, "namespace": namespace}}),
        operator_deployment(namespace),
    ];
    out.extend(bundle_objects(namespace));
    out.extend(operator_condition_objects(namespace));
    out
}

/// The bundle's cluster-scoped objects and Services as OLM creates them (metrics-reader
/// ClusterRole and its ClusterRoleBinding, webhook and metrics Services), in `namespace`.
pub fn bundle_objects(namespace: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for svc in manifests::services(Some(namespace)) {
        let mut v = serde_json::to_value(svc).expect("serializes");
        v["apiVersion"] = json!("v1");
        v["kind"] = json!("Service");
        out.push(v);
    }
    let mut role =
        serde_json::to_value(manifests::metrics_reader_cluster_role()).expect("serializes");
    role["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
    role["kind"] = json!("ClusterRole");
    out.push(role);
    out.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": METRICS_READER_ROLE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": METRICS_READER_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "openshift-monitoring"}],
    }));
    out
}
