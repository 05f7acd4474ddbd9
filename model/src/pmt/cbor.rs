//! Deterministic CBOR encoding of [`Pmt`] values.
//!
//! The format is RFC 8949 CBOR restricted to the *core deterministic encoding*
//! (§4.2.1) plus RFC 8746 little-endian typed arrays and tag 43000 for complex
//! numbers. Every [`Pmt`] has exactly one encoding, and [`decode`] accepts only
//! that encoding: `decode(b) == Ok(v)` implies `encode(&v) == b`. The full wire
//! format, the limits and the mapping to GNU Radio PMTs are documented in
//! `docs/messages.md`.
//!
//! The version of this format is [`FORMAT_VERSION`]. Encoded values carry no
//! version themselves: the stream protocol negotiates it in its handshake, and
//! standalone logs prefix the single byte `FORMAT_VERSION`.

use std::collections::BTreeMap;

use num_complex::{Complex, Complex64};

use super::{Pmt, TypedVec};

/// Version of the encoding defined by this module.
pub const FORMAT_VERSION: u8 = 1;

/// Tag wrapping a complex number (`[re, im]`) or a complex typed array.
pub const TAG_COMPLEX: u64 = 43000;
/// RFC 8746 typed-array tags (little-endian variants).
pub const TAG_U8: u64 = 64;
pub const TAG_U16_LE: u64 = 69;
pub const TAG_U32_LE: u64 = 70;
pub const TAG_U64_LE: u64 = 71;
pub const TAG_I8: u64 = 72;
pub const TAG_I16_LE: u64 = 77;
pub const TAG_I32_LE: u64 = 78;
pub const TAG_F32_LE: u64 = 85;
pub const TAG_F64_LE: u64 = 86;

/// Resource limits enforced by [`decode_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum nesting of lists and maps: a scalar has depth 0, `[1]` depth 1,
    /// `[[1]]` depth 2. The decoder recurses once per level, so keep it modest.
    pub max_depth: usize,
    /// Maximum size of the whole input, in bytes.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why an input was rejected. Every offset is a byte offset into the input,
