//! Typed API models: our `KataConfig` and the Machine Config Operator resources we read and write.

pub mod kataconfig;
pub mod mco;

pub use kataconfig::{KataConfig, KataConfigSpec, KataConfigStatus, KataNodesStatus};
pub use mco::{
    ContainerRuntimeConfig, ContainerRuntimeConfigSpec, MachineConfig, MachineConfigPool,
    MachineConfigPoolSpec, MachineConfigPoolStatus, MachineConfigSpec,
};
