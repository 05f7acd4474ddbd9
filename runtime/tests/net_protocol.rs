//! The edge protocol's corner cases, with segments in one process over the
//! in-process transport (docs/protocol.md): a producer replaced by a fresh
//! one (restart without state) on stream and message edges, a peer speaking
//! another protocol version, and CRC checking on the consumer.

use std::io::{self, IoSlice, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowmesh_model::partition::{partition, Partition};
use flowmesh_model::spec::{parse_yaml_value, FlowGraphDocument, FlowGraphSpec};
use flowmesh_model::{Pmt, TypedVec};
use flowmesh_runtime::blocks::Env;
use flowmesh_runtime::net::env::{read_frame, NetEnv};
use flowmesh_runtime::net::frame::{
    self, Answer, FrameType, Header, Reason, FLAG_CRC, PROTOCOL_VERSION,
};
use flowmesh_runtime::net::transport::{AcceptFn, Conn, Mem, Stream, Transport};
use flowmesh_runtime::signal::Signal;
use flowmesh_runtime::{start, Graph, Report, Running};

fn spec(text: &str) -> FlowGraphSpec {
    serde_json::from_value::<FlowGraphDocument>(parse_yaml_value(text).unwrap())
        .unwrap()
        .spec
}

fn segment(p: &Partition, seg: &str, env: &Arc<NetEnv>) -> Running {
    start(Graph::from_spec_in(&p.segments[seg], Env::new(env.clone())).unwrap()).unwrap()
}

/// Polls `cond` every 5 ms for up to 20 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A consumer's environment (flowgraph `t`, token `tok`)
/// that finds segment `a` at `producer_at`.
fn consumer_env(mem: &Mem, producer_at: &str) -> Arc<NetEnv> {
    let c = NetEnv::new(Arc::new(mem.clone()), "t", "a", "tok");
    c.set_peer("a", producer_at);
    c
}

fn get_u64(r: &Running, block: &str, name: &str) -> u64 {
    r.handle()
        .get(block, name)
        .ok()
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

// ------------------------------------------------ a transport that can die

/// A connection that the kill switch can end from outside.
type Shared = Arc<Mutex<Option<Box<dyn Conn>>>>;

/// The producer's side of the in-process transport, with a kill switch that
/// ends every connection at once and accepts no more — what a killed
/// process looks like to its consumers.
#[derive(Clone)]
struct Killable {
    inner: Mem,
    dead: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<Shared>>>,
}

impl Killable {
    fn new(inner: &Mem) -> Self {
        Killable {
            inner: inner.clone(),
            dead: Arc::default(),
            conns: Arc::default(),
        }
    }
    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().iter() {
            // Dropping the pipe end closes it and wakes both sides.
            drop(c.lock().unwrap().take());
        }
    }
}

struct KStream {
    inner: Box<dyn Stream>,
    owner: Killable,
}

struct KConn {
    inner: Shared,
    peer: String,
}

fn gone() -> io::Error {
    io::Error::from(io::ErrorKind::BrokenPipe)
}

impl Read for KStream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        self.inner.read(b)
    }
}

impl Write for KStream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.inner.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Stream for KStream {
    fn set_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.inner.set_timeout(t)
    }
    fn peer_addr(&self) -> String {
        self.inner.peer_addr()
    }
    fn local_addr(&self) -> String {
        self.inner.local_addr()
    }
    fn into_conn(self: Box<Self>) -> io::Result<Box<dyn Conn>> {
        let peer = self.inner.peer_addr();
        let inner = Arc::new(Mutex::new(Some(self.inner.into_conn()?)));
        self.owner.conns.lock().unwrap().push(inner.clone());
        if self.owner.dead.load(Ordering::SeqCst) {
            inner.lock().unwrap().take();
        }
        Ok(Box::new(KConn { inner, peer }))
    }
}

impl Conn for KConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.lock().unwrap().as_mut() {
            Some(c) => c.read(buf),
            None => Err(gone()),
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.inner.lock().unwrap().as_mut() {
            Some(c) => c.write_vectored(bufs),
            None => Err(gone()),
        }
    }
    fn set_waker(&mut self, signal: Arc<Signal>) -> io::Result<()> {
        match self.inner.lock().unwrap().as_mut() {
            Some(c) => c.set_waker(signal),
            None => {
                signal.notify();
                Ok(())
            }
        }
    }
    fn peer_addr(&self) -> String {
        self.peer.clone()
    }
    fn shutdown_write(&mut self) {
        if let Some(c) = self.inner.lock().unwrap().as_mut() {
            c.shutdown_write();
        }
    }
}

impl Transport for Killable {
    fn listen(&self, addr: &str, accept: AcceptFn) -> io::Result<String> {
        let owner = self.clone();
        self.inner.listen(
            addr,
            Arc::new(move |s: Box<dyn Stream>| {
                if !owner.dead.load(Ordering::SeqCst) {
                    accept(Box::new(KStream {
                        inner: s,
                        owner: owner.clone(),
                    }));
                }
            }),
        )
    }
    fn connect(&self, addr: &str, timeout: Duration) -> io::Result<Box<dyn Stream>> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(gone());
        }
        Ok(Box::new(KStream {
            inner: self.inner.connect(addr, timeout)?,
            owner: self.clone(),
        }))
    }
}

// ------------------------------------------------ producer restart, stream

fn counter_spec(n: u64, rate: f64) -> String {
    format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: t}}
spec:
  blocks:
    src:   {{kind: counter_source, params: {{n: {n}}}, segment: a}}
    thr:   {{kind: throttle, params: {{type: u64, rate: {rate}, overflow: wait}}, segment: a}}
    tag:   {{kind: tagger, params: {{type: u64, period: 1000}}, segment: a}}
    check: {{kind: stream_checker, params: {{expect: {n}, tag_key: tick}}, segment: b}}
    sink:  {{kind: vector_sink, params: {{type: u64}}, segment: b}}
  connections:
    - [src.out, thr.in]
    - [thr.out, tag.in]
    - [tag.out, check.in]
    - [tag.out, sink.in]
