//! The operator's RBAC as one table. Every API call the operator makes must be covered by a row
//! here and every row must be used: the ClusterRole, the Role, the CSV `clusterPermissions` /
//! `permissions` and the plain manifests are all generated from [`rules`], so this is the single
//! place to edit when the operator starts (or stops) calling an API.

use k8s_openapi::api::rbac::v1::PolicyRule;

/// Where a grant applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// ClusterRole bound cluster-wide (cluster-scoped resources, or namespaced ones the operator
    /// must see in every namespace).
    Cluster,
    /// Role bound in the operator's own namespace only (`POD_NAMESPACE`).
    OperatorNamespace,
    /// Granted by OLM, not by us: the Role OLM creates for the operator's OperatorCondition
    /// (get/update/patch on that one `operatorconditions` name in the operator namespace). Not
    /// rendered into the CSV or `deploy/`; listed so the calls made under it are accounted for.
    GrantedByOlm,
}

/// One grant: these verbs on this resource (a `resource/subresource` form for subresources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiAccess {
    /// API group; `""` is the core group.
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
    /// Which part of the operator needs it, and for what.
    pub why: &'static str,
}

/// Watched through reflectors: list + watch, never a per-object get.
const READ: &[&str] = &["list", "watch"];
/// Kept by server-side apply, removed by delete. The API server authorizes an apply as `patch`,
/// and an apply that creates its object once more as `create`.
const OWNED: &[&str] = &["list", "watch", "create", "patch", "delete"];
/// Applied and deleted, never read back.
const APPLIED: &[&str] = &["create", "patch", "delete"];
/// Applied with an ownerReference, never deleted by us (the garbage collector does): `delete` is
/// what `OwnerReferencesPermissionEnforcement` (on by default in OpenShift) asks of whoever adds
/// an ownerReference to an existing object, e.g. one applied from `deploy/monitoring.yaml`.
const ADOPTED: &[&str] = &["create", "patch", "delete"];
/// Held only because the Prometheus Role grants it: the API server refuses to let anyone create a
/// Role granting more than they hold themselves (RBAC escalation check).
const PROMETHEUS_DISCOVERY: &str = "held so the operator may create the Prometheus Role that grants it (RBAC escalation check); never called";
const MONITORING: &str = "the ServiceMonitor, PrometheusRule and Prometheus Role/RoleBinding the operator keeps (owned by its Deployment) while monitoring.coreos.com/v1 is served";

