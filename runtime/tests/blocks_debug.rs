//! Debug and message blocks: tag_debug, message_debug, rate_probe,
//! jsonl_sink, message_strobe.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flowmesh_model::TypedVec;
use flowmesh_runtime::harness::{factory, Harness};
use flowmesh_runtime::{
    scheduler, Block, BuiltBlock, Graph, ItemType, Pmt, StreamType, Tag, Work, WorkIo,
};
use num_complex::Complex64;
use serde_json::json;

fn params(v: serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    serde_json::from_value(v).unwrap()
}

/// Plays `n` u8 zeros with the given tags, `chunk` items per call.
struct TaggedZeros {
    n: usize,
    pos: usize,
    chunk: usize,
    tags: Vec<Tag>,
}

impl Block for TaggedZeros {
    fn work(&mut self, io: &mut WorkIo<'_>) -> flowmesh_runtime::block::Result<Work> {
        let k = io.output_items(0).min(self.n - self.pos).min(self.chunk);
        io.output::<u8>(0)[..k].fill(0);
        let (lo, hi) = (self.pos as u64, (self.pos + k) as u64);
        for t in self.tags.iter().filter(|t| t.offset >= lo && t.offset < hi) {
            io.add_tag(0, t.clone());
        }
        io.produce(0, k);
        self.pos += k;
        Ok(if self.pos == self.n {
            Work::Done
        } else {
            Work::Ok
        })
    }
}

/// Posts the given messages, then ends.
struct Messages(Vec<Pmt>);

impl Block for Messages {
    fn work(&mut self, io: &mut WorkIo<'_>) -> flowmesh_runtime::block::Result<Work> {
        for m in self.0.drain(..) {
            io.post(0, m);
        }
        Ok(Work::Done)
    }
}

fn sample_tags() -> Vec<Tag> {
    vec![
        Tag::new(0, "sob", Pmt::Null),
        Tag::new(17, "rx_freq", Pmt::F64(100e6)),
        Tag::new(1024, "sob", Pmt::I64(3)),
        Tag::new(1024, "note", Pmt::from("two at one offset")),
        Tag::new(4999, "eob", Pmt::Bool(true)),
    ]
}

fn tag_triples(p: Option<Pmt>) -> Vec<(i64, String, Pmt)> {
    let Some(Pmt::List(l)) = p else {
        panic!("tags must be a list, got {p:?}");
    };
    l.iter()
        .map(|t| {
            (
                t.get("offset").and_then(Pmt::as_i64).unwrap(),
                t.get("key").and_then(Pmt::as_str).unwrap().to_string(),
                t.get("value").cloned().unwrap(),
            )
        })
        .collect()
}

fn run_tag_debug(chunk: usize, filter: &str, display: bool) -> Vec<(i64, String, Pmt)> {
    let mut g = Graph::new();
    g.add_built(
        "src",
        BuiltBlock::new(TaggedZeros {
            n: 5000,
            pos: 0,
            chunk,
            tags: sample_tags(),
        })
        .output("out", StreamType::scalar(ItemType::U8)),
    )
    .unwrap();
    g.add_block(
        "td",
        "tag_debug",
        &params(json!({"type": "u8", "display": display, "filter": filter})),
    )
    .unwrap();
    g.connect("src.out", "td.in").unwrap();
    let r = scheduler::run(g).unwrap();
    assert_eq!(
        r.get("td", "count")
            .and_then(|c| c.as_i64())
            .map(|c| c >= 0),
        Some(true)
    );
    tag_triples(r.get("td", "tags"))
}

#[test]
fn tag_debug_keeps_tags_at_their_offsets() {
    let want: Vec<_> = sample_tags()
        .into_iter()
        .map(|t| (t.offset as i64, t.key.to_string(), t.value))
        .collect();
    for chunk in [1, 7, 1000, 5000] {
        assert_eq!(run_tag_debug(chunk, "", false), want, "chunk {chunk}");
    }
    // Printing does not change what is kept.
    assert_eq!(run_tag_debug(333, "", true), want);
    // Filtered by key.
    assert_eq!(
        run_tag_debug(64, "sob", false),
        vec![
            (0, "sob".to_string(), Pmt::Null),
            (1024, "sob".to_string(), Pmt::I64(3))
        ]
    );
}

