//! Tests of the synthetic sources: `signal_source` and `noise_source`.
//!
//! Both are endless, so they run in a small graph ending in a collector that
//! takes a fixed number of items in random chunk sizes and then finishes.

use std::collections::BTreeMap;
use std::f64::consts::TAU;
use std::sync::{Arc, Mutex};

use flowmesh_runtime::blocks::signal::{sin_cos_phase, turns_to_phase};
use flowmesh_runtime::harness::SplitMix;
use flowmesh_runtime::io::Item;
use flowmesh_runtime::{
    run, Block, BuiltBlock, Graph, ItemType, Pmt, StreamType, Tag, Work, WorkIo,
};
use num_complex::Complex32;
use serde_json::json;

#[derive(Default)]
struct Taken {
    bytes: Vec<u8>,
    tags: Vec<Tag>,
}

/// Takes `want` items in random chunks, then finishes.
struct Take {
    want: usize,
    got: usize,
    item_size: usize,
    rng: Option<(SplitMix, usize)>,
    out: Arc<Mutex<Taken>>,
}

impl Block for Take {
    fn work(&mut self, io: &mut WorkIo<'_>) -> flowmesh_runtime::block::Result<Work> {
        let mut n = io.input_items(0).min(self.want - self.got);
        if let Some((rng, max)) = &mut self.rng {
            n = n.min(rng.chunk(*max));
        }
        let lo = io.nitems_read(0);
        let mut t = self.out.lock().unwrap();
        t.tags.extend(
            io.tags(0)
                .iter()
                .filter(|t| t.offset < lo + n as u64)
                .cloned(),
        );
        t.bytes
            .extend_from_slice(&io.input_bytes(0)[..n * self.item_size]);
        io.consume(0, n);
        self.got += n;
        Ok(if self.got == self.want {
            Work::Done
        } else {
            Work::Ok
        })
    }
}

/// Posts its messages once, then ends.
struct Post(Vec<Pmt>);

impl Block for Post {
    fn work(&mut self, io: &mut WorkIo<'_>) -> flowmesh_runtime::block::Result<Work> {
        for m in self.0.drain(..) {
            io.post(0, m);
        }
        Ok(Work::Done)
    }
}

struct Run {
    kind: &'static str,
    params: serde_json::Value,
    n: usize,
    chunking: Option<(u64, usize)>,
    buffer_bytes: usize,
    cmd: Vec<Pmt>,
}

impl Run {
    fn new(kind: &'static str, params: serde_json::Value, n: usize) -> Self {
        Run {
            kind,
            params,
            n,
            chunking: None,
            buffer_bytes: 16 * 1024,
            cmd: vec![],
        }
    }

    /// Runs the graph; returns the items as `T` and the tags.
    fn go<T: Item>(&self) -> (Vec<T>, Vec<Tag>) {
        let mut g = Graph::new();
        g.config.threads = 1;
        g.config.buffer_bytes = self.buffer_bytes;
        let given: BTreeMap<String, serde_json::Value> =
            serde_json::from_value(self.params.clone()).unwrap();
        g.add_block("src", self.kind, &given).expect("add source");
        let out = Arc::new(Mutex::new(Taken::default()));
        let st = StreamType::scalar(T::TYPE);
        g.add_built(
            "take",
            BuiltBlock::new(Take {
                want: self.n,
                got: 0,
                item_size: st.item_size(),
                rng: self.chunking.map(|(s, m)| (SplitMix(s), m)),
                out: out.clone(),
            })
            .input("in", st),
        )
        .unwrap();
        g.connect("src.out", "take.in").expect("connect");
        if !self.cmd.is_empty() {
            g.add_built(
                "post",
                BuiltBlock::new(Post(self.cmd.clone())).message_output("out"),
            )
            .unwrap();
            g.connect("post.out", "src.cmd").expect("connect cmd");
        }
        run(g).expect("run");
        let t = std::mem::take(&mut *out.lock().unwrap());
        (bytemuck::pod_collect_to_vec(&t.bytes), t.tags)
    }

