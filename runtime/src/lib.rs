//! FlowMesh runtime: runs a FlowGraph on one machine.
//!
//! - [`buffer`]: lock-free double-mapped circular buffers (memfd, no filesystem);
//! - [`io`]: what a block sees of its ports during `work`;
//! - [`block`]: the block interface; [`blocks`]: the implementations;
//! - [`scheduler`]: worker threads, end of stream, runtime parameters;
//! - [`tag`], [`message`]: stream tags and message passing;
//! - [`graph`]: assembling a runnable graph from a spec or in code.

pub mod block;
pub mod blocks;
pub mod buffer;
pub mod dsp;
pub mod graph;
pub mod harness;
pub mod io;
pub mod message;
pub mod net;
pub mod scheduler;
pub mod signal;
pub mod tag;

pub use block::{Block, BlockError, BuiltBlock, Work};
pub use flowmesh_model::{ItemType, Pmt, StreamType};
pub use graph::Graph;
pub use io::{Item, WorkIo};
pub use scheduler::{run, start, Handle, Report, Running};
pub use tag::Tag;
