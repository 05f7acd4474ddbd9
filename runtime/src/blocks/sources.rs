//! Sources: null, counter, vector.

use flowmesh_model::{ItemType, Params, Pmt, TypedVec};

use crate::block::{Block, BuiltBlock, Result, Work};
use crate::io::WorkIo;

use super::{stream_type, Implementation};

/// The blocks of this module.
pub(super) const BLOCKS: &[Implementation] = &[
    Implementation {
        kind: "null_source",
        build: |c| null_source(c.params),
    },
    Implementation {
        kind: "counter_source",
        build: |c| counter_source(c.params, c.setup.start),
    },
    Implementation {
        kind: "vector_source",
        build: |c| vector_source(c.params, c.setup.start),
    },
];

/// `null_source`: zeros. Output `out` (`type` x `vlen`).
///
/// Only this block writes into its output buffer, so once it has zeroed
/// one whole lap of that ring every slot already holds zeros: it stops
/// rewriting them and just hands them on.
#[derive(Default)]
pub struct NullSource {
    /// Items zeroed so far, until they cover the ring once.
    zeroed: u64,
}

impl Block for NullSource {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.output_items(0);
        if self.zeroed < io.output_capacity(0) as u64 {
            io.output_bytes(0).fill(0);
            self.zeroed += n as u64;
        }
        io.produce(0, n);
        Ok(Work::Ok)
    }
}

pub fn null_source(_: &Params) -> Result<BuiltBlock, String> {
    Ok(BuiltBlock::new(NullSource::default()))
}

/// `counter_source`: u64 items equal to their own offset; `n` items (0: endless).
/// Its setup's `start` (a resumed segment, see the catalog's
/// `resumable_at_offset`) is the offset of its first item.
pub struct CounterSource {
    next: u64,
    n: u64,
}

impl Block for CounterSource {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let out = io.output::<u64>(0);
        let mut k = out.len();
        if self.n > 0 {
            k = k.min((self.n - self.next) as usize);
        }
        for (i, o) in out[..k].iter_mut().enumerate() {
            *o = self.next + i as u64;
        }
        self.next += k as u64;
        io.produce(0, k);
        if self.n > 0 && self.next >= self.n {
            return Ok(Work::Done);
        }
        Ok(Work::Ok)
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "n" => Some(Pmt::I64(self.n as i64)),
            _ => None,
        }
    }
}

pub fn counter_source(p: &Params, start: u64) -> Result<BuiltBlock, String> {
    let n = p.u64("n").unwrap_or(0);
    Ok(BuiltBlock::new(CounterSource {
        next: if n > 0 { start.min(n) } else { start },
        n: p.u64("n").unwrap_or(0),
    }))
}

/// `vector_source`: plays `data` (bytes of whole items), once or repeated.
/// Its setup's `start` is the index of its first item in the whole stream
/// (a resumed segment): it plays on from there.
pub struct VectorSource {
    data: Vec<u8>,
    item_size: usize,
    pos: usize,
    repeat: bool,
}

impl Block for VectorSource {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        if self.data.is_empty() {
            return Ok(Work::Done);
        }
        let out = io.output_bytes(0);
        let room = out.len() / self.item_size * self.item_size;
        let mut written = 0;
        while written < room {
            let k = (self.data.len() - self.pos).min(room - written);
            out[written..written + k].copy_from_slice(&self.data[self.pos..self.pos + k]);
            written += k;
            self.pos += k;
            if self.pos == self.data.len() {
                if !self.repeat {
                    break;
                }
                self.pos = 0;
            }
        }
        io.produce(0, written / self.item_size);
        if !self.repeat && self.pos == self.data.len() {
            return Ok(Work::Done);
        }
        Ok(Work::Ok)
    }
}

/// Converts a list parameter (`Items`) to the bytes of items of type `t`.
pub fn items_to_bytes(v: &Pmt, t: ItemType) -> Result<Vec<u8>, String> {
    let cs: Vec<num_complex::Complex64> = match v {
        Pmt::Vector(TypedVec::F64(x)) => x.iter().map(|r| (*r).into()).collect(),
        Pmt::Vector(TypedVec::Cf64(x)) => x.clone(),
        _ => return Err("data must be a list".into()),
    };
    if !t.is_complex() && cs.iter().any(|c| c.im != 0.0) {
        return Err(format!("data has complex values but the type {t} is real"));
    }
    fn conv<T: bytemuck::Pod + super::FromComplex>(cs: &[num_complex::Complex64]) -> Vec<u8> {
        let v: Vec<T> = cs.iter().map(|c| T::from_c64(*c)).collect();
        bytemuck::cast_slice(&v).to_vec()
    }
    Ok(crate::dispatch_item!(t, conv(&cs)))
}

pub fn vector_source(p: &Params, start: u64) -> Result<BuiltBlock, String> {
    let st = stream_type(p);
    let data = items_to_bytes(p.get("data").unwrap_or(&Pmt::Null), st.item)?;
    if data.len() % st.item_size() != 0 {
        return Err(format!(
            "data has {} values, not a multiple of vlen {}",
            data.len() / st.item.size(),
            st.vlen
        ));
    }
    let repeat = p.bool("repeat").unwrap_or(false);
    let items = (data.len() / st.item_size()) as u64;
    let first = match items {
        0 => 0,
        _ if repeat => start % items,
        _ => start.min(items),
    };
    Ok(BuiltBlock::new(VectorSource {
        pos: first as usize * st.item_size(),
        data,
        item_size: st.item_size(),
        repeat,
    }))
}
