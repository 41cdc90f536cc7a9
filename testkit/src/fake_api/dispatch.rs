//! Request dispatch: the path and query read as the API server's RequestInfo reads them, the
//! request filter's authorization, the request log entry, injected faults, then the handler.

use std::collections::BTreeMap;

use http::{Method, Request, Response};
use serde_json::json;

use super::admission::WriteCtx;
use super::authz::{Attributes, UserInfo};
use super::errors::{ApiErr, attrs_denial, err, err_response, forbidden, full};
use super::requests::{Authorization, FaultKind, RequestRecord};
use super::store::{Key, ResourceInfo};
use super::{FakeApi, FakeBody};

/// The request path split into its API parts.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) res: ResourceInfo,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) sub: Option<String>,
}

impl Target {
    /// The store key of the named object (empty name for collections).
    pub(super) fn key(&self) -> Key {
        Key {
            group: self.res.group.clone(),
            version: self.res.version.clone(),
            plural: self.res.plural.clone(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: self.name.clone().unwrap_or_default(),
        }
    }
}

/// A resource request as the API server's RequestInfo reads it.
struct RequestInfo {
    path: String,
    query: BTreeMap<String, String>,
    target: Target,
    verb: &'static str,
    content_type: String,
    /// `Accept: ...;as=PartialObjectMetadata`: answer with metadata only.
    metadata_only: bool,
}

impl RequestInfo {
    /// Its request log entry, with the request filter's check.
    fn record(
        &self,
        client: &str,
        user: &UserInfo,
        attrs: &Attributes,
        allowed: bool,
    ) -> RequestRecord {
        let t = &self.target;
        RequestRecord {
            verb: self.verb.into(),
            field_manager: self.query.get("fieldManager").cloned(),
            patch_type: (self.verb == "patch")
                .then(|| patch_type_of(&self.content_type).to_string()),
            group: t.res.group.clone(),
            resource: t.res.plural.clone(),
            subresource: t.sub.clone(),
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            is_write: !matches!(self.verb, "get" | "list" | "watch"),
            client: client.to_string(),
            user: user.username.clone(),
            authorizations: vec![Authorization {
                attributes: attrs.clone(),
                allowed,
            }],
            forbidden: !allowed,
            refused: false,
            seq: 0,
        }
    }
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

/// The verb the request filter authorizes for this method, on a named object or a collection.
fn verb_of(method: &Method, named: bool, watch: bool, path: &str) -> Result<&'static str, ApiErr> {
    Ok(match (method, named) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, false) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        (m, _) => return Err(err(405, format!("{m} is not supported on {path}"))),
    })
}

/// `apply`, `merge`, `json` or `strategic`, from a patch's content type.
fn patch_type_of(content_type: &str) -> &'static str {
    match content_type {
        c if c.starts_with("application/apply-patch") => "apply",
        c if c.starts_with("application/merge-patch") => "merge",
        c if c.starts_with("application/json-patch") => "json",
        c if c.starts_with("application/strategic-merge-patch") => "strategic",
        _ => "unknown",
    }
}

/// An object (or a list of them) as a metadata-only request gets it.
pub(super) fn metadata_only(v: serde_json::Value) -> serde_json::Value {
    let partial = |o: &serde_json::Value| json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": o["metadata"]});
    match v["items"].as_array() {
        Some(items) => json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
            "metadata": v["metadata"], "items": items.iter().map(partial).collect::<Vec<_>>(),
        }),
        None => partial(&v),
    }
}

/// What the request filter authorizes; list and watch carry the name of a `metadata.name=`
/// field selector, as the API server's RequestInfo does.
fn filter_attributes(t: &Target, verb: &str, query: &BTreeMap<String, String>) -> Attributes {
    let selected_name = query.get("fieldSelector").and_then(|f| {
        f.split(',')
            .find_map(|r| r.trim().strip_prefix("metadata.name="))
            .map(String::from)
    });
    Attributes {
        verb: verb.into(),
        group: t.res.group.clone(),
        resource: t.res.plural.clone(),
        subresource: t.sub.clone(),
        namespace: t.namespace.clone().unwrap_or_default(),
        name: t.name.clone().or(selected_name).unwrap_or_default(),
        path: None,
    }
}

