//! `net_source`: the consuming end of a stream edge.
//!
//! Ports: output `out` (`type` x `vlen`). Parameters: `edge`, `from` (the
//! producing segment), `samp_rate` (informational).
//!
//! A connector thread finds the producer (through the [`NetEnv`] peer table),
//! connects with backoff and performs the handshake, naming the next offset
//! this block wants; the block itself only does non-blocking reads, placing
//! DATA payloads straight into its output buffer and publishing a frame only
//! once it is whole and its CRC32C matches. A broken or corrupt connection is
//! dropped and resumed from the next offset. Any discontinuity (GAP frame,
//! an unexpected offset, or a producer that restarted without its state)
//! becomes exactly one `gap` tag {first, count, cause} on the next delivered
//! item and is added to the `lost` counter.
//!
//! Values for `get`: `expected`, `delivered`, `lost`, `restarts` (and all
//! four as one snapshot, `accounting`), `instance`, `peer`, `connections`,
//! and `spins` (mid-frame polls that found data or not, up to 20 µs).
//!
//! The block remembers the producer instance (WELCOME) it last talked to
//! and names it in HELLO. When a WELCOME names another instance, the
//! producer restarted: it numbers its items from its own start and sends
//! everything it still holds; the block emits a `restart` gap and continues
//! its output with the new producer's items (its output offsets, and the
//! tags on them, stay monotonic).

use std::io::{ErrorKind, IoSlice};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use flowmesh_model::{Pmt, StreamType};

use super::env::{client_handshake, HandshakeError, NetEnv};
use super::frame::{
    self, Answer, FrameType, GapCause, Header, Hello, Reason, CRC_LEN, FLAG_TAGS, HEADER_LEN,
};
use super::sink::{HEARTBEAT, PEER_TIMEOUT};
use super::stats::{EdgeStats, Role};
use super::transport::Conn;
use crate::block::{Block, BlockError, Result, Work};
use crate::io::WorkIo;
use crate::signal::Signal;
use crate::tag::{keys, Tag};

/// How long a producer may answer "edge not produced here" before the
/// consumer gives up (it may still be building its graph at first).
pub const UNKNOWN_EDGE_GRACE: Duration = Duration::from_secs(10);
/// Acknowledge at least this often (bytes delivered) …
const ACK_BYTES: u64 = 256 * 1024;
/// … or this often (time).
const ACK_EVERY: Duration = Duration::from_millis(2);

/// An established connection and what its WELCOME said.
pub(crate) struct Welcomed {
    pub(crate) conn: Box<dyn Conn>,
    pub(crate) crc: bool,
    pub(crate) retained_from: u64,
    pub(crate) instance: u64,
}

#[derive(Default)]
pub(crate) struct ConnState {
    pub(crate) want: bool,
    pub(crate) resume: u64,
    pub(crate) resume_msg: u64,
    /// The producer instance the block last talked to (0: none), for HELLO.
    pub(crate) instance: u64,
    pub(crate) ready: Option<Welcomed>,
    pub(crate) error: Option<String>,
    pub(crate) stop: bool,
    pub(crate) signal: Option<Arc<Signal>>,
    /// Wait this long before connecting (set after connections that ended
    /// without delivering anything, so a persistent fault does not spin).
    pub(crate) delay: Duration,
    attempts: u64,
}

/// State shared between a consuming block and its connector thread.
pub(crate) struct Connector {
    pub(crate) state: Mutex<ConnState>,
    pub(crate) cv: Condvar,
}

impl Connector {
    pub(crate) fn new() -> Arc<Connector> {
        Arc::new(Connector {
            state: Mutex::new(ConnState::default()),
            cv: Condvar::new(),
        })
    }

    /// Tells the connecting thread to give up and return.
    pub(crate) fn stop(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        self.cv.notify_all();
    }
}

/// A frame being received.
enum Rx {
    Header,
    Data {
        h: Header,
        /// The tags section (u32 length, then CBOR) as received so far.
        tags: Vec<u8>,
        /// Payload bytes already in the output buffer.
        have: usize,
    },
    Control {
        h: Header,
        body: Vec<u8>,
    },
}

/// Size of the read-ahead stage. Headers, tag sections and control bodies
/// are read through it, so a tagged frame's header, tags and the first
/// bytes of its payload come in one `recv`; payload bytes beyond what the
/// stage holds are read straight into the output buffer. At most this much
/// of a payload is copied per frame.
const STAGE: usize = 4096;

/// Mid-frame, on a fast link the rest of a frame is microseconds away:
/// before sleeping on the socket, the block polls it for up to this long.
/// Sleeping costs a wake-up through the reactor, and on loopback the
/// producer's thread pays for waking this one; polling instead measured
/// 12–15 % more throughput on a 2-core machine (docs/benchmarks.md).
const SPIN: Duration = Duration::from_micros(20);
/// After a poll that found nothing (a slow link), mid-frame waits sleep at
/// once for this long, so vain polling takes at most 2 % of a core.
const SPIN_QUIET: Duration = Duration::from_millis(1);

