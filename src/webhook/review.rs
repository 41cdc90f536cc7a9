//! The thin HTTP layer around the pure decisions: content type, body limit, AdmissionReview
//! parsing (a malformed review is answered with HTTP 200 and an error result, never a panic),
//! response building and metrics.

use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use json_patch::Patch;
use kube::core::admission::{AdmissionResponse, Operation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::observability::Metrics;

/// Largest accepted request body. The API server stores objects up to ~1.5 MiB and a review
/// carries `object` and `oldObject`, so 4 MiB fits every legitimate request.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allow { warnings: Vec<String> },
    Patch { patch: Patch, warnings: Vec<String> },
    Deny(String),
}

impl Verdict {
    pub fn allow() -> Verdict {
        Verdict::Allow {
            warnings: Vec::new(),
        }
    }

    fn result_label(&self) -> &'static str {
        match self {
            Verdict::Allow { .. } => "allowed",
            Verdict::Patch { patch, .. } if patch.0.is_empty() => "allowed",
            Verdict::Patch { .. } => "mutated",
            Verdict::Deny(_) => "denied",
        }
    }
}

pub fn operation_label(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// The fields of an `admission.k8s.io/v1` AdmissionReview request the decisions use. Reading
/// only these (the rest of the review is skipped without allocating) is a third cheaper than
/// the full `kube::core::admission::AdmissionRequest`; responses are kube's `AdmissionResponse`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewRequest<T> {
    pub uid: String,
    pub operation: Operation,
    pub namespace: Option<String>,
    pub object: Option<T>,
    pub old_object: Option<T>,
}

#[derive(Deserialize)]
struct Review<T> {
    request: Option<ReviewRequest<T>>,
}

/// Builds the response for a request uid and a verdict.
pub fn respond(uid: &str, verdict: Verdict) -> AdmissionResponse {
    // `AdmissionResponse` has no public constructor without a typed request: start from
    // `invalid` and make it the plain "allowed" answer `From<&AdmissionRequest>` would give.
    let mut base = AdmissionResponse::invalid("");
    base.uid = uid.to_string();
    base.allowed = true;
    base.result = Default::default();
    match verdict {
        Verdict::Allow { warnings } => with_warnings(base, warnings),
        Verdict::Deny(msg) => {
            let mut r = base.deny(msg);
            r.result.code = 403;
            r.result.reason = "Forbidden".to_string();
            r
        }
        Verdict::Patch { patch, warnings } => {
            let base = with_warnings(base, warnings);
            if patch.0.is_empty() {
                return base;
            }
            match base.clone().with_patch(patch) {
                Ok(r) => r,
                // A json_patch::Patch always serializes; answer safely if it ever did not.
                Err(e) => base.deny(format!("internal error: {e}")),
            }
        }
    }
}

fn with_warnings(mut r: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        r.warnings = Some(warnings);
    }
    r
}

/// The error answer to a review that could not be read; keeps the uid when it can be found so
/// the API server can match it.
pub fn invalid(body: &[u8], message: String) -> AdmissionResponse {
    #[derive(Deserialize)]
    struct UidOnly {
        request: Option<UidRequest>,
    }
    #[derive(Deserialize)]
    struct UidRequest {
        uid: Option<String>,
    }
    let mut r = AdmissionResponse::invalid(message);
    r.result.code = 400;
    if let Ok(UidOnly {
        request: Some(UidRequest { uid: Some(uid) }),
    }) = serde_json::from_slice::<UidOnly>(body)
    {
        r.uid = uid;
    }
    r
}

/// Parses a review; the error names the offending field (`request.object.spec...`).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<ReviewRequest<T>, String> {
    // Fast path without path tracking; re-parse only to explain a failure.
    let review: Review<T> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(_) => {
            let de = &mut serde_json::Deserializer::from_slice(body);
            return Err(match serde_path_to_error::deserialize::<_, Review<T>>(de) {
                Ok(_) => "malformed AdmissionReview".to_string(),
                Err(e) => {
                    let path = e.path().to_string();
                    if path == "." || path == "?" || path.is_empty() {
                        format!("malformed AdmissionReview: {}", e.inner())
                    } else {
                        format!("malformed AdmissionReview at {path}: {}", e.inner())
                    }
                }
            });
        }
    };
    review.request.ok_or_else(|| {
        "malformed AdmissionReview: no request (expected admission.k8s.io/v1 AdmissionReview with a request)".to_string()
    })
}

/// The wire form of a response: an `admission.k8s.io/v1` AdmissionReview (never echoing
/// whatever `kind` a caller sent), with the patch base64-encoded as the API server's `[]byte`
/// field expects.
pub fn encode(resp: &AdmissionResponse) -> serde_json::Result<Vec<u8>> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire<'a> {
        uid: &'a str,
        allowed: bool,
        status: &'a kube::core::Status,
        #[serde(skip_serializing_if = "Option::is_none")]
        patch: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        patch_type: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        warnings: Option<&'a Vec<String>>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Envelope<'a> {
        api_version: &'static str,
        kind: &'static str,
        response: Wire<'a>,
    }
    use base64::Engine;
    let patch = resp
        .patch
        .as_ref()
        .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    serde_json::to_vec(&Envelope {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: Wire {
            uid: &resp.uid,
            allowed: resp.allowed,
            status: &resp.result,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings: resp.warnings.as_ref(),
        },
    })
}