/// normally that of the first byte of the offending data item.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("truncated input: the data item starting at byte {offset} extends past the end of the input")]
    Truncated { offset: usize },
    #[error("{count} trailing byte(s) after the data item, starting at byte {offset}")]
    TrailingBytes { offset: usize, count: usize },
    #[error("non-canonical encoding at byte {offset}: {what}")]
    NotCanonical { offset: usize, what: &'static str },
    #[error("nesting at byte {offset} exceeds the maximum depth of {max_depth}")]
    DepthExceeded { offset: usize, max_depth: usize },
    #[error("input is {len} bytes, more than the limit of {max_bytes} bytes")]
    TooLarge { len: usize, max_bytes: usize },
    #[error("unsupported CBOR tag {tag} at byte {offset}")]
    UnsupportedTag { offset: usize, tag: u64 },
    #[error("invalid UTF-8 in text string at byte {offset}")]
    InvalidUtf8 { offset: usize },
    #[error("unsupported CBOR data item at byte {offset}: {what}")]
    UnsupportedType { offset: usize, what: &'static str },
    #[error("duplicate map key {key:?} at byte {offset}")]
    DuplicateKey { offset: usize, key: String },
    #[error("map key at byte {offset} is not a text string")]
    NonStringKey { offset: usize },
    #[error("integer at byte {offset} does not fit in a signed 64-bit integer")]
    IntegerOutOfRange { offset: usize },
    #[error("malformed CBOR at byte {offset}: {what}")]
    Malformed { offset: usize, what: &'static str },
    #[error("invalid content for tag {tag} at byte {offset}: {what}")]
    InvalidTagContent {
        offset: usize,
        tag: u64,
        what: &'static str,
    },
    #[error("typed array (tag {tag}) at byte {offset}: byte length {len} is not a multiple of the element size {elem_size}")]
    TypedArrayLength {
        offset: usize,
        tag: u64,
        len: usize,
        elem_size: usize,
    },
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// Encodes `v` into a new buffer.
pub fn encode(v: &Pmt) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(v, &mut out);
    out
}

/// Appends the encoding of `v` to `out`.
pub fn encode_into(v: &Pmt, out: &mut Vec<u8>) {
    match v {
        Pmt::Null => out.push(0xf6),
        Pmt::Bool(false) => out.push(0xf4),
        Pmt::Bool(true) => out.push(0xf5),
        Pmt::I64(i) => encode_int(*i, out),
        Pmt::F64(f) => encode_float(*f, out),
        Pmt::Complex(c) => {
            head(out, 6, TAG_COMPLEX);
            head(out, 4, 2);
            encode_float(c.re, out);
            encode_float(c.im, out);
        }
        Pmt::String(s) => {
            head(out, 3, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Pmt::Bytes(b) => {
            head(out, 2, b.len() as u64);
            out.extend_from_slice(b);
        }
        Pmt::Vector(tv) => encode_vector(tv, out),
        Pmt::List(items) => {
            head(out, 4, items.len() as u64);
            for item in items {
                encode_into(item, out);
            }
        }
        Pmt::Map(map) => {
            head(out, 5, map.len() as u64);
            // Canonical order is the bytewise order of the encoded keys. For
            // text strings that is: shorter first, then bytewise.
            let mut entries: Vec<(&String, &Pmt)> = map.iter().collect();
            entries.sort_by(|a, b| (a.0.len(), a.0.as_bytes()).cmp(&(b.0.len(), b.0.as_bytes())));
            for (k, v) in entries {
                head(out, 3, k.len() as u64);
                out.extend_from_slice(k.as_bytes());
                encode_into(v, out);
            }
        }
    }
}

/// Appends the head of an array of `len` items (for encoders that write a
/// list without building a [`Pmt::List`]).
pub fn encode_array_head(len: usize, out: &mut Vec<u8>) {
    head(out, 4, len as u64);
}

/// Appends `s` as a text string, exactly as [`Pmt::String`] encodes.
pub fn encode_text(s: &str, out: &mut Vec<u8>) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Appends `i` as an integer, exactly as [`Pmt::I64`] encodes.
pub fn encode_i64(i: i64, out: &mut Vec<u8>) {
    encode_int(i, out);
}

/// Writes a head (major type + argument) with the shortest argument.
fn head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if arg <= 0xff {
        out.extend_from_slice(&[m | 24, arg as u8]);
    } else if arg <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

fn encode_int(i: i64, out: &mut Vec<u8>) {
    if i >= 0 {
        head(out, 0, i as u64);
    } else {
        // -1 - n == !n in two's complement.
        head(out, 1, !i as u64);
    }
}

/// Writes the shortest float (half, single, double) that represents `f`
/// exactly; every NaN becomes the half-precision quiet NaN `0xf97e00`.
fn encode_float(f: f64, out: &mut Vec<u8>) {
    if f.is_nan() {
        out.extend_from_slice(&[0xf9, 0x7e, 0x00]);
    } else if let Some(h) = f64_to_f16_exact(f) {
        out.push(0xf9);
        out.extend_from_slice(&h.to_be_bytes());
    } else if f32_exact(f) {
        out.push(0xfa);
        out.extend_from_slice(&(f as f32).to_bits().to_be_bytes());
    } else {
        out.push(0xfb);
        out.extend_from_slice(&f.to_bits().to_be_bytes());
    }
}

/// True when the non-NaN `f` is exactly representable as an `f32`.
fn f32_exact(f: f64) -> bool {
    f64::from(f as f32).to_bits() == f.to_bits()
}

/// The IEEE 754 binary16 bits of `f` if `f` (not NaN) is exactly representable
/// as a half-precision float.
fn f64_to_f16_exact(f: f64) -> Option<u16> {
    let bits = f.to_bits();
    let sign = ((bits >> 48) & 0x8000) as u16;
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let man = bits & ((1u64 << 52) - 1);
    if exp == 0x7ff {
        // Infinity (NaN is handled by the caller).
        return (man == 0).then_some(sign | 0x7c00);
    }
    if exp == 0 {
        // Zero; f64 subnormals are far below the f16 range.
        return (man == 0).then_some(sign);
    }
    let e = exp - 1023;
    if (-14..=15).contains(&e) {
        // f16 normal: 10 mantissa bits, the low 42 must be zero.
        (man & ((1u64 << 42) - 1) == 0)
            .then(|| sign | (((e + 15) as u16) << 10) | (man >> 42) as u16)
    } else if (-24..=-15).contains(&e) {
        // f16 subnormal: value = k * 2^-24 with k = full * 2^(e - 28).
        let full = man | (1u64 << 52);
        let shift = (28 - e) as u32; // 43..=52
        (full & ((1u64 << shift) - 1) == 0).then(|| sign | (full >> shift) as u16)
    } else {
        None
    }
}

/// Exact value of an IEEE 754 binary16 bit pattern.
fn f16_to_f64(h: u16) -> f64 {
    let exp = i32::from((h >> 10) & 0x1f);
    let man = f64::from(h & 0x3ff);
    let pow2 = |k: i32| f64::from_bits(((k + 1023) as u64) << 52);
    let mag = match exp {
        0 => man * pow2(-24),
        31 if man == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1024.0 + man) * pow2(exp - 25),
    };
    if h & 0x8000 != 0 {
        -mag
    } else {
        mag
    }
}

fn typed_array<T: Copy, const N: usize>(
    out: &mut Vec<u8>,
    tag: u64,
    items: &[T],
    to_le: impl Fn(T) -> [u8; N],
) {
    head(out, 6, tag);
    head(out, 2, (items.len() * N) as u64);
    out.reserve(items.len() * N);
    for &x in items {
        out.extend_from_slice(&to_le(x));
    }
}

fn complex_array<T: Copy, const N: usize>(
    out: &mut Vec<u8>,
    tag: u64,
    items: &[Complex<T>],
    to_le: impl Fn(T) -> [u8; N],
) {
    head(out, 6, TAG_COMPLEX);
    head(out, 6, tag);
    head(out, 2, (items.len() * 2 * N) as u64);
    out.reserve(items.len() * 2 * N);
    for c in items {
        out.extend_from_slice(&to_le(c.re));
        out.extend_from_slice(&to_le(c.im));
    }
}

fn encode_vector(tv: &TypedVec, out: &mut Vec<u8>) {
    match tv {
        TypedVec::U8(v) => {
            head(out, 6, TAG_U8);
            head(out, 2, v.len() as u64);
            out.extend_from_slice(v);
        }
        TypedVec::U16(v) => typed_array(out, TAG_U16_LE, v, u16::to_le_bytes),
        TypedVec::U32(v) => typed_array(out, TAG_U32_LE, v, u32::to_le_bytes),
        TypedVec::U64(v) => typed_array(out, TAG_U64_LE, v, u64::to_le_bytes),
        TypedVec::I8(v) => typed_array(out, TAG_I8, v, i8::to_le_bytes),
        TypedVec::I16(v) => typed_array(out, TAG_I16_LE, v, i16::to_le_bytes),
        TypedVec::I32(v) => typed_array(out, TAG_I32_LE, v, i32::to_le_bytes),
        TypedVec::F32(v) => typed_array(out, TAG_F32_LE, v, f32::to_le_bytes),
        TypedVec::F64(v) => typed_array(out, TAG_F64_LE, v, f64::to_le_bytes),
        TypedVec::Cf32(v) => complex_array(out, TAG_F32_LE, v, f32::to_le_bytes),
        TypedVec::Cf64(v) => complex_array(out, TAG_F64_LE, v, f64::to_le_bytes),
        TypedVec::Cs8(v) => complex_array(out, TAG_I8, v, i8::to_le_bytes),
        TypedVec::Cs16(v) => complex_array(out, TAG_I16_LE, v, i16::to_le_bytes),
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// Decodes exactly one data item with the default [`Limits`].
pub fn decode(bytes: &[u8]) -> Result<Pmt, DecodeError> {
    decode_with(bytes, &Limits::default())
}

/// Decodes exactly one data item; trailing bytes are an error.
pub fn decode_with(bytes: &[u8], limits: &Limits) -> Result<Pmt, DecodeError> {
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max_bytes: limits.max_bytes,
        });
    }
    let mut d = Decoder {
        buf: bytes,
        pos: 0,
        max_depth: limits.max_depth,
    };
    let v = d.value(0)?;
    if d.pos < bytes.len() {
        return Err(DecodeError::TrailingBytes {
            offset: d.pos,
            count: bytes.len() - d.pos,
        });
    }
    Ok(v)
}

/// Reads a CBOR sequence item by item without building a [`Pmt`] tree for
/// the containers around it, with the same canonical-form checks as
/// [`decode_with`]. Used for hot paths whose layout is fixed (stream tags on
/// the wire are `[[offset, key, value], ...]`), so that only the values
/// become `Pmt`s and text can be compared without allocating.
pub struct Reader<'a> {
    d: Decoder<'a>,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`; errors if they exceed `limits.max_bytes`.
    pub fn new(bytes: &'a [u8], limits: &Limits) -> Result<Self, DecodeError> {
        if bytes.len() > limits.max_bytes {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max_bytes: limits.max_bytes,
            });
        }
        Ok(Reader {
            d: Decoder {
                buf: bytes,
                pos: 0,
                max_depth: limits.max_depth,
            },
        })
    }

    /// The head of a definite-length array; returns its element count.
    /// `None` when the next item is something else (nothing is consumed).
    pub fn array(&mut self) -> Result<Option<usize>, DecodeError> {
        let start = self.d.pos;
        let h = self.d.head()?;
        if h.major != 4 {
            self.d.pos = start;
            return Ok(None);
        }
        self.d.length(h, 1).map(Some)
    }

    /// A non-negative integer that fits an i64 (as [`decode`] accepts it);
    /// `None` for any other item (nothing is consumed).
    pub fn uint(&mut self) -> Result<Option<u64>, DecodeError> {
        let start = self.d.pos;
        let h = self.d.head()?;
        match h.major {
            0 if h.arg <= i64::MAX as u64 => Ok(Some(h.arg)),
            0 => Err(DecodeError::IntegerOutOfRange { offset: h.offset }),
            _ => {
                self.d.pos = start;
                Ok(None)
            }
        }
    }

    /// A text string, borrowed from the input; `None` for any other item.
    pub fn text(&mut self) -> Result<Option<&'a str>, DecodeError> {
        let start = self.d.pos;
        let h = self.d.head()?;
        if h.major != 3 {
            self.d.pos = start;
            return Ok(None);
        }
        let n = self.d.length(h, 1)?;
        let at = self.d.pos;
        let raw = self.d.take(n, h.offset)?;
        std::str::from_utf8(raw)
            .map(Some)
            .map_err(|e| DecodeError::InvalidUtf8 {
                offset: at + e.valid_up_to(),
            })
    }

    /// Any one data item, as a [`Pmt`], counted as nested `depth` levels deep.
    pub fn value(&mut self, depth: usize) -> Result<Pmt, DecodeError> {
        self.d.value(depth)
    }

    /// Ends the reading: trailing bytes are an error.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.d.pos < self.d.buf.len() {
            return Err(DecodeError::TrailingBytes {
                offset: self.d.pos,
                count: self.d.buf.len() - self.d.pos,
            });
        }
        Ok(())
    }
}

