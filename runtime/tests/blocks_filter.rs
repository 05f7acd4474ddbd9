//! Filter blocks (fir_filter, low_pass_filter, freq_xlating_fir,
//! rational_resampler) against reference math computed here: direct
//! convolution, GNU Radio's low-pass formula, tone gains and frequencies, and
//! runtime tap changes through a running graph.

use std::collections::BTreeMap;
use std::f64::consts::PI;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowmesh_model::TypedVec;
use flowmesh_runtime::blocks::BlockSetup;
use flowmesh_runtime::dsp::firdes;
use flowmesh_runtime::dsp::window::Window;
use flowmesh_runtime::harness::{build, factory, factory_with, Harness};
use flowmesh_runtime::{
    scheduler, Block, BuiltBlock, Graph, ItemType, Pmt, StreamType, Tag, Work, WorkIo,
};
use num_complex::{Complex32, Complex64};
use serde_json::{json, Value};

// ---------------------------------------------------------------- helpers

/// Deterministic pseudo-random values in [−1, 1).
fn noise(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
        .collect()
}

fn noise_cf32(n: usize, seed: u64) -> Vec<Complex32> {
    let re = noise(n, seed);
    let im = noise(n, seed + 1000);
    re.iter()
        .zip(&im)
        .map(|(a, b)| Complex32::new(*a as f32, *b as f32))
        .collect()
}

/// For a FIR (`fir = true`, `I = 1`): `y[m] = Σ_n h[m·D − n]·x[n]` for
/// `m < ⌊N/D⌋` (zero history). For the resampler, GNU Radio's convention:
/// with `nt = ⌈L/I⌉` taps per branch, `y[j] = Σ_n h[j·D + (nt−1)·I − n·I]·x[n]`
/// for the `⌈(N − nt + 1)·I/D⌉` outputs whose window lies inside the input.
/// In f64.
fn direct(h: &[Complex64], x: &[Complex64], i: usize, d: usize, fir: bool) -> Vec<Complex64> {
    let nt = h.len().div_ceil(i);
    let (nout, delay) = if fir {
        (x.len() / d, 0)
    } else {
        (
            ((x.len() + 1).saturating_sub(nt) * i).div_ceil(d),
            (nt - 1) * i,
        )
    };
    (0..nout)
        .map(|m| {
            let mut s = Complex64::new(0.0, 0.0);
            for (n, xn) in x.iter().enumerate() {
                let k = (m * d + delay) as i64 - (n * i) as i64;
                if k >= 0 && (k as usize) < h.len() {
                    s += h[k as usize] * xn;
                }
            }
            s
        })
        .collect()
}

fn taps_json(t: &[Complex64]) -> Value {
    Value::Array(
        t.iter()
            .map(|c| {
                if c.im == 0.0 {
                    json!(c.re)
                } else {
                    json!(format!("{}{:+}j", c.re, c.im))
                }
            })
            .collect(),
    )
}

/// Asserts `got` ≈ `want` within `rel` of the scale `Σ|h|·max|x|`.
fn assert_close(got: &[Complex64], want: &[Complex64], scale: f64, rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: output count");
    for (m, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).norm() <= rel * scale,
            "{what}: output {m} is {g}, expected {w}"
        );
    }
}

fn to_c64_f32(v: &[f32]) -> Vec<Complex64> {
    v.iter().map(|&x| Complex64::new(x as f64, 0.0)).collect()
}

fn to_c64_cf32(v: &[Complex32]) -> Vec<Complex64> {
    v.iter()
        .map(|x| Complex64::new(x.re as f64, x.im as f64))
        .collect()
}

fn tone(n: usize, f: f64) -> Vec<Complex32> {
    (0..n)
        .map(|k| {
            let (s, c) = (2.0 * PI * f * k as f64).sin_cos();
            Complex32::new(c as f32, s as f32)
        })
        .collect()
}

fn db(x: f64) -> f64 {
    20.0 * x.log10()
}

/// RMS of `y[skip..]`.
fn rms(y: &[Complex32], skip: usize) -> f64 {
    let t = &y[skip..];
    (t.iter().map(|v| v.norm_sqr() as f64).sum::<f64>() / t.len() as f64).sqrt()
}

// ---------------------------------------------------------------- fir_filter

