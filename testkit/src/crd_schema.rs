//! Converts a CRD's `openAPIV3Schema` (Kubernetes structural schema) into a JSON Schema
//! (draft 7) that a generic validator can check objects against offline, the way the API server
//! would: `nullable`, `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`,
//! `x-kubernetes-embedded-resource`, integer formats. In strict mode an unknown field is an error
//! (the API server silently prunes it, which is how typos and renamed fields get lost). CEL rules
//! (`x-kubernetes-validations`) are not evaluated. Used by the tests with the `jsonschema` crate
//! against the real upstream CRDs in `../shared/crds/`.

use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchemaError {
    #[error("not a CustomResourceDefinition: {0}")]
    NotACrd(String),
    #[error("CRD {crd} has no version {version:?} (versions: {available})")]
    NoVersion {
        crd: String,
        version: String,
        available: String,
    },
    #[error("CRD {crd} version {version} has no spec.versions[].schema.openAPIV3Schema")]
    NoSchema { crd: String, version: String },
}

/// Unknown-field handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Unknown fields are allowed (they would be pruned).
    Lenient,
    /// Unknown fields are errors wherever the schema lists properties and does not preserve
    /// unknown fields.
    Strict,
}

/// ObjectMeta as far as a schema can check it: names are strings, labels and annotations are
/// maps of strings (an unquoted `true` annotation value is a classic mistake).
fn object_meta_schema() -> Value {
    let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "generateName": {"type": "string"},
            "namespace": {"type": "string"},
            "labels": string_map,
            "annotations": string_map,
        },
    })
}

