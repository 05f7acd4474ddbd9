//! Scheduler behaviour: end of stream, errors and panics, runtime parameter
//! changes, tag offsets through rate changes, messages.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flowmesh_model::spec::SchedulerKind;
use flowmesh_runtime::block::Result as BlockResult;
use flowmesh_runtime::graph::Config;
use flowmesh_runtime::io::Poster;
use flowmesh_runtime::scheduler::Error;
use flowmesh_runtime::tag::keys;
use flowmesh_runtime::{
    run, start, Block, BlockError, BuiltBlock, Graph, ItemType, Pmt, StreamType, Tag, Work, WorkIo,
};
use serde_json::json;

fn params(v: serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    serde_json::from_value(v).unwrap()
}

fn u64s(p: Pmt) -> Vec<u64> {
    match p {
        Pmt::Vector(flowmesh_model::TypedVec::U64(v)) => v,
        other => panic!("expected u64 vector, got {other:?}"),
    }
}

fn configs() -> Vec<Config> {
    vec![
        Config {
            threads: 1,
            ..Config::default()
        },
        Config {
            threads: 2,
            ..Config::default()
        },
        Config {
            scheduler: SchedulerKind::ThreadPerBlock,
            ..Config::default()
        },
    ]
}

#[test]
fn head_ends_an_endless_chain_upstream() {
    for cfg in configs() {
        let mut g = Graph::new();
        g.config = cfg;
        g.add_block("src", "counter_source", &params(json!({})))
            .unwrap();
        g.add_block(
            "mul",
            "multiply_const",
            &params(json!({"type": "u64", "constant": 2})),
        )
        .unwrap();
        g.add_block("head", "head", &params(json!({"type": "u64", "n": 100000})))
            .unwrap();
        g.add_block("sink", "vector_sink", &params(json!({"type": "u64"})))
            .unwrap();
        g.connect("src.out", "mul.in").unwrap();
        g.connect("mul.out", "head.in").unwrap();
        g.connect("head.out", "sink.in").unwrap();
        let r = run(g).unwrap();
        let v = u64s(r.get("sink", "data").unwrap());
        assert_eq!(v, (0..100000).map(|i| 2 * i).collect::<Vec<_>>());
    }
}

#[test]
fn null_source_gives_zeros_over_many_laps_of_its_ring() {
    // It zeroes its ring once and then hands the slots on unwritten: over
    // many laps of a small buffer (and a reader lagging by a random amount
    // under the thread-per-block scheduler) every item must still be 0.
    for cfg in configs() {
        let mut g = Graph::new();
        g.config = Config {
            buffer_bytes: 4096,
            ..cfg
        };
        g.add_block("src", "null_source", &params(json!({"type": "u64"})))
            .unwrap();
        g.add_block("head", "head", &params(json!({"type": "u64", "n": 200000})))
            .unwrap();
        g.add_block("sink", "vector_sink", &params(json!({"type": "u64"})))
            .unwrap();
        g.connect("src.out", "head.in").unwrap();
        g.connect("head.out", "sink.in").unwrap();
        let r = run(g).unwrap();
        let v = u64s(r.get("sink", "data").unwrap());
        assert_eq!(v.len(), 200000);
        assert!(v.iter().all(|&x| x == 0));
    }
}

#[test]
fn fan_out_shares_one_buffer_and_ends_when_both_readers_end() {
    let mut g = Graph::new();
    g.add_block("src", "counter_source", &params(json!({})))
        .unwrap();
    g.add_block("h1", "head", &params(json!({"type": "u64", "n": 5000})))
        .unwrap();
    g.add_block("h2", "head", &params(json!({"type": "u64", "n": 70000})))
        .unwrap();
    g.add_block("s1", "vector_sink", &params(json!({"type": "u64"})))
        .unwrap();
    g.add_block("s2", "vector_sink", &params(json!({"type": "u64"})))
        .unwrap();
    g.connect("src.out", "h1.in").unwrap();
    g.connect("src.out", "h2.in").unwrap();
    g.connect("h1.out", "s1.in").unwrap();
    g.connect("h2.out", "s2.in").unwrap();
    let r = run(g).unwrap();
    assert_eq!(
        u64s(r.get("s1", "data").unwrap()),
        (0..5000).collect::<Vec<_>>()
    );
    assert_eq!(
        u64s(r.get("s2", "data").unwrap()),
        (0..70000).collect::<Vec<_>>()
    );
}

struct Faulty {
    panic: bool,
    after: u64,
}

