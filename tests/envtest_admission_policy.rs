//! The namespace gate that survives a webhook outage, against a real kube-apiserver: the whole
//! operator installs kata and registers its webhooks and the ValidatingAdmissionPolicy, then
//! every row of the policy table is tried with the operator running and again with it stopped
//! (the API server compiles and runs the generated CEL). Pods are created with `dryRun=All`,
//! which runs the whole admission chain (webhooks, the policy, the built-in RuntimeClass plugin)
//! and stores nothing; they are never scheduled. Skips (and says so) without
//! `KUBEBUILDER_ASSETS`.
//!
//! `measure_pod_creation_latency_real_api_server` (ignored; `hack/measure-admission-policy.sh`)
//! times pod creations with and without the policy's binding, operator stopped and running.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use sandboxed_containers_operator::api::{KataConfig, MachineConfig};
use sandboxed_containers_operator::cli::{Cli, Command, RunArgs};
use sandboxed_containers_operator::names::{
    DEFAULT_OPERATOR_NAMESPACE, KATA_ROLE_LABEL, NAMESPACE_POLICY, NAMESPACE_POLICY_LABEL,
};
use sandboxed_containers_operator::observability::{Metrics, Readiness};
use sandboxed_containers_operator::run;
use serde_json::{Value, json};
use testkit::{
    McoSimulator, SimHandle, SimOptions, envtest, free_port, machine_config_json, node_json,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const HANG_GUARD: Duration = Duration::from_secs(120);
const POD_WEBHOOKS: &str = "sandboxed-containers-operator-pod";

async fn wait_for<T, Fut>(what: &str, f: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    testkit::wait_until(what, HANG_GUARD, f).await
}

fn run_args(webhook: SocketAddr) -> RunArgs {
    let (metrics, health) = (free_port(), free_port());
    let cli = Cli::try_parse_from([
        "sandboxed-containers-operator",
        "run",
        "--namespace",
        DEFAULT_OPERATOR_NAMESPACE,
        "--identity",
        "envtest-operator",
        "--webhook-bind",
        &webhook.to_string(),
        "--webhook-url",
        &format!("https://127.0.0.1:{}", webhook.port()),
        "--metrics-bind",
        &metrics.to_string(),
        "--health-bind",
        &health.to_string(),
        "--metrics-insecure",
        "--discovery-interval-seconds",
        "5",
    ])
    .expect("run flags parse");
    match cli.command {
        Command::Run(args) => args,
        other => panic!("expected run, got {other:?}"),
    }
}

/// The operator, started and stopped as a whole.
struct Operator {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Operator {
    fn start(client: Client, webhook: SocketAddr) -> Operator {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run::run_with(
            client,
            run_args(webhook),
            Arc::new(Metrics::new()),
            Readiness::new(),
            shutdown.clone(),
        ));
        Operator { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(HANG_GUARD, self.task)
            .await
            .expect("the operator stops")
            .expect("join");
        assert!(result.is_ok(), "run_with ended with {result:?}");
    }
}

async fn apply_cluster<K>(client: &Client, obj: Value) -> K
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

fn pod(name: &str, runtime_class: Option<&str>, host_network: bool) -> Pod {
    let mut spec = json!({
        "automountServiceAccountToken": false,
        "containers": [{"name": "c", "image": "busybox"}],
    });
    if let Some(rc) = runtime_class {
        spec["runtimeClassName"] = json!(rc);
    }
    if host_network {
        spec["hostNetwork"] = json!(true);
    }
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}),
    )
    .expect("pod")
}

/// What the API server answered to a pod creation.
#[derive(Debug)]
enum Admission {
    Admitted(Box<Pod>),
    Refused(String),
}

impl Admission {
    fn runtime_class(&self) -> Option<&str> {
        match self {
            Admission::Admitted(p) => p.spec.as_ref()?.runtime_class_name.as_deref(),
            Admission::Refused(_) => None,
        }
    }

