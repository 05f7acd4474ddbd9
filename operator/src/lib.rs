//! The FlowMesh operator: reconciles `FlowGraph` resources into the
//! workloads that run their segments.
//!
//! Reconcile goes in stages (docs/operator.md):
//! 1. **observe** ([`reconcile`]): the FlowGraph and the children it owns,
//!    found by label;
//! 2. **validate** ([`validate`], pure): the same checks as `flowmesh
//!    validate`, plus the segments' Kubernetes settings;
//! 3. **build** ([`build`], pure): the desired children from the spec;
//! 4. **apply** ([`reconcile`]): server-side apply of what differs, deletion
//!    of orphans by label;
//! 5. **status** ([`conditions`], pure, and [`reconcile`]): phase and
//!    conditions whose transition time changes only when they flip.
//!
//! [`live`] reads the workers' `/status` for the figures in the status
//! (throughput, items lost), at most every 30 s; [`health`] (pure) decides
//! from a segment's pods and its worker's progress whether to replace a
//! pod, and [`autoscale`] (pure) how many replicas a scalable segment
//! should have, both applied by the reconcile; [`run`] wires the
//! controller, leader election, metrics and health endpoints.

pub mod autoscale;
pub mod build;
pub mod conditions;
pub mod context;
pub mod health;
pub mod labels;
pub mod live;
pub mod reconcile;
pub mod run;
pub mod validate;

pub use context::{Context, Settings};

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("FlowGraph {0} has no namespace or name")]
    Unnamed(String),
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: String,
        source: serde_json::Error,
    },
    #[error("building segment `{segment}`: {message}")]
    Build { segment: String, message: String },
    #[error("leader election: {0}")]
    Lease(String),
    #[error("cannot serve {addr}: {source}")]
    Serve {
        addr: String,
        source: std::io::Error,
    },
}

impl Error {
    /// A short label for the `reason` of the error metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "api",
            Error::Unnamed(_) => "unnamed",
            Error::Encode { .. } => "encode",
            Error::Build { .. } => "build",
            Error::Lease(_) => "lease",
            Error::Serve { .. } => "serve",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
