//! The reconciler scenarios against a real kube-apiserver (envtest convention: etcd and
//! kube-apiserver from `KUBEBUILDER_ASSETS`) with the Machine Config Operator simulator.
//!
//! One test walks the whole lifecycle on one server (starting etcd + apiserver per scenario
//! would dominate the run): install, settled cluster without writes (checked by
//! resourceVersions, the real server has no request log), drift repair, selector edit, a
//! Degraded node and its recovery, a second KataConfig, uninstall blocked by a kata pod and
//! released when it finishes, and a crash mid-uninstall. Without the binaries it prints why it
//! skips and passes. The walk uses only Kubernetes API calls, so it also runs against the
//! in-memory API (`scenarios_on_the_in_memory_api`), which keeps the scenario itself honest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use sandboxed_containers_operator::api::{
    ContainerRuntimeConfig, KataConfig, MachineConfig, MachineConfigPool,
};
use sandboxed_containers_operator::cache::ClusterCache;
use sandboxed_containers_operator::names::{
    CONTAINER_RUNTIME_CONFIG, CONTROL_PLANE_ROLE_LABEL, CRIO_DROPIN_MC, EXTENSION_MC, FINALIZER,
    KATA_POOL, KATA_ROLE_LABEL, MASTER_ROLE_LABEL, MCO_CURRENT_CONFIG, RUNTIME_CLASS,
    WORKER_ROLE_LABEL,
};
use sandboxed_containers_operator::observability::Metrics;
use sandboxed_containers_operator::observability::Readiness;
use sandboxed_containers_operator::reconciler;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use testkit::{McoSimulator, SimHandle, SimOptions, envtest};
use tokio_util::sync::CancellationToken;

const HANG_GUARD: Duration = Duration::from_secs(120);

async fn wait<T, Fut>(what: &str, f: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    testkit::wait_until(what, HANG_GUARD, f).await
}

async fn get<K>(client: &Client, name: &str) -> Option<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::all(client.clone())
        .get_opt(name)
        .await
        .expect("API read")
}

async fn condition(client: &Client, kc: &str, type_: &str) -> Option<(String, String, String)> {
    let c = get::<KataConfig>(client, kc)
        .await?
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status, c.reason, c.message))
}

async fn ready(client: &Client, kc: &str) {
    let c = client.clone();
    wait(&format!("KataConfig {kc} Ready"), || {
        let c = c.clone();
        let kc = kc.to_string();
        async move {
            condition(&c, &kc, "Ready")
                .await
                .filter(|x| x.0 == "True")
                .map(|_| ())
        }
    })
    .await;
}

async fn kata_labelled(client: &Client) -> Vec<String> {
    let mut v: Vec<String> = Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("nodes")
        .items
        .iter()
        .filter(|n| n.labels().contains_key(KATA_ROLE_LABEL))
        .map(|n| n.name_any())
        .collect();
    v.sort();
    v
}

async fn apply_json<K>(client: &Client, obj: Value)
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(obj).expect("object");
    Api::<K>::all(client.clone())
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
}

/// Three masters, a worker per zone (`w0`, `w1`, ...), then the MCO simulator with the default
/// pools. `registered`: the nodes carry the OS and arch labels a kubelet registers.
async fn nodes_and_simulator(client: &Client, zones: &[&str], registered: bool) -> SimHandle {
    let node = |name: String, mut labels: Value| {
        if registered {
            labels["kubernetes.io/os"] = json!("linux");
            labels["kubernetes.io/arch"] = json!("amd64");
        }
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
    };
    for i in 0..3 {
        let roles = json!({MASTER_ROLE_LABEL: "", CONTROL_PLANE_ROLE_LABEL: ""});
        apply_json::<Node>(client, node(format!("m{i}"), roles)).await;
    }
    for (i, zone) in zones.iter().enumerate() {
        let labels = json!({WORKER_ROLE_LABEL: "", "zone": zone});
        apply_json::<Node>(client, node(format!("w{i}"), labels)).await;
    }
    McoSimulator::spawn(
        client.clone(),
        SimOptions {
            create_default_pools: true,
            step: Duration::from_millis(100),
        },
    )
    .await
    .expect("mco simulator")
}

struct Operator {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    readiness: Readiness,
    metrics: Arc<Metrics>,
}

impl Operator {
    /// Reconciles so far, whatever their result.
    fn reconciles(&self) -> u64 {
        ["success", "error", "invalid_spec"]
            .iter()
            .map(|l| self.metrics.reconciliations.with_label_values(&[l]).get())
            .sum()
    }

