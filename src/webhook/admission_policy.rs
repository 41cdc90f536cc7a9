//! The namespace gate inside the API server: a ValidatingAdmissionPolicy and its binding
//! (`DESIGN.md`, "Namespace gate that survives a webhook outage"), pure builders only; the
//! registration loop ([`super::registration`]) applies them.
//!
//! The policy's parameters are the active KataConfig itself (`paramKind` KataConfig, the
//! binding's `paramRef` names it): `status.runtimeClasses` are the kata RuntimeClasses and
//! `spec.namespacePolicy.default` the policy of unlabelled namespaces. It matches pod CREATE in
//! the namespaces the pod webhooks intercept ([`system_exclusions`], plus the `openshift-`
//! prefix in CEL, as [`super::policy::is_excluded`]).
//!
//! The CEL is generated from the table the webhooks decide with ([`policy::cell`] over every
//! policy and every kind of pod runtime), and every refusal message is rendered by the same
//! functions the webhooks use, with placeholders that become CEL: whichever layer refuses a
//! pod, the text is the same. The one refusal only the policy makes is "defaulting did not
//! run": a pod the table says gets kata injected that reaches the policy without a
//! `runtimeClassName` (the mutating webhook, `failurePolicy: Ignore`, was not reachable).
//!
//! | order | rule | from |
//! |---|---|---|
//! | 1 | a policy label value must be one of require, default, allow, deny | [`policy::resolve`] |
//! | 2 | a kata pod (or one defaulting must make kata, in `require`) must not ask for host namespaces | [`pod::host_namespace_message`] |
//! | 3.. | one rule per cell of the table that is not "admit" | [`policy::cell`] |

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, NamedRuleWithOperations, ParamKind, ParamRef, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation, Variable,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use super::pod;
use super::policy::{
    self, Cell, Effective, OPENSHIFT_PREFIX, PodRuntime, Source, system_exclusions,
};
use crate::api::NamespacePolicy as Policy;
pub use crate::names::NAMESPACE_POLICY;
use crate::names::{GROUP, MANAGED_BY_LABEL, MANAGED_BY_VALUE, NAMESPACE_POLICY_LABEL};

/// Placeholders the shared message functions are rendered with, and the CEL each stands for.
const PLACEHOLDERS: [(&str, &str); 7] = [
    ("@@namespace@@", "variables.namespaceName"),
    ("@@label@@", "variables.label"),
    ("@@runtimeClass@@", "variables.runtimeClass"),
    ("@@kataClass@@", "variables.kataClass"),
    ("@@pod@@", "variables.podName"),
    ("@@hostNamespaces@@", "variables.hostNamespaces.join(', ')"),
    ("@@kataConfig@@", "params.metadata.name"),
];

fn placeholder(name: &str) -> &'static str {
    PLACEHOLDERS
        .iter()
        .find(|(p, _)| p.trim_matches('@') == name)
        .map(|(p, _)| *p)
        .unwrap_or("")
}

/// A CEL string literal.
fn cel_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A message rendered with placeholders, as a CEL string expression.
fn cel_message(text: &str) -> String {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let next = PLACEHOLDERS
            .iter()
            .filter_map(|(p, cel)| rest.find(p).map(|at| (at, *p, *cel)))
            .min_by_key(|(at, _, _)| *at);
        match next {
            Some((at, p, cel)) => {
                if at > 0 {
                    parts.push(cel_quote(&rest[..at]));
                }
                parts.push(cel.to_string());
                rest = &rest[at + p.len()..];
            }
            None => {
                parts.push(cel_quote(rest));
                rest = "";
            }
        }
    }
    if parts.is_empty() {
        return cel_quote("");
    }
    parts.join(" + ")
}

fn variable(name: &str, expression: String) -> Variable {
    Variable {
        name: name.to_string(),
        expression,
    }
}

