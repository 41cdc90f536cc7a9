//! The operator's own webhook configurations: pure builders of the desired objects, and the loop
//! that applies them (server-side apply, one field manager) and keeps `caBundle` current.
//!
//! | configuration | webhooks | owner | failurePolicy |
//! |---|---|---|---|
//! | ValidatingWebhookConfiguration `sandboxed-containers-operator-kataconfig` | `vkataconfig` (CREATE, UPDATE of a changed spec) | the operator-lifetime object ([`Owner`]) | Fail |
//! | MutatingWebhookConfiguration `sandboxed-containers-operator-pod` | `mpod` (pod CREATE without runtimeClassName, namespaces that may inject) | the active KataConfig | Fail |
//! | ValidatingWebhookConfiguration `sandboxed-containers-operator-pod` | `vpod` (labelled namespaces), `vpod-unlabelled` | the active KataConfig | Fail; `vpod-unlabelled` Ignore when the default is `allow` |
//!
//! See `docs/webhooks.md` for the reasoning.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use kube::Resource;
use kube::api::Api;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::policy::{OPENSHIFT_PREFIX, RUN_LEVEL_LABEL, SYSTEM_NAMESPACES};
use crate::api::KataConfig;
use crate::api::NamespacePolicy as Policy;
use crate::cache::ClusterCache;
use crate::certs::CertStore;
use crate::kubeapi::{self, REQUEST_TIMEOUT};
use crate::names::{
    GROUP, MANAGED_BY_LABEL, MANAGED_BY_VALUE, MUTATE_POD_PATH, NAMESPACE_POLICY_LABEL,
    VALIDATE_KATACONFIG_PATH, VALIDATE_POD_PATH,
};

pub const KATACONFIG_VWC: &str = "sandboxed-containers-operator-kataconfig";
pub const POD_WEBHOOKS: &str = "sandboxed-containers-operator-pod";
pub const VKATACONFIG: &str = "vkataconfig.kataconfiguration.openshift.io";
pub const MPOD: &str = "mpod.kataconfiguration.openshift.io";
pub const VPOD: &str = "vpod.kataconfiguration.openshift.io";
pub const VPOD_UNLABELLED: &str = "vpod-unlabelled.kataconfiguration.openshift.io";
/// OpenShift's service-ca operator fills `caBundle` on configurations with this annotation.
pub const INJECT_CABUNDLE: &str = "service.beta.openshift.io/inject-cabundle";
pub const KATACONFIG_CRD: &str = "kataconfigs.kataconfiguration.openshift.io";
/// Seconds the API server waits for an answer. Decisions take microseconds; a short timeout
/// bounds how long pod creation stalls behind a hung replica.
pub const TIMEOUT_SECONDS: i32 = 5;

/// Where the API server sends reviews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `clientConfig.service` (port 443 → the pod's 9443).
    Service { namespace: String, name: String },
    /// `clientConfig.url` base, e.g. `https://127.0.0.1:9443` (`run --webhook-url`).
    Url(String),
}

/// The object whose deletion removes the KataConfig validating configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The KataConfig CRD: the configuration goes when the API it guards goes.
    Crd,
    /// A cluster-scoped ClusterRole shipped with the operator (OLM deletes it with the CSV).
    ClusterRole(String),
}

fn client_config(target: &Target, path: &str, ca_bundle: Option<&str>) -> WebhookClientConfig {
    let ca_bundle = ca_bundle.map(|c| ByteString(c.as_bytes().to_vec()));
    match target {
        Target::Service { namespace, name } => WebhookClientConfig {
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(path.to_string()),
                port: Some(443),
            }),
            ca_bundle,
            url: None,
        },
        Target::Url(base) => WebhookClientConfig {
            url: Some(format!("{}{path}", base.trim_end_matches('/'))),
            ca_bundle,
            service: None,
        },
    }
}

fn meta(name: &str, owner: Option<OwnerReference>, ca_bundle: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(BTreeMap::from([(
            MANAGED_BY_LABEL.to_string(),
            MANAGED_BY_VALUE.to_string(),
        )])),
        // Without our own CA (cert-dir mode without ca.crt) let OpenShift's service-ca inject it.
        annotations: ca_bundle
            .is_none()
            .then(|| BTreeMap::from([(INJECT_CABUNDLE.to_string(), "true".to_string())])),
        owner_references: owner.map(|o| vec![o]),
        ..Default::default()
    }
}

fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_string(),
        operator: op.to_string(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

/// Namespaces never sent to the pod webhooks. `openshift-*` cannot be expressed as a selector
/// (no prefix match); OpenShift's platform namespaces carry `openshift.io/run-level`, and the
/// decisions exclude the prefix again.
pub fn system_exclusions(operator_namespace: &str) -> Vec<LabelSelectorRequirement> {
    let mut names: Vec<&str> = SYSTEM_NAMESPACES.to_vec();
    names.push(operator_namespace);
    names.push(OPENSHIFT_PREFIX.trim_end_matches('-'));
    vec![
        req("kubernetes.io/metadata.name", "NotIn", &names),
        req(RUN_LEVEL_LABEL, "DoesNotExist", &[]),
    ]
}

fn selector(operator_namespace: &str, extra: LabelSelectorRequirement) -> LabelSelector {
    let mut exprs = system_exclusions(operator_namespace);
    exprs.push(extra);
    LabelSelector {
        match_expressions: Some(exprs),
        match_labels: None,
    }
}

fn pod_rule() -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec![String::new()]),
        api_versions: Some(vec!["v1".into()]),
        operations: Some(vec!["CREATE".into()]),
        resources: Some(vec!["pods".into()]),
        scope: Some("Namespaced".into()),
    }
}

fn condition(name: &str, expression: &str) -> MatchCondition {
    MatchCondition {
        name: name.to_string(),
        expression: expression.to_string(),
    }
}

fn base_webhook(name: &str, cc: WebhookClientConfig, failure: &str) -> ValidatingWebhook {
    ValidatingWebhook {
        name: name.to_string(),
        admission_review_versions: vec!["v1".into()],
        client_config: cc,
        failure_policy: Some(failure.to_string()),
        match_policy: Some("Equivalent".into()),
        side_effects: "None".into(),
        timeout_seconds: Some(TIMEOUT_SECONDS),
        ..Default::default()
    }
}

/// `ValidatingWebhookConfiguration` for KataConfigs.
pub fn kataconfig_webhook(
    target: &Target,
    ca_bundle: Option<&str>,
    owner: Option<OwnerReference>,
) -> ValidatingWebhookConfiguration {
    let mut wh = base_webhook(
        VKATACONFIG,
        client_config(target, VALIDATE_KATACONFIG_PATH, ca_bundle),
        "Fail",
    );
    wh.rules = Some(vec![RuleWithOperations {
        api_groups: Some(vec![GROUP.into()]),
        api_versions: Some(vec!["v1".into()]),
        operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
        resources: Some(vec!["kataconfigs".into()]),
        scope: Some("Cluster".into()),
    }]);
    // Metadata-only updates (finalizer removal, labels) never reach the webhook, so even an
    // unreachable webhook can never block deleting a KataConfig.
    wh.match_conditions = Some(vec![condition(
        "spec-changed",
        "request.operation != 'UPDATE' || !has(object.spec) || !has(oldObject.spec) || object.spec != oldObject.spec",
    )]);
    ValidatingWebhookConfiguration {
        metadata: meta(KATACONFIG_VWC, owner, ca_bundle),
        webhooks: Some(vec![wh]),
    }
}

