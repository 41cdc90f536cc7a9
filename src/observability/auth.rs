//! Who may scrape `/metrics`: bearer-token authentication through a `TokenReview` and
//! authorization through a `SubjectAccessReview` for `get` on the non-resource URL `/metrics`
//! (what operator-sdk projects do with controller-runtime's `WithAuthenticationAndAuthorization`).
//!
//! Decisions are cached briefly, keyed by a SHA-256 of the token: the raw token is never stored,
//! and `BearerToken`'s `Debug` never prints it, so it cannot end up in a log line by accident.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, ObjectMeta, PostParams};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::debug;

/// The non-resource URL and verb a scraper must be allowed (RBAC `nonResourceURLs: ["/metrics"]`,
/// `verbs: ["get"]`).
pub const METRICS_PATH: &str = "/metrics";
pub const METRICS_VERB: &str = "get";

/// Most decisions kept at once; a flood of random tokens cannot grow the cache without bound.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// A bearer token taken from a request. `Debug` is redacted; `secret()` is the only way to the
/// value and is used solely to build the `TokenReview`.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Cache key: a digest, so the cache never holds the token itself.
    fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// Reads `Authorization: Bearer <token>`; the error is the one-line reason for the 401.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, String> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err("no bearer token: send the header `Authorization: Bearer <token>`".into());
        };
        let Ok(value) = value.to_str() else {
            return Err("the Authorization header is not valid ASCII".into());
        };
        let mut parts = value.trim().splitn(2, ' ');
        let scheme = parts.next().unwrap_or_default();
        let token = parts.next().unwrap_or_default().trim();
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(
                "the Authorization header must use the Bearer scheme: `Authorization: Bearer <token>`"
                    .into(),
            );
        }
        if token.is_empty() {
            return Err("the bearer token in the Authorization header is empty".into());
        }
        Ok(Self::new(token))
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// The user a `TokenReview` authenticated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn named(username: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            ..Self::default()
        }
    }
}

/// The answer for one token: may its holder `get` `/metrics`?
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessDecision {
    Allowed {
        user: UserInfo,
    },
    /// The token does not identify anyone (401).
    Unauthenticated {
        reason: String,
    },
    /// The token identifies `user`, who lacks the permission (403).
    Forbidden {
        user: UserInfo,
        reason: String,
    },
}

/// The review itself could not be done (API server unreachable, operator lacks RBAC for
/// reviews, malformed answer). Never cached: the next request tries again.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("TokenReview failed: {0}")]
    TokenReview(String),
    #[error("SubjectAccessReview failed: {0}")]
    SubjectAccessReview(String),
}

/// Decides whether a bearer token may read `/metrics`. Implemented against the API server
/// (`KubeAuthorizer`), by the cache (`CachedAuthorizer`) and by in-memory fakes in tests.
pub trait Authorizer: Send + Sync {
    fn review<'a>(
        &'a self,
        token: &'a BearerToken,
    ) -> BoxFuture<'a, Result<AccessDecision, AuthError>>;
}

/// `TokenReview` (`authentication.k8s.io/v1`) then `SubjectAccessReview`
/// (`authorization.k8s.io/v1`) for `get` on the non-resource URL `/metrics`.
pub struct KubeAuthorizer {
    token_reviews: Api<TokenReview>,
    access_reviews: Api<SubjectAccessReview>,
}

impl KubeAuthorizer {
    pub fn new(client: kube::Client) -> Self {
        Self {
            token_reviews: Api::all(client.clone()),
            access_reviews: Api::all(client),
        }
    }

    async fn authenticate(
        &self,
        token: &BearerToken,
    ) -> Result<Result<UserInfo, String>, AuthError> {
        let review = TokenReview {
            metadata: ObjectMeta::default(),
            spec: TokenReviewSpec {
                token: Some(token.secret().to_owned()),
                audiences: None,
            },
            status: None,
        };
        let answer = self
            .token_reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::TokenReview(describe(&e)))?;
        let Some(status) = answer.status else {
            return Err(AuthError::TokenReview(
                "the API server answered without a status".into(),
            ));
        };
        if status.authenticated != Some(true) {
            let reason = match status.error.as_deref().map(str::trim) {
                Some(e) if !e.is_empty() => format!("the API server rejected the token: {e}"),
                _ => "the API server did not authenticate the token".to_owned(),
            };
            return Ok(Err(one_line(&reason)));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        if username.is_empty() {
            return Err(AuthError::TokenReview(
                "the API server authenticated the token but named no user".into(),
            ));
        }
        Ok(Ok(UserInfo {
            username,
            uid: user.uid.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        }))
    }

