//! What only a real API server can prove about the OLM integration (skips without
//! `KUBEBUILDER_ASSETS`):
//!
//! - RBAC escalation: the API server refuses to let anyone create a Role (or bind one) granting
//!   permissions they do not hold. The operator creates the Prometheus Role and RoleBinding as its
//!   ServiceAccount under the generated RBAC, and a ServiceAccount lacking one of the rows held
//!   for that purpose is refused: the rows are needed, and sufficient.
//! - Garbage collection: kube-controller-manager deletes the monitoring objects once the
//!   operator's Deployment (their owner, which OLM deletes with the CSV) is gone.
//! - OperatorCondition: OLM's own Role on the one OperatorCondition (get/update/patch with
//!   resourceNames) is all the operator needs to set `Upgradeable`, and nothing more is granted.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind};
use sandboxed_containers_operator::api::operator_condition::{OperatorCondition, Upgradeable};
use sandboxed_containers_operator::monitoring_objects;
use sandboxed_containers_operator::packaging::{OPERATOR_NAME, manifests, monitoring};
use sandboxed_containers_operator::reconciler::upgradeable::{self, OperatorConditionRef};
use serde_json::{Value, json};
use testkit::envtest::{self, EnvTest};

const HANG_GUARD: Duration = Duration::from_secs(120);

async fn wait_for<T, Fut>(what: &str, f: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    testkit::wait_until(what, HANG_GUARD, f).await
}

/// Applies CRDs and waits until discovery serves their kinds.
async fn serve_crds(env: &EnvTest, crds: Vec<Value>) {
    for crd in crds {
        let group = crd["spec"]["group"].as_str().expect("group").to_string();
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .expect("kind")
            .to_string();
        let version = crd["spec"]["versions"][0]["name"]
            .as_str()
            .expect("version")
            .to_string();
        env.apply_json(crd).await.expect("apply CRD");
        let gvk = GroupVersionKind::gvk(&group, &version, &kind);
        wait_for(&format!("{kind} served"), || {
            let (client, gvk) = (env.client.clone(), gvk.clone());
            async move { kube::discovery::pinned_kind(&client, &gvk).await.ok() }
        })
        .await;
    }
}

/// The operator's generated RBAC for ServiceAccount `name` in `namespace`, without the rows for
/// `dropped` resources.
fn rbac_without(namespace: &str, name: &str, dropped: &str) -> Vec<Value> {
    manifests::operator_rbac(namespace)
        .expect("rbac")
        .into_iter()
        .map(|mut obj| {
            obj["metadata"]["name"] = json!(name);
            // `get_mut`, not indexing: indexing a missing key would add it as null.
            if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
                subjects[0]["name"] = json!(name);
            }
            if let Some(role_ref) = obj.get_mut("roleRef") {
                role_ref["name"] = json!(name);
            }
            if let Some(rules) = obj.get_mut("rules").and_then(Value::as_array_mut) {
                rules.retain(|r| r["resources"][0] != dropped);
            }
            obj
        })
        .collect()
}

