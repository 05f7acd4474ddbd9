//! The FlowGraph CustomResourceDefinition, generated from the Rust types:
//! `crds/flowgraph.yaml` is [`crd_yaml`]'s output (`flowmesh crd`).
//!
//! The spec's schema is the model's ([`flowmesh_model::FlowGraphSpec`]) with
//! what Kubernetes needs added by [`spec_schema`]:
//!
//! - Levels the model closes with `deny_unknown_fields` (the spec, a block, a
//!   segment, `runtime`, `runtime.network`) are marked
//!   `x-kubernetes-preserve-unknown-fields: true` instead of carrying
//!   `additionalProperties: false`, which a structural schema may not put
//!   beside `properties`. The API server then keeps a misspelt field instead
//!   of pruning it silently, and the validation `flowmesh validate` runs
//!   (done by the workers and the operator on the stored object) reports it
//!   with its path and a "did you mean".
//! - CEL rules (`x-kubernetes-validations`) where a rule fits on one field:
//!   block names (the keys of `blocks`), segment names (the keys of
//!   `segments`, a block's `segment`) and the `block.port` syntax of
//!   connection ends. The strings, lists and maps they iterate are bounded
//!   (`maxLength`, `maxItems`, `maxProperties`) so that the API server's
//!   cost estimate stays within its budget.

use flowmesh_model::FlowGraphSpec;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::resource::FlowGraph;

/// Most blocks a FlowGraph resource may have.
pub const MAX_BLOCKS: u32 = 512;
/// Most connections a FlowGraph resource may have.
pub const MAX_CONNECTIONS: u32 = 2048;
/// Most segments (one pod each) a FlowGraph resource may have.
pub const MAX_SEGMENTS: u32 = 64;
/// Longest connection end, `block.port`.
pub const MAX_ENDPOINT_LENGTH: u32 = 253;

/// A block name, as `flowmesh validate` checks it.
pub const BLOCK_NAME_RE: &str = "^[a-z][a-z0-9_-]*$";
/// A segment name: a DNS-1123 label.
pub const SEGMENT_NAME_RE: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A connection end: `block.port`.
pub const ENDPOINT_RE: &str = "^[a-z][a-z0-9_-]*[.].+$";

/// Written at the top of `crds/flowgraph.yaml`.
pub const HEADER: &str = "# Generated from the Rust types by `flowmesh crd` \
(cargo run -p flowmesh -- crd > crds/flowgraph.yaml); do not edit.\n";

/// The FlowGraph CRD.
pub fn crd() -> CustomResourceDefinition {
    FlowGraph::crd()
}

/// The CRD as YAML, with [`HEADER`]: the content of `crds/flowgraph.yaml`.
pub fn crd_yaml() -> String {
    let yaml = serde_saphyr::to_string(&crd()).expect("a CRD always serializes");
    format!("{HEADER}{yaml}")
}

/// The schema of the resource's `spec`: the model's, with unknown fields
/// preserved where the model denies them and the CEL rules added.
pub fn spec_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = FlowGraphSpec::json_schema(generator);
    let mut v = schema.to_value();
    preserve_unknown_fields(&mut v);
    add_rules(&mut v);
    schema = Schema::try_from(v).expect("the spec schema is an object");
    schema
}

/// Replaces `additionalProperties: false` next to `properties` by
/// `x-kubernetes-preserve-unknown-fields: true`, at every depth.
fn preserve_unknown_fields(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.contains_key("properties") && m.get("additionalProperties") == Some(&json!(false))
            {
                m.remove("additionalProperties");
                m.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
            }
            for (_, child) in m.iter_mut() {
                preserve_unknown_fields(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(preserve_unknown_fields),
        _ => {}
    }
}

fn rule(rule: String, message: &str) -> Value {
    json!({"rule": rule, "message": message})
}

/// The node at `path` (property names and `additionalProperties`/`items`).
fn node<'a>(v: &'a mut Value, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get_mut(*p)
            .unwrap_or_else(|| panic!("the spec schema has no `{}`", path.join(".")));
    }
    cur.as_object_mut()
        .unwrap_or_else(|| panic!("`{}` of the spec schema is not an object", path.join(".")))
}

fn add_rules(spec: &mut Value) {
    let blocks = node(spec, &["properties", "blocks"]);
    blocks.insert("maxProperties".into(), json!(MAX_BLOCKS));
    blocks.insert(
        "x-kubernetes-validations".into(),
        json!([rule(
            format!("self.all(name, name.matches('{BLOCK_NAME_RE}'))"),
            "block names start with a lowercase letter and use only a-z, 0-9, `_` and `-`",
        )]),
    );

    let segment = node(
        spec,
        &[
            "properties",
            "blocks",
            "additionalProperties",
            "properties",
            "segment",
        ],
    );
    segment.insert("maxLength".into(), json!(63));
    segment.insert(
        "x-kubernetes-validations".into(),
        json!([rule(
            format!("self.matches('{SEGMENT_NAME_RE}')"),
            "a segment name is a DNS-1123 label: lowercase letters, digits and `-`, \
             starting and ending with a letter or digit",
        )]),
    );

    let segments = node(spec, &["properties", "segments"]);
    segments.insert("maxProperties".into(), json!(MAX_SEGMENTS));
    segments.insert(
        "x-kubernetes-validations".into(),
        json!([rule(
            format!("self.all(name, size(name) <= 63 && name.matches('{SEGMENT_NAME_RE}'))"),
            "segment names are DNS-1123 labels: at most 63 lowercase letters, digits and `-`, \
             starting and ending with a letter or digit",
        )]),
    );

    let connections = node(spec, &["properties", "connections"]);
    connections.insert("maxItems".into(), json!(MAX_CONNECTIONS));
    let end = node(spec, &["properties", "connections", "items", "items"]);
    end.insert("maxLength".into(), json!(MAX_ENDPOINT_LENGTH));
    end.insert(
        "x-kubernetes-validations".into(),
        json!([rule(
            format!("self.matches('{ENDPOINT_RE}')"),
            "a connection end is written `block.port`",
        )]),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_names_printer_columns_and_subresources() {
        let crd = crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("flowgraphs.flowmesh.dev")
        );
        let names = &crd.spec.names;
        assert_eq!(names.short_names.as_deref(), Some(&["fg".to_string()][..]));
        assert_eq!(
            names.categories.as_deref(),
            Some(&["flowmesh".to_string()][..])
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.served && v.storage);
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<(&str, &str)> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            cols,
            [
                ("Phase", ".status.phase"),
                ("Ready", ".status.ready"),
                ("Throughput", ".status.throughput"),
                ("Age", ".metadata.creationTimestamp")
            ]
        );
    }
}
