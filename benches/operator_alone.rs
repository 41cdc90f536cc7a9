//! Memory and CPU of the operator alone, at scale: the operator's release binary runs as its own
//! process (`sandboxed-containers-operator run`, KUBECONFIG = its ServiceAccount) against an API
//! server in another process, and this bench reads the operator's `/proc/<pid>/status` and
//! `/proc/<pid>/stat`.
//!
//! `cargo bench --bench operator_alone -- [--nodes N] [--namespaces M] [--reconciles K]
//! [--events E] [--server fake|real] [--operator PATH] [--fake-apiserver PATH]`
//! (defaults 5004, 1000, 50, 500, fake, target/release/...). `--server real` needs
//! KUBEBUILDER_ASSETS (etcd + kube-apiserver, via `testkit::envtest`). Prints one
//! `RESULT key value` line per number; hack/bench-scale.sh builds the binaries and tabulates.
//!
//! 1. The API server: `fake-apiserver` (testkit's in-memory server over HTTPS, RBAC enforced for
//!    the operator's ServiceAccount as in-process) or a real kube-apiserver.
//! 2. N realistic nodes (3 masters, N-3 workers) created through the API by their writers, so
//!    managedFields are real: the kubelet creates the node (20 labels) and writes its status
//!    (40 images, conditions, addresses), ovnkube adds its annotations (about 1.5 KB), the MCO
//!    simulator (`testkit::McoSimulator`, playing the MCO) its per-node state; M namespaces.
//! 3. The operator starts; a KataConfig selects 3 workers; the simulator rolls them out. Once
//!    the KataConfig reports 3 ready nodes and no reconcile ran for 3 s: VmHWM (peak), VmRSS.
//! 4. K reconciles by KataConfig annotation edits and K by edits of the label the selector reads
//!    (on workers it leaves out), each awaited through `kata_operator_reconciliations_total`;
//!    CPU (utime+stime of the operator) per reconcile.
//! 5. E node events that change nothing the operator reads (a heartbeat annotation, or an
//!    NFD-style feature label, in turn): CPU per event, and the reconciles they caused (must
//!    be 0).
//!
//! Loopback only; every loop and wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use sandboxed_containers_operator::api::KataConfig;
use sandboxed_containers_operator::names::{MCO_CURRENT_CONFIG, NAMESPACE_POLICY_LABEL};
use serde_json::{Value, json};
use testkit::{McoSimulator, SimOptions};

const NAMESPACE: &str = "openshift-sandboxed-containers-operator";
const KATACONFIG: &str = "example-kataconfig";
/// Bound on every wait: a guard against hangs, not a timing expectation.
const WAIT: Duration = Duration::from_secs(900);
/// Requests in flight while seeding.
const PARALLEL: usize = 16;

struct Opts {
    nodes: usize,
    namespaces: usize,
    reconciles: usize,
    events: usize,
    real: bool,
    /// Small nodes: 5 labels, no annotations, no status (the first row of docs/scale.md).
    plain: bool,
    operator: PathBuf,
    fake_apiserver: PathBuf,
}

