//! An in-memory Kubernetes API server behind a real `kube::Client`.
//!
//! The operator's own code (typed `Api<K>`, watchers, reflectors, server-side apply, finalizers,
//! status subresources) runs unmodified against it. Objects are stored generically as JSON keyed
//! by (group, version, plural, namespace, name); a small table maps plural <-> kind and scope, and
//! CRDs created through the API register their resources too.
//!
//! Authorization is enforced as kube-apiserver enforces it (see [`authz`]): every request of the
//! operator's client ([`FakeApi::client`], [`FakeApi::operator_client`]) is authorized as the
//! operator's ServiceAccount against the RBAC objects in the store, which [`FakeApi::new`] seeds
//! with the operator's generated ClusterRole, Role and bindings; a denial is the real 403. Other
//! clients ([`FakeApi::client_as`]) are cluster administrators. A test opts the operator into
//! administrator rights explicitly with [`FakeApi::operator_as_admin`].
//!
//! Deliberate approximations (documented so tests do not rely on them):
//! - server-side apply deep-merges the applied object into the existing one (maps merge, lists
//!   replace, null deletes); every write records its manager in `managedFields` with the field
//!   set of what it wrote (FieldsV1 `f:` keys, lists as leaves, none for a JSON patch), about as
//!   large as the real server's; fields a manager stops applying are not removed and there is no
//!   conflict detection (`force` is moot);
//! - metadata-only requests (`Accept: ...;as=PartialObjectMetadata`) get metadata only, as from
//!   the real server;
//! - strategic merge patch is treated as a JSON merge patch;
//! - namespaces are not required to exist, and deleting a namespace does not empty it;
//! - garbage collection is immediate and background-style (a dependent goes when all its owners
//!   are gone), honouring `propagationPolicy: Orphan`.
//!
//! Layout: `store` holds the objects (metadata, history, finalizers, garbage collection, CRD
//! registration) behind one lock; `dispatch` reads a request, authorizes it, logs it
//! ([`RequestRecord`], with injected [`Fault`]s; [`FakeApi::set_unreachable`] takes the whole
//! server down) and hands it to `reads`, `writes` (with the
//! admission checks of `admission`), `watch` or `review`; `selectors` parses and matches label
//! and field selectors; `errors` builds the Status bodies.

mod admission;
pub mod authz;
mod discovery;
mod dispatch;
mod errors;
mod reads;
mod requests;
mod review;
mod selectors;
mod store;
mod watch;
mod writes;

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::Request;
use http_body_util::combinators::UnsyncBoxBody;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use sandboxed_containers_operator::names::DEFAULT_OPERATOR_NAMESPACE;
use sandboxed_containers_operator::packaging::{OPERATOR_NAME, manifests};

pub use authz::{Attributes, UserInfo};
pub use requests::{Authorization, Fault, FaultKind, RequestRecord};
pub use review::{AccessRequest, ReviewUser};
pub use store::ResourceInfo;

use review::{AccessFn, TokenFn};
use store::{Key, Msg, State};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type FakeBody = UnsyncBoxBody<Bytes, BoxError>;

/// How many past changes a watch can resume from before it gets 410 Gone (by default).
const HISTORY: usize = 20_000;

/// Whom a client authenticates as.
#[derive(Clone)]
enum Identity {
    /// The operator's ServiceAccount (or an administrator after `operator_as_admin`).
    Operator,
    User(UserInfo),
}

struct Inner {
    state: Mutex<State>,
    tx: broadcast::Sender<Msg>,
    tokens: Mutex<Option<Arc<TokenFn>>>,
    access: Mutex<Option<Arc<AccessFn>>>,
    operator: Mutex<UserInfo>,
    /// Set by [`FakeApi::set_unreachable`]: every request fails at the connection level.
    unreachable: std::sync::atomic::AtomicBool,
}

/// Handle on the fake server; cheap to clone, every clone sees the same store.
#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Inner>,
}

impl Default for FakeApi {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeApi {
    pub fn new() -> Self {
        Self::with_history(HISTORY)
    }

