//! Survey blocks (detection_snippet, snippet_analyzer) against reference
//! math computed here: the sample ranges each detection must cut, the
//! power of known signals, the frequency of a tone in noise, the occupied
//! bandwidth of a flat spectrum; and the whole chain from synthetic
//! carriers through psd and threshold_detector to a jsonl file.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use flowmesh_model::TypedVec;
use flowmesh_runtime::harness::{factory, Harness, Outcome};
use flowmesh_runtime::{
    scheduler, Block, BuiltBlock, Graph, ItemType, Pmt, StreamType, Work, WorkIo,
};
use num_complex::{Complex32, Complex64};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

// ---------------------------------------------------------------- helpers

/// Distinct, exactly representable samples: x[i] = i − 0.5i·j.
fn ramp(n: usize) -> Vec<Complex32> {
    (0..n)
        .map(|i| Complex32::new(i as f32, -(i as f32) * 0.5))
        .collect()
}

fn event(what: &str, id: i64, offset: i64) -> Pmt {
    Pmt::map([
        ("event", Pmt::from(what)),
        ("id", Pmt::I64(id)),
        ("offset", Pmt::I64(offset)),
        ("center_freq", Pmt::F64(1000.0 * id as f64)),
        ("bandwidth", Pmt::F64(50.0)),
        ("power_db", Pmt::F64(-10.0)),
        ("snr_db", Pmt::F64(20.0)),
    ])
}

fn samples(m: &Pmt) -> Vec<Complex32> {
    match m.get("samples") {
        Some(Pmt::Vector(TypedVec::Cf32(v))) => v.clone(),
        other => panic!("samples must be a cf32 vector, got {other:?}"),
    }
}

fn int(m: &Pmt, k: &str) -> i64 {
    m.get(k)
        .and_then(Pmt::as_i64)
        .unwrap_or_else(|| panic!("{k} in {m}"))
}

fn flag(m: &Pmt, k: &str) -> bool {
    m.get(k)
        .and_then(Pmt::as_bool)
        .unwrap_or_else(|| panic!("{k} in {m}"))
}

fn num(m: &Pmt, k: &str) -> f64 {
    m.get(k)
        .and_then(Pmt::as_f64)
        .unwrap_or_else(|| panic!("{k} in {m}"))
}

/// Runs the harness `make` builds unchunked and fed in random chunks of 1,
/// 2 and up to several primes (through a 16 KiB buffer, so snippets
/// straddle its wrap-around); panics unless every run gives the same
/// messages. Returns them.
fn same_under_every_chunking(make: impl Fn() -> Harness) -> Outcome {
    let reference = make().run().expect("unchunked run");
    for (seed, max) in [
        (1, 1),
        (2, 2),
        (3, 7),
        (4, 13),
        (5, 101),
        (6, 997),
        (7, 4099),
    ] {
        let o = make().chunks(seed, max).run().expect("chunked run");
        assert!(
            o == reference,
            "output differs when fed in chunks of 1..={max} (seed {seed})"
        );
    }
    reference
}

// ------------------------------------------------------------ the snippet

/// The reference: for start s, end e (e = None: no end event), the range
/// [max(s − pre, 0), min(e + post, n)) capped at max_len samples.
fn expected_range(
    s: i64,
    e: Option<i64>,
    pre: i64,
    post: i64,
    max_len: i64,
    n: i64,
) -> (i64, i64, bool, bool) {
    let from = (s - pre).max(0);
    let want = e.map_or(n, |e| e + post);
    let to = want.min(n);
    let clamped = s - pre < 0 || e.is_none() || want > n;
    let truncated = to - from > max_len;
    (from, to.min(from + max_len), truncated, clamped)
}