fn opts() -> Opts {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release");
    let mut o = Opts {
        nodes: 5004,
        namespaces: 1000,
        reconciles: 50,
        events: 500,
        real: false,
        plain: false,
        operator: target.join("sandboxed-containers-operator"),
        fake_apiserver: target.join("fake-apiserver"),
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        let n = v.parse::<usize>().ok();
        match (args[i].as_str(), n) {
            ("--nodes", Some(n)) => o.nodes = n.max(6),
            ("--namespaces", Some(n)) => o.namespaces = n,
            ("--reconciles", Some(n)) => o.reconciles = n.max(1),
            ("--events", Some(n)) => o.events = n.max(1),
            ("--server", _) => o.real = v == "real",
            ("--plain", _) => {
                o.plain = true;
                i += 1;
                continue;
            }
            ("--operator", _) => o.operator = PathBuf::from(v),
            ("--fake-apiserver", _) => o.fake_apiserver = PathBuf::from(v),
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

/// A `/proc/<pid>/status` field in KiB (`VmHWM:`, `VmRSS:`).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, from `/proc/<pid>/stat` (clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < WAIT, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The API server under test, and how to reach it.
enum Server {
    Fake {
        child: Child,
        dir: tempfile::TempDir,
    },
    Real {
        // Boxed: the harness is large and the fake's variant is not.
        env: Box<testkit::envtest::EnvTest>,
    },
}

struct Cluster {
    server: Server,
    url: String,
    ca_pem: String,
    admin: kube::Client,
    /// The operator's kubeconfig (its ServiceAccount).
    operator_kubeconfig: PathBuf,
}

impl Cluster {
    async fn client_as(&self, name: &str) -> kube::Client {
        let token = match &self.server {
            Server::Fake { .. } => format!("admin:{name}"),
            Server::Real { env } => env.token.clone(),
        };
        testkit::envtest::client_for(&self.url, &self.ca_pem, &token)
            .await
            .expect("admin client")
    }
}

async fn start_fake(o: &Opts) -> Cluster {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(&o.fake_apiserver)
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", o.fake_apiserver.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let line = std::io::BufReader::new(stdout)
        .lines()
        .next()
        .and_then(Result::ok)
        .unwrap_or_default();
    let url = line
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("fake-apiserver did not start: {line:?}"))
        .to_string();
    let ca_pem = std::fs::read_to_string(dir.path().join("ca.crt")).expect("ca.crt");
    let admin = testkit::envtest::client_for(&url, &ca_pem, "admin:admin")
        .await
        .expect("admin client");
    Cluster {
        operator_kubeconfig: dir.path().join("operator.kubeconfig"),
        server: Server::Fake { child, dir },
        url,
        ca_pem,
        admin,
    }
}

async fn start_real() -> Cluster {
    let env = testkit::envtest::start()
        .await
        .expect("--server real needs KUBEBUILDER_ASSETS");
    // The operator's ServiceAccount, bound to the generated RBAC, and a real token of it.
    env.operator_client(NAMESPACE)
        .await
        .expect("operator RBAC and ServiceAccount");
    let request = k8s_openapi::api::authentication::v1::TokenRequest {
        spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(7200),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
        env.client.clone(),
        NAMESPACE,
    )
    .create_token_request(
        sandboxed_containers_operator::packaging::OPERATOR_NAME,
        &PostParams::default(),
        &request,
    )
    .await
    .expect("token request")
    .status
    .expect("token")
    .token;
    let kubeconfig = env.dir.join("operator.kubeconfig");
    write_kubeconfig(&kubeconfig, &env.url, &env.ca_pem, &token);
    Cluster {
        url: env.url.clone(),
        ca_pem: env.ca_pem.clone(),
        admin: env.client.clone(),
        operator_kubeconfig: kubeconfig,
        server: Server::Real { env: Box::new(env) },
    }
}

fn write_kubeconfig(path: &Path, url: &str, ca_pem: &str, token: &str) {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: \"{token}\"\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n"
        ),
    )
    .expect("write kubeconfig");
}

/// What the kubelet creates: the node with its labels (20 on a worker) and provider id.
fn kubelet_node(name: &str, i: usize, master: bool) -> Value {
    let zone = format!("us-east-1{}", ["a", "b", "c"][i % 3]);
    let mut labels = json!({
        "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
        "node.kubernetes.io/instance-type": "m6i.2xlarge",
        "beta.kubernetes.io/instance-type": "m6i.2xlarge",
        "topology.kubernetes.io/region": "us-east-1", "topology.kubernetes.io/zone": zone,
        "failure-domain.beta.kubernetes.io/region": "us-east-1",
        "failure-domain.beta.kubernetes.io/zone": zone,
        "topology.ebs.csi.aws.com/zone": zone,
        "node.openshift.io/os_id": "rhcos",
        "feature.node.kubernetes.io/cpu-cpuid.AVX2": "true",
        "feature.node.kubernetes.io/cpu-cpuid.AVX512F": "true",
        "feature.node.kubernetes.io/kernel-version.major": "5",
        "feature.node.kubernetes.io/system-os_release.ID": "rhcos",
        "feature.node.kubernetes.io/system-os_release.VERSION_ID": "4.18",
    });
    if master {
        labels["node-role.kubernetes.io/master"] = json!("");
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    } else {
        labels["node-role.kubernetes.io/worker"] = json!("");
        labels["node.kubernetes.io/pool"] = json!("general");
    }
    // The KataConfig selects three workers.
    if !master && i < 3 {
        labels["custom-kata1"] = json!("test");
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name, "labels": labels,
            "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
        },
        "spec": {"providerID": format!("aws:///{zone}/i-0{i:016x}")},
    })
}