fn cel_list(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The variables every rule reads, in evaluation order.
fn variables() -> Vec<Variable> {
    let label = NAMESPACE_POLICY_LABEL;
    let valid = cel_list(&Policy::VALUES);
    let host = |field: &str| {
        format!("(has(object.spec.{field}) && object.spec.{field} ? ['{field}'] : [])")
    };
    vec![
        // `namespace` is a reserved word in CEL.
        variable("namespaceName", "namespaceObject.metadata.name".into()),
        // The namespaceSelector excludes the rest; a selector cannot match a prefix.
        variable(
            "platform",
            format!("variables.namespaceName.startsWith('{OPENSHIFT_PREFIX}')"),
        ),
        variable(
            "labelled",
            format!(
                "has(namespaceObject.metadata.labels) && '{label}' in namespaceObject.metadata.labels"
            ),
        ),
        variable(
            "label",
            format!("variables.labelled ? namespaceObject.metadata.labels['{label}'] : ''"),
        ),
        // As the webhooks: no default (`namespacePolicy` is nullable), or one that slipped past
        // validation, counts as `allow`.
        variable(
            "clusterDefault",
            format!(
                "has(params.spec) && has(params.spec.namespacePolicy) && params.spec.namespacePolicy != null && has(params.spec.namespacePolicy.default) && params.spec.namespacePolicy.default in {valid} ? params.spec.namespacePolicy.default : 'allow'"
            ),
        ),
        variable(
            "policy",
            "variables.labelled ? variables.label : variables.clusterDefault".into(),
        ),
        variable(
            "runtimeClass",
            "has(object.spec.runtimeClassName) ? object.spec.runtimeClassName : ''".into(),
        ),
        variable(
            "kataClasses",
            "has(params.status) && has(params.status.runtimeClasses) ? params.status.runtimeClasses : []".into(),
        ),
        variable(
            "runtime",
            format!(
                "variables.runtimeClass == '' ? '{}' : (variables.runtimeClass in variables.kataClasses ? '{}' : '{}')",
                runtime_kind(&PodRuntime::None),
                runtime_kind(&PodRuntime::Kata(String::new())),
                runtime_kind(&PodRuntime::Other(String::new())),
            ),
        ),
        // The kata RuntimeClass the pod runs with: the one it names, else the one defaulting
        // injects (the first of the KataConfig's).
        variable(
            "kataClass",
            "variables.runtime == 'kata' ? variables.runtimeClass : (variables.kataClasses.size() > 0 ? variables.kataClasses[0] : '')".into(),
        ),
        variable(
            "hostNamespaces",
            format!(
                "{} + {} + {}",
                host("hostNetwork"),
                host("hostPID"),
                host("hostIPC")
            ),
        ),
        variable(
            "podName",
            "has(object.metadata.name) && object.metadata.name != '' ? object.metadata.name : (has(object.metadata.generateName) ? object.metadata.generateName + '*' : '<unnamed>')".into(),
        ),
    ]
}

/// How the `runtime` variable names a kind of pod runtime.
fn runtime_kind(runtime: &PodRuntime) -> &'static str {
    match runtime {
        PodRuntime::None => "none",
        PodRuntime::Kata(_) => "kata",
        PodRuntime::Other(_) => "other",
    }
}

fn rule(expression: String, message_expression: String) -> Validation {
    Validation {
        expression,
        message_expression: Some(message_expression),
        // Shown if the message cannot be built; never expected.
        message: Some(format!(
            "the namespace's {NAMESPACE_POLICY_LABEL} policy forbids this pod"
        )),
        reason: Some("Forbidden".into()),
    }
}

/// The refusal for an unknown label value, as [`policy::resolve`] words it.
fn unknown_label_rule() -> Validation {
    let labels = BTreeMap::from([(
        NAMESPACE_POLICY_LABEL.to_string(),
        placeholder("label").to_string(),
    )]);
    let message = policy::resolve(placeholder("namespace"), Some(&labels), "allow")
        .err()
        .unwrap_or_default();
    rule(
        format!(
            "variables.platform || !variables.labelled || variables.label in {}",
            cel_list(&Policy::VALUES)
        ),
        cel_message(&message),
    )
}

/// The policies whose unnamed pods must become kata or be refused.
fn required_injection_policies() -> Vec<Policy> {
    Policy::ALL
        .into_iter()
        .filter(|p| {
            let eff = Effective {
                policy: *p,
                source: Source::Label,
            };
            policy::cell("", eff, &PodRuntime::None) == Cell::Inject
                && policy::injection_required(*p)
        })
        .collect()
}

