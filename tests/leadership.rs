//! Leadership governs the reconciler only: the whole operator (`run::run_with`) against the
//! in-memory API server and the MCO simulator, with the API server taken away mid-install for
//! longer than the Lease's renew deadline. The reconciler steps down and writes nothing more,
//! the webhooks keep answering over HTTPS, `/healthz` and `/readyz` stay green, and when the API
//! server is back the process takes the Lease again, starts a fresh reconciler and completes the
//! install, without ever exiting. A Lease-only outage (every other request succeeds) shows the
//! reconciler stopping on the renew deadline alone, and the write fence is shown cutting a write
//! in flight at the deadline and sending none after it.
//!
//! Waits poll with a generous hang guard; no assertion depends on timing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use sandboxed_containers_operator::api::{KataConfig, MachineConfigPool};
use sandboxed_containers_operator::cli::{Cli, Command, RunArgs};
use sandboxed_containers_operator::kubeapi::WriteFence;
use sandboxed_containers_operator::names::KATA_POOL;
use sandboxed_containers_operator::observability::{Metrics, Readiness};
use sandboxed_containers_operator::reconciler::{Action, Error as ReconcileError, apply::Writer};
use sandboxed_containers_operator::run;
use serde_json::{Value, json};
use testkit::{
    FakeApi, Fault, FaultKind, McoSimulator, RequestRecord, SimHandle, SimOptions, eventually,
    free_port, https_client, seed_cluster,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "openshift-sandboxed-containers-operator";
/// Renew every second, renew deadline 2 s, Lease valid 3 s.
const LEASE_SECONDS: u64 = 3;

/// What the reconciler alone reads (its own watches: gone when it steps down).
const RECONCILER_OWN_KINDS: [&str; 3] = [
    "machineconfigpools",
    "machineconfigs",
    "containerruntimeconfigs",
];
/// What the reconciler writes (and nothing else in the operator does).
const RECONCILER_WRITES: [&str; 7] = [
    "kataconfigs",
    "nodes",
    "machineconfigpools",
    "machineconfigs",
    "containerruntimeconfigs",
    "runtimeclasses",
    "events",
];

fn run_args(webhook: SocketAddr, metrics: SocketAddr, health: SocketAddr) -> RunArgs {
    let cli = Cli::try_parse_from([
        "sandboxed-containers-operator",
        "run",
        "--namespace",
        NAMESPACE,
        "--identity",
        "operator-0",
        "--lease-duration-seconds",
        &LEASE_SECONDS.to_string(),
        "--webhook-bind",
        &webhook.to_string(),
        "--webhook-url",
        &format!("https://127.0.0.1:{}", webhook.port()),
        "--metrics-insecure",
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

/// A cluster (3 control-plane nodes, 3 workers, a `tenant` namespace) with a simulated MCO slow
/// enough that an install is still rolling out when the API server goes away.
async fn cluster() -> (FakeApi, SimHandle) {
    let fake = FakeApi::new();
    seed_cluster(&fake, 3, 3, false);
    let sim = McoSimulator::spawn(
        fake.client_as("mco-sim"),
        SimOptions {
            create_default_pools: true,
            step: Duration::from_millis(400),
        },
    )
    .await
    .expect("mco simulator");
    let tenant: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "tenant"}})).expect("namespace");
    Api::<Namespace>::all(fake.client_as("admin"))
        .create(&PostParams::default(), &tenant)
        .await
        .expect("namespace");
    (fake, sim)
}

struct Operator {
    task: JoinHandle<anyhow::Result<()>>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    webhook: SocketAddr,
    health: SocketAddr,
}

impl Operator {
    fn start(fake: &FakeApi) -> Operator {
        let (webhook, metrics_addr, health) = (free_port(), free_port(), free_port());
        let (metrics, readiness, shutdown) = (
            Arc::new(Metrics::new()),
            Readiness::new(),
            CancellationToken::new(),
        );
        let task = tokio::spawn(run::run_with(
            fake.client(),
            run_args(webhook, metrics_addr, health),
            metrics.clone(),
            readiness.clone(),
            shutdown.clone(),
        ));
        Operator {
            task,
            shutdown,
            metrics,
            readiness,
            webhook,
            health,
        }
    }

