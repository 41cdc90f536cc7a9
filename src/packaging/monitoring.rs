//! ServiceMonitor and PrometheusRule (prometheus-operator CRDs) for the metrics of
//! `crate::metrics`, and the Role/RoleBinding that let OpenShift's Prometheus discover the
//! operator's namespace. Alerts use only metric names the registry exports (a test holds them to
//! it). One source: `deploy/monitoring.yaml` and the objects the running operator keeps itself
//! (`crate::monitoring_objects`) are both built here.

use serde_json::{Value, json};

use super::identity::{METRICS_SERVICE, OPERATOR_NAME};
use super::manifests::COMPONENT_LABEL;

/// Name of the Role (and RoleBinding) that lets Prometheus discover the operator namespace.
pub const PROMETHEUS_ROLE: &str = "sandboxed-containers-operator-prometheus";
/// OpenShift's platform Prometheus.
pub const PROMETHEUS_SERVICE_ACCOUNT: (&str, &str) = ("openshift-monitoring", "prometheus-k8s");

/// What the Prometheus Role grants: `(group, resource)` with [`PROMETHEUS_VERBS`]. Prometheus'
/// Kubernetes service discovery only lists and watches. The operator must hold every one of
/// these itself: the API server refuses to let anyone create a Role granting more than they hold
/// (RBAC escalation check), so `packaging::rbac` has a row for each.
pub const PROMETHEUS_DISCOVERY: [(&str, &str); 4] = [
    ("", "services"),
    ("", "endpoints"),
    ("", "pods"),
    ("discovery.k8s.io", "endpointslices"),
];
pub const PROMETHEUS_VERBS: [&str; 2] = ["list", "watch"];

fn metadata(name: &str, namespace: Option<&str>) -> Value {
    let mut metadata = json!({
        "name": name,
        "labels": {"app.kubernetes.io/name": OPERATOR_NAME},
    });
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    metadata
}

/// The Role that lets Prometheus discover the metrics Service's endpoints.
pub fn prometheus_role(namespace: Option<&str>) -> Value {
    let mut groups: Vec<&str> = PROMETHEUS_DISCOVERY.iter().map(|(g, _)| *g).collect();
    groups.dedup();
    let rules: Vec<Value> = groups
        .iter()
        .map(|group| {
            let resources: Vec<&str> = PROMETHEUS_DISCOVERY
                .iter()
                .filter(|(g, _)| g == group)
                .map(|(_, r)| *r)
                .collect();
            json!({"apiGroups": [group], "resources": resources, "verbs": PROMETHEUS_VERBS})
        })
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": metadata(PROMETHEUS_ROLE, namespace),
        "rules": rules,
    })
}

/// Binds [`prometheus_role`] to OpenShift's `prometheus-k8s`.
pub fn prometheus_role_binding(namespace: Option<&str>) -> Value {
    let (sa_namespace, sa_name) = PROMETHEUS_SERVICE_ACCOUNT;
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": metadata(PROMETHEUS_ROLE, namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": PROMETHEUS_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": sa_namespace}],
    })
}

/// Scrapes `sandboxed-containers-operator-metrics` over HTTPS with the Prometheus service
/// account's token (the operator checks it with TokenReview + SubjectAccessReview).
pub fn service_monitor(namespace: Option<&str>) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(METRICS_SERVICE, namespace),
        "spec": {
            "selector": {"matchLabels": {
                "app.kubernetes.io/name": OPERATOR_NAME,
                COMPONENT_LABEL: "metrics",
            }},
            "endpoints": [{
                "port": "https",
                "scheme": "https",
                "path": "/metrics",
                "interval": "30s",
                "bearerTokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token",
                // The operator serves metrics with the certificate of its self-managed CA, which
                // Prometheus does not know; the bearer token still authenticates the scrape.
                "tlsConfig": {"insecureSkipVerify": true},
            }],
        },
    })
}

struct Alert {
    name: &'static str,
    expr: &'static str,
    for_: &'static str,
    severity: &'static str,
    summary: &'static str,
    description: &'static str,
}

const ALERTS: &[Alert] = &[
    Alert {
        name: "KataInstallationFailed",
        expr: "max(kata_config_installation_success) == 0 and on() sum(increase(kata_operator_reconciliations_total{result=~\"error|invalid_spec\"}[30m])) > 0",
        for_: "30m",
        severity: "critical",
        summary: "Kata Containers installation is failing.",
        description: "The KataConfig has not completed for 30 minutes and reconciliations keep failing. Check the KataConfig conditions and the operator logs.",
    },
    Alert {
        name: "KataNodeDegraded",
        expr: "sum(kata_operator_nodes{state=~\"failed_to_install|failed_to_uninstall\"}) > 0",
        for_: "10m",
        severity: "warning",
        summary: "Nodes failed to install or uninstall Kata Containers.",
        description: "{{ $value }} node(s) are degraded for kata (MCO reports Degraded). The KataConfig Degraded condition names them with the Machine Config Operator's reason.",
    },
    Alert {
        name: "KataWebhookCertificateExpiringSoon",
        expr: "kata_operator_certificate_expiry_timestamp_seconds > 0 and (kata_operator_certificate_expiry_timestamp_seconds - time()) < 7 * 24 * 3600",
        for_: "1h",
        severity: "warning",
        summary: "The kata webhook serving certificate expires within 7 days.",
        description: "The operator rotates its certificate before expiry; this firing means rotation is not happening. Check the operator logs and its Secret.",
    },
    Alert {
        name: "KataWebhookErrors",
        expr: "sum by (webhook) (rate(kata_operator_admission_requests_total{result=\"error\"}[5m])) > 0",
        for_: "10m",
        severity: "warning",
        summary: "Kata admission webhook {{ $labels.webhook }} is returning errors.",
        description: "The webhook has answered admission requests with errors for 10 minutes; pods in namespaces with a kata policy may be refused.",
    },
];

