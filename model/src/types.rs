//! Stream item types: the scalar types a stream port can carry and their sizes.
//!
//! A stream item is a scalar of one [`ItemType`] or a vector of `vlen` of them
//! (an FFT frame is a `f32 x 1024` item). [`StreamType`] is that pair.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Scalar item types. Complex types are interleaved (re, im) pairs of the
/// underlying scalar, as in GNU Radio (`cf32` is `gr_complex`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ItemType {
    F32,
    F64,
    Cf32,
    Cf64,
    I8,
    Cs8,
    I16,
    Cs16,
    I32,
    U8,
    U16,
    U32,
    U64,
}

impl ItemType {
    /// Every item type, in catalog order.
    pub const ALL: [ItemType; 13] = [
        ItemType::F32,
        ItemType::F64,
        ItemType::Cf32,
        ItemType::Cf64,
        ItemType::I8,
        ItemType::Cs8,
        ItemType::I16,
        ItemType::Cs16,
        ItemType::I32,
        ItemType::U8,
        ItemType::U16,
        ItemType::U32,
        ItemType::U64,
    ];

    /// Size of one scalar item in bytes.
    pub const fn size(self) -> usize {
        match self {
            ItemType::I8 | ItemType::U8 => 1,
            ItemType::I16 | ItemType::U16 | ItemType::Cs8 => 2,
            ItemType::F32 | ItemType::I32 | ItemType::U32 | ItemType::Cs16 => 4,
            ItemType::F64 | ItemType::Cf32 | ItemType::U64 => 8,
            ItemType::Cf64 => 16,
        }
    }

    /// Whether the type is an interleaved complex pair.
    pub const fn is_complex(self) -> bool {
        matches!(
            self,
            ItemType::Cf32 | ItemType::Cf64 | ItemType::Cs8 | ItemType::Cs16
        )
    }

    /// The name used in files (`cf32`).
    pub const fn name(self) -> &'static str {
        match self {
            ItemType::F32 => "f32",
            ItemType::F64 => "f64",
            ItemType::Cf32 => "cf32",
            ItemType::Cf64 => "cf64",
            ItemType::I8 => "i8",
            ItemType::Cs8 => "cs8",
            ItemType::I16 => "i16",
            ItemType::Cs16 => "cs16",
            ItemType::I32 => "i32",
            ItemType::U8 => "u8",
            ItemType::U16 => "u16",
            ItemType::U32 => "u32",
            ItemType::U64 => "u64",
        }
    }

    /// The real scalar type underlying a complex type (itself for real types).
    pub const fn real(self) -> ItemType {
        match self {
            ItemType::Cf32 => ItemType::F32,
            ItemType::Cf64 => ItemType::F64,
            ItemType::Cs8 => ItemType::I8,
            ItemType::Cs16 => ItemType::I16,
            t => t,
        }
    }
}

impl fmt::Display for ItemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an unknown item type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown item type `{0}`; expected one of f32, f64, cf32, cf64, i8, cs8, i16, cs16, i32, u8, u16, u32, u64")]
pub struct UnknownItemType(pub String);

impl FromStr for ItemType {
    type Err = UnknownItemType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ItemType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownItemType(s.to_string()))
    }
}

/// The type of a stream port: a scalar type and a vector length (1 for scalars).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct StreamType {
    pub item: ItemType,
    pub vlen: usize,
}

impl StreamType {
    pub const fn scalar(item: ItemType) -> Self {
        StreamType { item, vlen: 1 }
    }
    pub const fn vector(item: ItemType, vlen: usize) -> Self {
        StreamType { item, vlen }
    }
    /// Bytes per stream item (scalar size times vector length).
    pub const fn item_size(&self) -> usize {
        self.item.size() * self.vlen
    }
}

impl fmt::Display for StreamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.vlen == 1 {
            write!(f, "{}", self.item)
        } else {
            write!(f, "{}x{}", self.item, self.vlen)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in ItemType::ALL {
            assert_eq!(t.name().parse::<ItemType>().unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.name()));
        }
        assert!("c32".parse::<ItemType>().is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(ItemType::Cf32.size(), 8);
        assert_eq!(ItemType::Cs8.size(), 2);
        assert_eq!(StreamType::vector(ItemType::F32, 1024).item_size(), 4096);
        assert_eq!(
            StreamType::vector(ItemType::F32, 1024).to_string(),
            "f32x1024"
        );
    }
}
