//! Which nodes get kata: cluster topology detection and node selection (pure).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use crate::api::KataConfigSpec;
use crate::names::{
    CONTROL_PLANE_ROLE_LABEL, KATA_POOL, KATA_ROLE_LABEL, KATA_RUNTIME_LABEL, MASTER_POOL,
    MASTER_ROLE_LABEL, MCO_CURRENT_CONFIG, MCO_DESIRED_CONFIG, MCO_REASON, MCO_STATE,
    NFD_KATA_LABEL, WORKER_ROLE_LABEL,
};
use crate::selector::{self, FieldError};

/// The parts of a Node the planner reads (a metadata-only watch is enough): the compact record
/// the shared cache keeps per node. Cloning one copies a name and two pointers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeInfo {
    /// Shared: a snapshot of 5,000 nodes copies pointers, not names.
    pub name: Arc<str>,
    pub labels: NodeLabels,
    /// The MCO's per-node state ([`NODE_ANNOTATIONS`]); other annotations are not kept.
    pub annotations: NodeLabels,
}

impl NodeInfo {
    /// The record of a node's metadata, keeping only [`NODE_ANNOTATIONS`].
    pub fn from_meta(meta: &ObjectMeta) -> Self {
        Self::from_meta_with(meta, &mut |s| Arc::from(s))
    }

    /// [`NodeInfo::from_meta`], with every label and annotation string made by `intern` (the
    /// cache shares one copy of each string among thousands of nodes).
    pub fn from_meta_with(meta: &ObjectMeta, intern: &mut dyn FnMut(&str) -> Arc<str>) -> Self {
        let labels = meta
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (intern(k), intern(v)))
            .collect();
        let annotations = meta
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| NODE_ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (intern(k), intern(v)))
            .collect();
        NodeInfo {
            name: meta.name.as_deref().unwrap_or_default().into(),
            labels: NodeLabels::from_pairs(labels),
            annotations: NodeLabels::from_pairs(annotations),
        }
    }

    pub fn has_label(&self, key: &str) -> bool {
        self.labels.contains_key(key)
    }

    pub fn is_control_plane(&self) -> bool {
        self.has_label(MASTER_ROLE_LABEL) || self.has_label(CONTROL_PLANE_ROLE_LABEL)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key)
    }
}

/// The only node annotations the planner reads: the MCO's per-node state.
pub const NODE_ANNOTATIONS: [&str; 4] = [
    MCO_CURRENT_CONFIG,
    MCO_DESIRED_CONFIG,
    MCO_STATE,
    MCO_REASON,
];

/// The node labels the planner reads whatever the KataConfig says: the roles, the kata role and
/// runtime labels, NFD's kata label. Any other label matters only as a key of a KataConfig's
/// `kataConfigPoolSelector`.
pub const NODE_LABELS_READ: [&str; 6] = [
    WORKER_ROLE_LABEL,
    MASTER_ROLE_LABEL,
    CONTROL_PLANE_ROLE_LABEL,
    KATA_ROLE_LABEL,
    KATA_RUNTIME_LABEL,
    NFD_KATA_LABEL,
];

/// Whether going from `old` to `new` (records of one node) can change anything the planner
/// decides for a KataConfig among `specs`: an MCO annotation, or a label in
/// [`NODE_LABELS_READ`] or a selector's keys. Other labels are rewritten by other controllers
/// (kube-controller-manager adds `beta.kubernetes.io/os` to every node, NFD refreshes its
/// feature labels) and must not wake the reconciler on each node.
pub fn planner_reads_change<'a>(
    old: &NodeInfo,
    new: &NodeInfo,
    specs: impl IntoIterator<Item = &'a KataConfigSpec> + Clone,
) -> bool {
    if old.annotations != new.annotations {
        return true;
    }
    let changed = |k: &str| old.labels.get(k) != new.labels.get(k);
    let read = |k: &str| {
        NODE_LABELS_READ.contains(&k) || specs.clone().into_iter().any(|s| selector_reads(s, k))
    };
    old.labels
        .keys()
        .chain(new.labels.keys())
        .any(|k| changed(k) && read(k))
}

