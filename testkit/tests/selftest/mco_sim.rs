//! The MCO simulator over the in-memory API server: default pools, rendering, node-by-node
//! rollouts, degrade/recover, API faults, ContainerRuntimeConfig, converged clusters.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use sandboxed_containers_operator::api::MachineConfigPool;
use sandboxed_containers_operator::names::{
    MCO_CURRENT_CONFIG, MCO_DESIRED_CONFIG, MCO_REASON, MCO_STATE,
};
use serde_json::{Value, json};
use testkit::{FakeApi, Fault, FaultKind, McoSimulator, SimOptions, eventually};

use super::{cm, mc, node};

fn kata_pool() -> Value {
    json!({"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfigPool",
    "metadata": {"name": "kata-oc", "labels": {"pools.operator.machineconfiguration.openshift.io/kata-oc": ""}},
    "spec": {
        "machineConfigSelector": {"matchExpressions": [{"key": "machineconfiguration.openshift.io/role", "operator": "In", "values": ["kata-oc", "worker"]}]},
        "nodeSelector": {"matchLabels": {"node-role.kubernetes.io/kata-oc": ""}},
    }})
}

fn ann(fake: &FakeApi, node: &str, key: &str) -> Option<String> {
    fake.get::<Node>(node)?.annotations().get(key).cloned()
}

fn pool(fake: &FakeApi, name: &str) -> MachineConfigPool {
    fake.get::<MachineConfigPool>(name).expect("pool exists")
}

fn rendered(fake: &FakeApi, name: &str) -> Option<String> {
    pool(fake, name).spec.configuration.and_then(|c| c.name)
}

fn pool_settled(fake: &FakeApi, name: &str, machines: i32) -> bool {
    let p = pool(fake, name);
    let Some(st) = p.status else { return false };
    st.machine_count == machines
        && st.updated_machine_count == machines
        && st.ready_machine_count == machines
        && st.condition_true("Updated")
        && !st.condition_true("Updating")
        && st.configuration.and_then(|c| c.name) == p.spec.configuration.and_then(|c| c.name)
}

async fn cluster(workers: usize) -> (FakeApi, testkit::SimHandle) {
    let fake = FakeApi::unrestricted();
    fake.insert_json(node(
        "master-0",
        json!({"node-role.kubernetes.io/master": ""}),
    ));
    for i in 0..workers {
        fake.insert_json(node(
            &format!("worker-{i}"),
            json!({"node-role.kubernetes.io/worker": ""}),
        ));
    }
    fake.insert_json(mc("00-worker", "worker"));
    fake.insert_json(mc("00-master", "master"));
    let sim = McoSimulator::spawn(
        fake.client_as("mco-sim"),
        SimOptions {
            create_default_pools: true,
            ..SimOptions::default()
        },
    )
    .await
    .expect("sim starts");
    (fake, sim)
}

