//! Authorization checks made inside the write handlers, recorded on the request they belong to:
//! a server-side apply that creates is authorized again as `create`, the
//! `OwnerReferencesPermissionEnforcement` admission plugin guards ownerReferences changes, and a
//! ValidatingAdmissionPolicy's `paramKind` (and its binding's `paramRef`) needs read access to
//! the parameters.

use serde_json::Value;

use super::FakeApi;
use super::authz::{self, Attributes, UserInfo};
use super::dispatch::Target;
use super::errors::{ApiErr, attrs_denial, err, forbidden};
use super::requests::Authorization;
use super::store::{Key, State};

/// What a write needs to know about its request for the checks made inside the handler.
pub(super) struct WriteCtx {
    pub(super) user: UserInfo,
    /// The request's [`super::RequestRecord`] (its checks are appended there).
    pub(super) seq: u64,
}

impl WriteCtx {
    pub(super) fn request_attributes(&self, t: &Target) -> Attributes {
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

fn owner_refs(obj: Option<&Value>) -> Vec<Value> {
    obj.and_then(|o| o["metadata"]["ownerReferences"].as_array().cloned())
        .unwrap_or_default()
}

/// The plugin's refusal: `<resource> "<name>" is forbidden: <what>: , <nil>`.
fn refused(attrs: &Attributes, name: &str, what: &str) -> ApiErr {
    ApiErr {
        message: format!(
            "{} {name:?} is forbidden: {what}: , <nil>",
            attrs.qualified_resource()
        ),
        ..forbidden(attrs, "")
    }
}

impl FakeApi {
    /// The RBAC authorizer's answer over the current store.
    pub(super) fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Result<(), String> {
        authz::authorize(&*self.state(), user, attrs)
    }
}

impl State {
    /// One authorization check made while handling request `ctx.seq`, recorded on it; a denial
    /// is the 403 the API server answers.
    pub(super) fn check(&mut self, ctx: &WriteCtx, attrs: &Attributes) -> Result<(), ApiErr> {
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
    pub(super) fn admit_owner_references(
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
        if old.is_some() {
            let attrs = Attributes {
                verb: "delete".into(),
                ..base.clone()
            };
            if self.check(ctx, &attrs).is_err() {
                return Err(refused(
                    &base,
                    name,
                    "cannot set an ownerRef on a resource you can't delete",
                ));
            }
        }
        let blocking = |r: &Value| r["blockOwnerDeletion"].as_bool() == Some(true);
        for r in new_refs.iter().filter(|r| blocking(r)) {
            let was_blocking = old_refs.iter().any(|o| o["uid"] == r["uid"] && blocking(o));
            if !was_blocking {
                self.admit_blocking_owner(ctx, &base, r)?;
            }
        }
        Ok(())
    }

    /// A new `blockOwnerDeletion: true` reference `r` needs `update` on `<owner>/finalizers`.
    fn admit_blocking_owner(
        &mut self,
        ctx: &WriteCtx,
        base: &Attributes,
        r: &Value,
    ) -> Result<(), ApiErr> {
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
                base,
                &base.name,
                "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on",
            ));
        }
        Ok(())
    }
}

const ADMISSION_GROUP: &str = "admissionregistration.k8s.io";

impl State {
    /// The API server's registry strategies for ValidatingAdmissionPolicies and their bindings
    /// (`validatingadmissionpolicy/authz.go`, `validatingadmissionpolicybinding/authz.go`):
    /// whoever writes a policy with a `paramKind` must be able to `get` every object of that
    /// kind; a binding's `paramRef` needs `get` on the object it names (`list` for a selector),
    /// its kind taken from the policy the binding names. Unchanged on update: not checked again.
    /// A refusal is the server's 422 at `spec.paramKind` / `spec.paramRef`.
    pub(super) fn admit_admission_params(
        &mut self,
        ctx: &WriteCtx,
        t: &Target,
        name: &str,
        old: Option<&Value>,
        new: &Value,
    ) -> Result<(), ApiErr> {
        if t.res.group != ADMISSION_GROUP {
            return Ok(());
        }
        let (field, verb, param_name, namespace, kind) = match t.res.plural.as_str() {
            "validatingadmissionpolicies" => {
                let kind = &new["spec"]["paramKind"];
                if kind.is_null() || old.is_some_and(|o| o["spec"]["paramKind"] == *kind) {
                    return Ok(());
                }
                (
                    "spec.paramKind",
                    "get",
                    "*".to_string(),
                    "*".to_string(),
                    kind.clone(),
                )
            }
            "validatingadmissionpolicybindings" => {
                let param_ref = &new["spec"]["paramRef"];
                let same = |o: &Value| {
                    o["spec"]["paramRef"] == *param_ref
                        && o["spec"]["policyName"] == new["spec"]["policyName"]
                };
                if param_ref.is_null() || old.is_some_and(same) {
                    return Ok(());
                }
                let policy = Key {
                    group: ADMISSION_GROUP.into(),
                    version: t.res.version.clone(),
                    plural: "validatingadmissionpolicies".into(),
                    namespace: String::new(),
                    name: new["spec"]["policyName"].as_str().unwrap_or("").to_string(),
                };
                let kind = self
                    .objects
                    .get(&policy)
                    .map(|p| p["spec"]["paramKind"].clone())
                    .unwrap_or(Value::Null);
                let named = param_ref["name"].as_str().unwrap_or("").to_string();
                let verb = if named.is_empty() { "list" } else { "get" };
                let namespace = param_ref["namespace"].as_str().unwrap_or("").to_string();
                ("spec.paramRef", verb, named, namespace, kind)
            }
            _ => return Ok(()),
        };
        let (api_version, kind_name) = (
            kind["apiVersion"].as_str().unwrap_or(""),
            kind["kind"].as_str().unwrap_or(""),
        );
        // Unresolvable kinds need the permission on everything, as upstream.
        let (group, resource) = match self.resource_by_kind(api_version, kind_name) {
            Some(r) => (r.group, r.plural),
            None => (
                api_version
                    .split_once('/')
                    .map_or("*", |(g, _)| g)
                    .to_string(),
                "*".to_string(),
            ),
        };
        let attrs = Attributes {
            verb: verb.into(),
            group,
            resource,
            subresource: None,
            namespace,
            name: param_name,
            path: None,
        };
        if self.check(ctx, &attrs).is_ok() {
            return Ok(());
        }
        let why = if field == "spec.paramKind" {
            format!(
                "user {:?} must have \"get\" permission on all objects of the referenced paramKind (kind={kind_name}, apiVersion={api_version})",
                ctx.user.username
            )
        } else {
            format!(
                "user {verb:?} does not have {:?} permission on the object referenced by paramRef",
                ctx.user.username
            )
        };
        Err(err(
            422,
            format!(
                "{}.{ADMISSION_GROUP} {name:?} is invalid: {field}: Forbidden: {why}",
                t.res.kind
            ),
        ))
    }
}
