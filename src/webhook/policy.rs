//! The namespace policy table of `DESIGN.md` ("Namespace policy"), as pure functions.
//!
//! | value     | no runtimeClassName | kata RuntimeClass | another RuntimeClass |
//! |-----------|---------------------|-------------------|----------------------|
//! | `require` | inject kata         | admit             | deny                 |
//! | `default` | inject kata         | admit             | admit                |
//! | `allow`   | unchanged           | admit             | admit                |
//! | `deny`    | unchanged           | deny              | admit                |
//! | no label  | as `spec.namespacePolicy.default` (default `allow`)                |

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

use crate::api::NamespacePolicy as Policy;
use crate::names::NAMESPACE_POLICY_LABEL;

/// Namespaces the webhooks never intercept. The registered `namespaceSelector` excludes them too,
/// but it cannot express the `openshift-` prefix, so the decisions check again.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
pub const OPENSHIFT_PREFIX: &str = "openshift-";
/// Label OpenShift puts on its platform namespaces (`openshift.io/run-level`).
pub const RUN_LEVEL_LABEL: &str = "openshift.io/run-level";

/// Where the effective policy came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Label,
    ClusterDefault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    pub policy: Policy,
    pub source: Source,
}

/// The policy of a namespace: its label, else the KataConfig's `spec.namespacePolicy.default`.
/// An unknown label value is an error naming the valid values (the pod is denied with it).
pub fn resolve(
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    cluster_default: &str,
) -> Result<Effective, String> {
    if let Some(value) = labels.and_then(|l| l.get(NAMESPACE_POLICY_LABEL)) {
        return Policy::parse(value)
            .map(|policy| Effective {
                policy,
                source: Source::Label,
            })
            .ok_or_else(|| {
                format!(
                    "namespace {namespace:?} has label {NAMESPACE_POLICY_LABEL}={value:?}, which is not a valid policy: use one of {}",
                    Policy::valid_values()
                )
            });
    }
    // The KataConfig webhook refuses bad defaults; one that slipped in falls back to `allow`,
    // the setting that changes nothing.
    Ok(Effective {
        policy: Policy::parse(cluster_default).unwrap_or(Policy::Allow),
        source: Source::ClusterDefault,
    })
}

/// Whether a namespace is out of the webhooks' reach: system and OpenShift platform namespaces
/// and the operator's own (its pods must start even when its webhooks are down).
pub fn is_excluded(
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    operator_namespace: &str,
) -> bool {
    SYSTEM_NAMESPACES.contains(&namespace)
        || namespace == operator_namespace
        || namespace.starts_with(OPENSHIFT_PREFIX)
        || namespace == "openshift"
        || labels.is_some_and(|l| l.contains_key(RUN_LEVEL_LABEL))
}

/// [`is_excluded`] as namespace selector requirements, for the webhook configurations and the
/// ValidatingAdmissionPolicy. `openshift-*` cannot be expressed as a selector (no prefix
/// match); OpenShift's platform namespaces carry `openshift.io/run-level`, and the decisions
/// (and the policy's CEL) exclude the prefix again.
pub fn system_exclusions(operator_namespace: &str) -> Vec<LabelSelectorRequirement> {
    let mut names: Vec<String> = SYSTEM_NAMESPACES.iter().map(|n| n.to_string()).collect();
    names.push(operator_namespace.to_string());
    names.push(OPENSHIFT_PREFIX.trim_end_matches('-').to_string());
    vec![
        LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".to_string(),
            operator: "NotIn".to_string(),
            values: Some(names),
        },
        LabelSelectorRequirement {
            key: RUN_LEVEL_LABEL.to_string(),
            operator: "DoesNotExist".to_string(),
            values: None,
        },
    ]
}

/// What a pod names in `spec.runtimeClassName`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRuntime {
    None,
    Kata(String),
    Other(String),
}

/// One cell of the table: what happens to the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Inject,
    Admit,
    Deny(String),
}

/// Whether a pod that cannot get kata injected is refused (`require`) rather than admitted
/// unchanged with a warning (`default`).
pub fn injection_required(policy: Policy) -> bool {
    policy == Policy::Require
}

/// Where a namespace's policy comes from, as the refusals word it.
pub fn origin(namespace: &str, effective: Effective) -> String {
    match effective.source {
        Source::Label => format!(
            "namespace {namespace:?} has {NAMESPACE_POLICY_LABEL}={}",
            effective.policy
        ),
        Source::ClusterDefault => format!(
            "namespace {namespace:?} has no {NAMESPACE_POLICY_LABEL} label and the KataConfig's spec.namespacePolicy.default is {}",
            effective.policy
        ),
    }
}

