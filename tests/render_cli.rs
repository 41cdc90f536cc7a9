//! The `render` and `crd` commands as a user runs them: real binary, real files, exit codes and
//! messages that name the file and the field.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sandboxed-containers-operator"))
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn render(args: &[&str]) -> Output {
    bin()
        .arg("render")
        .args(args)
        .output()
        .expect("binary runs")
}

fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, content).expect("write");
    path.to_string_lossy().into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn kinds(yaml: &str) -> Vec<(String, String)> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
        .filter(|v| !v.is_null())
        .map(|v| {
            (
                v["kind"].as_str().unwrap_or_default().to_string(),
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn render_with_nodes_file_prints_every_object_in_apply_order() {
    let out = render(&[
        "-f",
        example("kataconfig-selector.yaml").to_str().expect("utf8"),
        "--nodes",
        example("nodes.yaml").to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let objects = kinds(&stdout(&out));
    let expected: Vec<(String, String)> = [
        ("Node", "worker-0"),
        ("Node", "worker-1"),
        ("MachineConfigPool", "kata-oc"),
        ("MachineConfig", "50-enable-sandboxed-containers-extension"),
        ("MachineConfig", "50-kata-crio-dropin"),
        ("ContainerRuntimeConfig", "kata-crio-config"),
        ("RuntimeClass", "kata"),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    assert_eq!(objects, expected);
    assert!(
        !stderr(&out).contains("built-in example cluster"),
        "no assumption note when nodes are given"
    );
}

#[test]
fn render_without_nodes_uses_the_example_cluster_and_says_so() {
    let out = render(&["-f", example("kataconfig.yaml").to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("built-in example cluster of 3 workers"));
    let nodes: Vec<_> = kinds(&stdout(&out))
        .into_iter()
        .filter(|(k, _)| k == "Node")
        .map(|(_, n)| n)
        .collect();
    assert_eq!(nodes, ["worker-0", "worker-1", "worker-2"]);
}

#[test]
fn render_on_a_compact_cluster_targets_the_master_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = String::from("apiVersion: v1\nkind: NodeList\nitems:\n");
    for i in 0..3 {
        nodes.push_str(&format!(
            "- metadata:\n    name: m{i}\n    labels:\n      node-role.kubernetes.io/master: \"\"\n      node-role.kubernetes.io/worker: \"\"\n"
        ));
    }
    let nodes = write(&dir, "nodes.yaml", &nodes);
    let out = render(&[
        "-f",
        example("kataconfig.yaml").to_str().expect("utf8"),
        "--nodes",
        &nodes,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let objects = kinds(&text);
    assert!(
        !objects
            .iter()
            .any(|(k, _)| k == "MachineConfigPool" || k == "Node")
    );
    assert!(text.contains("machineconfiguration.openshift.io/role: master"));
    assert!(text.contains("node-role.kubernetes.io/master: ''"));
}

#[test]
fn render_reports_a_missing_file_by_name() {
    let out = render(&["-f", "/nonexistent/kc.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/kc.yaml: cannot read file"),
        "{err}"
    );
}

#[test]
fn render_reports_invalid_yaml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = write(&dir, "kc.yaml", "kind: KataConfig\n  bad: [indent\n");
    let out = render(&["-f", &kc]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("kc.yaml: not valid YAML"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn render_reports_the_wrong_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = write(
        &dir,
        "kc.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
    );
    let out = render(&["-f", &kc]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("expected apiVersion: kataconfiguration.openshift.io/v1 and kind: KataConfig"),
        "{err}"
    );
    assert!(err.contains("kind: \"Pod\""), "{err}");
}

#[test]
fn render_names_a_field_with_the_wrong_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = write(
        &dir,
        "kc.yaml",
        "apiVersion: kataconfiguration.openshift.io/v1\nkind: KataConfig\nmetadata: {name: x}\nspec:\n  checkNodeEligibility: \"yes\"\n",
    );
    let out = render(&["-f", &kc]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("kc.yaml: spec.checkNodeEligibility: invalid type"),
        "{err}"
    );
}

#[test]
fn render_names_the_invalid_selector_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = write(
        &dir,
        "kc.yaml",
        "apiVersion: kataconfiguration.openshift.io/v1\nkind: KataConfig\nmetadata: {name: x}\nspec:\n  kataConfigPoolSelector:\n    matchExpressions:\n    - {key: zone, operator: In}\n",
    );
    let out = render(&["-f", &kc]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("spec.kataConfigPoolSelector.matchExpressions[0].values: must be specified"),
        "{err}"
    );
}

#[test]
fn render_refuses_a_nodes_file_of_another_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = write(
        &dir,
        "nodes.yaml",
        "apiVersion: v1\nkind: PodList\nitems: []\n",
    );
    let out = render(&[
        "-f",
        example("kataconfig.yaml").to_str().expect("utf8"),
        "--nodes",
        &nodes,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(
            "nodes.yaml: document 0: expected kind Node, NodeList or List, found \"PodList\""
        ),
        "{err}"
    );
}

#[test]
fn render_refuses_a_node_without_a_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = write(
        &dir,
        "nodes.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- kind: Node\n  metadata: {labels: {a: b}}\n",
    );
    let out = render(&[
        "-f",
        example("kataconfig.yaml").to_str().expect("utf8"),
        "--nodes",
        &nodes,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("document 0: items[0]: metadata.name must be set"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn render_warns_when_the_selector_matches_no_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = write(
        &dir,
        "kc.yaml",
        "apiVersion: kataconfiguration.openshift.io/v1\nkind: KataConfig\nmetadata: {name: x}\nspec:\n  kataConfigPoolSelector:\n    matchLabels: {zone: nowhere}\n",
    );
    let out = render(&["-f", &kc]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("warning: no worker node matches spec.kataConfigPoolSelector"));
}

#[test]
fn crd_command_prints_the_committed_crd() {
    let out = bin().arg("crd").output().expect("binary runs");
    assert!(out.status.success());
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("bundle/manifests/kataconfiguration.openshift.io_kataconfigs.yaml"),
    )
    .expect("committed CRD");
    assert_eq!(stdout(&out), committed);
}

#[test]
fn render_for_the_node_installer_backend_prints_config_map_daemon_set_and_runtime_class() {
    let out = render(&[
        "-f",
        example("kataconfig-node-installer.yaml")
            .to_str()
            .expect("utf8"),
        "--backend",
        "node-installer",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let yaml = stdout(&out);
    assert_eq!(
        kinds(&yaml),
        [
            ("Node".to_string(), "worker-0".to_string()),
            ("Node".to_string(), "worker-1".to_string()),
            ("Node".to_string(), "worker-2".to_string()),
            ("ConfigMap".to_string(), "kata-node-installer".to_string()),
            ("DaemonSet".to_string(), "kata-node-installer".to_string()),
            ("RuntimeClass".to_string(), "kata".to_string()),
        ]
    );
    assert!(yaml.contains("quay.io/kata-containers/kata-deploy:4.1.0"));
    assert!(
        yaml.contains("value: k3s"),
        "the distribution reaches the installer"
    );
    assert!(!yaml.contains("MachineConfig"), "nothing of the MCO");
    assert!(stderr(&out).contains("node-installer backend"));
}

#[test]
fn render_rejects_an_unknown_backend_and_lists_the_valid_ones() {
    let out = render(&[
        "-f",
        example("kataconfig.yaml").to_str().expect("utf8"),
        "--backend",
        "ansible",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("invalid value 'ansible' for '--backend <BACKEND>'")
            && err.contains("machine-config")
            && err.contains("node-installer"),
        "{err}"
    );
}
