//! `render`: the offline planner. Reads a KataConfig (and optionally the cluster's nodes) from
//! files and prints every object the reconciler would create or change, as one YAML stream.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::api::{Backend, KataConfig};
use crate::names::{
    CONTROL_PLANE_ROLE_LABEL, DEFAULT_OPERATOR_NAMESPACE, MASTER_ROLE_LABEL, WORKER_ROLE_LABEL,
};
use crate::plan::{self, LabelChange, NodeInfo, node_installer};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{path}: cannot read file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("{path}: {message}")]
    Content { path: PathBuf, message: String },
}

/// The rendered stream plus notes for stderr (assumptions, warnings).
#[derive(Debug)]
pub struct Rendered {
    pub yaml: String,
    pub notes: Vec<String>,
}

/// Reads the KataConfig and the nodes and renders what `backend` would create or change.
pub fn render(
    kataconfig: &Path,
    nodes: Option<&Path>,
    backend: Backend,
) -> Result<Rendered, RenderError> {
    let kc = read_kataconfig(kataconfig)?;
    let mut notes = Vec::new();
    let nodes = match nodes {
        Some(path) => read_nodes(path)?,
        None => {
            notes.push("no --nodes file given: using a built-in example cluster of 3 workers (worker-0..2) and 3 control-plane nodes (master-0..2)".to_string());
            example_cluster()
        }
    };
    let spec_error = |e: plan::SpecError| RenderError::Content {
        path: kataconfig.to_path_buf(),
        message: e.to_string(),
    };
    let mut out = String::new();
    match backend {
        Backend::MachineConfig => {
            let desired = plan::desired_state(&kc, &nodes).map_err(spec_error)?;
            notes.extend(desired.warnings.iter().map(|w| format!("warning: {w}")));
            machine_config_objects(&mut out, &desired)?;
        }
        Backend::NodeInstaller => {
            notes.push(format!(
                "node-installer backend: namespaced objects are shown in the default operator namespace {DEFAULT_OPERATOR_NAMESPACE}"
            ));
            let desired = node_installer::desired_state(&kc, &nodes, DEFAULT_OPERATOR_NAMESPACE)
                .map_err(spec_error)?;
            notes.extend(desired.warnings.iter().map(|w| format!("warning: {w}")));
            node_installer_objects(&mut out, &desired)?;
        }
    }
    Ok(Rendered { yaml: out, notes })
}

fn machine_config_objects(
    out: &mut String,
    desired: &plan::DesiredState,
) -> Result<(), RenderError> {
    let topology = match desired.topology() {
        plan::Topology::Regular => "regular cluster: kata nodes join the kata-oc pool",
        plan::Topology::Converged => "converged cluster: kata is installed through the master pool",
    };
    let _ = writeln!(
        out,
        "# {topology}; kata nodes: {}",
        desired.selection.kata_nodes.join(", ")
    );
    label_changes(out, &desired.selection.label_changes)?;
    if let Some(pool) = &desired.pool {
        push_doc(out, "MachineConfigPool for the kata nodes", pool)?;
    }
    for mc in &desired.machine_configs {
        push_doc(out, "MachineConfig", mc)?;
    }
    if let Some(crc) = &desired.container_runtime_config {
        push_doc(out, "CRI-O log level for the kata pool", crc)?;
    }
    push_doc(
        out,
        "RuntimeClass (created once the pool has rolled out)",
        &desired.runtime_class,
    )
}

fn node_installer_objects(
    out: &mut String,
    desired: &node_installer::InstallerState,
) -> Result<(), RenderError> {
    let _ = writeln!(
        out,
        "# node-installer backend (no Machine Config Operator); kata nodes: {}",
        desired.selection.kata_nodes.join(", ")
    );
    label_changes(out, &desired.selection.label_changes)?;
    push_doc(
        out,
        "the installer's custom runtime (the kata handler)",
        &desired.config_map,
    )?;
    push_doc(
        out,
        "the installer, on every node with the kata role label",
        &desired.daemon_set,
    )?;
    push_doc(
        out,
        "RuntimeClass (schedules only onto nodes the installer finished)",
        &desired.runtime_class,
    )
}

