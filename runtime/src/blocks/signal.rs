//! Synthetic sources: signal (cos, sin, square, const) and Gaussian noise, both
//! seekable by item offset.
//!
//! Neither source carries state from one item to the next beyond its item
//! counter: the value of item `n` is a pure function of `n` and the
//! parameters, so any chunking (and any restart from an offset) gives the same
//! samples bit for bit.
//!
//! # Signal source phase
//!
//! The phase is a 64-bit integer accumulator, a full turn being 2⁶⁴:
//!
//! - `phase_inc = round(frequency / samp_rate · 2⁶⁴)` (wrapping, so negative
//!   frequencies count down);
//! - `phase0 = round(phase / 2π · 2⁶⁴)` (wrapping);
//! - `phase(n) = phase0 + n · phase_inc` (wrapping);
//! - the angle of item `n` is `phase(n)` read as a signed number times
//!   `2π / 2⁶⁴`, in `[−π, π)`.
//!
//! Waveforms follow GNU Radio's `sig_source`:
//!
//! | waveform | f32 | cf32 |
//! | --- | --- | --- |
//! | `cos` | `A·cos(θ) + offset` | `A·exp(jθ) + offset` |
//! | `sin` | `A·sin(θ) + offset` | `A·exp(jθ) + offset` (same as `cos`, as in GNU Radio) |
//! | `square` | `A + offset` for θ in `[−π, 0)`, else `offset` | re as for f32; im is A for θ in `[−π/2, π/2)`, else 0: the same square a quarter period later, as sin is to cos |
//! | `const` | `A + offset` | `A + offset` (real) |
//!
//! One difference from GNU Radio: it compares a float phase with a double
//! −π/2, so at exactly θ = −π/2 (reached only when samp_rate/frequency is a
//! multiple of 4) its complex square has im = 0; here both parts keep a 50%
//! duty cycle.
//!
//! For cf32 the offset is added to the real part only. Values are computed in
//! f64 and rounded once to f32; sine and cosine come from [`sin_cos_phase`],
//! which reduces the integer phase exactly and is accurate to 1e-11.
//!
//! The cos and sin waveforms evaluate [`sin_cos_phase`] directly for every
//! item (no recurrence, no table), eight items at a time in SIMD lanes,
//! compiled for AVX-512, AVX2+FMA and SSE4.1 and picked at run time by CPU.
//! Every version gives the values that calling [`sin_cos_phase`] per item
//! gives, bit for bit, so the output does not depend on the CPU either.
//!
//! Changing `frequency` while running keeps the phase continuous: `phase0` is
//! recomputed so that the phase of the next item is unchanged, and from that
//! item on the phase is again a pure function of the item offset.
//!
//! # Noise source
//!
//! Each item `n` draws two 64-bit hashes `h(seed, 2n)` and `h(seed, 2n+1)`
//! (SplitMix64's finaliser over a Weyl sequence keyed by the seed) and turns
//! them into two independent standard normals with the Box–Muller transform
//! (the first hash gives the radius, the second the angle; see
//! [`normal_pair`]).
//! f32 output uses the first (`amplitude · z₀`); cf32 output uses both, each
//! scaled by `amplitude/√2`, so that the total power is `amplitude²`.

use std::f64::consts::TAU;

use flowmesh_model::{ItemType, Params, Pmt};
use num_complex::Complex32;

use crate::block::{Block, BlockError, BuiltBlock, Result, Work};
use crate::io::WorkIo;

use super::Implementation;

/// The blocks of this module.
pub(super) const BLOCKS: &[Implementation] = &[
    Implementation {
        kind: "signal_source",
        build: |c| signal_source(c.params, c.setup.start),
    },
    Implementation {
        kind: "noise_source",
        build: |c| noise_source(c.params, c.setup.start),
    },
];