impl Block for Faulty {
    fn work(&mut self, io: &mut WorkIo<'_>) -> BlockResult<Work> {
        let n = io.input_items(0);
        if io.nitems_read(0) + n as u64 > self.after {
            if self.panic {
                panic!("bad sample at {}", self.after);
            }
            return Err(BlockError::Failed(format!("bad sample at {}", self.after)));
        }
        io.consume(0, n);
        Ok(Work::Ok)
    }
}

#[test]
fn a_failing_or_panicking_block_stops_the_graph_with_its_name() {
    for panic in [false, true] {
        for cfg in configs() {
            let mut g = Graph::new();
            g.config = cfg;
            g.add_block("src", "null_source", &params(json!({"type": "u64"})))
                .unwrap();
            g.add_built(
                "checker",
                BuiltBlock::new(Faulty {
                    panic,
                    after: 100_000,
                })
                .input("in", StreamType::scalar(ItemType::U64)),
            )
            .unwrap();
            g.connect("src.out", "checker.in").unwrap();
            let t = Instant::now();
            let err = run(g).err().expect("the run must fail");
            assert!(t.elapsed() < Duration::from_secs(5));
            match (&err, panic) {
                (Error::Panic { block, message }, true)
                | (Error::Block { block, message }, false) => {
                    assert_eq!(block, "checker");
                    assert!(message.contains("bad sample at 100000"), "{message}");
                }
                _ => panic!("unexpected error {err:?}"),
            }
            assert!(err.to_string().starts_with("block `checker`"));
        }
    }
}

#[test]
fn set_applies_exactly_from_the_returned_offset_and_tags_it() {
    for cfg in configs() {
        let mut g = Graph::new();
        g.config = cfg;
        g.add_block("src", "counter_source", &params(json!({"n": 400000})))
            .unwrap();
        g.add_block(
            "thr",
            "throttle",
            &params(json!({"type": "u64", "rate": 2e6})),
        )
        .unwrap();
        g.add_block(
            "mul",
            "multiply_const",
            &params(json!({"type": "u64", "constant": 1})),
        )
        .unwrap();
        g.add_block("sink", "vector_sink", &params(json!({"type": "u64"})))
            .unwrap();
        g.connect("src.out", "thr.in").unwrap();
        g.connect("thr.out", "mul.in").unwrap();
        g.connect("mul.out", "sink.in").unwrap();
        let running = start(g).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let h = running.handle();
        let at = h.set("mul", "constant", 3i64).unwrap();
        assert_eq!(
            h.get("mul", "constant").unwrap(),
            Pmt::Complex(num_complex::Complex64::new(3.0, 0.0))
        );
        // Bad values are refused with the reason, and the graph keeps running.
        let e = h.set("mul", "constant", "fast").unwrap_err().to_string();
        assert!(e.contains("parameter `constant`"), "{e}");
        let e = h.set("mul", "type", "f32").unwrap_err().to_string();
        assert!(e.contains("cannot be changed while running"), "{e}");
        let r = running.wait().unwrap();
        assert!(at > 0 && at < 400000, "offset {at}");
        let v = u64s(r.get("sink", "data").unwrap());
        assert_eq!(v.len(), 400000);
        for (i, x) in v.iter().enumerate() {
            let k = if (i as u64) < at { 1 } else { 3 };
            assert_eq!(*x, k * i as u64, "item {i}, change at {at}");
        }
        let tags = r.get("sink", "tags").unwrap();
        let Pmt::List(tags) = tags else { panic!() };
        assert_eq!(tags.len(), 1);
        assert_eq!(tags[0].get("offset"), Some(&Pmt::I64(at as i64)));
        assert_eq!(tags[0].get("key"), Some(&Pmt::String(keys::PARAM.into())));
    }
}