    fn refusal(&self) -> Option<&str> {
        match self {
            Admission::Refused(m) => Some(m),
            Admission::Admitted(_) => None,
        }
    }
}

/// Creates the pod with `dryRun=All`: the whole admission chain, nothing stored.
async fn create(client: &Client, namespace: &str, pod: &Pod) -> Admission {
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&params, pod)
        .await
    {
        Ok(p) => Admission::Admitted(Box::new(p)),
        Err(kube::Error::Api(s)) => Admission::Refused(s.message),
        Err(e) => panic!("create pod in {namespace}: {e}"),
    }
}

/// Admitted with the RuntimeClass's overhead and node selector on the pod.
fn assert_kata_scheduling(answer: &Admission, what: &str) {
    let Admission::Admitted(p) = answer else {
        panic!("{what}: refused: {answer:?}")
    };
    let spec = p.spec.as_ref().expect("spec");
    assert_eq!(spec.runtime_class_name.as_deref(), Some("kata"), "{what}");
    assert_eq!(
        spec.overhead
            .as_ref()
            .and_then(|o| o.get("memory"))
            .map(|q| q.0.as_str()),
        Some("350Mi"),
        "{what}: the RuntimeClass overhead"
    );
    assert_eq!(
        spec.node_selector
            .as_ref()
            .and_then(|n| n.get(KATA_ROLE_LABEL))
            .map(String::as_str),
        Some(""),
        "{what}: onto kata nodes only"
    );
}

fn assert_refused(answer: &Admission, what: &str, needle: &str) {
    let msg = answer.refusal().unwrap_or_else(|| {
        panic!(
            "{what}: admitted with runtimeClassName {:?}, expected a refusal containing {needle:?}",
            answer.runtime_class()
        )
    });
    assert!(msg.contains(needle), "{what}: {msg}");
    assert!(
        !msg.contains("failed calling webhook"),
        "{what}: refused by an unreachable webhook: {msg}"
    );
}

/// A cluster with three workers, the MCO simulator, `runc`, and a namespace per policy.
async fn prepare(env: &envtest::EnvTest) -> SimHandle {
    let admin = env.client.clone();
    for i in 0..3 {
        apply_cluster::<Node>(
            &admin,
            node_json(&format!("worker-{i}"), &["worker"], json!({})),
        )
        .await;
    }
    apply_cluster::<MachineConfig>(&admin, machine_config_json("00-worker", "worker")).await;
    // A pod naming a RuntimeClass is only admitted when it exists.
    apply_cluster::<RuntimeClass>(
        &admin,
        json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "runc"}, "handler": "runc"}),
    )
    .await;
    for (name, policy) in [
        ("ns-require", Some("require")),
        ("ns-default", Some("default")),
        ("ns-allow", Some("allow")),
        ("ns-deny", Some("deny")),
        ("ns-unknown", Some("always")),
        ("ns-plain", None),
    ] {
        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        if let Some(p) = policy {
            ns["metadata"]["labels"] = json!({NAMESPACE_POLICY_LABEL: p});
        }
        apply_cluster::<Namespace>(&admin, ns).await;
    }
    McoSimulator::spawn(
        admin,
        SimOptions {
            create_default_pools: true,
            step: Duration::from_millis(50),
        },
    )
    .await
    .expect("mco simulator")
}