/// 2⁶⁴ as a float.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// Radians per unit of the 64-bit phase accumulator.
const RAD_PER_UNIT: f64 = TAU / TWO_POW_64;

/// Converts a number of turns (cycles) to a 64-bit phase, wrapping:
/// `round(turns · 2⁶⁴) mod 2⁶⁴`. Non-finite values give 0.
pub fn turns_to_phase(turns: f64) -> u64 {
    if !turns.is_finite() {
        return 0;
    }
    // The fractional part of a float is exact, and so is scaling by 2⁶⁴.
    let frac = turns - turns.trunc();
    ((frac * TWO_POW_64).round() as i128) as u64
}

/// The angle in radians, in `[−π, π)`, of a 64-bit phase.
#[inline]
pub fn phase_to_angle(phase: u64) -> f64 {
    (phase as i64) as f64 * RAD_PER_UNIT
}

/// `(sin θ, cos θ)` of the angle θ of a 64-bit phase, within 1e-11.
///
/// The range reduction is exact on the integer phase: the nearest quarter
/// turn comes from the top bits and leaves a residual angle in `[−π/4, π/4)`,
/// where Taylor polynomials of degree 11 (sin) and 12 (cos) are evaluated in
/// f64. About four times faster than `f64::sin_cos`, and like it a pure
/// function of the phase.
#[inline]
pub fn sin_cos_phase(phase: u64) -> (f64, f64) {
    let q = quadrant(phase);
    let x = (phase.wrapping_sub(q << 62) as i64) as f64 * RAD_PER_UNIT;
    sin_cos_turned(q, x)
}

/// The quarter turn (0..4) nearest to a phase.
#[inline(always)]
fn quadrant(phase: u64) -> u64 {
    phase.wrapping_add(1 << 61) >> 62
}

/// `(sin, cos)` of `x + q·π/2`, for a residual angle `x` in `[−π/4, π/4]`.
#[inline(always)]
fn sin_cos_turned(q: u64, x: f64) -> (f64, f64) {
    const S3: f64 = -1.0 / 6.0;
    const S5: f64 = 1.0 / 120.0;
    const S7: f64 = -1.0 / 5040.0;
    const S9: f64 = 1.0 / 362_880.0;
    const S11: f64 = -1.0 / 39_916_800.0;
    const C2: f64 = -1.0 / 2.0;
    const C4: f64 = 1.0 / 24.0;
    const C6: f64 = -1.0 / 720.0;
    const C8: f64 = 1.0 / 40_320.0;
    const C10: f64 = -1.0 / 3_628_800.0;
    const C12: f64 = 1.0 / 479_001_600.0;
    let x2 = x * x;
    let s = x * (1.0 + x2 * (S3 + x2 * (S5 + x2 * (S7 + x2 * (S9 + x2 * S11)))));
    let c = 1.0 + x2 * (C2 + x2 * (C4 + x2 * (C6 + x2 * (C8 + x2 * (C10 + x2 * C12)))));
    // Turn by q quarter turns: q = 1 gives (c, −s), 2 gives (−s, −c), 3 gives (−c, s).
    // Written as selects and bit flips (no branches) so that it vectorises.
    let odd = q & 1 == 1;
    let sa = if odd { c } else { s };
    let ca = if odd { s } else { c };
    let sin_neg = (q >> 1) & 1;
    let cos_neg = (q ^ (q >> 1)) & 1;
    (
        f64::from_bits(sa.to_bits() ^ (sin_neg << 63)),
        f64::from_bits(ca.to_bits() ^ (cos_neg << 63)),
    )
}

