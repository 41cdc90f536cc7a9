//! Typed API models: our `KataConfig` and the Machine Config Operator resources we read and write.

pub mod kataconfig;
pub mod mco;
pub mod namespace_policy;

pub use kataconfig::{
    Backend, KataConfig, KataConfigSpec, KataConfigStatus, KataNodesStatus, NodeInstallerSettings,
    active_kata_config, kata_config_in_force,
};
pub use mco::{
    ContainerRuntimeConfig, ContainerRuntimeConfigSpec, MachineConfig, MachineConfigPool,
    MachineConfigPoolSpec, MachineConfigPoolStatus, MachineConfigSpec,
};
pub use namespace_policy::NamespacePolicy;