static RULES: &[ApiAccess] = &[
    ApiAccess {
        group: "kataconfiguration.openshift.io",
        resource: "kataconfigs",
        verbs: &["get", "list", "watch", "patch"],
        scope: Scope::Cluster,
        why: "reconciler watches KataConfig and adds/removes its finalizer; webhook lists existing ones; the API server only lets who may `get` KataConfigs write a ValidatingAdmissionPolicy whose paramKind is KataConfig, and its binding's paramRef",
    },
    ApiAccess {
        group: "kataconfiguration.openshift.io",
        resource: "kataconfigs/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        why: "reconciler reports progress and conditions",
    },
    ApiAccess {
        group: "kataconfiguration.openshift.io",
        resource: "kataconfigs/finalizers",
        verbs: &["update"],
        scope: Scope::Cluster,
        why: "the RuntimeClass's ownerReference has blockOwnerDeletion, which OwnerReferencesPermissionEnforcement (on by default in OpenShift) only allows to who may update the owner's finalizers",
    },
    ApiAccess {
        group: "",
        resource: "nodes",
        verbs: &["list", "watch", "patch"],
        scope: Scope::Cluster,
        why: "node selection and progress; the kata-oc role label is added/removed by patch",
    },
    ApiAccess {
        group: "machineconfiguration.openshift.io",
        resource: "machineconfigs",
        verbs: OWNED,
        scope: Scope::Cluster,
        why: "extension and CRI-O drop-in MachineConfigs",
    },
    ApiAccess {
        group: "machineconfiguration.openshift.io",
        resource: "machineconfigpools",
        verbs: OWNED,
        scope: Scope::Cluster,
        why: "the kata-oc pool and its rollout status",
    },
    ApiAccess {
        group: "machineconfiguration.openshift.io",
        resource: "containerruntimeconfigs",
        verbs: OWNED,
        scope: Scope::Cluster,
        why: "CRI-O log level for the kata pool",
    },
    ApiAccess {
        group: "node.k8s.io",
        resource: "runtimeclasses",
        verbs: OWNED,
        scope: Scope::Cluster,
        why: "the kata RuntimeClass; the pod webhook reads its overhead and scheduling",
    },
    ApiAccess {
        group: "",
        resource: "pods",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        why: "uninstall is blocked while pods use a kata RuntimeClass",
    },
    ApiAccess {
        group: "",
        resource: "namespaces",
        verbs: READ,
        scope: Scope::Cluster,
        why: "namespace policy label for the pod webhooks",
    },
    ApiAccess {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        scope: Scope::Cluster,
        why: "Events on KataConfig state transitions (cluster-scoped objects record into `default`)",
    },
    ApiAccess {
        group: "admissionregistration.k8s.io",
        resource: "validatingwebhookconfigurations",
        verbs: APPLIED,
        scope: Scope::Cluster,
        why: "the operator registers its own webhooks, keeps caBundle current, and removes the pod webhooks when no KataConfig is active",
    },
    ApiAccess {
        group: "admissionregistration.k8s.io",
        resource: "mutatingwebhookconfigurations",
        verbs: APPLIED,
        scope: Scope::Cluster,
        why: "the operator registers its own webhooks, keeps caBundle current, and removes the pod webhooks when no KataConfig is active",
    },
    ApiAccess {
        group: "admissionregistration.k8s.io",
        resource: "validatingadmissionpolicies",
        verbs: OWNED,
        scope: Scope::Cluster,
        why: "the namespace gate inside the API server (kept while a KataConfig is in force, watched to repair edits, removed with it)",
    },
    ApiAccess {
        group: "admissionregistration.k8s.io",
        resource: "validatingadmissionpolicybindings",
        verbs: OWNED,
        scope: Scope::Cluster,
        why: "binds the namespace gate to the active KataConfig as its parameters (watched to repair edits, removed with it)",
    },
    ApiAccess {
        group: "apiextensions.k8s.io",
        resource: "customresourcedefinitions",
        verbs: &["get"],
        scope: Scope::Cluster,
        why: "the KataConfig CRD is the owner of the webhook configurations (they go with it)",
    },
    ApiAccess {
        group: "authentication.k8s.io",
        resource: "tokenreviews",
        verbs: &["create"],
        scope: Scope::Cluster,
        why: "metrics endpoint authenticates bearer tokens",
    },
    ApiAccess {
        group: "authorization.k8s.io",
        resource: "subjectaccessreviews",
        verbs: &["create"],
        scope: Scope::Cluster,
        why: "metrics endpoint authorizes GET /metrics",
    },
    ApiAccess {
        group: "apps",
        resource: "daemonsets",
        verbs: OWNED,
        scope: Scope::OperatorNamespace,
        why: "the kata-node-installer DaemonSet where the Machine Config Operator is not served",
    },
    ApiAccess {
        group: "",
        resource: "configmaps",
        verbs: OWNED,
        scope: Scope::OperatorNamespace,
        why: "the node installer's custom runtimes (the kata handler)",
    },
    ApiAccess {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        scope: Scope::OperatorNamespace,
        why: "leader election",
    },
    ApiAccess {
        group: "",
        resource: "secrets",
        verbs: &["get", "list", "watch", "create", "update"],
        scope: Scope::OperatorNamespace,
        why: "the webhook CA and serving certificate",
    },
    ApiAccess {
        group: "apps",
        resource: "deployments",
        verbs: &["get"],
        scope: Scope::OperatorNamespace,
        why: "the operator's own Deployment (--owner-deployment) is the owner of the monitoring objects it keeps, so they go with it",
    },
    ApiAccess {
        group: "monitoring.coreos.com",
        resource: "servicemonitors",
        verbs: ADOPTED,
        scope: Scope::OperatorNamespace,
        why: MONITORING,
    },
    ApiAccess {
        group: "monitoring.coreos.com",
        resource: "prometheusrules",
        verbs: ADOPTED,
        scope: Scope::OperatorNamespace,
        why: MONITORING,
    },
    ApiAccess {
        group: "rbac.authorization.k8s.io",
        resource: "roles",
        verbs: ADOPTED,
        scope: Scope::OperatorNamespace,
        why: MONITORING,
    },
    ApiAccess {
        group: "rbac.authorization.k8s.io",
        resource: "rolebindings",
        verbs: ADOPTED,
        scope: Scope::OperatorNamespace,
        why: MONITORING,
    },
    ApiAccess {
        group: "",
        resource: "services",
        verbs: READ,
        scope: Scope::OperatorNamespace,
        why: PROMETHEUS_DISCOVERY,
    },
    ApiAccess {
        group: "",
        resource: "endpoints",
        verbs: READ,
        scope: Scope::OperatorNamespace,
        why: PROMETHEUS_DISCOVERY,
    },
    ApiAccess {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: READ,
        scope: Scope::OperatorNamespace,
        why: PROMETHEUS_DISCOVERY,
    },
    ApiAccess {
        group: "operators.coreos.com",
        resource: "operatorconditions",
        verbs: &["get", "patch"],
        scope: Scope::GrantedByOlm,
        why: "Upgradeable on the OperatorCondition OLM names in OPERATOR_CONDITION_NAME (read, then spec.conditions merge-patched)",
    },
];