/// [`sin_cos_phase`], bit for bit, in a form that vectorises without
/// AVX-512: x86 has no packed i64 → f64 conversion before AVX-512DQ, so the
/// residual `r` (in `[−2⁶¹, 2⁶¹)`) is converted in two exact 32-bit halves,
/// `r = hi·2³² + lo`, and the one addition `hi·2³² + lo` rounds exactly as
/// `r as f64` does (both are correctly rounded, to nearest even).
#[inline(always)]
fn sin_cos_phase_lanewise(phase: u64) -> (f64, f64) {
    /// The bits of 2⁵²: OR-ing an integer below 2³² into its mantissa gives
    /// 2⁵² + that integer, exactly.
    const EXP52: u64 = 0x4330_0000_0000_0000;
    const TWO_52: f64 = 4_503_599_627_370_496.0;
    const TWO_29: f64 = 536_870_912.0;
    const TWO_32: f64 = 4_294_967_296.0;
    let q = quadrant(phase);
    // u = r + 2⁶¹ lies in [0, 2⁶²), so its top half is hi + 2²⁹ < 2³⁰ and its
    // bottom half is lo; every step below is exact but the final sum.
    let u = phase.wrapping_sub(q << 62).wrapping_add(1 << 61);
    let hi = f64::from_bits(EXP52 | (u >> 32)) - (TWO_52 + TWO_29);
    let lo = f64::from_bits(EXP52 | (u & 0xFFFF_FFFF)) - TWO_52;
    let x = (hi * TWO_32 + lo) * RAD_PER_UNIT;
    sin_cos_turned(q, x)
}

/// Items per step of the waveform kernels.
const LANES: usize = 8;

/// The phase steps of the lanes of one kernel step: `j · inc`.
#[inline(always)]
fn lane_steps(inc: u64) -> [u64; LANES] {
    let mut steps = [0u64; LANES];
    for (j, s) in steps.iter_mut().enumerate() {
        *s = (j as u64).wrapping_mul(inc);
    }
    steps
}

/// `out[i] = A·exp(jθ) + offset` for the phases `phase + i·inc`: the cf32
/// cos/sin waveform. Eight items at a time through
/// [`sin_cos_phase_lanewise`], compiled for AVX-512, AVX2+FMA and SSE4.1 and
/// picked at run time by CPU; every version gives what [`sin_cos_phase`]
/// per item gives, bit for bit (no fused multiply-adds: Rust never contracts
/// `a * b + c`).
#[multiversion::multiversion(targets(
    "x86_64+avx+avx2+fma+avx512f+avx512vl+avx512dq",
    "x86_64+avx+avx2+fma",
    "x86_64+sse4.1"
))]
fn fill_exp(out: &mut [Complex32], phase: u64, inc: u64, a: f64, off: f64) {
    let steps = lane_steps(inc);
    let stride = inc.wrapping_mul(LANES as u64);
    let mut base = phase;
    let mut chunks = out.chunks_exact_mut(LANES);
    for oc in &mut chunks {
        let mut re = [0f32; LANES];
        let mut im = [0f32; LANES];
        for j in 0..LANES {
            let (s, c) = sin_cos_phase_lanewise(base.wrapping_add(steps[j]));
            re[j] = (a * c + off) as f32;
            im[j] = (a * s) as f32;
        }
        for j in 0..LANES {
            oc[j] = Complex32::new(re[j], im[j]);
        }
        base = base.wrapping_add(stride);
    }
    for o in chunks.into_remainder() {
        let (s, c) = sin_cos_phase(base);
        *o = Complex32::new((a * c + off) as f32, (a * s) as f32);
        base = base.wrapping_add(inc);
    }
}