/// Creates the KataConfig (default policy `allow`) once its webhook answers, and waits for kata
/// on the workers.
async fn install(admin: &Client) {
    let kcs: Api<KataConfig> = Api::all(admin.clone());
    wait_for("the KataConfig webhook admits a KataConfig", || {
        let kcs = kcs.clone();
        async move {
            let kc: KataConfig = serde_json::from_value(json!({
                "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
                "metadata": {"name": "example"},
                "spec": {"namespacePolicy": {"default": "allow"}},
            }))
            .expect("kc");
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
    wait_for("kata installed on the 3 workers", || {
        let kcs = kcs.clone();
        async move {
            let s = kcs.get("example").await.ok()?.status?;
            (s.kata_nodes.ready_node_count == 3 && s.runtime_classes == ["kata"]).then_some(())
        }
    })
    .await;
}

/// The policy and binding exist, the API server type-checked the policy without a warning, and
/// the pod webhooks fail open.
async fn wait_policy_in_force(admin: &Client) {
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(admin.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(admin.clone());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(admin.clone());
    wait_for("the ValidatingAdmissionPolicy applied", || {
        let policies = policies.clone();
        async move { policies.get_opt(NAMESPACE_POLICY).await.ok()?.map(|_| ()) }
    })
    .await;
    // kube-controller-manager's status controller type-checks the policy.
    let policy = wait_for("the ValidatingAdmissionPolicy type-checked", || {
        let policies = policies.clone();
        async move {
            let p = policies.get_opt(NAMESPACE_POLICY).await.ok()??;
            let checked = p.status.as_ref()?.observed_generation == p.metadata.generation;
            checked.then_some(p)
        }
    })
    .await;
    let warnings = policy
        .status
        .and_then(|s| s.type_checking)
        .and_then(|t| t.expression_warnings)
        .unwrap_or_default();
    assert!(
        warnings.is_empty(),
        "the API server's type check warns: {warnings:#?}"
    );
    wait_for("the binding names the KataConfig", || {
        let bindings = bindings.clone();
        async move {
            let b = bindings.get_opt(NAMESPACE_POLICY).await.ok()??;
            (b.spec?.param_ref?.name.as_deref() == Some("example")).then_some(())
        }
    })
    .await;
    wait_for("the pod webhooks fail open", || {
        let (mutating, validating) = (mutating.clone(), validating.clone());
        async move {
            let m = mutating.get_opt(POD_WEBHOOKS).await.ok()??;
            let v = validating.get_opt(POD_WEBHOOKS).await.ok()??;
            let all_ignore = m
                .webhooks?
                .iter()
                .map(|w| w.failure_policy.clone())
                .chain(v.webhooks?.iter().map(|w| w.failure_policy.clone()))
                .all(|f| f.as_deref() == Some("Ignore"));
            all_ignore.then_some(())
        }
    })
    .await;
    // The API server's admission plugin reads policies and bindings from its own informer, which
    // may trail what was just written (a repaired edit, a re-created binding): wait until the
    // policy itself refuses a pod. It runs before the validating webhooks, so with the operator
    // running too its refusal carries the policy's name.
    let by_the_policy = format!("ValidatingAdmissionPolicy '{NAMESPACE_POLICY}'");
    wait_for("the API server enforces the policy", || {
        let by_the_policy = by_the_policy.clone();
        async move {
            let answer = create(admin, "ns-require", &pod("runc", Some("runc"), false)).await;
            answer
                .refusal()
                .is_some_and(|m| m.contains(&by_the_policy))
                .then_some(())
        }
    })
    .await;
}

/// The rows of the table as a tenant sees them with the operator running: exactly the
/// webhooks' answers (kata injected with its overhead and node selector, the same refusals).
async fn check_rows_with_the_operator_running(admin: &Client) {
    // The webhook caches may trail the namespaces and RuntimeClass: wait for the first row.
    wait_for("kata injected in a require namespace", || async {
        (create(admin, "ns-require", &pod("plain", None, false))
            .await
            .runtime_class()
            == Some("kata"))
        .then_some(())
    })
    .await;
    for ns in ["ns-require", "ns-default"] {
        let what = format!("operator up, {ns}, no runtimeClassName");
        assert_kata_scheduling(&create(admin, ns, &pod("plain", None, false)).await, &what);
    }
    for ns in ["ns-allow", "ns-deny", "ns-plain"] {
        let answer = create(admin, ns, &pod("plain", None, false)).await;
        assert!(
            matches!(&answer, Admission::Admitted(_)) && answer.runtime_class().is_none(),
            "operator up, {ns}, no runtimeClassName: {answer:?}"
        );
    }
    for ns in ["ns-require", "ns-default", "ns-allow", "ns-plain"] {
        let what = format!("operator up, {ns}, kata");
        assert_kata_scheduling(
            &create(admin, ns, &pod("kata", Some("kata"), false)).await,
            &what,
        );
    }
    for ns in ["ns-default", "ns-allow", "ns-deny", "ns-plain"] {
        let answer = create(admin, ns, &pod("runc", Some("runc"), false)).await;
        assert_eq!(
            answer.runtime_class(),
            Some("runc"),
            "operator up, {ns}, runc"
        );
    }
    assert_refused(
        &create(admin, "ns-require", &pod("runc", Some("runc"), false)).await,
        "operator up, require, runc",
        "namespace \"ns-require\" has kataconfiguration.openshift.io/policy=require: every pod must run with kata, but this pod asks for RuntimeClass \"runc\"; remove spec.runtimeClassName to get kata",
    );
    assert_refused(
        &create(admin, "ns-deny", &pod("kata", Some("kata"), false)).await,
        "operator up, deny, kata",
        "namespace \"ns-deny\" has kataconfiguration.openshift.io/policy=deny: pods may not use the kata RuntimeClass \"kata\" here",
    );
    assert_refused(
        &create(admin, "ns-unknown", &pod("kata", Some("kata"), false)).await,
        "operator up, unknown value",
        "which is not a valid policy: use one of require, default, allow, deny",
    );
    assert_refused(
        &create(admin, "ns-plain", &pod("hostnet", Some("kata"), true)).await,
        "operator up, kata with hostNetwork",
        "pod hostnet asks for RuntimeClass \"kata\" with hostNetwork: a kata pod runs in its own virtual machine",
    );
}

/// The same rows with the operator stopped: the policy, inside the API server, holds the gate.
async fn check_rows_with_the_operator_stopped(admin: &Client) {
    assert_kata_scheduling(
        &create(admin, "ns-require", &pod("kata", Some("kata"), false)).await,
        "operator down, require, kata",
    );
    let did_not_run = "the operator's defaulting webhook did not run";
    assert_refused(
        &create(admin, "ns-require", &pod("plain", None, false)).await,
        "operator down, require, no runtimeClassName",
        &format!(
            "namespace \"ns-require\" has kataconfiguration.openshift.io/policy=require: pod plain has no spec.runtimeClassName, so kata was not injected: {did_not_run}"
        ),
    );
    assert_refused(
        &create(admin, "ns-require", &pod("runc", Some("runc"), false)).await,
        "operator down, require, runc",
        "every pod must run with kata, but this pod asks for RuntimeClass \"runc\"",
    );
    assert_refused(
        &create(admin, "ns-default", &pod("plain", None, false)).await,
        "operator down, default, no runtimeClassName",
        did_not_run,
    );
    assert_eq!(
        create(admin, "ns-default", &pod("runc", Some("runc"), false))
            .await
            .runtime_class(),
        Some("runc"),
        "operator down, default, runc"
    );
    assert_refused(
        &create(admin, "ns-deny", &pod("kata", Some("kata"), false)).await,
        "operator down, deny, kata",
        "namespace \"ns-deny\" has kataconfiguration.openshift.io/policy=deny: pods may not use the kata RuntimeClass \"kata\" here",
    );
    assert_refused(
        &create(admin, "ns-allow", &pod("hostnet", Some("kata"), true)).await,
        "operator down, kata with hostNetwork",
        "pod hostnet asks for RuntimeClass \"kata\" with hostNetwork",
    );
    assert_refused(
        &create(admin, "ns-unknown", &pod("plain", None, false)).await,
        "operator down, unknown value",
        "namespace \"ns-unknown\" has label kataconfiguration.openshift.io/policy=\"always\", which is not a valid policy: use one of require, default, allow, deny",
    );
    // Unlabelled under the default `allow`: untouched.
    for (name, rc) in [("plain", None), ("runc", Some("runc"))] {
        let answer = create(admin, "ns-plain", &pod(name, rc, false)).await;
        let Admission::Admitted(p) = &answer else {
            panic!("operator down, unlabelled, {name}: {answer:?}")
        };
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.runtime_class_name.as_deref(), rc, "unchanged");
        assert!(
            spec.overhead.is_none() && spec.node_selector.is_none(),
            "unchanged: {spec:?}"
        );
    }
    assert_kata_scheduling(
        &create(admin, "ns-plain", &pod("kata", Some("kata"), false)).await,
        "operator down, unlabelled, kata",
    );
    // The rest of the table: kata where the namespace allows it, unchanged what needs nothing.
    for ns in ["ns-default", "ns-allow"] {
        assert_kata_scheduling(
            &create(admin, ns, &pod("kata", Some("kata"), false)).await,
            &format!("operator down, {ns}, kata"),
        );
    }
    for (ns, name, rc) in [
        ("ns-allow", "plain", None),
        ("ns-allow", "runc", Some("runc")),
        ("ns-deny", "plain", None),
        ("ns-deny", "runc", Some("runc")),
    ] {
        let answer = create(admin, ns, &pod(name, rc, false)).await;
        assert!(
            matches!(&answer, Admission::Admitted(_)) && answer.runtime_class() == rc,
            "operator down, {ns}, {name}: {answer:?}"
        );
    }
    for (name, rc) in [("kata", Some("kata")), ("runc", Some("runc"))] {
        assert_refused(
            &create(admin, "ns-unknown", &pod(name, rc, false)).await,
            &format!("operator down, unknown value, {name}"),
            "which is not a valid policy",
        );
    }
    // The operator's own namespace is never gated.
    assert!(matches!(
        create(
            admin,
            DEFAULT_OPERATOR_NAMESPACE,
            &pod("plain", None, false)
        )
        .await,
        Admission::Admitted(_)
    ));
}

/// An edit and a deletion of the policy or binding are repaired by the watch, long before the
/// 10-minute resync.
async fn check_drift_is_repaired(admin: &Client) {
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(admin.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(admin.clone());
    bindings
        .delete(NAMESPACE_POLICY, &DeleteParams::default())
        .await
        .expect("delete the binding");
    wait_for("the binding restored", || {
        let bindings = bindings.clone();
        async move { bindings.get_opt(NAMESPACE_POLICY).await.ok()?.map(|_| ()) }
    })
    .await;
    policies
        .patch(
            NAMESPACE_POLICY,
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "replace", "path": "/spec/validations", "value": [{"expression": "true"}]}]))
                    .expect("patch"),
            ),
        )
        .await
        .expect("edit the policy");
    wait_for("the policy's rules restored", || {
        let policies = policies.clone();
        async move {
            let p = policies.get_opt(NAMESPACE_POLICY).await.ok()??;
            (p.spec?.validations?.len() > 1).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_gate_holds_with_the_operator_stopped_real_api_server() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let logs = testkit::logs::capture("sandboxed_containers_operator=info,warn");
    let admin = env.client.clone();
    let operator_client = env
        .operator_client(DEFAULT_OPERATOR_NAMESPACE)
        .await
        .expect("operator ServiceAccount client");
    let sim = prepare(&env).await;
    let webhook = free_port();

    let operator = Operator::start(operator_client.clone(), webhook);
    install(&admin).await;
    wait_policy_in_force(&admin).await;
    let kc = Api::<KataConfig>::all(admin.clone())
        .get("example")
        .await
        .expect("kataconfig");
    let gate = kc
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "NamespacePolicyInAPIServer")
        })
        .cloned()
        .expect("NamespacePolicyInAPIServer condition");
    assert_eq!(
        (gate.status.as_str(), gate.reason.as_str()),
        ("True", "ValidatingAdmissionPolicy")
    );
    check_rows_with_the_operator_running(&admin).await;
    check_drift_is_repaired(&admin).await;
    wait_policy_in_force(&admin).await;
    operator.stop().await;

    check_rows_with_the_operator_stopped(&admin).await;

    // The garbage collector removes the policy with the KataConfig, operator or not.
    if env.has_controller_manager() {
        let kcs: Api<KataConfig> = Api::all(admin.clone());
        kcs.patch(
            "example",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("drop the finalizer");
        kcs.delete("example", &DeleteParams::default())
            .await
            .expect("delete the KataConfig");
        let policies: Api<ValidatingAdmissionPolicy> = Api::all(admin.clone());
        let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(admin.clone());
        wait_for("policy and binding collected with the KataConfig", || {
            let (policies, bindings) = (policies.clone(), bindings.clone());
            async move {
                let gone = policies.get_opt(NAMESPACE_POLICY).await.ok()?.is_none()
                    && bindings.get_opt(NAMESPACE_POLICY).await.ok()?.is_none();
                gone.then_some(())
            }
        })
        .await;
    } else {
        println!(
            "note: no kube-controller-manager in KUBEBUILDER_ASSETS; garbage collection not checked"
        );
    }
    sim.stop().await;
    let text = logs.text();
    println!("every row checked with the operator running and stopped; drift repaired");
    assert!(
        text.contains("namespace policy enforced inside the API server"),
        "{text}"
    );
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("is forbidden") || l.contains("is invalid"))
        .collect();
    assert!(
        refused.is_empty(),
        "the operator was refused:\n{}",
        refused.join("\n")
    );
}