/// Host namespaces on a kata pod, or on a pod defaulting must make kata (where injection is
/// required: the webhook refuses it rather than admit it unchanged).
fn host_namespace_rule() -> Validation {
    let mut becomes_kata = vec!["variables.runtime == 'kata'".to_string()];
    for p in required_injection_policies() {
        becomes_kata.push(format!(
            "(variables.policy == '{p}' && variables.runtime == 'none' && variables.kataClasses.size() > 0)"
        ));
    }
    let message = pod::host_namespace_message(
        placeholder("pod"),
        placeholder("kataClass"),
        placeholder("hostNamespaces"),
    );
    rule(
        format!(
            "variables.platform || variables.hostNamespaces.size() == 0 || !({})",
            becomes_kata.join(" || ")
        ),
        cel_message(&message),
    )
}

/// The policy's own refusal: a pod the table injects kata into arrived without a
/// `runtimeClassName`, so the mutating webhook did not run.
pub fn defaulting_did_not_run_message(
    namespace: &str,
    effective: Effective,
    pod: &str,
    kata_class: &str,
) -> String {
    format!(
        "{}: pod {pod} has no spec.runtimeClassName, so kata was not injected: the operator's defaulting webhook did not run (is the operator down?); set spec.runtimeClassName to {kata_class:?}, or create the pod again once the operator runs",
        policy::origin(namespace, effective)
    )
}

/// `variables.labelled ? <label text> : <cluster default text>` for a message that depends on
/// where the policy came from.
fn by_source(message: impl Fn(Source) -> String) -> String {
    format!(
        "variables.labelled ? ({}) : ({})",
        cel_message(&message(Source::Label)),
        cel_message(&message(Source::ClusterDefault))
    )
}

/// One rule for one cell of the table that is not "admit".
fn cell_rule(p: Policy, runtime: &PodRuntime) -> Option<Validation> {
    let effective = |source| Effective { policy: p, source };
    let matches = format!(
        "variables.policy == '{p}' && variables.runtime == '{}'",
        runtime_kind(runtime)
    );
    match policy::cell(placeholder("namespace"), effective(Source::Label), runtime) {
        Cell::Admit => None,
        Cell::Deny(_) => {
            let message = by_source(|source| {
                match policy::cell(placeholder("namespace"), effective(source), runtime) {
                    Cell::Deny(m) => m,
                    _ => String::new(),
                }
            });
            Some(rule(format!("variables.platform || !({matches})"), message))
        }
        Cell::Inject => {
            let did_not_run = by_source(|source| {
                defaulting_did_not_run_message(
                    placeholder("namespace"),
                    effective(source),
                    placeholder("pod"),
                    placeholder("kataClass"),
                )
            });
            if policy::injection_required(p) {
                // Refused with or without kata installed; the webhook words "not installed".
                let not_installed = pod::require_not_installed_message(
                    placeholder("namespace"),
                    &pod::not_installed_reason(Some(placeholder("kataConfig"))),
                );
                Some(rule(
                    format!("variables.platform || !({matches})"),
                    format!(
                        "variables.kataClasses.size() == 0 ? ({}) : ({did_not_run})",
                        cel_message(&not_installed)
                    ),
                ))
            } else {
                // Admitted unchanged (with a warning) by the webhook when kata is not installed
                // or the pod asks for host namespaces: only a pod defaulting would have made
                // kata is refused.
                Some(rule(
                    format!(
                        "variables.platform || !({matches} && variables.kataClasses.size() > 0 && variables.hostNamespaces.size() == 0)"
                    ),
                    did_not_run,
                ))
            }
        }
    }
}

/// Every rule, in the order the API server evaluates them (the first failing one is reported).
fn validations() -> Vec<Validation> {
    let mut rules = vec![unknown_label_rule(), host_namespace_rule()];
    let runtimes = [
        PodRuntime::None,
        PodRuntime::Kata(placeholder("runtimeClass").to_string()),
        PodRuntime::Other(placeholder("runtimeClass").to_string()),
    ];
    for p in Policy::ALL {
        for runtime in &runtimes {
            rules.extend(cell_rule(p, runtime));
        }
    }
    rules
}

fn meta(owner: Option<OwnerReference>) -> ObjectMeta {
    ObjectMeta {
        name: Some(NAMESPACE_POLICY.to_string()),
        labels: Some(BTreeMap::from([(
            MANAGED_BY_LABEL.to_string(),
            MANAGED_BY_VALUE.to_string(),
        )])),
        owner_references: owner.map(|o| vec![o]),
        ..Default::default()
    }
}

