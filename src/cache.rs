//! The process's one view of the cluster: one watch per shared kind, and what the API server
//! serves. Nodes (metadata only, one compact [`NodeInfo`] each: name, labels, the MCO
//! annotations), RuntimeClasses, KataConfigs and Namespaces (metadata only, labels) are read by
//! the reconciler and by the webhooks alike, so each is listed and watched once; API discovery
//! ([`crate::discovery`]) is re-checked on an interval. Subscribers learn what changed in a way
//! that matters (for a node, what the planner reads of it; otherwise a fingerprint of the
//! fields anyone reads), so neither a heartbeat nor another controller's label wakes them.
//!
//! Memory on a large cluster: the first state of every watch comes from a streaming list
//! ([`InitialList::Streaming`], detected once per process) so no page of objects is ever
//! held, and a node costs a few hundred bytes of shared strings and pointers.
//!
//! [`spawn_reflector`] is also how the reconciler runs the watches of what it alone reads, with
//! [`ClusterCache::watcher_config`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::WatchParams;
use kube::core::{PartialObjectMeta, WatchEvent};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{KataConfig, active_kata_config, kata_config_in_force};
use crate::discovery::{self, ServedApis};
use crate::observability::metrics::Metrics;
use crate::plan::NodeInfo;
use crate::plan::nodes::planner_reads_change;

mod node_meta;
pub use node_meta::NodeMeta;

/// Which shared kind changed in a way some reader cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// What the planner reads of a node (MCO annotations, role and kata labels, labels a
    /// KataConfig selects on), or the set of nodes.
    Nodes,
    RuntimeClasses,
    KataConfigs,
    /// Labels of a namespace, or the set of namespaces.
    Namespaces,
    /// What the API server serves ([`ClusterCache::served_apis`]).
    ServedApis,
}

/// How a watch gets its first full state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialList {
    /// One watch with `sendInitialEvents=true` (a streaming list, Kubernetes' WatchList): objects
    /// arrive one by one, so none but the current one is ever held whole.
    Streaming,
    /// Paged lists ([`PAGED_LIST_LIMIT`] objects a page), then a watch: for servers without
    /// streaming lists.
    Paged,
}

/// Objects per page of a paged list. A page is decoded whole: on a real kube-apiserver without
/// streaming lists, kube-runtime's default of 500 realistic node metadata (then with their
/// `managedFields`, which [`NodeMeta`] now skips) set the operator's peak RSS (docs/scale.md),
/// so pages are smaller; 100 costs one more request per 100 objects at startup and relist only.
pub const PAGED_LIST_LIMIT: u32 = 100;

impl InitialList {
    /// The watcher configuration of this strategy.
    pub fn watcher_config(self) -> watcher::Config {
        match self {
            InitialList::Streaming => watcher::Config::default().streaming_lists(),
            InitialList::Paged => watcher::Config::default().page_size(PAGED_LIST_LIMIT),
        }
    }
}

/// The object the streaming-list probe watches: no namespace has this name, so the answer is
/// just the end-of-initial-events bookmark.
const PROBE_NAME: &str = "sandboxed-containers-operator-streaming-list-probe";
/// Longest the probe waits for that bookmark before falling back to paged lists.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the server supports streaming lists: one watch of namespaces with
/// `sendInitialEvents=true` must answer with the `k8s.io/initial-events-end` bookmark. A server
/// without the WatchList feature refuses the request (422), and an older one never sends it.
pub async fn detect_initial_list(client: &Client) -> InitialList {
    let api: Api<Namespace> = Api::all(client.clone());
    let params = WatchParams {
        field_selector: Some(format!("metadata.name={PROBE_NAME}")),
        timeout: Some(PROBE_TIMEOUT.as_secs() as u32),
        bookmarks: true,
        send_initial_events: true,
        label_selector: None,
    };
    let probe = async {
        let stream = match api.watch_metadata(&params, "0").await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "streaming-list probe refused");
                return InitialList::Paged;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(WatchEvent::Bookmark(b))
                    if b.metadata
                        .annotations
                        .contains_key("k8s.io/initial-events-end") =>
                {
                    return InitialList::Streaming;
                }
                Ok(WatchEvent::Bookmark(_) | WatchEvent::Added(_)) => {}
                other => {
                    tracing::debug!(answer = ?other, "streaming-list probe: not a streaming list");
                    break;
                }
            }
        }
        tracing::debug!("streaming-list probe: the watch ended before its initial events did");
        InitialList::Paged
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .unwrap_or(InitialList::Paged)
}