#[tokio::test]
async fn sim_seeds_a_settled_cluster_and_then_writes_nothing() {
    let (fake, sim) = cluster(2).await;
    eventually("worker pool settled", || {
        pool_settled(&fake, "worker", 2) && pool_settled(&fake, "master", 1)
    })
    .await;
    let worker_target = rendered(&fake, "worker").expect("rendered");
    assert!(worker_target.starts_with("rendered-worker-"));
    for n in ["worker-0", "worker-1"] {
        assert_eq!(
            ann(&fake, n, MCO_CURRENT_CONFIG).as_deref(),
            Some(worker_target.as_str())
        );
        assert_eq!(ann(&fake, n, MCO_STATE).as_deref(), Some("Done"));
    }
    let master = pool(&fake, "master").spec.configuration.expect("config");
    assert_eq!(
        master
            .source
            .iter()
            .filter_map(|s| s.name.clone())
            .collect::<Vec<_>>(),
        ["00-master"]
    );
    // Settled: a no-op event (an unrelated object) causes no simulator writes.
    fake.clear_requests();
    fake.insert(&cm("noise", json!({})));
    let nodes: Api<Node> = Api::all(fake.client());
    nodes
        .patch(
            "worker-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .expect("label");
    let rv = fake.resource_version();
    eventually("sim acted on the label change", || {
        sim.seen_resource_version() >= rv
    })
    .await;
    assert_eq!(
        fake.write_count_by("mco-sim"),
        0,
        "{:?}",
        fake.requests_by("mco-sim")
    );
    sim.stop().await;
}

#[tokio::test]
async fn sim_rolls_a_custom_pool_one_node_at_a_time() {
    let (fake, sim) = cluster(3).await;
    eventually("initial settle", || pool_settled(&fake, "worker", 3)).await;
    let old = rendered(&fake, "worker").expect("worker rendered");
    // Track every annotation state the nodes pass through.
    let nodes: Api<Node> = Api::all(fake.client());
    let mut stream = watcher(nodes.clone(), watcher::Config::default()).boxed();
    // The watcher is lazy: have it listed and watching before anything moves.
    while !matches!(
        stream.try_next().await.expect("ok").expect("event"),
        watcher::Event::InitDone
    ) {}

    fake.insert_json(kata_pool());
    fake.insert_json(mc("50-kata", "kata-oc"));
    for n in ["worker-0", "worker-1"] {
        nodes
            .patch(
                n,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"labels": {"node-role.kubernetes.io/kata-oc": ""}}}),
                ),
            )
            .await
            .expect("label");
    }
    let mut working_at_once = 0usize;
    let mut seen_working = std::collections::BTreeSet::new();
    // Node -> (state, currentConfig) as the watch delivered them.
    let mut seen: std::collections::BTreeMap<String, (String, String)> = Default::default();
    let done_on_kata = |seen: &std::collections::BTreeMap<String, (String, String)>, n: &str| {
        seen.get(n).is_some_and(|(s, c)| {
            s == "Done"
                && c.starts_with("rendered-kata-oc-")
                && rendered(&fake, "kata-oc").as_ref() == Some(c)
        })
    };
    while !(done_on_kata(&seen, "worker-0")
        && done_on_kata(&seen, "worker-1")
        && pool_settled(&fake, "kata-oc", 2)
        && pool_settled(&fake, "worker", 1))
    {
        let ev = tokio::time::timeout(Duration::from_secs(30), stream.try_next())
            .await
            .expect("progress")
            .expect("ok")
            .expect("event");
        if let watcher::Event::Apply(n) | watcher::Event::InitApply(n) = ev {
            let get = |k: &str| n.annotations().get(k).cloned().unwrap_or_default();
            let s = get(MCO_STATE);
            if s == "Working" {
                seen_working.insert(n.name_any());
            }
            seen.insert(n.name_any(), (s, get(MCO_CURRENT_CONFIG)));
            working_at_once =
                working_at_once.max(seen.values().filter(|(s, _)| s == "Working").count());
        }
    }
    assert_eq!(working_at_once, 1, "maxUnavailable 1 per pool");
    assert_eq!(
        seen_working.iter().cloned().collect::<Vec<_>>(),
        ["worker-0", "worker-1"]
    );
    let target = rendered(&fake, "kata-oc").expect("kata rendered");
    assert!(target.starts_with("rendered-kata-oc-"));
    let sources: Vec<String> = pool(&fake, "kata-oc")
        .spec
        .configuration
        .expect("conf")
        .source
        .iter()
        .filter_map(|s| s.name.clone())
        .collect();
    assert_eq!(sources, ["00-worker", "50-kata"]);
    for n in ["worker-0", "worker-1"] {
        assert_eq!(ann(&fake, n, MCO_CURRENT_CONFIG), Some(target.clone()));
        assert_eq!(ann(&fake, n, MCO_DESIRED_CONFIG), Some(target.clone()));
        assert_eq!(ann(&fake, n, MCO_STATE).as_deref(), Some("Done"));
    }
    assert_eq!(ann(&fake, "worker-2", MCO_CURRENT_CONFIG), Some(old));
    let st = pool(&fake, "kata-oc").status.expect("status");
    assert_eq!(
        (
            st.machine_count,
            st.updated_machine_count,
            st.degraded_machine_count,
            st.unavailable_machine_count
        ),
        (2, 2, 0, 0)
    );
    assert_eq!(
        st.observed_generation,
        pool(&fake, "kata-oc").metadata.generation
    );
    sim.stop().await;
}

