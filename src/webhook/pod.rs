//! Pod defaulting (`/mutate-pod`) and gating (`/validate-pod`): pure decisions over a slim view
//! of the pod and a cache snapshot.

use std::borrow::Cow;
use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::Operation;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::policy::{self, Cell, PodRuntime};
use super::review::Verdict;
use super::snapshot::{KataState, PodEnv};
use crate::api::NamespacePolicy as Policy;

/// The parts of a Pod the decisions read. Parsing only these (and skipping the rest, notably
/// `managedFields`) keeps a review cheap; the patch is computed against them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PodView {
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpecView,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
    #[serde(default, rename = "hostPID", skip_serializing_if = "Option::is_none")]
    pub host_pid: Option<bool>,
    #[serde(default, rename = "hostIPC", skip_serializing_if = "Option::is_none")]
    pub host_ipc: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead: Option<BTreeMap<String, Quantity>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

fn slim_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let slim = Option::<SlimMeta>::deserialize(d)?;
    Ok(slim
        .map(|m| ObjectMeta {
            name: m.name,
            generate_name: m.generate_name,
            namespace: m.namespace,
            ..Default::default()
        })
        .unwrap_or_default())
}

impl kube::Resource for PodView {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl PodView {
    /// `name`, or `generateName*` for controller-created pods that have no name yet.
    pub fn display_name(&self) -> String {
        match (&self.metadata.name, &self.metadata.generate_name) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(g)) => format!("{g}*"),
            _ => "<unnamed>".to_string(),
        }
    }

    /// The host namespaces the pod asks for.
    pub fn host_namespaces(&self) -> Vec<&'static str> {
        let s = &self.spec;
        [
            (s.host_network, "hostNetwork"),
            (s.host_pid, "hostPID"),
            (s.host_ipc, "hostIPC"),
        ]
        .into_iter()
        .filter(|(on, _)| on.unwrap_or(false))
        .map(|(_, name)| name)
        .collect()
    }

    fn runtime(&self, kata: Option<&KataState>) -> PodRuntime {
        match self.spec.runtime_class_name.as_deref() {
            None | Some("") => PodRuntime::None,
            Some(rc) if kata.is_some_and(|k| k.is_kata(rc)) => PodRuntime::Kata(rc.to_string()),
            Some(rc) => PodRuntime::Other(rc.to_string()),
        }
    }
}

fn host_namespace_denial(pod: &PodView, runtime_class: &str) -> Option<String> {
    let host = pod.host_namespaces();
    (!host.is_empty())
        .then(|| host_namespace_message(&pod.display_name(), runtime_class, &host.join(", ")))
}

/// The refusal of a kata pod asking for host namespaces (`host`: their names, comma-separated).
/// Shared with the ValidatingAdmissionPolicy, which builds the same text in CEL.
pub fn host_namespace_message(pod_name: &str, runtime_class: &str, host: &str) -> String {
    format!(
        "pod {pod_name} asks for RuntimeClass {runtime_class:?} with {host}: a kata pod runs in its own virtual machine, which cannot share the host's network, PID or IPC namespaces; drop {host} or use another RuntimeClass"
    )
}

/// Why kata cannot be injected yet: no KataConfig, or none of its RuntimeClasses exists.
pub fn not_installed_reason(kata_config: Option<&str>) -> String {
    match kata_config {
        None => "no KataConfig exists".to_string(),
        Some(name) => {
            format!("KataConfig {name:?} has no RuntimeClass ready yet (installation in progress)")
        }
    }
}

/// The refusal of a pod in a `require` namespace while kata is not installed.
pub fn require_not_installed_message(namespace: &str, why: &str) -> String {
    format!(
        "namespace {namespace:?} requires kata (policy require), but kata is not installed yet: {why}; retry once the KataConfig reports a RuntimeClass"
    )
}

/// Common first steps: only CREATE is judged; excluded namespaces pass untouched; an unknown
/// policy value is a denial.
fn policy_for(
    namespace: &str,
    op: &Operation,
    env: &PodEnv,
) -> Result<Option<policy::Effective>, String> {
    if !matches!(op, Operation::Create)
        || policy::is_excluded(
            namespace,
            env.namespace_labels.as_ref(),
            &env.operator_namespace,
        )
    {
        return Ok(None);
    }
    let default = env
        .kata
        .as_ref()
        .map(|k| k.default_policy.as_str())
        .unwrap_or("allow");
    policy::resolve(namespace, env.namespace_labels.as_ref(), default).map(Some)
}