fn fir_case_f32(taps: &[Complex64], d: usize) {
    let x: Vec<f32> = noise(5000, 7).iter().map(|&v| v as f32).collect();
    let out = Harness::new(factory(
        "fir_filter",
        json!({"type": "f32", "taps": taps_json(taps), "decimation": d}),
    ))
    .input(&x)
    .run_chunked();
    let y: Vec<f32> = out.items(0);
    let want = direct(taps, &to_c64_f32(&x), 1, d, true);
    let scale: f64 = taps.iter().map(|t| t.norm()).sum();
    assert_close(&to_c64_f32(&y), &want, scale, 1e-5, &format!("f32 D={d}"));
}

fn fir_case_cf32(taps: &[Complex64], d: usize) {
    let x = noise_cf32(5000, 11);
    let out = Harness::new(factory(
        "fir_filter",
        json!({"type": "cf32", "taps": taps_json(taps), "decimation": d}),
    ))
    .input(&x)
    .run_chunked();
    let y: Vec<Complex32> = out.items(0);
    let want = direct(taps, &to_c64_cf32(&x), 1, d, true);
    let scale: f64 = taps.iter().map(|t| t.norm()).sum::<f64>() * 2f64.sqrt();
    assert_close(&to_c64_cf32(&y), &want, scale, 1e-5, &format!("cf32 D={d}"));
}

/// Asymmetric, so that a correlation (taps reversed) would not pass.
fn real_taps() -> Vec<Complex64> {
    (0..21)
        .map(|k| Complex64::new(((k as f64) * 0.37).cos() * (1.0 - k as f64 / 25.0), 0.0))
        .collect()
}

fn complex_taps() -> Vec<Complex64> {
    (0..19)
        .map(|k| Complex64::new(((k as f64) * 0.5).cos(), ((k as f64) * 0.21).sin() - 0.2))
        .collect()
}

#[test]
fn fir_f32_real_taps_is_a_convolution_with_decimation_1_and_3() {
    fir_case_f32(&real_taps(), 1);
    fir_case_f32(&real_taps(), 3);
    // Fewer taps than the decimation, and a single tap.
    fir_case_f32(&real_taps()[..2], 3);
    fir_case_f32(&[Complex64::new(0.5, 0.0)], 1);
}

#[test]
fn fir_cf32_real_taps_with_decimation_1_and_3() {
    fir_case_cf32(&real_taps(), 1);
    fir_case_cf32(&real_taps(), 3);
}

#[test]
fn fir_cf32_complex_taps_with_decimation_1_and_3() {
    fir_case_cf32(&complex_taps(), 1);
    fir_case_cf32(&complex_taps(), 3);
}

#[test]
fn fir_output_count_is_input_over_decimation_and_tags_follow_the_rate() {
    let x = vec![1f32; 1001];
    let out = Harness::new(factory(
        "fir_filter",
        json!({"type": "f32", "taps": [1.0, 2.0], "decimation": 4}),
    ))
    .input_tagged(&x, vec![Tag::new(10, "sob", Pmt::Null)])
    .run_chunked();
    let y: Vec<f32> = out.items(0);
    assert_eq!(y.len(), 1001 / 4);
    assert_eq!(y[0], 1.0); // x[0]·h[0], history zero
    assert!(y[1..].iter().all(|&v| v == 3.0));
    // 10 / 4 = 2.5 → 3 (GNU Radio's rounding).
    assert_eq!(out.tags(0)[0].offset, 3);
}

#[test]
fn a_large_decimation_progresses_one_item_at_a_time() {
    // 5000 cf32 items per output: more than the harness's 16 KiB buffers hold.
    let x = noise_cf32(20_003, 3);
    let out = Harness::new(factory(
        "fir_filter",
        json!({"type": "cf32", "taps": [0.25, 0.5, 0.25], "decimation": 5000}),
    ))
    .input(&x)
    .run_chunked();
    let y: Vec<Complex32> = out.items(0);
    let h = [0.25, 0.5, 0.25].map(|t| Complex64::new(t, 0.0));
    let want = direct(&h, &to_c64_cf32(&x), 1, 5000, true);
    assert_close(&to_c64_cf32(&y), &want, 2.0, 1e-6, "D=5000");
}

