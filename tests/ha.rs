//! High availability: several replicas of the whole operator (`run::run_with`) against one
//! in-memory API server. One leads the reconciler; every replica serves the webhooks with the
//! same certificate; a cleanly stopped leader hands over at once, and a killed one (no Lease
//! release) within the Lease duration plus one renew period, after which the new leader repairs
//! drift. When the API server goes away for every replica at once, none exits: all keep serving
//! the webhooks, and once it is back exactly one leads again.
//!
//! Each replica runs on its own tokio runtime, so killing it (`shutdown_background`) drops every
//! task it spawned at once, the way a process death would, without releasing the Lease.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, DeleteParams, PostParams};
use sandboxed_containers_operator::api::KataConfig;
use sandboxed_containers_operator::cli::{Cli, Command, RunArgs};
use sandboxed_containers_operator::leader::LEASE_NAME;
use sandboxed_containers_operator::observability::Metrics;
use sandboxed_containers_operator::observability::Readiness;
use sandboxed_containers_operator::run;
use serde_json::{Value, json};
use testkit::{FakeApi, McoSimulator, SimOptions, eventually, free_port, seed_cluster};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "openshift-sandboxed-containers-operator";
/// Short Lease for the test; the renew period is a third of it.
const LEASE_SECONDS: u64 = 6;

struct Replica {
    name: &'static str,
    runtime: Option<Runtime>,
    task: JoinHandle<anyhow::Result<()>>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    webhook: SocketAddr,
    metrics_addr: SocketAddr,
}

impl Replica {
    /// Starts a replica named `name` whose API requests are logged under that name. Every
    /// replica registers the same webhook URL, as they would all sit behind one Service.
    fn start(fake: &FakeApi, name: &'static str, service_url: &str) -> Replica {
        let (webhook, metrics_addr, health) = (free_port(), free_port(), free_port());
        let cli = Cli::try_parse_from([
            "sandboxed-containers-operator",
            "run",
            "--namespace",
            NAMESPACE,
            "--identity",
            name,
            "--lease-duration-seconds",
            &LEASE_SECONDS.to_string(),
            "--webhook-bind",
            &webhook.to_string(),
            "--webhook-url",
            service_url,
            "--metrics-insecure",
            "--metrics-bind",
            &metrics_addr.to_string(),
            "--health-bind",
            &health.to_string(),
        ])
        .expect("run flags parse");
        let args: RunArgs = match cli.command {
            Command::Run(args) => args,
            other => panic!("expected run, got {other:?}"),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("replica runtime");
        let (metrics, readiness, shutdown) = (
            Arc::new(Metrics::new()),
            Readiness::new(),
            CancellationToken::new(),
        );
        let task = runtime.spawn({
            let (fake, metrics, readiness, shutdown) = (
                fake.clone(),
                metrics.clone(),
                readiness.clone(),
                shutdown.clone(),
            );
            // The client's worker task must live on this replica's runtime.
            async move {
                run::run_with(
                    fake.operator_client(name),
                    args,
                    metrics,
                    readiness,
                    shutdown,
                )
                .await
            }
        });
        Replica {
            name,
            runtime: Some(runtime),
            task,
            shutdown,
            metrics,
            readiness,
            webhook,
            metrics_addr,
        }
    }

    /// Process death: every task of the replica is dropped; nothing releases the Lease.
    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    async fn scrape(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics body")
    }

    /// Ready, and the webhook port accepts connections (readiness components register as
    /// their tasks start, so `ready` alone can hold before the webhook task ran).
    fn serving(&self) -> bool {
        assert!(!self.task.is_finished(), "replica {} stopped", self.name);
        self.readiness.check().is_ok() && std::net::TcpStream::connect(self.webhook).is_ok()
    }

    fn reconciles(&self) -> u64 {
        ["success", "error", "invalid_spec"]
            .iter()
            .map(|l| self.metrics.reconciliations.with_label_values(&[l]).get())
            .sum()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.kill();
    }
}

fn lease(fake: &FakeApi) -> (String, jiff::Timestamp, jiff::Timestamp, i32) {
    let spec = fake
        .get_ns::<Lease>(NAMESPACE, LEASE_NAME)
        .and_then(|l| l.spec)
        .expect("Lease with a spec");
    (
        spec.holder_identity.unwrap_or_default(),
        spec.acquire_time.map(|t| t.0).unwrap_or_default(),
        spec.renew_time.map(|t| t.0).unwrap_or_default(),
        spec.lease_transitions.unwrap_or(0),
    )
}

fn holder(fake: &FakeApi) -> String {
    fake.get_ns::<Lease>(NAMESPACE, LEASE_NAME)
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .unwrap_or_default()
}

/// The DER of the certificate a webhook server presents, and its answer to a pod review.
async fn served(ca_pem: &[u8], addr: SocketAddr, review: &Value) -> (Vec<u8>, Value) {
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_info(true)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).expect("CA"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let resp = client
        .post(format!("https://127.0.0.1:{}/validate-pod", addr.port()))
        .json(review)
        .send()
        .await
        .expect("validate-pod");
    assert_eq!(resp.status(), 200);
    let der = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("peer certificate")
        .to_vec();
    (der, resp.json().await.expect("review json"))
}

fn pod_review() -> Value {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("webhooks/samples/pod-plain-default.json"),
    )
    .expect("sample");
    let mut review: Value = serde_json::from_str(&text).expect("json");
    review["request"]["namespace"] = json!("tenant");
    review["request"]["object"]["metadata"]["namespace"] = json!("tenant");
    review
}

