//! Node-by-node progress from the MCO's node annotations and the pools' rendered configs (pure).
//!
//! Every kata-relevant node lands in exactly one list of `status.kataNodes`. A node's target is
//! the rendered config of the pool it belongs in, and only counts once that rendering reflects
//! the wanted kata state (checked via the pool's `spec.configuration.source`), so a node is never
//! reported installed before the MCO has actually rendered our MachineConfigs.

use crate::api::KataNodesStatus;
use crate::api::MachineConfigPool;
use crate::names::{
    CRIO_DROPIN_MC, EXTENSION_MC, KATA_POOL, KATA_ROLE_LABEL, MCO_CURRENT_CONFIG, MCO_REASON,
    MCO_STATE,
};

use super::nodes::{NodeInfo, Topology};

/// A pool's current rendering, as far as progress is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRender {
    /// `spec.configuration.name`, e.g. `rendered-kata-oc-1a2b3c`.
    pub rendered: String,
    /// Whether that rendering includes both kata MachineConfigs.
    pub has_kata: bool,
}

impl PoolRender {
    pub fn of(pool: &MachineConfigPool) -> Option<Self> {
        let conf = pool.spec.configuration.as_ref()?;
        let rendered = conf.name.clone()?;
        let sources: Vec<&str> = conf
            .source
            .iter()
            .filter_map(|s| s.name.as_deref())
            .collect();
        let has_kata = sources.contains(&EXTENSION_MC) && sources.contains(&CRIO_DROPIN_MC);
        Some(PoolRender { rendered, has_kata })
    }
}

#[derive(Debug, Clone)]
pub struct ProgressInput {
    pub topology: Topology,
    /// The KataConfig is being deleted: every node is heading away from kata.
    pub uninstalling: bool,
    /// `kata-oc` (regular) or `master` (converged).
    pub kata_pool: Option<PoolRender>,
    /// `worker`: where nodes leaving `kata-oc` go (regular clusters only).
    pub worker_pool: Option<PoolRender>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub nodes: KataNodesStatus,
    /// Degraded nodes with the MCO's reason, for the condition message.
    pub degraded: Vec<(String, String)>,
}

impl Progress {
    /// No node is still moving or waiting in either direction.
    pub fn settled(&self) -> bool {
        let n = &self.nodes;
        n.installing.is_empty()
            && n.waiting_to_install.is_empty()
            && n.uninstalling.is_empty()
            && n.waiting_to_uninstall.is_empty()
            && n.failed_to_install.is_empty()
            && n.failed_to_uninstall.is_empty()
    }
}

