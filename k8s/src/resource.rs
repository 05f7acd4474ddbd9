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

/// The resource's spec: the model's FlowGraph spec, unchanged.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flowmesh.dev",
    version = "v1alpha1",
    kind = "FlowGraph",
    plural = "flowgraphs",
    namespaced,
    shortname = "fg",
    category = "flowmesh",
    status = "FlowGraphStatus"
)]
pub struct FlowGraphResourceSpec {
    #[serde(flatten)]
    pub graph: FlowGraphSpec,
}

/// What the operator reports (extended by the operator issue).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowGraphStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Running, Succeeded, Failed or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
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
