//! The node watch's wire type: what the metadata API sends for a Node, decoded into what the
//! node record keeps and nothing more.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::ClusterResourceScope;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::plan::nodes::NODE_ANNOTATIONS;

/// A Node's name, resourceVersion, labels and MCO annotations ([`NODE_ANNOTATIONS`]), read from
/// the metadata API (`PartialObjectMetadata`, like `PartialObjectMeta<Node>`). Everything else
/// of the metadata (`managedFields`, other annotations, owner references) is skipped while
/// parsing and never allocated: on a realistic node that is most of its metadata, and a list
/// page holds a hundred nodes.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeMeta {
    #[serde(deserialize_with = "slim_metadata")]
    pub metadata: ObjectMeta,
}

impl Resource for NodeMeta {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    /// The metadata API: the server sends neither `spec` nor `status` (e.g. a node's images).
    fn metadata_api() -> bool {
        true
    }

    fn kind(dt: &()) -> Cow<'_, str> {
        Node::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        Node::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        Node::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        Node::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The fields of `metadata` kept; serde skips every other one.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeptMetadata {
    name: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "mco_annotations")]
    annotations: Option<BTreeMap<String, String>>,
}

fn slim_metadata<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let kept = KeptMetadata::deserialize(d)?;
    Ok(ObjectMeta {
        name: kept.name,
        resource_version: kept.resource_version,
        labels: kept.labels,
        annotations: kept.annotations,
        ..Default::default()
    })
}

/// The [`NODE_ANNOTATIONS`] of an annotation map; other values (OVN's kilobytes) are skipped.
fn mco_annotations<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Mco;
    impl<'de> Visitor<'de> for Mco {
        type Value = Option<BTreeMap<String, String>>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of annotations")
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut kept = BTreeMap::new();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if NODE_ANNOTATIONS.contains(&key.as_ref()) {
                    kept.insert(key.into_owned(), map.next_value::<String>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(Some(kept))
        }
    }
    d.deserialize_option(Mco)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{MCO_CURRENT_CONFIG, MCO_STATE};
    use kube::core::{ObjectList, WatchEvent};

    /// A node of the metadata API as kube-apiserver sends it, trimmed to what matters here.
    fn wire_node(name: &str) -> serde_json::Value {
        serde_json::json!({
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": {
                "name": name, "uid": "8d6e0c5a", "resourceVersion": "4711",
                "creationTimestamp": "2026-12-01T17:21:21Z",
                "labels": {"kubernetes.io/hostname": name, "node-role.kubernetes.io/worker": ""},
                "annotations": {
                    MCO_STATE: "Done", MCO_CURRENT_CONFIG: "rendered-worker-1",
                    "k8s.ovn.org/node-subnets": "{\"default\":[\"10.128.2.0/23\"]}",
                    "node.alpha.kubernetes.io/ttl": "0",
                },
                "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1",
                    "time": "2026-12-01T17:21:21Z", "fieldsType": "FieldsV1", "subresource": "status",
                    "fieldsV1": {"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {"f:status": {}}}}}}],
            }
        })
    }

    /// What a decode keeps of `metadata`, computed the plain way.
    fn kept_of(metadata: ObjectMeta) -> NodeMeta {
        let annotations = metadata.annotations.map(|a| {
            a.into_iter()
                .filter(|(k, _)| NODE_ANNOTATIONS.contains(&k.as_str()))
                .collect()
        });
        NodeMeta {
            metadata: ObjectMeta {
                name: metadata.name,
                resource_version: metadata.resource_version,
                labels: metadata.labels,
                annotations,
                ..Default::default()
            },
        }
    }

    /// kube sends `Accept: ...;as=PartialObjectMetadata` for a type that says so: without it the
    /// server would send whole nodes (their images and conditions) to be skipped here.
    #[test]
    fn the_node_watch_asks_the_metadata_api() {
        assert!(NodeMeta::metadata_api());
        assert_eq!(NodeMeta::url_path(&(), None), "/api/v1/nodes");
    }

    #[test]
    fn a_node_keeps_name_version_labels_and_the_mco_annotations_only() {
        let n: NodeMeta = serde_json::from_value(wire_node("worker-0")).expect("node");
        let m = &n.metadata;
        assert_eq!(m.name.as_deref(), Some("worker-0"));
        assert_eq!(m.resource_version.as_deref(), Some("4711"));
        assert_eq!(m.labels.as_ref().map(BTreeMap::len), Some(2));
        let kept: Vec<&str> = m
            .annotations
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(kept, [MCO_CURRENT_CONFIG, MCO_STATE]);
        assert!(m.managed_fields.is_none() && m.uid.is_none() && m.creation_timestamp.is_none());
        let from_meta: NodeMeta = kept_of(
            serde_json::from_value(wire_node("worker-0")["metadata"].clone()).expect("meta"),
        );
        assert_eq!(from_meta.metadata, n.metadata, "both ways keep the same");
    }

    #[test]
    fn lists_and_watch_events_decode_and_absent_or_null_maps_are_none() {
        let list: ObjectList<NodeMeta> = serde_json::from_value(serde_json::json!({
            "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": "4712", "continue": "abc"},
            "items": [wire_node("a"), wire_node("b")],
        }))
        .expect("list");
        assert_eq!(list.items.len(), 2);
        assert_eq!(list.metadata.continue_.as_deref(), Some("abc"));
        let ev: WatchEvent<NodeMeta> = serde_json::from_value(
            serde_json::json!({"type": "MODIFIED", "object": wire_node("a")}),
        )
        .expect("event");
        assert!(matches!(ev, WatchEvent::Modified(n) if n.metadata.name.as_deref() == Some("a")));
        let bare: NodeMeta = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "labels": null, "annotations": null}
        }))
        .expect("bare");
        assert!(bare.metadata.labels.is_none() && bare.metadata.annotations.is_none());
        let none: NodeMeta =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "d"}})).expect("none");
        assert!(none.metadata.annotations.is_none());
    }

    #[test]
    fn a_malformed_annotation_is_an_error_naming_what_was_expected() {
        let bad = serde_json::json!({"metadata": {"name": "e", "annotations": {MCO_STATE: 3}}});
        let err = serde_json::from_value::<NodeMeta>(bad).expect_err("not a string");
        assert!(err.to_string().contains("expected a string"), "{err}");
        let bad = serde_json::json!({"metadata": {"name": "e", "annotations": ["x"]}});
        let err = serde_json::from_value::<NodeMeta>(bad).expect_err("not a map");
        assert!(err.to_string().contains("a map of annotations"), "{err}");
    }
}
