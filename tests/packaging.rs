//! Packaging tests: the committed bundle/deploy files equal the generator's output; the CSV,
//! every alm-example and every MachineConfig/MachineConfigPool/ContainerRuntimeConfig the
//! operator renders validate against the real upstream CRD schemas (`../shared/crds/`) and our
//! CRD; core objects validate against the Kubernetes schemas (`kubernetes-validate --strict`,
//! installed by hack/test.sh); and each validator provably catches a planted fault.

use std::path::{Path, PathBuf};
use std::process::Command;

use sandboxed_containers_operator::api::Backend;
use sandboxed_containers_operator::packaging::{self, csv, monitoring, rbac};
use sandboxed_containers_operator::{crdgen, render};
use serde_json::{Value, json};
use testkit::bundle_check as check;
use testkit::crd_schema::{Strictness, crd_json_schema};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `shared/crds` next to the repository (or above a worktree), or `$SHARED_CRDS_DIR`.
fn shared_crds() -> PathBuf {
    if let Ok(dir) = std::env::var("SHARED_CRDS_DIR") {
        return PathBuf::from(dir);
    }
    repo()
        .ancestors()
        .map(|a| a.join("shared/crds"))
        .find(|p| p.is_dir())
        .expect("the upstream CRDs are expected in ../shared/crds (or set SHARED_CRDS_DIR)")
}

fn load_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML document"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// A validator for one CRD version, strict about unknown fields.
struct Schema {
    name: String,
    validator: jsonschema::Validator,
}

