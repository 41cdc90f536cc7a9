//! The operator's own webhook configurations: pure builders of the desired objects, and the loop
//! that applies them (server-side apply, one field manager) and keeps `caBundle` current.
//!
//! | configuration | webhooks | owner | failurePolicy |
//! |---|---|---|---|
//! | ValidatingWebhookConfiguration `sandboxed-containers-operator-kataconfig` | `vkataconfig` (CREATE, UPDATE of a changed spec) | the operator-lifetime object ([`Owner`]) | Fail |
//! | MutatingWebhookConfiguration `sandboxed-containers-operator-pod` | `mpod` (pod CREATE without runtimeClassName, namespaces that may inject) | the active KataConfig | Fail; Ignore while the policy below is in force |
//! | ValidatingWebhookConfiguration `sandboxed-containers-operator-pod` | `vpod` (labelled namespaces), `vpod-unlabelled` | the active KataConfig | Fail (`vpod-unlabelled` Ignore when the default is `allow`); Ignore while the policy below is in force |
//! | ValidatingAdmissionPolicy and Binding `sandboxed-containers-operator-namespace-policy` ([`super::admission_policy`]) | the namespace gate in CEL, inside the API server | the active KataConfig | Fail |
//!
//! Where the API server serves ValidatingAdmissionPolicy v1 ([`crate::cache::ClusterCache::served_apis`])
//! and the policy is applied, it is the gate ([`PodGate::AdmissionPolicy`]) and the pod webhooks
//! fail open: an operator outage never refuses a pod with "failed calling webhook". Elsewhere
//! the webhooks are the gate and fail closed ([`PodGate::Webhooks`]). An edit or deletion of the
//! policy or its binding is seen by a watch of each and repaired at once.
//!
//! See `docs/webhooks.md` for the reasoning.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::admission_policy;
use super::policy::system_exclusions;
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

/// What enforces the namespace policy when the operator cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodGate {
    /// The webhooks alone (no ValidatingAdmissionPolicy v1, or it could not be applied): they
    /// fail closed where the policy is an explicit choice.
    Webhooks,
    /// The ValidatingAdmissionPolicy, inside the API server: the pod webhooks fail open, so an
    /// outage only loses defaulting, which the policy then refuses with its own message.
    AdmissionPolicy,
}

/// The pod webhooks for the active KataConfig's cluster default policy.
pub fn pod_webhooks(
    target: &Target,
    ca_bundle: Option<&str>,
    owner: Option<OwnerReference>,
    operator_namespace: &str,
    default_policy: &str,
    gate: PodGate,
) -> (MutatingWebhookConfiguration, ValidatingWebhookConfiguration) {
    let default = Policy::parse(default_policy).unwrap_or(Policy::Allow);
    let closed = match gate {
        PodGate::Webhooks => "Fail",
        PodGate::AdmissionPolicy => "Ignore",
    };
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
        closed,
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
        closed,
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
        if permissive { "Ignore" } else { closed },
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
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if kubeapi::delete_ignoring_404(api, name, REQUEST_TIMEOUT).await? {
        info!(name, kind = %K::kind(&()), "removed: no KataConfig in force");
    }
    Ok(())
}

/// Whether the API server serves ValidatingAdmissionPolicy v1 (false until discovery answered:
/// the webhooks then stay the fail-closed gate).
fn admission_policy_served(cache: &ClusterCache) -> bool {
    cache
        .served_apis()
        .is_some_and(|s| s.validating_admission_policy)
}

/// The ValidatingAdmissionPolicy and its binding for the KataConfig in force.
async fn apply_namespace_policy(
    client: &kube::Client,
    kc: &KataConfig,
    operator_namespace: &str,
) -> anyhow::Result<String> {
    let owner = kataconfig_owner(kc);
    let policy = admission_policy::namespace_policy(owner.clone(), operator_namespace);
    let binding = admission_policy::namespace_policy_binding(owner, &kc.name_any());
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    // The policy first: a binding to a missing policy enforces nothing.
    kubeapi::apply(&policies, &policy, REQUEST_TIMEOUT).await?;
    kubeapi::apply(&bindings, &binding, REQUEST_TIMEOUT).await?;
    Ok(serde_json::to_string(&(policy, binding))?)
}