/// Whether the `kataConfigPoolSelector` of `spec` looks at label `key`.
fn selector_reads(spec: &KataConfigSpec, key: &str) -> bool {
    let Some(sel) = &spec.kata_config_pool_selector else {
        return false;
    };
    sel.match_labels.iter().flatten().any(|(k, _)| k == key)
        || sel.match_expressions.iter().flatten().any(|r| r.key == key)
}

/// Labels (or annotations) of a node record: (key, value) pairs sorted by key behind one `Arc`,
/// each string shared. A snapshot of 5,000 nodes copies pointers, not 100,000 strings, and a
/// node costs two pointers per label instead of a map node and two strings; a write (the
/// planner moving a node in or out of the kata pool) copies that node's pairs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NodeLabels(Arc<[(Arc<str>, Arc<str>)]>);

impl NodeLabels {
    /// From pairs in any order (the last value of a repeated key wins).
    fn from_pairs(mut pairs: Vec<(Arc<str>, Arc<str>)>) -> Self {
        pairs.sort_by(|a, b| key_order(&a.0, &b.0));
        pairs.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(&mut earlier.1, &mut later.1);
            }
            same
        });
        NodeLabels(pairs.into())
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| key_order(k, key))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).ok().map(|i| self.0[i].1.as_ref())
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Sets `key` to `value`; returns the value it had.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        let mut pairs = self.0.to_vec();
        let old = match self.position(&key) {
            Ok(i) => Some(std::mem::replace(&mut pairs[i].1, value.into()).to_string()),
            Err(i) => {
                pairs.insert(i, (key.into(), value.into()));
                None
            }
        };
        self.0 = pairs.into();
        old
    }

    /// Removes `key`; returns the value it had.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.position(key).ok()?;
        let mut pairs = self.0.to_vec();
        let (_, old) = pairs.remove(i);
        self.0 = pairs.into();
        Some(old.to_string())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pairs in storage order (by key length, then key).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }
}

impl std::fmt::Debug for NodeLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut pairs: Vec<(&str, &str)> = self.iter().collect();
        pairs.sort_unstable();
        f.debug_map().entries(pairs).finish()
    }
}

/// The order pairs are stored and searched in: by length first, so a lookup among ~20 label
/// keys that share long prefixes (`node-role.kubernetes.io/`, `feature.node.kubernetes.io/`)
/// mostly compares lengths and reads bytes only for keys of the same length. It is the
/// planner's hottest path: several lookups per node per reconcile.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl std::ops::Index<&str> for NodeLabels {
    type Output = str;

    /// The value of `key`; panics when it is absent (like a map's index).
    fn index(&self, key: &str) -> &str {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no label or annotation {key:?}"),
        }
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for NodeLabels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(it: I) -> Self {
        NodeLabels::from_pairs(
            it.into_iter()
                .map(|(k, v)| (Arc::from(k.as_ref()), Arc::from(v.as_ref())))
                .collect(),
        )
    }
}

impl From<BTreeMap<String, String>> for NodeLabels {
    fn from(m: BTreeMap<String, String>) -> Self {
        m.into_iter().collect()
    }
}

impl selector::LabelLookup for NodeLabels {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

/// Whether kata goes onto a dedicated `kata-oc` pool or onto the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Dedicated workers exist: kata nodes move into the `kata-oc` pool.
    Regular,
    /// The control-plane nodes are the only schedulable nodes (three-node or single-node
    /// OpenShift): kata goes onto the `master` pool.
    Converged,
}

