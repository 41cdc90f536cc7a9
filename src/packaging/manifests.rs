//! The operator's own workload (Deployment, Services, ServiceAccount, RBAC) and the plain
//! manifests under `deploy/` for installing without OLM. The CSV embeds the same Deployment spec.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Namespace,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::identity::{
    IMAGE, METRICS_READER_ROLE, METRICS_SERVICE, OPERATOR_NAME, WEBHOOK_SERVICE,
};
use super::rbac::{self, Scope};
use crate::names::{
    DEFAULT_OPERATOR_NAMESPACE, HEALTH_PORT, METRICS_PORT, NODE_INSTALLER, WEBHOOK_PORT,
};

/// Label that tells the webhook and metrics Services apart (`webhook` / `metrics`).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// Labels on the operator pods; the Services and the Deployment select them.
pub fn pod_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            OPERATOR_NAME.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            "operator".to_string(),
        ),
    ])
}

fn common_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            OPERATOR_NAME.to_string(),
        ),
        (
            "app.kubernetes.io/part-of".to_string(),
            OPERATOR_NAME.to_string(),
        ),
    ])
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(common_labels()),
        ..Default::default()
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

fn http_probe(path: &str, initial_delay: i32, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("health".to_string()),
            scheme: Some("HTTP".to_string()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: i32::from(number),
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

/// The operator Deployment's spec: non-root, read-only root filesystem, no capabilities, the
/// namespace from the downward API, probes on the health port.
pub fn deployment_spec() -> DeploymentSpec {
    let container = Container {
        name: "operator".to_string(),
        image: Some(IMAGE.to_string()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        command: Some(vec![format!("/usr/local/bin/{OPERATOR_NAME}")]),
        args: Some(vec![
            "run".to_string(),
            "--log-format=json".to_string(),
            format!("--webhook-service={WEBHOOK_SERVICE}"),
        ]),
        env: Some(vec![
            pod_field("POD_NAMESPACE", "metadata.namespace"),
            // The Lease holder identity: every container's process id is 1, so without the pod
            // name two replicas would both believe they hold the Lease.
            pod_field("POD_NAME", "metadata.name"),
            // The Deployment's own name, so the operator can make it the owner of the monitoring
            // objects it keeps (the downward API cannot name a pod's Deployment).
            EnvVar {
                name: "OPERATOR_DEPLOYMENT_NAME".to_string(),
                value: Some(OPERATOR_NAME.to_string()),
                ..Default::default()
            },
            EnvVar {
                name: "RUST_LOG".to_string(),
                value: Some("info".to_string()),
                ..Default::default()
            },
        ]),
        ports: Some(vec![
            port("webhook", WEBHOOK_PORT),
            port("metrics", METRICS_PORT),
            port("health", HEALTH_PORT),
        ]),
        liveness_probe: Some(http_probe("/healthz", 15, 20)),
        readiness_probe: Some(http_probe("/readyz", 5, 10)),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "10m"), ("memory", "64Mi")])),
            limits: Some(quantities(&[("cpu", "500m"), ("memory", "256Mi")])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    };
    DeploymentSpec {
        replicas: Some(1),
        selector: LabelSelector {
            match_labels: Some(pod_labels()),
            ..Default::default()
        },
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(pod_labels()),
                annotations: Some(BTreeMap::from([(
                    "kubectl.kubernetes.io/default-container".to_string(),
                    "operator".to_string(),
                )])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                service_account_name: Some(OPERATOR_NAME.to_string()),
                containers: vec![container],
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".to_string(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                termination_grace_period_seconds: Some(30),
                ..Default::default()
            }),
        },
        ..Default::default()
    }
}

pub fn deployment(namespace: &str) -> Deployment {
    Deployment {
        metadata: meta(OPERATOR_NAME, Some(namespace)),
        spec: Some(deployment_spec()),
        ..Default::default()
    }
}

