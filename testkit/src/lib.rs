//! Test-only code of the sandboxed containers operator, kept out of its binary: a dev-dependency
//! of the root crate for the integration tests, benchmarks and examples (never for the unit tests
//! in `src/`, which compile their own copy of the operator crate).
//!
//! - `bundle_check`: the semantic OLM bundle checker (what the CSV/CRD JSON schemas cannot see);
//! - `crd_schema`: a CRD's structural schema as a JSON Schema, to validate objects offline;
//! - `webhook_samples`: the cluster state the sample AdmissionReviews in `webhooks/samples/` assume.

pub mod bundle_check;
pub mod crd_schema;
pub mod webhook_samples;