impl Topology {
    /// Decided from the nodes themselves: converged when there is a control plane and no node is
    /// a worker without also being control plane. (Upstream counted pools, which misfires when
    /// an administrator adds a custom pool.)
    pub fn detect(nodes: &[NodeInfo]) -> Self {
        let any_control_plane = nodes.iter().any(NodeInfo::is_control_plane);
        let any_dedicated_worker = nodes
            .iter()
            .any(|n| n.has_label(WORKER_ROLE_LABEL) && !n.is_control_plane());
        if any_control_plane && !any_dedicated_worker {
            Topology::Converged
        } else {
            Topology::Regular
        }
    }

    /// The MachineConfigPool that carries the kata MachineConfigs.
    pub fn pool_name(self) -> &'static str {
        match self {
            Topology::Regular => KATA_POOL,
            Topology::Converged => MASTER_POOL,
        }
    }

    /// The node label the kata nodes carry (and the RuntimeClass schedules onto).
    pub fn node_role_label(self) -> &'static str {
        match self {
            Topology::Regular => KATA_ROLE_LABEL,
            Topology::Converged => MASTER_ROLE_LABEL,
        }
    }
}

/// The effective selector for kata nodes among the workers: `kataConfigPoolSelector` (absent =
/// everything) AND, with `checkNodeEligibility`, the NFD kata label.
pub fn effective_selector(spec: &KataConfigSpec) -> LabelSelector {
    let mut selector = spec.kata_config_pool_selector.clone().unwrap_or_default();
    if spec.check_node_eligibility {
        selector
            .match_expressions
            .get_or_insert_with(Vec::new)
            .push(LabelSelectorRequirement {
                key: NFD_KATA_LABEL.to_string(),
                operator: "In".to_string(),
                values: Some(vec!["true".to_string()]),
            });
    }
    selector
}