fn metric_line<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_all_serve_webhooks_and_leadership_moves_on_stop_and_on_death() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeApi::new();
    seed_cluster(&fake, 3, 3, false);
    let _sim = McoSimulator::spawn(
        fake.client_as("mco-sim"),
        SimOptions {
            create_default_pools: true,
            step: Duration::from_millis(10),
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

    // Stands in for the Service in front of every replica: what gets registered and certified.
    let service_url = format!("https://127.0.0.1:{}", free_port().port());
    let mut a = Replica::start(&fake, "replica-a", &service_url);
    let mut b = Replica::start(&fake, "replica-b", &service_url);

    let kc: KataConfig = serde_json::from_value(json!({
        "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
        "metadata": {"name": "example-kataconfig"}, "spec": {},
    }))
    .expect("kataconfig");
    Api::<KataConfig>::all(admin.clone())
        .create(&PostParams::default(), &kc)
        .await
        .expect("create kataconfig");
    eventually("kata installed on the 3 workers", || {
        fake.get::<KataConfig>("example-kataconfig")
            .and_then(|k| k.status)
            .is_some_and(|s| s.kata_nodes.ready_node_count == 3 && s.runtime_classes == ["kata"])
    })
    .await;
    eventually("both replicas ready and serving webhooks", || {
        [&a, &b].iter().all(|r| r.serving())
    })
    .await;

    // Exactly one leader: it holds the Lease, says so in its metrics, and alone reconciles.
    let first = holder(&fake);
    let (leader, follower) = match first.as_str() {
        "replica-a" => (&mut a, &mut b),
        "replica-b" => (&mut b, &mut a),
        other => panic!("Lease held by {other:?}, not by a replica"),
    };
    let (lead_text, follow_text) = (leader.scrape().await, follower.scrape().await);
    assert_eq!(
        metric_line(&lead_text, "kata_operator_leader"),
        Some("kata_operator_leader 1")
    );
    assert_eq!(
        metric_line(&follow_text, "kata_operator_leader"),
        Some("kata_operator_leader 0")
    );
    assert!(leader.reconciles() > 0);
    assert_eq!(follower.reconciles(), 0, "the follower never reconciles");
    assert!(
        fake.requests_by(follower.name)
            .iter()
            .all(|r| r.resource != "kataconfigs" || r.verb == "list" || r.verb == "watch"),
        "the follower never writes a KataConfig"
    );

    // Both serve the webhooks with the one certificate of the shared Secret, and both answer.
    let ca = testkit::webhook_ca(&fake, NAMESPACE);
    let review = pod_review();
    let (lead_der, lead_resp) = served(&ca, leader.webhook, &review).await;
    let (follow_der, follow_resp) = served(&ca, follower.webhook, &review).await;
    assert_eq!(
        lead_der, follow_der,
        "both replicas serve the same certificate"
    );
    for resp in [&lead_resp, &follow_resp] {
        assert_eq!(resp["response"]["allowed"], true);
        assert_eq!(resp["response"]["uid"], review["request"]["uid"]);
    }

    // Clean stop of the leader: it releases the Lease and the follower takes it over.
    leader.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), &mut leader.task)
        .await
        .expect("stops")
        .expect("join");
    assert!(stopped.is_ok(), "clean stop ended with {stopped:?}");
    let next = follower.name;
    eventually("the follower takes the released Lease", || {
        holder(&fake) == next
    })
    .await;
    eventually("the new leader reports it", || {
        follower.metrics.leader.get() == 1
    })
    .await;
    let (_, _, _, transitions) = lease(&fake);
    assert_eq!(transitions, 1);

    // A third replica joins as follower; then the leader dies without releasing the Lease.
    let mut c = Replica::start(&fake, "replica-c", &service_url);
    eventually("the third replica is ready", || c.serving()).await;
    let (third_der, _) = served(&ca, c.webhook, &review).await;
    assert_eq!(
        third_der, lead_der,
        "a new replica serves the same certificate"
    );
    assert_eq!(c.metrics.leader.get(), 0);
    follower.kill();
    // Let the dropped tasks finish dropping, then read the dead leader's last renewal.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (dead, _, last_renew, _) = lease(&fake);
    assert_eq!(dead, next, "nobody took over a Lease that is still valid");
    eventually("the third replica takes over the expired Lease", || {
        holder(&fake) == "replica-c"
    })
    .await;
    let (_, acquired, _, transitions) = lease(&fake);
    assert_eq!(transitions, 2);
    let gap = acquired.duration_since(last_renew);
    let lease_duration = jiff::SignedDuration::from_secs(LEASE_SECONDS as i64);
    let renew_period = lease_duration / 3;
    assert!(
        gap >= lease_duration,
        "took over {gap:?} after the last renewal, before the Lease ({lease_duration:?}) expired"
    );
    assert!(
        gap <= lease_duration + renew_period,
        "took over {gap:?} after the last renewal; expected within the Lease duration plus one renew period ({:?})",
        lease_duration + renew_period
    );
    eventually("the new leader reports it", || c.metrics.leader.get() == 1).await;

    // The new leader proves it leads: drift (a deleted RuntimeClass) is repaired by it.
    fake.clear_requests();
    Api::<RuntimeClass>::all(admin.clone())
        .delete("kata", &DeleteParams::default())
        .await
        .expect("delete RuntimeClass");
    eventually("the new leader recreates the RuntimeClass", || {
        fake.get::<RuntimeClass>("kata").is_some()
    })
    .await;
    let writers: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| {
            r.resource == "runtimeclasses"
                && r.verb != "list"
                && r.verb != "watch"
                && r.verb != "get"
        })
        .map(|r| format!("{} {}", r.client, r.verb))
        .collect();
    assert!(
        writers.iter().any(|w| w.starts_with("replica-c ")),
        "replica-c repaired the RuntimeClass: {writers:?}"
    );
    assert!(
        writers
            .iter()
            .all(|w| w.starts_with("replica-c ") || w.starts_with("admin ")),
        "only the leader writes: {writers:?}"
    );
    // The counter moves when the reconcile returns, after its writes.
    eventually("the new leader counts its reconciles", || {
        c.reconciles() > 0
    })
    .await;
    let text = c.scrape().await;
    assert_eq!(
        metric_line(&text, "kata_operator_leader"),
        Some("kata_operator_leader 1")
    );

    // Clean shutdown of the survivor releases the Lease.
    c.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), &mut c.task)
        .await
        .expect("stops")
        .expect("join");
    assert!(stopped.is_ok(), "clean stop ended with {stopped:?}");
    assert_eq!(holder(&fake), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_losing_the_api_at_once_keep_running_and_exactly_one_leads_after() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeApi::new();
    seed_cluster(&fake, 3, 3, false);
    let _sim = McoSimulator::spawn(
        fake.client_as("mco-sim"),
        SimOptions {
            create_default_pools: true,
            step: Duration::from_millis(10),
        },
    )
    .await
    .expect("mco simulator");
    let admin = fake.client_as("admin");
    let service_url = format!("https://127.0.0.1:{}", free_port().port());
    let a = Replica::start(&fake, "replica-a", &service_url);
    let b = Replica::start(&fake, "replica-b", &service_url);
    let kc: KataConfig = serde_json::from_value(json!({
        "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
        "metadata": {"name": "example-kataconfig"}, "spec": {},
    }))
    .expect("kataconfig");
    Api::<KataConfig>::all(admin.clone())
        .create(&PostParams::default(), &kc)
        .await
        .expect("create kataconfig");
    eventually("kata installed", || {
        fake.get::<KataConfig>("example-kataconfig")
            .and_then(|k| k.status)
            .is_some_and(|s| s.kata_nodes.ready_node_count == 3)
    })
    .await;
    eventually("both serve, one leads", || {
        [&a, &b].iter().all(|r| r.serving()) && a.metrics.leader.get() + b.metrics.leader.get() == 1
    })
    .await;
    let ca = testkit::webhook_ca(&fake, NAMESPACE);
    let review = pod_review();

    // The API server goes away for both at once, for longer than the Lease.
    fake.set_unreachable(true);
    eventually("nobody leads without the API server", || {
        [&a, &b]
            .iter()
            .all(|r| !r.task.is_finished() && r.metrics.leader.get() == 0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS)).await;
    for r in [&a, &b] {
        assert!(r.serving(), "{} serves webhooks during the outage", r.name);
        let (_, resp) = served(&ca, r.webhook, &review).await;
        assert_eq!(resp["response"]["allowed"], true);
    }

    fake.set_unreachable(false);
    eventually("one replica leads again", || {
        a.metrics.leader.get() + b.metrics.leader.get() == 1
    })
    .await;
    // And it stays exactly one, sampled over two Lease durations.
    let watch_until = tokio::time::Instant::now() + Duration::from_secs(LEASE_SECONDS * 2);
    while tokio::time::Instant::now() < watch_until {
        let leaders = a.metrics.leader.get() + b.metrics.leader.get();
        assert!(leaders <= 1, "two leaders at once after the outage");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (leader, follower) = if a.metrics.leader.get() == 1 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(leader.metrics.leader.get(), 1);
    assert_eq!(holder(&fake), leader.name);
    for r in [&a, &b] {
        assert!(!r.task.is_finished(), "{} never exited", r.name);
        assert!(r.serving());
    }
    // The leader leads: drift is repaired by it, and only by it.
    fake.clear_requests();
    Api::<RuntimeClass>::all(admin.clone())
        .delete("kata", &DeleteParams::default())
        .await
        .expect("delete RuntimeClass");
    eventually("the leader recreates the RuntimeClass", || {
        fake.get::<RuntimeClass>("kata").is_some()
    })
    .await;
    assert!(
        fake.requests_by(follower.name)
            .iter()
            .all(|r| r.resource != "runtimeclasses" || !r.is_write),
        "the follower never writes"
    );
    assert!(
        fake.requests_by(leader.name)
            .iter()
            .any(|r| r.resource == "runtimeclasses" && r.is_write)
    );
}