/// The ValidatingAdmissionPolicy: pod CREATE outside the system, platform and operator
/// namespaces, parameterized by a KataConfig.
pub fn namespace_policy(
    owner: Option<OwnerReference>,
    operator_namespace: &str,
) -> ValidatingAdmissionPolicy {
    ValidatingAdmissionPolicy {
        metadata: meta(owner),
        spec: Some(ValidatingAdmissionPolicySpec {
            // A rule that cannot be evaluated refuses the pod: the gate never fails open.
            failure_policy: Some("Fail".into()),
            param_kind: Some(ParamKind {
                api_version: Some(format!("{GROUP}/v1")),
                kind: Some("KataConfig".into()),
            }),
            match_constraints: Some(MatchResources {
                match_policy: Some("Equivalent".into()),
                namespace_selector: Some(LabelSelector {
                    match_expressions: Some(system_exclusions(operator_namespace)),
                    match_labels: None,
                }),
                resource_rules: Some(vec![NamedRuleWithOperations {
                    api_groups: Some(vec![String::new()]),
                    api_versions: Some(vec!["v1".into()]),
                    operations: Some(vec!["CREATE".into()]),
                    resources: Some(vec!["pods".into()]),
                    scope: Some("Namespaced".into()),
                    resource_names: None,
                }]),
                ..Default::default()
            }),
            variables: Some(variables()),
            validations: Some(validations()),
            ..Default::default()
        }),
        status: None,
    }
}