/// A parsed initial byte and argument.
#[derive(Clone, Copy)]
struct Head {
    offset: usize,
    major: u8,
    /// Additional information (low 5 bits of the initial byte).
    info: u8,
    /// The argument; 0 for indefinite lengths (`info == 31`).
    arg: u64,
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    max_depth: usize,
}

impl<'a> Decoder<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes `n` bytes belonging to the item that starts at `item`.
    fn take(&mut self, n: usize, item: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated { offset: item });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn head(&mut self) -> Result<Head, DecodeError> {
        let offset = self.pos;
        let ib = self.take(1, offset)?[0];
        let (major, info) = (ib >> 5, ib & 0x1f);
        let arg = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let n = 1usize << (info - 24);
                let raw = self.take(n, offset)?;
                let arg = raw.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
                // Major type 7 uses these widths for floats; their shortest
                // form is checked separately.
                if major != 7 {
                    let min = match info {
                        24 => 24,
                        25 => 0x100,
                        26 => 0x1_0000,
                        _ => 0x1_0000_0000,
                    };
                    if arg < min {
                        return Err(DecodeError::NotCanonical {
                            offset,
                            what: "integer or length argument not in shortest form",
                        });
                    }
                }
                arg
            }
            28..=30 => {
                return Err(DecodeError::Malformed {
                    offset,
                    what: "reserved additional information value (28-30)",
                })
            }
            _ => match major {
                2..=5 => {
                    return Err(DecodeError::NotCanonical {
                        offset,
                        what: "indefinite-length item",
                    })
                }
                7 => {
                    return Err(DecodeError::Malformed {
                        offset,
                        what: "unexpected \"break\" (0xff)",
                    })
                }
                _ => {
                    return Err(DecodeError::Malformed {
                        offset,
                        what: "indefinite length is not allowed for this major type",
                    })
                }
            },
        };
        Ok(Head {
            offset,
            major,
            info,
            arg,
        })
    }

    /// The length of a definite string/array/map, bounded by `per_item`
    /// bytes per element of remaining input (so never trusted blindly).
    fn length(&self, h: Head, per_item: usize) -> Result<usize, DecodeError> {
        match usize::try_from(h.arg) {
            Ok(n) if n <= self.remaining() / per_item => Ok(n),
            _ => Err(DecodeError::Truncated { offset: h.offset }),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Pmt, DecodeError> {
        let h = self.head()?;
        match h.major {
            0 => match i64::try_from(h.arg) {
                Ok(i) => Ok(Pmt::I64(i)),
                Err(_) => Err(DecodeError::IntegerOutOfRange { offset: h.offset }),
            },
            1 => match i64::try_from(h.arg) {
                Ok(n) => Ok(Pmt::I64(!n)),
                Err(_) => Err(DecodeError::IntegerOutOfRange { offset: h.offset }),
            },
            2 => {
                let n = self.length(h, 1)?;
                Ok(Pmt::Bytes(self.take(n, h.offset)?.to_vec()))
            }
            3 => Ok(Pmt::String(self.text(h)?)),
            4 => {
                self.enter(h, depth)?;
                let n = self.length(h, 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Ok(Pmt::List(items))
            }
            5 => {
                self.enter(h, depth)?;
                let n = self.length(h, 2)?;
                let mut map = BTreeMap::new();
                let mut prev: Option<&'a [u8]> = None;
                for _ in 0..n {
                    let key_start = self.pos;
                    let kh = self.head()?;
                    if kh.major != 3 {
                        return Err(DecodeError::NonStringKey { offset: key_start });
                    }
                    let key = self.text(kh)?;
                    let encoded = &self.buf[key_start..self.pos];
                    if let Some(p) = prev {
                        match p.cmp(encoded) {
                            std::cmp::Ordering::Less => {}
                            std::cmp::Ordering::Equal => {
                                return Err(DecodeError::DuplicateKey {
                                    offset: key_start,
                                    key,
                                })
                            }
                            std::cmp::Ordering::Greater => {
                                return Err(DecodeError::NotCanonical {
                                    offset: key_start,
                                    what:
                                        "map keys not in canonical (length-first, bytewise) order",
                                })
                            }
                        }
                    }
                    prev = Some(encoded);
                    let v = self.value(depth + 1)?;
                    map.insert(key, v);
                }
                Ok(Pmt::Map(map))
            }
            6 => self.tagged(h),
            _ => self.simple(h),
        }
    }

    fn enter(&self, h: Head, depth: usize) -> Result<(), DecodeError> {
        if depth >= self.max_depth {
            Err(DecodeError::DepthExceeded {
                offset: h.offset,
                max_depth: self.max_depth,
            })
        } else {
            Ok(())
        }
    }

    fn text(&mut self, h: Head) -> Result<String, DecodeError> {
        let n = self.length(h, 1)?;
        let start = self.pos;
        let raw = self.take(n, h.offset)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(DecodeError::InvalidUtf8 {
                offset: start + e.valid_up_to(),
            }),
        }
    }

    /// Major type 7: floats and simple values.
    fn simple(&mut self, h: Head) -> Result<Pmt, DecodeError> {
        let offset = h.offset;
        let unsupported = |what| Err(DecodeError::UnsupportedType { offset, what });
        match h.info {
            20 => Ok(Pmt::Bool(false)),
            21 => Ok(Pmt::Bool(true)),
            22 => Ok(Pmt::Null),
            23 => unsupported("simple value \"undefined\""),
            0..=19 => unsupported("unassigned simple value"),
            24 if h.arg < 32 => Err(DecodeError::Malformed {
                offset,
                what: "simple value below 32 in two-byte form",
            }),
            24 => unsupported("unassigned simple value"),
            _ => Ok(Pmt::F64(self.float_value(h)?)),
        }
    }

    /// A float (major type 7, info 25..=27) in canonical form.
    fn float_value(&self, h: Head) -> Result<f64, DecodeError> {
        let offset = h.offset;
        let nan_err = Err(DecodeError::NotCanonical {
            offset,
            what: "NaN must be encoded as the half-precision float 0xf97e00",
        });
        let long_err = Err(DecodeError::NotCanonical {
            offset,
            what: "float not in its shortest exact form",
        });
        match h.info {
            25 => {
                let bits = h.arg as u16;
                let f = f16_to_f64(bits);
                if f.is_nan() {
                    if bits == 0x7e00 {
                        Ok(f64::NAN)
                    } else {
                        nan_err
                    }
                } else {
                    Ok(f)
                }
            }
            26 => {
                let f = f64::from(f32::from_bits(h.arg as u32));
                if f.is_nan() {
                    nan_err
                } else if f64_to_f16_exact(f).is_some() {
                    long_err
                } else {
                    Ok(f)
                }
            }
            27 => {
                let f = f64::from_bits(h.arg);
                if f.is_nan() {
                    nan_err
                } else if f32_exact(f) {
                    long_err
                } else {
                    Ok(f)
                }
            }
            _ => Err(DecodeError::UnsupportedType {
                offset,
                what: "expected a float",
            }),
        }
    }

    fn tagged(&mut self, h: Head) -> Result<Pmt, DecodeError> {
        match h.arg {
            TAG_COMPLEX => self.complex(h),
            TAG_U8 | TAG_U16_LE | TAG_U32_LE | TAG_U64_LE | TAG_I8 | TAG_I16_LE | TAG_I32_LE
            | TAG_F32_LE | TAG_F64_LE => {
                let raw = self.typed_bytes(h.arg, h.offset, 1)?;
                Ok(Pmt::Vector(match h.arg {
                    TAG_U8 => TypedVec::U8(raw.to_vec()),
                    TAG_U16_LE => TypedVec::U16(le(raw, u16::from_le_bytes)),
                    TAG_U32_LE => TypedVec::U32(le(raw, u32::from_le_bytes)),
                    TAG_U64_LE => TypedVec::U64(le(raw, u64::from_le_bytes)),
                    TAG_I8 => TypedVec::I8(le(raw, i8::from_le_bytes)),
                    TAG_I16_LE => TypedVec::I16(le(raw, i16::from_le_bytes)),
                    TAG_I32_LE => TypedVec::I32(le(raw, i32::from_le_bytes)),
                    TAG_F32_LE => TypedVec::F32(le(raw, f32::from_le_bytes)),
                    _ => TypedVec::F64(le(raw, f64::from_le_bytes)),
                }))
            }
            tag => Err(DecodeError::UnsupportedTag {
                offset: h.offset,
                tag,
            }),
        }
    }

    /// The byte string inside typed-array tag `tag` (whose head was at
    /// `tag_offset`), checked to hold whole elements (`per_elem` elements of
    /// the tag's type each).
    fn typed_bytes(
        &mut self,
        tag: u64,
        tag_offset: usize,
        per_elem: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let h = self.head()?;
        if h.major != 2 {
            return Err(DecodeError::InvalidTagContent {
                offset: h.offset,
                tag,
                what: "a typed array must contain a byte string",
            });
        }
        let n = self.length(h, 1)?;
        let raw = self.take(n, h.offset)?;
        let elem_size = elem_size(tag) * per_elem;
        if n % elem_size != 0 {
            return Err(DecodeError::TypedArrayLength {
                offset: tag_offset,
                tag,
                len: n,
                elem_size,
            });
        }
        Ok(raw)
    }

    /// Tag 43000: `[re, im]` of two floats, or a complex typed array.
    fn complex(&mut self, tag_head: Head) -> Result<Pmt, DecodeError> {
        let h = self.head()?;
        match h.major {
            4 => {
                if h.arg != 2 {
                    return Err(DecodeError::InvalidTagContent {
                        offset: h.offset,
                        tag: TAG_COMPLEX,
                        what: "a complex number must be an array of exactly 2 floats",
                    });
                }
                let re = self.complex_part()?;
                let im = self.complex_part()?;
                Ok(Pmt::Complex(Complex64::new(re, im)))
            }
            6 => {
                let inner = h.arg;
                if !matches!(inner, TAG_F32_LE | TAG_F64_LE | TAG_I8 | TAG_I16_LE) {
                    return Err(DecodeError::InvalidTagContent {
                        offset: h.offset,
                        tag: TAG_COMPLEX,
                        what: "complex typed arrays use tag 72, 77, 85 or 86",
                    });
                }
                let raw = self.typed_bytes(inner, tag_head.offset, 2)?;
                Ok(Pmt::Vector(match inner {
                    TAG_F32_LE => TypedVec::Cf32(le_complex(raw, f32::from_le_bytes)),
                    TAG_F64_LE => TypedVec::Cf64(le_complex(raw, f64::from_le_bytes)),
                    TAG_I8 => TypedVec::Cs8(le_complex(raw, i8::from_le_bytes)),
                    _ => TypedVec::Cs16(le_complex(raw, i16::from_le_bytes)),
                }))
            }
            _ => Err(DecodeError::InvalidTagContent {
                offset: h.offset,
                tag: TAG_COMPLEX,
                what: "expected a 2-element array or a typed array",
            }),
        }
    }

    fn complex_part(&mut self) -> Result<f64, DecodeError> {
        let h = self.head()?;
        if h.major == 7 && (25..=27).contains(&h.info) {
            self.float_value(h)
        } else {
            Err(DecodeError::InvalidTagContent {
                offset: h.offset,
                tag: TAG_COMPLEX,
                what: "complex components must be floats",
            })
        }
    }
}

fn elem_size(tag: u64) -> usize {
    match tag {
        TAG_U8 | TAG_I8 => 1,
        TAG_U16_LE | TAG_I16_LE => 2,
        TAG_U32_LE | TAG_I32_LE | TAG_F32_LE => 4,
        _ => 8,
    }
}

fn le<T, const N: usize>(raw: &[u8], from: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| from(c.try_into().expect("chunk of N bytes")))
        .collect()
}