    /// Until no reconcile has run for `quiet`.
    async fn settle(&self, quiet: Duration) {
        let start = std::time::Instant::now();
        let (mut last, mut since) = (self.reconciles(), std::time::Instant::now());
        while since.elapsed() < quiet {
            assert!(start.elapsed() < HANG_GUARD, "the operator never settled");
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.reconciles() != last {
                (last, since) = (self.reconciles(), std::time::Instant::now());
            }
        }
    }
}

fn start_operator(client: &Client) -> Operator {
    let shutdown = CancellationToken::new();
    let readiness = Readiness::new();
    let metrics = Arc::new(Metrics::new());
    let cluster = ClusterCache::start(client.clone(), metrics.clone(), shutdown.clone());
    let task = tokio::spawn(reconciler::run(
        client.clone(),
        cluster,
        reconciler::Config {
            instance: Some("envtest".into()),
            request_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            ..Default::default()
        },
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));
    Operator {
        shutdown,
        task,
        readiness,
        metrics,
    }
}

async fn our_resource_versions(client: &Client) -> BTreeMap<String, Option<String>> {
    let mut m = BTreeMap::new();
    m.insert(
        "kc".into(),
        get::<KataConfig>(client, "example")
            .await
            .and_then(|o| o.resource_version()),
    );
    m.insert(
        "rc".into(),
        get::<RuntimeClass>(client, RUNTIME_CLASS)
            .await
            .and_then(|o| o.resource_version()),
    );
    for mc in [EXTENSION_MC, CRIO_DROPIN_MC] {
        m.insert(
            mc.into(),
            get::<MachineConfig>(client, mc)
                .await
                .and_then(|o| o.resource_version()),
        );
    }
    m.insert(
        "crc".into(),
        get::<ContainerRuntimeConfig>(client, CONTAINER_RUNTIME_CONFIG)
            .await
            .and_then(|o| o.resource_version()),
    );
    for n in Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("nodes")
        .items
    {
        m.insert(format!("node/{}", n.name_any()), n.resource_version());
    }
    m
}

#[tokio::test]
async fn scenarios_on_a_real_api_server() {
    // Prints why when KUBEBUILDER_ASSETS is not usable, and the test passes as skipped.
    let Some(env) = envtest::start().await else {
        return;
    };
    // The operator runs as its ServiceAccount under the generated RBAC, as OLM installs it.
    let operator = env
        .operator_client(sandboxed_containers_operator::names::DEFAULT_OPERATOR_NAMESPACE)
        .await
        .expect("operator ServiceAccount client");
    lifecycle(env.client.clone(), operator).await;
}

/// kube-controller-manager's node lifecycle controller puts `beta.kubernetes.io/os` and
/// `beta.kubernetes.io/arch` back on every node that lacks them: a real controller rewriting,
/// node by node, labels the planner does not read. That must wake no reconcile (at 2,000 nodes
/// it kept the operator reconciling twice a second for minutes); a label the selector reads must.
#[tokio::test]
async fn a_real_controller_relabelling_nodes_wakes_no_reconcile_on_a_real_api_server() {
    let Some(env) = envtest::start().await else {
        return;
    };
    if !env.has_controller_manager() {
        eprintln!(
            "SKIP: no kube-controller-manager in KUBEBUILDER_ASSETS: nothing relabels the nodes"
        );
        return;
    }
    let client = env.client.clone();
    let operator = env
        .operator_client(sandboxed_containers_operator::names::DEFAULT_OPERATOR_NAMESPACE)
        .await
        .expect("operator ServiceAccount client");
    // As a kubelet registers them: the controller copies the OS and arch into the beta labels.
    let _sim = nodes_and_simulator(&client, &["a", "b"], true).await;
    let op = start_operator(&operator);
    apply_json::<KataConfig>(
        &client,
        json!({"apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
            "metadata": {"name": "example"}, "spec": {"kataConfigPoolSelector": {"matchExpressions":
                [{"key": "zone", "operator": "NotIn", "values": ["z"]}]}}}),
    )
    .await;
    ready(&client, "example").await;
    const BETA: [&str; 2] = ["beta.kubernetes.io/os", "beta.kubernetes.io/arch"];
    let nodes = Api::<Node>::all(client.clone());
    let all_beta_labelled = || {
        let nodes = nodes.clone();
        async move {
            let list = nodes.list(&Default::default()).await.expect("nodes").items;
            list.iter()
                .all(|n| BETA.iter().all(|k| n.labels().contains_key(*k)))
                .then_some(list)
        }
    };
    let labelled = wait(
        "kube-controller-manager beta-labels every node",
        all_beta_labelled,
    )
    .await;
    let writer = |n: &Node| {
        n.managed_fields()
            .iter()
            .find(|f| {
                f.fields_v1
                    .as_ref()
                    .is_some_and(|v| v.0.to_string().contains("beta.kubernetes.io/os"))
            })
            .and_then(|f| f.manager.clone())
    };
    assert_eq!(
        writer(&labelled[0]).as_deref(),
        Some("kube-controller-manager"),
        "the beta labels come from the real controller"
    );
    op.settle(Duration::from_secs(2)).await;
    let before = op.reconciles();
    // Take them off every node; the controller puts them back, node by node.
    let strip = json!({"metadata": {"labels": {BETA[0]: null, BETA[1]: null}}});
    for n in &labelled {
        nodes
            .patch(
                &n.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&strip),
            )
            .await
            .expect("strip beta labels");
    }
    wait(
        "kube-controller-manager relabels every node",
        all_beta_labelled,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        op.reconciles(),
        before,
        "labels nothing reads, removed and put back on every node, woke the reconciler"
    );
    // A label the selector reads does wake it, so the count above could have moved.
    nodes
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"zone": "c"}}})),
        )
        .await
        .expect("edit zone");
    wait("a reconcile after a selected label changed", || async {
        (op.reconciles() > before).then_some(())
    })
    .await;
    op.shutdown.cancel();
    op.task.await.expect("join").expect("clean stop");
}

