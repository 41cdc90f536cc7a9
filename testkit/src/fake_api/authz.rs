//! Authorization as kube-apiserver decides it: RBAC over the Role, ClusterRole, RoleBinding and
//! ClusterRoleBinding objects stored in the fake (nothing is read from the operator's own RBAC
//! table, so the table and this checker cannot agree on a wrong model), and the 403 answers the
//! real server gives.
//!
//! What the real server checks, and where, is reproduced by the caller (`fake_api`): the request
//! filter authorizes the verb of the HTTP method; a server-side apply that creates its object is
//! authorized again as `create`; the `OwnerReferencesPermissionEnforcement` admission plugin
//! (enabled on OpenShift) wants `delete` on an object whose ownerReferences an update changes,
//! and `update` on `<owner>/finalizers` for every new `blockOwnerDeletion: true` reference.

use serde_json::Value;

/// Who sent a request, as authentication established it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A cluster administrator: the `system:masters` group bypasses authorization.
    pub fn admin(name: &str) -> UserInfo {
        UserInfo {
            username: name.to_string(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    /// A ServiceAccount as its token authenticates it.
    pub fn service_account(namespace: &str, name: &str) -> UserInfo {
        UserInfo {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }

    fn is_superuser(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// What one authorization check asks (the authorizer's `Attributes`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    /// Plural resource, without subresource; empty for a non-resource request.
    pub resource: String,
    pub subresource: Option<String>,
    /// Empty for cluster-scoped requests and requests across all namespaces.
    pub namespace: String,
    /// Empty for collections and creates.
    pub name: String,
    /// The URL path of a non-resource request (`/version`, `/apis`).
    pub path: Option<String>,
}

impl Attributes {
    pub fn resource(verb: &str, group: &str, resource: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: None,
            namespace: String::new(),
            name: String::new(),
            path: None,
        }
    }

    /// `resource` or `resource/subresource`, as RBAC rules name it.
    pub fn combined_resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }

    /// `resource.group` (just `resource` in the core group), as errors name it.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// The authorizer's sentence for a denial, as the API server's request filter words it.
    pub fn denial(&self, user: &UserInfo) -> String {
        let who = &user.username;
        if let Some(path) = &self.path {
            return format!("User {who:?} cannot {} path {path:?}", self.verb);
        }
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", self.namespace)
        };
        format!(
            "User {who:?} cannot {} resource {:?} in API group {:?} {scope}",
            self.verb,
            self.combined_resource(),
            self.group
        )
    }
}

/// The store's RBAC objects, by plural (`clusterroles`, `rolebindings`, ...) and namespace
/// (empty for the cluster-scoped kinds).
pub trait RbacObjects {
    fn rbac_objects(&self, plural: &str, namespace: &str) -> Vec<&Value>;
    fn rbac_object(&self, plural: &str, namespace: &str, name: &str) -> Option<&Value>;
}

/// The RBAC authorizer's answer: allowed, or not with the reason it gives (empty unless a binding
/// points at a role that does not exist).
pub fn authorize(
    store: &impl RbacObjects,
    user: &UserInfo,
    attrs: &Attributes,
) -> Result<(), String> {
    if user.is_superuser() {
        return Ok(());
    }
    let mut errors = Vec::new();
    let mut bindings: Vec<(&Value, String)> = store
        .rbac_objects("clusterrolebindings", "")
        .into_iter()
        .map(|b| (b, String::new()))
        .collect();
    if !attrs.namespace.is_empty() {
        bindings.extend(
            store
                .rbac_objects("rolebindings", &attrs.namespace)
                .into_iter()
                .map(|b| (b, attrs.namespace.clone())),
        );
    }
    for (binding, binding_ns) in bindings {
        if !binds(binding, &binding_ns, user) {
            continue;
        }
        let role_ref = &binding["roleRef"];
        let role_name = role_ref["name"].as_str().unwrap_or("");
        let role = match role_ref["kind"].as_str() {
            Some("ClusterRole") => store.rbac_object("clusterroles", "", role_name),
            Some("Role") if !binding_ns.is_empty() => {
                store.rbac_object("roles", &binding_ns, role_name)
            }
            _ => None,
        };
        let Some(role) = role else {
            let kind = role_ref["kind"].as_str().unwrap_or("").to_lowercase();
            errors.push(format!(
                "{kind}.rbac.authorization.k8s.io {role_name:?} not found"
            ));
            continue;
        };
        let rules = role["rules"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if rules.iter().any(|r| rule_allows(r, attrs)) {
            return Ok(());
        }
    }
    if errors.is_empty() {
        Err(String::new())
    } else {
        Err(format!("RBAC: [{}]", errors.join(", ")))
    }
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn binds(binding: &Value, binding_ns: &str, user: &UserInfo) -> bool {
    binding["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| {
            let name = s["name"].as_str().unwrap_or("");
            match s["kind"].as_str() {
                Some("User") => name == user.username,
                Some("Group") => user.groups.iter().any(|g| g == name),
                Some("ServiceAccount") => {
                    let ns = s["namespace"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .unwrap_or(binding_ns);
                    user.username == format!("system:serviceaccount:{ns}:{name}")
                }
                _ => false,
            }
        })
}

/// One PolicyRule against the attributes, with RBAC's matching rules (`*` wildcards, `*/sub`
/// subresource wildcards, resourceNames, nonResourceURLs with a trailing `*`).
fn rule_allows(rule: &Value, attrs: &Attributes) -> bool {
    let verb = strings(&rule["verbs"]).any(|v| v == "*" || v == attrs.verb);
    if !verb {
        return false;
    }
    if let Some(path) = &attrs.path {
        return strings(&rule["nonResourceURLs"]).any(|u| {
            u == "*"
                || u == path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix))
        });
    }
    let group = strings(&rule["apiGroups"]).any(|g| g == "*" || g == attrs.group);
    let combined = attrs.combined_resource();
    let resource = strings(&rule["resources"]).any(|r| {
        r == "*"
            || r == combined
            || attrs
                .subresource
                .as_deref()
                .is_some_and(|sub| r.strip_prefix("*/") == Some(sub))
    });
    let names: Vec<&str> = strings(&rule["resourceNames"]).collect();
    let name = names.is_empty() || names.contains(&attrs.name.as_str());
    group && resource && name
}
