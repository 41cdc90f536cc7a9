//! An in-memory Kubernetes API server behind a real `kube::Client`.
//!
//! The operator's own code (typed `Api<K>`, watchers, reflectors, server-side apply, finalizers,
//! status subresources) runs unmodified against it. Objects are stored generically as JSON keyed
//! by (group, version, plural, namespace, name); a small table maps plural <-> kind and scope, and
//! CRDs created through the API register their resources too.
//!
//! Authorization is enforced as kube-apiserver enforces it (see `authz`): every request of the
//! operator's client ([`FakeApi::client`], [`FakeApi::operator_client`]) is authorized as the
//! operator's ServiceAccount against the RBAC objects in the store, which [`FakeApi::new`] seeds
//! with the operator's generated ClusterRole, Role and bindings; a denial is the real 403. Other
//! clients ([`FakeApi::client_as`]) are cluster administrators. A test opts the operator into
//! administrator rights explicitly with [`FakeApi::operator_as_admin`].
//!
//! Deliberate approximations (documented so tests do not rely on them):
//! - server-side apply deep-merges the applied object into the existing one (maps merge, lists
//!   replace, null deletes) and records the manager in `managedFields` without field sets; fields a
//!   manager stops applying are not removed and there is no conflict detection (`force` is moot);
//! - strategic merge patch is treated as a JSON merge patch;
//! - namespaces are not required to exist, and deleting a namespace does not empty it;
//! - garbage collection is immediate and background-style (a dependent goes when all its owners
//!   are gone), honouring `propagationPolicy: Orphan`.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::authz::{self, Attributes, RbacObjects, UserInfo};
use sandboxed_containers_operator::names::DEFAULT_OPERATOR_NAMESPACE;
use sandboxed_containers_operator::packaging::{OPERATOR_NAME, manifests};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type FakeBody = UnsyncBoxBody<Bytes, BoxError>;

/// How many past changes a watch can resume from before it gets 410 Gone (by default).
const HISTORY: usize = 20_000;

/// One served resource: what the plural <-> kind table knows about it.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    /// Has a `/status` subresource: spec writes ignore status and status writes ignore the rest.
    pub status: bool,
    /// Only POST is served (TokenReview, SubjectAccessReview).
    pub create_only: bool,
}

impl ResourceInfo {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

#[rustfmt::skip]
fn builtin_resources() -> Vec<ResourceInfo> {
    // (group, version, plural, kind, namespaced, status subresource, create-only)
    let rows: &[(&str, &str, &str, &str, bool, bool, bool)] = &[
        ("", "v1", "nodes", "Node", false, true, false),
        ("", "v1", "pods", "Pod", true, true, false),
        ("", "v1", "namespaces", "Namespace", false, true, false),
        ("", "v1", "secrets", "Secret", true, false, false),
        ("", "v1", "configmaps", "ConfigMap", true, false, false),
        ("", "v1", "services", "Service", true, true, false),
        ("", "v1", "serviceaccounts", "ServiceAccount", true, false, false),
        ("", "v1", "events", "Event", true, false, false),
        ("events.k8s.io", "v1", "events", "Event", true, false, false),
        ("apps", "v1", "deployments", "Deployment", true, true, false),
        ("apps", "v1", "daemonsets", "DaemonSet", true, true, false),
        ("node.k8s.io", "v1", "runtimeclasses", "RuntimeClass", false, false, false),
        ("coordination.k8s.io", "v1", "leases", "Lease", true, false, false),
        ("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", false, false, false),
        ("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", false, false, false),
        ("kataconfiguration.openshift.io", "v1", "kataconfigs", "KataConfig", false, true, false),
        ("machineconfiguration.openshift.io", "v1", "machineconfigs", "MachineConfig", false, false, false),
        ("machineconfiguration.openshift.io", "v1", "machineconfigpools", "MachineConfigPool", false, true, false),
        ("machineconfiguration.openshift.io", "v1", "containerruntimeconfigs", "ContainerRuntimeConfig", false, true, false),
        ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", false, true, false),
        ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false, false, false),
        ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", false, false, false),
        ("rbac.authorization.k8s.io", "v1", "roles", "Role", true, false, false),
        ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true, false, false),
        ("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", false, false, true),
        ("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", false, false, true),
    ];
    rows.iter()
        .map(|&(g, v, p, k, ns, st, co)| ResourceInfo {
            group: g.into(),
            version: v.into(),
            plural: p.into(),
            kind: k.into(),
            namespaced: ns,
            status: st,
            create_only: co,
        })
        .collect()
}

/// One API request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    pub group: String,
    /// The plural resource, without subresource.
    pub resource: String,
    /// `Some("status")` for the status subresource.
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub is_write: bool,
    /// The `fieldManager` query parameter of a write, if any.
    pub field_manager: Option<String>,
    /// For patches: `apply`, `merge`, `json` or `strategic`.
    pub patch_type: Option<String>,
    /// Which client sent it: `"operator"` for [`FakeApi::client`], else the [`FakeApi::client_as`] name.
    pub client: String,
    /// Who the request was authenticated as.
    pub user: String,
    /// Every authorization check the server made for it, in order (the request filter's verb,
    /// then `create` for an apply that creates, then the ownerReference admission checks).
    pub authorizations: Vec<Authorization>,
    /// Answered 403 Forbidden.
    pub forbidden: bool,
    seq: u64,
}

/// One authorization check and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub attributes: Attributes,
    pub allowed: bool,
}

/// How an injected fault fails a request.
#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer with this HTTP code and a Status body (429 also carries `Retry-After: 1`).
    Status(u16),
    /// Hold the request this long, then answer 504 Timeout (a hung server).
    Timeout(Duration),
    /// End every open watch stream now (applied at `inject` time; `times` is ignored).
    CloseWatches,
}

/// A fault for the next `times` requests that match `verb` and `resource` (None = any).
#[derive(Clone, Debug)]
pub struct Fault {
    pub verb: Option<String>,
    pub resource: Option<String>,
    pub kind: FaultKind,
    pub times: usize,
}

