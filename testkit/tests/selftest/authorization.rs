//! Authorization as the API server decides it: RBAC rule matching, server-side apply authorized
//! as patch then create, and the OwnerReferencesPermissionEnforcement checks.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use testkit::FakeApi;

use super::{cm, kata};

fn rbac(kind: &str, name: &str, ns: Option<&str>, body: Value) -> Value {
    let mut v = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name}});
    if let Some(ns) = ns {
        v["metadata"]["namespace"] = json!(ns);
    }
    for (k, val) in body.as_object().expect("object").clone() {
        v[k] = val;
    }
    v
}

fn forbidden(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) if s.code == 403 => *s,
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn rbac_rules_match_like_the_api_servers_authorizer() {
    use testkit::UserInfo;
    let fake = FakeApi::new();
    let dev = UserInfo::service_account("team", "dev");
    // A ClusterRole bound by a RoleBinding grants inside that namespace only; resourceNames
    // restrict to named objects; `*/status` matches any status subresource.
    fake.insert_json(rbac(
        "ClusterRole",
        "cm-reader",
        None,
        json!({"rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["one"], "verbs": ["get"]},
            {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["get"]},
        ]}),
    ));
    fake.insert_json(rbac(
        "RoleBinding",
        "dev-reads",
        Some("team"),
        json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cm-reader"},
               "subjects": [{"kind": "ServiceAccount", "name": "dev"}]}),
    ));
    let admin = fake.client_as("admin");
    for ns in ["team", "other"] {
        Api::<ConfigMap>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &cm("a", json!({})))
            .await
            .expect("admin creates");
        Api::<Secret>::namespaced(admin.clone(), ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "one"}})).expect("secret"),
            )
            .await
            .expect("admin creates");
    }
    let client = fake.client_as_user("dev", dev.clone());
    let team: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    team.get("a").await.expect("granted in team");
    team.list(&ListParams::default())
        .await
        .expect("list granted");
    let e = forbidden(
        Api::<ConfigMap>::namespaced(client.clone(), "other")
            .get("a")
            .await
            .expect_err("not in other"),
    );
    assert_eq!(
        e.message,
        "configmaps \"a\" is forbidden: User \"system:serviceaccount:team:dev\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"other\""
    );
    let details = e.details.expect("details");
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("a", "configmaps")
    );
    let e = forbidden(
        team.delete("a", &DeleteParams::default())
            .await
            .expect_err("delete not granted"),
    );
    assert!(
        e.message.contains("cannot delete resource \"configmaps\""),
        "{}",
        e.message
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team");
    secrets.get("one").await.expect("named secret granted");
    forbidden(
        secrets
            .list(&ListParams::default())
            .await
            .expect_err("resourceNames never allow list"),
    );
    // Subresources are resources of their own.
    let e = forbidden(
        team.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "w"}})),
        )
        .await
        .expect_err("patch not granted"),
    );
    assert_eq!(e.reason, "Forbidden");
    let log = fake.requests_by("dev");
    assert!(
        log.iter()
            .all(|r| r.user == "system:serviceaccount:team:dev")
    );
    assert_eq!(fake.forbidden_requests().len(), 4);
    // A binding to a missing role says so in the reason, as RBAC does.
    fake.insert_json(rbac(
        "ClusterRoleBinding",
        "dangling",
        None,
        json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gone"},
               "subjects": [{"kind": "Group", "name": "system:serviceaccounts:team"}]}),
    ));
    let e = forbidden(
        Api::<ConfigMap>::all(client.clone())
            .list(&ListParams::default())
            .await
            .expect_err("not cluster-wide"),
    );
    assert!(
        e.message.ends_with(
            "at the cluster scope: RBAC: [clusterrole.rbac.authorization.k8s.io \"gone\" not found]"
        ),
        "{}",
        e.message
    );
    // Discovery is open to every authenticated user (the bootstrap system:discovery role).
    client
        .apiserver_version()
        .await
        .expect("/version for everyone");
}

