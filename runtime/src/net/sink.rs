//! `net_sink`: the producing end of a stream edge.
//!
//! Ports: input `in` (`type` x `vlen`). Parameters: `edge` (id),
//! `retention_bytes` (R), `crc`, `flush_us`, `start` (the edge offset of
//! its first item: 0, or where a relay restarted with `--resume` continues
//! its consumer's stream; offsets on the wire are `start` + the block's own
//! item positions).
//!
//! Items stay in the block's input buffer — sized 2R — until they are both
//! acknowledged by the consumer and more than R bytes behind what was sent,
//! so a consumer that reconnects (link fault, restart) resumes from its own
//! next offset without loss as long as it is within R. DATA frames are
//! written straight from the double-mapped input buffer (no copy). A slow or
//! absent consumer leaves the buffer full, which stops the upstream blocks:
//! backpressure.
//!
//! Once its input has ended, the block waits for its consumer to
//! acknowledge everything, serving (re)connecting consumers from what it
//! holds and sending each EOS with the end-of-stream tags. While no consumer
//! is connected it waits at most `linger_s` seconds (default 60,
//! [`DEFAULT_LINGER`]); then it gives the rest up, logs what is lost, and
//! ends; the edge's acceptor refuses later consumers with `finished`,
//! naming the lost items, for as long as this process runs.
//!
//! Offsets are this block's own: it has a random instance id (WELCOME), and
//! a consumer that names another instance in HELLO (this producer restarted
//! without its state) gets everything still held, whatever offset it asks.

use std::io::{ErrorKind, IoSlice};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowmesh_model::StreamType;

use super::env::{Finished, NetEnv, Served, ServedKind};
use super::frame::{
    self, Decoder, FrameType, GapCause, Header, Reason, CRC_LEN, FLAG_CRC, FLAG_TAGS, HEADER_LEN,
};
use super::stats::{EdgeStats, Role};
use super::transport::Conn;
use crate::block::{Block, Result, Work};
use crate::io::WorkIo;

/// Largest DATA payload a sink sends in one frame.
pub const MAX_FRAME_PAYLOAD: usize = 512 * 1024;
/// Below this many unsent bytes the sink waits up to `flush_us` for more.
pub const BATCH_BYTES: usize = 64 * 1024;
/// While the consumer keeps up, upstream may write at most this far ahead
/// of what was sent, so frames go out while their items are still in cache.
pub const LOOKAHEAD_BYTES: usize = 1 << 20;
/// Sending that made no progress for this long lifts the lookahead limit:
/// a stalled or absent consumer gets the whole buffer (2R) as before.
pub const STALL: Duration = Duration::from_millis(5);
/// A silent connection gets a heartbeat after this long.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A connection silent for this long is dropped (the consumer will reconnect).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a sink whose input has ended waits, with no consumer connected,
/// for one to take what is not yet acknowledged (`linger_s`).
pub const DEFAULT_LINGER: Duration = Duration::from_secs(60);

/// A frame partly written: what goes before its payload (the previous
/// frame's CRC trailer if it is still unsent, the header, the tags
/// section), the payload's item range, and the CRC of what went out.
struct Pending {
    head: Vec<u8>,
    from: u64,
    to: u64,
    done: usize,
    /// CRC32C of the tags section and of the payload bytes written so far:
    /// each write's bytes are added right after the write, while the kernel's
    /// copy has them in cache; its trailer follows the payload.
    crc: Option<frame::Crc>,
}

/// The `net_sink` block.
pub struct NetSink {
    served: Arc<Served>,
    /// This block's instance id (WELCOME): a consumer that names another
    /// one resumes in another numbering and gets everything retained.
    instance: u64,
    /// Edge offset of this block's first input item (its `start`): 0, or
    /// where a restarted relay segment resumed the stream it continues.
    /// Offsets on the wire are `origin` + the block's own item positions.
    origin: u64,
    edge: String,
    st: StreamType,
    retain_items: u64,
    crc_wanted: bool,
    flush: Duration,
    conn: Option<Box<dyn Conn>>,
    crc: bool,
    peer: String,
    /// Next item offset to send; everything before it went out.
    sent: u64,
    /// Everything before this the consumer has confirmed.
    acked: u64,
    pending: Option<Pending>,
    /// The last sent frame's header buffer, reused for the next one.
    spare_head: Vec<u8>,
    control: Vec<u8>,
    rx: Decoder,
    eos_sent: bool,
    unsent_since: Option<Instant>,
    /// Last time sending made progress or had nothing to send.
    last_progress: Instant,
    last_tx: Instant,
    last_rx: Instant,
    signal_set: bool,
    /// A write of this work call found the socket full.
    write_blocked: bool,
    /// The consumer said it will read no more (CLOSE, normal).
    consumer_done: bool,
    /// The connected consumer reads end-of-stream tags (HELLO `eos_tags`).
    eos_tags_ok: bool,
    /// After the input ended: how long to wait for an absent consumer, and
    /// since when none has been connected.
    linger: Duration,
    absent_since: Option<Instant>,
    /// The end of the input was logged.
    end_logged: bool,
    /// Counters for the worker's metrics ([`EdgeStats`]).
    stats: Arc<EdgeStats>,
}