#[test]
fn tag_debug_with_vectors_and_tagger_upstream() {
    // counter -> tagger -> tag_debug: tags every 1000 items, value = offset.
    let mut g = Graph::new();
    g.add_block("cnt", "counter_source", &params(json!({"n": 4500})))
        .unwrap();
    g.add_block(
        "tg",
        "tagger",
        &params(json!({"type": "u64", "period": 1000, "key": "tick"})),
    )
    .unwrap();
    g.add_block(
        "td",
        "tag_debug",
        &params(json!({"type": "u64", "display": false})),
    )
    .unwrap();
    g.connect("cnt.out", "tg.in").unwrap();
    g.connect("tg.out", "td.in").unwrap();
    let r = scheduler::run(g).unwrap();
    let got = tag_triples(r.get("td", "tags"));
    let want: Vec<_> = (0..5)
        .map(|k| (k * 1000, "tick".to_string(), Pmt::I64(k * 1000)))
        .collect();
    assert_eq!(got, want);
}

fn sample_messages() -> Vec<Pmt> {
    vec![
        Pmt::from("hello"),
        Pmt::I64(-3),
        Pmt::F64(2.5),
        Pmt::map([("a", Pmt::I64(1)), ("b", Pmt::Bool(false))]),
        Pmt::List(vec![Pmt::Null, Pmt::Complex(Complex64::new(1.0, -2.0))]),
        Pmt::Vector(TypedVec::F32(vec![1.5, -0.25])),
        Pmt::Bytes(vec![0xde, 0xad]),
    ]
}

#[test]
fn message_debug_keeps_messages_in_order() {
    for display in [false, true] {
        let mut g = Graph::new();
        g.add_built(
            "src",
            BuiltBlock::new(Messages(sample_messages())).message_output("out"),
        )
        .unwrap();
        g.add_block("dbg", "message_debug", &params(json!({"display": display})))
            .unwrap();
        g.connect("src.out", "dbg.in").unwrap();
        let r = scheduler::run(g).unwrap();
        assert_eq!(r.get("dbg", "messages"), Some(Pmt::List(sample_messages())));
        assert_eq!(r.get("dbg", "count"), Some(Pmt::I64(7)));
    }
}

fn temp_path(what: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "flowmesh-{what}-{}-{nanos}.jsonl",
        std::process::id()
    ))
}

#[test]
fn jsonl_sink_writes_one_json_line_per_message() {
    let path = temp_path("jsonl");
    let out = Harness::new(factory(
        "jsonl_sink",
        json!({"path": path.to_str().unwrap()}),
    ))
    .messages("in", sample_messages())
    .run()
    .unwrap();
    assert!(out.streams.is_empty() && out.messages.is_empty());
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    let want = [
        r#""hello""#,
        r#"-3"#,
        r#"2.5"#,
        r#"{"a":1,"b":false}"#,
        r#"[null,{"im":-2.0,"re":1.0}]"#,
        r#"[1.5,-0.25]"#,
        r#""dead""#,
    ];
    assert_eq!(lines.len(), want.len(), "{text}");
    for (l, w) in lines.iter().zip(want) {
        let got: serde_json::Value = serde_json::from_str(l).unwrap();
        let want: serde_json::Value = serde_json::from_str(w).unwrap();
        assert_eq!(got, want);
        assert!(!l.contains('\n'));
    }
}