impl Fault {
    /// Fail any request.
    pub fn any(kind: FaultKind, times: usize) -> Self {
        Fault {
            verb: None,
            resource: None,
            kind,
            times,
        }
    }
    /// Fail requests with this verb (`"patch"`, ...) on this plural resource (`"nodes"` matches
    /// the resource and its subresources, `"kataconfigs/status"` only the status subresource).
    pub fn on(verb: &str, resource: &str, kind: FaultKind, times: usize) -> Self {
        Fault {
            verb: Some(verb.into()),
            resource: Some(resource.into()),
            kind,
            times,
        }
    }
    fn matches(&self, rec: &RequestRecord) -> bool {
        self.verb.as_deref().is_none_or(|v| v == rec.verb)
            && self
                .resource
                .as_deref()
                .is_none_or(|r| match r.split_once('/') {
                    Some((plural, sub)) => {
                        plural == rec.resource && rec.subresource.as_deref() == Some(sub)
                    }
                    None => r == rec.resource,
                })
    }
}

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

type TokenFn = dyn Fn(&str) -> Option<ReviewUser> + Send + Sync;
type AccessFn = dyn Fn(&AccessRequest) -> bool + Send + Sync;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    group: String,
    version: String,
    plural: String,
    namespace: String,
    name: String,
}

#[derive(Debug)]
struct Change {
    group: String,
    plural: String,
    namespace: String,
    rv: u64,
    old: Option<Value>,
    new: Option<Value>,
}

#[derive(Clone, Debug)]
enum Msg {
    Change(Arc<Change>),
    Close,
}

struct State {
    rv: u64,
    uid: u64,
    resources: Vec<ResourceInfo>,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Change>>,
    /// Watches from a resourceVersion below this get 410 Gone.
    history_floor: u64,
    history_limit: usize,
    tx: broadcast::Sender<Msg>,
    requests: Vec<RequestRecord>,
    next_seq: u64,
    faults: Vec<Fault>,
}

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

/// An API error as the server returns it.
#[derive(Debug)]
struct ApiErr {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

/// An error with the API server's reason for `code`.
fn err(code: u16, message: impl Into<String>) -> ApiErr {
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
fn forbidden(attrs: &Attributes, why: &str) -> ApiErr {
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

fn already_exists(message: String) -> ApiErr {
    ApiErr {
        reason: "AlreadyExists",
        ..err(409, message)
    }
}

fn not_found(r: &ResourceInfo, name: &str) -> ApiErr {
    let g = if r.group.is_empty() {
        r.plural.clone()
    } else {
        format!("{}.{}", r.plural, r.group)
    };
    err(404, format!("{g} \"{name}\" not found"))
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
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

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn full(code: u16, body: &Value) -> Response<FakeBody> {
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

fn err_response(e: &ApiErr) -> Response<FakeBody> {
    let mut resp = full(e.code, &status_with_details(e));
    if e.code == 429 {
        resp.headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("1"));
    }
    resp
}

/// The request path split into its API parts.
#[derive(Debug)]
struct Target {
    res: ResourceInfo,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| {
                urlencoding::decode(&s.replace('+', " "))
                    .map(|c| c.into_owned())
                    .unwrap_or_else(|_| s.to_string())
            };
            (dec(k), dec(v))
        })
        .collect()
}

/// Parsed `labelSelector` / `fieldSelector` requirement.
#[derive(Debug)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

fn split_top_level(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_selector(s: &str) -> Result<Vec<Req>, ApiErr> {
    let set = |v: &str| -> Result<Vec<String>, ApiErr> {
        let v = v.trim();
        let inner = v
            .strip_prefix('(')
            .and_then(|v| v.strip_suffix(')'))
            .ok_or_else(|| {
                err(
                    400,
                    format!("unable to parse requirement: set {v:?} needs parentheses"),
                )
            })?;
        Ok(inner.split(',').map(|x| x.trim().to_string()).collect())
    };
    split_top_level(s)
        .into_iter()
        .map(|part| {
            if let Some((k, v)) = part.split_once(" notin ") {
                Ok(Req::NotIn(k.trim().into(), set(v)?))
            } else if let Some((k, v)) = part.split_once(" in ") {
                Ok(Req::In(k.trim().into(), set(v)?))
            } else if let Some((k, v)) = part.split_once("!=") {
                Ok(Req::Ne(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Ok(Req::Eq(k.trim().into(), v.trim().into()))
            } else if let Some(k) = part.strip_prefix('!') {
                Ok(Req::NotExists(k.trim().into()))
            } else {
                Ok(Req::Exists(part))
            }
        })
        .collect()
}

fn req_matches(reqs: &[Req], get: impl Fn(&str) -> Option<String>) -> bool {
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) => get(k).as_deref() == Some(v),
        Req::Ne(k, v) => get(k).as_deref() != Some(v),
        Req::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
        Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
        Req::Exists(k) => get(k).is_some(),
        Req::NotExists(k) => get(k).is_none(),
    })
}

/// Label and field filter of a list or watch.
struct Filter {
    labels: Vec<Req>,
    fields: Vec<Req>,
}

impl Filter {
    fn from_query(q: &BTreeMap<String, String>) -> Result<Filter, ApiErr> {
        Ok(Filter {
            labels: parse_selector(q.get("labelSelector").map_or("", |s| s))?,
            fields: parse_selector(q.get("fieldSelector").map_or("", |s| s))?,
        })
    }
    fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        req_matches(&self.labels, |k| labels[k].as_str().map(String::from))
            && req_matches(&self.fields, |path| {
                let v = path.split('.').fold(obj, |v, seg| &v[seg]);
                match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => Some(String::new()),
                    other => Some(other.to_string()),
                }
            })
    }
}

/// Everything in an object except metadata and status: a change here bumps `generation`.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

/// The object minus its resourceVersion: equal means a write changed nothing.
fn without_volatile(obj: &Value) -> Value {
    let mut o = obj.clone();
    drop_key(&mut o["metadata"], "resourceVersion");
    o
}

/// Remove field `k` of a JSON object (nothing for other values).
fn drop_key(v: &mut Value, k: &str) {
    if let Some(m) = v.as_object_mut() {
        m.remove(k);
    }
}

fn finalizers_empty(obj: &Value) -> bool {
    obj["metadata"]["finalizers"]
        .as_array()
        .is_none_or(|a| a.is_empty())
}

