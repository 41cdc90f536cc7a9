//! Label selectors: validation exactly as the API server checks them (so the webhook, the
//! reconciler and `render` all report the same field path), and matching against labels.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// One problem in a selector, with the JSON path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

const MAX_NAME_LEN: usize = 63;
const MAX_PREFIX_LEN: usize = 253;

/// Checks a selector like the API server's `ValidateLabelSelector`; `path` is where the selector
/// sits in the object, e.g. `spec.kataConfigPoolSelector`.
pub fn validate(selector: &LabelSelector, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, req) in selector.match_expressions.iter().flatten().enumerate() {
        let at = format!("{path}.matchExpressions[{i}]");
        validate_requirement(req, &at, &mut errors);
    }
    for (key, value) in selector.match_labels.iter().flatten() {
        let at = format!("{path}.matchLabels");
        if let Err(msg) = check_qualified_name(key) {
            errors.push(FieldError {
                field: at.clone(),
                message: format!("invalid key {key:?}: {msg}"),
            });
        }
        if let Err(msg) = check_label_value(value) {
            errors.push(FieldError {
                field: at,
                message: format!("invalid value {value:?} for key {key:?}: {msg}"),
            });
        }
    }
    errors
}

fn validate_requirement(req: &LabelSelectorRequirement, at: &str, errors: &mut Vec<FieldError>) {
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" | "NotIn" => {
            if values.is_empty() {
                errors.push(FieldError {
                    field: format!("{at}.values"),
                    message: format!(
                        "must be specified when `operator` is '{}': list at least one value",
                        req.operator
                    ),
                });
            }
        }
        "Exists" | "DoesNotExist" => {
            if !values.is_empty() {
                errors.push(FieldError {
                    field: format!("{at}.values"),
                    message: format!(
                        "may not be specified when `operator` is '{}': remove the values",
                        req.operator
                    ),
                });
            }
        }
        other => errors.push(FieldError {
            field: format!("{at}.operator"),
            message: format!(
                "not a valid selector operator {other:?}: use one of In, NotIn, Exists, DoesNotExist"
            ),
        }),
    }
    if let Err(msg) = check_qualified_name(&req.key) {
        errors.push(FieldError {
            field: format!("{at}.key"),
            message: format!("invalid key {:?}: {msg}", req.key),
        });
    }
    for (j, value) in values.iter().enumerate() {
        if let Err(msg) = check_label_value(value) {
            errors.push(FieldError {
                field: format!("{at}.values[{j}]"),
                message: format!("invalid value {value:?}: {msg}"),
            });
        }
    }
}

/// `[prefix/]name` where prefix is a DNS subdomain and name a 63-character label-like name.
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("prefix part must be non-empty".into());
        }
        if prefix.len() > MAX_PREFIX_LEN {
            return Err(format!(
                "prefix part must be no more than {MAX_PREFIX_LEN} characters"
            ));
        }
        if !is_dns_subdomain(prefix) {
            return Err(
                "prefix part must be a lowercase DNS subdomain (e.g. 'example.com')".into(),
            );
        }
    }
    if name.is_empty() {
        return Err("name part must be non-empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "name part must be no more than {MAX_NAME_LEN} characters"
        ));
    }
    if !is_label_token(name) {
        return Err("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into());
    }
    Ok(())
}

/// Empty, or up to 63 characters of `[A-Za-z0-9_.-]` starting and ending alphanumeric.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > MAX_NAME_LEN {
        return Err(format!("must be no more than {MAX_NAME_LEN} characters"));
    }
    if !is_label_token(value) {
        return Err("a valid label value must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into());
    }
    Ok(())
}

fn is_label_token(s: &str) -> bool {
    let bytes = s.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(|part| {
        let bytes = part.as_bytes();
        match (bytes.first(), bytes.last()) {
            (Some(f), Some(l)) => {
                part.len() <= 63
                    && (f.is_ascii_lowercase() || f.is_ascii_digit())
                    && (l.is_ascii_lowercase() || l.is_ascii_digit())
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            }
            _ => false,
        }
    })
}