"#
    )
}

/// What the `sink` (a u64 `vector_sink`) of a finished segment collected:
/// its items and its tags.
fn sink_output(b: &Report) -> (Vec<u64>, Vec<Pmt>) {
    let Some(Pmt::Vector(TypedVec::U64(data))) = b.get("sink", "data") else {
        panic!("no data")
    };
    let Some(Pmt::List(tags)) = b.get("sink", "tags") else {
        panic!("no tags")
    };
    (data, tags)
}

/// The one `gap` tag among `tags` (fails unless there is exactly one).
fn only_gap(tags: &[Pmt]) -> &Pmt {
    let gaps: Vec<&Pmt> = tags
        .iter()
        .filter(|t| t.get("key").and_then(Pmt::as_str) == Some("gap"))
        .collect();
    assert_eq!(gaps.len(), 1, "exactly one gap tag: {gaps:?}");
    gaps[0]
}

/// The producing segment `seg` of `p` listening at `mem-a1` through a
/// transport that can be killed (the first producer of a restart test).
fn killable_producer(mem: &Mem, p: &Partition, seg: &str) -> (Killable, Running) {
    let kill = Killable::new(mem);
    let env = NetEnv::new(Arc::new(kill.clone()), "t", "a", "tok");
    env.listen("mem-a1").unwrap();
    (kill, segment(p, seg, &env))
}

/// Kills the first producer and starts a fresh one (a new instance,
/// numbering from 0) of segment `seg` of `p` at `mem-a2`.
fn replace_producer(
    kill: &Killable,
    first: &Running,
    mem: &Mem,
    p: &Partition,
    seg: &str,
) -> Running {
    kill.kill();
    first.handle().stop();
    let env = NetEnv::new(Arc::new(mem.clone()), "t", "a", "tok");
    env.listen("mem-a2").unwrap();
    segment(p, seg, &env)
}

#[test]
fn a_producer_replaced_mid_stream_gives_one_restart_gap_and_loses_nothing_of_the_new_one() {
    const N: u64 = 100_000;
    let slow = partition(&spec(&counter_spec(N, 50_000.0))).unwrap();
    let fast = partition(&spec(&counter_spec(N, 1e7))).unwrap();
    let edge = slow.edges.iter().find(|e| e.id == "tag.out>b").unwrap();
    let rx = edge.source_block.clone();
    let mem = Mem::new();

    // The first producer, paced so that it is killed mid-stream.
    let (kill1, producer1) = killable_producer(&mem, &slow, "a");

    let c = consumer_env(&mem, "mem-a1");
    let consumer = segment(&slow, "b", &c);
    wait_until("the consumer receives 10000 items", || {
        get_u64(&consumer, &rx, "expected") >= 10_000
    });

    // Kill it: connections end, nothing more is accepted. A fresh producer
    // (new instance, numbering from 0) takes over at another address.
    let producer2 = replace_producer(&kill1, &producer1, &mem, &fast, "a");
    c.set_peer("a", "mem-a2");

    let b = consumer
        .wait()
        .expect("the consumer and its checker succeed");
    producer2.wait().expect("the second producer finishes");
    drop(producer1); // stopped; its sink waits for a consumer that never returns

    let (data, tags) = sink_output(&b);
    let g = only_gap(&tags);
    let at = g.get("offset").and_then(Pmt::as_u64).unwrap() as usize;
    let v = g.get("value").unwrap();
    assert_eq!(v.get("cause").and_then(Pmt::as_str), Some("restart"), "{v}");
    assert_eq!(v.get("count").and_then(Pmt::as_u64), Some(0), "{v}");
    // `first`: the next offset the consumer wanted from the old producer.
    assert_eq!(v.get("first").and_then(Pmt::as_u64), Some(at as u64), "{v}");
    assert!(at >= 10_000 && (at as u64) < N, "restart at {at}");
    // Before the restart: the old producer's items in order; after it:
    // every item of the new one, from its first.
    assert!(data[..at].iter().enumerate().all(|(i, &x)| x == i as u64));
    assert_eq!(data.len() - at, N as usize, "items of the new producer");
    assert!(data[at..].iter().enumerate().all(|(i, &x)| x == i as u64));
    // Tags of the new producer land on its items (output offsets continue).
    let ticks: Vec<u64> = tags
        .iter()
        .filter(|t| t.get("key").and_then(Pmt::as_str) == Some("tick"))
        .map(|t| t.get("offset").and_then(Pmt::as_u64).unwrap())
        .collect();
    assert_eq!(ticks.len() as u64, (at as u64).div_ceil(1000) + N / 1000);
    for w in ticks.windows(2) {
        assert!(w[0] < w[1], "tag offsets are monotonic: {ticks:?}");
    }
    for &o in &ticks {
        assert_eq!(data[o as usize] % 1000, 0, "tick at {o}");
    }
    assert_eq!(b.get(&rx, "restarts"), Some(Pmt::I64(1)));
    assert_eq!(b.get(&rx, "lost"), Some(Pmt::I64(0)));
    assert_eq!(b.get("check", "restarts"), Some(Pmt::I64(1)));
    assert_eq!(b.get("check", "gaps"), Some(Pmt::I64(1)));
    assert_eq!(
        b.get("check", "tags_checked").and_then(|v| v.as_u64()),
        Some(ticks.len() as u64)
    );
}

// ------------------------------------------------ producer restart, messages

fn strobe_spec(text: &str, count: u64, period: f64) -> String {
    format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: t}}
spec:
  blocks:
    strobe: {{kind: message_strobe, params: {{count: {count}, period: {period}, message: {text}}}, segment: a}}
    dbg:    {{kind: message_debug, params: {{display: false}}, segment: c}}
  connections:
    - [strobe.out, dbg.in]
"#
    )
}

