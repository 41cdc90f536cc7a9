//! Reconciler errors, classified so the requeue policy and the `api_errors{category}` metric agree.
//!
//! An invalid spec is deliberately not an error: it is a status outcome that waits for the object
//! to change. Everything here is transient from the reconciler's point of view and is retried
//! with a per-object exponential backoff.

pub use crate::kubeapi::{Category, kube_category};

use crate::kubeapi::FenceClosed;

use std::time::Duration;

/// Why a reconciliation could not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server answered with an error, or the connection failed.
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer in time.
    #[error("{action}: no answer from the API server within {}s", timeout.as_secs_f64())]
    Timeout { action: String, timeout: Duration },
    /// The write was not sent: this replica's leadership term ended (see
    /// [`crate::kubeapi::WriteFence`]).
    #[error("{action}: {source}")]
    NotLeader {
        action: String,
        #[source]
        source: FenceClosed,
    },
    /// A watch cache has not completed its first list yet, so the cluster state is unknown.
    #[error("the {0} watch cache has not synced yet; retrying")]
    CacheNotReady(&'static str),
    /// An object could not be turned into JSON (a programming error, reported rather than panicking).
    #[error("serializing {what}: {source}")]
    Serialize {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Requeue policy derived from the category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Soon,
    Backoff,
}

impl Error {
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            action: action.into(),
            source,
        }
    }

    pub fn category(&self) -> Category {
        match self {
            Error::Kube { source, .. } => kube_category(source),
            Error::Timeout { .. } => Category::Timeout,
            Error::NotLeader { .. } => Category::NotLeader,
            Error::CacheNotReady(_) => Category::Cache,
            Error::Serialize { .. } => Category::Internal,
        }
    }

    /// Whether the API server (or the way to it) failed, as opposed to our own state.
    pub fn is_api(&self) -> bool {
        matches!(self, Error::Kube { .. } | Error::Timeout { .. })
    }

    /// A failed call of `action`, from the shared helpers' error.
    pub fn call(action: impl Into<String>, e: crate::kubeapi::CallError) -> Self {
        match e {
            crate::kubeapi::CallError::Kube(source) => Error::kube(action, source),
            crate::kubeapi::CallError::Timeout(timeout) => Error::Timeout {
                action: action.into(),
                timeout,
            },
        }
    }

    /// A write of `action` the fence refused.
    pub fn not_leader(action: impl Into<String>, source: FenceClosed) -> Self {
        Error::NotLeader {
            action: action.into(),
            source,
        }
    }

    /// The API server answered that the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(s), .. } if s.code == 404)
    }

    /// Success when the object the write was for is gone (there is nothing left to change).
    pub fn ok_if_absent(r: Result<(), Error>) -> Result<(), Error> {
        match r {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Someone else changed (or removed) the object first: retry almost at once with fresh
    /// caches. Everything else backs off exponentially.
    pub fn retry(&self) -> Retry {
        match self.category() {
            Category::Conflict | Category::NotFound => Retry::Soon,
            _ => Retry::Backoff,
        }
    }
}

/// Exponential backoff: `base * 2^(failures-1)`, capped at `max`.
pub fn backoff_delay(failures: u32, base: Duration, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << exp).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16) -> Error {
        Error::kube(
            "applying MachineConfig 50-kata-crio-dropin",
            kube::Error::Api(
                Status::failure("boom", "InternalError")
                    .with_code(code)
                    .boxed(),
            ),
        )
    }

    #[test]
    fn categories_follow_the_http_class() {
        assert_eq!(api(403).category(), Category::Forbidden);
        assert_eq!(api(404).category().as_str(), "not_found");
        assert_eq!(api(409).category().as_str(), "conflict");
        assert_eq!(api(429).category().as_str(), "throttled");
        assert_eq!(api(500).category().as_str(), "server");
        assert_eq!(api(503).category().as_str(), "server");
        assert_eq!(api(422).category().as_str(), "client");
        assert_eq!(
            Error::Timeout {
                action: "x".into(),
                timeout: Duration::from_secs(1)
            }
            .category(),
            Category::Timeout
        );
        assert_eq!(Error::CacheNotReady("nodes").category(), Category::Cache);
    }

    #[test]
    fn conflicts_retry_soon_and_server_errors_back_off() {
        assert_eq!(api(409).retry(), Retry::Soon);
        assert_eq!(api(500).retry(), Retry::Backoff);
        assert_eq!(api(429).retry(), Retry::Backoff);
    }

    #[test]
    fn messages_name_the_action() {
        assert!(
            api(500)
                .to_string()
                .starts_with("applying MachineConfig 50-kata-crio-dropin: ")
        );
        let t = Error::Timeout {
            action: "deleting RuntimeClass kata".into(),
            timeout: Duration::from_millis(1500),
        };
        assert_eq!(
            t.to_string(),
            "deleting RuntimeClass kata: no answer from the API server within 1.5s"
        );
        assert_eq!(
            Error::CacheNotReady("nodes").to_string(),
            "the nodes watch cache has not synced yet; retrying"
        );
    }

    #[test]
    fn serialization_failures_name_the_object_and_are_not_api_errors() {
        let source = serde_json::from_str::<serde_json::Value>("{").expect_err("invalid json");
        let e = Error::Serialize {
            what: "status of KataConfig example".into(),
            source,
        };
        assert!(
            e.to_string()
                .starts_with("serializing status of KataConfig example: ")
        );
        assert_eq!(e.category(), Category::Internal);
        assert!(!e.is_api());
        assert!(!Error::CacheNotReady("pods").is_api());
        assert!(api(500).is_api());
    }

    #[test]
    fn a_fenced_write_names_the_action_and_is_no_api_error() {
        let e = Error::not_leader("applying RuntimeClass kata", FenceClosed);
        assert_eq!(
            e.to_string(),
            format!("applying RuntimeClass kata: {FenceClosed}")
        );
        assert_eq!(e.category().as_str(), "not_leader");
        assert!(!e.is_api(), "not counted as an API error");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        assert_eq!(backoff_delay(1, base, max), Duration::from_millis(100));
        assert_eq!(backoff_delay(2, base, max), Duration::from_millis(200));
        assert_eq!(backoff_delay(4, base, max), Duration::from_millis(800));
        assert_eq!(backoff_delay(5, base, max), max);
        assert_eq!(backoff_delay(u32::MAX, base, max), max);
    }
}