/// The pod webhooks for the active KataConfig's cluster default policy.
pub fn pod_webhooks(
    target: &Target,
    ca_bundle: Option<&str>,
    owner: Option<OwnerReference>,
    operator_namespace: &str,
    default_policy: &str,
) -> (MutatingWebhookConfiguration, ValidatingWebhookConfiguration) {
    let default = Policy::parse(default_policy).unwrap_or(Policy::Allow);
    // Mutation only where injection can happen: labelled require/default, plus unlabelled (and
    // unknown values, denied with a message) when the cluster default injects.
    let mutate_scope = if default.injects() {
        req(NAMESPACE_POLICY_LABEL, "NotIn", &["allow", "deny"])
    } else {
        req(NAMESPACE_POLICY_LABEL, "In", &["require", "default"])
    };
    let m = base_webhook(
        MPOD,
        client_config(target, MUTATE_POD_PATH, ca_bundle),
        "Fail",
    );
    let mutating = MutatingWebhook {
        name: m.name,
        admission_review_versions: m.admission_review_versions,
        client_config: m.client_config,
        failure_policy: m.failure_policy,
        match_policy: m.match_policy,
        side_effects: m.side_effects,
        timeout_seconds: m.timeout_seconds,
        namespace_selector: Some(selector(operator_namespace, mutate_scope)),
        rules: Some(vec![pod_rule()]),
        match_conditions: Some(vec![condition(
            "no-runtime-class",
            "!has(object.spec.runtimeClassName) || object.spec.runtimeClassName == ''",
        )]),
        // Our patch is idempotent; re-running after later webhooks keeps the pod consistent.
        reinvocation_policy: Some("IfNeeded".into()),
        object_selector: None,
    };

    let mut labelled = base_webhook(
        VPOD,
        client_config(target, VALIDATE_POD_PATH, ca_bundle),
        "Fail",
    );
    labelled.namespace_selector = Some(selector(
        operator_namespace,
        req(NAMESPACE_POLICY_LABEL, "Exists", &[]),
    ));
    labelled.rules = Some(vec![pod_rule()]);

    // Unlabelled namespaces: with a permissive default only pods naming a RuntimeClass can be
    // refused (host namespaces), so only they are sent, and an outage fails open.
    let permissive = matches!(default, Policy::Allow);
    let mut unlabelled = base_webhook(
        VPOD_UNLABELLED,
        client_config(target, VALIDATE_POD_PATH, ca_bundle),
        if permissive { "Ignore" } else { "Fail" },
    );
    unlabelled.namespace_selector = Some(selector(
        operator_namespace,
        req(NAMESPACE_POLICY_LABEL, "DoesNotExist", &[]),
    ));
    unlabelled.rules = Some(vec![pod_rule()]);
    if matches!(default, Policy::Allow | Policy::Deny) {
        unlabelled.match_conditions = Some(vec![condition(
            "names-a-runtime-class",
            "has(object.spec.runtimeClassName) && object.spec.runtimeClassName != ''",
        )]);
    }
    (
        MutatingWebhookConfiguration {
            metadata: meta(POD_WEBHOOKS, owner.clone(), ca_bundle),
            webhooks: Some(vec![mutating]),
        },
        ValidatingWebhookConfiguration {
            metadata: meta(POD_WEBHOOKS, owner, ca_bundle),
            webhooks: Some(vec![labelled, unlabelled]),
        },
    )
}

/// Owner reference to the active KataConfig (not a controller reference: the reconciler owns
/// other objects of it and the GC only needs `uid`).
pub fn kataconfig_owner(kc: &KataConfig) -> Option<OwnerReference> {
    let mut o = kc.controller_owner_ref(&())?;
    o.controller = Some(false);
    o.block_owner_deletion = Some(false);
    Some(o)
}

fn owner_ref_of<K: Resource<DynamicType = ()>>(obj: &K) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: obj.meta().name.clone()?,
        uid: obj.meta().uid.clone()?,
        controller: Some(false),
        block_owner_deletion: Some(false),
    })
}

async fn resolve_owner(
    client: &kube::Client,
    owner: &Owner,
) -> anyhow::Result<Option<OwnerReference>> {
    Ok(match owner {
        Owner::Crd => Api::<CustomResourceDefinition>::all(client.clone())
            .get_opt(KATACONFIG_CRD)
            .await?
            .and_then(|o| owner_ref_of(&o)),
        Owner::ClusterRole(name) => Api::<ClusterRole>::all(client.clone())
            .get_opt(name)
            .await?
            .and_then(|o| owner_ref_of(&o)),
    })
}

pub struct RegistrationConfig {
    pub target: Target,
    pub owner: Owner,
    pub operator_namespace: String,
    /// Re-apply this often even without changes (repairs edits and deletions by others).
    pub resync: Duration,
}

async fn delete_if_present<K>(api: &Api<K>, name: &str) -> anyhow::Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if kubeapi::delete_ignoring_404(api, name, REQUEST_TIMEOUT).await? {
        info!(name, "pod webhooks removed: no KataConfig in force");
    }
    Ok(())
}