/// The same walk against the in-memory API, so the scenario itself is known to be right even
/// where the real binaries are missing.
#[tokio::test]
async fn scenarios_on_the_in_memory_api() {
    let api = testkit::FakeApi::new();
    lifecycle(api.client_as("admin"), api.client()).await;
}

/// `client` acts for the administrator and the MCO, `operator` is the operator's own client.
/// Nothing the operator asks may be refused: a 403 anywhere in its logs fails the walk.
async fn lifecycle(client: Client, operator: Client) {
    let logs =
        testkit::logs::capture("sandboxed_containers_operator=debug,kube_runtime=debug,warn");
    let sim = nodes_and_simulator(&client, &["a", "b", "a"], false).await;
    let op = start_operator(&operator);

    // 1. First install.
    apply_json::<KataConfig>(
        &client,
        json!({"apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
            "metadata": {"name": "example"}, "spec": {"logLevel": "debug"}}),
    )
    .await;
    ready(&client, "example").await;
    let kc = get::<KataConfig>(&client, "example").await.expect("kc");
    assert!(kc.finalizers().iter().any(|f| f == FINALIZER));
    let st = kc.status.expect("status");
    assert_eq!(st.kata_nodes.installed, ["w0", "w1", "w2"]);
    assert_eq!(st.runtime_classes, ["kata"]);
    assert_eq!(kata_labelled(&client).await, ["w0", "w1", "w2"]);
    assert!(op.readiness.check().is_ok());

    // 2. Settled: no object of ours changes, also across an operator restart.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = our_resource_versions(&client).await;
    op.shutdown.cancel();
    op.task.await.expect("join").expect("clean stop");
    let op = start_operator(&operator);
    let r = op.readiness.clone();
    wait("restarted operator ready", || {
        let r = r.clone();
        async move { r.check().is_ok().then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        before,
        our_resource_versions(&client).await,
        "settled cluster was written"
    );

    // 3. Drift: deleted RuntimeClass, edited MachineConfig.
    Api::<RuntimeClass>::all(client.clone())
        .delete(RUNTIME_CLASS, &DeleteParams::default())
        .await
        .expect("delete rc");
    let c = client.clone();
    wait("RuntimeClass restored", || {
        let c = c.clone();
        async move { get::<RuntimeClass>(&c, RUNTIME_CLASS).await }
    })
    .await;
    Api::<MachineConfig>::all(client.clone())
        .patch(
            EXTENSION_MC,
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
                "metadata": {"name": EXTENSION_MC}, "spec": {"extensions": ["usbguard"]}})),
        )
        .await
        .expect("edit mc");
    let c = client.clone();
    wait("extension MachineConfig restored", || {
        let c = c.clone();
        async move {
            get::<MachineConfig>(&c, EXTENSION_MC)
                .await
                .filter(|m| m.spec.extensions == ["kata-containers"])
        }
    })
    .await;
    ready(&client, "example").await;

    // 4. Selector edit: zone b only.
    Api::<KataConfig>::all(client.clone())
        .patch(
            "example",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"kataConfigPoolSelector": {"matchLabels": {"zone": "b"}}}}),
            ),
        )
        .await
        .expect("edit selector");
    let c = client.clone();
    wait("only w1 installed, w0/w2 back on worker", || {
        let c = c.clone();
        async move {
            let st = get::<KataConfig>(&c, "example").await?.status?;
            let ok = st.kata_nodes.installed == ["w1"]
                && st.kata_nodes.waiting_to_uninstall.is_empty()
                && st.kata_nodes.uninstalling.is_empty()
                && condition(&c, "example", "Ready").await?.0 == "True";
            ok.then_some(())
        }
    })
    .await;
    assert_eq!(kata_labelled(&client).await, ["w1"]);

    // 5. Degraded node, named with the MCO reason, then recovery.
    Api::<KataConfig>::all(client.clone())
        .patch(
            "example",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"kataConfigPoolSelector": null}})),
        )
        .await
        .expect("all workers again");
    let c = client.clone();
    wait("w0 labelled again", || {
        let c = c.clone();
        async move {
            kata_labelled(&c)
                .await
                .contains(&"w0".to_string())
                .then_some(())
        }
    })
    .await;
    sim.degrade_node("w0", "failed to drain node")
        .await
        .expect("degrade");
    let c = client.clone();
    let msg = wait("Degraded names w0", || {
        let c = c.clone();
        async move {
            condition(&c, "example", "Degraded")
                .await
                .filter(|x| x.0 == "True")
                .map(|x| x.2)
        }
    })
    .await;
    assert_eq!(msg, "Node w0 Degraded: failed to drain node");
    sim.recover_node("w0").await.expect("recover");
    ready(&client, "example").await;

    // 6. A second KataConfig is told which one is active.
    apply_json::<KataConfig>(
        &client,
        json!({"apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
            "metadata": {"name": "second"}, "spec": {}}),
    )
    .await;
    let c = client.clone();
    let (_, _, msg) = wait("second reported as duplicate", || {
        let c = c.clone();
        async move {
            condition(&c, "second", "Ready")
                .await
                .filter(|x| x.1 == "DuplicateKataConfig")
        }
    })
    .await;
    assert!(msg.contains("\"example\" is the active one"), "{msg}");
    Api::<KataConfig>::all(client.clone())
        .delete("second", &DeleteParams::default())
        .await
        .expect("delete second");

    // 7. Uninstall blocked by a running kata pod, released when it finishes, with a crash
    //    in the middle of the roll-back.
    apply_json::<Namespace>(
        &client,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}),
    )
    .await;
    // Applied, not created: with kube-controller-manager running it creates `default` itself.
    Api::<ServiceAccount>::namespaced(client.clone(), "team-a")
        .patch(
            "default",
            &PatchParams::apply("envtest").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "team-a"}})),
        )
        .await
        .expect("service account");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team-a");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web"},
            "spec": {"runtimeClassName": "kata", "automountServiceAccountToken": false,
                "containers": [{"name": "c", "image": "busybox"}]}}))
        .expect("pod"),
    )
    .await
    .expect("create pod");
    pods.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .expect("pod running");
    Api::<KataConfig>::all(client.clone())
        .delete("example", &DeleteParams::default())
        .await
        .expect("delete kataconfig");
    let c = client.clone();
    let msg = wait("BlockedByExistingKataPods", || {
        let c = c.clone();
        async move {
            condition(&c, "example", "InProgress")
                .await
                .filter(|x| x.1 == "BlockedByExistingKataPods")
                .map(|x| x.2)
        }
    })
    .await;
    assert!(msg.contains("team-a/web"), "{msg}");
    assert!(
        get::<RuntimeClass>(&client, RUNTIME_CLASS).await.is_some(),
        "nothing removed while blocked"
    );
    pods.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .expect("pod finished");
    let c = client.clone();
    wait("uninstall under way", || {
        let c = c.clone();
        async move {
            get::<MachineConfig>(&c, EXTENSION_MC)
                .await
                .is_none()
                .then_some(())
        }
    })
    .await;
    op.task.abort();
    let _ = op.task.await;
    op.shutdown.cancel();
    let op = start_operator(&operator);
    let c = client.clone();
    wait("KataConfig gone", || {
        let c = c.clone();
        async move {
            get::<KataConfig>(&c, "example")
                .await
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(
        get::<MachineConfig>(&client, CRIO_DROPIN_MC)
            .await
            .is_none()
    );
    assert!(get::<MachineConfigPool>(&client, KATA_POOL).await.is_none());
    assert!(get::<RuntimeClass>(&client, RUNTIME_CLASS).await.is_none());
    assert!(
        get::<ContainerRuntimeConfig>(&client, CONTAINER_RUNTIME_CONFIG)
            .await
            .is_none()
    );
    assert!(kata_labelled(&client).await.is_empty());
    for w in ["w0", "w1", "w2"] {
        let n = get::<Node>(&client, w).await.expect("node");
        let cur = n
            .annotations()
            .get(MCO_CURRENT_CONFIG)
            .cloned()
            .unwrap_or_default();
        assert!(cur.starts_with("rendered-worker-"), "{w} on {cur}");
    }
    op.shutdown.cancel();
    op.task.await.expect("join").expect("clean stop");
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

// ---------------------------------------------------------------- the fake refuses as the real server does

/// RBAC for the probe ServiceAccount `probe/probe`: in `probe`, ConfigMaps may be patched and
/// updated (not created or deleted) and Secrets created; KataConfig finalizers are out of reach.
fn probe_rbac() -> Vec<Value> {
    vec![
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "probe", "namespace": "probe"},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["patch", "update"]},
                         {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "probe", "namespace": "probe"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "probe"},
               "subjects": [{"kind": "ServiceAccount", "name": "probe", "namespace": "probe"}]}),
    ]
}