#[tokio::test]
async fn sim_degrade_stops_the_pool_and_recover_resumes() {
    let (fake, sim) = cluster(2).await;
    eventually("initial settle", || pool_settled(&fake, "worker", 2)).await;
    let before = rendered(&fake, "worker").expect("rendered");
    sim.degrade_node("worker-0", "disk on fire")
        .await
        .expect("degrade");
    eventually("pool degraded", || {
        pool(&fake, "worker").status.is_some_and(|s| {
            s.degraded_machine_count == 1
                && s.unavailable_machine_count == 1
                && s.condition_true("Degraded")
                && !s.condition_true("Updated")
        })
    })
    .await;
    assert_eq!(
        ann(&fake, "worker-0", MCO_STATE).as_deref(),
        Some("Degraded")
    );
    assert_eq!(
        ann(&fake, "worker-0", MCO_REASON).as_deref(),
        Some("disk on fire")
    );
    let st = pool(&fake, "worker").status.expect("status");
    let degraded = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded condition");
    let message = degraded.message.clone().unwrap_or_default();
    assert!(
        message.contains("worker-0") && message.contains("disk on fire"),
        "{degraded:?}"
    );

    // A new rendering does not roll while a node is degraded (it uses up maxUnavailable).
    fake.insert_json(mc("99-new", "worker"));
    eventually("re-rendered", || {
        rendered(&fake, "worker").is_some_and(|r| r != before)
    })
    .await;
    let rv = fake.resource_version();
    eventually("sim acted on the new rendering", || {
        sim.seen_resource_version() >= rv
    })
    .await;
    for n in ["worker-0", "worker-1"] {
        assert_eq!(
            ann(&fake, n, MCO_CURRENT_CONFIG),
            Some(before.clone()),
            "{n} did not move"
        );
        assert_eq!(
            ann(&fake, n, MCO_DESIRED_CONFIG),
            Some(before.clone()),
            "{n} did not start"
        );
    }
    assert_eq!(
        ann(&fake, "worker-0", MCO_STATE).as_deref(),
        Some("Degraded")
    );

    sim.recover_node("worker-0").await.expect("recover");
    eventually("pool settled on the new rendering after recovery", || {
        pool_settled(&fake, "worker", 2) && rendered(&fake, "worker") != Some(before.clone())
    })
    .await;
    let target = rendered(&fake, "worker");
    for n in ["worker-0", "worker-1"] {
        assert_eq!(ann(&fake, n, MCO_CURRENT_CONFIG), target, "{n}");
        assert_eq!(ann(&fake, n, MCO_REASON).as_deref(), Some(""), "{n}");
    }
    let st = pool(&fake, "worker").status.expect("status");
    assert_eq!(st.degraded_machine_count, 0);
    assert!(!st.condition_true("Degraded"));
    sim.stop().await;
}