/// Read side of the shared watches. Cheap to clone.
#[derive(Clone)]
pub struct ClusterCache {
    nodes: NodeStore,
    runtime_classes: Store<RuntimeClass>,
    kata_configs: Store<KataConfig>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    served: watch::Receiver<Option<ServedApis>>,
    initial_list: watch::Receiver<Option<InitialList>>,
    changes: broadcast::Sender<Change>,
}

/// Write side, fed by the watches in production and by tests directly.
pub struct CacheWriters {
    pub nodes: NodeWriter,
    pub runtime_classes: Writer<RuntimeClass>,
    pub kataconfigs: Writer<KataConfig>,
    pub namespaces: Writer<PartialObjectMeta<Namespace>>,
    /// What discovery found (`None`: not known yet).
    pub served: watch::Sender<Option<ServedApis>>,
}

fn fingerprint<T: Hash>(v: &T) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Fingerprint of an object's resourceVersion: any change of it.
pub fn rv_fingerprint<K: Resource>(o: &K) -> u64 {
    fingerprint(&o.meta().resource_version)
}

fn namespace_fingerprint(n: &PartialObjectMeta<Namespace>) -> u64 {
    fingerprint(n.labels())
}

/// Only the policy label of a namespace is read; namespaces are many.
fn slim_namespace(ns: &mut PartialObjectMeta<Namespace>) {
    ns.managed_fields_mut().clear();
    ns.annotations_mut().clear();
}

impl ClusterCache {
    /// Empty caches and their writers (tests fill them by hand); watches made for it would get
    /// their first state by paged lists.
    pub fn new() -> (ClusterCache, CacheWriters) {
        let (cache, writers, initial_list) = Self::build();
        initial_list.send_replace(Some(InitialList::Paged));
        (cache, writers)
    }

    fn build() -> (
        ClusterCache,
        CacheWriters,
        watch::Sender<Option<InitialList>>,
    ) {
        let (runtime_classes, rc_w) = reflector::store();
        let (kata_configs, kc_w) = reflector::store();
        let (nodes, node_w) = NodeStore::new(kata_configs.clone());
        let (namespaces, ns_w) = reflector::store();
        let (served_w, served) = watch::channel(None);
        let (initial_list_w, initial_list) = watch::channel(None);
        let (changes, _) = broadcast::channel(64);
        (
            ClusterCache {
                nodes,
                runtime_classes,
                kata_configs,
                namespaces,
                served,
                initial_list,
                changes,
            },
            CacheWriters {
                nodes: node_w,
                runtime_classes: rc_w,
                kataconfigs: kc_w,
                namespaces: ns_w,
                served: served_w,
            },
            initial_list_w,
        )
    }

    /// Starts the four watches and discovery every [`discovery::DEFAULT_INTERVAL`]; they run
    /// until `shutdown`, reconnecting with backoff.
    pub fn start(client: Client, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Self {
        Self::start_with(client, metrics, discovery::DEFAULT_INTERVAL, shutdown)
    }

    /// [`ClusterCache::start`] with another discovery interval. The watches start once
    /// [`detect_initial_list`] has answered (streaming lists where the server has them).
    pub fn start_with(
        client: Client,
        metrics: Arc<Metrics>,
        discovery_interval: std::time::Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let (cache, w, initial_list) = ClusterCache::build();
        spawn_discovery(
            client.clone(),
            w.served,
            cache.changes.clone(),
            discovery_interval,
            shutdown.clone(),
        );
        let changes = cache.changes.clone();
        tokio::spawn(async move {
            let strategy = tokio::select! {
                s = detect_initial_list(&client) => s,
                () = shutdown.cancelled() => return,
            };
            tracing::info!(
                streaming = strategy == InitialList::Streaming,
                "watch caches: initial state by {}",
                match strategy {
                    InitialList::Streaming => "streaming lists (sendInitialEvents)",
                    InitialList::Paged => "paged lists (the server has no streaming lists)",
                }
            );
            initial_list.send_replace(Some(strategy));
            let writers = SharedWriters {
                nodes: w.nodes,
                runtime_classes: w.runtime_classes,
                kataconfigs: w.kataconfigs,
                namespaces: w.namespaces,
            };
            start_shared_watches(&client, writers, strategy, &changes, &metrics, &shutdown);
        });
        cache
    }

    /// How this process's watches get their first state (waits for the probe of
    /// [`ClusterCache::start`]; [`InitialList::Paged`] if it never answered).
    pub async fn initial_list(&self) -> InitialList {
        let mut rx = self.initial_list.clone();
        rx.wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| *v)
            .unwrap_or(InitialList::Paged)
    }

