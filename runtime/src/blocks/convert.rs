//! Type conversions: integer to float with full-scale scaling, complex parts, decibels.

use flowmesh_model::Params;

use crate::block::BuiltBlock;

pub fn convert(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`convert` is not implemented yet".into())
}

pub fn complex_to_real(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`complex_to_real` is not implemented yet".into())
}

pub fn complex_to_imag(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`complex_to_imag` is not implemented yet".into())
}

pub fn complex_to_mag(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`complex_to_mag` is not implemented yet".into())
}

pub fn complex_to_mag_squared(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`complex_to_mag_squared` is not implemented yet".into())
}

pub fn complex_to_arg(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`complex_to_arg` is not implemented yet".into())
}

pub fn to_db(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`to_db` is not implemented yet".into())
}