#[test]
fn a_message_edge_across_a_producer_restart_loses_no_message_of_the_new_producer() {
    let old = partition(&spec(&strobe_spec("old", 100_000, 0.002))).unwrap();
    let new = partition(&spec(&strobe_spec("new", 20, 0.001))).unwrap();
    let rx = old.edges[0].source_block.clone();
    let mem = Mem::new();

    let (kill1, producer1) = killable_producer(&mem, &old, "a");
    let c = consumer_env(&mem, "mem-a1");
    let consumer = segment(&old, "c", &c);
    wait_until("the consumer delivers 5 messages", || {
        get_u64(&consumer, &rx, "delivered") >= 5
    });

    let producer2 = replace_producer(&kill1, &producer1, &mem, &new, "a");
    // Its first messages are sent before the consumer is back: they wait.
    std::thread::sleep(Duration::from_millis(30));
    c.set_peer("a", "mem-a2");

    let r = consumer.wait().expect("the consumer finishes");
    producer2.wait().expect("the second producer finishes");
    drop(producer1);

    let Some(Pmt::List(msgs)) = r.get("dbg", "messages") else {
        panic!("no messages")
    };
    let old_ones = msgs
        .iter()
        .take_while(|m| **m == Pmt::String("old".into()))
        .count();
    assert!(old_ones >= 5, "{msgs:?}");
    assert_eq!(
        &msgs[old_ones..],
        &vec![Pmt::String("new".into()); 20][..],
        "every message of the new producer, once, in order"
    );
    assert_eq!(r.get(&rx, "restarts"), Some(Pmt::I64(1)));
    assert_eq!(r.get(&rx, "last_seq"), Some(Pmt::I64(20)));
    assert_eq!(
        r.get(&rx, "delivered"),
        Some(Pmt::I64(old_ones as i64 + 20))
    );
}

// ------------------------------------------------ protocol version mismatch

const PAIR: &str = r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {name: t}
spec:
  blocks:
    src:  {kind: counter_source, params: {n: 5000}, segment: a}
    sink: {kind: vector_sink, params: {type: u64}, segment: b}
  connections:
    - [src.out, sink.in]
"#;

/// The preamble of a build that speaks version 1 (the CRC in the header).
fn preamble_v1() -> [u8; 8] {
    let mut p = frame::preamble();
    p[4..6].copy_from_slice(&1u16.to_le_bytes());
    p
}

#[test]
fn a_producer_speaking_another_version_fails_the_consumer_with_a_clear_message() {
    let p = partition(&spec(PAIR)).unwrap();
    let mem = Mem::new();
    let attempts = Arc::new(AtomicUsize::new(0));
    let n = attempts.clone();
    // A producer from an older build: answers with a version 1 preamble.
    mem.listen(
        "mem-v1",
        Arc::new(move |mut s: Box<dyn Stream>| {
            n.fetch_add(1, Ordering::SeqCst);
            let mut pre = [0u8; 8];
            let _ = s.read_exact(&mut pre);
            let _ = s.write_all(&preamble_v1());
            let mut b = [0u8; 256];
            while matches!(s.read(&mut b), Ok(k) if k > 0) {}
        }),
    )
    .unwrap();
    let c = consumer_env(&mem, "mem-v1");
    let consumer = segment(&p, "b", &c);
    assert!(
        consumer.wait_timeout(Duration::from_secs(10)),
        "the consumer keeps retrying"
    );
    let err = consumer
        .wait()
        .err()
        .expect("the consumer fails")
        .to_string();
    assert!(
        err.contains(
            "edge src.out>b: producer at mem-v1 speaks FlowMesh protocol v1, this build speaks v2: \
             run the same FlowMesh version on both segments"
        ),
        "{err}"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "no retries");
}

#[test]
fn a_consumer_speaking_another_version_is_refused_and_the_producer_serves_others() {
    let p = partition(&spec(PAIR)).unwrap();
    let mem = Mem::new();
    let prod = NetEnv::new(Arc::new(mem.clone()), "t", "a", "tok");
    prod.listen("mem-a").unwrap();
    let producer = segment(&p, "a", &prod);

    // A consumer from an older build.
    let mut s = mem.connect("mem-a", Duration::from_secs(1)).unwrap();
    s.set_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&preamble_v1()).unwrap();
    let mut pre = [0u8; 8];
    s.read_exact(&mut pre).unwrap();
    assert_eq!(frame::check_preamble(&pre), Ok(PROTOCOL_VERSION));
    let (h, body) = read_frame(&mut *s).unwrap();
    let Answer::Refuse { reason, message } = Answer::decode(&h, &body).unwrap() else {
        panic!("not refused")
    };
    assert_eq!(reason, Reason::BadVersion);
    assert!(
        message.contains("the consumer speaks FlowMesh protocol v1, this build speaks v2"),
        "{message}"
    );
    drop(s);
    assert!(!producer.is_finished());

    // A consumer of the right version gets everything.
    let c = consumer_env(&mem, "mem-a");
    let b = segment(&p, "b", &c).wait().unwrap();
    producer.wait().expect("the producer is unaffected");
    let Some(Pmt::Vector(TypedVec::U64(data))) = b.get("sink", "data") else {
        panic!("no data")
    };
    assert_eq!(data, (0..5000).collect::<Vec<u64>>());
}

// ------------------------------------------------ CRC on the stream consumer

/// Two u64 items whose CRC32C is 0 (the last four bytes are chosen by
/// running the CRC backwards from the register value that gives 0).
/// The producer's side of a handshake, for hand-written producers:
/// preambles, then the consumer's HELLO (returned). The caller answers.
fn accept_hello(s: &mut Box<dyn Stream>) -> frame::Hello {
    s.set_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut pre = [0u8; 8];
    s.read_exact(&mut pre).unwrap();
    s.write_all(&frame::preamble()).unwrap();
    let (h, body) = read_frame(&mut **s).unwrap();
    assert_eq!(h.kind, FrameType::Hello);
    frame::Hello::decode(&body).unwrap()
}

/// A WELCOME (CRC on) from producer `instance`, holding items from `retained_from`.
fn welcome_frame(retained_from: u64, instance: u64) -> Vec<u8> {
    Answer::Welcome {
        crc: true,
        retained_from,
        instance,
    }
    .encode()
}