    /// The watcher configuration for any other watch of this process.
    pub async fn watcher_config(&self) -> watcher::Config {
        self.initial_list().await.watcher_config()
    }

    /// What the API server serves; `None` until discovery first answered.
    pub fn served_apis(&self) -> Option<ServedApis> {
        *self.served.borrow()
    }

    /// Waits for the first discovery answer (`None` if discovery stopped before one).
    pub async fn served_apis_ready(&self) -> Option<ServedApis> {
        let mut rx = self.served.clone();
        rx.wait_for(Option::is_some).await.ok().and_then(|v| *v)
    }

    /// Changes from now on. A receiver that falls behind gets `Lagged`: treat it as "anything
    /// may have changed".
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Waits until every shared cache has its first full list.
    pub async fn wait_synced(&self) -> Result<(), CacheNotSynced> {
        let ready = |r: Result<(), reflector::store::WriterDropped>, name| {
            r.map_err(|_| CacheNotSynced(name))
        };
        self.nodes
            .ready()
            .await
            .map_err(|_| CacheNotSynced("nodes"))?;
        ready(store_ready(&self.runtime_classes).await, "runtimeclasses")?;
        ready(store_ready(&self.kata_configs).await, "kataconfigs")?;
        ready(store_ready(&self.namespaces).await, "namespaces")?;
        Ok(())
    }

    /// The planner's view of every node, sorted by name. Each record shares its strings with
    /// the cache, so this copies names and pointers only.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.read().values().cloned().collect()
    }

    pub fn runtime_class(&self, name: &str) -> Option<Arc<RuntimeClass>> {
        self.runtime_classes.get(&reflector::ObjectRef::new(name))
    }

    pub fn kata_configs(&self) -> Vec<Arc<KataConfig>> {
        self.kata_configs.state()
    }

    /// The KataConfig the operator acts on (see [`active_kata_config`]).
    pub fn active_kata_config(&self) -> Option<Arc<KataConfig>> {
        let all = self.kata_configs.state();
        let name = active_kata_config(all.iter().map(AsRef::as_ref))?.name_any();
        all.into_iter().find(|k| k.name_any() == name)
    }

    /// The KataConfig admission enforces (see [`kata_config_in_force`]).
    pub fn kata_config_in_force(&self) -> Option<Arc<KataConfig>> {
        let all = self.kata_configs.state();
        let name = kata_config_in_force(all.iter().map(AsRef::as_ref))?.name_any();
        all.into_iter().find(|k| k.name_any() == name)
    }

    /// The KataConfig store itself (the reconciler's controller reads from it).
    pub fn kata_config_store(&self) -> Store<KataConfig> {
        self.kata_configs.clone()
    }

    /// Labels of a namespace; `None` when it is not (yet) in the cache.
    pub fn namespace_labels(
        &self,
        name: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        self.namespaces
            .get(&reflector::ObjectRef::new(name))
            .map(|ns| ns.metadata.labels.clone().unwrap_or_default())
    }
}

/// The writers [`start_shared_watches`] feeds.
struct SharedWriters {
    nodes: NodeWriter,
    runtime_classes: Writer<RuntimeClass>,
    kataconfigs: Writer<KataConfig>,
    namespaces: Writer<PartialObjectMeta<Namespace>>,
}

