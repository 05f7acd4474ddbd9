//! Spectrum blocks (fft, psd, threshold_detector) against reference math
//! computed here: a naive DFT, the PSD scaling, and detection of carriers at a
//! known SNR in seeded Gaussian noise.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use flowmesh_runtime::dsp::window::Window;
use flowmesh_runtime::harness::{factory, Harness};
use flowmesh_runtime::{
    scheduler, Block, BuiltBlock, Graph, ItemType, Pmt, StreamType, Work, WorkIo,
};
use num_complex::{Complex32, Complex64};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

// ---------------------------------------------------------------- helpers

/// Seeded complex Gaussian noise of total power `power` (Box–Muller).
struct Noise {
    rng: StdRng,
    sigma: f64,
}

impl Noise {
    fn new(seed: u64, power: f64) -> Self {
        Noise {
            rng: StdRng::seed_from_u64(seed),
            // Each of re and im has variance power/2.
            sigma: (power / 2.0).sqrt(),
        }
    }
    fn next(&mut self) -> Complex64 {
        let u1: f64 = 1.0 - self.rng.random::<f64>(); // (0, 1]
        let u2: f64 = self.rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * self.sigma;
        let (s, c) = (2.0 * PI * u2).sin_cos();
        Complex64::new(r * c, r * s)
    }
}

fn pseudo_random_cf32(n: usize, seed: u64) -> Vec<Complex32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            Complex32::new(
                rng.random::<f32>() * 2.0 - 1.0,
                rng.random::<f32>() * 2.0 - 1.0,
            )
        })
        .collect()
}

/// Naive DFT of the windowed frame, in f64.
fn naive_dft(x: &[Complex64], w: &[f64]) -> Vec<Complex64> {
    let n = x.len();
    (0..n)
        .map(|k| {
            let mut s = Complex64::new(0.0, 0.0);
            for (i, (xi, wi)) in x.iter().zip(w).enumerate() {
                let ph = -2.0 * PI * ((k * i) % n) as f64 / n as f64;
                s += xi * *wi * Complex64::from_polar(1.0, ph);
            }
            s
        })
        .collect()
}

/// fftshift: 0 Hz to bin n/2.
fn shifted<T: Copy>(x: &[T]) -> Vec<T> {
    let h = x.len() / 2;
    x[h..].iter().chain(&x[..h]).copied().collect()
}

/// The PSD the `psd` block should compute, in f64: averaged |X|²/(Σw)²,
/// shifted, in dB. Samples come from `next` (so long inputs need not be
/// stored); returns `count` spectra.
fn reference_psd(
    mut next: impl FnMut() -> Complex64,
    n: usize,
    average: usize,
    window: Window,
    count: usize,
) -> Vec<f32> {
    let w = window.coefficients(n);
    let sum: f64 = w.iter().sum();
    let fft = rustfft::FftPlanner::<f64>::new().plan_fft_forward(n);
    let mut buf = vec![Complex64::new(0.0, 0.0); n];
    let mut out = Vec::with_capacity(n * count);
    for _ in 0..count {
        let mut acc = vec![0.0f64; n];
        for _ in 0..average {
            for (b, wi) in buf.iter_mut().zip(&w) {
                *b = next() * *wi;
            }
            fft.process(&mut buf);
            for (a, x) in acc.iter_mut().zip(&buf) {
                *a += x.norm_sqr();
            }
        }
        let db: Vec<f32> = acc
            .iter()
            .map(|a| (10.0 * (a / average as f64 / (sum * sum)).max(1e-30).log10()) as f32)
            .collect();
        out.extend(shifted(&db));
    }
    out
}

/// Window sums `(Σw, Σw²)`.
fn window_sums(window: Window, n: usize) -> (f64, f64) {
    let w = window.coefficients(n);
    (w.iter().sum(), w.iter().map(|x| x * x).sum())
}

