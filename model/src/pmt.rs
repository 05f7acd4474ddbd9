//! Message values ("PMTs"): the one value type carried by message ports, stream
//! tags and runtime parameters.
//!
//! The binary encoding (module [`cbor`]) is deterministic CBOR; see
//! `docs/messages.md` for the wire format and the mapping to GNU Radio PMTs.

use std::collections::BTreeMap;
use std::fmt;

use num_complex::{Complex, Complex32, Complex64};

pub mod cbor;

/// A message value.
///
/// Maps are keyed by strings and ordered (`BTreeMap`), so equal values have one
/// canonical encoding.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Pmt {
    #[default]
    Null,
    Bool(bool),
    I64(i64),
    F64(f64),
    Complex(Complex64),
    String(String),
    Bytes(Vec<u8>),
    /// A uniform vector of one item type.
    Vector(TypedVec),
    List(Vec<Pmt>),
    Map(BTreeMap<String, Pmt>),
}

/// A uniform (typed) vector, one variant per stream item type.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedVec {
    F32(Vec<f32>),
    F64(Vec<f64>),
    Cf32(Vec<Complex32>),
    Cf64(Vec<Complex64>),
    I8(Vec<i8>),
    Cs8(Vec<Complex<i8>>),
    I16(Vec<i16>),
    Cs16(Vec<Complex<i16>>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

impl TypedVec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TypedVec::F32(v) => v.len(),
            TypedVec::F64(v) => v.len(),
            TypedVec::Cf32(v) => v.len(),
            TypedVec::Cf64(v) => v.len(),
            TypedVec::I8(v) => v.len(),
            TypedVec::Cs8(v) => v.len(),
            TypedVec::I16(v) => v.len(),
            TypedVec::Cs16(v) => v.len(),
            TypedVec::I32(v) => v.len(),
            TypedVec::U8(v) => v.len(),
            TypedVec::U16(v) => v.len(),
            TypedVec::U32(v) => v.len(),
            TypedVec::U64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The item type of the elements.
    pub fn item_type(&self) -> crate::ItemType {
        use crate::ItemType as T;
        match self {
            TypedVec::F32(_) => T::F32,
            TypedVec::F64(_) => T::F64,
            TypedVec::Cf32(_) => T::Cf32,
            TypedVec::Cf64(_) => T::Cf64,
            TypedVec::I8(_) => T::I8,
            TypedVec::Cs8(_) => T::Cs8,
            TypedVec::I16(_) => T::I16,
            TypedVec::Cs16(_) => T::Cs16,
            TypedVec::I32(_) => T::I32,
            TypedVec::U8(_) => T::U8,
            TypedVec::U16(_) => T::U16,
            TypedVec::U32(_) => T::U32,
            TypedVec::U64(_) => T::U64,
        }
    }
}

impl Pmt {
    /// Builds a map from `(key, value)` pairs.
    pub fn map<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Pmt)>) -> Pmt {
        Pmt::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Pmt::F64(v) => Some(*v),
            Pmt::I64(v) => Some(*v as f64),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Pmt::I64(v) => Some(*v),
            Pmt::F64(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Some(*v as i64),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        self.as_i64().and_then(|v| u64::try_from(v).ok())
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Pmt::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_complex(&self) -> Option<Complex64> {
        match self {
            Pmt::Complex(c) => Some(*c),
            Pmt::F64(v) => Some(Complex64::new(*v, 0.0)),
            Pmt::I64(v) => Some(Complex64::new(*v as f64, 0.0)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Pmt::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Pmt> {
        match self {
            Pmt::Map(m) => m.get(key),
            _ => None,
        }
    }

    /// Converts JSON to a value: numbers that are whole and fit become
    /// `I64`, other numbers `F64`, arrays `List`, objects `Map` (what the
    /// worker's control API accepts as a message body).
    pub fn from_json(v: &serde_json::Value) -> Pmt {
        use serde_json::Value;
        match v {
            Value::Null => Pmt::Null,
            Value::Bool(b) => Pmt::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Pmt::I64(i),
                None => Pmt::F64(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Pmt::String(s.clone()),
            Value::Array(a) => Pmt::List(a.iter().map(Pmt::from_json).collect()),
            Value::Object(m) => Pmt::Map(
                m.iter()
                    .map(|(k, v)| (k.clone(), Pmt::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Converts to JSON for human-facing sinks (`jsonl_sink`, `message_debug`).
    /// Complex numbers become `{"re":..,"im":..}`, bytes a lowercase hex string.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{json, Value};
        fn num(v: f64) -> Value {
            serde_json::Number::from_f64(v)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        }
        match self {
            Pmt::Null => Value::Null,
            Pmt::Bool(b) => Value::Bool(*b),
            Pmt::I64(v) => json!(v),
            Pmt::F64(v) => num(*v),
            Pmt::Complex(c) => json!({"re": num(c.re), "im": num(c.im)}),
            Pmt::String(s) => Value::String(s.clone()),
            Pmt::Bytes(b) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
            Pmt::Vector(v) => {
                fn arr<T: Copy>(v: &[T], f: impl Fn(T) -> Value) -> Value {
                    Value::Array(v.iter().map(|x| f(*x)).collect())
                }
                let cplx = |re: f64, im: f64| json!({"re": num(re), "im": num(im)});
                match v {
                    TypedVec::F32(v) => arr(v, |x| num(x as f64)),
                    TypedVec::F64(v) => arr(v, num),
                    TypedVec::Cf32(v) => arr(v, |c| cplx(c.re as f64, c.im as f64)),
                    TypedVec::Cf64(v) => arr(v, |c| cplx(c.re, c.im)),
                    TypedVec::I8(v) => arr(v, |x| json!(x)),
                    TypedVec::Cs8(v) => arr(v, |c| cplx(c.re as f64, c.im as f64)),
                    TypedVec::I16(v) => arr(v, |x| json!(x)),
                    TypedVec::Cs16(v) => arr(v, |c| cplx(c.re as f64, c.im as f64)),
                    TypedVec::I32(v) => arr(v, |x| json!(x)),
                    TypedVec::U8(v) => arr(v, |x| json!(x)),
                    TypedVec::U16(v) => arr(v, |x| json!(x)),
                    TypedVec::U32(v) => arr(v, |x| json!(x)),
                    TypedVec::U64(v) => arr(v, |x| json!(x)),
                }
            }
            Pmt::List(l) => Value::Array(l.iter().map(Pmt::to_json).collect()),
            Pmt::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }
}

impl fmt::Display for Pmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pmt::F64(v) => write!(f, "{v}"),
            Pmt::Complex(c) => write!(f, "{}{:+}j", c.re, c.im),
            Pmt::String(s) => f.write_str(s),
            other => write!(f, "{}", other.to_json()),
        }
    }
}

impl From<bool> for Pmt {
    fn from(v: bool) -> Self {
        Pmt::Bool(v)
    }
}
impl From<i64> for Pmt {
    fn from(v: i64) -> Self {
        Pmt::I64(v)
    }
}
impl From<u64> for Pmt {
    fn from(v: u64) -> Self {
        Pmt::I64(v as i64)
    }
}
impl From<f64> for Pmt {
    fn from(v: f64) -> Self {
        Pmt::F64(v)
    }
}
impl From<Complex64> for Pmt {
    fn from(v: Complex64) -> Self {
        Pmt::Complex(v)
    }
}
impl From<&str> for Pmt {
    fn from(v: &str) -> Self {
        Pmt::String(v.to_string())
    }
}
impl From<String> for Pmt {
    fn from(v: String) -> Self {
        Pmt::String(v)
    }
}