/// What the kubelet reports in `status`: 40 images, conditions, addresses, capacity.
fn kubelet_status(name: &str, i: usize) -> Value {
    let ip = format!("10.0.{}.{}", i / 256 % 256, i % 256);
    let images: Vec<Value> = (0..40)
        .map(|k| {
            json!({
                "names": [
                    format!("quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:{:064x}", k * 7919 + 1),
                    format!("quay.io/openshift-release-dev/ocp-v4.0-art-dev:component-{k}"),
                ],
                "sizeBytes": 400_000_000 + k * 1_000_003,
            })
        })
        .collect();
    let condition = |t: &str, status: &str, reason: &str| {
        json!({"type": t, "status": status, "reason": reason, "message": format!("kubelet reports {reason}"),
               "lastHeartbeatTime": "2026-11-20T10:00:00Z", "lastTransitionTime": "2026-11-20T09:00:00Z"})
    };
    json!({"status": {
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name},
                      {"type": "InternalDNS", "address": format!("{name}.ec2.internal")}],
        "capacity": {"cpu": "8", "memory": "32386076Ki", "pods": "250", "ephemeral-storage": "125293548Ki", "hugepages-1Gi": "0", "hugepages-2Mi": "0"},
        "allocatable": {"cpu": "7500m", "memory": "31235100Ki", "pods": "250", "ephemeral-storage": "114396791822", "hugepages-1Gi": "0", "hugepages-2Mi": "0"},
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            condition("Ready", "True", "KubeletReady"),
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {"machineID": format!("{i:032x}"), "systemUUID": format!("ec2{i:05x}-0000-0000-0000-000000000000"),
                     "bootID": format!("{i:08x}-1111-2222-3333-444455556666"), "kernelVersion": "5.14.0-427.el9_4.x86_64",
                     "osImage": "Red Hat Enterprise Linux CoreOS 418.94", "containerRuntimeVersion": "cri-o://1.31.4",
                     "kubeletVersion": "v1.31.4", "kubeProxyVersion": "v1.31.4", "operatingSystem": "linux", "architecture": "amd64"},
        "images": images,
    }})
}

/// What ovnkube annotates (about 1.5 KB).
fn ovn_annotations(name: &str, i: usize) -> Value {
    let ip = format!("10.0.{}.{}", i / 256 % 256, i % 256);
    json!({"metadata": {"annotations": {
        "k8s.ovn.org/host-cidrs": format!("[\"{ip}/18\"]"),
        "k8s.ovn.org/node-chassis-id": format!("{i:08x}-6d4c-4f3b-9a53-2f1c0e7b{:04x}", i % 65536),
        "k8s.ovn.org/node-primary-ifaddr": format!("{{\"ipv4\":\"{ip}/18\"}}"),
        "k8s.ovn.org/node-subnets": format!("{{\"default\":[\"10.{}.{}.0/23\"]}}", 128 + i / 128 % 64, i % 128 * 2),
        "k8s.ovn.org/l3-gateway-config": format!(
            "{{\"default\":{{\"mode\":\"shared\",\"bridge-id\":\"br-ex\",\"interface-id\":\"br-ex_{name}\",\"mac-address\":\"02:4b:{:02x}:{:02x}:00:01\",\"ip-addresses\":[\"{ip}/18\"],\"ip-address\":\"{ip}/18\",\"next-hops\":[\"10.0.0.1\"],\"next-hop\":\"10.0.0.1\",\"node-port-enable\":\"true\",\"vlan-id\":\"0\"}}}}",
            i % 256, i / 256 % 256),
        "k8s.ovn.org/node-mgmt-port-mac-addresses": format!("{{\"default\":\"7a:1f:{:02x}:{:02x}:9c:01\"}}", i % 256, i / 256 % 256),
        "k8s.ovn.org/node-gateway-router-lrp-ifaddrs": format!("{{\"default\":{{\"ipv4\":\"100.64.{}.{}/16\"}}}}", i / 256 % 256, i % 256),
        "k8s.ovn.org/node-transit-switch-port-ifaddr": format!("{{\"ipv4\":\"100.88.{}.{}/16\"}}", i / 256 % 256, i % 256),
        "k8s.ovn.org/node-id": i.to_string(),
        "k8s.ovn.org/zone-name": name,
        "k8s.ovn.org/node-masquerade-subnet": "{\"ipv4\":\"169.254.0.0/17\",\"ipv6\":\"fd69::/112\"}",
        "k8s.ovn.org/remote-zone-migrated": name,
        "k8s.ovn.org/network-ids": "{\"default\":\"0\"}",
        "csi.volume.kubernetes.io/nodeid": format!("{{\"ebs.csi.aws.com\":\"i-0{i:016x}\"}}"),
    }}})
}