/// The `net_source` block.
pub struct NetSource {
    env: Arc<NetEnv>,
    edge: String,
    /// The edge's generation, sent in HELLO.
    generation: u64,
    from: String,
    st: StreamType,
    shared: Arc<Connector>,
    thread: Option<std::thread::JoinHandle<()>>,
    conn: Option<Box<dyn Conn>>,
    /// The last receive stopped because the output was full.
    waiting_for_room: bool,
    /// Until then, mid-frame waits sleep without polling ([`SPIN_QUIET`]).
    spin_quiet_until: Option<Instant>,
    /// Polls that found data, and polls that ran out ([`SPIN`]).
    spins: (u64, u64),
    /// The key of the last tag received, shared by the next ones.
    last_key: Option<Arc<str>>,
    crc: bool,
    /// Next item offset wanted, in the current producer instance's numbering.
    expected: u64,
    lost: u64,
    /// The start offset plus every item output (the `delivered` counter).
    delivered: u64,
    /// The producer instance of the last WELCOME (0: none yet).
    instance: u64,
    restarts: u64,
    gap: Option<Pmt>,
    /// Read-ahead bytes `stage[st_lo..st_hi]` not yet parsed.
    stage: Box<[u8]>,
    st_lo: usize,
    st_hi: usize,
    rx: Rx,
    /// Reused for the next frame's tags section.
    tag_bytes: Vec<u8>,
    /// Tags of the frame being published, kept aside until all decoded.
    tag_scratch: Vec<(u64, Arc<str>, Pmt)>,
    acked: u64,
    last_ack: Instant,
    control: Vec<u8>,
    eos: Option<u64>,
    /// The end-of-stream tags that came with EOS (a final `gap`: items lost
    /// after the last one), put on this block's own end when it ends.
    eos_tags: Vec<(Arc<str>, Pmt)>,
    last_rx: Instant,
    last_tx: Instant,
    peer: String,
    reconnects: u64,
    /// Offset when the current connection started, and the backoff for
    /// connections that deliver nothing.
    connected_at: u64,
    fruitless: Duration,
    /// Where to record the producer instance and how its numbering maps
    /// onto this block's output ([`SourceState`]), and what was recorded.
    state_path: Option<std::path::PathBuf>,
    saved: Option<SourceState>,
    /// Counters for the worker's metrics ([`EdgeStats`]).
    stats: Arc<EdgeStats>,
}

/// What a `net_source` records (its `state` file) so that a restart with
/// `--resume` names the producer instance its durable output came from:
/// output position = offset in that instance's numbering + `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceState {
    pub instance: u64,
    pub base: i64,
}

impl SourceState {
    /// Reads a state file; `None` if it is missing or unreadable.
    pub fn load(path: &std::path::Path) -> Option<SourceState> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        Some(SourceState {
            instance: v.get("instance")?.as_u64()?,
            base: v.get("base")?.as_i64()?,
        })
    }

    fn to_json(self) -> Vec<u8> {
        serde_json::json!({"instance": self.instance, "base": self.base})
            .to_string()
            .into_bytes()
    }
}

impl NetSource {
    pub fn new(env: Arc<NetEnv>, edge: &str, from: &str, st: StreamType) -> Self {
        let stats = env.edge_stats(edge, Role::Source);
        EdgeStats::set(&stats.item_size, st.item_size() as u64);
        NetSource {
            stats,
            env,
            edge: edge.to_string(),
            generation: 0,
            from: from.to_string(),
            st,
            shared: Connector::new(),
            thread: None,
            conn: None,
            waiting_for_room: false,
            spin_quiet_until: None,
            spins: (0, 0),
            last_key: None,
            crc: true,
            expected: 0,
            lost: 0,
            delivered: 0,
            instance: 0,
            restarts: 0,
            gap: None,
            stage: vec![0; STAGE].into_boxed_slice(),
            st_lo: 0,
            st_hi: 0,
            rx: Rx::Header,
            tag_bytes: vec![],
            tag_scratch: vec![],
            acked: 0,
            last_ack: Instant::now(),
            control: vec![],
            eos: None,
            eos_tags: vec![],
            last_rx: Instant::now(),
            last_tx: Instant::now(),
            peer: String::new(),
            reconnects: 0,
            connected_at: 0,
            fruitless: Duration::ZERO,
            state_path: None,
            saved: None,
        }
    }