/// `out[i] = A·cos θ + offset` (or `A·sin θ + offset` when `sine`) for the
/// phases `phase + i·inc`: the f32 cos and sin waveforms. Vectorised like
/// [`fill_exp`], and like it equal to [`sin_cos_phase`] per item.
#[multiversion::multiversion(targets(
    "x86_64+avx+avx2+fma+avx512f+avx512vl+avx512dq",
    "x86_64+avx+avx2+fma",
    "x86_64+sse4.1"
))]
fn fill_sinusoid(out: &mut [f32], phase: u64, inc: u64, a: f64, off: f64, sine: bool) {
    let steps = lane_steps(inc);
    let stride = inc.wrapping_mul(LANES as u64);
    let mut base = phase;
    let mut chunks = out.chunks_exact_mut(LANES);
    for oc in &mut chunks {
        for j in 0..LANES {
            let (s, c) = sin_cos_phase_lanewise(base.wrapping_add(steps[j]));
            oc[j] = (a * if sine { s } else { c } + off) as f32;
        }
        base = base.wrapping_add(stride);
    }
    for o in chunks.into_remainder() {
        let (s, c) = sin_cos_phase(base);
        *o = (a * if sine { s } else { c } + off) as f32;
        base = base.wrapping_add(inc);
    }
}

/// Waveforms of `signal_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waveform {
    Cos,
    Sin,
    Square,
    Const,
}

impl Waveform {
    fn parse(s: &str) -> Option<Waveform> {
        Some(match s {
            "cos" => Waveform::Cos,
            "sin" => Waveform::Sin,
            "square" => Waveform::Square,
            "const" => Waveform::Const,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Waveform::Cos => "cos",
            Waveform::Sin => "sin",
            Waveform::Square => "square",
            Waveform::Const => "const",
        }
    }
}

/// `signal_source`: a cosine, sine, square or constant waveform.
///
/// Output `out` (`type`: f32 or cf32, scalar). Parameters: `waveform`
/// (cos, sin, square, const), `samp_rate` (Hz, required, > 0), `frequency`
/// (Hz, settable), `amplitude` (settable), `offset` (settable; real part only
/// for cf32), `phase` (initial phase, rad). Settable parameters arrive on the
/// `cmd` message input or through `set`. See the module docs for the exact
/// phase arithmetic.
pub struct SignalSource {
    complex: bool,
    waveform: Waveform,
    samp_rate: f64,
    frequency: f64,
    amplitude: f64,
    offset: f64,
    phase: f64,
    /// Phase of item 0 (after frequency changes: of the item where the
    /// current frequency would have had to start to be continuous).
    phase0: u64,
    phase_inc: u64,
    /// Items produced so far: the offset of the next item.
    next: u64,
}

impl SignalSource {
    /// The phase of item `n`.
    #[inline]
    pub fn phase_of(&self, n: u64) -> u64 {
        self.phase0.wrapping_add(n.wrapping_mul(self.phase_inc))
    }

    fn fill_real(&self, out: &mut [f32]) {
        let (a, off, inc) = (self.amplitude, self.offset, self.phase_inc);
        let mut ph = self.phase_of(self.next);
        match self.waveform {
            Waveform::Cos => fill_sinusoid(out, ph, inc, a, off, false),
            Waveform::Sin => fill_sinusoid(out, ph, inc, a, off, true),
            Waveform::Square => {
                let (hi, lo) = ((a + off) as f32, off as f32);
                for o in out {
                    // Negative angle, [−π, 0): the top bit is set.
                    *o = if (ph as i64) < 0 { hi } else { lo };
                    ph = ph.wrapping_add(inc);
                }
            }
            Waveform::Const => out.fill((a + off) as f32),
        }
    }

