//! Builders of the node-installer backend's objects (pure, no cluster): the DaemonSet that runs
//! the kata-deploy image on the kata nodes the way that image's own Helm chart runs it (Kata
//! 4.1.0, daemonset mode), the ConfigMap that makes it configure a `kata` handler, and the
//! `kata` RuntimeClass that schedules only onto nodes where the installer finished.
//!
//! How kata-deploy 4.1.0 behaves, and why each setting is here:
//! - `kata-deploy install` installs on start (artifacts into `/opt/kata`, a CRI-O or containerd
//!   drop-in, a runtime restart through host systemd over D-Bus), sets
//!   `katacontainers.io/kata-runtime=true` on its node when done, and then waits; on SIGTERM it
//!   cleans the node up (labels removed, CRI config reverted, artifacts removed, runtime
//!   restarted) — but only if its DaemonSet (`DAEMONSET_NAME`) no longer selects the node, so
//!   a rolling restart is not mistaken for an uninstall. Removing the kata role label is
//!   therefore what uninstalls a node; the pod gets the chart's 600 s to finish.
//! - It configures one CRI handler per shim (`kata-<shim>`) and never a plain `kata`; the
//!   contract's handler `kata` is declared as a custom runtime on the default shim.
//! - The 4.1.0 pod is not privileged: it needs exactly the host paths mounted here (read-only
//!   where the chart mounts them so) and runs as root from its distroless image.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::api::node::v1::{Overhead, RuntimeClass, Scheduling};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::KataConfig;
use crate::names::{
    KATA_ROLE_LABEL, KATA_RUNTIME_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, NODE_INSTALLER,
    RUNTIME_CLASS, RUNTIME_HANDLER,
};

use super::objects::owner_reference;

/// The Kata release whose kata-deploy image installs kata by default (`spec.nodeInstaller.image`
/// overrides it): the first whose cleanup works node by node when its DaemonSet stops selecting
/// a node, with the least host privileges, and the fix for GHSA-fmg6-v47x-52wr.
pub const KATA_RELEASE: &str = "4.1.0";
pub const DEFAULT_INSTALLER_IMAGE: &str = "quay.io/kata-containers/kata-deploy:4.1.0";
/// The shim behind the `kata` handler: kata-deploy's default on every architecture.
pub const DEFAULT_SHIM: &str = "qemu-runtime-rs";
/// Install restarts the runtime and waits for the node; cleanup does the same in reverse.
pub const CLEANUP_GRACE_SECONDS: i64 = 600;
/// The installer's health server (`/healthz`, `/readyz` once installed).
pub const HEALTH_PORT: i32 = 8090;
/// The ConfigMap of the installer's custom runtimes, mounted at `/custom-configs/`.
pub const CUSTOM_RUNTIMES_FILE: &str = "custom-runtimes.list";
/// The distributions kata-deploy supports, and the host directory of each's containerd config.
pub const DISTRIBUTIONS: [(&str, &str); 5] = [
    ("k8s", "/etc/containerd/"),
    ("k3s", "/var/lib/rancher/k3s/agent/etc/containerd/"),
    ("rke2", "/var/lib/rancher/rke2/agent/etc/containerd/"),
    ("k0s", "/etc/k0s/"),
    ("microk8s", "/var/snap/microk8s/current/args/"),
];
const ARCHES: [&str; 4] = ["X86_64", "AARCH64", "S390X", "PPC64LE"];
const NAME_LABEL: &str = "app.kubernetes.io/name";

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_string(), NODE_INSTALLER.to_string()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
    ])
}

/// The labels selecting the installer pods (the DaemonSet's selector, fixed once created).
pub fn pod_selector_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(NAME_LABEL.to_string(), NODE_INSTALLER.to_string())])
}

fn meta(kc: &KataConfig, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(NODE_INSTALLER.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels()),
        owner_references: owner_reference(kc).map(|o| vec![o]),
        ..Default::default()
    }
}

/// `custom-runtimes.list`: the handler `kata` on the default shim's configuration.
pub fn config_map(kc: &KataConfig, namespace: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(kc, namespace),
        data: Some(BTreeMap::from([(
            CUSTOM_RUNTIMES_FILE.to_string(),
            format!("{RUNTIME_HANDLER}:{DEFAULT_SHIM}::\n"),
        )])),
        ..Default::default()
    }
}