#[test]
fn complex_taps_on_a_real_stream_are_refused() {
    let desc = flowmesh_model::catalog().get("fir_filter").unwrap();
    let mut given = BTreeMap::new();
    given.insert("type".to_string(), json!("f32"));
    given.insert("taps".to_string(), json!(["1+1j"]));
    let (p, problems) = flowmesh_model::params::resolve(desc, &given);
    assert!(problems.is_empty());
    let err = flowmesh_runtime::blocks::build("fir_filter", &p)
        .err()
        .expect("must be refused");
    assert!(err.contains("complex"), "{err}");
}

// ---------------------------------------------------------------- low_pass_filter

/// GNU Radio's firdes.low_pass, written out here in f64.
fn gnuradio_low_pass(gain: f64, fs: f64, fc: f64, tw: f64) -> Vec<f64> {
    let ntaps = (53.0 * fs / (22.0 * tw)) as usize;
    let ntaps = if ntaps.is_multiple_of(2) {
        ntaps + 1
    } else {
        ntaps
    };
    let m = (ntaps - 1) / 2;
    let w0 = 2.0 * PI * fc / fs;
    let mut h: Vec<f64> = (0..ntaps)
        .map(|i| {
            let n = i as f64 - m as f64;
            let w = 0.54 - 0.46 * (2.0 * PI * i as f64 / (ntaps - 1) as f64).cos();
            if i == m {
                w0 / PI * w
            } else {
                (n * w0).sin() / (n * PI) * w
            }
        })
        .collect();
    let s: f64 = h.iter().sum();
    for t in &mut h {
        *t *= gain / s;
    }
    h
}

#[test]
fn low_pass_taps_match_gnuradio_design() {
    let want = gnuradio_low_pass(1.0, 1000.0, 100.0, 100.0);
    // 53 · 1000 / (22 · 100) = 24.09 → 24 → odd: 25 taps.
    assert_eq!(want.len(), 25);
    let b = build(
        "low_pass_filter",
        json!({"type": "f32", "samp_rate": 1000.0, "cutoff": 100.0, "transition": 100.0}),
    );
    let Some(Pmt::Vector(TypedVec::Cf64(taps))) = b.block.get("taps") else {
        panic!("low_pass_filter must report its taps");
    };
    assert_eq!(taps.len(), 25);
    for (k, (t, w)) in taps.iter().zip(&want).enumerate() {
        assert!((t.re - w).abs() < 1e-6, "tap {k}: {} vs {w}", t.re);
        assert_eq!(t.im, 0.0);
    }
    // A few hand-checked values: centre 0.2/Σ, symmetric, ends ≈ 0.
    let dc: f64 = taps.iter().map(|t| t.re).sum();
    assert!((dc - 1.0).abs() < 1e-6, "DC gain {dc}");
    assert!((taps[12].re - want[12]).abs() < 1e-7 && taps[12].re > 0.19);
    assert_eq!(taps[0].re, taps[24].re);
    // The block's impulse response is the taps, in order (convolution).
    let mut x = vec![0f32; 40];
    x[0] = 1.0;
    let out = Harness::new(factory(
        "low_pass_filter",
        json!({"type": "f32", "samp_rate": 1000.0, "cutoff": 100.0, "transition": 100.0}),
    ))
    .input(&x)
    .run_chunked();
    let y: Vec<f32> = out.items(0);
    for k in 0..25 {
        assert_eq!(y[k] as f64, (taps[k].re as f32) as f64);
    }
    // Gain scales the taps.
    let b = build(
        "low_pass_filter",
        json!({"type": "f32", "samp_rate": 1000.0, "cutoff": 100.0, "transition": 100.0, "gain": 2.5}),
    );
    let Some(Pmt::Vector(TypedVec::Cf64(t2))) = b.block.get("taps") else {
        panic!()
    };
    let dc2: f64 = t2.iter().map(|t| t.re).sum();
    assert!((dc2 - 2.5).abs() < 1e-5);
}

