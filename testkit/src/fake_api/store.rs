//! The object store: objects as JSON keyed by (group, version, plural, namespace, name), the
//! plural <-> kind table, server metadata (uid, resourceVersion, generation), the change history
//! watches resume from, finalizers, garbage collection and CRD registration.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::authz::RbacObjects;
use super::requests::{Fault, RequestRecord};

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
    pub(super) fn api_version(&self) -> String {
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
        ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy", false, true, false),
        ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding", false, false, false),
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

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) plural: String,
    pub(super) namespace: String,
    pub(super) name: String,
}

/// One committed change, as watches replay it.
#[derive(Debug)]
pub(super) struct Change {
    pub(super) group: String,
    pub(super) plural: String,
    pub(super) namespace: String,
    pub(super) rv: u64,
    pub(super) old: Option<Value>,
    pub(super) new: Option<Value>,
}

/// What open watch streams are told.
#[derive(Clone, Debug)]
pub(super) enum Msg {
    Change(Arc<Change>),
    /// End every watch cleanly (as a watch timeout does).
    Close,
    /// Cut every watch off with a connection error (the server went away).
    Sever,
}

/// Everything behind the fake's one lock: objects, history, request log and faults.
pub(super) struct State {
    pub(super) rv: u64,
    pub(super) uid: u64,
    pub(super) resources: Vec<ResourceInfo>,
    pub(super) objects: BTreeMap<Key, Value>,
    pub(super) history: VecDeque<Arc<Change>>,
    /// Watches from a resourceVersion below this get 410 Gone.
    pub(super) history_floor: u64,
    history_limit: usize,
    tx: broadcast::Sender<Msg>,
    pub(super) requests: Vec<RequestRecord>,
    pub(super) next_seq: u64,
    pub(super) faults: Vec<Fault>,
}

pub(super) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
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
pub(super) fn drop_key(v: &mut Value, k: &str) {
    if let Some(m) = v.as_object_mut() {
        m.remove(k);
    }
}

fn finalizers_empty(obj: &Value) -> bool {
    obj["metadata"]["finalizers"]
        .as_array()
        .is_none_or(|a| a.is_empty())
}

impl State {
    /// An empty store serving the built-in resources, keeping `history_limit` past changes.
    pub(super) fn new(history_limit: usize, tx: broadcast::Sender<Msg>) -> State {
        State {
            rv: 1,
            uid: 0,
            resources: builtin_resources(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_floor: 0,
            history_limit,
            tx,
            requests: Vec::new(),
            next_seq: 0,
            faults: Vec::new(),
        }
    }

    pub(super) fn resource_by_kind(&self, api_version: &str, kind: &str) -> Option<ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .cloned()
    }

    /// Serve `info`, replacing what was served under its group, version and plural.
    pub(super) fn serve_resource(&mut self, info: ResourceInfo) {
        self.resources.retain(|r| {
            !(r.group == info.group && r.version == info.version && r.plural == info.plural)
        });
        self.resources.push(info);
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
    pub(super) fn commit(&mut self, key: &Key, mut obj: Value) -> Value {
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
        if key.plural == "customresourcedefinitions" && key.group == "apiextensions.k8s.io" {
            self.unregister_crd(&old);
        }
        if orphan {
            self.orphan_dependents(&old["metadata"]["uid"]);
        } else {
            self.collect_garbage();
        }
        Some(old)
    }

    /// Orphaning strips the owner reference, so later collections leave dependents alone.
    fn orphan_dependents(&mut self, uid: &Value) {
        let dependents: Vec<(Key, Value)> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["uid"] == *uid))
            })
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        for (k, mut o) in dependents {
            if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|r| r["uid"] != *uid);
            }
            self.commit(&k, o);
        }
    }

    /// Delete every object whose owners are all gone (background propagation).
    fn collect_garbage(&mut self) {
        loop {
            let uids: HashSet<String> = self
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
    pub(super) fn delete_key(&mut self, key: &Key, orphan: bool) -> Option<(Value, bool)> {
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

    /// A stored CRD serves its resources (every version it lists).
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
            self.serve_resource(ResourceInfo {
                group: group.into(),
                version: version.into(),
                plural: plural.into(),
                kind: kind.into(),
                namespaced: spec["scope"] == "Namespaced",
                status: !v["subresources"]["status"].is_null(),
                create_only: false,
            });
        }
    }
}

impl State {
    /// A deleted CRD no longer serves its resources.
    fn unregister_crd(&mut self, crd: &Value) {
        let spec = &crd["spec"];
        let (Some(group), Some(plural)) =
            (spec["group"].as_str(), spec["names"]["plural"].as_str())
        else {
            return;
        };
        self.resources
            .retain(|r| !(r.group == group && r.plural == plural));
    }
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
