//! The message edges of scalable segments (docs/scaling.md,
//! docs/protocol.md "Scalable segments") over the in-process transport:
//! scripted replicas against a distributing producer (credit, selective
//! MSG_DONE, redelivery when a replica's connection ends, LEAVE, EOS with
//! 0, 1 and 3 replicas and to a replica that joins late), scripted pushers
//! against a gathering consumer (de-duplication by id, the ordered option,
//! the end at a final EOS), and whole segments with two replicas.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowmesh_model::partition::{partition, Partition};
use flowmesh_model::pmt::cbor;
use flowmesh_model::spec::{parse_yaml_value, FlowGraphDocument, FlowGraphSpec};
use flowmesh_model::{ItemType, Pmt};
use flowmesh_runtime::blocks::Env;
use flowmesh_runtime::net::env::{client_handshake, NetEnv};
use flowmesh_runtime::net::frame::{self, Answer, Decoder, Frame, FrameType, Hello};
use flowmesh_runtime::net::transport::{Mem, Stream, Transport};
use flowmesh_runtime::{start, Graph, Running};

/// Numbered messages from `a` through scalable `s` to `c`.
fn spec(count: u64, ordered: bool) -> FlowGraphSpec {
    let text = format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: t}}
spec:
  blocks:
    src:  {{kind: message_strobe, params: {{count: {count}, period: 0, numbered: true}}, segment: a}}
    work: {{kind: message_relay, segment: s}}
    dbg:  {{kind: message_debug, params: {{display: false}}, segment: c}}
  connections:
    - [src.out, work.in]
    - [work.out, dbg.in]
  segments:
    s: {{scaling: {{min: 1, max: 4, ordered: {ordered}}}}}
"#
    );
    serde_json::from_value::<FlowGraphDocument>(parse_yaml_value(&text).unwrap())
        .unwrap()
        .spec
}

/// The partition, with `window` on the producer's distributing sink.
fn plan(count: u64, window: u64, ordered: bool) -> Partition {
    let mut p = partition(&spec(count, ordered)).unwrap();
    let sink = p.edges[0].sink_block.clone();
    let b = p
        .segments
        .get_mut("a")
        .unwrap()
        .blocks
        .get_mut(&sink)
        .unwrap();
    assert_eq!(b.params["distribute"], serde_json::json!(true));
    b.params.insert("window".into(), serde_json::json!(window));
    p
}

fn env(mem: &Mem, segment: &str) -> Arc<NetEnv> {
    let e = NetEnv::new(Arc::new(mem.clone()), "t", segment, "tok");
    e.set_peer("a", "mem-a");
    e.set_peer("c", "mem-c");
    e
}

fn run_segment(p: &Partition, seg: &str, env: &Arc<NetEnv>) -> Running {
    start(Graph::from_spec_in(&p.segments[seg], Env::new(env.clone())).unwrap()).unwrap()
}

