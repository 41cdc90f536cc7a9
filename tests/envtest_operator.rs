//! The whole operator (`run::run_with`: reconciler under leader election, webhooks with their
//! self-managed certificate, secure metrics, health) against a real kube-apiserver, run the way
//! OLM runs it: as its ServiceAccount, with a real token, under the generated RBAC, with the
//! `OwnerReferencesPermissionEnforcement` admission plugin on. The API server calls the
//! operator's webhooks over loopback (`--webhook-url`), so pod defaulting is the real admission
//! chain's. Skips (and says so) without `KUBEBUILDER_ASSETS`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use sandboxed_containers_operator::api::{KataConfig, MachineConfig, MachineConfigPool};
use sandboxed_containers_operator::cli::{Cli, Command, RunArgs};
use sandboxed_containers_operator::names::{DEFAULT_OPERATOR_NAMESPACE, KATA_ROLE_LABEL};
use sandboxed_containers_operator::observability::Metrics;
use sandboxed_containers_operator::observability::Readiness;
use sandboxed_containers_operator::run;
use serde_json::{Value, json};
use testkit::{McoSimulator, SimOptions, envtest, free_port, machine_config_json, node_json};
use tokio_util::sync::CancellationToken;

const HANG_GUARD: Duration = Duration::from_secs(120);

async fn wait_for<T, Fut>(what: &str, f: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    testkit::wait_until(what, HANG_GUARD, f).await
}

fn run_args(webhook: SocketAddr, metrics: SocketAddr, health: SocketAddr) -> RunArgs {
    run_args_with(webhook, metrics, health, &[])
}

fn run_args_with(
    webhook: SocketAddr,
    metrics: SocketAddr,
    health: SocketAddr,
    extra: &[&str],
) -> RunArgs {
    let webhook_url = format!("https://127.0.0.1:{}", webhook.port());
    let (webhook, metrics, health) = (webhook.to_string(), metrics.to_string(), health.to_string());
    let mut argv = vec![
        "sandboxed-containers-operator",
        "run",
        "--namespace",
        DEFAULT_OPERATOR_NAMESPACE,
        "--identity",
        "envtest-operator",
        "--webhook-bind",
        &webhook,
        "--webhook-url",
        &webhook_url,
        "--metrics-bind",
        &metrics,
        "--health-bind",
        &health,
    ];
    argv.extend_from_slice(extra);
    let cli = Cli::try_parse_from(argv).expect("run flags parse");
    match cli.command {
        Command::Run(args) => args,
        other => panic!("expected run, got {other:?}"),
    }
}

async fn apply<K>(client: &Client, obj: Value) -> K
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let name = obj["metadata"]["name"].as_str().expect("name").to_string();
    Api::<K>::all(client.clone())
        .patch(
            &name,
            &PatchParams::apply("envtest").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"))
}