/// The API server's own time for one configuration, per pod creation, from its `/metrics`
/// histograms (the difference of `_sum` before and after, divided by the pods created). Only
/// the pod creations run admission for CREATE in the window (a stray Event adds noise).
#[derive(Debug, Default, Clone, Copy)]
struct ServerSide {
    /// The ValidatingAdmissionPolicy plugin (matching, namespace and parameter lookup, CEL).
    /// Its per-policy `check_duration` histogram records refusals only, so the plugin's.
    policy_ms: f64,
    /// The two webhook plugins (validating and mutating), a call that fails open included.
    webhooks_ms: f64,
    /// The whole validating step (every validating plugin).
    validate_step_ms: f64,
    /// The whole mutating step.
    admit_step_ms: f64,
}

/// Sum of a histogram's `_sum` over the series whose labels contain every one of `labels`.
fn histogram_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    let prefix = format!("{name}_sum{{");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn scrape(admin: &Client) -> ServerSide {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("metrics request");
    let text = admin
        .request_text(request)
        .await
        .expect("the API server's /metrics");
    let create = "operation=\"CREATE\"";
    let plugin = |name: &str| {
        let label = format!("name=\"{name}\"");
        histogram_sum(
            &text,
            "apiserver_admission_controller_admission_duration_seconds",
            &[&label, create],
        ) * 1000.0
    };
    let step = |kind: &str| {
        let label = format!("type=\"{kind}\"");
        histogram_sum(
            &text,
            "apiserver_admission_step_admission_duration_seconds",
            &[&label, create],
        ) * 1000.0
    };
    ServerSide {
        policy_ms: plugin("ValidatingAdmissionPolicy"),
        webhooks_ms: plugin("ValidatingAdmissionWebhook") + plugin("MutatingAdmissionWebhook"),
        validate_step_ms: step("validate"),
        admit_step_ms: step("admit"),
    }
}