#[test]
fn snippets_are_the_reference_ranges_whatever_the_chunking() {
    let n = 6000i64;
    let (pre, post, max_len) = (50i64, 70i64, 1500i64);
    let x = ramp(n as usize);
    // (id, start, end): 1 at the very start (pre clamps), 2 ordinary and
    // straddling many chunk and buffer boundaries, 4 longer than max_len,
    // 5 within 4's life, 3 at the very end (its end only at the end of the
    // input, and post reaches past it). In the detector's order (offsets
    // never decrease; ends before starts at one offset).
    let det: &[(i64, i64, i64)] = &[
        (1, 0, 300),
        (2, 1000, 2300),
        (4, 3200, 5000),
        (5, 3300, 3400),
        (3, 5800, 6000),
    ];
    let mut evs: Vec<(i64, u8, Pmt)> = vec![];
    for &(id, s, e) in det {
        evs.push((s, 1, event("start", id, s)));
        evs.push((e, 0, event("end", id, e)));
    }
    evs.sort_by_key(|(o, k, _)| (*o, *k));
    let msgs: Vec<Pmt> = evs.into_iter().map(|(_, _, m)| m).collect();
    let make = || {
        Harness::new(factory(
            "detection_snippet",
            json!({"samp_rate": 1e6, "center_freq": 100e6, "pre": pre, "post": post, "max_len": max_len, "history": 10000}),
        ))
        .input(&x)
        .messages("detections", msgs.clone())
    };
    let out = same_under_every_chunking(make);
    let got = &out.messages[0];
    // Posted in the order of the end events.
    let ids: Vec<i64> = got.iter().map(|m| int(m, "id")).collect();
    assert_eq!(ids, [1, 2, 5, 4, 3]);
    for m in got {
        let id = int(m, "id");
        let &(_, s, e) = det.iter().find(|d| d.0 == id).unwrap();
        let (from, to, truncated, clamped) = expected_range(s, Some(e), pre, post, max_len, n);
        assert_eq!(int(m, "offset"), from, "id {id}");
        assert_eq!(samples(m), x[from as usize..to as usize], "id {id}");
        assert_eq!(flag(m, "truncated"), truncated, "id {id}");
        assert_eq!(flag(m, "clamped"), clamped, "id {id}");
        assert_eq!(int(m, "lost"), 0);
        assert_eq!((int(m, "start"), int(m, "end")), (s, e));
        assert_eq!(num(m, "center_freq"), 1000.0 * id as f64);
        assert_eq!(num(m, "bandwidth"), 50.0);
        assert_eq!(num(m, "samp_rate"), 1e6);
        assert_eq!(num(m, "stream_center_freq"), 100e6);
    }
    // A snippet crosses network message edges as CBOR (a cf32 typed array).
    for m in got {
        let bytes = flowmesh_model::pmt::cbor::encode(m);
        assert_eq!(&flowmesh_model::pmt::cbor::decode(&bytes).unwrap(), m);
    }
    // The marks: 1 clamped at the start, 4 truncated, 3 clamped at the end.
    let marks: Vec<(bool, bool)> = got
        .iter()
        .map(|m| (flag(m, "truncated"), flag(m, "clamped")))
        .collect();
    assert_eq!(
        marks,
        [
            (false, true),
            (false, false),
            (false, false),
            (true, false),
            (false, true)
        ]
    );
}

#[test]
fn a_detection_without_an_end_is_posted_clamped_when_everything_ends() {
    let x = ramp(3000);
    let out = same_under_every_chunking(|| {
        Harness::new(factory(
            "detection_snippet",
            json!({"samp_rate": 1e6, "pre": 10, "post": 10}),
        ))
        .input(&x)
        .messages("detections", vec![event("start", 7, 2500)])
    });
    let m = &out.messages[0];
    assert_eq!(m.len(), 1);
    assert_eq!(int(&m[0], "offset"), 2490);
    assert_eq!(samples(&m[0]), x[2490..]);
    assert!(flag(&m[0], "clamped"));
    assert_eq!(m[0].get("end"), Some(&Pmt::Null));
}

#[test]
fn an_end_without_a_start_names_the_problem() {
    let x = ramp(100);
    let err = Harness::new(factory("detection_snippet", json!({"samp_rate": 1e6})))
        .input(&x)
        .messages("detections", vec![event("end", 3, 50)])
        .run()
        .expect_err("an orphan end event fails");
    let text = err.to_string();
    assert!(
        text.contains("id 3") && text.contains("without its start"),
        "{text}"
    );
}