/// One pass: desired configurations applied (or pod webhooks removed when no KataConfig is
/// active). Returns a fingerprint of what was applied.
pub async fn reconcile_once(
    client: &kube::Client,
    cfg: &RegistrationConfig,
    cache: &ClusterCache,
    certs: &CertStore,
) -> anyhow::Result<String> {
    let ca = certs.ca_bundle();
    let owner = resolve_owner(client, &cfg.owner).await?;
    let vwc_api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mwc_api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let kc_vwc = kataconfig_webhook(&cfg.target, ca.as_deref(), owner);
    kubeapi::apply(&vwc_api, &kc_vwc, REQUEST_TIMEOUT).await?;
    let mut fingerprint = serde_json::to_string(&kc_vwc)?;
    match cache.kata_config_in_force() {
        Some(kc) => {
            let (m, v) = pod_webhooks(
                &cfg.target,
                ca.as_deref(),
                kataconfig_owner(&kc),
                &cfg.operator_namespace,
                kc.spec.default_namespace_policy(),
            );
            kubeapi::apply(&mwc_api, &m, REQUEST_TIMEOUT).await?;
            kubeapi::apply(&vwc_api, &v, REQUEST_TIMEOUT).await?;
            fingerprint.push_str(&serde_json::to_string(&(m, v))?);
        }
        None => {
            delete_if_present(&mwc_api, POD_WEBHOOKS).await?;
            delete_if_present(&vwc_api, POD_WEBHOOKS).await?;
        }
    }
    Ok(fingerprint)
}

/// What the desired configurations depend on (besides static configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inputs {
    kataconfig: Option<(String, String)>,
    ca_bundle: Option<String>,
}

impl Inputs {
    fn of(cache: &ClusterCache, certs: &CertStore) -> Inputs {
        Inputs {
            kataconfig: cache.kata_config_in_force().map(|kc| {
                (
                    kc.metadata.uid.clone().unwrap_or_default(),
                    kc.spec.default_namespace_policy().to_string(),
                )
            }),
            ca_bundle: certs.ca_bundle(),
        }
    }
}

