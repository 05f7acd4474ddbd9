//! Spectrum: windowed FFT, averaged PSD, threshold carrier detector.
//!
//! - [`Fft`] (`fft`): one windowed FFT per `fft_size` input samples, one
//!   `cf32 x fft_size` vector out, optionally fft-shifted so 0 Hz is bin
//!   `fft_size/2`.
//! - [`Psd`] (`psd`): `average` windowed FFTs averaged in linear power,
//!   scaled so a full-scale complex exponential on a bin centre reads 0 dB
//!   (`P[k] = |X[k]|² / (Σw)²`), fft-shifted, in dB.
//! - [`ThresholdDetector`] (`threshold_detector`): finds carriers in dB
//!   spectra and posts start/end events.
//!
//! `fft` and `psd` keep a partial frame (and `psd` its running power sums)
//! between calls, so they work when fed one sample at a time and give the same
//! output whatever the chunking. A partial frame left when the input ends is
//! dropped (as GNU Radio's stream-to-vector would). Windows are [`Window::coefficients`] (GNU Radio's symmetric
//! definitions); FFTs are planned once per block with rustfft.

use std::sync::Arc;

use flowmesh_model::catalog::TagPolicy;
use flowmesh_model::{ItemType, Params, Pmt};
use num_complex::Complex32;
use rustfft::{Fft as RustFft, FftPlanner};

use super::Implementation;
use crate::block::{Block, BlockError, BuiltBlock, Result, Work};
use crate::dsp::window::Window;
use crate::io::WorkIo;

/// The blocks of this module.
pub(super) const BLOCKS: &[Implementation] = &[
    Implementation {
        kind: "fft",
        build: |c| fft(c.params),
    },
    Implementation {
        kind: "psd",
        build: |c| psd(c.params),
    },
    Implementation {
        kind: "threshold_detector",
        build: |c| threshold_detector(c.params),
    },
];

/// Floor applied to linear powers before taking the logarithm (−300 dB).
const POWER_FLOOR: f64 = 1e-30;

/// The FFT length parameter, checked.
fn fft_size_param(p: &Params) -> Result<usize, String> {
    let n = p.u64("fft_size").unwrap_or(1024);
    if !(2..=1 << 20).contains(&n) {
        return Err(format!("fft_size must be from 2 to 1048576, got {n}"));
    }
    Ok(n as usize)
}

/// The window parameter as `f32` coefficients of length `n`.
fn window_param(p: &Params, n: usize) -> Result<Vec<f32>, String> {
    let name = p.str("window").unwrap_or("blackman_harris");
    let w = Window::parse(name).ok_or_else(|| {
        format!(
            "unknown window {name:?}; use one of hamming, hann, blackman, blackman_harris, rectangular"
        )
    })?;
    Ok(w.coefficients(n).into_iter().map(|c| c as f32).collect())
}

/// A planned forward FFT with its scratch space.
struct Planned {
    fft: Arc<dyn RustFft<f32>>,
    scratch: Vec<Complex32>,
}

impl Planned {
    fn new(n: usize) -> Self {
        let fft = FftPlanner::<f32>::new().plan_fft_forward(n);
        let scratch = vec![Complex32::new(0.0, 0.0); fft.get_inplace_scratch_len()];
        Planned { fft, scratch }
    }
    fn run(&mut self, buf: &mut [Complex32]) {
        self.fft.process_with_scratch(buf, &mut self.scratch);
    }
}

/// Input sample types of `fft`.
pub trait FftInput: crate::io::Item {
    /// The sample as a complex number.
    fn to_c32(self) -> Complex32;
}
impl FftInput for f32 {
    #[inline]
    fn to_c32(self) -> Complex32 {
        Complex32::new(self, 0.0)
    }
}
impl FftInput for Complex32 {
    #[inline]
    fn to_c32(self) -> Complex32 {
        self
    }
}

