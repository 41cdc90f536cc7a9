//! TokenReview and SubjectAccessReview (create-only resources), answered by callbacks the test
//! sets: which bearer tokens authenticate as whom, and which access questions are allowed.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::FakeApi;
use super::dispatch::Target;
use super::errors::ApiErr;
use super::writes::parse_body;

/// The authenticated identity a token maps to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReviewUser {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// One SubjectAccessReview question.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessRequest {
    pub user: String,
    pub groups: Vec<String>,
    pub verb: String,
    /// Non-resource URL such as `/metrics`.
    pub path: Option<String>,
    pub resource: Option<String>,
    pub namespace: Option<String>,
}

pub(super) type TokenFn = dyn Fn(&str) -> Option<ReviewUser> + Send + Sync;
pub(super) type AccessFn = dyn Fn(&AccessRequest) -> bool + Send + Sync;

/// The callback set now (a lock poisoned by a panicking test still holds a usable value).
fn current<T: ?Sized>(slot: &Mutex<Option<Arc<T>>>) -> Option<Arc<T>> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

impl AccessRequest {
    /// The question a SubjectAccessReview's `spec` asks.
    fn from_spec(spec: &Value) -> AccessRequest {
        let ra = &spec["resourceAttributes"];
        let nra = &spec["nonResourceAttributes"];
        AccessRequest {
            user: spec["user"].as_str().unwrap_or("").into(),
            groups: spec["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str().map(String::from))
                .collect(),
            verb: ra["verb"]
                .as_str()
                .or(nra["verb"].as_str())
                .unwrap_or("")
                .into(),
            path: nra["path"].as_str().map(String::from),
            resource: ra["resource"].as_str().map(String::from),
            namespace: ra["namespace"].as_str().map(String::from),
        }
    }
}

impl FakeApi {
    /// Which bearer tokens TokenReview accepts, and as whom. Default: none.
    pub fn set_token_reviewer(
        &self,
        f: impl Fn(&str) -> Option<ReviewUser> + Send + Sync + 'static,
    ) {
        *self.inner.tokens.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f));
    }

    /// Which SubjectAccessReviews are allowed. Default: none.
    pub fn set_access_reviewer(&self, f: impl Fn(&AccessRequest) -> bool + Send + Sync + 'static) {
        *self.inner.access.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f));
    }

    /// TokenReview / SubjectAccessReview, answered by the configured callbacks.
    pub(super) fn review(&self, t: &Target, bytes: &[u8]) -> Result<(u16, Value), ApiErr> {
        let mut obj = parse_body(bytes)?;
        obj["apiVersion"] = json!(t.res.api_version());
        obj["kind"] = json!(t.res.kind);
        let spec = obj["spec"].clone();
        obj["status"] = if t.res.plural == "tokenreviews" {
            self.token_review(&spec)
        } else {
            self.access_review(&spec)
        };
        Ok((201, obj))
    }

    fn token_review(&self, spec: &Value) -> Value {
        let token = spec["token"].as_str().unwrap_or("");
        match current(&self.inner.tokens).and_then(|f| f(token)) {
            Some(u) => {
                json!({"authenticated": true, "user": {"username": u.username, "uid": u.uid, "groups": u.groups}, "audiences": spec["audiences"]})
            }
            None => json!({"authenticated": false, "error": "invalid bearer token"}),
        }
    }

    fn access_review(&self, spec: &Value) -> Value {
        let req = AccessRequest::from_spec(spec);
        let allowed = current(&self.inner.access).is_some_and(|f| f(&req));
        json!({"allowed": allowed, "reason": if allowed { "allowed by fake reviewer" } else { "denied by fake reviewer" }})
    }
}