/// Posts each of its events once its input has passed the event's trigger
/// offset: a detector that lags the IQ stream by a known amount.
struct Lagging {
    events: Vec<(u64, Pmt)>,
}

impl Block for Lagging {
    fn work(&mut self, io: &mut WorkIo<'_>) -> flowmesh_runtime::block::Result<Work> {
        let n = io.input_items(0);
        io.consume(0, n);
        let read = io.nitems_read(0);
        let done = io.input_done(0);
        while let Some((at, _)) = self.events.first() {
            if *at > read && !done {
                break;
            }
            let (_, m) = self.events.remove(0);
            io.post(0, m);
        }
        Ok(if done { Work::Done } else { Work::Ok })
    }
}

/// A stream of `x` into `detection_snippet` and into a [`Lagging`] block
/// that posts `events` to it; the snippets it makes.
fn lagging_run(x: &[Complex32], events: Vec<(u64, Pmt)>, history: u64, chunk: usize) -> Vec<Pmt> {
    let mut g = Graph::new();
    // One thread: every buffer is `buffer_bytes` (64 KiB, 8192 samples).
    g.config.threads = 1;
    g.add_built(
        "src",
        BuiltBlock::new(Samples {
            data: x.to_vec(),
            pos: 0,
            chunk,
        })
        .output("out", StreamType::scalar(ItemType::Cf32)),
    )
    .unwrap();
    g.add_built(
        "det",
        BuiltBlock::new(Lagging { events })
            .input("in", StreamType::scalar(ItemType::Cf32))
            .message_output("detections"),
    )
    .unwrap();
    g.add_block(
        "snip",
        "detection_snippet",
        &params(json!({"samp_rate": 1e6, "pre": 100, "post": 100, "history": history})),
    )
    .unwrap();
    g.add_block("dbg", "message_debug", &params(json!({"display": false})))
        .unwrap();
    g.connect("src.out", "det.in").unwrap();
    g.connect("src.out", "snip.in").unwrap();
    g.connect("det.detections", "snip.detections").unwrap();
    g.connect("snip.out", "dbg.in").unwrap();
    let report = scheduler::run(g).unwrap();
    let Some(Pmt::List(msgs)) = report.get("dbg", "messages") else {
        panic!("message_debug keeps a list");
    };
    msgs
}

#[test]
fn late_detections_within_history_are_whole_and_beyond_it_are_marked() {
    // Events reach the snippet block 20000 samples after their offset; the
    // stream buffer (64 KiB, 8192 samples) lets the two readers drift
    // apart by at most its size.
    let n = 60_000usize;
    let x = ramp(n);
    let lag = 20_000u64;
    let events = vec![
        (5000 + lag, event("start", 1, 5000)),
        (9000 + lag, event("end", 1, 9000)),
        (30000 + lag, event("start", 2, 30000)),
        (30500 + lag, event("end", 2, 30500)),
    ];
    for chunk in [1000, 4093] {
        // History covers lag + buffer + pre: whole snippets, always.
        let whole = lagging_run(&x, events.clone(), 40_000, chunk);
        assert_eq!(whole.len(), 2);
        for (m, (from, to)) in whole.iter().zip([(4900, 9100), (29900, 30600)]) {
            assert_eq!(int(m, "lost"), 0);
            assert_eq!(int(m, "offset"), from);
            assert_eq!(samples(m), x[from as usize..to as usize]);
        }
        // History shorter than the lag: the front is lost, and marked; what
        // is there is still the right samples.
        let cut = lagging_run(&x, events.clone(), 5_000, chunk);
        assert_eq!(cut.len(), 2);
        for (m, (from, to)) in cut.iter().zip([(4900i64, 9100i64), (29900, 30600)]) {
            let lost = int(m, "lost");
            assert!(lost > 0, "id {} was not cut", int(m, "id"));
            assert_eq!(int(m, "offset"), from + lost);
            assert_eq!(samples(m), x[(from + lost).min(to) as usize..to as usize]);
        }
    }
}