fn zero_crc_items() -> Vec<u8> {
    let p = flowmesh_runtime::net::fuzzing::zero_crc_items(42, 7);
    assert_eq!(frame::crc(&[&p]), 0);
    p
}

/// A DATA frame of `payload`; with `FLAG_CRC` in `flags`, `crc` is its
/// trailer (whether or not it is the payload's CRC32C).
fn data_frame(first: u64, payload: &[u8], flags: u8, crc: u32) -> Vec<u8> {
    let mut h = Header::new(FrameType::Data, first, (payload.len() / 8) as u32);
    h.len = payload.len() as u32;
    h.flags = flags;
    let trailer = if flags & FLAG_CRC != 0 {
        h.len += frame::CRC_LEN as u32;
        crc.to_le_bytes().to_vec()
    } else {
        vec![]
    };
    [h.encode().to_vec(), payload.to_vec(), trailer].concat()
}

#[test]
fn the_consumer_checks_a_zero_crc_and_rejects_frames_without_one() {
    let p = partition(&spec(PAIR)).unwrap();
    let rx = p.edges[0].source_block.clone();
    let mem = Mem::new();
    let items = zero_crc_items();
    let conns = Arc::new(AtomicUsize::new(0));
    let n = conns.clone();
    let sent = items.clone();
    // A hand-written producer: a corrupted frame whose true CRC is 0, then
    // a frame without the CRC flag, then the good frame and EOS; one per
    // connection (the consumer must drop the first two and reconnect).
    mem.listen(
        "mem-crc",
        Arc::new(move |mut s: Box<dyn Stream>| {
            let k = n.fetch_add(1, Ordering::SeqCst);
            let hello = accept_hello(&mut s);
            assert!(hello.crc);
            assert_eq!(hello.resume_offset, 0);
            assert_eq!(hello.instance, if k == 0 { 0 } else { 77 });
            s.write_all(&welcome_frame(0, 77)).unwrap();
            let frames = match k {
                0 => {
                    let mut bad = sent.clone();
                    bad[3] ^= 0x01;
                    data_frame(0, &bad, FLAG_CRC, 0)
                }
                1 => data_frame(0, &sent, 0, 0),
                _ => [
                    data_frame(0, &sent, FLAG_CRC, 0),
                    frame::control(FrameType::Eos, 2, 0, &[], false),
                ]
                .concat(),
            };
            s.write_all(&frames).unwrap();
            let mut b = [0u8; 256];
            while matches!(s.read(&mut b), Ok(k) if k > 0) {}
        }),
    )
    .unwrap();
    let c = consumer_env(&mem, "mem-crc");
    let b = segment(&p, "b", &c).wait().expect("the consumer finishes");
    let Some(Pmt::Vector(TypedVec::U64(data))) = b.get("sink", "data") else {
        panic!("no data")
    };
    let want: Vec<u64> = items
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data, want, "only the intact frame is delivered");
    assert_eq!(conns.load(Ordering::SeqCst), 3);
    assert_eq!(b.get(&rx, "connections"), Some(Pmt::I64(3)));
    assert_eq!(b.get("sink", "tags"), Some(Pmt::List(vec![])));
}

/// A connection that ends in the middle of a DATA frame leaves nothing of
/// that frame behind: the next connection starts at a frame boundary. (The
/// consumer used to keep the cut frame's header and read the new
/// connection's first bytes as the rest of its payload: with CRC on, a
/// CRC32C mismatch and one more reconnect; with CRC off, as here, wrong
/// items delivered.)
#[test]
fn a_connection_cut_inside_a_data_frame_leaves_no_trace_in_the_next_one() {
    let p = partition(&spec(PAIR)).unwrap();
    let rx = p.edges[0].source_block.clone();
    let mem = Mem::new();
    let resumed = Arc::new(Mutex::new(Vec::new()));
    let seen = resumed.clone();
    let items = |r: std::ops::Range<u64>| -> Vec<u8> { r.flat_map(|i| i.to_le_bytes()).collect() };
    let welcome = |retained_from| {
        Answer::Welcome {
            crc: false,
            retained_from,
            instance: 77,
        }
        .encode()
    };
    // First connection: items 0..4, then the header and half the payload
    // of the frame of items 4..8, then the close. Later ones: from where
    // the consumer resumes to 8, then EOS.
    mem.listen(
        "mem-cut",
        Arc::new(move |mut s: Box<dyn Stream>| {
            let hello = accept_hello(&mut s);
            let r = hello.resume_offset.min(8);
            let first = {
                let mut v = seen.lock().unwrap();
                v.push(hello.resume_offset);
                v.len() == 1
            };
            s.write_all(&welcome(r)).unwrap();
            if first {
                let whole = data_frame(0, &items(0..4), 0, 0);
                let cut = data_frame(4, &items(4..8), 0, 0);
                s.write_all(&[&whole[..], &cut[..cut.len() - 16]].concat())
                    .unwrap();
                return; // closes the connection mid-payload
            }
            let mut rest = vec![];
            if r < 8 {
                rest = data_frame(r, &items(r..8), 0, 0);
            }
            rest.extend_from_slice(&frame::control(FrameType::Eos, 8, 0, &[], false));
            s.write_all(&rest).unwrap();
            let mut b = [0u8; 256];
            while matches!(s.read(&mut b), Ok(k) if k > 0) {}
        }),
    )
    .unwrap();
    let c = consumer_env(&mem, "mem-cut");
    let b = segment(&p, "b", &c).wait().expect("the consumer finishes");
    let Some(Pmt::Vector(TypedVec::U64(data))) = b.get("sink", "data") else {
        panic!("no data")
    };
    assert_eq!(data, (0..8).collect::<Vec<u64>>());
    assert_eq!(
        *resumed.lock().unwrap(),
        [0, 4],
        "one reconnect, after the last whole frame"
    );
    assert_eq!(b.get(&rx, "connections"), Some(Pmt::I64(2)));
}

