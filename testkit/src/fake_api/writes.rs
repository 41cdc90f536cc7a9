//! The write handlers: create, update (PUT), every PATCH flavour (server-side apply, merge,
//! strategic merge as merge, JSON patch), on an object or its status, delete and
//! deletecollection, with the API server's preconditions and answers.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::FakeApi;
use super::admission::WriteCtx;
use super::authz::Attributes;
use super::dispatch::Target;
use super::errors::{ApiErr, already_exists, err, not_found};
use super::selectors::Filter;
use super::store::{Key, State, drop_key, now};

pub(super) fn parse_body(bytes: &[u8]) -> Result<Value, ApiErr> {
    serde_json::from_slice(bytes)
        .or_else(|_| serde_yaml::from_slice::<Value>(bytes))
        .map_err(|e| err(400, format!("request body is not valid JSON or YAML: {e}")))
}

/// 400 unless the body names no object or the one on the URL.
fn check_body_name(obj: &Value, name: &str) -> Result<(), ApiErr> {
    let body_name = obj["metadata"]["name"].as_str().unwrap_or("");
    if !body_name.is_empty() && body_name != name {
        return Err(err(
            400,
            format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            ),
        ));
    }
    Ok(())
}

/// apiVersion, kind, name and namespace are the URL's, whatever the body said.
fn set_identity(t: &Target, obj: &mut Value, name: &str) {
    obj["apiVersion"] = json!(t.res.api_version());
    obj["kind"] = json!(t.res.kind);
    obj["metadata"]["name"] = json!(name);
    if let Some(ns) = &t.namespace {
        obj["metadata"]["namespace"] = json!(ns);
    }
}

/// Fill apiVersion/kind/name/namespace and check they agree with the path.
fn normalize(t: &Target, obj: &mut Value, name: &str) -> Result<(), ApiErr> {
    if !obj.is_object() {
        return Err(err(400, "request body must be a JSON object"));
    }
    check_body_name(obj, name)?;
    set_identity(t, obj, name);
    Ok(())
}

/// A status-subresource object ignores the status a spec write sends.
fn drop_status(t: &Target, obj: &mut Value) {
    if t.res.status
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
}

fn record_manager(
    obj: &mut Value,
    manager: &str,
    operation: &str,
    api_version: &str,
    sub: Option<&str>,
    written: &Value,
) {
    let mut entry = json!({
        "manager": manager, "operation": operation, "apiVersion": api_version,
        "time": now(), "fieldsType": "FieldsV1", "fieldsV1": field_set(written, true),
    });
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
        match arr.iter_mut().find(|e| same(e)) {
            // Keep the existing entry's time, so a no-op write stays a no-op; add new fields.
            Some(e) => merge_field_sets(&mut e["fieldsV1"], &entry["fieldsV1"]),
            None => arr.push(entry),
        }
    }
}

/// The FieldsV1 set of the fields a write sets (`f:<name>` per object key, leaves `{}`),
/// without the fields the server owns; as large as the real server's for the same write.
fn field_set(v: &Value, top: bool) -> Value {
    const SERVER_OWNED: [&str; 7] = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "generation",
    ];
    let Some(m) = v.as_object() else {
        return json!({});
    };
    let mut out = serde_json::Map::new();
    for (k, child) in m {
        if top && (k == "apiVersion" || k == "kind") {
            continue;
        }
        if k == "metadata" && top {
            let mut meta = child.clone();
            if let Some(mm) = meta.as_object_mut() {
                mm.retain(|k, _| !SERVER_OWNED.contains(&k.as_str()));
            }
            if meta.as_object().is_some_and(|m| !m.is_empty()) {
                out.insert("f:metadata".into(), field_set(&meta, false));
            }
            continue;
        }
        let mut set = field_set(child, false);
        if child.as_object().is_some_and(|c| !c.is_empty()) {
            set["."] = json!({});
        }
        out.insert(format!("f:{k}"), set);
    }
    Value::Object(out)
}

