//! File source and sink: raw interleaved samples and SigMF.

use flowmesh_model::Params;

use crate::block::BuiltBlock;

pub fn file_source(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`file_source` is not implemented yet".into())
}

pub fn file_sink(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`file_sink` is not implemented yet".into())
}