// ------------------------------------------------ frames split or packed

/// A DATA frame of u64 items `first..first+count` with `tags` (CRC on).
fn tagged_frame(first: u64, count: u64, tags: &[frame::WireTag]) -> Vec<u8> {
    let payload: Vec<u8> = (first..first + count).flat_map(u64::to_le_bytes).collect();
    let mut section = vec![];
    let mut h = Header::new(FrameType::Data, first, count as u32);
    h.flags = FLAG_CRC;
    if !tags.is_empty() {
        let cbor = frame::encode_tags(tags);
        section.extend_from_slice(&(cbor.len() as u32).to_le_bytes());
        section.extend_from_slice(&cbor);
        h.flags |= frame::FLAG_TAGS;
    }
    h.len = (section.len() + payload.len() + frame::CRC_LEN) as u32;
    let trailer = frame::crc(&[&section, &payload]).to_le_bytes().to_vec();
    [h.encode().to_vec(), section, payload, trailer].concat()
}

fn wire_tag(offset: u64, key: &str, value: Pmt) -> frame::WireTag {
    frame::WireTag {
        offset,
        key: key.into(),
        value,
    }
}

/// Serves one connection with a fixed script of frames — a tagged frame
/// larger than the consumer's read-ahead, a heartbeat, a tiny tagged frame,
/// an untagged one, EOS — written in pieces of the sizes `chunks` cycles
/// through, and returns what the consumer delivered.
fn deliver_scripted(name: &str, chunks: &'static [usize]) -> (Vec<u64>, Pmt) {
    let p = partition(&spec(PAIR)).unwrap();
    let mem = Mem::new();
    let script = [
        tagged_frame(
            0,
            600,
            &[
                wire_tag(0, "first", Pmt::I64(0)),
                wire_tag(599, "last", Pmt::String("x".repeat(300))),
            ],
        ),
        frame::control(FrameType::Heartbeat, 0, 0, &[], false),
        tagged_frame(
            600,
            3,
            &[wire_tag(601, "mid", Pmt::map([("a", Pmt::F64(1.5))]))],
        ),
        tagged_frame(603, 397, &[]),
        frame::control(FrameType::Eos, 1000, 0, &[], false),
    ]
    .concat();
    mem.listen(
        name,
        Arc::new(move |mut s: Box<dyn Stream>| {
            accept_hello(&mut s);
            s.write_all(&welcome_frame(0, 5)).unwrap();
            let (mut at, mut i) = (0, 0);
            while at < script.len() {
                let n = chunks[i % chunks.len()].min(script.len() - at);
                s.write_all(&script[at..at + n]).unwrap();
                at += n;
                i += 1;
                if chunks.len() > 1 {
                    std::thread::yield_now();
                }
            }
            let mut b = [0u8; 256];
            while matches!(s.read(&mut b), Ok(k) if k > 0) {}
        }),
    )
    .unwrap();
    let c = consumer_env(&mem, name);
    let b = segment(&p, "b", &c).wait().expect("the consumer finishes");
    let Some(Pmt::Vector(TypedVec::U64(data))) = b.get("sink", "data") else {
        panic!("no data")
    };
    (data, b.get("sink", "tags").expect("tags"))
}

#[test]
fn frames_split_anywhere_or_packed_together_arrive_whole_with_their_tags() {
    let tag = |offset: i64, key: &str, value: Pmt| {
        Pmt::map([
            ("offset", Pmt::I64(offset)),
            ("key", Pmt::String(key.into())),
            ("value", value),
        ])
    };
    let want_tags = Pmt::List(vec![
        tag(0, "first", Pmt::I64(0)),
        tag(599, "last", Pmt::String("x".repeat(300))),
        tag(601, "mid", Pmt::map([("a", Pmt::F64(1.5))])),
    ]);
    let want: Vec<u64> = (0..1000).collect();
    // All at once (several frames per read), then split at every byte and
    // at irregular sizes (headers, tag sections and payloads cut anywhere).
    for (name, chunks) in [
        ("mem-packed", &[1 << 20][..]),
        ("mem-bytes", &[1][..]),
        ("mem-odd", &[7, 1, 4093, 23, 2, 511][..]),
    ] {
        let (data, tags) = deliver_scripted(name, chunks);
        assert_eq!(data, want, "{name}: items");
        assert_eq!(tags, want_tags, "{name}: tags");
    }
}

// ------------------------------------------------ polling mid-frame

