//! Survey: the per-detection work of a spectrum survey as blocks.
//!
//! - [`DetectionSnippet`] (`detection_snippet`): cuts the IQ samples of each
//!   carrier that `threshold_detector` reports (its start/end events) out of
//!   the stream, one message per detection.
//! - [`SnippetAnalyzer`] (`snippet_analyzer`): measures each snippet (power,
//!   SNR, occupied bandwidth, frequency), one small result message per
//!   snippet.
//!
//! Both give the same messages whatever the chunking of the stream and
//! however messages interleave with stream work (see each block's
//! documentation for the one exception, a detection reported later than
//! `history` allows, which is marked).

use std::collections::{BTreeMap, VecDeque};
use std::f64::consts::PI;
use std::time::{Duration, Instant};

use flowmesh_model::catalog::TagPolicy;
use flowmesh_model::{Params, Pmt, TypedVec};
use num_complex::{Complex32, Complex64};
use rustfft::FftPlanner;

use super::Implementation;
use crate::block::{Block, BlockError, BuiltBlock, Result, Work};
use crate::dsp::firdes::{self, DesignWindow};
use crate::dsp::window::Window;
use crate::io::{Poster, WorkIo};

/// The blocks of this module.
pub(super) const BLOCKS: &[Implementation] = &[
    Implementation {
        kind: "detection_snippet",
        build: |c| detection_snippet(c.params),
    },
    Implementation {
        kind: "snippet_analyzer",
        build: |c| snippet_analyzer(c.params),
    },
];

// ------------------------------------------------------------ the snippet

/// One detection being cut.
#[derive(Debug)]
struct Snip {
    id: i64,
    center_freq: f64,
    bandwidth: f64,
    /// Stream offsets of the detection's start and end events.
    start: i64,
    end: Option<i64>,
    /// First wanted offset, `start − pre` (may be negative).
    want_from: i64,
    /// `max(want_from, 0)`: where the snippet starts unless samples were lost.
    from: u64,
    /// Offset of `samples[0]`.
    first: u64,
    samples: Vec<Complex32>,
    /// Samples at the front no longer held when the start event arrived.
    lost: u64,
}

/// `detection_snippet`: the IQ samples around each detection, one message
/// per detection.
///
/// Ports: stream input `in` (cf32, the IQ stream the detector analysed),
/// message input `detections` (the `threshold_detector`'s events: maps with
/// `event` = "start"/"end", `id`, `offset`, `center_freq`, `bandwidth`;
/// others are ignored), message output `out`. Parameters: `samp_rate`,
/// `center_freq` (of the IQ stream, default 0), `pre`/`post` (samples kept
/// before the start and after the end offset, default 0), `max_len` (most
/// samples per snippet, default 1048576), `history` (samples of the stream
/// kept for start events that arrive after the stream has passed them,
/// default 1048576).
///
/// A detection with start offset `s` and end offset `e` wants the samples
/// at offsets `[s − pre, e + post)`. Its message is posted once its `end`
/// event has arrived and the stream has passed `e + post`, or the stream
/// has ended: a map
/// `{id, center_freq, bandwidth, stream_center_freq, samp_rate, start, end,
/// offset, samples, truncated, clamped, lost}` where `offset` is the stream
/// offset of `samples[0]`, `samples` a cf32 vector, and
/// - `clamped` is true when the wanted range was cut to the stream: it
///   began before offset 0 (`s < pre`), or the stream ended before `e + post`;
/// - `truncated` is true when the (clamped) range was longer than `max_len`:
///   the snippet is its first `max_len` samples;
/// - `lost` counts samples missing at the front: the start event arrived
///   when the stream had already moved more than `history` samples past
///   `s − pre`. Only then does the output depend on timing. Events lag the
///   stream by what is buffered between the fan-out of the IQ stream and
///   the detector, at most the IQ buffer plus `(spectra buffered + 2) ·
///   spectrum_samples`; a `history` above that plus `pre` never loses.
///
/// Messages come out in the order of the `end` events (the detector's
/// order, deterministic), each when its samples are complete, so the
/// output does not depend on how the stream is split or when messages
/// arrive. Detections whose `end` never arrives are posted, `clamped`, when
/// both the stream and the messages have ended (in start order). The stream
/// is always consumed at once (never held back), so the detector upstream
/// can never be starved by this block. Memory: `history` samples plus, per
/// open detection, at most `max_len`.
pub struct DetectionSnippet {
    samp_rate: f64,
    center_freq: f64,
    pre: u64,
    post: u64,
    max_len: u64,
    history: usize,
    /// The last `history` samples of the stream.
    ring: VecDeque<Complex32>,
    /// Stream offset of the next sample to arrive.
    pos: u64,
    /// The stream's length, once it has ended.
    total: Option<u64>,
    /// Detections whose end has not arrived, by id.
    open: BTreeMap<i64, Snip>,
    /// Detections whose end has arrived, in that order.
    ended: VecDeque<Snip>,
    /// Messages ready to post.
    ready: Vec<Pmt>,
}

