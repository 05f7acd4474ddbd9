//! Spectrum: windowed FFT, averaged PSD, threshold carrier detector.

use flowmesh_model::Params;

use crate::block::BuiltBlock;

pub fn fft(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`fft` is not implemented yet".into())
}

pub fn psd(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`psd` is not implemented yet".into())
}

pub fn threshold_detector(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`threshold_detector` is not implemented yet".into())
}
