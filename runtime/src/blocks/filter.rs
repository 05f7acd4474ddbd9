//! Filters: FIR with decimation (`fir_filter`), windowed-sinc low-pass
//! (`low_pass_filter`), frequency-translating FIR (`freq_xlating_fir`) and
//! polyphase rational resampler (`rational_resampler`), with GNU Radio's
//! semantics.
//!
//! All four run on one engine, [`PolyFir`]. With taps `h[0..L)`, input
//! `x[n]` (zero for `n < 0`: GNU Radio's initial history of zeros),
//! interpolation `I` and decimation `D`, output `m` is
//!
//! ```text
//! y[m] = Σ_n h[m·D − n·I] · x[n]
//! ```
//!
//! that is the input zero-stuffed by `I`, convolved with `h`, kept every
//! `D`-th sample. For the FIR blocks (`I = 1`) this is
//! `y[i] = Σ_k h[k]·x[i·D − k]`, which is what GNU Radio's `fir_filter_xxx`
//! computes (its kernel stores the taps reversed and takes a dot product with
//! the `L` newest samples; the catalog's text `Σ_k taps[k]·x[i·D + k − (len−1)]`
//! reads the taps the other way round, which agrees only for symmetric taps
//! such as every designed low-pass). Output `i` of a FIR is produced once the `D`
//! inputs `x[i·D .. i·D + D)` have arrived, so `N` inputs give `⌊N/D⌋`
//! outputs (as in GNU Radio).
//!
//! The resampler follows GNU Radio's `rational_resampler`, which has no zero
//! history: its first output needs a full window. With `nt = ⌈L/I⌉` taps per
//! polyphase branch, its output `j` is `y[j·D + (nt−1)·I]` of the formula
//! above, i.e. branch `j·D mod I` over the window ending at input
//! `nt − 1 + ⌊j·D/I⌋`, so `N` inputs give `⌈(N − nt + 1)·I/D⌉` outputs (none
//! for `N < nt`). Checked against GNU Radio's own output in
//! `runtime/tests/gnuradio_conformance.rs`. (GNU Radio's last few outputs
//! depend on its scheduler: its forecast may stop it early, or it may filter
//! past the end of the input; FlowMesh emits exactly the outputs whose window
//! lies inside the input.)
//!
//! The engine keeps the history (and the polyphase phase) itself and consumes
//! input eagerly, so a block needing `D` items per output still progresses
//! when fed one item at a time, and the output does not depend on how the
//! input is chunked. Real taps use real arithmetic (`f32` taps, as GNU Radio's
//! float taps); the dot products run over `f32` lanes the compiler
//! vectorises.
//!
//! Runtime changes (`taps` of `fir_filter`, `cutoff`/`transition` of
//! `low_pass_filter`, `center_freq` of `freq_xlating_fir`) apply from the next
//! output on and keep the history. When the tap count grows, the samples the
//! longer filter would need from before the retained history count as zeros.

use flowmesh_model::{ItemType, Params, Pmt, TypedVec};
use num_complex::{Complex32, Complex64};

use crate::block::{Block, BlockError, BuiltBlock, Result, Work};
use crate::dsp::firdes;
use crate::dsp::window::Window;
use crate::io::{Item, WorkIo};

use super::{stream_type, Implementation};

/// The blocks of this module.
pub(super) const BLOCKS: &[Implementation] = &[
    Implementation {
        kind: "fir_filter",
        build: |c| fir_filter(c.params),
    },
    Implementation {
        kind: "low_pass_filter",
        build: |c| low_pass_filter(c.params),
    },
    Implementation {
        kind: "freq_xlating_fir",
        build: |c| freq_xlating_fir(c.params, c.setup.start),
    },
    Implementation {
        kind: "rational_resampler",
        build: |c| rational_resampler(c.params),
    },
];

// ---------------------------------------------------------------------------
// Dot-product kernels

/// The taps of one polyphase branch, stored time-reversed (so that a dot
/// product with the window `x[e−L+1 ..= e]` gives `Σ_k h[k]·x[e−k]`) and laid
/// out for the kernels.
#[derive(Debug, Clone)]
pub enum Branch {
    /// Real taps: `rev`, and `rev2` with every tap twice (for interleaved
    /// complex samples).
    Real { rev: Vec<f32>, rev2: Vec<f32> },
    /// Complex taps: `rev`, and for interleaved complex samples
    /// `a = [re, re, …]`, `b = [−im, im, …]`.
    Complex {
        rev: Vec<Complex32>,
        a: Vec<f32>,
        b: Vec<f32>,
    },
}

impl Branch {
    /// Prepares taps (in time order); real arithmetic when all are real.
    pub fn new(taps: &[Complex64]) -> Branch {
        if taps.iter().all(|t| t.im == 0.0) {
            let rev: Vec<f32> = taps.iter().rev().map(|t| t.re as f32).collect();
            let rev2 = rev.iter().flat_map(|&t| [t, t]).collect();
            Branch::Real { rev, rev2 }
        } else {
            let rev: Vec<Complex32> = taps
                .iter()
                .rev()
                .map(|t| Complex32::new(t.re as f32, t.im as f32))
                .collect();
            let a = rev.iter().flat_map(|t| [t.re, t.re]).collect();
            let b = rev.iter().flat_map(|t| [-t.im, t.im]).collect();
            Branch::Complex { rev, a, b }
        }
    }
}