struct Samples {
    data: Vec<Complex32>,
    pos: usize,
    chunk: usize,
}

impl Block for Samples {
    fn work(&mut self, io: &mut WorkIo<'_>) -> flowmesh_runtime::block::Result<Work> {
        let k = io
            .output_items(0)
            .min(self.data.len() - self.pos)
            .min(self.chunk);
        io.output::<Complex32>(0)[..k].copy_from_slice(&self.data[self.pos..self.pos + k]);
        io.produce(0, k);
        self.pos += k;
        Ok(if self.pos == self.data.len() {
            Work::Done
        } else {
            Work::Ok
        })
    }
}

fn params(v: serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    serde_json::from_value(v).unwrap()
}

// ------------------------------------------------------------ the analyzer

/// Seeded complex Gaussian noise of total power `power` (Box–Muller).
fn noise(seed: u64, power: f64, n: usize) -> Vec<Complex64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let sigma = (power / 2.0).sqrt();
    (0..n)
        .map(|_| {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt() * sigma;
            Complex64::from_polar(r, 2.0 * PI * u2)
        })
        .collect()
}

/// A complex tone of amplitude `a` at `f` Hz, at stream offsets o..o+n.
fn tone(a: f64, f: f64, fs: f64, o: u64, n: usize) -> Vec<Complex64> {
    (0..n)
        .map(|i| Complex64::from_polar(a, 2.0 * PI * (f / fs * (o + i as u64) as f64).fract()))
        .collect()
}

fn to_cf32(x: &[Complex64]) -> Vec<Complex32> {
    x.iter()
        .map(|c| Complex32::new(c.re as f32, c.im as f32))
        .collect()
}

/// A snippet message as detection_snippet makes it.
fn snippet(
    id: i64,
    x: Vec<Complex32>,
    fs: f64,
    center_freq: f64,
    bandwidth: f64,
    offset: u64,
) -> Pmt {
    Pmt::map([
        ("id", Pmt::I64(id)),
        ("center_freq", Pmt::F64(center_freq)),
        ("bandwidth", Pmt::F64(bandwidth)),
        ("stream_center_freq", Pmt::F64(0.0)),
        ("samp_rate", Pmt::F64(fs)),
        ("start", Pmt::from(offset)),
        ("end", Pmt::from(offset + x.len() as u64)),
        ("offset", Pmt::from(offset)),
        ("truncated", Pmt::Bool(false)),
        ("clamped", Pmt::Bool(false)),
        ("lost", Pmt::I64(0)),
        ("samples", Pmt::Vector(TypedVec::Cf32(x))),
    ])
}

fn analyze(msgs: Vec<Pmt>) -> Vec<Pmt> {
    let n = msgs.len();
    let out = Harness::new(factory("snippet_analyzer", json!({})))
        .messages("in", msgs)
        .run()
        .expect("analyzer runs");
    let got = out.messages[0].clone();
    assert_eq!(got.len(), n, "one output per input");
    got
}

fn mean_power(x: &[Complex32]) -> f64 {
    x.iter()
        .map(|c| (c.re as f64).powi(2) + (c.im as f64).powi(2))
        .sum::<f64>()
        / x.len() as f64
}

