//! What the decision hands to the writer: the objects the reconciler keeps ([`Desired`]), the
//! writes in order ([`Action`]), and where the KataConfig stands ([`Outcome`], [`Decision`]).

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::ResourceExt;

use crate::api::{ContainerRuntimeConfig, KataConfigStatus, MachineConfig, MachineConfigPool};

use super::events::EventSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pool,
    MachineConfig,
    ContainerRuntimeConfig,
    RuntimeClass,
    /// The node installer and its custom runtimes, in the operator namespace.
    DaemonSet,
    ConfigMap,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Desired {
    Pool(MachineConfigPool),
    MachineConfig(MachineConfig),
    ContainerRuntimeConfig(ContainerRuntimeConfig),
    RuntimeClass(RuntimeClass),
    // Boxed: a DaemonSet is several times larger than the other kinds.
    DaemonSet(Box<DaemonSet>),
    ConfigMap(ConfigMap),
}

impl Desired {
    pub fn kind(&self) -> Kind {
        match self {
            Desired::Pool(_) => Kind::Pool,
            Desired::MachineConfig(_) => Kind::MachineConfig,
            Desired::ContainerRuntimeConfig(_) => Kind::ContainerRuntimeConfig,
            Desired::RuntimeClass(_) => Kind::RuntimeClass,
            Desired::DaemonSet(_) => Kind::DaemonSet,
            Desired::ConfigMap(_) => Kind::ConfigMap,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Desired::Pool(p) => p.name_any(),
            Desired::MachineConfig(m) => m.name_any(),
            Desired::ContainerRuntimeConfig(c) => c.name_any(),
            Desired::RuntimeClass(r) => r.name_any(),
            Desired::DaemonSet(d) => d.name_any(),
            Desired::ConfigMap(c) => c.name_any(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Desired::Pool(p) => format!("MachineConfigPool {}", p.name_any()),
            Desired::MachineConfig(m) => format!("MachineConfig {}", m.name_any()),
            Desired::ContainerRuntimeConfig(c) => {
                format!("ContainerRuntimeConfig {}", c.name_any())
            }
            Desired::RuntimeClass(r) => format!("RuntimeClass {}", r.name_any()),
            Desired::DaemonSet(d) => format!("DaemonSet {}", d.name_any()),
            Desired::ConfigMap(c) => format!("ConfigMap {}", c.name_any()),
        }
    }
}

/// One write. Executed in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    AddFinalizer,
    Apply(Box<Desired>),
    Delete {
        kind: Kind,
        name: String,
    },
    /// Merge patch nulling keys others added to a selector-like map of ours.
    RemoveForeignKeys {
        kind: Kind,
        name: String,
        patch: serde_json::Value,
    },
    LabelNode(String),
    UnlabelNode(String),
    RemoveFinalizer,
}

impl Action {
    pub fn is_write_to_cluster_objects(&self) -> bool {
        !matches!(self, Action::AddFinalizer | Action::RemoveFinalizer)
    }
}

/// Where the KataConfig stands after this decision (also the metrics `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Another KataConfig is the active one; this one is only told so.
    Duplicate,
    InvalidSpec,
    NoKataNodes,
    Installing,
    Installed,
    Blocked,
    Uninstalling,
    /// The last step of uninstall: the finalizer goes now.
    Uninstalled,
    /// Being deleted without our finalizer: nothing to do.
    Gone,
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: Outcome,
    pub actions: Vec<Action>,
    /// New status, or `None` when it is unchanged (or the object is going away).
    pub status: Option<KataConfigStatus>,
    /// The full status as decided (for metrics), changed or not.
    pub reported: Option<KataConfigStatus>,
    pub events: Vec<EventSpec>,
}
