//! Node progress in the installer's words.

use crate::names::NODE_INSTALLER;
use crate::plan::progress::Progress;
use crate::reconciler::decide::steps::progress_parts;
use crate::reconciler::observe::Observed;

/// Human summary of node progress, naming nodes per list.
pub(super) fn progress_message(p: &Progress, obs: &Observed, uninstalling: bool) -> String {
    let mut parts = progress_parts(p, uninstalling);
    if !uninstalling && obs.installer.daemon_set.is_none() {
        parts.push(format!("waiting for DaemonSet {NODE_INSTALLER}"));
    }
    parts.join("; ")
}