fn merge_field_sets(into: &mut Value, from: &Value) {
    let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) else {
        return;
    };
    for (k, v) in from {
        match into.get_mut(k) {
            Some(existing) => merge_field_sets(existing, v),
            None => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// JSON patch ops applied one by one, as the API server's patch library applies them.
fn json_patched(old: &Value, bytes: &[u8]) -> Result<Value, ApiErr> {
    let patch: json_patch::Patch =
        serde_json::from_slice(bytes).map_err(|e| err(400, format!("invalid JSON patch: {e}")))?;
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
        json_patch::patch(&mut doc, std::slice::from_ref(op))
            .map_err(|e| err(422, format!("the JSON patch could not be applied: {e}")))?;
    }
    Ok(doc)
}

/// 422 when a write adds a finalizer to an object that is being deleted.
fn refuse_new_finalizers(
    t: &Target,
    existing: Option<&Value>,
    new: &Value,
    name: &str,
) -> Result<(), ApiErr> {
    let Some(old) = existing.filter(|o| !o["metadata"]["deletionTimestamp"].is_null()) else {
        return Ok(());
    };
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
    Ok(())
}

/// Subresource isolation, as the real server does it: a status write changes only status, a
/// spec write keeps the stored status; managed fields are the server's to keep.
fn keep_server_fields(t: &Target, old: &Value, new: &mut Value, status_sub: bool) {
    if status_sub {
        let status = new.get("status").cloned();
        *new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                drop_key(new, "status");
            }
        }
    } else if t.res.status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                drop_key(new, "status");
            }
        }
    }
    new["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
    if new["metadata"]["managedFields"].is_null()
        && let Some(m) = new["metadata"].as_object_mut()
    {
        m.remove("managedFields");
    }
}

/// One PUT or PATCH request, as the handlers below read it.
struct Write<'a> {
    t: &'a Target,
    q: &'a BTreeMap<String, String>,
    bytes: &'a [u8],
    /// `"update"` for PUT, else the patch's content type.
    how: &'a str,
    name: String,
    apply: bool,
    status_sub: bool,
}

impl Write<'_> {
    /// The object the write asks for, before the server's own fields are put back.
    fn requested(
        &self,
        st: &mut State,
        ctx: &WriteCtx,
        existing: Option<&Value>,
    ) -> Result<Value, ApiErr> {
        let (t, name) = (self.t, &self.name);
        match (existing, self.how) {
            (_, "update") => {
                let mut b = parse_body(self.bytes)?;
                normalize(t, &mut b, name)?;
                Ok(b)
            }
            (None, _) if self.apply && !self.status_sub => {
                // An apply that creates is authorized a second time, as a create.
                let attrs = Attributes {
                    verb: "create".into(),
                    subresource: None,
                    name: name.clone(),
                    ..ctx.request_attributes(t)
                };
                st.check(ctx, &attrs)?;
                let mut b = parse_body(self.bytes)?;
                normalize(t, &mut b, name)?;
                drop_status(t, &mut b);
                Ok(b)
            }
            (None, _) => Err(not_found(&t.res, name)),
            (Some(old), h) if h.starts_with("application/json-patch") => {
                json_patched(old, self.bytes)
            }
            (Some(old), h)
                if self.apply
                    || h.starts_with("application/merge-patch")
                    || h.starts_with("application/strategic-merge-patch") =>
            {
                let p = parse_body(self.bytes)?;
                if self.apply {
                    check_body_name(&p, name)?;
                }
                let mut doc = old.clone();
                json_patch::merge(&mut doc, &p);
                Ok(doc)
            }
            (Some(_), h) => Err(err(
                415,
                format!("the body of the request was in an unknown format: {h}"),
            )),
        }
    }

    /// An apply needs a field manager; a resourceVersion in the body must match (optimistic
    /// concurrency); an update needs an object to update.
    fn preconditions(&self, existing: Option<&Value>) -> Result<(), ApiErr> {
        let name = &self.name;
        if self.apply && self.q.get("fieldManager").is_none_or(|f| f.is_empty()) {
            return Err(err(
                400,
                "PATCH, application/apply-patch+yaml: fieldManager is required for apply patch",
            ));
        }
        let sent_rv = if !self.how.starts_with("application/json-patch") {
            parse_body(self.bytes)?["metadata"]["resourceVersion"]
                .as_str()
                .map(String::from)
        } else {
            None
        };
        if let (Some(sent), Some(old)) = (sent_rv.filter(|s| !s.is_empty()), existing)
            && old["metadata"]["resourceVersion"].as_str() != Some(sent.as_str())
        {
            return Err(err(
                409,
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    self.t.res.plural
                ),
            ));
        }
        if self.how == "update" && existing.is_none() {
            return Err(not_found(&self.t.res, name));
        }
        Ok(())
    }
}