/// Keeps the configurations current until `shutdown`. Nothing is unregistered on shutdown: a
/// restart must not open a window without admission control.
pub async fn run(
    client: kube::Client,
    cfg: RegistrationConfig,
    cache: ClusterCache,
    certs: Arc<CertStore>,
    shutdown: CancellationToken,
) {
    let mut cert_changes = certs.subscribe();
    let mut changes = cache.subscribe();
    let mut last: Option<(String, Instant)> = None;
    let mut applied_inputs: Option<(Inputs, Instant)> = None;
    loop {
        // KataConfig status updates arrive often during an install; re-apply only when what the
        // configurations depend on changed, or on the periodic resync (which repairs edits).
        let inputs = Inputs::of(&cache, &certs);
        let fresh = applied_inputs
            .as_ref()
            .is_some_and(|(i, at)| *i == inputs && at.elapsed() < cfg.resync);
        let wait = if fresh {
            cfg.resync
        } else {
            match reconcile_once(&client, &cfg, &cache, &certs).await {
                Ok(fp) => {
                    if last.as_ref().map(|(f, _)| f) != Some(&fp) {
                        info!("webhook configurations applied");
                    }
                    last = Some((fp, Instant::now()));
                    applied_inputs = Some((inputs, Instant::now()));
                    cfg.resync
                }
                Err(e) => {
                    warn!(error = %e, "cannot apply the webhook configurations; retrying");
                    applied_inputs = None;
                    Duration::from_secs(5)
                }
            }
        };
        tokio::select! {
            // The configurations follow the KataConfig in force; re-checking costs no API call.
            _ = changes.recv(), if !changes.is_closed() => {}
            r = cert_changes.changed() => { if r.is_err() { return; } }
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn svc() -> Target {
        Target::Service {
            namespace: "osc".into(),
            name: "webhook".into(),
        }
    }

    fn v<T: serde::Serialize>(x: &T) -> Value {
        serde_json::to_value(x).expect("json")
    }

    #[test]
    fn kataconfig_webhook_is_fail_closed_but_never_blocks_metadata_updates() {
        let c = v(&kataconfig_webhook(&svc(), Some("PEM"), None));
        let wh = &c["webhooks"][0];
        assert_eq!(wh["name"], VKATACONFIG);
        assert_eq!(wh["failurePolicy"], "Fail");
        assert_eq!(wh["sideEffects"], "None");
        assert_eq!(wh["matchPolicy"], "Equivalent");
        assert_eq!(wh["timeoutSeconds"], 5);
        assert_eq!(wh["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(wh["rules"][0]["operations"], json!(["CREATE", "UPDATE"]));
        assert_eq!(wh["rules"][0]["scope"], "Cluster");
        assert!(
            wh["matchConditions"][0]["expression"]
                .as_str()
                .expect("s")
                .contains("object.spec != oldObject.spec")
        );
        assert_eq!(
            wh["clientConfig"]["service"],
            json!({"namespace": "osc", "name": "webhook", "path": "/validate-kataconfig", "port": 443})
        );
        assert_eq!(
            wh["clientConfig"]["caBundle"], "UEVN",
            "base64 of the bundle"
        );
        assert!(c["metadata"].get("annotations").is_none());
    }

    #[test]
    fn url_mode_registers_the_url_and_no_bundle_asks_service_ca() {
        let c = v(&kataconfig_webhook(
            &Target::Url("https://127.0.0.1:9443/".into()),
            None,
            None,
        ));
        assert_eq!(
            c["webhooks"][0]["clientConfig"]["url"],
            "https://127.0.0.1:9443/validate-kataconfig"
        );
        assert!(c["webhooks"][0]["clientConfig"].get("caBundle").is_none());
        assert_eq!(c["metadata"]["annotations"][INJECT_CABUNDLE], "true");
    }

    #[test]
    fn pod_webhooks_never_reach_system_or_own_namespaces() {
        let (m, val) = pod_webhooks(&svc(), Some("PEM"), None, "osc", "allow");
        let all: Vec<Value> = v(&m)["webhooks"]
            .as_array()
            .expect("a")
            .iter()
            .chain(v(&val)["webhooks"].as_array().expect("a").iter())
            .cloned()
            .collect();
        assert_eq!(all.len(), 3);
        for wh in &all {
            let exprs = &wh["namespaceSelector"]["matchExpressions"];
            assert_eq!(
                exprs[0],
                json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "kube-public", "kube-node-lease", "osc", "openshift"]})
            );
            assert_eq!(
                exprs[1],
                json!({"key": "openshift.io/run-level", "operator": "DoesNotExist"})
            );
            assert_eq!(wh["rules"][0]["operations"], json!(["CREATE"]));
            assert_eq!(wh["sideEffects"], "None");
        }
        assert_eq!(all[0]["reinvocationPolicy"], "IfNeeded");
    }

    #[test]
    fn selectors_and_failure_policies_follow_the_cluster_default() {
        let (m, val) = pod_webhooks(&svc(), None, None, "osc", "allow");
        let (m, val) = (v(&m), v(&val));
        assert_eq!(
            m["webhooks"][0]["namespaceSelector"]["matchExpressions"][2],
            json!({"key": NAMESPACE_POLICY_LABEL, "operator": "In", "values": ["require", "default"]})
        );
        assert_eq!(m["webhooks"][0]["failurePolicy"], "Fail");
        assert_eq!(val["webhooks"][0]["failurePolicy"], "Fail");
        assert_eq!(val["webhooks"][1]["failurePolicy"], "Ignore");
        assert!(val["webhooks"][1]["matchConditions"].is_array());

        let (m, val) = pod_webhooks(&svc(), None, None, "osc", "require");
        let (m, val) = (v(&m), v(&val));
        assert_eq!(
            m["webhooks"][0]["namespaceSelector"]["matchExpressions"][2],
            json!({"key": NAMESPACE_POLICY_LABEL, "operator": "NotIn", "values": ["allow", "deny"]})
        );
        assert_eq!(val["webhooks"][1]["failurePolicy"], "Fail");
        assert!(
            val["webhooks"][1].get("matchConditions").is_none(),
            "every pod checked"
        );

        let (_, val) = pod_webhooks(&svc(), None, None, "osc", "deny");
        assert_eq!(v(&val)["webhooks"][1]["failurePolicy"], "Fail");
        assert!(v(&val)["webhooks"][1]["matchConditions"].is_array());
    }

    #[test]
    fn pod_webhooks_are_owned_by_the_kataconfig() {
        let mut kc = KataConfig::new("example", Default::default());
        kc.metadata.uid = Some("uid-1".into());
        let (m, _) = pod_webhooks(&svc(), None, kataconfig_owner(&kc), "osc", "allow");
        let o = &v(&m)["metadata"]["ownerReferences"][0];
        assert_eq!(o["kind"], "KataConfig");
        assert_eq!(o["uid"], "uid-1");
        assert_eq!(o["apiVersion"], "kataconfiguration.openshift.io/v1");
    }

    /// `webhooks/manifests/configurations.yaml` is what the operator registers (Service mode,
    /// default policy `allow`, caBundle left to the running operator); regenerate with
    /// `UPDATE_WEBHOOK_MANIFESTS=1 cargo test --lib registration`.
    #[test]
    fn committed_manifests_match_the_builders() {
        let ns = crate::names::DEFAULT_OPERATOR_NAMESPACE;
        let target = Target::Service {
            namespace: ns.into(),
            name: "sandboxed-containers-operator-webhook".into(),
        };
        let (m, val) = pod_webhooks(&target, None, None, ns, "allow");
        let mut docs = String::from(
            "# Generated from src/webhook/registration.rs (see committed_manifests_match_the_builders).\n# The operator applies these itself (server-side apply) and adds ownerReferences. Shown as in\n# --cert-dir mode without ca.crt (service-ca injects caBundle); with the managed CA the operator\n# sets caBundle and leaves out the annotation.\n",
        );
        for doc in [
            serde_yaml::to_string(&kataconfig_webhook(&target, None, None)),
            serde_yaml::to_string(&m),
            serde_yaml::to_string(&val),
        ] {
            docs.push_str("---\n");
            docs.push_str(&doc.expect("yaml"));
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("webhooks/manifests/configurations.yaml");
        if std::env::var_os("UPDATE_WEBHOOK_MANIFESTS").is_some() {
            std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
            std::fs::write(&path, &docs).expect("write");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            committed, docs,
            "webhooks/manifests/configurations.yaml is stale"
        );
    }

    mod api {
        use super::*;
        use http::{Method, Request, Response, StatusCode};
        use kube::client::Body;
        use kube::runtime::watcher::Event;

        /// The sample cluster's KataConfig (as `testkit::webhook_samples::kataconfig` builds it;
        /// unit tests cannot use the testkit crate, which links its own copy of this one).
        fn kataconfig(default_policy: &str) -> KataConfig {
            let mut kc = KataConfig::new(
                "example-kataconfig",
                serde_json::from_value(json!({"namespacePolicy": {"default": default_policy}}))
                    .expect("KataConfig spec"),
            );
            kc.metadata.uid = Some("6e0c1f4e-6d1e-4a7e-9d49-000000000001".into());
            kc.status = Some(crate::api::KataConfigStatus {
                runtime_classes: vec!["kata".into()],
                ..Default::default()
            });
            kc
        }

        /// Fills the KataConfig cache the way a watcher's initial list does (marking it ready).
        fn initial_list(
            w: &mut kube::runtime::reflector::store::Writer<KataConfig>,
            kcs: Vec<KataConfig>,
        ) {
            w.apply_watcher_event(&Event::Init);
            for kc in kcs {
                w.apply_watcher_event(&Event::InitApply(kc));
            }
            w.apply_watcher_event(&Event::InitDone);
        }

        fn respond_json(v: Value, code: StatusCode) -> Response<Body> {
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&v).expect("json")))
                .expect("response")
        }

        async fn body(req: Request<Body>) -> Value {
            let b = http_body_util::BodyExt::collect(req.into_body())
                .await
                .expect("body")
                .to_bytes();
            if b.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&b).expect("json")
            }
        }

        type Mock = tower_test::mock::Handle<Request<Body>, Response<Body>>;

        fn setup(active: bool) -> (kube::Client, Mock, ClusterCache, Arc<CertStore>) {
            let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            let client = kube::Client::new(svc, "default");
            let (caches, mut w) = ClusterCache::new();
            let kcs = if active {
                vec![kataconfig("require")]
            } else {
                vec![]
            };
            initial_list(&mut w.kataconfigs, kcs);
            let certs = CertStore::new(None);
            let m = crate::certs::issue::plan(
                None,
                &["svc.osc.svc".to_string()],
                1_800_000_000,
                &Default::default(),
            )
            .expect("plan")
            .write
            .expect("material");
            certs
                .load_pem(
                    m.tls_crt.as_bytes(),
                    m.tls_key.as_bytes(),
                    Some(&m.ca_crt),
                    "t",
                )
                .expect("load");
            (client, handle, caches, certs)
        }

        fn cfg() -> RegistrationConfig {
            RegistrationConfig {
                target: svc(),
                owner: Owner::Crd,
                operator_namespace: "osc".into(),
                resync: Duration::from_secs(600),
            }
        }

        #[tokio::test]
        async fn active_kataconfig_gets_all_three_configurations_applied() {
            let (client, mut handle, caches, certs) = setup(true);
            let server = tokio::spawn(async move {
                let (req, send) = handle.next_request().await.expect("crd");
                assert_eq!(req.method(), Method::GET);
                assert!(req.uri().path().ends_with(KATACONFIG_CRD));
                send.send_response(respond_json(
                    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                           "metadata": {"name": KATACONFIG_CRD, "uid": "crd-uid"}, "spec": {"group": "g", "names": {"kind": "K", "plural": "ks"}, "scope": "Cluster", "versions": []}}),
                    StatusCode::OK,
                ));
                let mut seen = Vec::new();
                for _ in 0..3 {
                    let (req, send) = handle.next_request().await.expect("apply");
                    assert_eq!(req.method(), Method::PATCH);
                    let uri = req.uri().to_string();
                    assert!(
                        uri.contains("fieldManager=sandboxed-containers-operator"),
                        "{uri}"
                    );
                    assert!(uri.contains("force=true"), "{uri}");
                    assert_eq!(
                        req.headers()["content-type"],
                        "application/apply-patch+yaml"
                    );
                    let b = body(req).await;
                    seen.push((uri, b.clone()));
                    send.send_response(respond_json(b, StatusCode::OK));
                }
                seen
            });
            reconcile_once(&client, &cfg(), &caches, &certs)
                .await
                .expect("applied");
            let seen = server.await.expect("server");
            let (uri, kc) = &seen[0];
            assert!(
                uri.contains(
                    "validatingwebhookconfigurations/sandboxed-containers-operator-kataconfig"
                ),
                "{uri}"
            );
            assert_eq!(kc["metadata"]["ownerReferences"][0]["uid"], "crd-uid");
            assert_eq!(
                kc["metadata"]["ownerReferences"][0]["kind"],
                "CustomResourceDefinition"
            );
            let ca = certs.ca_bundle().expect("bundle");
            use base64::Engine;
            assert_eq!(
                kc["webhooks"][0]["clientConfig"]["caBundle"],
                base64::engine::general_purpose::STANDARD.encode(ca)
            );
            assert!(
                seen[1]
                    .0
                    .contains("mutatingwebhookconfigurations/sandboxed-containers-operator-pod")
            );
            assert_eq!(
                seen[1].1["metadata"]["ownerReferences"][0]["kind"],
                "KataConfig"
            );
            assert!(
                seen[2]
                    .0
                    .contains("validatingwebhookconfigurations/sandboxed-containers-operator-pod")
            );
            assert_eq!(
                seen[2].1["webhooks"][1]["failurePolicy"], "Fail",
                "default require fails closed"
            );
        }

        #[tokio::test]
        async fn without_a_kataconfig_the_pod_webhooks_are_removed() {
            let (client, mut handle, caches, certs) = setup(false);
            let server = tokio::spawn(async move {
                let (_, send) = handle.next_request().await.expect("crd");
                send.send_response(respond_json(
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                    StatusCode::NOT_FOUND,
                ));
                let (req, send) = handle.next_request().await.expect("apply");
                assert_eq!(req.method(), Method::PATCH);
                let b = body(req).await;
                assert!(
                    b["metadata"].get("ownerReferences").is_none(),
                    "no CRD, no owner"
                );
                send.send_response(respond_json(b, StatusCode::OK));
                let mut deleted = Vec::new();
                for _ in 0..2 {
                    let (req, send) = handle.next_request().await.expect("delete");
                    assert_eq!(req.method(), Method::DELETE);
                    deleted.push(req.uri().path().to_string());
                    send.send_response(respond_json(
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                        StatusCode::NOT_FOUND,
                    ));
                }
                deleted
            });
            reconcile_once(&client, &cfg(), &caches, &certs)
                .await
                .expect("ok; 404 on delete is fine");
            let deleted = server.await.expect("server");
            assert!(
                deleted[0]
                    .ends_with("mutatingwebhookconfigurations/sandboxed-containers-operator-pod")
            );
            assert!(
                deleted[1]
                    .ends_with("validatingwebhookconfigurations/sandboxed-containers-operator-pod")
            );
        }
    }
}
