//! The `FlowGraph` custom resource: `spec` is the same FlowGraph spec that
//! `flowmesh run` reads ([`flowmesh_model::FlowGraphSpec`]), `status` is
//! written by the operator.
//!
//! ```yaml
//! apiVersion: flowmesh.dev/v1alpha1
//! kind: FlowGraph
//! metadata: {name: survey, namespace: radio}
//! spec:
//!   blocks: {...}
//!   connections: [...]
//! ```

use flowmesh_model::FlowGraphSpec;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::status::FlowGraphStatus;

/// The resource's spec: the model's FlowGraph spec, unchanged. Its schema is
/// the model's with the Kubernetes rules added ([`crate::crd::spec_schema`]).
// The printer columns repeat `type_ = "string"`, which clippy takes for a
// duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "flowmesh.dev",
    version = "v1alpha1",
    kind = "FlowGraph",
    plural = "flowgraphs",
    namespaced,
    shortname = "fg",
    category = "flowmesh",
    status = "FlowGraphStatus",
    doc = "A FlowMesh flowgraph run by the operator: blocks, connections and segments (one pod each).",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Succeeded, Failed or Invalid"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "Ready segments out of all"
    ),
    printcolumn(
        name = "Throughput",
        type_ = "string",
        json_path = ".status.throughput",
        description = "Items per second leaving the sinks"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct FlowGraphResourceSpec {
    #[serde(flatten)]
    pub graph: FlowGraphSpec,
}

impl JsonSchema for FlowGraphResourceSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FlowGraphResourceSpec".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        crate::crd::spec_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn the_resource_is_flowmesh_dev_v1alpha1_flowgraphs() {
        assert_eq!(FlowGraph::group(&()), "flowmesh.dev");
        assert_eq!(FlowGraph::version(&()), "v1alpha1");
        assert_eq!(FlowGraph::kind(&()), "FlowGraph");
        assert_eq!(FlowGraph::plural(&()), "flowgraphs");
        assert_eq!(
            FlowGraph::api_version(&()),
            flowmesh_model::spec::API_VERSION
        );
    }

    #[test]
    fn a_flowmesh_run_file_is_a_flowgraph_resource() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/tone-filter-file.yaml"
        ))
        .unwrap();
        let (doc, report) = flowmesh_model::validate::validate_text(&text);
        assert!(report.is_ok());
        let doc = doc.unwrap();
        let v = serde_json::to_value(&doc).unwrap();
        let fg: FlowGraph = serde_json::from_value(v).unwrap();
        assert_eq!(fg.spec.graph, doc.spec);
        assert_eq!(
            fg.metadata.name.as_deref(),
            Some(doc.metadata.name.as_str())
        );
    }
}
