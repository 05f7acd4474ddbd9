//! FlowMesh's Kubernetes side: the `FlowGraph` custom resource (group
//! `flowmesh.dev`, version `v1alpha1`) over the model's spec, and reading
//! and watching one FlowGraph the way a worker in cluster mode does.
//!
//! The model crate stays free of Kubernetes; this crate is where kube and
//! k8s-openapi come in. The operator extends it.

pub mod resource;
pub mod source;

pub use resource::{FlowGraph, FlowGraphResourceSpec, FlowGraphStatus};
pub use source::{fetch, watch, Event, Fetched, ResourceRef};