    fn running(&self) -> bool {
        assert!(!self.task.is_finished(), "run_with ended");
        true
    }

    fn leads(&self) -> bool {
        self.running() && self.metrics.leader.get() == 1
    }

    /// `/healthz` and `/readyz` answer 200.
    async fn healthy_and_ready(&self) {
        let client = reqwest::Client::new();
        for path in ["healthz", "readyz"] {
            let resp = client
                .get(format!("http://{}/{path}", self.health))
                .send()
                .await
                .expect("health endpoint");
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            assert_eq!(status, 200, "/{path}: {body}");
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("stops on shutdown")
            .expect("join");
        assert!(result.is_ok(), "clean stop ended with {result:?}");
    }
}

async fn create_kataconfig(fake: &FakeApi) {
    let kc: KataConfig = serde_json::from_value(json!({
        "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
        "metadata": {"name": "example"}, "spec": {},
    }))
    .expect("kataconfig");
    Api::<KataConfig>::all(fake.client_as("admin"))
        .create(&PostParams::default(), &kc)
        .await
        .expect("create kataconfig");
}

fn installed(fake: &FakeApi) -> bool {
    fake.get::<KataConfig>("example")
        .and_then(|k| k.status)
        .is_some_and(|s| s.kata_nodes.ready_node_count == 3 && s.runtime_classes == ["kata"])
}

/// The kata pool exists and is rolling out: the install is under way, not done.
fn mid_install(fake: &FakeApi) -> bool {
    fake.get::<MachineConfigPool>(KATA_POOL).is_some()
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

/// The webhook's answer to a pod review over HTTPS, trusting the operator's CA.
async fn admit(ca: &[u8], webhook: SocketAddr) -> Value {
    let review = pod_review();
    let resp = https_client(ca)
        .post(format!("https://127.0.0.1:{}/validate-pod", webhook.port()))
        .json(&review)
        .send()
        .await
        .expect("validate-pod over HTTPS");
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.expect("review json");
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    answer
}

fn by_operator(log: &[RequestRecord]) -> impl Iterator<Item = (usize, &RequestRecord)> {
    log.iter()
        .enumerate()
        .filter(|(_, r)| r.client == "operator")
}

fn is_lease_write(r: &RequestRecord) -> bool {
    r.resource == "leases" && r.is_write
}

/// Waits until the election is campaigning again after losing its term: a Lease read logged
/// after `from` (the term's renew loop ended before the leader gauge went to 0, and the next
/// campaign starts only once the term's work has stopped). Returns that request's index.
async fn campaigning_again(fake: &FakeApi, from: usize) -> usize {
    let mut found = None;
    eventually("the election campaigns again", || {
        found = by_operator(&fake.requests())
            .find(|(i, r)| *i >= from && r.resource == "leases" && r.verb == "get")
            .map(|(i, _)| i);
        found.is_some()
    })
    .await;
    found.expect("found")
}

/// After `from`, writes of the reconciler, sent or refused by an unreachable server alike: the
/// fence stops them from being attempted at all once the term has ended.
fn reconciler_writes_since(fake: &FakeApi, from: usize) -> Vec<String> {
    by_operator(&fake.requests())
        .filter(|(i, r)| {
            *i >= from && r.is_write && RECONCILER_WRITES.contains(&r.resource.as_str())
        })
        .map(|(i, r)| format!("#{i} {} {} refused={}", r.verb, r.resource, r.refused))
        .collect()
}

/// After `from`, requests of the stopped reconciler: its own watches' and its writes.
fn reconciler_requests_since(fake: &FakeApi, from: usize) -> Vec<String> {
    by_operator(&fake.requests())
        .filter(|(i, r)| {
            *i >= from
                && (RECONCILER_OWN_KINDS.contains(&r.resource.as_str())
                    || (r.is_write && RECONCILER_WRITES.contains(&r.resource.as_str())))
        })
        .map(|(i, r)| format!("#{i} {} {} refused={}", r.verb, r.resource, r.refused))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_outage_past_the_renew_deadline_steps_down_keeps_webhooks_and_resumes_the_install() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let logs = testkit::logs::capture("info");
    let (fake, _sim) = cluster().await;
    let op = Operator::start(&fake);
    eventually("the operator leads and is ready", || {
        op.leads() && op.readiness.check().is_ok()
    })
    .await;
    let ca = testkit::webhook_ca(&fake, NAMESPACE);
    assert_eq!(admit(&ca, op.webhook).await["response"]["allowed"], true);

    create_kataconfig(&fake).await;
    eventually("the install is under way", || mid_install(&fake)).await;
    assert!(!installed(&fake), "cut the API server mid-install");

    // The API server goes away for longer than the renew deadline.
    fake.set_unreachable(true);
    eventually("the reconciler steps down", || {
        op.running() && op.metrics.leader.get() == 0
    })
    .await;
    let stepped_down = fake.requests().len();
    let campaign = campaigning_again(&fake, stepped_down).await;
    // The webhooks answer throughout, health and readiness stay green, the process runs.
    assert_eq!(admit(&ca, op.webhook).await["response"]["allowed"], true);
    op.healthy_and_ready().await;
    // Give a stopped reconciler every chance to show itself: several renew periods.
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS * 2)).await;
    assert!(op.running() && op.metrics.leader.get() == 0);
    // From the step-down on (the renew deadline had passed), no write was even attempted; from
    // the next campaign on (the term's work had stopped), no request of the reconciler at all.
    let late_writes = reconciler_writes_since(&fake, stepped_down);
    assert!(
        late_writes.is_empty(),
        "writes after the renew deadline: {late_writes:#?}"
    );
    let ghost = reconciler_requests_since(&fake, campaign);
    assert!(
        ghost.is_empty(),
        "the stepped-down reconciler still sent requests: {ghost:#?}"
    );
    assert_eq!(admit(&ca, op.webhook).await["response"]["allowed"], true);
    op.healthy_and_ready().await;
    assert!(!installed(&fake));