pub fn classify(nodes: &[NodeInfo], input: &ProgressInput) -> Progress {
    let mut p = Progress::default();
    let kata_prefix = format!("rendered-{KATA_POOL}-");
    for node in nodes {
        let current = node.annotation(MCO_CURRENT_CONFIG);
        let (want, relevant, target) = match input.topology {
            Topology::Regular => {
                let want = node.has_label(KATA_ROLE_LABEL) && !input.uninstalling;
                let was_kata = current.is_some_and(|c| c.starts_with(&kata_prefix));
                let pool = if want {
                    &input.kata_pool
                } else {
                    &input.worker_pool
                };
                let target = pool.as_ref().filter(|r| r.has_kata == want);
                (want, want || was_kata, target)
            }
            Topology::Converged => {
                let want = !input.uninstalling;
                let target = input.kata_pool.as_ref().filter(|r| r.has_kata == want);
                (want, node.is_control_plane(), target)
            }
        };
        if !relevant {
            continue;
        }
        if want {
            p.nodes.node_count += 1;
        }
        let name = node.name.to_string();
        let lists = &mut p.nodes;
        match node.annotation(MCO_STATE) {
            Some("Degraded") => {
                let reason = node
                    .annotation(MCO_REASON)
                    .unwrap_or("no reason given by the MCO");
                p.degraded.push((name.clone(), reason.to_string()));
                if want {
                    lists.failed_to_install.push(name)
                } else {
                    lists.failed_to_uninstall.push(name)
                }
            }
            Some("Working") => {
                if want {
                    lists.installing.push(name)
                } else {
                    lists.uninstalling.push(name)
                }
            }
            _ => {
                let on_target = matches!((current, target), (Some(c), Some(t)) if c == t.rendered);
                match (want, on_target) {
                    (true, true) => lists.installed.push(name),
                    (true, false) => lists.waiting_to_install.push(name),
                    (false, false) => lists.waiting_to_uninstall.push(name),
                    (false, true) => {}
                }
            }
        }
    }
    p.nodes.ready_node_count = i32::try_from(p.nodes.installed.len()).unwrap_or(i32::MAX);
    for list in [
        &mut p.nodes.installed,
        &mut p.nodes.installing,
        &mut p.nodes.waiting_to_install,
        &mut p.nodes.failed_to_install,
        &mut p.nodes.uninstalling,
        &mut p.nodes.waiting_to_uninstall,
        &mut p.nodes.failed_to_uninstall,
    ] {
        list.sort();
    }
    p.degraded.sort();
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{MASTER_ROLE_LABEL, WORKER_ROLE_LABEL};
    use std::collections::BTreeMap;

    fn node(name: &str, kata: bool, state: Option<&str>, current: Option<&str>) -> NodeInfo {
        let mut labels = BTreeMap::from([(WORKER_ROLE_LABEL.to_string(), String::new())]);
        if kata {
            labels.insert(KATA_ROLE_LABEL.into(), String::new());
        }
        let mut annotations = BTreeMap::new();
        if let Some(s) = state {
            annotations.insert(MCO_STATE.to_string(), s.to_string());
        }
        if let Some(c) = current {
            annotations.insert(MCO_CURRENT_CONFIG.to_string(), c.to_string());
        }
        NodeInfo {
            name: name.into(),
            labels: labels.into(),
            annotations: annotations.into(),
        }
    }

    fn render(name: &str, has_kata: bool) -> Option<PoolRender> {
        Some(PoolRender {
            rendered: name.into(),
            has_kata,
        })
    }

    fn regular(uninstalling: bool) -> ProgressInput {
        ProgressInput {
            topology: Topology::Regular,
            uninstalling,
            kata_pool: render("rendered-kata-oc-new", true),
            worker_pool: render("rendered-worker-1", false),
        }
    }

    #[test]
    fn install_truth_table() {
        let mut degraded = node("d", true, Some("Degraded"), Some("rendered-worker-1"));
        degraded
            .annotations
            .insert(MCO_REASON.into(), "failed to drain".into());
        let nodes = vec![
            node("a", true, Some("Done"), Some("rendered-kata-oc-new")),
            node("b", true, Some("Done"), Some("rendered-worker-1")),
            node("c", true, Some("Working"), Some("rendered-worker-1")),
            degraded,
            node("e", false, Some("Done"), Some("rendered-worker-1")),
            node("f", true, None, None),
        ];
        let p = classify(&nodes, &regular(false));
        assert_eq!(p.nodes.installed, ["a"]);
        assert_eq!(p.nodes.waiting_to_install, ["b", "f"]);
        assert_eq!(p.nodes.installing, ["c"]);
        assert_eq!(p.nodes.failed_to_install, ["d"]);
        assert_eq!(p.nodes.node_count, 5);
        assert_eq!(p.nodes.ready_node_count, 1);
        assert_eq!(
            p.degraded,
            [("d".to_string(), "failed to drain".to_string())]
        );
        assert!(!p.settled());
    }

    #[test]
    fn nodes_are_not_installed_until_the_pool_renders_kata() {
        let input = ProgressInput {
            kata_pool: render("rendered-kata-oc-old", false),
            ..regular(false)
        };
        let nodes = vec![node("a", true, Some("Done"), Some("rendered-kata-oc-old"))];
        let p = classify(&nodes, &input);
        assert_eq!(p.nodes.waiting_to_install, ["a"]);
        assert!(p.nodes.installed.is_empty());
    }

    #[test]
    fn leaving_nodes_are_tracked_until_back_on_worker() {
        let nodes = vec![
            node("a", false, Some("Done"), Some("rendered-kata-oc-new")),
            node("b", false, Some("Working"), Some("rendered-kata-oc-new")),
            node("c", false, Some("Degraded"), Some("rendered-kata-oc-new")),
            node("d", false, Some("Done"), Some("rendered-worker-1")),
        ];
        let p = classify(&nodes, &regular(false));
        assert_eq!(p.nodes.waiting_to_uninstall, ["a"]);
        assert_eq!(p.nodes.uninstalling, ["b"]);
        assert_eq!(p.nodes.failed_to_uninstall, ["c"]);
        assert_eq!(p.nodes.node_count, 0);
        assert_eq!(p.degraded[0].1, "no reason given by the MCO");
    }

    #[test]
    fn settled_install_lists_every_node_once() {
        let nodes = vec![
            node("a", true, Some("Done"), Some("rendered-kata-oc-new")),
            node("b", true, Some("Done"), Some("rendered-kata-oc-new")),
            node("z", false, Some("Done"), Some("rendered-worker-1")),
        ];
        let p = classify(&nodes, &regular(false));
        assert_eq!(p.nodes.installed, ["a", "b"]);
        assert!(p.settled());
    }

    #[test]
    fn uninstall_direction_on_converged_cluster() {
        let mut m = node("m0", false, Some("Done"), Some("rendered-master-kata"));
        m.labels.insert(MASTER_ROLE_LABEL.into(), String::new());
        let install = ProgressInput {
            topology: Topology::Converged,
            uninstalling: false,
            kata_pool: render("rendered-master-kata", true),
            worker_pool: None,
        };
        let p = classify(std::slice::from_ref(&m), &install);
        assert_eq!(p.nodes.installed, ["m0"]);
        // Uninstall: master pool re-rendered without kata, node not yet moved.
        let uninstall = ProgressInput {
            uninstalling: true,
            kata_pool: render("rendered-master-plain", false),
            ..install
        };
        let p = classify(std::slice::from_ref(&m), &uninstall);
        assert_eq!(p.nodes.waiting_to_uninstall, ["m0"]);
        m.annotations
            .insert(MCO_CURRENT_CONFIG.into(), "rendered-master-plain".into());
        assert!(classify(&[m], &uninstall).settled());
    }

    #[test]
    fn pool_render_requires_both_machine_configs() {
        use crate::api::mco::{ObjectReferenceLite, PoolConfiguration};
        let mut pool = crate::plan::objects::kata_pool();
        assert!(PoolRender::of(&pool).is_none());
        let src = |n: &str| ObjectReferenceLite {
            name: Some(n.into()),
            ..Default::default()
        };
        pool.spec.configuration = Some(PoolConfiguration {
            name: Some("rendered-kata-oc-x".into()),
            source: vec![src(EXTENSION_MC)],
        });
        assert_eq!(PoolRender::of(&pool), render("rendered-kata-oc-x", false));
        pool.spec
            .configuration
            .as_mut()
            .expect("conf")
            .source
            .push(src(CRIO_DROPIN_MC));
        assert_eq!(PoolRender::of(&pool), render("rendered-kata-oc-x", true));
    }
}
