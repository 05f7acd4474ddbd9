//! DSP helpers shared by blocks: windows and filter design.

pub mod firdes;
pub mod window;