fn get_u64(r: &Running, block: &str, name: &str) -> u64 {
    r.handle()
        .get(block, name)
        .ok()
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

/// Polls `cond` every 5 ms for up to 20 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A scripted peer: a replica dialing the producer, or a replica's output
/// dialing the gathering consumer.
struct Peer {
    s: Box<dyn Stream>,
    dec: Decoder,
}

impl Peer {
    fn dial(mem: &Mem, addr: &str, edge: &str, generation: u64, replica: u64) -> Peer {
        let mut s = mem.connect(addr, Duration::from_secs(2)).unwrap();
        let hello = Hello {
            flowgraph: "t".into(),
            generation,
            edge: edge.into(),
            item_type: ItemType::U8,
            vlen: 0,
            item_size: 0,
            token: "tok".into(),
            resume_offset: 0,
            resume_msg_seq: 0,
            crc: true,
            instance: 0,
            eos_tags: false,
            replica,
        };
        match client_handshake(&mut *s, &hello).unwrap() {
            Answer::Welcome { crc, .. } => assert!(crc, "message edges always carry CRCs"),
            other => panic!("refused: {other:?}"),
        }
        s.set_timeout(Some(Duration::from_secs(20))).unwrap();
        Peer {
            s,
            dec: Decoder::new(),
        }
    }

    /// The next frame that is not a heartbeat.
    fn next(&mut self) -> Frame {
        loop {
            if let Some(f) = self.dec.next_frame().unwrap() {
                if f.header.kind != FrameType::Heartbeat {
                    return f;
                }
                continue;
            }
            let mut b = [0u8; 65536];
            let n = self.s.read(&mut b).expect("a frame within 20 s");
            assert!(n > 0, "the connection closed");
            self.dec.push(&b[..n]);
        }
    }

    /// The next MSG's sequence number (asserting its `id` equals it: the
    /// producer numbers in the order the strobe numbers).
    fn msg(&mut self) -> u64 {
        let f = self.next();
        assert_eq!(f.header.kind, FrameType::Msg, "{:?}", f.header);
        let m = cbor::decode(&f.body).unwrap();
        assert_eq!(m.get("id").and_then(Pmt::as_u64), Some(f.header.a));
        f.header.a
    }

    fn eos(&mut self) -> u64 {
        let f = self.next();
        assert_eq!(f.header.kind, FrameType::Eos, "{:?}", f.header);
        f.header.b as u64
    }

    fn send(&mut self, kind: FrameType, a: u64) {
        self.s
            .write_all(&frame::control(kind, a, 0, &[], false))
            .unwrap();
    }

    fn push(&mut self, seq: u64, id: i64) {
        let body = cbor::encode(&Pmt::map([("id", Pmt::I64(id))]));
        self.s
            .write_all(&frame::control(FrameType::Msg, seq, 0, &body, true))
            .unwrap();
    }
}

/// The producer of `p` at `mem-a`, and its distributing sink's name.
fn producer(mem: &Mem, p: &Partition) -> (Running, String) {
    let e = env(mem, "a");
    e.listen("mem-a").unwrap();
    (run_segment(p, "a", &e), p.edges[0].sink_block.clone())
}

#[test]
fn credit_selective_acks_redelivery_on_drop_and_eos_to_a_late_replica() {
    let mem = Mem::new();
    let p = plan(10, 3, false);
    let (edge, g) = (p.edges[0].id.clone(), p.edges[0].generation);
    let (prod, tx) = producer(&mem, &p);
    wait_until("the producer took all", || {
        get_u64(&prod, &tx, "sent") == 10
    });

    // Credit: R1 holds at most 3 unacknowledged messages.
    let mut r1 = Peer::dial(&mem, "mem-a", &edge, g, 1);
    assert_eq!([r1.msg(), r1.msg(), r1.msg()], [1, 2, 3]);
    // Selective: 2 is done, 1 and 3 are not; one place is free: 4 comes.
    r1.send(FrameType::MsgDone, 2);
    assert_eq!(r1.msg(), 4);
    // R2 gets the next ones, up to its own window.
    let mut r2 = Peer::dial(&mem, "mem-a", &edge, g, 2);
    assert_eq!([r2.msg(), r2.msg(), r2.msg()], [5, 6, 7]);
    // R1 dies holding 1, 3 and 4: they go back to the front of the queue.
    drop(r1);
    wait_until("the producer noticed", || {
        get_u64(&prod, &tx, "replicas") == 1
    });
    r2.send(FrameType::MsgDone, 5);
    assert_eq!(r2.msg(), 1, "the redelivered messages come first");
    let mut got = vec![5, 6, 7, 1];
    for s in [6, 7, 1] {
        r2.send(FrameType::MsgDone, s);
    }
    // The rest, each acknowledged as it comes, then the end of stream.
    while got.len() < 9 {
        let s = r2.msg();
        got.push(s);
        r2.send(FrameType::MsgDone, s);
    }
    got.sort_unstable();
    assert_eq!(got, vec![1, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(r2.eos(), 10);
    // A replica joining afterwards gets the end of stream at once.
    let mut r3 = Peer::dial(&mem, "mem-a", &edge, g, 3);
    assert_eq!(r3.eos(), 10);
    assert!(
        !prod.is_finished(),
        "the producer waits for its replicas to close"
    );
    drop((r2, r3));
    let r = prod.wait().unwrap();
    assert_eq!(r.get(&tx, "done"), Some(Pmt::I64(10)));
    assert_eq!(r.get(&tx, "redelivered"), Some(Pmt::I64(3)));
}

#[test]
fn eos_waits_for_a_replica_then_reaches_all_three() {
    let mem = Mem::new();
    let p = plan(3, 8, false);
    let (edge, g) = (p.edges[0].id.clone(), p.edges[0].generation);
    let (prod, tx) = producer(&mem, &p);
    // No replica: the input ended but nothing is done, so nothing ends.
    wait_until("the producer took all", || get_u64(&prod, &tx, "sent") == 3);
    assert_eq!(get_u64(&prod, &tx, "unacked"), 3);
    assert!(!prod.is_finished());
    let mut r1 = Peer::dial(&mem, "mem-a", &edge, g, 1);
    // R1 is alone and has room for all three (the others dial only after
    // it got them: dialled at once, a loaded machine may register all
    // three before the producer hands anything out, and then it spreads).
    assert_eq!([r1.msg(), r1.msg(), r1.msg()], [1, 2, 3]);
    let mut r2 = Peer::dial(&mem, "mem-a", &edge, g, 2);
    let mut r3 = Peer::dial(&mem, "mem-a", &edge, g, 3);
    wait_until("three replicas", || get_u64(&prod, &tx, "replicas") == 3);
    for s in [3, 1, 2] {
        r1.send(FrameType::MsgDone, s);
    }
    for r in [&mut r1, &mut r2, &mut r3] {
        assert_eq!(r.eos(), 3);
    }
    drop((r1, r2, r3));
    let r = prod.wait().unwrap();
    assert_eq!(r.get(&tx, "done"), Some(Pmt::I64(3)));
    assert_eq!(r.get(&tx, "redelivered"), Some(Pmt::I64(0)));
}

#[test]
fn a_leaving_replica_gets_nothing_new_and_hands_back_what_it_held() {
    let mem = Mem::new();
    let p = plan(10, 2, false);
    let (edge, g) = (p.edges[0].id.clone(), p.edges[0].generation);
    let (prod, tx) = producer(&mem, &p);
    wait_until("the producer took all", || {
        get_u64(&prod, &tx, "sent") == 10
    });
    let mut r1 = Peer::dial(&mem, "mem-a", &edge, g, 1);
    assert_eq!([r1.msg(), r1.msg()], [1, 2]);
    let mut r2 = Peer::dial(&mem, "mem-a", &edge, g, 2);
    assert_eq!([r2.msg(), r2.msg()], [3, 4]);
    // R1 leaves: 1 is done, 2 is still in its hands.
    r1.send(FrameType::Leave, 0);
    r1.send(FrameType::MsgDone, 1);
    // R2 gets every other message: had R1 had room for one, 5 or a later
    // one would have gone to it.
    let mut got = vec![3, 4];
    r2.send(FrameType::MsgDone, 3);
    r2.send(FrameType::MsgDone, 4);
    while got.len() < 8 {
        let s = r2.msg();
        got.push(s);
        r2.send(FrameType::MsgDone, s);
    }
    got.sort_unstable();
    assert_eq!(got, (3..=10).collect::<Vec<_>>());
    // R1 closes: 2 goes to R2.
    drop(r1);
    assert_eq!(r2.msg(), 2);
    r2.send(FrameType::MsgDone, 2);
    assert_eq!(r2.eos(), 10);
    drop(r2);
    let r = prod.wait().unwrap();
    assert_eq!(r.get(&tx, "done"), Some(Pmt::I64(10)));
    assert_eq!(r.get(&tx, "redelivered"), Some(Pmt::I64(1)));
}

/// The consumer segment `c` at `mem-c`, two scripted pushers sending ids
/// `[2, 1, 3]` and `[2, 5, 4]`, then EOS from the second; the ids the
/// consumer delivered, and its duplicates count.
fn gather(ordered: bool) -> (Vec<i64>, i64) {
    let mem = Mem::new();
    let p = plan(5, 8, ordered);
    let out = &p.edges[1];
    assert_eq!(
        p.segments["c"].blocks[&out.source_block].params["gather"],
        serde_json::json!(true)
    );
    let e = env(&mem, "c");
    e.listen("mem-c").unwrap();
    let cons = run_segment(&p, "c", &e);
    let mut p1 = Peer::dial(&mem, "mem-c", &out.id, out.generation, 11);
    let mut p2 = Peer::dial(&mem, "mem-c", &out.id, out.generation, 12);
    for (seq, id) in [(1, 2), (2, 1), (3, 3)] {
        p1.push(seq, id);
    }
    // Cumulative acknowledgement per connection.
    let f = p1.next();
    assert_eq!(f.header.kind, FrameType::MsgAck);
    let mut acked = f.header.a;
    while acked < 3 {
        acked = p1.next().header.a;
    }
    for (seq, id) in [(1, 2), (2, 5), (3, 4)] {
        p2.push(seq, id);
    }
    let mut acked = 0;
    while acked < 3 {
        let f = p2.next();
        assert_eq!(f.header.kind, FrameType::MsgAck);
        acked = f.header.a;
    }
    // The final marker: the consumer ends.
    p2.s.write_all(&frame::control(FrameType::Eos, 0, 3, &[], false))
        .unwrap();
    let r = cons.wait().unwrap();
    let Some(Pmt::List(msgs)) = r.get("dbg", "messages") else {
        panic!("no messages")
    };
    let ids = msgs
        .iter()
        .map(|m| m.get("id").and_then(Pmt::as_i64).unwrap())
        .collect();
    let dups = r
        .get(&out.source_block, "duplicates")
        .and_then(|v| v.as_i64())
        .unwrap();
    (ids, dups)
}

#[test]
fn the_gathering_consumer_drops_repeated_ids_and_ends_at_the_final_eos() {
    let (ids, dups) = gather(false);
    assert_eq!(ids, vec![2, 1, 3, 5, 4], "arrival order, 2 once");
    assert_eq!(dups, 1);
}

#[test]
fn ordered_delivery_holds_results_until_every_lower_id_came() {
    let (ids, dups) = gather(true);
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    assert_eq!(dups, 1);
}

#[test]
fn two_replica_segments_deliver_every_result_once() {
    let mem = Mem::new();
    let n = 300;
    let p = plan(n, 4, false);
    let c = env(&mem, "c");
    c.listen("mem-c").unwrap();
    let cons = run_segment(&p, "c", &c);
    let (prod, tx) = producer(&mem, &p);
    let replicas: Vec<Running> = (0..2)
        .map(|_| run_segment(&p, "s", &env(&mem, "s")))
        .collect();
    let r = cons.wait().unwrap();
    let Some(Pmt::List(msgs)) = r.get("dbg", "messages") else {
        panic!("no messages")
    };
    let mut ids: Vec<i64> = msgs
        .iter()
        .map(|m| m.get("id").and_then(Pmt::as_i64).unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=n as i64).collect::<Vec<_>>());
    let mut per_replica = vec![];
    for rep in replicas {
        let rx = p.edges[0].source_block.clone();
        let rr = rep.wait().unwrap();
        per_replica.push(rr.get(&rx, "delivered").and_then(|v| v.as_i64()).unwrap());
    }
    assert_eq!(per_replica.iter().sum::<i64>(), n as i64, "{per_replica:?}");
    let pr = prod.wait().unwrap();
    assert_eq!(pr.get(&tx, "done"), Some(Pmt::I64(n as i64)));
}