/// A required field of a detection event, or an error naming it.
fn field<T>(m: &Pmt, key: &str, get: impl Fn(&Pmt) -> Option<T>) -> Result<T> {
    m.get(key).and_then(get).ok_or_else(|| {
        BlockError::Failed(format!(
            "detection_snippet: a detection event has no numeric `{key}` ({m}); connect the \
             `detections` port to a threshold_detector's `detections` output"
        ))
    })
}

impl DetectionSnippet {
    /// Where a snippet's samples end: `min(e + post, from + max_len)` once its
    /// end is known, else `from + max_len`.
    fn want_end(&self, s: &Snip) -> u64 {
        let cap = s.from.saturating_add(self.max_len);
        match s.end {
            Some(e) => (e.saturating_add(self.post as i64).max(0) as u64).min(cap),
            None => cap,
        }
    }

    /// Appends the part of `x` (at stream offsets `[at, at + x.len())`)
    /// that `s` still wants.
    fn collect(&self, s: &mut Snip, at: u64, x: &[Complex32]) {
        let next = s.first + s.samples.len() as u64;
        let lo = next.max(at);
        let hi = self.want_end(s).min(at + x.len() as u64);
        if next >= at && lo < hi {
            s.samples
                .extend_from_slice(&x[(lo - at) as usize..(hi - at) as usize]);
        }
    }

    fn on_event(&mut self, m: &Pmt) -> Result<()> {
        let what = match m.get("event").and_then(Pmt::as_str) {
            Some(w @ ("start" | "end")) => w,
            _ => return Ok(()),
        };
        let id = field(m, "id", Pmt::as_i64)?;
        let offset = field(m, "offset", Pmt::as_i64)?;
        if what == "start" {
            if self.open.contains_key(&id) {
                return Err(BlockError::Failed(format!(
                    "detection_snippet: carrier id {id} started twice; each detection needs its own id \
                     (threshold_detector numbers them)"
                )));
            }
            let want_from = offset.saturating_sub(self.pre as i64);
            let from = want_from.max(0) as u64;
            let held = self.pos - self.ring.len() as u64;
            let first = if from < self.pos {
                from.max(held)
            } else {
                from
            };
            let mut s = Snip {
                id,
                center_freq: field(m, "center_freq", Pmt::as_f64)?,
                bandwidth: field(m, "bandwidth", Pmt::as_f64)?,
                start: offset,
                end: None,
                want_from,
                from,
                first,
                samples: vec![],
                lost: first - from,
            };
            if first < self.pos {
                let (a, b) = self.ring.as_slices();
                let base = held;
                self.collect(&mut s, base, a);
                self.collect(&mut s, base + a.len() as u64, b);
            }
            self.open.insert(id, s);
        } else {
            let Some(mut s) = self.open.remove(&id) else {
                return Err(BlockError::Failed(format!(
                    "detection_snippet: an end event for carrier id {id} without its start event; \
                     connect the detector's `detections` output directly to this block"
                )));
            };
            s.end = Some(offset);
            let keep = self.want_end(&s).saturating_sub(s.first) as usize;
            s.samples.truncate(keep);
            self.ended.push_back(s);
        }
        self.release();
        Ok(())
    }

    /// Takes stream samples.
    fn take(&mut self, x: &[Complex32]) {
        let at = self.pos;
        let mut open = std::mem::take(&mut self.open);
        for s in open.values_mut() {
            self.collect(s, at, x);
        }
        self.open = open;
        let mut ended = std::mem::take(&mut self.ended);
        for s in ended.iter_mut() {
            self.collect(s, at, x);
        }
        self.ended = ended;
        let keep = x.len().min(self.history);
        let excess = (self.ring.len() + keep).saturating_sub(self.history);
        self.ring.drain(..excess);
        self.ring.extend(&x[x.len() - keep..]);
        self.pos += x.len() as u64;
        self.release();
    }

