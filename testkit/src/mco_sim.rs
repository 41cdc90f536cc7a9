//! A small Machine Config Operator simulator over any `kube::Client` (fake or real API server).
//!
//! It renders each pool from the MachineConfigs its `machineConfigSelector` picks, writes
//! `spec.configuration` like the MCO's render controller, walks the pool's nodes one at a time
//! (maxUnavailable 1) through the MCO node annotations, and keeps the pool status in the MCO's
//! shapes. Event-driven: three watch streams plus one timer for the in-flight node's step.
//!
//! Like the MCO's ContainerRuntimeConfig controller, each ContainerRuntimeConfig yields a
//! generated MachineConfig `99-<pool>-generated-containerruntime` for the pools it selects.
//!
//! Not simulated: rendered MachineConfig objects (only their names), drain, node Ready.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use sandboxed_containers_operator::api::mco::PoolConfiguration;
use sandboxed_containers_operator::api::{
    ContainerRuntimeConfig, MachineConfig, MachineConfigPool,
};
use sandboxed_containers_operator::names::{
    MASTER_POOL, MCO_CURRENT_CONFIG, MCO_DESIRED_CONFIG, MCO_REASON, MCO_STATE, WORKER_POOL,
};
use sandboxed_containers_operator::selector;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const MC_API_VERSION: &str = "machineconfiguration.openshift.io/v1";

/// What the simulator reads of a node: its labels (pool membership) and MCO annotations. A
/// metadata-only watch, as the MCO's own node informer needs nothing of `spec` or `status`.
type NodeMeta = PartialObjectMeta<Node>;

/// The per-node annotations the MCO owns; the only ones a pass looks at.
const MCO_NODE_ANNOTATIONS: [&str; 4] = [
    MCO_CURRENT_CONFIG,
    MCO_DESIRED_CONFIG,
    MCO_STATE,
    MCO_REASON,
];

/// Events arriving closer together than this are folded into one pass: a watch that replays
/// thousands of changes (after it lagged) must not cost one pass over every node per change.
const BATCH_GAP: Duration = Duration::from_millis(2);
/// ...but a steady trickle of events still gets a pass this often.
const BATCH_MAX: Duration = Duration::from_millis(200);

#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Create the `master` and `worker` pools (with the MCO's selectors) if missing.
    pub create_default_pools: bool,
    /// How long a node stays `Working` before it reaches `Done`.
    pub step: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            create_default_pools: false,
            step: Duration::from_millis(50),
        }
    }
}

/// State shared between the loop and the handle.
#[derive(Default)]
struct Shared {
    /// Nodes a test degraded: the loop leaves them alone until recovered.
    degraded: HashMap<String, String>,
    /// Highest resourceVersion among the objects the last finished pass acted on.
    seen_rv: u64,
    /// Finished reconcile passes.
    passes: u64,
}

pub struct McoSimulator;

/// Controls a running simulator; dropping it stops the simulator.
pub struct SimHandle {
    client: Client,
    shared: Arc<Mutex<Shared>>,
    notify: Arc<Notify>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl McoSimulator {
    /// Start the simulator. With `create_default_pools`, the pools exist when this returns.
    pub async fn spawn(client: Client, opts: SimOptions) -> anyhow::Result<SimHandle> {
        if opts.create_default_pools {
            ensure_default_pools(&client).await?;
        }
        let shared = Arc::new(Mutex::new(Shared::default()));
        let notify = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let sim = Sim {
            client: client.clone(),
            step: opts.step,
            shared: shared.clone(),
            working: HashMap::new(),
            overlay: HashMap::new(),
        };
        let task = tokio::spawn(sim.run(notify.clone(), cancel.clone()));
        Ok(SimHandle {
            client,
            shared,
            notify,
            cancel,
            task: Some(task),
        })
    }
}

impl SimHandle {
    /// Mark a node `Degraded` with `reason`; it stops progressing and its pool reports Degraded.
    pub async fn degrade_node(&self, name: &str, reason: &str) -> anyhow::Result<()> {
        lock(&self.shared)
            .degraded
            .insert(name.to_string(), reason.to_string());
        patch_annotations(
            &self.client,
            name,
            &[(MCO_STATE, "Degraded"), (MCO_REASON, reason)],
        )
        .await?;
        self.notify.notify_one();
        Ok(())
    }

