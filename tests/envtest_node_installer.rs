//! The node-installer backend against a real kube-apiserver that does not serve the Machine
//! Config Operator (vanilla Kubernetes), with the real kube-controller-manager's DaemonSet
//! controller creating the installer pods when the assets folder has it. The operator runs as
//! its ServiceAccount under the generated RBAC; `testkit::InstallerSimulator` plays only the
//! scheduler (binding), the kubelet and kata-deploy. Without the binaries it prints why and
//! passes as skipped (hack/test.sh counts it skipped).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use sandboxed_containers_operator::api::{Backend, KataConfig};
use sandboxed_containers_operator::cache::ClusterCache;
use sandboxed_containers_operator::names::{
    CONTROL_PLANE_ROLE_LABEL, DEFAULT_OPERATOR_NAMESPACE, KATA_ROLE_LABEL, KATA_RUNTIME_LABEL,
    NODE_INSTALLER, RUNTIME_CLASS,
};
use sandboxed_containers_operator::observability::{Metrics, Readiness};
use sandboxed_containers_operator::packaging::manifests;
use sandboxed_containers_operator::reconciler;
use serde_json::json;
use testkit::envtest::{self, Platform};
use testkit::{InstallerSimOptions, InstallerSimulator};
use tokio_util::sync::CancellationToken;

const HANG_GUARD: Duration = Duration::from_secs(120);
const NAMESPACE: &str = DEFAULT_OPERATOR_NAMESPACE;

async fn wait<T, Fut>(what: &str, f: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    testkit::wait_until(what, HANG_GUARD, f).await
}