/// The answer an injected fault gives instead of the handler's, if it gives one.
async fn fault_response(fault: Option<FaultKind>, verb: &str, path: &str) -> Option<ApiErr> {
    match fault? {
        FaultKind::Status(code) => Some(err(
            code,
            format!("injected fault: {code} for {verb} {path}"),
        )),
        FaultKind::Timeout(d) => {
            tokio::time::sleep(d).await;
            Some(err(504, format!("injected timeout for {verb} {path}")))
        }
        FaultKind::CloseWatches => None,
    }
}

impl FakeApi {
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
        if parts.uri.path() == "/version" {
            return self.version(parts.uri.path().to_string(), user);
        }
        if parts.method == http::Method::GET
            && super::discovery::is_discovery_path(parts.uri.path())
        {
            return self.discovery(parts.uri.path(), user);
        }
        let info = match self.request_info(&parts) {
            Ok(info) => info,
            Err(e) => return err_response(&e),
        };
        let (target, verb, path) = (&info.target, info.verb, &info.path);
        let attrs = filter_attributes(target, verb, &info.query);
        let decision = self.authorize(user, &attrs);
        let mut record = info.record(client, user, &attrs, decision.is_ok());
        if let Err(why) = decision {
            self.state().log(record);
            return err_response(&forbidden(&attrs, &attrs_denial(&attrs, user, &why)));
        }
        let fault = {
            let mut st = self.state();
            record.seq = st.log(record.clone());
            st.take_fault(&record)
        };
        if let Some(e) = fault_response(fault, verb, path).await {
            return err_response(&e);
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
            return self.watch(target, &info.query, info.metadata_only);
        }
        match self.handle(&info, &bytes, &ctx) {
            Ok((code, v)) if info.metadata_only && matches!(verb, "get" | "list") => {
                full(code, &metadata_only(v))
            }
            Ok((code, v)) => full(code, &v),
            Err(e) => err_response(&e),
        }
    }

    /// Logs a request the unreachable server never saw ([`FakeApi::set_unreachable`]) and returns
    /// the connection error its client gets. Discovery and unparsable paths are not logged.
    pub(super) fn refuse(
        &self,
        parts: &http::request::Parts,
        client: &str,
        user: &UserInfo,
    ) -> std::io::Error {
        if let Ok(info) = self.request_info(parts) {
            let attrs = filter_attributes(&info.target, info.verb, &info.query);
            let mut record = info.record(client, user, &attrs, true);
            record.authorizations.clear();
            record.refused = true;
            self.state().log(record);
        }
        std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!(
                "connection refused: the in-memory API server is unreachable ({} {})",
                parts.method,
                parts.uri.path()
            ),
        )
    }

    /// The request as the API server's RequestInfo reads it.
    fn request_info(&self, parts: &http::request::Parts) -> Result<RequestInfo, ApiErr> {
        let path = parts.uri.path().to_string();
        let query = parse_query(parts.uri.query());
        let target = self.resolve(&path)?;
        let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        let verb = verb_of(&parts.method, target.name.is_some(), watch, &path)?;
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        let metadata_only = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
        Ok(RequestInfo {
            path,
            query,
            target,
            verb,
            content_type,
            metadata_only,
        })
    }

    /// `/version`, which every authenticated user may get (system:discovery).
    fn version(&self, path: String, user: &UserInfo) -> Response<FakeBody> {
        let attrs = Attributes {
            path: Some(path),
            ..Attributes::resource("get", "", "")
        };
        if let Err(why) = self.authorize(user, &attrs) {
            return err_response(&forbidden(&attrs, &why));
        }
        full(
            200,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"}),
        )
    }

    /// The handler of an authorized, logged request (every verb but watch).
    fn handle(
        &self,
        info: &RequestInfo,
        bytes: &[u8],
        ctx: &WriteCtx,
    ) -> Result<(u16, serde_json::Value), ApiErr> {
        let (t, q) = (&info.target, &info.query);
        match info.verb {
            "get" => self.do_get(t),
            "list" => self.do_list(t, q),
            "create" if t.res.create_only => self.review(t, bytes),
            "create" => self.do_create(t, q, bytes, ctx),
            "update" => self.do_write(t, q, bytes, "update", ctx),
            "patch" => self.do_write(t, q, bytes, &info.content_type, ctx),
            "delete" => self.do_delete(t, q, bytes),
            _ => self.do_delete_collection(t, q),
        }
    }
}