async fn delete_namespace_policy(client: &kube::Client) -> anyhow::Result<()> {
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    delete_if_present(&bindings, admission_policy::NAMESPACE_POLICY).await?;
    delete_if_present(&policies, admission_policy::NAMESPACE_POLICY).await
}

/// What one pass registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Of everything applied, to log only what changed.
    pub fingerprint: String,
    /// What gates pods; `None` when no KataConfig is in force (no pod webhooks, no policy).
    pub gate: Option<PodGate>,
}

/// One pass: desired configurations applied (or the pod webhooks and the namespace policy
/// removed when no KataConfig is active). The policy is applied before the pod webhooks are
/// switched to fail open, and a policy that cannot be applied leaves them failing closed.
pub async fn reconcile_once(
    client: &kube::Client,
    cfg: &RegistrationConfig,
    cache: &ClusterCache,
    certs: &CertStore,
) -> anyhow::Result<Registered> {
    let ca = certs.ca_bundle();
    let owner = resolve_owner(client, &cfg.owner).await?;
    let vwc_api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mwc_api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let kc_vwc = kataconfig_webhook(&cfg.target, ca.as_deref(), owner);
    kubeapi::apply(&vwc_api, &kc_vwc, REQUEST_TIMEOUT).await?;
    let mut fingerprint = serde_json::to_string(&kc_vwc)?;
    let served = admission_policy_served(cache);
    let Some(kc) = cache.kata_config_in_force() else {
        delete_if_present(&mwc_api, POD_WEBHOOKS).await?;
        delete_if_present(&vwc_api, POD_WEBHOOKS).await?;
        if served {
            delete_namespace_policy(client).await?;
        }
        return Ok(Registered {
            fingerprint,
            gate: None,
        });
    };
    let mut policy_error = None;
    let gate = if served {
        match apply_namespace_policy(client, &kc, &cfg.operator_namespace).await {
            Ok(applied) => {
                fingerprint.push_str(&applied);
                PodGate::AdmissionPolicy
            }
            Err(e) => {
                policy_error = Some(e.context(format!(
                    "cannot apply ValidatingAdmissionPolicy {}; the pod webhooks fail closed meanwhile",
                    admission_policy::NAMESPACE_POLICY
                )));
                PodGate::Webhooks
            }
        }
    } else {
        PodGate::Webhooks
    };
    let (m, v) = pod_webhooks(
        &cfg.target,
        ca.as_deref(),
        kataconfig_owner(&kc),
        &cfg.operator_namespace,
        kc.spec.default_namespace_policy(),
        gate,
    );
    kubeapi::apply(&mwc_api, &m, REQUEST_TIMEOUT).await?;
    kubeapi::apply(&vwc_api, &v, REQUEST_TIMEOUT).await?;
    if let Some(e) = policy_error {
        return Err(e);
    }
    fingerprint.push_str(&serde_json::to_string(&(m, v))?);
    Ok(Registered {
        fingerprint,
        gate: Some(gate),
    })
}

/// What the desired configurations depend on (besides static configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inputs {
    kataconfig: Option<(String, String)>,
    ca_bundle: Option<String>,
    /// `None` until discovery answered.
    admission_policy_served: Option<bool>,
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
            admission_policy_served: cache.served_apis().map(|s| s.validating_admission_policy),
        }
    }
}

/// Watches of the ValidatingAdmissionPolicy and its binding, so an edit or a deletion by
/// someone else is repaired at once rather than at the next resync. Dropping it stops them.
struct DriftWatch {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DriftWatch {
    fn start(client: &kube::Client, drift: &Arc<Notify>) -> DriftWatch {
        DriftWatch {
            tasks: vec![
                watch_named::<ValidatingAdmissionPolicy>(client, drift),
                watch_named::<ValidatingAdmissionPolicyBinding>(client, drift),
            ],
        }
    }
}

impl Drop for DriftWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Wakes `drift` on every change of the object named [`admission_policy::NAMESPACE_POLICY`]
/// (and after each (re)list, which covers a deletion missed while disconnected). Our own
/// applies wake it too; re-applying unchanged objects writes nothing, so that settles.
fn watch_named<K>(client: &kube::Client, drift: &Arc<Notify>) -> tokio::task::JoinHandle<()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!(
        "metadata.name={}",
        admission_policy::NAMESPACE_POLICY
    ));
    let drift = drift.clone();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(
                    watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone,
                ) => drift.notify_one(),
                Ok(_) => {}
                Err(e) => {
                    debug!(kind = %K::kind(&()), error = %e, "namespace policy watch failed; retrying")
                }
            }
        }
    })
}

