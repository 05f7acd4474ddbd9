//! FlowMesh's Kubernetes side: the `FlowGraph` custom resource (group
//! `flowmesh.dev`, version `v1alpha1`) over the model's spec, and reading
//! and watching one FlowGraph the way a worker in cluster mode does.
//!
//! The model crate stays free of Kubernetes; this crate is where kube and
//! k8s-openapi come in. The operator extends it.
//!
//! [`validate_text`] is the validation of a FlowGraph as the Kubernetes side
//! sees it: the model's (`flowmesh_model::validate`) plus the per-segment
//! Kubernetes settings ([`segment::check_spec`]). `flowmesh validate`, the
//! workers in cluster mode and the operator all run it.

pub mod crd;
pub mod resource;
pub mod segment;
pub mod source;
pub mod status;

pub use resource::{FlowGraph, FlowGraphResourceSpec};
pub use segment::{SegmentKubernetes, Storage};
pub use source::{fetch, watch, Event, Fetched, ResourceRef};
pub use status::{FlowGraphStatus, Phase, SegmentStatus};

use flowmesh_model::validate::Report;
use flowmesh_model::FlowGraphDocument;

/// Parses and validates a FlowGraph document: every problem the model finds,
/// then every problem of the segments' `kubernetes` settings. As with the
/// model's `validate_text`, the document is returned whenever it converts,
/// and always when the report is empty.
pub fn validate_text(text: &str) -> (Option<FlowGraphDocument>, Report) {
    let (doc, mut report) = flowmesh_model::validate::validate_text(text);
    // The typed document keeps `kubernetes` as written; without one (a shape
    // problem elsewhere) the text is read again, unless it does not parse.
    let spec = match &doc {
        Some(d) => serde_json::to_value(&d.spec).ok(),
        None => flowmesh_model::spec::parse_yaml_value(text)
            .ok()
            .and_then(|v| v.get("spec").cloned()),
    };
    if let Some(spec) = spec {
        segment::check_spec(&spec, &mut report);
    }
    (doc, report)
}