fn patch_as(manager: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(manager.to_string()),
        ..Default::default()
    }
}

/// A small node: 5 labels, nothing else.
fn plain_node(name: &str, i: usize, master: bool) -> Value {
    let mut labels = json!({"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name});
    if master {
        labels["node-role.kubernetes.io/master"] = json!("");
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    } else {
        labels["node-role.kubernetes.io/worker"] = json!("");
        labels["topology.kubernetes.io/zone"] = json!(["a", "b", "c"][i % 3]);
    }
    if !master && i < 3 {
        labels["custom-kata1"] = json!("test");
    }
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
}

async fn create_node(nodes: &Api<Node>, name: String, i: usize, master: bool, plain: bool) {
    let json = if plain {
        plain_node(&name, i, master)
    } else {
        kubelet_node(&name, i, master)
    };
    let node: Node = serde_json::from_value(json).expect("node");
    let create = PostParams {
        field_manager: Some("kubelet".into()),
        ..Default::default()
    };
    nodes.create(&create, &node).await.expect("create node");
    if plain {
        return;
    }
    nodes
        .patch_status(
            &name,
            &patch_as("kubelet"),
            &Patch::Merge(kubelet_status(&name, i)),
        )
        .await
        .expect("node status");
    nodes
        .patch(
            &name,
            &patch_as("ovnkube"),
            &Patch::Merge(ovn_annotations(&name, i)),
        )
        .await
        .expect("ovn annotations");
    nodes
        .patch(
            &name,
            &patch_as("machine-config-daemon"),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "machineconfiguration.openshift.io/lastAppliedDrain": "uncordon-rendered",
                "machineconfiguration.openshift.io/lastSyncedControllerConfigResourceVersion": "48213",
                "machineconfiguration.openshift.io/post-config-action": "",
            }}})),
        )
        .await
        .expect("MCD annotations");
}

fn namespace_json(i: usize) -> Namespace {
    let mut labels = json!({"kubernetes.io/metadata.name": format!("ns-{i:04}")});
    match i % 10 {
        0 | 3 | 6 => labels[NAMESPACE_POLICY_LABEL] = json!("default"),
        9 => labels[NAMESPACE_POLICY_LABEL] = json!("require"),
        _ => {}
    }
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": format!("ns-{i:04}"), "labels": labels,
                     "annotations": {"openshift.io/sa.scc.mcs": "s0:c26,c5", "openshift.io/sa.scc.uid-range": "1000660000/10000"}}}))
    .expect("namespace")
}

async fn seed(cluster: &Cluster, o: &Opts) {
    let nodes: Api<Node> = Api::all(cluster.client_as("kubelet").await);
    let wanted: Vec<(String, usize, bool)> = (0..3)
        .map(|i| (format!("master-{i}"), i, true))
        .chain((0..o.nodes - 3).map(|i| (format!("worker-{i}"), i, false)))
        .collect();
    futures::stream::iter(wanted)
        .map(|(name, i, master)| create_node(&nodes, name, i, master, o.plain))
        .buffer_unordered(PARALLEL)
        .collect::<Vec<()>>()
        .await;
    let nss: Api<Namespace> = Api::all(cluster.admin.clone());
    futures::stream::iter(0..o.namespaces)
        .map(|i| {
            let nss = nss.clone();
            async move {
                match nss.create(&PostParams::default(), &namespace_json(i)).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => panic!("create namespace: {e}"),
                }
            }
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<()>>()
        .await;
    for (name, role) in [("00-master", "master"), ("00-worker", "worker")] {
        let mc = testkit::machine_config_json(name, role);
        let api: Api<sandboxed_containers_operator::api::MachineConfig> =
            Api::all(cluster.admin.clone());
        api.create(
            &PostParams::default(),
            &serde_json::from_value(mc).expect("machine config"),
        )
        .await
        .expect("create machine config");
    }
}

/// Nodes the simulator has not yet booted into their pool's rendering.
async fn nodes_without_mco_state(admin: &kube::Client) -> usize {
    let api: Api<Node> = Api::all(admin.clone());
    let list = api
        .list_metadata(&ListParams::default())
        .await
        .expect("list nodes");
    list.items
        .iter()
        .filter(|n| {
            n.metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key(MCO_CURRENT_CONFIG))
        })
        .count()
}

