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
