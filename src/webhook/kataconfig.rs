//! `/validate-kataconfig`: at most one KataConfig, selector rules exactly as the API server
//! checks label selectors (with the field path), CRI-O log level and namespace policy; warnings
//! for things that do not block (a selector matching no node today, peer pods).

use kube::core::admission::Operation;

use super::review::Verdict;
use super::snapshot::KataEnv;
use crate::api::KataConfig;
use crate::plan;

pub fn validate(
    op: &Operation,
    object: Option<&KataConfig>,
    old: Option<&KataConfig>,
    env: &KataEnv,
) -> Verdict {
    let Some(kc) = object else {
        // DELETE (object is null) and CONNECT: nothing to check.
        return Verdict::allow();
    };
    let name = kc.metadata.name.as_deref().unwrap_or_default();
    match op {
        Operation::Create => {
            let others: Vec<String> = env
                .existing
                .iter()
                .filter_map(|o| o.metadata.name.clone())
                .filter(|n| n != name)
                .map(|n| format!("{n:?}"))
                .collect();
            if !others.is_empty() {
                return Verdict::Deny(format!(
                    "KataConfig {} already exists and only one KataConfig per cluster is supported; edit that one instead of creating {name:?}",
                    others.join(", ")
                ));
            }
        }
        Operation::Update => {
            // Metadata-only updates (finalizers, labels, status) must never be blocked.
            if old.is_some_and(|o| o.spec == kc.spec) {
                return Verdict::allow();
            }
        }
        Operation::Delete | Operation::Connect => return Verdict::allow(),
    }
    if let Err(e) = plan::validate_spec(&kc.spec) {
        return Verdict::Deny(format!("invalid KataConfig {name:?}: {e}"));
    }
    match plan::desired_state(kc, &env.nodes) {
        Ok(d) => Verdict::Allow {
            warnings: d.warnings,
        },
        Err(e) => Verdict::Deny(format!("invalid KataConfig {name:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::KataConfigSpec;
    use crate::plan::NodeInfo;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn kc(name: &str, spec: serde_json::Value) -> KataConfig {
        let spec: KataConfigSpec = serde_json::from_value(spec).expect("spec");
        KataConfig::new(name, spec)
    }

    fn worker(name: &str, labels: &[(&str, &str)]) -> NodeInfo {
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.insert("node-role.kubernetes.io/worker".into(), String::new());
        NodeInfo {
            name: name.into(),
            labels: l.into(),
            ..Default::default()
        }
    }

    fn env_with(existing: &[&str]) -> KataEnv {
        KataEnv {
            existing: existing
                .iter()
                .map(|n| Arc::new(kc(n, json!({}))))
                .collect(),
            nodes: vec![worker("w0", &[("zone", "a")])],
        }
    }

    fn deny_msg(v: Verdict) -> String {
        match v {
            Verdict::Deny(m) => m,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn second_kataconfig_is_denied_naming_the_first() {
        let msg = deny_msg(validate(
            &Operation::Create,
            Some(&kc("two", json!({}))),
            None,
            &env_with(&["one"]),
        ));
        assert!(msg.contains("\"one\" already exists"), "{msg}");
        assert!(msg.contains("only one KataConfig"), "{msg}");
    }

    #[test]
    fn first_kataconfig_is_allowed() {
        assert_eq!(
            validate(
                &Operation::Create,
                Some(&kc("one", json!({}))),
                None,
                &env_with(&[])
            ),
            Verdict::allow()
        );
        // Re-sent CREATE of the same name (API server retry) is not a duplicate.
        assert!(matches!(
            validate(
                &Operation::Create,
                Some(&kc("one", json!({}))),
                None,
                &env_with(&["one"])
            ),
            Verdict::Allow { .. }
        ));
    }

    #[test]
    fn every_selector_rule_is_reported_with_its_field_path() {
        let cases = [
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
                "spec.kataConfigPoolSelector.matchExpressions[0].values",
                "must be specified",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]}),
                "spec.kataConfigPoolSelector.matchExpressions[0].values",
                "must be specified",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
                "spec.kataConfigPoolSelector.matchExpressions[0].values",
                "may not be specified",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "DoesNotExist", "values": ["x"]}]}),
                "spec.kataConfigPoolSelector.matchExpressions[0].values",
                "may not be specified",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}),
                "spec.kataConfigPoolSelector.matchExpressions[0].operator",
                "In, NotIn, Exists, DoesNotExist",
            ),
            (
                json!({"matchExpressions": [{"key": "Bad/x", "operator": "Exists"}]}),
                "spec.kataConfigPoolSelector.matchExpressions[0].key",
                "prefix part",
            ),
            (
                json!({"matchExpressions": [{"key": "ok", "operator": "In", "values": ["fine", "-bad"]}]}),
                "spec.kataConfigPoolSelector.matchExpressions[0].values[1]",
                "valid label value",
            ),
            (
                json!({"matchLabels": {"a/b/c": "x"}}),
                "spec.kataConfigPoolSelector.matchLabels",
                "invalid key",
            ),
            (
                json!({"matchLabels": {"k": "x y"}}),
                "spec.kataConfigPoolSelector.matchLabels",
                "invalid value",
            ),
        ];
        for (sel, field, words) in cases {
            let obj = kc("one", json!({"kataConfigPoolSelector": sel}));
            let msg = deny_msg(validate(
                &Operation::Create,
                Some(&obj),
                None,
                &env_with(&[]),
            ));
            assert!(
                msg.contains(&format!("{field}:")),
                "{field} missing in {msg}"
            );
            assert!(msg.contains(words), "{words} missing in {msg}");
        }
    }

    #[test]
    fn bad_log_level_and_policy_are_denied() {
        let obj = kc(
            "one",
            json!({"logLevel": "verbose", "namespacePolicy": {"default": "maybe"}}),
        );
        let msg = deny_msg(validate(
            &Operation::Create,
            Some(&obj),
            None,
            &env_with(&[]),
        ));
        assert!(
            msg.contains("spec.logLevel: unsupported CRI-O log level \"verbose\""),
            "{msg}"
        );
        assert!(msg.contains("spec.namespacePolicy.default"), "{msg}");
    }

    #[test]
    fn selector_matching_no_node_is_admitted_with_a_warning() {
        let obj = kc(
            "one",
            json!({"kataConfigPoolSelector": {"matchLabels": {"zone": "b"}}}),
        );
        let Verdict::Allow { warnings } =
            validate(&Operation::Create, Some(&obj), None, &env_with(&[]))
        else {
            panic!("admitted")
        };
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("no worker node matches")),
            "{warnings:?}"
        );
        let matching = kc(
            "one",
            json!({"kataConfigPoolSelector": {"matchLabels": {"zone": "a"}}}),
        );
        assert_eq!(
            validate(&Operation::Create, Some(&matching), None, &env_with(&[])),
            Verdict::allow()
        );
    }

    #[test]
    fn update_checks_changed_specs_only_and_delete_is_allowed() {
        let bad = kc("one", json!({"logLevel": "verbose"}));
        // Spec unchanged (e.g. removing the finalizer of an object that slipped in): allowed.
        assert_eq!(
            validate(
                &Operation::Update,
                Some(&bad),
                Some(&bad),
                &env_with(&["one"])
            ),
            Verdict::allow()
        );
        let good = kc("one", json!({}));
        let msg = deny_msg(validate(
            &Operation::Update,
            Some(&bad),
            Some(&good),
            &env_with(&["one"]),
        ));
        assert!(msg.contains("spec.logLevel"), "{msg}");
        assert_eq!(
            validate(&Operation::Delete, None, Some(&good), &env_with(&["one"])),
            Verdict::allow()
        );
    }
}
