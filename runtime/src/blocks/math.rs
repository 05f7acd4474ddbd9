//! Arithmetic: multiply/add by a constant, add/multiply streams.
//! Integer types wrap on overflow.

use flowmesh_model::{Params, Pmt};
use num_complex::{Complex, Complex64};

use crate::block::{Block, BlockError, BuiltBlock, Result, Work};
use crate::io::{Item, WorkIo};

use super::{stream_type, FromComplex, Implementation};

/// The blocks of this module.
pub(super) const BLOCKS: &[Implementation] = &[
    Implementation {
        kind: "multiply_const",
        build: |c| multiply_const(c.params),
    },
    Implementation {
        kind: "add_const",
        build: |c| add_const(c.params),
    },
    Implementation {
        kind: "add",
        build: |c| add(c.params),
    },
    Implementation {
        kind: "multiply",
        build: |c| multiply(c.params),
    },
];

/// Item types with addition and multiplication.
pub trait Arith: Item + FromComplex {
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// `out[i] = inp[i] * k` (specialised where the compiler needs help).
    #[inline]
    fn mul_const(inp: &[Self], out: &mut [Self], k: Self) {
        map_const(inp, out, k, true)
    }
}
macro_rules! arith_float {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            #[inline(always)] fn add(self, o: Self) -> Self { self + o }
            #[inline(always)] fn mul(self, o: Self) -> Self { self * o }
        }
    )*};
}
macro_rules! arith_int {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            #[inline(always)] fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            #[inline(always)] fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
        }
    )*};
}
arith_float!(f32, f64, Complex<f64>);

impl Arith for Complex<f32> {
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self * o
    }
    #[inline]
    fn mul_const(inp: &[Self], out: &mut [Self], k: Self) {
        mul_const_cf32(inp, out, k)
    }
}

/// Complex × constant, written so it vectorises: eight items are split into
/// real and imaginary lanes, multiplied, and interleaved again. Compiled for
/// AVX2+FMA and SSE4.1 and picked at run time by CPU.
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
fn mul_const_cf32(inp: &[Complex<f32>], out: &mut [Complex<f32>], k: Complex<f32>) {
    let n = inp.len().min(out.len());
    let whole = n / 8 * 8;
    for (oc, xc) in out[..whole]
        .chunks_exact_mut(8)
        .zip(inp[..whole].chunks_exact(8))
    {
        let mut re = [0f32; 8];
        let mut im = [0f32; 8];
        for j in 0..8 {
            re[j] = xc[j].re;
            im[j] = xc[j].im;
        }
        for j in 0..8 {
            oc[j] = Complex::new(re[j] * k.re - im[j] * k.im, re[j] * k.im + im[j] * k.re);
        }
    }
    for (o, x) in out[whole..n].iter_mut().zip(&inp[whole..n]) {
        *o = x * k;
    }
}

/// `out[i] = inp[i] ⊙ k` for any item type, vectorised per CPU.
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
fn map_const<T: Arith>(inp: &[T], out: &mut [T], k: T, multiply: bool) {
    if multiply {
        for (o, i) in out.iter_mut().zip(inp) {
            *o = i.mul(k);
        }
    } else {
        for (o, i) in out.iter_mut().zip(inp) {
            *o = i.add(k);
        }
    }
}

/// `acc[i] = acc[i] ⊙ x[i]`, vectorised per CPU.
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
fn combine<T: Arith>(acc: &mut [T], x: &[T], multiply: bool) {
    if multiply {
        for (o, v) in acc.iter_mut().zip(x) {
            *o = o.mul(*v);
        }
    } else {
        for (o, v) in acc.iter_mut().zip(x) {
            *o = o.add(*v);
        }
    }
}

