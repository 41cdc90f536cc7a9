//! The node-installer backend against the in-memory API server: a cluster that does not serve
//! `machineconfiguration.openshift.io` (vanilla Kubernetes), the real `reconciler::run` under the
//! generated RBAC, and `testkit::InstallerSimulator` playing the DaemonSet controller, the
//! kubelet and kata-deploy 4.1.0 on every node.
//!
//! Waits poll the fake store with a generous hang guard (never a timing assertion).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use sandboxed_containers_operator::api::{Backend, KataConfig};
use sandboxed_containers_operator::cache::ClusterCache;
use sandboxed_containers_operator::names::{
    CONTROL_PLANE_ROLE_LABEL, FINALIZER, KATA_ROLE_LABEL, KATA_RUNTIME_LABEL, NODE_INSTALLER,
    RUNTIME_CLASS,
};
use sandboxed_containers_operator::observability::{Metrics, Readiness};
use sandboxed_containers_operator::packaging::rbac::{self, ApiCall};
use sandboxed_containers_operator::reconciler;
use serde_json::{Value, json};
use testkit::{FakeApi, InstallerSimHandle, InstallerSimOptions, InstallerSimulator};
use tokio_util::sync::CancellationToken;

const HANG_GUARD: Duration = Duration::from_secs(60);
const NAMESPACE: &str = "openshift-sandboxed-containers-operator";
const MCO_GROUP: &str = "machineconfiguration.openshift.io";

struct Cluster {
    api: FakeApi,
    sim: InstallerSimHandle,
}

/// One control-plane node and `workers` nodes `n<i>` (zone=a for even i, b for odd), no MCO.
fn cluster(workers: usize) -> Cluster {
    let api = FakeApi::new();
    api.unserve_group(MCO_GROUP);
    api.insert(&node("cp", &[(CONTROL_PLANE_ROLE_LABEL, "")]));
    for i in 0..workers {
        let zone = if i % 2 == 0 { "a" } else { "b" };
        api.insert(&node(&format!("n{i}"), &[("zone", zone)]));
    }
    let sim = InstallerSimulator::spawn(
        api.client_as("installer-sim"),
        InstallerSimOptions::in_memory(NAMESPACE),
    );
    Cluster { api, sim }
}

fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()},
    }))
    .expect("node")
}

struct Operator {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    api: FakeApi,
}

