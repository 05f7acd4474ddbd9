//! Type conversions: integer to float with full-scale scaling, complex parts,
//! decibels.
//!
//! # `convert`
//!
//! Converts `from` items to f32 (real `from`) or cf32 (complex `from`):
//! `out = (x − bias) · scale`, computed in f64 and rounded once to f32, part
//! by part for complex items. The default `scale` maps full scale to ±1:
//!
//! | from | default scale | bias |
//! | --- | --- | --- |
//! | i8, cs8 | 1/128 | 0 |
//! | i16, cs16 | 1/32768 | 0 |
//! | i32 | 1/2³¹ | 0 |
//! | u8 (offset binary, as RTL-SDR) | 1/128 | 127.5 |
//! | f32, f64, cf64 | 1 | 0 |
//!
//! A given `scale` replaces the default factor only: for u8 the bias of 127.5
//! is still subtracted first, so `scale: 1` gives `x − 127.5`.
//!
//! # Complex parts
//!
//! `complex_to_real`, `complex_to_imag`, `complex_to_mag` (`|z|` as
//! `√(re² + im²)` computed in f64, so it neither overflows nor underflows
//! early),
//! `complex_to_mag_squared` (`re² + im²` in f32) and `complex_to_arg`
//! (`atan2(im, re)` in radians, in `[−π, π]`).
//!
//! # `to_db`
//!
//! `10·log10(x)` for `quantity: power`, `20·log10(|x|)` for
//! `quantity: amplitude`, then `+ offset`. Logarithms are taken in f64. The
//! decibel value (before `offset`) is floored at [`DB_FLOOR`] = −300 dB, so
//! zero, negative powers and values too small to matter give −300 + offset
//! instead of −∞ or NaN. A NaN input stays NaN.

use std::marker::PhantomData;

use flowmesh_model::{ItemType, Params, Pmt};
use num_complex::{Complex, Complex32};

use super::Implementation;
use crate::block::{Block, BuiltBlock, Result, Work};
use crate::io::{Item, WorkIo};

/// The blocks of this module.
pub(super) const BLOCKS: &[Implementation] = &[
    Implementation {
        kind: "convert",
        build: |c| convert(c.params),
    },
    Implementation {
        kind: "complex_to_real",
        build: |c| complex_to_real(c.params),
    },
    Implementation {
        kind: "complex_to_imag",
        build: |c| complex_to_imag(c.params),
    },
    Implementation {
        kind: "complex_to_mag",
        build: |c| complex_to_mag(c.params),
    },
    Implementation {
        kind: "complex_to_mag_squared",
        build: |c| complex_to_mag_squared(c.params),
    },
    Implementation {
        kind: "complex_to_arg",
        build: |c| complex_to_arg(c.params),
    },
    Implementation {
        kind: "to_db",
        build: |c| to_db(c.params),
    },
];

/// Lowest value `to_db` produces before its offset is added, in dB.
pub const DB_FLOOR: f64 = -300.0;

fn vlen(p: &Params) -> usize {
    p.u64("vlen").unwrap_or(1).max(1) as usize
}

/// An input type of `convert` and the float type it becomes.
pub trait ToFloat: Item {
    /// f32 for real types, cf32 for complex ones.
    type Out: Item;
    /// `(self − bias) · scale`, in f64, rounded once to f32.
    fn to_float(self, bias: f64, scale: f64) -> Self::Out;
}

macro_rules! to_float_real {
    ($($t:ty),*) => {$(
        impl ToFloat for $t {
            type Out = f32;
            #[inline(always)]
            fn to_float(self, bias: f64, scale: f64) -> f32 {
                ((self as f64 - bias) * scale) as f32
            }
        }
    )*};
}
to_float_real!(i8, i16, i32, u8, f32, f64);

macro_rules! to_float_complex {
    ($($t:ty),*) => {$(
        impl ToFloat for Complex<$t> {
            type Out = Complex32;
            #[inline(always)]
            fn to_float(self, bias: f64, scale: f64) -> Complex32 {
                Complex32::new(
                    ((self.re as f64 - bias) * scale) as f32,
                    ((self.im as f64 - bias) * scale) as f32,
                )
            }
        }
    )*};
}
to_float_complex!(i8, i16, f64);