    fn fill_complex(&self, out: &mut [Complex32]) {
        let (a, off, inc) = (self.amplitude, self.offset, self.phase_inc);
        let mut ph = self.phase_of(self.next);
        match self.waveform {
            Waveform::Cos | Waveform::Sin => fill_exp(out, ph, inc, a, off),
            Waveform::Square => {
                // GNU Radio: θ < −π/2: (A, 0); θ < 0: (A, A); θ < π/2: (0, A);
                // else (0, 0). In terms of the top two phase bits b63 b62:
                // re is high when b63 is set, im when b63 == b62.
                let (hi, lo) = ((a + off) as f32, off as f32);
                let (ihi, ilo) = (a as f32, 0.0f32);
                for o in out {
                    let b63 = ph >> 63;
                    let b62 = (ph >> 62) & 1;
                    *o = Complex32::new(
                        if b63 == 1 { hi } else { lo },
                        if b63 == b62 { ihi } else { ilo },
                    );
                    ph = ph.wrapping_add(inc);
                }
            }
            Waveform::Const => out.fill(Complex32::new((a + off) as f32, 0.0)),
        }
    }
}

fn number(name: &str, value: &Pmt) -> Result<f64> {
    match value.as_f64() {
        Some(v) if v.is_finite() => Ok(v),
        _ => Err(BlockError::BadValue {
            name: name.into(),
            message: format!("expected a finite number, got {value}"),
        }),
    }
}

impl Block for SignalSource {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.output_items(0);
        if n == 0 {
            return Ok(Work::Ok);
        }
        if self.complex {
            let out = io.output::<Complex32>(0);
            self.fill_complex(&mut out[..n]);
        } else {
            let out = io.output::<f32>(0);
            self.fill_real(&mut out[..n]);
        }
        io.produce(0, n);
        self.next = self.next.wrapping_add(n as u64);
        Ok(Work::Ok)
    }

    fn set(&mut self, name: &str, value: &Pmt) -> Result<()> {
        match name {
            "frequency" => {
                let f = number(name, value)?;
                let now = self.phase_of(self.next);
                self.frequency = f;
                self.phase_inc = turns_to_phase(f / self.samp_rate);
                self.phase0 = now.wrapping_sub(self.next.wrapping_mul(self.phase_inc));
            }
            "amplitude" => self.amplitude = number(name, value)?,
            "offset" => self.offset = number(name, value)?,
            _ => return Err(BlockError::NotSettable(name.into())),
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Option<Pmt> {
        Some(match name {
            "type" => Pmt::from(if self.complex { "cf32" } else { "f32" }),
            "waveform" => Pmt::from(self.waveform.name()),
            "samp_rate" => Pmt::F64(self.samp_rate),
            "frequency" => Pmt::F64(self.frequency),
            "amplitude" => Pmt::F64(self.amplitude),
            "offset" => Pmt::F64(self.offset),
            "phase" => Pmt::F64(self.phase),
            _ => return None,
        })
    }
}

/// The output type of a synthetic source: f32 or cf32.
fn source_type(p: &Params, kind: &str) -> Result<bool, String> {
    match p.item_type("type").unwrap_or(ItemType::Cf32) {
        ItemType::Cf32 => Ok(true),
        ItemType::F32 => Ok(false),
        t => Err(format!(
            "{kind} cannot produce {t}; use type cf32 or f32 (and a convert block if needed)"
        )),
    }
}

/// A finite parameter value, or a sentence saying what is wrong.
fn finite(p: &Params, name: &str, default: f64) -> Result<f64, String> {
    let v = p.f64(name).unwrap_or(default);
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("`{name}` must be a finite number, got {v}"))
    }
}

/// Builds a `signal_source` whose first item is item `start` of the whole
/// stream (0, or where a resumed segment continues): the phase is computed
/// from the index, so the samples equal an uninterrupted run's bit for bit.
pub fn signal_source(p: &Params, start: u64) -> Result<BuiltBlock, String> {
    let complex = source_type(p, "signal_source")?;
    let wname = p.str("waveform").unwrap_or("cos");
    let waveform = Waveform::parse(wname)
        .ok_or_else(|| format!("unknown waveform `{wname}`; use one of cos, sin, square, const"))?;
    let samp_rate = p.f64("samp_rate").ok_or_else(|| {
        "`samp_rate` is required: the sample rate in Hz that `frequency` is relative to".to_string()
    })?;
    if !(samp_rate.is_finite() && samp_rate > 0.0) {
        return Err(format!(
            "`samp_rate` must be a positive number of samples per second, got {samp_rate}"
        ));
    }
    let frequency = finite(p, "frequency", 1000.0)?;
    let amplitude = finite(p, "amplitude", 1.0)?;
    let offset = finite(p, "offset", 0.0)?;
    let phase = finite(p, "phase", 0.0)?;
    let block = SignalSource {
        complex,
        waveform,
        samp_rate,
        frequency,
        amplitude,
        offset,
        phase,
        phase0: turns_to_phase(phase / TAU),
        phase_inc: turns_to_phase(frequency / samp_rate),
        next: start,
    };
    Ok(BuiltBlock::new(block))
}