impl Cluster {
    fn start_operator(&self) -> Operator {
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::new());
        let client = self.api.client();
        let cache = ClusterCache::start(client.clone(), metrics.clone(), shutdown.clone());
        let config = reconciler::Config {
            instance: Some("test".into()),
            request_timeout: Duration::from_secs(2),
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            namespace: NAMESPACE.into(),
            ..Default::default()
        };
        let task = tokio::spawn(reconciler::run(
            client,
            cache,
            config,
            metrics,
            Readiness::new(),
            shutdown.clone(),
        ));
        Operator {
            shutdown,
            task,
            api: self.api.clone(),
        }
    }

    fn admin(&self) -> kube::Client {
        self.api.client_as("admin")
    }

    async fn create_kc(&self, spec: Value) {
        let kc: KataConfig = serde_json::from_value(json!({
            "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
            "metadata": {"name": "example"}, "spec": spec,
        }))
        .expect("kataconfig");
        Api::<KataConfig>::all(self.admin())
            .create(&PostParams::default(), &kc)
            .await
            .expect("create kataconfig");
    }

    async fn delete_kc(&self) {
        Api::<KataConfig>::all(self.admin())
            .delete("example", &DeleteParams::default())
            .await
            .expect("delete kataconfig");
    }

    fn kc(&self) -> Option<KataConfig> {
        self.api.get::<KataConfig>("example")
    }

    fn condition(&self, type_: &str) -> Option<(String, String, String)> {
        let c = self
            .kc()?
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)?;
        Some((c.status, c.reason, c.message))
    }

    fn installed(&self) -> Vec<String> {
        self.kc()
            .and_then(|k| k.status)
            .map(|s| s.kata_nodes.installed)
            .unwrap_or_default()
    }

    fn daemon_set(&self) -> Option<DaemonSet> {
        self.api.get_ns::<DaemonSet>(NAMESPACE, NODE_INSTALLER)
    }

    fn installer_pods(&self) -> Vec<Pod> {
        self.api
            .list::<Pod>()
            .into_iter()
            .filter(|p| p.name_any().starts_with(NODE_INSTALLER))
            .collect()
    }

    /// Nodes carrying `label` (any value), sorted.
    fn labelled(&self, label: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .api
            .list::<Node>()
            .iter()
            .filter(|n| n.labels().contains_key(label))
            .map(|n| n.name_any())
            .collect();
        v.sort();
        v
    }

    /// Polls until `f` returns Some; panics with `what` after the hang guard.
    async fn wait<T>(&self, what: &str, mut f: impl FnMut(&Self) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if start.elapsed() > HANG_GUARD {
                panic!(
                    "timed out waiting for: {what}\nstatus: {:#?}\npods: {:?}",
                    self.kc().and_then(|k| k.status),
                    self.installer_pods()
                        .iter()
                        .map(|p| p.name_any())
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_installed(&self, nodes: &[&str]) {
        self.wait(&format!("Ready with kata on {nodes:?}"), |c| {
            (c.condition("Ready").is_some_and(|r| r.0 == "True") && c.installed() == nodes)
                .then_some(())
        })
        .await;
    }

    async fn wait_gone(&self) {
        self.wait("KataConfig gone", |c| c.kc().is_none().then_some(()))
            .await;
    }

    /// Nothing the operator created is left, and the installer cleaned every node up.
    fn assert_clean(&self) {
        assert!(self.daemon_set().is_none(), "DaemonSet left");
        assert!(
            self.api
                .get_ns::<ConfigMap>(NAMESPACE, NODE_INSTALLER)
                .is_none(),
            "ConfigMap left"
        );
        assert!(
            self.api.get::<RuntimeClass>(RUNTIME_CLASS).is_none(),
            "RuntimeClass left"
        );
        assert!(self.installer_pods().is_empty(), "installer pods left");
        assert_eq!(self.labelled(KATA_ROLE_LABEL), Vec::<String>::new());
        assert_eq!(self.labelled(KATA_RUNTIME_LABEL), Vec::<String>::new());
    }
}

impl Operator {
    /// Clean stop; the operator, running under its generated RBAC, was never refused.
    async fn stop(self) {
        self.shutdown.cancel();
        let res = tokio::time::timeout(HANG_GUARD, self.task)
            .await
            .expect("reconciler stops on shutdown")
            .expect("join");
        res.expect("reconciler returned an error");
        let refused: Vec<_> = self
            .api
            .forbidden_requests()
            .into_iter()
            .filter(|r| r.client == "operator")
            .collect();
        assert!(
            refused.is_empty(),
            "operator requests refused: {refused:#?}"
        );
    }

    async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
        self.shutdown.cancel();
    }
}

// ---------------------------------------------------------------- scenarios

#[tokio::test]
async fn without_the_mco_the_installer_daemon_set_installs_kata_node_by_node() {
    let c = cluster(2);
    let op = c.start_operator();
    c.create_kc(json!({})).await;
    c.wait_installed(&["n0", "n1"]).await;

    let kc = c.kc().expect("kataconfig");
    let st = kc.status.expect("status");
    assert_eq!(st.backend, Some(Backend::NodeInstaller));
    assert_eq!(st.runtime_classes, [RUNTIME_CLASS]);
    assert!(
        kc.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&FINALIZER.to_string())
    );
    // The control plane is not a candidate without a selector.
    assert_eq!(c.labelled(KATA_ROLE_LABEL), ["n0", "n1"]);
    assert_eq!(c.labelled(KATA_RUNTIME_LABEL), ["n0", "n1"]);
    let ds = c.daemon_set().expect("DaemonSet");
    let pod = ds.spec.and_then(|s| s.template.spec).expect("pod template");
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("quay.io/kata-containers/kata-deploy:4.1.0")
    );
    assert!(
        c.api
            .get_ns::<ConfigMap>(NAMESPACE, NODE_INSTALLER)
            .is_some()
    );
    let rc = c
        .api
        .get::<RuntimeClass>(RUNTIME_CLASS)
        .expect("RuntimeClass");
    assert_eq!(rc.handler, "kata");
    let selector = rc
        .scheduling
        .and_then(|s| s.node_selector)
        .unwrap_or_default();
    assert_eq!(
        selector.get(KATA_RUNTIME_LABEL).map(String::as_str),
        Some("true")
    );
    // Nothing of the MCO backend was attempted on a cluster that does not serve it.
    assert!(
        c.api
            .requests_by("operator")
            .iter()
            .all(|r| r.group != MCO_GROUP),
        "the operator called the MCO API"
    );
    op.stop().await;
}