fn record_manager(
    obj: &mut Value,
    manager: &str,
    operation: &str,
    api_version: &str,
    sub: Option<&str>,
) {
    let entry = json!({
        "manager": manager, "operation": operation, "apiVersion": api_version,
        "time": now(), "fieldsType": "FieldsV1", "fieldsV1": {},
    });
    let mut entry = entry;
    if let Some(s) = sub {
        entry["subresource"] = json!(s);
    }
    let list = &mut obj["metadata"]["managedFields"];
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(arr) = list.as_array_mut() {
        let same = |e: &Value| {
            e["manager"] == entry["manager"]
                && e["operation"] == entry["operation"]
                && e["subresource"] == entry["subresource"]
        };
        // Keep the existing entry (and its time) so a no-op write stays a no-op.
        if !arr.iter().any(same) {
            arr.push(entry);
        }
    }
}

impl State {
    fn resource_by_kind(&self, api_version: &str, kind: &str) -> Option<ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .cloned()
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn emit(&mut self, key: &Key, old: Option<Value>, new: Option<Value>) {
        let change = Arc::new(Change {
            group: key.group.clone(),
            plural: key.plural.clone(),
            namespace: key.namespace.clone(),
            rv: self.rv,
            old,
            new,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(c) = self.history.pop_front() {
                self.history_floor = c.rv;
            }
        }
        // No receivers is fine.
        let _ = self.tx.send(Msg::Change(change));
    }

    /// Store `obj` (already validated) as the new state of `key`, assigning server metadata.
    /// Returns the stored object; an unchanged object is not rewritten.
    fn commit(&mut self, key: &Key, mut obj: Value) -> Value {
        let old = self.objects.get(key).cloned();
        let meta = &mut obj["metadata"];
        match &old {
            Some(o) => {
                for f in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                ] {
                    match o["metadata"].get(f) {
                        Some(v) => meta[f] = v.clone(),
                        None => {
                            drop_key(meta, f);
                        }
                    }
                }
                if spec_part(o) != spec_part(&obj) {
                    let g = o["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                    obj["metadata"]["generation"] = json!(g);
                }
                if without_volatile(o) == without_volatile(&obj) {
                    return o.clone();
                }
                // An object being deleted goes once its last finalizer is gone.
                if o["metadata"].get("deletionTimestamp").is_some() && finalizers_empty(&obj) {
                    self.objects.insert(key.clone(), obj.clone());
                    self.remove(key, false);
                    return obj;
                }
            }
            None => {
                self.uid += 1;
                meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.uid));
                meta["creationTimestamp"] = json!(now());
                meta["generation"] = json!(1);
                drop_key(meta, "deletionTimestamp");
            }
        }
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects.insert(key.clone(), obj.clone());
        if key.plural == "customresourcedefinitions" && key.group == "apiextensions.k8s.io" {
            self.register_crd(&obj);
        }
        self.emit(key, old, Some(obj.clone()));
        obj
    }

    /// Remove an object now and garbage-collect its dependents (unless `orphan`).
    fn remove(&mut self, key: &Key, orphan: bool) -> Option<Value> {
        let old = self.objects.remove(key)?;
        self.next_rv();
        self.emit(key, Some(old.clone()), None);
        if orphan {
            // Orphaning strips the owner reference, so later collections leave dependents alone.
            let uid = old["metadata"]["uid"].clone();
            let dependents: Vec<(Key, Value)> = self
                .objects
                .iter()
                .filter(|(_, o)| {
                    o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|r| r["uid"] == uid))
                })
                .map(|(k, o)| (k.clone(), o.clone()))
                .collect();
            for (k, mut o) in dependents {
                if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"] != uid);
                }
                self.commit(&k, o);
            }
        } else {
            self.collect_garbage();
        }
        Some(old)
    }

    /// Delete every object whose owners are all gone (background propagation).
    fn collect_garbage(&mut self) {
        loop {
            let uids: std::collections::HashSet<String> = self
                .objects
                .values()
                .filter_map(|o| o["metadata"]["uid"].as_str().map(String::from))
                .collect();
            let orphaned: Vec<Key> = self
                .objects
                .iter()
                .filter(|(_, o)| {
                    o["metadata"]["deletionTimestamp"].is_null()
                        && o["metadata"]["ownerReferences"]
                            .as_array()
                            .is_some_and(|refs| {
                                !refs.is_empty()
                                    && refs.iter().all(|r| {
                                        r["uid"].as_str().is_none_or(|u| !uids.contains(u))
                                    })
                            })
                })
                .map(|(k, _)| k.clone())
                .collect();
            if orphaned.is_empty() {
                return;
            }
            for k in orphaned {
                self.delete_key(&k, false);
            }
        }
    }

    /// Delete semantics: objects with finalizers get a deletionTimestamp, others go now.
    fn delete_key(&mut self, key: &Key, orphan: bool) -> Option<(Value, bool)> {
        let obj = self.objects.get(key)?.clone();
        if finalizers_empty(&obj) {
            return self.remove(key, orphan).map(|o| (o, true));
        }
        if obj["metadata"]["deletionTimestamp"].is_null() {
            let mut o = obj.clone();
            o["metadata"]["deletionTimestamp"] = json!(now());
            o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let old = self.objects.get(key).cloned();
            let rv = self.next_rv();
            o["metadata"]["resourceVersion"] = json!(rv.to_string());
            self.objects.insert(key.clone(), o.clone());
            self.emit(key, old, Some(o.clone()));
            return Some((o, false));
        }
        Some((obj, false))
    }

    fn register_crd(&mut self, crd: &Value) {
        let spec = &crd["spec"];
        let (Some(group), Some(plural), Some(kind)) = (
            spec["group"].as_str(),
            spec["names"]["plural"].as_str(),
            spec["names"]["kind"].as_str(),
        ) else {
            return;
        };
        for v in spec["versions"].as_array().into_iter().flatten() {
            let Some(version) = v["name"].as_str() else {
                continue;
            };
            let info = ResourceInfo {
                group: group.into(),
                version: version.into(),
                plural: plural.into(),
                kind: kind.into(),
                namespaced: spec["scope"] == "Namespaced",
                status: !v["subresources"]["status"].is_null(),
                create_only: false,
            };
            self.resources.retain(|r| {
                !(r.group == info.group && r.version == info.version && r.plural == info.plural)
            });
            self.resources.push(info);
        }
    }
}

/// What a write needs to know about its request for the checks made inside the handler.
struct WriteCtx {
    user: UserInfo,
    /// The request's [`RequestRecord`] (its checks are appended there).
    seq: u64,
}

