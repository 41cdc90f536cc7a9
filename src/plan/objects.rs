//! Builders for every object the reconciler applies (pure, no cluster).

use std::collections::BTreeMap;

use k8s_openapi::api::node::v1::{Overhead, RuntimeClass, Scheduling};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use kube::Resource;
use serde_json::json;

use crate::api::mco::ContainerRuntimeConfiguration;
use crate::api::{
    ContainerRuntimeConfig, ContainerRuntimeConfigSpec, KataConfig, MachineConfig,
    MachineConfigPool, MachineConfigPoolSpec, MachineConfigSpec,
};
use crate::names::{
    CONTAINER_RUNTIME_CONFIG, CRIO_DROPIN_MC, CRIO_DROPIN_PATH, EXTENSION_MC, IGNITION_VERSION,
    KATA_EXTENSION, KATA_POOL, KATA_ROLE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, MC_ROLE_LABEL,
    POOL_LABEL_PREFIX, RUNTIME_CLASS, RUNTIME_HANDLER, WORKER_POOL,
};

use super::nodes::Topology;

/// The CRI-O handler that ties the RuntimeClass handler `kata` to the installed shim.
pub const CRIO_DROPIN_CONTENT: &str = "[crio.runtime.runtimes.kata]\n\
runtime_path = \"/usr/bin/containerd-shim-kata-v2\"\n\
runtime_type = \"vm\"\n\
runtime_root = \"/run/vc\"\n\
privileged_without_host_devices = true\n";

fn managed_labels(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())]);
    for (k, v) in extra {
        labels.insert((*k).to_string(), (*v).to_string());
    }
    labels
}

/// The `kata-oc` pool: inherits every worker MachineConfig plus the kata-only ones.
pub fn kata_pool() -> MachineConfigPool {
    let pool_label = format!("{POOL_LABEL_PREFIX}{KATA_POOL}");
    let mut pool = MachineConfigPool::new(
        KATA_POOL,
        MachineConfigPoolSpec {
            machine_config_selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: MC_ROLE_LABEL.to_string(),
                    operator: "In".to_string(),
                    values: Some(vec![KATA_POOL.to_string(), WORKER_POOL.to_string()]),
                }]),
            }),
            node_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    KATA_ROLE_LABEL.to_string(),
                    String::new(),
                )])),
                match_expressions: None,
            }),
            paused: None,
            configuration: None,
        },
    );
    pool.metadata.labels = Some(managed_labels(&[(pool_label.as_str(), "")]));
    pool
}

fn machine_config(name: &str, pool: &str, kc_name: &str, spec: MachineConfigSpec) -> MachineConfig {
    let mut mc = MachineConfig::new(name, spec);
    mc.metadata.labels = Some(managed_labels(&[(MC_ROLE_LABEL, pool), ("app", kc_name)]));
    mc
}

/// `50-enable-sandboxed-containers-extension`: installs the kata RHCOS extension.
pub fn extension_machine_config(pool: &str, kc_name: &str) -> MachineConfig {
    machine_config(
        EXTENSION_MC,
        pool,
        kc_name,
        MachineConfigSpec {
            config: Some(json!({ "ignition": { "version": IGNITION_VERSION } })),
            extensions: vec![KATA_EXTENSION.to_string()],
            ..Default::default()
        },
    )
}

/// `50-kata-crio-dropin`: the CRI-O runtime handler file, as an Ignition 3.2.0 data URL.
pub fn crio_dropin_machine_config(pool: &str, kc_name: &str) -> MachineConfig {
    let source = format!("data:,{}", urlencoding::encode(CRIO_DROPIN_CONTENT));
    machine_config(
        CRIO_DROPIN_MC,
        pool,
        kc_name,
        MachineConfigSpec {
            config: Some(json!({
                "ignition": { "version": IGNITION_VERSION },
                "storage": { "files": [{
                    "path": CRIO_DROPIN_PATH,
                    "mode": 0o644,
                    "overwrite": true,
                    "contents": { "source": source },
                }]},
            })),
            ..Default::default()
        },
    )
}