#[tokio::test]
async fn the_installer_backend_uses_exactly_its_rbac_grants() {
    let c = cluster(1);
    let op = c.start_operator();
    c.create_kc(json!({})).await;
    c.wait_installed(&["n0"]).await;
    // Drift repair patches what exists; uninstall deletes it.
    let patch = json!({"data": {"custom-runtimes.list": "tampered"}});
    Api::<ConfigMap>::namespaced(c.admin(), NAMESPACE)
        .patch(
            NODE_INSTALLER,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("tamper");
    c.wait("ConfigMap repaired", |c| {
        let cm = c.api.get_ns::<ConfigMap>(NAMESPACE, NODE_INSTALLER)?;
        let data = cm.data.unwrap_or_default();
        (data.get("custom-runtimes.list").map(String::as_str) != Some("tampered")).then_some(())
    })
    .await;
    c.delete_kc().await;
    c.wait_gone().await;
    c.assert_clean();
    let used: Vec<ApiCall> = c
        .api
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
    let coverage = rbac::coverage(&used);
    assert!(coverage.missing.is_empty(), "{:#?}", coverage.missing);
    for grant in [
        "apps/daemonsets create",
        "apps/daemonsets delete",
        "core/configmaps create",
        "core/configmaps patch",
        "core/configmaps delete",
    ] {
        assert!(
            !coverage.unused.iter().any(|g| g == grant),
            "{grant} was never used by the installer backend"
        );
    }
    op.stop().await;
}

#[tokio::test]
async fn without_create_on_daemonsets_the_install_is_refused_until_granted() {
    let c = cluster(1);
    let role = c
        .api
        .get_json(
            "rbac.authorization.k8s.io/v1",
            "roles",
            Some(NAMESPACE),
            "sandboxed-containers-operator",
        )
        .expect("the operator's Role is seeded");
    let mut trimmed = role.clone();
    for rule in trimmed["rules"].as_array_mut().expect("rules") {
        if rule["resources"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == "daemonsets"))
            && let Some(verbs) = rule["verbs"].as_array_mut()
        {
            verbs.retain(|v| v != "create");
        }
    }
    c.api.insert_json(trimmed);
    let op = c.start_operator();
    c.create_kc(json!({})).await;
    // The apply passes the request filter as `patch`, then fails as a `create`.
    let denied = c
        .wait("the DaemonSet's creation refused", |c| {
            c.api
                .authorizations_by("operator")
                .into_iter()
                .find(|a| !a.allowed && a.attributes.combined_resource() == "daemonsets")
        })
        .await;
    assert_eq!(denied.attributes.verb, "create");
    assert_eq!(denied.attributes.name, NODE_INSTALLER);
    let ds: DaemonSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": NODE_INSTALLER, "namespace": NAMESPACE},
    }))
    .expect("daemonset");
    let e = Api::<DaemonSet>::namespaced(c.api.client(), NAMESPACE)
        .patch(
            NODE_INSTALLER,
            &PatchParams::apply("sandboxed-containers-operator").force(),
            &Patch::Apply(&ds),
        )
        .await
        .expect_err("refused");
    let kube::Error::Api(status) = e else {
        panic!("expected an API error, got {e:?}");
    };
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        format!(
            "daemonsets.apps \"{NODE_INSTALLER}\" is forbidden: User \"system:serviceaccount:{NAMESPACE}:sandboxed-containers-operator\" cannot create resource \"daemonsets\" in API group \"apps\" in the namespace \"{NAMESPACE}\""
        )
    );
    c.wait("a retry refused again", |c| {
        let n = c
            .api
            .authorizations_by("operator")
            .into_iter()
            .filter(|a| !a.allowed && a.attributes.combined_resource() == "daemonsets")
            .count();
        (n >= 3).then_some(())
    })
    .await;
    assert!(c.daemon_set().is_none());
    assert!(c.condition("Ready").is_none_or(|r| r.0 != "True"));
    c.api.insert_json(role);
    c.wait_installed(&["n0"]).await;
    op.shutdown.cancel();
    let _ = op.task.await;
}