    /// Let a degraded node resume: `Working` if it still has an update to finish, else `Done`.
    pub async fn recover_node(&self, name: &str) -> anyhow::Result<()> {
        lock(&self.shared).degraded.remove(name);
        let node = Api::<Node>::all(self.client.clone())
            .get(name)
            .await
            .with_context(|| format!("recover_node: get node {name}"))?;
        let ann = node.annotations();
        let state = if ann.get(MCO_CURRENT_CONFIG) == ann.get(MCO_DESIRED_CONFIG) {
            "Done"
        } else {
            "Working"
        };
        patch_annotations(&self.client, name, &[(MCO_STATE, state), (MCO_REASON, "")]).await?;
        self.notify.notify_one();
        Ok(())
    }

    /// Highest resourceVersion among the pools, MachineConfigs and nodes a finished pass saw.
    /// After a test's own write at version R, `seen_resource_version() >= R` means a pass has run
    /// on a cache holding that write: a deterministic "the sim has reacted" (numeric RVs, as the
    /// fake and etcd-backed servers use).
    pub fn seen_resource_version(&self) -> u64 {
        lock(&self.shared).seen_rv
    }

    /// Finished reconcile passes.
    pub fn passes(&self) -> u64 {
        lock(&self.shared).passes
    }

    /// Stop the simulator and wait for its loop to end.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn patch_annotations(
    client: &Client,
    node: &str,
    kv: &[(&str, &str)],
) -> anyhow::Result<Node> {
    let ann: serde_json::Map<String, Value> =
        kv.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    Api::<Node>::all(client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": ann}})),
        )
        .await
        .with_context(|| format!("patch MCO annotations of node {node}"))
}

async fn ensure_default_pools(client: &Client) -> anyhow::Result<()> {
    let api = Api::<MachineConfigPool>::all(client.clone());
    for (pool, role) in [(MASTER_POOL, "master"), (WORKER_POOL, "worker")] {
        let obj: MachineConfigPool = serde_json::from_value(json!({
            "apiVersion": MC_API_VERSION, "kind": "MachineConfigPool",
            "metadata": {"name": pool, "labels": {format!("pools.operator.machineconfiguration.openshift.io/{pool}"): ""}},
            "spec": {
                "machineConfigSelector": {"matchLabels": {"machineconfiguration.openshift.io/role": role}},
                "nodeSelector": {"matchLabels": {format!("node-role.kubernetes.io/{role}"): ""}},
            },
        }))?;
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).with_context(|| format!("create default pool {pool}")),
        }
    }
    Ok(())
}

/// `rendered-<pool>-<hash of the sorted MC names and specs>`.
pub fn rendered_name(pool: &str, mcs: &[&MachineConfig]) -> String {
    let mut sorted: Vec<&&MachineConfig> = mcs.iter().collect();
    sorted.sort_by_key(|m| m.name_any());
    let mut h = Sha256::new();
    for mc in sorted {
        h.update(mc.name_any().as_bytes());
        h.update(serde_json::to_vec(&mc.spec).unwrap_or_default());
    }
    format!("rendered-{pool}-{}", &hex::encode(h.finalize())[..16])
}

fn selects(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    // A pool without a selector selects nothing (as the MCO treats a nil selector).
    sel.is_some_and(|s| selector::matches(s, labels))
}