/// `fft`: windowed FFT of consecutive blocks of `fft_size` samples.
///
/// Ports: input `in` (`type`: cf32 or f32, scalar), output `out`
/// (cf32 x `fft_size`). Parameters: `type`, `fft_size`, `window`
/// (applied before the FFT, default blackman_harris), `shift` (put 0 Hz in
/// bin `fft_size/2`, default true). Output `k` of a frame `x` is
/// `Σ_n w[n]·x[n]·e^{−j2πkn/N}` (unnormalised), bins reordered by the shift.
/// Rate 1/`fft_size`.
pub struct Fft<T: FftInput> {
    n: usize,
    window: Vec<f32>,
    shift: bool,
    /// Samples of the frame being filled (unwindowed).
    frame: Vec<Complex32>,
    /// Windowed copy transformed in place.
    work: Vec<Complex32>,
    plan: Planned,
    _t: std::marker::PhantomData<T>,
}

impl<T: FftInput> Block for Fft<T> {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let inp = io.input::<T>(0);
        let avail = io.input_items(0);
        let space = io.output_items(0);
        let n = self.n;
        let mut used = 0;
        let mut made = 0;
        let mut out: Option<&mut [Complex32]> = None;
        loop {
            if self.frame.len() == n {
                if made == space {
                    break;
                }
                for ((o, x), w) in self.work.iter_mut().zip(&self.frame).zip(&self.window) {
                    *o = x * *w;
                }
                self.plan.run(&mut self.work);
                let o = out.get_or_insert_with(|| io.output::<Complex32>(0));
                let dst = &mut o[made * n..(made + 1) * n];
                if self.shift {
                    let h = n / 2;
                    dst[..n - h].copy_from_slice(&self.work[h..]);
                    dst[n - h..].copy_from_slice(&self.work[..h]);
                } else {
                    dst.copy_from_slice(&self.work);
                }
                made += 1;
                self.frame.clear();
            }
            let take = (n - self.frame.len()).min(avail - used);
            if take == 0 {
                break;
            }
            self.frame
                .extend(inp[used..used + take].iter().map(|x| x.to_c32()));
            used += take;
        }
        io.consume(0, used);
        io.produce(0, made);
        Ok(Work::Ok)
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "fft_size" => Some(Pmt::I64(self.n as i64)),
            "shift" => Some(Pmt::Bool(self.shift)),
            _ => None,
        }
    }
}

fn fft_t<T: FftInput>(p: &Params) -> Result<BuiltBlock, String> {
    let n = fft_size_param(p)?;
    Ok(BuiltBlock::new(Fft::<T> {
        n,
        window: window_param(p, n)?,
        shift: p.bool("shift").unwrap_or(true),
        frame: Vec::with_capacity(n),
        work: vec![Complex32::new(0.0, 0.0); n],
        plan: Planned::new(n),
        _t: std::marker::PhantomData,
    })
    .rate(1, n as u64))
}

pub fn fft(p: &Params) -> Result<BuiltBlock, String> {
    match p.item_type("type").unwrap_or(ItemType::Cf32) {
        ItemType::Cf32 => fft_t::<Complex32>(p),
        ItemType::F32 => fft_t::<f32>(p),
        t => Err(format!("fft takes cf32 or f32 samples, not {t}")),
    }
}

/// `psd`: averaged power spectrum in dB.
///
/// Ports: input `in` (cf32), output `out` (f32 x `fft_size`). Parameters:
/// `fft_size`, `average` (FFTs averaged per output, default 16), `window`
/// (default blackman_harris). Each output is
/// `10·log10(max(mean_m |X_m[k]|² / (Σw)², 1e−30))` over `average`
/// consecutive, non-overlapping windowed frames, fft-shifted so 0 Hz is bin
/// `fft_size/2`: a complex exponential of amplitude 1 on a bin centre reads
/// 0 dB, white noise of power σ² reads `σ²·Σw²/(Σw)²` per bin. Powers are
/// accumulated frame by frame (in f64), so only one frame is buffered.
/// Rate 1/(`fft_size`·`average`).
pub struct Psd {
    n: usize,
    average: usize,
    window: Vec<f32>,
    /// `1/(Σw)²`.
    scale: f64,
    frame: Vec<Complex32>,
    work: Vec<Complex32>,
    plan: Planned,
    /// Sum of `|X[k]|²` over the frames of the current average.
    acc: Vec<f64>,
    frames: usize,
}

