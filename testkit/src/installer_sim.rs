//! A node-installer simulator over any `kube::Client` (fake or real API server): it plays what
//! runs the operator's `kata-node-installer` DaemonSet on a real cluster.
//!
//! - The DaemonSet controller (unless a real kube-controller-manager does it): one pod per node
//!   the DaemonSet's node selector matches, deleted when the node stops matching or the
//!   DaemonSet goes. Pods carry a finalizer so deletion is graceful, as a kubelet makes it.
//! - The scheduler, where a real DaemonSet controller created the pod (it pins the node with
//!   node affinity and leaves binding to the scheduler): the pod is bound to that node.
//! - The kubelet and the kata-deploy image: a new pod runs, its node is labelled
//!   `katacontainers.io/kata-runtime=false`, then (one step later) `true` and the pod turns
//!   Ready; a node told to crash-loop reports `CrashLoopBackOff` with the last termination
//!   instead; a terminating pod cleans its node up (labels removed) and then goes.
//!
//! A polling loop (one pass per `step`), bounded by the test's lifetime.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use sandboxed_containers_operator::names::{KATA_RUNTIME_LABEL, NODE_INSTALLER};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The finalizer that stands for the kubelet's graceful termination (in-memory mode).
pub const CLEANUP_FINALIZER: &str = "testkit.kataconfiguration.openshift.io/installer-cleanup";
/// The instance label kata-deploy 4.1.0 sets next to `katacontainers.io/kata-runtime`.
pub const INSTANCE_LABEL: &str = "kata-deploy.katacontainers.io/default";

#[derive(Clone, Debug)]
pub struct InstallerSimOptions {
    /// The operator namespace (where the DaemonSet is).
    pub namespace: String,
    /// One pass of the loop; an install takes two.
    pub step: Duration,
    /// Create and delete the pods (no kube-controller-manager runs the DaemonSet).
    pub play_daemon_set_controller: bool,
}

impl InstallerSimOptions {
    pub fn in_memory(namespace: &str) -> Self {
        InstallerSimOptions {
            namespace: namespace.to_string(),
            step: Duration::from_millis(20),
            play_daemon_set_controller: true,
        }
    }
}

#[derive(Default)]
struct Shared {
    /// Nodes whose installer crash-loops, with the termination message.
    crashing: BTreeMap<String, String>,
    /// Nodes whose installer got past its first step (label `false` set).
    started: BTreeSet<String>,
    passes: u64,
}

pub struct InstallerSimulator;

/// Controls a running simulator; stop it with [`InstallerSimHandle::stop`].
pub struct InstallerSimHandle {
    shared: Arc<Mutex<Shared>>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl InstallerSimulator {
    pub fn spawn(client: Client, opts: InstallerSimOptions) -> InstallerSimHandle {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let cancel = CancellationToken::new();
        let sim = Sim {
            pods: Api::namespaced(client.clone(), &opts.namespace),
            daemon_sets: Api::namespaced(client.clone(), &opts.namespace),
            nodes: Api::all(client),
            opts,
            shared: shared.clone(),
        };
        let task = tokio::spawn(sim.run(cancel.clone()));
        InstallerSimHandle {
            shared,
            cancel,
            task: Some(task),
        }
    }
}

impl InstallerSimHandle {
    /// The installer on `node` keeps failing (`CrashLoopBackOff`, last terminated with `message`).
    pub fn crash_loop(&self, node: &str, message: &str) {
        lock(&self.shared)
            .crashing
            .insert(node.to_string(), message.to_string());
    }

    /// The installer on `node` works again.
    pub fn recover(&self, node: &str) {
        lock(&self.shared).crashing.remove(node);
    }

