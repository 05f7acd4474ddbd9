//! Multi-segment graphs inside one test: the partitioner's sub-graphs joined
//! by the in-process transport behave like the single-process graph.

use std::sync::Arc;

use flowmesh_model::partition::partition;
use flowmesh_model::spec::{parse_yaml_value, FlowGraphDocument, FlowGraphSpec};
use flowmesh_model::Pmt;
use flowmesh_runtime::blocks::Env;
use flowmesh_runtime::net::env::NetEnv;
use flowmesh_runtime::net::transport::{Mem, Transport};
use flowmesh_runtime::{run, start, Graph, Report, Running};

fn spec(text: &str) -> FlowGraphSpec {
    serde_json::from_value::<FlowGraphDocument>(parse_yaml_value(text).unwrap())
        .unwrap()
        .spec
}

/// Runs segment `seg` of a two-segment graph as the consumer, with `token`,
/// finding its producer (segment `a`) at `mem-a`.
fn consume(
    transport: &Arc<dyn Transport>,
    token: &str,
    seg: &FlowGraphSpec,
) -> Result<Report, flowmesh_runtime::scheduler::Error> {
    let env = NetEnv::new(transport.clone(), "t", "a", token);
    env.set_peer("a", "mem-a");
    run(Graph::from_spec_in(seg, Env::new(env)).unwrap())
}

/// Starts segment `a` of a two-segment graph as the producer at `mem-a`.
fn produce(transport: &Arc<dyn Transport>, token: &str, seg: &FlowGraphSpec) -> Running {
    let env = NetEnv::new(transport.clone(), "t", "a", token);
    env.listen("mem-a").unwrap();
    start(Graph::from_spec_in(seg, Env::new(env)).unwrap()).unwrap()
}

/// Runs every segment of `spec` in its own graph over `transport`.
fn run_segments(
    spec: &FlowGraphSpec,
    transport: Arc<dyn Transport>,
    token: &str,
) -> Vec<(String, Report)> {
    let p = partition(spec).unwrap();
    let mut envs = vec![];
    for seg in p.segments.keys() {
        let env = NetEnv::new(transport.clone(), "t", "a", token);
        env.listen(&format!("mem-{seg}")).unwrap();
        envs.push((seg.clone(), env));
    }
    for (_, env) in &envs {
        for s in p.segments.keys() {
            env.set_peer(s, &format!("mem-{s}"));
        }
    }
    let mut running = vec![];
    for (seg, env) in envs {
        let g = Graph::from_spec_in(&p.segments[&seg], Env::new(env)).unwrap();
        running.push((seg, start(g).unwrap()));
    }
    running
        .into_iter()
        .map(|(s, r)| {
            (
                s.clone(),
                r.wait().unwrap_or_else(|e| panic!("segment {s}: {e}")),
            )
        })
        .collect()
}

const CHAIN: &str = r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {name: t}
spec:
  blocks:
    src:   {kind: counter_source, params: {n: 300000}, segment: a}
    tag:   {kind: tagger, params: {type: u64, period: 1000}, segment: a}
    mul:   {kind: multiply_const, params: {type: u64, constant: 3}, segment: b}
    check: {kind: stream_checker, params: {expect: 300000}, segment: b}
    sink:  {kind: vector_sink, params: {type: u64}, segment: c}
    strobe: {kind: message_strobe, params: {count: 5, period: 0.001, message: hi}, segment: a}
    dbg:   {kind: message_debug, params: {display: false}, segment: c}
  connections:
    - [src.out, tag.in]
    - [tag.out, check.in]
    - [tag.out, mul.in]
    - [mul.out, sink.in]
    - [strobe.out, dbg.in]
"#;

