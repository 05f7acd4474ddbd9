//! Stream tags: a key and a value attached to an absolute item offset.
//!
//! Reserved keys (see [`keys`]) have the meaning GNU Radio gives them.
//! When tags cross a block with rate `interp/decim`, an offset `o` becomes
//! `floor(o·interp/decim + 0.5)` ([`map_offset`]), as in GNU Radio.

use std::sync::Arc;

use flowmesh_model::Pmt;

/// A stream tag.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    /// Absolute item offset on the stream that carries the tag.
    pub offset: u64,
    pub key: Arc<str>,
    pub value: Pmt,
}

impl Tag {
    pub fn new(offset: u64, key: &str, value: Pmt) -> Self {
        Tag {
            offset,
            key: key.into(),
            value,
        }
    }
}

/// Reserved tag keys.
pub mod keys {
    /// Timestamp of the tagged sample: `[secs (i64), frac (f64)]`.
    pub const RX_TIME: &str = "rx_time";
    /// Sample rate from here on (f64, Hz).
    pub const RX_RATE: &str = "rx_rate";
    /// Centre frequency from here on (f64, Hz).
    pub const RX_FREQ: &str = "rx_freq";
    /// Items lost before the tagged one: `{first, count, cause}`.
    pub const GAP: &str = "gap";
    /// Start of burst.
    pub const SOB: &str = "sob";
    /// End of burst.
    pub const EOB: &str = "eob";
    /// Length of the packet starting at the tagged item.
    pub const PACKET_LEN: &str = "packet_len";
    /// A runtime parameter change takes effect at the tagged item: `{name: value}`.
    pub const PARAM: &str = "param";
}

/// Maps a tag offset through a block of rate `interp/decim`:
/// `floor(o·interp/decim + 0.5)`, computed exactly in integers.
#[inline]
pub fn map_offset(o: u64, interp: u64, decim: u64) -> u64 {
    if interp == decim {
        return o;
    }
    ((2 * o as u128 * interp as u128 + decim as u128) / (2 * decim as u128)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_like_gnuradio() {
        assert_eq!(map_offset(10, 1, 1), 10);
        assert_eq!(map_offset(10, 1, 4), 3); // 2.5 + 0.5 = 3
        assert_eq!(map_offset(9, 1, 4), 2); // 2.25 + .5
        assert_eq!(map_offset(3, 5, 2), 8); // 7.5 + .5 = 8
        assert_eq!(map_offset(u64::MAX / 2, 2, 2), u64::MAX / 2);
    }
}