impl Psd {
    fn add_frame(&mut self) {
        for ((o, x), w) in self.work.iter_mut().zip(&self.frame).zip(&self.window) {
            *o = x * *w;
        }
        self.plan.run(&mut self.work);
        for (a, x) in self.acc.iter_mut().zip(&self.work) {
            let (re, im) = (x.re as f64, x.im as f64);
            *a += re * re + im * im;
        }
        self.frames += 1;
        self.frame.clear();
    }
    fn emit(&mut self, dst: &mut [f32]) {
        let n = self.n;
        let h = n / 2;
        let k = self.scale / self.average as f64;
        for (i, d) in dst.iter_mut().enumerate() {
            let p = self.acc[(i + h) % n] * k;
            *d = (10.0 * p.max(POWER_FLOOR).log10()) as f32;
        }
        self.acc.fill(0.0);
        self.frames = 0;
    }
}

impl Block for Psd {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let inp = io.input::<Complex32>(0);
        let avail = io.input_items(0);
        let space = io.output_items(0);
        let n = self.n;
        let mut used = 0;
        let mut made = 0;
        let mut out: Option<&mut [f32]> = None;
        loop {
            if self.frames == self.average {
                if made == space {
                    break;
                }
                let o = out.get_or_insert_with(|| io.output::<f32>(0));
                let dst = &mut o[made * n..(made + 1) * n];
                self.emit(dst);
                made += 1;
            }
            let take = (n - self.frame.len()).min(avail - used);
            if take == 0 {
                break;
            }
            self.frame.extend_from_slice(&inp[used..used + take]);
            used += take;
            if self.frame.len() == n {
                self.add_frame();
            }
        }
        io.consume(0, used);
        io.produce(0, made);
        Ok(Work::Ok)
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "fft_size" => Some(Pmt::I64(self.n as i64)),
            "average" => Some(Pmt::I64(self.average as i64)),
            _ => None,
        }
    }
}

pub fn psd(p: &Params) -> Result<BuiltBlock, String> {
    let n = fft_size_param(p)?;
    let average = p.u64("average").unwrap_or(16);
    if average == 0 || average > 65536 {
        return Err(format!("average must be from 1 to 65536, got {average}"));
    }
    let window = window_param(p, n)?;
    let sum: f64 = window.iter().map(|&w| w as f64).sum();
    if sum.abs() < 1e-12 {
        return Err("the window sums to zero".into());
    }
    Ok(BuiltBlock::new(Psd {
        n,
        average: average as usize,
        scale: 1.0 / (sum * sum),
        window,
        frame: Vec::with_capacity(n),
        work: vec![Complex32::new(0.0, 0.0); n],
        plan: Planned::new(n),
        acc: vec![0.0; n],
        frames: 0,
    })
    .rate(1, n as u64 * average))
}

/// One carrier found in one spectrum.
#[derive(Debug, Clone, PartialEq)]
struct Carrier {
    /// Number of the carrier: 1, 2, 3… in order of start (0 until assigned).
    id: u64,
    /// First and last bin of the run (inclusive).
    lo: usize,
    hi: usize,
    /// Power-weighted centroid, in bins.
    centroid: f64,
    center_freq: f64,
    bandwidth: f64,
    power_db: f64,
    snr_db: f64,
}

