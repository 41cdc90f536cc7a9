//! The `KataConfig` CustomResourceDefinition, generated from the Rust types and then tightened
//! with what derive cannot express (enums, defaults, CEL rules), so the API server itself refuses
//! bad objects. `sandboxed-containers-operator crd` prints it; the bundle embeds it.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::api::KataConfig;
use crate::api::NamespacePolicy;
use crate::names::LOG_LEVELS;
use crate::plan::PULL_POLICIES;

/// The CRD as the API server should receive it.
pub fn kataconfig_crd() -> CustomResourceDefinition {
    let mut crd = KataConfig::crd();
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let mut value = match serde_json::to_value(&*schema) {
            Ok(v) => v,
            Err(_) => continue,
        };
        tighten(&mut value);
        if let Ok(tightened) = serde_json::from_value(value) {
            *schema = tightened;
        }
    }
    crd
}

/// The CRD as YAML, exactly as committed under `bundle/manifests/`.
pub fn kataconfig_crd_yaml() -> String {
    serde_yaml::to_string(&kataconfig_crd()).unwrap_or_default()
}

fn tighten(root: &mut Value) {
    // An object with no spec at all is valid (upstream's alm-example has none): default it.
    if let Some(required) = root.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| r != "spec");
    }
    root["description"] = json!(
        "KataConfig installs Kata Containers (sandboxed containers) on the selected nodes. At most one exists per cluster."
    );
    let Some(props) = root.get_mut("properties") else {
        return;
    };
    props["spec"]["default"] = json!({});
    let spec = &mut props["spec"]["properties"];
    spec["logLevel"]["enum"] = json!(LOG_LEVELS);
    spec["logLevel"]["default"] = json!("info");
    spec["checkNodeEligibility"]["default"] = json!(false);
    spec["enablePeerPods"]["default"] = json!(false);
    spec["namespacePolicy"]["properties"]["default"]["enum"] = json!(NamespacePolicy::VALUES);
    spec["namespacePolicy"]["properties"]["default"]["default"] = json!("allow");
    let installer = &mut spec["nodeInstaller"]["properties"];
    installer["imagePullPolicy"]["enum"] = json!(PULL_POLICIES);
    installer["distribution"]["enum"] = json!(
        crate::plan::installer_objects::DISTRIBUTIONS
            .iter()
            .map(|(d, _)| *d)
            .collect::<Vec<_>>()
    );

    let selector = &mut spec["kataConfigPoolSelector"];
    selector["x-kubernetes-map-type"] = json!("atomic");
    let expr = &mut selector["properties"]["matchExpressions"]["items"];
    expr["properties"]["operator"]["enum"] = json!(["In", "NotIn", "Exists", "DoesNotExist"]);
    expr["properties"]["key"]["maxLength"] = json!(317);
    expr["x-kubernetes-validations"] = json!([
        {
            "rule": "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : true",
            "message": "values must be non-empty when operator is In or NotIn",
            "fieldPath": ".values",
            "reason": "FieldValueRequired",
        },
        {
            "rule": "self.operator in ['Exists', 'DoesNotExist'] ? !has(self.values) || size(self.values) == 0 : true",
            "message": "values must be empty when operator is Exists or DoesNotExist",
            "fieldPath": ".values",
            "reason": "FieldValueForbidden",
        }
    ]);

    let conditions = &mut props["status"]["properties"]["conditions"];
    conditions["x-kubernetes-list-type"] = json!("map");
    conditions["x-kubernetes-list-map-keys"] = json!(["type"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        let crd = serde_json::to_value(kataconfig_crd()).expect("json");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    #[test]
    fn crd_identity_matches_upstream() {
        let crd = kataconfig_crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("kataconfigs.kataconfiguration.openshift.io")
        );
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.kind, "KataConfig");
        assert_eq!(crd.spec.names.plural, "kataconfigs");
        let v = &crd.spec.versions[0];
        assert_eq!((v.name.as_str(), v.served, v.storage), ("v1", true, true));
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let cols: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(cols, ["InProgress", "Completed", "Total", "Age"]);
    }

    #[test]
    fn schema_restricts_and_defaults_fields() {
        let s = schema();
        assert!(
            !s["required"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r == "spec")
        );
        let spec = &s["properties"]["spec"];
        assert_eq!(spec["default"], json!({}));
        assert_eq!(spec["properties"]["logLevel"]["default"], "info");
        assert_eq!(
            spec["properties"]["logLevel"]["enum"]
                .as_array()
                .map(Vec::len),
            Some(7)
        );
        assert_eq!(
            spec["properties"]["namespacePolicy"]["properties"]["default"]["enum"],
            json!(["require", "default", "allow", "deny"])
        );
        let expr = &spec["properties"]["kataConfigPoolSelector"]["properties"]["matchExpressions"]
            ["items"];
        assert_eq!(
            expr["x-kubernetes-validations"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(
            expr["properties"]["operator"]["enum"],
            json!(["In", "NotIn", "Exists", "DoesNotExist"])
        );
        let conds = &s["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conds["x-kubernetes-list-map-keys"], json!(["type"]));
        let cond_props = &conds["items"]["properties"];
        assert!(cond_props.get("observedGeneration").is_some());
    }

    #[test]
    fn committed_crd_matches_generated() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/bundle/manifests/kataconfiguration.openshift.io_kataconfigs.yaml"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == kataconfig_crd_yaml(),
            "{path} is stale: regenerate it with `cargo run -- crd > {path}` (or hack/generate.sh)"
        );
    }
}