    async fn authorize(&self, user: &UserInfo) -> Result<Result<(), String>, AuthError> {
        let review = SubjectAccessReview {
            metadata: ObjectMeta::default(),
            spec: SubjectAccessReviewSpec {
                user: Some(user.username.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: (!user.groups.is_empty()).then(|| user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(METRICS_PATH.to_owned()),
                    verb: Some(METRICS_VERB.to_owned()),
                }),
                resource_attributes: None,
            },
            status: None,
        };
        let answer = self
            .access_reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::SubjectAccessReview(describe(&e)))?;
        let Some(status) = answer.status else {
            return Err(AuthError::SubjectAccessReview(
                "the API server answered without a status".into(),
            ));
        };
        if status.allowed {
            return Ok(Ok(()));
        }
        let reason = [status.reason, status.evaluation_error]
            .into_iter()
            .flatten()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Ok(Err(one_line(&reason)))
    }
}

impl Authorizer for KubeAuthorizer {
    fn review<'a>(
        &'a self,
        token: &'a BearerToken,
    ) -> BoxFuture<'a, Result<AccessDecision, AuthError>> {
        Box::pin(async move {
            let user = match self.authenticate(token).await? {
                Ok(user) => user,
                Err(reason) => return Ok(AccessDecision::Unauthenticated { reason }),
            };
            match self.authorize(&user).await? {
                Ok(()) => Ok(AccessDecision::Allowed { user }),
                Err(reason) => Ok(AccessDecision::Forbidden { user, reason }),
            }
        })
    }
}

struct CacheEntry {
    expires: Instant,
    decision: AccessDecision,
}

/// Remembers decisions of `inner` for `ttl`, keyed by the token's SHA-256. Errors are not
/// remembered. At most `capacity` entries: expired ones go first, then the oldest.
pub struct CachedAuthorizer<A> {
    inner: A,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], CacheEntry>>,
}

impl<A: Authorizer> CachedAuthorizer<A> {
    pub fn new(inner: A, ttl: Duration) -> Self {
        Self::with_capacity(inner, ttl, DEFAULT_CACHE_CAPACITY)
    }

    pub fn with_capacity(inner: A, ttl: Duration, capacity: usize) -> Self {
        Self {
            inner,
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// Number of decisions currently held (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, key: &[u8; 32]) -> Option<AccessDecision> {
        let mut entries = self.entries.lock().ok()?;
        match entries.get(key) {
            Some(entry) if entry.expires > Instant::now() => Some(entry.decision.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn store(&self, key: [u8; 32], decision: AccessDecision) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let now = Instant::now();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            key,
            CacheEntry {
                expires: now + self.ttl,
                decision,
            },
        );
    }
}

impl<A: Authorizer> Authorizer for CachedAuthorizer<A> {
    fn review<'a>(
        &'a self,
        token: &'a BearerToken,
    ) -> BoxFuture<'a, Result<AccessDecision, AuthError>> {
        Box::pin(async move {
            let key = token.fingerprint();
            if let Some(decision) = self.lookup(&key) {
                debug!("metrics token decision served from cache");
                return Ok(decision);
            }
            let decision = self.inner.review(token).await?;
            self.store(key, decision.clone());
            Ok(decision)
        })
    }
}

/// The production authorizer: `KubeAuthorizer` behind a `CachedAuthorizer` with `cache_ttl`.
pub fn kube_authorizer(client: kube::Client, cache_ttl: Duration) -> Arc<dyn Authorizer> {
    Arc::new(CachedAuthorizer::new(
        KubeAuthorizer::new(client),
        cache_ttl,
    ))
}

/// An API error as the API server phrased it (`message (code Reason)`), else the client error.
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => one_line(&format!(
            "{} ({} {})",
            status.message, status.code, status.reason
        )),
        other => one_line(&other.to_string()),
    }
}

