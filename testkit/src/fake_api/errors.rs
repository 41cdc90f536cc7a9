//! API errors as the API server answers them: a `Status` body with the server's reason for the
//! code (and `details` for a 403), `Retry-After` on 429.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::FakeBody;
use super::authz::{Attributes, UserInfo};
use super::store::ResourceInfo;

/// An API error as the server returns it.
#[derive(Debug)]
pub(super) struct ApiErr {
    pub(super) code: u16,
    pub(super) reason: &'static str,
    pub(super) message: String,
    pub(super) details: Option<Value>,
}

/// An error with the API server's reason for `code`.
pub(super) fn err(code: u16, message: impl Into<String>) -> ApiErr {
    let reason = match code {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    ApiErr {
        code,
        reason,
        message: message.into(),
        details: None,
    }
}

/// 403 as `errors.NewForbidden` builds it: `<resource>.<group> "<name>" is forbidden: <why>`.
pub(super) fn forbidden(attrs: &Attributes, why: &str) -> ApiErr {
    let message = match (attrs.path.is_some(), attrs.name.is_empty()) {
        (true, _) => format!("forbidden: {why}"),
        (false, true) => format!("{} is forbidden: {why}", attrs.qualified_resource()),
        (false, false) => format!(
            "{} {:?} is forbidden: {why}",
            attrs.qualified_resource(),
            attrs.name
        ),
    };
    let mut e = err(403, message);
    if attrs.path.is_none() {
        let mut details = json!({"group": attrs.group, "kind": attrs.resource});
        if !attrs.name.is_empty() {
            details["name"] = json!(attrs.name);
        }
        e.details = Some(details);
    }
    e
}

/// The request filter's denial sentence, with the authorizer's reason when it gave one.
pub(super) fn attrs_denial(attrs: &Attributes, user: &UserInfo, reason: &str) -> String {
    if reason.is_empty() {
        attrs.denial(user)
    } else {
        format!("{}: {reason}", attrs.denial(user))
    }
}

pub(super) fn already_exists(message: String) -> ApiErr {
    ApiErr {
        reason: "AlreadyExists",
        ..err(409, message)
    }
}

pub(super) fn not_found(r: &ResourceInfo, name: &str) -> ApiErr {
    let g = if r.group.is_empty() {
        r.plural.clone()
    } else {
        format!("{}.{}", r.plural, r.group)
    };
    err(404, format!("{g} \"{name}\" not found"))
}

pub(super) fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn status_with_details(e: &ApiErr) -> Value {
    let mut v = status_json(e.code, e.reason, &e.message);
    if let Some(d) = &e.details {
        v["details"] = d.clone();
    }
    v
}

/// A JSON answer with status `code`.
pub(super) fn full(code: u16, body: &Value) -> Response<FakeBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(
        Full::new(Bytes::from(bytes))
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    );
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

pub(super) fn err_response(e: &ApiErr) -> Response<FakeBody> {
    let mut resp = full(e.code, &status_with_details(e));
    if e.code == 429 {
        resp.headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("1"));
    }
    resp
}