    /// A fake that keeps only `limit` past changes, so resuming an older watch gets 410 Gone.
    pub fn with_history(limit: usize) -> Self {
        let (tx, _) = broadcast::channel(4096);
        let fake = FakeApi {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new(limit, tx.clone())),
                tx,
                tokens: Mutex::new(None),
                access: Mutex::new(None),
                operator: Mutex::new(UserInfo::service_account(
                    DEFAULT_OPERATOR_NAMESPACE,
                    OPERATOR_NAME,
                )),
                unreachable: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        fake.seed_bootstrap_rbac();
        fake.grant_operator_rbac(DEFAULT_OPERATOR_NAMESPACE);
        fake
    }

    /// A fake whose operator client is a cluster administrator (no RBAC applies to it).
    pub fn unrestricted() -> Self {
        let fake = Self::new();
        fake.operator_as_admin();
        fake
    }

    /// The operator's generated RBAC (ClusterRole, ClusterRoleBinding, Role and RoleBinding of
    /// `deploy/operator.yaml`) for a ServiceAccount in `namespace`, and the operator client
    /// authenticated as that ServiceAccount from now on.
    pub fn grant_operator_rbac(&self, namespace: &str) {
        for obj in manifests::operator_rbac(namespace).expect("the generated RBAC serializes") {
            self.insert_json(obj);
        }
        *self.operator_identity() = UserInfo::service_account(namespace, OPERATOR_NAME);
    }

    /// Explicit opt-out of authorization: the operator client becomes a cluster administrator.
    pub fn operator_as_admin(&self) {
        *self.operator_identity() = UserInfo::admin("operator-admin");
    }

    /// Who the operator client authenticates as now.
    pub fn operator_user(&self) -> UserInfo {
        self.operator_identity().clone()
    }