#[test]
fn analyzer_measures_a_tone_in_noise() {
    let (fs, n, o) = (1e6, 200_000usize, 777u64);
    let (a, f0, sigma2) = (0.1, 123_456.7, 0.01);
    let x: Vec<Complex64> = tone(a, f0, fs, o, n)
        .iter()
        .zip(noise(11, sigma2, n))
        .map(|(t, w)| t + w)
        .collect();
    let x = to_cf32(&x);
    // The detector's centre is 457 Hz off the truth, well within its 5 kHz.
    let m = &analyze(vec![snippet(42, x.clone(), fs, 123_000.0, 5000.0, o)])[0];
    assert_eq!(m.get("error"), None, "{m}");
    assert_eq!(int(m, "id"), 42);
    assert_eq!(m.get("samples"), None, "results never carry the samples");
    assert_eq!(int(m, "length"), n as i64);
    assert_eq!(int(m, "offset"), o as i64);
    // Power of the whole snippet: the same sum, so to rounding.
    let p = 10.0 * mean_power(&x).log10();
    assert!(
        (num(m, "power_dbfs") - p).abs() < 1e-9,
        "{} vs {p}",
        num(m, "power_dbfs")
    );
    // D = floor(fs / (4·5000 + 2500)) = 44.
    assert_eq!(int(m, "decimation"), 44);
    assert!(flag(m, "filtered"));
    let df = num(m, "resolution");
    // Frequency: the Cramér–Rao bound for a tone of SNR A²/σ² in N samples
    // is σ_f = fs/2π·√(6/(SNR·N(N²−1))); the interpolation's own bias is at
    // most 0.05 bin (see the noise-free test). Allow bias + 5σ.
    let snr = a * a / sigma2;
    let nn = n as f64;
    let crlb = fs / (2.0 * PI) * (6.0 / (snr * nn * (nn * nn - 1.0))).sqrt();
    let tol = 0.05 * df + 5.0 * crlb;
    let f = num(m, "frequency");
    assert!(
        (f - f0).abs() <= tol,
        "frequency {f} vs {f0} (tolerance {tol} Hz)"
    );
    // Noise density σ²/fs; SNR in S: A² over σ²·|S|/fs. The noise level is
    // the median of the |R| ≈ 1490 bins of R over ln 2: the sample median of
    // exponential powers has a relative standard deviation of
    // 1/(ln 2·√|R|), doubled for the Hann window's correlation of adjacent
    // bins (|R|/2 independent ones): 5.3 %, 0.22 dB. Allow 4σ: 0.9 dB.
    let r_bins = 2.0 * (1.75 * 5000.0 - 5000.0) / df;
    let sigma_db = 10.0 * (1.0 + 1.0 / (std::f64::consts::LN_2 * (r_bins / 2.0).sqrt())).log10();
    let nd = num(m, "noise_density_dbfs_hz");
    let nd_ref = 10.0 * (sigma2 / fs).log10();
    assert!(
        (nd - nd_ref).abs() < 4.0 * sigma_db,
        "noise density {nd} vs {nd_ref}"
    );
    let bs = num(m, "snr_bandwidth");
    assert!((bs - 5000.0).abs() <= 2.0 * df, "snr bandwidth {bs}");
    let snr_ref = 10.0 * (a * a / (sigma2 * bs / fs)).log10();
    let s = num(m, "snr_db");
    assert!((s - snr_ref).abs() < 4.0 * sigma_db, "snr {s} vs {snr_ref}");
    // Band power: the tone plus the noise in S.
    let bp_ref = 10.0 * (a * a + sigma2 * bs / fs).log10();
    assert!((num(m, "band_power_dbfs") - bp_ref).abs() < 0.1);
    // A tone occupies the Hann main lobe: a few bins.
    let obw = num(m, "occupied_bandwidth");
    assert!(
        obw > 0.0 && obw < 4.0 * df,
        "occupied bandwidth {obw} (bin {df})"
    );
}

#[test]
fn analyzer_frequency_bias_and_band_power_of_clean_tones() {
    // Tones at fractional bin positions across a bin, no noise: the
    // frequency error is the interpolation's bias alone, and the band power
    // is A² (the filter's passband ripple is far below 0.05 dB).
    let (fs, n, o) = (1e6, 50_000usize, 123_456u64);
    let a = 0.3;
    let mut msgs = vec![];
    let mut truth = vec![];
    for k in 0..11 {
        let f0 = -200_000.0 + 3.7 * k as f64;
        truth.push(f0);
        msgs.push(snippet(
            k,
            to_cf32(&tone(a, f0, fs, o, n)),
            fs,
            -200_010.0,
            4000.0,
            o,
        ));
    }
    let out = analyze(msgs);
    let mut worst: f64 = 0.0;
    for (m, f0) in out.iter().zip(&truth) {
        let df = num(m, "resolution");
        let err = (num(m, "frequency") - f0).abs() / df;
        worst = worst.max(err);
        let bp = num(m, "band_power_dbfs");
        assert!((bp - 20.0 * a.log10()).abs() < 0.05, "band power {bp}");
    }
    assert!(worst <= 0.05, "worst frequency bias {worst} bin");
}