/// `convert`: integer or float items to f32/cf32.
///
/// Input `in` (`from` x `vlen`), output `out` (f32 for real `from`, cf32 for
/// complex `from`, x `vlen`). Parameters: `from`, `vlen`, `scale` (optional;
/// default full scale to ±1, see the module docs; u8 keeps its 127.5 bias).
pub struct Convert<I: ToFloat> {
    bias: f64,
    scale: f64,
    vlen: usize,
    _t: PhantomData<I>,
}

impl<I: ToFloat> Block for Convert<I> {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.input_items(0).min(io.output_items(0));
        if n == 0 {
            return Ok(Work::Ok);
        }
        let s = n * self.vlen;
        let inp = &io.input::<I>(0)[..s];
        let out = &mut io.output::<I::Out>(0)[..s];
        let (bias, scale) = (self.bias, self.scale);
        for (o, x) in out.iter_mut().zip(inp) {
            *o = x.to_float(bias, scale);
        }
        io.consume(0, n);
        io.produce(0, n);
        Ok(Work::Ok)
    }

    fn get(&self, name: &str) -> Option<Pmt> {
        (name == "scale").then_some(Pmt::F64(self.scale))
    }
}

fn convert_t<I: ToFloat>(p: &Params, default_scale: f64, bias: f64) -> BuiltBlock {
    let vlen = vlen(p);
    let scale = p.f64("scale").unwrap_or(default_scale);
    BuiltBlock::new(Convert::<I> {
        bias,
        scale,
        vlen,
        _t: PhantomData,
    })
}

pub fn convert(p: &Params) -> Result<BuiltBlock, String> {
    use ItemType::*;
    let from = p.item_type("from").ok_or_else(|| {
        "`from` is required: the input item type (i8, cs8, i16, cs16, i32, u8, f32, f64 or cf64)"
            .to_string()
    })?;
    if let Some(s) = p.f64("scale") {
        if !s.is_finite() {
            return Err(format!("`scale` must be a finite number, got {s}"));
        }
    }
    const I8_SCALE: f64 = 1.0 / 128.0;
    const I16_SCALE: f64 = 1.0 / 32768.0;
    const I32_SCALE: f64 = 1.0 / 2147483648.0;
    Ok(match from {
        I8 => convert_t::<i8>(p, I8_SCALE, 0.0),
        Cs8 => convert_t::<Complex<i8>>(p, I8_SCALE, 0.0),
        I16 => convert_t::<i16>(p, I16_SCALE, 0.0),
        Cs16 => convert_t::<Complex<i16>>(p, I16_SCALE, 0.0),
        I32 => convert_t::<i32>(p, I32_SCALE, 0.0),
        U8 => convert_t::<u8>(p, I8_SCALE, 127.5),
        F32 => convert_t::<f32>(p, 1.0, 0.0),
        F64 => convert_t::<f64>(p, 1.0, 0.0),
        Cf64 => convert_t::<Complex<f64>>(p, 1.0, 0.0),
        other => {
            return Err(format!(
                "convert cannot read {other}; `from` must be one of i8, cs8, i16, cs16, i32, u8, \
                 f32, f64, cf64"
            ))
        }
    })
}

/// Which part of a complex number `ComplexTo` extracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Real,
    Imag,
    Mag,
    MagSquared,
    Arg,
}

/// `complex_to_real`, `complex_to_imag`, `complex_to_mag`,
/// `complex_to_mag_squared`, `complex_to_arg`.
///
/// Input `in` (cf32 x `vlen`), output `out` (f32 x `vlen`). Parameter:
/// `vlen`. See the module docs for the formulas.
pub struct ComplexTo {
    part: Part,
    vlen: usize,
}

#[inline(always)]
fn map(inp: &[Complex32], out: &mut [f32], f: impl Fn(Complex32) -> f32) {
    for (o, z) in out.iter_mut().zip(inp) {
        *o = f(*z);
    }
}