fn db(x: f64) -> f64 {
    10.0 * x.log10()
}

/// A detection event, decoded.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    event: String,
    id: i64,
    center_freq: f64,
    bandwidth: f64,
    power_db: f64,
    snr_db: f64,
    offset: i64,
}

fn events(msgs: &[Pmt]) -> Vec<Event> {
    msgs.iter()
        .map(|m| Event {
            event: m
                .get("event")
                .and_then(Pmt::as_str)
                .expect("event")
                .to_string(),
            id: match m.get("id") {
                Some(Pmt::I64(i)) => *i,
                other => panic!("id must be an integer, got {other:?}"),
            },
            center_freq: m
                .get("center_freq")
                .and_then(Pmt::as_f64)
                .expect("center_freq"),
            bandwidth: m.get("bandwidth").and_then(Pmt::as_f64).expect("bandwidth"),
            power_db: m.get("power_db").and_then(Pmt::as_f64).expect("power_db"),
            snr_db: m.get("snr_db").and_then(Pmt::as_f64).expect("snr_db"),
            offset: match m.get("offset") {
                Some(Pmt::I64(o)) => *o,
                other => panic!("offset must be an integer, got {other:?}"),
            },
        })
        .collect()
}

// ---------------------------------------------------------------- fft

#[test]
fn fft_matches_naive_dft_cf32() {
    for &n in &[2usize, 8, 64, 256] {
        for window in ["rectangular", "hann"] {
            for shift in [false, true] {
                let frames = 3;
                // Plus a partial frame, which is dropped.
                let x = pseudo_random_cf32(n * frames + n / 2, n as u64);
                let h = Harness::new(factory(
                    "fft",
                    json!({"type": "cf32", "fft_size": n, "window": window, "shift": shift}),
                ))
                .input(&x);
                let out = if n == 64 {
                    h.run_chunked()
                } else {
                    h.run().unwrap()
                };
                let y: Vec<Complex32> = out.items(0);
                assert_eq!(y.len(), n * frames, "n {n}");
                let w = Window::parse(window).unwrap().coefficients(n);
                for f in 0..frames {
                    let frame: Vec<Complex64> = x[f * n..(f + 1) * n]
                        .iter()
                        .map(|c| Complex64::new(c.re as f64, c.im as f64))
                        .collect();
                    let mut want = naive_dft(&frame, &w);
                    if shift {
                        want = shifted(&want);
                    }
                    let scale: f64 = frame.iter().zip(&w).map(|(c, w)| c.norm() * w).sum();
                    for (k, (a, b)) in y[f * n..(f + 1) * n].iter().zip(&want).enumerate() {
                        let err = (Complex64::new(a.re as f64, a.im as f64) - b).norm();
                        assert!(
                            err <= 1e-5 * scale.max(1.0),
                            "n {n} window {window} shift {shift} frame {f} bin {k}: got {a}, want {b}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn fft_f32_input_and_shift_puts_dc_in_the_middle() {
    let n = 32;
    // A constant: all energy at 0 Hz.
    let x = vec![0.5f32; n * 2];
    let out = Harness::new(factory(
        "fft",
        json!({"type": "f32", "fft_size": n, "window": "rectangular"}),
    ))
    .input(&x)
    .run_chunked();
    let y: Vec<Complex32> = out.items(0);
    assert_eq!(y.len(), 2 * n);
    for f in 0..2 {
        for k in 0..n {
            let v = y[f * n + k];
            if k == n / 2 {
                assert!((v - Complex32::new(16.0, 0.0)).norm() < 1e-4, "{v}");
            } else {
                assert!(v.norm() < 1e-4, "bin {k}: {v}");
            }
        }
    }
    // f32 input against the naive DFT with the default window.
    let xr: Vec<f32> = pseudo_random_cf32(n, 9).iter().map(|c| c.re).collect();
    let out = Harness::new(factory(
        "fft",
        json!({"type": "f32", "fft_size": n, "shift": false}),
    ))
    .input(&xr)
    .run()
    .unwrap();
    let y: Vec<Complex32> = out.items(0);
    let frame: Vec<Complex64> = xr.iter().map(|&r| Complex64::new(r as f64, 0.0)).collect();
    let want = naive_dft(&frame, &Window::BlackmanHarris.coefficients(n));
    for (a, b) in y.iter().zip(&want) {
        assert!((Complex64::new(a.re as f64, a.im as f64) - b).norm() < 1e-4);
    }
}

// ---------------------------------------------------------------- psd

#[test]
fn psd_full_scale_tone_on_bin_centre_reads_0_db() {
    let n = 256;
    let average = 4;
    for window in [
        "blackman_harris",
        "hann",
        "hamming",
        "blackman",
        "rectangular",
    ] {
        for k0 in [37i64, -50, 0] {
            let x: Vec<Complex32> = (0..n * average * 2)
                .map(|i| {
                    let ph = 2.0 * PI * (k0 * i as i64).rem_euclid(n as i64) as f64 / n as f64;
                    Complex32::new(ph.cos() as f32, ph.sin() as f32)
                })
                .collect();
            let out = Harness::new(factory(
                "psd",
                json!({"fft_size": n, "average": average, "window": window}),
            ))
            .input(&x)
            .run()
            .unwrap();
            let p: Vec<f32> = out.items(0);
            assert_eq!(p.len(), 2 * n);
            let bin = (n as i64 / 2 + k0) as usize;
            for s in p.chunks(n) {
                assert!(
                    s[bin].abs() < 0.01,
                    "{window} tone at bin {k0}: reads {} dB",
                    s[bin]
                );
                let max = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(max, s[bin], "{window}: the tone bin is the peak");
            }
        }
    }
}

#[test]
fn psd_white_noise_level_and_chunking() {
    let n = 512;
    let average = 32;
    let spectra = 8;
    let sigma2 = 0.25;
    let mut noise = Noise::new(11, sigma2);
    let x: Vec<Complex32> = (0..n * average * spectra)
        .map(|_| {
            let c = noise.next();
            Complex32::new(c.re as f32, c.im as f32)
        })
        .collect();
    let out = Harness::new(factory("psd", json!({"fft_size": n, "average": average})))
        .input(&x)
        .run_chunked();
    let p: Vec<f32> = out.items(0);
    assert_eq!(p.len(), n * spectra);
    let (s1, s2) = window_sums(Window::BlackmanHarris, n);
    let want = db(sigma2 * s2 / (s1 * s1));
    let lin_mean = p.iter().map(|&d| 10f64.powf(d as f64 / 10.0)).sum::<f64>() / p.len() as f64;
    let db_mean = p.iter().map(|&d| d as f64).sum::<f64>() / p.len() as f64;
    assert!(
        (db(lin_mean) - want).abs() < 0.5,
        "mean power {} dB, want {want} dB",
        db(lin_mean)
    );
    assert!(
        (db_mean - want).abs() < 0.5,
        "mean of dB {db_mean}, want {want}"
    );
    // And the block agrees with the reference computation bin by bin.
    let mut it = x.iter();
    let reference = reference_psd(
        || {
            let c = it.next().unwrap();
            Complex64::new(c.re as f64, c.im as f64)
        },
        n,
        average,
        Window::BlackmanHarris,
        spectra,
    );
    for (a, b) in p.iter().zip(&reference) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
}

#[test]
fn psd_rate_and_ports() {
    let b = flowmesh_runtime::harness::build("psd", json!({"fft_size": 64, "average": 3}));
    assert_eq!(b.rate, (1, 192));
    let b = flowmesh_runtime::harness::build("fft", json!({"fft_size": 64}));
    assert_eq!(b.rate, (1, 64));
}

// ---------------------------------------------------------------- detector

/// A test carrier: complex exponential at `freq` Hz, on for spectra
/// `on.0..on.1` (spectrum-aligned).
struct Carrier {
    freq: f64,
    amplitude: f64,
    on: (usize, usize),
}

/// Samples of noise (power `sigma2`) plus carriers, as a generator.
fn scene(
    seed: u64,
    sigma2: f64,
    fs: f64,
    spectrum_samples: usize,
    carriers: &[Carrier],
) -> impl FnMut() -> Complex64 + '_ {
    let mut noise = Noise::new(seed, sigma2);
    let mut i = 0u64;
    move || {
        let mut s = noise.next();
        let spec = (i / spectrum_samples as u64) as usize;
        for c in carriers {
            if spec >= c.on.0 && spec < c.on.1 {
                let ph = 2.0 * PI * ((c.freq / fs * i as f64).fract());
                s += Complex64::from_polar(c.amplitude, ph);
            }
        }
        i += 1;
        s
    }
}

#[test]
fn detector_finds_carriers_at_10_db_snr() {
    let fs = 1e6;
    let n = 1024;
    let average = 16;
    let spectra = 24;
    let spectrum_samples = n * average;
    let bin_hz = fs / n as f64;
    let sigma2 = 1.0;
    // SNR = carrier power over the noise power within one bin's bandwidth:
    // noise per bin = σ²/N · ENBW with ENBW = N·Σw²/(Σw)² (in bins), which is
    // exactly the level white noise reads in the PSD.
    let (s1, s2) = window_sums(Window::BlackmanHarris, n);
    let enbw = n as f64 * s2 / (s1 * s1);
    let noise_per_bin = sigma2 / n as f64 * enbw;
    let snr_db = 10.0;
    let amplitude = (noise_per_bin * 10f64.powf(snr_db / 10.0)).sqrt();
    assert!((db(amplitude * amplitude / noise_per_bin) - 10.0).abs() < 1e-9);
    let carriers = [
        // on a bin centre
        Carrier {
            freq: -300.0 * bin_hz,
            amplitude,
            on: (0, spectra),
        },
        // between bins
        Carrier {
            freq: 100_300.0,
            amplitude,
            on: (0, spectra),
        },
        // near the top edge, on for spectra 5..13
        Carrier {
            freq: 412_345.0,
            amplitude,
            on: (5, 13),
        },
    ];
    let spectra_db = reference_psd(
        scene(42, sigma2, fs, spectrum_samples, &carriers),
        n,
        average,
        Window::BlackmanHarris,
        spectra,
    );
    let out = Harness::new(factory(
        "threshold_detector",
        json!({"fft_size": n, "samp_rate": fs, "spectrum_samples": spectrum_samples}),
    ))
    .input(&spectra_db)
    .run_chunked();
    let ev = events(&out.messages[0]);
    let starts: Vec<_> = ev.iter().filter(|e| e.event == "start").collect();
    let ends: Vec<_> = ev.iter().filter(|e| e.event == "end").collect();
    assert_eq!(starts.len(), 3, "one start per carrier: {ev:#?}");
    assert_eq!(ends.len(), 3, "one end per carrier: {ev:#?}");
    for c in &carriers {
        let s = starts
            .iter()
            .find(|e| (e.center_freq - c.freq).abs() <= bin_hz)
            .unwrap_or_else(|| panic!("carrier at {} Hz not found: {starts:#?}", c.freq));
        assert_eq!(s.offset, (c.on.0 * spectrum_samples) as i64);
        assert!(s.snr_db > 6.0 && s.snr_db < 14.0, "snr {}", s.snr_db);
        assert!(s.bandwidth >= bin_hz && s.bandwidth <= 8.0 * bin_hz);
        assert!(s.power_db > db(noise_per_bin) + 6.0);
        let e = ends
            .iter()
            .find(|e| (e.center_freq - c.freq).abs() <= bin_hz)
            .unwrap_or_else(|| panic!("no end for {} Hz: {ends:#?}", c.freq));
        assert_eq!(e.offset, (c.on.1 * spectrum_samples) as i64);
    }
}

#[test]
fn detector_offsets_count_spectra_without_spectrum_samples() {
    let n = 64;
    // Flat floor at -50 dB; a carrier in bins 40..=42 in spectra 2 and 3.
    let mut s = vec![-50.0f32; n * 6];
    for k in 2..4 {
        s[k * n + 40] = -30.0;
        s[k * n + 41] = -20.0;
        s[k * n + 42] = -30.0;
    }
    let out = Harness::new(factory(
        "threshold_detector",
        json!({"fft_size": n, "samp_rate": 6400.0, "center_freq": 1e6}),
    ))
    .input(&s)
    .run_chunked();
    let ev = events(&out.messages[0]);
    assert_eq!(ev.len(), 2, "{ev:#?}");
    assert_eq!(ev[0].event, "start");
    assert_eq!(ev[0].offset, 2);
    // centroid bin 41 exactly (symmetric), bin width 100 Hz
    assert!((ev[0].center_freq - (1e6 + 9.0 * 100.0)).abs() < 1e-6);
    assert!((ev[0].bandwidth - 300.0).abs() < 1e-9);
    assert!((ev[0].power_db + 20.0).abs() < 1e-9);
    assert!((ev[0].snr_db - 30.0).abs() < 1e-9);
    assert_eq!(ev[1].event, "end");
    assert_eq!(ev[1].offset, 4);
}

#[test]
fn detector_ends_active_carriers_when_the_input_ends() {
    let n = 16;
    let mut s = vec![0.0f32; n * 3];
    for k in 0..3 {
        s[k * n + 3] = 20.0;
    }
    let out = Harness::new(factory(
        "threshold_detector",
        json!({"fft_size": n, "samp_rate": 1600.0, "spectrum_samples": 100}),
    ))
    .input(&s)
    .run_chunked();
    let ev = events(&out.messages[0]);
    assert_eq!(ev.len(), 2);
    assert_eq!((ev[0].event.as_str(), ev[0].offset), ("start", 0));
    assert_eq!((ev[1].event.as_str(), ev[1].offset), ("end", 300));
    assert!((ev[1].center_freq - (3.0 - 8.0) * 100.0).abs() < 1e-9);
}

#[test]
fn detector_threshold_is_settable_by_cmd() {
    let n = 16;
    let mut s = vec![0.0f32; n * 2];
    s[5] = 10.0;
    s[n + 5] = 10.0;
    let run = |threshold: f64| {
        Harness::new(factory(
            "threshold_detector",
            json!({"fft_size": n, "samp_rate": 1600.0}),
        ))
        .input(&s)
        .messages("cmd", vec![Pmt::map([("threshold", Pmt::F64(threshold))])])
        .run_chunked()
        .messages[0]
            .len()
    };
    assert_eq!(run(9.0), 2);
    assert_eq!(run(11.0), 0);
}

#[test]
fn detector_no_false_alarms_in_10_s_of_noise() {
    // 10 s of complex noise at 1 Msps: 1e7 samples, 610 spectra of 1024 x 16.
    let fs = 1e6;
    let n = 1024;
    let average = 16;
    let spectra = 10_000_000 / (n * average);
    assert_eq!(spectra, 610);
    let mut noise = Noise::new(7, 1.0);
    let spectra_db = reference_psd(|| noise.next(), n, average, Window::BlackmanHarris, spectra);
    assert_eq!(spectra_db.len(), spectra * n);
    // The largest excursion above the median stays well below the default
    // 6 dB threshold (but the noise does fluctuate).
    let worst = spectra_db
        .chunks(n)
        .map(|s| {
            let mut v = s.to_vec();
            v.sort_by(f32::total_cmp);
            let median = (v[n / 2 - 1] + v[n / 2]) / 2.0;
            v[n - 1] - median
        })
        .fold(0.0f32, f32::max);
    assert!(
        worst > 1.0 && worst < 6.0,
        "largest peak over the floor {worst} dB"
    );
    let out = Harness::new(factory(
        "threshold_detector",
        json!({"fft_size": n, "samp_rate": fs, "spectrum_samples": n * average}),
    ))
    .input(&spectra_db)
    .run();
    let msgs = &out.unwrap().messages[0];
    assert!(msgs.is_empty(), "false alarms: {msgs:#?}");
}

// ---------------------------------------------------------------- end to end

/// Plays a vector of cf32 samples in chunks of `chunk`, then ends.
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

#[test]
fn psd_into_detector_end_to_end() {
    let fs = 256_000.0;
    let n = 256;
    let average = 8;
    let spectra = 30;
    let ss = n * average;
    let bin_hz = fs / n as f64;
    let carriers = [
        Carrier {
            freq: -40_000.0,
            amplitude: 0.1,
            on: (0, spectra),
        },
        Carrier {
            freq: 77_777.0,
            amplitude: 0.05,
            on: (10, 20),
        },
    ];
    let mut gen = scene(3, 0.01, fs, ss, &carriers);
    let data: Vec<Complex32> = (0..ss * spectra)
        .map(|_| {
            let c = gen();
            Complex32::new(c.re as f32, c.im as f32)
        })
        .collect();
    for chunk in [1000, 4093] {
        let mut g = Graph::new();
        g.add_built(
            "src",
            BuiltBlock::new(Samples {
                data: data.clone(),
                pos: 0,
                chunk,
            })
            .output("out", StreamType::scalar(ItemType::Cf32)),
        )
        .unwrap();
        g.add_block(
            "psd",
            "psd",
            &params(json!({"fft_size": n, "average": average})),
        )
        .unwrap();
        g.add_block(
            "det",
            "threshold_detector",
            &params(json!({"fft_size": n, "samp_rate": fs, "spectrum_samples": ss, "center_freq": 100e6})),
        )
        .unwrap();
        g.add_block("dbg", "message_debug", &params(json!({"display": false})))
            .unwrap();
        g.connect("src.out", "psd.in").unwrap();
        g.connect("psd.out", "det.in").unwrap();
        g.connect("det.detections", "dbg.in").unwrap();
        let report = scheduler::run(g).unwrap();
        let Some(Pmt::List(msgs)) = report.get("dbg", "messages") else {
            panic!("message_debug keeps a list");
        };
        let ev = events(&msgs);
        assert_eq!(ev.len(), 4, "{ev:#?}");
        let find = |what: &str, f: f64| {
            ev.iter()
                .find(|e| e.event == what && (e.center_freq - 100e6 - f).abs() <= bin_hz)
                .unwrap_or_else(|| panic!("no {what} near {f}: {ev:#?}"))
        };
        assert_eq!(find("start", -40_000.0).offset, 0);
        assert_eq!(find("end", -40_000.0).offset, (spectra * ss) as i64);
        assert_eq!(find("start", 77_777.0).offset, (10 * ss) as i64);
        assert_eq!(find("end", 77_777.0).offset, (20 * ss) as i64);
        assert_eq!(report.get("det", "spectra"), Some(Pmt::I64(spectra as i64)));
    }
}

#[test]
fn detector_survives_nan_and_infinite_bins() {
    let n = 8;
    let s = vec![
        // NaN and ±inf among finite bins
        f32::NAN,
        0.0,
        0.0,
        f32::INFINITY,
        0.0,
        0.0,
        f32::NEG_INFINITY,
        0.0,
        // mostly NaN: the floor is NaN, nothing is detected
        f32::NAN,
        f32::NAN,
        f32::NAN,
        f32::NAN,
        f32::NAN,
        1.0,
        2.0,
        3.0,
        // all -inf
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
    ];
    let out = Harness::new(factory(
        "threshold_detector",
        json!({"fft_size": n, "samp_rate": 800.0}),
    ))
    .input(&s)
    .run_chunked();
    let ev = events(&out.messages[0]);
    // The +inf bin is a carrier in the first spectrum only.
    assert_eq!(ev.len(), 2, "{ev:#?}");
    assert_eq!((ev[0].event.as_str(), ev[0].offset), ("start", 0));
    assert_eq!((ev[1].event.as_str(), ev[1].offset), ("end", 1));
    assert!((ev[0].center_freq - (3.0 - 4.0) * 100.0).abs() < 1e-9);
}

#[test]
fn detector_tracks_drift_and_reports_jumps() {
    let n = 128;
    let mut s = vec![-60.0f32; n * 12];
    // Spectra 0..8: a carrier drifting one bin per spectrum (20 -> 27): one
    // carrier throughout. Spectra 8..12: it jumps to bin 60: end + start.
    for k in 0..12 {
        let bin = if k < 8 { 20 + k } else { 60 };
        s[k * n + bin] = -20.0;
        s[k * n + bin + 1] = -23.0;
    }
    let out = Harness::new(factory(
        "threshold_detector",
        json!({"fft_size": n, "samp_rate": 12800.0}),
    ))
    .input(&s)
    .run_chunked();
    let ev = events(&out.messages[0]);
    let summary: Vec<_> = ev
        .iter()
        .map(|e| {
            (
                e.event.as_str(),
                e.id,
                e.offset,
                (e.center_freq / 100.0).round() as i64 + 64,
            )
        })
        .collect();
    // Centroid of bins (b, b+1) with powers 1 and 0.5 is b + 1/3: rounds to b.
    // The drifting carrier keeps id 1; the jump is a new carrier, id 2.
    assert_eq!(
        summary,
        vec![
            ("start", 1, 0, 20),
            ("end", 1, 8, 27),
            ("start", 2, 8, 60),
            ("end", 2, 12, 60)
        ]
    );
}

#[test]
fn detector_ids_pair_starts_and_ends_of_overlapping_carriers() {
    // Three carriers with overlapping lives: A (bin 10) spectra 0..6, B (bin
    // 40) spectra 2..4, C (bin 90) and D (bin 100) spectra 3..8 (both start
    // in spectrum 3: ids in order of frequency), B again spectra 5..7 (a new
    // carrier: a new id).
    let n = 128;
    let lives: [(usize, std::ops::Range<usize>); 5] =
        [(10, 0..6), (40, 2..4), (90, 3..8), (100, 3..8), (40, 5..7)];
    let mut s = vec![-60.0f32; n * 9];
    for (bin, life) in &lives {
        for k in life.clone() {
            s[k * n + bin] = -10.0;
        }
    }
    let out = Harness::new(factory(
        "threshold_detector",
        json!({"fft_size": n, "samp_rate": 12800.0}),
    ))
    .input(&s)
    .run_chunked();
    let ev = events(&out.messages[0]);
    let summary: Vec<_> = ev
        .iter()
        .map(|e| (e.event.as_str(), e.id, e.offset))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("start", 1, 0),
            ("start", 2, 2),
            ("start", 3, 3),
            ("start", 4, 3),
            ("end", 2, 4),
            ("start", 5, 5),
            ("end", 1, 6),
            ("end", 5, 7),
            ("end", 3, 8),
            ("end", 4, 8),
        ]
    );
    // Each id starts once and ends once, at the same frequency.
    for id in 1..=5 {
        let of: Vec<_> = ev.iter().filter(|e| e.id == id).collect();
        assert_eq!(of.len(), 2, "id {id}: {of:?}");
        assert_eq!(
            (of[0].event.as_str(), of[1].event.as_str()),
            ("start", "end")
        );
        assert_eq!(of[0].center_freq, of[1].center_freq);
    }
}
