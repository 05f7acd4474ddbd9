//! Network edges between segments: wire format ([`frame`]), transports
//! (TCP, in-process) and the blocks at both ends.

pub mod frame;
pub mod transport;
