//! Test support shared by the integration tests: an in-memory API server behind a real
//! `kube::Client` (`fake_api`), a Machine Config Operator simulator over any client (`mco_sim`),
//! and the envtest-convention real API server tier (`envtest`).
//!
//! Each test binary uses a different subset, so unused items are expected.
#![allow(dead_code, unused_imports)]

pub mod envtest;
pub mod fake_api;
pub mod mco_sim;

pub use fake_api::{
    AccessRequest, FakeApi, Fault, FaultKind, RequestRecord, ResourceInfo, ReviewUser,
};
pub use mco_sim::{McoSimulator, SimHandle, SimOptions};
