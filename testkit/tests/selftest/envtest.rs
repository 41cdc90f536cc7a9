//! The envtest tier: skipping without assets, the CRDs it installs, a dying server, and (with
//! KUBEBUILDER_ASSETS) the MCO simulator and garbage collection on a real API server.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use sandboxed_containers_operator::api::{KataConfig, MachineConfigPool};
use serde_json::json;
use testkit::{McoSimulator, SimOptions, envtest};

use super::{cm, kata, mc, node};

#[test]
fn envtest_skips_with_one_clear_line_without_assets() {
    assert_eq!(
        envtest::locate_assets(None),
        Err(envtest::SKIP_MESSAGE.to_string())
    );
    assert_eq!(
        envtest::locate_assets(Some("".as_ref())),
        Err(envtest::SKIP_MESSAGE.to_string())
    );
    let empty = tempfile::tempdir().expect("tempdir");
    let why = envtest::locate_assets(Some(empty.path().as_os_str())).expect_err("no binaries");
    assert!(why.starts_with(envtest::SKIP_MESSAGE), "{why}");
    assert!(why.contains("has no kube-apiserver and no etcd"), "{why}");
    assert!(!why.contains('\n'), "one line");
}

#[test]
fn envtest_crds_are_the_shared_platform_ones_plus_kataconfig() {
    let crds = envtest::EnvTest::crds().expect("CRDs load");
    let names: Vec<String> = crds
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(
        names,
        [
            "machineconfigs.machineconfiguration.openshift.io",
            "machineconfigpools.machineconfiguration.openshift.io",
            "containerruntimeconfigs.machineconfiguration.openshift.io",
            "kataconfigs.kataconfiguration.openshift.io",
        ]
    );
}

#[tokio::test]
async fn envtest_reports_a_server_that_dies_and_leaves_no_process_behind() {
    use std::os::unix::fs::PermissionsExt;
    let assets = tempfile::tempdir().expect("tempdir");
    let script = |name: &str, body: &str| {
        let path = assets.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write stub");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    // etcd stays up (and says where it is); kube-apiserver rejects its flags.
    script(
        "etcd",
        "echo $$ > \"$(dirname \"$0\")/etcd.pid\"; exec sleep 60",
    );
    // It fails only once etcd is up, so the test also proves etcd gets stopped.
    script(
        "kube-apiserver",
        "for i in $(seq 1 400); do [ -f \"$(dirname \"$0\")/etcd.pid\" ] && break; sleep 0.05; done\necho 'stub apiserver: unknown flag' >&2; exit 3",
    );
    assert!(envtest::locate_assets(Some(assets.path().as_os_str())).is_ok());
    let err = match envtest::start_with_assets(assets.path()).await {
        Ok(_) => panic!("a stub cannot serve"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("kube-apiserver exited before the API server was ready"),
        "{err}"
    );
    assert!(err.contains("stub apiserver: unknown flag"), "{err}");
    let pid = std::fs::read_to_string(assets.path().join("etcd.pid")).expect("etcd stub ran");
    let proc_dir = format!("/proc/{}", pid.trim());
    assert!(
        !std::path::Path::new(&proc_dir).exists(),
        "etcd ({proc_dir}) was killed and reaped"
    );
}

/// The real tier: runs only when KUBEBUILDER_ASSETS provides kube-apiserver and etcd.
#[tokio::test]
async fn mco_simulator_runs_on_a_real_api_server() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let client = env.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let mcs: Api<sandboxed_containers_operator::api::MachineConfig> = Api::all(client.clone());
    for n in ["worker-0", "worker-1"] {
        let node: Node =
            serde_json::from_value(node(n, json!({"node-role.kubernetes.io/worker": ""})))
                .expect("node");
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }
    let worker_mc = serde_json::from_value(mc("00-worker", "worker")).expect("mc");
    mcs.create(&PostParams::default(), &worker_mc)
        .await
        .expect("create mc");
    let sim = McoSimulator::spawn(
        client.clone(),
        SimOptions {
            create_default_pools: true,
            ..SimOptions::default()
        },
    )
    .await
    .expect("sim");
    let pools: Api<MachineConfigPool> = Api::all(client.clone());
    let mut settled = false;
    for _ in 0..600 {
        let p = pools.get("worker").await.expect("pool");
        if p.status.as_ref().is_some_and(|s| {
            s.machine_count == 2 && s.updated_machine_count == 2 && s.condition_true("Updated")
        }) {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "worker pool settles on a real API server");
    let kc: Api<KataConfig> = Api::all(client);
    kc.create(&PostParams::default(), &kata("example"))
        .await
        .expect("KataConfig CRD served");
    sim.stop().await;
}

/// With kube-controller-manager in the assets, garbage collection runs as in a cluster: a
/// dependent goes after its owner (which the in-memory API does at once).
#[tokio::test]
async fn controller_manager_collects_garbage_on_a_real_api_server() {
    let Some(env) = envtest::start().await else {
        return;
    };
    if !env.has_controller_manager() {
        eprintln!(
            "envtest: no kube-controller-manager in KUBEBUILDER_ASSETS; garbage collection not checked"
        );
        return;
    }
    let owner = Api::<KataConfig>::all(env.client.clone())
        .create(&PostParams::default(), &kata("owner"))
        .await
        .expect("owner");
    let mut dependent = cm("dependent", json!({}));
    dependent.metadata.namespace = Some("default".into());
    dependent.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "kataconfiguration.openshift.io/v1".into(),
            kind: "KataConfig".into(),
            name: "owner".into(),
            uid: owner.uid().expect("uid"),
            ..Default::default()
        },
    ]);
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    cms.create(&PostParams::default(), &dependent)
        .await
        .expect("dependent");
    Api::<KataConfig>::all(env.client.clone())
        .delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    let mut collected = false;
    for _ in 0..600 {
        if cms.get_opt("dependent").await.expect("read").is_none() {
            collected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(collected, "the garbage collector removed the dependent");
}

/// `restart_apiserver` takes the real server away (connections refused) and brings it back with
/// its data, and the same client works again afterwards.
#[tokio::test]
async fn apiserver_restart_refuses_while_down_and_keeps_the_data_on_a_real_api_server() {
    let Some(mut env) = envtest::start().await else {
        return;
    };
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let mut before = cm("before-restart", json!({}));
    before.metadata.namespace = Some("default".into());
    cms.create(&PostParams::default(), &before)
        .await
        .expect("create");
    let stop = tokio_util::sync::CancellationToken::new();
    let probe = tokio::spawn({
        let (cms, stop) = (cms.clone(), stop.clone());
        async move {
            let mut refused = 0;
            while !stop.is_cancelled() {
                if let Err(e) = cms.get("before-restart").await {
                    assert!(
                        !matches!(e, kube::Error::Api(_)),
                        "a connection error while down, not an API answer: {e:?}"
                    );
                    refused += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            refused
        }
    });
    env.restart_apiserver(Duration::from_secs(2))
        .await
        .expect("restarted");
    stop.cancel();
    let refused = probe.await.expect("join");
    assert!(refused > 0, "requests failed while the server was down");
    assert_eq!(
        cms.get("before-restart")
            .await
            .expect("the same client works after the restart")
            .name_any(),
        "before-restart"
    );
}