/// `Σ x[k]·t[k]` over eight lanes.
#[inline(always)]
fn dot_real(x: &[f32], t: &[f32]) -> f32 {
    let n = x.len().min(t.len());
    let (x8, xr) = x[..n].as_chunks::<8>();
    let (t8, tr) = t[..n].as_chunks::<8>();
    let mut acc = [0f32; 8];
    for (xv, tv) in x8.iter().zip(t8) {
        for l in 0..8 {
            acc[l] += xv[l] * tv[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (a, b) in xr.iter().zip(tr) {
        s += a * b;
    }
    s
}

/// Interleaved complex samples `x` times real taps given twice (`t2`).
#[inline(always)]
fn dot_cf_real(x: &[f32], t2: &[f32]) -> Complex32 {
    let n = x.len().min(t2.len());
    let (x8, xr) = x[..n].as_chunks::<8>();
    let (t8, tr) = t2[..n].as_chunks::<8>();
    let mut acc = [0f32; 8];
    for (xv, tv) in x8.iter().zip(t8) {
        for l in 0..8 {
            acc[l] += xv[l] * tv[l];
        }
    }
    let mut re = (acc[0] + acc[4]) + (acc[2] + acc[6]);
    let mut im = (acc[1] + acc[5]) + (acc[3] + acc[7]);
    for (xp, tp) in xr.chunks_exact(2).zip(tr.chunks_exact(2)) {
        re += xp[0] * tp[0];
        im += xp[1] * tp[1];
    }
    Complex32::new(re, im)
}

/// Interleaved complex samples `x` times complex taps laid out as `a`, `b`:
/// lane `l` accumulates `a[l]·x[l] + b[l]·x[l^1]`.
#[inline(always)]
fn dot_cf_complex(x: &[f32], a: &[f32], b: &[f32]) -> Complex32 {
    let n = x.len().min(a.len()).min(b.len());
    let (x8, xr) = x[..n].as_chunks::<8>();
    let (a8, ar) = a[..n].as_chunks::<8>();
    let (b8, br) = b[..n].as_chunks::<8>();
    let mut acc = [0f32; 8];
    for ((xv, av), bv) in x8.iter().zip(a8).zip(b8) {
        for l in 0..8 {
            acc[l] += av[l] * xv[l] + bv[l] * xv[l ^ 1];
        }
    }
    let mut re = (acc[0] + acc[4]) + (acc[2] + acc[6]);
    let mut im = (acc[1] + acc[5]) + (acc[3] + acc[7]);
    for ((xp, ap), bp) in xr
        .chunks_exact(2)
        .zip(ar.chunks_exact(2))
        .zip(br.chunks_exact(2))
    {
        re += ap[0] * xp[0] + bp[0] * xp[1];
        im += ap[1] * xp[1] + bp[1] * xp[0];
    }
    Complex32::new(re, im)
}

/// Stream item types the filters take: `f32` and `cf32`.
pub trait Sample: Item + Default {
    /// Whether the type is complex (complex taps are refused otherwise).
    const COMPLEX: bool;
    /// Dot product of a window of `L` samples with a branch's reversed taps.
    fn dot(x: &[Self], taps: &Branch) -> Self;
    /// `out[j] = Σ_k rev[k]·x[j + k]` for every `j`, summed tap by tap in
    /// order (see `fir_block`); `x` holds `out.len() + rev.len() − 1` samples.
    fn fir_real(x: &[Self], rev: &[f32], out: &mut [Self]);
}

/// Outputs at a time in [`fir_block`] (keeps them in L1).
const FIR_BLOCK: usize = 1024;

/// The transposed FIR: for each tap, one multiply-add pass over a block of
/// outputs, which vectorises fully. Each output is summed tap by tap in
/// order, so it is the same number whatever block or chunk it falls in.
/// `w` is scalars per sample (1 real, 2 interleaved complex).
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
fn fir_block(x: &[f32], rev: &[f32], out: &mut [f32], w: usize) {
    for (b, ob) in out.chunks_mut(FIR_BLOCK * w).enumerate() {
        let base = b * FIR_BLOCK * w;
        ob.fill(0.0);
        for (k, tk) in rev.iter().enumerate() {
            let xs = &x[base + k * w..base + k * w + ob.len()];
            for (o, v) in ob.iter_mut().zip(xs) {
                *o += tk * v;
            }
        }
    }
}

impl Sample for f32 {
    const COMPLEX: bool = false;
    #[inline(always)]
    fn dot(x: &[f32], taps: &Branch) -> f32 {
        match taps {
            Branch::Real { rev, .. } => dot_real(x, rev),
            // Not reached: complex taps are refused on real streams. Use the
            // real parts rather than fail.
            Branch::Complex { rev, .. } => x.iter().zip(rev).map(|(a, t)| a * t.re).sum(),
        }
    }
    fn fir_real(x: &[f32], rev: &[f32], out: &mut [f32]) {
        fir_block(x, rev, out, 1)
    }
}

impl Sample for Complex32 {
    const COMPLEX: bool = true;
    #[inline(always)]
    fn dot(x: &[Complex32], taps: &Branch) -> Complex32 {
        let xf: &[f32] = bytemuck::cast_slice(x);
        match taps {
            Branch::Real { rev2, .. } => dot_cf_real(xf, rev2),
            Branch::Complex { a, b, .. } => dot_cf_complex(xf, a, b),
        }
    }
    fn fir_real(x: &[Complex32], rev: &[f32], out: &mut [Complex32]) {
        fir_block(
            bytemuck::cast_slice(x),
            rev,
            bytemuck::cast_slice_mut(out),
            2,
        )
    }
}

/// [`PolyFir::process`] compiled for AVX2+FMA and SSE4.1, picked at run time
/// by CPU (the dot products inline into it).
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
pub fn process_fast<T: Sample>(fir: &mut PolyFir<T>, inp: &[T], out: &mut [T]) -> (usize, usize) {
    fir.process(inp, out)
}

// ---------------------------------------------------------------------------
// The engine

/// A polyphase FIR with interpolation `I` and decimation `D` over a history of
/// past input (see the module docs for the formula).
///
/// State: `hist` holds retained input samples, `end` is the index (in
/// `hist ++ new input`) of the newest sample of the next output's window, and
/// `phase` is the polyphase branch of the next output. `lookahead` is how many
/// samples after `end` must have arrived before the output is produced
/// (`D − 1` for the FIR blocks, 0 for the resampler).
pub struct PolyFir<T> {
    branches: Vec<Branch>,
    ntaps: usize,
    interp: usize,
    decim: usize,
    lookahead: usize,
    phase: usize,
    hist: Vec<T>,
    end: usize,
    scratch: Vec<T>,
}

impl<T: Sample> PolyFir<T> {
    /// A filter with `taps` (at least one), starting on a history of zeros.
    pub fn new(taps: &[Complex64], interp: usize, decim: usize, lookahead: usize) -> Self {
        let mut f = PolyFir {
            branches: vec![],
            ntaps: 1,
            interp: interp.max(1),
            decim: decim.max(1),
            lookahead,
            phase: 0,
            hist: vec![],
            end: 0,
            scratch: vec![],
        };
        f.set_taps(taps);
        f
    }

    /// Drops the initial history of zeros: the first output's window is then
    /// the first `⌈L/I⌉` input items (GNU Radio's `rational_resampler`, whose
    /// first output needs a full window), so `N` inputs give
    /// `⌈(N − ⌈L/I⌉ + 1)·I/D⌉` outputs. Only on a fresh filter.
    pub fn without_zero_history(mut self) -> Self {
        // A fresh filter holds `ntaps − 1` zeros and its next window ends at
        // index `ntaps − 1` of history ++ input; without the zeros that index
        // is input item `ntaps − 1`.
        debug_assert!(self.phase == 0 && self.hist.len() + 1 == self.ntaps);
        self.hist.clear();
        self
    }

    /// Replaces the taps from the next output on, keeping the history.
    /// Branch `p` gets taps `p, p+I, p+2I, …`, zero-padded to equal length.
    pub fn set_taps(&mut self, taps: &[Complex64]) {
        let i = self.interp;
        let nt = taps.len().div_ceil(i).max(1);
        self.branches = (0..i)
            .map(|p| {
                let b: Vec<Complex64> = (0..nt)
                    .map(|k| taps.get(p + k * i).copied().unwrap_or_default())
                    .collect();
                Branch::new(&b)
            })
            .collect();
        self.ntaps = nt;
        // The window of the next output must start inside the history.
        if self.end + 1 < nt {
            let extra = nt - 1 - self.end;
            self.hist
                .splice(0..0, std::iter::repeat_n(T::default(), extra));
            self.end += extra;
        }
    }

    /// Filters what it can of `inp` into `out`; returns `(consumed, produced)`.
    /// Consumes input beyond the last output up to what the next output
    /// needs, keeping it in the history.
    #[inline(always)]
    pub fn process(&mut self, inp: &[T], out: &mut [T]) -> (usize, usize) {
        let PolyFir {
            branches,
            ntaps,
            interp,
            decim,
            lookahead,
            phase,
            hist,
            end,
            scratch,
        } = self;
        let (nt, interp, decim, la) = (*ntaps, *interp, *decim, *lookahead);
        let h = hist.len();
        let avail = inp.len();
        let mut e = *end;
        let mut produced = 0;
        let mut scratch_ready = false;
        if let (1, 1, 0, Branch::Real { rev, .. }) = (interp, decim, la, &branches[0]) {
            // One sample in, one out, real taps: whole blocks of outputs in
            // transposed form. Outputs whose window starts in the history
            // come from `scratch` (history ++ the first new samples).
            let m = out.len().min((h + avail).saturating_sub(e));
            let straddle = m.min((h + nt - 1).saturating_sub(e));
            if straddle > 0 {
                scratch.clear();
                scratch.extend_from_slice(hist);
                scratch.extend_from_slice(&inp[..avail.min(nt - 1)]);
                let st = e + 1 - nt;
                T::fir_real(
                    &scratch[st..st + straddle + nt - 1],
                    rev,
                    &mut out[..straddle],
                );
            }
            if m > straddle {
                let st = e + straddle + 1 - nt - h;
                T::fir_real(
                    &inp[st..st + (m - straddle) + nt - 1],
                    rev,
                    &mut out[straddle..m],
                );
            }
            produced = m;
            e += m;
        }
        while produced < out.len() && e + la < h + avail {
            let start = e + 1 - nt;
            let taps = &branches[*phase];
            out[produced] = if start >= h {
                T::dot(&inp[start - h..start - h + nt], taps)
            } else {
                // The window straddles history and new input: its newest
                // sample is before input index nt − 1.
                if !scratch_ready {
                    scratch.clear();
                    scratch.extend_from_slice(hist);
                    scratch.extend_from_slice(&inp[..avail.min(nt - 1)]);
                    scratch_ready = true;
                }
                T::dot(&scratch[start..start + nt], taps)
            };
            produced += 1;
            *phase += decim;
            e += *phase / interp;
            *phase %= interp;
        }
        // Take in what the next output needs (all of it if the input ran
        // out), and keep from the next window's first sample on.
        let want = (e + la + 1).saturating_sub(h);
        let k = want.min(avail);
        let s = (e + 1 - nt).min(h + k);
        if s >= h {
            hist.clear();
            hist.extend_from_slice(&inp[s - h..k]);
        } else {
            hist.drain(..s);
            hist.extend_from_slice(&inp[..k]);
        }
        *end = e - s;
        (k, produced)
    }
}

/// Runs `fir` on input 0 into output 0; returns the output slice written.
/// Runs even without new input: the history may hold what the next outputs
/// need (taken in while the output was full).
fn run<'a, T: Sample>(fir: &mut PolyFir<T>, io: &mut WorkIo<'a>) -> &'a mut [T] {
    let avail = io.input_items(0);
    let space = io.output_items(0);
    if space == 0 {
        return Default::default();
    }
    let inp = &io.input::<T>(0)[..avail];
    let out = &mut io.output::<T>(0)[..space];
    let (c, p) = process_fast(fir, inp, out);
    io.consume(0, c);
    io.produce(0, p);
    &mut out[..p]
}

// ---------------------------------------------------------------------------
// Parameters

fn bad(name: &str, message: impl Into<String>) -> BlockError {
    BlockError::BadValue {
        name: name.to_string(),
        message: message.into(),
    }
}

/// Checks taps: not empty, finite, real on real streams.
fn check_taps(taps: &[Complex64], complex_stream: bool) -> Result<(), String> {
    if taps.is_empty() {
        return Err("the filter needs at least one tap".into());
    }
    if taps.iter().any(|t| !(t.re.is_finite() && t.im.is_finite())) {
        return Err("the taps must be finite numbers".into());
    }
    if !complex_stream && taps.iter().any(|t| t.im != 0.0) {
        return Err("the taps are complex but the stream is real (use type: cf32)".into());
    }
    Ok(())
}

/// Taps from a runtime value (a list of numbers or complex numbers).
fn taps_from_pmt(v: &Pmt) -> Option<Vec<Complex64>> {
    Some(match v {
        Pmt::Vector(TypedVec::Cf64(c)) => c.clone(),
        Pmt::Vector(TypedVec::F64(r)) => r.iter().map(|&x| Complex64::new(x, 0.0)).collect(),
        Pmt::Vector(TypedVec::F32(r)) => r.iter().map(|&x| Complex64::new(x as f64, 0.0)).collect(),
        Pmt::Vector(TypedVec::Cf32(c)) => c
            .iter()
            .map(|x| Complex64::new(x.re as f64, x.im as f64))
            .collect(),
        Pmt::List(l) => l.iter().map(Pmt::as_complex).collect::<Option<Vec<_>>>()?,
        _ => return None,
    })
}

fn taps_pmt(taps: &[Complex64]) -> Pmt {
    Pmt::Vector(TypedVec::Cf64(taps.to_vec()))
}

fn decimation(p: &Params) -> Result<usize, String> {
    match p.u64("decimation").unwrap_or(1) {
        0 => Err("decimation must be at least 1".into()),
        d => usize::try_from(d).map_err(|_| format!("decimation {d} is too large")),
    }
}

fn real_taps(t: &[f32]) -> Vec<Complex64> {
    t.iter().map(|&x| Complex64::new(x as f64, 0.0)).collect()
}

// ---------------------------------------------------------------------------
// fir_filter

/// `fir_filter`: input `in`, output `out` (`type` f32 or cf32), message input
/// `cmd`. Parameters: `taps` (settable; complex taps need cf32), `decimation`.
/// `y[i] = Σ_k taps[k]·x[i·D − k]` with zero initial history.
pub struct FirFilter<T: Sample> {
    fir: PolyFir<T>,
    taps: Vec<Complex64>,
}

impl<T: Sample> Block for FirFilter<T> {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        run(&mut self.fir, io);
        Ok(Work::Ok)
    }
    fn set(&mut self, name: &str, value: &Pmt) -> Result<()> {
        if name != "taps" {
            return Err(BlockError::NotSettable(name.into()));
        }
        let taps = taps_from_pmt(value).ok_or_else(|| bad(name, "expected a list of taps"))?;
        check_taps(&taps, T::COMPLEX).map_err(|m| bad(name, m))?;
        self.fir.set_taps(&taps);
        self.taps = taps;
        Ok(())
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        (name == "taps").then(|| taps_pmt(&self.taps))
    }
}

