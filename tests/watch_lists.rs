//! How the shared watches get their first state (`src/cache.rs`): a streaming list
//! (`sendInitialEvents=true`) where the API server has one, and paged lists where it refuses
//! the streaming-list probe, on the in-memory server and on a real kube-apiserver.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use sandboxed_containers_operator::cache::{
    ClusterCache, InitialList, PAGED_LIST_LIMIT, detect_initial_list,
};
use sandboxed_containers_operator::names::DEFAULT_OPERATOR_NAMESPACE;
use sandboxed_containers_operator::observability::Metrics;
use testkit::{FakeApi, Fault, FaultKind, envtest, node_json};
use tokio_util::sync::CancellationToken;

const HANG_GUARD: Duration = Duration::from_secs(120);

async fn create_nodes(client: &kube::Client, names: std::ops::Range<usize>) {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in names {
        let node: Node = serde_json::from_value(node_json(
            &format!("worker-{i}"),
            &["worker"],
            serde_json::json!({}),
        ))
        .expect("node");
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }
}

/// Starts the shared cache on `client` and waits until every watch has its first state.
async fn synced_cache(client: kube::Client, shutdown: &CancellationToken) -> ClusterCache {
    let cache = ClusterCache::start(client, Arc::new(Metrics::new()), shutdown.clone());
    tokio::time::timeout(HANG_GUARD, cache.wait_synced())
        .await
        .expect("hang guard: the caches never synced")
        .expect("the caches synced");
    cache
}

/// Node requests the operator sent, by verb.
fn operator_node_verbs(fake: &FakeApi) -> Vec<String> {
    fake.requests_by("operator")
        .into_iter()
        .filter(|r| r.resource == "nodes")
        .map(|r| r.verb)
        .collect()
}

#[tokio::test]
async fn watches_stream_their_first_state_when_the_server_has_streaming_lists() {
    let fake = FakeApi::new();
    create_nodes(&fake.client_as("kubelet"), 0..3).await;
    assert_eq!(
        detect_initial_list(&fake.client()).await,
        InitialList::Streaming
    );
    let shutdown = CancellationToken::new();
    let cache = synced_cache(fake.client(), &shutdown).await;
    assert_eq!(cache.initial_list().await, InitialList::Streaming);
    assert_eq!(cache.nodes().len(), 3);
    let verbs = operator_node_verbs(&fake);
    assert!(
        verbs.iter().all(|v| v == "watch"),
        "a streaming list is one watch, never a list: {verbs:?}"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn watches_fall_back_to_paged_lists_when_the_server_refuses_streaming_lists() {
    let fake = FakeApi::new();
    // Two full pages and a part: a page is decoded whole, so its size bounds the peak memory.
    let nodes = 2 * PAGED_LIST_LIMIT as usize + 50;
    create_nodes(&fake.client_as("kubelet"), 0..nodes).await;
    // What a server without the WatchList feature answers to `sendInitialEvents=true`.
    fake.inject(Fault::on("watch", "namespaces", FaultKind::Status(422), 1));
    let shutdown = CancellationToken::new();
    let cache = synced_cache(fake.client(), &shutdown).await;
    assert_eq!(cache.initial_list().await, InitialList::Paged);
    assert_eq!(cache.nodes().len(), nodes);
    let verbs = operator_node_verbs(&fake);
    assert_eq!(
        verbs.iter().filter(|v| *v == "list").count(),
        3,
        "paged lists list the nodes {PAGED_LIST_LIMIT} a page: {verbs:?}"
    );
    shutdown.cancel();
}

/// Whether the etcd of `KUBEBUILDER_ASSETS` lets kube-apiserver serve streaming lists: it
/// needs etcd's RequestWatchProgress (etcd 3.4.31+ or 3.5.13+); with an older etcd the server
/// answers a streaming list with "the required storage feature RequestWatchProgress is
/// disabled".
fn etcd_supports_watch_progress() -> bool {
    let Ok(assets) = std::env::var("KUBEBUILDER_ASSETS") else {
        return false;
    };
    let out = std::process::Command::new(std::path::Path::new(&assets).join("etcd"))
        .arg("--version")
        .output()
        .expect("etcd --version");
    let text = String::from_utf8_lossy(&out.stdout);
    let version: Vec<u32> = text
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .unwrap_or("0.0.0")
        .trim()
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    match version.as_slice() {
        [3, 4, patch, ..] => *patch >= 31,
        [3, 5, patch, ..] => *patch >= 13,
        [major, minor, ..] => (*major, *minor) > (3, 5),
        _ => false,
    }
}

/// kube-apiserver 1.36 with the operator's ServiceAccount: the probe answers what the server
/// can do (streaming lists when its etcd has watch progress, paged lists otherwise) and every
/// shared watch syncs through that strategy under the generated RBAC, metadata-only watches
/// included, and keeps receiving events.
#[tokio::test]
async fn watches_get_their_first_state_from_a_real_api_server() {
    let Some(env) = envtest::start().await else {
        return;
    };
    create_nodes(&env.client, 0..3).await;
    let operator = env
        .operator_client(DEFAULT_OPERATOR_NAMESPACE)
        .await
        .expect("operator ServiceAccount client");
    let logs = testkit::logs::capture("sandboxed_containers_operator=debug");
    let expected = if etcd_supports_watch_progress() {
        InitialList::Streaming
    } else {
        InitialList::Paged
    };
    assert_eq!(
        detect_initial_list(&operator).await,
        expected,
        "the probe logged:\n{}",
        logs.text()
    );
    if expected == InitialList::Paged {
        assert!(
            logs.text().contains("RequestWatchProgress is disabled"),
            "the server refused the streaming list for its etcd: {}",
            logs.text()
        );
    }
    let shutdown = CancellationToken::new();
    let cache = synced_cache(operator, &shutdown).await;
    assert_eq!(cache.initial_list().await, expected);
    assert_eq!(cache.nodes().len(), 3);
    // Later events arrive on the same stream.
    create_nodes(&env.client, 3..4).await;
    let start = Instant::now();
    while cache.nodes().len() < 4 {
        assert!(start.elapsed() < HANG_GUARD, "the new node never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
}