/// A snippet whose periodic spectrum is exactly flat over |f − fc| < w/2
/// and zero elsewhere (random phases, inverse DFT of one period).
fn flat_band(seed: u64, n: usize, fs: f64, fc: f64, w: f64, o: u64) -> Vec<Complex32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut spec = vec![Complex64::new(0.0, 0.0); n];
    for (k, s) in spec.iter_mut().enumerate() {
        let f = if k < n / 2 {
            k as f64
        } else {
            k as f64 - n as f64
        } * fs
            / n as f64;
        if f.abs() < w / 2.0 {
            *s = Complex64::from_polar(1.0, 2.0 * PI * rng.random::<f64>());
        }
    }
    let mut planner = rustfft::FftPlanner::<f64>::new();
    planner.plan_fft_inverse(n).process(&mut spec);
    let rms = (spec.iter().map(|c| c.norm_sqr()).sum::<f64>() / n as f64).sqrt();
    let shift = tone(1.0, fc, fs, o, n);
    let x: Vec<Complex64> = spec
        .iter()
        .zip(&shift)
        .map(|(s, t)| s / rms * 0.2 * t)
        .collect();
    to_cf32(&x)
}

#[test]
fn analyzer_occupied_bandwidth_of_a_flat_band_is_99_percent_of_it() {
    let (fs, n, o) = (1e6, 1 << 16, 5000u64);
    let w = 20_000.0;
    let fc = 250_000.0;
    let x = flat_band(3, n, fs, fc, w, o);
    let m = &analyze(vec![snippet(1, x, fs, fc, w, o)])[0];
    let df = num(m, "resolution");
    let obw = num(m, "occupied_bandwidth");
    assert!(
        (obw - 0.99 * w).abs() <= df,
        "occupied bandwidth {obw} vs {} (bin {df})",
        0.99 * w
    );
    // The band's centre is its frequency estimate's neighbourhood: within w/2.
    assert!((num(m, "frequency") - fc).abs() < w / 2.0);
}

#[test]
fn analyzer_answers_every_message_even_one_it_cannot_measure() {
    let bad = Pmt::map([("id", Pmt::I64(9)), ("samp_rate", Pmt::F64(1e6))]);
    let empty = snippet(10, vec![], 1e6, 0.0, 1000.0, 0);
    let out = analyze(vec![bad, empty]);
    assert_eq!(int(&out[0], "id"), 9);
    let e = out[0].get("error").and_then(Pmt::as_str).expect("error");
    assert!(e.contains("samples"), "{e}");
    assert_eq!(int(&out[1], "id"), 10);
    assert!(out[1].get("error").is_some());
}

// ------------------------------------------------------------ the chain