#[tokio::test]
async fn server_side_apply_is_authorized_as_patch_then_as_create_when_it_creates() {
    use testkit::UserInfo;
    let fake = FakeApi::new();
    let applier = UserInfo::service_account("team", "applier");
    fake.insert_json(rbac(
        "Role",
        "patch-only",
        Some("team"),
        json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["patch"]}]}),
    ));
    fake.insert_json(rbac(
        "RoleBinding",
        "patch-only",
        Some("team"),
        json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "patch-only"},
               "subjects": [{"kind": "User", "name": "system:serviceaccount:team:applier"}]}),
    ));
    let api: Api<ConfigMap> = Api::namespaced(fake.client_as_user("applier", applier), "team");
    let mut obj = cm("applied", json!({}));
    obj.metadata.namespace = Some("team".into());
    let pp = PatchParams::apply("me").force();
    let e = forbidden(
        api.patch("applied", &pp, &Patch::Apply(&obj))
            .await
            .expect_err("creating needs create"),
    );
    assert_eq!(
        e.message,
        "configmaps \"applied\" is forbidden: User \"system:serviceaccount:team:applier\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"team\""
    );
    let checks = fake.authorizations_by("applier");
    let asked: Vec<(&str, bool)> = checks
        .iter()
        .map(|a| (a.attributes.verb.as_str(), a.allowed))
        .collect();
    assert_eq!(asked, [("patch", true), ("create", false)]);
    // Once the object exists, `patch` alone is enough.
    Api::<ConfigMap>::namespaced(fake.client_as("admin"), "team")
        .create(&PostParams::default(), &obj)
        .await
        .expect("admin creates");
    api.patch("applied", &pp, &Patch::Apply(&obj))
        .await
        .expect("apply to an existing object is a patch");
}

#[tokio::test]
async fn owner_references_need_delete_and_blocking_ones_need_finalizers_update() {
    use testkit::UserInfo;
    let fake = FakeApi::new();
    let owner = fake.insert(&kata("owner"));
    let uid = owner["metadata"]["uid"].as_str().expect("uid").to_string();
    let user = UserInfo::service_account("team", "gc");
    let rules = json!({"rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch", "update"]},
    ]});
    fake.insert_json(rbac("ClusterRole", "gc", None, rules));
    fake.insert_json(rbac(
        "ClusterRoleBinding",
        "gc",
        None,
        json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gc"},
               "subjects": [{"kind": "ServiceAccount", "name": "gc", "namespace": "team"}]}),
    ));
    let api: Api<ConfigMap> = Api::namespaced(fake.client_as_user("gc", user), "team");
    let owned = |block: bool| {
        let mut c = cm("owned", json!({}));
        c.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "kataconfiguration.openshift.io/v1".into(),
                kind: "KataConfig".into(),
                name: "owner".into(),
                uid: uid.clone(),
                block_owner_deletion: Some(block),
                controller: Some(true),
            },
        ]);
        c
    };
    // Creating with a non-blocking reference needs nothing more.
    api.create(&PostParams::default(), &owned(false))
        .await
        .expect("plain owner reference on create");
    // Changing references of an existing object needs delete on it.
    let e = forbidden(
        api.replace("owned", &PostParams::default(), &owned(true))
            .await
            .expect_err("no delete"),
    );
    assert_eq!(
        e.message,
        "configmaps \"owned\" is forbidden: cannot set an ownerRef on a resource you can't delete: , <nil>"
    );
    // A new blocking reference needs update on the owner's finalizers.
    let e = forbidden(
        api.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "blocking", "ownerReferences": [
                {"apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig", "name": "owner", "uid": uid, "blockOwnerDeletion": true}
            ]}}))
            .expect("cm"),
        )
        .await
        .expect_err("no finalizers update"),
    );
    assert_eq!(
        e.message,
        "configmaps \"blocking\" is forbidden: cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on: , <nil>"
    );
    let asked: Vec<String> = fake
        .authorizations_by("gc")
        .iter()
        .filter(|a| !a.allowed)
        .map(|a| {
            format!(
                "{} {} {}",
                a.attributes.verb,
                a.attributes.combined_resource(),
                a.attributes.name
            )
        })
        .collect();
    assert_eq!(
        asked,
        [
            "delete configmaps owned",
            "update kataconfigs/finalizers owner"
        ]
    );
}

