//! Small helpers the scenario tests share: polling, seeding an OpenShift-like cluster into the
//! in-memory API server, and reaching the operator's HTTPS endpoints.

use std::time::Duration;

use serde_json::{Value, json};

use crate::FakeApi;

/// Poll `check` every 10 ms until it holds. The 60 s bound only guards against hangs; it is not a
/// timing expectation.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// Poll the async `f` every 100 ms until it returns `Some`, and return that. `guard` only guards
/// against hangs (a test fails naming `what`); it is not a timing expectation.
pub async fn wait_until<T, Fut>(what: &str, guard: Duration, mut f: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < guard, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Node object with `node-role.kubernetes.io/<role>: ""` labels (plus `extra` labels).
pub fn node_json(name: &str, roles: &[&str], extra: Value) -> Value {
    let mut labels = json!({"kubernetes.io/hostname": name});
    for r in roles {
        labels[format!("node-role.kubernetes.io/{r}")] = json!("");
    }
    if let Some(m) = extra.as_object() {
        for (k, v) in m {
            labels[k] = v.clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
}

/// A MachineConfig labelled for `role` (like the MCO's `00-worker`).
pub fn machine_config_json(name: &str, role: &str) -> Value {
    json!({
        "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
        "metadata": {"name": name, "labels": {"machineconfiguration.openshift.io/role": role}},
        "spec": {"config": {"ignition": {"version": "3.2.0"}}},
    })
}

/// Seed an OpenShift-like cluster: `master-<i>` and `worker-<i>` nodes and the `00-master` /
/// `00-worker` MachineConfigs. With `converged`, masters also carry the worker role and there
/// are no dedicated workers (a compact cluster). Start the simulator with
/// `create_default_pools: true` afterwards.
pub fn seed_cluster(fake: &FakeApi, masters: usize, workers: usize, converged: bool) {
    for i in 0..masters {
        let roles: &[&str] = if converged {
            &["master", "control-plane", "worker"]
        } else {
            &["master", "control-plane"]
        };
        fake.insert_json(node_json(&format!("master-{i}"), roles, json!({})));
    }
    if !converged {
        for i in 0..workers {
            fake.insert_json(node_json(&format!("worker-{i}"), &["worker"], json!({})));
        }
    }
    fake.insert_json(machine_config_json("00-master", "master"));
    fake.insert_json(machine_config_json("00-worker", "worker"));
}

/// A loopback address whose port is free right now (the caller binds it soon after).
pub fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address")
}

/// `ca.crt` (PEM) of the operator's self-managed webhook certificate Secret in `namespace`.
pub fn webhook_ca(fake: &FakeApi, namespace: &str) -> Vec<u8> {
    fake.get_ns::<k8s_openapi::api::core::v1::Secret>(
        namespace,
        "sandboxed-containers-operator-webhook-cert",
    )
    .and_then(|s| s.data)
    .and_then(|d| d.get("ca.crt").cloned())
    .expect("ca.crt in the operator's webhook certificate Secret")
    .0
}

/// An HTTPS client (rustls) trusting only `ca_pem`.
pub fn https_client(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).expect("CA PEM"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTPS client")
}
