//! Validate: a FlowGraph read from the API, checked as `flowmesh validate`
//! checks a file (every problem with its path), its segments' Kubernetes
//! settings against the k8s-openapi types included
//! ([`flowmesh_k8s::source::parse`]), then partitioned. Pure.

use std::collections::BTreeMap;

use flowmesh_k8s::source::{self, Fetched, ResourceRef};
use flowmesh_model::partition::{self, Partition};
use kube::api::DynamicObject;

use flowmesh_k8s::SegmentKubernetes;

/// A FlowGraph that passed validation.
#[derive(Debug, Clone)]
pub struct Valid {
    pub fetched: Fetched,
    pub partition: Partition,
    pub kubernetes: BTreeMap<String, SegmentKubernetes>,
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

/// One line per problem, `path: message (hint)`.
fn lines(report: &flowmesh_model::validate::Report) -> impl Iterator<Item = String> + '_ {
    report
        .problems
        .iter()
        .map(|p| format!("{}: {} ({})", p.path, p.message, p.hint))
}

/// Validates a FlowGraph object.
pub fn validate(what: &ResourceRef, obj: &DynamicObject) -> Result<Valid, Invalid> {
    let mut problems = vec![];
    let fetched = match source::parse(what, obj) {
        Ok(f) => Some(f),
        Err(source::Error::Invalid { report, .. }) => {
            problems.extend(lines(&report));
            None
        }
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
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
    let mut kubernetes = BTreeMap::new();
    if let Some(f) = &fetched {
        for (seg, s) in &f.doc.spec.segments {
            match SegmentKubernetes::of(seg, s) {
                Ok(k) => {
                    kubernetes.insert(seg.clone(), k);
                }
                Err(flowmesh_k8s::segment::Error::Invalid { report, .. }) => {
                    problems.extend(lines(&report))
                }
            }
        }
    }
    match (fetched, partition) {
        (Some(fetched), Some(partition)) if problems.is_empty() => Ok(Valid {
            fetched,
            partition,
            kubernetes,
        }),
        _ => Err(Invalid { problems }),
    }
}