arith_int!(i8, i16, i32, u8, u16, u32, u64);
impl Arith for Complex<i8> {
    fn add(self, o: Self) -> Self {
        Complex::new(self.re.wrapping_add(o.re), self.im.wrapping_add(o.im))
    }
    fn mul(self, o: Self) -> Self {
        Complex::new(
            self.re
                .wrapping_mul(o.re)
                .wrapping_sub(self.im.wrapping_mul(o.im)),
            self.re
                .wrapping_mul(o.im)
                .wrapping_add(self.im.wrapping_mul(o.re)),
        )
    }
}
impl Arith for Complex<i16> {
    fn add(self, o: Self) -> Self {
        Complex::new(self.re.wrapping_add(o.re), self.im.wrapping_add(o.im))
    }
    fn mul(self, o: Self) -> Self {
        Complex::new(
            self.re
                .wrapping_mul(o.re)
                .wrapping_sub(self.im.wrapping_mul(o.im)),
            self.re
                .wrapping_mul(o.im)
                .wrapping_add(self.im.wrapping_mul(o.re)),
        )
    }
}

/// `multiply_const` / `add_const`: one input `in`, one output `out`;
/// `constant` is settable.
pub struct ConstOp<T: Arith> {
    k: T,
    k64: Complex64,
    multiply: bool,
}

impl<T: Arith> Block for ConstOp<T> {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.input_items(0).min(io.output_items(0));
        if n == 0 {
            return Ok(Work::Ok);
        }
        let inp = io.input::<T>(0);
        let out = io.output::<T>(0);
        let s = n * (inp.len() / io.input_items(0));
        let k = self.k;
        if self.multiply {
            T::mul_const(&inp[..s], &mut out[..s], k);
        } else {
            map_const(&inp[..s], &mut out[..s], k, false);
        }
        io.consume(0, n);
        io.produce(0, n);
        Ok(Work::Ok)
    }
    fn set(&mut self, name: &str, value: &Pmt) -> Result<()> {
        if name != "constant" {
            return Err(BlockError::NotSettable(name.into()));
        }
        let c = value.as_complex().ok_or_else(|| BlockError::BadValue {
            name: name.into(),
            message: "expected a number".into(),
        })?;
        self.k = T::from_c64(c);
        self.k64 = c;
        Ok(())
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        (name == "constant").then_some(Pmt::Complex(self.k64))
    }
}

fn const_op<T: Arith>(p: &Params, multiply: bool) -> Result<BuiltBlock, String> {
    let k64 = p
        .complex("constant")
        .unwrap_or(Complex64::new(if multiply { 1.0 } else { 0.0 }, 0.0));
    Ok(BuiltBlock::new(ConstOp::<T> {
        k: T::from_c64(k64),
        k64,
        multiply,
    }))
}

pub fn multiply_const(p: &Params) -> Result<BuiltBlock, String> {
    crate::dispatch_item!(stream_type(p).item, const_op(p, true))
}

pub fn add_const(p: &Params) -> Result<BuiltBlock, String> {
    crate::dispatch_item!(stream_type(p).item, const_op(p, false))
}

/// `add` / `multiply`: inputs `in0..inN-1`, output `out`.
pub struct StreamOp<T: Arith> {
    multiply: bool,
    _t: std::marker::PhantomData<T>,
}

impl<T: Arith> Block for StreamOp<T> {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let mut n = io.output_items(0);
        for i in 0..io.num_inputs() {
            n = n.min(io.input_items(i));
        }
        if n == 0 {
            return Ok(Work::Ok);
        }
        let out = io.output::<T>(0);
        let s = n * (out.len() / io.output_items(0));
        out[..s].copy_from_slice(&io.input::<T>(0)[..s]);
        for i in 1..io.num_inputs() {
            combine(&mut out[..s], &io.input::<T>(i)[..s], self.multiply);
        }
        for i in 0..io.num_inputs() {
            io.consume(i, n);
        }
        io.produce(0, n);
        Ok(Work::Ok)
    }
}

fn stream_op<T: Arith>(multiply: bool) -> Result<BuiltBlock, String> {
    Ok(BuiltBlock::new(StreamOp::<T> {
        multiply,
        _t: std::marker::PhantomData,
    }))
}

pub fn add(p: &Params) -> Result<BuiltBlock, String> {
    crate::dispatch_item!(stream_type(p).item, stream_op(false))
}

pub fn multiply(p: &Params) -> Result<BuiltBlock, String> {
    crate::dispatch_item!(stream_type(p).item, stream_op(true))
}