fn fir_filter_t<T: Sample>(p: &Params) -> Result<BuiltBlock, String> {
    let taps = p
        .complex_list("taps")
        .ok_or("the parameter `taps` is required")?;
    check_taps(&taps, T::COMPLEX)?;
    let d = decimation(p)?;
    Ok(BuiltBlock::new(FirFilter::<T> {
        fir: PolyFir::new(&taps, 1, d, d - 1),
        taps,
    })
    .rate(1, d as u64))
}

pub fn fir_filter(p: &Params) -> Result<BuiltBlock, String> {
    match stream_type(p).item {
        ItemType::F32 => fir_filter_t::<f32>(p),
        ItemType::Cf32 => fir_filter_t::<Complex32>(p),
        t => Err(format!(
            "fir_filter does not support type {t}; use f32 or cf32"
        )),
    }
}

// ---------------------------------------------------------------------------
// low_pass_filter

/// The parameters of a low-pass design.
#[derive(Debug, Clone, Copy)]
struct LowPassDesign {
    samp_rate: f64,
    cutoff: f64,
    transition: f64,
    window: Window,
    gain: f64,
}

impl LowPassDesign {
    fn taps(&self) -> Result<Vec<Complex64>, String> {
        if self.cutoff >= self.samp_rate / 2.0 {
            return Err(format!(
                "the cutoff must be below half the sample rate ({} Hz), got {}",
                self.samp_rate / 2.0,
                self.cutoff
            ));
        }
        if self.transition > 0.0 {
            firdes::compute_ntaps(self.samp_rate, self.transition, self.window.into())
                .map_err(|e| format!("{e}; widen the transition band"))?;
        }
        let t = firdes::low_pass(
            self.gain,
            self.samp_rate,
            self.cutoff,
            self.transition,
            self.window.into(),
        )?;
        Ok(real_taps(&t))
    }
}

