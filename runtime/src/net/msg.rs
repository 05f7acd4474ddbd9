//! Message edges: `net_message_sink` and `net_message_source`.
//!
//! Messages get sequence numbers from 1; the sink keeps each one until the
//! consumer acknowledges it (MSG_ACK) and resends the unacknowledged ones
//! after a reconnect, starting after the last sequence number the consumer
//! says it delivered; the source delivers each sequence number once, in
//! order. End of stream is an EOS frame naming the last sequence number.
//!
//! Sequence numbers belong to one producer instance (WELCOME names it). A
//! consumer that last talked to another instance (the producer restarted
//! without its state) gets every message the new one still holds, and
//! starts its de-duplication afresh for the new numbering.

use std::collections::VecDeque;
use std::io::{ErrorKind, IoSlice};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowmesh_model::pmt::cbor;
use flowmesh_model::{ItemType, Pmt};

use super::env::{NetEnv, Served, ServedKind};
use super::frame::{self, Decoder, FrameType, Hello};
use super::sink::{HEARTBEAT, PEER_TIMEOUT};
use super::source::{connector, Connector, Welcomed};
use super::stats::{EdgeStats, Role};
use super::transport::Conn;
use crate::block::{Block, BlockError, Result, Work};
use crate::io::{Poster, WorkIo};
use crate::signal::Signal;

/// Why [`pump`] stops when the peer closed its side in order.
pub(crate) const CLOSED: &str = "connection closed";

