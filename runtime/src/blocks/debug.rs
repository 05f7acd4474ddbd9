//! Debug and message blocks: tag_debug, message_debug, rate_probe, jsonl_sink, message_strobe.

use flowmesh_model::Params;

use crate::block::BuiltBlock;

pub fn tag_debug(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`tag_debug` is not implemented yet".into())
}

pub fn message_debug(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`message_debug` is not implemented yet".into())
}

pub fn rate_probe(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`rate_probe` is not implemented yet".into())
}

pub fn jsonl_sink(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`jsonl_sink` is not implemented yet".into())
}

pub fn message_strobe(_p: &Params) -> Result<BuiltBlock, String> {
    Err("`message_strobe` is not implemented yet".into())
}