/// One configuration measured: client-side median and p90 of a pod creation, and what the API
/// server spent on it.
struct Measured {
    median_ms: f64,
    p90_ms: f64,
    server: ServerSide,
}

/// `n` pod creations (`dryRun=All`, a plain pod) in `namespace`.
async fn time_creations(admin: &Client, namespace: &str, n: usize) -> Measured {
    let before = scrape(admin).await;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let answer = create(admin, namespace, &pod(&format!("p{i}"), None, false)).await;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(matches!(answer, Admission::Admitted(_)), "{answer:?}");
    }
    let after = scrape(admin).await;
    samples.sort_by(f64::total_cmp);
    let per_pod = |a: f64, b: f64| (a - b) / n as f64;
    Measured {
        median_ms: samples[n / 2],
        p90_ms: samples[n * 9 / 10],
        server: ServerSide {
            policy_ms: per_pod(after.policy_ms, before.policy_ms),
            webhooks_ms: per_pod(after.webhooks_ms, before.webhooks_ms),
            validate_step_ms: per_pod(after.validate_step_ms, before.validate_step_ms),
            admit_step_ms: per_pod(after.admit_step_ms, before.admit_step_ms),
        },
    }
}

/// Not a test: prints what the policy and the webhooks add to pod creation on a real API
/// server. `hack/measure-admission-policy.sh` runs it. Plain pods in a namespace labelled
/// `allow`: the validating webhook `vpod` reviews every pod there, the policy evaluates every
/// pod, and nothing needs defaulting, so each configuration admits the same pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hack/measure-admission-policy.sh"]
async fn measure_pod_creation_latency_real_api_server() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: usize = std::env::var("PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let admin = env.client.clone();
    let operator_client = env
        .operator_client(DEFAULT_OPERATOR_NAMESPACE)
        .await
        .expect("operator ServiceAccount client");
    let sim = prepare(&env).await;
    let operator = Operator::start(operator_client, free_port());
    install(&admin).await;
    wait_policy_in_force(&admin).await;
    // Warm-up: connections, caches, the policy's compiled programs.
    time_creations(&admin, "ns-allow", 30).await;
    let measure = |label: &'static str| {
        let admin = admin.clone();
        async move { (label, time_creations(&admin, "ns-allow", n).await) }
    };
    let mut rows = vec![measure("operator running: webhook vpod + policy").await];
    operator.stop().await;
    rows.push(measure("operator stopped: policy (webhooks fail open)").await);
    // The operator would restore what is removed below, so it stays stopped.
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(admin.clone());
    let kept = bindings.get(NAMESPACE_POLICY).await.expect("binding");
    bindings
        .delete(NAMESPACE_POLICY, &DeleteParams::default())
        .await
        .expect("delete binding");
    tokio::time::sleep(Duration::from_secs(2)).await;
    rows.push(measure("operator stopped: no binding (webhooks fail open)").await);
    let _ = Api::<MutatingWebhookConfiguration>::all(admin.clone())
        .delete(POD_WEBHOOKS, &DeleteParams::default())
        .await;
    let _ = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .delete(POD_WEBHOOKS, &DeleteParams::default())
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    rows.push(measure("baseline: no pod webhooks, no binding").await);
    let mut restored = kept;
    restored.metadata = kube::api::ObjectMeta {
        name: Some(NAMESPACE_POLICY.into()),
        ..Default::default()
    };
    bindings
        .create(&PostParams::default(), &restored)
        .await
        .expect("binding back");
    tokio::time::sleep(Duration::from_secs(2)).await;
    rows.push(measure("policy alone: binding, no pod webhooks").await);
    sim.stop().await;
    println!(
        "pod creations (dryRun=All, a plain pod in a namespace labelled allow), n={n} each;\nclient: median/p90 round trip; API server (/metrics, mean per creation): ValidatingAdmissionPolicy plugin, webhook plugins, validating step, mutating step"
    );
    for (label, m) in rows {
        let s = m.server;
        println!(
            "  {label:<52} client {:>6.2}/{:>6.2} ms | server policy {:>5.3} webhooks {:>5.3} validate {:>5.3} admit {:>5.3} ms",
            m.median_ms, m.p90_ms, s.policy_ms, s.webhooks_ms, s.validate_step_ms, s.admit_step_ms
        );
    }
}
