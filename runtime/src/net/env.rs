//! A process's network environment: its transport, identity (flowgraph,
//! segment, token), where the other segments listen, and the edges it
//! serves, each with its generation. The acceptor checks every consumer's
//! HELLO here, before the running graph sees the connection, so a wrong
//! peer is refused with a clear reason on both sides and nothing running is
//! disturbed. Generations are per edge
//! ([`flowmesh_model::partition::edge_generation`]): a consumer built from
//! an edited spec joins as long as its edge's contract did not change.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use flowmesh_model::StreamType;

use super::frame::{self, Answer, FrameError, FrameType, Header, Hello, Reason, HEADER_LEN};
use super::stats::{EdgeStats, Role};
use super::transport::{Conn, Mem, Stream, Transport};
use crate::signal::Signal;

/// How long a handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A consumer connection accepted for an edge, waiting for its sink block.
pub struct Incoming {
    pub conn: Box<dyn Conn>,
    /// The consumer's HELLO, with `crc` replaced by what WELCOME granted.
    pub hello: Hello,
    /// The producer instance WELCOME announced.
    pub instance: u64,
}

/// What a served edge carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedKind {
    Stream(StreamType),
    Message,
}

/// The acceptor's view of one edge this process produces.
pub struct Served {
    pub kind: ServedKind,
    pub slot: Mutex<Option<Incoming>>,
    pub signal: Mutex<Option<Arc<Signal>>>,
    /// Oldest item offset (or message sequence) still held, for WELCOME.
    pub retained_from: AtomicU64,
    /// The producing block's instance id, for WELCOME.
    pub instance: AtomicU64,
    /// Whether the producing block sends CRCs when asked (WELCOME grants
    /// `crc` only if the consumer asked and this is set).
    pub crc: AtomicBool,
    /// The edge's generation: a consumer whose HELLO names another is
    /// refused.
    pub generation: AtomicU64,
    /// Registered by [`NetEnv::prepare`] before the producing block exists
    /// (a worker resuming a relay): the next [`NetEnv::serve`] keeps this
    /// entry's instance and parked connection instead of starting afresh.
    pub prepared: AtomicBool,
    /// Whether the first consumer's HELLO decides the instance of a
    /// prepared edge. See [`NetEnv::prepare`].
    pub adoption: Mutex<Adoption>,
    /// Set by a stream producer that ended without its consumer having
    /// acknowledged everything (it waited its linger time): consumers that
    /// come later are refused with `finished` and told what is lost.
    pub finished: Mutex<Option<Finished>>,
    /// Whether the edge takes many connections at once (the producer of an
    /// edge into a scalable segment, a gathering consumer): accepted
    /// connections queue in `many` instead of replacing each other in `slot`.
    pub multi: AtomicBool,
    /// Accepted connections of a `multi` edge, oldest first.
    pub many: Mutex<Vec<Incoming>>,
}

/// What a producer that gave up on its consumer tells consumers that come
/// later (REFUSE `finished`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The end of the stream: no items at or after this offset.
    pub end: u64,
    /// Everything before this was acknowledged.
    pub acked: u64,
    /// How long the producer waited for a consumer after its input ended.
    pub linger: Duration,
    /// The end-of-stream tags it held (`key value`), e.g. a final `gap`.
    pub end_tags: Vec<String>,
}

/// Whether a [`NetEnv::prepare`]d edge continues its first consumer's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// Decided (or never asked): consumers get the edge's own instance.
    Off,
    /// Waiting for the first consumer: the instance it names (if any)
    /// becomes this edge's, and its resume offset the worker's answer.
    Open,
    /// The first consumer came and resumes at this offset.
    Taken(u64),
}

impl Served {
    /// Takes a newly accepted connection, if any.
    pub fn take(&self) -> Option<Incoming> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
    /// Takes every connection accepted for a `multi` edge, oldest first.
    pub fn take_all(&self) -> Vec<Incoming> {
        std::mem::take(&mut *self.many.lock().unwrap_or_else(|e| e.into_inner()))
    }
    fn adoption(&self) -> std::sync::MutexGuard<'_, Adoption> {
        self.adoption.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Sets the signal to wake when a consumer connects.
    pub fn set_signal(&self, s: &Arc<Signal>) {
        *self.signal.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
    }
}