/// The four shared watches. Nodes and namespaces are watched metadata-only (the server sends
/// neither `spec` nor `status`, e.g. a node's image list), and only what is read is kept: a
/// node is decoded as [`NodeMeta`], which skips its `managedFields` while parsing.
fn start_shared_watches(
    client: &Client,
    w: SharedWriters,
    strategy: InitialList,
    changes: &broadcast::Sender<Change>,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) {
    let cfg = || strategy.watcher_config();
    let notify = |change: Change| {
        let tx = changes.clone();
        // No subscriber yet is fine: readers look at the stores when they start.
        move || {
            let _ = tx.send(change);
            true
        }
    };
    spawn_node_watch(
        w.nodes,
        watcher::watcher(Api::<NodeMeta>::all(client.clone()), cfg()),
        notify(Change::Nodes),
        metrics,
        shutdown,
    );
    spawn_reflector(
        w.runtime_classes,
        watcher::watcher(Api::<RuntimeClass>::all(client.clone()), cfg()),
        rv_fingerprint,
        notify(Change::RuntimeClasses),
        metrics,
        shutdown,
    );
    spawn_reflector(
        w.kataconfigs,
        watcher::watcher(Api::<KataConfig>::all(client.clone()), cfg()),
        rv_fingerprint,
        notify(Change::KataConfigs),
        metrics,
        shutdown,
    );
    spawn_reflector(
        w.namespaces,
        watcher::watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            cfg(),
        )
        .modify(slim_namespace),
        namespace_fingerprint,
        notify(Change::Namespaces),
        metrics,
        shutdown,
    );
}

/// The node cache: one compact [`NodeInfo`] per node, by name.
#[derive(Clone)]
struct NodeStore {
    nodes: Arc<RwLock<BTreeMap<String, NodeInfo>>>,
    ready: watch::Receiver<bool>,
}

impl NodeStore {
    /// `kata_configs`: whose selectors say which labels the planner reads.
    fn new(kata_configs: Store<KataConfig>) -> (NodeStore, NodeWriter) {
        let nodes = Arc::new(RwLock::new(BTreeMap::new()));
        let (ready_tx, ready) = watch::channel(false);
        (
            NodeStore {
                nodes: nodes.clone(),
                ready,
            },
            NodeWriter {
                nodes,
                ready: ready_tx,
                relist: None,
                strings: Interner::default(),
                kata_configs,
            },
        )
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, NodeInfo>> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Until the first full list is in (`Err` if the writer is gone before).
    async fn ready(&self) -> Result<(), watch::error::RecvError> {
        let mut rx = self.ready.clone();
        rx.wait_for(|r| *r).await.map(|_| ())
    }
}

/// Write side of the node cache. Each watch event is turned into its [`NodeInfo`] at once
/// (labels and the MCO annotations, strings shared through an interner), so neither the
/// managedFields nor the other annotations of a node are ever stored.
pub struct NodeWriter {
    nodes: Arc<RwLock<BTreeMap<String, NodeInfo>>>,
    ready: watch::Sender<bool>,
    /// The records of a (re)list in progress.
    relist: Option<BTreeMap<String, NodeInfo>>,
    strings: Interner,
    kata_configs: Store<KataConfig>,
}

impl NodeWriter {
    /// Applies one watch event; true when it changed what the planner reads (see
    /// [`planner_reads_change`]): the set of nodes, an MCO annotation, a role or kata label, a
    /// label a KataConfig selects on. A heartbeat, a network-plugin annotation, a status update
    /// or another controller's label is stored (a later selector may read it) but says nothing.
    pub fn apply_watcher_event(&mut self, ev: &Event<NodeMeta>) -> bool {
        match ev {
            Event::Apply(n) => {
                let record = self.record(n);
                let mut nodes = self.write();
                let fire = match nodes.get(&*record.name) {
                    Some(old) if *old == record => return false,
                    Some(old) => {
                        let specs = self.kata_configs.state();
                        planner_reads_change(old, &record, specs.iter().map(|k| &k.spec))
                    }
                    None => true,
                };
                nodes.insert(record.name.to_string(), record);
                drop(nodes);
                self.strings.prune();
                fire
            }
            Event::Delete(n) => self.write().remove(&n.name_any()).is_some(),
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(n) => {
                let record = self.record(n);
                self.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(record.name.to_string(), record);
                false
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let changed = {
                    let mut nodes = self.write();
                    let changed = *nodes != listed;
                    *nodes = listed;
                    changed
                };
                self.strings.prune_now();
                self.ready.send_replace(true);
                changed
            }
        }
    }