    fn operator_identity(&self) -> MutexGuard<'_, UserInfo> {
        self.inner
            .operator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The roles every cluster has from its bootstrap policy that the operator relies on:
    /// discovery and `/version` for every authenticated user.
    fn seed_bootstrap_rbac(&self) {
        self.insert_json(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:discovery"},
            "rules": [{"verbs": ["get"], "nonResourceURLs": [
                "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                "/openapi/*", "/readyz", "/version", "/version/",
            ]}],
        }));
        self.insert_json(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:discovery"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:discovery"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}],
        }));
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge every other user of the store.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The operator's client: requests are logged as client `"operator"` and authorized as the
    /// operator's ServiceAccount (see [`FakeApi::grant_operator_rbac`]).
    pub fn client(&self) -> kube::Client {
        self.operator_client("operator")
    }

    /// An operator client logged under `name` (one per replica of an HA test).
    pub fn operator_client(&self, name: &str) -> kube::Client {
        self.client_with(name, Identity::Operator)
    }

    /// A cluster administrator's client whose requests are logged under `name`, so tests can tell
    /// the operator's requests from a simulator's (the MCO simulator gets `client_as("mco-sim")`).
    pub fn client_as(&self, name: &str) -> kube::Client {
        self.client_with(name, Identity::User(UserInfo::admin(name)))
    }

    /// A client logged under `name` and authenticated as `user` (authorized by RBAC).
    pub fn client_as_user(&self, name: &str, user: UserInfo) -> kube::Client {
        self.client_with(name, Identity::User(user))
    }

    fn client_with(&self, name: &str, identity: Identity) -> kube::Client {
        let api = self.clone();
        let name: Arc<str> = Arc::from(name);
        let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
            let (api, name) = (api.clone(), name.clone());
            let user = match &identity {
                Identity::Operator => api.operator_user(),
                Identity::User(u) => u.clone(),
            };
            async move {
                if api.is_unreachable() {
                    let (parts, _) = req.into_parts();
                    return Err(BoxError::from(api.refuse(&parts, &name, &user)));
                }
                Ok::<_, BoxError>(api.serve_as(req, &name, &user).await)
            }
        });
        kube::Client::new(svc, "default")
    }

    /// Serve another resource (e.g. a CRD-backed kind the table does not know).
    pub fn register(&self, info: ResourceInfo) {
        self.state().serve_resource(info);
    }

    /// Seed an object as-is (status included), assigning uid/resourceVersion like a create.
    pub fn insert<K: Resource<DynamicType = ()> + Serialize>(&self, obj: &K) -> Value {
        let mut v = serde_json::to_value(obj).expect("typed kube objects always serialize");
        v["apiVersion"] = json!(K::api_version(&()));
        v["kind"] = json!(K::kind(&()));
        self.insert_json(v)
    }

    /// Seed a JSON object (needs apiVersion, kind, metadata.name); replaces any existing one.
    pub fn insert_json(&self, obj: Value) -> Value {
        let mut st = self.state();
        let res = st
            .resource_by_kind(
                obj["apiVersion"].as_str().unwrap_or(""),
                obj["kind"].as_str().unwrap_or(""),
            )
            .unwrap_or_else(|| panic!("fake api: unknown apiVersion/kind in {obj}"));
        let key = Key {
            group: res.group.clone(),
            version: res.version.clone(),
            plural: res.plural.clone(),
            namespace: if res.namespaced {
                obj["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string()
            } else {
                String::new()
            },
            name: obj["metadata"]["name"]
                .as_str()
                .expect("insert_json: metadata.name")
                .to_string(),
        };
        let mut obj = obj;
        if res.namespaced {
            obj["metadata"]["namespace"] = json!(key.namespace);
        }
        st.commit(&key, obj)
    }

    fn key_for(&self, api_version: &str, plural: &str, ns: Option<&str>, name: &str) -> Key {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        Key {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            namespace: ns.unwrap_or("").into(),
            name: name.into(),
        }
    }

    /// The stored object, e.g. `get_json("v1", "nodes", None, "worker-0")`.
    pub fn get_json(
        &self,
        api_version: &str,
        plural: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let key = self.key_for(api_version, plural, ns, name);
        self.state().objects.get(&key).cloned()
    }

    /// Every stored object of a resource (all namespaces when `ns` is None), sorted by ns/name.
    pub fn list_json(&self, api_version: &str, plural: &str, ns: Option<&str>) -> Vec<Value> {
        let probe = self.key_for(api_version, plural, ns, "");
        self.state()
            .objects
            .iter()
            .filter(|(k, _)| {
                k.group == probe.group
                    && k.version == probe.version
                    && k.plural == probe.plural
                    && ns.is_none_or(|n| n == k.namespace)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every stored object of every resource, ordered by group, version, plural, namespace, name.
    pub fn all_objects(&self) -> Vec<Value> {
        self.state().objects.values().cloned().collect()
    }

    /// Typed get of a cluster-scoped object.
    pub fn get<K: Resource<DynamicType = ()> + DeserializeOwned>(&self, name: &str) -> Option<K> {
        self.get_opt_ns(None, name)
    }

    /// Typed get of a namespaced object.
    pub fn get_ns<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        ns: &str,
        name: &str,
    ) -> Option<K> {
        self.get_opt_ns(Some(ns), name)
    }

    fn get_opt_ns<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        name: &str,
    ) -> Option<K> {
        let v = self.get_json(&K::api_version(&()), &K::plural(&()), ns, name)?;
        Some(serde_json::from_value(v).expect("stored object deserializes as its type"))
    }

    /// Typed list (all namespaces).
    pub fn list<K: Resource<DynamicType = ()> + DeserializeOwned>(&self) -> Vec<K> {
        self.list_json(&K::api_version(&()), &K::plural(&()), None)
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("stored object deserializes as its type"))
            .collect()
    }

    /// Delete like the API would (finalizers respected, dependents collected). True if it existed.
    pub fn delete(&self, api_version: &str, plural: &str, ns: Option<&str>, name: &str) -> bool {
        let key = self.key_for(api_version, plural, ns, name);
        self.state().delete_key(&key, false).is_some()
    }

    /// Current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state().rv
    }
}