/// `threshold_detector`: finds carriers in dB power spectra and reports when
/// they appear and disappear.
///
/// Ports: input `in` (f32 x `fft_size`, dB spectra with 0 Hz in bin
/// `fft_size/2`, as `psd` makes), message output `detections`, message input
/// `cmd`. Parameters: `fft_size`, `threshold` (dB above the noise floor,
/// default 6, settable), `samp_rate`, `center_freq` (frequency of the middle
/// bin, default 0), `spectrum_samples` (input samples per spectrum, default 0).
///
/// Per spectrum the noise floor is the median bin (mean of the two middle
/// values). Bins strictly above floor + threshold form runs of adjacent bins;
/// each run is a carrier with
/// - `center_freq` = `center_freq` + (c − fft_size/2)·samp_rate/fft_size, c the
///   centroid bin of the run weighted by linear power,
/// - `bandwidth` = run length · samp_rate/fft_size,
/// - `power_db` = the run's peak bin, `snr_db` = peak − floor.
///
/// Carriers are tracked from one spectrum to the next: a run continues a
/// carrier of the previous spectrum when the gap between their bin ranges is
/// at most 2 bins (pairs are matched one to one, closest centroids first).
/// An unmatched run posts `{event: "start", id, center_freq, bandwidth,
/// power_db, snr_db, offset}`; an unmatched previous carrier posts
/// `{event: "end", id, …}` with its last observed values. `id` numbers the
/// carriers 1, 2, 3… in order of start (carriers starting in the same
/// spectrum in order of frequency); a carrier that continues keeps its id,
/// so its `end` event carries the id of its `start` and the two pair
/// exactly. Within one spectrum the `end` events come before the `start`
/// events; the events' offsets never decrease. `offset` is the index of the spectrum where
/// the carrier first appears (start) or first is absent (end), times
/// `spectrum_samples` when that is > 0 — the input sample offset of that
/// spectrum's first sample — or the bare spectrum index when it is 0. When the
/// input ends, every carrier still present posts "end" with the offset just
/// past the last spectrum, and the block finishes.
pub struct ThresholdDetector {
    n: usize,
    threshold: f64,
    samp_rate: f64,
    center_freq: f64,
    spectrum_samples: u64,
    /// Spectra processed so far.
    index: u64,
    /// Carriers of the previous spectrum.
    active: Vec<Carrier>,
    /// Id of the next carrier to start.
    next_id: u64,
    /// Scratch for the median.
    sorted: Vec<f32>,
}

impl ThresholdDetector {
    fn offset(&self, index: u64) -> i64 {
        let o = if self.spectrum_samples > 0 {
            index.saturating_mul(self.spectrum_samples)
        } else {
            index
        };
        o.min(i64::MAX as u64) as i64
    }

    fn event(&self, what: &str, c: &Carrier, index: u64) -> Pmt {
        Pmt::map([
            ("event", Pmt::from(what)),
            ("id", Pmt::from(c.id)),
            ("center_freq", Pmt::F64(c.center_freq)),
            ("bandwidth", Pmt::F64(c.bandwidth)),
            ("power_db", Pmt::F64(c.power_db)),
            ("snr_db", Pmt::F64(c.snr_db)),
            ("offset", Pmt::I64(self.offset(index))),
        ])
    }

    /// The carriers of one dB spectrum.
    fn find(&mut self, s: &[f32]) -> Vec<Carrier> {
        let n = self.n;
        self.sorted.clear();
        self.sorted.extend_from_slice(s);
        self.sorted.sort_unstable_by(|a, b| a.total_cmp(b));
        let floor = if n % 2 == 1 {
            self.sorted[n / 2] as f64
        } else {
            (self.sorted[n / 2 - 1] as f64 + self.sorted[n / 2] as f64) / 2.0
        };
        let level = floor + self.threshold;
        // False for NaN bins, and for every bin when the floor is NaN.
        let above = |x: f32| x as f64 > level;
        let bin_hz = self.samp_rate / n as f64;
        let mut out = vec![];
        let mut k = 0;
        while k < n {
            if !above(s[k]) {
                k += 1;
                continue;
            }
            let lo = k;
            while k < n && above(s[k]) {
                k += 1;
            }
            let hi = k - 1;
            let run = &s[lo..=hi];
            let peak = run.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
            // Weights relative to the peak so large dB values cannot overflow.
            let (mut sw, mut swk) = (0.0, 0.0);
            for (i, &x) in run.iter().enumerate() {
                let w = 10f64.powf((x as f64 - peak) / 10.0);
                sw += w;
                swk += w * (lo + i) as f64;
            }
            let centroid = if sw > 0.0 && swk.is_finite() {
                swk / sw
            } else {
                (lo + hi) as f64 / 2.0
            };
            out.push(Carrier {
                id: 0,
                lo,
                hi,
                centroid,
                center_freq: self.center_freq + (centroid - (n / 2) as f64) * bin_hz,
                bandwidth: run.len() as f64 * bin_hz,
                power_db: peak,
                snr_db: peak - floor,
            });
        }
        out
    }

