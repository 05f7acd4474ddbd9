//! The block interface every implementation provides.
//!
//! A block is built from its catalog parameters ([`crate::blocks::build`]) and
//! then driven by the scheduler: `work` is called whenever its inputs or
//! outputs may have changed, `message` for each message that arrives, and
//! `set`/`get` for runtime parameter changes ("callbacks").
//!
//! Blocks must produce the same output whatever the sizes of the chunks they
//! are given: keep history and phase in the block, never assume alignment.

use std::time::Instant;

use flowmesh_model::catalog::{ResolvedPort, TagPolicy};
use flowmesh_model::Pmt;

use crate::io::{Poster, WorkIo};

/// What `work` tells the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Continue; progress is judged from what was consumed and produced.
    Ok,
    /// The block has finished (a finite source at its end, `head` at `n`).
    Done,
    /// Nothing to do before this instant (throttles, timers): not called
    /// again until then.
    SleepUntil(Instant),
    /// Waiting on something outside the graph (a socket): call again when a
    /// port changes or the waker fires, and at this instant at the latest.
    /// The block is not considered finished while it returns this.
    Deadline(Instant),
}

/// An error raised by a block.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BlockError {
    #[error("{0}")]
    Failed(String),
    #[error("parameter `{0}` cannot be changed while running")]
    NotSettable(String),
    #[error("parameter `{name}`: {message}")]
    BadValue { name: String, message: String },
    #[error("I/O error: {0}")]
    Io(String),
}

impl From<std::io::Error> for BlockError {
    fn from(e: std::io::Error) -> Self {
        BlockError::Io(e.to_string())
    }
}

/// Result type of block calls.
pub type Result<T, E = BlockError> = std::result::Result<T, E>;

/// A block implementation.
pub trait Block: Send {
    /// Called once before the first `work`, on the thread that will run it.
    fn start(&mut self) -> Result<()> {
        Ok(())
    }
    /// Processes what it can of the available input and output space.
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work>;
    /// Handles a message arriving on message input `port` (index among the
    /// block's message inputs; the `cmd` port is handled by the scheduler).
    fn message(&mut self, port: usize, msg: Pmt, out: &mut Poster<'_>) -> Result<()> {
        let _ = (port, msg, out);
        Ok(())
    }
    /// Changes a settable parameter (value already type- and range-checked).
    fn set(&mut self, name: &str, value: &Pmt) -> Result<()> {
        let _ = value;
        Err(BlockError::NotSettable(name.to_string()))
    }
    /// Reads a parameter's current value.
    fn get(&self, name: &str) -> Option<Pmt> {
        let _ = name;
        None
    }
    /// Called once after the block has finished (flush files, print summaries).
    fn stop(&mut self) -> Result<()> {
        Ok(())
    }
    /// Called once, instead of `stop`, when the block finished during a
    /// planned stop for a restart ([`crate::Handle::suspend`]): the stream
    /// did not end. Keep what a restarted run resumes from (sync files and
    /// state), and tell no peer that the stream ended. By default `stop`.
    fn suspend(&mut self) -> Result<()> {
        self.stop()
    }
}

/// A block ready to be placed in a graph, with the ports it implements.
pub struct BuiltBlock {
    pub block: Box<dyn Block>,
    /// Stream and message inputs, in port order.
    pub inputs: Vec<ResolvedPort>,
    /// Stream and message outputs, in port order.
    pub outputs: Vec<ResolvedPort>,
    pub tag_policy: TagPolicy,
    /// Output items per input item, `(interp, decim)`, for tag offsets.
    pub rate: (u64, u64),
    /// True for blocks that run in real time (live sources, throttles): on a
    /// stop request they end at once instead of draining.
    pub live: bool,
    /// Minimum size in bytes of the buffers feeding this block's inputs
    /// (network sinks keep their retention there).
    pub min_input_bytes: usize,
    /// Minimum size in bytes of this block's output buffers.
    pub min_output_bytes: usize,
    /// Parameter changes at item offsets, in offset order (from the block's
    /// [`BlockSetup`](crate::blocks::BlockSetup)); the scheduler applies them.
    pub scheduled: Vec<crate::blocks::ScheduledSet>,
}

impl BuiltBlock {
    /// Starts a description of `block`'s ports (add them in port order).
    pub fn new(block: impl Block + 'static) -> Self {
        BuiltBlock {
            block: Box::new(block),
            inputs: vec![],
            outputs: vec![],
            tag_policy: TagPolicy::AllToAll,
            rate: (1, 1),
            live: false,
            min_input_bytes: 0,
            min_output_bytes: 0,
            scheduled: vec![],
        }
    }
    fn port(name: &str, kind: ResolvedKind, optional: bool) -> ResolvedPort {
        ResolvedPort {
            name: name.to_string(),
            kind,
            optional,
        }
    }
    /// A stream input.
    pub fn input(mut self, name: &str, t: StreamType) -> Self {
        self.inputs
            .push(Self::port(name, ResolvedKind::Stream(t), false));
        self
    }
    /// A stream output.
    pub fn output(mut self, name: &str, t: StreamType) -> Self {
        self.outputs
            .push(Self::port(name, ResolvedKind::Stream(t), false));
        self
    }
    /// A message input (optional to connect).
    pub fn message_input(mut self, name: &str) -> Self {
        self.inputs
            .push(Self::port(name, ResolvedKind::Message, true));
        self
    }
    /// A message output (optional to connect).
    pub fn message_output(mut self, name: &str) -> Self {
        self.outputs
            .push(Self::port(name, ResolvedKind::Message, true));
        self
    }
    /// Declares settable parameters: adds the `cmd` message input.
    pub fn settable(self) -> Self {
        self.message_input("cmd")
    }
    pub fn tag_policy(mut self, p: TagPolicy) -> Self {
        self.tag_policy = p;
        self
    }
    /// Output items per input item.
    pub fn rate(mut self, interp: u64, decim: u64) -> Self {
        self.rate = (interp, decim);
        self
    }
    pub fn live(mut self) -> Self {
        self.live = true;
        self
    }
    /// Asks for input buffers of at least `bytes`.
    pub fn min_input_bytes(mut self, bytes: usize) -> Self {
        self.min_input_bytes = bytes;
        self
    }
    /// Asks for output buffers of at least `bytes`.
    pub fn min_output_bytes(mut self, bytes: usize) -> Self {
        self.min_output_bytes = bytes;
        self
    }
}

use flowmesh_model::catalog::ResolvedKind;
use flowmesh_model::StreamType;