/// SplitMix64's golden-ratio increment.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output finaliser (a bijection of u64).
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The stream key of a seed.
#[inline]
fn noise_key(seed: u64) -> u64 {
    // Offset by π's digits so seed 0 does not give key 0.
    mix64(seed ^ 0x243F_6A88_85A3_08D3)
}

/// Counter-based hash: the `counter`-th output (from 0) of a SplitMix64
/// stream started at `key`.
#[inline]
fn hash(key: u64, counter: u64) -> u64 {
    mix64(key.wrapping_add(counter.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// Two independent standard normals for item `n`, by Box–Muller:
/// `r = √(−2 ln u₁)` with `u₁ = (⌊h(2n) / 2¹¹⌋ + 1) / 2⁵³` in `(0, 1]`, and
/// the angle `θ = h(2n+1) · 2π / 2⁶⁴`; returns `(r cos θ, r sin θ)`.
#[inline]
pub fn normal_pair(key: u64, n: u64) -> (f64, f64) {
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    let c = n.wrapping_mul(2);
    // u1 in (0, 1] so the logarithm is finite.
    let u1 = ((hash(key, c) >> 11) + 1) as f64 * SCALE;
    let r = (-2.0 * u1.ln()).sqrt();
    // The second hash is the angle, as a 64-bit phase.
    let (s, co) = sin_cos_phase(hash(key, c.wrapping_add(1)));
    (r * co, r * s)
}

/// `noise_source`: Gaussian noise from a counter-based generator.
///
/// Output `out` (`type`: f32 or cf32, scalar). Parameters: `amplitude`
/// (standard deviation, settable; for cf32 each of re and im has standard
/// deviation `amplitude/√2`), `seed` (generator seed), `samp_rate` (optional,
/// recorded only). Item `n` depends only on `seed`, `n` and the amplitude in
/// force; see the module docs.
pub struct NoiseSource {
    complex: bool,
    amplitude: f64,
    seed: u64,
    key: u64,
    samp_rate: Option<f64>,
    next: u64,
}

impl Block for NoiseSource {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.output_items(0);
        if n == 0 {
            return Ok(Work::Ok);
        }
        let (key, first) = (self.key, self.next);
        if self.complex {
            let a = self.amplitude * std::f64::consts::FRAC_1_SQRT_2;
            let out = io.output::<Complex32>(0);
            for (i, o) in out[..n].iter_mut().enumerate() {
                let (z0, z1) = normal_pair(key, first.wrapping_add(i as u64));
                *o = Complex32::new((a * z0) as f32, (a * z1) as f32);
            }
        } else {
            let a = self.amplitude;
            let out = io.output::<f32>(0);
            for (i, o) in out[..n].iter_mut().enumerate() {
                let (z0, _) = normal_pair(key, first.wrapping_add(i as u64));
                *o = (a * z0) as f32;
            }
        }
        io.produce(0, n);
        self.next = self.next.wrapping_add(n as u64);
        Ok(Work::Ok)
    }

    fn set(&mut self, name: &str, value: &Pmt) -> Result<()> {
        match name {
            "amplitude" => {
                let a = number(name, value)?;
                if a < 0.0 {
                    return Err(BlockError::BadValue {
                        name: name.into(),
                        message: format!("must be at least 0, got {a}"),
                    });
                }
                self.amplitude = a;
                Ok(())
            }
            _ => Err(BlockError::NotSettable(name.into())),
        }
    }

    fn get(&self, name: &str) -> Option<Pmt> {
        Some(match name {
            "type" => Pmt::from(if self.complex { "cf32" } else { "f32" }),
            "amplitude" => Pmt::F64(self.amplitude),
            "seed" => Pmt::I64(self.seed as i64),
            "samp_rate" => self.samp_rate.map(Pmt::F64).unwrap_or(Pmt::Null),
            _ => return None,
        })
    }
}

/// Builds a `noise_source` whose first item is item `start` of the whole
/// stream (0, or where a resumed segment continues): the generator is
/// counter-based, so it jumps there directly.
pub fn noise_source(p: &Params, start: u64) -> Result<BuiltBlock, String> {
    let complex = source_type(p, "noise_source")?;
    let amplitude = finite(p, "amplitude", 1.0)?;
    if amplitude < 0.0 {
        return Err(format!(
            "`amplitude` is a standard deviation and must be at least 0, got {amplitude}"
        ));
    }
    let seed = match p.i64("seed").unwrap_or(0) {
        s if s >= 0 => s as u64,
        s => return Err(format!("`seed` must be at least 0, got {s}")),
    };
    Ok(BuiltBlock::new(NoiseSource {
        complex,
        amplitude,
        seed,
        key: noise_key(seed),
        samp_rate: p.f64("samp_rate"),
        next: start,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    #[test]
    fn phase_conversion_wraps() {
        assert_eq!(turns_to_phase(0.0), 0);
        assert_eq!(turns_to_phase(0.5), 1 << 63);
        assert_eq!(turns_to_phase(0.25), 1 << 62);
        assert_eq!(turns_to_phase(-0.25), 3 << 62);
        assert_eq!(turns_to_phase(1.25), 1 << 62);
        assert_eq!(
            turns_to_phase(-1e-6),
            (-(1e-6 * TWO_POW_64).round() as i64) as u64
        );
        assert_eq!(phase_to_angle(1 << 63), -PI);
        assert_eq!(phase_to_angle(1 << 62), PI / 2.0);
    }

    #[test]
    fn fast_sin_cos_matches_libm() {
        let mut worst: f64 = 0.0;
        let mut h = 12345u64;
        let special = [
            0,
            1,
            1 << 61,
            (1 << 61) - 1,
            1 << 62,
            1 << 63,
            3 << 62,
            u64::MAX,
        ];
        for i in 0..200_000u64 {
            let ph = if (i as usize) < special.len() {
                special[i as usize]
            } else {
                h = mix64(h.wrapping_add(GOLDEN));
                h
            };
            let (s, c) = sin_cos_phase(ph);
            let (s0, c0) = phase_to_angle(ph).sin_cos();
            worst = worst.max((s - s0).abs()).max((c - c0).abs());
        }
        assert!(worst < 1e-11, "worst error {worst:e}");
        assert_eq!(sin_cos_phase(0), (0.0, 1.0));
        assert_eq!(sin_cos_phase(1 << 62), (1.0, 0.0));
        assert_eq!(sin_cos_phase(1 << 63), (0.0, -1.0));
        assert_eq!(sin_cos_phase(3 << 62), (-1.0, 0.0));
    }

    /// Phases that exercise the reduction: quadrant edges and their
    /// neighbours, the extremes, and the points where the residual needs
    /// more than 53 bits.
    fn edge_phases() -> Vec<u64> {
        let mut v = vec![0, 1, 2, u64::MAX, u64::MAX - 1, 0x1234_5678_9ABC_DEF1];
        for q in 0..8u64 {
            let edge = q.wrapping_mul(1 << 61);
            for d in [0u64, 1, 2, 3, 1 << 8, (1 << 11) - 1, 1 << 11, (1 << 11) + 1] {
                v.push(edge.wrapping_add(d));
                v.push(edge.wrapping_sub(d));
            }
        }
        v
    }

    #[test]
    fn lanewise_sin_cos_is_sin_cos_phase_bit_for_bit() {
        let mut h = 99u64;
        let phases = edge_phases().into_iter().chain((0..1_000_000).map(|_| {
            h = mix64(h.wrapping_add(GOLDEN));
            // Vary the magnitude too, so small residuals are covered.
            h >> (h & 63)
        }));
        for ph in phases {
            let (s, c) = sin_cos_phase(ph);
            let (sl, cl) = sin_cos_phase_lanewise(ph);
            assert_eq!(
                (s.to_bits(), c.to_bits()),
                (sl.to_bits(), cl.to_bits()),
                "phase {ph:#x}"
            );
        }
    }

    #[test]
    fn kernels_equal_sin_cos_phase_per_item() {
        let mut h = 5u64;
        for len in (0..40).chain([1000, 1027]) {
            for _ in 0..20 {
                h = mix64(h.wrapping_add(GOLDEN));
                let ph = h;
                h = mix64(h.wrapping_add(GOLDEN));
                let inc = h;
                let (a, off) = (0.75, -0.125);
                let mut z = vec![Complex32::default(); len];
                fill_exp(&mut z, ph, inc, a, off);
                let mut re = vec![0f32; len];
                let mut im = vec![0f32; len];
                fill_sinusoid(&mut re, ph, inc, a, off, false);
                fill_sinusoid(&mut im, ph, inc, a, off, true);
                for i in 0..len {
                    let (s, c) = sin_cos_phase(ph.wrapping_add((i as u64).wrapping_mul(inc)));
                    let want = Complex32::new((a * c + off) as f32, (a * s) as f32);
                    assert_eq!(z[i], want, "len {len} item {i}");
                    assert_eq!(re[i], want.re, "len {len} item {i}");
                    assert_eq!(im[i], (a * s + off) as f32, "len {len} item {i}");
                }
            }
        }
    }

    /// Per-item cost of the cf32 cos waveform, this kernel against the
    /// per-item loop it replaced. Not a test: run with
    /// `cargo test --release -p flowmesh-runtime --lib -- --ignored --nocapture fill_speed`.
    #[test]
    #[ignore]
    fn fill_speed() {
        use std::time::Instant;
        fn per_item_loop(out: &mut [Complex32], ph: u64, inc: u64) {
            let mut ph = ph;
            for o in out.iter_mut() {
                let (s, c) = sin_cos_phase(ph);
                *o = Complex32::new((0.5 * c) as f32, (0.5 * s) as f32);
                ph = ph.wrapping_add(inc);
            }
        }
        fn kernel(out: &mut [Complex32], ph: u64, inc: u64) {
            fill_exp(out, ph, inc, 0.5, 0.0)
        }
        let inc = turns_to_phase(50e3 / 1e6);
        let mut buf = vec![Complex32::default(); 4096];
        for _ in 0..3 {
            for (label, f) in [
                (
                    "per-item sin_cos_phase",
                    per_item_loop as fn(&mut [Complex32], u64, u64),
                ),
                ("fill_exp", kernel),
            ] {
                let t = Instant::now();
                let mut n = 0u64;
                while n < 50_000_000 {
                    f(std::hint::black_box(&mut buf[..]), n.wrapping_mul(inc), inc);
                    n += buf.len() as u64;
                }
                let ns = t.elapsed().as_nanos() as f64 / n as f64;
                println!("{label}: {ns:.2} ns/item");
            }
        }
    }

    #[test]
    fn normals_are_finite_at_the_extremes() {
        for key in [0, 1, u64::MAX] {
            for n in [0, 1, u64::MAX / 2, u64::MAX] {
                let (a, b) = normal_pair(key, n);
                assert!(a.is_finite() && b.is_finite());
            }
        }
    }
}