struct Operator {
    child: Child,
    metrics_port: u16,
    health_port: u16,
    http: reqwest::Client,
}

impl Operator {
    fn start(o: &Opts, cluster: &Cluster, log: &Path) -> Operator {
        let (webhook, metrics, health) = (
            testkit::free_port(),
            testkit::free_port(),
            testkit::free_port(),
        );
        let out = std::fs::File::create(log).expect("operator log");
        let child = Command::new(&o.operator)
            .args([
                "run",
                "--namespace",
                NAMESPACE,
                "--identity",
                "bench-replica",
            ])
            .arg("--webhook-bind")
            .arg(webhook.to_string())
            .arg("--webhook-url")
            .arg(format!("https://127.0.0.1:{}", webhook.port()))
            .arg("--metrics-insecure")
            .arg("--metrics-bind")
            .arg(metrics.to_string())
            .arg("--health-bind")
            .arg(health.to_string())
            .env("KUBECONFIG", &cluster.operator_kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("OPERATOR_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", o.operator.display()));
        Operator {
            child,
            metrics_port: metrics.port(),
            health_port: health.port(),
            http: reqwest::Client::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn ready(&self) -> bool {
        self.http
            .get(format!("http://127.0.0.1:{}/readyz", self.health_port))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// `kata_operator_reconciliations_total`, every result.
    async fn reconciles(&self) -> u64 {
        let Ok(resp) = self
            .http
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .send()
            .await
        else {
            return 0;
        };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("kata_operator_reconciliations_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Waits until no reconcile has run for `quiet`.
    async fn settle(&mut self, quiet: Duration) {
        let start = Instant::now();
        let (mut last, mut since) = (self.reconciles().await, Instant::now());
        while since.elapsed() < quiet {
            assert!(start.elapsed() < WAIT, "operator never settled");
            assert!(
                self.child.try_wait().ok().flatten().is_none(),
                "operator exited"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.reconciles().await;
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
    }

    fn stop(mut self) {
        // SIGTERM: the operator drains and releases its Lease.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn installed(admin: &kube::Client, n: i32) -> bool {
    Api::<KataConfig>::all(admin.clone())
        .get_opt(KATACONFIG)
        .await
        .ok()
        .flatten()
        .and_then(|k| k.status)
        .is_some_and(|s| s.kata_nodes.ready_node_count == n)
}

/// CPU per reconcile over `k` reconciles, each triggered by `touch(i)` and awaited.
async fn per_reconcile<F, Fut>(op: &Operator, k: usize, mut touch: F) -> (f64, u64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = op.reconciles().await;
    let cpu = cpu_time(op.pid());
    for i in 0..k {
        let target = op.reconciles().await + 1;
        touch(i).await;
        wait_for("triggered reconcile", || async {
            op.reconciles().await >= target
        })
        .await;
    }
    let cpu = cpu_time(op.pid()).saturating_sub(cpu);
    let n = op.reconciles().await - before;
    (cpu.as_secs_f64() * 1000.0 / n.max(1) as f64, n)
}

async fn bench(o: &Opts, cluster: &Cluster) {
    let t = Instant::now();
    seed(cluster, o).await;
    let sim = McoSimulator::spawn(
        cluster.client_as("mco-sim").await,
        SimOptions {
            create_default_pools: true,
            step: Duration::from_millis(50),
        },
    )
    .await
    .expect("mco simulator");
    wait_for("the simulator booted every node into its pool", || async {
        nodes_without_mco_state(&cluster.admin).await == 0
    })
    .await;
    result("seed.seconds", t.elapsed().as_secs());

    let log = std::env::temp_dir().join(format!("operator-alone-{}.log", std::process::id()));
    let mut op = Operator::start(o, cluster, &log);
    let pid = op.pid();
    let t = Instant::now();
    wait_for("operator ready", || async { op.ready().await }).await;
    result("ready.seconds", format!("{:.1}", t.elapsed().as_secs_f64()));
    result("ready.hwm_mib", mib(status_kib(pid, "VmHWM:")));
    let kc: KataConfig = serde_json::from_value(json!({
        "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
        "metadata": {"name": KATACONFIG},
        "spec": {"kataConfigPoolSelector": {"matchLabels": {"custom-kata1": "test"}}},
    }))
    .expect("kataconfig");
    let kcs: Api<KataConfig> = Api::all(cluster.admin.clone());
    wait_for("KataConfig created (webhook up)", || async {
        match kcs.create(&PostParams::default(), &kc).await {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 409 => true,
            Err(_) => false,
        }
    })
    .await;
    wait_for("3 kata nodes installed", || async {
        installed(&cluster.admin, 3).await
    })
    .await;
    result(
        "install.seconds",
        format!("{:.1}", t.elapsed().as_secs_f64()),
    );
    op.settle(Duration::from_secs(3)).await;
    let cpu_install = cpu_time(pid);
    result("install.cpu_ms", cpu_install.as_millis());
    result("install.reconciles", op.reconciles().await);
    result("installed.hwm_mib", mib(status_kib(pid, "VmHWM:")));
    result("settled.rss_mib", mib(status_kib(pid, "VmRSS:")));
    tokio::time::sleep(Duration::from_secs(10)).await;
    result("settled10s.rss_mib", mib(status_kib(pid, "VmRSS:")));

    let admin = cluster.admin.clone();
    let (cpu, n) = per_reconcile(&op, o.reconciles, |i| {
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

    let nodes: Api<Node> = Api::all(admin.clone());
    let workers = o.nodes - 3;
    let (cpu, n) = per_reconcile(&op, o.reconciles, |i| {
        let nodes = nodes.clone();
        async move {
            nodes
                .patch(
                    &format!("worker-{}", 3 + i * 97 % (workers - 3)),
                    &PatchParams::default(),
                    // The selector's key with a value it does not pick: read, so it reconciles,
                    // and the worker stays out of kata.
                    &Patch::Merge(
                        json!({"metadata": {"labels": {"custom-kata1": format!("not-kata-{i}")}}}),
                    ),
                )
                .await
                .expect("touch node label");
        }
    })
    .await;
    result("node_label.reconciles", n);
    result("node_label.cpu_ms", format!("{cpu:.2}"));

    // Node events nobody reads, on E different nodes: a heartbeat-like annotation, or a label
    // no selector reads (NFD refreshing a feature label), in turn.
    op.settle(Duration::from_secs(2)).await;
    let before = op.reconciles().await;
    let cpu = cpu_time(pid);
    futures::stream::iter(0..o.events)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                nodes
                    .patch(
                        &format!("worker-{}", i % workers),
                        &patch_as("ovnkube"),
                        &Patch::Merge(if i % 2 == 0 {
                            json!({"metadata": {"annotations": {"k8s.ovn.org/heartbeat": i.to_string()}}})
                        } else {
                            json!({"metadata": {"labels": {"feature.node.kubernetes.io/bench-refresh": i.to_string()}}})
                        }),
                    )
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(4)
        .try_collect::<Vec<()>>()
        .await
        .expect("heartbeat patches");
    // Let the last events arrive and be handled.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = cpu_time(pid).saturating_sub(cpu);
    result(
        "node_event.cpu_us",
        format!("{:.0}", cpu.as_secs_f64() * 1e6 / o.events as f64),
    );
    result("node_event.reconciles", op.reconciles().await - before);
    result("final.rss_mib", mib(status_kib(pid, "VmRSS:")));
    result("peak.hwm_mib", mib(status_kib(pid, "VmHWM:")));
    op.stop();
    sim.stop().await;
    result("operator.log", log.display());
}

fn main() {
    let o = opts();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    result("server", if o.real { "real" } else { "fake" });
    result("plain", o.plain);
    result("nodes", o.nodes);
    result("namespaces", o.namespaces);
    result("reconciles", o.reconciles);
    result("events", o.events);
    rt.block_on(async {
        let cluster = if o.real {
            start_real().await
        } else {
            start_fake(&o).await
        };
        bench(&o, &cluster).await;
        if let Server::Fake { mut child, dir } = cluster.server {
            // Closing its stdin stops it.
            drop(child.stdin.take());
            let _ = child.wait();
            drop(dir);
        }
    });
}