    fn record(&mut self, n: &NodeMeta) -> NodeInfo {
        NodeInfo::from_meta_with(&n.metadata, &mut |s| self.strings.intern(s))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, NodeInfo>> {
        self.nodes.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// One shared copy of each label key and value: 5,000 nodes carry the same 20 keys and mostly
/// the same values.
#[derive(Default)]
struct Interner {
    strings: HashSet<Arc<str>>,
    /// Size after the last prune.
    kept: usize,
}

impl Interner {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(shared.clone());
        shared
    }

    /// Forgets the strings no record uses any more (a deleted node's name), once the set has
    /// doubled since the last time, so this costs O(1) per event on average.
    fn prune(&mut self) {
        if self.strings.len() > 2 * self.kept + 1024 {
            self.prune_now();
        }
    }

    /// Forgets every string no record uses (after a relist: rare, and the time to be exact).
    fn prune_now(&mut self) {
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        self.kept = self.strings.len();
    }
}

/// Runs the node watch into `writer` until `shutdown`; `on_change` as in [`spawn_reflector`].
fn spawn_node_watch<S>(
    mut writer: NodeWriter,
    stream: S,
    on_change: impl Fn() -> bool + Send + 'static,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> JoinHandle<()>
where
    S: Stream<Item = Result<Event<NodeMeta>, watcher::Error>> + Send + 'static,
{
    let metrics = metrics.clone();
    let shutdown = shutdown.clone();
    let stream = stream.default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                () = shutdown.cancelled() => return,
            };
            let Some(ev) = ev else { return };
            let fire = match ev {
                Ok(ev) => writer.apply_watcher_event(&ev),
                Err(e) => {
                    count_watch_error(&metrics, &e);
                    false
                }
            };
            if fire && !on_change() {
                return;
            }
        }
    })
}

/// `kata_operator_api_errors_total{category}`; the watcher itself retries with backoff.
fn count_watch_error(metrics: &Metrics, e: &watcher::Error) {
    let category = crate::kubeapi::watch_error_category(e);
    metrics
        .api_errors
        .with_label_values(&[category.as_str()])
        .inc();
    tracing::debug!(error = %e, "watch error; the watcher retries with backoff");
}

/// Probes now and every `interval` until `shutdown`; each change is stored, logged once and
/// announced as [`Change::ServedApis`].
fn spawn_discovery(
    client: Client,
    served: watch::Sender<Option<ServedApis>>,
    changes: broadcast::Sender<Change>,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            match discovery::probe(&client).await {
                Ok(now) if *served.borrow() != Some(now) => {
                    tracing::info!(
                        validating_admission_policy = now.validating_admission_policy,
                        machine_config = now.machine_config,
                        monitoring = now.monitoring,
                        "API discovery: served APIs changed"
                    );
                    served.send_replace(Some(now));
                    let _ = changes.send(Change::ServedApis);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "API discovery failed; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return,
            }
        }
    });
}

/// A cache that never completed its first list (its watch task ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {0} watch cache has not synced")]
pub struct CacheNotSynced(pub &'static str);

/// Waits until a reflector store has its first full list.
///
/// kube's `Store::wait_until_ready` wakes only the most recent of several concurrent waiters (it
/// keeps a single oneshot receiver), so a readiness task and a reconcile waiting at the same time
/// could hang forever. Re-polling every 50 ms re-registers each waiter's waker.
pub async fn store_ready<K>(store: &Store<K>) -> Result<(), reflector::store::WriterDropped>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    loop {
        if let Ok(result) = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            store.wait_until_ready(),
        )
        .await
        {
            return result;
        }
    }
}