/// `low_pass_filter`: input `in`, output `out` (`type` f32 or cf32), message
/// input `cmd`. Parameters: `samp_rate`, `cutoff` and `transition` (both
/// settable: the filter is redesigned), `window`, `gain`, `decimation`. Taps
/// as GNU Radio's `firdes.low_pass(gain, samp_rate, cutoff, transition,
/// window)`, then filtering as `fir_filter`.
pub struct LowPassFilter<T: Sample> {
    fir: PolyFir<T>,
    design: LowPassDesign,
    taps: Vec<Complex64>,
}

impl<T: Sample> Block for LowPassFilter<T> {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        run(&mut self.fir, io);
        Ok(Work::Ok)
    }
    fn set(&mut self, name: &str, value: &Pmt) -> Result<()> {
        let mut d = self.design;
        let v = value
            .as_f64()
            .ok_or_else(|| bad(name, "expected a number"))?;
        match name {
            "cutoff" => d.cutoff = v,
            "transition" => d.transition = v,
            _ => return Err(BlockError::NotSettable(name.into())),
        }
        let taps = d.taps().map_err(|m| bad(name, m))?;
        self.fir.set_taps(&taps);
        self.design = d;
        self.taps = taps;
        Ok(())
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        let d = &self.design;
        Some(match name {
            "cutoff" => Pmt::F64(d.cutoff),
            "transition" => Pmt::F64(d.transition),
            "samp_rate" => Pmt::F64(d.samp_rate),
            "gain" => Pmt::F64(d.gain),
            "taps" => taps_pmt(&self.taps),
            _ => return None,
        })
    }
}