impl WriteCtx {
    fn request_attributes(&self, t: &Target) -> Attributes {
        Attributes {
            verb: String::new(),
            group: t.res.group.clone(),
            resource: t.res.plural.clone(),
            subresource: t.sub.clone(),
            namespace: t.namespace.clone().unwrap_or_default(),
            name: t.name.clone().unwrap_or_default(),
            path: None,
        }
    }
}

/// The request filter's denial sentence, with the authorizer's reason when it gave one.
fn attrs_denial(attrs: &Attributes, user: &UserInfo, reason: &str) -> String {
    if reason.is_empty() {
        attrs.denial(user)
    } else {
        format!("{}: {reason}", attrs.denial(user))
    }
}

fn owner_refs(obj: Option<&Value>) -> Vec<Value> {
    obj.and_then(|o| o["metadata"]["ownerReferences"].as_array().cloned())
        .unwrap_or_default()
}

impl RbacObjects for State {
    fn rbac_objects(&self, plural: &str, namespace: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|(k, _)| {
                k.group == "rbac.authorization.k8s.io"
                    && k.plural == plural
                    && k.namespace == namespace
            })
            .map(|(_, v)| v)
            .collect()
    }

    fn rbac_object(&self, plural: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&Key {
            group: "rbac.authorization.k8s.io".into(),
            version: "v1".into(),
            plural: plural.into(),
            namespace: namespace.into(),
            name: name.into(),
        })
    }
}

impl State {
    /// Appends a request to the log and returns its sequence number.
    fn log(&mut self, mut record: RequestRecord) -> u64 {
        self.next_seq += 1;
        record.seq = self.next_seq;
        self.requests.push(record);
        self.next_seq
    }

    /// One authorization check made while handling request `ctx.seq`, recorded on it; a denial
    /// is the 403 the API server answers.
    fn check(&mut self, ctx: &WriteCtx, attrs: &Attributes) -> Result<(), ApiErr> {
        let decision = authz::authorize(self, &ctx.user, attrs);
        if let Some(r) = self.requests.iter_mut().rev().find(|r| r.seq == ctx.seq) {
            r.authorizations.push(Authorization {
                attributes: attrs.clone(),
                allowed: decision.is_ok(),
            });
            r.forbidden |= decision.is_err();
        }
        decision.map_err(|why| forbidden(attrs, &attrs_denial(attrs, &ctx.user, &why)))
    }