#[test]
fn low_pass_passes_the_passband_and_stops_the_stopband() {
    let fs = 1000.0;
    let run = |f: f64, d: usize| -> f64 {
        let x = tone(4000, f / fs);
        let out = Harness::new(factory(
            "low_pass_filter",
            json!({"type": "cf32", "samp_rate": fs, "cutoff": 100.0, "transition": 100.0, "decimation": d}),
        ))
        .input(&x)
        .run_chunked();
        let y: Vec<Complex32> = out.items(0);
        assert_eq!(y.len(), 4000 / d);
        rms(&y, 30)
    };
    for d in [1, 2] {
        let pass = db(run(20.0, d));
        assert!(pass.abs() < 0.1, "20 Hz: {pass:.3} dB (D={d})");
        let edge = db(run(-40.0, d));
        // Near the passband edge (50 Hz) the Hamming design droops ~0.17 dB.
        assert!(edge.abs() < 0.3, "−40 Hz: {edge:.3} dB (D={d})");
        let stop = db(run(300.0, d));
        assert!(stop < -45.0, "300 Hz: {stop:.1} dB (D={d})");
        let stop = db(run(-200.0, d));
        assert!(stop < -45.0, "−200 Hz: {stop:.1} dB (D={d})");
    }
    // Real stream: a cosine at 20 Hz keeps its RMS 1/√2.
    let x: Vec<f32> = (0..4000)
        .map(|k| (2.0 * PI * 20.0 * k as f64 / fs).cos() as f32)
        .collect();
    let out = Harness::new(factory(
        "low_pass_filter",
        json!({"type": "f32", "samp_rate": fs, "cutoff": 100.0, "transition": 100.0}),
    ))
    .input(&x)
    .run_chunked();
    let y: Vec<f32> = out.items(0);
    let r =
        (y[100..].iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / (y.len() - 100) as f64).sqrt();
    assert!(db(r * 2f64.sqrt()).abs() < 0.1, "f32 20 Hz rms {r}");
}

#[test]
fn low_pass_set_redesigns_and_refuses_bad_values() {
    let mut b = build(
        "low_pass_filter",
        json!({"type": "cf32", "samp_rate": 1000.0, "cutoff": 100.0, "transition": 100.0}),
    );
    b.block.set("transition", &Pmt::F64(50.0)).unwrap();
    let Some(Pmt::Vector(TypedVec::Cf64(t))) = b.block.get("taps") else {
        panic!()
    };
    // 53 · 1000 / (22 · 50) = 48.2 → 49 taps.
    assert_eq!(t.len(), 49);
    let err = b.block.set("cutoff", &Pmt::F64(600.0)).unwrap_err();
    assert!(err.to_string().contains("half the sample rate"), "{err}");
    assert_eq!(b.block.get("cutoff"), Some(Pmt::F64(100.0)));
    assert!(b.block.set("decimation", &Pmt::I64(2)).is_err());
    let err = b.block.set("transition", &Pmt::F64(1e-6)).unwrap_err();
    assert!(err.to_string().contains("widen the transition"), "{err}");
    // A default design too long to build is refused with a hint.
    let desc = flowmesh_model::catalog().get("rational_resampler").unwrap();
    let mut given = BTreeMap::new();
    given.insert("interpolation".to_string(), json!(60000));
    let (p, _) = flowmesh_model::params::resolve(desc, &given);
    let err = flowmesh_runtime::blocks::build("rational_resampler", &p)
        .err()
        .expect("must be refused");
    assert!(err.contains("give `taps`"), "{err}");
}

// ---------------------------------------------------------------- freq_xlating_fir

#[test]
fn freq_xlating_moves_center_freq_to_dc() {
    let fs = 1e6;
    let proto = firdes::low_pass(1.0, fs, 20e3, 10e3, Window::Hamming.into()).unwrap();
    let proto_json: Vec<f64> = proto.iter().map(|&t| t as f64).collect();
    let run = |f: f64, cf: f64| -> Vec<Complex32> {
        let x = tone(20_000, f / fs);
        let out = Harness::new(factory(
            "freq_xlating_fir",
            json!({"taps": proto_json, "center_freq": cf, "samp_rate": fs, "decimation": 4}),
        ))
        .input(&x)
        .run_chunked();
        out.items(0)
    };
    let y = run(100e3, 100e3);
    assert_eq!(y.len(), 5000);
    // After the transient (241 taps / 4), a constant of magnitude 1.
    let skip = proto.len() / 4 + 2;
    let y0 = y[skip];
    assert!((y0.norm() - 1.0).abs() < 1e-3, "|y| = {}", y0.norm());
    for (n, v) in y.iter().enumerate().skip(skip) {
        assert!((v - y0).norm() < 2e-3, "output {n}: {v} vs {y0}");
    }
    // A tone 10 kHz above the centre comes out at +10 kHz (output rate 250 kHz).
    let y = run(110e3, 100e3);
    let step = (y[1000] * y[999].conj()).arg() as f64;
    assert!((step - 2.0 * PI * 10e3 / 250e3).abs() < 1e-3, "step {step}");
    // The mirror image (−100 kHz) and a far tone are rejected.
    assert!(db(rms(&run(-100e3, 100e3), skip)) < -45.0);
    assert!(db(rms(&run(300e3, 100e3), skip)) < -45.0);
    // center_freq 0 is a plain decimating low-pass.
    assert!(db(rms(&run(5e3, 0.0), skip)).abs() < 0.1);
}