/// The cell of the policy table for this namespace's policy and what the pod names.
pub fn cell(namespace: &str, effective: Effective, runtime: &PodRuntime) -> Cell {
    let origin = origin(namespace, effective);
    match (effective.policy, runtime) {
        (Policy::Require | Policy::Default, PodRuntime::None) => Cell::Inject,
        (Policy::Allow | Policy::Deny, PodRuntime::None) => Cell::Admit,
        (Policy::Require | Policy::Default | Policy::Allow, PodRuntime::Kata(_)) => Cell::Admit,
        (Policy::Deny, PodRuntime::Kata(rc)) => Cell::Deny(format!(
            "{origin}: pods may not use the kata RuntimeClass {rc:?} here; remove spec.runtimeClassName or change the namespace policy"
        )),
        (Policy::Require, PodRuntime::Other(rc)) => Cell::Deny(format!(
            "{origin}: every pod must run with kata, but this pod asks for RuntimeClass {rc:?}; remove spec.runtimeClassName to get kata"
        )),
        (Policy::Default | Policy::Allow | Policy::Deny, PodRuntime::Other(_)) => Cell::Admit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(NAMESPACE_POLICY_LABEL.to_string(), value.to_string())])
    }

    fn labelled_cell(policy: &str, runtime: PodRuntime) -> Cell {
        let eff = resolve("ns", Some(&labelled(policy)), "allow").expect("valid policy");
        cell("ns", eff, &runtime)
    }

    fn kata() -> PodRuntime {
        PodRuntime::Kata("kata".into())
    }

    fn other() -> PodRuntime {
        PodRuntime::Other("gvisor".into())
    }

    #[test]
    fn require_row_injects_admits_kata_and_denies_other_runtimes() {
        assert_eq!(labelled_cell("require", PodRuntime::None), Cell::Inject);
        assert_eq!(labelled_cell("require", kata()), Cell::Admit);
        let Cell::Deny(msg) = labelled_cell("require", other()) else {
            panic!("require must deny another RuntimeClass")
        };
        assert!(msg.contains("every pod must run with kata"), "{msg}");
        assert!(msg.contains("\"gvisor\""), "{msg}");
        assert!(
            msg.contains("kataconfiguration.openshift.io/policy=require"),
            "{msg}"
        );
    }

    #[test]
    fn default_row_injects_and_admits_everything_named() {
        assert_eq!(labelled_cell("default", PodRuntime::None), Cell::Inject);
        assert_eq!(labelled_cell("default", kata()), Cell::Admit);
        assert_eq!(labelled_cell("default", other()), Cell::Admit);
    }

    #[test]
    fn allow_row_changes_nothing() {
        assert_eq!(labelled_cell("allow", PodRuntime::None), Cell::Admit);
        assert_eq!(labelled_cell("allow", kata()), Cell::Admit);
        assert_eq!(labelled_cell("allow", other()), Cell::Admit);
    }

    #[test]
    fn deny_row_refuses_only_kata() {
        assert_eq!(labelled_cell("deny", PodRuntime::None), Cell::Admit);
        assert_eq!(labelled_cell("deny", other()), Cell::Admit);
        let Cell::Deny(msg) = labelled_cell("deny", kata()) else {
            panic!("deny must refuse kata pods")
        };
        assert!(msg.contains("may not use the kata RuntimeClass"), "{msg}");
    }

    #[test]
    fn unlabelled_namespace_follows_the_cluster_default() {
        for (default, expected) in [
            ("require", Policy::Require),
            ("default", Policy::Default),
            ("allow", Policy::Allow),
            ("deny", Policy::Deny),
        ] {
            let eff = resolve("ns", None, default).expect("valid");
            assert_eq!(eff.policy, expected);
            assert_eq!(eff.source, Source::ClusterDefault);
        }
        let eff = resolve("ns", Some(&BTreeMap::new()), "deny").expect("valid");
        let Cell::Deny(msg) = cell("ns", eff, &kata()) else {
            panic!("cluster default deny refuses kata")
        };
        assert!(
            msg.contains("spec.namespacePolicy.default is deny"),
            "{msg}"
        );
    }

    #[test]
    fn label_wins_over_the_cluster_default() {
        let eff = resolve("ns", Some(&labelled("allow")), "require").expect("valid");
        assert_eq!(eff.policy, Policy::Allow);
        assert_eq!(eff.source, Source::Label);
    }

    #[test]
    fn unknown_label_value_names_the_valid_values() {
        let err = resolve("team-a", Some(&labelled("always")), "allow").expect_err("unknown");
        assert!(err.contains("\"always\""), "{err}");
        assert!(
            err.contains("use one of require, default, allow, deny"),
            "{err}"
        );
        assert!(err.contains("\"team-a\""), "{err}");
    }

    #[test]
    fn invalid_cluster_default_falls_back_to_allow() {
        let eff = resolve("ns", None, "sometimes").expect("fallback");
        assert_eq!(eff.policy, Policy::Allow);
    }

    #[test]
    fn system_platform_and_own_namespaces_are_excluded() {
        let own = "openshift-sandboxed-containers-operator";
        for ns in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            own,
            "openshift-etcd",
            "openshift",
        ] {
            assert!(is_excluded(ns, None, own), "{ns}");
        }
        assert!(is_excluded("my-operator", None, "my-operator"));
        let run_level = BTreeMap::from([(RUN_LEVEL_LABEL.to_string(), "0".to_string())]);
        assert!(is_excluded("platform", Some(&run_level), own));
        assert!(!is_excluded("team-a", None, own));
        assert!(!is_excluded("openshiftish", None, own));
    }
}