/// `/mutate-pod`: injects kata where the namespace policy asks for it.
pub fn mutate(pod: &PodView, namespace: &str, op: &Operation, env: &PodEnv) -> Verdict {
    let effective = match policy_for(namespace, op, env) {
        Ok(Some(e)) => e,
        Ok(None) => return Verdict::allow(),
        Err(msg) => return Verdict::Deny(msg),
    };
    let runtime = pod.runtime(env.kata.as_ref());
    match policy::cell(namespace, effective, &runtime) {
        Cell::Deny(msg) => Verdict::Deny(msg),
        Cell::Admit => match &runtime {
            PodRuntime::Kata(rc) => host_namespace_denial(pod, rc)
                .map(Verdict::Deny)
                .unwrap_or_else(Verdict::allow),
            _ => Verdict::allow(),
        },
        Cell::Inject => inject_decision(pod, namespace, effective.policy, env.kata.as_ref()),
    }
}

fn inject_decision(
    pod: &PodView,
    namespace: &str,
    policy: Policy,
    kata: Option<&KataState>,
) -> Verdict {
    let required = policy::injection_required(policy);
    let Some(rc) = kata.and_then(|k| k.runtime_classes.first()) else {
        let why = not_installed_reason(kata.map(|k| k.name.as_str()));
        return if required {
            Verdict::Deny(require_not_installed_message(namespace, &why))
        } else {
            Verdict::Allow {
                warnings: vec![format!(
                    "kata is not installed yet ({why}); pod admitted without kata"
                )],
            }
        };
    };
    let rc_name = rc.metadata.name.clone().unwrap_or_default();
    if let Some(msg) = host_namespace_denial(pod, &rc_name) {
        return if required {
            Verdict::Deny(msg)
        } else {
            Verdict::Allow {
                warnings: vec![format!(
                    "pod not defaulted to kata: it uses {}, which a kata VM cannot share",
                    pod.host_namespaces().join(", ")
                )],
            }
        };
    }
    match injection_patch(pod, rc) {
        Ok(patch) => Verdict::Patch {
            patch,
            warnings: Vec::new(),
        },
        Err(msg) => Verdict::Deny(msg),
    }
}