#[test]
fn three_segments_in_process_equal_the_single_process_run() {
    let s = spec(CHAIN);
    let mut single = s.clone();
    for b in single.blocks.values_mut() {
        b.segment = None;
    }
    let one = run(Graph::from_spec(&single).unwrap()).unwrap();
    let reports = run_segments(&s, Arc::new(Mem::new()), "tok");
    let c = &reports.iter().find(|(n, _)| n == "c").unwrap().1;
    assert_eq!(c.get("sink", "data"), one.get("sink", "data"));
    // Tags arrive at the same offsets as in one process.
    assert_eq!(c.get("sink", "tags"), one.get("sink", "tags"));
    let Some(Pmt::List(tags)) = c.get("sink", "tags") else {
        panic!()
    };
    assert_eq!(tags.len(), 300);
    // Messages: in order, exactly once.
    let Some(Pmt::List(msgs)) = c.get("dbg", "messages") else {
        panic!("no messages")
    };
    assert_eq!(msgs, vec![Pmt::String("hi".into()); 5]);
    let b = &reports.iter().find(|(n, _)| n == "b").unwrap().1;
    assert_eq!(b.get("check", "delivered"), Some(Pmt::I64(300000)));
    assert_eq!(b.get("check", "lost"), Some(Pmt::I64(0)));
}

#[test]
fn a_consumer_with_the_wrong_token_is_refused_with_the_reason() {
    let text = r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {name: t}
spec:
  blocks:
    src:  {kind: counter_source, params: {n: 1000}, segment: a}
    sink: {kind: null_sink, params: {type: u64}, segment: b}
  connections:
    - [src.out, sink.in]
"#;
    let p = partition(&spec(text)).unwrap();
    let mem: Arc<dyn Transport> = Arc::new(Mem::new());
    let producer = produce(&mem, "right", &p.segments["a"]);
    let err = consume(&mem, "wrong", &p.segments["b"])
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("edge src.out>b: wrong authentication token"),
        "{msg}"
    );
    // The producer is unaffected: it still waits for its consumer.
    assert!(!producer.is_finished());
    producer.handle().stop();
}

#[test]
fn a_consumer_with_the_wrong_edge_type_or_vector_length_is_refused_and_the_producer_serves_the_right_one(
) {
    let text = r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {name: t}
spec:
  blocks:
    src:  {kind: counter_source, params: {n: 5000}, segment: a}
    sink: {kind: null_sink, params: {type: u64, expect: 5000}, segment: b}
  connections:
    - [src.out, sink.in]
"#;
    let p = partition(&spec(text)).unwrap();
    let mem: Arc<dyn Transport> = Arc::new(Mem::new());
    let producer = produce(&mem, "k", &p.segments["a"]);
    let rx = p.edges[0].source_block.clone();

    // Each wrong consumer: its net_source altered one way, the rest of its
    // segment made to match, so only the handshake can object.
    let wrong = |param: &str, value: serde_json::Value, sink_type: &str| {
        let mut b = p.segments["b"].clone();
        b.blocks
            .get_mut(&rx)
            .unwrap()
            .params
            .insert(param.into(), value);
        b.blocks
            .get_mut("sink")
            .unwrap()
            .params
            .insert("type".into(), serde_json::json!(sink_type));
        if param == "vlen" {
            b.blocks
                .get_mut("sink")
                .unwrap()
                .params
                .insert("vlen".into(), serde_json::json!(2));
        }
        b.blocks.get_mut("sink").unwrap().params.remove("expect");
        consume(&mem, "k", &b).err().expect("refused").to_string()
    };
    let msg = wrong("edge", serde_json::json!("src.out>elsewhere"), "u64");
    assert!(
        msg.contains("edge src.out>elsewhere is not produced here"),
        "{msg}"
    );
    let msg = wrong("type", serde_json::json!("u32"), "u32");
    assert!(
        msg.contains(
            "the producer sends u64 (8 bytes per item), the consumer expects u32x1 (4 bytes)"
        ),
        "{msg}"
    );
    let msg = wrong("vlen", serde_json::json!(2), "u64");
    assert!(
        msg.contains(
            "the producer sends u64 (8 bytes per item), the consumer expects u64x2 (16 bytes)"
        ),
        "{msg}"
    );

    // The producer was not disturbed: the right consumer gets every item.
    assert!(!producer.is_finished());
    consume(&mem, "k", &p.segments["b"]).expect("served");
    producer.wait().expect("producer ends after its consumer");
}

const ENDLESS: &str = r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {name: t}
spec:
  blocks:
    src:  {kind: counter_source, params: {n: 0}, segment: a}
    sink: {kind: vector_sink, params: {type: u64}, segment: b}
  connections:
    - [src.out, sink.in]