    /// The `OwnerReferencesPermissionEnforcement` admission plugin: changing ownerReferences of
    /// an existing object needs `delete` on it; every new `blockOwnerDeletion: true` reference
    /// needs `update` on the owner's `finalizers` subresource.
    fn admit_owner_references(
        &mut self,
        ctx: &WriteCtx,
        t: &Target,
        name: &str,
        old: Option<&Value>,
        new: &Value,
    ) -> Result<(), ApiErr> {
        let (old_refs, new_refs) = (owner_refs(old), owner_refs(Some(new)));
        if old_refs == new_refs {
            return Ok(());
        }
        let base = Attributes {
            subresource: None,
            name: name.to_string(),
            ..ctx.request_attributes(t)
        };
        let refused = |attrs: &Attributes, what: &str| ApiErr {
            message: format!(
                "{} {name:?} is forbidden: {what}: , <nil>",
                attrs.qualified_resource()
            ),
            ..forbidden(attrs, "")
        };
        if old.is_some() {
            let attrs = Attributes {
                verb: "delete".into(),
                ..base.clone()
            };
            if self.check(ctx, &attrs).is_err() {
                return Err(refused(
                    &base,
                    "cannot set an ownerRef on a resource you can't delete",
                ));
            }
        }
        let blocking = |r: &Value| r["blockOwnerDeletion"].as_bool() == Some(true);
        for r in new_refs.iter().filter(|r| blocking(r)) {
            let was_blocking = old_refs.iter().any(|o| o["uid"] == r["uid"] && blocking(o));
            if was_blocking {
                continue;
            }
            let (api_version, kind) = (
                r["apiVersion"].as_str().unwrap_or(""),
                r["kind"].as_str().unwrap_or(""),
            );
            let Some(owner) = self.resource_by_kind(api_version, kind) else {
                return Err(err(
                    422,
                    format!(
                        "cannot set blockOwnerDeletion in this case because cannot find RESTMapping for APIVersion {api_version} Kind {kind}"
                    ),
                ));
            };
            let attrs = Attributes {
                verb: "update".into(),
                group: owner.group.clone(),
                resource: owner.plural.clone(),
                subresource: Some("finalizers".into()),
                namespace: base.namespace.clone(),
                name: r["name"].as_str().unwrap_or("").to_string(),
                path: None,
            };
            if self.check(ctx, &attrs).is_err() {
                return Err(refused(
                    &base,
                    "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on",
                ));
            }
        }
        Ok(())
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
                state: Mutex::new(State {
                    rv: 1,
                    uid: 0,
                    resources: builtin_resources(),
                    objects: BTreeMap::new(),
                    history: VecDeque::new(),
                    history_floor: 0,
                    history_limit: limit,
                    tx: tx.clone(),
                    requests: Vec::new(),
                    next_seq: 0,
                    faults: Vec::new(),
                }),
                tx,
                tokens: Mutex::new(None),
                access: Mutex::new(None),
                operator: Mutex::new(UserInfo::service_account(
                    DEFAULT_OPERATOR_NAMESPACE,
                    OPERATOR_NAME,
                )),
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
            async move { Ok::<_, Infallible>(api.serve_as(req, &name, &user).await) }
        });
        kube::Client::new(svc, "default")
    }

    /// Serve another resource (e.g. a CRD-backed kind the table does not know).
    pub fn register(&self, info: ResourceInfo) {
        let mut st = self.state();
        st.resources.retain(|r| {
            !(r.group == info.group && r.version == info.version && r.plural == info.plural)
        });
        st.resources.push(info);
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

    /// Every request served so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().requests.clone()
    }

    /// Requests sent by one client (see [`FakeApi::client_as`]).
    pub fn requests_by(&self, client: &str) -> Vec<RequestRecord> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.client == client)
            .cloned()
            .collect()
    }

    /// Write requests sent by one client, e.g. `write_count_by("operator")`.
    pub fn write_count_by(&self, client: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.is_write && r.client == client)
            .count()
    }

    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// Requests answered 403 Forbidden.
    pub fn forbidden_requests(&self) -> Vec<RequestRecord> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.forbidden)
            .cloned()
            .collect()
    }

    /// Every authorization check made for one client's requests, in order.
    pub fn authorizations_by(&self, client: &str) -> Vec<Authorization> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.client == client)
            .flat_map(|r| r.authorizations.iter().cloned())
            .collect()
    }

    fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Result<(), String> {
        authz::authorize(&*self.state(), user, attrs)
    }

    /// Requests that could change state (create/update/patch/delete), failed ones included.
    pub fn write_count(&self) -> usize {
        self.state().requests.iter().filter(|r| r.is_write).count()
    }

    /// Current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state().rv
    }

    /// Fail matching requests (see [`FaultKind`]). `CloseWatches` acts immediately.
    pub fn inject(&self, fault: Fault) {
        if let FaultKind::CloseWatches = fault.kind {
            self.close_watches();
            return;
        }
        self.state().faults.push(fault);
    }

    /// End every open watch stream (clients must re-watch or re-list).
    pub fn close_watches(&self) {
        let _ = self.inner.tx.send(Msg::Close);
    }

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

    fn resolve(&self, path: &str) -> Result<Target, ApiErr> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segs.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => {
                return Err(err(
                    404,
                    format!("the server could not find the requested resource ({path})"),
                ));
            }
        };
        let lookup = |plural: &str| {
            self.state()
                .resources
                .iter()
                .find(|r| r.group == group && r.version == version && r.plural == plural)
                .cloned()
        };
        let s = |i: usize| rest.get(i).map(|x| x.to_string());
        let (namespace, plural, name, sub) = match rest {
            ["namespaces", ns, plural, ..] if lookup(plural).is_some_and(|r| r.namespaced) => {
                (s(1), plural.to_string(), s(3), s(4))
            }
            [plural, ..] => (None, plural.to_string(), s(1), s(2)),
            [] => return Err(err(404, format!("no resource in path {path}"))),
        };
        let res = lookup(&plural).ok_or_else(|| {
            err(
                404,
                format!("the server could not find the requested resource ({path})"),
            )
        })?;
        if res.namespaced && namespace.is_none() && name.is_some() {
            return Err(err(
                404,
                format!("{plural} is namespaced: use /namespaces/<ns>/{plural}/<name>"),
            ));
        }
        Ok(Target {
            res,
            namespace,
            name,
            sub,
        })
    }

    /// Serve one request sent by a cluster administrator logged as `client`.
    pub async fn serve(
        &self,
        req: Request<kube::client::Body>,
        client: &str,
    ) -> Response<FakeBody> {
        self.serve_as(req, client, &UserInfo::admin(client)).await
    }

    /// Serve one request sent by `user` through `client` (what every client of the fake does).
    pub async fn serve_as(
        &self,
        req: Request<kube::client::Body>,
        client: &str,
        user: &UserInfo,
    ) -> Response<FakeBody> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        if path == "/version" {
            let attrs = Attributes {
                path: Some(path.clone()),
                ..Attributes::resource("get", "", "")
            };
            if let Err(why) = self.authorize(user, &attrs) {
                return err_response(&forbidden(&attrs, &why));
            }
            return full(
                200,
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"}),
            );
        }
        let query = parse_query(parts.uri.query());
        let target = match self.resolve(&path) {
            Ok(t) => t,
            Err(e) => return err_response(&e),
        };
        let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        let verb = match (&parts.method, target.name.is_some()) {
            (&Method::GET, true) => "get",
            (&Method::GET, false) if watch => "watch",
            (&Method::GET, false) => "list",
            (&Method::POST, false) => "create",
            (&Method::PUT, true) => "update",
            (&Method::PATCH, true) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            (m, _) => {
                return err_response(&err(405, format!("{m} is not supported on {path}")));
            }
        };
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        let patch_type = (verb == "patch").then(|| {
            let t = match content_type.as_str() {
                c if c.starts_with("application/apply-patch") => "apply",
                c if c.starts_with("application/merge-patch") => "merge",
                c if c.starts_with("application/json-patch") => "json",
                c if c.starts_with("application/strategic-merge-patch") => "strategic",
                _ => "unknown",
            };
            t.to_string()
        });
        // The request filter authorizes the verb of the method; list and watch carry the name
        // of a `metadata.name=` field selector, as the API server's RequestInfo does.
        let selected_name = query.get("fieldSelector").and_then(|f| {
            f.split(',')
                .find_map(|r| r.trim().strip_prefix("metadata.name="))
                .map(String::from)
        });
        let attrs = Attributes {
            verb: verb.into(),
            group: target.res.group.clone(),
            resource: target.res.plural.clone(),
            subresource: target.sub.clone(),
            namespace: target.namespace.clone().unwrap_or_default(),
            name: target.name.clone().or(selected_name).unwrap_or_default(),
            path: None,
        };
        let decision = self.authorize(user, &attrs);
        let mut record = RequestRecord {
            verb: verb.into(),
            field_manager: query.get("fieldManager").cloned(),
            patch_type,
            group: target.res.group.clone(),
            resource: target.res.plural.clone(),
            subresource: target.sub.clone(),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            is_write: !matches!(verb, "get" | "list" | "watch"),
            client: client.to_string(),
            user: user.username.clone(),
            authorizations: vec![Authorization {
                attributes: attrs.clone(),
                allowed: decision.is_ok(),
            }],
            forbidden: decision.is_err(),
            seq: 0,
        };
        if let Err(why) = decision {
            self.state().log(record);
            return err_response(&forbidden(&attrs, &attrs_denial(&attrs, user, &why)));
        }
        let fault = {
            let mut st = self.state();
            record.seq = st.log(record.clone());
            let idx = st
                .faults
                .iter()
                .position(|f| f.times > 0 && f.matches(&record));
            idx.map(|i| {
                st.faults[i].times -= 1;
                let k = st.faults[i].kind.clone();
                if st.faults[i].times == 0 {
                    st.faults.remove(i);
                }
                k
            })
        };
        match fault {
            Some(FaultKind::Status(code)) => {
                return err_response(&err(
                    code,
                    format!("injected fault: {code} for {verb} {path}"),
                ));
            }
            Some(FaultKind::Timeout(d)) => {
                tokio::time::sleep(d).await;
                return err_response(&err(504, format!("injected timeout for {verb} {path}")));
            }
            Some(FaultKind::CloseWatches) | None => {}
        }
        let ctx = WriteCtx {
            user: user.clone(),
            seq: record.seq,
        };
        if target.res.create_only && verb != "create" {
            return err_response(&err(
                405,
                format!("{} only supports create", target.res.plural),
            ));
        }
        let bytes = match body.collect_bytes().await {
            Ok(b) => b,
            Err(e) => return err_response(&err(400, format!("reading body: {e}"))),
        };
        if verb == "watch" {
            return self.watch(&target, &query);
        }
        let result = match verb {
            "get" => self.do_get(&target),
            "list" => self.do_list(&target, &query),
            "create" if target.res.create_only => self.review(&target, &bytes),
            "create" => self.do_create(&target, &query, &bytes, &ctx),
            "update" => self.do_write(&target, &query, &bytes, "update", &ctx),
            "patch" => self.do_write(&target, &query, &bytes, &content_type, &ctx),
            "delete" => self.do_delete(&target, &query, &bytes),
            _ => self.do_delete_collection(&target, &query, &bytes),
        };
        match result {
            Ok((code, v)) => full(code, &v),
            Err(e) => err_response(&e),
        }
    }

    fn key(&self, t: &Target) -> Key {
        Key {
            group: t.res.group.clone(),
            version: t.res.version.clone(),
            plural: t.res.plural.clone(),
            namespace: t.namespace.clone().unwrap_or_default(),
            name: t.name.clone().unwrap_or_default(),
        }
    }

    fn do_get(&self, t: &Target) -> Result<(u16, Value), ApiErr> {
        let name = t.name.clone().unwrap_or_default();
        self.state()
            .objects
            .get(&self.key(t))
            .cloned()
            .map(|o| (200, o))
            .ok_or_else(|| not_found(&t.res, &name))
    }

    fn select(&self, st: &State, t: &Target, filter: &Filter) -> Vec<(Key, Value)> {
        self.select_refs(st, t, filter)
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// [`Self::select`] without copies, so a list page clones only the objects it returns.
    fn select_refs<'a>(
        &self,
        st: &'a State,
        t: &Target,
        filter: &Filter,
    ) -> Vec<(&'a Key, &'a Value)> {
        st.objects
            .iter()
            .filter(|(k, v)| {
                k.group == t.res.group
                    && k.version == t.res.version
                    && k.plural == t.res.plural
                    && t.namespace.as_ref().is_none_or(|n| *n == k.namespace)
                    && filter.matches(v)
            })
            .collect()
    }

    fn do_list(&self, t: &Target, q: &BTreeMap<String, String>) -> Result<(u16, Value), ApiErr> {
        let filter = Filter::from_query(q)?;
        let st = self.state();
        let mut items = self.select_refs(&st, t, &filter);
        // Pagination: the continue token is the last returned "namespace/name".
        if let Some(after) = q.get("continue").filter(|c| !c.is_empty()) {
            items.retain(|(k, _)| format!("{}/{}", k.namespace, k.name) > *after);
        }
        let limit = q
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0);
        let mut cont = String::new();
        if let Some(limit) = limit
            && items.len() > limit
        {
            items.truncate(limit);
            if let Some((k, _)) = items.last() {
                cont = format!("{}/{}", k.namespace, k.name);
            }
        }
        Ok((
            200,
            json!({
                "kind": format!("{}List", t.res.kind),
                "apiVersion": t.res.api_version(),
                "metadata": {"resourceVersion": st.rv.to_string(), "continue": cont},
                "items": items.into_iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
            }),
        ))
    }

    fn parse_body(bytes: &[u8]) -> Result<Value, ApiErr> {
        serde_json::from_slice(bytes)
            .or_else(|_| serde_yaml::from_slice::<Value>(bytes))
            .map_err(|e| err(400, format!("request body is not valid JSON or YAML: {e}")))
    }

    /// Fill apiVersion/kind/name/namespace and check they agree with the path.
    fn normalize(t: &Target, obj: &mut Value, name: &str) -> Result<(), ApiErr> {
        if !obj.is_object() {
            return Err(err(400, "request body must be a JSON object"));
        }
        let body_name = obj["metadata"]["name"].as_str().unwrap_or("");
        if !body_name.is_empty() && body_name != name {
            return Err(err(
                400,
                format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                ),
            ));
        }
        obj["apiVersion"] = json!(t.res.api_version());
        obj["kind"] = json!(t.res.kind);
        obj["metadata"]["name"] = json!(name);
        if let Some(ns) = &t.namespace {
            obj["metadata"]["namespace"] = json!(ns);
        }
        Ok(())
    }

    fn do_create(
        &self,
        t: &Target,
        q: &BTreeMap<String, String>,
        bytes: &[u8],
        ctx: &WriteCtx,
    ) -> Result<(u16, Value), ApiErr> {
        let mut obj = Self::parse_body(bytes)?;
        let mut st = self.state();
        let mut name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if name.is_empty() {
            let Some(prefix) = obj["metadata"]["generateName"].as_str() else {
                return Err(err(
                    422,
                    format!(
                        "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                        t.res.kind
                    ),
                ));
            };
            name = format!("{prefix}{:05x}", st.uid + 1);
        }
        if t.res.namespaced && t.namespace.is_none() {
            return Err(err(
                400,
                format!(
                    "{} is namespaced: POST to /namespaces/<ns>/{}",
                    t.res.plural, t.res.plural
                ),
            ));
        }
        Self::normalize(t, &mut obj, &name)?;
        let key = Key {
            name: name.clone(),
            ..self.key(t)
        };
        if st.objects.contains_key(&key) {
            return Err(already_exists(format!(
                "{} \"{name}\" already exists",
                t.res.plural
            )));
        }
        if t.res.status
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        drop_key(&mut obj["metadata"], "resourceVersion");
        if let Some(fm) = q.get("fieldManager") {
            record_manager(&mut obj, fm, "Update", &t.res.api_version(), None);
        }
        st.admit_owner_references(ctx, t, &name, None, &obj)?;
        if q.contains_key("dryRun") {
            return Ok((201, obj));
        }
        Ok((201, st.commit(&key, obj)))
    }

    /// PUT and every PATCH flavour, on the object or its status.
    fn do_write(
        &self,
        t: &Target,
        q: &BTreeMap<String, String>,
        bytes: &[u8],
        how: &str,
        ctx: &WriteCtx,
    ) -> Result<(u16, Value), ApiErr> {
        let name = t.name.clone().unwrap_or_default();
        let key = self.key(t);
        let status_sub = match t.sub.as_deref() {
            None => false,
            Some("status") if t.res.status => true,
            Some(s) => {
                return Err(err(404, format!("{} has no subresource {s}", t.res.plural)));
            }
        };
        let mut st = self.state();
        let existing = st.objects.get(&key).cloned();
        let apply = how.starts_with("application/apply-patch");
        let mut new = match (&existing, how) {
            (_, "update") => {
                let mut b = Self::parse_body(bytes)?;
                Self::normalize(t, &mut b, &name)?;
                b
            }
            (None, _) if apply && !status_sub => {
                // An apply that creates is authorized a second time, as a create.
                let attrs = Attributes {
                    verb: "create".into(),
                    subresource: None,
                    name: name.clone(),
                    ..ctx.request_attributes(t)
                };
                st.check(ctx, &attrs)?;
                let mut b = Self::parse_body(bytes)?;
                Self::normalize(t, &mut b, &name)?;
                if t.res.status
                    && let Some(m) = b.as_object_mut()
                {
                    m.remove("status");
                }
                b
            }
            (None, _) => return Err(not_found(&t.res, &name)),
            (Some(old), h) if h.starts_with("application/json-patch") => {
                let patch: json_patch::Patch = serde_json::from_slice(bytes)
                    .map_err(|e| err(400, format!("invalid JSON patch: {e}")))?;
                let mut doc = old.clone();
                for op in &patch.0 {
                    // Like the API server's patch library, `test` for null passes on an absent path
                    // (kube's finalizer helper relies on it).
                    if let json_patch::PatchOperation::Test(t) = op
                        && t.value.is_null()
                        && doc.pointer(t.path.as_str()).is_none()
                    {
                        continue;
                    }
                    json_patch::patch(&mut doc, std::slice::from_ref(op)).map_err(|e| {
                        err(422, format!("the JSON patch could not be applied: {e}"))
                    })?;
                }
                doc
            }
            (Some(old), h)
                if apply
                    || h.starts_with("application/merge-patch")
                    || h.starts_with("application/strategic-merge-patch") =>
            {
                let p = Self::parse_body(bytes)?;
                if apply {
                    let body_name = p["metadata"]["name"].as_str().unwrap_or("");
                    if !body_name.is_empty() && body_name != name {
                        return Err(err(
                            400,
                            format!(
                                "the name of the object ({body_name}) does not match the name on the URL ({name})"
                            ),
                        ));
                    }
                }
                let mut doc = old.clone();
                json_patch::merge(&mut doc, &p);
                doc
            }
            (Some(_), h) => {
                return Err(err(
                    415,
                    format!("the body of the request was in an unknown format: {h}"),
                ));
            }
        };
        if apply && q.get("fieldManager").is_none_or(|f| f.is_empty()) {
            return Err(err(
                400,
                "PATCH, application/apply-patch+yaml: fieldManager is required for apply patch",
            ));
        }
        // Optimistic concurrency: a resourceVersion in the body must match.
        let sent_rv = if !how.starts_with("application/json-patch") {
            Self::parse_body(bytes)?["metadata"]["resourceVersion"]
                .as_str()
                .map(String::from)
        } else {
            None
        };
        if let (Some(sent), Some(old)) = (sent_rv.filter(|s| !s.is_empty()), &existing)
            && old["metadata"]["resourceVersion"].as_str() != Some(sent.as_str())
        {
            return Err(err(
                409,
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    t.res.plural
                ),
            ));
        }
        if how == "update" && existing.is_none() {
            return Err(not_found(&t.res, &name));
        }
        // Identity is the URL's, whatever the patch said.
        new["apiVersion"] = json!(t.res.api_version());
        new["kind"] = json!(t.res.kind);
        new["metadata"]["name"] = json!(name);
        if let Some(ns) = &t.namespace {
            new["metadata"]["namespace"] = json!(ns);
        }
        if let Some(old) = existing
            .as_ref()
            .filter(|o| !o["metadata"]["deletionTimestamp"].is_null())
        {
            let had = |f: &Value| {
                old["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|a| a.contains(f))
            };
            if let Some(f) = new["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|f| !had(f))
            {
                return Err(err(
                    422,
                    format!(
                        "{} \"{name}\" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [{}]",
                        t.res.kind,
                        f.as_str().unwrap_or("")
                    ),
                ));
            }
        }
        // Subresource isolation, as the real server does it.
        if let Some(old) = &existing {
            if status_sub {
                let status = new.get("status").cloned();
                new = old.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        drop_key(&mut new, "status");
                    }
                }
            } else if t.res.status {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        drop_key(&mut new, "status");
                    }
                }
            }
            // Managed fields are the server's to keep.
            new["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
            if new["metadata"]["managedFields"].is_null()
                && let Some(m) = new["metadata"].as_object_mut()
            {
                m.remove("managedFields");
            }
        }
        if let Some(fm) = q.get("fieldManager").filter(|f| !f.is_empty()) {
            let op = if apply { "Apply" } else { "Update" };
            record_manager(&mut new, fm, op, &t.res.api_version(), t.sub.as_deref());
        }
        if !status_sub {
            st.admit_owner_references(ctx, t, &name, existing.as_ref(), &new)?;
        }
        if q.contains_key("dryRun") {
            return Ok((200, new));
        }
        let created = existing.is_none();
        let out = st.commit(&key, new);
        Ok((if created { 201 } else { 200 }, out))
    }

    fn do_delete(
        &self,
        t: &Target,
        q: &BTreeMap<String, String>,
        bytes: &[u8],
    ) -> Result<(u16, Value), ApiErr> {
        let name = t.name.clone().unwrap_or_default();
        let opts = if bytes.is_empty() {
            json!({})
        } else {
            Self::parse_body(bytes)?
        };
        let key = self.key(t);
        let mut st = self.state();
        let Some(obj) = st.objects.get(&key).cloned() else {
            return Err(not_found(&t.res, &name));
        };
        for (field, what) in [("resourceVersion", "ResourceVersion"), ("uid", "UID")] {
            if let Some(want) = opts["preconditions"][field].as_str()
                && obj["metadata"][field].as_str() != Some(want)
            {
                return Err(err(
                    409,
                    format!(
                        "Precondition failed: {what} in precondition: {want}, {what} in object meta: {}",
                        obj["metadata"][field].as_str().unwrap_or("")
                    ),
                ));
            }
        }
        if q.contains_key("dryRun") {
            return Ok((200, obj));
        }
        let orphan = opts["propagationPolicy"] == "Orphan"
            || q.get("propagationPolicy").is_some_and(|p| p == "Orphan");
        match st.delete_key(&key, orphan) {
            Some((o, true)) => Ok((
                200,
                json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "group": t.res.group, "kind": t.res.plural, "uid": o["metadata"]["uid"]},
                }),
            )),
            Some((o, false)) => Ok((200, o)),
            None => Err(not_found(&t.res, &name)),
        }
    }

    fn do_delete_collection(
        &self,
        t: &Target,
        q: &BTreeMap<String, String>,
        _bytes: &[u8],
    ) -> Result<(u16, Value), ApiErr> {
        let filter = Filter::from_query(q)?;
        let mut st = self.state();
        let keys = self.select(&st, t, &filter);
        let mut items = Vec::new();
        for (k, _) in keys {
            if let Some((o, _)) = st.delete_key(&k, false) {
                items.push(o);
            }
        }
        Ok((
            200,
            json!({"kind": format!("{}List", t.res.kind), "apiVersion": t.res.api_version(), "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
        ))
    }

    /// TokenReview / SubjectAccessReview, answered by the configured callbacks.
    fn review(&self, t: &Target, bytes: &[u8]) -> Result<(u16, Value), ApiErr> {
        let mut obj = Self::parse_body(bytes)?;
        obj["apiVersion"] = json!(t.res.api_version());
        obj["kind"] = json!(t.res.kind);
        let spec = obj["spec"].clone();
        if t.res.plural == "tokenreviews" {
            let token = spec["token"].as_str().unwrap_or("");
            let f = self
                .inner
                .tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            obj["status"] = match f.and_then(|f| f(token)) {
                Some(u) => {
                    json!({"authenticated": true, "user": {"username": u.username, "uid": u.uid, "groups": u.groups}, "audiences": spec["audiences"]})
                }
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
        } else {
            let ra = &spec["resourceAttributes"];
            let nra = &spec["nonResourceAttributes"];
            let req = AccessRequest {
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
            };
            let f = self
                .inner
                .access
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let allowed = f.is_some_and(|f| f(&req));
            obj["status"] = json!({"allowed": allowed, "reason": if allowed { "allowed by fake reviewer" } else { "denied by fake reviewer" }});
        }
        Ok((201, obj))
    }

    fn watch(&self, t: &Target, q: &BTreeMap<String, String>) -> Response<FakeBody> {
        let filter = match Filter::from_query(q) {
            Ok(f) => f,
            Err(e) => return err_response(&e),
        };
        let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
        let initial_events = q.get("sendInitialEvents").is_some_and(|b| b == "true");
        let from: Option<u64> = q
            .get("resourceVersion")
            .filter(|s| !s.is_empty())
            .and_then(|s| s.parse().ok());
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(1800);
        let (group, plural, ns, kind, api_version) = (
            t.res.group.clone(),
            t.res.plural.clone(),
            t.namespace.clone(),
            t.res.kind.clone(),
            t.res.api_version(),
        );
        let in_scope = move |c: &Change| {
            c.group == group && c.plural == plural && ns.as_ref().is_none_or(|n| *n == c.namespace)
        };
        let to_event = move |c: &Change| -> Option<Value> {
            let old_m = c.old.as_ref().is_some_and(|o| filter.matches(o));
            let new_m = c.new.as_ref().is_some_and(|o| filter.matches(o));
            let (ty, obj) = match (old_m, new_m) {
                (false, true) => ("ADDED", c.new.clone()),
                (true, true) => ("MODIFIED", c.new.clone()),
                (true, false) => (
                    "DELETED",
                    c.new.clone().or_else(|| {
                        c.old.clone().map(|mut o| {
                            o["metadata"]["resourceVersion"] = json!(c.rv.to_string());
                            o
                        })
                    }),
                ),
                (false, false) => return None,
            };
            Some(json!({"type": ty, "object": obj}))
        };
        let bookmark = |rv: u64, end: bool| {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": meta}})
        };
        let (initial, rx) = {
            let st = self.state();
            let rx = self.inner.tx.subscribe();
            let mut initial = Vec::new();
            match from {
                Some(rv) if rv > 0 && !initial_events => {
                    if rv < st.history_floor {
                        initial.push(json!({"type": "ERROR", "object": status_json(410, "Expired", &format!("too old resource version: {rv} ({})", st.history_floor))}));
                    } else {
                        initial.extend(
                            st.history
                                .iter()
                                .filter(|c| c.rv > rv && in_scope(c))
                                .filter_map(|c| to_event(c)),
                        );
                    }
                }
                _ => {
                    // No resourceVersion (or 0, or sendInitialEvents): synthetic ADDED for what exists.
                    let filter = Filter::from_query(q).unwrap_or(Filter {
                        labels: vec![],
                        fields: vec![],
                    });
                    for (_, v) in self.select(&st, t, &filter) {
                        initial.push(json!({"type": "ADDED", "object": v}));
                    }
                    if initial_events {
                        initial.push(bookmark(st.rv, true));
                    }
                }
            }
            if bookmarks && !initial_events {
                initial.push(bookmark(st.rv, false));
            }
            (initial, rx)
        };
        let live = futures::stream::unfold(
            (rx, in_scope, to_event),
            |(mut rx, in_scope, to_event)| async move {
                loop {
                    match rx.recv().await {
                        Ok(Msg::Change(c)) => {
                            if in_scope(&c)
                                && let Some(ev) = to_event(&c)
                            {
                                return Some((ev, (rx, in_scope, to_event)));
                            }
                        }
                        // Closed, lagged or told to close: end the stream; the client re-watches.
                        Ok(Msg::Close) | Err(_) => return None,
                    }
                }
            },
        );
        let events = futures::stream::iter(initial)
            .chain(live)
            .take_until(tokio::time::sleep(Duration::from_secs(timeout)))
            .map(|ev| {
                let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                line.push(b'\n');
                Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(line)))
            });
        let mut resp = Response::new(StreamBody::new(events).boxed_unsync());
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        resp
    }
}
