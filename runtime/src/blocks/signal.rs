//! Synthetic sources: signal (cos, sin, square, const) and Gaussian noise, both seekable by item offset.

use flowmesh_model::Params;

use crate::block::BuiltBlock;

pub fn signal_source(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`signal_source` is not implemented yet".into())
}

pub fn noise_source(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`noise_source` is not implemented yet".into())
}
