//! Node progress in the installer's words.

use crate::names::NODE_INSTALLER;
use crate::plan::progress::Progress;
use crate::reconciler::observe::Observed;
use crate::reconciler::status;

/// Human summary of node progress, naming nodes per list.
pub(super) fn progress_message(p: &Progress, obs: &Observed, uninstalling: bool) -> String {
    let n = &p.nodes;
    let mut parts = Vec::new();
    if uninstalling {
        parts.push("removing kata".to_string());
    } else {
        parts.push(format!(
            "kata is installed on {} of {} node(s)",
            n.ready_node_count, n.node_count
        ));
    }
    let lists: [(&str, &Vec<String>); 6] = [
        ("installing", &n.installing),
        ("waiting to install", &n.waiting_to_install),
        ("failed to install (see Degraded)", &n.failed_to_install),
        ("uninstalling", &n.uninstalling),
        ("waiting to uninstall", &n.waiting_to_uninstall),
        ("failed to uninstall (see Degraded)", &n.failed_to_uninstall),
    ];
    for (label, list) in lists {
        if !list.is_empty() {
            parts.push(format!("{label}: {}", status::name_list(list, 10)));
        }
    }
    if !uninstalling && obs.installer.daemon_set.is_none() {
        parts.push(format!("waiting for DaemonSet {NODE_INSTALLER}"));
    }
    parts.join("; ")
}