/// The refusals of one server for the same requests: (code, reason, message, details name/kind).
async fn refusals(admin: &Client, probe: &Client) -> Vec<(u16, String, String, String, String)> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let owner: KataConfig = Api::<KataConfig>::all(admin.clone())
        .patch(
            "owner",
            &PatchParams::apply("probe").force(),
            &Patch::Apply(json!({"apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig", "metadata": {"name": "owner"}, "spec": {}})),
        )
        .await
        .expect("owner KataConfig");
    let owner_ref = |block: bool| {
        json!([{"apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
                "name": "owner", "uid": owner.uid(), "blockOwnerDeletion": block}])
    };
    let cms: Api<ConfigMap> = Api::namespaced(probe.clone(), "probe");
    let mut out = Vec::new();
    let mut record = |r: Result<ConfigMap, kube::Error>| match r {
        Err(kube::Error::Api(s)) => {
            let (name, kind) = s
                .details
                .as_ref()
                .map(|d| (d.name.clone(), d.kind.clone()))
                .unwrap_or_default();
            out.push((s.code, s.reason.clone(), s.message.clone(), name, kind));
        }
        other => panic!("expected a refusal, got {other:?}"),
    };
    // 1. An apply that would create the object: authorized as patch, refused as create.
    record(
        cms.patch(
            "applied",
            &PatchParams::apply("probe").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "namespace": "probe"}})),
        )
        .await,
    );
    // 2. A verb the role lacks, at the request filter.
    record(
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "plain"}})).expect("cm"),
        )
        .await,
    );
    // 3. Changing ownerReferences of an existing object without `delete` on it.
    Api::<ConfigMap>::namespaced(admin.clone(), "probe")
        .patch(
            "owned",
            &PatchParams::apply("probe").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned", "namespace": "probe"}})),
        )
        .await
        .expect("admin creates");
    record(
        cms.patch(
            "owned",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"ownerReferences": owner_ref(false)}})),
        )
        .await,
    );
    let mut record_secret = |r: Result<Secret, kube::Error>| match r {
        Err(kube::Error::Api(s)) => {
            let (name, kind) = s
                .details
                .as_ref()
                .map(|d| (d.name.clone(), d.kind.clone()))
                .unwrap_or_default();
            out.push((s.code, s.reason.clone(), s.message.clone(), name, kind));
        }
        other => panic!("expected a refusal, got {other:?}"),
    };
    // 4. A new blocking ownerReference without `update` on the owner's finalizers.
    record_secret(
        Api::<Secret>::namespaced(probe.clone(), "probe")
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"metadata": {"name": "blocking", "ownerReferences": owner_ref(true)}}),
                )
                .expect("secret"),
            )
            .await,
    );
    // 5. A listing across all namespaces, refused with the cluster-scope sentence.
    record_secret(
        Api::<Secret>::all(probe.clone())
            .list(&Default::default())
            .await
            .map(|_| Secret::default()),
    );
    out
}

#[tokio::test]
async fn the_in_memory_api_refuses_exactly_as_the_real_api_server() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let probe = env
        .service_account_client("probe", "probe", probe_rbac())
        .await
        .expect("probe ServiceAccount");
    let real = refusals(&env.client, &probe).await;

    let fake = testkit::FakeApi::new();
    for obj in probe_rbac() {
        fake.insert_json(obj);
    }
    let fake_probe = fake.client_as_user(
        "probe",
        testkit::UserInfo::service_account("probe", "probe"),
    );
    let modelled = refusals(&fake.client_as("admin"), &fake_probe).await;
    assert_eq!(
        modelled, real,
        "the in-memory API server must refuse as the real one does"
    );
}
