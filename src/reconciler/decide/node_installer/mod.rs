//! The node-installer backend (Kubernetes without the Machine Config Operator): the
//! `kata-node-installer` DaemonSet runs the kata-deploy image on the nodes with the kata role
//! label; progress comes from its pods and the label it sets when a node is done. No reboot.

mod install;
mod progress_words;
mod uninstall;

pub(super) use install::decide_install;
pub(super) use uninstall::decide_uninstall;
