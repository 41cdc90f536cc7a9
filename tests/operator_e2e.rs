//! The whole operator in-process (`run::run_with`: reconciler under leader election, webhook
//! server with its self-managed certificate, secure metrics, health) against the in-memory API
//! server and the MCO simulator, driven like a cluster administrator and a tenant would:
//! install, admit a pod over HTTPS, scrape metrics with a bearer token, uninstall, shut down.
//! The same run's request log proves the generated RBAC covers exactly what the operator calls,
//! and its captured logs prove no secret material is ever logged. The operator runs as OLM
//! installs it (its Deployment, OperatorCondition and OLM's Role on it, the bundle's Services, a
//! cluster with prometheus-operator), and at the end its CSV is deleted: only what the design
//! keeps on purpose (docs/packaging.md) may remain.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, DeleteParams, PostParams};
use sandboxed_containers_operator::api::{KataConfig, MachineConfig, MachineConfigPool};
use sandboxed_containers_operator::cli::{Cli, Command};
use sandboxed_containers_operator::names::{KATA_ROLE_LABEL, NAMESPACE_POLICY};
use sandboxed_containers_operator::observability::Metrics;
use sandboxed_containers_operator::observability::Readiness;
use sandboxed_containers_operator::packaging::rbac::{self, ApiCall};
use sandboxed_containers_operator::run;
use serde_json::{Value, json};
use testkit::{
    FakeApi, McoSimulator, ReviewUser, SimOptions, eventually, free_port, https_client,
    seed_cluster,
};
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "openshift-sandboxed-containers-operator";
const ADMISSION: &str = "admissionregistration.k8s.io/v1";
const SCRAPE_TOKEN: &str = "prometheus-token-3f1c9a";
const SCRAPER: &str = "system:serviceaccount:openshift-monitoring:prometheus-k8s";

fn run_args(
    webhook: SocketAddr,
    metrics: SocketAddr,
    health: SocketAddr,
) -> sandboxed_containers_operator::cli::RunArgs {
    let cli = Cli::try_parse_from([
        "sandboxed-containers-operator",
        "run",
        "--namespace",
        NAMESPACE,
        "--webhook-bind",
        &webhook.to_string(),
        "--webhook-url",
        &format!("https://127.0.0.1:{}", webhook.port()),
        "--metrics-bind",
        &metrics.to_string(),
        "--health-bind",
        &health.to_string(),
        "--discovery-interval-seconds",
        "1",
        "--owner-deployment",
        "sandboxed-containers-operator",
        "--operator-condition",
        &testkit::olm::operator_condition_name(),
    ])
    .expect("run flags parse");
    match cli.command {
        Command::Run(args) => args,
        other => panic!("expected run, got {other:?}"),
    }
}

fn pod_review(namespace: &str) -> Value {
    // `shared/` sits beside the checkout (CI) or beside a parent folder (worktrees).
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("shared/fixtures/admission/pod-create-plain.json"))
        .find(|p| p.exists())
        .expect("shared/fixtures/admission/pod-create-plain.json beside the checkout");
    let text = std::fs::read_to_string(fixture).expect("fixture");
    let mut review: Value = serde_json::from_str(&text).expect("json");
    review["request"]["namespace"] = json!(namespace);
    review["request"]["object"]["metadata"]["namespace"] = json!(namespace);
    review
}