impl Schema {
    fn from_crd(crd: &Value, version: &str) -> Self {
        let schema = crd_json_schema(crd, version, Strictness::Strict).expect("CRD schema");
        Schema {
            name: crd["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            validator: jsonschema::draft7::new(&schema).expect("schema compiles"),
        }
    }

    fn upstream(file: &str) -> Self {
        Self::from_crd(&load_yaml(&shared_crds().join(file)), "v1")
    }

    fn errors(&self, obj: &Value) -> Vec<String> {
        self.validator
            .iter_errors(obj)
            .map(|e| format!("{}: {e}", e.instance_path))
            .collect()
    }

    fn assert_valid(&self, obj: &Value, what: &str) {
        let errors = self.errors(obj);
        assert!(
            errors.is_empty(),
            "{what} does not validate against {}:\n{}",
            self.name,
            errors.join("\n")
        );
    }

    fn assert_caught(&self, obj: &Value, path: &str) {
        let errors = self.errors(obj);
        assert!(
            errors.iter().any(|e| e.starts_with(path)),
            "planted fault at {path} not caught by {}; errors: {errors:?}",
            self.name
        );
    }
}

fn csv_schema() -> Schema {
    let crd = load_yaml(&shared_crds().join("operators.coreos.com_clusterserviceversions.yaml"));
    Schema::from_crd(&crd, "v1alpha1")
}

fn kataconfig_schema() -> Schema {
    Schema::from_crd(
        &serde_json::to_value(crdgen::kataconfig_crd()).expect("crd"),
        "v1",
    )
}

fn generated_csv() -> Value {
    csv::cluster_service_version(&packaging::Release::CURRENT).expect("csv")
}

// ---------------------------------------------------------------------------------------------
// Drift

#[test]
fn committed_bundle_and_deploy_match_the_generator() {
    let generated = packaging::generated_files().expect("generate");
    let mut stale = Vec::new();
    for (path, content) in &generated {
        let committed = std::fs::read_to_string(repo().join(path)).unwrap_or_default();
        if committed != *content {
            stale.push(path.display().to_string());
        }
    }
    // Nothing else lives in the generated directories.
    for dir in ["bundle", "deploy"] {
        let files = check::read_bundle_dir(&repo().join(dir)).expect("read dir");
        for (rel, _) in files {
            let path = Path::new(dir).join(rel);
            if !generated.iter().any(|(p, _)| *p == path) {
                stale.push(format!("{} (not generated)", path.display()));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "generated files drifted: {stale:?}; run hack/generate.sh and commit the result"
    );
}

#[test]
fn generated_yaml_reads_back_as_the_same_objects() {
    let csv = generated_csv();
    let back: Value =
        serde_yaml::from_str(&packaging::to_yaml(&csv).expect("yaml")).expect("parse");
    assert_eq!(back, csv);
}

#[test]
fn committed_bundle_passes_the_semantic_checker() {
    let files = check::read_bundle_dir(&repo().join("bundle")).expect("bundle dir");
    let dockerfile =
        std::fs::read_to_string(repo().join("bundle.Dockerfile")).expect("bundle.Dockerfile");
    let findings = check::check_bundle(&files, &dockerfile);
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn a_bundled_object_needing_a_crd_outside_the_bundle_fails_the_checker() {
    // What broke OLM installs without prometheus-operator: the InstallPlan fails on the first
    // object whose kind the cluster does not serve, and nothing installs.
    let mut files = check::read_bundle_dir(&repo().join("bundle")).expect("bundle dir");
    let dockerfile =
        std::fs::read_to_string(repo().join("bundle.Dockerfile")).expect("bundle.Dockerfile");
    let monitor = monitoring::service_monitor(None);
    files.push((
        PathBuf::from("manifests/sandboxed-containers-operator-metrics_monitoring.coreos.com_v1_servicemonitor.yaml"),
        packaging::to_yaml(&monitor).expect("yaml"),
    ));
    let findings = check::check_bundle(&files, &dockerfile);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert!(
        findings[0].contains("ServiceMonitor (monitoring.coreos.com/v1) needs a CRD that is neither in the bundle nor in spec.nativeAPIs"),
        "{findings:#?}"
    );

    // The same object passes once the CSV declares the API native (OLM then checks it exists).
    let csv_path = PathBuf::from("manifests").join(packaging::csv_file());
    let mut csv = generated_csv();
    csv["spec"]["nativeAPIs"] =
        json!([{"group": "monitoring.coreos.com", "version": "v1", "kind": "ServiceMonitor"}]);
    for (path, content) in &mut files {
        if *path == csv_path {
            *content = packaging::to_yaml(&csv).expect("yaml");
        }
    }
    let findings = check::check_bundle(&files, &dockerfile);
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn the_bundle_needs_no_monitoring_crds_and_the_operator_knows_its_deployment() {
    let files = check::read_bundle_dir(&repo().join("bundle")).expect("bundle dir");
    for (path, content) in &files {
        let obj: Value = serde_yaml::from_str(content).expect("YAML");
        assert!(
            !obj["apiVersion"]
                .as_str()
                .is_some_and(|a| a.starts_with("monitoring.coreos.com/")),
            "{} is a monitoring.coreos.com object: the operator keeps those itself",
            path.display()
        );
    }
    let csv = generated_csv();
    let deployment = &csv["spec"]["install"]["spec"]["deployments"][0];
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env");
    let owner = env
        .iter()
        .find(|e| e["name"] == "OPERATOR_DEPLOYMENT_NAME")
        .expect("OPERATOR_DEPLOYMENT_NAME");
    assert_eq!(owner["value"], deployment["name"]);
    // `deploy/monitoring.yaml` stays for installs without OLM, from the same builders.
    let plain = std::fs::read_to_string(repo().join("deploy/monitoring.yaml")).expect("monitoring");
    let kinds: Vec<Value> = yaml_docs(&plain)
        .iter()
        .map(|d| d["kind"].clone())
        .collect();
    assert_eq!(
        kinds,
        ["Role", "RoleBinding", "ServiceMonitor", "PrometheusRule"]
    );
}

#[test]
fn bundle_crd_is_the_one_crdgen_generates() {
    let committed =
        std::fs::read_to_string(repo().join("bundle/manifests").join(packaging::CRD_FILE))
            .expect("CRD file");
    assert_eq!(committed, crdgen::kataconfig_crd_yaml());
}

// ---------------------------------------------------------------------------------------------
// RBAC

fn rules_of(v: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for rule in v.as_array().into_iter().flatten() {
        let list = |k: &str| -> Vec<String> {
            rule[k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        for g in list("apiGroups") {
            for r in list("resources") {
                out.push((g.clone(), r, list("verbs")));
            }
        }
    }
    out.sort();
    out
}

fn table(scope: rbac::Scope) -> Vec<(String, String, Vec<String>)> {
    let mut out: Vec<_> = rbac::rules()
        .iter()
        .filter(|r| r.scope == scope)
        .map(|r| {
            (
                r.group.to_string(),
                r.resource.to_string(),
                r.verbs.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn generated_rbac_equals_the_table_everywhere() {
    let csv = generated_csv();
    let strategy = &csv["spec"]["install"]["spec"];
    assert_eq!(
        rules_of(&strategy["clusterPermissions"][0]["rules"]),
        table(rbac::Scope::Cluster)
    );
    assert_eq!(
        rules_of(&strategy["permissions"][0]["rules"]),
        table(rbac::Scope::OperatorNamespace)
    );
    // The operator's, and the node installer's (its DaemonSet's ServiceAccount).
    assert_eq!(
        strategy["clusterPermissions"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        strategy["clusterPermissions"][1]["serviceAccountName"],
        "kata-node-installer"
    );
    assert_eq!(
        rules_of(&strategy["clusterPermissions"][1]["rules"]),
        installer_table()
    );
    assert_eq!(strategy["permissions"].as_array().map(Vec::len), Some(1));

    let deploy = std::fs::read_to_string(repo().join("deploy/operator.yaml")).expect("deploy");
    let docs = yaml_docs(&deploy);
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} missing from deploy/operator.yaml"))
    };
    let op = packaging::OPERATOR_NAME;
    assert_eq!(
        rules_of(&find("ClusterRole", op)["rules"]),
        table(rbac::Scope::Cluster)
    );
    assert_eq!(
        rules_of(&find("Role", op)["rules"]),
        table(rbac::Scope::OperatorNamespace)
    );
    assert_eq!(
        find("Role", op)["metadata"]["namespace"],
        sandboxed_containers_operator::names::DEFAULT_OPERATOR_NAMESPACE
    );
    assert_eq!(find("RoleBinding", op)["roleRef"]["name"], op);
    assert_eq!(find("ClusterRoleBinding", op)["subjects"][0]["name"], op);
    let installer = "kata-node-installer";
    assert_eq!(
        rules_of(&find("ClusterRole", installer)["rules"]),
        installer_table()
    );
    assert_eq!(
        find("ClusterRoleBinding", installer)["subjects"][0]["name"],
        installer
    );
    find("ServiceAccount", installer);
}

fn installer_table() -> Vec<(String, String, Vec<String>)> {
    let mut out: Vec<_> = rbac::INSTALLER_RULES
        .iter()
        .map(|r| {
            (
                r.group.to_string(),
                r.resource.to_string(),
                r.verbs.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn rbac_has_no_wildcards_secrets_only_namespaced_nodes_only_read_and_patch() {
    let csv = generated_csv();
    let strategy = &csv["spec"]["install"]["spec"];
    for (section, cluster) in [("clusterPermissions", true), ("permissions", false)] {
        for (g, r, verbs) in rules_of(&strategy[section][0]["rules"]) {
            assert!(
                g != "*" && r != "*" && !verbs.iter().any(|v| v == "*"),
                "wildcard in {section}: {g}/{r} {verbs:?}"
            );
            if r == "secrets" {
                assert!(!cluster, "Secrets granted cluster-wide");
            }
            if r == "nodes" {
                assert_eq!(verbs, ["list", "watch", "patch"]);
            }
        }
    }
    let metrics_reader = load_yaml(&repo().join(
        "bundle/manifests/sandboxed-containers-operator-metrics-reader_rbac.authorization.k8s.io_v1_clusterrole.yaml",
    ));
    assert_eq!(
        metrics_reader["rules"],
        json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}])
    );
}

// ---------------------------------------------------------------------------------------------
// CSV and alm-examples against the real schemas

#[test]
fn csv_validates_against_the_olm_csv_schema() {
    let committed = load_yaml(&repo().join("bundle/manifests").join(packaging::csv_file()));
    csv_schema().assert_valid(&committed, "the committed CSV");
}

#[test]
fn csv_schema_catches_planted_faults() {
    let schema = csv_schema();
    let mut missing = generated_csv();
    missing["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("displayName");
    schema.assert_caught(&missing, "/spec");
    assert!(
        schema
            .errors(&missing)
            .iter()
            .any(|e| e.contains("displayName"))
    );

    let mut unknown = generated_csv();
    unknown["spec"]["maturty"] = json!("alpha");
    schema.assert_caught(&unknown, "/spec");
    assert!(
        schema
            .errors(&unknown)
            .iter()
            .any(|e| e.contains("maturty"))
    );

    let mut wrong_type = generated_csv();
    wrong_type["spec"]["install"]["spec"]["deployments"][0]["spec"]["replicas"] = json!("one");
    schema.assert_caught(
        &wrong_type,
        "/spec/install/spec/deployments/0/spec/replicas",
    );

    let mut bad_container = generated_csv();
    bad_container["spec"]["install"]["spec"]["deployments"][0]["spec"]["template"]["spec"]["containers"]
        [0]["bogusField"] = json!(1);
    schema.assert_caught(
        &bad_container,
        "/spec/install/spec/deployments/0/spec/template/spec/containers/0",
    );

    let mut bad_webhook = generated_csv();
    bad_webhook["spec"]["webhookdefinitions"] = json!([{
        "type": "AdmissionWebhook", "generateName": "vkataconfig.kb.io",
        "sideEffects": "None", "admissionReviewVersions": ["v1"],
    }]);
    schema.assert_caught(&bad_webhook, "/spec/webhookdefinitions/0/type");

    let mut annotation = generated_csv();
    annotation["metadata"]["annotations"]["certified"] = json!(false);
    schema.assert_caught(&annotation, "/metadata/annotations/certified");
}

#[test]
fn a_bad_install_mode_passes_the_schema_but_not_the_checker() {
    // The CSV CRD has no enum for installModes[].type: only the semantic checker sees it.
    let mut bad = generated_csv();
    bad["spec"]["installModes"][0]["type"] = json!("OwnNamespaces");
    csv_schema().assert_valid(&bad, "a CSV with a misspelt install mode");
    let findings = check::check_csv(&bad);
    assert!(
        findings
            .iter()
            .any(|f| f
                .contains("spec.installModes[0].type: \"OwnNamespaces\" is not an install mode")),
        "{findings:?}"
    );
}

#[test]
fn a_forbidden_webhook_rule_passes_the_schema_but_not_the_checker() {
    let mut bad = generated_csv();
    bad["spec"]["webhookdefinitions"] = json!([{
        "type": "ValidatingAdmissionWebhook", "generateName": "vsubscription.kb.io",
        "deploymentName": packaging::OPERATOR_NAME,
        "sideEffects": "None", "admissionReviewVersions": ["v1"],
        "rules": [{"apiGroups": ["operators.coreos.com"], "apiVersions": ["v1alpha1"],
                   "operations": ["CREATE"], "resources": ["subscriptions"]}],
    }]);
    csv_schema().assert_valid(&bad, "a CSV whose webhook intercepts OLM");
    let findings = check::check_csv(&bad);
    assert!(
        findings
            .iter()
            .any(|f| f.contains("intercepting operators.coreos.com is forbidden by OLM")),
        "{findings:?}"
    );
}

#[test]
fn every_alm_example_validates_against_our_crd() {
    let schema = kataconfig_schema();
    let committed = load_yaml(&repo().join("bundle/manifests").join(packaging::csv_file()));
    let examples = check::alm_examples(&committed);
    assert!(!examples.is_empty());
    for (i, ex) in examples.iter().enumerate() {
        schema.assert_valid(ex, &format!("alm-examples[{i}]"));
    }
    let init: Value = serde_json::from_str(
        committed["metadata"]["annotations"]["operatorframework.io/initialization-resource"]
            .as_str()
            .expect("initialization-resource"),
    )
    .expect("JSON");
    schema.assert_valid(&init, "the initialization resource");
    for file in [
        "examples/kataconfig.yaml",
        "examples/kataconfig-selector.yaml",
    ] {
        schema.assert_valid(&load_yaml(&repo().join(file)), file);
    }
}

#[test]
fn alm_example_with_a_wrong_field_type_is_caught() {
    let schema = kataconfig_schema();
    let mut ex = csv::example_kataconfig();
    ex["spec"]["checkNodeEligibility"] = json!("yes");
    schema.assert_caught(&ex, "/spec/checkNodeEligibility");
    let mut ex = csv::example_kataconfig();
    ex["spec"]["logLevel"] = json!("verbose");
    schema.assert_caught(&ex, "/spec/logLevel");
    let mut ex = csv::example_kataconfig();
    ex["spec"]["kataConfigPoolSelecter"] = json!({});
    schema.assert_caught(&ex, "/spec");
}

// ---------------------------------------------------------------------------------------------
// Rendered MCO objects against the upstream MCO CRDs

fn rendered(kataconfig: &str, nodes: Option<&str>) -> Vec<Value> {
    let nodes = nodes.map(|n| repo().join(n));
    let out = render::render(
        &repo().join(kataconfig),
        nodes.as_deref(),
        Backend::MachineConfig,
    )
    .expect("render");
    yaml_docs(&out.yaml)
}

fn mco_schema(kind: &str) -> Schema {
    match kind {
        "MachineConfig" => Schema::upstream("0000_80_machine-config_01_machineconfigs.crd.yaml"),
        "MachineConfigPool" => {
            Schema::upstream("0000_80_machine-config_01_machineconfigpools.crd.yaml")
        }
        "ContainerRuntimeConfig" => {
            Schema::upstream("0000_80_machine-config_01_containerruntimeconfigs-Default.crd.yaml")
        }
        other => panic!("no MCO schema for {other}"),
    }
}

#[test]
fn rendered_mco_objects_validate_against_the_upstream_crds() {
    let mut seen = std::collections::BTreeSet::new();
    for (kc, nodes) in [
        ("examples/kataconfig.yaml", None),
        (
            "examples/kataconfig-selector.yaml",
            Some("examples/nodes.yaml"),
        ),
    ] {
        for obj in rendered(kc, nodes) {
            let kind = obj["kind"].as_str().unwrap_or_default().to_string();
            if [
                "MachineConfig",
                "MachineConfigPool",
                "ContainerRuntimeConfig",
            ]
            .contains(&kind.as_str())
            {
                mco_schema(&kind).assert_valid(&obj, &format!("{kind} rendered from {kc}"));
                seen.insert(kind);
            }
        }
    }
    assert_eq!(
        seen.len(),
        3,
        "expected all three MCO kinds in the render output, saw {seen:?}"
    );
}

#[test]
fn mco_schemas_catch_planted_wrong_types() {
    let docs = rendered(
        "examples/kataconfig-selector.yaml",
        Some("examples/nodes.yaml"),
    );
    let first = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .cloned()
            .expect(kind)
    };

    let mut mc = first("MachineConfig");
    mc["spec"]["extensions"] = json!("kata-containers");
    mco_schema("MachineConfig").assert_caught(&mc, "/spec/extensions");

    let mut pool = first("MachineConfigPool");
    pool["spec"]["paused"] = json!("no");
    mco_schema("MachineConfigPool").assert_caught(&pool, "/spec/paused");

    let mut crc = first("ContainerRuntimeConfig");
    crc["spec"]["containerRuntimeConfig"]["logLevl"] = json!("debug");
    mco_schema("ContainerRuntimeConfig").assert_caught(&crc, "/spec/containerRuntimeConfig");
}

// ---------------------------------------------------------------------------------------------
// Core objects against the Kubernetes schemas (kubernetes-validate from PyPI)

fn kubernetes_validate() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("KUBERNETES_VALIDATE").map(PathBuf::from),
        Some(repo().join("target/kubernetes-validate-venv/bin/kubernetes-validate")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// Runs `kubernetes-validate --strict` for `version` on the objects; returns (success, output).
fn run_kubernetes_validate(tool: &Path, version: &str, objects: &[Value]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (i, obj) in objects.iter().enumerate() {
        let path = dir.path().join(format!("{i:02}.yaml"));
        std::fs::write(&path, serde_yaml::to_string(obj).expect("yaml")).expect("write");
        files.push(path);
    }
    let out = Command::new(tool)
        .args(["--strict", "-k", version])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && !text.contains("ERROR"), text)
}

/// Every core object we ship or the operator creates.
fn core_objects() -> Vec<Value> {
    let mut objects = Vec::new();
    let deploy = std::fs::read_to_string(repo().join("deploy/operator.yaml")).expect("deploy");
    objects.extend(yaml_docs(&deploy));
    let olm = std::fs::read_to_string(repo().join("deploy/olm.yaml")).expect("deploy/olm.yaml");
    objects.extend(
        yaml_docs(&olm)
            .into_iter()
            .filter(|o| o["apiVersion"] == "v1"),
    );
    for (path, content) in check::read_bundle_dir(&repo().join("bundle")).expect("bundle") {
        let obj: Value = serde_yaml::from_str(&content).expect("YAML");
        let group = obj["apiVersion"].as_str().unwrap_or_default();
        if path.starts_with("manifests")
            && (group == "v1" || group.starts_with("rbac.authorization.k8s.io"))
        {
            objects.push(obj);
        }
    }
    // The Prometheus Role and RoleBinding the operator keeps (same builders as the operator's).
    let plain_monitoring =
        std::fs::read_to_string(repo().join("deploy/monitoring.yaml")).expect("monitoring");
    objects.extend(yaml_docs(&plain_monitoring).into_iter().filter(|o| {
        o["apiVersion"]
            .as_str()
            .is_some_and(|a| a.starts_with("rbac.authorization.k8s.io"))
    }));
    objects.extend(repo_webhook_configurations());
    // The CSV's install strategy, as the Deployment OLM creates from it.
    let csv = generated_csv();
    let d = &csv["spec"]["install"]["spec"]["deployments"][0];
    objects.push(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": d["name"]}, "spec": d["spec"]}));
    // What `render` prints: Node label patches and the RuntimeClass.
    for (kc, nodes) in [
        ("examples/kataconfig.yaml", None),
        (
            "examples/kataconfig-selector.yaml",
            Some("examples/nodes.yaml"),
        ),
    ] {
        objects.extend(
            rendered(kc, nodes)
                .into_iter()
                .filter(|o| o["kind"] == "Node" || o["kind"] == "RuntimeClass"),
        );
    }
    // What the node-installer backend creates: ConfigMap, DaemonSet and its RuntimeClass, with
    // the installer fields set and unset.
    for kc in [
        "examples/kataconfig.yaml",
        "examples/kataconfig-node-installer.yaml",
    ] {
        let out = render::render(&repo().join(kc), None, Backend::NodeInstaller).expect("render");
        objects.extend(yaml_docs(&out.yaml));
    }
    objects
}

/// Validating/MutatingWebhookConfigurations kept in the repository (`webhooks/`), if any.
fn repo_webhook_configurations() -> Vec<Value> {
    let dir = repo().join("webhooks");
    let Ok(files) = check::read_bundle_dir(&dir) else {
        return Vec::new();
    };
    files
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .flat_map(|(_, text)| {
            serde_yaml::Deserializer::from_str(&text)
                .filter_map(|d| serde::Deserialize::deserialize(d).ok())
                .collect::<Vec<Value>>()
        })
        .filter(|o| {
            o["kind"] == "ValidatingWebhookConfiguration"
                || o["kind"] == "MutatingWebhookConfiguration"
        })
        .collect()
}

#[test]
fn repository_webhook_configurations_avoid_rules_olm_forbids() {
    let configs = repo_webhook_configurations();
    if configs.is_empty() {
        println!("note: no webhook configurations under webhooks/ to check");
    }
    for config in &configs {
        let name = config["metadata"]["name"].as_str().unwrap_or_default();
        for (i, webhook) in config["webhooks"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let rules = webhook["rules"].as_array().map_or(&[][..], Vec::as_slice);
            let findings = check::check_webhook_rules(rules, &format!("{name}.webhooks[{i}]"));
            assert!(findings.is_empty(), "{findings:#?}");
            assert_eq!(webhook["admissionReviewVersions"], json!(["v1"]), "{name}");
        }
    }
}

#[test]
fn core_objects_pass_kubernetes_validate_strict() {
    let Some(tool) = kubernetes_validate() else {
        println!(
            "SKIP core_objects_pass_kubernetes_validate_strict: kubernetes-validate not installed (hack/test.sh installs it and sets KUBERNETES_VALIDATE)"
        );
        return;
    };
    let objects = core_objects();
    let kinds: std::collections::BTreeSet<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or("?").to_string())
        .collect();
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "RuntimeClass",
        "Node",
        "DaemonSet",
        "ConfigMap",
    ] {
        assert!(
            kinds.contains(kind),
            "no {kind} among the validated objects: {kinds:?}"
        );
    }
    // The oldest Kubernetes the CSV claims (minKubeVersion) and the one k8s-openapi targets.
    for version in [packaging::MIN_KUBE_VERSION, "1.33.0"] {
        let (ok, out) = run_kubernetes_validate(&tool, version, &objects);
        assert!(
            ok,
            "kubernetes-validate --strict -k {version} failed:\n{out}"
        );
    }
}

#[test]
fn kubernetes_validate_catches_planted_faults() {
    let Some(tool) = kubernetes_validate() else {
        println!(
            "SKIP kubernetes_validate_catches_planted_faults: kubernetes-validate not installed"
        );
        return;
    };
    let mut deployment =
        serde_json::to_value(packaging::manifests::deployment("ns")).expect("json");
    deployment["spec"]["replicas"] = json!("one");
    let (ok, out) = run_kubernetes_validate(&tool, "1.33.0", &[deployment]);
    assert!(!ok, "a Deployment with replicas: \"one\" passed:\n{out}");
    assert!(out.contains("replicas"), "{out}");

    let docs = rendered("examples/kataconfig.yaml", None);
    let mut rc = docs
        .into_iter()
        .find(|d| d["kind"] == "RuntimeClass")
        .expect("RuntimeClass");
    rc["scheduling"]["nodeSelectr"] = json!({});
    let (ok, out) = run_kubernetes_validate(&tool, "1.33.0", &[rc]);
    assert!(!ok, "a RuntimeClass with an unknown field passed:\n{out}");
}

/// The ValidatingAdmissionPolicy and its binding as the operator applies them (with the
/// ownerReference), and as committed under `webhooks/manifests/`. ValidatingAdmissionPolicy v1
/// exists from Kubernetes 1.30 (older API servers keep the webhooks as the gate).
#[test]
fn admission_policy_passes_kubernetes_validate_strict() {
    use sandboxed_containers_operator::api::KataConfig;
    use sandboxed_containers_operator::webhook::admission_policy;
    use sandboxed_containers_operator::webhook::registration::kataconfig_owner;
    let Some(tool) = kubernetes_validate() else {
        println!(
            "SKIP admission_policy_passes_kubernetes_validate_strict: kubernetes-validate not installed"
        );
        return;
    };
    let mut kc = KataConfig::new("example", Default::default());
    kc.metadata.uid = Some("6e0c1f4e-6d1e-4a7e-9d49-000000000001".into());
    let owner = kataconfig_owner(&kc);
    let ns = "openshift-sandboxed-containers-operator";
    let mut objects = vec![
        serde_json::to_value(admission_policy::namespace_policy(owner.clone(), ns)).expect("json"),
        serde_json::to_value(admission_policy::namespace_policy_binding(owner, "example"))
            .expect("json"),
    ];
    let committed =
        std::fs::read_to_string(repo().join("webhooks/manifests/admission-policy.yaml"))
            .expect("webhooks/manifests/admission-policy.yaml");
    objects.extend(yaml_docs(&committed));
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        kinds,
        [
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ]
    );
    for version in ["1.30.0", "1.33.0"] {
        let (ok, out) = run_kubernetes_validate(&tool, version, &objects);
        assert!(
            ok,
            "kubernetes-validate --strict -k {version} failed:\n{out}"
        );
    }
    // The check catches a misspelt field in a rule.
    let mut bad = objects[0].clone();
    bad["spec"]["validations"][0]["messageExpresion"] = json!("'x'");
    let (ok, out) = run_kubernetes_validate(&tool, "1.33.0", &[bad]);
    assert!(!ok, "a rule with an unknown field passed:\n{out}");
}

// ---------------------------------------------------------------------------------------------
// OLM install example and images

#[test]
fn olm_install_example_validates_against_the_olm_crds() {
    let text = std::fs::read_to_string(repo().join("deploy/olm.yaml")).expect("deploy/olm.yaml");
    let docs = yaml_docs(&text);
    let mut checked = 0;
    for doc in &docs {
        let (file, version) = match doc["kind"].as_str() {
            Some("CatalogSource") => ("operators.coreos.com_catalogsources.yaml", "v1alpha1"),
            Some("OperatorGroup") => ("operators.coreos.com_operatorgroups.yaml", "v1"),
            Some("Subscription") => ("operators.coreos.com_subscriptions.yaml", "v1alpha1"),
            _ => continue,
        };
        Schema::from_crd(&load_yaml(&shared_crds().join(file)), version)
            .assert_valid(doc, &format!("deploy/olm.yaml {}", doc["kind"]));
        checked += 1;
    }
    assert_eq!(checked, 3);
    // OwnNamespace install: the OperatorGroup targets exactly the operator's namespace.
    let og = docs
        .iter()
        .find(|d| d["kind"] == "OperatorGroup")
        .expect("OperatorGroup");
    assert_eq!(
        og["spec"]["targetNamespaces"],
        json!([og["metadata"]["namespace"]])
    );
    let sub = docs
        .iter()
        .find(|d| d["kind"] == "Subscription")
        .expect("Subscription");
    let mut bad = sub.clone();
    bad["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("sourceNamespace");
    Schema::from_crd(
        &load_yaml(&shared_crds().join("operators.coreos.com_subscriptions.yaml")),
        "v1alpha1",
    )
    .assert_caught(&bad, "/spec");
}

#[test]
fn dockerfile_is_multi_stage_release_non_root_and_matches_the_deployment() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(
        froms[1].contains("distroless") && froms[1].ends_with(":nonroot"),
        "{froms:?}"
    );
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(dockerfile.lines().any(|l| l == "USER 65532:65532"));
    assert!(dockerfile.contains("LABEL name="));
    let spec = packaging::manifests::deployment_spec();
    let container = &spec.template.spec.expect("pod").containers[0];
    let command = container.command.clone().expect("command");
    assert!(
        dockerfile.contains(&format!("ENTRYPOINT [\"{}\"]", command[0])),
        "the Deployment runs {} but the image's ENTRYPOINT differs",
        command[0]
    );
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    assert!(ignore.lines().any(|l| l == "target/"));
    assert!(
        !ignore.lines().any(|l| l.starts_with("bundle")),
        "bundle.Dockerfile needs bundle/ in the context"
    );
}

#[test]
fn bundle_command_writes_every_generated_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_sandboxed-containers-operator"))
        .args(["bundle", "--output"])
        .arg(dir.path())
        .output()
        .expect("run bundle");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (path, content) in packaging::generated_files().expect("generate") {
        let written = std::fs::read_to_string(dir.path().join(&path)).unwrap_or_default();
        assert_eq!(written, content, "{}", path.display());
    }

    let file = dir.path().join("bundle.Dockerfile");
    let out = Command::new(env!("CARGO_BIN_EXE_sandboxed-containers-operator"))
        .args(["bundle", "--output"])
        .arg(&file)
        .output()
        .expect("run bundle");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: creating "), "{stderr}");
}

#[test]
fn deployment_arguments_parse_as_the_run_command() {
    use clap::Parser as _;
    use sandboxed_containers_operator::cli::{Cli, Command as Sub};
    let spec = packaging::manifests::deployment_spec();
    let container = &spec.template.spec.expect("pod").containers[0];
    let mut argv = container.command.clone().expect("command");
    argv.extend(container.args.clone().expect("args"));
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let Sub::Run(run) = cli.command else {
        panic!("{argv:?} is not the run command")
    };
    assert_eq!(run.webhook_service, packaging::WEBHOOK_SERVICE);
    assert_eq!(
        run.webhook_bind.port(),
        sandboxed_containers_operator::names::WEBHOOK_PORT
    );
    assert_eq!(
        run.metrics_bind.port(),
        sandboxed_containers_operator::names::METRICS_PORT
    );
    assert_eq!(
        run.health_bind.port(),
        sandboxed_containers_operator::names::HEALTH_PORT
    );
    assert!(!run.metrics_insecure && !run.disable_webhooks && !run.disable_controller);
}