/// The host directory of the containerd configuration for `distribution` (`k8s` if unknown:
/// the spec check refuses unknown values).
pub fn containerd_config_dir(distribution: &str) -> &'static str {
    DISTRIBUTIONS
        .iter()
        .find(|(d, _)| *d == distribution)
        .map_or(DISTRIBUTIONS[0].1, |(_, dir)| dir)
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        value_from: None,
    }
}

fn installer_env(distribution: &str) -> Vec<EnvVar> {
    let mut vars = vec![
        EnvVar {
            name: "NODE_NAME".to_string(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "spec.nodeName".to_string(),
                    api_version: None,
                }),
                ..Default::default()
            }),
        },
        // Cleanup runs only once this DaemonSet no longer selects the node.
        env("DAEMONSET_NAME", NODE_INSTALLER),
        env("DEBUG", "false"),
        env("K8S_DISTRIBUTION", distribution),
        env("HEALTH_PORT", &HEALTH_PORT.to_string()),
        env("CUSTOM_RUNTIMES_ENABLED", "true"),
    ];
    for arch in ARCHES {
        // One shim (the default) instead of every shim: others need host setup (devmapper).
        vars.push(env(&format!("SHIMS_{arch}"), DEFAULT_SHIM));
        vars.push(env(&format!("DEFAULT_SHIM_{arch}"), DEFAULT_SHIM));
    }
    vars
}

/// One volume and its mount: a host path (with the chart's type, read-only or not), an empty
/// dir or a ConfigMap.
fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn host(name: &str, path: &str, type_: Option<&str>) -> Volume {
    Volume {
        name: name.to_string(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_string(),
            type_: type_.map(String::from),
        }),
        ..Default::default()
    }
}

/// Every volume the chart gives the installer, with its mount.
fn installer_volumes(distribution: &str) -> Vec<(Volume, VolumeMount)> {
    let mut v = vec![
        (
            Volume {
                name: "tmp".to_string(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
            mount("tmp", "/tmp", false),
        ),
        (
            host("crio-conf", "/etc/crio/", None),
            mount("crio-conf", "/etc/crio/", false),
        ),
        (
            host("containerd-conf", containerd_config_dir(distribution), None),
            mount("containerd-conf", "/etc/containerd/", false),
        ),
        (
            host("kata-install", "/opt/kata", Some("DirectoryOrCreate")),
            mount("kata-install", "/opt/kata", false),
        ),
        (
            host(
                "systemd-system",
                "/etc/systemd/system",
                Some("DirectoryOrCreate"),
            ),
            mount("systemd-system", "/etc/systemd/system", false),
        ),
        (
            host("systemd-private", "/run/systemd/private", Some("Socket")),
            mount("systemd-private", "/run/systemd/private", false),
        ),
        (host("boot", "/boot", None), mount("boot", "/boot", true)),
        (
            host("host-machine-id", "/etc/machine-id", Some("File")),
            mount("host-machine-id", "/host-machine-id", true),
        ),
        (
            host("host-run-lock", "/run/lock", Some("DirectoryOrCreate")),
            mount("host-run-lock", "/host-run-lock", false),
        ),
    ];
    for (name, path, at) in [
        ("host-usr-bin", "/usr/bin", "/host-usr/bin"),
        ("host-usr-sbin", "/usr/sbin", "/host-usr/sbin"),
        (
            "host-usr-local-bin",
            "/usr/local/bin",
            "/host-usr-local/bin",
        ),
        (
            "host-usr-local-sbin",
            "/usr/local/sbin",
            "/host-usr-local/sbin",
        ),
        ("host-bin", "/bin", "/host-bin"),
        ("host-sbin", "/sbin", "/host-sbin"),
    ] {
        v.push((host(name, path, None), mount(name, at, true)));
    }
    v.push((
        Volume {
            name: "custom-configs".to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: NODE_INSTALLER.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        },
        mount("custom-configs", "/custom-configs/", true),
    ));
    v
}

fn http_probe(path: &str, period: i32, failures: i32, initial_delay: Option<i32>) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(HEALTH_PORT),
            ..Default::default()
        }),
        initial_delay_seconds: initial_delay,
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Default::default()
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("25m".to_string())),
            ("memory".to_string(), Quantity("16Mi".to_string())),
        ])),
        ..Default::default()
    }
}