#[test]
fn cmd_port_message_sets_a_parameter() {
    struct Cmd;
    impl Block for Cmd {
        fn work(&mut self, io: &mut WorkIo<'_>) -> BlockResult<Work> {
            io.post(0, Pmt::map([("constant", Pmt::F64(5.0))]));
            Ok(Work::Done)
        }
    }
    let mut g = Graph::new();
    g.add_block("src", "counter_source", &params(json!({"n": 1000})))
        .unwrap();
    g.add_block(
        "mul",
        "multiply_const",
        &params(json!({"type": "u64", "constant": 1})),
    )
    .unwrap();
    g.add_block("sink", "vector_sink", &params(json!({"type": "u64"})))
        .unwrap();
    g.add_built("ctl", BuiltBlock::new(Cmd).message_output("out"))
        .unwrap();
    g.connect("src.out", "mul.in").unwrap();
    g.connect("mul.out", "sink.in").unwrap();
    g.connect("ctl.out", "mul.cmd").unwrap();
    let r = run(g).unwrap();
    let v = u64s(r.get("sink", "data").unwrap());
    // The change lands at some offset; from there on every item is ×5.
    let at = v
        .iter()
        .enumerate()
        .position(|(i, x)| *x != i as u64)
        .unwrap_or(v.len());
    assert!(v[at..]
        .iter()
        .enumerate()
        .all(|(k, x)| *x == 5 * (at + k) as u64));
}

/// Keeps every `decim`-th item, or repeats each item `interp` times.
struct Resample {
    interp: usize,
    decim: usize,
    phase: usize,
}

impl Block for Resample {
    fn work(&mut self, io: &mut WorkIo<'_>) -> BlockResult<Work> {
        let inp = io.input::<u64>(0);
        let out = io.output::<u64>(0);
        let (mut i, mut o) = (0, 0);
        while i < inp.len() && o + self.interp <= out.len() {
            if self.phase == 0 {
                for _ in 0..self.interp {
                    out[o] = inp[i];
                    o += 1;
                }
            }
            self.phase = (self.phase + 1) % self.decim;
            i += 1;
        }
        io.consume(0, i);
        io.produce(0, o);
        Ok(Work::Ok)
    }
}