/// A process's network environment (one per worker).
pub struct NetEnv {
    pub transport: Arc<dyn Transport>,
    pub flowgraph: String,
    /// The segment this process runs (named in refusals).
    pub segment: String,
    pub token: String,
    peers: Mutex<BTreeMap<String, String>>,
    peers_cv: Condvar,
    served: Mutex<HashMap<String, Arc<Served>>>,
    edge_stats: Mutex<BTreeMap<(String, Role), Arc<EdgeStats>>>,
    /// A scalable segment's replica: which input messages its output
    /// carries on, for end-to-end acknowledgement ([`super::scale`]).
    pub replica: super::scale::ReplicaTrack,
}

impl NetEnv {
    pub fn new(
        transport: Arc<dyn Transport>,
        flowgraph: &str,
        segment: &str,
        token: &str,
    ) -> Arc<NetEnv> {
        Arc::new(NetEnv {
            transport,
            flowgraph: flowgraph.to_string(),
            segment: segment.to_string(),
            token: token.to_string(),
            peers: Mutex::new(BTreeMap::new()),
            peers_cv: Condvar::new(),
            served: Mutex::new(HashMap::new()),
            edge_stats: Mutex::new(BTreeMap::new()),
            replica: Default::default(),
        })
    }

    /// The counters of `edge` at this process's `role` end (created at first use).
    pub fn edge_stats(&self, edge: &str, role: Role) -> Arc<EdgeStats> {
        self.edge_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((edge.to_string(), role))
            .or_default()
            .clone()
    }