/// A set of labels a selector can be matched against: an object's `metadata.labels` map, or a
/// compact record of them (`plan::NodeLabels`).
pub trait LabelLookup {
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelLookup for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// Whether `labels` satisfy `selector` (an empty selector matches everything). Callers validate
/// first; an unknown operator never matches.
pub fn matches(selector: &LabelSelector, labels: &(impl LabelLookup + ?Sized)) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.label(k) == Some(v.as_str()));
    labels_ok
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|req| requirement_matches(req, labels))
}

fn requirement_matches(
    req: &LabelSelectorRequirement,
    labels: &(impl LabelLookup + ?Sized),
) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let value = labels.label(&req.key);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|w| w == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|w| w == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn sel(exprs: Vec<LabelSelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(exprs),
            match_labels: None,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn in_without_values_names_the_values_field() {
        let errs = validate(
            &sel(vec![expr("a", "In", None)]),
            "spec.kataConfigPoolSelector",
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].field,
            "spec.kataConfigPoolSelector.matchExpressions[0].values"
        );
        assert!(errs[0].message.contains("must be specified"), "{}", errs[0]);
    }

    #[test]
    fn not_in_with_empty_list_is_refused() {
        let errs = validate(&sel(vec![expr("a", "NotIn", Some(&[]))]), "s");
        assert_eq!(errs[0].field, "s.matchExpressions[0].values");
    }

    #[test]
    fn exists_with_values_is_refused() {
        let errs = validate(
            &sel(vec![
                expr("ok", "Exists", None),
                expr("a", "DoesNotExist", Some(&["x"])),
            ]),
            "s",
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "s.matchExpressions[1].values");
        assert!(errs[0].message.contains("may not be specified"));
    }

    #[test]
    fn unknown_operator_lists_valid_ones() {
        let errs = validate(&sel(vec![expr("a", "Equals", Some(&["x"]))]), "s");
        assert_eq!(errs[0].field, "s.matchExpressions[0].operator");
        assert!(errs[0].message.contains("In, NotIn, Exists, DoesNotExist"));
    }

    #[test]
    fn bad_keys_and_values_are_refused_with_their_paths() {
        let errs = validate(
            &sel(vec![expr("Bad_Prefix.com/x", "In", Some(&["ok", "-bad"]))]),
            "s",
        );
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "s.matchExpressions[0].key",
                "s.matchExpressions[0].values[1]"
            ]
        );

        let long = "a".repeat(64);
        let ml = LabelSelector {
            match_labels: Some(BTreeMap::from([
                (long.clone(), "v".into()),
                ("k".into(), long),
            ])),
            match_expressions: None,
        };
        let errs = validate(&ml, "s");
        assert_eq!(errs.len(), 2);
        assert!(errs.iter().all(|e| e.field == "s.matchLabels"));
    }

    #[test]
    fn qualified_names_follow_apiserver_rules() {
        assert!(check_qualified_name("node-role.kubernetes.io/worker").is_ok());
        assert!(check_qualified_name("custom-kata1").is_ok());
        assert!(check_qualified_name("a/b/c").is_err());
        assert!(check_qualified_name("/b").is_err());
        assert!(check_qualified_name("example.com/").is_err());
        assert!(check_qualified_name("-a").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("a.b_c-d").is_ok());
        assert!(check_label_value("a b").is_err());
    }

    #[test]
    fn matching_follows_each_operator() {
        let l = labels(&[("zone", "a"), ("kata", "yes")]);
        assert!(matches(&LabelSelector::default(), &l));
        assert!(matches(
            &sel(vec![expr("zone", "In", Some(&["a", "b"]))]),
            &l
        ));
        assert!(!matches(
            &sel(vec![expr("zone", "NotIn", Some(&["a"]))]),
            &l
        ));
        assert!(matches(
            &sel(vec![expr("missing", "NotIn", Some(&["a"]))]),
            &l
        ));
        assert!(matches(&sel(vec![expr("kata", "Exists", None)]), &l));
        assert!(!matches(&sel(vec![expr("kata", "DoesNotExist", None)]), &l));
        assert!(!matches(&sel(vec![expr("kata", "Bogus", None)]), &l));
        let ml = LabelSelector {
            match_labels: Some(BTreeMap::from([("zone".into(), "b".into())])),
            match_expressions: None,
        };
        assert!(!matches(&ml, &l));
    }
}