/// Reads everything available into a decoder; `Err` with a reason when the
/// connection is gone.
pub(crate) fn pump(
    conn: &mut Box<dyn Conn>,
    rx: &mut Decoder,
    last_rx: &mut Instant,
) -> std::result::Result<(), String> {
    let mut buf = [0u8; 16384];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Err(CLOSED.into()),
            Ok(n) => {
                *last_rx = Instant::now();
                rx.push(&buf[..n]);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Writes `out` as far as the socket takes it, asks to be woken for the
/// peer's frames (and for room if a write blocked), and checks the peer is
/// not silent; `Err` with the reason to drop the connection.
pub(crate) fn send(
    conn: &mut Box<dyn Conn>,
    out: &mut Vec<u8>,
    last_tx: &mut Instant,
    last_rx: Instant,
    now: Instant,
) -> std::result::Result<(), String> {
    while !out.is_empty() {
        match conn.write_vectored(&[IoSlice::new(out)]) {
            Ok(n) => {
                out.drain(..n);
                *last_tx = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    conn.arm(true, !out.is_empty()).map_err(|e| e.to_string())?;
    if now.duration_since(last_rx) > PEER_TIMEOUT {
        return Err("silent for too long".into());
    }
    Ok(())
}

/// Starts the thread that dials `peer` for message edge `edge` at
/// `generation` (as `replica` when that is not 0) and hands the welcomed
/// connection to `shared`, waking `signal`.
pub(super) fn start_connector(
    shared: &Arc<Connector>,
    env: &Arc<NetEnv>,
    edge: &str,
    generation: u64,
    peer: &str,
    replica: u64,
    signal: &Arc<Signal>,
) -> std::io::Result<()> {
    shared
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .signal = Some(signal.clone());
    let hello = Hello {
        flowgraph: env.flowgraph.clone(),
        generation,
        edge: edge.to_string(),
        item_type: ItemType::U8,
        vlen: 0,
        item_size: 0,
        token: env.token.clone(),
        resume_offset: 0,
        resume_msg_seq: 0,
        crc: true,
        instance: 0,
        eos_tags: false,
        replica,
    };
    let (shared, env, peer) = (shared.clone(), env.clone(), peer.to_string());
    std::thread::Builder::new()
        .name("flowmesh-connect".into())
        .spawn(move || connector(shared, env, peer, hello))?;
    Ok(())
}

/// `net_message_sink`: message input `in`; parameter `edge`.
pub struct NetMessageSink {
    served: Arc<Served>,
    instance: u64,
    edge: String,
    /// Unacknowledged messages: (sequence, encoded).
    queue: VecDeque<(u64, Vec<u8>)>,
    last_seq: u64,
    next_send: u64,
    conn: Option<Box<dyn Conn>>,
    out: Vec<u8>,
    rx: Decoder,
    eos_sent: bool,
    /// The consumer acknowledged everything, had EOS, and closed.
    consumer_finished: bool,
    last_rx: Instant,
    last_tx: Instant,
    signal_set: bool,
}

impl NetMessageSink {
    /// The producing end of message edge `edge` at `generation`.
    pub fn new(env: &NetEnv, edge: &str, generation: u64) -> Self {
        // Message frames always carry a CRC.
        let (served, instance) = env.serve(edge, ServedKind::Message, true, generation);
        NetMessageSink {
            served,
            instance,
            edge: edge.to_string(),
            queue: VecDeque::new(),
            last_seq: 0,
            next_send: 1,
            conn: None,
            out: vec![],
            rx: Decoder::new(),
            eos_sent: false,
            consumer_finished: false,
            last_rx: Instant::now(),
            last_tx: Instant::now(),
            signal_set: false,
        }
    }

    fn drop_conn(&mut self, why: &str) {
        if self.conn.take().is_some() {
            tracing::warn!("message edge {}: consumer lost ({why})", self.edge);
        }
        self.out.clear();
        self.rx = Decoder::new();
        self.eos_sent = false;
        self.next_send = self.queue.front().map_or(self.last_seq + 1, |m| m.0);
    }
}

impl Block for NetMessageSink {
    fn message(&mut self, _port: usize, msg: Pmt, _out: &mut Poster<'_>) -> Result<()> {
        self.last_seq += 1;
        self.queue.push_back((self.last_seq, cbor::encode(&msg)));
        Ok(())
    }

    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        if !self.signal_set {
            self.served.set_signal(io.waker());
            self.signal_set = true;
        }
        let first = self.queue.front().map_or(self.last_seq + 1, |m| m.0);
        self.served.retained_from.store(first, Ordering::Release);
        if let Some(inc) = self.served.take().filter(|i| i.instance == self.instance) {
            self.drop_conn("replaced by a new connection");
            if inc.hello.instance != 0 && inc.hello.instance != self.instance {
                // The consumer counts in another instance's sequence numbers
                // (this producer restarted): acknowledge nothing, resend all.
                tracing::warn!(
                    "message edge {}: the consumer last talked to producer instance {:016x}, \
                     this is {:016x} (a restart): sending from message {}",
                    self.edge,
                    inc.hello.instance,
                    self.instance,
                    first
                );
                self.next_send = first;
            } else {
                let done = inc.hello.resume_msg_seq;
                while self.queue.front().is_some_and(|m| m.0 <= done) {
                    self.queue.pop_front();
                }
                self.next_send =
                    (done + 1).max(self.queue.front().map_or(self.last_seq + 1, |m| m.0));
            }
            let mut c = inc.conn;
            c.set_waker(io.waker().clone())?;
            self.conn = Some(c);
            self.last_rx = Instant::now();
        }
        let now = Instant::now();
        let mut lost = None;
        if let Some(mut conn) = self.conn.take() {
            let r = pump(&mut conn, &mut self.rx, &mut self.last_rx);
            self.conn = Some(conn);
            // Apply what arrived before the end of the connection (a final
            // MSG_ACK followed by the consumer's close) before dropping it.
            lost = r.err();
        }
        loop {
            match self.rx.next_frame() {
                Ok(Some(f)) => match f.header.kind {
                    FrameType::MsgAck => {
                        while self.queue.front().is_some_and(|m| m.0 <= f.header.a) {
                            self.queue.pop_front();
                        }
                    }
                    FrameType::Heartbeat | FrameType::Ack => {}
                    other => {
                        self.drop_conn(&format!("unexpected {other:?} frame"));
                        break;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    self.drop_conn(&e.to_string());
                    break;
                }
            }
        }
        if let Some(e) = lost {
            // A consumer that acknowledged everything after we sent EOS and
            // then closed has finished: it only closes once EOS is delivered.
            if e == CLOSED && self.eos_sent && self.queue.is_empty() && io.messages_ended() {
                tracing::info!("message edge {}: consumer finished", self.edge);
                self.consumer_finished = true;
                self.conn = None;
            } else {
                self.drop_conn(&e);
            }
        }
        if self.consumer_finished {
            return Ok(Work::Ok);
        }
        if self.conn.is_some() {
            let from = self.next_send;
            for (seq, body) in self.queue.iter().filter(|m| m.0 >= from) {
                self.out
                    .extend_from_slice(&frame::control(FrameType::Msg, *seq, 0, body, true));
            }
            self.next_send = self.next_send.max(self.last_seq + 1);
            if io.messages_ended() && !self.eos_sent && self.next_send > self.last_seq {
                self.out.extend_from_slice(&frame::control(
                    FrameType::Eos,
                    0,
                    self.last_seq as u32,
                    &[],
                    false,
                ));
                self.eos_sent = true;
            }
            if self.out.is_empty() && now.duration_since(self.last_tx) >= HEARTBEAT {
                self.out
                    .extend_from_slice(&frame::control(FrameType::Heartbeat, 0, 0, &[], false));
            }
            let conn = self.conn.as_mut().expect("connected");
            if let Err(e) = send(conn, &mut self.out, &mut self.last_tx, self.last_rx, now) {
                self.drop_conn(&e);
            }
        }
        if io.messages_ended() && self.eos_sent && self.queue.is_empty() && self.out.is_empty() {
            return Ok(Work::Ok);
        }
        let now = Instant::now();
        Ok(Work::Deadline(
            (self.last_tx + HEARTBEAT).max(now + Duration::from_millis(1)),
        ))
    }

    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "sent" => Some(Pmt::I64(self.last_seq as i64)),
            "unacked" => Some(Pmt::I64(self.queue.len() as i64)),
            _ => None,
        }
    }
}

/// `net_message_source`: message output `out`; parameters `edge`, `from`.
pub struct NetMessageSource {
    env: Arc<NetEnv>,
    edge: String,
    /// The edge's generation, sent in HELLO.
    generation: u64,
    from: String,
    shared: Arc<Connector>,
    started: bool,
    conn: Option<Box<dyn Conn>>,
    rx: Decoder,
    out: Vec<u8>,
    /// Last sequence number delivered, in the current instance's numbering.
    delivered: u64,
    /// Messages delivered in all.
    count: u64,
    acked: u64,
    eos: Option<u64>,
    /// Whether WELCOME granted CRC (then every MSG must carry one).
    crc: bool,
    /// The producer instance of the last WELCOME (0: none yet).
    instance: u64,
    restarts: u64,
    last_rx: Instant,
    last_tx: Instant,
    /// Counters for the worker's metrics (`items` counts messages).
    stats: Arc<EdgeStats>,
}

impl NetMessageSource {
    pub fn new(env: Arc<NetEnv>, edge: &str, from: &str) -> Self {
        NetMessageSource {
            stats: env.edge_stats(edge, Role::Source),
            env,
            edge: edge.to_string(),
            generation: 0,
            from: from.to_string(),
            shared: Connector::new(),
            started: false,
            conn: None,
            rx: Decoder::new(),
            out: vec![],
            delivered: 0,
            count: 0,
            acked: 0,
            eos: None,
            crc: true,
            instance: 0,
            restarts: 0,
            last_rx: Instant::now(),
            last_tx: Instant::now(),
        }
    }

    /// Asks for the edge at `generation` (0 by default).
    pub fn generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        EdgeStats::set(&self.stats.generation, generation);
        self
    }

    fn drop_conn(&mut self, why: &str) {
        if self.conn.take().is_some() {
            tracing::warn!(
                "message edge {}: producer lost ({why}); resuming after {}",
                self.edge,
                self.delivered
            );
        }
        self.rx = Decoder::new();
        self.out.clear();
    }
}

impl Block for NetMessageSource {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let now = Instant::now();
        if !self.started {
            self.started = true;
            start_connector(
                &self.shared,
                &self.env,
                &self.edge,
                self.generation,
                &self.from,
                0,
                io.waker(),
            )?;
        }
        if self.conn.is_none() {
            let mut g = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = g.error.take() {
                return Err(BlockError::Failed(e));
            }
            match g.ready.take() {
                Some(w) => {
                    drop(g);
                    let Welcomed {
                        conn: mut c,
                        crc,
                        retained_from,
                        instance,
                    } = w;
                    c.set_waker(io.waker().clone())?;
                    EdgeStats::add(&self.stats.connections, 1);
                    if self.instance != 0 && instance != self.instance {
                        // The producer restarted without its state: its
                        // sequence numbers start afresh; take all it sends.
                        self.restarts += 1;
                        EdgeStats::add(&self.stats.restarts, 1);
                        tracing::warn!(
                            "message edge {}: the producer restarted (instance {:016x}, was \
                             {:016x}); unacknowledged messages of the old one after {} are lost, \
                             continuing with the new one from message {}",
                            self.edge,
                            instance,
                            self.instance,
                            self.delivered,
                            retained_from.max(1)
                        );
                        self.delivered = retained_from.saturating_sub(1);
                        self.acked = self.delivered;
                        self.eos = None;
                    }
                    self.instance = instance;
                    self.crc = crc;
                    self.conn = Some(c);
                    self.last_rx = now;
                }
                None => {
                    if !g.want {
                        g.want = true;
                        g.resume_msg = self.delivered;
                        g.instance = self.instance;
                        self.shared.cv.notify_all();
                    }
                    return Ok(Work::Deadline(now + Duration::from_secs(1)));
                }
            }
        }
        let mut conn = self.conn.take().expect("connected");
        let r = pump(&mut conn, &mut self.rx, &mut self.last_rx);
        self.conn = Some(conn);
        // Frames that arrived before the end of the connection still count.
        let lost = r.err();
        loop {
            match self.rx.next_frame() {
                Ok(Some(f)) => match f.header.kind {
                    FrameType::Msg => {
                        let seq = f.header.a;
                        if self.crc && !f.header.has_crc() {
                            self.drop_conn(&format!(
                                "protocol error: message {seq} without a CRC on a connection that negotiated CRC"
                            ));
                            break;
                        }
                        if seq <= self.delivered {
                            continue; // a resend of something delivered
                        }
                        if seq != self.delivered + 1 {
                            self.drop_conn(&format!(
                                "message {seq} arrived before {}",
                                self.delivered + 1
                            ));
                            break;
                        }
                        match cbor::decode(&f.body) {
                            Ok(m) => io.post(0, m),
                            Err(e) => {
                                return Err(BlockError::Failed(format!(
                                    "message edge {}: message {seq} does not decode: {e}",
                                    self.edge
                                )))
                            }
                        }
                        self.delivered = seq;
                        self.count += 1;
                        EdgeStats::add(&self.stats.items, 1);
                    }
                    FrameType::Eos => self.eos = Some(f.header.b as u64),
                    FrameType::Heartbeat => {}
                    FrameType::Close => {
                        self.drop_conn("closed by the producer");
                        break;
                    }
                    other => {
                        self.drop_conn(&format!("unexpected {other:?} frame"));
                        break;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    self.drop_conn(&e.to_string());
                    break;
                }
            }
        }
        if let Some(e) = lost {
            self.drop_conn(&e);
            // Unless EOS and every message before it arrived together with
            // the close (a producer whose queue was acknowledged ends at
            // once): then the edge is complete (below), nothing to reconnect for.
            if self.eos != Some(self.delivered) {
                return Ok(Work::Deadline(now + Duration::from_millis(10)));
            }
        }
        if self.conn.is_some() {
            if self.delivered > self.acked {
                self.out.extend_from_slice(&frame::control(
                    FrameType::MsgAck,
                    self.delivered,
                    0,
                    &[],
                    false,
                ));
                self.acked = self.delivered;
            } else if now.duration_since(self.last_tx) >= HEARTBEAT {
                self.out
                    .extend_from_slice(&frame::control(FrameType::Heartbeat, 0, 0, &[], false));
            }
            let conn = self.conn.as_mut().expect("connected");
            if let Err(e) = send(conn, &mut self.out, &mut self.last_tx, self.last_rx, now) {
                self.drop_conn(&e);
            }
        }
        if self.eos == Some(self.delivered) && self.out.is_empty() {
            return Ok(Work::Done);
        }
        Ok(Work::Deadline(
            (self.last_tx + HEARTBEAT).max(now + Duration::from_millis(1)),
        ))
    }

    fn stop(&mut self) -> Result<()> {
        self.shared.stop();
        Ok(())
    }

    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "delivered" => Some(Pmt::I64(self.count as i64)),
            "last_seq" => Some(Pmt::I64(self.delivered as i64)),
            "restarts" => Some(Pmt::I64(self.restarts as i64)),
            _ => None,
        }
    }
}

impl Drop for NetMessageSource {
    fn drop(&mut self) {
        self.shared.stop();
    }
}
