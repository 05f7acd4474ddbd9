//! Filters: FIR with decimation, low-pass design, frequency-translating FIR, rational resampler.

use flowmesh_model::Params;

use crate::block::BuiltBlock;

pub fn fir_filter(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`fir_filter` is not implemented yet".into())
}

pub fn low_pass_filter(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`low_pass_filter` is not implemented yet".into())
}

pub fn freq_xlating_fir(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`freq_xlating_fir` is not implemented yet".into())
}

pub fn rational_resampler(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`rational_resampler` is not implemented yet".into())
}