    /// Moves every complete detection at the head of the end order to `ready`.
    fn release(&mut self) {
        while let Some(s) = self.ended.front() {
            if self.pos < self.want_end(s) && self.total.is_none() {
                break;
            }
            let s = self.ended.pop_front().expect("front exists");
            let m = self.snippet(s);
            self.ready.push(m);
        }
    }

    /// Posts every detection still held (the stream and the messages have
    /// ended): those whose end came first in end order, then the open ones.
    fn flush(&mut self) {
        self.release();
        for (_, s) in std::mem::take(&mut self.open) {
            let m = self.snippet(s);
            self.ready.push(m);
        }
    }

    fn snippet(&self, s: Snip) -> Pmt {
        let wanted_to = s.end.map(|e| e.saturating_add(self.post as i64));
        // Cut at the stream's end: the end never came, or the snippet would
        // have reached past the last sample (then the stream had ended
        // before it was posted, so this does not depend on timing).
        let clamped_end = s.end.is_none() || self.total.is_some_and(|t| self.want_end(&s) > t);
        let reach = match (wanted_to, self.total) {
            (Some(w), Some(t)) => (w.max(0) as u64).min(t),
            (Some(w), None) => w.max(0) as u64,
            (None, t) => t.unwrap_or(self.pos),
        };
        let truncated = reach.saturating_sub(s.from) > self.max_len;
        Pmt::map([
            ("id", Pmt::I64(s.id)),
            ("center_freq", Pmt::F64(s.center_freq)),
            ("bandwidth", Pmt::F64(s.bandwidth)),
            ("stream_center_freq", Pmt::F64(self.center_freq)),
            ("samp_rate", Pmt::F64(self.samp_rate)),
            ("start", Pmt::I64(s.start)),
            ("end", s.end.map_or(Pmt::Null, Pmt::I64)),
            ("offset", Pmt::from(s.first)),
            ("truncated", Pmt::Bool(truncated)),
            ("clamped", Pmt::Bool(s.want_from < 0 || clamped_end)),
            ("lost", Pmt::from(s.lost)),
            ("samples", Pmt::Vector(TypedVec::Cf32(s.samples))),
        ])
    }
}

impl Block for DetectionSnippet {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.input_items(0);
        if n > 0 {
            let x = &io.input::<Complex32>(0)[..n];
            self.take(x);
            io.consume(0, n);
        }
        let mut done = false;
        if io.input_done(0) && io.input_items(0) == 0 {
            if self.total.is_none() {
                self.total = Some(self.pos);
                self.release();
            }
            if io.messages_ended() {
                self.flush();
                done = true;
            }
        }
        for m in self.ready.drain(..) {
            io.post(0, m);
        }
        Ok(if done {
            Work::Done
        } else if self.total.is_some() {
            // Waiting for the detector's last events: a message wakes us.
            Work::Deadline(Instant::now() + Duration::from_millis(100))
        } else {
            Work::Ok
        })
    }
    fn message(&mut self, _port: usize, msg: Pmt, out: &mut Poster<'_>) -> Result<()> {
        self.on_event(&msg)?;
        for m in self.ready.drain(..) {
            out.post(0, m);
        }
        Ok(())
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "samp_rate" => Some(Pmt::F64(self.samp_rate)),
            "center_freq" => Some(Pmt::F64(self.center_freq)),
            "pre" => Some(Pmt::from(self.pre)),
            "post" => Some(Pmt::from(self.post)),
            "max_len" => Some(Pmt::from(self.max_len)),
            "history" => Some(Pmt::from(self.history as u64)),
            "open" => Some(Pmt::from(self.open.len() as u64)),
            _ => None,
        }
    }
}

fn positive_rate(p: &Params) -> Result<f64, String> {
    let fs = p
        .f64("samp_rate")
        .ok_or("samp_rate is required (the sample rate of the IQ stream)")?;
    if !(fs.is_finite() && fs > 0.0) {
        return Err(format!("samp_rate must be a positive number, got {fs}"));
    }
    Ok(fs)
}