#[test]
fn on_a_slow_link_the_consumer_polls_in_vain_at_most_once_a_millisecond() {
    let p = partition(&spec(PAIR)).unwrap();
    let rx = p.edges[0].source_block.clone();
    let mem = Mem::new();
    let frame = [
        tagged_frame(0, 4000, &[]),
        frame::control(FrameType::Eos, 4000, 0, &[], false),
    ]
    .concat();
    // A slow link: the 32 000-byte payload comes in 40 pieces 2 ms apart,
    // so a 20 µs poll mid-frame never finds the next piece. The consumer is
    // woken far more often than once a piece (acknowledgement deadlines,
    // downstream progress).
    mem.listen(
        "mem-slow",
        Arc::new(move |mut s: Box<dyn Stream>| {
            accept_hello(&mut s);
            s.write_all(&welcome_frame(0, 9)).unwrap();
            let piece = frame.len().div_ceil(40);
            for chunk in frame.chunks(piece) {
                s.write_all(chunk).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            let mut b = [0u8; 256];
            while matches!(s.read(&mut b), Ok(k) if k > 0) {}
        }),
    )
    .unwrap();
    let c = consumer_env(&mem, "mem-slow");
    let t0 = Instant::now();
    let b = segment(&p, "b", &c).wait().expect("the consumer finishes");
    let elapsed_ms = t0.elapsed().as_millis() as i64;
    let Some(Pmt::Vector(TypedVec::U64(data))) = b.get("sink", "data") else {
        panic!("no data")
    };
    assert_eq!(data, (0..4000).collect::<Vec<u64>>());
    let Some(Pmt::Map(spins)) = b.get(&rx, "spins") else {
        panic!("no spins counter")
    };
    let missed = match spins.get("missed") {
        Some(Pmt::I64(m)) => *m,
        other => panic!("missed: {other:?}"),
    };
    // After a vain poll, none for 1 ms: at most one a millisecond (polling
    // at every wait-up gives several hundred here).
    assert!(
        missed >= 1 && missed <= elapsed_ms + 1,
        "{missed} polls found nothing in {elapsed_ms} ms: {spins:?}"
    );
}

// ------------------------------------------------ a resuming relay's edges

fn hello(edge: &str, instance: u64, resume_offset: u64) -> frame::Hello {
    frame::Hello {
        flowgraph: "t".into(),
        generation: 0,
        edge: edge.into(),
        item_type: flowmesh_model::ItemType::U64,
        vlen: 1,
        item_size: 8,
        token: "tok".into(),
        resume_offset,
        resume_msg_seq: 0,
        crc: true,
        instance,
        eos_tags: true,
        replica: 0,
    }
}

fn welcome(mem: &Mem, addr: &str, h: &frame::Hello) -> (u64, u64) {
    let mut s = mem.connect(addr, Duration::from_secs(2)).unwrap();
    match flowmesh_runtime::net::env::client_handshake(&mut *s, h).unwrap() {
        Answer::Welcome {
            retained_from,
            instance,
            ..
        } => (instance, retained_from),
        other => panic!("refused: {other:?}"),
    }
}

#[test]
fn a_prepared_edge_continues_the_stream_its_first_consumer_names_and_only_while_deciding() {
    use flowmesh_model::{ItemType, StreamType};
    use flowmesh_runtime::net::env::ServedKind;
    let st = ServedKind::Stream(StreamType {
        item: ItemType::U64,
        vlen: 1,
    });
    let mem = Mem::new();
    let env = NetEnv::new(Arc::new(mem.clone()), "t", "a", "tok");
    env.prepare("e1", st, 0, true);
    env.prepare("e2", st, 0, true);
    env.prepare("e3", st, 0, false);
    env.listen("mem-prepared").unwrap();

    // The consumer of e1 was reading instance 77 and wants item 500 next:
    // WELCOME continues instance 77, and the worker learns 500.
    assert_eq!(
        welcome(&mem, "mem-prepared", &hello("e1", 77, 500)),
        (77, 500)
    );
    assert_eq!(env.resume_point("e1", Duration::from_secs(2)), Some(500));
    // The block built for e1 takes over instance 77 and the parked consumer.
    let (served, instance) = env.serve("e1", st, true, 0);
    assert_eq!(instance, 77);
    // (The acceptor parks the connection just after writing WELCOME.)
    let mut parked = None;
    wait_until("the consumer waits for the block", || {
        parked = served.take();
        parked.is_some()
    });
    let parked = parked.expect("parked");
    assert_eq!(parked.hello.resume_offset, 500);

    // Nobody came for e2 while the worker waited: decided, so a consumer
    // arriving later adopts nothing (it will see a restarted producer).
    assert_eq!(env.resume_point("e2", Duration::from_millis(50)), None);
    let (i2, from2) = welcome(&mem, "mem-prepared", &hello("e2", 77, 900));
    assert_ne!(i2, 77);
    assert_eq!(from2, 0);

    // Without adoption (an edge not fed by the relay's input) the instance
    // is the prepared one, whatever the consumer names.
    let (i3, _) = welcome(&mem, "mem-prepared", &hello("e3", 77, 900));
    assert_ne!(i3, 77);
    assert_eq!(env.serve("e3", st, true, 0).1, i3);
}

// ------------------------------------------------ message producer ending first

#[test]
fn a_message_consumer_finishes_when_eos_arrives_together_with_the_close() {
    // A producer whose queue is acknowledged ends at once, so its last
    // messages, EOS and the end of the connection can reach the consumer in
    // one read. A hand-written producer does exactly that; the consumer must
    // deliver every message and finish, not reconnect forever.
    let p = partition(&spec(&strobe_spec("m", 3, 0.001))).unwrap();
    let rx = p.edges[0].source_block.clone();
    let mem = Mem::new();
    let conns = Arc::new(AtomicUsize::new(0));
    let n = conns.clone();
    mem.listen(
        "mem-eos-close",
        Arc::new(move |mut s: Box<dyn Stream>| {
            n.fetch_add(1, Ordering::SeqCst);
            accept_hello(&mut s);
            let body = flowmesh_model::pmt::cbor::encode(&Pmt::String("m".into()));
            let mut out = welcome_frame(1, 9);
            for seq in 1..=3 {
                out.extend_from_slice(&frame::control(FrameType::Msg, seq, 0, &body, true));
            }
            out.extend_from_slice(&frame::control(FrameType::Eos, 0, 3, &[], false));
            s.write_all(&out).unwrap();
            // Dropping the stream closes it right after EOS.
        }),
    )
    .unwrap();
    let c = consumer_env(&mem, "mem-eos-close");
    let r = segment(&p, "c", &c).wait().expect("the consumer finishes");
    let Some(Pmt::List(msgs)) = r.get("dbg", "messages") else {
        panic!("no messages")
    };
    assert_eq!(msgs, vec![Pmt::String("m".into()); 3]);
    assert_eq!(r.get(&rx, "last_seq"), Some(Pmt::I64(3)));
    assert_eq!(conns.load(Ordering::SeqCst), 1, "no reconnection");
}

// ------------------------------------------------ accounting at any time

#[test]
fn delivered_plus_lost_is_the_next_offset_at_every_moment_across_a_retention_gap() {
    // A paced counter over an edge retaining 64 KiB (8192 items). The first
    // consumer reads 100 000 items and dies; the producer fills its
    // buffer and waits. A fresh consumer then asks for offset 0, long gone:
    // one `retention_exceeded` gap with the exact count, then the rest. All
    // along, sampled between work calls, delivered + lost == expected.
    const N: u64 = 300_000;
    let text = counter_spec(N, 1e6).replace(
        "  connections:",
        "  runtime: {network: {retentionBytes: 65536}}\n  connections:",
    );
    let p = partition(&spec(&text)).unwrap();
    let rx = p
        .edges
        .iter()
        .find(|e| e.id == "tag.out>b")
        .unwrap()
        .source_block
        .clone();
    let mem = Mem::new();
    let env = NetEnv::new(Arc::new(mem.clone()), "t", "a", "tok");
    env.listen("mem-a1").unwrap();
    let producer = segment(&p, "a", &env);

    // None once the graph has ended (its blocks answer no more).
    let snapshot = |r: &Running| -> Option<(u64, u64, u64)> {
        let v = r.handle().get(&rx, "accounting").ok()?;
        let f = |k: &str| v.get(k).and_then(Pmt::as_u64).unwrap();
        assert_eq!(f("restarts"), 0);
        Some((f("expected"), f("delivered"), f("lost")))
    };
    let mut samples = 0;
    let mut check = |r: &Running| {
        let (expected, delivered, lost) = snapshot(r).expect("the first consumer runs");
        assert_eq!(
            delivered + lost,
            expected,
            "delivered {delivered} + lost {lost} != next offset {expected}"
        );
        samples += 1;
        expected
    };

    // The first consumer's connections can be cut as if it crashed (a
    // consumer that stops cleanly tells the producer it is done).
    let kill = Killable::new(&mem);
    let c1 = NetEnv::new(Arc::new(kill.clone()), "t", "a", "tok");
    c1.set_peer("a", "mem-a1");
    let first = segment(&p, "b", &c1);
    let t0 = Instant::now();
    let mut reached = 0;
    while reached < 100_000 {
        reached = check(&first);
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the first consumer is stuck"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    kill.kill();
    first.handle().stop();
    let _ = first.wait();
    // The producer runs on until its buffer (2 x 64 KiB) is full.
    std::thread::sleep(Duration::from_millis(200));

    let second = segment(&p, "b", &consumer_env(&mem, "mem-a1"));
    let mut lost_seen = 0;
    while !second.wait_timeout(Duration::from_millis(1)) {
        let Some((expected, delivered, lost)) = snapshot(&second) else {
            break;
        };
        assert_eq!(delivered + lost, expected, "at {expected}");
        lost_seen = lost_seen.max(lost);
        samples += 1;
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the second consumer is stuck"
        );
    }
    let b = second
        .wait()
        .expect("the second consumer and its checker succeed");
    producer.wait().expect("the producer finishes");

    let (data, tags) = sink_output(&b);
    let v = only_gap(&tags).get("value").unwrap();
    assert_eq!(
        v.get("cause").and_then(Pmt::as_str),
        Some("retention_exceeded"),
        "{v}"
    );
    let count = v.get("count").and_then(Pmt::as_u64).unwrap();
    // The first item delivered is the producer's oldest retained one, and
    // the gap counts exactly the items before it.
    assert_eq!(data[0], count);
    // The producer keeps what is unacknowledged and the last 8192 items
    // sent; the first consumer had received `reached`, and acknowledges at
    // least every 256 KiB (32 768 items), so the oldest item kept is no
    // further back than that.
    assert!(
        count + 8192 + 32_768 >= reached,
        "{count} retained from, {reached} reached"
    );
    assert_eq!(data.len() as u64 + count, N);
    assert!(data.iter().enumerate().all(|(i, &x)| x == count + i as u64));
    assert_eq!(b.get(&rx, "lost").and_then(|v| v.as_u64()), Some(count));
    assert_eq!(
        b.get(&rx, "delivered").and_then(|v| v.as_u64()),
        Some(N - count)
    );
    assert_eq!(lost_seen, count);
    assert!(samples > 50, "sampled {samples} times");
}

// ------------------------------------ a live source overflowing to the end

/// Counter → live throttle (`overflow: drop`) in `a`; in `b` a checker
/// expecting all `n` items and a sink. The edge keeps 64 KiB (R), so the
/// net_sink's buffer holds 16 384 items and a throttle with no consumer
/// drops the rest.
fn end_drop_spec(n: u64, rate: f64) -> String {
    format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: t}}