    /// The counters of every edge end registered here, by edge and role.
    pub fn all_edge_stats(&self) -> Vec<(String, Role, Arc<EdgeStats>)> {
        self.edge_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((e, r), s)| (e.clone(), *r, s.clone()))
            .collect()
    }

    /// An in-process environment (tests, and blocks built outside a worker).
    pub fn in_process() -> Arc<NetEnv> {
        NetEnv::new(Arc::new(Mem::new()), "local", "local", "")
    }

    /// Records where segment `segment` listens.
    pub fn set_peer(&self, segment: &str, addr: &str) {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(segment.to_string(), addr.to_string());
        self.peers_cv.notify_all();
    }

    /// Where `segment` listens, waiting up to `timeout` for it to be known.
    pub fn peer(&self, segment: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut g = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(a) = g.get(segment) {
                return Some(a.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            g = self
                .peers_cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn entry(
        &self,
        edge: &str,
        kind: ServedKind,
        crc: bool,
        generation: u64,
        instance: u64,
    ) -> Arc<Served> {
        let served = self
            .served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(edge.to_string())
            .or_insert_with(|| {
                Arc::new(Served {
                    kind,
                    slot: Mutex::new(None),
                    signal: Mutex::new(None),
                    retained_from: AtomicU64::new(0),
                    instance: AtomicU64::new(instance),
                    crc: AtomicBool::new(crc),
                    generation: AtomicU64::new(generation),
                    prepared: AtomicBool::new(false),
                    adoption: Mutex::new(Adoption::Off),
                    finished: Mutex::new(None),
                    multi: AtomicBool::new(false),
                    many: Mutex::new(vec![]),
                })
            })
            .clone();
        served.generation.store(generation, Ordering::Release);
        served
    }

    /// Announces an edge before its producing block is built, so that its
    /// consumer is accepted (and parked) while the worker decides where to
    /// resume: a restarted relay segment (`net_source` → … → `net_sink`)
    /// asks its downstream consumers for their positions before it asks
    /// upstream for its input. With `adopt`, a consumer that names the
    /// producer instance it was reading gets that instance back in WELCOME:
    /// the restarted producer continues the stream in the same numbering
    /// (its block must then start numbering where the consumer resumes; see
    /// [`NetEnv::resume_point`]). `retained_from` in that WELCOME is the
    /// consumer's own resume offset. `generation` is the edge's (consumers
    /// of another are refused).
    pub fn prepare(&self, edge: &str, kind: ServedKind, generation: u64, adopt: bool) {
        let served = self.entry(edge, kind, true, generation, new_instance());
        served.prepared.store(true, Ordering::Release);
        *served.adoption() = if adopt { Adoption::Open } else { Adoption::Off };
    }

    /// The resume offset of the first consumer of a [`prepare`](Self::prepare)d
    /// edge with adoption, waiting up to `timeout` for one to connect; after
    /// it returns, no later consumer adopts anything.
    pub fn resume_point(&self, edge: &str, timeout: Duration) -> Option<u64> {
        let served = self
            .served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(edge)
            .cloned()?;
        let deadline = Instant::now() + timeout;
        loop {
            let mut a = served.adoption();
            match *a {
                Adoption::Taken(r) => return Some(r),
                Adoption::Off => return None,
                Adoption::Open if Instant::now() >= deadline => {
                    // Decided: a consumer coming later adopts nothing.
                    *a = Adoption::Off;
                    return None;
                }
                Adoption::Open => {}
            }
            drop(a);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Registers the block producing an edge at `generation`: chooses its
    /// instance id (returned) and whether it grants CRC. A block built again for the
    /// same edge is a new instance: consumers see a restart — unless the
    /// edge was [`prepare`](Self::prepare)d, whose instance (adopted or
    /// not) and parked consumer this block takes over.
    pub fn serve(
        &self,
        edge: &str,
        kind: ServedKind,
        crc: bool,
        generation: u64,
    ) -> (Arc<Served>, u64) {
        let served = self.entry(edge, kind, crc, generation, new_instance());
        served.crc.store(crc, Ordering::Release);
        if served.prepared.swap(false, Ordering::AcqRel) {
            // From now on a late first consumer adopts nothing: its stream
            // does not continue in this block's numbering.
            let mut a = served.adoption();
            if *a == Adoption::Open {
                *a = Adoption::Off;
            }
            drop(a);
            let instance = served.instance.load(Ordering::Acquire);
            return (served, instance);
        }
        let instance = new_instance();
        *served.finished.lock().unwrap_or_else(|e| e.into_inner()) = None;
        served.retained_from.store(0, Ordering::Release);
        served.instance.store(instance, Ordering::Release);
        // A connection accepted for the previous block is not ours.
        drop(served.take());
        (served, instance)
    }

    /// Registers an edge that takes any number of connections at once: the
    /// producer of an edge into a scalable segment (replicas dial it) or a
    /// gathering consumer (replicas push to it). Returns the entry and its
    /// instance id; accepted connections wait in [`Served::take_all`].
    pub fn serve_many(&self, edge: &str, generation: u64) -> (Arc<Served>, u64) {
        let (served, instance) = self.serve(edge, ServedKind::Message, true, generation);
        served.multi.store(true, Ordering::Release);
        drop(served.take_all());
        (served, instance)
    }

    /// Starts accepting consumers on `addr`; returns the bound address.
    pub fn listen(self: &Arc<Self>, addr: &str) -> io::Result<String> {
        let env = Arc::downgrade(self);
        self.transport.listen(
            addr,
            Arc::new(move |s| {
                if let Some(env) = env.upgrade() {
                    env.accept(s);
                }
            }),
        )
    }

    fn accept(&self, mut s: Box<dyn Stream>) {
        let peer = s.peer_addr();
        match self.handshake(&mut s) {
            Ok((hello, served, crc, instance)) => {
                let conn = match s.into_conn() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(
                            "edge {}: cannot use connection from {peer}: {e}",
                            hello.edge
                        );
                        return;
                    }
                };
                let at = match served.kind {
                    ServedKind::Stream(_) => format!("resuming at item {}", hello.resume_offset),
                    ServedKind::Message => {
                        format!("resuming after message {}", hello.resume_msg_seq)
                    }
                };
                tracing::info!(
                    "edge {}: consumer {peer} connected, {at} (crc {})",
                    hello.edge,
                    if crc { "on" } else { "off" }
                );
                let inc = Incoming {
                    conn,
                    hello: Hello { crc, ..hello },
                    instance,
                };
                if served.multi.load(Ordering::Acquire) {
                    served
                        .many
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(inc);
                } else {
                    *served.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(inc);
                }
                if let Some(sig) = served
                    .signal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                {
                    sig.notify();
                }
            }
            Err(Refusal { reason, message }) => {
                tracing::warn!("refused consumer {peer}: {message}");
                let _ = s.write_all(&Answer::Refuse { reason, message }.encode());
            }
        }
    }

    fn handshake(
        &self,
        s: &mut Box<dyn Stream>,
    ) -> Result<(Hello, Arc<Served>, bool, u64), Refusal> {
        let refuse = |reason, message: String| Refusal { reason, message };
        s.set_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(|e| refuse(Reason::Protocol, e.to_string()))?;
        let mut p = [0u8; 8];
        s.read_exact(&mut p)
            .map_err(|e| refuse(Reason::Protocol, format!("no preamble: {e}")))?;
        s.write_all(&frame::preamble())
            .map_err(|e| refuse(Reason::Protocol, e.to_string()))?;
        if let Err(e) = frame::check_preamble(&p) {
            return Err(match e {
                FrameError::Version { ours, theirs } => refuse(
                    Reason::BadVersion,
                    format!(
                        "the consumer speaks FlowMesh protocol v{theirs}, this build speaks v{ours}: \
                         run the same FlowMesh version on both segments"
                    ),
                ),
                e => refuse(Reason::Protocol, e.to_string()),
            });
        }
        let (h, body) = read_frame(&mut **s).map_err(|e| refuse(Reason::Protocol, e))?;
        if h.kind != FrameType::Hello {
            return Err(refuse(
                Reason::Protocol,
                format!("expected HELLO, got {:?}", h.kind),
            ));
        }
        let hello = Hello::decode(&body).map_err(|e| refuse(Reason::Protocol, e.to_string()))?;
        if hello.token != self.token {
            return Err(refuse(
                Reason::BadToken,
                format!("edge {}: wrong authentication token", hello.edge),
            ));
        }
        if hello.flowgraph != self.flowgraph {
            return Err(refuse(
                Reason::WrongFlowgraph,
                format!(
                    "edge {}: this producer (segment {}) runs flowgraph {}, the consumer asked for \
                     flowgraph {}: point the consumer's peer address at a segment of its own FlowGraph",
                    hello.edge, self.segment, self.flowgraph, hello.flowgraph
                ),
            ));
        }
        let served = self
            .served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hello.edge)
            .cloned()
            .ok_or_else(|| {
                refuse(
                    Reason::UnknownEdge,
                    format!("edge {} is not produced here", hello.edge),
                )
            })?;
        let generation = served.generation.load(Ordering::Acquire);
        if hello.generation != generation {
            return Err(refuse(
                Reason::WrongFlowgraph,
                self.generation_mismatch(&hello, served.kind, generation),
            ));
        }
        match served.kind {
            ServedKind::Stream(st) => {
                if hello.item_type != st.item
                    || hello.vlen != st.vlen as u64
                    || hello.item_size != st.item_size() as u64
                {
                    return Err(refuse(
                        Reason::TypeMismatch,
                        format!(
                            "edge {}: the producer sends {st} ({} bytes per item), the consumer expects {}x{} ({} bytes)",
                            hello.edge,
                            st.item_size(),
                            hello.item_type,
                            hello.vlen,
                            hello.item_size
                        ),
                    ));
                }
            }
            ServedKind::Message => {}
        }
        let finished = served
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(f) = finished {
            let r = hello.resume_offset;
            let lost = if hello.instance != 0
                && hello.instance != served.instance.load(Ordering::Acquire)
            {
                format!(
                    "it is another producer instance than the consumer read, so what the consumer \
                     missed of that one is unknown, and items [0, {}) of this one are lost",
                    f.end
                )
            } else if r < f.end {
                format!("items [{r}, {}) are lost ({} items)", f.end, f.end - r)
            } else {
                "no item is missing".into()
            };
            let tags = if f.end_tags.is_empty() {
                String::new()
            } else {
                format!(
                    "; its end-of-stream tags are lost too: {}",
                    f.end_tags.join(", ")
                )
            };
            return Err(refuse(
                Reason::Finished,
                format!(
                    "edge {}: the producer's stream ended at item {} and it stopped holding \
                     the items its consumer had not acknowledged (from {}) after waiting {} s \
                     for it (`lingerSeconds`): {lost}{tags}",
                    hello.edge,
                    f.end,
                    f.acked,
                    f.linger.as_secs()
                ),
            ));
        }
        let crc = hello.crc && served.crc.load(Ordering::Acquire);
        let mut retained_from = served.retained_from.load(Ordering::Acquire);
        {
            // A resuming worker still deciding where to start: the first
            // consumer's position decides, and the stream it names (if any)
            // continues in this producer.
            let mut a = served.adoption();
            if *a == Adoption::Open {
                *a = Adoption::Taken(hello.resume_offset);
                if hello.instance != 0 {
                    served.instance.store(hello.instance, Ordering::Release);
                }
                retained_from = hello.resume_offset;
            }
        }
        let instance = served.instance.load(Ordering::Acquire);
        let welcome = Answer::Welcome {
            crc,
            retained_from,
            instance,
        };
        s.write_all(&welcome.encode())
            .map_err(|e| refuse(Reason::Protocol, e.to_string()))?;
        Ok((hello, served, crc, instance))
    }
}

impl NetEnv {
    /// The refusal of a consumer built for another generation of an edge:
    /// both generations, what each side carries, and which segment to
    /// restart.
    fn generation_mismatch(&self, hello: &Hello, kind: ServedKind, ours: u64) -> String {
        let consumer = hello
            .edge
            .rsplit_once('>')
            .map_or("?", |(_, segment)| segment);
        let carries = match kind {
            ServedKind::Stream(st) => {
                let theirs = format!("{}x{}", hello.item_type, hello.vlen);
                let ours = format!("{}x{}", st.item, st.vlen);
                if theirs == ours {
                    String::new()
                } else {
                    format!(" (the producer sends {ours}, the consumer expects {theirs})")
                }
            }
            ServedKind::Message => String::new(),
        };
        format!(
            "edge {}: this producer (segment {}) serves edge generation {ours}, the consumer \
             (segment {consumer}) was built for generation {}{carries}: the two segments were \
             started from FlowGraph versions that disagree on this edge's contract (item type, \
             vector length, crc; docs/protocol.md); restart the segment that runs the older \
             version with the current spec: `{}` if the consumer has it, else `{consumer}`",
            hello.edge, self.segment, hello.generation, self.segment
        )
    }
}

struct Refusal {
    reason: Reason,
    message: String,
}

/// Reads one whole frame in blocking mode (handshake only).
pub fn read_frame(s: &mut dyn Stream) -> Result<(Header, Vec<u8>), String> {
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h)
        .map_err(|e| format!("reading a frame header: {e}"))?;
    let h = Header::decode(&h).map_err(|e| e.to_string())?;
    if h.len > 1 << 20 {
        return Err(format!("handshake frame of {} bytes is too large", h.len));
    }
    let mut body = vec![0u8; h.len as usize];
    s.read_exact(&mut body)
        .map_err(|e| format!("reading a frame body: {e}"))?;
    Ok((h, body))
}