    /// Asks for the edge at `generation` (its contract's hash,
    /// [`flowmesh_model::partition::edge_generation`]; 0 by default).
    pub fn generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        EdgeStats::set(&self.stats.generation, generation);
        self
    }

    /// Records the producer instance and the numbering in `path` on every
    /// change ([`SourceState`]).
    pub fn recording_state(mut self, path: std::path::PathBuf) -> Self {
        self.state_path = Some(path);
        self
    }

    /// Continues a stream read before a restart: `instance` is the producer
    /// it came from (named in HELLO), `base` maps that instance's offsets
    /// (the block's `start`) onto output positions.
    pub fn continuing(mut self, instance: u64, base: i64) -> Self {
        self.instance = instance;
        self.delivered = (self.expected as i64 + base).max(0) as u64;
        self.saved = Some(SourceState { instance, base });
        self
    }

    /// Writes the state file if the instance or the numbering changed
    /// ([`replace_file`](crate::blocks::file::replace_file): never torn).
    fn save_state(&mut self) {
        let Some(path) = &self.state_path else {
            return;
        };
        let now = SourceState {
            instance: self.instance,
            base: self.delivered as i64 - self.expected as i64,
        };
        if self.saved == Some(now) {
            return;
        }
        match crate::blocks::file::replace_file(path, &now.to_json()) {
            Ok(()) => self.saved = Some(now),
            Err(e) => tracing::warn!(
                "edge {}: cannot record its state in {}: {e}",
                self.edge,
                path.display()
            ),
        }
    }

    /// Starts resuming from `offset` instead of 0 (segment restarts).
    pub fn resume_from(mut self, offset: u64) -> Self {
        self.expected = offset;
        self.acked = offset;
        self.delivered = offset;
        self
    }

    fn spawn_connector(&mut self, signal: Arc<Signal>) -> Result<()> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .signal = Some(signal);
        let shared = self.shared.clone();
        let env = self.env.clone();
        let hello = Hello {
            flowgraph: env.flowgraph.clone(),
            generation: self.generation,
            edge: self.edge.clone(),
            item_type: self.st.item,
            vlen: self.st.vlen as u64,
            item_size: self.st.item_size() as u64,
            token: env.token.clone(),
            resume_offset: 0,
            resume_msg_seq: 0,
            crc: self.crc,
            instance: 0,
            eos_tags: true,
            replica: 0,
        };
        let from = self.from.clone();
        self.thread = Some(
            std::thread::Builder::new()
                .name("flowmesh-connect".into())
                .spawn(move || connector(shared, env, from, hello))?,
        );
        Ok(())
    }

    fn drop_conn(&mut self, why: &str) {
        if self.conn.take().is_some() {
            tracing::warn!(
                "edge {}: connection to {} lost ({why}); resuming at {}",
                self.edge,
                self.peer,
                self.expected
            );
        }
        self.rx = Rx::Header;
        (self.st_lo, self.st_hi) = (0, 0);
        self.control.clear();
    }

    fn queue_ack(&mut self) {
        self.control.extend_from_slice(&frame::control(
            FrameType::Ack,
            self.expected,
            0,
            &[],
            false,
        ));
        self.acked = self.expected;
        self.last_ack = Instant::now();
    }

    fn flush_control(&mut self) {
        while !self.control.is_empty() {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            match conn.write_vectored(&[IoSlice::new(&self.control)]) {
                Ok(n) => {
                    self.control.drain(..n);
                    self.last_tx = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => return self.drop_conn(&e.to_string()),
            }
        }
    }

    fn note_gap(&mut self, first: u64, count: u64, cause: GapCause) {
        if count == 0 {
            return;
        }
        tracing::warn!(
            "edge {}: {count} items lost from offset {first} ({})",
            self.edge,
            cause.name()
        );
        self.expected = first + count;
        self.pend_gap(first, count, cause);
    }

    /// Adds a discontinuity to the `gap` tag for the next delivered item:
    /// one tag per discontinuity, and consecutive ones before the next item
    /// merge (first `first`, summed `count`; the cause is the first one's,
    /// except that a `restart` always shows).
    fn pend_gap(&mut self, first: u64, count: u64, cause: GapCause) {
        self.lost += count;
        EdgeStats::add(&self.stats.gaps, 1);
        self.stats.add_lost(cause, count);
        self.gap = Some(match self.gap.take() {
            Some(Pmt::Map(mut m)) => {
                let c = m.get("count").and_then(Pmt::as_u64).unwrap_or(0) + count;
                m.insert("count".into(), Pmt::I64(c as i64));
                if cause == GapCause::Restart {
                    m.insert("cause".into(), Pmt::String(cause.name().into()));
                }
                Pmt::Map(m)
            }
            _ => Pmt::map([
                ("first", Pmt::I64(first as i64)),
                ("count", Pmt::I64(count as i64)),
                ("cause", Pmt::String(cause.name().into())),
            ]),
        });
    }

    /// A WELCOME from another producer instance than the last one: the
    /// producer restarted without its state and sends from its oldest item,
    /// `retained_from`, in its own numbering. The tag's `first` is the next
    /// offset wanted from the old instance (in its numbering), its `count`
    /// the items of the new instance that will never arrive (those before
    /// `retained_from`; 0 for a fresh producer). How many items the old
    /// instance had beyond `first` is unknown and not counted.
    fn note_restart(&mut self, instance: u64, retained_from: u64) {
        tracing::warn!(
            "edge {}: the producer restarted (instance {:016x}, was {:016x}): items of the old \
             one from offset {} on that had not arrived are lost; continuing with the new one \
             from offset {retained_from}",
            self.edge,
            instance,
            self.instance,
            self.expected,
        );
        self.restarts += 1;
        EdgeStats::add(&self.stats.restarts, 1);
        let first = self.expected;
        self.pend_gap(first, retained_from, GapCause::Restart);
        self.expected = retained_from;
        self.acked = retained_from;
        // An end of stream announced by the old instance no longer applies.
        self.eos = None;
        self.eos_tags.clear();
    }

    /// Reads into `buf` from the connection; `None` when nothing (more) is there.
    fn read_some(&mut self, buf: &mut [u8]) -> Option<usize> {
        let conn = self.conn.as_mut()?;
        loop {
            match conn.read(buf) {
                Ok(0) => {
                    self.drop_conn("closed by the producer");
                    return None;
                }
                Ok(n) => {
                    self.last_rx = Instant::now();
                    return Some(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.drop_conn(&e.to_string());
                    return None;
                }
            }
        }
    }

    /// Reads the rest of a frame's payload into `buf`: what is there, or,
    /// when nothing is, what arrives within [`SPIN`] (unless a poll found
    /// nothing less than [`SPIN_QUIET`] ago); `None` then, and the block
    /// sleeps on the socket.
    fn read_payload(&mut self, buf: &mut [u8]) -> Option<usize> {
        if let Some(n) = self.read_some(buf) {
            return Some(n);
        }
        // Nothing there; if the connection ended, nothing to poll either.
        self.conn.as_ref()?;
        let now = Instant::now();
        if self.spin_quiet_until.is_some_and(|q| now < q) {
            return None;
        }
        let until = now + SPIN;
        loop {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            if let Some(n) = self.read_some(buf) {
                self.spins.0 += 1;
                return Some(n);
            }
            self.conn.as_ref()?;
            let now = Instant::now();
            if now >= until {
                self.spins.1 += 1;
                self.spin_quiet_until = Some(now + SPIN_QUIET);
                return None;
            }
        }
    }

    /// Makes at least `want` (≤ [`STAGE`]) unparsed bytes available in the
    /// stage; false when they are not there yet (or the connection ended).
    fn stage_fill(&mut self, want: usize) -> bool {
        debug_assert!(want <= STAGE);
        if self.st_hi - self.st_lo >= want {
            return true;
        }
        if self.st_lo > 0 {
            self.stage.copy_within(self.st_lo..self.st_hi, 0);
            self.st_hi -= self.st_lo;
            self.st_lo = 0;
        }
        let mut stage = std::mem::take(&mut self.stage);
        while self.st_hi < want {
            let Some(n) = self.read_some(&mut stage[self.st_hi..]) else {
                break;
            };
            self.st_hi += n;
        }
        self.stage = stage;
        self.conn.is_some() && self.st_hi >= want
    }

    /// Moves bytes from the stage (refilled as needed) into `dst` until it
    /// holds `want`; false when they are not all there yet.
    fn take_into(&mut self, dst: &mut Vec<u8>, want: usize) -> bool {
        while dst.len() < want {
            if self.st_lo == self.st_hi && !self.stage_fill(1) {
                return false;
            }
            let k = (want - dst.len()).min(self.st_hi - self.st_lo);
            dst.extend_from_slice(&self.stage[self.st_lo..self.st_lo + k]);
            self.st_lo += k;
        }
        true
    }

    /// Receives frames until the socket is drained or the output is full.
    fn receive(&mut self, io: &mut WorkIo<'_>) -> Result<()> {
        self.waiting_for_room = false;
        let isz = self.st.item_size();
        let out = io.output_bytes(0);
        let mut produced = 0usize;
        while self.conn.is_some() {
            match std::mem::replace(&mut self.rx, Rx::Header) {
                Rx::Header => {
                    if !self.stage_fill(HEADER_LEN) {
                        break;
                    }
                    let raw = &self.stage[self.st_lo..self.st_lo + HEADER_LEN];
                    let h = match Header::decode(raw.try_into().expect("header length")) {
                        Ok(h) => h,
                        Err(e) => {
                            self.drop_conn(&e.to_string());
                            break;
                        }
                    };
                    self.st_lo += HEADER_LEN;
                    self.rx = if h.kind == FrameType::Data {
                        let mut tags = std::mem::take(&mut self.tag_bytes);
                        tags.clear();
                        Rx::Data { h, tags, have: 0 }
                    } else {
                        if h.len > 1 << 20 {
                            self.drop_conn("control frame too large");
                            break;
                        }
                        Rx::Control {
                            h,
                            body: Vec::with_capacity(h.len as usize),
                        }
                    };
                }
                Rx::Control { h, mut body } => {
                    if !self.take_into(&mut body, h.len as usize) {
                        self.rx = Rx::Control { h, body };
                        break;
                    }
                    match h.kind {
                        FrameType::Gap => {
                            let count = body
                                .get(..8)
                                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                                .unwrap_or(0);
                            let cause = GapCause::from_u32(h.b).unwrap_or(GapCause::PeerLost);
                            let end = h.a + count;
                            if end > self.expected {
                                let first = h.a.max(self.expected);
                                self.note_gap(first, end - first, cause);
                            }
                        }
                        FrameType::Eos => {
                            if h.has_crc() {
                                // Check the trailer, then go on with the body before it.
                                let ok = frame::split_trailer(&body)
                                    .is_some_and(|(content, sent)| frame::crc(&[content]) == sent);
                                if !ok {
                                    self.drop_conn("CRC32C mismatch in the EOS frame");
                                    break;
                                }
                                body.truncate(body.len() - CRC_LEN);
                            }
                            if self.crc && !body.is_empty() && !h.has_crc() {
                                self.drop_conn(
                                    "protocol error: EOS with tags without a CRC on a \
                                     connection that negotiated CRC",
                                );
                                break;
                            }
                            match frame::eos_tags(&h, &body) {
                                Ok(tags) => {
                                    self.eos_tags = tags
                                        .into_iter()
                                        .map(|t| (Arc::from(t.key.as_str()), t.value))
                                        .collect();
                                    self.eos = Some(h.a);
                                }
                                Err(e) => {
                                    self.drop_conn(&e.to_string());
                                    break;
                                }
                            }
                        }
                        FrameType::Heartbeat => {}
                        FrameType::Close => {
                            self.drop_conn("the producer closed the edge");
                            break;
                        }
                        other => {
                            self.drop_conn(&format!("unexpected {other:?} frame"));
                            break;
                        }
                    }
                }
                Rx::Data {
                    h,
                    mut tags,
                    mut have,
                } => {
                    // Tags section: u32 length, then CBOR.
                    let mut section = 0;
                    if h.flags & FLAG_TAGS != 0 {
                        if !self.take_into(&mut tags, 4) {
                            self.rx = Rx::Data { h, tags, have };
                            break;
                        }
                        section = 4 + u32::from_le_bytes(tags[..4].try_into().expect("4")) as usize;
                        if section > h.body_len() {
                            self.drop_conn(&format!(
                                "DATA frame at {} has a {section}-byte tags section in a \
                                 {}-byte body",
                                h.a, h.len
                            ));
                            break;
                        }
                        if !self.take_into(&mut tags, section) {
                            self.rx = Rx::Data { h, tags, have };
                            break;
                        }
                    }
                    let count = h.b as usize;
                    let payload = h.body_len() - section;
                    if payload != count * isz {
                        self.drop_conn(&format!(
                            "DATA frame at {} has {payload} payload bytes for {count} items of {isz} bytes",
                            h.a
                        ));
                        break;
                    }
                    let capacity = io.output_capacity(0) * isz;
                    if payload > capacity {
                        return Err(BlockError::Failed(format!(
                            "edge {}: a frame of {payload} bytes does not fit the {capacity}-byte output buffer",
                            self.edge
                        )));
                    }
                    let at = produced * isz;
                    if out.len() - at < payload {
                        self.rx = Rx::Data { h, tags, have };
                        self.waiting_for_room = true;
                        break; // wait for downstream to make room
                    }
                    if have < payload {
                        // What the stage read ahead, then straight from the socket.
                        let dst = &mut out[at + have..at + payload];
                        let k = dst.len().min(self.st_hi - self.st_lo);
                        if k > 0 {
                            dst[..k].copy_from_slice(&self.stage[self.st_lo..self.st_lo + k]);
                            self.st_lo += k;
                            have += k;
                        } else {
                            let Some(n) = self.read_payload(dst) else {
                                self.rx = Rx::Data { h, tags, have };
                                break;
                            };
                            have += n;
                        }
                        self.rx = Rx::Data { h, tags, have };
                        continue;
                    }
                    // Whole frame: check, then publish. The CRC trailer is
                    // read after the tags section into the same buffer.
                    if h.has_crc() {
                        if !self.take_into(&mut tags, section + CRC_LEN) {
                            self.rx = Rx::Data { h, tags, have };
                            break;
                        }
                        let (section_bytes, sent) =
                            frame::split_trailer(&tags).expect("trailer read");
                        let c = frame::crc(&[section_bytes, &out[at..at + payload]]);
                        if c != sent {
                            self.drop_conn(&format!(
                                "CRC32C mismatch in the frame at offset {} (computed {c:#010x}, sent {sent:#010x})",
                                h.a
                            ));
                            break;
                        }
                        tags.truncate(section);
                    } else if self.crc {
                        self.drop_conn(&format!(
                            "protocol error: DATA frame at offset {} without a CRC on a connection that negotiated CRC",
                            h.a
                        ));
                        break;
                    }
                    self.tag_scratch.clear();
                    if tags.len() > 4 {
                        // Tags mostly repeat a few keys: share one Arc<str>.
                        let (last_key, scratch) = (&mut self.last_key, &mut self.tag_scratch);
                        let decoded = frame::decode_tags_each(&tags[4..], |offset, key, value| {
                            if last_key.as_deref() != Some(key) {
                                *last_key = Some(Arc::from(key));
                            }
                            let key = last_key.clone().expect("set above");
                            scratch.push((offset, key, value));
                        });
                        if let Err(e) = decoded {
                            self.drop_conn(&e.to_string());
                            break;
                        }
                    }
                    self.tag_bytes = tags;
                    EdgeStats::add(&self.stats.frames, 1);
                    EdgeStats::add(&self.stats.bytes, payload as u64);
                    let mut first = h.a;
                    let mut n = count;
                    if first < self.expected {
                        // Already delivered: drop the overlap.
                        let dup = ((self.expected - first) as usize).min(n);
                        out.copy_within(at + dup * isz..at + n * isz, at);
                        first += dup as u64;
                        n -= dup;
                    } else if first > self.expected {
                        let e = self.expected;
                        self.note_gap(e, first - e, GapCause::PeerLost);
                    }
                    if n == 0 {
                        continue;
                    }
                    let out_first = io.nitems_written(0);
                    if let Some(g) = self.gap.take() {
                        io.add_tag(0, Tag::new(out_first, keys::GAP, g));
                    }
                    for (offset, key, value) in self.tag_scratch.drain(..) {
                        if offset >= first && offset < first + n as u64 {
                            io.add_tag(
                                0,
                                Tag {
                                    offset: out_first + (offset - first),
                                    key,
                                    value,
                                },
                            );
                        }
                    }
                    io.produce(0, n);
                    EdgeStats::add(&self.stats.items, n as u64);
                    produced += n;
                    self.expected = first + n as u64;
                    self.delivered += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// How long a consumer tries to reach its producer before it warns that
/// the producer may be gone for good (`/status` shows the absence from the
/// first failed attempt on).
pub const PRODUCER_ABSENT_WARNING: Duration = Duration::from_secs(10);

/// `HH:MM:SS UTC` of a wall-clock time, for log lines.
fn utc_time(t: std::time::SystemTime) -> String {
    let s = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let d = s % 86_400;
    format!("{:02}:{:02}:{:02} UTC", d / 3600, d / 60 % 60, d % 60)
}

/// Connects (with backoff) whenever the block asks, and hands over the
/// established connection; a refusal that retrying cannot fix is reported
/// as the block's error.
pub(crate) fn connector(shared: Arc<Connector>, env: Arc<NetEnv>, from: String, hello: Hello) {
    let mut backoff = Duration::from_millis(20);
    // Since when the producer has not been reachable (wall clock for
    // `/status`, monotonic for the warning), and whether that was said.
    let stats = env.edge_stats(&hello.edge, super::stats::Role::Source);
    let mut absent: Option<(Instant, std::time::SystemTime)> = None;
    let mut warned = false;
    // A producer that does not serve our edge may still be building its
    // graph; one that keeps saying so runs a different FlowGraph.
    let mut unknown_since: Option<Instant> = None;
    loop {
        let (resume, resume_msg, instance, delay) = {
            let mut g = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            while !g.want && !g.stop {
                g = shared.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            if g.stop {
                return;
            }
            g.attempts += 1;
            (
                g.resume,
                g.resume_msg,
                g.instance,
                std::mem::take(&mut g.delay),
            )
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let attempt = (|| -> std::result::Result<Welcomed, (bool, String)> {
            let addr = env.peer(&from, Duration::from_secs(1)).ok_or((
                false,
                format!("the address of segment `{from}` is not known yet"),
            ))?;
            let mut s = env
                .transport
                .connect(&addr, Duration::from_secs(2))
                .map_err(|e| (false, format!("cannot connect to {addr}: {e}")))?;
            let h = Hello {
                resume_offset: resume,
                resume_msg_seq: resume_msg,
                instance,
                ..hello.clone()
            };
            let answer = client_handshake(&mut *s, &h).map_err(|e| match e {
                // Retrying cannot help: fail the block with the reason.
                HandshakeError::Version { ours, theirs } => (
                    true,
                    format!(
                        "edge {}: producer at {addr} speaks FlowMesh protocol v{theirs}, this \
                         build speaks v{ours}: run the same FlowMesh version on both segments",
                        hello.edge
                    ),
                ),
                HandshakeError::Other(e) => (false, format!("{addr}: {e}")),
            })?;
            match answer {
                Answer::Welcome {
                    crc,
                    retained_from,
                    instance,
                } => {
                    let conn = s.into_conn().map_err(|e| (false, e.to_string()))?;
                    Ok(Welcomed {
                        conn,
                        crc,
                        retained_from,
                        instance,
                    })
                }
                Answer::Refuse { reason, message } => {
                    if reason == Reason::UnknownEdge {
                        let since = *unknown_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= UNKNOWN_EDGE_GRACE {
                            return Err((
                                true,
                                format!(
                                    "{addr} refused the connection for {} s: {message}; the \
                                     producing segment runs a different FlowGraph: start both \
                                     segments from the same file",
                                    UNKNOWN_EDGE_GRACE.as_secs()
                                ),
                            ));
                        }
                    } else {
                        unknown_since = None;
                    }
                    let fatal = !matches!(
                        reason,
                        Reason::UnknownEdge | Reason::Busy | Reason::ShuttingDown
                    );
                    Err((fatal, format!("{addr} refused the connection: {message}")))
                }
            }
        })();
        let mut g = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        match attempt {
            Ok(c) => {
                g.ready = Some(c);
                g.want = false;
                backoff = Duration::from_millis(20);
                unknown_since = None;
                if let Some((t0, _)) = absent.take() {
                    stats.set_unreachable(None, "");
                    if warned {
                        tracing::warn!(
                            "edge {}: segment `{from}` answers again after {:.0} s",
                            hello.edge,
                            t0.elapsed().as_secs_f64()
                        );
                    }
                    warned = false;
                }
            }
            Err((true, msg)) => {
                tracing::error!("{msg}");
                g.error = Some(msg);
                g.want = false;
            }
            Err((false, msg)) => {
                if g.attempts % 50 == 1 {
                    tracing::info!("edge {}: {msg}; retrying", hello.edge);
                }
                let (t0, wall) =
                    *absent.get_or_insert_with(|| (Instant::now(), std::time::SystemTime::now()));
                stats.set_unreachable(Some(wall), &msg);
                if !warned && t0.elapsed() >= PRODUCER_ABSENT_WARNING {
                    warned = true;
                    tracing::warn!(
                        "edge {}: its producer, segment `{from}`, has not been reachable since \
                         {} ({:.0} s): {msg}. Still trying; if that segment's stream already \
                         ended and its worker exited, this consumer waits for it for ever (a \
                         consumer ends only on end of stream): stop this segment (`flowmesh \
                         compose --down`, SIGTERM) or start the producer again",
                        hello.edge,
                        utc_time(wall),
                        t0.elapsed().as_secs_f64()
                    );
                }
                drop(g);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        }
        if let Some(s) = &g.signal {
            s.notify();
        }
    }
}

impl Block for NetSource {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        if self.thread.is_none() {
            self.spawn_connector(io.waker().clone())?;
        }
        let now = Instant::now();
        if self.conn.is_none() {
            let mut g = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = g.error.take() {
                return Err(BlockError::Failed(e));
            }
            if let Some(w) = g.ready.take() {
                drop(g);
                let mut conn = w.conn;
                conn.set_waker(io.waker().clone())?;
                // A new connection starts at a frame boundary. A read that
                // found the last one closed mid-frame put the cut frame's
                // header back into `rx` after `drop_conn` had cleared it;
                // carried over, it would take this connection's first bytes
                // as the rest of its payload.
                self.rx = Rx::Header;
                (self.st_lo, self.st_hi) = (0, 0);
                self.peer = conn.peer_addr();
                self.crc = w.crc;
                if self.instance != 0 && w.instance != self.instance {
                    self.note_restart(w.instance, w.retained_from);
                }
                self.instance = w.instance;
                self.save_state();
                self.conn = Some(conn);
                self.reconnects += 1;
                EdgeStats::add(&self.stats.connections, 1);
                self.connected_at = self.expected;
                self.last_rx = now;
                self.acked = self.expected;
                tracing::info!(
                    "edge {}: connected to {}, from offset {}",
                    self.edge,
                    self.peer,
                    self.expected
                );
            } else {
                if !g.want {
                    g.want = true;
                    g.resume = self.expected;
                    g.instance = self.instance;
                    if self.reconnects > 0 && self.expected == self.connected_at {
                        self.fruitless = (self.fruitless * 2)
                            .clamp(Duration::from_millis(20), Duration::from_secs(2));
                    } else {
                        self.fruitless = Duration::ZERO;
                    }
                    g.delay = self.fruitless;
                    self.shared.cv.notify_all();
                }
                return Ok(Work::Deadline(now + Duration::from_secs(1)));
            }
        }
        self.receive(io)?;
        if self.conn.is_some() && now.duration_since(self.last_rx) > PEER_TIMEOUT {
            self.drop_conn("silent for too long");
        }
        let delivered = self.expected - self.acked;
        if self.conn.is_some()
            && delivered > 0
            && (delivered * self.st.item_size() as u64 >= ACK_BYTES
                || now.duration_since(self.last_ack) >= ACK_EVERY
                || self.eos.is_some())
        {
            self.queue_ack();
        }
        if self.conn.is_some() && now.duration_since(self.last_tx) >= HEARTBEAT {
            self.control
                .extend_from_slice(&frame::control(FrameType::Heartbeat, 0, 0, &[], false));
        }
        self.flush_control();
        if self.eos == Some(self.expected) && self.control.is_empty() && self.acked == self.expected
        {
            // Losses with no item after them go on the end of the stream: a
            // discontinuity just before EOS (its `gap` was waiting for an
            // item), then the producer's end-of-stream tags.
            let end = io.nitems_written(0);
            if let Some(g) = self.gap.take() {
                io.add_tag(0, Tag::new(end, keys::GAP, g));
            }
            for (key, value) in self.eos_tags.drain(..) {
                io.add_tag(
                    0,
                    Tag {
                        offset: end,
                        key,
                        value,
                    },
                );
            }
            return Ok(Work::Done);
        }
        // Ask the reactor for the next wake-up: data (unless the output is
        // full: downstream's consumption wakes us then), and room to write
        // if control frames are waiting.
        if let Some(conn) = self.conn.as_mut() {
            if let Err(e) = conn.arm(!self.waiting_for_room, !self.control.is_empty()) {
                self.drop_conn(&e.to_string());
            }
        }
        let next = (self.last_ack + ACK_EVERY).min(self.last_tx + HEARTBEAT);
        Ok(Work::Deadline(next.max(now + Duration::from_micros(200))))
    }

    fn stop(&mut self) -> Result<()> {
        self.shared.stop();
        // Ended on purpose (downstream done, or end of stream): tell the
        // producer, which then ends like a writer whose readers are done.
        if let Some(conn) = self.conn.as_mut() {
            let mut bye = std::mem::take(&mut self.control);
            bye.extend_from_slice(&frame::control(
                FrameType::Close,
                self.expected,
                Reason::Normal as u32,
                b"consumer finished",
                false,
            ));
            let deadline = Instant::now() + Duration::from_millis(500);
            let mut done = 0;
            while done < bye.len() && Instant::now() < deadline {
                match conn.write_vectored(&[IoSlice::new(&bye[done..])]) {
                    Ok(n) => done += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => break,
                }
            }
            // Half-close and drain what is still in flight until the
            // producer closes, so the socket ends with FIN, not a reset that
            // could destroy the CLOSE frame before the producer reads it.
            conn.shutdown_write();
            let mut sink = vec![0u8; 64 * 1024];
            while Instant::now() < deadline {
                match conn.read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => break,
                }
            }
        }
        Ok(())
    }

    /// A planned stop for a restart: the stream did not end, so no CLOSE
    /// `normal` (which would end the producer like a finished consumer);
    /// the last acknowledgement goes out, the state file is current, and the
    /// connection is simply closed: the producer keeps what it holds for
    /// this edge's return.
    fn suspend(&mut self) -> Result<()> {
        self.shared.stop();
        self.save_state();
        if let Some(path) = self.state_path.as_deref().filter(|p| p.exists()) {
            if let Err(e) = crate::blocks::file::sync_file(path) {
                tracing::warn!(
                    "edge {}: cannot sync its state file {} to disk: {e}",
                    self.edge,
                    path.display()
                );
            }
        }
        if self.conn.is_some() {
            if self.acked < self.expected {
                self.queue_ack();
            }
            let bye = std::mem::take(&mut self.control);
            let conn = self.conn.as_mut().expect("connected");
            let deadline = Instant::now() + Duration::from_millis(500);
            let mut done = 0;
            while done < bye.len() && Instant::now() < deadline {
                match conn.write_vectored(&[IoSlice::new(&bye[done..])]) {
                    Ok(n) => done += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => break,
                }
            }
            conn.shutdown_write();
            self.conn = None;
            tracing::info!(
                "edge {}: stopping for a restart at item {} (acknowledged); the producer keeps \
                 what follows for the restarted segment",
                self.edge,
                self.expected
            );
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "expected" => Some(Pmt::I64(self.expected as i64)),
            "lost" => Some(Pmt::I64(self.lost as i64)),
            "delivered" => Some(Pmt::I64(self.delivered as i64)),
            "restarts" => Some(Pmt::I64(self.restarts as i64)),
            "instance" => Some(Pmt::I64(self.instance as i64)),
            "peer" => Some(Pmt::String(self.peer.clone())),
            "connections" => Some(Pmt::I64(self.reconnects as i64)),
            // Mid-frame polls ([`SPIN`]) that found data, and that did not.
            "spins" => Some(Pmt::map([
                ("found", Pmt::I64(self.spins.0 as i64)),
                ("missed", Pmt::I64(self.spins.1 as i64)),
            ])),
            // One consistent snapshot (a live `get` runs between two work
            // calls): within one producer instance, `delivered + lost` is
            // always `expected`, the next offset wanted; the items in flight
            // are those from `expected` to what the producer has written.
            "accounting" => Some(Pmt::map([
                ("expected", Pmt::I64(self.expected as i64)),
                ("delivered", Pmt::I64(self.delivered as i64)),
                ("lost", Pmt::I64(self.lost as i64)),
                ("restarts", Pmt::I64(self.restarts as i64)),
            ])),
            _ => None,
        }
    }
}

impl Drop for NetSource {
    fn drop(&mut self) {
        self.shared.stop();
    }
}