    /// Finished passes (a test can wait for one more to know the simulator caught up).
    pub fn passes(&self) -> u64 {
        lock(&self.shared).passes
    }

    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for InstallerSimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Sim {
    pods: Api<Pod>,
    daemon_sets: Api<DaemonSet>,
    nodes: Api<Node>,
    opts: InstallerSimOptions,
    shared: Arc<Mutex<Shared>>,
}

/// The node a pod runs on, or is pinned to by the DaemonSet controller's node affinity.
fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = &spec.node_name {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

fn selects(ds: &DaemonSet, node: &Node) -> bool {
    let wanted = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.node_selector.clone())
        .unwrap_or_default();
    let labels = node.labels();
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Sim {
    async fn run(self, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.pass().await {
                tracing::debug!(error = %e, "installer simulator pass failed; retrying");
            }
            lock(&self.shared).passes += 1;
            tokio::select! {
                () = tokio::time::sleep(self.opts.step) => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    async fn pass(&self) -> anyhow::Result<()> {
        let ds = self.daemon_sets.get_opt(NODE_INSTALLER).await?;
        let nodes = self.nodes.list(&ListParams::default()).await?.items;
        let selector = format!("app.kubernetes.io/name={NODE_INSTALLER}");
        let pods = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        if self.opts.play_daemon_set_controller {
            self.control_daemon_set(ds.as_ref(), &nodes, &pods).await?;
        }
        for pod in &pods {
            self.kubelet(pod).await?;
        }
        Ok(())
    }

    /// One pod per selected node; pods of unselected nodes (or of a deleted DaemonSet) go.
    async fn control_daemon_set(
        &self,
        ds: Option<&DaemonSet>,
        nodes: &[Node],
        pods: &[Pod],
    ) -> anyhow::Result<()> {
        let on = |node: &str| {
            pods.iter()
                .find(|p| target_node(p).as_deref() == Some(node))
        };
        for node in nodes {
            let name = node.name_any();
            let wanted = ds.is_some_and(|d| selects(d, node));
            match (wanted, on(&name)) {
                (true, None) => {
                    if let Some(ds) = ds {
                        self.create_pod(ds, &name).await?;
                    }
                }
                (false, Some(p)) if p.metadata.deletion_timestamp.is_none() => {
                    self.pods
                        .delete(&p.name_any(), &DeleteParams::default())
                        .await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn create_pod(&self, ds: &DaemonSet, node: &str) -> anyhow::Result<()> {
        let template = ds
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let mut spec = serde_json::to_value(template.spec.unwrap_or_default())?;
        spec["nodeName"] = json!(node);
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": format!("{NODE_INSTALLER}-{node}"),
                "namespace": self.opts.namespace,
                "labels": template.metadata.and_then(|m| m.labels).unwrap_or_default(),
                "finalizers": [CLEANUP_FINALIZER],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                    "name": ds.name_any(), "uid": ds.uid().unwrap_or_default(), "controller": true}],
            },
            "spec": spec,
        });
        self.pods
            .create(&PostParams::default(), &serde_json::from_value(pod)?)
            .await?;
        Ok(())
    }

    /// What the kubelet and the kata-deploy image do for one pod.
    async fn kubelet(&self, pod: &Pod) -> anyhow::Result<()> {
        let Some(node) = target_node(pod) else {
            return Ok(());
        };
        let name = pod.name_any();
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_none()
        {
            // Scheduled by us, as the scheduler would.
            let binding = json!({"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name}, "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
            self.pods
                .create_subresource::<Value, Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await?;
            return Ok(());
        }
        if pod.metadata.deletion_timestamp.is_some() {
            return self.clean_up(pod, &node).await;
        }
        let crash = lock(&self.shared).crashing.get(&node).cloned();
        if let Some(message) = crash {
            return self.set_status(&name, false, Some(&message)).await;
        }
        let started = lock(&self.shared).started.contains(&node);
        if started {
            self.label(&node, Some("true")).await?;
            self.set_status(&name, true, None).await
        } else {
            self.label(&node, Some("false")).await?;
            lock(&self.shared).started.insert(node);
            self.set_status(&name, false, None).await
        }
    }

    /// kata-deploy's cleanup on SIGTERM: its labels go, then the pod.
    async fn clean_up(&self, pod: &Pod, node: &str) -> anyhow::Result<()> {
        self.label(node, None).await?;
        lock(&self.shared).started.remove(node);
        let name = pod.name_any();
        if pod.finalizers().iter().any(|f| f == CLEANUP_FINALIZER) {
            let rest: Vec<&String> = pod
                .finalizers()
                .iter()
                .filter(|f| *f != CLEANUP_FINALIZER)
                .collect();
            let patch = json!({"metadata": {"finalizers": rest}});
            self.pods
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        } else {
            // A real API server: the kubelet confirms the termination.
            let _ = self
                .pods
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
        }
        Ok(())
    }

    async fn label(&self, node: &str, value: Option<&str>) -> anyhow::Result<()> {
        let current = self.nodes.get_opt(node).await?;
        let have = current
            .as_ref()
            .and_then(|n| n.labels().get(KATA_RUNTIME_LABEL).cloned());
        if have.as_deref() == value {
            return Ok(());
        }
        let v = value.map_or(Value::Null, |v| json!(v));
        let patch = json!({"metadata": {"labels": {KATA_RUNTIME_LABEL: v, INSTANCE_LABEL: v}}});
        self.nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    async fn set_status(&self, pod: &str, ready: bool, crash: Option<&str>) -> anyhow::Result<()> {
        let state = match crash {
            Some(_) => {
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}})
            }
            None => json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}),
        };
        let last =
            crash.map(|m| json!({"terminated": {"reason": "Error", "exitCode": 1, "message": m}}));
        let status = json!({"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "containerStatuses": [{
                "name": "kata-deploy", "ready": ready, "restartCount": if crash.is_some() { 3 } else { 0 },
                "image": "kata-deploy", "imageID": "", "state": state, "lastState": last.unwrap_or(json!({})),
            }],
        }});
        let current = self.pods.get_status(pod).await.ok();
        let unchanged = current
            .as_ref()
            .and_then(|p| serde_json::to_value(&p.status).ok())
            .is_some_and(|s| {
                s["conditions"][0]["status"] == status["status"]["conditions"][0]["status"]
                    && s["containerStatuses"][0]["state"]
                        == status["status"]["containerStatuses"][0]["state"]
            });
        if unchanged {
            return Ok(());
        }
        self.pods
            .patch_status(pod, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(())
    }
}