/// Logged once when discovery finds no ValidatingAdmissionPolicy v1.
const NOT_SERVED_LOG: &str = "the API server does not serve admissionregistration.k8s.io/v1 validatingadmissionpolicies (Kubernetes 1.30+, OpenShift 4.17+): the namespace policy is enforced by the pod webhooks alone, which fail closed, so while the operator is down pods in the namespaces they intercept are refused";
/// Logged when the policy becomes the gate.
const IN_FORCE_LOG: &str = "namespace policy enforced inside the API server by a ValidatingAdmissionPolicy; the pod webhooks fail open";

/// Logs what gates pods when it changes, and once that the API server lacks
/// ValidatingAdmissionPolicy v1. Returns what it logged.
fn announce(
    served: Option<bool>,
    last_served: &mut Option<bool>,
    gate: Option<PodGate>,
    last_gate: &mut Option<PodGate>,
) -> Vec<&'static str> {
    let mut logged = Vec::new();
    if served == Some(false) && *last_served != Some(false) {
        warn!("{NOT_SERVED_LOG}");
        logged.push(NOT_SERVED_LOG);
    }
    if served.is_some() {
        *last_served = served;
    }
    if gate == Some(PodGate::AdmissionPolicy) && *last_gate != gate {
        info!(
            policy = admission_policy::NAMESPACE_POLICY,
            "{IN_FORCE_LOG}"
        );
        logged.push(IN_FORCE_LOG);
    }
    if gate.is_some() {
        *last_gate = gate;
    }
    logged
}

/// Delay before retrying a pass that failed.
const RETRY: Duration = Duration::from_secs(5);

/// What the loop remembers between passes.
#[derive(Default)]
struct LoopState {
    /// Fingerprint of the last successful pass, to log only changes.
    last: Option<String>,
    /// Inputs of the last successful pass, and when.
    applied: Option<(Inputs, Instant)>,
    /// After a failure: no retry before this, whatever changes.
    retry_at: Option<Instant>,
    last_served: Option<bool>,
    last_gate: Option<PodGate>,
}