fn service(name: &str, namespace: Option<&str>, port: i32, target: &str) -> Service {
    let mut metadata = meta(name, namespace);
    // Distinguishes the two Services so the ServiceMonitor selects only the metrics one.
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert(COMPONENT_LABEL.to_string(), target.to_string());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(pod_labels()),
            ports: Some(vec![ServicePort {
                name: Some("https".to_string()),
                port,
                target_port: Some(IntOrString::String(target.to_string())),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The webhook Service (443 → 9443) and the metrics Service (8443). `namespace` is `None` in
/// the bundle, where OLM places them in the install namespace.
pub fn services(namespace: Option<&str>) -> Vec<Service> {
    vec![
        service(WEBHOOK_SERVICE, namespace, 443, "webhook"),
        service(
            METRICS_SERVICE,
            namespace,
            i32::from(METRICS_PORT),
            "metrics",
        ),
    ]
}

/// The ClusterRole that lets a scraper (Prometheus) read `/metrics`.
pub fn metrics_reader_cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: meta(METRICS_READER_ROLE, None),
        rules: Some(rbac::metrics_reader_rules()),
        ..Default::default()
    }
}

fn operator_subject(namespace: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".to_string(),
        name: OPERATOR_NAME.to_string(),
        namespace: Some(namespace.to_string()),
        ..Default::default()
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
    }
}

/// The operator's own RBAC for its ServiceAccount in `namespace`: the ClusterRole and Role of the
/// table in [`rbac`] and their bindings, in apply order.
pub fn operator_rbac(namespace: &str) -> anyhow::Result<Vec<Value>> {
    Ok(vec![
        serde_json::to_value(ClusterRole {
            metadata: meta(OPERATOR_NAME, None),
            rules: Some(rbac::policy_rules(Scope::Cluster)),
            ..Default::default()
        })?,
        serde_json::to_value(ClusterRoleBinding {
            metadata: meta(OPERATOR_NAME, None),
            role_ref: role_ref("ClusterRole", OPERATOR_NAME),
            subjects: Some(vec![operator_subject(namespace)]),
        })?,
        serde_json::to_value(Role {
            metadata: meta(OPERATOR_NAME, Some(namespace)),
            rules: Some(rbac::policy_rules(Scope::OperatorNamespace)),
        })?,
        serde_json::to_value(RoleBinding {
            metadata: meta(OPERATOR_NAME, Some(namespace)),
            role_ref: role_ref("Role", OPERATOR_NAME),
            subjects: Some(vec![operator_subject(namespace)]),
        })?,
    ])
}

/// The node installer's ServiceAccount, ClusterRole and binding (see [`rbac::INSTALLER_RULES`]).
pub fn installer_rbac(namespace: &str) -> anyhow::Result<Vec<Value>> {
    let subject = Subject {
        kind: "ServiceAccount".to_string(),
        name: NODE_INSTALLER.to_string(),
        namespace: Some(namespace.to_string()),
        ..Default::default()
    };
    Ok(vec![
        serde_json::to_value(ServiceAccount {
            metadata: meta(NODE_INSTALLER, Some(namespace)),
            ..Default::default()
        })?,
        serde_json::to_value(ClusterRole {
            metadata: meta(NODE_INSTALLER, None),
            rules: Some(rbac::installer_policy_rules()),
            ..Default::default()
        })?,
        serde_json::to_value(ClusterRoleBinding {
            metadata: meta(NODE_INSTALLER, None),
            role_ref: role_ref("ClusterRole", NODE_INSTALLER),
            subjects: Some(vec![subject]),
        })?,
    ])
}

pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
pub const POD_SECURITY_WARN: &str = "pod-security.kubernetes.io/warn";

/// Every object of the plain (non-OLM) installation, in apply order, namespace from DESIGN.md.
pub fn plain_objects() -> anyhow::Result<Vec<Value>> {
    let ns = DEFAULT_OPERATOR_NAMESPACE;
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.to_string()),
            labels: Some(BTreeMap::from([
                // The operator pod meets the `restricted` Pod Security Standard, but on clusters
                // without the MCO the node installer (kata-deploy) mounts host paths here.
                (POD_SECURITY_ENFORCE.to_string(), "privileged".to_string()),
                (POD_SECURITY_WARN.to_string(), "restricted".to_string()),
                (
                    "openshift.io/cluster-monitoring".to_string(),
                    "true".to_string(),
                ),
            ])),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut objects = vec![
        serde_json::to_value(namespace)?,
        serde_json::to_value(crate::crdgen::kataconfig_crd())?,
        serde_json::to_value(ServiceAccount {
            metadata: meta(OPERATOR_NAME, Some(ns)),
            ..Default::default()
        })?,
    ];
    objects.extend(operator_rbac(ns)?);
    objects.extend(installer_rbac(ns)?);
    objects.push(serde_json::to_value(metrics_reader_cluster_role())?);
    for svc in services(Some(ns)) {
        objects.push(serde_json::to_value(svc)?);
    }
    objects.push(serde_json::to_value(deployment(ns))?);
    Ok(objects)
}

/// An environment variable from the downward API (a field of the operator's own pod).
fn pod_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".to_string()),
                field_path: field_path.to_string(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Container {
        deployment_spec()
            .template
            .spec
            .expect("pod spec")
            .containers
            .remove(0)
    }

    #[test]
    fn container_is_locked_down() {
        let sc = container().security_context.expect("security context");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(
            sc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        assert!(sc.privileged.is_none() && sc.run_as_user.is_none());
    }

    #[test]
    fn namespace_comes_from_the_downward_api_and_probes_hit_the_health_port() {
        let c = container();
        let env = c.env.expect("env");
        let ns = env
            .iter()
            .find(|e| e.name == "POD_NAMESPACE")
            .expect("POD_NAMESPACE");
        let field = ns
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(field, Some("metadata.namespace"));
        let name = env.iter().find(|e| e.name == "POD_NAME").expect("POD_NAME");
        assert_eq!(
            name.value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str()),
            Some("metadata.name"),
            "replicas need distinct Lease identities"
        );
        assert_eq!(c.args.as_deref().map(|a| a[0].as_str()), Some("run"));
        let ports: Vec<_> = c
            .ports
            .expect("ports")
            .iter()
            .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [
                ("webhook".to_string(), 9443),
                ("metrics".to_string(), 8443),
                ("health".to_string(), 8081)
            ]
        );
        let live = c.liveness_probe.and_then(|p| p.http_get).expect("liveness");
        let ready = c
            .readiness_probe
            .and_then(|p| p.http_get)
            .expect("readiness");
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        assert_eq!(live.port, IntOrString::String("health".into()));
    }

    #[test]
    fn selector_matches_template_and_services() {
        let spec = deployment_spec();
        let template_labels = spec.template.metadata.and_then(|m| m.labels);
        assert_eq!(spec.selector.match_labels, template_labels);
        for svc in services(None) {
            assert_eq!(svc.spec.and_then(|s| s.selector), template_labels);
        }
    }

    #[test]
    fn webhook_service_maps_443_to_the_webhook_port() {
        let svcs = services(None);
        let p = &svcs[0]
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .expect("ports")[0];
        assert_eq!(
            svcs[0].metadata.name.as_deref(),
            Some("sandboxed-containers-operator-webhook")
        );
        assert_eq!(p.port, 443);
        assert_eq!(p.target_port, Some(IntOrString::String("webhook".into())));
        let m = &svcs[1]
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .expect("ports")[0];
        assert_eq!(m.port, 8443);
    }
}