/// Reasons end up in a one-line HTTP body and in log fields.
pub(crate) fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_control())
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn headers(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_bytes(value).expect("header value"),
        );
        h
    }

    #[test]
    fn bearer_token_is_read_from_the_authorization_header() {
        let t = BearerToken::from_headers(&headers(b"Bearer abc.def")).expect("token");
        assert_eq!(t.secret(), "abc.def");
        let t = BearerToken::from_headers(&headers(b"bearer   xyz ")).expect("token");
        assert_eq!(t.secret(), "xyz");
    }

    #[test]
    fn missing_or_malformed_authorization_header_is_explained() {
        assert_eq!(
            BearerToken::from_headers(&HeaderMap::new()),
            Err("no bearer token: send the header `Authorization: Bearer <token>`".into())
        );
        assert_eq!(
            BearerToken::from_headers(&headers(b"Basic dXNlcjpwYXNz")),
            Err("the Authorization header must use the Bearer scheme: `Authorization: Bearer <token>`".into())
        );
        assert_eq!(
            BearerToken::from_headers(&headers(b"Bearer ")),
            Err("the bearer token in the Authorization header is empty".into())
        );
        assert_eq!(
            BearerToken::from_headers(&headers(b"Bearer \xfftoken")),
            Err("the Authorization header is not valid ASCII".into())
        );
    }

    #[test]
    fn bearer_token_debug_is_redacted() {
        let t = BearerToken::new("s3cr3t-token");
        let printed = format!("{t:?} {:?}", Some(&t));
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn reasons_are_flattened_to_one_line() {
        assert_eq!(one_line("a\nb\r\n  c\t"), "a b c");
        assert_eq!(one_line(""), "");
    }

    /// Answers by the token's value and counts calls; `"broken"` fails.
    #[derive(Default)]
    struct Counting {
        calls: AtomicUsize,
    }

    impl Authorizer for Counting {
        fn review<'a>(
            &'a self,
            token: &'a BearerToken,
        ) -> BoxFuture<'a, Result<AccessDecision, AuthError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                match token.secret() {
                    "broken" => Err(AuthError::TokenReview("connection refused".into())),
                    name => Ok(AccessDecision::Allowed {
                        user: UserInfo::named(name),
                    }),
                }
            })
        }
    }

    fn calls(c: &CachedAuthorizer<Counting>) -> usize {
        c.inner().calls.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn cached_decision_expires_after_the_ttl() {
        let cache = CachedAuthorizer::new(Counting::default(), Duration::from_secs(30));
        let token = BearerToken::new("alice");
        let first = cache.review(&token).await.expect("review");
        assert_eq!(
            first,
            AccessDecision::Allowed {
                user: UserInfo::named("alice")
            }
        );
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(cache.review(&token).await.expect("review"), first);
        assert_eq!(calls(&cache), 1, "served from cache within the TTL");
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.review(&token).await.expect("review");
        assert_eq!(calls(&cache), 2, "asked again once the TTL has passed");
    }

    #[tokio::test]
    async fn review_errors_are_not_cached() {
        let cache = CachedAuthorizer::new(Counting::default(), Duration::from_secs(30));
        let token = BearerToken::new("broken");
        let err = cache.review(&token).await.expect_err("error");
        assert_eq!(err.to_string(), "TokenReview failed: connection refused");
        cache.review(&token).await.expect_err("error");
        assert_eq!(calls(&cache), 2);
        assert!(cache.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn cache_never_holds_more_than_its_capacity() {
        let cache =
            CachedAuthorizer::with_capacity(Counting::default(), Duration::from_secs(60), 2);
        for name in ["a", "b", "c"] {
            cache.review(&BearerToken::new(name)).await.expect("review");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(cache.len(), 2);
        // "a" was the oldest and was evicted; "c" is still cached.
        cache.review(&BearerToken::new("c")).await.expect("review");
        assert_eq!(calls(&cache), 3);
        cache.review(&BearerToken::new("a")).await.expect("review");
        assert_eq!(calls(&cache), 4);
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn every_expired_entry_is_dropped_when_the_cache_is_full() {
        let cache =
            CachedAuthorizer::with_capacity(Counting::default(), Duration::from_secs(10), 2);
        cache.review(&BearerToken::new("a")).await.expect("review");
        tokio::time::advance(Duration::from_secs(1)).await;
        cache.review(&BearerToken::new("b")).await.expect("review");
        tokio::time::advance(Duration::from_secs(11)).await;
        // Both have expired: inserting "c" drops both, not just the oldest.
        cache.review(&BearerToken::new("c")).await.expect("review");
        assert_eq!(cache.len(), 1);
    }
}