/// The binding: the policy with the active KataConfig as its parameters, refusing (`Deny`)
/// what it does not allow. A missing KataConfig (deleted, the binding not yet collected)
/// admits: without a KataConfig there is no namespace policy.
pub fn namespace_policy_binding(
    owner: Option<OwnerReference>,
    kataconfig: &str,
) -> ValidatingAdmissionPolicyBinding {
    ValidatingAdmissionPolicyBinding {
        metadata: meta(owner),
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(NAMESPACE_POLICY.to_string()),
            param_ref: Some(ParamRef {
                name: Some(kataconfig.to_string()),
                parameter_not_found_action: Some("Allow".into()),
                namespace: None,
                selector: None,
            }),
            validation_actions: Some(vec!["Deny".into()]),
            match_resources: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use k8s_openapi::api::node::v1::{Overhead, RuntimeClass, Scheduling};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::core::admission::Operation;
    use serde_json::{Value, json};

    use crate::webhook::pod::{PodView, mutate, validate};
    use crate::webhook::review::Verdict;
    use crate::webhook::snapshot::{KataState, PodEnv};

    const OPERATOR_NS: &str = "openshift-sandboxed-containers-operator";
    const CREATE: Operation = Operation::Create;

    /// The API server's evaluation of this policy, as far as it uses it: the namespaceSelector,
    /// then the variables in order, then the validations in order; the first failing one's
    /// `messageExpression` is the refusal. `Ok(None)` admits.
    struct Evaluator {
        env: Arc<cel::Env>,
        spec: ValidatingAdmissionPolicySpec,
        programs: BTreeMap<String, cel::Program>,
    }

    impl Evaluator {
        fn new() -> Evaluator {
            let mut env = cel::Env::stdlib();
            // Kubernetes CEL includes cel-go's strings extension (`join`).
            cel::extensions::strings(&mut env).expect("strings extension");
            let spec = namespace_policy(None, OPERATOR_NS).spec.expect("spec");
            let mut sources: Vec<&str> = Vec::new();
            for v in spec.variables.as_deref().unwrap_or_default() {
                sources.push(&v.expression);
            }
            for r in spec.validations.as_deref().unwrap_or_default() {
                sources.push(&r.expression);
                sources.extend(r.message_expression.as_deref());
            }
            let programs = sources
                .into_iter()
                .map(|src| {
                    let program = env
                        .compile(src)
                        .unwrap_or_else(|e| panic!("{src} does not parse: {e}"));
                    (src.to_string(), program)
                })
                .collect();
            Evaluator {
                env: Arc::new(env),
                spec,
                programs,
            }
        }

        fn eval(&self, expr: &str, inputs: &[(&str, &Value)]) -> Result<Value, String> {
            let program = self.programs.get(expr).ok_or("not compiled")?;
            let mut ctx = cel::Context::with_env(self.env.clone());
            for (name, value) in inputs {
                let v = cel::to_value(value).map_err(|e| format!("{name}: {e}"))?;
                ctx.add_variable_from_value(*name, v);
            }
            let out = program
                .execute(&ctx)
                .map_err(|e| format!("{expr} fails: {e}"))?;
            out.json().map_err(|e| format!("{expr}: result {e}"))
        }

        fn evaluate(
            &self,
            namespace: &Value,
            pod: &Value,
            params: &Value,
        ) -> Result<Option<String>, String> {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(namespace["metadata"]["labels"].clone()).unwrap_or_default();
            let constraints = self.spec.match_constraints.as_ref().expect("constraints");
            let selector = constraints.namespace_selector.as_ref().expect("selector");
            if !crate::selector::matches(selector, &labels) {
                return Ok(None);
            }
            let mut vars = serde_json::Map::new();
            let inputs = |vars: &serde_json::Map<String, Value>| {
                [
                    ("namespaceObject", namespace.clone()),
                    ("object", pod.clone()),
                    ("params", params.clone()),
                    ("variables", Value::Object(vars.clone())),
                ]
            };
            for var in self.spec.variables.as_deref().unwrap_or_default() {
                let owned = inputs(&vars);
                let refs: Vec<(&str, &Value)> = owned.iter().map(|(n, v)| (*n, v)).collect();
                let value = self.eval(&var.expression, &refs)?;
                vars.insert(var.name.clone(), value);
            }
            let owned = inputs(&vars);
            let refs: Vec<(&str, &Value)> = owned.iter().map(|(n, v)| (*n, v)).collect();
            for rule in self.spec.validations.as_deref().unwrap_or_default() {
                match self.eval(&rule.expression, &refs)? {
                    Value::Bool(true) => {}
                    Value::Bool(false) => {
                        let expr = rule.message_expression.as_deref().expect("message");
                        return match self.eval(expr, &refs)? {
                            Value::String(m) => Ok(Some(m)),
                            other => Err(format!("{expr} gave {other}, not a string")),
                        };
                    }
                    other => return Err(format!("{} gave {other}", rule.expression)),
                }
            }
            Ok(None)
        }
    }

    fn kata_rc() -> RuntimeClass {
        RuntimeClass {
            metadata: ObjectMeta {
                name: Some("kata".into()),
                ..Default::default()
            },
            handler: "kata".into(),
            overhead: Some(Overhead {
                pod_fixed: Some(BTreeMap::from([(
                    "memory".to_string(),
                    Quantity("350Mi".into()),
                )])),
            }),
            scheduling: Some(Scheduling {
                node_selector: Some(BTreeMap::from([(
                    "node-role.kubernetes.io/kata-oc".to_string(),
                    String::new(),
                )])),
                tolerations: None,
            }),
        }
    }

    /// One admission request of the table: a namespace, a cluster, a pod.
    struct Case {
        namespace: String,
        labels: BTreeMap<String, String>,
        default_policy: &'static str,
        installed: bool,
        pod: Value,
    }

    impl Case {
        fn describe(&self) -> String {
            format!(
                "namespace {} {:?}, default {}, kata installed {}, pod {}",
                self.namespace,
                self.labels.get(NAMESPACE_POLICY_LABEL),
                self.default_policy,
                self.installed,
                self.pod["spec"]
            )
        }

        fn namespace_object(&self) -> Value {
            let mut labels = self.labels.clone();
            labels.insert("kubernetes.io/metadata.name".into(), self.namespace.clone());
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace, "labels": labels}})
        }

        fn params(&self) -> Value {
            let classes: Vec<&str> = if self.installed { vec!["kata"] } else { vec![] };
            json!({
                "apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig",
                "metadata": {"name": "example"},
                "spec": {"namespacePolicy": {"default": self.default_policy}},
                "status": {"runtimeClasses": classes},
            })
        }

        fn webhook_env(&self) -> PodEnv {
            PodEnv {
                operator_namespace: OPERATOR_NS.into(),
                namespace_labels: Some(self.labels.clone()),
                kata: Some(KataState {
                    name: "example".into(),
                    default_policy: self.default_policy.into(),
                    runtime_class_names: if self.installed {
                        vec!["kata".into()]
                    } else {
                        vec![]
                    },
                    runtime_classes: if self.installed {
                        vec![Arc::new(kata_rc())]
                    } else {
                        vec![]
                    },
                }),
            }
        }
    }

    fn pod(runtime_class: Option<&str>, host: &[&str]) -> Value {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
        if let Some(rc) = runtime_class {
            spec["runtimeClassName"] = json!(rc);
        }
        for h in host {
            spec[*h] = json!(true);
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"}, "spec": spec})
    }

    /// Every row of the table (each label value, an unknown one, unlabelled under each cluster
    /// default), every kind of pod runtime, with and without host namespaces, with and without
    /// kata installed; and the excluded namespaces.
    fn cases() -> Vec<Case> {
        let mut namespaces: Vec<(String, BTreeMap<String, String>)> = Policy::VALUES
            .iter()
            .chain(&["always"])
            .map(|v| {
                (
                    format!("team-{v}"),
                    BTreeMap::from([(NAMESPACE_POLICY_LABEL.to_string(), v.to_string())]),
                )
            })
            .collect();
        namespaces.push(("unlabelled".into(), BTreeMap::new()));
        let require = || BTreeMap::from([(NAMESPACE_POLICY_LABEL.to_string(), "require".into())]);
        for excluded in ["kube-system", OPERATOR_NS, "openshift", "openshift-etcd"] {
            namespaces.push((excluded.into(), require()));
        }
        let mut run_level = require();
        run_level.insert(policy::RUN_LEVEL_LABEL.into(), "0".into());
        namespaces.push(("platform".into(), run_level));

        let mut out = Vec::new();
        for (namespace, labels) in &namespaces {
            for default_policy in Policy::VALUES {
                for installed in [true, false] {
                    for rc in [None, Some("kata"), Some("gvisor")] {
                        for host in [&[][..], &["hostNetwork"], &["hostPID", "hostIPC"]] {
                            out.push(Case {
                                namespace: namespace.clone(),
                                labels: labels.clone(),
                                default_policy,
                                installed,
                                pod: pod(rc, host),
                            });
                        }
                    }
                }
            }
        }
        out
    }

    #[derive(Debug, PartialEq)]
    enum Answer {
        Admit,
        Deny(String),
    }

    /// What the webhooks answer (mutate, then validate the result, as the API server calls
    /// them) and the pod as the mutating webhook left it, if it patched it.
    fn webhooks(case: &Case) -> (Answer, Option<Value>) {
        let env = case.webhook_env();
        let view: PodView = serde_json::from_value(case.pod.clone()).expect("pod view");
        // The registered matchCondition: only pods without runtimeClassName are mutated.
        let unnamed = view.spec.runtime_class_name.is_none();
        let mutated = if unnamed {
            mutate(&view, &case.namespace, &CREATE, &env)
        } else {
            Verdict::allow()
        };
        let (view, patched) = match mutated {
            Verdict::Deny(m) => return (Answer::Deny(m), None),
            Verdict::Allow { .. } => (view, None),
            Verdict::Patch { patch, .. } => {
                let mut doc = case.pod.clone();
                json_patch::patch(&mut doc, &patch.0).expect("patch applies");
                (
                    serde_json::from_value(doc.clone()).expect("pod view"),
                    Some(doc),
                )
            }
        };
        match validate(&view, &case.namespace, &CREATE, &env) {
            Verdict::Deny(m) => (Answer::Deny(m), patched),
            _ => (Answer::Admit, patched),
        }
    }

    #[test]
    fn the_policy_answers_as_the_webhooks_for_every_row_of_the_table() {
        let ev = Evaluator::new();
        let (mut refused, mut defaulted) = (0, 0);
        for case in cases() {
            let what = case.describe();
            let (ns, params) = (case.namespace_object(), case.params());
            let (answer, patched) = webhooks(&case);
            // Operator down: the policy sees the pod as created.
            let down = ev
                .evaluate(&ns, &case.pod, &params)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            match (&answer, &patched) {
                (Answer::Deny(msg), _) => {
                    refused += 1;
                    assert_eq!(down.as_deref(), Some(msg.as_str()), "{what}");
                }
                (Answer::Admit, None) => assert_eq!(down, None, "{what}"),
                (Answer::Admit, Some(_)) => {
                    defaulted += 1;
                    let msg = down.unwrap_or_else(|| panic!("{what}: admitted without kata"));
                    assert!(msg.contains("defaulting webhook did not run"), "{msg}");
                    assert!(
                        msg.contains(&format!("namespace {:?}", case.namespace)),
                        "{msg}"
                    );
                    assert!(
                        msg.contains("set spec.runtimeClassName to \"kata\""),
                        "{msg}"
                    );
                }
            }
            // Operator up: the policy sees the pod as the mutating webhook left it.
            if let Some(mutated) = &patched {
                let up = ev
                    .evaluate(&ns, mutated, &params)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let expected = match &answer {
                    Answer::Admit => None,
                    Answer::Deny(m) => Some(m.as_str()),
                };
                assert_eq!(up.as_deref(), expected, "{what} after defaulting");
            }
        }
        // Every injecting row (labelled require and default, unlabelled under either) defaults.
        assert!(
            refused > 100 && defaulted == 10,
            "{refused} refused, {defaulted} defaulted"
        );
    }

    fn case(
        label: Option<&str>,
        default_policy: &'static str,
        installed: bool,
        pod: Value,
    ) -> Case {
        Case {
            namespace: "tenant".into(),
            labels: label
                .map(|v| BTreeMap::from([(NAMESPACE_POLICY_LABEL.to_string(), v.to_string())]))
                .unwrap_or_default(),
            default_policy,
            installed,
            pod,
        }
    }

    fn refusal(c: &Case) -> Option<String> {
        Evaluator::new()
            .evaluate(&c.namespace_object(), &c.pod, &c.params())
            .expect("evaluates")
    }

    #[test]
    fn refusals_name_the_namespace_its_policy_and_the_fix() {
        let msg = refusal(&case(Some("require"), "allow", true, pod(None, &[]))).expect("refused");
        assert_eq!(
            msg,
            "namespace \"tenant\" has kataconfiguration.openshift.io/policy=require: pod app has no spec.runtimeClassName, so kata was not injected: the operator's defaulting webhook did not run (is the operator down?); set spec.runtimeClassName to \"kata\", or create the pod again once the operator runs"
        );
        let msg = refusal(&case(None, "default", true, pod(None, &[]))).expect("refused");
        assert!(
            msg.starts_with("namespace \"tenant\" has no kataconfiguration.openshift.io/policy label and the KataConfig's spec.namespacePolicy.default is default: pod app"),
            "{msg}"
        );
        let msg = refusal(&case(Some("require"), "allow", false, pod(None, &[]))).expect("refused");
        assert_eq!(
            msg,
            "namespace \"tenant\" requires kata (policy require), but kata is not installed yet: KataConfig \"example\" has no RuntimeClass ready yet (installation in progress); retry once the KataConfig reports a RuntimeClass"
        );
        let msg = refusal(&case(
            Some("sometimes"),
            "allow",
            true,
            pod(Some("kata"), &[]),
        ))
        .expect("refused");
        assert_eq!(
            msg,
            "namespace \"tenant\" has label kataconfiguration.openshift.io/policy=\"sometimes\", which is not a valid policy: use one of require, default, allow, deny"
        );
        let msg = refusal(&case(
            None,
            "allow",
            true,
            pod(Some("kata"), &["hostPID", "hostIPC"]),
        ))
        .expect("refused");
        assert!(
            msg.starts_with("pod app asks for RuntimeClass \"kata\" with hostPID, hostIPC:"),
            "{msg}"
        );
        assert!(
            msg.ends_with("drop hostPID, hostIPC or use another RuntimeClass"),
            "{msg}"
        );
    }

    #[test]
    fn a_pod_without_a_name_yet_is_named_by_its_generate_name() {
        let mut p = pod(Some("gvisor"), &[]);
        p["metadata"] = json!({"generateName": "web-"});
        let msg = refusal(&case(Some("require"), "allow", true, p.clone())).expect("refused");
        assert!(msg.contains("asks for RuntimeClass \"gvisor\""), "{msg}");
        p["spec"]["runtimeClassName"] = json!("kata");
        p["spec"]["hostNetwork"] = json!(true);
        let msg = refusal(&case(Some("require"), "allow", true, p)).expect("refused");
        assert!(msg.starts_with("pod web-* asks for"), "{msg}");
    }

    #[test]
    fn an_invalid_cluster_default_counts_as_allow() {
        let c = case(None, "allow", true, pod(None, &[]));
        let mut params = c.params();
        params["spec"]["namespacePolicy"]["default"] = json!("sometimes");
        let ev = Evaluator::new();
        assert_eq!(
            ev.evaluate(&c.namespace_object(), &c.pod, &params),
            Ok(None)
        );
        params["spec"]["namespacePolicy"] = Value::Null;
        assert_eq!(
            ev.evaluate(&c.namespace_object(), &c.pod, &params),
            Ok(None)
        );
        params["spec"] = json!({});
        params["status"] = json!({});
        assert_eq!(
            ev.evaluate(&c.namespace_object(), &c.pod, &params),
            Ok(None)
        );
    }

    #[test]
    fn no_placeholder_survives_in_the_cel() {
        let spec = namespace_policy(None, OPERATOR_NS).spec.expect("spec");
        let mut exprs: Vec<String> = spec
            .variables
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.expression)
            .collect();
        for v in spec.validations.unwrap_or_default() {
            exprs.push(v.expression);
            exprs.extend(v.message_expression);
        }
        // unknown label, host namespaces, require/none, require/other, default/none, deny/kata
        assert_eq!(exprs.len(), 12 + 2 * 6);
        for e in &exprs {
            assert!(!e.contains("@@"), "{e}");
        }
    }

    /// The API server refuses a variable named like a CEL keyword or reserved word.
    #[test]
    fn variable_names_are_valid_cel_identifiers() {
        const RESERVED: [&str; 21] = [
            "true",
            "false",
            "null",
            "in",
            "as",
            "break",
            "const",
            "continue",
            "else",
            "for",
            "function",
            "if",
            "import",
            "let",
            "loop",
            "package",
            "namespace",
            "return",
            "var",
            "void",
            "while",
        ];
        for v in variables() {
            let ident = v
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !v.name.starts_with(|c: char| c.is_ascii_digit());
            assert!(ident && !RESERVED.contains(&v.name.as_str()), "{}", v.name);
        }
    }

    #[test]
    fn cel_messages_quote_literals_and_splice_variables() {
        assert_eq!(
            cel_message("pod @@pod@@ said \"hi\\\" in @@namespace@@"),
            r#""pod " + variables.podName + " said \"hi\\\" in " + variables.namespaceName"#
        );
        assert_eq!(cel_message(""), r#""""#);
        assert_eq!(cel_message("@@label@@"), "variables.label");
    }

    #[test]
    fn the_objects_match_pod_creation_outside_excluded_namespaces_with_the_kataconfig_as_parameters()
     {
        let mut kc = crate::api::KataConfig::new("example", Default::default());
        kc.metadata.uid = Some("uid-1".into());
        let owner = super::super::registration::kataconfig_owner(&kc);
        let p = serde_json::to_value(namespace_policy(owner.clone(), "osc")).expect("json");
        assert_eq!(p["metadata"]["name"], NAMESPACE_POLICY);
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(p["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY_VALUE);
        let spec = &p["spec"];
        assert_eq!(spec["failurePolicy"], "Fail");
        assert_eq!(
            spec["paramKind"],
            json!({"apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig"})
        );
        let m = &spec["matchConstraints"];
        assert_eq!(m["resourceRules"][0]["operations"], json!(["CREATE"]));
        assert_eq!(m["resourceRules"][0]["resources"], json!(["pods"]));
        assert_eq!(
            m["namespaceSelector"]["matchExpressions"],
            serde_json::to_value(system_exclusions("osc")).expect("json")
        );
        assert!(
            spec["validations"]
                .as_array()
                .expect("rules")
                .iter()
                .all(|v| v["reason"] == "Forbidden")
        );

        let b = serde_json::to_value(namespace_policy_binding(owner, "example")).expect("json");
        assert_eq!(b["metadata"]["name"], NAMESPACE_POLICY);
        assert_eq!(b["metadata"]["ownerReferences"][0]["kind"], "KataConfig");
        assert_eq!(b["spec"]["policyName"], NAMESPACE_POLICY);
        assert_eq!(b["spec"]["validationActions"], json!(["Deny"]));
        assert_eq!(
            b["spec"]["paramRef"],
            json!({"name": "example", "parameterNotFoundAction": "Allow"})
        );
    }
}