fn le_complex<T, const N: usize>(raw: &[u8], from: impl Fn([u8; N]) -> T) -> Vec<Complex<T>> {
    raw.chunks_exact(2 * N)
        .map(|c| {
            let re = from(c[..N].try_into().expect("N bytes"));
            let im = from(c[N..].try_into().expect("N bytes"));
            Complex::new(re, im)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_complex::Complex32;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Asserts that `v` encodes to `expected` and that `expected` decodes back
    /// to a value bitwise-equal to `v`.
    #[track_caller]
    fn kat(v: Pmt, expected: &str) {
        let bytes = hex(expected);
        assert_eq!(encode(&v), bytes, "encoding of {v:?}");
        let back = decode(&bytes).unwrap_or_else(|e| panic!("decode {expected}: {e}"));
        assert!(same(&back, &v), "decode {expected}: {back:?} != {v:?}");
    }

    #[track_caller]
    fn rejects(input: &str) -> DecodeError {
        match decode(&hex(input)) {
            Ok(v) => panic!("{input} decoded to {v:?}, expected an error"),
            Err(e) => e,
        }
    }

    fn same_f(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
    }

    /// Structural equality with floats compared bitwise (any NaN equals any
    /// NaN for scalars, which the encoding canonicalises; typed-array elements
    /// must match bit for bit).
    fn same(a: &Pmt, b: &Pmt) -> bool {
        fn bits32(v: &[f32]) -> Vec<u32> {
            v.iter().map(|x| x.to_bits()).collect()
        }
        fn bits64(v: &[f64]) -> Vec<u64> {
            v.iter().map(|x| x.to_bits()).collect()
        }
        match (a, b) {
            (Pmt::F64(x), Pmt::F64(y)) => same_f(*x, *y),
            (Pmt::Complex(x), Pmt::Complex(y)) => same_f(x.re, y.re) && same_f(x.im, y.im),
            (Pmt::Vector(TypedVec::F32(x)), Pmt::Vector(TypedVec::F32(y))) => {
                bits32(x) == bits32(y)
            }
            (Pmt::Vector(TypedVec::F64(x)), Pmt::Vector(TypedVec::F64(y))) => {
                bits64(x) == bits64(y)
            }
            (Pmt::Vector(TypedVec::Cf32(x)), Pmt::Vector(TypedVec::Cf32(y))) => {
                x.len() == y.len()
                    && x.iter().zip(y).all(|(p, q)| {
                        p.re.to_bits() == q.re.to_bits() && p.im.to_bits() == q.im.to_bits()
                    })
            }
            (Pmt::Vector(TypedVec::Cf64(x)), Pmt::Vector(TypedVec::Cf64(y))) => {
                x.len() == y.len()
                    && x.iter().zip(y).all(|(p, q)| {
                        p.re.to_bits() == q.re.to_bits() && p.im.to_bits() == q.im.to_bits()
                    })
            }
            (Pmt::List(x), Pmt::List(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
            }
            (Pmt::Map(x), Pmt::Map(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((k1, v1), (k2, v2))| k1 == k2 && same(v1, v2))
            }
            _ => a == b,
        }
    }

    // ---- RFC 8949 Appendix A known answers --------------------------------

    #[test]
    fn pmt_rfc8949_integers() {
        for (v, h) in [
            (0, "00"),
            (1, "01"),
            (10, "0a"),
            (23, "17"),
            (24, "1818"),
            (25, "1819"),
            (100, "1864"),
            (1000, "1903e8"),
            (1000000, "1a000f4240"),
            (1000000000000, "1b000000e8d4a51000"),
            (-1, "20"),
            (-10, "29"),
            (-100, "3863"),
            (-1000, "3903e7"),
            (i64::MAX, "1b7fffffffffffffff"),
            (i64::MIN, "3b7fffffffffffffff"),
        ] {
            kat(Pmt::I64(v), h);
        }
    }

    #[test]
    fn pmt_rfc8949_floats() {
        for (v, h) in [
            (0.0, "f90000"),
            (-0.0, "f98000"),
            (1.0, "f93c00"),
            (1.1, "fb3ff199999999999a"),
            (1.5, "f93e00"),
            (65504.0, "f97bff"),
            (100000.0, "fa47c35000"),
            (3.4028234663852886e+38, "fa7f7fffff"),
            (1.0e+300, "fb7e37e43c8800759c"),
            (5.960464477539063e-8, "f90001"),
            (0.00006103515625, "f90400"),
            (-4.0, "f9c400"),
            (-4.1, "fbc010666666666666"),
            (f64::INFINITY, "f97c00"),
            (f64::NAN, "f97e00"),
            (f64::NEG_INFINITY, "f9fc00"),
        ] {
            kat(Pmt::F64(v), h);
        }
        // Any NaN payload is canonicalised.
        assert_eq!(encode(&Pmt::F64(-f64::NAN)), hex("f97e00"));
        assert_eq!(
            encode(&Pmt::F64(f64::from_bits(0x7ff0_0000_0000_0001))),
            hex("f97e00")
        );
        // Floats stay floats, ints stay ints.
        assert_ne!(encode(&Pmt::F64(1.0)), encode(&Pmt::I64(1)));
    }

    #[test]
    fn pmt_rfc8949_simple_strings_and_containers() {
        kat(Pmt::Bool(false), "f4");
        kat(Pmt::Bool(true), "f5");
        kat(Pmt::Null, "f6");
        kat(Pmt::Bytes(vec![]), "40");
        kat(Pmt::Bytes(vec![1, 2, 3, 4]), "4401020304");
        kat(Pmt::from(""), "60");
        kat(Pmt::from("a"), "6161");
        kat(Pmt::from("IETF"), "6449455446");
        kat(Pmt::from("\"\\"), "62225c");
        kat(Pmt::from("\u{00fc}"), "62c3bc");
        kat(Pmt::from("\u{6c34}"), "63e6b0b4");
        kat(Pmt::from("\u{10151}"), "64f0908591");
        kat(Pmt::List(vec![]), "80");
        let ints = |v: &[i64]| Pmt::List(v.iter().map(|&i| Pmt::I64(i)).collect());
        kat(ints(&[1, 2, 3]), "83010203");
        kat(
            Pmt::List(vec![Pmt::I64(1), ints(&[2, 3]), ints(&[4, 5])]),
            "8301820203820405",
        );
        kat(
            ints(&(1..=25).collect::<Vec<_>>()),
            "98190102030405060708090a0b0c0d0e0f101112131415161718181819",
        );
        kat(Pmt::Map(BTreeMap::new()), "a0");
        kat(
            Pmt::map([("a", Pmt::I64(1)), ("b", ints(&[2, 3]))]),
            "a26161016162820203",
        );
        kat(
            Pmt::List(vec![Pmt::from("a"), Pmt::map([("b", Pmt::from("c"))])]),
            "826161a161626163",
        );
        kat(
            Pmt::map(["a", "b", "c", "d", "e"].map(|k| (k, Pmt::from(k.to_uppercase())))),
            "a56161614161626142616361436164614461656145",
        );
    }

    #[test]
    fn pmt_map_keys_sorted_length_first() {
        // BTreeMap order would be "aa" < "b"; canonical CBOR order is "b" < "aa".
        kat(
            Pmt::map([("aa", Pmt::I64(2)), ("b", Pmt::I64(1))]),
            "a2 6162 01 626161 02",
        );
        // 24-byte key (2-byte head) sorts after every shorter key.
        let long = "k".repeat(24);
        let v = Pmt::map([(long.as_str(), Pmt::Null), ("zzz", Pmt::Null)]);
        let mut expected = hex("a2 637a7a7a f6 7818");
        expected.extend_from_slice(long.as_bytes());
        expected.push(0xf6);
        assert_eq!(encode(&v), expected);
        assert_eq!(decode(&expected).unwrap(), v);
    }

    // ---- typed arrays and complex (hand-checked) --------------------------

    #[test]
    fn pmt_typed_arrays_known_answers() {
        use TypedVec as T;
        kat(Pmt::Vector(T::U8(vec![])), "d84040");
        kat(Pmt::Vector(T::U8(vec![1, 2, 0xff])), "d840 43 0102ff");
        kat(Pmt::Vector(T::U16(vec![1, 0x0203])), "d845 44 0100 0302");
        kat(
            Pmt::Vector(T::U32(vec![1, 0xdeadbeef])),
            "d846 48 01000000 efbeadde",
        );
        kat(Pmt::Vector(T::U64(vec![1])), "d847 48 0100000000000000");
        kat(Pmt::Vector(T::I8(vec![-1, 2])), "d848 42 ff02");
        kat(Pmt::Vector(T::I16(vec![-2, 0x0102])), "d84d 44 feff 0201");
        kat(Pmt::Vector(T::I32(vec![-1])), "d84e 44 ffffffff");
        kat(
            Pmt::Vector(T::F32(vec![1.0, -2.0])),
            "d855 48 0000803f 000000c0",
        );
        kat(Pmt::Vector(T::F64(vec![1.0])), "d856 48 000000000000f03f");
        kat(
            Pmt::Vector(T::Cf32(vec![Complex32::new(1.0, 2.0)])),
            "d9a7f8 d855 48 0000803f 00000040",
        );
        kat(
            Pmt::Vector(T::Cf64(vec![Complex64::new(1.0, -1.0)])),
            "d9a7f8 d856 50 000000000000f03f 000000000000f0bf",
        );
        kat(
            Pmt::Vector(T::Cs8(vec![Complex::new(1, -1)])),
            "d9a7f8 d848 42 01ff",
        );
        kat(
            Pmt::Vector(T::Cs16(vec![Complex::new(1, -2)])),
            "d9a7f8 d84d 44 0100feff",
        );
        kat(Pmt::Vector(T::Cf32(vec![])), "d9a7f8 d855 40");
        // A 24-byte payload needs a one-byte length.
        kat(
            Pmt::Vector(T::U16(vec![0; 12])),
            "d845 5818 000000000000000000000000000000000000000000000000",
        );
        // Typed-array elements are copied bit for bit, NaN payloads included.
        let odd_nan = f32::from_bits(0x7fc0_0001);
        kat(
            Pmt::Vector(T::F32(vec![odd_nan, -0.0])),
            "d855 48 0100c07f 00000080",
        );
        // Bytes and Vector(U8) are distinct.
        assert_ne!(
            encode(&Pmt::Bytes(vec![1])),
            encode(&Pmt::Vector(T::U8(vec![1])))
        );
    }

    #[test]
    fn pmt_complex_known_answers() {
        kat(
            Pmt::Complex(Complex64::new(1.5, -4.1)),
            "d9a7f8 82 f93e00 fbc010666666666666",
        );
        kat(
            Pmt::Complex(Complex64::new(0.0, 100000.0)),
            "d9a7f8 82 f90000 fa47c35000",
        );
        kat(
            Pmt::Complex(Complex64::new(f64::NAN, -0.0)),
            "d9a7f8 82 f97e00 f98000",
        );
    }

    #[test]
    fn pmt_f16_conversion_exhaustive() {
        for h in 0..=u16::MAX {
            let f = f16_to_f64(h);
            if f.is_nan() {
                assert_eq!(h & 0x7c00, 0x7c00);
                assert_ne!(h & 0x3ff, 0);
                let input = [0xf9, (h >> 8) as u8, h as u8];
                if h == 0x7e00 {
                    assert!(decode(&input).is_ok());
                } else {
                    assert!(matches!(
                        decode(&input),
                        Err(DecodeError::NotCanonical { .. })
                    ));
                }
                continue;
            }
            assert_eq!(f64_to_f16_exact(f), Some(h), "f16 {h:#06x} = {f:e}");
            // The f32 path agrees: every f16 is an f32 and the single form is rejected.
            assert!(f32_exact(f));
            let mut single = vec![0xfa];
            single.extend_from_slice(&(f as f32).to_bits().to_be_bytes());
            assert!(matches!(
                decode(&single),
                Err(DecodeError::NotCanonical { .. })
            ));
            assert_eq!(encode(&Pmt::F64(f)), [0xf9, (h >> 8) as u8, h as u8]);
        }
        // Neighbours of f16 values are not f16.
        assert_eq!(f64_to_f16_exact(1.0 + f64::EPSILON), None);
        assert_eq!(f64_to_f16_exact(65520.0), None);
        assert_eq!(f64_to_f16_exact(2f64.powi(-25)), None);
        assert_eq!(f64_to_f16_exact(3.0 * 2f64.powi(-25)), None);
        assert_eq!(f64_to_f16_exact(f64::MIN_POSITIVE), None);
    }

    // ---- rejection rules ---------------------------------------------------

    #[test]
    fn pmt_reject_indefinite_lengths() {
        for h in [
            "5f42010243030405ff",
            "7f657374726561646d696e67ff",
            "9fff",
            "9f018202039f0405ffff",
            "bf61610161629f0203ffff",
        ] {
            assert_eq!(
                rejects(h),
                DecodeError::NotCanonical {
                    offset: 0,
                    what: "indefinite-length item"
                },
                "{h}"
            );
        }
        // Nested: the offset points at the inner item.
        assert!(matches!(
            rejects("82 01 9fff"),
            DecodeError::NotCanonical { offset: 2, .. }
        ));
    }

    #[test]
    fn pmt_reject_non_shortest_arguments() {
        for h in [
            "1817",
            "1900ff",
            "1a0000ffff",
            "1b00000000ffffffff",
            "3817",
            "5800",
            "7800",
            "9800",
            "b800",
            "d9004043010203",
            "d8 40 5803 010203",
        ] {
            assert!(
                matches!(rejects(h), DecodeError::NotCanonical { what, .. } if what.contains("shortest")),
                "{h}"
            );
        }
    }

    #[test]
    fn pmt_reject_non_shortest_floats() {
        for h in [
            "fa3fc00000",
            "fb3ff8000000000000",
            "fa00000000",
            "fb8000000000000000",
            "fa7f800000",
            "fb7ff0000000000000",
            "fb40f86a0000000000",
            "d9a7f8 82 fa3fc00000 f90000",
        ] {
            assert!(
                matches!(rejects(h), DecodeError::NotCanonical { what, .. } if what.contains("shortest")),
                "{h}"
            );
        }
    }

    #[test]
    fn pmt_reject_non_canonical_nan() {
        for h in [
            "f97e01",
            "f9fe00",
            "f97c01",
            "fa7fc00000",
            "fb7ff8000000000000",
        ] {
            assert!(
                matches!(rejects(h), DecodeError::NotCanonical { offset: 0, what } if what.contains("NaN")),
                "{h}"
            );
        }
    }

    #[test]
    fn pmt_reject_unsorted_keys() {
        assert!(matches!(
            rejects("a2 6162 01 6161 02"),
            DecodeError::NotCanonical { offset: 4, .. }
        ));
        // Bytewise ("aa" < "b") is not enough: shorter keys come first.
        assert!(matches!(
            rejects("a2 626161 02 6162 01"),
            DecodeError::NotCanonical { offset: 5, .. }
        ));
    }

    #[test]
    fn pmt_reject_duplicate_keys() {
        assert_eq!(
            rejects("a2 6161 01 6161 02"),
            DecodeError::DuplicateKey {
                offset: 4,
                key: "a".into()
            }
        );
    }

    #[test]
    fn pmt_reject_non_string_keys() {
        assert_eq!(
            rejects("a201020304"),
            DecodeError::NonStringKey { offset: 1 }
        );
        assert_eq!(
            rejects("a1 4161 01"),
            DecodeError::NonStringKey { offset: 1 }
        );
        assert_eq!(rejects("a1 80 01"), DecodeError::NonStringKey { offset: 1 });
        // A tagged string is not a text string either; offsets point at the key.
        assert_eq!(
            rejects("a2 6161 01 c0 6162 02"),
            DecodeError::NonStringKey { offset: 4 }
        );
    }

    #[test]
    fn pmt_reject_unknown_tags() {
        for (h, tag) in [
            ("c074323031332d30332d32315432303a30343a30305a", 0),
            ("c11a514b67b0", 1),
            ("c249010000000000000000", 2),
            ("d74401020304", 23),
            ("d8 41 42 0001", 65),
            ("d8 4f 48 0100000000000000", 79),
            ("d8 54 42 003c", 84),
        ] {
            assert_eq!(
                rejects(h),
                DecodeError::UnsupportedTag { offset: 0, tag },
                "{h}"
            );
        }
        // Nested inside a list, the offset is that of the tag.
        assert_eq!(
            rejects("81 c0 60"),
            DecodeError::UnsupportedTag { offset: 1, tag: 0 }
        );
    }

    #[test]
    fn pmt_reject_bad_tag_content() {
        for h in [
            "d8 40 6161",                     // typed array holding text
            "d8 40 81 01",                    // typed array holding an array
            "d9a7f8 83 f90000 f90000 f90000", // 3-element complex
            "d9a7f8 82 01 02",                // integer components
            "d9a7f8 d840 40",                 // u8 typed array as complex
            "d9a7f8 f6",                      // null
        ] {
            assert!(
                matches!(rejects(h), DecodeError::InvalidTagContent { .. }),
                "{h}"
            );
        }
    }

    #[test]
    fn pmt_reject_typed_array_length() {
        assert_eq!(
            rejects("d845 43 010203"),
            DecodeError::TypedArrayLength {
                offset: 0,
                tag: 69,
                len: 3,
                elem_size: 2
            }
        );
        assert_eq!(
            rejects("d856 44 00000000"),
            DecodeError::TypedArrayLength {
                offset: 0,
                tag: 86,
                len: 4,
                elem_size: 8
            }
        );
        // Complex f32 elements are 8 bytes.
        assert_eq!(
            rejects("d9a7f8 d855 44 0000803f"),
            DecodeError::TypedArrayLength {
                offset: 0,
                tag: 85,
                len: 4,
                elem_size: 8
            }
        );
        assert_eq!(
            rejects("d9a7f8 d848 41 01"),
            DecodeError::TypedArrayLength {
                offset: 0,
                tag: 72,
                len: 1,
                elem_size: 2
            }
        );
    }

    #[test]
    fn pmt_reject_other_simple_values() {
        for h in ["f7", "f0", "e0", "f3", "f8ff", "f820"] {
            assert!(
                matches!(rejects(h), DecodeError::UnsupportedType { offset: 0, .. }),
                "{h}"
            );
        }
        // Two-byte simple values below 32 are not well-formed.
        assert!(matches!(
            rejects("f818"),
            DecodeError::Malformed { offset: 0, .. }
        ));
    }

    #[test]
    fn pmt_reject_invalid_utf8() {
        assert_eq!(rejects("62c328"), DecodeError::InvalidUtf8 { offset: 1 });
        assert_eq!(
            rejects("63 61 ff 62"),
            DecodeError::InvalidUtf8 { offset: 2 }
        );
        // Also in map keys.
        assert_eq!(
            rejects("a1 61ff 01"),
            DecodeError::InvalidUtf8 { offset: 2 }
        );
    }

    #[test]
    fn pmt_reject_truncated() {
        for (h, offset) in [
            ("", 0),
            ("19 01", 0),
            ("62 61", 0),
            ("83 01 02", 0),
            ("82 01 19", 2),
            ("a1 6161", 3),
            ("a2 6161 01", 0),
            ("d840", 2),
            ("d9a7f8 82 f93e00", 7),
            ("fb 3ff1", 0),
        ] {
            assert_eq!(rejects(h), DecodeError::Truncated { offset }, "{h:?}");
        }
    }

    #[test]
    fn pmt_reject_huge_length_fields_without_allocating() {
        // Lengths far beyond the input are rejected before any allocation.
        for h in [
            "5bffffffffffffffff",
            "7b7fffffffffffffff",
            "9b0000000100000000 01",
            "bbffffffffffffffff",
            "ba7fffffff 6161 01",
            "d856 5b7ffffffffffffff8",
        ] {
            assert!(matches!(rejects(h), DecodeError::Truncated { .. }), "{h}");
        }
    }

    #[test]
    fn pmt_reject_trailing_bytes() {
        assert_eq!(
            rejects("01 02"),
            DecodeError::TrailingBytes {
                offset: 1,
                count: 1
            }
        );
        assert_eq!(
            rejects("80 0000"),
            DecodeError::TrailingBytes {
                offset: 1,
                count: 2
            }
        );
    }

    #[test]
    fn pmt_reject_integer_out_of_range() {
        assert_eq!(
            rejects("1bffffffffffffffff"),
            DecodeError::IntegerOutOfRange { offset: 0 }
        );
        assert_eq!(
            rejects("1b8000000000000000"),
            DecodeError::IntegerOutOfRange { offset: 0 }
        );
        assert_eq!(
            rejects("3b8000000000000000"),
            DecodeError::IntegerOutOfRange { offset: 0 }
        );
        assert_eq!(
            rejects("3bffffffffffffffff"),
            DecodeError::IntegerOutOfRange { offset: 0 }
        );
    }

    #[test]
    fn pmt_reject_malformed() {
        assert!(matches!(
            rejects("ff"),
            DecodeError::Malformed { offset: 0, .. }
        ));
        assert!(matches!(
            rejects("1c"),
            DecodeError::Malformed { offset: 0, .. }
        ));
        assert!(matches!(
            rejects("5e"),
            DecodeError::Malformed { offset: 0, .. }
        ));
        assert!(matches!(
            rejects("1f"),
            DecodeError::Malformed { offset: 0, .. }
        ));
        assert!(matches!(
            rejects("df"),
            DecodeError::Malformed { offset: 0, .. }
        ));
    }

    #[test]
    fn pmt_depth_limit() {
        fn nested(levels: usize) -> Pmt {
            (0..levels).fold(Pmt::I64(0), |v, _| Pmt::List(vec![v]))
        }
        let ok = encode(&nested(64));
        assert!(same(&decode(&ok).unwrap(), &nested(64)));
        let deep = encode(&nested(65));
        assert_eq!(
            decode(&deep),
            Err(DecodeError::DepthExceeded {
                offset: 64,
                max_depth: 64
            })
        );
        let roomy = Limits {
            max_depth: 65,
            ..Limits::default()
        };
        assert_eq!(decode_with(&deep, &roomy).unwrap(), nested(65));
        // Maps count too; scalars, vectors and complex numbers do not.
        let flat = Limits {
            max_depth: 0,
            ..Limits::default()
        };
        assert_eq!(decode_with(&hex("01"), &flat), Ok(Pmt::I64(1)));
        assert!(decode_with(&hex("d9a7f8 82 f90000 f90000"), &flat).is_ok());
        assert!(decode_with(&hex("d840 41 01"), &flat).is_ok());
        assert_eq!(
            decode_with(&hex("80"), &flat),
            Err(DecodeError::DepthExceeded {
                offset: 0,
                max_depth: 0
            })
        );
        assert_eq!(
            decode_with(&hex("a0"), &flat),
            Err(DecodeError::DepthExceeded {
                offset: 0,
                max_depth: 0
            })
        );
        let one = Limits {
            max_depth: 1,
            ..Limits::default()
        };
        assert_eq!(
            decode_with(&hex("a1 6161 a0"), &one),
            Err(DecodeError::DepthExceeded {
                offset: 3,
                max_depth: 1
            })
        );
        // A very deep input fails cleanly instead of overflowing the stack.
        let mut bomb = vec![0x81; 1_000_000];
        bomb.push(0xf6);
        assert!(matches!(
            decode(&bomb),
            Err(DecodeError::DepthExceeded { .. })
        ));
    }

    #[test]
    fn pmt_size_limit() {
        let v = Pmt::Bytes(vec![7; 100]);
        let bytes = encode(&v);
        assert_eq!(bytes.len(), 102);
        let exact = Limits {
            max_bytes: 102,
            ..Limits::default()
        };
        assert_eq!(decode_with(&bytes, &exact), Ok(v));
        let small = Limits {
            max_bytes: 101,
            ..Limits::default()
        };
        assert_eq!(
            decode_with(&bytes, &small),
            Err(DecodeError::TooLarge {
                len: 102,
                max_bytes: 101
            })
        );
        assert_eq!(
            Limits::default(),
            Limits {
                max_depth: 64,
                max_bytes: 64 << 20
            }
        );
    }

    #[test]
    fn pmt_error_messages_are_clear() {
        assert_eq!(
            DecodeError::NotCanonical {
                offset: 3,
                what: "indefinite-length item"
            }
            .to_string(),
            "non-canonical encoding at byte 3: indefinite-length item"
        );
        assert_eq!(
            DecodeError::DuplicateKey {
                offset: 4,
                key: "a".into()
            }
            .to_string(),
            "duplicate map key \"a\" at byte 4"
        );
        assert_eq!(
            rejects("d845 43 010203").to_string(),
            "typed array (tag 69) at byte 0: byte length 3 is not a multiple of the element size 2"
        );
    }

    #[test]
    fn pmt_encode_into_appends() {
        let mut out = vec![FORMAT_VERSION];
        encode_into(&Pmt::I64(1), &mut out);
        encode_into(&Pmt::Null, &mut out);
        assert_eq!(out, [1, 0x01, 0xf6]);
    }

    // ---- property tests ----------------------------------------------------

    fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            any::<u32>().prop_map(|b| f64::from(f32::from_bits(b))),
            any::<u16>().prop_map(f16_to_f64),
            Just(f64::NAN),
            Just(0.0),
            Just(-0.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
        ]
    }

    fn f32_bits() -> impl Strategy<Value = f32> {
        any::<u32>().prop_map(f32::from_bits)
    }

    fn typed_vec() -> impl Strategy<Value = TypedVec> {
        use proptest::collection::vec;
        let n = 0..6usize;
        prop_oneof![
            vec(f32_bits(), n.clone()).prop_map(TypedVec::F32),
            vec(any::<u64>().prop_map(f64::from_bits), n.clone()).prop_map(TypedVec::F64),
            vec(
                (f32_bits(), f32_bits()).prop_map(|(r, i)| Complex32::new(r, i)),
                n.clone()
            )
            .prop_map(TypedVec::Cf32),
            vec(
                (float(), float()).prop_map(|(r, i)| Complex64::new(r, i)),
                n.clone()
            )
            .prop_map(TypedVec::Cf64),
            vec(any::<i8>(), n.clone()).prop_map(TypedVec::I8),
            vec(
                any::<(i8, i8)>().prop_map(|(r, i)| Complex::new(r, i)),
                n.clone()
            )
            .prop_map(TypedVec::Cs8),
            vec(any::<i16>(), n.clone()).prop_map(TypedVec::I16),
            vec(
                any::<(i16, i16)>().prop_map(|(r, i)| Complex::new(r, i)),
                n.clone()
            )
            .prop_map(TypedVec::Cs16),
            vec(any::<i32>(), n.clone()).prop_map(TypedVec::I32),
            vec(any::<u8>(), 0..40usize).prop_map(TypedVec::U8),
            vec(any::<u16>(), n.clone()).prop_map(TypedVec::U16),
            vec(any::<u32>(), n.clone()).prop_map(TypedVec::U32),
            vec(any::<u64>(), n).prop_map(TypedVec::U64),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof!["[a-c]{0,3}", any::<String>(), "[a-z]{20,30}"]
    }

    fn pmt() -> impl Strategy<Value = Pmt> {
        use proptest::collection::{btree_map, vec};
        let leaf = prop_oneof![
            Just(Pmt::Null),
            any::<bool>().prop_map(Pmt::Bool),
            any::<i64>().prop_map(Pmt::I64),
            prop_oneof![-30i64..30, Just(i64::MIN), Just(i64::MAX)].prop_map(Pmt::I64),
            float().prop_map(Pmt::F64),
            (float(), float()).prop_map(|(r, i)| Pmt::Complex(Complex64::new(r, i))),
            any::<String>().prop_map(Pmt::String),
            vec(any::<u8>(), 0..40).prop_map(Pmt::Bytes),
            typed_vec().prop_map(Pmt::Vector),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Pmt::List),
                btree_map(key(), inner, 0..6).prop_map(Pmt::Map),
            ]
        })
    }

    /// A way to damage a valid encoding.
    #[derive(Debug, Clone)]
    enum Mutation {
        Truncate(usize),
        Flip(usize, u8),
        Set(usize, u8),
        Insert(usize, u8),
        Remove(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            any::<usize>().prop_map(Mutation::Truncate),
            (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<usize>().prop_map(Mutation::Remove),
        ]
    }

    fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
        let len = bytes.len();
        match *m {
            Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
            Mutation::Flip(i, bit) if len > 0 => bytes[i % len] ^= 1 << bit,
            Mutation::Set(i, b) if len > 0 => bytes[i % len] = b,
            Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
            Mutation::Remove(i) if len > 0 => {
                bytes.remove(i % len);
            }
            _ => {}
        }
    }

    /// The canonical property: anything the decoder accepts re-encodes to
    /// exactly the accepted bytes.
    fn check_canonical(input: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(v) = decode(input) {
            prop_assert_eq!(encode(&v), input, "accepted non-canonical input as {:?}", v);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn pmt_prop_roundtrip(v in pmt()) {
            let bytes = encode(&v);
            let back = decode(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert!(same(&back, &v), "{:?} decoded as {:?}", v, back);
            prop_assert_eq!(encode(&back), bytes);
        }

        #[test]
        fn pmt_prop_encoding_independent_of_insertion_order(
            entries in proptest::collection::vec((key(), pmt()), 0..8)
        ) {
            let unique: BTreeMap<String, Pmt> = entries.into_iter().collect();
            let mut forward = BTreeMap::new();
            for (k, v) in unique.iter() {
                forward.insert(k.clone(), v.clone());
            }
            let mut backward = BTreeMap::new();
            for (k, v) in unique.iter().rev() {
                backward.insert(k.clone(), v.clone());
            }
            let a = encode(&Pmt::Map(forward));
            let b = encode(&Pmt::Map(backward));
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a, encode(&Pmt::Map(unique).clone()));
        }

        #[test]
        fn pmt_prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            check_canonical(&bytes)?;
        }

        #[test]
        fn pmt_prop_mutated_encodings(v in pmt(), muts in proptest::collection::vec(mutation(), 1..4)) {
            let mut bytes = encode(&v);
            for m in &muts {
                apply(&mut bytes, m);
            }
            check_canonical(&bytes)?;
        }
    }
}
