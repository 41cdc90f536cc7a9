//! Discovery as the API server answers it (`/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>`),
//! from the resources the fake serves right now, so a test can take an API group away (a
//! cluster without the Machine Config Operator, an API server without ValidatingAdmissionPolicy)
//! or add one (a CRD installed later).

use std::collections::BTreeMap;

use http::Response;
use serde_json::{Value, json};

use super::authz::{Attributes, UserInfo};
use super::errors::{err, err_response, forbidden, full};
use super::store::ResourceInfo;
use super::{FakeApi, FakeBody};

/// Whether `path` is a discovery document rather than a resource.
pub(super) fn is_discovery_path(path: &str) -> bool {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    matches!(
        segs.as_slice(),
        ["api"] | ["apis"] | ["api", _] | ["apis", _, _]
    )
}

fn verbs(r: &ResourceInfo) -> Value {
    if r.create_only {
        json!(["create"])
    } else {
        json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ])
    }
}

fn resource_list(group_version: &str, resources: &[&ResourceInfo]) -> Value {
    let mut list = Vec::new();
    for r in resources {
        list.push(json!({
            "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
            "kind": r.kind, "verbs": verbs(r),
        }));
        if r.status {
            list.push(json!({
                "name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list})
}

impl FakeApi {
    /// A discovery document, which every authenticated user may get (system:discovery).
    pub(super) fn discovery(&self, path: &str, user: &UserInfo) -> Response<FakeBody> {
        let attrs = Attributes {
            path: Some(path.to_string()),
            ..Attributes::resource("get", "", "")
        };
        if let Err(why) = self.authorize(user, &attrs) {
            return err_response(&forbidden(&attrs, &why));
        }
        let resources = self.state().resources.clone();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let not_found = || {
            err_response(&err(
                404,
                format!("the server could not find the requested resource ({path})"),
            ))
        };
        match segs.as_slice() {
            ["api"] => full(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            ),
            ["api", version] => {
                let core: Vec<&ResourceInfo> = resources
                    .iter()
                    .filter(|r| r.group.is_empty() && r.version == *version)
                    .collect();
                if core.is_empty() {
                    return not_found();
                }
                full(200, &resource_list(version, &core))
            }
            ["apis"] => full(200, &group_list(&resources)),
            ["apis", group, version] => {
                let served: Vec<&ResourceInfo> = resources
                    .iter()
                    .filter(|r| r.group == *group && r.version == *version)
                    .collect();
                if served.is_empty() {
                    return not_found();
                }
                full(200, &resource_list(&format!("{group}/{version}"), &served))
            }
            _ => not_found(),
        }
    }

    /// Stops serving a whole API group, as on a cluster without it (its stored objects stay,
    /// unreachable, as after a CRD deletion).
    pub fn unserve_group(&self, group: &str) {
        self.state().resources.retain(|r| r.group != group);
    }

    /// Stops serving one resource of a group version.
    pub fn unserve(&self, group: &str, version: &str, plural: &str) {
        self.state()
            .resources
            .retain(|r| !(r.group == group && r.version == version && r.plural == plural));
    }
}

/// `/apis`: every group with its versions, the first registered as the preferred one.
fn group_list(resources: &[ResourceInfo]) -> Value {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in resources.iter().filter(|r| !r.group.is_empty()) {
        let versions = groups.entry(&r.group).or_default();
        if !versions.contains(&r.version.as_str()) {
            versions.push(&r.version);
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(name, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                .collect();
            json!({"name": name, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}
