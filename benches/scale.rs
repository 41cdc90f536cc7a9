//! Scale benchmark for the pure core: plan and progress over a large cluster.
//!
//! `cargo bench --bench scale -- [NODES]` (default 5000). Prints CPU time per full plan
//! (node selection + desired objects + node-by-node progress) and the process's peak RSS.
//! No thresholds here: numbers are for the team's notes and docs.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use sandboxed_containers_operator::api::{KataConfig, KataConfigSpec};
use sandboxed_containers_operator::names::{
    KATA_ROLE_LABEL, MCO_CURRENT_CONFIG, MCO_STATE, WORKER_ROLE_LABEL,
};
use sandboxed_containers_operator::plan::progress::{PoolRender, ProgressInput, classify};
use sandboxed_containers_operator::plan::{NodeInfo, Topology, desired_state};

fn cluster(n: usize) -> Vec<NodeInfo> {
    (0..n)
        .map(|i| {
            let mut labels = BTreeMap::from([
                (WORKER_ROLE_LABEL.to_string(), String::new()),
                ("kubernetes.io/hostname".to_string(), format!("worker-{i}")),
                (
                    "topology.kubernetes.io/zone".to_string(),
                    format!("zone-{}", i % 3),
                ),
            ]);
            if i % 2 == 0 {
                labels.insert(KATA_ROLE_LABEL.to_string(), String::new());
            }
            let annotations = BTreeMap::from([
                (MCO_STATE.to_string(), "Done".to_string()),
                (
                    MCO_CURRENT_CONFIG.to_string(),
                    "rendered-kata-oc-abc".to_string(),
                ),
            ]);
            NodeInfo {
                name: format!("worker-{i}").into(),
                labels: labels.into(),
                annotations: annotations.into(),
            }
        })
        .collect()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5000);
    let nodes = cluster(n);
    let spec: KataConfigSpec = serde_json::from_value(serde_json::json!({
        "kataConfigPoolSelector": {"matchExpressions": [
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-0", "zone-1"]}
        ]}
    }))
    .expect("spec");
    let kc = KataConfig::new("example", spec);
    let input = ProgressInput {
        topology: Topology::Regular,
        uninstalling: false,
        kata_pool: Some(PoolRender {
            rendered: "rendered-kata-oc-abc".into(),
            has_kata: true,
        }),
        worker_pool: Some(PoolRender {
            rendered: "rendered-worker-1".into(),
            has_kata: false,
        }),
    };
    let rounds = 50;
    let (wall, cpu) = (Instant::now(), common::cpu_time());
    let (mut selected, mut installed) = (0, 0);
    for _ in 0..rounds {
        let d = desired_state(&kc, &nodes).expect("valid");
        let p = classify(&nodes, &input);
        selected = d.selection.kata_nodes.len();
        installed = p.nodes.installed.len();
    }
    let cpu = common::cpu_time().saturating_sub(cpu);
    let wall = wall.elapsed();
    println!("nodes: {n}, rounds: {rounds}, selected: {selected}, installed: {installed}");
    println!(
        "plan+progress per round: wall {:.2} ms, cpu {:.2} ms",
        wall.as_secs_f64() * 1000.0 / rounds as f64,
        cpu.as_secs_f64() * 1000.0 / rounds as f64
    );
    println!(
        "peak RSS: {:.1} MiB",
        common::status_kib("VmHWM:") as f64 / 1024.0
    );
}