#[tokio::test]
async fn sim_survives_api_faults_by_retrying() {
    let (fake, sim) = cluster(1).await;
    eventually("initial settle", || pool_settled(&fake, "worker", 1)).await;
    let before = rendered(&fake, "worker").expect("rendered");
    fake.clear_requests();
    fake.inject(Fault::on("patch", "nodes", FaultKind::Status(500), 2));
    fake.insert_json(mc("99-new", "worker"));
    eventually("re-rendered", || {
        rendered(&fake, "worker").is_some_and(|r| r != before)
    })
    .await;
    let target = rendered(&fake, "worker");
    eventually("node reaches the new rendering despite 500s", || {
        ann(&fake, "worker-0", MCO_CURRENT_CONFIG) == target && pool_settled(&fake, "worker", 1)
    })
    .await;
    let failed_patches = fake
        .requests_by("mco-sim")
        .iter()
        .filter(|r| r.verb == "patch" && r.resource == "nodes")
        .count();
    assert!(
        failed_patches >= 4,
        "2 failed + 2 successful node patches, got {failed_patches}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn sim_turns_a_container_runtime_config_into_a_generated_machine_config() {
    let (fake, sim) = cluster(1).await;
    fake.insert_json(kata_pool());
    fake.insert_json(mc("50-kata", "kata-oc"));
    let nodes: Api<Node> = Api::all(fake.client());
    nodes
        .patch(
            "worker-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"node-role.kubernetes.io/kata-oc": ""}}})),
        )
        .await
        .expect("label");
    eventually("kata pool settled", || pool_settled(&fake, "kata-oc", 1)).await;
    let before = rendered(&fake, "kata-oc").expect("rendered");
    fake.insert_json(json!({
        "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "ContainerRuntimeConfig",
        "metadata": {"name": "kata-crio-config"},
        "spec": {
            "machineConfigPoolSelector": {"matchLabels": {"pools.operator.machineconfiguration.openshift.io/kata-oc": ""}},
            "containerRuntimeConfig": {"logLevel": "debug"},
        },
    }));
    let generated = "99-kata-oc-generated-containerruntime";
    eventually("generated MC rendered into the pool and rolled out", || {
        rendered(&fake, "kata-oc").is_some_and(|r| r != before) && pool_settled(&fake, "kata-oc", 1)
    })
    .await;
    let mc = fake
        .get::<sandboxed_containers_operator::api::MachineConfig>(generated)
        .expect("generated MC");
    assert_eq!(
        mc.labels()["machineconfiguration.openshift.io/role"],
        "kata-oc"
    );
    let source = serde_json::to_string(&mc.spec.config).expect("json");
    assert!(
        source.contains("logLevel") && source.contains("debug"),
        "{source}"
    );
    let sources: Vec<String> = pool(&fake, "kata-oc")
        .spec
        .configuration
        .expect("conf")
        .source
        .iter()
        .filter_map(|s| s.name.clone())
        .collect();
    assert!(sources.contains(&generated.to_string()), "{sources:?}");
    assert!(
        fake.get::<sandboxed_containers_operator::api::MachineConfig>(
            "99-worker-generated-containerruntime"
        )
        .is_none(),
        "worker pool not selected"
    );
    // Removing the CRC removes its MachineConfig and the pool goes back to the old rendering.
    assert!(fake.delete(
        "machineconfiguration.openshift.io/v1",
        "containerruntimeconfigs",
        None,
        "kata-crio-config"
    ));
    eventually("generated MC gone and pool re-rendered", || {
        fake.get::<sandboxed_containers_operator::api::MachineConfig>(generated)
            .is_none()
            && rendered(&fake, "kata-oc") == Some(before.clone())
            && pool_settled(&fake, "kata-oc", 1)
    })
    .await;
    sim.stop().await;
}

#[tokio::test]
async fn seeded_converged_cluster_puts_masters_in_the_master_pool() {
    let fake = FakeApi::unrestricted();
    testkit::seed_cluster(&fake, 3, 0, true);
    let sim = McoSimulator::spawn(
        fake.client_as("mco-sim"),
        SimOptions {
            create_default_pools: true,
            ..SimOptions::default()
        },
    )
    .await
    .expect("sim");
    eventually("master pool settled with all three nodes", || {
        pool_settled(&fake, "master", 3)
    })
    .await;
    eventually("worker pool settled empty", || {
        pool_settled(&fake, "worker", 0)
    })
    .await;
    let worker = pool(&fake, "worker").status.expect("worker status");
    assert_eq!(
        worker.machine_count, 0,
        "master wins over worker for converged nodes"
    );
    assert!(
        ann(&fake, "master-0", MCO_CURRENT_CONFIG)
            .is_some_and(|c| c.starts_with("rendered-master-"))
    );
    sim.stop().await;
}