impl LowPassDesign {
    /// The design a `low_pass_filter`'s parameters describe.
    fn from_params(p: &Params) -> Result<Self, String> {
        let req = |n: &str| {
            p.f64(n)
                .ok_or_else(|| format!("the parameter `{n}` is required"))
        };
        let window = p.str("window").unwrap_or("hamming");
        Ok(LowPassDesign {
            samp_rate: req("samp_rate")?,
            cutoff: req("cutoff")?,
            transition: req("transition")?,
            window: Window::parse(window).ok_or_else(|| format!("unknown window `{window}`"))?,
            gain: p.f64("gain").unwrap_or(1.0),
        })
    }
}

fn low_pass_filter_t<T: Sample>(p: &Params) -> Result<BuiltBlock, String> {
    let design = LowPassDesign::from_params(p)?;
    let taps = design.taps()?;
    let d = decimation(p)?;
    Ok(BuiltBlock::new(LowPassFilter::<T> {
        fir: PolyFir::new(&taps, 1, d, d - 1),
        design,
        taps,
    })
    .rate(1, d as u64))
}

pub fn low_pass_filter(p: &Params) -> Result<BuiltBlock, String> {
    match stream_type(p).item {
        ItemType::F32 => low_pass_filter_t::<f32>(p),
        ItemType::Cf32 => low_pass_filter_t::<Complex32>(p),
        t => Err(format!(
            "low_pass_filter does not support type {t}; use f32 or cf32"
        )),
    }
}

// ---------------------------------------------------------------------------
// freq_xlating_fir

/// `frac(f·n)` in `[0, 1)`, accurate for any `n`: `n` is taken in 24-bit
/// limbs so each product stays exact to about 2⁻²⁹ cycles.
fn frac_mul(f: f64, n: u64) -> f64 {
    let mut g = f - f.floor();
    let mut n = n;
    let mut acc = 0.0;
    while n > 0 {
        acc += g * (n & 0xff_ffff) as f64;
        acc -= acc.floor();
        g *= 16_777_216.0;
        g -= g.floor();
        n >>= 24;
    }
    acc
}

/// `exp(j·2π·cycles)`.
fn cis(cycles: f64) -> Complex64 {
    let (s, c) = (std::f64::consts::TAU * cycles).sin_cos();
    Complex64::new(c, s)
}

/// GNU Radio's single-precision view of a centre frequency, which
/// `freq_xlating_fir` reproduces so that its output agrees with GNU Radio's
/// over long runs (an exact ω₀ would drift from it by up to ~1e-7 rad per
/// output, 1e-3 rad after 10⁴ outputs).
#[derive(Debug, Clone, Copy)]
struct XlatingFreq {
    /// `ω₀ = 2π·center_freq/samp_rate` rounded to `f32` (GNU Radio's `fwT0`).
    w: f32,
    /// The mixer's turn per output, in cycles: the angle of GNU Radio's
    /// phase increment `exp(−j·f32(ω₀·D))`, taken from its `f32` parts after
    /// they are normalised as GNU Radio does.
    step: f64,
}

