//! The whole operator in-process (`run::run_with`: reconciler under leader election, webhook
//! server with its self-managed certificate, secure metrics, health) against the in-memory API
//! server and the MCO simulator, driven like a cluster administrator and a tenant would:
//! install, admit a pod over HTTPS, scrape metrics with a bearer token, uninstall, shut down.
//! The same run's request log proves the generated RBAC covers exactly what the operator calls,
//! and its captured logs prove no secret material is ever logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, DeleteParams, PostParams};
use sandboxed_containers_operator::api::{KataConfig, MachineConfig, MachineConfigPool};
use sandboxed_containers_operator::cli::{Cli, Command};
use sandboxed_containers_operator::names::KATA_ROLE_LABEL;
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
    eventually("pod webhooks unregistered with the KataConfig", || {
        fake.list_json(
            "admissionregistration.k8s.io/v1",
            "mutatingwebhookconfigurations",
            None,
        )
        .is_empty()
    })
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
