//! Scale benchmark of the whole operator (`run::run_with`: reconciler under leader election,
//! webhooks with their self-managed certificate, metrics, health) in-process against the
//! in-memory API server (`testkit::fake_api`).
//!
//! `cargo bench --bench operator_scale -- [--nodes N] [--namespaces M] [--reconciles K]
//! [--requests R]` (defaults 5000, 1000, 50, 2000). Prints one `RESULT key value` line per
//! number (hack/bench-scale.sh turns them into a table).
//!
//! Phases:
//! 1. Small cluster (3 masters, 3 workers, 10 namespaces): a real install through the MCO
//!    simulator, then admission latency over HTTPS. Its settled objects (KataConfig, pools,
//!    MachineConfigs, ContainerRuntimeConfig, RuntimeClass, node MCO annotations) are the
//!    template of phase 2: walking 5,000 nodes one at a time through the simulator would take
//!    hours, so the big cluster starts as a *finished* rollout.
//! 2. Big cluster: N workers (already kata-labelled, carrying the MCO annotations of the
//!    finished rollout) + 3 masters + M namespaces; the simulator runs once to recompute the
//!    pools' status for N nodes and is stopped. Baseline RSS is read here, before the operator.
//! 3. The operator starts on the big cluster and settles; then K reconciles are triggered by
//!    KataConfig annotation edits and K by node label edits, one at a time, and the process CPU
//!    time is divided by the reconciles counted in `kata_operator_reconciliations_total`.
//! 4. Admission latency on the big cluster, same requests as phase 1. Peak RSS last.
//!
//! Loopback only, every loop bounded.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, Patch, PatchParams, PostParams};
use sandboxed_containers_operator::api::{KataConfig, MachineConfigPool};
use sandboxed_containers_operator::cli::{Cli, Command, RunArgs};
use sandboxed_containers_operator::names::{
    KATA_ROLE_LABEL, MCO_CURRENT_CONFIG, MCO_DESIRED_CONFIG, MCO_REASON, MCO_STATE,
    NAMESPACE_POLICY_LABEL,
};
use sandboxed_containers_operator::observability::Metrics;
use sandboxed_containers_operator::observability::Readiness;
use sandboxed_containers_operator::run;
use serde_json::{Value, json};
use testkit::{FakeApi, McoSimulator, SimOptions, free_port, machine_config_json, node_json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "openshift-sandboxed-containers-operator";
const KATACONFIG: &str = "example-kataconfig";
/// Bound on every wait: a guard against hangs, not a timing expectation.
const WAIT: Duration = Duration::from_secs(600);

struct Opts {
    nodes: usize,
    namespaces: usize,
    reconciles: usize,
    requests: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        nodes: 5000,
        namespaces: 1000,
        reconciles: 50,
        requests: 2000,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).and_then(|v| v.parse::<usize>().ok());
        match (args[i].as_str(), v) {
            ("--nodes", Some(v)) => o.nodes = v,
            ("--namespaces", Some(v)) => o.namespaces = v,
            ("--reconciles", Some(v)) => o.reconciles = v.max(1),
            ("--requests", Some(v)) => o.requests = v.max(1),
            // `cargo bench` adds `--bench`; anything else is ignored too.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn result(key: &str, value: impl std::fmt::Display) {
    println!("RESULT {key} {value}");
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WAIT, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn run_args() -> (RunArgs, u16) {
    let (webhook, metrics, health) = (free_port(), free_port(), free_port());
    let cli = Cli::try_parse_from([
        "sandboxed-containers-operator",
        "run",
        "--namespace",
        NAMESPACE,
        "--identity",
        "bench-replica",
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
        Command::Run(args) => (args, webhook.port()),
        other => panic!("expected run, got {other:?}"),
    }
}

/// Realistic node metadata besides roles: the labels and annotations an OpenShift node carries
/// (OVN-Kubernetes annotations are the bulk), and managedFields of the writers of a real node.
fn realistic_node(name: &str, roles: &[&str], i: usize, mco: &BTreeMap<String, String>) -> Value {
    let mut node = node_json(
        name,
        roles,
        json!({
            "beta.kubernetes.io/arch": "amd64", "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux", "kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": "m6i.2xlarge",
            "topology.kubernetes.io/region": "us-east-1",
            "topology.kubernetes.io/zone": format!("us-east-1{}", ["a", "b", "c"][i % 3]),
            "node.openshift.io/os_id": "rhcos",
        }),
    );
    let mut ann: serde_json::Map<String, Value> =
        mco.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let ip = format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256);
    for (k, v) in [
        (
            "volumes.kubernetes.io/controller-managed-attach-detach",
            "true".to_string(),
        ),
        (
            "csi.volume.kubernetes.io/nodeid",
            format!("{{\"ebs.csi.aws.com\":\"i-0{i:016x}\"}}"),
        ),
        ("k8s.ovn.org/host-cidrs", format!("[\"{ip}/18\"]")),
        (
            "k8s.ovn.org/node-chassis-id",
            format!("{i:08x}-6d4c-4f3b-9a53-2f1c0e7b{i:04x}"),
        ),
        (
            "k8s.ovn.org/node-primary-ifaddr",
            format!("{{\"ipv4\":\"{ip}/18\"}}"),
        ),
        (
            "k8s.ovn.org/node-subnets",
            format!("{{\"default\":[\"10.128.{}.0/23\"]}}", i % 256),
        ),
        (
            "k8s.ovn.org/l3-gateway-config",
            format!(
                "{{\"default\":{{\"mode\":\"shared\",\"bridge-id\":\"br-ex\",\"interface-id\":\"br-ex_{name}\",\"mac-address\":\"02:4b:{:02x}:{:02x}:00:01\",\"ip-addresses\":[\"{ip}/18\"],\"next-hops\":[\"10.0.0.1\"],\"node-port-enable\":\"true\",\"vlan-id\":\"0\"}}}}",
                i % 256,
                i / 256 % 256
            ),
        ),
        (
            "k8s.ovn.org/node-mgmt-port-mac-addresses",
            format!(
                "{{\"default\":\"7a:1f:{:02x}:{:02x}:9c:01\"}}",
                i % 256,
                i / 256 % 256
            ),
        ),
        (
            "machineconfiguration.openshift.io/lastAppliedDrain",
            "uncordon-rendered".to_string(),
        ),
        (
            "machineconfiguration.openshift.io/lastSyncedControllerConfigResourceVersion",
            "48213".to_string(),
        ),
    ] {
        ann.insert(k.to_string(), json!(v));
    }
    node["metadata"]["annotations"] = Value::Object(ann);
    let field = |manager: &str, op: &str, fields: Value| {
        json!({"manager": manager, "operation": op, "apiVersion": "v1",
               "time": "2026-11-20T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields})
    };
    node["metadata"]["managedFields"] = json!([
        field(
            "kubelet",
            "Update",
            json!({"f:metadata": {"f:annotations": {".": {}, "f:volumes.kubernetes.io/controller-managed-attach-detach": {}},
            "f:labels": {".": {}, "f:beta.kubernetes.io/arch": {}, "f:beta.kubernetes.io/os": {}, "f:kubernetes.io/arch": {}, "f:kubernetes.io/hostname": {}, "f:kubernetes.io/os": {}, "f:node.kubernetes.io/instance-type": {}, "f:topology.kubernetes.io/region": {}, "f:topology.kubernetes.io/zone": {}}},
            "f:spec": {"f:providerID": {}}})
        ),
        field(
            "machine-config-daemon",
            "Update",
            json!({"f:metadata": {"f:annotations": {"f:machineconfiguration.openshift.io/currentConfig": {}, "f:machineconfiguration.openshift.io/desiredConfig": {}, "f:machineconfiguration.openshift.io/lastAppliedDrain": {}, "f:machineconfiguration.openshift.io/reason": {}, "f:machineconfiguration.openshift.io/state": {}}}})
        ),
        field(
            "ovnkube",
            "Update",
            json!({"f:metadata": {"f:annotations": {"f:k8s.ovn.org/host-cidrs": {}, "f:k8s.ovn.org/l3-gateway-config": {}, "f:k8s.ovn.org/node-chassis-id": {}, "f:k8s.ovn.org/node-mgmt-port-mac-addresses": {}, "f:k8s.ovn.org/node-primary-ifaddr": {}, "f:k8s.ovn.org/node-subnets": {}}}})
        ),
        field(
            "sandboxed-containers-operator",
            "Apply",
            json!({"f:metadata": {"f:labels": {"f:node-role.kubernetes.io/kata-oc": {}}}})
        ),
    ]);
    node
}

fn namespace_json(i: usize) -> Value {
    let mut labels = json!({"kubernetes.io/metadata.name": format!("ns-{i:04}")});
    // A third opt into kata by default, a few require it, the rest have no policy.
    match i % 10 {
        0 | 3 | 6 => labels[NAMESPACE_POLICY_LABEL] = json!("default"),
        9 => labels[NAMESPACE_POLICY_LABEL] = json!("require"),
        _ => {}
    }
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns-{i:04}"), "labels": labels}})
}

struct Operator {
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    webhook_port: u16,
}

impl Operator {
    fn start(fake: &FakeApi) -> Operator {
        let (args, webhook_port) = run_args();
        let metrics = Arc::new(Metrics::new());
        let readiness = Readiness::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run::run_with(
            fake.client(),
            args,
            metrics.clone(),
            readiness.clone(),
            shutdown.clone(),
        ));
        Operator {
            metrics,
            readiness,
            shutdown,
            task,
            webhook_port,
        }
    }

    fn reconciles(&self) -> u64 {
        ["success", "error", "invalid_spec"]
            .iter()
            .map(|l| self.metrics.reconciliations.with_label_values(&[l]).get())
            .sum()
    }

    fn duration_sum_count(&self) -> (f64, u64) {
        let h = &self.metrics.reconcile_duration;
        (h.get_sample_sum(), h.get_sample_count())
    }

    async fn ready(&self) {
        wait_for("operator ready", || {
            assert!(!self.task.is_finished(), "operator stopped early");
            self.readiness.check().is_ok()
        })
        .await;
    }

    /// Waits until no reconcile has run for `quiet`.
    async fn settle(&self, quiet: Duration) {
        let start = Instant::now();
        let (mut last, mut since) = (self.reconciles(), Instant::now());
        while since.elapsed() < quiet {
            assert!(start.elapsed() < WAIT, "operator never settled");
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.reconciles();
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(60), self.task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("operator did not stop cleanly: {other:?}"),
        }
    }
}

fn kata_config() -> KataConfig {
    serde_json::from_value(json!({
        "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
        "metadata": {"name": KATACONFIG},
        "spec": {"logLevel": "info"},
    }))
    .expect("kataconfig")
}

fn installed(fake: &FakeApi, nodes: usize) -> bool {
    fake.get::<KataConfig>(KATACONFIG)
        .and_then(|k| k.status)
        .is_some_and(|s| s.kata_nodes.ready_node_count as usize == nodes)
}

/// Objects of a settled install to copy into the big cluster, and the node MCO annotations.
struct Settled {
    objects: Vec<Value>,
    worker_mco: BTreeMap<String, String>,
    master_mco: BTreeMap<String, String>,
}

const COPIED: &[(&str, &str)] = &[
    // Owners first, so their new uids are known before the dependents' ownerReferences.
    ("kataconfiguration.openshift.io/v1", "kataconfigs"),
    (
        "machineconfiguration.openshift.io/v1",
        "containerruntimeconfigs",
    ),
    ("machineconfiguration.openshift.io/v1", "machineconfigpools"),
    ("machineconfiguration.openshift.io/v1", "machineconfigs"),
    ("node.k8s.io/v1", "runtimeclasses"),
];

fn mco_annotations(fake: &FakeApi, node: &str) -> BTreeMap<String, String> {
    let n = fake.get::<Node>(node).expect("node");
    let ann = n.metadata.annotations.unwrap_or_default();
    [
        MCO_CURRENT_CONFIG,
        MCO_DESIRED_CONFIG,
        MCO_STATE,
        MCO_REASON,
    ]
    .iter()
    .filter_map(|k| ann.get(*k).map(|v| (k.to_string(), v.clone())))
    .collect()
}

#[derive(Default)]
struct Latency {
    p50: f64,
    p99: f64,
    mean: f64,
}

fn latency(mut samples: Vec<Duration>) -> Latency {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(samples[((samples.len() - 1) as f64 * q).round() as usize]);
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        mean: samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64,
    }
}

fn sample(name: &str, namespace: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("webhooks/samples")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).expect("sample review");
    let mut review: Value = serde_json::from_str(&text).expect("json");
    review["request"]["namespace"] = json!(namespace);
    review["request"]["object"]["metadata"]["namespace"] = json!(namespace);
    review
}

/// p50/p99 of `requests` sequential keep-alive HTTPS requests to /validate-pod and /mutate-pod.
async fn admission(fake: &FakeApi, op: &Operator, requests: usize) -> (Latency, Latency) {
    let https = testkit::https_client(&testkit::webhook_ca(fake, NAMESPACE));
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", op.webhook_port);
    let mutate = serde_json::to_vec(&sample("pod-plain-default", "ns-0000")).expect("body");
    let validate = serde_json::to_vec(&sample("pod-kata-default", "ns-0000")).expect("body");
    let post = |path: &'static str, body: &Vec<u8>| {
        https
            .post(url(path))
            .header("content-type", "application/json")
            .body(body.clone())
    };
    // Wait for the caches to serve the injection, so both clusters answer the same way.
    let start = Instant::now();
    loop {
        let resp: Value = post("/mutate-pod", &mutate)
            .send()
            .await
            .expect("mutate-pod")
            .json()
            .await
            .expect("review json");
        if resp["response"]["patch"].is_string() {
            break;
        }
        assert!(start.elapsed() < WAIT, "kata never injected: {resp}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut out = Vec::new();
    for (path, body) in [("/validate-pod", &validate), ("/mutate-pod", &mutate)] {
        for _ in 0..requests / 10 {
            let r = post(path, body).send().await.expect("warm-up");
            assert_eq!(r.status(), 200);
            r.bytes().await.expect("body");
        }
        let mut samples = Vec::with_capacity(requests);
        for _ in 0..requests {
            let t = Instant::now();
            let r = post(path, body).send().await.expect("request");
            assert_eq!(r.status(), 200, "{path}");
            let body = r.bytes().await.expect("body");
            samples.push(t.elapsed());
            assert!(!body.is_empty());
        }
        out.push(latency(samples));
    }
    let mutate = out.pop().unwrap_or_default();
    let validate = out.pop().unwrap_or_default();
    (validate, mutate)
}

/// Phase 1: a real install on a small cluster; admission latency; the settled objects.
async fn small_cluster(o: &Opts) -> Settled {
    let fake = FakeApi::new();
    for i in 0..3 {
        fake.insert_json(node_json(
            &format!("master-{i}"),
            &["master", "control-plane"],
            json!({}),
        ));
        fake.insert_json(node_json(&format!("worker-{i}"), &["worker"], json!({})));
    }
    fake.insert_json(machine_config_json("00-master", "master"));
    fake.insert_json(machine_config_json("00-worker", "worker"));
    for i in 0..10 {
        fake.insert_json(namespace_json(i));
    }
    let sim = McoSimulator::spawn(
        fake.client_as("mco-sim"),
        SimOptions {
            create_default_pools: true,
            step: Duration::from_millis(1),
        },
    )
    .await
    .expect("mco simulator");
    let op = Operator::start(&fake);
    Api::<KataConfig>::all(fake.client_as("admin"))
        .create(&PostParams::default(), &kata_config())
        .await
        .expect("create kataconfig");
    wait_for("small install", || installed(&fake, 3)).await;
    op.ready().await;
    op.settle(Duration::from_millis(500)).await;
    let (validate, mutate) = admission(&fake, &op, o.requests).await;
    for (k, l) in [("validate", &validate), ("mutate", &mutate)] {
        result(&format!("small.{k}.p50_ms"), format!("{:.3}", l.p50));
        result(&format!("small.{k}.p99_ms"), format!("{:.3}", l.p99));
        result(&format!("small.{k}.mean_ms"), format!("{:.3}", l.mean));
    }
    let settled = Settled {
        objects: COPIED
            .iter()
            .flat_map(|(v, p)| fake.list_json(v, p, None))
            .collect(),
        worker_mco: mco_annotations(&fake, "worker-0"),
        master_mco: mco_annotations(&fake, "master-0"),
    };
    op.stop().await;
    sim.stop().await;
    settled
}

/// Phase 2: the big cluster as a finished rollout.
async fn seed_big(fake: &FakeApi, o: &Opts, settled: &Settled) {
    let mut uids: BTreeMap<String, String> = BTreeMap::new();
    for obj in &settled.objects {
        let mut obj = obj.clone();
        let old_uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("uid");
            m.remove("resourceVersion");
        }
        for r in obj["metadata"]["ownerReferences"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if let Some(new) = r["uid"].as_str().and_then(|u| uids.get(u)) {
                r["uid"] = json!(new);
            }
        }
        let stored = fake.insert_json(obj);
        if let Some(new) = stored["metadata"]["uid"].as_str() {
            uids.insert(old_uid, new.to_string());
        }
    }
    for i in 0..3 {
        fake.insert_json(realistic_node(
            &format!("master-{i}"),
            &["master", "control-plane"],
            i,
            &settled.master_mco,
        ));
    }
    for i in 0..o.nodes {
        let mut node = realistic_node(&format!("worker-{i}"), &["worker"], i, &settled.worker_mco);
        node["metadata"]["labels"][KATA_ROLE_LABEL] = json!("");
        fake.insert_json(node);
    }
    for i in 0..o.namespaces {
        fake.insert_json(namespace_json(i));
    }
    // The pools' status for N nodes, computed by the simulator (nothing to roll out).
    let sim = McoSimulator::spawn(fake.client_as("mco-sim"), SimOptions::default())
        .await
        .expect("mco simulator");
    let n = i32::try_from(o.nodes).expect("node count fits i32");
    wait_for("pool status recomputed for every node", || {
        fake.get::<MachineConfigPool>("kata-oc")
            .and_then(|p| p.status)
            .is_some_and(|s| s.machine_count == n && s.updated_machine_count == n)
            && sim.seen_resource_version() >= fake.resource_version()
    })
    .await;
    assert_eq!(
        fake.write_count_by("mco-sim"),
        3,
        "the simulator only rewrote the 3 pools' status: nothing rolled out"
    );
    sim.stop().await;
}

/// CPU and wall time of `k` reconciles, each triggered by `touch(i)` and awaited.
async fn measure_reconciles<F, Fut>(op: &Operator, k: usize, mut touch: F) -> (f64, f64, u64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (sum0, count0) = op.duration_sum_count();
    let before = op.reconciles();
    let cpu = common::cpu_time();
    for i in 0..k {
        let target = op.reconciles() + 1;
        touch(i).await;
        wait_for("triggered reconcile", || op.reconciles() >= target).await;
    }
    let cpu = common::cpu_time().saturating_sub(cpu);
    let (sum1, count1) = op.duration_sum_count();
    let n = op.reconciles() - before;
    (
        cpu.as_secs_f64() * 1000.0 / n as f64,
        (sum1 - sum0) * 1000.0 / (count1 - count0).max(1) as f64,
        n,
    )
}

async fn big_cluster(o: &Opts, settled: Settled) {
    let fake = FakeApi::new();
    seed_big(&fake, o, &settled).await;
    drop(settled);
    result("baseline.rss_mib", mib(common::status_kib("VmRSS:")));
    result("baseline.hwm_mib", mib(common::status_kib("VmHWM:")));

    fake.clear_requests();
    let (cpu0, wall0) = (common::cpu_time(), Instant::now());
    let op = Operator::start(&fake);
    op.ready().await;
    wait_for("the operator reports every node installed", || {
        installed(&fake, o.nodes)
    })
    .await;
    op.settle(Duration::from_secs(1)).await;
    result(
        "startup.cpu_ms",
        common::cpu_time().saturating_sub(cpu0).as_millis(),
    );
    result("startup.wall_ms", wall0.elapsed().as_millis());
    result("startup.reconciles", op.reconciles());
    result("startup.operator_writes", fake.write_count_by("operator"));
    result("settled.rss_mib", mib(common::status_kib("VmRSS:")));

    // API-server + client cost of one write nobody watches, to read the numbers below against.
    let admin = fake.client_as("admin");
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "bench"}})).expect("cm");
    cms.create(&PostParams::default(), &cm).await.expect("cm");
    let cpu = common::cpu_time();
    for i in 0..o.reconciles {
        cms.patch(
            "bench",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": i.to_string()}})),
        )
        .await
        .expect("patch cm");
    }
    result(
        "api_write.cpu_ms",
        format!(
            "{:.3}",
            common::cpu_time().saturating_sub(cpu).as_secs_f64() * 1000.0 / o.reconciles as f64
        ),
    );

    fake.clear_requests();
    let kcs: Api<KataConfig> = Api::all(admin.clone());
    let (cpu, wall, n) = measure_reconciles(&op, o.reconciles, |i| {
        let kcs = kcs.clone();
        async move {
            kcs.patch(
                KATACONFIG,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"bench/touch": i.to_string()}}})),
            )
            .await
            .expect("touch kataconfig");
        }
    })
    .await;
    result("kc_touch.reconciles", n);
    result("kc_touch.cpu_ms", format!("{cpu:.2}"));
    result("kc_touch.wall_ms", format!("{wall:.2}"));
    result("kc_touch.operator_writes", fake.write_count_by("operator"));

    fake.clear_requests();
    let nodes: Api<Node> = Api::all(admin.clone());
    let total = o.nodes;
    let (cpu, wall, n) = measure_reconciles(&op, o.reconciles, |i| {
        let nodes = nodes.clone();
        async move {
            nodes
                .patch(
                    &format!("worker-{}", i * 97 % total),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {"bench/touch": i.to_string()}}})),
                )
                .await
                .expect("touch node");
        }
    })
    .await;
    result("node_touch.reconciles", n);
    result("node_touch.cpu_ms", format!("{cpu:.2}"));
    result("node_touch.wall_ms", format!("{wall:.2}"));
    result(
        "node_touch.operator_writes",
        fake.write_count_by("operator"),
    );

    let (validate, mutate) = admission(&fake, &op, o.requests).await;
    for (k, l) in [("validate", &validate), ("mutate", &mutate)] {
        result(&format!("big.{k}.p50_ms"), format!("{:.3}", l.p50));
        result(&format!("big.{k}.p99_ms"), format!("{:.3}", l.p99));
        result(&format!("big.{k}.mean_ms"), format!("{:.3}", l.mean));
    }
    result("final.rss_mib", mib(common::status_kib("VmRSS:")));
    result("peak.hwm_mib", mib(common::status_kib("VmHWM:")));
    op.stop().await;
}

fn main() {
    let o = opts();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    result("nodes", o.nodes);
    result("namespaces", o.namespaces);
    result("reconciles", o.reconciles);
    result("requests", o.requests);
    rt.block_on(async {
        let settled = small_cluster(&o).await;
        big_cluster(&o, settled).await;
    });
}