#[test]
fn freq_xlating_set_center_freq_keeps_taps_and_phase() {
    let mut b = build(
        "freq_xlating_fir",
        json!({"taps": [0.5, 0.5], "center_freq": 1000.0, "samp_rate": 48000.0}),
    );
    b.block.set("center_freq", &Pmt::F64(-2000.0)).unwrap();
    assert_eq!(b.block.get("center_freq"), Some(Pmt::F64(-2000.0)));
    assert!(b.block.set("samp_rate", &Pmt::F64(1.0)).is_err());
    assert_eq!(b.rate, (1, 1));
}

// ---------------------------------------------------------------- rational_resampler

#[test]
fn resampler_with_given_taps_matches_the_direct_form() {
    let taps: Vec<Complex64> = (0..11)
        .map(|k| Complex64::new(1.0 / (1.0 + k as f64) - 0.05 * k as f64, 0.0))
        .collect();
    let x: Vec<f32> = noise(3001, 5).iter().map(|&v| v as f32).collect();
    for (i, d) in [(3, 2), (2, 5), (4, 4), (1, 3), (5, 1)] {
        let out = Harness::new(factory(
            "rational_resampler",
            json!({"type": "f32", "interpolation": i, "decimation": d, "taps": taps_json(&taps)}),
        ))
        .input(&x)
        .run_chunked();
        let y: Vec<f32> = out.items(0);
        let want = direct(&taps, &to_c64_f32(&x), i, d, false);
        let scale: f64 = taps.iter().map(|t| t.norm()).sum();
        assert_close(&to_c64_f32(&y), &want, scale, 1e-5, &format!("{i}/{d}"));
    }
    // Complex taps on a complex stream.
    let ct = complex_taps();
    let xc = noise_cf32(2000, 9);
    let out = Harness::new(factory(
        "rational_resampler",
        json!({"type": "cf32", "interpolation": 3, "decimation": 2, "taps": taps_json(&ct)}),
    ))
    .input(&xc)
    .run_chunked();
    let y: Vec<Complex32> = out.items(0);
    let want = direct(&ct, &to_c64_cf32(&xc), 3, 2, false);
    let scale: f64 = ct.iter().map(|t| t.norm()).sum::<f64>() * 2f64.sqrt();
    assert_close(&to_c64_cf32(&y), &want, scale, 1e-5, "cf32 3/2");
}

#[test]
fn resampler_output_count_and_rate() {
    for (i, d, n) in [
        (3u64, 2u64, 10_001usize),
        (2, 5, 10_001),
        (6, 4, 999),
        (1, 1, 1000),
    ] {
        let x = vec![0.5f32; n];
        let out = Harness::new(factory(
            "rational_resampler",
            json!({"type": "f32", "interpolation": i, "decimation": d}),
        ))
        .input_tagged(&x, vec![Tag::new(100, "t", Pmt::Null)])
        .run_chunked();
        let y: Vec<f32> = out.items(0);
        // GNU Radio's count: the outputs whose window (nt = ⌈L/I⌉ inputs)
        // lies inside the input, ⌈(N − nt + 1)·I/D⌉, with I/D reduced.
        let b = build(
            "rational_resampler",
            json!({"type": "f32", "interpolation": i, "decimation": d}),
        );
        let (ri, rd) = b.rate;
        let Some(Pmt::Vector(TypedVec::Cf64(taps))) = b.block.get("taps") else {
            panic!("taps")
        };
        let nt = taps.len().div_ceil(ri as usize);
        let want = ((n - nt + 1) as u64 * ri).div_ceil(rd);
        assert_eq!(y.len() as u64, want, "{i}/{d}: outputs for {n} inputs");
        // Tag offsets map through the rate: round(100·I/D), as GNU Radio
        // does (not moved by the filter's delay).
        assert_eq!(out.tags(0)[0].offset, (200 * i + d) / (2 * d));
    }
    // Without taps, I/D is reduced by the gcd, as GNU Radio does.
    let b = build(
        "rational_resampler",
        json!({"type": "f32", "interpolation": 6, "decimation": 4}),
    );
    assert_eq!(b.rate, (3, 2));
    assert_eq!(b.block.get("interpolation"), Some(Pmt::I64(3)));
}