/// Every grant the operator has.
pub fn rules() -> &'static [ApiAccess] {
    RULES
}

/// What the node installer (the kata-deploy image, ServiceAccount `kata-node-installer` in the
/// operator namespace) needs, as kata-deploy's own chart grants it: its node's labels, and the
/// DaemonSets that tell a rolling restart from an uninstall. Shipped as static RBAC (CSV
/// `clusterPermissions`, `deploy/`), so the operator never needs to grant what it does not hold.
pub static INSTALLER_RULES: &[ApiAccess] = &[
    ApiAccess {
        group: "",
        resource: "nodes",
        verbs: &["get", "patch"],
        scope: Scope::Cluster,
        why: "label its node katacontainers.io/kata-runtime, and remove the label on cleanup",
    },
    ApiAccess {
        group: "apps",
        resource: "daemonsets",
        verbs: &["get", "list", "watch"],
        scope: Scope::Cluster,
        why: "clean up only once no DaemonSet selects its node any more",
    },
];

/// The installer's rules as PolicyRules.
pub fn installer_policy_rules() -> Vec<PolicyRule> {
    INSTALLER_RULES
        .iter()
        .map(|r| PolicyRule {
            api_groups: Some(vec![r.group.to_string()]),
            resources: Some(vec![r.resource.to_string()]),
            verbs: r.verbs.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        })
        .collect()
}

/// Whether the generated RBAC lets the operator make this request. `in_operator_namespace` is
/// true for a namespaced request inside the operator's own namespace; cluster-scoped requests,
/// requests across all namespaces and requests in any other namespace pass `false`. Cluster
/// grants also cover the operator's namespace (a ClusterRoleBinding applies everywhere).
pub fn allows(group: &str, resource: &str, verb: &str, in_operator_namespace: bool) -> bool {
    RULES.iter().any(|r| {
        r.group == group
            && r.resource == resource
            && r.verbs.contains(&verb)
            && (r.scope == Scope::Cluster || in_operator_namespace)
    })
}

/// One request the operator made (as an API request log records it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiCall {
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub verb: String,
    /// Namespaced request inside the operator's own namespace.
    pub in_operator_namespace: bool,
}

/// Calls the RBAC does not allow, and grants (`group/resource verb`) no call used.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub missing: Vec<ApiCall>,
    pub unused: Vec<String>,
}

/// Compares the calls the operator made with the table, both ways: every call must be allowed
/// and every granted verb must have been used by some call.
pub fn coverage(calls: &[ApiCall]) -> Coverage {
    let mut missing: Vec<ApiCall> = calls
        .iter()
        .filter(|c| !allows(&c.group, &c.resource, &c.verb, c.in_operator_namespace))
        .cloned()
        .collect();
    missing.sort();
    missing.dedup();
    let unused = RULES
        .iter()
        .flat_map(|r| r.verbs.iter().map(move |v| (r, *v)))
        .filter(|(r, v)| {
            !calls
                .iter()
                .any(|c| c.group == r.group && c.resource == r.resource && c.verb == *v)
        })
        .map(|(r, v)| {
            let group = if r.group.is_empty() { "core" } else { r.group };
            format!("{group}/{} {v}", r.resource)
        })
        .collect();
    Coverage { missing, unused }
}

/// Rules for one scope, one PolicyRule per table row (so a grant maps back to its reason).
pub fn policy_rules(scope: Scope) -> Vec<PolicyRule> {
    RULES
        .iter()
        .filter(|r| r.scope == scope)
        .map(|r| PolicyRule {
            api_groups: Some(vec![r.group.to_string()]),
            resources: Some(vec![r.resource.to_string()]),
            verbs: r.verbs.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        })
        .collect()
}

