//! DSP helpers shared by blocks: windows and filter design.

pub mod window;