#[test]
fn resampler_keeps_passband_tones_at_the_right_frequency() {
    for (i, d, f) in [
        (3usize, 2usize, 0.1),
        (2, 5, 0.05),
        (3, 2, -0.3),
        (2, 5, 0.15),
    ] {
        let x = tone(20_000, f);
        let out = Harness::new(factory(
            "rational_resampler",
            json!({"type": "cf32", "interpolation": i, "decimation": d}),
        ))
        .input(&x)
        .run_chunked();
        let y: Vec<Complex32> = out.items(0);
        let fo = f * d as f64 / i as f64;
        for m in 200..y.len() - 1 {
            let g = db(y[m].norm() as f64);
            assert!(g.abs() < 0.5, "{i}/{d} f={f}: output {m} at {g:.3} dB");
            let step = (y[m + 1] * y[m].conj()).arg() as f64;
            assert!(
                (step - 2.0 * PI * fo).abs() < 2e-3,
                "{i}/{d} f={f}: phase step {step}, expected {}",
                2.0 * PI * fo
            );
        }
    }
    // A tone above the output Nyquist band is rejected when decimating.
    let x = tone(20_000, 0.3);
    let out = Harness::new(factory(
        "rational_resampler",
        json!({"type": "cf32", "interpolation": 2, "decimation": 5}),
    ))
    .input(&x)
    .run_chunked();
    let y: Vec<Complex32> = out.items(0);
    assert!(db(rms(&y, 200)) < -60.0, "{}", db(rms(&y, 200)));
}

// ---------------------------------------------------------------- set through a running graph

/// Plays `data`: the first `first` items at once, the rest once `gate` opens.
struct GatedSource {
    data: Vec<f32>,
    pos: usize,
    first: usize,
    gate: Arc<AtomicBool>,
}

