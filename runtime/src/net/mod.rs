//! Network edges between segments: wire format ([`frame`]), transports
//! (TCP, in-process) and the blocks at both ends.

pub mod env;
pub mod frame;
pub mod fuzzing;
pub mod msg;
pub mod scale;
pub mod sink;
pub mod source;
pub mod stats;
pub mod transport;