fn installer_container(kc: &KataConfig) -> Container {
    let settings = kc.spec.node_installer.clone().unwrap_or_default();
    let distribution = settings.distribution();
    Container {
        name: "kata-deploy".to_string(),
        image: Some(
            settings
                .image
                .clone()
                .unwrap_or_else(|| DEFAULT_INSTALLER_IMAGE.to_string()),
        ),
        image_pull_policy: Some(
            settings
                .image_pull_policy
                .clone()
                .unwrap_or_else(|| "IfNotPresent".to_string()),
        ),
        command: Some(vec![
            "/usr/bin/kata-deploy".to_string(),
            "install".to_string(),
        ]),
        env: Some(installer_env(distribution)),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        }),
        // Install must finish within the startup budget (60 × 10 s), as in the chart.
        startup_probe: Some(http_probe("/readyz", 10, 60, Some(1))),
        liveness_probe: Some(http_probe("/healthz", 30, 3, None)),
        readiness_probe: Some(http_probe("/readyz", 10, 3, None)),
        resources: Some(settings.resources.clone().unwrap_or_else(default_resources)),
        volume_mounts: Some(
            installer_volumes(distribution)
                .into_iter()
                .map(|(_, m)| m)
                .collect(),
        ),
        ..Default::default()
    }
}

/// `kata-node-installer` in the operator namespace, on the nodes with the kata role label, one
/// node at a time.
pub fn daemon_set(kc: &KataConfig, namespace: &str) -> DaemonSet {
    let settings = kc.spec.node_installer.clone().unwrap_or_default();
    let distribution = settings.distribution();
    DaemonSet {
        metadata: meta(kc, namespace),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(pod_selector_labels()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(NODE_INSTALLER.to_string()),
                    node_selector: Some(BTreeMap::from([(
                        KATA_ROLE_LABEL.to_string(),
                        String::new(),
                    )])),
                    tolerations: settings.tolerations.clone(),
                    priority_class_name: Some("system-node-critical".to_string()),
                    termination_grace_period_seconds: Some(CLEANUP_GRACE_SECONDS),
                    containers: vec![installer_container(kc)],
                    volumes: Some(
                        installer_volumes(distribution)
                            .into_iter()
                            .map(|(v, _)| v)
                            .collect(),
                    ),
                    ..Default::default()
                }),
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    max_surge: None,
                }),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// The `kata` RuntimeClass of this backend: it schedules onto nodes whose installer finished
