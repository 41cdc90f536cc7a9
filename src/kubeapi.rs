//! The write helpers every part of the operator uses (reconciler, webhook registration,
//! certificate Secret), so writes behave the same everywhere: server-side apply under the one
//! field manager, forced; every call bounded in time; a delete of something already gone is
//! success. And one classification of API errors for requeues, metrics and logs.

use std::future::Future;
use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::names::FIELD_MANAGER;

/// Longest any single request to the API server may take before the caller gives up on it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Low-cardinality class of an error, for the requeue policy, the
/// `kata_operator_api_errors_total{category}` label and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// 403: the operator's RBAC lacks a verb (never transient).
    Forbidden,
    NotFound,
    Conflict,
    /// 429: the API server asks us to slow down.
    Throttled,
    /// 5xx.
    Server,
    /// Any other 4xx.
    Client,
    /// The connection failed before an answer.
    Transport,
    Timeout,
    /// A watch cache has not synced.
    Cache,
    /// Our own bug (serialization).
    Internal,
    /// A watch stream failed in a way that is not an API answer.
    Watch,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Forbidden => "forbidden",
            Category::NotFound => "not_found",
            Category::Conflict => "conflict",
            Category::Throttled => "throttled",
            Category::Server => "server",
            Category::Client => "client",
            Category::Transport => "transport",
            Category::Timeout => "timeout",
            Category::Cache => "cache",
            Category::Internal => "internal",
            Category::Watch => "watch",
        }
    }
}

/// Category of a kube client error: the HTTP class for API answers, `transport` otherwise.
pub fn kube_category(e: &kube::Error) -> Category {
    match e {
        kube::Error::Api(status) => match status.code {
            403 => Category::Forbidden,
            404 => Category::NotFound,
            409 => Category::Conflict,
            429 => Category::Throttled,
            500..=599 => Category::Server,
            _ => Category::Client,
        },
        _ => Category::Transport,
    }
}

/// Category of a watch failure (the API answer inside it, if any).
pub fn watch_error_category(e: &kube::runtime::watcher::Error) -> Category {
    use kube::runtime::watcher::Error as W;
    match e {
        W::InitialListFailed(k) | W::WatchStartFailed(k) | W::WatchFailed(k) => kube_category(k),
        _ => Category::Watch,
    }
}

/// An API call that failed: the server's (or the connection's) error, or no answer in time.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("no answer from the API server within {}s", .0.as_secs_f64())]
    Timeout(Duration),
}

/// Runs one API call, giving up after `timeout`.
pub async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r.map_err(CallError::Kube),
        Err(_) => Err(CallError::Timeout(timeout)),
    }
}

/// Server-side apply of `obj` (its name from its metadata) under the operator's field manager.
pub async fn apply<K>(api: &Api<K>, obj: &K, timeout: Duration) -> Result<K, CallError>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = obj.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    bounded(timeout, api.patch(&name, &params, &Patch::Apply(obj))).await
}

/// Deletes `name` (background propagation); an object that is already gone is what we wanted,
/// e.g. after a crash right after the first delete. True when this call deleted it.
pub async fn delete_ignoring_404<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
) -> Result<bool, CallError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match bounded(timeout, api.delete(name, &DeleteParams::background())).await {
        Err(CallError::Kube(kube::Error::Api(s))) if s.code == 404 => Ok(false),
        other => other.map(|_| true),
    }
}

/// `Ok(None)` when the API server answered 404, the value otherwise.
pub fn none_if_absent<T>(r: Result<T, CallError>) -> Result<Option<T>, CallError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(CallError::Kube(kube::Error::Api(s))) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> CallError {
        CallError::Kube(kube::Error::Api(
            kube::core::Status::failure("x", "y")
                .with_code(code)
                .boxed(),
        ))
    }

    #[test]
    fn not_found_is_none_and_other_errors_stay() {
        assert!(matches!(
            none_if_absent::<()>(Err(api_error(404))),
            Ok(None)
        ));
        assert!(matches!(none_if_absent(Ok(1)), Ok(Some(1))));
        assert!(none_if_absent::<()>(Err(api_error(500))).is_err());
        assert!(none_if_absent::<()>(Err(CallError::Timeout(Duration::from_secs(1)))).is_err());
    }

    #[tokio::test]
    async fn a_call_that_never_answers_times_out() {
        let never = std::future::pending::<Result<(), kube::Error>>();
        let e = bounded(Duration::from_millis(10), never)
            .await
            .expect_err("timeout");
        assert_eq!(e.to_string(), "no answer from the API server within 0.01s");
    }
}