#[test]
fn jsonl_sink_reports_an_unwritable_path() {
    let dir = temp_path("nodir");
    let path = dir.join("x").join("out.jsonl");
    let r = Harness::new(factory(
        "jsonl_sink",
        json!({"path": path.to_str().unwrap()}),
    ))
    .messages("in", vec![Pmt::I64(1)])
    .run();
    let e = r.expect_err("creating a file in a missing directory fails");
    assert!(e.to_string().contains("cannot create"), "{e}");
}

#[test]
fn message_strobe_sends_count_messages_then_ends() {
    let mut g = Graph::new();
    g.add_block(
        "strobe",
        "message_strobe",
        &params(json!({"message": "ping", "period": 0.01, "count": 3})),
    )
    .unwrap();
    g.add_block("dbg", "message_debug", &params(json!({"display": false})))
        .unwrap();
    g.connect("strobe.out", "dbg.in").unwrap();
    let t0 = Instant::now();
    let r = scheduler::run(g).unwrap();
    let took = t0.elapsed();
    assert_eq!(
        r.get("dbg", "messages"),
        Some(Pmt::List(vec![Pmt::from("ping"); 3]))
    );
    assert_eq!(r.get("strobe", "sent"), Some(Pmt::I64(3)));
    // Three periods of 10 ms, with generous room for a loaded machine.
    assert!(took >= Duration::from_millis(29), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn message_strobe_period_is_settable_and_stop_ends_it() {
    let mut g = Graph::new();
    g.add_block("strobe", "message_strobe", &params(json!({"period": 10.0})))
        .unwrap();
    g.add_block("dbg", "message_debug", &params(json!({"display": false})))
        .unwrap();
    g.connect("strobe.out", "dbg.in").unwrap();
    let running = scheduler::start(g).unwrap();
    let h = running.handle();
    // With a 10 s period nothing arrives soon; a 5 ms period starts at once.
    std::thread::sleep(Duration::from_millis(50));
    // (A get on a finished graph would wait forever: check it still runs.)
    assert!(!running.is_finished(), "the strobe must keep running");
    assert_eq!(h.get("dbg", "count").unwrap(), Pmt::I64(0));
    h.set("strobe", "period", 0.005).unwrap();
    assert_eq!(h.get("strobe", "period").unwrap(), Pmt::F64(0.005));
    let t0 = Instant::now();
    loop {
        let n = h.get("dbg", "count").unwrap().as_i64().unwrap();
        if n >= 3 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "only {n} messages");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        h.set("strobe", "message", "x").is_err(),
        "message is not settable"
    );
    h.stop();
    let r = running.wait().unwrap();
    let Some(Pmt::List(msgs)) = r.get("dbg", "messages") else {
        panic!()
    };
    assert!(msgs.len() >= 3);
    assert!(msgs.iter().all(|m| *m == Pmt::from("strobe")));
}

fn rates(msgs: &[Pmt]) -> Vec<(f64, i64)> {
    msgs.iter()
        .map(|m| {
            (
                match m.get("rate") {
                    Some(Pmt::F64(r)) => *r,
                    other => panic!("rate must be a float, got {other:?}"),
                },
                match m.get("items") {
                    Some(Pmt::I64(n)) => *n,
                    other => panic!("items must be an integer, got {other:?}"),
                },
            )
        })
        .collect()
}

#[test]
fn rate_probe_reports_a_throttled_rate() {
    // 40 000 items at 100 000 items/s: about 0.4 s, reports every 0.1 s.
    let mut g = Graph::new();
    g.add_block("src", "null_source", &params(json!({"type": "cf32"})))
        .unwrap();
    g.add_block(
        "thr",
        "throttle",
        &params(json!({"type": "cf32", "rate": 100000.0})),
    )
    .unwrap();
    g.add_block("head", "head", &params(json!({"type": "cf32", "n": 40000})))
        .unwrap();
    g.add_block(
        "probe",
        "rate_probe",
        &params(json!({"type": "cf32", "interval": 0.1})),
    )
    .unwrap();
    g.add_block("dbg", "message_debug", &params(json!({"display": false})))
        .unwrap();
    g.connect("src.out", "thr.in").unwrap();
    g.connect("thr.out", "head.in").unwrap();
    g.connect("head.out", "probe.in").unwrap();
    g.connect("probe.rate", "dbg.in").unwrap();
    let r = scheduler::run(g).unwrap();
    let Some(Pmt::List(msgs)) = r.get("dbg", "messages") else {
        panic!()
    };
    let reports = rates(&msgs);
    assert!(reports.len() >= 3, "{reports:?}");
    // Totals grow and end at the item count.
    assert!(reports.windows(2).all(|w| w[0].1 <= w[1].1), "{reports:?}");
    assert_eq!(reports.last().unwrap().1, 40000);
    assert_eq!(r.get("probe", "items"), Some(Pmt::I64(40000)));
    // Interval reports (not the last, partial one) are near 100k items/s.
    for (rate, _) in &reports[1..reports.len() - 1] {
        assert!(
            *rate > 50_000.0 && *rate < 150_000.0,
            "implausible rate {rate}: {reports:?}"
        );
    }
    // And overall: items / elapsed.
    let overall = 40000.0 / r.elapsed.as_secs_f64();
    assert!(overall > 50_000.0 && overall < 150_000.0, "{overall}");
}

#[test]
fn rate_probe_counts_everything_unthrottled() {
    let x = vec![0u16; 100_000];
    let out = Harness::new(factory(
        "rate_probe",
        json!({"type": "u16", "vlen": 4, "interval": 1.0}),
    ))
    .input(&x)
    .run()
    .unwrap();
    let reports = rates(&out.messages[0]);
    // A run this short gives the final report only (perhaps one more).
    assert!(!reports.is_empty() && reports.len() <= 2, "{reports:?}");
    assert_eq!(reports.last().unwrap().1, 25_000);
    assert!(reports.iter().all(|(r, _)| *r >= 0.0 && r.is_finite()));
}

/// Produces `n` u8 items at once, then holds the stream open (not ended)
/// until `hold` has passed, then ends.
struct Stall {
    n: usize,
    hold: Duration,
    until: Option<Instant>,
}

impl Block for Stall {
    fn work(&mut self, io: &mut WorkIo<'_>) -> flowmesh_runtime::block::Result<Work> {
        let until = *self.until.get_or_insert_with(|| Instant::now() + self.hold);
        if self.n > 0 {
            let k = io.output_items(0).min(self.n);
            io.output::<u8>(0)[..k].fill(1);
            io.produce(0, k);
            self.n -= k;
            return Ok(Work::Ok);
        }
        if Instant::now() < until {
            return Ok(Work::SleepUntil(until));
        }
        Ok(Work::Done)
    }
}

#[test]
fn rate_probe_reports_while_the_stream_stalls() {
    let mut g = Graph::new();
    g.add_built(
        "src",
        BuiltBlock::new(Stall {
            n: 1000,
            hold: Duration::from_millis(450),
            until: None,
        })
        .output("out", StreamType::scalar(ItemType::U8)),
    )
    .unwrap();
    g.add_block(
        "probe",
        "rate_probe",
        &params(json!({"type": "u8", "interval": 0.1})),
    )
    .unwrap();
    g.add_block("dbg", "message_debug", &params(json!({"display": false})))
        .unwrap();
    g.connect("src.out", "probe.in").unwrap();
    g.connect("probe.rate", "dbg.in").unwrap();
    let r = scheduler::run(g).unwrap();
    let Some(Pmt::List(msgs)) = r.get("dbg", "messages") else {
        panic!()
    };
    let reports = rates(&msgs);
    // About four interval reports during the 0.45 s stall, then the last one.
    assert!(reports.len() >= 3, "{reports:?}");
    assert!(reports.iter().all(|(_, n)| *n == 1000), "{reports:?}");
    // After the first report, no items arrive: the rate drops to 0.
    assert!(reports[1..].iter().all(|(r, _)| *r == 0.0), "{reports:?}");
}