spec:
  runtime: {{network: {{retentionBytes: 65536}}}}
  blocks:
    src:   {{kind: counter_source, params: {{n: {n}}}, segment: a}}
    thr:   {{kind: throttle, params: {{type: u64, rate: {rate}}}, segment: a}}
    check: {{kind: stream_checker, params: {{expect: {n}}}, segment: b}}
    sink:  {{kind: vector_sink, params: {{type: u64}}, segment: b}}
  connections:
    - [src.out, thr.in]
    - [thr.out, check.in]
    - [thr.out, sink.in]
"#
    )
}

/// Waits until the producer's throttle has taken (passed or dropped) all
/// `n` items: the consumer is away until the end of the stream.
fn wait_for_the_throttle_to_end(producer: &Running, n: u64) {
    wait_until("the throttle takes every item", || {
        producer
            .handle()
            .stats()
            .iter()
            .any(|s| s.name == "thr" && s.items_in() >= n)
    });
}

/// The checker's `delivered + lost + skipped` (items before its first one)
/// is `n`, every loss is an `overflow`, and the consumer's sink got a final
/// `gap` on the end of its stream, starting after the last item delivered.
/// Returns the checker's `skipped`.
fn assert_end_gap_accounted(b: &Report, n: u64) -> u64 {
    let get = |k: &str| b.get("check", k).and_then(|v| v.as_u64()).unwrap();
    let (delivered, lost, skipped) = (get("delivered"), get("lost"), get("skipped"));
    assert_eq!(delivered + lost + skipped, n, "delivered + lost + skipped");
    assert_eq!(
        b.get("check", "causes"),
        Some(Pmt::map([("overflow", Pmt::I64(lost as i64))]))
    );
    let (data, tags) = sink_output(b);
    let gaps: Vec<&Pmt> = tags
        .iter()
        .filter(|t| t.get("key").and_then(Pmt::as_str) == Some("gap"))
        .collect();
    let end = gaps
        .iter()
        .find(|g| g.get("offset").and_then(Pmt::as_u64) == Some(data.len() as u64))
        .unwrap_or_else(|| panic!("no gap on the end of the stream: {gaps:?}"))
        .get("value")
        .unwrap();
    assert_eq!(end.get("cause").and_then(Pmt::as_str), Some("overflow"));
    let first = end.get("first").and_then(Pmt::as_u64).unwrap();
    let count = end.get("count").and_then(Pmt::as_u64).unwrap();
    assert_eq!(
        Some(first),
        data.last().map(|x| x + 1),
        "the loss starts after the last item delivered"
    );
    assert_eq!(first + count, n, "the loss runs to the end of the stream");
    let counted: u64 = gaps
        .iter()
        .filter_map(|g| g.get("value")?.get("count")?.as_u64())
        .sum();
    assert_eq!(counted, lost, "the checker counts every gap");
    skipped
}