impl NetSink {
    /// The producing end of `edge` at `generation` (its contract's hash,
    /// [`flowmesh_model::partition::edge_generation`]).
    pub fn new(
        env: &NetEnv,
        edge: &str,
        generation: u64,
        st: StreamType,
        retention: usize,
        crc: bool,
        flush: Duration,
    ) -> Self {
        let (served, instance) = env.serve(edge, ServedKind::Stream(st), crc, generation);
        let stats = env.edge_stats(edge, Role::Sink);
        EdgeStats::set(&stats.generation, generation);
        let retain_items = (retention / st.item_size()).max(1) as u64;
        EdgeStats::set(&stats.item_size, st.item_size() as u64);
        EdgeStats::set(&stats.retention, retain_items);
        NetSink {
            stats,
            served,
            instance,
            origin: 0,
            edge: edge.to_string(),
            st,
            retain_items,
            crc_wanted: crc,
            flush,
            conn: None,
            crc,
            peer: String::new(),
            sent: 0,
            acked: 0,
            pending: None,
            spare_head: vec![],
            control: vec![],
            rx: Decoder::new(),
            eos_sent: false,
            unsent_since: None,
            last_progress: Instant::now(),
            last_tx: Instant::now(),
            last_rx: Instant::now(),
            signal_set: false,
            write_blocked: false,
            consumer_done: false,
            eos_tags_ok: false,
            linger: DEFAULT_LINGER,
            absent_since: None,
            end_logged: false,
        }
    }

    /// Numbers the first input item `origin` on the wire instead of 0 (a
    /// restarted relay continuing the stream its consumer reads).
    pub fn starting_at(mut self, origin: u64) -> Self {
        self.origin = origin;
        self
    }