/// A ValidatingAdmissionPolicy's `paramKind` needs `get` on every object of the kind, its
/// binding's `paramRef` `get` on the named one; an unchanged one is not checked again.
#[tokio::test]
async fn admission_policy_parameters_need_read_access() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use testkit::UserInfo;
    let fake = FakeApi::new();
    let user = UserInfo::service_account("team", "writer");
    let grant = |verbs: Value| {
        json!({"rules": [
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingadmissionpolicies", "validatingadmissionpolicybindings"], "verbs": ["create", "patch"]},
            {"apiGroups": ["kataconfiguration.openshift.io"], "resources": ["kataconfigs"], "verbs": verbs},
        ]})
    };
    fake.insert_json(rbac("ClusterRole", "writer", None, grant(json!(["list"]))));
    fake.insert_json(rbac(
        "ClusterRoleBinding",
        "writer",
        None,
        json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "writer"},
               "subjects": [{"kind": "ServiceAccount", "name": "writer", "namespace": "team"}]}),
    ));
    let client = fake.client_as_user("writer", user);
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client);
    let policy = || {
        serde_json::from_value::<ValidatingAdmissionPolicy>(json!({
            "metadata": {"name": "p"},
            "spec": {"paramKind": {"apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig"},
                     "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]},
                     "validations": [{"expression": "true"}]},
        }))
        .expect("policy")
    };
    let binding = serde_json::from_value::<ValidatingAdmissionPolicyBinding>(json!({
        "metadata": {"name": "b"},
        "spec": {"policyName": "p", "paramRef": {"name": "example", "parameterNotFoundAction": "Allow"}, "validationActions": ["Deny"]},
    }))
    .expect("binding");
    let invalid = |e: kube::Error| match e {
        kube::Error::Api(s) if s.code == 422 => s.message,
        other => panic!("expected 422, got {other:?}"),
    };
    let msg = invalid(
        policies
            .create(&PostParams::default(), &policy())
            .await
            .expect_err("no get on kataconfigs"),
    );
    assert_eq!(
        msg,
        "ValidatingAdmissionPolicy.admissionregistration.k8s.io \"p\" is invalid: spec.paramKind: Forbidden: user \"system:serviceaccount:team:writer\" must have \"get\" permission on all objects of the referenced paramKind (kind=KataConfig, apiVersion=kataconfiguration.openshift.io/v1)"
    );
    fake.insert_json(rbac("ClusterRole", "writer", None, grant(json!(["get"]))));
    policies
        .create(&PostParams::default(), &policy())
        .await
        .expect("get on kataconfigs");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("get on the named KataConfig");
    fake.insert_json(rbac("ClusterRole", "writer", None, grant(json!(["list"]))));
    // Unchanged parameters are not authorized again.
    policies
        .patch(
            "p",
            &PatchParams::apply("t").force(),
            &Patch::Apply(&policy()),
        )
        .await
        .expect("unchanged paramKind");
    let mut other = binding.clone();
    if let Some(spec) = other.spec.as_mut() {
        spec.param_ref.as_mut().expect("ref").name = Some("other".into());
    }
    let msg = invalid(
        bindings
            .patch("b", &PatchParams::apply("t").force(), &Patch::Apply(&other))
            .await
            .expect_err("a new paramRef"),
    );
    assert_eq!(
        msg,
        "ValidatingAdmissionPolicyBinding.admissionregistration.k8s.io \"b\" is invalid: spec.paramRef: Forbidden: user \"get\" does not have \"system:serviceaccount:team:writer\" permission on the object referenced by paramRef"
    );
    let asked: Vec<String> = fake
        .authorizations_by("writer")
        .iter()
        .filter(|a| a.attributes.resource == "kataconfigs")
        .map(|a| format!("{} {} {}", a.attributes.verb, a.attributes.name, a.allowed))
        .collect();
    assert_eq!(
        asked,
        [
            "get * false",
            "get * true",
            "get example true",
            "get other false"
        ]
    );
}