impl Block for GatedSource {
    fn work(&mut self, io: &mut WorkIo<'_>) -> flowmesh_runtime::block::Result<Work> {
        let limit = if self.gate.load(Ordering::Acquire) {
            self.data.len()
        } else {
            self.first
        };
        let n = io.output_items(0).min(limit - self.pos);
        if n > 0 {
            io.output::<f32>(0)[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            io.produce(0, n);
            self.pos += n;
        }
        if self.pos == self.data.len() {
            return Ok(Work::Done);
        }
        if n == 0 {
            return Ok(Work::SleepUntil(Instant::now() + Duration::from_millis(1)));
        }
        Ok(Work::Ok)
    }
}

fn fir_outputs(taps: &[f64], d: usize, x: &[f32]) -> Vec<f32> {
    Harness::new(factory(
        "fir_filter",
        json!({"type": "f32", "taps": taps, "decimation": d}),
    ))
    .input(x)
    .run_chunked()
    .items(0)
}

/// Runs `x` through a fir_filter in a graph, changing its taps from `old` to
/// `new` once the first `first` inputs are filtered. Returns the output and
/// the offset `set` reported.
fn run_with_set(old: &[f64], new: &[f64], d: usize, x: &[f32], first: usize) -> (Vec<f32>, u64) {
    let gate = Arc::new(AtomicBool::new(false));
    let mut g = Graph::new();
    g.add_built(
        "src",
        BuiltBlock::new(GatedSource {
            data: x.to_vec(),
            pos: 0,
            first,
            gate: gate.clone(),
        })
        .output("out", StreamType::scalar(ItemType::F32)),
    )
    .unwrap();
    let mut fir = BTreeMap::new();
    fir.insert("type".to_string(), json!("f32"));
    fir.insert("taps".to_string(), json!(old));
    fir.insert("decimation".to_string(), json!(d));
    g.add_block("fir", "fir_filter", &fir).unwrap();
    let mut sink = BTreeMap::new();
    sink.insert("type".to_string(), json!("f32"));
    g.add_block("sink", "vector_sink", &sink).unwrap();
    g.connect("src.out", "fir.in").unwrap();
    g.connect("fir.out", "sink.in").unwrap();
    let running = scheduler::start(g).unwrap();
    let h = running.handle();
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = (first / d) as u64;
    loop {
        let s = h.stats().iter().find(|s| s.name == "fir").unwrap();
        if s.items_out() >= before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the filter did not get through the first part"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Refused changes leave the filter as it is.
    let err = h
        .set(
            "fir",
            "taps",
            Pmt::Vector(TypedVec::Cf64(vec![Complex64::new(0.0, 1.0)])),
        )
        .unwrap_err();
    assert!(err.to_string().contains("complex"), "{err}");
    assert!(h.set("fir", "decimation", Pmt::I64(2)).is_err());
    let off = h
        .set("fir", "taps", Pmt::Vector(TypedVec::F64(new.to_vec())))
        .unwrap();
    gate.store(true, Ordering::Release);
    let report = running.wait().unwrap();
    let Some(Pmt::Vector(TypedVec::F32(y))) = report.get("sink", "data") else {
        panic!("vector_sink data");
    };
    // The change is marked with a `param` tag at the offset.
    let Some(Pmt::List(tags)) = report.get("sink", "tags") else {
        panic!("vector_sink tags");
    };
    assert!(tags
        .iter()
        .any(|t| t.get("key") == Some(&Pmt::String("param".into()))
            && t.get("offset") == Some(&Pmt::I64(off as i64))));
    (y, off)
}

#[test]
fn set_taps_mid_stream_applies_exactly_at_the_returned_offset() {
    let x: Vec<f32> = noise(9000, 21).iter().map(|&v| v as f32).collect();
    let d = 3;
    let first = 3000;
    let old: Vec<f64> = (0..7).map(|k| 1.0 / (k as f64 + 1.0)).collect();
    let same_len: Vec<f64> = (0..7).map(|k| (k as f64 * 0.9).sin()).collect();
    let shorter = vec![0.3, -0.2, 0.1];
    let longer: Vec<f64> = (0..12).map(|k| (k as f64 * 0.4).cos() * 0.5).collect();
    let ref_old = fir_outputs(&old, d, &x);
    for new in [&same_len, &shorter, &longer] {
        let ref_new = fir_outputs(new, d, &x);
        let (y, off) = run_with_set(&old, new, d, &x, first);
        let off = off as usize;
        assert_eq!(off, first / d, "set applies at the next output");
        assert_eq!(y.len(), x.len() / d);
        assert_eq!(&y[..off], &ref_old[..off], "before the offset: old taps");
        // Outputs whose window lies in the retained history are exact at
        // once; a longer filter sees zeros before it for its first outputs.
        let exact_from = off + (new.len().saturating_sub(old.len())).div_ceil(d);
        assert_eq!(
            &y[exact_from..],
            &ref_new[exact_from..],
            "after the offset: new taps ({} taps)",
            new.len()
        );
        if new.len() <= old.len() {
            assert_ne!(y[off], ref_old[off]);
        }
    }
}

// ---------------------------------------------------------------- catalog

#[test]
fn filter_ports_and_rates_agree_with_the_catalog() {
    let cases = [
        ("fir_filter", json!({"taps": [0.5, 0.25], "decimation": 3})),
        (
            "low_pass_filter",
            json!({"samp_rate": 1e6, "cutoff": 1e5, "transition": 5e4, "decimation": 2}),
        ),
        (
            "freq_xlating_fir",
            json!({"taps": [0.5, 0.25], "samp_rate": 1e6, "decimation": 4}),
        ),
        (
            "rational_resampler",
            json!({"interpolation": 3, "decimation": 2}),
        ),
    ];
    for (kind, params) in cases {
        let desc = flowmesh_model::catalog().get(kind).unwrap();
        for ty in ["f32", "cf32"] {
            let mut given: BTreeMap<String, Value> =
                serde_json::from_value(params.clone()).unwrap();
            if desc.param_descriptor("type").is_some() {
                given.insert("type".into(), json!(ty));
            }
            let (p, problems) = flowmesh_model::params::resolve(desc, &given);
            assert!(problems.is_empty(), "{kind}: {problems:?}");
            let (want_in, want_out) = desc.resolve_ports(&p);
            let b = flowmesh_runtime::blocks::build(kind, &p).unwrap();
            assert_eq!(b.inputs, want_in, "{kind} {ty} inputs");
            assert_eq!(b.outputs, want_out, "{kind} {ty} outputs");
            assert_eq!(Some(b.rate), desc.rate.eval(&p), "{kind} {ty} rate");
        }
    }
}

// ---------------------------------------------------------------- resuming mid-stream

/// A restarted segment feeds a block its input from an offset `s` aligned to
/// the block's decimation, moved back by its history
/// (the catalog's `history_of`); `freq_xlating_fir` (declared
/// `output_indexed`) also gets the index of its first output as its setup's
/// `start`. After the warm-up its outputs must equal an
/// uninterrupted run's, bit for bit.
#[test]
fn freq_xlating_resumed_mid_stream_continues_exactly() {
    let fs = 48_000.0;
    let proto = firdes::low_pass(1.0, fs, 4000.0, 1000.0, Window::Hamming.into()).unwrap();
    let proto_json: Vec<f64> = proto.iter().map(|&t| t as f64).collect();
    let x = noise_cf32(6000, 31);
    for (cf, d) in [(9000.0, 4u64), (-5000.0, 3), (12345.6, 1)] {
        let params = |_: u64| {
            json!({"taps": proto_json, "center_freq": cf, "samp_rate": fs,
                   "decimation": d})
        };
        let starting = |start: u64| {
            factory_with(
                "freq_xlating_fir",
                params(0),
                BlockSetup {
                    start,
                    ..Default::default()
                },
            )
        };
        let full: Vec<Complex32> = Harness::new(factory("freq_xlating_fir", params(0)))
            .input(&x)
            .run()
            .unwrap()
            .items(0);
        let desc = flowmesh_model::catalog().get("freq_xlating_fir").unwrap();
        let given: BTreeMap<String, Value> = serde_json::from_value(params(0)).unwrap();
        let (resolved, _) = flowmesh_model::params::resolve(desc, &given);
        assert!(desc.output_indexed);
        let history = desc.history_of(&resolved);
        assert_eq!(history as usize, proto.len() - 1);
        // Resume so that output 1000 is the first the sink still needs.
        let s = (1000 * d - history) / d * d;
        let first = s / d;
        let resumed: Vec<Complex32> = Harness::new(starting(first))
            .input(&x[s as usize..])
            .run_chunked()
            .items(0);
        let warm = history.div_ceil(d) as usize;
        assert_eq!(first as usize + resumed.len(), full.len(), "{cf} Hz D {d}");
        assert_eq!(
            &resumed[warm..],
            &full[first as usize + warm..],
            "{cf} Hz D {d}: outputs after the warm-up"
        );
        // Without `start` the mixer would restart at output 0's phase.
        let unaware: Vec<Complex32> = Harness::new(factory("freq_xlating_fir", params(0)))
            .input(&x[s as usize..])
            .run()
            .unwrap()
            .items(0);
        assert_ne!(&unaware[warm..], &full[first as usize + warm..]);
    }
}

#[test]
fn resampler_resumed_on_its_decimation_continues_exactly() {
    let x = noise_cf32(5000, 33);
    for (i, d, taps) in [
        (3u64, 2u64, None),
        (2, 3, None),
        (5, 1, None),
        (1, 4, None),
        (4, 6, Some(vec![0.1, 0.3, -0.2, 0.5, 0.25, 0.05, -0.1])),
    ] {
        let mut params = json!({"type": "cf32", "interpolation": i, "decimation": d});
        if let Some(t) = &taps {
            params["taps"] = json!(t);
        }
        let desc = flowmesh_model::catalog().get("rational_resampler").unwrap();
        let given: BTreeMap<String, Value> = serde_json::from_value(params.clone()).unwrap();
        let (resolved, _) = flowmesh_model::params::resolve(desc, &given);
        assert!(desc.history.is_some());
        assert_eq!(desc.history_of(&resolved), 0);
        let full: Vec<Complex32> = Harness::new(factory("rational_resampler", params.clone()))
            .input(&x)
            .run()
            .unwrap()
            .items(0);
        // The worker aligns the start to D/gcd(I, D) of the rate as given.
        let g = gcd(i, d);
        let align = d / g;
        for s in [align * 7, align * 301, align * 1000] {
            let resumed: Vec<Complex32> =
                Harness::new(factory("rational_resampler", params.clone()))
                    .input(&x[s as usize..])
                    .run_chunked()
                    .items(0);
            let first = (s * i / d) as usize;
            assert_eq!(first + resumed.len(), full.len(), "{i}/{d} from {s}");
            assert_eq!(&resumed[..], &full[first..], "{i}/{d} from {s}");
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