fn json_response(resp: AdmissionResponse) -> Response {
    match encode(&resp) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not encode the response: {e}"),
        )
            .into_response(),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

const OPERATIONS: [&str; 5] = ["CREATE", "UPDATE", "DELETE", "CONNECT", "UNKNOWN"];
const RESULTS: [&str; 4] = ["allowed", "denied", "mutated", "error"];

/// One webhook's metric handles, resolved once: the per-request path then only bumps atomics
/// (no label hashing or registry lock per request).
pub struct AdmissionMetrics {
    pub webhook: &'static str,
    duration: prometheus::Histogram,
    counters: Vec<prometheus::IntCounter>,
}

impl AdmissionMetrics {
    pub fn new(metrics: &Metrics, webhook: &'static str) -> AdmissionMetrics {
        let counters = OPERATIONS
            .iter()
            .flat_map(|op| {
                RESULTS.iter().map(move |result| {
                    metrics
                        .admission_requests
                        .with_label_values(&[webhook, op, result])
                })
            })
            .collect();
        AdmissionMetrics {
            webhook,
            duration: metrics.admission_duration.with_label_values(&[webhook]),
            counters,
        }
    }

    fn record(&self, op: &str, result: &str, start: Instant) {
        let o = OPERATIONS.iter().position(|x| *x == op).unwrap_or(4);
        let r = RESULTS.iter().position(|x| *x == result).unwrap_or(3);
        if let Some(c) = self.counters.get(o * RESULTS.len() + r) {
            c.inc();
        }
        self.duration.observe(start.elapsed().as_secs_f64());
    }
}

/// Runs one webhook: checks the content type, parses, decides, records metrics, answers.
pub fn handle<T, F>(
    metrics: &AdmissionMetrics,
    headers: &HeaderMap,
    body: &Bytes,
    decide: F,
) -> Response
where
    T: DeserializeOwned,
    F: FnOnce(&ReviewRequest<T>) -> Verdict,
{
    let start = Instant::now();
    let webhook = metrics.webhook;
    let record = |op: &str, result: &str| metrics.record(op, result, start);
    if !is_json(headers) {
        record("UNKNOWN", "error");
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "an AdmissionReview must be sent with Content-Type: application/json",
        )
            .into_response();
    }
    let req = match parse::<T>(body) {
        Ok(req) => req,
        Err(msg) => {
            record("UNKNOWN", "error");
            debug!(webhook, error = %msg, "malformed AdmissionReview");
            return json_response(invalid(body, msg));
        }
    };
    let verdict = decide(&req);
    let op = operation_label(&req.operation);
    record(op, verdict.result_label());
    debug!(
        webhook,
        uid = %req.uid,
        namespace = req.namespace.as_deref().unwrap_or(""),
        operation = op,
        result = verdict.result_label(),
        "admission decided"
    );
    json_response(respond(&req.uid, verdict))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn malformed_bodies_name_the_problem_and_keep_the_uid() {
        let err = parse::<Value>(b"{not json").expect_err("bad json");
        assert!(
            err.starts_with("malformed AdmissionReview: key must be a string"),
            "{err}"
        );
        let err =
            parse::<Value>(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#)
                .expect_err("no request");
        assert!(err.contains("no request"), "{err}");
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","operation":"EXPLODE"}}"#;
        let err = parse::<Value>(body).expect_err("bad op");
        assert!(err.contains("request"), "{err}");
        let resp = invalid(body, err);
        assert_eq!(resp.uid, "u-1");
        assert!(!resp.allowed);
        assert_eq!(resp.result.code, 400);
    }

    #[test]
    fn wire_form_has_base64_patch_and_v1_envelope() {
        let patch: Patch = serde_json::from_value(serde_json::json!([
            {"op": "add", "path": "/spec/runtimeClassName", "value": "kata"}
        ]))
        .expect("patch");
        let resp = respond(
            "u-2",
            Verdict::Patch {
                patch,
                warnings: vec!["w".into()],
            },
        );
        let v: Value = serde_json::from_slice(&encode(&resp).expect("encode")).expect("json");
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["response"]["uid"], "u-2");
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        assert_eq!(v["response"]["warnings"][0], "w");
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["response"]["patch"].as_str().expect("base64 text"))
            .expect("base64");
        let ops: Value = serde_json::from_slice(&raw).expect("json patch");
        assert_eq!(ops[0]["path"], "/spec/runtimeClassName");
        let denied: Value = serde_json::from_slice(
            &encode(&respond("u-3", Verdict::Deny("no".into()))).expect("e"),
        )
        .expect("j");
        assert_eq!(denied["response"]["allowed"], false);
        assert_eq!(denied["response"]["status"]["code"], 403);
        assert_eq!(denied["response"]["status"]["message"], "no");
    }

    #[test]
    fn content_type_with_parameters_is_json() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().expect("hv"),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, "text/plain".parse().expect("hv"));
        assert!(!is_json(&h));
        assert!(!is_json(&HeaderMap::new()));
    }
}