#[tokio::test]
async fn a_selector_edit_moves_nodes_and_the_installer_cleans_the_one_that_left() {
    let c = cluster(2);
    let op = c.start_operator();
    c.create_kc(json!({"kataConfigPoolSelector": {"matchLabels": {"zone": "a"}}}))
        .await;
    c.wait_installed(&["n0"]).await;
    let patch = json!({"spec": {"kataConfigPoolSelector": {"matchLabels": {"zone": "b"}}}});
    Api::<KataConfig>::all(c.admin())
        .patch("example", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("edit selector");
    c.wait_installed(&["n1"]).await;
    assert_eq!(c.labelled(KATA_ROLE_LABEL), ["n1"]);
    c.wait("n0 cleaned up by its installer pod", |c| {
        (c.labelled(KATA_RUNTIME_LABEL) == ["n1"]).then_some(())
    })
    .await;
    op.stop().await;
}

#[tokio::test]
async fn a_crash_looping_installer_is_named_in_degraded_and_recovery_completes() {
    let c = cluster(2);
    c.sim.crash_loop("n1", "containerd config not found");
    let op = c.start_operator();
    c.create_kc(json!({})).await;
    let degraded = c
        .wait("n0 installed and Degraded naming n1", |c| {
            c.condition("Degraded")
                .filter(|d| d.0 == "True" && c.installed() == ["n0"])
        })
        .await;
    assert!(
        degraded.2.contains("Node n1") && degraded.2.contains("containerd config not found"),
        "{degraded:?}"
    );
    let st = c.kc().and_then(|k| k.status).expect("status");
    assert_eq!(st.kata_nodes.failed_to_install, ["n1"]);
    assert_eq!(st.kata_nodes.installed, ["n0"]);
    c.sim.recover("n1");
    c.wait_installed(&["n0", "n1"]).await;
    assert_eq!(
        c.condition("Degraded").map(|d| d.0).as_deref(),
        Some("False")
    );
    op.stop().await;
}

#[tokio::test]
async fn deleted_or_edited_installer_objects_are_put_back() {
    let c = cluster(1);
    let op = c.start_operator();
    c.create_kc(json!({})).await;
    c.wait_installed(&["n0"]).await;
    let uid = c.daemon_set().and_then(|d| d.metadata.uid).expect("uid");
    Api::<DaemonSet>::namespaced(c.admin(), NAMESPACE)
        .delete(NODE_INSTALLER, &DeleteParams::default())
        .await
        .expect("delete DaemonSet");
    c.wait("DaemonSet recreated", |c| {
        c.daemon_set()
            .and_then(|d| d.metadata.uid)
            .filter(|u| *u != uid)
    })
    .await;
    Api::<RuntimeClass>::all(c.admin())
        .delete(RUNTIME_CLASS, &DeleteParams::default())
        .await
        .expect("delete RuntimeClass");
    c.wait("RuntimeClass recreated", |c| {
        c.api.get::<RuntimeClass>(RUNTIME_CLASS).map(|_| ())
    })
    .await;
    c.wait_installed(&["n0"]).await;
    op.stop().await;
}

#[tokio::test]
async fn uninstall_waits_for_kata_pods_then_cleans_every_node_and_object() {
    let c = cluster(2);
    let op = c.start_operator();
    c.create_kc(json!({})).await;
    c.wait_installed(&["n0", "n1"]).await;
    let workload: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "tenant", "namespace": "team"},
        "spec": {"runtimeClassName": "kata", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running"},
    }))
    .expect("pod");
    c.api.insert(&workload);
    c.delete_kc().await;
    let blocked = c
        .wait("uninstall blocked by the kata pod", |c| {
            c.condition("Ready").filter(|r| r.2.contains("team/tenant"))
        })
        .await;
    assert_eq!(blocked.0, "False", "{blocked:?}");
    assert!(c.daemon_set().is_some(), "nothing removed while blocked");
    assert_eq!(c.labelled(KATA_RUNTIME_LABEL), ["n0", "n1"]);
    assert!(c.api.delete("v1", "pods", Some("team"), "tenant"));
    c.wait_gone().await;
    c.assert_clean();
    op.stop().await;
}

#[tokio::test]
async fn a_crash_at_each_uninstall_write_resumes_to_a_clean_cluster() {
    for n in 1..=8 {
        let c = cluster(2);
        let op = c.start_operator();
        c.create_kc(json!({})).await;
        c.wait_installed(&["n0", "n1"]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let base = c.api.write_count_by("operator");
        c.delete_kc().await;
        c.wait(&format!("{n} uninstall writes"), |c| {
            (c.api.write_count_by("operator") >= base + n || c.kc().is_none()).then_some(())
        })
        .await;
        op.crash().await;
        let op = c.start_operator();
        c.wait_gone().await;
        c.assert_clean();
        op.stop().await;
    }
}

#[tokio::test]
async fn a_crash_at_each_install_write_resumes_to_the_same_end_state() {
    for n in 1..=6 {
        let c = cluster(2);
        let op = c.start_operator();
        c.create_kc(json!({})).await;
        c.wait(&format!("{n} operator writes"), |c| {
            (c.api.write_count_by("operator") >= n).then_some(())
        })
        .await;
        op.crash().await;
        let op = c.start_operator();
        c.wait_installed(&["n0", "n1"]).await;
        op.stop().await;
    }
}