"#;

/// The name of the block of `kind` in `seg` (the partitioner's net blocks).
fn block_of(seg: &FlowGraphSpec, kind: &str) -> String {
    seg.blocks
        .iter()
        .find(|(_, b)| b.kind == kind)
        .map(|(n, _)| n.clone())
        .unwrap_or_else(|| panic!("no {kind} in the segment"))
}

/// Starts the consumer segment `b` of [`ENDLESS`] (producer at `mem-a`),
/// and the producer; returns both once the consumer has items.
fn endless_pair(transport: &Arc<dyn Transport>) -> (Running, Running, String, String) {
    let p = partition(&spec(ENDLESS)).unwrap();
    let (a, b) = (&p.segments["a"], &p.segments["b"]);
    let producer = produce(transport, "tok", a);
    let env = NetEnv::new(transport.clone(), "t", "a", "tok");
    env.set_peer("a", "mem-a");
    let consumer = start(Graph::from_spec_in(b, Env::new(env)).unwrap()).unwrap();
    let sink_stats = consumer
        .handle()
        .stats()
        .iter()
        .find(|s| s.name == "sink")
        .cloned()
        .unwrap();
    while sink_stats.items_in() < 100_000 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    (
        producer,
        consumer,
        block_of(a, "net_sink"),
        block_of(b, "net_source"),
    )
}

/// A planned stop of the producer (`Handle::suspend`, what SIGTERM does in
/// a worker) is not the end of its stream: its source stops, what it holds
/// reaches the consumer and is acknowledged, and it closes without EOS, so
/// the consumer keeps its stream open (it waits to reconnect) with every
/// item the producer took, in order, none lost.
#[test]
fn a_suspended_producer_hands_over_everything_without_ending_the_stream() {
    let transport: Arc<dyn Transport> = Arc::new(Mem::new());
    let (producer, consumer, net_sink, net_source) = endless_pair(&transport);
    producer.handle().suspend();
    assert!(producer.handle().is_suspending());
    let report = producer.wait().expect("a planned stop is not a failure");
    let Some(Pmt::I64(acked)) = report.get(&net_sink, "acked") else {
        panic!("no `acked` on {net_sink}")
    };
    let Some(Pmt::I64(sent)) = report.get(&net_sink, "sent") else {
        panic!("no `sent` on {net_sink}")
    };
    let written = report
        .stats
        .iter()
        .find(|s| s.name == "src")
        .unwrap()
        .items_out() as i64;
    assert_eq!(
        sent, written,
        "the producer sent everything its source made"
    );
    assert_eq!(acked, written, "and the consumer acknowledged all of it");
    // The consumer's stream did not end: it still runs, waiting for the
    // producer to come back; what it has is exactly what was acknowledged.
    assert!(
        !consumer.is_finished(),
        "the consumer took the stop for an end of stream"
    );
    let h = consumer.handle();
    let acc = h.get(&net_source, "accounting").unwrap();
    let Pmt::Map(m) = acc else {
        panic!("accounting: {acc}")
    };
    assert_eq!(m.get("expected"), Some(&Pmt::I64(acked)));
    assert_eq!(m.get("lost"), Some(&Pmt::I64(0)));
    h.stop();
    let c = consumer.wait().unwrap();
    let Some(Pmt::Vector(flowmesh_model::pmt::TypedVec::U64(data))) = c.get("sink", "data") else {
        panic!("no u64 data in the sink")
    };
    assert_eq!(data.len() as i64, acked);
    if let Some(i) = data.iter().enumerate().position(|(i, v)| *v != i as u64) {
        panic!("item {i} is {}, not {i}", data[i]);
    }
}

/// For contrast, `Handle::stop` is the end of the stream: the producer
/// sends EOS once everything went out, and the consumer finishes on its own.
#[test]
fn a_stopped_producer_ends_the_consumers_stream() {
    let transport: Arc<dyn Transport> = Arc::new(Mem::new());
    let (producer, consumer, _, _) = endless_pair(&transport);
    producer.handle().stop();
    assert!(!producer.handle().is_suspending());
    producer.wait().unwrap();
    // No stop request to the consumer: EOS ends it.
    consumer.wait().unwrap();
}