    /// Processes one spectrum: finds carriers, matches them to the previous
    /// ones and posts the events.
    fn spectrum(&mut self, s: &[f32], io: &mut WorkIo<'_>) {
        let mut now = self.find(s);
        let prev = std::mem::take(&mut self.active);
        // Candidate pairs (distance, prev, new) whose bin ranges are at most
        // 2 bins apart; matched one to one, closest first. Both lists are
        // sorted, disjoint runs, so one sweep finds the candidates.
        let mut pairs = vec![];
        let mut first = 0;
        for (i, p) in prev.iter().enumerate() {
            while first < now.len() && now[first].hi + 2 < p.lo {
                first += 1;
            }
            for (j, c) in now.iter().enumerate().skip(first) {
                if c.lo > p.hi + 2 {
                    break;
                }
                pairs.push(((c.centroid - p.centroid).abs(), i, j));
            }
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut prev_used = vec![false; prev.len()];
        let mut now_used = vec![false; now.len()];
        for (_, i, j) in pairs {
            if !prev_used[i] && !now_used[j] {
                prev_used[i] = true;
                now_used[j] = true;
                now[j].id = prev[i].id;
            }
        }
        let index = self.index;
        for (p, used) in prev.iter().zip(&prev_used) {
            if !used {
                let m = self.event("end", p, index);
                io.post(0, m);
            }
        }
        for (c, used) in now.iter_mut().zip(&now_used) {
            if !used {
                c.id = self.next_id;
                self.next_id += 1;
                let m = self.event("start", c, index);
                io.post(0, m);
            }
        }
        self.active = now;
        self.index += 1;
    }
}

impl Block for ThresholdDetector {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = self.n;
        let avail = io.input_items(0);
        if avail > 0 {
            let inp = io.input::<f32>(0);
            for s in inp[..avail * n].chunks_exact(n) {
                self.spectrum(s, io);
            }
            io.consume(0, avail);
        }
        if io.input_done(0) && io.input_items(0) == 0 {
            let index = self.index;
            for c in std::mem::take(&mut self.active) {
                let m = self.event("end", &c, index);
                io.post(0, m);
            }
            return Ok(Work::Done);
        }
        Ok(Work::Ok)
    }
    fn set(&mut self, name: &str, value: &Pmt) -> Result<()> {
        match name {
            "threshold" => {
                let t = value.as_f64().ok_or_else(|| BlockError::BadValue {
                    name: name.into(),
                    message: "expected a number".into(),
                })?;
                if t.is_nan() || t < 0.0 {
                    return Err(BlockError::BadValue {
                        name: name.into(),
                        message: format!("must be at least 0, got {t}"),
                    });
                }
                self.threshold = t;
                Ok(())
            }
            _ => Err(BlockError::NotSettable(name.into())),
        }
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "threshold" => Some(Pmt::F64(self.threshold)),
            "fft_size" => Some(Pmt::I64(self.n as i64)),
            "samp_rate" => Some(Pmt::F64(self.samp_rate)),
            "center_freq" => Some(Pmt::F64(self.center_freq)),
            "spectrum_samples" => Some(Pmt::I64(self.spectrum_samples as i64)),
            "spectra" => Some(Pmt::I64(self.index as i64)),
            "active" => Some(Pmt::I64(self.active.len() as i64)),
            _ => None,
        }
    }
}

pub fn threshold_detector(p: &Params) -> Result<BuiltBlock, String> {
    let n = fft_size_param(p)?;
    let threshold = p.f64("threshold").unwrap_or(6.0);
    if threshold.is_nan() || threshold < 0.0 {
        return Err(format!("threshold must be at least 0, got {threshold}"));
    }
    let samp_rate = p
        .f64("samp_rate")
        .ok_or("samp_rate is required (the sample rate of the analysed signal)")?;
    if !samp_rate.is_finite() || samp_rate < 0.0 {
        return Err(format!(
            "samp_rate must be a positive number, got {samp_rate}"
        ));
    }
    Ok(BuiltBlock::new(ThresholdDetector {
        n,
        threshold,
        samp_rate,
        center_freq: p.f64("center_freq").unwrap_or(0.0),
        spectrum_samples: p.u64("spectrum_samples").unwrap_or(0),
        index: 0,
        active: vec![],
        next_id: 1,
        sorted: Vec::with_capacity(n),
    })
    .tag_policy(TagPolicy::None))
}