#[test]
fn survey_chain_measures_the_carriers_true_frequencies() {
    // 2 s at 1 Msps: carrier A always on, carrier B gated on and off every
    // 0.25 s (the product of two squares half a period apart, as in
    // examples/spectrum-survey.yaml), over noise of power 0.01.
    let fs = 1e6;
    let (fa, aa) = (-150_000.0 + 123.4, 0.1);
    let (fb, ab) = (220_000.0 + 77.7, 0.05);
    let sigma2: f64 = 0.01;
    let (fft, avg) = (1024usize, 16usize);
    let ss = fft * avg;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let mut g = Graph::new();
    let mut add = |name: &str, kind: &str, p: serde_json::Value| {
        g.add_block(name, kind, &params(p)).unwrap();
    };
    add(
        "a",
        "signal_source",
        json!({"type": "cf32", "samp_rate": fs, "frequency": fa, "amplitude": aa}),
    );
    add(
        "b",
        "signal_source",
        json!({"type": "cf32", "samp_rate": fs, "frequency": fb, "amplitude": ab}),
    );
    add(
        "sq0",
        "signal_source",
        json!({"type": "cf32", "waveform": "square", "samp_rate": fs, "frequency": 1.0}),
    );
    add(
        "sq1",
        "signal_source",
        json!({"type": "cf32", "waveform": "square", "samp_rate": fs, "frequency": 1.0, "phase": PI}),
    );
    add(
        "gated",
        "multiply",
        json!({"type": "cf32", "num_inputs": 3}),
    );
    add(
        "noise",
        "noise_source",
        json!({"type": "cf32", "amplitude": sigma2.sqrt(), "seed": 5}),
    );
    add("band", "add", json!({"type": "cf32", "num_inputs": 3}));
    add("head", "head", json!({"type": "cf32", "n": 2_000_000}));
    add("psd", "psd", json!({"fft_size": fft, "average": avg}));
    add(
        "det",
        "threshold_detector",
        json!({"fft_size": fft, "samp_rate": fs, "spectrum_samples": ss}),
    );
    add(
        "snip",
        "detection_snippet",
        json!({"samp_rate": fs, "pre": ss, "post": ss, "max_len": 262_144}),
    );
    add("an", "snippet_analyzer", json!({}));
    add("out", "jsonl_sink", json!({"path": path.to_str().unwrap()}));
    for (from, to) in [
        ("b.out", "gated.in0"),
        ("sq0.out", "gated.in1"),
        ("sq1.out", "gated.in2"),
        ("a.out", "band.in0"),
        ("gated.out", "band.in1"),
        ("noise.out", "band.in2"),
        ("band.out", "head.in"),
        ("head.out", "psd.in"),
        ("head.out", "snip.in"),
        ("psd.out", "det.in"),
        ("det.detections", "snip.detections"),
        ("snip.out", "an.in"),
        ("an.out", "out.in"),
    ] {
        g.connect(from, to).unwrap();
    }
    scheduler::run(g).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let results: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (mut na, mut nb) = (0, 0);
    let mut ids = vec![];
    for r in &results {
        assert!(r.get("error").is_none(), "{r}");
        assert!(r.get("samples").is_none());
        ids.push(r["id"].as_i64().unwrap());
        let detected = r["center_freq"].as_f64().unwrap();
        let (truth, amp) = if (detected - fa).abs() < (detected - fb).abs() {
            na += 1;
            (fa, aa)
        } else {
            nb += 1;
            (fb, ab)
        };
        // Bias at most 0.05 bin (the clean-tone test) plus 5 Cramér–Rao σ
        // for the snippet's length at the carrier's SNR (A²/σ²; the
        // snippets of B include up to a spectrum of silence at each side,
        // so count only half their samples).
        let df = r["resolution"].as_f64().unwrap();
        let n = r["length"].as_f64().unwrap() / 2.0;
        let crlb = fs / (2.0 * PI) * (6.0 / (amp * amp / sigma2 * n * (n * n - 1.0))).sqrt();
        let f = r["frequency"].as_f64().unwrap();
        assert!(
            (f - truth).abs() <= 0.05 * df + 5.0 * crlb,
            "id {}: frequency {f} vs {truth} (bin {df} Hz, σ {crlb} Hz)",
            r["id"]
        );
        let snr = r["snr_db"].as_f64().unwrap();
        assert!(snr > 10.0, "id {}: snr {snr}", r["id"]);
    }
    // A is one carrier (its snippet cut at max_len); B went on 4 times.
    assert_eq!(na, 1, "{text}");
    assert_eq!(nb, 4, "{text}");
    let a = results
        .iter()
        .find(|r| (r["center_freq"].as_f64().unwrap() - fa).abs() < 5000.0)
        .unwrap();
    assert_eq!(a["truncated"], json!(true));
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "every detection once");
}
