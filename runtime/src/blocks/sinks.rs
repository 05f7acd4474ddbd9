//! Sinks: null, vector.

use flowmesh_model::catalog::TagPolicy;
use flowmesh_model::{ItemType, Params, Pmt, TypedVec};

use crate::block::{Block, BlockError, BuiltBlock, Result, Work};
use crate::io::WorkIo;
use crate::tag::Tag;

use super::{stream_type, Implementation};

/// The blocks of this module.
pub(super) const BLOCKS: &[Implementation] = &[
    Implementation {
        kind: "null_sink",
        build: |c| null_sink(c.params),
    },
    Implementation {
        kind: "vector_sink",
        build: |c| vector_sink(c.params),
    },
];

/// `null_sink`: consumes everything. Input `in`; parameter `expect`: the
/// exact item count the run must deliver (checked when the stream ends).
pub struct NullSink {
    expect: Option<u64>,
    seen: u64,
}

impl Block for NullSink {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.input_items(0);
        io.consume(0, n);
        self.seen += n as u64;
        Ok(Work::Ok)
    }
    fn stop(&mut self) -> Result<()> {
        match self.expect {
            Some(e) if e != self.seen => Err(BlockError::Failed(format!(
                "expected {e} items, received {}",
                self.seen
            ))),
            _ => Ok(()),
        }
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        (name == "items").then_some(Pmt::I64(self.seen as i64))
    }
}

pub fn null_sink(p: &Params) -> Result<BuiltBlock, String> {
    Ok(BuiltBlock::new(NullSink {
        expect: p.u64("expect"),
        seen: 0,
    })
    .tag_policy(TagPolicy::None))
}

/// `vector_sink`: keeps items and tags; `get("data")` returns the items as a
/// typed vector, `get("tags")` a list of `{offset, key, value}` (tags on the
/// end of the stream included, at offset = the item count).
pub struct VectorSink {
    item: ItemType,
    item_size: usize,
    limit: usize,
    data: Vec<u8>,
    tags: Vec<Tag>,
    /// The end of the stream was seen (its tags kept).
    ended: bool,
}

impl Block for VectorSink {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.input_items(0);
        if n == 0 {
            if io.input_done(0) && !self.ended {
                // Tags on the end of the stream (a final `gap`).
                self.ended = true;
                self.tags.extend(io.end_tags(0).iter().cloned());
            }
            return Ok(Work::Ok);
        }
        self.tags.extend(io.tags(0).iter().cloned());
        let bytes = &io.input_bytes(0)[..n * self.item_size];
        let keep = if self.limit > 0 {
            (self.limit * self.item_size).saturating_sub(self.data.len())
        } else {
            bytes.len()
        };
        self.data.extend_from_slice(&bytes[..keep.min(bytes.len())]);
        io.consume(0, n);
        Ok(Work::Ok)
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "data" => Some(Pmt::Vector(bytes_to_vec(&self.data, self.item))),
            "tags" => Some(Pmt::List(
                self.tags
                    .iter()
                    .map(|t| {
                        Pmt::map([
                            ("offset", Pmt::I64(t.offset as i64)),
                            ("key", Pmt::String(t.key.to_string())),
                            ("value", t.value.clone()),
                        ])
                    })
                    .collect(),
            )),
            "items" => Some(Pmt::I64((self.data.len() / self.item_size) as i64)),
            _ => None,
        }
    }
}

/// Reinterprets raw item bytes as a typed vector.
pub fn bytes_to_vec(b: &[u8], t: ItemType) -> TypedVec {
    fn c<T: bytemuck::Pod>(b: &[u8]) -> Vec<T> {
        bytemuck::pod_collect_to_vec(b)
    }
    match t {
        ItemType::F32 => TypedVec::F32(c(b)),
        ItemType::F64 => TypedVec::F64(c(b)),
        ItemType::Cf32 => TypedVec::Cf32(c(b)),
        ItemType::Cf64 => TypedVec::Cf64(c(b)),
        ItemType::I8 => TypedVec::I8(c(b)),
        ItemType::Cs8 => TypedVec::Cs8(c(b)),
        ItemType::I16 => TypedVec::I16(c(b)),
        ItemType::Cs16 => TypedVec::Cs16(c(b)),
        ItemType::I32 => TypedVec::I32(c(b)),
        ItemType::U8 => TypedVec::U8(c(b)),
        ItemType::U16 => TypedVec::U16(c(b)),
        ItemType::U32 => TypedVec::U32(c(b)),
        ItemType::U64 => TypedVec::U64(c(b)),
    }
}

pub fn vector_sink(p: &Params) -> Result<BuiltBlock, String> {
    let st = stream_type(p);
    Ok(BuiltBlock::new(VectorSink {
        item: st.item,
        item_size: st.item_size(),
        limit: p.u64("limit").unwrap_or(0) as usize,
        data: vec![],
        tags: vec![],
        ended: false,
    })
    .tag_policy(TagPolicy::None))
}