/// Install, pod defaulting through the real admission chain, secure metrics, uninstall and a
/// clean stop, all as the operator's ServiceAccount; nothing refused along the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_operator_runs_under_its_generated_rbac_on_a_real_api_server() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let logs =
        testkit::logs::capture("sandboxed_containers_operator=debug,kube_runtime=debug,warn");
    let admin = env.client.clone();
    let operator = env
        .operator_client(DEFAULT_OPERATOR_NAMESPACE)
        .await
        .expect("operator ServiceAccount client");
    for i in 0..3 {
        apply::<Node>(
            &admin,
            node_json(&format!("worker-{i}"), &["worker"], json!({})),
        )
        .await;
    }
    apply::<MachineConfig>(&admin, machine_config_json("00-worker", "worker")).await;
    let sim = McoSimulator::spawn(
        admin.clone(),
        SimOptions {
            create_default_pools: true,
            step: Duration::from_millis(50),
        },
    )
    .await
    .expect("mco simulator");

    let (webhook, metrics_addr, health) = (free_port(), free_port(), free_port());
    let shutdown = CancellationToken::new();
    let readiness = Readiness::new();
    let task = tokio::spawn(run::run_with(
        operator,
        run_args(webhook, metrics_addr, health),
        Arc::new(Metrics::new()),
        readiness.clone(),
        shutdown.clone(),
    ));

    // Install.
    let kcs: Api<KataConfig> = Api::all(admin.clone());
    wait_for("the KataConfig webhook admits a KataConfig", || {
        let kcs = kcs.clone();
        async move {
            let kc: KataConfig = serde_json::from_value(json!({
                "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
                "metadata": {"name": "example"}, "spec": {"logLevel": "debug"},
            }))
            .expect("kc");
            match kcs.create(&PostParams::default(), &kc).await {
                Ok(_) => Some(()),
                // The webhook is registered before it serves: retry until it answers.
                Err(kube::Error::Api(s)) if s.code == 500 || s.code == 409 => {
                    (s.code == 409).then_some(())
                }
                Err(e) => panic!("create KataConfig: {e}"),
            }
        }
    })
    .await;
    wait_for("kata installed on the 3 workers", || {
        let kcs = kcs.clone();
        async move {
            let s = kcs.get("example").await.ok()?.status?;
            (s.kata_nodes.ready_node_count == 3 && s.runtime_classes == ["kata"]).then_some(())
        }
    })
    .await;
    assert!(
        !task.is_finished(),
        "operator stopped early:\n{}",
        logs.text()
    );

    // A tenant's plain pod in a `default` namespace: the real API server calls /mutate-pod.
    Api::<Namespace>::all(admin.clone())
        .patch(
            "tenant",
            &PatchParams::apply("envtest").force(),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant",
                "labels": {"kataconfiguration.openshift.io/policy": "default"}}}),
            ),
        )
        .await
        .expect("tenant namespace");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "tenant");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .expect("pod");
    let created = wait_for("the pod admitted with kata injected", || {
        let (pods, pod) = (pods.clone(), pod.clone());
        async move {
            match pods.create(&PostParams::default(), &pod).await {
                Ok(p)
                    if p.spec
                        .as_ref()
                        .and_then(|s| s.runtime_class_name.as_deref())
                        == Some("kata") =>
                {
                    Some(p)
                }
                // The webhook caches may not have the namespace yet: the pod came through plain.
                Ok(_) => {
                    let _ = pods.delete("web", &DeleteParams::default()).await;
                    None
                }
                Err(e) => panic!("create pod: {e}"),
            }
        }
    })
    .await;
    let spec = created.spec.expect("spec");
    assert_eq!(
        spec.overhead
            .as_ref()
            .and_then(|o| o.get("memory"))
            .map(|q| q.0.as_str()),
        Some("350Mi"),
        "the RuntimeClass overhead is on the stored pod"
    );
    assert_eq!(
        spec.node_selector
            .as_ref()
            .and_then(|n| n.get(KATA_ROLE_LABEL))
            .map(String::as_str),
        Some(""),
        "scheduled onto kata nodes only"
    );

    // Secure metrics: TokenReview and SubjectAccessReview answered by the real server.
    let text = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client")
        .get(format!("https://127.0.0.1:{}/metrics", metrics_addr.port()))
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    assert!(
        text.lines()
            .any(|l| l == "kata_operator_nodes{state=\"installed\"} 3"),
        "{text}"
    );

    // Uninstall (the unscheduled pod goes at once, so nothing blocks).
    pods.delete("web", &DeleteParams::default())
        .await
        .expect("delete pod");
    kcs.delete("example", &DeleteParams::default())
        .await
        .expect("delete KataConfig");
    wait_for("uninstalled", || {
        let kcs = kcs.clone();
        async move { kcs.get_opt("example").await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert!(
        Api::<RuntimeClass>::all(admin.clone())
            .get_opt("kata")
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        Api::<MachineConfigPool>::all(admin.clone())
            .get_opt("kata-oc")
            .await
            .expect("read")
            .is_none()
    );
    let nodes = Api::<Node>::all(admin.clone())
        .list(&Default::default())
        .await
        .expect("nodes");
    assert!(
        nodes
            .items
            .iter()
            .all(|n| !n.labels().contains_key(KATA_ROLE_LABEL))
    );

    // Clean stop: the Lease is released.
    shutdown.cancel();
    let result = tokio::time::timeout(HANG_GUARD, task)
        .await
        .expect("stops")
        .expect("join");
    assert!(result.is_ok(), "run_with ended with {result:?}");
    let lease = Api::<Lease>::namespaced(admin.clone(), DEFAULT_OPERATOR_NAMESPACE)
        .get("sandboxed-containers-operator-leader")
        .await
        .expect("lease");
    assert!(
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default()
            .is_empty()
    );
    sim.stop().await;

    let text = logs.text();
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("is forbidden"))
        .collect();
    assert!(
        refused.is_empty(),
        "the operator was refused by the API server:\n{}",
        refused.join("\n")
    );
}

/// What a prober saw while the API server was restarted.
#[derive(Default)]
struct Probed {
    /// Webhook reviews answered over HTTPS, with when.
    admitted: Vec<Instant>,
    /// `/healthz` answers that were not 200.
    unhealthy: Vec<String>,
    /// The leader gauge was seen at 0.
    stepped_down: bool,
}

/// Calls the webhook over HTTPS (trusting `ca`), `/healthz`, and reads the leader gauge every
/// 100 ms until `stop`.
async fn probe_while(
    ca: Vec<u8>,
    webhook: SocketAddr,
    health: SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Probed {
    let https = testkit::https_client(&ca);
    let plain = reqwest::Client::new();
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("webhooks/samples/pod-plain-default.json"),
    )
    .expect("sample");
    let review: Value = serde_json::from_str(&text).expect("json");
    let mut seen = Probed::default();
    while !stop.is_cancelled() {
        seen.stepped_down |= metrics.leader.get() == 0;
        let answer = https
            .post(format!("https://127.0.0.1:{}/validate-pod", webhook.port()))
            .json(&review)
            .send()
            .await;
        if let Ok(resp) = answer
            && resp.status() == 200
            && let Ok(v) = resp.json::<Value>().await
            && v["response"]["allowed"] == true
        {
            seen.admitted.push(Instant::now());
        }
        match plain.get(format!("http://{health}/healthz")).send().await {
            Ok(r) if r.status() == 200 => {}
            other => seen.unhealthy.push(format!("{other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// The incident: kube-apiserver stops mid-install for longer than the renew deadline
/// and comes back. The operator steps down, keeps answering webhooks and `/healthz`, takes the
/// Lease again, finishes the install and never exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_rides_out_an_apiserver_restart_mid_install_on_a_real_api_server() {
    let Some(mut env) = envtest::start().await else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let logs =
        testkit::logs::capture("sandboxed_containers_operator=debug,kube_runtime=debug,warn");
    let admin = env.client.clone();
    let operator = env
        .operator_client(DEFAULT_OPERATOR_NAMESPACE)
        .await
        .expect("operator ServiceAccount client");
    for i in 0..3 {
        apply::<Node>(
            &admin,
            node_json(&format!("worker-{i}"), &["worker"], json!({})),
        )
        .await;
    }
    apply::<MachineConfig>(&admin, machine_config_json("00-worker", "worker")).await;
    let sim = McoSimulator::spawn(
        admin.clone(),
        SimOptions {
            create_default_pools: true,
            step: Duration::from_millis(500),
        },
    )
    .await
    .expect("mco simulator");
    let (webhook, metrics_addr, health) = (free_port(), free_port(), free_port());
    let (shutdown, readiness, metrics) = (
        CancellationToken::new(),
        Readiness::new(),
        Arc::new(Metrics::new()),
    );
    // Lease 3 s: renew deadline 2 s, well inside the outage below.
    let task = tokio::spawn(run::run_with(
        operator,
        run_args_with(
            webhook,
            metrics_addr,
            health,
            &["--lease-duration-seconds", "3"],
        ),
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));
    wait_for("the operator leads and is ready", || {
        let ok = metrics.leader.get() == 1 && readiness.check().is_ok();
        async move { ok.then_some(()) }
    })
    .await;
    let kcs: Api<KataConfig> = Api::all(admin.clone());
    let kc: KataConfig = serde_json::from_value(json!({
        "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
        "metadata": {"name": "example"}, "spec": {},
    }))
    .expect("kc");
    wait_for("the KataConfig is admitted", || {
        let (kcs, kc) = (kcs.clone(), kc.clone());
        async move {
            match kcs.create(&PostParams::default(), &kc).await {
                Ok(_) => Some(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Some(()),
                // The webhook is registered before it serves: retry until it answers.
                Err(kube::Error::Api(s)) if s.code == 500 => None,
                Err(e) => panic!("create KataConfig: {e}"),
            }
        }
    })
    .await;
    let pools: Api<MachineConfigPool> = Api::all(admin.clone());
    wait_for("the install is under way", || {
        let pools = pools.clone();
        async move { pools.get_opt("kata-oc").await.ok()?.map(|_| ()) }
    })
    .await;
    let installed = |kcs: Api<KataConfig>| async move {
        let s = kcs.get("example").await.ok()?.status?;
        (s.kata_nodes.ready_node_count == 3 && s.runtime_classes == ["kata"]).then_some(())
    };
    assert!(
        installed(kcs.clone()).await.is_none(),
        "restart mid-install"
    );
    let ca = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
        admin.clone(),
        DEFAULT_OPERATOR_NAMESPACE,
    )
    .get("sandboxed-containers-operator-webhook-cert")
    .await
    .expect("webhook certificate Secret")
    .data
    .and_then(|d| d.get("ca.crt").cloned())
    .expect("ca.crt")
    .0;

    let stop_probe = CancellationToken::new();
    let prober = tokio::spawn(probe_while(
        ca,
        webhook,
        health,
        metrics.clone(),
        stop_probe.clone(),
    ));
    let down = Instant::now();
    let outage = Duration::from_secs(6);
    env.restart_apiserver(outage)
        .await
        .expect("kube-apiserver restarted");
    assert!(!task.is_finished(), "the operator exited:\n{}", logs.text());
    wait_for("the operator leads again", || {
        let ok = metrics.leader.get() == 1;
        async move { ok.then_some(()) }
    })
    .await;
    wait_for("the install completes after the restart", || {
        installed(kcs.clone())
    })
    .await;
    stop_probe.cancel();
    let probed = prober.await.expect("join");
    assert!(probed.stepped_down, "the reconciler stepped down");
    assert!(
        probed.unhealthy.is_empty(),
        "/healthz failed: {:?}",
        probed.unhealthy
    );
    let while_down = probed
        .admitted
        .iter()
        .filter(|t| **t > down + Duration::from_secs(1) && **t < down + outage)
        .count();
    assert!(
        while_down > 0,
        "the webhook answered while the API server was down"
    );
    assert!(!task.is_finished(), "the operator exited:\n{}", logs.text());

    shutdown.cancel();
    let result = tokio::time::timeout(HANG_GUARD, task)
        .await
        .expect("stops")
        .expect("join");
    assert!(result.is_ok(), "run_with ended with {result:?}");
    sim.stop().await;
    let text = logs.text();
    assert!(
        text.contains("lost leadership of Lease openshift-sandboxed-containers-operator/sandboxed-containers-operator-leader"),
        "the step-down is logged"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("became leader") && l.contains("term=2")),
        "a second term was led"
    );
}

/// Discovery as a real API server answers it: ValidatingAdmissionPolicy v1 is served (1.30+),
/// the MCO API is (its CRDs are installed by the harness), prometheus-operator's is not.
#[tokio::test]
async fn discovery_reads_the_served_apis_of_a_real_api_server() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let operator = env
        .operator_client(DEFAULT_OPERATOR_NAMESPACE)
        .await
        .expect("operator ServiceAccount client");
    let served = sandboxed_containers_operator::discovery::probe(&operator)
        .await
        .expect("discovery is open to every authenticated user");
    assert_eq!(
        served,
        sandboxed_containers_operator::discovery::ServedApis {
            validating_admission_policy: true,
            machine_config: true,
            monitoring: false,
        }
    );
}
