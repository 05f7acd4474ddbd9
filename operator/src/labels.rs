//! The labels and annotations the operator puts on what it creates.
//!
//! Every child carries `app.kubernetes.io/{name,instance,component,
//! managed-by}` and `flowmesh.dev/flowgraph`; segment children also
//! `flowmesh.dev/segment`. Orphans are found by these labels.

use std::collections::BTreeMap;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const FLOWGRAPH: &str = "flowmesh.dev/flowgraph";
pub const SEGMENT: &str = "flowmesh.dev/segment";

/// The value of `app.kubernetes.io/managed-by` and the server-side apply
/// field manager.
pub const MANAGER: &str = "flowmesh-operator";

/// Pod template annotation: [`flowmesh_model::change::segment_hash`].
pub const SEGMENT_HASH: &str = "flowmesh.dev/segment-hash";
/// Pod template annotation: the operator's version (a new one rolls every
/// segment of a graph together).
pub const OPERATOR_VERSION: &str = "flowmesh.dev/operator-version";
/// Every child: a hash of what the operator applied, compared on the next
/// reconcile so that an unchanged child is not written again.
pub const APPLIED_HASH: &str = "flowmesh.dev/applied-hash";
/// PersistentVolumeClaims: "true" when they outlive the FlowGraph.
pub const KEEP: &str = "flowmesh.dev/keep-on-delete";

/// A FlowGraph's name as a label value (names may be longer than the 63
/// characters a label value allows: longer ones are cut with a hash).
pub fn value(fg: &str) -> String {
    if fg.len() <= 63 {
        fg.to_string()
    } else {
        flowmesh_model::naming::dns_label(fg, 63)
    }
}

/// Labels of every child of FlowGraph `fg`.
pub fn common(fg: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_string(), "flowmesh".to_string()),
        (INSTANCE.to_string(), value(fg)),
        (COMPONENT.to_string(), component.to_string()),
        (MANAGED_BY.to_string(), MANAGER.to_string()),
        (FLOWGRAPH.to_string(), value(fg)),
    ])
}

/// Labels of the children of one segment (its value: the model's
/// [`flowmesh_model::naming::segment_label`]).
pub fn segment(fg: &str, seg: &str) -> BTreeMap<String, String> {
    let mut l = common(fg, "segment");
    l.insert(
        SEGMENT.to_string(),
        flowmesh_model::naming::segment_label(seg),
    );
    l
}

/// The selector of a segment's pods.
pub fn selector(fg: &str, seg: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (FLOWGRAPH.to_string(), value(fg)),
        (
            SEGMENT.to_string(),
            flowmesh_model::naming::segment_label(seg),
        ),
        (MANAGED_BY.to_string(), MANAGER.to_string()),
    ])
}

/// `flowmesh.dev/flowgraph=<fg>,app.kubernetes.io/managed-by=flowmesh-operator`:
/// every child of `fg`.
pub fn children_selector(fg: &str) -> String {
    format!("{FLOWGRAPH}={},{MANAGED_BY}={MANAGER}", value(fg))
}
