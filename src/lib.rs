//! Sandboxed containers operator: installs and governs Kata Containers on OpenShift/Kubernetes.
//!
//! Where to find things:
//! - `api`: the `KataConfig` CRD types and typed MCO models;
//! - `names`: every label, name, port and path of the external contract;
//! - `selector`: label-selector validation and matching (shared by webhook, reconciler, render);
//! - `plan`: the pure core: node selection, desired objects, node-by-node progress;
//! - `crdgen`: the CRD YAML generated from the types;
//! - `render`: the offline planner behind `sandboxed-containers-operator render`;
//! - `cli`: command-line definitions.
//!
//! Test-only code (the in-memory API server, MCO simulator, envtest harness, bundle checker, CRD
//! schema converter, webhook sample cluster) is not here but in the `testkit` workspace crate.

pub mod api;
pub mod certs;
pub mod cli;
pub mod crdgen;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod observability;
pub mod packaging;
pub mod plan;
pub mod reconciler;
pub mod render;
pub mod run;
pub mod selector;
pub mod server;
pub mod webhook;