impl XlatingFreq {
    fn new(center_freq: f64, samp_rate: f64, decim: u64) -> Self {
        let w = (std::f64::consts::TAU * center_freq / samp_rate) as f32;
        let a = -w * decim as f32;
        let (s, c) = (a.sin(), a.cos());
        let m = c.hypot(s);
        let (s, c) = (s / m, c / m);
        XlatingFreq {
            w,
            step: (s as f64).atan2(c as f64) / std::f64::consts::TAU,
        }
    }
    /// The taps rotated up to the centre frequency: `taps[k]·e^{j·f32(k·ω₀)}`
    /// (the angle is formed in `f32` as GNU Radio forms it).
    fn rotate(&self, proto: &[Complex64]) -> Vec<Complex64> {
        proto
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let a = (k as f32 * self.w) as f64;
                t * Complex64::new(a.cos(), a.sin())
            })
            .collect()
    }
}

/// The mixer phase step (cycles) GNU Radio applies when the centre frequency
/// moves by `delta` Hz: `−Δω·(N−1)/2` for `N` taps, the phase delay of a
/// symmetric filter, so that a signal's phase does not jump on a retune (and,
/// from 0 Hz, the mixer's initial phase). Computed in `f32` as GNU Radio does.
fn retune_phase(delta: f64, samp_rate: f64, ntaps: usize) -> f64 {
    let dw = (std::f64::consts::TAU * (delta as f32) as f64 / samp_rate) as f32;
    let dp = ((-dw * ntaps.saturating_sub(1) as f32) as f64 / 2.0) as f32;
    dp as f64 / std::f64::consts::TAU
}

/// `freq_xlating_fir`: input `in`, output `out` (cf32), message input `cmd`.
/// Parameters: `taps` (the low-pass prototype, `N` taps), `center_freq`
/// (settable), `samp_rate`, `decimation` `D`. As GNU Radio's
/// `freq_xlating_fir_filter_ccf`/`_ccc`: the taps are rotated to the centre
/// frequency, `bpf[k] = taps[k]·e^{jω₀k}` with `ω₀ = 2π·center_freq/samp_rate`,
/// filtered output `n` (`Σ_k bpf[k]·x[n·D − k]`, zero history) is mixed by
/// `e^{−j(ω₀·D·n + ω₀·(N−1)/2)}`, so a tone at `center_freq` comes out at
/// 0 Hz with the phase it has at the filter's centre tap. `ω₀` is taken in
/// single precision, as GNU Radio takes it (see `XlatingFreq`). The mixer
/// phase is a function of the output index; a new `center_freq` changes its
/// rate from the next output on and steps it by `−Δω₀·(N−1)/2`, as GNU Radio
/// does, so that the output's phase stays continuous. Parameter `start`
/// (set by a restarted worker) is the index of the first output in the
/// uninterrupted stream: the mixer continues from there, so a resume is exact
/// unless `center_freq` was changed at run time before the restart.
pub struct FreqXlatingFir {
    fir: PolyFir<Complex32>,
    proto: Vec<Complex64>,
    center_freq: f64,
    samp_rate: f64,
    decim: u64,
    freq: XlatingFreq,
    /// Outputs produced so far.
    produced: u64,
    /// Output index from which the current `center_freq` applies, and the
    /// mixer phase there (cycles).
    anchor: u64,
    anchor_phase: f64,
}

impl FreqXlatingFir {
    /// Mixer phase (cycles, in `[0, 1)`) of output `n ≥ anchor`.
    fn mixer_phase(&self, n: u64) -> f64 {
        let c = self.anchor_phase + frac_mul(self.freq.step, n - self.anchor);
        c - c.floor()
    }
    /// Mixes the filtered outputs `out` (the next ones) down.
    fn mix(&mut self, out: &mut [Complex32]) {
        for (j, y) in out.iter_mut().enumerate() {
            let r = cis(self.mixer_phase(self.produced + j as u64));
            *y *= Complex32::new(r.re as f32, r.im as f32);
        }
        self.produced += out.len() as u64;
    }
}

impl Block for FreqXlatingFir {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let out = run(&mut self.fir, io);
        self.mix(out);
        Ok(Work::Ok)
    }
    fn set(&mut self, name: &str, value: &Pmt) -> Result<()> {
        if name != "center_freq" {
            return Err(BlockError::NotSettable(name.into()));
        }
        let cf = value
            .as_f64()
            .filter(|v| v.is_finite())
            .ok_or_else(|| bad(name, "expected a finite number"))?;
        let phase = self.mixer_phase(self.produced)
            + retune_phase(cf - self.center_freq, self.samp_rate, self.proto.len());
        let freq = XlatingFreq::new(cf, self.samp_rate, self.decim);
        self.fir.set_taps(&freq.rotate(&self.proto));
        self.freq = freq;
        self.center_freq = cf;
        self.anchor = self.produced;
        self.anchor_phase = phase - phase.floor();
        Ok(())
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        Some(match name {
            "center_freq" => Pmt::F64(self.center_freq),
            "samp_rate" => Pmt::F64(self.samp_rate),
            "taps" => taps_pmt(&self.proto),
            _ => return None,
        })
    }
}