/// The ClusterRole Prometheus needs to scrape the authenticated metrics endpoint.
pub fn metrics_reader_rules() -> Vec<PolicyRule> {
    vec![PolicyRule {
        non_resource_urls: Some(vec!["/metrics".to_string()]),
        verbs: vec!["get".to_string()],
        ..Default::default()
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_wildcards_anywhere() {
        for r in rules() {
            assert!(
                !r.group.contains('*') && !r.resource.contains('*'),
                "wildcard in {r:?}"
            );
            assert!(!r.verbs.contains(&"*"), "wildcard verb in {r:?}");
            assert!(!r.verbs.is_empty(), "no verbs in {r:?}");
        }
    }

    #[test]
    fn secrets_are_only_granted_in_the_operator_namespace() {
        for r in rules().iter().filter(|r| r.resource == "secrets") {
            assert_eq!(r.scope, Scope::OperatorNamespace, "{r:?}");
        }
        assert!(allows("", "secrets", "get", true));
        assert!(!allows("", "secrets", "get", false));
        assert!(!allows("", "secrets", "delete", true));
    }

    #[test]
    fn nodes_are_only_read_and_patched() {
        let nodes: Vec<_> = rules().iter().filter(|r| r.resource == "nodes").collect();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].verbs, ["list", "watch", "patch"]);
        for verb in ["update", "create", "delete", "deletecollection"] {
            assert!(!allows("", "nodes", verb, false), "nodes {verb}");
        }
    }

    #[test]
    fn cannot_create_or_change_crds() {
        for verb in ["create", "patch", "update", "delete"] {
            assert!(!allows(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                verb,
                false
            ));
        }
    }

    #[test]
    fn one_row_per_resource_and_no_duplicate_verbs() {
        let mut seen = std::collections::BTreeSet::new();
        for r in rules() {
            assert!(
                seen.insert((r.group, r.resource)),
                "duplicate row for {}/{}",
                r.group,
                r.resource
            );
            let mut verbs = r.verbs.to_vec();
            verbs.sort_unstable();
            verbs.dedup();
            assert_eq!(verbs.len(), r.verbs.len(), "duplicate verb in {r:?}");
        }
    }

    fn call(group: &str, resource: &str, verb: &str, ns: bool) -> ApiCall {
        ApiCall {
            group: group.into(),
            resource: resource.into(),
            verb: verb.into(),
            in_operator_namespace: ns,
        }
    }

    #[test]
    fn coverage_reports_missing_calls_and_unused_grants() {
        // Every granted verb used once: nothing missing, nothing unused.
        let all: Vec<ApiCall> = rules()
            .iter()
            .flat_map(|r| {
                r.verbs
                    .iter()
                    .map(move |v| call(r.group, r.resource, v, r.scope != Scope::Cluster))
            })
            .collect();
        assert_eq!(coverage(&all), Coverage::default());

        let mut calls = all.clone();
        calls.retain(|c| !(c.resource == "nodes" && c.verb == "patch"));
        calls.push(call("", "secrets", "get", false));
        calls.push(call("", "persistentvolumes", "list", true));
        let cov = coverage(&calls);
        assert_eq!(
            cov.missing,
            [
                call("", "persistentvolumes", "list", true),
                call("", "secrets", "get", false)
            ]
        );
        assert_eq!(cov.unused, ["core/nodes patch"]);
    }

    #[test]
    fn policy_rules_reproduce_the_table() {
        let cluster = policy_rules(Scope::Cluster);
        let ns = policy_rules(Scope::OperatorNamespace);
        let olm = policy_rules(Scope::GrantedByOlm);
        assert_eq!(cluster.len() + ns.len() + olm.len(), rules().len());
        for rule in cluster.iter().chain(&ns) {
            let group = &rule.api_groups.as_deref().unwrap_or_default()[0];
            let resource = &rule.resources.as_deref().unwrap_or_default()[0];
            for verb in &rule.verbs {
                assert!(allows(group, resource, verb, true));
            }
        }
        assert!(
            ns.iter()
                .any(|r| r.resources == Some(vec!["leases".into()]))
        );
    }

    #[test]
    fn operator_conditions_are_only_what_olm_grants_and_never_rendered() {
        // OLM's Role: get/update/patch on the one OperatorCondition, in the operator namespace.
        let rows: Vec<_> = rules()
            .iter()
            .filter(|r| r.resource == "operatorconditions")
            .collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].scope, Scope::GrantedByOlm);
        for verb in rows[0].verbs {
            assert!(["get", "update", "patch"].contains(verb), "{verb}");
            assert!(allows(
                "operators.coreos.com",
                "operatorconditions",
                verb,
                true
            ));
            assert!(!allows(
                "operators.coreos.com",
                "operatorconditions",
                verb,
                false
            ));
        }
        for scope in [Scope::Cluster, Scope::OperatorNamespace] {
            assert!(
                policy_rules(scope)
                    .iter()
                    .all(|r| r.api_groups != Some(vec!["operators.coreos.com".to_string()]))
            );
        }
    }
}