/// `kata-crio-config`, only for a log level other than CRI-O's default `info`.
pub fn container_runtime_config(pool: &str, log_level: &str) -> Option<ContainerRuntimeConfig> {
    if log_level == "info" {
        return None;
    }
    let mut crc = ContainerRuntimeConfig::new(
        CONTAINER_RUNTIME_CONFIG,
        ContainerRuntimeConfigSpec {
            machine_config_pool_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    format!("{POOL_LABEL_PREFIX}{pool}"),
                    String::new(),
                )])),
                match_expressions: None,
            }),
            container_runtime_config: ContainerRuntimeConfiguration {
                log_level: Some(log_level.to_string()),
                other: BTreeMap::new(),
            },
        },
    );
    crc.metadata.labels = Some(managed_labels(&[]));
    Some(crc)
}

/// Controller owner reference to the KataConfig, for objects that may be garbage collected
/// together with it. `None` when the object has no uid (e.g. offline `render`).
pub fn owner_reference(kc: &KataConfig) -> Option<OwnerReference> {
    let mut owner = kc.controller_owner_ref(&())?;
    owner.block_owner_deletion = Some(true);
    Some(owner)
}

/// The `kata` RuntimeClass. Its node selector is exactly the label the kata nodes carry: always a
/// plain, non-empty map (upstream once left it empty for matchExpressions selectors).
pub fn runtime_class(kc: &KataConfig, topology: Topology) -> RuntimeClass {
    RuntimeClass {
        metadata: ObjectMeta {
            name: Some(RUNTIME_CLASS.to_string()),
            labels: Some(managed_labels(&[])),
            owner_references: owner_reference(kc).map(|o| vec![o]),
            ..Default::default()
        },
        handler: RUNTIME_HANDLER.to_string(),
        overhead: Some(Overhead {
            pod_fixed: Some(kc.spec.pod_fixed_overhead()),
        }),
        scheduling: Some(Scheduling {
            node_selector: Some(BTreeMap::from([(
                topology.node_role_label().to_string(),
                String::new(),
            )])),
            tolerations: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::KataConfigSpec;

    fn file_of(mc: &MachineConfig) -> serde_json::Value {
        mc.spec.config.as_ref().expect("config")["storage"]["files"][0].clone()
    }

    #[test]
    fn kata_pool_inherits_worker_configs_and_selects_kata_nodes() {
        let pool = kata_pool();
        let v = serde_json::to_value(&pool).expect("json");
        assert_eq!(v["metadata"]["name"], "kata-oc");
        assert_eq!(
            v["metadata"]["labels"]["pools.operator.machineconfiguration.openshift.io/kata-oc"],
            ""
        );
        assert_eq!(
            v["spec"]["machineConfigSelector"]["matchExpressions"][0],
            json!({"key": "machineconfiguration.openshift.io/role", "operator": "In", "values": ["kata-oc", "worker"]})
        );
        assert_eq!(
            v["spec"]["nodeSelector"]["matchLabels"],
            json!({"node-role.kubernetes.io/kata-oc": ""})
        );
        assert!(v.get("status").is_none(), "we never write a pool's status");
    }

    #[test]
    fn extension_mc_enables_kata_containers_with_empty_ignition() {
        let mc = extension_machine_config("kata-oc", "example");
        assert_eq!(mc.metadata.name.as_deref(), Some(EXTENSION_MC));
        assert_eq!(mc.spec.extensions, ["kata-containers"]);
        assert_eq!(
            mc.spec.config,
            Some(json!({"ignition": {"version": "3.2.0"}}))
        );
        let labels = mc.metadata.labels.expect("labels");
        assert_eq!(labels[MC_ROLE_LABEL], "kata-oc");
        assert_eq!(labels["app"], "example");
    }

    #[test]
    fn crio_dropin_is_url_encoded_and_decodes_to_the_handler() {
        let mc = crio_dropin_machine_config("master", "example");
        assert_eq!(
            mc.metadata.labels.as_ref().expect("labels")[MC_ROLE_LABEL],
            "master"
        );
        let file = file_of(&mc);
        assert_eq!(file["path"], "/etc/crio/crio.conf.d/50-kata");
        assert_eq!(file["mode"], 420);
        let source = file["contents"]["source"].as_str().expect("source");
        let encoded = source.strip_prefix("data:,").expect("data URL");
        assert!(!encoded.contains(' ') && !encoded.contains('\n') && !encoded.contains('"'));
        let decoded = urlencoding::decode(encoded).expect("decodes");
        assert_eq!(decoded, CRIO_DROPIN_CONTENT);
        assert!(decoded.contains("[crio.runtime.runtimes.kata]"));
        assert!(decoded.contains("runtime_path = \"/usr/bin/containerd-shim-kata-v2\""));
        assert!(decoded.contains("runtime_type = \"vm\""));
        assert!(decoded.contains("runtime_root = \"/run/vc\""));
        assert!(decoded.contains("privileged_without_host_devices = true"));
    }

    #[test]
    fn container_runtime_config_only_for_non_info_levels() {
        assert!(container_runtime_config("kata-oc", "info").is_none());
        let crc = container_runtime_config("kata-oc", "debug").expect("debug level");
        assert_eq!(crc.metadata.name.as_deref(), Some("kata-crio-config"));
        assert_eq!(
            crc.spec.container_runtime_config.log_level.as_deref(),
            Some("debug")
        );
        let v = serde_json::to_value(&crc).expect("json");
        assert_eq!(
            v["spec"]["machineConfigPoolSelector"]["matchLabels"],
            json!({"pools.operator.machineconfiguration.openshift.io/kata-oc": ""})
        );
        let on_master = container_runtime_config("master", "trace").expect("trace");
        let v = serde_json::to_value(&on_master).expect("json");
        assert_eq!(
            v["spec"]["machineConfigPoolSelector"]["matchLabels"],
            json!({"pools.operator.machineconfiguration.openshift.io/master": ""})
        );
    }

    fn kataconfig(spec: KataConfigSpec) -> KataConfig {
        let mut kc = KataConfig::new("example", spec);
        kc.metadata.uid = Some("1234".into());
        kc
    }

    #[test]
    fn runtime_class_has_overhead_and_plain_node_selector() {
        let kc = kataconfig(KataConfigSpec::default());
        let rc = runtime_class(&kc, Topology::Regular);
        assert_eq!(rc.handler, "kata");
        let fixed = rc.overhead.expect("overhead").pod_fixed.expect("podFixed");
        assert_eq!(fixed["cpu"].0, "250m");
        assert_eq!(fixed["memory"].0, "350Mi");
        let sel = rc
            .scheduling
            .expect("scheduling")
            .node_selector
            .expect("selector");
        assert_eq!(
            sel,
            BTreeMap::from([(KATA_ROLE_LABEL.to_string(), String::new())])
        );
        let owner = &rc.metadata.owner_references.expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("KataConfig", "1234")
        );
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn runtime_class_on_converged_cluster_targets_masters() {
        let rc = runtime_class(&kataconfig(KataConfigSpec::default()), Topology::Converged);
        let sel = rc
            .scheduling
            .expect("scheduling")
            .node_selector
            .expect("selector");
        assert_eq!(
            sel.keys().collect::<Vec<_>>(),
            ["node-role.kubernetes.io/master"]
        );
    }

    #[test]
    fn runtime_class_overhead_follows_spec() {
        let spec: KataConfigSpec = serde_json::from_value(json!({
            "runtimeClass": {"overhead": {"podFixed": {"cpu": "500m", "memory": "1Gi"}}}
        }))
        .expect("spec");
        let rc = runtime_class(&kataconfig(spec), Topology::Regular);
        let fixed = rc.overhead.expect("overhead").pod_fixed.expect("podFixed");
        assert_eq!(fixed["memory"].0, "1Gi");
        assert_eq!(fixed["cpu"].0, "500m");
    }
}