/// The pool a node belongs to: master first, then a custom pool, then worker (MCO rule).
fn pool_of<'a>(
    node: &NodeMeta,
    pools: &'a [Arc<MachineConfigPool>],
) -> Option<&'a MachineConfigPool> {
    let labels = node.labels();
    let mut matching: Vec<&MachineConfigPool> = pools
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| selects(p.spec.node_selector.as_ref(), labels))
        .collect();
    matching.sort_by_key(|p| {
        let n = p.name_any();
        let rank = if n == MASTER_POOL {
            0
        } else if n == WORKER_POOL {
            2
        } else {
            1
        };
        (rank, n)
    });
    matching.into_iter().next()
}

fn is_init_done<K>(r: &Result<watcher::Event<K>, watcher::Error>) -> bool {
    matches!(r, Ok(watcher::Event::InitDone))
}

struct Sim {
    client: Client,
    step: Duration,
    shared: Arc<Mutex<Shared>>,
    /// Node -> when its current update finishes.
    working: HashMap<String, Instant>,
    /// Node annotations we wrote that the cache may not show yet: (resourceVersion, values).
    overlay: HashMap<String, (String, BTreeMap<String, String>)>,
}

impl Sim {
    async fn run(mut self, notify: Arc<Notify>, cancel: CancellationToken) {
        let (pools, pw) = reflector::store::<MachineConfigPool>();
        let (mcs, mw) = reflector::store::<MachineConfig>();
        let (nodes, nw) = reflector::store::<NodeMeta>();
        let cfg = watcher::Config::default();
        let c = &self.client;
        let s1 = reflector(
            pw,
            watcher(Api::<MachineConfigPool>::all(c.clone()), cfg.clone()),
        )
        .default_backoff()
        .map(move |r| (0usize, is_init_done(&r)))
        .boxed();
        let s2 = reflector(
            mw,
            watcher(Api::<MachineConfig>::all(c.clone()), cfg.clone()),
        )
        .default_backoff()
        .map(move |r| (1usize, is_init_done(&r)))
        .boxed();
        let s3 = reflector(nw, watcher(Api::<NodeMeta>::all(c.clone()), cfg.clone()))
            .default_backoff()
            .map(move |r| (2usize, is_init_done(&r)))
            .boxed();
        let (crcs, cw) = reflector::store::<ContainerRuntimeConfig>();
        let s4 = reflector(
            cw,
            watcher(Api::<ContainerRuntimeConfig>::all(c.clone()), cfg),
        )
        .default_backoff()
        .map(move |r| (3usize, is_init_done(&r)))
        .boxed();
        let mut events = futures::stream::select_all([s1, s2, s3, s4]);
        let mut ready = [false; 4];
        let mut retry_at: Option<Instant> = None;
        loop {
            let deadline = self.working.values().copied().chain(retry_at).min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                ev = events.next() => match ev {
                    Some((i, true)) => ready[i] = true,
                    Some(_) => {}
                    None => return,
                },
                _ = sleep => {}
                _ = notify.notified() => {}
            }
            // Batch what arrives right behind this wake-up before acting.
            let batch = Instant::now();
            while batch.elapsed() < BATCH_MAX {
                match tokio::time::timeout(BATCH_GAP, events.next()).await {
                    Ok(Some((i, done))) => ready[i] |= done,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if !ready.iter().all(|r| *r) {
                continue;
            }
            retry_at = None;
            let (p, m, n) = (pools.state(), mcs.state(), nodes.state());
            // Pools render from the MachineConfigs as this pass leaves them: a generated one
            // just written is not in the cache yet, and rendering without it would roll every
            // node of the pool twice.
            let (m_now, crc_result) = self.render_crcs(&p, &m, &crcs.state()).await;
            if let Err(e) = crc_result.and(self.reconcile(&p, &m_now, &n).await) {
                tracing::debug!("mco-sim: {e:#}; retrying");
                retry_at = Some(Instant::now() + self.step);
            }
            let rv = |o: &kube::core::ObjectMeta| {
                o.resource_version
                    .as_deref()
                    .and_then(|r| r.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let seen = p
                .iter()
                .map(|o| rv(&o.metadata))
                .chain(m.iter().map(|o| rv(&o.metadata)))
                .chain(n.iter().map(|o| rv(&o.metadata)))
                .max()
                .unwrap_or(0);
            let mut sh = lock(&self.shared);
            sh.seen_rv = sh.seen_rv.max(seen);
            sh.passes += 1;
        }
    }

    /// The MCO's ContainerRuntimeConfig controller: one generated MachineConfig per selected pool
    /// (`99-<pool>-generated-containerruntime`, role label = pool), removed when no longer wanted.
    /// Returns `mcs` with this pass's writes and deletes applied, and how the writes went.
    async fn render_crcs(
        &mut self,
        pools: &[Arc<MachineConfigPool>],
        mcs: &[Arc<MachineConfig>],
        crcs: &[Arc<ContainerRuntimeConfig>],
    ) -> (Vec<Arc<MachineConfig>>, anyhow::Result<()>) {
        let mut now: BTreeMap<String, Arc<MachineConfig>> =
            mcs.iter().map(|m| (m.name_any(), m.clone())).collect();
        let result = self.write_generated(pools, mcs, crcs, &mut now).await;
        (now.into_values().collect(), result)
    }

    async fn write_generated(
        &mut self,
        pools: &[Arc<MachineConfigPool>],
        mcs: &[Arc<MachineConfig>],
        crcs: &[Arc<ContainerRuntimeConfig>],
        now: &mut BTreeMap<String, Arc<MachineConfig>>,
    ) -> anyhow::Result<()> {
        let api = Api::<MachineConfig>::all(self.client.clone());
        let mut crcs: Vec<&ContainerRuntimeConfig> = crcs.iter().map(|c| c.as_ref()).collect();
        crcs.sort_by_key(|c| c.name_any());
        let mut wanted: BTreeMap<String, Value> = BTreeMap::new();
        for pool in pools {
            let pname = pool.name_any();
            // Several CRCs on one pool: the last by name wins (the MCO would suffix names).
            let Some(crc) = crcs.iter().rev().find(|c| {
                c.metadata.deletion_timestamp.is_none()
                    && selects(c.spec.machine_config_pool_selector.as_ref(), pool.labels())
            }) else {
                continue;
            };
            let settings = serde_json::to_string(&crc.spec.container_runtime_config)?;
            let name = format!("99-{pname}-generated-containerruntime");
            let mc = json!({
                "apiVersion": MC_API_VERSION, "kind": "MachineConfig",
                "metadata": {
                    "name": name,
                    "labels": {"machineconfiguration.openshift.io/role": pname},
                    "ownerReferences": [{"apiVersion": MC_API_VERSION, "kind": "ContainerRuntimeConfig", "name": crc.name_any(), "uid": crc.metadata.uid, "controller": true}],
                },
                "spec": {"config": {"ignition": {"version": "3.2.0"}, "storage": {"files": [{
                    "path": "/etc/crio/crio.conf.d/01-ctrcfg-containerruntimeconfig",
                    "mode": 420, "overwrite": true,
                    "contents": {"source": format!("data:,{}", urlencoding::encode(&settings))},
                }]}}},
            });
            wanted.insert(name, mc);
        }
        let mut result = Ok(());
        for (name, mc) in &wanted {
            let have = mcs.iter().find(|m| m.name_any() == *name);
            let same = have.is_some_and(|m| {
                serde_json::to_value(&m.spec).ok().as_ref() == Some(&mc["spec"])
                    && m.labels()
                        .get("machineconfiguration.openshift.io/role")
                        .map(String::as_str)
                        == mc["metadata"]["labels"]["machineconfiguration.openshift.io/role"]
                            .as_str()
            });
            if same {
                continue;
            }
            match api
                .patch(
                    name,
                    &PatchParams::apply("mco-sim").force(),
                    &Patch::Apply(mc),
                )
                .await
            {
                Ok(written) => {
                    now.insert(name.clone(), Arc::new(written));
                }
                Err(e) => {
                    result =
                        Err(e).with_context(|| format!("write generated MachineConfig {name}"));
                }
            }
        }
        for m in mcs {
            let name = m.name_any();
            if name.ends_with("-generated-containerruntime") && !wanted.contains_key(&name) {
                match api.delete(&name, &Default::default()).await {
                    Ok(_) => {
                        now.remove(&name);
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        now.remove(&name);
                    }
                    Err(e) => {
                        result =
                            Err(e).with_context(|| format!("delete generated MachineConfig {name}"))
                    }
                }
            }
        }
        result
    }

    /// A node's MCO annotations, with our own not-yet-observed writes on top.
    fn annotations(&mut self, node: &NodeMeta) -> BTreeMap<String, String> {
        let all = node.annotations();
        let mut ann: BTreeMap<String, String> = MCO_NODE_ANNOTATIONS
            .iter()
            .filter_map(|k| all.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect();
        let name = node.name_any();
        if let Some((rv, wrote)) = self.overlay.get(&name) {
            let seen_rv = node.resource_version().and_then(|r| r.parse::<u64>().ok());
            let caught_up = seen_rv
                .zip(rv.parse::<u64>().ok())
                .is_some_and(|(s, w)| s >= w)
                || wrote.iter().all(|(k, v)| ann.get(k) == Some(v));
            if caught_up {
                self.overlay.remove(&name);
            } else {
                ann.extend(wrote.clone());
            }
        }
        ann
    }

    async fn set_annotations(&mut self, node: &str, kv: &[(&str, &str)]) -> anyhow::Result<()> {
        let written = patch_annotations(&self.client, node, kv).await?;
        let values = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.overlay.insert(
            node.to_string(),
            (written.resource_version().unwrap_or_default(), values),
        );
        Ok(())
    }

    async fn reconcile(
        &mut self,
        pools: &[Arc<MachineConfigPool>],
        mcs: &[Arc<MachineConfig>],
        nodes: &[Arc<NodeMeta>],
    ) -> anyhow::Result<()> {
        let pool_api = Api::<MachineConfigPool>::all(self.client.clone());
        let degraded = lock(&self.shared).degraded.clone();
        let mut result = Ok(());
        let mut seen = HashSet::new();
        // Each node's pool, found once per pass (not once per pool), members sorted by name.
        let mut by_pool: HashMap<String, Vec<&NodeMeta>> = HashMap::new();
        for n in nodes {
            if let Some(p) = pool_of(n, pools) {
                by_pool.entry(p.name_any()).or_default().push(n.as_ref());
            }
        }
        for members in by_pool.values_mut() {
            members.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        for pool in pools {
            let pname = pool.name_any();
            // Render: the pool's MachineConfigs, by its selector.
            let mine: Vec<&MachineConfig> = mcs
                .iter()
                .map(|m| m.as_ref())
                .filter(|m| selects(pool.spec.machine_config_selector.as_ref(), m.labels()))
                .collect();
            let target = rendered_name(&pname, &mine);
            let mut names: Vec<String> = mine.iter().map(|m| m.name_any()).collect();
            names.sort();
            let configuration = json!({
                "name": target,
                "source": names.iter().map(|n| json!({"apiVersion": MC_API_VERSION, "kind": "MachineConfig", "name": n})).collect::<Vec<_>>(),
            });
            // Compare typed, so an empty source list and an absent one are the same rendering.
            let wanted: Option<PoolConfiguration> =
                serde_json::from_value(configuration.clone()).ok();
            // After writing the rendering, the status is for the pool as written (its new
            // generation), not for the cached one.
            let written;
            let pool: &MachineConfigPool = if pool.spec.configuration != wanted {
                match pool_api
                    .patch(
                        &pname,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"configuration": configuration}})),
                    )
                    .await
                {
                    Ok(p) => {
                        written = p;
                        &written
                    }
                    Err(e) => {
                        result = Err(e)
                            .with_context(|| format!("write spec.configuration of pool {pname}"));
                        continue;
                    }
                }
            } else {
                pool
            };
            let members: &[&NodeMeta] = by_pool.get(&pname).map_or(&[], Vec::as_slice);
            seen.extend(members.iter().map(|n| n.name_any()));
            if let Err(e) = self
                .walk(members, &target, pool.spec.paused == Some(true), &degraded)
                .await
            {
                result = Err(e);
            }
            let mut counts = Counts::default();
            for n in members {
                let ann = self.annotations(n);
                counts.add(
                    &n.name_any(),
                    &ann,
                    &target,
                    degraded.contains_key(&n.name_any()),
                );
            }
            let status = pool_status(pool, &configuration, &counts);
            let old = serde_json::to_value(&pool.status).unwrap_or(Value::Null);
            if !status_equal(&old, &status) {
                let status = keep_transition_times(&old, status);
                if let Err(e) = pool_api
                    .patch_status(
                        &pname,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": status})),
                    )
                    .await
                {
                    result = Err(e).with_context(|| format!("write status of pool {pname}"));
                }
            }
        }
        // Forget timers of nodes that left every pool or disappeared.
        self.working.retain(|n, _| seen.contains(n));
        result
    }

    /// Seed new nodes, finish the in-flight update when its step is over, start the next one.
    async fn walk(
        &mut self,
        members: &[&NodeMeta],
        target: &str,
        paused: bool,
        degraded: &HashMap<String, String>,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut busy = false;
        let mut next: Option<String> = None;
        for n in members {
            let name = n.name_any();
            let ann = self.annotations(n);
            let cur = ann.get(MCO_CURRENT_CONFIG).cloned();
            let desired = ann.get(MCO_DESIRED_CONFIG).cloned();
            let state = ann.get(MCO_STATE).map(String::as_str).unwrap_or("");
            let Some(cur) = cur else {
                // A node the MCO has never seen boots straight into the pool's rendering.
                self.set_annotations(
                    &name,
                    &[
                        (MCO_CURRENT_CONFIG, target),
                        (MCO_DESIRED_CONFIG, target),
                        (MCO_STATE, "Done"),
                        (MCO_REASON, ""),
                    ],
                )
                .await?;
                continue;
            };
            if let Some(reason) = degraded.get(&name)
                && state != "Degraded"
            {
                // A pass that began before `degrade_node` may have finished the node's update
                // over its Degraded state: say it again.
                self.set_annotations(&name, &[(MCO_STATE, "Degraded"), (MCO_REASON, reason)])
                    .await?;
            }
            if degraded.contains_key(&name) || state == "Degraded" {
                // Counts against maxUnavailable: nothing else in the pool moves.
                self.working.remove(&name);
                busy = true;
                continue;
            }
            let in_flight = desired.as_deref().is_some_and(|d| d != cur) || state == "Working";
            if in_flight {
                busy = true;
                let due = *self.working.entry(name.clone()).or_insert(now + self.step);
                if due <= now {
                    let d = desired.unwrap_or_else(|| cur.clone());
                    self.set_annotations(
                        &name,
                        &[
                            (MCO_CURRENT_CONFIG, &d),
                            (MCO_DESIRED_CONFIG, &d),
                            (MCO_STATE, "Done"),
                            (MCO_REASON, ""),
                        ],
                    )
                    .await?;
                    self.working.remove(&name);
                }
            } else {
                // Settled (perhaps by someone else): no timer to keep.
                self.working.remove(&name);
                if cur != target && next.is_none() {
                    next = Some(name);
                }
            }
        }
        if let (false, false, Some(name)) = (busy, paused, next) {
            self.set_annotations(
                &name,
                &[(MCO_DESIRED_CONFIG, target), (MCO_STATE, "Working")],
            )
            .await?;
            self.working.insert(name, Instant::now() + self.step);
        }
        Ok(())
    }
}

#[derive(Default, Debug)]
struct Counts {
    machine: i64,
    updated: i64,
    ready: i64,
    unavailable: i64,
    degraded: i64,
    reasons: Vec<String>,
}

impl Counts {
    fn add(
        &mut self,
        node: &str,
        ann: &BTreeMap<String, String>,
        target: &str,
        forced_degraded: bool,
    ) {
        self.machine += 1;
        let get = |k: &str| ann.get(k).map(String::as_str);
        let state = get(MCO_STATE).unwrap_or("");
        let degraded = forced_degraded || state == "Degraded";
        let updated = !degraded
            && get(MCO_CURRENT_CONFIG) == Some(target)
            && get(MCO_DESIRED_CONFIG) == Some(target)
            && state == "Done";
        let moving = get(MCO_CURRENT_CONFIG) != get(MCO_DESIRED_CONFIG) || state == "Working";
        if degraded {
            self.degraded += 1;
            let reason = get(MCO_REASON).unwrap_or("");
            self.reasons
                .push(format!("Node {node} is reporting: \"{reason}\""));
        }
        if updated {
            self.updated += 1;
        }
        if degraded || moving {
            self.unavailable += 1;
        } else if updated {
            self.ready += 1;
        }
    }
}

fn condition(type_: &str, on: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": type_, "status": if on { "True" } else { "False" }, "reason": reason,
        "message": message, "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    })
}

fn pool_status(pool: &MachineConfigPool, configuration: &Value, c: &Counts) -> Value {
    let target = configuration["name"].as_str().unwrap_or("");
    let all_updated = c.updated == c.machine;
    let node_degraded = c.degraded > 0;
    let (degraded_reason, degraded_msg) = if node_degraded {
        (
            format!("{} nodes are reporting degraded status on sync", c.degraded),
            c.reasons.join(", "),
        )
    } else {
        (String::new(), String::new())
    };
    let mut status = json!({
        "observedGeneration": pool.metadata.generation.unwrap_or(0),
        "machineCount": c.machine,
        "updatedMachineCount": c.updated,
        "readyMachineCount": c.ready,
        "unavailableMachineCount": c.unavailable,
        "degradedMachineCount": c.degraded,
        "conditions": [
            condition("RenderDegraded", false, "", ""),
            condition("NodeDegraded", node_degraded, &degraded_reason, &degraded_msg),
            condition("Degraded", node_degraded, &degraded_reason, &degraded_msg),
            condition("Updated", all_updated, "", &if all_updated { format!("All nodes are updated with MachineConfig {target}") } else { String::new() }),
            condition("Updating", !all_updated, "", &if all_updated { String::new() } else { format!("All nodes are updating to MachineConfig {target}") }),
        ],
    });
    // Like the MCO, status.configuration moves only once every node runs the rendering.
    status["configuration"] = if all_updated {
        configuration.clone()
    } else {
        serde_json::to_value(pool.status.as_ref().and_then(|s| s.configuration.clone()))
            .unwrap_or(Value::Null)
    };
    if status["configuration"].is_null()
        && let Some(m) = status.as_object_mut()
    {
        m.remove("configuration");
    }
    status
}

fn strip_times(v: &Value) -> Value {
    let mut v = v.clone();
    for c in v["conditions"].as_array_mut().into_iter().flatten() {
        if let Some(m) = c.as_object_mut() {
            m.remove("lastTransitionTime");
        }
    }
    v
}

fn status_equal(old: &Value, new: &Value) -> bool {
    strip_times(old) == strip_times(new)
}

/// A condition whose status did not change keeps its lastTransitionTime.
fn keep_transition_times(old: &Value, mut new: Value) -> Value {
    let prev: HashMap<String, (Value, Value)> = old["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                c["type"].as_str()?.to_string(),
                (c["status"].clone(), c["lastTransitionTime"].clone()),
            ))
        })
        .collect();
    for c in new["conditions"].as_array_mut().into_iter().flatten() {
        if let Some((status, time)) = c["type"].as_str().and_then(|t| prev.get(t))
            && *status == c["status"]
            && !time.is_null()
        {
            c["lastTransitionTime"] = time.clone();
        }
    }
    new
}