/// Why the consumer's side of a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The producer's preamble names another protocol version: retrying
    /// cannot help.
    Version { ours: u16, theirs: u16 },
    /// Anything else (timeouts, a foreign peer, a malformed answer).
    Other(String),
}

impl From<String> for HandshakeError {
    fn from(s: String) -> Self {
        HandshakeError::Other(s)
    }
}

/// The consumer side of the handshake: sends HELLO, returns the answer.
pub fn client_handshake(s: &mut dyn Stream, hello: &Hello) -> Result<Answer, HandshakeError> {
    s.set_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(&frame::preamble()).map_err(|e| e.to_string())?;
    let mut p = [0u8; 8];
    s.read_exact(&mut p)
        .map_err(|e| format!("the producer sent no preamble: {e}"))?;
    match frame::check_preamble(&p) {
        Ok(_) => {}
        Err(FrameError::Version { ours, theirs }) => {
            return Err(HandshakeError::Version { ours, theirs })
        }
        Err(e) => return Err(HandshakeError::Other(e.to_string())),
    }
    let body = hello.encode();
    s.write_all(&frame::control(FrameType::Hello, 0, 0, &body, false))
        .map_err(|e| e.to_string())?;
    let (h, body) = read_frame(s)?;
    Answer::decode(&h, &body).map_err(|e| HandshakeError::Other(e.to_string()))
}

/// A random instance id in `1..2^63` (CBOR bodies carry non-negative
/// 64-bit signed integers). std's `RandomState` is seeded from the OS
/// random source; time, process id and a counter make every call differ.
pub fn new_instance() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    (h.finish() >> 1).max(1)
}