#[test]
fn tag_offsets_follow_rate_changes_like_gnuradio() {
    for (interp, decim) in [(1u64, 4u64), (3, 1), (1, 1)] {
        let mut g = Graph::new();
        g.add_block("src", "counter_source", &params(json!({"n": 100000})))
            .unwrap();
        g.add_block(
            "tag",
            "tagger",
            &params(json!({"type": "u64", "period": 1001})),
        )
        .unwrap();
        let st = StreamType::scalar(ItemType::U64);
        g.add_built(
            "rs",
            BuiltBlock::new(Resample {
                interp: interp as usize,
                decim: decim as usize,
                phase: 0,
            })
            .input("in", st)
            .output("out", st)
            .rate(interp, decim),
        )
        .unwrap();
        g.add_block("sink", "vector_sink", &params(json!({"type": "u64"})))
            .unwrap();
        g.connect("src.out", "tag.in").unwrap();
        g.connect("tag.out", "rs.in").unwrap();
        g.connect("rs.out", "sink.in").unwrap();
        let r = run(g).unwrap();
        let Pmt::List(tags) = r.get("sink", "tags").unwrap() else {
            panic!()
        };
        let got: Vec<(u64, u64)> = tags
            .iter()
            .map(|t| {
                (
                    t.get("offset").unwrap().as_u64().unwrap(),
                    t.get("value").unwrap().as_u64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(u64, u64)> = (0..100000u64)
            .step_by(1001)
            .map(|o| ((2 * o * interp + decim) / (2 * decim), o))
            .filter(|(m, _)| *m < 100000 * interp / decim)
            .collect();
        assert_eq!(got, want, "interp {interp} decim {decim}");
    }
}

struct Chatter {
    n: i64,
}

impl Block for Chatter {
    fn work(&mut self, io: &mut WorkIo<'_>) -> BlockResult<Work> {
        for i in 0..self.n {
            io.post(0, Pmt::I64(i));
        }
        Ok(Work::Done)
    }
}

struct Keep {
    got: std::sync::Arc<std::sync::Mutex<Vec<Pmt>>>,
}

impl Block for Keep {
    fn work(&mut self, _io: &mut WorkIo<'_>) -> BlockResult<Work> {
        Ok(Work::Ok)
    }
    fn message(&mut self, _port: usize, msg: Pmt, out: &mut Poster<'_>) -> BlockResult<()> {
        self.got.lock().unwrap().push(msg.clone());
        out.post(0, msg);
        Ok(())
    }
}

#[test]
fn messages_arrive_in_order_and_end_of_stream_travels_along_message_edges() {
    for cfg in configs() {
        let got1 = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let got2 = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let mut g = Graph::new();
        g.config = cfg;
        g.add_built(
            "chat",
            BuiltBlock::new(Chatter { n: 10000 }).message_output("out"),
        )
        .unwrap();
        g.add_built(
            "relay",
            BuiltBlock::new(Keep { got: got1.clone() })
                .message_input("in")
                .message_output("out"),
        )
        .unwrap();
        g.add_built(
            "last",
            BuiltBlock::new(Keep { got: got2.clone() })
                .message_input("in")
                .message_output("out"),
        )
        .unwrap();
        g.connect("chat.out", "relay.in").unwrap();
        g.connect("relay.out", "last.in").unwrap();
        // The run ends on its own: end of stream passes chat -> relay -> last.
        run(g).unwrap();
        let want: Vec<Pmt> = (0..10000).map(Pmt::I64).collect();
        assert_eq!(*got1.lock().unwrap(), want);
        assert_eq!(*got2.lock().unwrap(), want);
    }
}

#[test]
fn stop_drains_and_returns() {
    let mut g = Graph::new();
    g.add_block("src", "null_source", &params(json!({"type": "cf32"})))
        .unwrap();
    g.add_block("sink", "null_sink", &params(json!({"type": "cf32"})))
        .unwrap();
    g.connect("src.out", "sink.in").unwrap();
    let running = start(g).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    running.handle().stop();
    let r = running.wait().unwrap();
    let s = r.stats.iter().find(|s| s.name == "sink").unwrap();
    let src = r.stats.iter().find(|s| s.name == "src").unwrap();
    assert!(s.items_in() > 0);
    assert_eq!(
        s.items_in(),
        src.items_out(),
        "everything produced was drained"
    );
}

#[test]
fn tags_added_by_a_source_reach_the_sink_once() {
    let mut g = Graph::new();
    g.add_block("src", "counter_source", &params(json!({"n": 10000})))
        .unwrap();
    g.add_block(
        "tag",
        "tagger",
        &params(json!({"type": "u64", "period": 3000, "key": "k"})),
    )
    .unwrap();
    g.add_block(
        "a",
        "add_const",
        &params(json!({"type": "u64", "constant": 0})),
    )
    .unwrap();
    g.add_block("sink", "vector_sink", &params(json!({"type": "u64"})))
        .unwrap();
    g.connect("src.out", "tag.in").unwrap();
    g.connect("tag.out", "a.in").unwrap();
    g.connect("a.out", "sink.in").unwrap();
    let r = run(g).unwrap();
    let Pmt::List(tags) = r.get("sink", "tags").unwrap() else {
        panic!()
    };
    let offs: Vec<_> = tags
        .iter()
        .map(|t| t.get("offset").unwrap().clone())
        .collect();
    assert_eq!(
        offs,
        vec![Pmt::I64(0), Pmt::I64(3000), Pmt::I64(6000), Pmt::I64(9000)]
    );
    let _ = Tag::new(0, "x", Pmt::Null);
}

#[test]
fn an_unconnected_message_sink_does_not_keep_the_graph_alive() {
    let got = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let mut g = Graph::new();
    g.add_block("src", "counter_source", &params(json!({"n": 10})))
        .unwrap();
    g.add_block(
        "sink",
        "null_sink",
        &params(json!({"type": "u64", "expect": 10})),
    )
    .unwrap();
    g.add_built(
        "lonely",
        BuiltBlock::new(Keep { got })
            .message_input("in")
            .message_output("out"),
    )
    .unwrap();
    g.connect("src.out", "sink.in").unwrap();
    let t = Instant::now();
    run(g).unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn null_sink_expect_checks_the_item_count() {
    let mut g = Graph::new();
    g.add_block("src", "counter_source", &params(json!({"n": 10})))
        .unwrap();
    g.add_block(
        "sink",
        "null_sink",
        &params(json!({"type": "u64", "expect": 11})),
    )
    .unwrap();
    g.connect("src.out", "sink.in").unwrap();
    let e = run(g).err().unwrap().to_string();
    assert_eq!(e, "block `sink` failed: expected 11 items, received 10");
}

/// Sums groups of 4 u64 items (rate 1/4) and consumes only whole groups, so
/// an incomplete last group stays in its input.
struct Groups;

impl Block for Groups {
    fn work(&mut self, io: &mut WorkIo<'_>) -> BlockResult<Work> {
        let k = (io.input_items(0) / 4).min(io.output_items(0));
        let x = io.input::<u64>(0);
        let y = io.output::<u64>(0);
        for (i, o) in y[..k].iter_mut().enumerate() {
            *o = x[4 * i..4 * i + 4].iter().sum();
        }
        io.consume(0, 4 * k);
        io.produce(0, k);
        Ok(Work::Ok)
    }
}

#[test]
fn end_of_stream_tags_pass_a_block_that_leaves_an_incomplete_group() {
    use flowmesh_runtime::harness::Harness;
    // 10 items: two groups of 4, and 2 the block cannot use. Its input has
    // still ended, so the final `gap` on it goes on the end of the output;
    // a block that ends on its own with input left (`head`) carries none.
    let x: Vec<u64> = (0..10).collect();
    let gap = Pmt::map([
        ("first", Pmt::I64(10)),
        ("count", Pmt::I64(5)),
        ("cause", Pmt::String("overflow".into())),
    ]);
    let st = StreamType::scalar(ItemType::U64);
    let out = Harness::new(move || {
        BuiltBlock::new(Groups)
            .input("in", st)
            .output("out", st)
            .rate(1, 4)
    })
    .input_tagged(&x, vec![Tag::new(10, "gap", gap.clone())])
    .run_chunked();
    assert_eq!(out.items::<u64>(0), vec![6, 22]);
    assert_eq!(out.tags(0), &[Tag::new(2, "gap", gap.clone())]);

    let out = Harness::new(flowmesh_runtime::harness::factory(
        "head",
        json!({"type": "u64", "n": 7}),
    ))
    .input_tagged(&x, vec![Tag::new(10, "gap", gap)])
    .run_chunked();
    assert_eq!(out.items::<u64>(0).len(), 7);
    assert!(out.tags(0).is_empty(), "{:?}", out.tags(0));
}

#[test]
fn a_scheduled_set_lands_exactly_at_its_offset_with_its_param_tag() {
    // multiply_const ×1 on a counter, with changes scheduled at output items
    // 0 (before the first work call), 300, 301 and 70 000 (past several
    // buffer laps), and one past the end of the stream (never reached). A
    // vector_sink without outputs gets one at input item 5 000 of its own
    // (`constant`-free: it is refused and logged, the stream goes on).
    use flowmesh_runtime::blocks::{BlockSetup, Env, ScheduledSet};
    let set = |offset: u64, value: u64| ScheduledSet {
        offset,
        name: "constant".into(),
        value: Pmt::I64(value as i64),
    };
    for cfg in configs() {
        let mut g = Graph::new();
        g.config = cfg;
        let mut env = Env::default();
        env.setup.insert(
            "mul".into(),
            BlockSetup {
                sets: vec![
                    set(70_000, 2),
                    set(300, 5),
                    set(0, 1),
                    set(301, 7),
                    set(1 << 40, 9),
                ],
                ..Default::default()
            },
        );
        env.setup.insert(
            "sink".into(),
            BlockSetup {
                sets: vec![set(5_000, 3)],
                ..Default::default()
            },
        );
        g.env = env;
        g.add_block("src", "counter_source", &params(json!({"n": 100_000})))
            .unwrap();
        g.add_block(
            "mul",
            "multiply_const",
            &params(json!({"type": "u64", "constant": 4})),
        )
        .unwrap();
        g.add_block("sink", "vector_sink", &params(json!({"type": "u64"})))
            .unwrap();
        g.connect("src.out", "mul.in").unwrap();
        g.connect("mul.out", "sink.in").unwrap();
        let r = run(g).unwrap();
        let v = u64s(r.get("sink", "data").unwrap());
        let want: Vec<u64> = (0..100_000u64)
            .map(|i| match i {
                0..300 => i,
                300 => 5 * i,
                301..70_000 => 7 * i,
                _ => 2 * i,
            })
            .collect();
        assert_eq!(v.len(), want.len());
        if let Some(k) = (0..v.len()).find(|&k| v[k] != want[k]) {
            panic!("item {k}: got {}, want {}", v[k], want[k]);
        }
        // The param tags sit on the items where each change took effect.
        let Pmt::List(tags) = r.get("sink", "tags").unwrap() else {
            panic!("tags")
        };
        let at: Vec<(u64, f64)> = tags
            .iter()
            .filter(|t| t.get("key").and_then(Pmt::as_str) == Some(keys::PARAM))
            .map(|t| {
                (
                    t.get("offset").and_then(Pmt::as_u64).unwrap(),
                    // Coerced to the parameter's type (complex).
                    t.get("value")
                        .and_then(|v| v.get("constant"))
                        .and_then(Pmt::as_complex)
                        .unwrap()
                        .re,
                )
            })
            .collect();
        assert_eq!(at, vec![(0, 1.0), (300, 5.0), (301, 7.0), (70_000, 2.0)]);
    }
}
