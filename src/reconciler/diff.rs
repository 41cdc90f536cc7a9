//! The pure diff between what the reconciler wants and what it observes: whether an object needs
//! an apply, and the merge patch that removes keys someone else added to a selector of ours. It
//! keeps a settled cluster free of writes.

use serde::Serialize;
use serde_json::Value;

/// Maps whose exact key set carries meaning (selectors, overhead): a key added by someone else
/// changes behaviour, so it is drift even though we never set it.
const STRICT_MAPS: [&str; 3] = ["matchLabels", "nodeSelector", "podFixed"];

/// True when `observed` is missing or differs from `desired` in any field `desired` sets (or
/// has extra keys in a selector-like map). Fields set by others elsewhere (status,
/// MCO-written `spec.configuration`, extra metadata labels) are ignored, so an object we applied
/// before compares equal and is not written again.
pub fn needs_apply<T: Serialize>(desired: &T, observed: Option<&T>) -> bool {
    let Some(observed) = observed else {
        return true;
    };
    match (
        serde_json::to_value(desired),
        serde_json::to_value(observed),
    ) {
        (Ok(mut d), Ok(o)) => {
            if let Some(map) = d.as_object_mut() {
                map.remove("status");
            }
            !contains(&o, &d, false)
        }
        // Cannot compare: apply, the server decides.
        _ => true,
    }
}

/// `have` contains `want`: every key of `want` present with a contained value (and no other key
/// when `strict`); lists element-wise with the same length; scalars equal.
fn contains(have: &Value, want: &Value, strict: bool) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => {
            (!strict || h.len() == w.len())
                && w.iter().all(|(k, wv)| {
                    h.get(k).is_some_and(|hv| {
                        if k == "podFixed" {
                            same_quantities(hv, wv)
                        } else {
                            contains(hv, wv, STRICT_MAPS.contains(&k.as_str()))
                        }
                    })
                })
        }
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| contains(hv, wv, false))
        }
        (h, w) => h == w,
    }
}

/// Resource maps compared by value: the API server stores quantities in canonical form
/// (`0.25` comes back as `250m`), which must not look like drift.
fn same_quantities(have: &Value, want: &Value) -> bool {
    match (have.as_object(), want.as_object()) {
        (Some(h), Some(w)) => {
            h.len() == w.len()
                && w.iter().all(|(k, wv)| {
                    h.get(k).is_some_and(|hv| match (hv.as_str(), wv.as_str()) {
                        (Some(a), Some(b)) => match (quantity(a), quantity(b)) {
                            (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
                            _ => a == b,
                        },
                        _ => hv == wv,
                    })
                })
        }
        _ => have == want,
    }
}

/// The value of a Kubernetes quantity (`250m`, `350Mi`, `1.5G`, `2e3`), `None` if malformed.
fn quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let base: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(base * mult)
}

/// A JSON merge patch removing keys someone else added to a selector-like map of ours. Server-side
/// apply never removes fields another manager owns, so this is the only way to undo such an edit.
pub fn foreign_keys_patch<T: Serialize>(desired: &T, observed: &T) -> Option<Value> {
    let d = serde_json::to_value(desired).ok()?;
    let o = serde_json::to_value(observed).ok()?;
    nulls(&o, &d, false)
}

fn nulls(have: &Value, want: &Value, strict: bool) -> Option<Value> {
    let (Value::Object(h), Value::Object(w)) = (have, want) else {
        return None;
    };
    let mut out = serde_json::Map::new();
    for (k, hv) in h {
        match w.get(k) {
            None if strict => {
                out.insert(k.clone(), Value::Null);
            }
            Some(wv) => {
                if let Some(inner) = nulls(hv, wv, STRICT_MAPS.contains(&k.as_str())) {
                    out.insert(k.clone(), inner);
                }
            }
            None => {}
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::objects;
    use serde_json::json;

    #[test]
    fn missing_object_needs_apply() {
        assert!(needs_apply(&objects::kata_pool(), None));
    }

    #[test]
    fn fields_written_by_others_do_not_trigger_an_apply() {
        let desired = objects::kata_pool();
        let mut observed = desired.clone();
        observed.metadata.resource_version = Some("42".into());
        observed
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("added-by-admin".into(), "x".into());
        observed.spec.configuration = Some(crate::api::mco::PoolConfiguration {
            name: Some("rendered-kata-oc-1".into()),
            source: vec![],
        });
        observed.status = Some(Default::default());
        assert!(!needs_apply(&desired, Some(&observed)));
    }

    #[test]
    fn a_key_added_to_our_selector_is_drift_and_gets_a_removal_patch() {
        let desired = objects::kata_pool();
        let mut observed = desired.clone();
        if let Some(ml) = observed
            .spec
            .node_selector
            .as_mut()
            .and_then(|s| s.match_labels.as_mut())
        {
            ml.insert("elsewhere".into(), String::new());
        }
        assert!(needs_apply(&desired, Some(&observed)));
        assert_eq!(
            foreign_keys_patch(&desired, &observed),
            Some(json!({"spec": {"nodeSelector": {"matchLabels": {"elsewhere": null}}}}))
        );
        assert_eq!(foreign_keys_patch(&desired, &desired), None);
    }

    #[test]
    fn canonicalised_quantities_are_not_drift_but_changed_ones_are() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let rc = |cpu: &str, mem: &str| k8s_openapi::api::node::v1::RuntimeClass {
            handler: "kata".into(),
            overhead: Some(k8s_openapi::api::node::v1::Overhead {
                pod_fixed: Some(
                    [("cpu", cpu), ("memory", mem)]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                        .collect(),
                ),
            }),
            ..Default::default()
        };
        assert!(!needs_apply(
            &rc("0.25", "350Mi"),
            Some(&rc("250m", "350Mi"))
        ));
        assert!(!needs_apply(&rc("1", "1Gi"), Some(&rc("1000m", "1024Mi"))));
        assert!(needs_apply(
            &rc("500m", "350Mi"),
            Some(&rc("250m", "350Mi"))
        ));
        assert!(needs_apply(&rc("250m", "350M"), Some(&rc("250m", "350Mi"))));
        assert_eq!(quantity("2e3"), Some(2000.0));
        assert_eq!(quantity("12x"), None);
    }

    #[test]
    fn an_edited_owned_field_needs_apply() {
        let desired = objects::extension_machine_config("kata-oc", "example");
        let mut observed = desired.clone();
        observed.spec.extensions = vec!["kata-containers".into(), "usbguard".into()];
        assert!(needs_apply(&desired, Some(&observed)));
        let mut observed = desired.clone();
        observed
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(crate::names::MC_ROLE_LABEL.into(), "worker".into());
        assert!(needs_apply(&desired, Some(&observed)));
    }
}
