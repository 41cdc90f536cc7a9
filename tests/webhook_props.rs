//! Property tests: whatever the body, the webhooks answer with a well-formed response and never
//! panic; an injected pod always passes the gate and carries what the RuntimeClass plugin
//! requires; any KataConfig spec gets a decision that agrees with the planner's validation.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use http::Request;
use kube::core::admission::Operation;
use proptest::prelude::*;
use sandboxed_containers_operator::api::{KataConfig, KataConfigSpec};
use sandboxed_containers_operator::cache::ClusterCache;
use sandboxed_containers_operator::names::NAMESPACE_POLICY_LABEL;
use sandboxed_containers_operator::observability::Metrics;
use sandboxed_containers_operator::plan::{NodeInfo, validate_spec};
use sandboxed_containers_operator::webhook::pod::{self, PodView};
use sandboxed_containers_operator::webhook::review::Verdict;
use sandboxed_containers_operator::webhook::snapshot::{KataEnv, KataState, PodEnv};
use sandboxed_containers_operator::webhook::{WebhookState, kataconfig, router};
use serde_json::{Value, json};
use testkit::webhook_samples as samples;
use tower::ServiceExt;

fn sample(name: &str) -> Value {
    let path = format!(
        "{}/webhooks/samples/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(&path).expect("sample")).expect("json")
}

fn app() -> axum::Router {
    let (caches, mut w) = ClusterCache::new();
    samples::populate(&mut w);
    std::mem::forget(w);
    router(WebhookState::new(
        caches,
        "openshift-sandboxed-containers-operator",
        &Metrics::new(),
    ))
}

/// Replaces the value at a random path of a JSON document with a random JSON value.
fn mutate_json(doc: &mut Value, path: &[usize], replacement: Value) {
    let Some((i, rest)) = path.split_first() else {
        *doc = replacement;
        return;
    };
    let child = match doc {
        Value::Object(m) if !m.is_empty() => {
            let key = m.keys().nth(i % m.len()).cloned().unwrap_or_default();
            m.get_mut(&key)
        }
        Value::Array(a) if !a.is_empty() => {
            let len = a.len();
            a.get_mut(i % len)
        }
        _ => None,
    };
    match child {
        Some(c) => mutate_json(c, rest, replacement),
        None => *doc = replacement,
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

async fn call(app: axum::Router, path: &str, body: Vec<u8>) -> (u16, Value) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request");
    let resp = app.oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn well_formed(status: u16, v: &Value) {
    assert_eq!(status, 200);
    assert_eq!(v["kind"], "AdmissionReview");
    assert!(v["response"]["uid"].is_string(), "{v}");
    assert!(v["response"]["allowed"].is_boolean(), "{v}");
    if v["response"]["allowed"] == false {
        assert!(
            !v["response"]["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{v}"
        );
    }
}

const PATHS: [&str; 3] = ["/mutate-pod", "/validate-pod", "/validate-kataconfig"];
const SAMPLES: [&str; 6] = [
    "pod-plain-require",
    "pod-create-kata-hostnetwork",
    "pod-create-by-replicaset",
    "kataconfig-create",
    "kataconfig-update",
    "kataconfig-delete",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_get_a_well_formed_answer(body in prop::collection::vec(any::<u8>(), 0..512), p in 0usize..3) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let (status, v) = rt.block_on(call(app(), PATHS[p], body));
        well_formed(status, &v);
    }

    #[test]
    fn mutated_real_reviews_get_a_well_formed_answer(
        s in 0usize..6,
        p in 0usize..3,
        path in prop::collection::vec(any::<usize>(), 1..7),
        replacement in any_json(),
    ) {
        let mut doc = sample(SAMPLES[s]);
        mutate_json(&mut doc, &path, replacement);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let (status, v) = rt.block_on(call(app(), PATHS[p], serde_json::to_vec(&doc).expect("json")));
        well_formed(status, &v);
    }
}

fn pod_strategy() -> impl Strategy<Value = PodView> {
    (
        prop::option::of(prop_oneof![Just("kata".to_string()), Just("gvisor".to_string()), Just(String::new())]),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::collection::btree_map(
            prop_oneof![Just("node-role.kubernetes.io/kata-oc".to_string()), "[a-z]{1,5}(/[a-z]{1,3})?"],
            "[a-z]{0,3}",
            0..3,
        )),
        prop::option::of(prop::collection::btree_map(
            prop_oneof![Just("cpu".to_string()), Just("memory".to_string())],
            prop_oneof![Just("250m".to_string()), Just("1".to_string())],
            0..2,
        )),
    )
        .prop_map(|(rc, net, pid, sel, overhead)| {
            serde_json::from_value(json!({
                "metadata": {"generateName": "web-"},
                "spec": {
                    "runtimeClassName": rc,
                    "hostNetwork": net,
                    "hostPID": pid,
                    "nodeSelector": sel,
                    "overhead": overhead,
                    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
                }
            }))
            .expect("pod view")
        })
}

fn env(label: Option<String>, default: &str, installed: bool) -> PodEnv {
    PodEnv {
        operator_namespace: "osc".into(),
        namespace_labels: Some(
            label
                .map(|l| BTreeMap::from([(NAMESPACE_POLICY_LABEL.to_string(), l)]))
                .unwrap_or_default(),
        ),
        kata: Some(KataState {
            name: "example".into(),
            default_policy: default.into(),
            runtime_class_names: vec!["kata".into()],
            runtime_classes: if installed {
                vec![Arc::new(samples::kata_runtime_class())]
            } else {
                vec![]
            },
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn injected_pods_pass_the_gate_and_match_the_runtime_class(
        pod in pod_strategy(),
        label in prop::option::of(prop_oneof![Just("require"), Just("default"), Just("allow"), Just("deny"), Just("bogus")].prop_map(String::from)),
        default in prop_oneof![Just("require"), Just("default"), Just("allow"), Just("deny")],
        ns in prop_oneof![Just("team"), Just("kube-system"), Just("openshift-x"), Just("osc")],
        installed in any::<bool>(),
    ) {
        let e = env(label, default, installed);
        match pod::mutate(&pod, ns, &Operation::Create, &e) {
            Verdict::Patch { patch, .. } => {
                let mut doc = serde_json::to_value(&pod).expect("json");
                json_patch::patch(&mut doc, &patch.0).expect("patch applies");
                let out: PodView = serde_json::from_value(doc).expect("pod");
                let rc = samples::kata_runtime_class();
                prop_assert_eq!(out.spec.runtime_class_name.as_deref(), Some("kata"));
                prop_assert_eq!(out.spec.overhead.clone(), rc.overhead.and_then(|o| o.pod_fixed));
                let sel = out.spec.node_selector.clone().unwrap_or_default();
                prop_assert_eq!(sel.get("node-role.kubernetes.io/kata-oc").map(String::as_str), Some(""));
                let gate = pod::validate(&out, ns, &Operation::Create, &e);
                let admitted = matches!(gate, Verdict::Allow { .. });
                prop_assert!(admitted, "injected pod refused by the gate: {:?}", gate);
            }
            Verdict::Deny(msg) => prop_assert!(!msg.is_empty()),
            Verdict::Allow { .. } => {}
        }
        // The gate never panics and always explains a denial.
        if let Verdict::Deny(msg) = pod::validate(&pod, ns, &Operation::Create, &e) {
            prop_assert!(!msg.is_empty());
        }
    }

    #[test]
    fn any_kataconfig_spec_is_judged_like_the_planner_validates_it(
        keys in prop::collection::vec("[a-zA-Z0-9./_-]{0,12}", 0..3),
        ops in prop::collection::vec(prop_oneof![Just("In"), Just("NotIn"), Just("Exists"), Just("DoesNotExist"), Just("Equals")], 0..3),
        values in prop::collection::vec(prop::option::of(prop::collection::vec("[a-zA-Z0-9._ -]{0,8}", 0..3)), 0..3),
        labels in prop::collection::btree_map("[a-zA-Z0-9./_-]{0,10}", "[a-zA-Z0-9._ -]{0,8}", 0..3),
        log_level in prop_oneof![Just("info"), Just("debug"), Just("loud"), Just("")],
        policy in prop_oneof![Just("allow"), Just("require"), Just("sometimes")],
    ) {
        let exprs: Vec<Value> = keys.iter().zip(ops.iter()).zip(values.iter())
            .map(|((k, o), v)| json!({"key": k, "operator": o, "values": v}))
            .collect();
        let spec: KataConfigSpec = serde_json::from_value(json!({
            "kataConfigPoolSelector": {"matchExpressions": exprs, "matchLabels": labels},
            "logLevel": log_level,
            "namespacePolicy": {"default": policy},
        })).expect("spec");
        let kc = KataConfig::new("k", spec.clone());
        let nodes = vec![NodeInfo { name: "w".into(), labels: BTreeMap::from([("node-role.kubernetes.io/worker".to_string(), String::new())]).into(), ..Default::default() }];
        let verdict = kataconfig::validate(&Operation::Create, Some(&kc), None, &KataEnv { existing: vec![], nodes });
        match (validate_spec(&spec), verdict) {
            (Ok(()), Verdict::Allow { .. }) => {}
            (Err(e), Verdict::Deny(msg)) => {
                for fe in e.errors {
                    prop_assert!(msg.contains(&fe.field), "{} missing in {}", fe.field, msg);
                }
            }
            (v, d) => prop_assert!(false, "planner {:?} vs webhook {:?}", v, d),
        }
    }
}