    // Back: the Lease is taken again, a fresh reconciler lists its kinds anew and finishes.
    let back_at = fake.requests().len();
    fake.set_unreachable(false);
    eventually("the operator leads again", || op.leads()).await;
    eventually("the install completes after the outage", || {
        op.running() && installed(&fake)
    })
    .await;
    let log = fake.requests();
    let after: Vec<(usize, &RequestRecord)> = by_operator(&log)
        .filter(|(i, r)| *i >= back_at && !r.refused)
        .collect();
    let relock = after
        .iter()
        .find(|(_, r)| is_lease_write(r))
        .map(|(i, _)| *i)
        .expect("the Lease was taken again");
    let first_write = after
        .iter()
        .find(|(_, r)| RECONCILER_WRITES.contains(&r.resource.as_str()) && r.is_write)
        .map(|(i, _)| *i)
        .expect("the new term wrote");
    assert!(
        relock < first_write,
        "no reconciler write before the Lease was held again (#{relock} vs #{first_write})"
    );
    for kind in RECONCILER_OWN_KINDS {
        assert!(
            after
                .iter()
                // A list, or a watch streaming the initial state where the server can.
                .any(|(i, r)| *i > relock
                    && r.resource == kind
                    && (r.verb == "list" || r.verb == "watch")),
            "the new term's reconciler listed {kind} afresh"
        );
    }
    assert_eq!(admit(&ca, op.webhook).await["response"]["allowed"], true);
    op.healthy_and_ready().await;
    op.stop().await;