/// Runs one reflector into `writer` until `shutdown` (or until `on_change` returns false because
/// nobody listens any more). `on_change` runs when an object's fingerprint changes, when one is
/// deleted, and after a (re)list that changed anything. Watch errors are counted in
/// `kata_operator_api_errors_total{category}`; the watcher retries with backoff.
pub fn spawn_reflector<K, S>(
    writer: Writer<K>,
    stream: S,
    fp: fn(&K) -> u64,
    on_change: impl Fn() -> bool + Send + 'static,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    let metrics = metrics.clone();
    let shutdown = shutdown.clone();
    let stream = reflector::reflector(writer, stream.default_backoff());
    tokio::spawn(async move {
        let mut changes = Fingerprints::default();
        let mut stream = std::pin::pin!(stream);
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                () = shutdown.cancelled() => return,
            };
            let Some(ev) = ev else { return };
            let fire = match ev {
                Ok(ev) => changes.observe(&ev, fp),
                Err(e) => {
                    count_watch_error(&metrics, &e);
                    false
                }
            };
            if fire && !on_change() {
                return;
            }
        }
    })
}

/// The fingerprints last seen per object, to tell a change that matters from one that does not.
#[derive(Default)]
struct Fingerprints {
    seen: HashMap<(Option<String>, String), u64>,
    relist: HashMap<(Option<String>, String), u64>,
}

