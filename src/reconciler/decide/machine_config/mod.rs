//! The Machine Config Operator backend (OpenShift): the kata-oc pool and MachineConfigs roll kata
//! out node by node with a reboot each; progress comes from the pools and the MCO's node
//! annotations.

mod install;
mod pools;
mod uninstall;

pub(super) use install::decide_install;
pub(super) use uninstall::decide_uninstall;