    let text = logs.text();
    assert!(
        text.contains(&format!(
            "lost leadership of Lease {NAMESPACE}/sandboxed-containers-operator-leader: could not renew within 2s"
        )),
        "the step-down is logged:\n{text}"
    );
    assert!(text.contains(
        "stepping down (the reconciler stops, webhooks keep serving) and campaigning again"
    ));
    assert!(
        text.lines()
            .any(|l| l.contains("became leader") && l.contains("term=2")),
        "a second term was led"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_writes_nothing_after_its_renew_deadline_though_the_api_is_up() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (fake, _sim) = cluster().await;
    let op = Operator::start(&fake);
    eventually("the operator leads", || op.leads()).await;
    create_kataconfig(&fake).await;
    eventually("the install is under way", || mid_install(&fake)).await;
    assert!(!installed(&fake));

    // Only the Lease fails (a partition between the operator and the Lease's etcd, say): every
    // other request still succeeds, so only the fence can stop the reconciler's writes while
    // the simulated MCO keeps rolling nodes out and there is status to report.
    fake.inject(Fault {
        verb: None,
        resource: Some("leases".into()),
        client: None,
        kind: FaultKind::Status(503),
        times: usize::MAX,
    });
    eventually("the reconciler steps down", || {
        op.running() && op.metrics.leader.get() == 0
    })
    .await;
    let stepped_down = fake.requests().len();
    let campaign = campaigning_again(&fake, stepped_down).await;
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS * 2)).await;
    // From the step-down on (the renew deadline had passed), no write was even attempted; from
    // the next campaign on (the term's work had stopped), no request of the reconciler at all.
    let late_writes = reconciler_writes_since(&fake, stepped_down);
    assert!(
        late_writes.is_empty(),
        "writes after the renew deadline: {late_writes:#?}"
    );
    let ghost = reconciler_requests_since(&fake, campaign);
    assert!(
        ghost.is_empty(),
        "writes or watches after the renew deadline, with the API up: {ghost:#?}"
    );
    assert!(op.running());
    op.healthy_and_ready().await;

    fake.clear_faults();
    eventually("the operator leads again", || op.leads()).await;
    eventually("the install completes", || op.running() && installed(&fake)).await;
    op.stop().await;
}

#[tokio::test]
async fn the_write_fence_cuts_a_write_in_flight_at_its_deadline_and_sends_none_after() {
    let fake = FakeApi::new();
    seed_cluster(&fake, 0, 1, false);
    let kc: KataConfig = serde_json::from_value(json!({
        "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
        "metadata": {"name": "example"}, "spec": {},
    }))
    .expect("kataconfig");
    // A hung API server holds the label patch far past the term's end.
    fake.inject(Fault::on(
        "patch",
        "nodes",
        FaultKind::Timeout(Duration::from_secs(3600)),
        1,
    ));
    let fence = WriteFence::until(std::time::Instant::now() + Duration::from_millis(300));
    let writer = Writer {
        client: fake.client(),
        timeout: Duration::from_secs(3600),
        namespace: sandboxed_containers_operator::names::DEFAULT_OPERATOR_NAMESPACE.into(),
        fence: fence.clone(),
    };
    let label = Action::LabelNode("worker-0".into());
    let cut = tokio::time::timeout(Duration::from_secs(60), writer.execute(&kc, &label))
        .await
        .expect("the fence, not the hour-long timeout, ends the write")
        .expect_err("cut at the deadline");
    match &cut {
        ReconcileError::Timeout { timeout, .. } => assert!(
            *timeout <= Duration::from_millis(300),
            "bounded by what was left of the term, not the request timeout: {cut}"
        ),
        other => panic!("expected a timeout, got {other}"),
    }
    assert_eq!(fake.write_count_by("operator"), 1, "the one write was sent");

    // After the deadline nothing is sent at all, and the error says why.
    let refused = writer
        .execute(&kc, &label)
        .await
        .expect_err("the term has ended");
    assert_eq!(
        refused.to_string(),
        "setting label node-role.kubernetes.io/kata-oc on node worker-0: not written: this replica's leadership term has ended (the Lease was not renewed before its renew deadline, so another replica may lead)"
    );
    assert_eq!(fake.write_count_by("operator"), 1, "no second request");
    assert!(
        fake.get::<k8s_openapi::api::core::v1::Node>("worker-0")
            .and_then(|n| n.metadata.labels)
            .is_some_and(|l| !l.contains_key("node-role.kubernetes.io/kata-oc")),
        "the node was never labelled"
    );
}