/// Nodes that stay Ready: without a kubelet the node lifecycle controller would taint them
/// unreachable and the DaemonSet controller would skip them.
fn heartbeat(client: Client, names: Vec<String>, stop: CancellationToken) {
    tokio::spawn(async move {
        let nodes: Api<Node> = Api::all(client);
        loop {
            let now = rfc3339_now();
            let status = json!({"status": {"conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }]}});
            for n in &names {
                let _ = nodes
                    .patch_status(n, &PatchParams::default(), &Patch::Strategic(&status))
                    .await;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                () = stop.cancelled() => return,
            }
        }
    });
}

fn rfc3339_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

async fn kata_config(client: &Client) -> Option<KataConfig> {
    Api::<KataConfig>::all(client.clone())
        .get_opt("example")
        .await
        .ok()
        .flatten()
}

async fn labelled(client: &Client, label: &str) -> Vec<String> {
    let mut v: Vec<String> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .iter()
        .filter(|n| n.labels().contains_key(label))
        .map(|n| n.name_any())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn node_installer_backend_on_a_real_api_server_without_the_mco() {
    let Some(env) = envtest::start_on(Platform::Vanilla).await else {
        return;
    };
    let logs = testkit::logs::capture("sandboxed_containers_operator=debug,warn");
    let admin = env.client.clone();
    let operator = env
        .operator_client(NAMESPACE)
        .await
        .expect("operator ServiceAccount client");
    for obj in manifests::installer_rbac(NAMESPACE).expect("installer RBAC") {
        env.apply_json(obj).await.expect("installer RBAC applies");
    }
    let names: Vec<String> = vec!["cp".into(), "n0".into(), "n1".into()];
    for n in &names {
        let labels = if n == "cp" {
            json!({CONTROL_PLANE_ROLE_LABEL: ""})
        } else {
            json!({})
        };
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": labels},
        }))
        .expect("node");
        Api::<Node>::all(admin.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }
    let stop = CancellationToken::new();
    heartbeat(admin.clone(), names, stop.clone());
    let mut sim_opts = InstallerSimOptions::in_memory(NAMESPACE);
    sim_opts.step = Duration::from_millis(200);
    // The real DaemonSet controller creates and deletes the pods when it runs.
    sim_opts.play_daemon_set_controller = !env.has_controller_manager();
    let sim = InstallerSimulator::spawn(admin.clone(), sim_opts);

    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let cache = ClusterCache::start(operator.clone(), metrics.clone(), shutdown.clone());
    let task = tokio::spawn(reconciler::run(
        operator.clone(),
        cache,
        reconciler::Config {
            instance: Some("envtest".into()),
            request_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            namespace: NAMESPACE.into(),
            ..Default::default()
        },
        metrics,
        Readiness::new(),
        shutdown.clone(),
    ));

    // Install: the real API server accepts the DaemonSet, ConfigMap and RuntimeClass as built.
    let kc: KataConfig = serde_json::from_value(json!({
        "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
        "metadata": {"name": "example"}, "spec": {},
    }))
    .expect("kataconfig");
    Api::<KataConfig>::all(admin.clone())
        .create(&PostParams::default(), &kc)
        .await
        .expect("create kataconfig");
    let status = wait("kata installed on n0 and n1", || async {
        let st = kata_config(&admin).await?.status?;
        let ready = st
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && st.kata_nodes.installed == ["n0", "n1"]).then_some(st)
    })
    .await;
    assert_eq!(status.backend, Some(Backend::NodeInstaller));
    assert_eq!(labelled(&admin, KATA_ROLE_LABEL).await, ["n0", "n1"]);
    assert_eq!(labelled(&admin, KATA_RUNTIME_LABEL).await, ["n0", "n1"]);
    let pods = Api::<Pod>::namespaced(admin.clone(), NAMESPACE);
    let installer_pods = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={NODE_INSTALLER}")))
        .await
        .expect("list pods")
        .items;
    assert_eq!(installer_pods.len(), 2, "one installer pod per kata node");
    if env.has_controller_manager() {
        assert!(
            installer_pods.iter().all(|p| p
                .owner_references()
                .iter()
                .any(|o| o.kind == "DaemonSet" && o.name == NODE_INSTALLER)),
            "the real DaemonSet controller owns the pods"
        );
    }
    let rc = Api::<RuntimeClass>::all(admin.clone())
        .get(RUNTIME_CLASS)
        .await
        .expect("RuntimeClass");
    assert_eq!(rc.handler, "kata");

    // Drift: a deleted ConfigMap comes back.
    Api::<ConfigMap>::namespaced(admin.clone(), NAMESPACE)
        .delete(NODE_INSTALLER, &DeleteParams::default())
        .await
        .expect("delete ConfigMap");
    wait("ConfigMap recreated", || async {
        Api::<ConfigMap>::namespaced(admin.clone(), NAMESPACE)
            .get_opt(NODE_INSTALLER)
            .await
            .ok()
            .flatten()
    })
    .await;

    // Uninstall: the nodes are cleaned by their installer pods, then everything goes.
    Api::<KataConfig>::all(admin.clone())
        .delete("example", &DeleteParams::default())
        .await
        .expect("delete kataconfig");
    wait("KataConfig gone", || async {
        kata_config(&admin).await.is_none().then_some(())
    })
    .await;
    assert!(
        Api::<DaemonSet>::namespaced(admin.clone(), NAMESPACE)
            .get_opt(NODE_INSTALLER)
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        Api::<RuntimeClass>::all(admin.clone())
            .get_opt(RUNTIME_CLASS)
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(
        labelled(&admin, KATA_ROLE_LABEL).await,
        Vec::<String>::new()
    );
    assert_eq!(
        labelled(&admin, KATA_RUNTIME_LABEL).await,
        Vec::<String>::new()
    );

    shutdown.cancel();
    tokio::time::timeout(HANG_GUARD, task)
        .await
        .expect("reconciler stops")
        .expect("join")
        .expect("reconciler ran cleanly");
    sim.stop().await;
    stop.cancel();
    let text = logs.text();
    assert!(
        !text.contains("is forbidden"),
        "a 403 reached the operator's logs"
    );
}