impl LoopState {
    /// One pass if due; returns how long to wait for the next one at most.
    async fn pass(
        &mut self,
        client: &kube::Client,
        cfg: &RegistrationConfig,
        cache: &ClusterCache,
        certs: &CertStore,
    ) -> Duration {
        if let Some(left) = self
            .retry_at
            .and_then(|at| at.checked_duration_since(Instant::now()))
        {
            return left;
        }
        // KataConfig status updates arrive often during an install; re-apply only when what
        // the configurations depend on changed, or on the periodic resync (which repairs edits).
        let inputs = Inputs::of(cache, certs);
        let fresh = self
            .applied
            .as_ref()
            .is_some_and(|(i, at)| *i == inputs && at.elapsed() < cfg.resync);
        if fresh {
            return cfg.resync;
        }
        match reconcile_once(client, cfg, cache, certs).await {
            Ok(done) => {
                if self.last.as_ref() != Some(&done.fingerprint) {
                    info!("webhook configurations applied");
                }
                let _ = announce(
                    inputs.admission_policy_served,
                    &mut self.last_served,
                    done.gate,
                    &mut self.last_gate,
                );
                self.last = Some(done.fingerprint);
                self.applied = Some((inputs, Instant::now()));
                self.retry_at = None;
                cfg.resync
            }
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "cannot apply the webhook configurations; retrying in {}s",
                    RETRY.as_secs()
                );
                self.applied = None;
                self.retry_at = Some(Instant::now() + RETRY);
                RETRY
            }
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
    let drift = Arc::new(Notify::new());
    let mut drift_watch: Option<DriftWatch> = None;
    let mut state = LoopState::default();
    loop {
        let served = admission_policy_served(&cache);
        if served != drift_watch.is_some() {
            drift_watch = served.then(|| DriftWatch::start(&client, &drift));
        }
        let wait = state.pass(&client, &cfg, &cache, &certs).await;
        tokio::select! {
            // The configurations follow the KataConfig in force; re-checking costs no API call.
            _ = changes.recv(), if !changes.is_closed() => {}
            r = cert_changes.changed() => { if r.is_err() { return; } }
            () = drift.notified() => state.applied = None,
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
        let (m, val) = pod_webhooks(&svc(), Some("PEM"), None, "osc", "allow", PodGate::Webhooks);
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
        let (m, val) = pod_webhooks(&svc(), None, None, "osc", "allow", PodGate::Webhooks);
        let (m, val) = (v(&m), v(&val));
        assert_eq!(
            m["webhooks"][0]["namespaceSelector"]["matchExpressions"][2],
            json!({"key": NAMESPACE_POLICY_LABEL, "operator": "In", "values": ["require", "default"]})
        );
        assert_eq!(m["webhooks"][0]["failurePolicy"], "Fail");
        assert_eq!(val["webhooks"][0]["failurePolicy"], "Fail");
        assert_eq!(val["webhooks"][1]["failurePolicy"], "Ignore");
        assert!(val["webhooks"][1]["matchConditions"].is_array());

        let (m, val) = pod_webhooks(&svc(), None, None, "osc", "require", PodGate::Webhooks);
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

        let (_, val) = pod_webhooks(&svc(), None, None, "osc", "deny", PodGate::Webhooks);
        assert_eq!(v(&val)["webhooks"][1]["failurePolicy"], "Fail");
        assert!(v(&val)["webhooks"][1]["matchConditions"].is_array());
    }

    #[test]
    fn pod_webhooks_are_owned_by_the_kataconfig() {
        let mut kc = KataConfig::new("example", Default::default());
        kc.metadata.uid = Some("uid-1".into());
        let (m, _) = pod_webhooks(
            &svc(),
            None,
            kataconfig_owner(&kc),
            "osc",
            "allow",
            PodGate::Webhooks,
        );
        let o = &v(&m)["metadata"]["ownerReferences"][0];
        assert_eq!(o["kind"], "KataConfig");
        assert_eq!(o["uid"], "uid-1");
        assert_eq!(o["apiVersion"], "kataconfiguration.openshift.io/v1");
    }

    fn check_committed(file: &str, header: &str, docs: Vec<Result<String, serde_yaml::Error>>) {
        let mut text = String::from(header);
        for doc in docs {
            text.push_str("---\n");
            text.push_str(&doc.expect("yaml"));
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        if std::env::var_os("UPDATE_WEBHOOK_MANIFESTS").is_some() {
            std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
            std::fs::write(&path, &text).expect("write");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(committed, text, "{file} is stale");
    }

    /// `webhooks/manifests/configurations.yaml` and `admission-policy.yaml` are what the
    /// operator registers (Service mode, default policy `allow`, caBundle left to the running
    /// operator, an API server serving ValidatingAdmissionPolicy v1); regenerate with
    /// `UPDATE_WEBHOOK_MANIFESTS=1 cargo test --lib registration`.
    #[test]
    fn committed_manifests_match_the_builders() {
        let ns = crate::names::DEFAULT_OPERATOR_NAMESPACE;
        let target = Target::Service {
            namespace: ns.into(),
            name: "sandboxed-containers-operator-webhook".into(),
        };
        let (m, val) = pod_webhooks(&target, None, None, ns, "allow", PodGate::AdmissionPolicy);
        check_committed(
            "webhooks/manifests/configurations.yaml",
            "# Generated from src/webhook/registration.rs (see committed_manifests_match_the_builders).\n# The operator applies these itself (server-side apply) and adds ownerReferences. Shown as in\n# --cert-dir mode without ca.crt (service-ca injects caBundle); with the managed CA the operator\n# sets caBundle and leaves out the annotation. Shown as on an API server that serves\n# ValidatingAdmissionPolicy v1 (admission-policy.yaml is then the gate): without it the pod\n# webhooks' failurePolicy Ignore is Fail (vpod-unlabelled stays Ignore under the default allow).\n",
            vec![
                serde_yaml::to_string(&kataconfig_webhook(&target, None, None)),
                serde_yaml::to_string(&m),
                serde_yaml::to_string(&val),
            ],
        );
        check_committed(
            "webhooks/manifests/admission-policy.yaml",
            "# Generated from src/webhook/admission_policy.rs (see committed_manifests_match_the_builders\n# in registration.rs). The operator applies these itself (server-side apply) where the API\n# server serves ValidatingAdmissionPolicy v1, owned by the active KataConfig, which the binding\n# names as the parameters (here `example-kataconfig`).\n",
            vec![
                serde_yaml::to_string(&admission_policy::namespace_policy(None, ns)),
                serde_yaml::to_string(&admission_policy::namespace_policy_binding(
                    None,
                    "example-kataconfig",
                )),
            ],
        );
    }

    #[test]
    fn with_the_policy_in_force_no_pod_webhook_fails_closed() {
        for default in ["allow", "require", "deny", "default"] {
            let (m, val) =
                pod_webhooks(&svc(), None, None, "osc", default, PodGate::AdmissionPolicy);
            let (m, val) = (v(&m), v(&val));
            assert_eq!(m["webhooks"][0]["failurePolicy"], "Ignore", "{default}");
            for wh in val["webhooks"].as_array().expect("webhooks") {
                assert_eq!(wh["failurePolicy"], "Ignore", "{default}");
            }
            // Selectors and conditions are the same as without the policy.
            let (m_closed, val_closed) =
                pod_webhooks(&svc(), None, None, "osc", default, PodGate::Webhooks);
            let (m_closed, val_closed) = (v(&m_closed), v(&val_closed));
            assert_eq!(
                m["webhooks"][0]["namespaceSelector"],
                m_closed["webhooks"][0]["namespaceSelector"]
            );
            assert_eq!(
                val["webhooks"][1]["matchConditions"],
                val_closed["webhooks"][1]["matchConditions"]
            );
        }
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

        fn setup(
            active: bool,
            policy_served: bool,
        ) -> (kube::Client, Mock, ClusterCache, Arc<CertStore>) {
            let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            let client = kube::Client::new(svc, "default");
            let (caches, mut w) = ClusterCache::new();
            w.served.send_replace(Some(crate::discovery::ServedApis {
                validating_admission_policy: policy_served,
                ..Default::default()
            }));
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
            let (client, mut handle, caches, certs) = setup(true, false);
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
            let (client, mut handle, caches, certs) = setup(false, false);
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

        fn not_found() -> Response<Body> {
            respond_json(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                StatusCode::NOT_FOUND,
            )
        }

        /// Answers every request of one pass: echoes applies, 404s the CRD and deletes, and
        /// refuses paths containing `refuse`; returns (method, path, body) in order.
        async fn serve_pass(
            handle: &mut Mock,
            count: usize,
            refuse: Option<&str>,
        ) -> Vec<(Method, String, Value)> {
            let mut seen = Vec::new();
            for _ in 0..count {
                let (req, send) = handle.next_request().await.expect("request");
                let (method, path) = (req.method().clone(), req.uri().path().to_string());
                let b = body(req).await;
                if refuse.is_some_and(|r| path.contains(r)) {
                    send.send_response(respond_json(
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403, "message": "forbidden"}),
                        StatusCode::FORBIDDEN,
                    ));
                } else if method == Method::PATCH {
                    send.send_response(respond_json(b.clone(), StatusCode::OK));
                } else {
                    send.send_response(not_found());
                }
                seen.push((method, path, b));
            }
            seen
        }

        #[tokio::test]
        async fn the_policy_is_applied_before_the_pod_webhooks_fail_open() {
            let (client, mut handle, caches, certs) = setup(true, true);
            let server = tokio::spawn(async move { serve_pass(&mut handle, 6, None).await });
            let done = reconcile_once(&client, &cfg(), &caches, &certs)
                .await
                .expect("applied");
            assert_eq!(done.gate, Some(PodGate::AdmissionPolicy));
            let seen = server.await.expect("server");
            let paths: Vec<&str> = seen.iter().map(|(_, p, _)| p.as_str()).collect();
            assert!(
                paths[2].ends_with(
                    "validatingadmissionpolicies/sandboxed-containers-operator-namespace-policy"
                ),
                "{paths:?}"
            );
            assert!(paths[3].ends_with("validatingadmissionpolicybindings/sandboxed-containers-operator-namespace-policy"), "{paths:?}");
            assert!(
                paths[4]
                    .ends_with("mutatingwebhookconfigurations/sandboxed-containers-operator-pod"),
                "{paths:?}"
            );
            let binding = &seen[3].2;
            assert_eq!(binding["spec"]["paramRef"]["name"], "example-kataconfig");
            assert_eq!(
                binding["metadata"]["ownerReferences"][0]["kind"],
                "KataConfig"
            );
            assert_eq!(seen[4].2["webhooks"][0]["failurePolicy"], "Ignore");
            assert_eq!(seen[5].2["webhooks"][0]["failurePolicy"], "Ignore");
            assert_eq!(seen[5].2["webhooks"][1]["failurePolicy"], "Ignore");
        }

        #[tokio::test]
        async fn a_policy_that_cannot_be_applied_leaves_the_pod_webhooks_failing_closed() {
            let (client, mut handle, caches, certs) = setup(true, true);
            let server = tokio::spawn(async move {
                serve_pass(&mut handle, 5, Some("validatingadmissionpolicies")).await
            });
            let err = reconcile_once(&client, &cfg(), &caches, &certs)
                .await
                .expect_err("the policy was refused");
            assert!(
                format!("{err:#}").contains("cannot apply ValidatingAdmissionPolicy sandboxed-containers-operator-namespace-policy; the pod webhooks fail closed meanwhile"),
                "{err:#}"
            );
            let seen = server.await.expect("server");
            assert!(
                seen[3]
                    .1
                    .ends_with("mutatingwebhookconfigurations/sandboxed-containers-operator-pod")
            );
            assert_eq!(seen[3].2["webhooks"][0]["failurePolicy"], "Fail");
            assert_eq!(
                seen[4].2["webhooks"][1]["failurePolicy"], "Fail",
                "default require"
            );
        }

        #[tokio::test]
        async fn without_a_kataconfig_the_policy_goes_with_the_pod_webhooks() {
            let (client, mut handle, caches, certs) = setup(false, true);
            let server = tokio::spawn(async move { serve_pass(&mut handle, 6, None).await });
            let done = reconcile_once(&client, &cfg(), &caches, &certs)
                .await
                .expect("ok; 404 on delete is fine");
            assert_eq!(done.gate, None);
            let seen = server.await.expect("server");
            let deleted: Vec<&str> = seen[2..]
                .iter()
                .filter(|(m, _, _)| *m == Method::DELETE)
                .map(|(_, p, _)| p.as_str())
                .collect();
            assert_eq!(deleted.len(), 4, "{deleted:?}");
            assert!(deleted[2].ends_with(
                "validatingadmissionpolicybindings/sandboxed-containers-operator-namespace-policy"
            ));
            assert!(deleted[3].ends_with(
                "validatingadmissionpolicies/sandboxed-containers-operator-namespace-policy"
            ));
        }

        #[test]
        fn the_missing_policy_api_is_announced_once() {
            let (mut served, mut gate) = (None, None);
            let mut pass = |s, g| announce(s, &mut served, g, &mut gate);
            assert!(
                pass(None, Some(PodGate::Webhooks)).is_empty(),
                "not known yet"
            );
            assert_eq!(pass(Some(false), Some(PodGate::Webhooks)), [NOT_SERVED_LOG]);
            assert!(pass(Some(false), Some(PodGate::Webhooks)).is_empty());
            assert!(pass(Some(false), None).is_empty());
            assert!(NOT_SERVED_LOG.contains("pod webhooks alone, which fail closed"));
            assert_eq!(
                pass(Some(true), Some(PodGate::AdmissionPolicy)),
                [IN_FORCE_LOG]
            );
            assert!(pass(Some(true), Some(PodGate::AdmissionPolicy)).is_empty());
            assert_eq!(pass(Some(false), Some(PodGate::Webhooks)), [NOT_SERVED_LOG]);
        }
    }
}