impl FreqXlatingFir {
    fn from_params(p: &Params, start: u64) -> Result<Self, String> {
        let proto = p
            .complex_list("taps")
            .ok_or("the parameter `taps` is required")?;
        check_taps(&proto, true)?;
        let samp_rate = p
            .f64("samp_rate")
            .ok_or("the parameter `samp_rate` is required")?;
        if !(samp_rate > 0.0 && samp_rate.is_finite()) {
            return Err(format!("samp_rate must be above 0 Hz, got {samp_rate}"));
        }
        let center_freq = p.f64("center_freq").unwrap_or(0.0);
        if !center_freq.is_finite() {
            return Err(format!(
                "center_freq must be a finite number, got {center_freq}"
            ));
        }
        let d = decimation(p)?;
        let freq = XlatingFreq::new(center_freq, samp_rate, d as u64);
        let phase0 = retune_phase(center_freq, samp_rate, proto.len());
        Ok(FreqXlatingFir {
            fir: PolyFir::new(&freq.rotate(&proto), 1, d, d - 1),
            proto,
            center_freq,
            samp_rate,
            decim: d as u64,
            freq,
            produced: start,
            anchor: 0,
            anchor_phase: phase0 - phase0.floor(),
        })
    }
}

/// `start`: the index of the block's first output in the whole stream (0,
/// or where a resumed worker continues its mixer phase).
pub fn freq_xlating_fir(p: &Params, start: u64) -> Result<BuiltBlock, String> {
    let b = FreqXlatingFir::from_params(p, start)?;
    let d = b.decim;
    Ok(BuiltBlock::new(b).rate(1, d))
}

// ---------------------------------------------------------------------------
// rational_resampler

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `rational_resampler`: input `in`, output `out` (`type` f32 or cf32).
/// Parameters: `interpolation` I, `decimation` D, `taps` (optional prototype
/// at I times the input rate), `fractional_bw`. As GNU Radio's
/// rational_resampler: without taps, I and D are reduced by their greatest
/// common divisor and the taps designed by [`firdes::resampler_taps`]; given
/// taps, I and D are used as they are. Polyphase, without zero history (see
/// the module docs): with `nt = ⌈taps/I⌉`, output `j` uses branch `j·D mod I`
/// over the inputs `⌊j·D/I⌋ ..= ⌊j·D/I⌋ + nt − 1`. Tags move by the rate,
/// `round(o·I/D)`, as in GNU Radio (not by the filter's delay). Output `j`
/// depends only on the inputs from `⌊j·D/I⌋` on, so a stream restarted at an
/// input offset `s` that is a multiple of `D/gcd(I, D)` continues exactly at
/// output `s·I/D`.
pub struct RationalResampler<T: Sample> {
    fir: PolyFir<T>,
    interp: u64,
    decim: u64,
    taps: Vec<Complex64>,
}

impl<T: Sample> Block for RationalResampler<T> {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        run(&mut self.fir, io);
        Ok(Work::Ok)
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        Some(match name {
            "interpolation" => Pmt::I64(self.interp as i64),
            "decimation" => Pmt::I64(self.decim as i64),
            "taps" => taps_pmt(&self.taps),
            _ => return None,
        })
    }
}

fn rational_resampler_t<T: Sample>(p: &Params) -> Result<BuiltBlock, String> {
    let i = p.u64("interpolation").unwrap_or(1);
    let d = p.u64("decimation").unwrap_or(1);
    if i == 0 || d == 0 {
        return Err("interpolation and decimation must be at least 1".into());
    }
    let (i, d, taps) = match p.complex_list("taps") {
        Some(taps) => {
            check_taps(&taps, T::COMPLEX)?;
            (i, d, taps)
        }
        None => {
            let g = gcd(i, d);
            let (i, d) = (i / g, d / g);
            let fbw = p.f64("fractional_bw").unwrap_or(0.4);
            if !(fbw > 0.0 && fbw < 0.5) {
                return Err(format!(
                    "fractional_bw must be above 0 and below 0.5, got {fbw}"
                ));
            }
            let taps = firdes::resampler_taps(i, d, fbw).map_err(|e| {
                format!(
                    "cannot design taps for interpolation {i} / decimation {d}: {e}; \
                     give `taps`, or smaller factors"
                )
            })?;
            (i, d, real_taps(&taps))
        }
    };
    let (iu, du) = match (usize::try_from(i), usize::try_from(d)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Err("interpolation or decimation is too large".into()),
    };
    Ok(BuiltBlock::new(RationalResampler::<T> {
        fir: PolyFir::new(&taps, iu, du, 0).without_zero_history(),
        interp: i,
        decim: d,
        taps,
    })
    .rate(i, d))
}