    /// Runs under several chunkings and buffer sizes; asserts identical items.
    fn chunked<T: Item + PartialEq + std::fmt::Debug>(mut self) -> Vec<T> {
        let (reference, _) = self.go::<T>();
        assert_eq!(reference.len(), self.n);
        for (seed, max, buf) in [(1, 1, 4096), (2, 3, 8192), (3, 17, 16384), (4, 500, 65536)] {
            self.chunking = Some((seed, max));
            self.buffer_bytes = buf;
            let (y, _) = self.go::<T>();
            assert!(
                y == reference,
                "output differs in chunks of 1..={max} with {buf}-byte buffers"
            );
        }
        reference
    }
}

/// The phase of item `n` per the documented integer formula.
fn phase(phase0: f64, f: f64, fs: f64, n: u64) -> u64 {
    turns_to_phase(phase0 / TAU).wrapping_add(n.wrapping_mul(turns_to_phase(f / fs)))
}

fn build_error(kind: &str, params: serde_json::Value) -> String {
    let given: BTreeMap<String, serde_json::Value> = serde_json::from_value(params).unwrap();
    match Graph::new().add_block("b", kind, &given) {
        Ok(_) => panic!("{kind} built with bad parameters"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn cos_f32_follows_the_integer_phase_exactly() {
    let (fs, f, a, off, ph) = (48_000.0, 1234.5, 0.5, 0.25, 0.3);
    let y: Vec<f32> = Run::new(
        "signal_source",
        json!({"type": "f32", "waveform": "cos", "samp_rate": fs, "frequency": f,
               "amplitude": a, "offset": off, "phase": ph}),
        20_000,
    )
    .chunked();
    for (n, v) in y.iter().enumerate() {
        let want = (a * sin_cos_phase(phase(ph, f, fs, n as u64)).1 + off) as f32;
        assert_eq!(*v, want, "item {n}");
        // And the plain formula, to within f32 rounding.
        let plain = a * (TAU * f * n as f64 / fs + ph).cos() + off;
        assert!((*v as f64 - plain).abs() < 1e-6, "item {n}: {v} vs {plain}");
    }
}

#[test]
fn sin_f32_and_negative_frequency() {
    let (fs, f) = (1e6, -12_345.0);
    let y: Vec<f32> = Run::new(
        "signal_source",
        json!({"type": "f32", "waveform": "sin", "samp_rate": fs, "frequency": f, "amplitude": 2.0}),
        5000,
    )
    .chunked();
    for (n, v) in y.iter().enumerate() {
        let plain = 2.0 * (TAU * f * n as f64 / fs).sin();
        assert!((*v as f64 - plain).abs() < 2e-6, "item {n}: {v} vs {plain}");
    }
}

#[test]
fn complex_cos_and_sin_are_the_same_exponential() {
    let p = |w: &str| {
        json!({"type": "cf32", "waveform": w, "samp_rate": 32000, "frequency": 1000,
               "amplitude": 0.75, "offset": 0.5, "phase": -1.0})
    };
    let c: Vec<Complex32> = Run::new("signal_source", p("cos"), 4000).chunked();
    let s: Vec<Complex32> = Run::new("signal_source", p("sin"), 4000).go().0;
    assert_eq!(c, s, "GNU Radio gives exp(jθ) for both cos and sin");
    for (n, z) in c.iter().enumerate() {
        let th = TAU * 1000.0 * n as f64 / 32000.0 - 1.0;
        assert!((z.re as f64 - (0.75 * th.cos() + 0.5)).abs() < 1e-6);
        assert!((z.im as f64 - 0.75 * th.sin()).abs() < 1e-6);
    }
}

#[test]
fn square_waves_follow_gnuradio() {
    // Eight items per period: angles 0, π/4, …, 3π/4, −π, …, −π/4.
    let y: Vec<f32> = Run::new(
        "signal_source",
        json!({"type": "f32", "waveform": "square", "samp_rate": 8, "frequency": 1,
               "amplitude": 2.0, "offset": -1.0}),
        24,
    )
    .chunked();
    let period = [-1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0];
    assert_eq!(y, period.repeat(3));

    let z: Vec<Complex32> = Run::new(
        "signal_source",
        json!({"type": "cf32", "waveform": "square", "samp_rate": 8, "frequency": 1,
               "amplitude": 1.0}),
        16,
    )
    .chunked();
    let c = Complex32::new;
    let period = [
        c(0., 1.),
        c(0., 1.),
        c(0., 0.),
        c(0., 0.),
        c(1., 0.),
        c(1., 0.),
        c(1., 1.),
        c(1., 1.),
    ];
    assert_eq!(z, period.repeat(2));
}

#[test]
fn const_waveform() {
    let y: Vec<Complex32> = Run::new(
        "signal_source",
        json!({"type": "cf32", "waveform": "const", "samp_rate": 1000, "amplitude": 0.5, "offset": 0.25}),
        3000,
    )
    .chunked();
    assert!(y.iter().all(|z| *z == Complex32::new(0.75, 0.0)));
}

#[test]
fn frequency_change_keeps_phase_continuous() {
    let (fs, f1, f2, a) = (48_000.0, 1000.0, 3000.0, 1.0);
    let mut r = Run::new(
        "signal_source",
        json!({"type": "cf32", "samp_rate": fs, "frequency": f1, "amplitude": a}),
        20_000,
    );
    r.cmd = vec![Pmt::map([
        ("frequency", Pmt::F64(f2)),
        ("amplitude", Pmt::F64(0.5)),
    ])];
    let (y, tags): (Vec<Complex32>, _) = r.go();
    let param_tags: Vec<&Tag> = tags.iter().filter(|t| &*t.key == "param").collect();
    assert_eq!(param_tags.len(), 2, "one param tag per changed parameter");
    let k = param_tags[0].offset;
    assert!(k > 0 && k < 20_000, "change applied at {k}");
    assert!(param_tags.iter().all(|t| t.offset == k));
    let pk = phase(0.0, f1, fs, k);
    let inc2 = turns_to_phase(f2 / fs);
    for (n, z) in y.iter().enumerate() {
        let n = n as u64;
        let (amp, ph) = if n < k {
            (a, phase(0.0, f1, fs, n))
        } else {
            (0.5, pk.wrapping_add((n - k).wrapping_mul(inc2)))
        };
        let (s, c) = sin_cos_phase(ph);
        assert_eq!(
            *z,
            Complex32::new((amp * c) as f32, (amp * s) as f32),
            "item {n} (change at {k})"
        );
    }
    // Continuity: the phase step across the change is the new increment.
    let step = (y[k as usize] * y[k as usize - 1].conj()).arg() as f64;
    assert!(
        (step - TAU * f1 / fs).abs() < 1e-3,
        "first new item continues the old phase"
    );
    let step = (y[k as usize + 1] * y[k as usize].conj()).arg() as f64;
    assert!((step - TAU * f2 / fs).abs() < 1e-3);
}

#[test]
fn signal_source_refuses_bad_parameters() {
    let e = build_error(
        "signal_source",
        json!({"type": "f32", "samp_rate": 0, "frequency": 10}),
    );
    assert!(e.contains("samp_rate"), "{e}");
    assert!(e.contains("positive"), "{e}");
    let e = build_error("signal_source", json!({"type": "f32"}));
    assert!(e.contains("samp_rate"), "{e}");
}

#[test]
fn noise_f32_statistics() {
    let a = 0.7;
    let y: Vec<f32> = Run::new(
        "noise_source",
        json!({"type": "f32", "amplitude": a, "seed": 42}),
        200_000,
    )
    .go()
    .0;
    let n = y.len() as f64;
    let mean = y.iter().map(|v| *v as f64).sum::<f64>() / n;
    let var = y.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
    assert!(mean.abs() < 0.01 * a, "mean {mean}");
    assert!((var / (a * a) - 1.0).abs() < 0.02, "variance {var}");
    let within = y.iter().filter(|v| (**v as f64).abs() < a).count() as f64 / n;
    assert!(
        (within - 0.6827).abs() < 0.006,
        "fraction within 1σ: {within}"
    );
    let kurt = y.iter().map(|v| (*v as f64 - mean).powi(4)).sum::<f64>() / n / (var * var);
    assert!((kurt - 3.0).abs() < 0.1, "kurtosis {kurt}");
}

#[test]
fn noise_cf32_splits_power_between_re_and_im() {
    let a = 2.0;
    let y: Vec<Complex32> = Run::new(
        "noise_source",
        json!({"type": "cf32", "amplitude": a, "seed": 7}),
        100_000,
    )
    .go()
    .0;
    let n = y.len() as f64;
    let m_re = y.iter().map(|z| z.re as f64).sum::<f64>() / n;
    let m_im = y.iter().map(|z| z.im as f64).sum::<f64>() / n;
    let v_re = y.iter().map(|z| (z.re as f64).powi(2)).sum::<f64>() / n;
    let v_im = y.iter().map(|z| (z.im as f64).powi(2)).sum::<f64>() / n;
    let cov = y.iter().map(|z| z.re as f64 * z.im as f64).sum::<f64>() / n;
    assert!(
        m_re.abs() < 0.03 && m_im.abs() < 0.03,
        "means {m_re} {m_im}"
    );
    assert!(
        (v_re / (a * a / 2.0) - 1.0).abs() < 0.03,
        "re variance {v_re}"
    );
    assert!(
        (v_im / (a * a / 2.0) - 1.0).abs() < 0.03,
        "im variance {v_im}"
    );
    assert!(((v_re + v_im) / (a * a) - 1.0).abs() < 0.02, "power");
    assert!(cov.abs() < 0.03, "re/im covariance {cov}");
}

#[test]
fn noise_is_reproducible_and_seeded() {
    let p = |seed: i64| json!({"type": "cf32", "amplitude": 1.0, "seed": seed});
    let a: Vec<Complex32> = Run::new("noise_source", p(1), 30_000).chunked();
    let b: Vec<Complex32> = Run::new("noise_source", p(1), 30_000).go().0;
    assert_eq!(a, b, "same seed, same noise");
    let c: Vec<Complex32> = Run::new("noise_source", p(2), 30_000).go().0;
    let same = a.iter().zip(&c).filter(|(x, y)| x == y).count();
    assert!(same < 10, "different seeds share {same} items");
    // Item n does not depend on what came before: a shorter run is a prefix.
    let d: Vec<Complex32> = Run::new("noise_source", p(1), 1234).go().0;
    assert_eq!(&a[..1234], &d[..]);
    // f32 noise is chunking-independent too.
    Run::new(
        "noise_source",
        json!({"type": "f32", "amplitude": 3.0, "seed": 9}),
        10_000,
    )
    .chunked::<f32>();
}

#[test]
fn noise_amplitude_change_applies_from_the_tagged_item() {
    let p = |a: f64| json!({"type": "f32", "amplitude": a, "seed": 5});
    let mut r = Run::new("noise_source", p(1.0), 12_000);
    r.cmd = vec![Pmt::map([("amplitude", Pmt::F64(0.25))])];
    let (y, tags): (Vec<f32>, _) = r.go();
    let k = tags
        .iter()
        .find(|t| &*t.key == "param")
        .expect("param tag")
        .offset as usize;
    let before: Vec<f32> = Run::new("noise_source", p(1.0), 12_000).go().0;
    let after: Vec<f32> = Run::new("noise_source", p(0.25), 12_000).go().0;
    assert_eq!(&y[..k], &before[..k]);
    assert_eq!(&y[k..], &after[k..]);
}

#[test]
fn sources_declare_catalog_ports() {
    for (kind, t) in [
        ("signal_source", ItemType::F32),
        ("signal_source", ItemType::Cf32),
        ("noise_source", ItemType::F32),
        ("noise_source", ItemType::Cf32),
    ] {
        let given: BTreeMap<String, serde_json::Value> =
            serde_json::from_value(json!({"type": t.name(), "samp_rate": 1000})).unwrap();
        let desc = flowmesh_model::catalog().get(kind).unwrap();
        let (p, problems) = flowmesh_model::params::resolve(desc, &given);
        assert!(problems.is_empty());
        let built = flowmesh_runtime::blocks::build(kind, &p).unwrap();
        let (ins, outs) = desc.resolve_ports(&p);
        assert_eq!(built.inputs, ins, "{kind} inputs");
        assert_eq!(built.outputs, outs, "{kind} outputs");
    }
}

// ---------------------------------------------------------------------------
// The vectorised oscillator: every item equals `sin_cos_phase` of the
// documented integer phase, bit for bit, over long runs, at any frequency,
// under any chunking, and across frequency changes.

/// Runs `signal_source` with `params` into a collector of `n` items; returns
/// the items and tags.
fn run_source<T: Item>(
    params: &serde_json::Value,
    n: usize,
    chunking: Option<(u64, usize)>,
    buffer_bytes: usize,
    cmd: &[Pmt],
) -> (Vec<T>, Vec<Tag>) {
    let mut r = Run::new("signal_source", params.clone(), n);
    r.chunking = chunking;
    r.buffer_bytes = buffer_bytes;
    r.cmd = cmd.to_vec();
    let (items, tags) = r.go::<T>();
    assert_eq!(items.len(), n);
    (items, tags)
}

/// Chunkings (seed, largest chunk, buffer bytes): chunks of one item, sizes
/// that are not multiples of the kernel's eight lanes, and large ones.
const CHUNKINGS: [(u64, usize, usize); 6] = [
    (1, 1, 4096),
    (2, 3, 8192),
    (3, 7, 16384),
    (4, 17, 16384),
    (5, 500, 65536),
    (6, 4096, 262_144),
];

/// The cf32 item `A·exp(jθ) + offset` computed directly from a phase.
fn direct_cf32(ph: u64, a: f64, off: f64) -> Complex32 {
    let (s, c) = sin_cos_phase(ph);
    Complex32::new((a * c + off) as f32, (a * s) as f32)
}

const FS: f64 = 1e6;

/// Frequencies: the benchmark's tone, negative ones, within 1 Hz of
/// Nyquist (both signs), Nyquist itself, an irrational-looking ratio, a very
/// slow one and zero.
const FREQUENCIES: [f64; 9] = [
    50e3,
    -12_345.678,
    499_999.0,
    -499_999.5,
    500_000.0,
    FS / 3.0,
    137_035.999,
    0.001,
    0.0,
];

#[test]
fn cf32_tone_is_sin_cos_phase_per_item_over_a_million_items() {
    let n = 1_000_003;
    let (a, off, ph0) = (0.5, 0.125, 0.7);
    for f in FREQUENCIES {
        let p = json!({"type": "cf32", "samp_rate": FS, "frequency": f,
                       "amplitude": a, "offset": off, "phase": ph0});
        let (y, _) = run_source::<Complex32>(&p, n, None, 1 << 16, &[]);
        for (i, z) in y.iter().enumerate() {
            let want = direct_cf32(phase(ph0, f, FS, i as u64), a, off);
            assert!(
                z.re.to_bits() == want.re.to_bits() && z.im.to_bits() == want.im.to_bits(),
                "f = {f}: item {i} is {z}, sin_cos_phase gives {want}"
            );
        }
    }
}

#[test]
fn f32_cos_and_sin_are_sin_cos_phase_per_item_over_a_million_items() {
    let n = 1_000_003;
    let (a, off, ph0) = (2.5, -0.75, -2.0);
    for f in [50e3, -499_999.5, 0.001, FS / 7.0] {
        for (w, sine) in [("cos", false), ("sin", true)] {
            let p = json!({"type": "f32", "waveform": w, "samp_rate": FS, "frequency": f,
                           "amplitude": a, "offset": off, "phase": ph0});
            let (y, _) = run_source::<f32>(&p, n, None, 1 << 16, &[]);
            for (i, v) in y.iter().enumerate() {
                let (s, c) = sin_cos_phase(phase(ph0, f, FS, i as u64));
                let want = (a * if sine { s } else { c } + off) as f32;
                assert!(
                    v.to_bits() == want.to_bits(),
                    "{w} f = {f}: item {i} is {v}, sin_cos_phase gives {want}"
                );
            }
        }
    }
}

/// Asserts that `signal_source` with `params` gives the same `n` items under
/// every chunking and buffer size in [`CHUNKINGS`] as unchunked.
fn assert_same_under_chunkings<T: Item + PartialEq>(
    params: &serde_json::Value,
    n: usize,
    what: &str,
) {
    let (reference, _) = run_source::<T>(params, n, None, 1 << 16, &[]);
    for (seed, max, buf) in CHUNKINGS {
        let (y, _) = run_source::<T>(params, n, Some((seed, max)), buf, &[]);
        assert!(
            y == reference,
            "{what} output differs in chunks of 1..={max} with {buf}-byte buffers"
        );
    }
}

#[test]
fn tone_is_identical_under_random_chunkings() {
    let n = 200_003;
    let cf = json!({"type": "cf32", "samp_rate": FS, "frequency": -123_456.7,
                    "amplitude": 0.3, "offset": 0.01, "phase": 1.0});
    assert_same_under_chunkings::<Complex32>(&cf, n, "cf32");
    for w in ["cos", "sin"] {
        let p = json!({"type": "f32", "waveform": w, "samp_rate": FS,
                       "frequency": 333_333.3, "amplitude": 1.5, "phase": -0.5});
        assert_same_under_chunkings::<f32>(&p, n, &format!("f32 {w}"));
    }
}

#[test]
fn frequency_change_mid_stream_gives_values_that_depend_only_on_n() {
    let n = 300_000;
    let (f1, f2, ph0, a) = (50e3, -499_999.5, 0.25, 0.5);
    let p = json!({"type": "cf32", "samp_rate": FS, "frequency": f1,
                   "amplitude": a, "phase": ph0});
    let cmd = [Pmt::map([("frequency", Pmt::F64(f2))])];
    let inc2 = turns_to_phase(f2 / FS);
    let mut seen_k = vec![];
    let runs = std::iter::once(None).chain(CHUNKINGS.iter().map(|&(s, m, b)| Some((s, m, b))));
    for chunking in runs {
        let (c, buf) = match chunking {
            Some((s, m, b)) => (Some((s, m)), b),
            None => (None, 1 << 16),
        };
        let (y, tags) = run_source::<Complex32>(&p, n, c, buf, &cmd);
        let k = tags
            .iter()
            .find(|t| &*t.key == "param")
            .expect("param tag at the change")
            .offset;
        assert!(k < n as u64, "change applied at {k}");
        seen_k.push(k);
        // Before the change the old phase; from it on, the phase continues
        // from item k at the new increment. Either way the value of item i
        // is sin_cos_phase of a phase that is a function of i (and k).
        let pk = phase(ph0, f1, FS, k);
        for (i, z) in y.iter().enumerate() {
            let i = i as u64;
            let ph = if i < k {
                phase(ph0, f1, FS, i)
            } else {
                pk.wrapping_add((i - k).wrapping_mul(inc2))
            };
            let want = direct_cf32(ph, a, 0.0);
            assert!(
                z.re.to_bits() == want.re.to_bits() && z.im.to_bits() == want.im.to_bits(),
                "{chunking:?}: item {i} is {z}, want {want} (change at {k})"
            );
        }
    }
    eprintln!("frequency change applied at items {seen_k:?}");
}
