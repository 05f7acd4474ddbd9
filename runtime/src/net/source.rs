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
    self, Answer, FrameType, GapCause, Header, Hello, Reason, FLAG_TAGS, HEADER_LEN,
};
use super::sink::{HEARTBEAT, PEER_TIMEOUT};
use super::transport::Conn;
use crate::block::{Block, BlockError, Result, Work};
use crate::io::WorkIo;
use crate::signal::Signal;
use crate::tag::{keys, Tag};

/// Acknowledge at least this often (bytes delivered) …
/// How long a producer may answer "edge not produced here" before the
/// consumer gives up (it may still be building its graph at first).
pub const UNKNOWN_EDGE_GRACE: Duration = Duration::from_secs(10);
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
}

/// A frame being received.
enum Rx {
    Header,
    Data {
        h: Header,
        tags: Vec<u8>,
        tags_len: Option<usize>,
        have: usize,
    },
    Control {
        h: Header,
        body: Vec<u8>,
    },
}

/// The `net_source` block.
pub struct NetSource {
    env: Arc<NetEnv>,
    edge: String,
    from: String,
    st: StreamType,
    shared: Arc<Connector>,
    thread: Option<std::thread::JoinHandle<()>>,
    conn: Option<Box<dyn Conn>>,
    /// The last receive stopped because the output was full.
    waiting_for_room: bool,
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
    hdr: [u8; HEADER_LEN],
    hdr_have: usize,
    rx: Rx,
    acked: u64,
    last_ack: Instant,
    control: Vec<u8>,
    eos: Option<u64>,
    last_rx: Instant,
    last_tx: Instant,
    peer: String,
    reconnects: u64,
    /// Offset when the current connection started, and the backoff for
    /// connections that deliver nothing.
    connected_at: u64,
    fruitless: Duration,
}