pub fn detection_snippet(p: &Params) -> Result<BuiltBlock, String> {
    let samp_rate = positive_rate(p)?;
    let max_len = p.u64("max_len").unwrap_or(1 << 20);
    if max_len == 0 {
        return Err("max_len must be at least 1".into());
    }
    let history = p.u64("history").unwrap_or(1 << 20);
    Ok(BuiltBlock::new(DetectionSnippet {
        samp_rate,
        center_freq: p.f64("center_freq").unwrap_or(0.0),
        pre: p.u64("pre").unwrap_or(0),
        post: p.u64("post").unwrap_or(0),
        max_len,
        history: usize::try_from(history).map_err(|_| "history is too large")?,
        ring: VecDeque::new(),
        pos: 0,
        total: None,
        open: BTreeMap::new(),
        ended: VecDeque::new(),
        ready: vec![],
    })
    .tag_policy(TagPolicy::None))
}

// ------------------------------------------------------------ the analyzer

/// `snippet_analyzer`: measures each snippet that `detection_snippet` cuts;
/// exactly one output message per input message.
///
/// Ports: message input `in` (snippets), message output `out`. Parameters:
/// `span` (analysis band as a multiple of the bandwidth, default 4, at least
/// 2.5), `min_bandwidth` (floor on the bandwidth used, Hz, default 0),
/// `max_decimation` (default 1024).
///
/// For a snippet `x[i]` (i = 0..N−1) at stream offset `o`, sample rate `fs`,
/// of a carrier reported at `center_freq` with `bandwidth` in a stream
/// centred on `stream_center_freq`:
///
/// 1. `power_dbfs` = 10·log10(Σ|x[i]|²/N): the mean power of the whole
///    snippet (every carrier and the noise in the IQ band), dB full scale.
/// 2. Mix the carrier to 0 Hz: `y[i] = x[i]·exp(−j2π·Δ·(o+i)/fs)` with
///    `Δ = center_freq − stream_center_freq`, the phase taken from the
///    sample's absolute stream offset (so where a snippet was cut does not
///    change it); computed in f64, stored in place of `x` as cf32.
/// 3. With `B = max(bandwidth, min_bandwidth)`: low-pass `y` with
///    `firdes.low_pass(gain 1, fs, cutoff = span·B/2, transition = B/2,
///    Hamming)` (L taps) and decimate by `D = floor(fs/(span·B + B/2))`,
///    bounded to 1..=`max_decimation`; only outputs whose window lies
///    wholly inside the snippet are kept:
///    `z[m] = Σ_k h[k]·y[m·D + L−1−k]`, m = 0..M−1, `M = ⌊(N−L)/D⌋ + 1`,
///    at the rate `fz = fs/D` (`analysis_rate`). When the design is
///    impossible (the band reaches Nyquist) or would leave fewer than 16
///    outputs, `z = y`, `D = 1`, and the flat band is the whole `±fs/2`
///    (`filtered: false`).
/// 4. Periodogram of `z` with a Hann window `w` (M points, symmetric):
///    `P[k] = |Σ_m w[m]·z[m]·e^{−j2πkm/M}|² / (M·Σw²)`, so that Σ_k P[k] is
///    the mean power of `z`; bin k is at `f_k = k·fz/M` (k from −⌊M/2⌋ to
///    ⌈M/2⌉−1), `resolution` = fz/M.
/// 5. Bands: the signal band S = {|f_k| ≤ B/2} (at least bin 0); the flat
///    passband F = {|f_k| ≤ span·B/2 − B/4}; the noise band R = {k ∈ F,
///    |f_k| ≥ B}.
/// 6. `noise_density_dbfs_hz` = 10·log10(n/resolution) with the noise per
///    bin `n = median_{k∈R} P[k] / ln 2` (a bin of complex Gaussian noise
///    has an exponentially distributed power, whose median is ln 2 times
///    its mean; the median ignores a few other carriers in R). Null when R
///    is empty.
/// 7. `band_power_dbfs` = 10·log10(Σ_{k∈S} P[k]) (carrier and noise in S);
///    `snr_db` = 10·log10((Σ_S P − n·|S|) / (n·|S|)): the carrier's power
///    over the noise power in S, whose width is `snr_bandwidth` =
///    |S|·resolution. Null when R is empty or the carrier does not rise
///    above the noise.
/// 8. `occupied_bandwidth`: the ITU 99 % bandwidth of `q_k = max(P[k] − n,
///    0)` over F (noise subtracted; n = 0 when unknown): the distance
///    between the frequencies below which 0.5 % and above which 0.5 % of
///    Σq lies, each bin's power spread evenly over `[f_k − fz/2M, f_k +
///    fz/2M]`. Null when Σq = 0.
/// 9. `frequency`: `center_freq + (k* + δ)·fz/M` in absolute Hz, k* the
///    strongest bin of S and δ the vertex of the parabola through
///    `ln P` at k*−1, k*, k*+1 (clamped to ±½; for a lone tone the Hann
///    window's bias is a few hundredths of a bin).
///
/// The output is a map with the input's metadata (`id`, `center_freq`,
/// `bandwidth`, `stream_center_freq`, `samp_rate`, `start`, `end`,
/// `offset`, `truncated`, `clamped`, `lost`, whichever are present),
/// `length` = N, the measurements above and `decimation`, `taps`,
/// `filtered`; never the samples. A snippet that cannot be measured (no
/// cf32 `samples`, empty, no `samp_rate`/`center_freq`/`bandwidth`) gives
/// the metadata and an `error` sentence instead, so there is still exactly
/// one output per input. Powers are dB full scale (1.0 = 0 dBFS).
pub struct SnippetAnalyzer {
    span: f64,
    min_bandwidth: f64,
    max_decimation: usize,
    planner: FftPlanner<f64>,
}

