//! Test-only code of the sandboxed containers operator, kept out of its binary: a dev-dependency
//! of the root crate for the integration tests, benchmarks and examples (never for the unit tests
//! in `src/`, which compile their own copy of the operator crate, so testkit's types would not
//! match theirs).
//!
//! - [`fake_api`]: an in-memory API server behind a real `kube::Client`, authorizing with RBAC
//!   as kube-apiserver does ([`fake_api::authz`]);
//! - [`mco_sim`]: a Machine Config Operator simulator over any client;
//! - [`installer_sim`]: what runs the node-installer DaemonSet on a cluster without the MCO (the
//!   DaemonSet controller, the kubelet and the kata-deploy image), over any client;
//! - [`olm`]: what OLM v0 creates around the operator and deletes with its CSV, and the
//!   prometheus-operator CRDs a cluster may lack;
//! - [`envtest`]: the envtest-convention real API server tier (`KUBEBUILDER_ASSETS`);
//! - [`logs`]: log capture for one test binary;
//! - [`bundle_check`]: the semantic OLM bundle checker (what the CSV/CRD JSON schemas cannot see);
//! - [`crd_schema`]: a CRD's structural schema as a JSON Schema, to validate objects offline;
//! - [`webhook_samples`]: the cluster state the sample AdmissionReviews in `webhooks/samples/`
//!   assume;
//! - the helpers re-exported here: [`eventually`], [`seed_cluster`], [`node_json`],
//!   [`machine_config_json`], [`free_port`], [`webhook_ca`], [`https_client`].
//!
//! Typical scenario test:
//! ```ignore
//! use testkit::{FakeApi, McoSimulator, SimOptions, eventually, seed_cluster};
//! let fake = FakeApi::new();
//! seed_cluster(&fake, 3, 2, false); // master-0..2, worker-0..1, 00-master/00-worker MCs
//! let sim = McoSimulator::spawn(fake.client_as("mco-sim"), SimOptions { create_default_pools: true, ..Default::default() }).await?;
//! let client = fake.client(); // hand this to the operator's reconciler
//! // ... create a KataConfig through `client`, run the controller ...
//! eventually("installed", || fake.get::<KataConfig>("example").is_some_and(|k| /* ... */ true)).await;
//! assert_eq!(fake.write_count_by("operator"), 0); // after fake.clear_requests() on a settled cluster
//! ```

pub mod bundle_check;
pub mod crd_schema;
pub mod envtest;
pub mod fake_api;
mod helpers;
pub mod installer_sim;
pub mod logs;
pub mod mco_sim;
pub mod olm;
pub mod webhook_samples;

pub use fake_api::{
    AccessRequest, Attributes, Authorization, FakeApi, Fault, FaultKind, RequestRecord,
    ResourceInfo, ReviewUser, UserInfo,
};
pub use helpers::{
    eventually, free_port, https_client, machine_config_json, node_json, seed_cluster, wait_until,
    webhook_ca,
};
pub use installer_sim::{InstallerSimHandle, InstallerSimOptions, InstallerSimulator};
pub use mco_sim::{McoSimulator, SimHandle, SimOptions};