impl Block for ComplexTo {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.input_items(0).min(io.output_items(0));
        if n == 0 {
            return Ok(Work::Ok);
        }
        let s = n * self.vlen;
        let inp = &io.input::<Complex32>(0)[..s];
        let out = &mut io.output::<f32>(0)[..s];
        match self.part {
            Part::Real => map(inp, out, |z| z.re),
            Part::Imag => map(inp, out, |z| z.im),
            Part::Mag => map(inp, out, |z| {
                let (re, im) = (z.re as f64, z.im as f64);
                (re * re + im * im).sqrt() as f32
            }),
            Part::MagSquared => map(inp, out, |z| z.re * z.re + z.im * z.im),
            Part::Arg => map(inp, out, |z| z.im.atan2(z.re)),
        }
        io.consume(0, n);
        io.produce(0, n);
        Ok(Work::Ok)
    }
}

fn complex_to(p: &Params, part: Part) -> Result<BuiltBlock, String> {
    let vlen = vlen(p);
    Ok(BuiltBlock::new(ComplexTo { part, vlen }))
}

pub fn complex_to_real(p: &Params) -> Result<BuiltBlock, String> {
    complex_to(p, Part::Real)
}

pub fn complex_to_imag(p: &Params) -> Result<BuiltBlock, String> {
    complex_to(p, Part::Imag)
}

pub fn complex_to_mag(p: &Params) -> Result<BuiltBlock, String> {
    complex_to(p, Part::Mag)
}

pub fn complex_to_mag_squared(p: &Params) -> Result<BuiltBlock, String> {
    complex_to(p, Part::MagSquared)
}

pub fn complex_to_arg(p: &Params) -> Result<BuiltBlock, String> {
    complex_to(p, Part::Arg)
}

/// `to_db`: linear values to decibels.
///
/// Input `in` (f32 x `vlen`), output `out` (f32 x `vlen`). Parameters:
/// `vlen`, `quantity` (`power`: 10·log10(x); `amplitude`: 20·log10(|x|)),
/// `offset` (dB added to the result). The dB value is floored at
/// [`DB_FLOOR`] before the offset is added; NaN stays NaN.
pub struct ToDb {
    /// 10 for power, 20 for amplitude.
    factor: f64,
    amplitude: bool,
    offset: f64,
    vlen: usize,
}

impl ToDb {
    /// The decibel value of one input.
    #[inline]
    pub fn db(&self, x: f32) -> f32 {
        if x.is_nan() {
            return f32::NAN;
        }
        let x = if self.amplitude { x.abs() } else { x };
        let x = x as f64;
        let db = if x > 0.0 {
            (self.factor * x.log10()).max(DB_FLOOR)
        } else {
            DB_FLOOR
        };
        (db + self.offset) as f32
    }
}

impl Block for ToDb {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.input_items(0).min(io.output_items(0));
        if n == 0 {
            return Ok(Work::Ok);
        }
        let s = n * self.vlen;
        let inp = &io.input::<f32>(0)[..s];
        let out = &mut io.output::<f32>(0)[..s];
        for (o, x) in out.iter_mut().zip(inp) {
            *o = self.db(*x);
        }
        io.consume(0, n);
        io.produce(0, n);
        Ok(Work::Ok)
    }

    fn get(&self, name: &str) -> Option<Pmt> {
        Some(match name {
            "quantity" => Pmt::from(if self.amplitude { "amplitude" } else { "power" }),
            "offset" => Pmt::F64(self.offset),
            _ => return None,
        })
    }
}

pub fn to_db(p: &Params) -> Result<BuiltBlock, String> {
    let vlen = vlen(p);
    let amplitude = match p.str("quantity").unwrap_or("power") {
        "power" => false,
        "amplitude" => true,
        q => return Err(format!("unknown quantity `{q}`; use power or amplitude")),
    };
    let offset = p.f64("offset").unwrap_or(0.0);
    if !offset.is_finite() {
        return Err(format!(
            "`offset` must be a finite number of dB, got {offset}"
        ));
    }
    Ok(BuiltBlock::new(ToDb {
        factor: if amplitude { 20.0 } else { 10.0 },
        amplitude,
        offset,
        vlen,
    }))
}
