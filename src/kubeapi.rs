//! The write helpers every part of the operator uses (reconciler, webhook registration,
//! certificate Secret), so writes behave the same everywhere: server-side apply under the one
//! field manager, forced; every call bounded in time; a delete of something already gone is
//! success. And one classification of API errors for requeues, metrics and logs. And the
//! [`WriteFence`] that ends a leader's writes when its leadership term ends.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// A write refused by the [`WriteFence`]: this replica's leadership term ended.
    NotLeader,
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
            Category::NotLeader => "not_leader",
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

/// Until when this process may write. Leader election holds one per leadership term and moves
/// its deadline to "renew deadline after the last successful renewal"; once the deadline passes
/// (or the term is closed) it never opens again. Writers ask [`WriteFence::bound`] before every
/// request and bound the request by the time left, so no write starts, and none is still
/// awaited, after the deadline, which comes before any other replica may take the Lease over.
#[derive(Clone, Debug, Default)]
pub struct WriteFence {
    /// `None`: no leader election, always open.
    deadline: Option<Arc<Mutex<Instant>>>,
}

/// A write refused because the leadership term it belonged to has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "not written: this replica's leadership term has ended (the Lease was not renewed before its renew deadline, so another replica may lead)"
)]
pub struct FenceClosed;

impl WriteFence {
    /// A fence that never closes (`--no-leader-elect`, tests of the reconciler alone).
    pub fn always_open() -> Self {
        Self::default()
    }

    /// A fence open until `deadline`.
    pub fn until(deadline: Instant) -> Self {
        WriteFence {
            deadline: Some(Arc::new(Mutex::new(deadline))),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let d = self.deadline.as_ref()?;
        Some(*d.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Moves the deadline to `deadline` if the fence is still open; a closed fence stays closed.
    pub fn extend(&self, deadline: Instant) {
        if let Some(d) = &self.deadline {
            let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
            if Instant::now() < *d {
                *d = deadline.max(*d);
            }
        }
    }

    /// Closes the fence now, for good.
    pub fn close(&self) {
        if let Some(d) = &self.deadline {
            *d.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }

    /// The deadline, `None` for a fence that never closes.
    pub fn closes_at(&self) -> Option<Instant> {
        self.deadline()
    }

    /// The time bound for one write that would otherwise get `timeout`: `timeout` cut to what is
    /// left of the term, or [`FenceClosed`] once nothing is.
    pub fn bound(&self, timeout: Duration) -> Result<Duration, FenceClosed> {
        let Some(deadline) = self.deadline() else {
            return Ok(timeout);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(FenceClosed)
        } else {
            Ok(timeout.min(left))
        }
    }
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

    #[test]
    fn a_fence_cuts_timeouts_to_its_deadline_then_refuses_for_good() {
        let open = WriteFence::always_open();
        assert_eq!(open.bound(REQUEST_TIMEOUT), Ok(REQUEST_TIMEOUT));
        assert_eq!(open.closes_at(), None);

        let fence = WriteFence::until(Instant::now() + Duration::from_secs(3600));
        assert_eq!(fence.bound(REQUEST_TIMEOUT), Ok(REQUEST_TIMEOUT));
        let soon = Instant::now() + Duration::from_secs(5);
        let fence = WriteFence::until(soon);
        let cut = fence.bound(REQUEST_TIMEOUT).expect("open");
        assert!(cut <= Duration::from_secs(5), "{cut:?}");
        fence.close();
        assert_eq!(fence.bound(REQUEST_TIMEOUT), Err(FenceClosed));
        fence.extend(Instant::now() + Duration::from_secs(3600));
        assert_eq!(
            fence.bound(REQUEST_TIMEOUT),
            Err(FenceClosed),
            "a closed term never reopens"
        );
        assert!(
            FenceClosed
                .to_string()
                .starts_with("not written: this replica's leadership term has ended")
        );
    }

    #[test]
    fn an_open_fence_only_moves_its_deadline_later() {
        let far = Instant::now() + Duration::from_secs(3600);
        let fence = WriteFence::until(far);
        fence.extend(Instant::now() + Duration::from_secs(1));
        assert_eq!(fence.closes_at(), Some(far));
        fence.extend(far + Duration::from_secs(1));
        assert_eq!(fence.closes_at(), Some(far + Duration::from_secs(1)));
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