/// (`katacontainers.io/kata-runtime: "true"`), so no pod lands on a node before kata is there.
pub fn runtime_class(kc: &KataConfig) -> RuntimeClass {
    RuntimeClass {
        metadata: ObjectMeta {
            name: Some(RUNTIME_CLASS.to_string()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY_VALUE.to_string(),
            )])),
            owner_references: owner_reference(kc).map(|o| vec![o]),
            ..Default::default()
        },
        handler: RUNTIME_HANDLER.to_string(),
        overhead: Some(Overhead {
            pod_fixed: Some(kc.spec.pod_fixed_overhead()),
        }),
        scheduling: Some(Scheduling {
            node_selector: Some(BTreeMap::from([(
                KATA_RUNTIME_LABEL.to_string(),
                "true".to_string(),
            )])),
            tolerations: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kc(spec: serde_json::Value) -> KataConfig {
        let mut k = KataConfig::new("example", serde_json::from_value(spec).expect("spec"));
        k.metadata.uid = Some("uid-1".into());
        k
    }

    fn v<T: serde::Serialize>(x: &T) -> serde_json::Value {
        serde_json::to_value(x).expect("json")
    }

    #[test]
    fn the_daemon_set_runs_kata_deploy_on_kata_nodes_one_node_at_a_time() {
        let ds = v(&daemon_set(&kc(json!({})), "ops"));
        assert_eq!(ds["metadata"]["name"], "kata-node-installer");
        assert_eq!(ds["metadata"]["namespace"], "ops");
        assert_eq!(ds["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(
            ds["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
            true
        );
        let spec = &ds["spec"];
        assert_eq!(spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);
        assert_eq!(
            spec["selector"]["matchLabels"],
            spec["template"]["metadata"]["labels"]
                .as_object()
                .map(|l| json!({"app.kubernetes.io/name": l["app.kubernetes.io/name"]}))
                .expect("labels")
        );
        let pod = &spec["template"]["spec"];
        assert_eq!(
            pod["nodeSelector"],
            json!({"node-role.kubernetes.io/kata-oc": ""})
        );
        assert_eq!(pod["serviceAccountName"], "kata-node-installer");
        assert_eq!(pod["terminationGracePeriodSeconds"], 600);
        assert!(pod.get("hostPID").is_none() && pod.get("hostNetwork").is_none());
        let c = &pod["containers"][0];
        assert_eq!(c["image"], DEFAULT_INSTALLER_IMAGE);
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["command"], json!(["/usr/bin/kata-deploy", "install"]));
        assert_eq!(
            c["securityContext"],
            json!({"privileged": false, "readOnlyRootFilesystem": true})
        );
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "25m", "memory": "16Mi"})
        );
        let env: BTreeMap<String, serde_json::Value> = c["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| (e["name"].as_str().expect("name").to_string(), e.clone()))
            .collect();
        assert_eq!(env["DAEMONSET_NAME"]["value"], "kata-node-installer");
        assert_eq!(env["CUSTOM_RUNTIMES_ENABLED"]["value"], "true");
        assert_eq!(env["SHIMS_X86_64"]["value"], "qemu-runtime-rs");
        assert_eq!(env["K8S_DISTRIBUTION"]["value"], "k8s");
        assert_eq!(
            env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
            "spec.nodeName"
        );
        // Every mount has its volume; the read-only ones are the chart's.
        let mounts = c["volumeMounts"].as_array().expect("mounts");
        let volumes = pod["volumes"].as_array().expect("volumes");
        assert_eq!(mounts.len(), volumes.len());
        for m in mounts {
            assert!(volumes.iter().any(|v| v["name"] == m["name"]), "{m}");
        }
        let ro: Vec<&str> = mounts
            .iter()
            .filter(|m| m["readOnly"] == true)
            .filter_map(|m| m["mountPath"].as_str())
            .collect();
        assert!(
            ro.contains(&"/boot")
                && ro.contains(&"/host-usr/bin")
                && ro.contains(&"/custom-configs/")
        );
        assert!(!ro.contains(&"/opt/kata") && !ro.contains(&"/etc/containerd/"));
    }

    #[test]
    fn the_spec_sets_image_pull_policy_tolerations_resources_and_distribution() {
        let ds = v(&daemon_set(
            &kc(json!({"nodeInstaller": {
                "image": "registry.example/kata-deploy@sha256:abc",
                "imagePullPolicy": "Always",
                "distribution": "k3s",
                "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                "resources": {"requests": {"cpu": "100m"}},
            }})),
            "ops",
        ));
        let pod = &ds["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "registry.example/kata-deploy@sha256:abc");
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["resources"], json!({"requests": {"cpu": "100m"}}));
        assert_eq!(pod["tolerations"][0]["key"], "dedicated");
        let containerd = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == "containerd-conf")
            .expect("containerd volume");
        assert_eq!(
            containerd["hostPath"]["path"],
            "/var/lib/rancher/k3s/agent/etc/containerd/"
        );
        assert!(
            c["env"]
                .as_array()
                .expect("env")
                .iter()
                .any(|e| e["name"] == "K8S_DISTRIBUTION" && e["value"] == "k3s")
        );
    }

    #[test]
    fn the_config_map_declares_the_kata_handler_and_the_runtime_class_waits_for_the_installer() {
        let cm = config_map(&kc(json!({})), "ops");
        assert_eq!(
            cm.data.expect("data")[CUSTOM_RUNTIMES_FILE],
            "kata:qemu-runtime-rs::\n"
        );
        let rc = v(&runtime_class(&kc(
            json!({"runtimeClass": {"overhead": {"podFixed": {"cpu": "1", "memory": "1Gi"}}}}),
        )));
        assert_eq!(rc["handler"], "kata");
        assert_eq!(
            rc["scheduling"]["nodeSelector"],
            json!({"katacontainers.io/kata-runtime": "true"})
        );
        assert_eq!(
            rc["overhead"]["podFixed"],
            json!({"cpu": "1", "memory": "1Gi"})
        );
    }
}