    /// Sets how long the block waits, once its input has ended and no
    /// consumer is connected, before it gives up what is not acknowledged
    /// (default [`DEFAULT_LINGER`]).
    pub fn lingering(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    fn drop_conn(&mut self, why: &str) {
        if self.consumer_done {
            self.conn = None;
        }
        if self.conn.take().is_some() {
            tracing::warn!(
                "edge {}: lost consumer {} ({why}); keeping {} items for its return",
                self.edge,
                self.peer,
                self.sent - self.acked
            );
        }
        self.pending = None;
        self.control.clear();
        self.rx = Decoder::new();
        self.eos_sent = false;
    }

    /// Reads and applies the consumer's control frames (those that arrived
    /// before an end of connection are applied first).
    fn read_control(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let mut buf = [0u8; 4096];
        let mut ended: Option<String> = None;
        loop {
            match conn.read(&mut buf) {
                Ok(0) => {
                    ended = Some("connection closed".into());
                    break;
                }
                Ok(n) => {
                    self.last_rx = Instant::now();
                    self.rx.push(&buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    ended = Some(e.to_string());
                    break;
                }
            }
        }
        loop {
            match self.rx.next_frame() {
                Ok(Some(f)) => match f.header.kind {
                    FrameType::Ack => {
                        let a = f.header.a.saturating_sub(self.origin);
                        self.acked = self.acked.max(a.min(self.sent));
                    }
                    FrameType::Heartbeat | FrameType::MsgAck => {}
                    FrameType::Close if f.header.b == Reason::Normal as u32 => {
                        // The consumer's downstream is done, like a local
                        // reader finishing: nothing more will be read.
                        tracing::info!("edge {}: consumer {} finished", self.edge, self.peer);
                        self.consumer_done = true;
                        return self.drop_conn("consumer finished");
                    }
                    FrameType::Close => return self.drop_conn("consumer closed the edge"),
                    other => return self.drop_conn(&format!("unexpected {other:?} frame")),
                },
                Ok(None) => break,
                Err(e) => return self.drop_conn(&e.to_string()),
            }
        }
        if let Some(why) = ended {
            self.drop_conn(&why);
        }
    }

    /// Writes queued control bytes; false if the socket is full.
    fn flush_control(&mut self) -> bool {
        while !self.control.is_empty() {
            let Some(conn) = self.conn.as_mut() else {
                return false;
            };
            match conn.write_vectored(&[IoSlice::new(&self.control)]) {
                Ok(n) => {
                    self.control.drain(..n);
                    self.last_tx = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                    return false;
                }
                Err(e) => {
                    self.drop_conn(&e.to_string());
                    return false;
                }
            }
        }
        true
    }

    fn queue(&mut self, kind: FrameType, a: u64, b: u32) {
        self.control
            .extend_from_slice(&frame::control(kind, a, b, &[], false));
    }
}

impl Block for NetSink {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        if !self.signal_set {
            self.served.set_signal(io.waker());
            self.signal_set = true;
        }
        let isz = self.st.item_size();
        let base = io.nitems_read(0);
        let avail = io.input_items(0) as u64;
        let written = base + avail;
        let data = io.input_bytes(0);
        self.served
            .retained_from
            .store(self.origin + base, Ordering::Release);
        if self.sent < base {
            self.sent = base;
        }

        // A (re)connecting consumer names where it resumes.
        if let Some(inc) = self.served.take().filter(|i| i.instance == self.instance) {
            self.drop_conn("replaced by a new connection");
            let mut conn = inc.conn;
            conn.set_waker(io.waker().clone())?;
            self.peer = conn.peer_addr();
            self.crc = inc.hello.crc && self.crc_wanted;
            self.eos_tags_ok = inc.hello.eos_tags;
            let r = inc.hello.resume_offset;
            if inc.hello.instance != 0 && inc.hello.instance != self.instance {
                // The consumer resumes in another instance's numbering (this
                // producer restarted without its state): `r` means nothing
                // here, so send everything still held. The consumer marks
                // the restart with a `gap` tag.
                tracing::warn!(
                    "edge {}: consumer {} last talked to producer instance {:016x}, this is \
                     {:016x} (a restart): sending from item {base}, not {r}",
                    self.edge,
                    self.peer,
                    inc.hello.instance,
                    self.instance
                );
                self.sent = base;
                self.acked = base;
            } else if r < self.origin + base {
                // Older than anything retained: say exactly what is lost.
                let body = (self.origin + base - r).to_le_bytes();
                self.control.extend_from_slice(&frame::control(
                    FrameType::Gap,
                    r,
                    GapCause::RetentionExceeded as u32,
                    &body,
                    false,
                ));
                self.sent = base;
                self.acked = base;
            } else {
                self.sent = (r - self.origin).min(written);
                self.acked = self.acked.max(self.sent);
            }
            self.conn = Some(conn);
            EdgeStats::add(&self.stats.connections, 1);
            self.last_rx = Instant::now();
        }

        self.write_blocked = false;
        self.read_control();
        if self.consumer_done {
            // Nothing more is owed to anyone: no backlog, nothing retained.
            EdgeStats::set(&self.stats.backlog, 0);
            EdgeStats::set(&self.stats.retained, 0);
            io.consume(0, avail as usize);
            return Ok(Work::Done);
        }
        let now = Instant::now();
        let mut next_wake: Option<Instant> = None;
        if self.conn.is_some() && now.duration_since(self.last_rx) > PEER_TIMEOUT {
            self.drop_conn("silent for too long");
        }
        // A planned stop for a restart (SIGTERM): the input ended because
        // the sources stopped, not the stream. No EOS and no giving up after
        // `linger_s`: what is held goes to the consumer until it is
        // acknowledged (or the worker's grace period ends the process).
        let planned = io.stopping_for_restart() && io.input_done(0);
        if planned && !self.end_logged {
            self.end_logged = true;
            tracing::info!(
                "edge {}: stopping for a restart at item {}: serving the {} items not yet \
                 acknowledged to the consumer, then closing without end of stream",
                self.edge,
                self.origin + written,
                written - self.acked.min(written)
            );
        }
        if io.input_done(0) && !self.end_logged {
            self.end_logged = true;
            tracing::info!(
                "edge {}: the stream ended at item {}; {} items not yet acknowledged, {} \
                 end-of-stream tags",
                self.edge,
                self.origin + written,
                written - self.acked.min(written),
                io.end_tags(0).len()
            );
        }
        if io.input_done(0) && self.conn.is_none() && !planned {
            let since = *self.absent_since.get_or_insert(now);
            if now.duration_since(since) >= self.linger {
                let (end, acked) = (self.origin + written, self.origin + self.acked);
                tracing::error!(
                    "edge {}: the stream ended at item {end} and no consumer came for {} s \
                     (`lingerSeconds`) to take items [{acked}, {end}) ({} items) and the \
                     end-of-stream tags: they are given up; a consumer that comes now is \
                     refused (`finished`) and told so",
                    self.edge,
                    self.linger.as_secs(),
                    end - acked
                );
                *self
                    .served
                    .finished
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(Finished {
                    end,
                    acked,
                    linger: self.linger,
                    end_tags: io
                        .end_tags(0)
                        .iter()
                        .map(|t| format!("{} {}", t.key, t.value))
                        .collect(),
                });
                io.consume(0, avail as usize);
                return Ok(Work::Done);
            }
        } else {
            self.absent_since = None;
        }

        // Control frames go out only between DATA frames, never inside one.
        if self.conn.is_some() && (self.pending.is_some() || self.flush_control()) {
            // Send DATA frames from [sent, written).
            loop {
                if self.pending.is_none() {
                    let unsent = written - self.sent;
                    if unsent == 0 {
                        self.unsent_since = None;
                        self.last_progress = now;
                        break;
                    }
                    let since = *self.unsent_since.get_or_insert(now);
                    if (unsent as usize) * isz < BATCH_BYTES
                        && !io.input_done(0)
                        && now < since + self.flush
                    {
                        next_wake = Some(since + self.flush);
                        break;
                    }
                    let n = unsent.min((MAX_FRAME_PAYLOAD / isz).max(1) as u64);
                    let (from, to) = (self.sent, self.sent + n);
                    // Tags are sorted by offset; the window may hold many.
                    let all = io.tags(0);
                    let lo = all.partition_point(|t| t.offset < from);
                    let hi = lo + all[lo..].partition_point(|t| t.offset < to);
                    let tags = &all[lo..hi];
                    // The previous frame's CRC trailer if it is still
                    // queued (it rides with this header instead of costing
                    // a write of its own), the header, then (u32 length,
                    // CBOR list) the tags, written in place into one reused
                    // buffer.
                    let mut head = std::mem::take(&mut self.spare_head);
                    head.clear();
                    head.append(&mut self.control);
                    let at = head.len();
                    head.resize(at + HEADER_LEN, 0);
                    let mut h = Header::new(FrameType::Data, self.origin + from, n as u32);
                    if !tags.is_empty() {
                        head.extend_from_slice(&[0; 4]);
                        frame::encode_tags_into(
                            tags.iter()
                                .map(|t| (self.origin + t.offset, &*t.key, &t.value)),
                            &mut head,
                        );
                        let len = (head.len() - at - HEADER_LEN - 4) as u32;
                        head[at + HEADER_LEN..at + HEADER_LEN + 4]
                            .copy_from_slice(&len.to_le_bytes());
                        h.flags = FLAG_TAGS;
                    }
                    let tag_bytes = &head[at + HEADER_LEN..];
                    h.len = (tag_bytes.len() + ((to - from) as usize) * isz) as u32;
                    let crc = self.crc.then(|| {
                        h.flags |= FLAG_CRC;
                        h.len += CRC_LEN as u32;
                        let mut c = frame::Crc::new();
                        c.update(tag_bytes);
                        c
                    });
                    head[at..at + HEADER_LEN].copy_from_slice(&h.encode());
                    self.pending = Some(Pending {
                        head,
                        from,
                        to,
                        done: 0,
                        crc,
                    });
                    self.unsent_since = None;
                }
                let p = self.pending.as_mut().expect("pending frame");
                let payload =
                    &data[((p.from - base) as usize) * isz..((p.to - base) as usize) * isz];
                let total = p.head.len() + payload.len();
                let r = {
                    let conn = self.conn.as_mut().expect("connected");
                    if p.done < p.head.len() {
                        conn.write_vectored(&[
                            IoSlice::new(&p.head[p.done..]),
                            IoSlice::new(payload),
                        ])
                    } else {
                        conn.write_vectored(&[IoSlice::new(&payload[p.done - p.head.len()..])])
                    }
                };
                match r {
                    Ok(n) => {
                        if let Some(c) = p.crc.as_mut() {
                            let hl = p.head.len();
                            c.update(&payload[p.done.max(hl) - hl..(p.done + n).max(hl) - hl]);
                        }
                        p.done += n;
                        self.last_tx = now;
                        self.last_progress = now;
                        if p.done == total {
                            self.sent = p.to;
                            EdgeStats::add(&self.stats.frames, 1);
                            EdgeStats::add(&self.stats.items, p.to - p.from);
                            EdgeStats::add(&self.stats.bytes, payload.len() as u64);
                            if let Some(p) = self.pending.take() {
                                if let Some(c) = p.crc {
                                    // Goes out with the next frame's header,
                                    // or alone below if none follows now.
                                    self.control.extend_from_slice(&c.trailer());
                                }
                                self.spare_head = p.head;
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.write_blocked = true;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.drop_conn(&e.to_string());
                        break;
                    }
                }
            }
            // A trailer that no frame followed goes out now: the consumer
            // publishes a frame's items only once it has checked it.
            if self.pending.is_none() && !self.control.is_empty() {
                self.flush_control();
            }
            // End of stream once everything went out.
            if io.input_done(0)
                && !planned
                && self.sent == written
                && self.pending.is_none()
                && !self.eos_sent
            {
                // With the end-of-stream tags (a final `gap`: items lost
                // after the last one), kept until the block ends, so they
                // go again with the EOS of any later connection.
                let end = self.origin + written;
                let tags: Vec<frame::WireTag> = io
                    .end_tags(0)
                    .iter()
                    .map(|t| frame::WireTag {
                        offset: end,
                        key: t.key.to_string(),
                        value: t.value.clone(),
                    })
                    .collect();
                if !tags.is_empty() && !self.eos_tags_ok {
                    tracing::error!(
                        "edge {}: consumer {} does not read end-of-stream tags (an older \
                         build): it will not see {tags:?}",
                        self.edge,
                        self.peer
                    );
                }
                let tags = if self.eos_tags_ok { &tags[..] } else { &[] };
                self.control
                    .extend_from_slice(&frame::eos(end, tags, self.crc));
                self.eos_sent = true;
                self.flush_control();
            }
            if self.conn.is_some()
                && self.pending.is_none()
                && now.duration_since(self.last_tx) >= HEARTBEAT
            {
                self.queue(FrameType::Heartbeat, 0, 0);
                self.flush_control();
            }
        }
        EdgeStats::set(&self.stats.backlog, written - self.acked.min(written));
        if planned && self.acked >= written && self.pending.is_none() {
            // Everything is with the consumer: close, without EOS. The
            // consumer reconnects and waits for the restarted segment.
            if self.conn.is_some() && self.flush_control() {
                if let Some(conn) = self.conn.as_mut() {
                    conn.shutdown_write();
                }
            }
            self.conn = None;
            tracing::info!(
                "edge {}: stopped for a restart at item {}, every item acknowledged; closed \
                 without end of stream",
                self.edge,
                self.origin + written
            );
            EdgeStats::set(&self.stats.retained, 0);
            io.consume(0, avail as usize);
            return Ok(Work::Done);
        }
        if self.eos_sent && self.acked >= written && io.input_done(0) {
            EdgeStats::set(&self.stats.retained, 0);
            io.consume(0, avail as usize);
            return Ok(Work::Done);
        }

        let stalled = self.conn.is_none() || now.duration_since(self.last_progress) > STALL;
        io.set_input_horizon(
            0,
            if stalled {
                u64::MAX
            } else {
                self.sent + (LOOKAHEAD_BYTES / isz).max(1) as u64
            },
        );

        // Free what is acknowledged and older than the retention window.
        let keep_from = self
            .acked
            .min(self.sent.saturating_sub(self.retain_items))
            .max(base);
        io.consume(0, (keep_from - base) as usize);
        EdgeStats::set(&self.stats.retained, written - keep_from);

        // The reactor wakes us for the consumer's frames, and for room once
        // a write blocked (one-shot: asked for again on every wait).
        if let Some(conn) = self.conn.as_mut() {
            if let Err(e) = conn.arm(true, self.write_blocked) {
                self.drop_conn(&e.to_string());
            }
        }

        // Wake for the flush deadline or the next heartbeat; unconnected,
        // only the acceptor's signal (or a periodic look) matters.
        let hb = if self.conn.is_some() {
            (self.last_tx + HEARTBEAT).max(now + Duration::from_millis(1))
        } else {
            now + HEARTBEAT
        };
        Ok(Work::Deadline(next_wake.map_or(hb, |w| w.min(hb))))
    }

    fn get(&self, name: &str) -> Option<flowmesh_model::Pmt> {
        use flowmesh_model::Pmt;
        match name {
            "sent" => Some(Pmt::I64((self.origin + self.sent) as i64)),
            "acked" => Some(Pmt::I64((self.origin + self.acked) as i64)),
            "peer" => Some(Pmt::String(self.peer.clone())),
            _ => None,
        }
    }
}