/// `apiVersion kind namespace/name` of a stored object.
fn object_key(o: &Value) -> String {
    format!(
        "{} {} {}/{}",
        o["apiVersion"].as_str().unwrap_or_default(),
        o["kind"].as_str().unwrap_or_default(),
        o["metadata"]["namespace"].as_str().unwrap_or_default(),
        o["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// The MCO simulator's own pools and rendered MachineConfigs.
fn made_by_the_mco(key: &str) -> bool {
    key.contains("MachineConfigPool /master")
        || key.contains("MachineConfigPool /worker")
        || key.contains("MachineConfig /rendered-")
}

/// What docs/packaging.md lists as kept after the CSV is deleted.
fn kept_on_purpose(key: &str) -> bool {
    let kept = [
        // The KataConfig validating configuration goes with the KataConfig CRD (kept by OLM v0).
        "admissionregistration.k8s.io/v1 ValidatingWebhookConfiguration /sandboxed-containers-operator-kataconfig",
        // The webhook CA, so a reinstall serves the certificate the caBundle still names.
        &format!("v1 Secret {NAMESPACE}/sandboxed-containers-operator-webhook-cert"),
        // The released leader Lease.
        &format!("coordination.k8s.io/v1 Lease {NAMESPACE}/sandboxed-containers-operator-leader"),
    ];
    // Events expire on their own (the API server's event TTL, 1 h by default).
    kept.contains(&key) || key.starts_with("events.k8s.io/v1 Event ")
}

/// `spec.conditions[Upgradeable].status` of the OperatorCondition.
fn upgradeable(fake: &FakeApi) -> Option<String> {
    let oc = fake.get_json(
        "operators.coreos.com/v2",
        "operatorconditions",
        Some(NAMESPACE),
        &testkit::olm::operator_condition_name(),
    )?;
    oc["spec"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Upgradeable")
        .and_then(|c| c["status"].as_str().map(String::from))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_installs_admits_reports_and_uninstalls_with_exact_rbac_and_clean_logs() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Global: the operator's tasks run on every worker thread.
    let logs =
        testkit::logs::capture("debug,hyper=info,h2=info,rustls=info,tower=info,reqwest=info");

    let fake = FakeApi::new();
    seed_cluster(&fake, 3, 3, false);
    fake.set_token_reviewer(|token| {
        (token == SCRAPE_TOKEN).then(|| ReviewUser {
            username: SCRAPER.into(),
            uid: "uid-prom".into(),
            groups: vec!["system:serviceaccounts".into()],
        })
    });
    fake.set_access_reviewer(|req| {
        req.user == SCRAPER && req.path.as_deref() == Some("/metrics") && req.verb == "get"
    });
    let _sim = McoSimulator::spawn(
        fake.client_as("mco-sim"),
        SimOptions {
            create_default_pools: true,
            step: Duration::from_millis(20),
        },
    )
    .await
    .expect("mco simulator");
    let admin = fake.client_as("admin");
    // Installed by OLM on a cluster with prometheus-operator.
    fake.insert_json(testkit::olm::operator_condition_crd());
    for crd in testkit::olm::monitoring_crds() {
        fake.insert_json(crd);
    }
    for obj in testkit::olm::installed_objects(NAMESPACE) {
        fake.insert_json(obj);
    }
    let tenant: Namespace = serde_json::from_value(json!({
        "metadata": {"name": "tenant", "labels": {"kataconfiguration.openshift.io/policy": "default"}}
    }))
    .expect("namespace");
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &tenant)
        .await
        .expect("namespace");

    let (webhook_addr, metrics_addr, health_addr) = (free_port(), free_port(), free_port());
    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::new();
    let shutdown = CancellationToken::new();
    let before: BTreeSet<String> = fake.all_objects().iter().map(object_key).collect();
    let operator = tokio::spawn(run::run_with(
        fake.client(),
        run_args(webhook_addr, metrics_addr, health_addr),
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));

    // Install.
    let kc: KataConfig = serde_json::from_value(json!({
        "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
        "metadata": {"name": "example-kataconfig"},
        "spec": {"logLevel": "debug"},
    }))
    .expect("kataconfig");
    let kcs: Api<KataConfig> = Api::all(admin.clone());
    kcs.create(&PostParams::default(), &kc)
        .await
        .expect("create kataconfig");
    eventually("kata installed on the 3 workers", || {
        fake.get::<KataConfig>("example-kataconfig")
            .and_then(|k| k.status)
            .is_some_and(|s| s.kata_nodes.ready_node_count == 3 && s.runtime_classes == ["kata"])
    })
    .await;
    for _ in 0..3000 {
        if readiness.check().is_ok() || operator.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !operator.is_finished(),
        "operator stopped early:\n{}",
        logs.text()
    );
    assert_eq!(
        readiness.check(),
        Ok(()),
        "components still waiting; logs:\n{}",
        logs.text()
            .lines()
            .filter(|l| !l.contains("DEBUG"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // OLM may upgrade the operator now that kata is settled; the monitoring objects exist.
    eventually("Upgradeable=True on the OperatorCondition", || {
        upgradeable(&fake).as_deref() == Some("True")
    })
    .await;
    eventually("ServiceMonitor and PrometheusRule applied", || {
        !fake
            .list_json(
                "monitoring.coreos.com/v1",
                "servicemonitors",
                Some(NAMESPACE),
            )
            .is_empty()
            && !fake
                .list_json(
                    "monitoring.coreos.com/v1",
                    "prometheusrules",
                    Some(NAMESPACE),
                )
                .is_empty()
    })
    .await;

    // Health over plain HTTP.
    let plain = reqwest::Client::new();
    let ready = plain
        .get(format!("http://{health_addr}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);

    // The webhook serves the certificate of its self-managed CA, whose bundle is registered.
    let secret = fake
        .get_ns::<Secret>(NAMESPACE, "sandboxed-containers-operator-webhook-cert")
        .expect("webhook certificate Secret");
    let ca = secret
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .expect("ca.crt")
        .0
        .clone();
    eventually("pod webhooks registered with the CA bundle", || {
        let mutating = fake.list_json(
            "admissionregistration.k8s.io/v1",
            "mutatingwebhookconfigurations",
            None,
        );
        mutating.iter().any(|c| {
            c["webhooks"].as_array().into_iter().flatten().all(|w| {
                w["clientConfig"]["caBundle"]
                    .as_str()
                    .is_some_and(|b| !b.is_empty())
            }) && !c["webhooks"].as_array().map(Vec::is_empty).unwrap_or(true)
        })
    })
    .await;
    let https = https_client(&ca);

    // The namespace gate inside the API server: the policy bound to the KataConfig, and the pod
    // webhooks failing open.
    eventually("the ValidatingAdmissionPolicy in force", || {
        let bound = fake
            .list_json(ADMISSION, "validatingadmissionpolicybindings", None)
            .iter()
            .any(|b| {
                b["metadata"]["name"] == NAMESPACE_POLICY
                    && b["spec"]["paramRef"]["name"] == "example-kataconfig"
            });
        let open = fake
            .list_json(ADMISSION, "mutatingwebhookconfigurations", None)
            .iter()
            .any(|c| c["webhooks"][0]["failurePolicy"] == "Ignore");
        bound
            && open
            && !fake
                .list_json(ADMISSION, "validatingadmissionpolicies", None)
                .is_empty()
    })
    .await;
    // A deleted binding is restored by the registration's watch, not at the 10-minute resync.
    Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
        .delete(NAMESPACE_POLICY, &DeleteParams::default())
        .await
        .expect("delete the binding");
    eventually("the deleted binding restored", || {
        !fake
            .list_json(ADMISSION, "validatingadmissionpolicybindings", None)
            .is_empty()
    })
    .await;

    // A tenant's plain pod in a `default`-policy namespace gets kata injected.
    let review = pod_review("tenant");
    let mut patched = None;
    for _ in 0..200 {
        let resp: Value = https
            .post(format!(
                "https://127.0.0.1:{}/mutate-pod",
                webhook_addr.port()
            ))
            .json(&review)
            .send()
            .await
            .expect("mutate-pod")
            .json()
            .await
            .expect("review json");
        if resp["response"]["patch"].is_string() {
            patched = Some(resp);
            break;
        }
        // Caches catch up with the namespace and RuntimeClass just created.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let resp = patched.expect("kata injected into the tenant's pod");
    assert_eq!(resp["response"]["allowed"], true);
    assert_eq!(resp["response"]["uid"], review["request"]["uid"]);

    // Metrics: 401 without a token, then the exact series with one.
    let unauth = https
        .get(format!("https://127.0.0.1:{}/metrics", metrics_addr.port()))
        .send()
        .await
        .expect("metrics");
    assert_eq!(unauth.status(), 401);
    let scrape = https
        .get(format!("https://127.0.0.1:{}/metrics", metrics_addr.port()))
        .bearer_auth(SCRAPE_TOKEN)
        .send()
        .await
        .expect("metrics");
    assert_eq!(scrape.status(), 200);
    let text = scrape.text().await.expect("body");
    for line in [
        "kata_config_installation_success 1",
        "kata_operator_nodes{state=\"installed\"} 3",
        "kata_operator_nodes{state=\"installing\"} 0",
        "kata_operator_leader 1",
        "kata_operator_admission_requests_total{operation=\"CREATE\",result=\"mutated\",webhook=\"mutate-pod\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }

    // Uninstall: everything the operator created goes away.
    kcs.delete("example-kataconfig", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("KataConfig gone after a clean uninstall", || {
        fake.get::<KataConfig>("example-kataconfig").is_none()
    })
    .await;
    assert!(fake.get::<RuntimeClass>("kata").is_none());
    assert!(fake.get::<MachineConfigPool>("kata-oc").is_none());
    assert!(
        fake.list::<MachineConfig>().iter().all(|m| !m
            .metadata
            .name
            .as_deref()
            .unwrap_or("")
            .starts_with("50-")),
        "kata MachineConfigs removed"
    );
    assert!(fake.list::<Node>().iter().all(|n| {
        !n.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(KATA_ROLE_LABEL))
    }));
    eventually(
        "pod webhooks and the policy unregistered with the KataConfig",
        || {
            [
                "mutatingwebhookconfigurations",
                "validatingadmissionpolicies",
                "validatingadmissionpolicybindings",
            ]
            .iter()
            .all(|plural| fake.list_json(ADMISSION, plural, None).is_empty())
        },
    )
    .await;

    // Graceful shutdown: every task stops, the Lease is released.
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(30), operator)
        .await
        .expect("stops")
        .expect("join");
    assert!(result.is_ok(), "run_with ended with {result:?}");
    let lease = fake
        .get_ns::<Lease>(NAMESPACE, "sandboxed-containers-operator-leader")
        .expect("lease");
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(
        holder.is_empty(),
        "Lease released on shutdown, holder {holder:?}"
    );

    // RBAC: the run ran as the operator's ServiceAccount under the generated RBAC, nothing was
    // refused, and every authorization check the API server made (the request's verb, `create`
    // for an apply that created, `update` on finalizers for a blocking ownerReference) is
    // granted by the table, and every grant was checked.
    let forbidden = fake.forbidden_requests();
    assert!(
        forbidden.is_empty(),
        "requests refused with 403: {forbidden:#?}"
    );
    assert!(
        fake.requests_by("operator")
            .iter()
            .all(|r| r.user
                == "system:serviceaccount:openshift-sandboxed-containers-operator:sandboxed-containers-operator"),
        "the operator ran as its ServiceAccount"
    );
    let calls: Vec<ApiCall> = fake
        .authorizations_by("operator")
        .into_iter()
        .filter(|a| a.allowed && a.attributes.path.is_none())
        .map(|a| ApiCall {
            group: a.attributes.group.clone(),
            resource: a.attributes.combined_resource(),
            verb: a.attributes.verb.clone(),
            in_operator_namespace: a.attributes.namespace == NAMESPACE,
        })
        .collect();
    let coverage = rbac::coverage(&calls);
    assert!(
        coverage.missing.is_empty(),
        "calls the generated RBAC does not grant: {:#?}",
        coverage.missing
    );
    // Grants this run cannot exercise, each needed on a path other tests cover.
    let justified = [
        // kube's event Recorder patches an Event when the same one repeats (series).
        "events.k8s.io/events patch",
        // Certificate rotation replaces the Secret (certs::secret tests, against a mock API).
        "core/secrets update",
        // The node-installer backend's objects, unused where the MCO installs kata;
        // tests/node_installer.rs runs the operator without the MCO and requires these grants.
        "apps/daemonsets create",
        "apps/daemonsets patch",
        "apps/daemonsets delete",
        "core/configmaps create",
        "core/configmaps patch",
        "core/configmaps delete",
        // Held for the RBAC escalation check on the Prometheus Role, never called
        // (envtest_operator::real_api_server_lets_the_operator_create_the_prometheus_role).
        "core/services list",
        "core/services watch",
        "core/endpoints list",
        "core/endpoints watch",
        "discovery.k8s.io/endpointslices list",
        "discovery.k8s.io/endpointslices watch",
        // Adopting monitoring objects applied from deploy/monitoring.yaml changes their
        // ownerReferences (OwnerReferencesPermissionEnforcement; tests/olm.rs adopts them).
        "monitoring.coreos.com/servicemonitors delete",
        "monitoring.coreos.com/prometheusrules delete",
        "rbac.authorization.k8s.io/roles delete",
        "rbac.authorization.k8s.io/rolebindings delete",
    ];
    // The watches here stream their first state (`sendInitialEvents`), so `list` is never
    // checked; it is the paged-list fallback of servers without streaming lists, and of a
    // watch the operator does run (tests/watch_lists.rs runs that fallback under this RBAC).
    let watched: Vec<String> = calls
        .iter()
        .filter(|c| c.verb == "watch")
        .map(|c| {
            format!(
                "{}/{} list",
                if c.group.is_empty() { "core" } else { &c.group },
                c.resource
            )
        })
        .collect();
    let unexplained: Vec<_> = coverage
        .unused
        .iter()
        .filter(|g| !justified.contains(&g.as_str()) && !watched.contains(g))
        .collect();
    assert!(
        unexplained.is_empty(),
        "granted but never used (remove from src/packaging/rbac.rs): {unexplained:#?}"
    );

    // The CSV is deleted: OLM deletes what it created, the garbage collector what they owned.
    for (api_version, plural, ns, name) in testkit::olm::deleted_with_the_csv(NAMESPACE) {
        assert!(
            fake.delete(api_version, plural, ns.as_deref(), &name),
            "{plural} {name} existed"
        );
    }
    let left: Vec<String> = fake
        .all_objects()
        .iter()
        .map(object_key)
        .filter(|k| !before.contains(k) && !made_by_the_mco(k) && !kept_on_purpose(k))
        .collect();
    assert!(
        left.is_empty(),
        "left behind after the CSV was deleted: {left:#?}"
    );

    // No secret material in the logs of the whole run.
    let logs = logs.text();
    assert!(logs.contains("webhook"), "logs were captured");
    let key = secret
        .data
        .as_ref()
        .and_then(|d| d.get("tls.key"))
        .expect("tls.key")
        .0
        .clone();
    let key = String::from_utf8(key).expect("pem");
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for (what, secret_text) in [
        ("bearer token", SCRAPE_TOKEN.to_string()),
        ("private key", key_body.chars().take(40).collect()),
    ] {
        assert!(!logs.contains(&secret_text), "{what} appears in the logs");
    }
    assert!(
        !logs.contains("PRIVATE KEY"),
        "a PEM private key appears in the logs"
    );
    assert!(
        !logs.contains("is forbidden"),
        "a 403 reached the operator's logs"
    );
}

/// An API server without ValidatingAdmissionPolicy v1: the webhooks stay the gate and fail
/// closed exactly as before, and the operator says so once in its log and in a KataConfig
/// condition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admission_policy_v1_the_webhooks_fail_closed_and_the_operator_says_so() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let logs = testkit::logs::capture("sandboxed_containers_operator=info");
    let fake = FakeApi::new();
    fake.unserve(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
    );
    fake.unserve(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
    );
    seed_cluster(&fake, 3, 3, false);
    let admin = fake.client_as("admin");
    let (webhook_addr, metrics_addr, health_addr) = (free_port(), free_port(), free_port());
    let shutdown = CancellationToken::new();
    let operator = tokio::spawn(run::run_with(
        fake.client(),
        run_args(webhook_addr, metrics_addr, health_addr),
        Arc::new(Metrics::new()),
        Readiness::new(),
        shutdown.clone(),
    ));
    let kc: KataConfig = serde_json::from_value(json!({
        "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
        "metadata": {"name": "example-kataconfig"}, "spec": {"namespacePolicy": {"default": "require"}},
    }))
    .expect("kataconfig");
    Api::<KataConfig>::all(admin)
        .create(&PostParams::default(), &kc)
        .await
        .expect("create kataconfig");
    eventually(
        "the condition says the policy is not in the API server",
        || {
            fake.get::<KataConfig>("example-kataconfig")
                .and_then(|k| k.status)
                .is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "NamespacePolicyInAPIServer"
                            && c.status == "False"
                            && c.reason == "ValidatingAdmissionPolicyNotServed"
                    })
                })
        },
    )
    .await;
    eventually("the pod webhooks fail closed", || {
        let fail = |plural| {
            fake.list_json(ADMISSION, plural, None).iter().any(|c| {
                c["metadata"]["name"] == "sandboxed-containers-operator-pod"
                    && c["webhooks"]
                        .as_array()
                        .is_some_and(|w| w.iter().all(|w| w["failurePolicy"] == "Fail"))
            })
        };
        fail("mutatingwebhookconfigurations") && fail("validatingwebhookconfigurations")
    })
    .await;
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(30), operator)
        .await
        .expect("stops")
        .expect("join");
    assert!(result.is_ok(), "run_with ended with {result:?}");
    let text = logs.text();
    let said = text
        .lines()
        .filter(|l| {
            l.contains("does not serve admissionregistration.k8s.io/v1 validatingadmissionpolicies")
        })
        .count();
    assert_eq!(said, 1, "logged once:\n{text}");
    assert!(
        fake.requests_by("operator")
            .iter()
            .all(|r| !r.resource.starts_with("validatingadmissionpolic")),
        "nothing asked of an API the server does not serve"
    );
}