impl NetSource {
    pub fn new(env: Arc<NetEnv>, edge: &str, from: &str, st: StreamType) -> Self {
        NetSource {
            env,
            edge: edge.to_string(),
            from: from.to_string(),
            st,
            shared: Connector::new(),
            thread: None,
            conn: None,
            waiting_for_room: false,
            last_key: None,
            crc: true,
            expected: 0,
            lost: 0,
            delivered: 0,
            instance: 0,
            restarts: 0,
            gap: None,
            hdr: [0; HEADER_LEN],
            hdr_have: 0,
            rx: Rx::Header,
            acked: 0,
            last_ack: Instant::now(),
            control: vec![],
            eos: None,
            last_rx: Instant::now(),
            last_tx: Instant::now(),
            peer: String::new(),
            reconnects: 0,
            connected_at: 0,
            fruitless: Duration::ZERO,
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
            generation: env.generation,
            edge: self.edge.clone(),
            item_type: self.st.item,
            vlen: self.st.vlen as u64,
            item_size: self.st.item_size() as u64,
            token: env.token.clone(),
            resume_offset: 0,
            resume_msg_seq: 0,
            crc: self.crc,
            instance: 0,
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
        self.hdr_have = 0;
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
        let first = self.expected;
        self.pend_gap(first, retained_from, GapCause::Restart);
        self.expected = retained_from;
        self.acked = retained_from;
        // An end of stream announced by the old instance no longer applies.
        self.eos = None;
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

    /// Receives frames until the socket is drained or the output is full.
    fn receive(&mut self, io: &mut WorkIo<'_>) -> Result<()> {
        self.waiting_for_room = false;
        let isz = self.st.item_size();
        let out = io.output_bytes(0);
        let mut produced = 0usize;
        loop {
            if self.conn.is_none() {
                break;
            }
            match &mut self.rx {
                Rx::Header => {
                    let mut tmp = [0u8; HEADER_LEN];
                    let want = HEADER_LEN - self.hdr_have;
                    let Some(n) = self.read_some(&mut tmp[..want]) else {
                        break;
                    };
                    self.hdr[self.hdr_have..self.hdr_have + n].copy_from_slice(&tmp[..n]);
                    self.hdr_have += n;
                    if self.hdr_have < HEADER_LEN {
                        continue;
                    }
                    self.hdr_have = 0;
                    let h = match Header::decode(&self.hdr) {
                        Ok(h) => h,
                        Err(e) => {
                            self.drop_conn(&e.to_string());
                            break;
                        }
                    };
                    self.rx = if h.kind == FrameType::Data {
                        Rx::Data {
                            h,
                            tags: vec![],
                            tags_len: if h.flags & FLAG_TAGS != 0 {
                                None
                            } else {
                                Some(0)
                            },
                            have: 0,
                        }
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
                Rx::Control { h, body } => {
                    let h = *h;
                    let mut tmp = vec![0u8; h.len as usize - body.len()];
                    if !tmp.is_empty() {
                        let Some(n) = self.read_some(&mut tmp) else {
                            break;
                        };
                        if let Rx::Control { body, .. } = &mut self.rx {
                            body.extend_from_slice(&tmp[..n]);
                        }
                    }
                    let Rx::Control { body, .. } = &self.rx else {
                        break;
                    };
                    if body.len() < h.len as usize {
                        continue;
                    }
                    let body = body.clone();
                    self.rx = Rx::Header;
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
                        FrameType::Eos => self.eos = Some(h.a),
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
                    tags,
                    tags_len,
                    have,
                } => {
                    let h = *h;
                    // Tags section: u32 length, then CBOR.
                    let has_tags = h.flags & FLAG_TAGS != 0;
                    if has_tags && (tags_len.is_none() || tags.len() < tags_len.unwrap_or(0) + 4) {
                        let need = match tags_len {
                            None => 4 - tags.len(),
                            Some(l) => *l + 4 - tags.len(),
                        };
                        let mut tmp = vec![0u8; need];
                        let Some(n) = self.read_some(&mut tmp) else {
                            break;
                        };
                        let Rx::Data { tags, tags_len, .. } = &mut self.rx else {
                            break;
                        };
                        tags.extend_from_slice(&tmp[..n]);
                        if tags_len.is_none() && tags.len() >= 4 {
                            *tags_len =
                                Some(u32::from_le_bytes(tags[..4].try_into().expect("4")) as usize);
                        }
                        continue;
                    }
                    let tag_section = if h.flags & FLAG_TAGS != 0 {
                        tags.len()
                    } else {
                        0
                    };
                    let count = h.b as usize;
                    let payload = h.len as usize - tag_section.min(h.len as usize);
                    if tag_section > h.len as usize || payload != count * isz {
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
                        self.waiting_for_room = true;
                        break; // wait for downstream to make room
                    }
                    if *have < payload {
                        let start = at + *have;
                        let dst = &mut out[start..at + payload];
                        let Some(conn) = self.conn.as_mut() else {
                            break;
                        };
                        match conn.read(dst) {
                            Ok(0) => {
                                self.drop_conn("closed by the producer");
                                break;
                            }
                            Ok(n) => {
                                self.last_rx = Instant::now();
                                if let Rx::Data { have, .. } = &mut self.rx {
                                    *have += n;
                                }
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            Err(e) => {
                                self.drop_conn(&e.to_string());
                                break;
                            }
                        }
                        continue;
                    }
                    // Whole frame: check, then publish.
                    let body_tags = if h.flags & FLAG_TAGS != 0 {
                        tags.clone()
                    } else {
                        vec![]
                    };
                    self.rx = Rx::Header;
                    if h.has_crc() {
                        let c = frame::crc(&[&body_tags, &out[at..at + payload]]);
                        if c != h.crc {
                            self.drop_conn(&format!(
                                "CRC32C mismatch in the frame at offset {} (computed {c:#010x}, sent {:#010x})",
                                h.a, h.crc
                            ));
                            break;
                        }
                    } else if self.crc {
                        self.drop_conn(&format!(
                            "protocol error: DATA frame at offset {} without a CRC on a connection that negotiated CRC",
                            h.a
                        ));
                        break;
                    }
                    let wire_tags = if body_tags.len() > 4 {
                        match frame::decode_tags(&body_tags[4..]) {
                            Ok(t) => t,
                            Err(e) => {
                                self.drop_conn(&e.to_string());
                                break;
                            }
                        }
                    } else {
                        vec![]
                    };
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
                    for t in wire_tags
                        .into_iter()
                        .filter(|t| t.offset >= first && t.offset < first + n as u64)
                    {
                        // Tags mostly repeat a few keys: share one Arc<str>.
                        if self.last_key.as_deref() != Some(t.key.as_str()) {
                            self.last_key = Some(Arc::from(t.key.as_str()));
                        }
                        io.add_tag(
                            0,
                            Tag {
                                offset: out_first + (t.offset - first),
                                key: self.last_key.clone().expect("set above"),
                                value: t.value,
                            },
                        );
                    }
                    io.produce(0, n);
                    produced += n;
                    self.expected = first + n as u64;
                    self.delivered += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// Connects (with backoff) whenever the block asks, and hands over the
/// established connection; a refusal that retrying cannot fix is reported
/// as the block's error.
pub(crate) fn connector(shared: Arc<Connector>, env: Arc<NetEnv>, from: String, hello: Hello) {
    let mut backoff = Duration::from_millis(20);
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
                self.peer = conn.peer_addr();
                self.crc = w.crc;
                if self.instance != 0 && w.instance != self.instance {
                    self.note_restart(w.instance, w.retained_from);
                }
                self.instance = w.instance;
                self.conn = Some(conn);
                self.reconnects += 1;
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
        let mut g = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        g.stop = true;
        self.shared.cv.notify_all();
        drop(g);
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

    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "expected" => Some(Pmt::I64(self.expected as i64)),
            "lost" => Some(Pmt::I64(self.lost as i64)),
            "delivered" => Some(Pmt::I64(self.delivered as i64)),
            "restarts" => Some(Pmt::I64(self.restarts as i64)),
            "instance" => Some(Pmt::I64(self.instance as i64)),
            "peer" => Some(Pmt::String(self.peer.clone())),
            "connections" => Some(Pmt::I64(self.reconnects as i64)),
            _ => None,
        }
    }
}

impl Drop for NetSource {
    fn drop(&mut self) {
        let mut g = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        g.stop = true;
        self.shared.cv.notify_all();
    }
}