/// Alerts for the four failure modes an administrator must hear about.
pub fn prometheus_rule(namespace: Option<&str>) -> Value {
    let rules: Vec<Value> = ALERTS
        .iter()
        .map(|a| {
            json!({
                "alert": a.name,
                "expr": a.expr,
                "for": a.for_,
                "labels": {"severity": a.severity},
                "annotations": {"summary": a.summary, "description": a.description},
            })
        })
        .collect();
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata(OPERATOR_NAME, namespace),
        "spec": {"groups": [{"name": "sandboxed-containers-operator.rules", "rules": rules}]},
    })
}

/// Everything the monitoring of the operator namespace needs, in apply order: the Prometheus
/// Role and RoleBinding, the ServiceMonitor and the PrometheusRule.
pub fn monitoring_objects(namespace: Option<&str>) -> Vec<Value> {
    vec![
        prometheus_role(namespace),
        prometheus_role_binding(namespace),
        service_monitor(namespace),
        prometheus_rule(namespace),
    ]
}

/// Metric names an expression refers to (identifiers that start with `kata_`).
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && expr[i..].starts_with("kata_") {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            names.push(expr[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// Every alert expression, for tests.
pub fn alert_exprs() -> Vec<(&'static str, &'static str)> {
    ALERTS.iter().map(|a| (a.name, a.expr)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::Metrics;

    #[test]
    fn alerts_use_only_metrics_the_operator_exports() {
        use prometheus::core::Collector;
        let m = Metrics::new();
        let collectors: [&dyn Collector; 10] = [
            &m.installation_success,
            &m.reconciliations,
            &m.reconcile_duration,
            &m.nodes,
            &m.admission_requests,
            &m.admission_duration,
            &m.build_info,
            &m.api_errors,
            &m.certificate_expiry,
            &m.leader,
        ];
        let exported: Vec<String> = collectors
            .iter()
            .flat_map(|c| c.desc())
            .map(|d| d.fq_name.clone())
            .collect();
        for (alert, expr) in alert_exprs() {
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{alert} uses no operator metric");
            for name in names {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    exported.iter().any(|e| e == &name || e == base),
                    "{alert} uses {name}, which crate::metrics does not export ({exported:?})"
                );
            }
        }
    }

    #[test]
    fn metric_name_scanner_finds_whole_identifiers() {
        assert_eq!(
            metric_names("rate(kata_a_total{x=\"y\"}[5m]) > not_kata_b and kata_c"),
            ["kata_a_total", "kata_c"]
        );
    }

    #[test]
    fn the_four_failure_modes_have_alerts() {
        let rule = prometheus_rule(None);
        let names: Vec<_> = rule["spec"]["groups"][0]["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .map(|r| r["alert"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "KataInstallationFailed",
                "KataNodeDegraded",
                "KataWebhookCertificateExpiringSoon",
                "KataWebhookErrors"
            ]
        );
    }

    #[test]
    fn prometheus_role_grants_discovery_in_one_rule_per_group() {
        let role = prometheus_role(Some("ns"));
        assert_eq!(role["metadata"]["namespace"], "ns");
        assert_eq!(
            role["rules"],
            json!([
                {"apiGroups": [""], "resources": ["services", "endpoints", "pods"], "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ])
        );
        let binding = prometheus_role_binding(None);
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(binding["subjects"][0]["name"], "prometheus-k8s");
        assert!(binding["metadata"].get("namespace").is_none());
    }

    #[test]
    fn the_operator_holds_every_permission_the_prometheus_role_grants() {
        // Else the API server's RBAC escalation check refuses the operator's apply of the Role.
        for (group, resource) in PROMETHEUS_DISCOVERY {
            for verb in PROMETHEUS_VERBS {
                assert!(
                    crate::packaging::rbac::allows(group, resource, verb, true),
                    "the operator cannot {verb} {group}/{resource} in its namespace"
                );
            }
        }
    }

    #[test]
    fn service_monitor_selects_only_the_metrics_service() {
        let sm = service_monitor(None);
        let selector = sm["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels");
        let port = sm["spec"]["endpoints"][0]["port"].as_str().expect("port");
        let matching: Vec<_> = crate::packaging::manifests::services(None)
            .into_iter()
            .filter(|svc| {
                let labels = svc.metadata.labels.clone().unwrap_or_default();
                selector
                    .iter()
                    .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
            })
            .collect();
        assert_eq!(matching.len(), 1);
        assert_eq!(matching[0].metadata.name.as_deref(), Some(METRICS_SERVICE));
        let ports = matching[0]
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default();
        assert!(ports.iter().any(|p| p.name.as_deref() == Some(port)));
    }
}