fn ptr(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

/// The patch that makes a pod kata, including what the built-in RuntimeClass admission plugin
/// would set, so the pod is admitted whatever the plugin order: `overhead` exactly the
/// RuntimeClass's, its node selector merged (a conflicting key is an error) and its tolerations
/// appended (duplicates skipped).
pub fn injection_patch(pod: &PodView, rc: &RuntimeClass) -> Result<Patch, String> {
    let rc_name = rc.metadata.name.clone().unwrap_or_default();
    let mut ops = vec![PatchOperation::Add(AddOperation {
        path: ptr(&["spec", "runtimeClassName"]),
        value: Value::String(rc_name.clone()),
    })];

    let want_overhead = rc.overhead.as_ref().and_then(|o| o.pod_fixed.clone());
    match (&pod.spec.overhead, want_overhead) {
        (None, Some(want)) => ops.push(PatchOperation::Add(AddOperation {
            path: ptr(&["spec", "overhead"]),
            value: to_value(&want),
        })),
        (Some(have), Some(want)) if *have != want => {
            ops.push(PatchOperation::Replace(ReplaceOperation {
                path: ptr(&["spec", "overhead"]),
                value: to_value(&want),
            }))
        }
        (Some(_), None) => ops.push(PatchOperation::Remove(RemoveOperation {
            path: ptr(&["spec", "overhead"]),
        })),
        _ => {}
    }

    let scheduling = rc.scheduling.as_ref();
    let want_selector = scheduling
        .and_then(|s| s.node_selector.clone())
        .unwrap_or_default();
    if !want_selector.is_empty() {
        match &pod.spec.node_selector {
            None => ops.push(PatchOperation::Add(AddOperation {
                path: ptr(&["spec", "nodeSelector"]),
                value: to_value(&want_selector),
            })),
            Some(have) => {
                for (k, v) in &want_selector {
                    match have.get(k) {
                        Some(existing) if existing == v => {}
                        Some(existing) => {
                            return Err(format!(
                                "pod {} has spec.nodeSelector {k}={existing:?}, which conflicts with {k}={v:?} required by RuntimeClass {rc_name:?}; remove that key to run with kata",
                                pod.display_name()
                            ));
                        }
                        None => ops.push(PatchOperation::Add(AddOperation {
                            path: ptr(&["spec", "nodeSelector", k]),
                            value: Value::String(v.clone()),
                        })),
                    }
                }
            }
        }
    }

    let want_tolerations = scheduling
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    if !want_tolerations.is_empty() {
        match &pod.spec.tolerations {
            None => ops.push(PatchOperation::Add(AddOperation {
                path: ptr(&["spec", "tolerations"]),
                value: to_value(&want_tolerations),
            })),
            Some(have) => {
                for t in want_tolerations.iter().filter(|t| !have.contains(t)) {
                    ops.push(PatchOperation::Add(AddOperation {
                        path: ptr(&["spec", "tolerations", "-"]),
                        value: to_value(t),
                    }));
                }
            }
        }
    }
    Ok(Patch(ops))
}

fn to_value<T: Serialize>(v: &T) -> Value {
    // Maps of strings and k8s-openapi types always serialize.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// `/validate-pod`: gates the final pod (after every mutating webhook).
pub fn validate(pod: &PodView, namespace: &str, op: &Operation, env: &PodEnv) -> Verdict {
    let effective = match policy_for(namespace, op, env) {
        Ok(Some(e)) => e,
        Ok(None) => return Verdict::allow(),
        Err(msg) => return Verdict::Deny(msg),
    };
    let runtime = pod.runtime(env.kata.as_ref());
    if let PodRuntime::Kata(rc) = &runtime
        && let Some(msg) = host_namespace_denial(pod, rc)
    {
        return Verdict::Deny(msg);
    }
    match policy::cell(namespace, effective, &runtime) {
        Cell::Deny(msg) => Verdict::Deny(msg),
        Cell::Admit => Verdict::allow(),
        // Still no runtimeClassName after the mutating webhooks ran.
        Cell::Inject if policy::injection_required(effective.policy) => Verdict::Deny(format!(
            "namespace {namespace:?} requires kata (policy require), but pod {} has no spec.runtimeClassName after defaulting; set spec.runtimeClassName to {}",
            pod.display_name(),
            env.kata
                .as_ref()
                .and_then(|k| k.runtime_class_names.first())
                .map(|n| format!("{n:?}"))
                .unwrap_or_else(|| "a kata RuntimeClass once kata is installed".into())
        )),
        Cell::Inject => Verdict::allow(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::NAMESPACE_POLICY_LABEL;
    use k8s_openapi::api::node::v1::{Overhead, Scheduling};
    use std::sync::Arc;

    fn kata_rc() -> RuntimeClass {
        RuntimeClass {
            metadata: ObjectMeta {
                name: Some("kata".into()),
                ..Default::default()
            },
            handler: "kata".into(),
            overhead: Some(Overhead {
                pod_fixed: Some(BTreeMap::from([
                    ("cpu".into(), Quantity("250m".into())),
                    ("memory".into(), Quantity("350Mi".into())),
                ])),
            }),
            scheduling: Some(Scheduling {
                node_selector: Some(BTreeMap::from([(
                    "node-role.kubernetes.io/kata-oc".into(),
                    String::new(),
                )])),
                tolerations: Some(vec![Toleration {
                    key: Some("kata".into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoSchedule".into()),
                    ..Default::default()
                }]),
            }),
        }
    }

    fn env(label: Option<&str>, default: &str, installed: bool) -> PodEnv {
        PodEnv {
            operator_namespace: "openshift-sandboxed-containers-operator".into(),
            namespace_labels: Some(
                label
                    .map(|v| BTreeMap::from([(NAMESPACE_POLICY_LABEL.to_string(), v.to_string())]))
                    .unwrap_or_default(),
            ),
            kata: Some(KataState {
                name: "example".into(),
                default_policy: default.into(),
                runtime_class_names: vec!["kata".into()],
                runtime_classes: if installed {
                    vec![Arc::new(kata_rc())]
                } else {
                    vec![]
                },
            }),
        }
    }

    fn pod(runtime: Option<&str>) -> PodView {
        PodView {
            metadata: ObjectMeta {
                name: Some("app".into()),
                ..Default::default()
            },
            spec: PodSpecView {
                runtime_class_name: runtime.map(Into::into),
                ..Default::default()
            },
        }
    }

    fn apply(pod: &PodView, patch: &Patch) -> PodView {
        let mut doc = serde_json::to_value(pod).expect("json");
        json_patch::patch(&mut doc, &patch.0).expect("patch applies");
        serde_json::from_value(doc).expect("pod view")
    }

    const CREATE: Operation = Operation::Create;

    #[test]
    fn injection_sets_class_overhead_selector_and_tolerations() {
        let Verdict::Patch { patch, .. } = mutate(
            &pod(None),
            "ns",
            &CREATE,
            &env(Some("require"), "allow", true),
        ) else {
            panic!("require injects")
        };
        let out = apply(&pod(None), &patch);
        assert_eq!(out.spec.runtime_class_name.as_deref(), Some("kata"));
        assert_eq!(
            out.spec.overhead,
            kata_rc().overhead.and_then(|o| o.pod_fixed)
        );
        assert_eq!(
            out.spec.node_selector.as_ref().expect("selector")["node-role.kubernetes.io/kata-oc"],
            ""
        );
        assert_eq!(out.spec.tolerations.as_ref().expect("tolerations").len(), 1);
        // The injected pod passes the gate: the two webhooks agree.
        assert!(matches!(
            validate(&out, "ns", &CREATE, &env(Some("require"), "allow", true)),
            Verdict::Allow { .. }
        ));
    }

    #[test]
    fn injection_merges_into_existing_selector_and_skips_duplicate_tolerations() {
        let mut p = pod(None);
        p.spec.node_selector = Some(BTreeMap::from([("zone".into(), "a".into())]));
        p.spec.tolerations = kata_rc().scheduling.and_then(|s| s.tolerations);
        p.spec.overhead = Some(BTreeMap::from([("cpu".into(), Quantity("1".into()))]));
        let patch = injection_patch(&p, &kata_rc()).expect("no conflict");
        let out = apply(&p, &patch);
        let sel = out.spec.node_selector.expect("selector");
        assert_eq!(sel.len(), 2);
        assert_eq!(sel["zone"], "a");
        assert_eq!(
            out.spec.tolerations.expect("t").len(),
            1,
            "duplicate skipped"
        );
        assert_eq!(
            out.spec.overhead,
            kata_rc().overhead.and_then(|o| o.pod_fixed),
            "overhead replaced"
        );
    }

    #[test]
    fn node_selector_key_with_slash_is_escaped_in_the_patch() {
        let mut p = pod(None);
        p.spec.node_selector = Some(BTreeMap::new());
        let patch = injection_patch(&p, &kata_rc()).expect("ok");
        let text = serde_json::to_string(&patch).expect("json");
        assert!(
            text.contains("/spec/nodeSelector/node-role.kubernetes.io~1kata-oc"),
            "{text}"
        );
    }

    #[test]
    fn conflicting_node_selector_is_denied_with_the_key() {
        let mut p = pod(None);
        p.spec.node_selector = Some(BTreeMap::from([(
            "node-role.kubernetes.io/kata-oc".into(),
            "no".into(),
        )]));
        let Verdict::Deny(msg) = mutate(&p, "ns", &CREATE, &env(Some("default"), "allow", true))
        else {
            panic!("conflict denies")
        };
        assert!(
            msg.contains("conflicts with node-role.kubernetes.io/kata-oc=\"\""),
            "{msg}"
        );
    }

    #[test]
    fn rc_without_overhead_removes_a_stray_pod_overhead() {
        let mut rc = kata_rc();
        rc.overhead = None;
        let mut p = pod(None);
        p.spec.overhead = Some(BTreeMap::from([("cpu".into(), Quantity("1".into()))]));
        let out = apply(&p, &injection_patch(&p, &rc).expect("ok"));
        assert_eq!(out.spec.overhead, None);
    }

    #[test]
    fn require_without_installed_kata_denies_and_default_warns() {
        let Verdict::Deny(msg) = mutate(
            &pod(None),
            "ns",
            &CREATE,
            &env(Some("require"), "allow", false),
        ) else {
            panic!("deny")
        };
        assert!(msg.contains("kata is not installed yet"), "{msg}");
        let mut no_kc = env(Some("require"), "allow", false);
        no_kc.kata = None;
        let Verdict::Deny(msg) = mutate(&pod(None), "ns", &CREATE, &no_kc) else {
            panic!("deny")
        };
        assert!(msg.contains("no KataConfig exists"), "{msg}");
        let Verdict::Allow { warnings } = mutate(
            &pod(None),
            "ns",
            &CREATE,
            &env(Some("default"), "allow", false),
        ) else {
            panic!("default admits")
        };
        assert!(
            warnings[0].contains("pod admitted without kata"),
            "{warnings:?}"
        );
    }

    #[test]
    fn every_policy_row_through_mutate_and_validate() {
        // (policy label, pod runtimeClassName, mutate outcome, validate outcome)
        let rows: [(&str, Option<&str>, &str, &str); 12] = [
            ("require", None, "patch", "deny"),
            ("require", Some("kata"), "allow", "allow"),
            ("require", Some("runc"), "deny", "deny"),
            ("default", None, "patch", "allow"),
            ("default", Some("kata"), "allow", "allow"),
            ("default", Some("runc"), "allow", "allow"),
            ("allow", None, "allow", "allow"),
            ("allow", Some("kata"), "allow", "allow"),
            ("allow", Some("runc"), "allow", "allow"),
            ("deny", None, "allow", "allow"),
            ("deny", Some("kata"), "deny", "deny"),
            ("deny", Some("runc"), "allow", "allow"),
        ];
        for (label, rc, m, v) in rows {
            let e = env(Some(label), "allow", true);
            let kind = |verdict: &Verdict| match verdict {
                Verdict::Allow { .. } => "allow",
                Verdict::Patch { .. } => "patch",
                Verdict::Deny(_) => "deny",
            };
            assert_eq!(
                kind(&mutate(&pod(rc), "ns", &CREATE, &e)),
                m,
                "mutate {label} {rc:?}"
            );
            assert_eq!(
                kind(&validate(&pod(rc), "ns", &CREATE, &e)),
                v,
                "validate {label} {rc:?}"
            );
        }
    }

    #[test]
    fn unlabelled_namespace_uses_the_kataconfig_default() {
        assert!(matches!(
            mutate(&pod(None), "ns", &CREATE, &env(None, "default", true)),
            Verdict::Patch { .. }
        ));
        assert!(matches!(
            mutate(&pod(None), "ns", &CREATE, &env(None, "allow", true)),
            Verdict::Allow { .. }
        ));
        assert!(matches!(
            validate(&pod(Some("kata")), "ns", &CREATE, &env(None, "deny", true)),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn unknown_policy_value_is_denied_naming_valid_values() {
        for f in [mutate, validate] {
            let Verdict::Deny(msg) = f(&pod(None), "ns", &CREATE, &env(Some("yes"), "allow", true))
            else {
                panic!("unknown value denies")
            };
            assert!(
                msg.contains("use one of require, default, allow, deny"),
                "{msg}"
            );
        }
    }

    #[test]
    fn kata_pod_with_host_namespaces_is_denied_with_the_reason() {
        let mut p = pod(Some("kata"));
        p.spec.host_network = Some(true);
        p.spec.host_pid = Some(true);
        for f in [mutate, validate] {
            let Verdict::Deny(msg) = f(&p, "ns", &CREATE, &env(Some("allow"), "allow", true))
            else {
                panic!("host namespaces deny")
            };
            assert!(msg.contains("hostNetwork, hostPID"), "{msg}");
            assert!(msg.contains("cannot share the host"), "{msg}");
        }
        // Injection into a host-network pod: require denies, default leaves it alone with a warning.
        let mut plain = pod(None);
        plain.spec.host_ipc = Some(true);
        assert!(
            matches!(mutate(&plain, "ns", &CREATE, &env(Some("require"), "allow", true)), Verdict::Deny(m) if m.contains("hostIPC"))
        );
        let Verdict::Allow { warnings } =
            mutate(&plain, "ns", &CREATE, &env(Some("default"), "allow", true))
        else {
            panic!("default admits unchanged")
        };
        assert!(
            warnings[0].contains("not defaulted to kata"),
            "{warnings:?}"
        );
    }

    #[test]
    fn excluded_namespaces_and_non_create_operations_pass_untouched() {
        let e = env(Some("require"), "require", true);
        for ns in [
            "kube-system",
            "openshift-monitoring",
            "openshift-sandboxed-containers-operator",
        ] {
            assert!(
                matches!(mutate(&pod(None), ns, &CREATE, &e), Verdict::Allow { .. }),
                "{ns}"
            );
            assert!(
                matches!(
                    validate(&pod(Some("runc")), ns, &CREATE, &e),
                    Verdict::Allow { .. }
                ),
                "{ns}"
            );
        }
        assert!(matches!(
            mutate(&pod(None), "ns", &Operation::Update, &e),
            Verdict::Allow { .. }
        ));
    }

    #[test]
    fn generate_name_pods_are_named_in_messages() {
        let mut p = pod(Some("kata"));
        p.metadata.name = None;
        p.metadata.generate_name = Some("web-844df75cbd-".into());
        p.spec.host_network = Some(true);
        let Verdict::Deny(msg) = validate(&p, "ns", &CREATE, &env(None, "allow", true)) else {
            panic!("deny")
        };
        assert!(msg.contains("web-844df75cbd-*"), "{msg}");
    }
}
