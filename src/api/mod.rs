//! Typed API models: our `KataConfig`, the Machine Config Operator resources we read and write,
//! and OLM's `OperatorCondition`.

pub mod kataconfig;
pub mod mco;
pub mod namespace_policy;
pub mod operator_condition;

pub use kataconfig::{
    Backend, KataConfig, KataConfigSpec, KataConfigStatus, KataNodesStatus, NodeInstallerSettings,
    active_kata_config, kata_config_in_force,
};
pub use mco::{
    ContainerRuntimeConfig, ContainerRuntimeConfigSpec, MachineConfig, MachineConfigPool,
    MachineConfigPoolSpec, MachineConfigPoolStatus, MachineConfigSpec,
};
pub use namespace_policy::NamespacePolicy;