fn label_changes(out: &mut String, changes: &[LabelChange]) -> Result<(), RenderError> {
    for change in changes {
        match change {
            LabelChange::Add { node, label } => {
                let patch = Node {
                    metadata: ObjectMeta {
                        name: Some(node.clone()),
                        labels: Some(BTreeMap::from([(label.to_string(), String::new())])),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                push_doc(out, &format!("node {node}: add label {label}=\"\""), &patch)?;
            }
            LabelChange::Remove { node, label } => {
                let _ = writeln!(out, "---\n# node {node}: remove label {label}");
            }
        }
    }
    Ok(())
}

fn push_doc<T: Serialize>(out: &mut String, comment: &str, obj: &T) -> Result<(), RenderError> {
    let yaml = serde_yaml::to_string(obj).map_err(|source| RenderError::Yaml {
        path: PathBuf::from("<output>"),
        source,
    })?;
    let _ = write!(out, "---\n# {comment}\n{yaml}");
    Ok(())
}

fn read(path: &Path) -> Result<String, RenderError> {
    std::fs::read_to_string(path).map_err(|source| RenderError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and type-checks a KataConfig manifest; errors name the file and the field.
pub fn read_kataconfig(path: &Path) -> Result<KataConfig, RenderError> {
    let text = read(path)?;
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|source| RenderError::Yaml {
            path: path.to_path_buf(),
            source,
        })?;
    let content = |message: String| RenderError::Content {
        path: path.to_path_buf(),
        message,
    };
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let api_version = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("");
    if kind != "KataConfig" || api_version != "kataconfiguration.openshift.io/v1" {
        return Err(content(format!(
            "expected apiVersion: kataconfiguration.openshift.io/v1 and kind: KataConfig, found apiVersion: {api_version:?}, kind: {kind:?}"
        )));
    }
    let mut kc: KataConfig = from_yaml_value(value).map_err(content)?;
    if kc.metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err(content(
            "metadata.name: must be set (e.g. example-kataconfig)".into(),
        ));
    }
    // Objects read from a file have no uid; `render` output never carries owner references.
    kc.metadata.uid = None;
    Ok(kc)
}

/// Reads nodes from a `List`/`NodeList` (as `kubectl get nodes -o yaml` prints) or a stream of
/// `Node` documents.
pub fn read_nodes(path: &Path) -> Result<Vec<NodeInfo>, RenderError> {
    let text = read(path)?;
    let content = |message: String| RenderError::Content {
        path: path.to_path_buf(),
        message,
    };
    let mut nodes = Vec::new();
    for (doc_index, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc).map_err(|source| RenderError::Yaml {
            path: path.to_path_buf(),
            source,
        })?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let items: Vec<(String, serde_yaml::Value)> = match kind {
            "List" | "NodeList" => value
                .get("items")
                .and_then(|i| i.as_sequence())
                .ok_or_else(|| content(format!("document {doc_index}: {kind} has no items list")))?
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("document {doc_index}: items[{i}]"), v.clone()))
                .collect(),
            "Node" => vec![(format!("document {doc_index}"), value)],
            other => {
                return Err(content(format!(
                    "document {doc_index}: expected kind Node, NodeList or List, found {other:?}"
                )));
            }
        };
        for (at, item) in items {
            let item_kind = item.get("kind").and_then(|k| k.as_str()).unwrap_or("Node");
            if item_kind != "Node" {
                return Err(content(format!(
                    "{at}: expected kind Node, found {item_kind:?}"
                )));
            }
            let node: Node = from_yaml_value(item).map_err(|e| content(format!("{at}: {e}")))?;
            let info = NodeInfo::from_meta(&node.metadata);
            if info.name.is_empty() {
                return Err(content(format!("{at}: metadata.name must be set")));
            }
            nodes.push(info);
        }
    }
    Ok(nodes)
}

use serde::Deserialize as _;

/// Deserializes with the path of the offending field in the message (e.g.
/// `spec.checkNodeEligibility: invalid type: string "yes", expected a boolean`). A missing or
/// null `spec` is defaulted, as the CRD schema makes the API server do.
fn from_yaml_value<T: serde::de::DeserializeOwned>(value: serde_yaml::Value) -> Result<T, String> {
    let mut json: serde_json::Value = serde_json::to_value(value).map_err(|e| e.to_string())?;
    if let Some(obj) = json.as_object_mut()
        && obj.get("kind").and_then(|k| k.as_str()) == Some("KataConfig")
        && obj.get("spec").is_none_or(serde_json::Value::is_null)
    {
        obj.insert("spec".into(), serde_json::json!({}));
    }
    serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

/// Three dedicated workers and three control-plane nodes, as a fresh OpenShift install has.
pub fn example_cluster() -> Vec<NodeInfo> {
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(NodeInfo {
            name: format!("master-{i}").into(),
            labels: BTreeMap::from([
                (MASTER_ROLE_LABEL.to_string(), String::new()),
                (CONTROL_PLANE_ROLE_LABEL.to_string(), String::new()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
            ])
            .into(),
            annotations: Default::default(),
        });
    }
    for i in 0..3 {
        nodes.push(NodeInfo {
            name: format!("worker-{i}").into(),
            labels: BTreeMap::from([
                (WORKER_ROLE_LABEL.to_string(), String::new()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
            ])
            .into(),
            annotations: Default::default(),
        });
    }
    nodes
}