/// Metadata keys copied from a snippet to its result.
const META: &[&str] = &[
    "id",
    "center_freq",
    "bandwidth",
    "stream_center_freq",
    "samp_rate",
    "start",
    "end",
    "offset",
    "truncated",
    "clamped",
    "lost",
];

/// 10·log10(p) as a message value (null for p ≤ 0 or not finite).
fn db(p: f64) -> Pmt {
    if p > 0.0 && p.is_finite() {
        Pmt::F64(10.0 * p.log10())
    } else {
        Pmt::Null
    }
}

/// The median of `v` (mean of the middle two for even lengths).
fn median(v: &mut [f64]) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl SnippetAnalyzer {
    /// The result message for one snippet (its samples are mixed in place,
    /// so the snippet is taken by value: no copy of them is made).
    pub fn analyze(&mut self, m: Pmt) -> Pmt {
        let mut m = match m {
            Pmt::Map(map) => map,
            other => BTreeMap::from([("value".to_string(), other)]),
        };
        let samples = match m.remove("samples") {
            Some(Pmt::Vector(TypedVec::Cf32(v))) => Some(v),
            _ => None,
        };
        let m = Pmt::Map(m);
        let mut out: BTreeMap<String, Pmt> = META
            .iter()
            .filter_map(|k| m.get(k).map(|v| (k.to_string(), v.clone())))
            .collect();
        let r = match samples {
            Some(x) => self.measure(&m, x, &mut out),
            None => Err(
                "the message has no cf32 `samples` vector; connect this block to a \
                         detection_snippet's `out`"
                    .to_string(),
            ),
        };
        if let Err(e) = r {
            out.insert(
                "error".into(),
                Pmt::String(format!("snippet_analyzer: {e}")),
            );
        }
        Pmt::Map(out)
    }

    fn measure(
        &mut self,
        m: &Pmt,
        mut x: Vec<Complex32>,
        out: &mut BTreeMap<String, Pmt>,
    ) -> Result<(), String> {
        let num = |k: &str| {
            m.get(k)
                .and_then(Pmt::as_f64)
                .ok_or_else(|| format!("the snippet has no numeric `{k}`"))
        };
        let fs = num("samp_rate")?;
        if !(fs.is_finite() && fs > 0.0) {
            return Err(format!("samp_rate must be a positive number, got {fs}"));
        }
        let fc = num("center_freq")?;
        let bw = num("bandwidth")?.max(self.min_bandwidth);
        if !(bw.is_finite() && bw > 0.0) {
            return Err(format!(
                "the bandwidth must be above 0 Hz, got {bw}; set min_bandwidth"
            ));
        }
        let f_iq = m
            .get("stream_center_freq")
            .and_then(Pmt::as_f64)
            .unwrap_or(0.0);
        let o = m.get("offset").and_then(Pmt::as_i64).unwrap_or(0);
        let n = x.len();
        out.insert("length".into(), Pmt::from(n as u64));
        if n < 2 {
            return Err(format!(
                "the snippet has {n} samples; at least 2 are needed"
            ));
        }

        // 1. Power of the snippet.
        let power: f64 = x.iter().map(|c| c.norm_sqr() as f64).sum::<f64>() / n as f64;
        out.insert("power_dbfs".into(), db(power));

        // 2. Mix to 0 Hz, phase from the absolute offset.
        let r = (fc - f_iq) / fs;
        for (i, c) in x.iter_mut().enumerate() {
            let cycles = (r * (o as f64 + i as f64)).rem_euclid(1.0);
            let (s, co) = (-2.0 * PI * cycles).sin_cos();
            let v = Complex64::new(c.re as f64, c.im as f64) * Complex64::new(co, s);
            *c = Complex32::new(v.re as f32, v.im as f32);
        }
        let y = x;

        // 3. Low-pass and decimate.
        let cutoff = self.span * bw / 2.0;
        let transition = bw / 2.0;
        let d = ((fs / (2.0 * cutoff + transition)).floor() as usize).clamp(1, self.max_decimation);
        let design = if cutoff + transition / 2.0 < fs / 2.0 {
            firdes::low_pass(
                1.0,
                fs,
                cutoff,
                transition,
                DesignWindow::Named(Window::Hamming),
            )
            .ok()
        } else {
            None
        };
        let (z, d, taps, flat) = match design {
            Some(h) if n >= h.len() + 15 * d => {
                let l = h.len();
                let h: Vec<f64> = h.iter().map(|&t| t as f64).collect();
                let count = (n - l) / d + 1;
                let z: Vec<Complex64> = (0..count)
                    .map(|m| {
                        let end = m * d + l; // y[m·D + L−1 − k] for k = 0..L
                        let win = &y[end - l..end];
                        win.iter()
                            .rev()
                            .zip(&h)
                            .fold(Complex64::new(0.0, 0.0), |s, (v, t)| {
                                s + Complex64::new(v.re as f64, v.im as f64) * *t
                            })
                    })
                    .collect();
                (z, d, l, cutoff - transition / 2.0)
            }
            _ => (
                y.iter()
                    .map(|v| Complex64::new(v.re as f64, v.im as f64))
                    .collect(),
                1,
                0,
                fs / 2.0,
            ),
        };
        let fz = fs / d as f64;
        out.insert("decimation".into(), Pmt::from(d as u64));
        out.insert("taps".into(), Pmt::from(taps as u64));
        out.insert("filtered".into(), Pmt::Bool(taps > 0));
        out.insert("analysis_rate".into(), Pmt::F64(fz));

        // 4. Hann periodogram, in frequency order.
        let mlen = z.len();
        let w = Window::Hann.coefficients(mlen);
        let sw2: f64 = w.iter().map(|v| v * v).sum();
        let mut buf: Vec<Complex64> = z.iter().zip(&w).map(|(v, w)| v * *w).collect();
        self.planner.plan_fft_forward(mlen).process(&mut buf);
        let df = fz / mlen as f64;
        out.insert("resolution".into(), Pmt::F64(df));
        let lo_bin = -((mlen / 2) as i64);
        // (bin number, power), by increasing frequency.
        let p: Vec<(i64, f64)> = (0..mlen as i64)
            .map(|j| {
                let b = lo_bin + j;
                let k = (b + mlen as i64) as usize % mlen;
                (b, buf[k].norm_sqr() / (mlen as f64 * sw2))
            })
            .collect();
        let freq = |b: i64| b as f64 * df;

        // 5. Bands.
        let in_s = |b: i64| b == 0 || freq(b).abs() <= bw / 2.0;
        let in_f = |b: i64| freq(b).abs() <= flat;
        let mut noise: Vec<f64> = p
            .iter()
            .filter(|(b, _)| in_f(*b) && freq(*b).abs() >= bw)
            .map(|(_, v)| *v)
            .collect();

        // 6. Noise per bin.
        let nbin = if noise.is_empty() {
            None
        } else {
            Some(median(&mut noise) / std::f64::consts::LN_2)
        };
        out.insert(
            "noise_density_dbfs_hz".into(),
            nbin.map_or(Pmt::Null, |v| db(v / df)),
        );

        // 7. Band power and SNR.
        let s_bins: Vec<usize> = (0..mlen).filter(|&j| in_s(p[j].0)).collect();
        let ps: f64 = s_bins.iter().map(|&j| p[j].1).sum();
        out.insert("band_power_dbfs".into(), db(ps));
        out.insert("snr_bandwidth".into(), Pmt::F64(s_bins.len() as f64 * df));
        let snr = nbin.map_or(Pmt::Null, |nb| {
            let ns = nb * s_bins.len() as f64;
            db((ps - ns) / ns)
        });
        out.insert("snr_db".into(), snr);

        // 8. Occupied bandwidth (99 %).
        let nb = nbin.unwrap_or(0.0);
        let q: Vec<(f64, f64)> = p
            .iter()
            .filter(|(b, _)| in_f(*b))
            .map(|(b, v)| (freq(*b), (v - nb).max(0.0)))
            .collect();
        let total: f64 = q.iter().map(|(_, v)| v).sum();
        let at = |share: f64| -> f64 {
            let target = share * total;
            let mut cum = 0.0;
            for (f, v) in &q {
                if *v > 0.0 && cum + v >= target {
                    return f - df / 2.0 + df * (target - cum) / v;
                }
                cum += v;
            }
            q.last().map_or(0.0, |(f, _)| f + df / 2.0)
        };
        out.insert(
            "occupied_bandwidth".into(),
            if total > 0.0 {
                Pmt::F64(at(0.995) - at(0.005))
            } else {
                Pmt::Null
            },
        );

        // 9. Frequency: the strongest bin of S, refined by a parabola on ln P.
        let peak = s_bins
            .iter()
            .copied()
            .max_by(|&a, &b| p[a].1.total_cmp(&p[b].1).then(b.cmp(&a)))
            .expect("S has bin 0");
        let mut delta = 0.0;
        if peak > 0 && peak + 1 < mlen {
            let (a, b, c) = (p[peak - 1].1, p[peak].1, p[peak + 1].1);
            if a > 0.0 && b > 0.0 && c > 0.0 {
                let (a, b, c) = (a.ln(), b.ln(), c.ln());
                let den = a - 2.0 * b + c;
                if den < 0.0 {
                    delta = (0.5 * (a - c) / den).clamp(-0.5, 0.5);
                }
            }
        }
        out.insert(
            "frequency".into(),
            Pmt::F64(fc + (p[peak].0 as f64 + delta) * df),
        );
        Ok(())
    }
}