#[test]
fn a_live_source_overflowing_to_the_end_sends_its_final_gap_with_eos() {
    const N: u64 = 100_000;
    let p = partition(&spec(&end_drop_spec(N, 1e6))).unwrap();
    let mem = Mem::new();
    let a = NetEnv::new(Arc::new(mem.clone()), "t", "a", "tok");
    a.listen("mem-a1").unwrap();
    let producer = segment(&p, "a", &a);
    // The consumer does not know where `a` is until the producer's throttle
    // has dropped to the end of its stream.
    let c = NetEnv::new(Arc::new(mem.clone()), "t", "a", "tok");
    let consumer = segment(&p, "b", &c);
    wait_for_the_throttle_to_end(&producer, N);
    c.set_peer("a", "mem-a1");
    let b = consumer
        .wait()
        .expect("the consumer and its checker succeed");
    producer.wait().expect("the producer finishes");
    assert_eq!(assert_end_gap_accounted(&b, N), 0);
}

#[test]
fn a_consumer_restarted_after_its_producer_dropped_to_the_end_gets_the_final_gap() {
    const N: u64 = 1_000_000;
    let p = partition(&spec(&end_drop_spec(N, 1e6))).unwrap();
    let edge = p.edges.iter().find(|e| e.id == "thr.out>b").unwrap();
    let rx = edge.source_block.clone();
    let mem = Mem::new();
    let a = NetEnv::new(Arc::new(mem.clone()), "t", "a", "tok");
    a.listen("mem-a1").unwrap();
    let producer = segment(&p, "a", &a);

    // The first consumer reads a while and dies (its connections cut, as
    // for a killed process).
    let kill = Killable::new(&mem);
    let c1 = NetEnv::new(Arc::new(kill.clone()), "t", "a", "tok");
    c1.set_peer("a", "mem-a1");
    let first = segment(&p, "b", &c1);
    wait_until("the first consumer receives 50000 items", || {
        get_u64(&first, &rx, "expected") >= 50_000
    });
    kill.kill();
    let instance = get_u64(&first, &rx, "instance");
    let resume = get_u64(&first, &rx, "expected");
    first.handle().stop();
    let _ = first.wait();
    wait_for_the_throttle_to_end(&producer, N);

    // Restarted where its output stopped, naming the producer instance (as
    // `flowmesh worker --resume --state-dir` does).
    let b_spec = p.segments["b"].clone();
    let mut env = Env::new(consumer_env(&mem, "mem-a1"));
    env.setup.insert(
        rx.clone(),
        flowmesh_runtime::blocks::BlockSetup {
            start: resume,
            producer: Some(flowmesh_runtime::blocks::ProducerInstance { instance, base: 0 }),
            ..Default::default()
        },
    );
    let second = start(Graph::from_spec_in(&b_spec, env).unwrap()).unwrap();
    let b = second
        .wait()
        .expect("the second consumer and its checker succeed");
    producer.wait().expect("the producer finishes");
    // Counter values before the first item of the restarted consumer: the
    // first consumer's items and what was dropped before them (at least the
    // edge offset it resumed at).
    let skipped = assert_end_gap_accounted(&b, N);
    assert!(skipped >= resume, "skipped {skipped} < resume {resume}");
}

#[test]
fn a_consumer_coming_after_the_producer_gave_up_waiting_is_told_what_is_lost() {
    const N: u64 = 100_000;
    // The producer waits 1 s (`lingerSeconds`) for an absent consumer once
    // its stream has ended.
    let text = end_drop_spec(N, 1e6).replace(
        "network: {retentionBytes: 65536}",
        "network: {retentionBytes: 65536, lingerSeconds: 1}",
    );
    let p = partition(&spec(&text)).unwrap();
    let mem = Mem::new();
    let a = NetEnv::new(Arc::new(mem.clone()), "t", "a", "tok");
    a.listen("mem-a1").unwrap();
    let producer = segment(&p, "a", &a);
    producer
        .wait()
        .expect("the producer ends once it stops waiting for its consumer");

    // The producer's process still runs (its acceptor answers): a consumer
    // that comes now is refused, and its block fails saying what is lost.
    let consumer = segment(&p, "b", &consumer_env(&mem, "mem-a1"));
    let Err(err) = consumer.wait() else {
        panic!("the consumer is refused")
    };
    let err = err.to_string();
    // The edge's net_sink held what its buffer (2R, or more between
    // threads) took; the throttle dropped the rest and said so with a final
    // `gap` the producer held too.
    let held: u64 = err
        .split("the producer's stream ended at item ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no end offset in: {err}"));
    assert!(held > 0 && held < N, "{err}");
    assert!(
        err.contains("refused the connection")
            && err.contains("after waiting 1 s")
            && err.contains(&format!("items [0, {held}) are lost ({held} items)"))
            && err.contains("its end-of-stream tags are lost too: gap ")
            && err.contains("overflow")
            && err.contains(&format!("{}", N - held)),
        "{err}"
    );
}
