//! Tests of `signal_source`'s vectorised cos/sin kernels (the oscillator):
//! every item equals [`sin_cos_phase`] of the documented integer phase, bit
//! for bit, over long runs, at any frequency, under any chunking, and across
//! frequency changes.
//!
//! The source is endless, so it runs into a collector that takes a fixed
//! number of items (in random chunk sizes if asked) and then finishes.

use std::collections::BTreeMap;
use std::f64::consts::TAU;
use std::sync::{Arc, Mutex};

use flowmesh_runtime::blocks::signal::{sin_cos_phase, turns_to_phase};
use flowmesh_runtime::harness::SplitMix;
use flowmesh_runtime::io::Item;
use flowmesh_runtime::{run, Block, BuiltBlock, Graph, Pmt, StreamType, Tag, Work, WorkIo};
use num_complex::Complex32;
use serde_json::json;

#[derive(Default)]
struct Taken {
    bytes: Vec<u8>,
    tags: Vec<Tag>,
}

/// Takes `want` items, in random chunks if `rng` is set, then finishes.
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

/// Runs `signal_source` with `params` into a collector of `n` items; returns
/// the items and tags.
fn run_source<T: Item>(
    params: &serde_json::Value,
    n: usize,
    chunking: Option<(u64, usize)>,
    buffer_bytes: usize,
    cmd: &[Pmt],
) -> (Vec<T>, Vec<Tag>) {
    let mut g = Graph::new();
    g.config.threads = 1;
    g.config.buffer_bytes = buffer_bytes;
    let given: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(params.clone()).unwrap();
    g.add_block("src", "signal_source", &given)
        .expect("add source");
    let out = Arc::new(Mutex::new(Taken::default()));
    let st = StreamType::scalar(T::TYPE);
    g.add_built(
        "take",
        BuiltBlock::new(Take {
            want: n,
            got: 0,
            item_size: st.item_size(),
            rng: chunking.map(|(s, m)| (SplitMix(s), m)),
            out: out.clone(),
        })
        .input("in", st),
    )
    .unwrap();
    g.connect("src.out", "take.in").expect("connect");
    if !cmd.is_empty() {
        g.add_built(
            "post",
            BuiltBlock::new(Post(cmd.to_vec())).message_output("out"),
        )
        .unwrap();
        g.connect("post.out", "src.cmd").expect("connect cmd");
    }
    run(g).expect("run");
    let t = std::mem::take(&mut *out.lock().unwrap());
    let items: Vec<T> = bytemuck::pod_collect_to_vec(&t.bytes);
    assert_eq!(items.len(), n);
    (items, t.tags)
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

/// The documented phase of item `n`: `phase0 + n · phase_inc`.
fn phase(phase_rad: f64, f: f64, fs: f64, n: u64) -> u64 {
    turns_to_phase(phase_rad / TAU).wrapping_add(n.wrapping_mul(turns_to_phase(f / fs)))
}

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

#[test]
fn tone_is_identical_under_random_chunkings() {
    let n = 200_003;
    let cf = json!({"type": "cf32", "samp_rate": FS, "frequency": -123_456.7,
                    "amplitude": 0.3, "offset": 0.01, "phase": 1.0});
    let (reference, _) = run_source::<Complex32>(&cf, n, None, 1 << 16, &[]);
    for (seed, max, buf) in CHUNKINGS {
        let (y, _) = run_source::<Complex32>(&cf, n, Some((seed, max)), buf, &[]);
        assert!(
            y == reference,
            "cf32 output differs in chunks of 1..={max} with {buf}-byte buffers"
        );
    }
    for w in ["cos", "sin"] {
        let p = json!({"type": "f32", "waveform": w, "samp_rate": FS,
                       "frequency": 333_333.3, "amplitude": 1.5, "phase": -0.5});
        let (reference, _) = run_source::<f32>(&p, n, None, 1 << 16, &[]);
        for (seed, max, buf) in CHUNKINGS {
            let (y, _) = run_source::<f32>(&p, n, Some((seed, max)), buf, &[]);
            assert!(
                y == reference,
                "f32 {w} output differs in chunks of 1..={max} with {buf}-byte buffers"
            );
        }
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
