//! FlowMesh domain model.
//!
//! Pure, Kubernetes-free building blocks shared by the CLI, the runtime, the
//! worker and the operator: the FlowGraph spec, stream item types, message
//! values and their encoding, the block catalog, validation and (later) the
//! partitioner. Nothing here does I/O beyond parsing strings.

pub mod catalog;
pub mod change;
pub mod firdes;
pub mod naming;
pub mod params;
pub mod partition;
pub mod pmt;
pub mod render;
pub mod types;
pub mod validate;

pub use pmt::{Pmt, TypedVec};
pub use types::{ItemType, StreamType};
pub mod spec;
pub mod status;
pub use catalog::{catalog, BlockDescriptor, Catalog};
pub use params::Params;
pub use spec::{BlockSpec, Connection, Endpoint, FlowGraphDocument, FlowGraphSpec};