/// The JSON Schema for one version of a CRD (given as parsed YAML/JSON).
pub fn crd_json_schema(
    crd: &Value,
    version: &str,
    strictness: Strictness,
) -> Result<Value, SchemaError> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if crd.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
        return Err(SchemaError::NotACrd(name));
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let Some(v) = versions.iter().find(|v| v["name"] == version) else {
        return Err(SchemaError::NoVersion {
            crd: name,
            version: version.to_string(),
            available: versions
                .iter()
                .filter_map(|v| v["name"].as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let Some(schema) = v.pointer("/schema/openAPIV3Schema") else {
        return Err(SchemaError::NoSchema {
            crd: name,
            version: version.to_string(),
        });
    };
    let mut converted = to_json_schema(schema, strictness);
    if let Some(obj) = converted.as_object_mut() {
        obj.insert(
            "$schema".into(),
            json!("http://json-schema.org/draft-07/schema#"),
        );
        let props = obj
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(props) = props {
            props.insert("metadata".into(), object_meta_schema());
            props.insert("apiVersion".into(), json!({"type": "string"}));
            props.insert("kind".into(), json!({"type": "string"}));
        }
    }
    Ok(converted)
}

/// Converts one structural-schema node (recursively).
pub fn to_json_schema(node: &Value, strictness: Strictness) -> Value {
    let Some(obj) = node.as_object() else {
        return node.clone();
    };
    let mut out = Map::new();
    let flag = |k: &str| obj.get(k).and_then(Value::as_bool) == Some(true);
    let preserve = flag("x-kubernetes-preserve-unknown-fields");
    let int_or_string = flag("x-kubernetes-int-or-string");
    let embedded = flag("x-kubernetes-embedded-resource");
    let nullable = flag("nullable");

    for (key, value) in obj {
        match key.as_str() {
            k if k.starts_with("x-kubernetes-") || k == "nullable" => {}
            "properties" | "patternProperties" | "definitions" => {
                let converted: Map<String, Value> = value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), to_json_schema(v, strictness)))
                    .collect();
                out.insert(key.clone(), Value::Object(converted));
            }
            "items" | "additionalProperties" | "not" if value.is_object() => {
                out.insert(key.clone(), to_json_schema(value, strictness));
            }
            "anyOf" | "allOf" | "oneOf" => {
                let converted: Vec<Value> = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| to_json_schema(v, strictness))
                    .collect();
                out.insert(key.clone(), Value::Array(converted));
            }
            "format" => match value.as_str() {
                // JSON Schema does not know these; express what the API server enforces.
                Some("int32") => {
                    out.insert("minimum".into(), json!(i32::MIN));
                    out.insert("maximum".into(), json!(i32::MAX));
                }
                Some("byte") => {
                    out.insert(
                        "pattern".into(),
                        json!("^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"),
                    );
                }
                Some("date-time") => {
                    out.insert(key.clone(), value.clone());
                }
                _ => {}
            },
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }

    if int_or_string {
        out.insert("type".into(), json!(["integer", "string"]));
        out.remove("anyOf");
    }
    if embedded {
        // An embedded object is a whole Kubernetes object: apiVersion and kind are required,
        // metadata is ObjectMeta.
        let props = out
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(props) = props {
            props
                .entry("apiVersion")
                .or_insert_with(|| json!({"type": "string"}));
            props
                .entry("kind")
                .or_insert_with(|| json!({"type": "string"}));
            props.insert("metadata".into(), object_meta_schema());
        }
        let required = out.entry("required").or_insert_with(|| json!([]));
        if let Some(req) = required.as_array_mut() {
            for k in ["apiVersion", "kind"] {
                if !req.iter().any(|r| r == k) {
                    req.push(json!(k));
                }
            }
        }
    }
    if nullable {
        match out.get("type").cloned() {
            Some(Value::String(t)) => {
                out.insert("type".into(), json!([t, "null"]));
            }
            Some(Value::Array(mut types)) => {
                types.push(json!("null"));
                out.insert("type".into(), Value::Array(types));
            }
            _ => {}
        }
    }
    if strictness == Strictness::Strict
        && !preserve
        && out.contains_key("properties")
        && !out.contains_key("additionalProperties")
    {
        out.insert("additionalProperties".into(), json!(false));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(schema: &Value, instance: &Value) -> Vec<String> {
        let validator = jsonschema::draft7::new(schema).expect("schema compiles");
        validator
            .iter_errors(instance)
            .map(|e| format!("{}: {e}", e.instance_path))
            .collect()
    }

    fn crd(schema: Value) -> Value {
        json!({
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": schema}}]},
        })
    }

    #[test]
    fn nullable_admits_null_only_where_declared() {
        let s = to_json_schema(
            &json!({"type": "object", "properties": {
                "a": {"type": "string", "nullable": true},
                "b": {"type": "string"},
            }}),
            Strictness::Strict,
        );
        assert!(errors(&s, &json!({"a": null})).is_empty());
        let e = errors(&s, &json!({"b": null}));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("/b:"), "{e:?}");
    }

    #[test]
    fn int_or_string_accepts_both_and_nothing_else() {
        let s = to_json_schema(
            &json!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}),
            Strictness::Strict,
        );
        assert!(errors(&s, &json!(3)).is_empty());
        assert!(errors(&s, &json!("50%")).is_empty());
        assert!(!errors(&s, &json!(true)).is_empty());
    }

    #[test]
    fn strict_mode_rejects_unknown_fields_unless_preserved() {
        let schema = json!({"type": "object", "properties": {
            "known": {"type": "string"},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"x": {"type": "integer"}}},
        }});
        let strict = to_json_schema(&schema, Strictness::Strict);
        let lenient = to_json_schema(&schema, Strictness::Lenient);
        let obj = json!({"known": "a", "typo": 1, "free": {"anything": true}});
        let e = errors(&strict, &obj);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("typo"), "{e:?}");
        assert!(errors(&lenient, &obj).is_empty());
    }

    #[test]
    fn int32_format_bounds_the_value() {
        let s = to_json_schema(
            &json!({"type": "integer", "format": "int32"}),
            Strictness::Strict,
        );
        assert!(errors(&s, &json!(65535)).is_empty());
        assert!(!errors(&s, &json!(3_000_000_000_i64)).is_empty());
    }

    #[test]
    fn byte_format_requires_base64() {
        let s = to_json_schema(
            &json!({"type": "string", "format": "byte"}),
            Strictness::Strict,
        );
        assert!(errors(&s, &json!("aGVsbG8=")).is_empty());
        assert!(!errors(&s, &json!("not base64!")).is_empty());
    }

    #[test]
    fn embedded_resources_need_api_version_and_kind() {
        let s = to_json_schema(
            &json!({"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true}),
            Strictness::Strict,
        );
        assert!(errors(&s, &json!({"apiVersion": "v1", "kind": "Pod", "spec": {}})).is_empty());
        let e = errors(&s, &json!({"spec": {}}));
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn crd_schema_checks_metadata_strings_and_drops_cel() {
        let c = crd(json!({"type": "object", "properties": {
            "spec": {"type": "object", "x-kubernetes-validations": [{"rule": "false"}], "properties": {"n": {"type": "integer"}}},
        }}));
        let s = crd_json_schema(&c, "v1", Strictness::Strict).expect("schema");
        let ok = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"n": 1}});
        assert!(errors(&s, &ok).is_empty(), "{:?}", errors(&s, &ok));
        let bad = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "annotations": {"certified": false}}, "spec": {"n": "1"}});
        let e = errors(&s, &bad);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e.iter()
                .any(|m| m.starts_with("/metadata/annotations/certified"))
        );
        assert!(e.iter().any(|m| m.starts_with("/spec/n")));
    }

    #[test]
    fn missing_version_and_non_crds_are_named() {
        let c = crd(json!({"type": "object"}));
        let err = crd_json_schema(&c, "v2", Strictness::Strict).expect_err("no v2");
        assert_eq!(
            err.to_string(),
            "CRD widgets.example.com has no version \"v2\" (versions: v1)"
        );
        let err = crd_json_schema(
            &json!({"kind": "Service", "metadata": {"name": "s"}}),
            "v1",
            Strictness::Strict,
        )
        .expect_err("not a CRD");
        assert_eq!(err.to_string(), "not a CustomResourceDefinition: s");
        let no_schema = json!({"kind": "CustomResourceDefinition", "metadata": {"name": "x"}, "spec": {"versions": [{"name": "v1"}]}});
        let err = crd_json_schema(&no_schema, "v1", Strictness::Strict).expect_err("no schema");
        assert_eq!(
            err.to_string(),
            "CRD x version v1 has no spec.versions[].schema.openAPIV3Schema"
        );
    }
}