pub fn rational_resampler(p: &Params) -> Result<BuiltBlock, String> {
    match stream_type(p).item {
        ItemType::F32 => rational_resampler_t::<f32>(p),
        ItemType::Cf32 => rational_resampler_t::<Complex32>(p),
        t => Err(format!(
            "rational_resampler does not support type {t}; use f32 or cf32"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(taps: &[f64], x: &[f64], i: usize, d: usize) -> Vec<f64> {
        let nout = (x.len() * i).div_ceil(d);
        (0..nout)
            .map(|m| {
                (0..x.len())
                    .filter_map(|n| {
                        let k = (m * d) as i64 - (n * i) as i64;
                        (k >= 0 && (k as usize) < taps.len()).then(|| taps[k as usize] * x[n])
                    })
                    .sum()
            })
            .collect()
    }

    /// Feeds the engine one item at a time with one output slot.
    /// Feeds `x` to `f` one item at a time, taking one output per call.
    fn item_by_item(mut f: PolyFir<f32>, x: &[f64]) -> Vec<f32> {
        let mut out = vec![];
        let mut pending: Vec<f32> = vec![];
        for &v in x {
            pending.push(v as f32);
            loop {
                let mut o = [0f32; 1];
                let (c, p) = f.process(&pending, &mut o);
                pending.drain(..c);
                out.extend_from_slice(&o[..p]);
                if c == 0 && p == 0 {
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn engine_matches_direct_form_item_by_item() {
        let taps: Vec<f64> = (0..13).map(|k| (k as f64 * 0.7).sin() + 0.1).collect();
        let ct: Vec<Complex64> = taps.iter().map(|&t| Complex64::new(t, 0.0)).collect();
        let x: Vec<f64> = (0..200).map(|n| ((n * 7919) % 23) as f64 - 11.0).collect();
        for (i, d) in [(1, 1), (3, 2), (2, 5), (4, 1), (1, 20)] {
            let out = item_by_item(PolyFir::<f32>::new(&ct, i, d, 0), &x);
            let want = direct(&taps, &x, i, d);
            assert_eq!(out.len(), want.len(), "I={i} D={d}");
            for (a, b) in out.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-3, "I={i} D={d}: {a} vs {b}");
            }
        }
    }

    /// Without the zero history, output `j` is `Σ_n h[j·D + (nt−1)·I − n·I]·x[n]`
    /// and `N` inputs give `⌈(N − nt + 1)·I/D⌉` outputs, fed item by item.
    #[test]
    fn engine_without_zero_history_starts_on_a_full_window() {
        let taps: Vec<f64> = (0..13).map(|k| (k as f64 * 0.7).sin() + 0.1).collect();
        let ct: Vec<Complex64> = taps.iter().map(|&t| Complex64::new(t, 0.0)).collect();
        let x: Vec<f64> = (0..200).map(|n| ((n * 7919) % 23) as f64 - 11.0).collect();
        for (i, d) in [(1, 1), (3, 2), (2, 5), (4, 1), (1, 20), (4, 6)] {
            let nt = taps.len().div_ceil(i);
            let out = item_by_item(PolyFir::<f32>::new(&ct, i, d, 0).without_zero_history(), &x);
            let want: Vec<f64> = (0..((x.len() + 1 - nt) * i).div_ceil(d))
                .map(|j| {
                    (0..x.len())
                        .filter_map(|n| {
                            let k = (j * d + (nt - 1) * i) as i64 - (n * i) as i64;
                            (k >= 0 && (k as usize) < taps.len()).then(|| taps[k as usize] * x[n])
                        })
                        .sum()
                })
                .collect();
            assert_eq!(out.len(), want.len(), "I={i} D={d}");
            for (a, b) in out.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-3, "I={i} D={d}: {a} vs {b}");
            }
        }
    }

    /// A retune keeps the output's phase continuous, as GNU Radio's does: for
    /// a tone in both passbands the phase step between outputs is the old
    /// offset's before the change and the new one's after, with no jump.
    #[test]
    fn freq_xlating_retune_keeps_the_phase_continuous() {
        let fs = 48_000.0;
        let proto = firdes::low_pass(1.0, fs, 4000.0, 1000.0, Window::Hamming.into()).unwrap();
        let mut p = Params::default();
        p.insert(
            "taps",
            Pmt::Vector(TypedVec::F64(proto.iter().map(|&t| t as f64).collect())),
        );
        p.insert("samp_rate", Pmt::F64(fs));
        p.insert("center_freq", Pmt::F64(1000.0));
        p.insert("decimation", Pmt::I64(2));
        let mut b = FreqXlatingFir::from_params(&p, 0).unwrap();
        let f = 1700.0;
        let x: Vec<Complex32> = (0..4000)
            .map(|n| {
                let c = cis(f / fs * n as f64);
                Complex32::new(c.re as f32, c.im as f32)
            })
            .collect();
        let mut y = vec![Complex32::default(); 2000];
        let (c1, p1) = b.fir.process(&x[..2000], &mut y[..1000]);
        b.mix(&mut y[..p1]);
        b.set("center_freq", &Pmt::F64(2500.0)).unwrap();
        let (_, p2) = b.fir.process(&x[c1..], &mut y[p1..]);
        b.mix(&mut y[p1..p1 + p2]);
        assert_eq!((p1, p1 + p2), (1000, 2000));
        let step = |n: usize| (y[n + 1] * y[n].conj()).arg() as f64;
        let want = |cf: f64| std::f64::consts::TAU * (f - cf) / fs * 2.0;
        for n in 100..1999 {
            let w = if n < 1000 { want(1000.0) } else { want(2500.0) };
            assert!(
                (step(n) - w).abs() < 1e-3,
                "output {n}: step {} vs {w}",
                step(n)
            );
        }
    }

    #[test]
    fn frac_mul_is_exact_enough() {
        assert_eq!(frac_mul(0.25, 3), 0.75);
        assert!((frac_mul(0.1, 1 << 40) - (0.1f64 * (1u64 << 40) as f64).fract()).abs() < 1e-3);
        assert!((frac_mul(-0.25, 1) - 0.75).abs() < 1e-15);
    }
}