/// Nodes that should run kata, and how node labels must change to get there.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSelection {
    pub topology: Topology,
    /// Sorted names of the nodes that should run kata.
    pub kata_nodes: Vec<String>,
    pub label_changes: Vec<LabelChange>,
    /// Things the administrator should know that do not stop the install.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelChange {
    Add { node: String, label: &'static str },
    Remove { node: String, label: &'static str },
}

/// Decides the kata nodes. Fails only on an invalid selector (with the field path).
pub fn select_nodes(
    spec: &KataConfigSpec,
    nodes: &[NodeInfo],
) -> Result<NodeSelection, Vec<FieldError>> {
    if let Some(sel) = &spec.kata_config_pool_selector {
        let errors = selector::validate(sel, "spec.kataConfigPoolSelector");
        if !errors.is_empty() {
            return Err(errors);
        }
    }
    let topology = Topology::detect(nodes);
    let (mut kata_nodes, mut label_changes, warnings) = match topology {
        Topology::Converged => {
            let (kata_nodes, warnings) = converged_selection(spec, nodes);
            (kata_nodes, Vec::new(), warnings)
        }
        Topology::Regular => regular_selection(spec, nodes),
    };
    kata_nodes.sort();
    label_changes.sort_by(|a, b| change_node(a).cmp(change_node(b)));
    Ok(NodeSelection {
        topology,
        kata_nodes,
        label_changes,
        warnings,
    })
}

/// Every control-plane node: the whole master pool gets the MachineConfigs, so a selector
/// cannot pick a subset (said in a warning, as is any node lacking the NFD label).
fn converged_selection(spec: &KataConfigSpec, nodes: &[NodeInfo]) -> (Vec<String>, Vec<String>) {
    let mut warnings = Vec::new();
    if spec.kata_config_pool_selector.is_some() {
        warnings.push("spec.kataConfigPoolSelector is ignored on a converged cluster (control-plane nodes are the only schedulable nodes): kata is installed on every control-plane node".to_string());
    }
    let kata_nodes = nodes
        .iter()
        .filter(|n| n.is_control_plane())
        .map(|n| n.name.to_string())
        .collect();
    if spec.check_node_eligibility {
        let ineligible: Vec<_> = nodes
            .iter()
            .filter(|n| n.is_control_plane())
            .filter(|n| n.labels.get(NFD_KATA_LABEL) != Some("true"))
            .map(|n| &*n.name)
            .collect();
        if !ineligible.is_empty() {
            warnings.push(format!(
                "checkNodeEligibility: control-plane nodes {} lack {NFD_KATA_LABEL}=true but share the master pool and will get kata too",
                ineligible.join(", ")
            ));
        }
    }
    (kata_nodes, warnings)
}

/// The dedicated workers the selector (and eligibility) picks, and the label changes that move
/// nodes in and out of the kata pool.
fn regular_selection(
    spec: &KataConfigSpec,
    nodes: &[NodeInfo],
) -> (Vec<String>, Vec<LabelChange>, Vec<String>) {
    let candidate = |n: &NodeInfo| n.has_label(WORKER_ROLE_LABEL) && !n.is_control_plane();
    labelled_selection(spec, nodes, candidate, "worker node")
}

/// Without the MCO (node-installer backend): the nodes the selector picks among all nodes, and
/// with no selector every node that is not control plane; with `checkNodeEligibility` the NFD
/// label too. They carry the kata role label as on OpenShift.
pub fn select_installer_nodes(
    spec: &KataConfigSpec,
    nodes: &[NodeInfo],
) -> Result<NodeSelection, Vec<FieldError>> {
    if let Some(sel) = &spec.kata_config_pool_selector {
        let errors = selector::validate(sel, "spec.kataConfigPoolSelector");
        if !errors.is_empty() {
            return Err(errors);
        }
    }
    let explicit = spec.kata_config_pool_selector.is_some();
    let candidate = |n: &NodeInfo| explicit || !n.is_control_plane();
    let (mut kata_nodes, mut label_changes, warnings) =
        labelled_selection(spec, nodes, candidate, "node");
    kata_nodes.sort();
    label_changes.sort_by(|a, b| change_node(a).cmp(change_node(b)));
    Ok(NodeSelection {
        topology: Topology::Regular,
        kata_nodes,
        label_changes,
        warnings,
    })
}

/// Among the `candidate` nodes, those the effective selector matches, and the kata role label
/// changes that get them (and only them) labelled. `what` names the candidates in warnings.
fn labelled_selection(
    spec: &KataConfigSpec,
    nodes: &[NodeInfo],
    candidate: impl Fn(&NodeInfo) -> bool,
    what: &str,
) -> (Vec<String>, Vec<LabelChange>, Vec<String>) {
    let sel = effective_selector(spec);
    let mut kata_nodes = Vec::new();
    let mut label_changes = Vec::new();
    for node in nodes {
        let wanted = candidate(node) && selector::matches(&sel, &node.labels);
        if wanted {
            kata_nodes.push(node.name.to_string());
        }
        match (wanted, node.has_label(KATA_ROLE_LABEL)) {
            (true, false) => label_changes.push(LabelChange::Add {
                node: node.name.to_string(),
                label: KATA_ROLE_LABEL,
            }),
            (false, true) => label_changes.push(LabelChange::Remove {
                node: node.name.to_string(),
                label: KATA_ROLE_LABEL,
            }),
            _ => {}
        }
    }
    let mut warnings = Vec::new();
    if kata_nodes.is_empty() {
        warnings.push(if spec.check_node_eligibility {
            format!(
                "no {what} matches spec.kataConfigPoolSelector and carries {NFD_KATA_LABEL}=true (is Node Feature Discovery running?)"
            )
        } else {
            format!("no {what} matches spec.kataConfigPoolSelector")
        });
    }
    (kata_nodes, label_changes, warnings)
}

fn change_node(c: &LabelChange) -> &str {
    match c {
        LabelChange::Add { node, .. } | LabelChange::Remove { node, .. } => node,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::KataConfigSpec;

    pub fn node(name: &str, labels: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: NodeLabels::default(),
        }
    }

    pub fn worker(name: &str, extra: &[(&str, &str)]) -> NodeInfo {
        let mut labels = vec![(WORKER_ROLE_LABEL, "")];
        labels.extend_from_slice(extra);
        node(name, &labels)
    }

    pub fn master(name: &str, schedulable: bool) -> NodeInfo {
        let mut labels = vec![(MASTER_ROLE_LABEL, ""), (CONTROL_PLANE_ROLE_LABEL, "")];
        if schedulable {
            labels.push((WORKER_ROLE_LABEL, ""));
        }
        node(name, &labels)
    }

    fn spec_with(selector: Option<LabelSelector>, check: bool) -> KataConfigSpec {
        KataConfigSpec {
            kata_config_pool_selector: selector,
            check_node_eligibility: check,
            log_level: "info".into(),
            ..Default::default()
        }
    }

    fn standard_cluster() -> Vec<NodeInfo> {
        vec![
            master("m0", false),
            master("m1", false),
            master("m2", false),
            worker("w0", &[("zone", "a")]),
            worker("w1", &[("zone", "b")]),
            worker("w2", &[("zone", "a"), (NFD_KATA_LABEL, "true")]),
        ]
    }

    fn with_label(n: &NodeInfo, key: &str, value: &str) -> NodeInfo {
        let mut n = n.clone();
        n.labels.insert(key.into(), value.into());
        n
    }

    fn zone_selector() -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: Some([("zone".to_string(), "a".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "example.com/pool".into(),
                operator: "NotIn".into(),
                values: Some(vec!["general".into()]),
            }]),
        })
    }

    #[test]
    fn planner_reads_roles_kata_labels_selector_keys_and_mco_annotations() {
        let none = spec_with(None, false);
        let zone = spec_with(zone_selector(), false);
        let w = worker("w0", &[("zone", "a")]);
        // What kube-controller-manager, NFD or a cloud controller write: never read.
        for (k, v) in [
            ("beta.kubernetes.io/os", "linux"),
            ("feature.node.kubernetes.io/cpu-model.family", "6"),
            ("node.kubernetes.io/instance-type", "m6i.2xlarge"),
        ] {
            let new = with_label(&w, k, v);
            assert!(!planner_reads_change(&w, &new, [&none, &zone]), "{k}");
        }
        // Roles and the kata labels, whatever the selector.
        for k in NODE_LABELS_READ {
            assert!(
                planner_reads_change(&w, &with_label(&w, k, "x"), [&none]),
                "{k}"
            );
        }
        // A selector's keys, from matchLabels and from matchExpressions, only while selected on.
        for k in ["zone", "example.com/pool"] {
            let new = with_label(&w, k, "general");
            assert!(planner_reads_change(&w, &new, [&zone]), "{k}");
            assert!(planner_reads_change(&w, &new, [&none, &zone]), "{k}");
            assert!(!planner_reads_change(&w, &new, [&none]), "{k}");
        }
        // A label removed is a change too.
        let mut gone = w.clone();
        gone.labels.remove("zone");
        assert!(planner_reads_change(&w, &gone, [&zone]));
        // The MCO's state of the node.
        let mut working = w.clone();
        working
            .annotations
            .insert(MCO_STATE.into(), "Working".into());
        assert!(planner_reads_change(&w, &working, [&none]));
    }

    /// The contract [`planner_reads_change`] states, checked against the planner itself: adding
    /// a label it calls unread to every node changes no selection, topology or node-installer
    /// progress.
    #[test]
    fn a_label_the_planner_does_not_read_changes_no_plan() {
        let clusters = [
            standard_cluster(),
            vec![master("m0", true), master("m1", true), master("m2", true)],
        ];
        let specs = [
            spec_with(None, false),
            spec_with(None, true),
            spec_with(zone_selector(), false),
            spec_with(zone_selector(), true),
        ];
        let unread = [
            ("beta.kubernetes.io/arch", "amd64"),
            ("feature.node.kubernetes.io/kernel-version.major", "5"),
            ("example.com/pool", "general"),
            ("zone", "b"),
        ];
        let mut checked = 0;
        for nodes in &clusters {
            for spec in &specs {
                for (k, v) in unread {
                    let touched: Vec<_> = nodes.iter().map(|n| with_label(n, k, v)).collect();
                    let read = nodes
                        .iter()
                        .zip(&touched)
                        .any(|(a, b)| planner_reads_change(a, b, [spec]));
                    if read {
                        continue;
                    }
                    checked += 1;
                    let why = format!("{k} with {spec:?}");
                    assert_eq!(Topology::detect(nodes), Topology::detect(&touched), "{why}");
                    assert_eq!(
                        select_nodes(spec, nodes),
                        select_nodes(spec, &touched),
                        "{why}"
                    );
                    assert_eq!(
                        select_installer_nodes(spec, nodes),
                        select_installer_nodes(spec, &touched),
                        "{why}"
                    );
                    assert_eq!(
                        crate::plan::node_installer::classify(nodes, &[], false),
                        crate::plan::node_installer::classify(&touched, &[], false),
                        "{why}"
                    );
                }
            }
        }
        // Every (cluster, spec) pair but the selector keys under a selector: 2 × (4 × 4 − 4).
        assert_eq!(checked, 24);
    }

    #[test]
    fn no_selector_selects_every_dedicated_worker() {
        let s = select_nodes(&spec_with(None, false), &standard_cluster()).expect("valid");
        assert_eq!(s.topology, Topology::Regular);
        assert_eq!(s.kata_nodes, ["w0", "w1", "w2"]);
        assert_eq!(s.label_changes.len(), 3);
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn selector_with_only_match_expressions_selects_matching_workers() {
        let sel = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "zone".into(),
                operator: "In".into(),
                values: Some(vec!["a".into()]),
            }]),
        };
        let s = select_nodes(&spec_with(Some(sel), false), &standard_cluster()).expect("valid");
        assert_eq!(s.kata_nodes, ["w0", "w2"]);
    }

    #[test]
    fn node_labels_find_every_key_whatever_its_length_or_prefix() {
        // Keys of equal length, shared prefixes and one a prefix of another: the length-first
        // order must still find each, miss absent ones, and keep working after writes.
        let keys = [
            "a",
            "b",
            "ab",
            "node-role.kubernetes.io/worker",
            "node-role.kubernetes.io/master",
            "node-role.kubernetes.io/kata-oc",
            "node-role.kubernetes.io/control-plane",
            "kubernetes.io/os",
        ];
        let mut labels: NodeLabels = keys.iter().map(|k| (*k, format!("v-{k}"))).collect();
        for k in keys {
            assert_eq!(labels.get(k), Some(format!("v-{k}").as_str()), "{k}");
        }
        for absent in [
            "",
            "c",
            "ba",
            "node-role.kubernetes.io/infra",
            "kubernetes.io/o",
        ] {
            assert_eq!(labels.get(absent), None, "{absent}");
        }
        assert_eq!(labels.insert("aa".into(), "new".into()), None);
        assert_eq!(
            labels.insert("a".into(), "again".into()).as_deref(),
            Some("v-a")
        );
        assert_eq!(
            labels.remove("node-role.kubernetes.io/master").as_deref(),
            Some("v-node-role.kubernetes.io/master")
        );
        assert_eq!(labels.get("aa"), Some("new"));
        assert_eq!(labels.get("a"), Some("again"));
        assert!(!labels.contains_key("node-role.kubernetes.io/master"));
        assert!(labels.contains_key("node-role.kubernetes.io/worker"));
        assert_eq!(labels.len(), keys.len());
        // Debug output stays in key order, whatever the storage order.
        let shown = format!("{labels:?}");
        assert!(
            shown.starts_with(r#"{"a": "again", "aa": "new", "ab": "#),
            "{shown}"
        );
    }

    #[test]
    fn check_node_eligibility_requires_the_nfd_label() {
        let s = select_nodes(&spec_with(None, true), &standard_cluster()).expect("valid");
        assert_eq!(s.kata_nodes, ["w2"]);
    }

    #[test]
    fn nodes_that_stop_matching_lose_the_label() {
        let mut nodes = standard_cluster();
        nodes[3]
            .labels
            .insert(KATA_ROLE_LABEL.into(), String::new());
        nodes[5]
            .labels
            .insert(KATA_ROLE_LABEL.into(), String::new());
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("zone".into(), "b".into())])),
            match_expressions: None,
        };
        let s = select_nodes(&spec_with(Some(sel), false), &nodes).expect("valid");
        assert_eq!(
            s.label_changes,
            [
                LabelChange::Remove {
                    node: "w0".into(),
                    label: KATA_ROLE_LABEL
                },
                LabelChange::Add {
                    node: "w1".into(),
                    label: KATA_ROLE_LABEL
                },
                LabelChange::Remove {
                    node: "w2".into(),
                    label: KATA_ROLE_LABEL
                },
            ]
        );
    }

    #[test]
    fn selector_matching_nothing_warns() {
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("zone".into(), "nowhere".into())])),
            match_expressions: None,
        };
        let s = select_nodes(&spec_with(Some(sel), false), &standard_cluster()).expect("valid");
        assert!(s.kata_nodes.is_empty());
        assert!(s.warnings[0].contains("no worker node matches"));
    }

    #[test]
    fn invalid_selector_is_an_error_with_the_field_path() {
        let sel = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "zone".into(),
                operator: "In".into(),
                values: None,
            }]),
        };
        let errs =
            select_nodes(&spec_with(Some(sel), false), &standard_cluster()).expect_err("invalid");
        assert_eq!(
            errs[0].field,
            "spec.kataConfigPoolSelector.matchExpressions[0].values"
        );
    }

    #[test]
    fn three_node_compact_cluster_is_converged() {
        let nodes = vec![master("m0", true), master("m1", true), master("m2", true)];
        assert_eq!(Topology::detect(&nodes), Topology::Converged);
        let s = select_nodes(&spec_with(None, false), &nodes).expect("valid");
        assert_eq!(s.kata_nodes, ["m0", "m1", "m2"]);
        assert!(
            s.label_changes.is_empty(),
            "converged clusters are never relabelled"
        );
        assert_eq!(s.topology.pool_name(), "master");
    }

    #[test]
    fn single_node_openshift_is_converged() {
        let nodes = vec![master("sno", true)];
        assert_eq!(Topology::detect(&nodes), Topology::Converged);
    }

    #[test]
    fn empty_worker_pool_is_converged() {
        let nodes = vec![
            master("m0", false),
            master("m1", false),
            master("m2", false),
        ];
        assert_eq!(Topology::detect(&nodes), Topology::Converged);
    }

    #[test]
    fn converged_cluster_ignores_selector_with_a_warning() {
        let nodes = vec![master("m0", true)];
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("zone".into(), "a".into())])),
            match_expressions: None,
        };
        let s = select_nodes(&spec_with(Some(sel), true), &nodes).expect("valid");
        assert_eq!(s.kata_nodes, ["m0"]);
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("ignored on a converged cluster"))
        );
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("checkNodeEligibility"))
        );
    }

    #[test]
    fn one_dedicated_worker_makes_the_cluster_regular() {
        let nodes = vec![master("m0", true), worker("w0", &[])];
        assert_eq!(Topology::detect(&nodes), Topology::Regular);
        let s = select_nodes(&spec_with(None, false), &nodes).expect("valid");
        assert_eq!(
            s.kata_nodes,
            ["w0"],
            "schedulable masters never join kata-oc"
        );
    }

    #[test]
    fn no_nodes_at_all_is_regular_with_a_warning() {
        let s = select_nodes(&spec_with(None, false), &[]).expect("valid");
        assert_eq!(s.topology, Topology::Regular);
        assert!(!s.warnings.is_empty());
    }
}
