//! The operator as OLM installs it, against the in-memory API server: the monitoring objects it
//! keeps itself (only once prometheus-operator's CRDs are served, owned by its Deployment, gone
//! with it), and the `Upgradeable` condition it reports on its OperatorCondition while kata rolls
//! through nodes, written by the leader only.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use sandboxed_containers_operator::api::KataConfig;
use sandboxed_containers_operator::cli::{Cli, Command, RunArgs};
use sandboxed_containers_operator::monitoring_objects;
use sandboxed_containers_operator::observability::{Metrics, Readiness};
use sandboxed_containers_operator::packaging::monitoring;
use sandboxed_containers_operator::run;
use serde_json::{Value, json};
use testkit::{FakeApi, McoSimulator, SimOptions, eventually, free_port, seed_cluster};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "openshift-sandboxed-containers-operator";
const DEPLOYMENT: &str = "sandboxed-containers-operator";

fn run_args(extra: &[&str]) -> RunArgs {
    let health = free_port().to_string();
    let mut argv = vec![
        "sandboxed-containers-operator",
        "run",
        "--namespace",
        NAMESPACE,
        "--disable-webhooks",
        "--disable-metrics",
        "--health-bind",
        &health,
        "--discovery-interval-seconds",
        "1",
    ];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv).expect("run flags parse").command {
        Command::Run(args) => args,
        other => panic!("expected run, got {other:?}"),
    }
}

struct Operator {
    task: JoinHandle<anyhow::Result<()>>,
    shutdown: CancellationToken,
}

impl Operator {
    fn start(client: kube::Client, args: RunArgs) -> Operator {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run::run_with(
            client,
            args,
            Arc::new(Metrics::new()),
            Readiness::new(),
            shutdown.clone(),
        ));
        Operator { task, shutdown }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("stops")
            .expect("join");
        assert!(result.is_ok(), "run_with ended with {result:?}");
    }
}

/// `(kind, name)` of the monitoring objects stored in the operator namespace.
fn monitoring_in(fake: &FakeApi) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (api_version, plural) in [
        ("rbac.authorization.k8s.io/v1", "roles"),
        ("rbac.authorization.k8s.io/v1", "rolebindings"),
        ("monitoring.coreos.com/v1", "servicemonitors"),
        ("monitoring.coreos.com/v1", "prometheusrules"),
    ] {
        for o in fake.list_json(api_version, plural, Some(NAMESPACE)) {
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            // The operator's own Role/RoleBinding are not monitoring objects.
            if !(plural.starts_with("role") && name == DEPLOYMENT) {
                out.push((o["kind"].as_str().unwrap_or_default().to_string(), name));
            }
        }
    }
    out
}

