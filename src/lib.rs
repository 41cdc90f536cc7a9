//! Sandboxed containers operator: installs and governs Kata Containers on OpenShift/Kubernetes.
//!
//! The map of the crate, in the order a KataConfig travels through it:
//!
//! | module | what | depends on |
//! |---|---|---|
//! | [`names`] | every label, name, port and path of the external contract | — |
//! | [`api`] | the `KataConfig` types (and the one "active KataConfig" rule), the MCO models, the namespace policy values | `names` |
//! | [`selector`] | label-selector validation (API-server rules, field paths) and matching | — |
//! | [`plan`] | the pure core: node model and selection, every desired object, node-by-node progress | `api`, `selector` |
//! | [`cache`] | the process's one watch per shared kind (Nodes, RuntimeClasses, KataConfigs, Namespaces) | `api`, `plan`, `kubeapi` |
//! | [`reconciler`] | observe → decide (pure) → apply (SSA) → status, events, classified errors | `cache`, `plan`, `kubeapi` |
//! | [`webhook`] | admission: pure decisions behind a thin HTTP layer; registration of its configurations | `cache`, `certs`, `server` |
//! | [`certs`] | the self-managed CA and serving certificate, or `--cert-dir` files | `kubeapi` |
//! | [`observability`] | metric registry and `/metrics` (TokenReview/SAR), readiness and health, logging, signals | `server` |
//! | [`leader`] | Lease leader election: one term at a time, each with a write fence; a lost term steps the reconciler down and campaigns again | `observability`, `kubeapi` |
//! | [`discovery`] | which optional APIs the server serves (ValidatingAdmissionPolicy, MCO, monitoring) | — |
//! | [`monitoring_objects`] | the ServiceMonitor, PrometheusRule and Prometheus RBAC the operator keeps while monitoring is served, owned by its Deployment | `cache`, `kubeapi`, `packaging` |
//! | [`kubeapi`] | the shared write helpers (SSA, delete ignoring 404, timeouts, the write fence) and API error classes | `names` |
//! | [`server`] | the TLS/plain HTTP server with graceful drain every listener uses | — |
//! | [`run`] | `run`: every part under one shutdown signal | all of the above |
//! | [`crdgen`], [`render`], [`packaging`] | the CRD from the types; the offline planner; the OLM bundle and `deploy/` | `api`, `plan` |
//! | [`cli`] | command-line definitions | `names` |
//!
//! No module imports another in a circle (`hack/check-import-cycles.py` holds that in CI).
//! Test-only code (the in-memory API server, MCO simulator, envtest harness, bundle checker, CRD
//! schema converter, webhook sample cluster) is not here but in the `testkit` workspace crate.

pub mod api;
pub mod cache;
pub mod certs;
pub mod cli;
pub mod crdgen;
pub mod discovery;
pub mod kubeapi;
pub mod leader;
pub mod monitoring_objects;
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