impl FakeApi {
    pub(super) fn do_create(
        &self,
        t: &Target,
        q: &BTreeMap<String, String>,
        bytes: &[u8],
        ctx: &WriteCtx,
    ) -> Result<(u16, Value), ApiErr> {
        let mut obj = parse_body(bytes)?;
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
        normalize(t, &mut obj, &name)?;
        let key = Key {
            name: name.clone(),
            ..t.key()
        };
        if st.objects.contains_key(&key) {
            return Err(already_exists(format!(
                "{} \"{name}\" already exists",
                t.res.plural
            )));
        }
        drop_status(t, &mut obj);
        drop_key(&mut obj["metadata"], "resourceVersion");
        if let Some(fm) = q.get("fieldManager") {
            let written = obj.clone();
            record_manager(&mut obj, fm, "Update", &t.res.api_version(), None, &written);
        }
        st.admit_owner_references(ctx, t, &name, None, &obj)?;
        st.admit_admission_params(ctx, t, &name, None, &obj)?;
        if q.contains_key("dryRun") {
            return Ok((201, obj));
        }
        Ok((201, st.commit(&key, obj)))
    }

    /// PUT and every PATCH flavour, on the object or its status.
    pub(super) fn do_write(
        &self,
        t: &Target,
        q: &BTreeMap<String, String>,
        bytes: &[u8],
        how: &str,
        ctx: &WriteCtx,
    ) -> Result<(u16, Value), ApiErr> {
        let status_sub = match t.sub.as_deref() {
            None => false,
            Some("status") if t.res.status => true,
            Some(s) => {
                return Err(err(404, format!("{} has no subresource {s}", t.res.plural)));
            }
        };
        let w = Write {
            t,
            q,
            bytes,
            how,
            name: t.name.clone().unwrap_or_default(),
            apply: how.starts_with("application/apply-patch"),
            status_sub,
        };
        let key = t.key();
        let mut st = self.state();
        let existing = st.objects.get(&key).cloned();
        let mut new = w.requested(&mut st, ctx, existing.as_ref())?;
        w.preconditions(existing.as_ref())?;
        set_identity(t, &mut new, &w.name);
        refuse_new_finalizers(t, existing.as_ref(), &new, &w.name)?;
        if let Some(old) = &existing {
            keep_server_fields(t, old, &mut new, status_sub);
        }
        if let Some(fm) = q.get("fieldManager").filter(|f| !f.is_empty()) {
            let op = if w.apply { "Apply" } else { "Update" };
            // What this write sets: the patch itself, or the whole object of a PUT.
            let written = match serde_json::from_slice::<Value>(bytes) {
                Ok(v) if status_sub => json!({"status": v["status"]}),
                Ok(v) if v.is_object() => v,
                // A JSON patch (a list of operations): the server's diff is not modelled.
                Ok(_) => json!({}),
                Err(_) => new.clone(),
            };
            record_manager(
                &mut new,
                fm,
                op,
                &t.res.api_version(),
                t.sub.as_deref(),
                &written,
            );
        }
        if !status_sub {
            st.admit_owner_references(ctx, t, &w.name, existing.as_ref(), &new)?;
            st.admit_admission_params(ctx, t, &w.name, existing.as_ref(), &new)?;
        }
        if q.contains_key("dryRun") {
            return Ok((200, new));
        }
        let created = existing.is_none();
        let out = st.commit(&key, new);
        Ok((if created { 201 } else { 200 }, out))
    }

    pub(super) fn do_delete(
        &self,
        t: &Target,
        q: &BTreeMap<String, String>,
        bytes: &[u8],
    ) -> Result<(u16, Value), ApiErr> {
        let name = t.name.clone().unwrap_or_default();
        let opts = if bytes.is_empty() {
            json!({})
        } else {
            parse_body(bytes)?
        };
        let key = t.key();
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

    pub(super) fn do_delete_collection(
        &self,
        t: &Target,
        q: &BTreeMap<String, String>,
    ) -> Result<(u16, Value), ApiErr> {
        let filter = Filter::from_query(q)?;
        let mut st = self.state();
        let keys = st.select(t, &filter);
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
}