fn owner_uids(o: &Value) -> Vec<String> {
    o["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str().map(String::from))
        .collect()
}

async fn create_monitoring_crds(admin: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for crd in testkit::olm::monitoring_crds() {
        let crd: CustomResourceDefinition = serde_json::from_value(crd).expect("crd");
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_objects_appear_once_their_crds_are_served_and_go_with_the_deployment() {
    let fake = FakeApi::new();
    seed_cluster(&fake, 3, 2, false);
    let deployment = fake.insert_json(testkit::olm::operator_deployment(NAMESPACE));
    let deployment_uid = deployment["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let operator = Operator::start(
        fake.client(),
        run_args(&["--no-leader-elect", "--owner-deployment", DEPLOYMENT]),
    );

    // A cluster without prometheus-operator: several discovery intervals pass and nothing of
    // monitoring is written.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!operator.task.is_finished(), "the operator runs");
    assert!(
        monitoring_in(&fake).is_empty(),
        "{:?}",
        monitoring_in(&fake)
    );
    assert!(
        fake.requests_by("operator")
            .iter()
            .all(|r| r.group != "monitoring.coreos.com" && r.resource != "deployments"),
        "no monitoring call before its API is served"
    );

    // prometheus-operator arrives later: within a discovery interval the objects appear, each
    // owned by the Deployment.
    create_monitoring_crds(&fake.client_as("admin")).await;
    eventually("the four monitoring objects applied", || {
        monitoring_in(&fake).len() == 4
    })
    .await;
    let mut kinds: Vec<String> = monitoring_in(&fake).into_iter().map(|(k, _)| k).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["PrometheusRule", "Role", "RoleBinding", "ServiceMonitor"]
    );
    for (api_version, plural, name) in [
        (
            "monitoring.coreos.com/v1",
            "servicemonitors",
            "sandboxed-containers-operator-metrics",
        ),
        (
            "monitoring.coreos.com/v1",
            "prometheusrules",
            "sandboxed-containers-operator",
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "roles",
            monitoring::PROMETHEUS_ROLE,
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "rolebindings",
            monitoring::PROMETHEUS_ROLE,
        ),
    ] {
        let o = fake
            .get_json(api_version, plural, Some(NAMESPACE), name)
            .unwrap_or_else(|| panic!("{plural} {name}"));
        assert_eq!(
            owner_uids(&o),
            std::slice::from_ref(&deployment_uid),
            "{plural} {name}"
        );
    }
    let role = fake
        .get_json(
            "rbac.authorization.k8s.io/v1",
            "roles",
            Some(NAMESPACE),
            monitoring::PROMETHEUS_ROLE,
        )
        .expect("role");
    assert_eq!(role["rules"], monitoring::prometheus_role(None)["rules"]);
    assert!(
        fake.forbidden_requests().is_empty(),
        "{:#?}",
        fake.forbidden_requests()
    );
    operator.stop().await;

    // OLM deletes the Deployment with the CSV; the garbage collector takes the rest.
    assert!(fake.delete("apps/v1", "deployments", Some(NAMESPACE), DEPLOYMENT));
    assert!(
        monitoring_in(&fake).is_empty(),
        "{:?}",
        monitoring_in(&fake)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_objects_applied_from_deploy_manifests_are_adopted() {
    let fake = FakeApi::new();
    seed_cluster(&fake, 3, 2, false);
    for crd in testkit::olm::monitoring_crds() {
        fake.insert_json(crd);
    }
    let deployment = fake.insert_json(testkit::olm::operator_deployment(NAMESPACE));
    // `kubectl apply -f deploy/monitoring.yaml` first: no ownerReferences.
    for obj in monitoring::monitoring_objects(Some(NAMESPACE)) {
        fake.insert_json(obj);
    }
    let client = fake.client();
    let applied = monitoring_objects::ensure(
        &client,
        &monitoring_objects::Config::new(NAMESPACE, DEPLOYMENT),
    )
    .await
    .expect("adopted");
    assert_eq!(applied, 4);
    let uid = deployment["metadata"]["uid"].as_str().expect("uid");
    let monitor = fake
        .get_json(
            "monitoring.coreos.com/v1",
            "servicemonitors",
            Some(NAMESPACE),
            "sandboxed-containers-operator-metrics",
        )
        .expect("servicemonitor");
    assert_eq!(owner_uids(&monitor), [uid.to_string()]);
    // Changing an existing object's ownerReferences is authorized as `delete` on it
    // (OwnerReferencesPermissionEnforcement); the table grants it.
    let deletes: Vec<String> = fake
        .authorizations_by("operator")
        .into_iter()
        .filter(|a| a.allowed && a.attributes.verb == "delete")
        .map(|a| a.attributes.resource)
        .collect();
    for plural in [
        "roles",
        "rolebindings",
        "servicemonitors",
        "prometheusrules",
    ] {
        assert!(deletes.iter().any(|r| r == plural), "{plural}: {deletes:?}");
    }
}

#[tokio::test]
async fn a_missing_owner_deployment_is_named_with_the_flag_to_fix() {
    let fake = FakeApi::new();
    for crd in testkit::olm::monitoring_crds() {
        fake.insert_json(crd);
    }
    let err = monitoring_objects::ensure(
        &fake.client(),
        &monitoring_objects::Config::new(NAMESPACE, "renamed-by-kustomize"),
    )
    .await
    .expect_err("no such Deployment");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("reading Deployment {NAMESPACE}/renamed-by-kustomize, the owner of the monitoring objects (--owner-deployment / OPERATOR_DEPLOYMENT_NAME must name the operator's own Deployment)")),
        "{msg}"
    );
    assert!(monitoring_in(&fake).is_empty());
}

/// `(status, reason, message)` of `Upgradeable` in the OperatorCondition's `spec.conditions`.
fn upgradeable(fake: &FakeApi) -> Option<(String, String, String)> {
    let oc = fake.get_json(
        "operators.coreos.com/v2",
        "operatorconditions",
        Some(NAMESPACE),
        &testkit::olm::operator_condition_name(),
    )?;
    let c = oc["spec"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Upgradeable")?
        .clone();
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((s("status"), s("reason"), s("message")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgradeable_is_false_while_kata_rolls_through_nodes_and_true_once_settled() {
    let fake = FakeApi::new();
    seed_cluster(&fake, 3, 3, false);
    fake.insert_json(testkit::olm::operator_condition_crd());
    for obj in testkit::olm::installed_objects(NAMESPACE) {
        fake.insert_json(obj);
    }
    let _sim = McoSimulator::spawn(
        fake.client_as("mco-sim"),
        SimOptions {
            create_default_pools: true,
            // Slow enough that the rollout is seen, node by node.
            step: Duration::from_millis(300),
        },
    )
    .await
    .expect("mco simulator");
    // Two replicas under leader election: only the leader's reconciler writes the condition.
    let condition = testkit::olm::operator_condition_name();
    let replicas: Vec<Operator> = ["replica-a", "replica-b"]
        .iter()
        .map(|name| {
            Operator::start(
                fake.operator_client(name),
                run_args(&["--identity", name, "--operator-condition", &condition]),
            )
        })
        .collect();

    let admin = fake.client_as("admin");
    let kcs: Api<KataConfig> = Api::all(admin);
    let kc: KataConfig = serde_json::from_value(json!({
        "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
        "metadata": {"name": "example-kataconfig"}, "spec": {},
    }))
    .expect("kataconfig");
    kcs.create(&PostParams::default(), &kc)
        .await
        .expect("create");

    eventually("Upgradeable=False while the install rolls", || {
        upgradeable(&fake).is_some_and(|(s, _, m)| s == "False" && m.contains("worker-"))
    })
    .await;
    let (_, reason, message) = upgradeable(&fake).expect("condition");
    assert_eq!(reason, "KataRolloutInProgress");
    assert!(
        message.contains("KataConfig example-kataconfig"),
        "{message}"
    );
    assert!(message.contains("MachineConfigPool kata-oc"), "{message}");
    eventually("Upgradeable=True once every node runs kata", || {
        upgradeable(&fake).is_some_and(|(s, r, _)| s == "True" && r == "KataSettled")
    })
    .await;
    assert!(
        fake.get::<KataConfig>("example-kataconfig")
            .and_then(|k| k.status)
            .is_some_and(|s| s.kata_nodes.ready_node_count == 3),
        "settled means installed"
    );

    // Uninstall rolls the nodes back: not upgradeable again until it is done.
    kcs.delete("example-kataconfig", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("Upgradeable=False while the uninstall rolls", || {
        upgradeable(&fake).is_some_and(|(s, r, _)| s == "False" && r == "KataUninstallInProgress")
    })
    .await;
    eventually("KataConfig gone", || {
        fake.get::<KataConfig>("example-kataconfig").is_none()
    })
    .await;
    eventually("Upgradeable=True after the uninstall", || {
        upgradeable(&fake).is_some_and(|(s, _, _)| s == "True")
    })
    .await;

    let writers: std::collections::BTreeSet<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.resource == "operatorconditions" && r.is_write)
        .map(|r| r.client)
        .collect();
    assert_eq!(writers.len(), 1, "only the leader writes: {writers:?}");
    // Writes only on change: a handful per transition, not one per reconcile.
    let writes = fake
        .requests()
        .iter()
        .filter(|r| r.resource == "operatorconditions" && r.is_write)
        .count();
    let reconciles = fake
        .requests()
        .iter()
        .filter(|r| r.resource == "kataconfigs" && r.subresource.as_deref() == Some("status"))
        .count();
    assert!(
        writes <= reconciles,
        "{writes} condition writes for {reconciles} status writes"
    );
    assert!(
        fake.forbidden_requests().is_empty(),
        "{:#?}",
        fake.forbidden_requests()
    );
    for r in replicas {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_operator_condition_fails_the_reconcile_with_its_name_and_is_retried() {
    let logs = testkit::logs::capture("sandboxed_containers_operator=info");
    let fake = FakeApi::new();
    seed_cluster(&fake, 3, 2, false);
    fake.insert_json(testkit::olm::operator_condition_crd());
    let operator = Operator::start(
        fake.client(),
        run_args(&[
            "--no-leader-elect",
            "--operator-condition",
            "deleted-by-hand.v0.0.1",
        ]),
    );
    let kc: KataConfig = serde_json::from_value(json!({
        "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
        "metadata": {"name": "example-kataconfig"}, "spec": {},
    }))
    .expect("kataconfig");
    Api::<KataConfig>::all(fake.client_as("admin"))
        .create(&PostParams::default(), &kc)
        .await
        .expect("create");
    let expected = format!(
        "setting Upgradeable=false on OperatorCondition {NAMESPACE}/deleted-by-hand.v0.0.1 (OLM's OPERATOR_CONDITION_NAME): "
    );
    eventually(
        "the failed write is reported, naming the OperatorCondition",
        || logs.text().contains(&expected),
    )
    .await;
    eventually("and retried", || {
        fake.requests_by("operator")
            .iter()
            .filter(|r| r.resource == "operatorconditions" && r.verb == "get")
            .count()
            >= 2
    })
    .await;
    operator.stop().await;
}
