//! Validate: a FlowGraph read from the API, checked as `flowmesh validate`
//! checks a file (every problem with its path), plus its segments'
//! Kubernetes settings against the k8s-openapi types. Pure.

use std::collections::BTreeMap;

use flowmesh_k8s::source::{self, Fetched, ResourceRef};
use flowmesh_model::partition::{self, Partition};
use kube::api::DynamicObject;
use serde_json::Value;

use crate::build::SegmentSettings;

/// A FlowGraph that passed validation.
#[derive(Debug, Clone)]
pub struct Valid {
    pub fetched: Fetched,
    pub partition: Partition,
    pub kubernetes: BTreeMap<String, SegmentSettings>,
}

/// Why a FlowGraph is invalid: one line per problem, `path: message`, as
/// `flowmesh validate` prints them.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub problems: Vec<String>,
}

impl Invalid {
    pub fn message(&self) -> String {
        self.problems.join("\n")
    }
}

/// The known fields of `spec.segments.<s>.kubernetes`.
const FIELDS: &[&str] = &[
    "nodeSelector",
    "affinity",
    "tolerations",
    "resources",
    "image",
    "imagePullPolicy",
    "storage",
    "volumes",
    "volumeMounts",
    "capabilitiesAdd",
    "hostNetwork",
];

/// Checks one segment's `kubernetes` object field by field, so that each
/// problem carries its path.
pub fn segment_settings(path: &str, v: &Value) -> Result<SegmentSettings, Vec<String>> {
    let Some(obj) = v.as_object() else {
        return Err(vec![format!(
            "{path}: must be an object such as `{{nodeSelector: {{disk: ssd}}}}`"
        )]);
    };
    let mut problems = vec![];
    for (k, field) in obj {
        if !FIELDS.contains(&k.as_str()) {
            problems.push(format!(
                "{path}.{k}: unknown field; the known fields are {}",
                FIELDS.join(", ")
            ));
            continue;
        }
        let one = Value::Object(serde_json::Map::from_iter([(k.clone(), field.clone())]));
        if let Err(e) = serde_json::from_value::<SegmentSettings>(one) {
            problems.push(format!("{path}.{k}: {e}"));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    serde_json::from_value(v.clone()).map_err(|e| vec![format!("{path}: {e}")])
}

/// Validates a FlowGraph object.
pub fn validate(what: &ResourceRef, obj: &DynamicObject) -> Result<Valid, Invalid> {
    let mut problems = vec![];
    let fetched = match source::parse(what, obj) {
        Ok(f) => Some(f),
        Err(source::Error::Invalid { report, .. }) => {
            problems.extend(
                report
                    .problems
                    .iter()
                    .map(|p| format!("{}: {} ({})", p.path, p.message, p.hint)),
            );
            None
        }
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let mut kubernetes = BTreeMap::new();
    if let Some(segs) = obj
        .data
        .pointer("/spec/segments")
        .and_then(|s| s.as_object())
    {
        for (seg, s) in segs {
            let Some(k) = s.get("kubernetes") else {
                continue;
            };
            match segment_settings(&format!("spec.segments.{seg}.kubernetes"), k) {
                Ok(k) => {
                    kubernetes.insert(seg.clone(), k);
                }
                Err(p) => problems.extend(p),
            }
        }
    }
    let partition = match &fetched {
        Some(f) if problems.is_empty() => match partition::partition(&f.doc.spec) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(format!("spec: {e}"));
                None
            }
        },
        _ => None,
    };
    match (fetched, partition) {
        (Some(fetched), Some(partition)) if problems.is_empty() => Ok(Valid {
            fetched,
            partition,
            kubernetes,
        }),
        _ => Err(Invalid { problems }),
    }
}