impl Fingerprints {
    /// Whether this event changed anything a reader looks at.
    fn observe<K: Resource>(&mut self, ev: &Event<K>, fp: fn(&K) -> u64) -> bool {
        let key = |o: &K| {
            (
                o.meta().namespace.clone(),
                o.meta().name.clone().unwrap_or_default(),
            )
        };
        match ev {
            Event::Apply(o) => {
                let f = fp(o);
                self.seen.insert(key(o), f) != Some(f)
            }
            Event::Delete(o) => {
                self.seen.remove(&key(o));
                true
            }
            Event::Init => {
                self.relist.clear();
                false
            }
            Event::InitApply(o) => {
                self.relist.insert(key(o), fp(o));
                false
            }
            Event::InitDone => {
                let changed = self.relist != self.seen;
                self.seen = std::mem::take(&mut self.relist);
                changed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], rv: &str) -> NodeMeta {
        NodeMeta {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
        }
    }

    fn namespace(name: &str, labels: &[(&str, &str)], rv: &str) -> PartialObjectMeta<Namespace> {
        let mut ns = PartialObjectMeta::<Namespace>::default();
        *kube::Resource::meta_mut(&mut ns) = node(name, labels, rv).metadata;
        ns
    }

    #[test]
    fn only_changes_of_read_fields_fire() {
        let mut f = Fingerprints::default();
        let fp: fn(&PartialObjectMeta<Namespace>) -> u64 = namespace_fingerprint;
        assert!(!f.observe(&Event::Init, fp));
        assert!(!f.observe(&Event::InitApply(namespace("a", &[("x", "1")], "1")), fp));
        assert!(
            f.observe(&Event::InitDone, fp),
            "the first list is a change"
        );
        // An annotation edit bumps the resourceVersion only.
        assert!(!f.observe(&Event::Apply(namespace("a", &[("x", "1")], "2")), fp));
        assert!(f.observe(&Event::Apply(namespace("a", &[("x", "2")], "3")), fp));
        assert!(f.observe(&Event::Delete(namespace("a", &[("x", "2")], "4")), fp));
        // A relist that finds what was already known changes nothing.
        assert!(!f.observe(&Event::Init, fp));
        assert!(!f.observe(&Event::InitDone, fp));
    }

    /// A node as the API server sends it: metadata with OVN annotations and managedFields.
    fn raw_node(rv: &str, ovn: &str, extra: serde_json::Value) -> NodeMeta {
        use crate::names::{MCO_CURRENT_CONFIG, MCO_DESIRED_CONFIG, MCO_REASON, MCO_STATE};
        let mut meta = serde_json::json!({
            "name": "worker-0", "resourceVersion": rv,
            "labels": {"node-role.kubernetes.io/worker": "", "kubernetes.io/hostname": "worker-0"},
            "annotations": {
                MCO_STATE: "Done", MCO_CURRENT_CONFIG: "rendered-a", MCO_DESIRED_CONFIG: "rendered-a",
                MCO_REASON: "", "k8s.ovn.org/node-subnets": ovn,
            },
            "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}}],
        });
        if let (Some(m), Some(extra)) = (meta.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                m.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": meta,
        }))
        .expect("node metadata")
    }

    #[test]
    fn node_records_keep_labels_and_mco_annotations_only() {
        use crate::names::MCO_CURRENT_CONFIG;
        use crate::plan::nodes::NODE_ANNOTATIONS;
        let (cache, mut w) = ClusterCache::new();
        w.nodes.apply_watcher_event(&Event::Init);
        w.nodes.apply_watcher_event(&Event::InitApply(raw_node(
            "1",
            "{}",
            serde_json::json!({}),
        )));
        assert!(w.nodes.apply_watcher_event(&Event::InitDone));
        let nodes = cache.nodes();
        let mut kept: Vec<&str> = nodes[0].annotations.keys().collect();
        kept.sort_unstable();
        let mut want = NODE_ANNOTATIONS.to_vec();
        want.sort_unstable();
        assert_eq!(kept, want);
        assert_eq!(nodes[0].labels.len(), 2);
        assert_eq!(nodes[0].annotation(MCO_CURRENT_CONFIG), Some("rendered-a"));
    }

    #[test]
    fn a_node_event_changing_only_unread_metadata_changes_nothing() {
        use crate::names::MCO_STATE;
        let (cache, mut w) = ClusterCache::new();
        let n = &mut w.nodes;
        n.apply_watcher_event(&Event::Init);
        n.apply_watcher_event(&Event::InitApply(raw_node("1", "a", serde_json::json!({}))));
        n.apply_watcher_event(&Event::InitDone);
        // Another OVN annotation, a heartbeat annotation, new managedFields, a status update
        // (only the resourceVersion shows in metadata): no change.
        let unread = [
            raw_node("2", "b", serde_json::json!({})),
            raw_node(
                "3",
                "b",
                serde_json::json!({"managedFields": [{"manager": "ovnkube", "operation": "Update"}]}),
            ),
            raw_node("4", "b", serde_json::json!({"generation": 7})),
        ];
        for ev in unread {
            assert!(!n.apply_watcher_event(&Event::Apply(ev)));
        }
        let mut heartbeat = raw_node("5", "b", serde_json::json!({}));
        heartbeat
            .annotations_mut()
            .insert("example.com/heartbeat".into(), "5".into());
        assert!(!n.apply_watcher_event(&Event::Apply(heartbeat)));
        // A label no KataConfig selects on, as kube-controller-manager adds to every node: kept
        // for a later selector, but no change.
        let mut relabelled = raw_node("6", "b", serde_json::json!({}));
        relabelled
            .labels_mut()
            .insert("beta.kubernetes.io/os".into(), "linux".into());
        relabelled.labels_mut().insert("zone".into(), "a".into());
        assert!(!n.apply_watcher_event(&Event::Apply(relabelled.clone())));
        assert_eq!(cache.nodes()[0].labels.get("zone"), Some("a"));
        // Once a KataConfig selects on `zone`, a change of it is one.
        let spec = serde_json::json!({"kataConfigPoolSelector": {"matchLabels": {"zone": "b"}}});
        let kc = KataConfig::new("example", serde_json::from_value(spec).expect("spec"));
        w.kataconfigs.apply_watcher_event(&Event::Apply(kc));
        let n = &mut w.nodes;
        relabelled.labels_mut().insert("zone".into(), "b".into());
        assert!(n.apply_watcher_event(&Event::Apply(relabelled)));
        // What is read whatever the KataConfig: the role labels.
        let mut unworkered = raw_node("6", "b", serde_json::json!({}));
        unworkered.labels_mut().insert("zone".into(), "b".into());
        unworkered
            .labels_mut()
            .insert("beta.kubernetes.io/os".into(), "linux".into());
        unworkered
            .labels_mut()
            .remove(crate::names::WORKER_ROLE_LABEL);
        assert!(n.apply_watcher_event(&Event::Apply(unworkered)));
        let mut working = raw_node("7", "b", serde_json::json!({}));
        working
            .annotations_mut()
            .insert(MCO_STATE.into(), "Working".into());
        assert!(n.apply_watcher_event(&Event::Apply(working.clone())));
        assert_eq!(cache.nodes()[0].annotation(MCO_STATE), Some("Working"));
        // A relist that finds the same records is no change; a delete is.
        n.apply_watcher_event(&Event::Init);
        n.apply_watcher_event(&Event::InitApply(working.clone()));
        assert!(!n.apply_watcher_event(&Event::InitDone));
        assert!(n.apply_watcher_event(&Event::Delete(working.clone())));
        assert!(!n.apply_watcher_event(&Event::Delete(working)));
        assert!(cache.nodes().is_empty());
    }

    #[test]
    fn node_records_share_their_strings_and_forget_unused_ones() {
        let (cache, mut w) = ClusterCache::new();
        for i in 0..3000 {
            w.nodes.apply_watcher_event(&Event::Apply(node(
                &format!("n{i}"),
                &[("zone", "a"), ("host", &format!("h{i}"))],
                "1",
            )));
        }
        let nodes = cache.nodes();
        let zone = |n: &NodeInfo| {
            n.labels
                .iter()
                .find(|(k, _)| *k == "zone")
                .map(|(_, v)| v.as_ptr())
        };
        assert_eq!(
            zone(&nodes[0]),
            zone(&nodes[2999]),
            "one copy of a shared value"
        );
        drop(nodes);
        // A relist finds one node left: the strings of the others are forgotten.
        w.nodes.apply_watcher_event(&Event::Init);
        w.nodes
            .apply_watcher_event(&Event::InitApply(node("last", &[("zone", "b")], "3")));
        w.nodes.apply_watcher_event(&Event::InitDone);
        assert_eq!(cache.nodes().len(), 1);
        assert!(
            w.nodes.strings.strings.len() < 10,
            "the names of deleted nodes are forgotten: {} strings kept",
            w.nodes.strings.strings.len()
        );
    }

    #[tokio::test]
    async fn the_node_cache_is_ready_after_its_first_list_only() {
        let (cache, mut w) = ClusterCache::new();
        let ready = tokio::time::timeout(Duration::from_millis(50), cache.nodes.ready()).await;
        assert!(ready.is_err(), "not ready before the first list");
        w.nodes.apply_watcher_event(&Event::Init);
        w.nodes.apply_watcher_event(&Event::InitDone);
        let ready = tokio::time::timeout(Duration::from_secs(10), cache.nodes.ready()).await;
        assert!(matches!(ready, Ok(Ok(()))), "{ready:?}");
        drop(w);
        let (cache, w) = ClusterCache::new();
        drop(w);
        assert!(cache.wait_synced().await.is_err());
        assert_eq!(
            cache
                .wait_synced()
                .await
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("the nodes watch cache has not synced")
        );
    }

    #[tokio::test]
    async fn a_cache_made_by_hand_lists_by_pages() {
        let (cache, _w) = ClusterCache::new();
        assert_eq!(cache.initial_list().await, InitialList::Paged);
    }

    #[tokio::test]
    async fn concurrent_waiters_on_one_store_all_wake() {
        let (store, mut writer) = reflector::store::<k8s_openapi::api::core::v1::Node>();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { store_ready(&s).await })
            })
            .collect();
        // Let every waiter register before the store becomes ready.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        for w in waiters {
            let woke = tokio::time::timeout(std::time::Duration::from_secs(10), w).await;
            assert!(
                matches!(woke, Ok(Ok(Ok(())))),
                "a waiter never woke: {woke:?}"
            );
        }
    }

    #[tokio::test]
    async fn readers_see_the_stores_and_the_rules_on_them() {
        let (cache, mut w) = ClusterCache::new();
        let mut kc = KataConfig::new("example", Default::default());
        kc.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(1).expect("time"),
            ));
        w.kataconfigs.apply_watcher_event(&Event::Apply(kc));
        let mut ns = PartialObjectMeta::<Namespace>::default();
        ns.metadata.name = Some("team".into());
        ns.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        w.namespaces.apply_watcher_event(&Event::Apply(ns));
        w.nodes
            .apply_watcher_event(&Event::Apply(node("w0", &[("k", "v")], "1")));
        assert_eq!(cache.namespace_labels("team").expect("cached")["a"], "b");
        assert!(cache.namespace_labels("other").is_none());
        assert_eq!(
            cache
                .active_kata_config()
                .and_then(|k| k.metadata.name.clone())
                .as_deref(),
            Some("example")
        );
        assert!(cache.kata_config_in_force().is_some());
        assert_eq!(&cache.nodes()[0].labels["k"], "v");
    }
}