/// How many of `objects` still exist.
async fn monitoring_left(objects: &[(Api<DynamicObject>, &str)]) -> usize {
    let mut left = 0;
    for (api, name) in objects {
        if api.get_opt(name).await.expect("get").is_some() {
            left += 1;
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_api_server_lets_the_operator_create_the_prometheus_role_and_collects_it_with_the_deployment()
 {
    let Some(env) = envtest::start().await else {
        return;
    };
    let ns = "olm-monitoring";
    serve_crds(&env, testkit::olm::monitoring_crds()).await;
    let operator = env.operator_client(ns).await.expect("operator client");
    env.apply_json(testkit::olm::operator_deployment(ns))
        .await
        .expect("Deployment");

    let applied = monitoring_objects::ensure(
        &operator,
        &monitoring_objects::Config::new(ns, OPERATOR_NAME),
    )
    .await
    .unwrap_or_else(|e| panic!("the generated RBAC must let the operator apply them: {e}"));
    assert_eq!(applied, 4);

    // Without one of the rows held for the escalation check, the real server refuses the Role.
    let other = "olm-escalation";
    env.apply_json(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}}))
        .await
        .expect("namespace");
    env.apply_json(testkit::olm::operator_deployment(other))
        .await
        .expect("Deployment");
    let lacking = env
        .service_account_client(
            other,
            "lacks-endpoints",
            rbac_without(other, "lacks-endpoints", "endpoints"),
        )
        .await
        .expect("client");
    let err = monitoring_objects::ensure(
        &lacking,
        &monitoring_objects::Config::new(other, OPERATOR_NAME),
    )
    .await
    .expect_err("escalation refused");
    let msg = format!("{err}");
    assert!(
        msg.contains(&format!(
            "applying Role {other}/{}",
            monitoring::PROMETHEUS_ROLE
        )),
        "{msg}"
    );
    assert!(
        msg.contains("is attempting to grant RBAC permissions not currently held"),
        "{msg}"
    );
    assert!(msg.contains("endpoints"), "{msg}");

    if !env.has_controller_manager() {
        eprintln!("SKIP garbage collection: no kube-controller-manager in KUBEBUILDER_ASSETS");
        return;
    }
    // OLM deletes the Deployment with the CSV; the real garbage collector takes the rest.
    let dynamic = |group: &str, kind: &str, plural: &str| {
        let ar = kube::api::ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, "v1", kind),
            plural,
        );
        Api::<DynamicObject>::namespaced_with(env.client.clone(), ns, &ar)
    };
    let objects = [
        (
            dynamic("rbac.authorization.k8s.io", "Role", "roles"),
            monitoring::PROMETHEUS_ROLE,
        ),
        (
            dynamic("rbac.authorization.k8s.io", "RoleBinding", "rolebindings"),
            monitoring::PROMETHEUS_ROLE,
        ),
        (
            dynamic("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
            "sandboxed-containers-operator-metrics",
        ),
        (
            dynamic("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
            OPERATOR_NAME,
        ),
    ];
    assert_eq!(monitoring_left(&objects).await, 4);
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(env.client.clone(), ns)
        .delete(OPERATOR_NAME, &DeleteParams::background())
        .await
        .expect("delete Deployment");
    wait_for(
        "the garbage collector deletes the monitoring objects",
        || async { (monitoring_left(&objects).await == 0).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_api_server_lets_olms_operator_condition_role_set_upgradeable_and_nothing_more() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let ns = "olm-condition";
    serve_crds(&env, vec![testkit::olm::operator_condition_crd()]).await;
    let operator = env.operator_client(ns).await.expect("operator client");
    for obj in testkit::olm::operator_condition_objects(ns) {
        env.apply_json(obj).await.expect("OLM's objects");
    }
    let target = OperatorConditionRef {
        namespace: ns.into(),
        name: testkit::olm::operator_condition_name(),
    };
    let now = Time(jiff::Timestamp::now());
    let rolling = Upgradeable {
        upgradeable: false,
        reason: upgradeable::REASON_ROLLOUT,
        message: "KataConfig example: MachineConfigPool kata-oc is rolling out kata on nodes (installing: worker-0)".into(),
    };
    let timeout = Duration::from_secs(10);
    assert!(
        upgradeable::write(&operator, &target, &rolling, &now, timeout)
            .await
            .expect("set False")
    );
    assert!(
        !upgradeable::write(&operator, &target, &rolling, &now, timeout)
            .await
            .expect("unchanged"),
        "no write when unchanged"
    );
    let settled = Upgradeable {
        upgradeable: true,
        reason: upgradeable::REASON_SETTLED,
        message: "no kata rollout is in progress".into(),
    };
    assert!(
        upgradeable::write(&operator, &target, &settled, &now, timeout)
            .await
            .expect("set True")
    );
    let stored = Api::<OperatorCondition>::namespaced(env.client.clone(), ns)
        .get(&target.name)
        .await
        .expect("get");
    assert_eq!(stored.spec.conditions.len(), 1);
    assert_eq!(stored.spec.conditions[0].status, "True");
    assert_eq!(
        stored.spec.deployments,
        [OPERATOR_NAME],
        "OLM's fields are kept"
    );

    // OLM's Role names one OperatorCondition: any other is refused.
    env.apply_json(json!({
        "apiVersion": "operators.coreos.com/v2", "kind": "OperatorCondition",
        "metadata": {"name": "someone-else.v1.0.0", "namespace": ns}, "spec": {},
    }))
    .await
    .expect("another OperatorCondition");
    let foreign = OperatorConditionRef {
        namespace: ns.into(),
        name: "someone-else.v1.0.0".into(),
    };
    let err = upgradeable::write(&operator, &foreign, &settled, &now, timeout)
        .await
        .expect_err("not OLM's grant");
    assert!(format!("{err}").contains("forbidden"), "{err}");
}