impl Block for SnippetAnalyzer {
    fn work(&mut self, _io: &mut WorkIo<'_>) -> Result<Work> {
        Ok(Work::Ok)
    }
    fn message(&mut self, _port: usize, msg: Pmt, out: &mut Poster<'_>) -> Result<()> {
        let r = self.analyze(msg);
        out.post(0, r);
        Ok(())
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "span" => Some(Pmt::F64(self.span)),
            "min_bandwidth" => Some(Pmt::F64(self.min_bandwidth)),
            "max_decimation" => Some(Pmt::from(self.max_decimation as u64)),
            _ => None,
        }
    }
}

pub fn snippet_analyzer(p: &Params) -> Result<BuiltBlock, String> {
    let span = p.f64("span").unwrap_or(4.0);
    if !(span.is_finite() && span >= 2.5) {
        return Err(format!(
            "span must be at least 2.5 (the noise band lies between 1 and span/2 − 1/4 bandwidths), got {span}"
        ));
    }
    let min_bandwidth = p.f64("min_bandwidth").unwrap_or(0.0);
    if !(min_bandwidth.is_finite() && min_bandwidth >= 0.0) {
        return Err(format!(
            "min_bandwidth must be at least 0 Hz, got {min_bandwidth}"
        ));
    }
    let max_decimation = p.u64("max_decimation").unwrap_or(1024);
    if max_decimation == 0 {
        return Err("max_decimation must be at least 1".into());
    }
    Ok(BuiltBlock::new(SnippetAnalyzer {
        span,
        min_bandwidth,
        max_decimation: max_decimation.min(1 << 20) as usize,
        planner: FftPlanner::new(),
    })
    .tag_policy(TagPolicy::None))
}
