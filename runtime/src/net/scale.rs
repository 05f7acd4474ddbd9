//! Message edges of scalable segments (docs/scaling.md): a segment that
//! runs as any number of replicas at once, fed by one producer and gathered
//! by one consumer, with every message's result delivered exactly once.
//!
//! - [`DistributeSink`] (`net_message_sink` with `distribute: true`): the
//!   producer of an edge INTO a scalable segment. Replicas dial it (one
//!   connection each, HELLO with a random `replica` id); it keeps every
//!   message until a replica says it is done end to end (MSG_DONE, a
//!   selective acknowledgement), gives each message to the connected
//!   replica with the fewest in flight (at most `window` each), and puts the
//!   in-flight messages of a replica whose connection ends (death, SIGKILL,
//!   network cut, silence, LEAVE then close) back at the front of the queue
//!   for another replica. When its input ended and every message is done,
//!   every connected replica (and any that connects later) gets EOS.
//! - [`ReplicaSource`] (`net_message_source` with `replica: true`): a
//!   replica's input. Every message must be a map with an integer `id`; the
//!   source posts it and remembers `id` → sequence number in the process's
//!   [`ReplicaTrack`]; the replica's output ([`PushSink`]) marks the id done
//!   when the gathering consumer acknowledged the result carrying it, and
//!   only then does the source send MSG_DONE upstream. A segment without a
//!   message output (`ack_on_take: true`) acknowledges a message once the
//!   graph took it. On a planned stop (SIGTERM) the source sends LEAVE and
//!   hands back what it holds by closing: the producer redelivers it.
//! - [`PushSink`] (`net_message_sink` with `push: true`): a replica's output.
//!   It dials the consuming segment `to` (as consumers dial producers) and
//!   sends its results, resending the unacknowledged ones after a reconnect;
//!   it forwards the producer's EOS (the final marker) once every result it
//!   sent is acknowledged, and closes without EOS otherwise.
//! - [`GatherSource`] (`net_message_source` with `gather: true`): the
//!   consumer after a scalable segment. It is served by the consuming
//!   worker's listener, takes any number of replica connections, acknowledges
//!   each one's messages (cumulative per connection), and drops results whose
//!   `id` it has delivered before: ids are 1, 2, 3, …, so it keeps a
//!   watermark (every id up to it delivered) and the set of delivered ids
//!   above it — bounded by what is in flight, not by time. With `ordered`
//!   it holds results back until every lower id was delivered. It ends at
//!   the first final EOS: the producer sends EOS only when every message is
//!   done end to end, that is when every result already reached this
//!   consumer, whatever the number of replicas.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{ErrorKind, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowmesh_model::pmt::cbor;
use flowmesh_model::Pmt;

use super::env::{new_instance, NetEnv, Served};
use super::frame::{self, Decoder, FrameType};
use super::msg::{pump, send, start_connector, CLOSED};
use super::sink::HEARTBEAT;
use super::source::{Connector, Welcomed};
use super::stats::{EdgeStats, Role};
use super::transport::Conn;
use crate::block::{Block, BlockError, Result, Work};
use crate::io::{Poster, WorkIo};
use crate::signal::Signal;

/// Messages a replica may hold unacknowledged unless `window` says otherwise.
pub const DEFAULT_WINDOW: usize = 8;

/// How long a replica's output that has nothing left to send but the end of
/// stream tries to reach a gathering consumer it is not connected to: the
/// consumer ends at the first replica's EOS and may be gone already.
const FINAL_LINGER: Duration = Duration::from_secs(5);

/// How far back the messages-per-second figures look.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// The integer `id` of a message into or out of a scalable segment.
pub fn message_id(msg: &Pmt) -> Option<i64> {
    msg.get("id").and_then(Pmt::as_i64)
}

/// A message-rate gauge over the last [`RATE_WINDOW`].
#[derive(Default)]
struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    /// Records the running total `total` (at most twice a second) and
    /// stores the rate in `out` as `f64` bits.
    fn update(&mut self, now: Instant, total: u64, out: &AtomicU64) {
        if self
            .samples
            .back()
            .is_some_and(|(t, _)| now.duration_since(*t) < Duration::from_millis(500))
        {
            return;
        }
        self.samples.push_back((now, total));
        while self.samples.len() > 2 && now.duration_since(self.samples[0].0) > RATE_WINDOW {
            self.samples.pop_front();
        }
        let (t0, c0) = self.samples[0];
        let dt = now.duration_since(t0).as_secs_f64();
        let r = if dt > 0.0 {
            total.saturating_sub(c0) as f64 / dt
        } else {
            0.0
        };
        out.store(r.to_bits(), Ordering::Relaxed);
    }
}

/// What a replica's input and output share: which input messages (by
/// upstream sequence number) each result `id` acknowledges, the sequence
/// numbers done end to end and not yet reported upstream, and whether the
/// producer's EOS arrived (the replica's output then forwards it).
#[derive(Default)]
pub struct ReplicaTrack {
    inner: Mutex<TrackInner>,
}

#[derive(Default)]
struct TrackInner {
    by_id: HashMap<i64, Vec<u64>>,
    done: Vec<u64>,
    signal: Option<Arc<Signal>>,
    final_eos: bool,
}

impl ReplicaTrack {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Input message `seq` carries `id`.
    pub fn track(&self, id: i64, seq: u64) {
        self.lock().by_id.entry(id).or_default().push(seq);
    }
    /// The result carrying `id` was acknowledged downstream: its input
    /// messages are done end to end.
    pub fn complete(&self, id: i64) {
        let mut g = self.lock();
        if let Some(seqs) = g.by_id.remove(&id) {
            g.done.extend(seqs);
            if let Some(s) = &g.signal {
                s.notify();
            }
        }
    }
    /// Input message `seq` is done (a segment without a message output).
    pub fn done(&self, seq: u64) {
        self.lock().done.push(seq);
    }
    /// Takes the sequence numbers done since the last call.
    pub fn take_done(&self) -> Vec<u64> {
        std::mem::take(&mut self.lock().done)
    }
    /// Forgets everything tracked (the producer restarted: its sequence
    /// numbers mean nothing any more).
    pub fn reset(&self) {
        let mut g = self.lock();
        g.by_id.clear();
        g.done.clear();
    }
    /// Input messages posted and not yet done.
    pub fn in_flight(&self) -> usize {
        self.lock().by_id.values().map(Vec::len).sum()
    }
    fn set_signal(&self, s: &Arc<Signal>) {
        self.lock().signal = Some(s.clone());
    }
    /// The producer's EOS arrived: every input message is done end to end.
    pub fn set_final(&self) {
        self.lock().final_eos = true;
    }
    /// Whether [`set_final`](Self::set_final) was called.
    pub fn is_final(&self) -> bool {
        self.lock().final_eos
    }
}

/// One replica connected to a [`DistributeSink`].
struct Replica {
    replica: u64,
    conn: Box<dyn Conn>,
    rx: Decoder,
    out: Vec<u8>,
    /// Sequence numbers handed to this replica and not yet done.
    in_flight: BTreeSet<u64>,
    /// Sent LEAVE: gets nothing new.
    leaving: bool,
    /// When it was last given a message (a counter): among replicas with
    /// as many in flight, the one that waited longest gets the next.
    last_given: u64,
    eos_sent: bool,
    last_rx: Instant,
    last_tx: Instant,
}

/// `net_message_sink` with `distribute: true`: see the module docs.
pub struct DistributeSink {
    served: Arc<Served>,
    edge: String,
    window: usize,
    /// Every message not yet done end to end: body, and the replica
    /// connection holding it (None: pending).
    msgs: BTreeMap<u64, (Vec<u8>, Option<u64>)>,
    /// Messages waiting for a replica, first to send first (may hold
    /// sequence numbers since done or handed out: skipped).
    pending: VecDeque<u64>,
    last_seq: u64,
    conns: BTreeMap<u64, Replica>,
    next_conn: u64,
    given: u64,
    done: u64,
    redelivered: u64,
    /// EOS went out whole to at least one replica.
    eos_delivered: bool,
    signal_set: bool,
    stats: Arc<EdgeStats>,
    rate: Rate,
}

impl DistributeSink {
    /// The producing end of edge `edge` at `generation`, at most `window`
    /// unacknowledged messages per replica.
    pub fn new(env: &NetEnv, edge: &str, generation: u64, window: usize) -> Self {
        let (served, _) = env.serve_many(edge, generation);
        let stats = env.edge_stats(edge, Role::Sink);
        EdgeStats::set(&stats.generation, generation);
        DistributeSink {
            served,
            edge: edge.to_string(),
            window: window.max(1),
            msgs: BTreeMap::new(),
            pending: VecDeque::new(),
            last_seq: 0,
            conns: BTreeMap::new(),
            next_conn: 0,
            given: 0,
            done: 0,
            redelivered: 0,
            eos_delivered: false,
            signal_set: false,
            stats,
            rate: Rate::default(),
        }
    }

    /// Drops replica connection `k`; its in-flight messages go back to the
    /// front of the queue, in order.
    fn drop_replica(&mut self, k: u64, why: &str) {
        let Some(r) = self.conns.remove(&k) else {
            return;
        };
        let mut back = 0;
        for seq in r.in_flight.iter().rev() {
            if let Some(m) = self.msgs.get_mut(seq) {
                m.1 = None;
                self.pending.push_front(*seq);
                back += 1;
            }
        }
        self.redelivered += back;
        if back > 0 || !r.eos_sent {
            tracing::warn!(
                "message edge {}: replica {:016x} left ({why}); {back} message(s) it held go to \
                 another replica",
                self.edge,
                r.replica
            );
        } else {
            tracing::info!(
                "message edge {}: replica {:016x} finished",
                self.edge,
                r.replica
            );
        }
    }

    /// A replica reports message `seq` done end to end.
    fn done(&mut self, seq: u64) {
        if let Some((_, owner)) = self.msgs.remove(&seq) {
            self.done += 1;
            if let Some(r) = owner.and_then(|k| self.conns.get_mut(&k)) {
                r.in_flight.remove(&seq);
            }
        }
        // Done by another replica than the one holding it now (after a
        // redelivery), or a second time: nothing more to do.
        for r in self.conns.values_mut() {
            r.in_flight.remove(&seq);
        }
    }

    /// Hands pending messages to the replicas with room, fewest in flight first.
    fn assign(&mut self) {
        while let Some(&seq) = self.pending.front() {
            if self.msgs.get(&seq).is_none_or(|m| m.1.is_some()) {
                self.pending.pop_front();
                continue;
            }
            let best = self
                .conns
                .iter()
                .filter(|(_, r)| !r.leaving && r.in_flight.len() < self.window)
                .min_by_key(|(k, r)| (r.in_flight.len(), r.last_given, **k))
                .map(|(k, _)| *k);
            let Some(k) = best else { break };
            self.pending.pop_front();
            self.given += 1;
            let m = self.msgs.get_mut(&seq).expect("checked");
            m.1 = Some(k);
            let r = self.conns.get_mut(&k).expect("chosen");
            r.in_flight.insert(seq);
            r.last_given = self.given;
            r.out
                .extend_from_slice(&frame::control(FrameType::Msg, seq, 0, &m.0, true));
        }
    }
}

impl Block for DistributeSink {
    fn message(&mut self, _port: usize, msg: Pmt, _out: &mut Poster<'_>) -> Result<()> {
        self.last_seq += 1;
        self.msgs.insert(self.last_seq, (cbor::encode(&msg), None));
        self.pending.push_back(self.last_seq);
        EdgeStats::add(&self.stats.items, 1);
        Ok(())
    }

    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        if !self.signal_set {
            self.served.set_signal(io.waker());
            self.signal_set = true;
        }
        let now = Instant::now();
        for inc in self.served.take_all() {
            let mut conn = inc.conn;
            conn.set_waker(io.waker().clone())?;
            let k = self.next_conn;
            self.next_conn += 1;
            tracing::info!(
                "message edge {}: replica {:016x} joined ({} replica(s) now)",
                self.edge,
                inc.hello.replica,
                self.conns.len() + 1
            );
            EdgeStats::add(&self.stats.connections, 1);
            self.conns.insert(
                k,
                Replica {
                    replica: inc.hello.replica,
                    conn,
                    rx: Decoder::new(),
                    out: vec![],
                    in_flight: BTreeSet::new(),
                    leaving: false,
                    last_given: 0,
                    eos_sent: false,
                    last_rx: now,
                    last_tx: now,
                },
            );
        }
        // Read every replica's frames first (a final MSG_DONE before a close
        // still counts), then drop the connections that ended.
        let mut lost: Vec<(u64, String)> = vec![];
        let mut done = vec![];
        for (k, r) in self.conns.iter_mut() {
            let end = pump(&mut r.conn, &mut r.rx, &mut r.last_rx).err();
            loop {
                match r.rx.next_frame() {
                    Ok(Some(f)) => match f.header.kind {
                        FrameType::MsgDone => done.push(f.header.a),
                        FrameType::Leave => {
                            if !r.leaving {
                                tracing::info!(
                                    "message edge {}: replica {:016x} is leaving: nothing new \
                                     goes to it",
                                    self.edge,
                                    r.replica
                                );
                            }
                            r.leaving = true;
                        }
                        FrameType::Heartbeat | FrameType::MsgAck => {}
                        other => {
                            lost.push((*k, format!("unexpected {other:?} frame")));
                            break;
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        lost.push((*k, e.to_string()));
                        break;
                    }
                }
            }
            if let Some(e) = end {
                lost.push((*k, e));
            }
        }
        for seq in done {
            self.done(seq);
        }
        for (k, why) in lost {
            let why = if why == CLOSED {
                "its connection closed"
            } else {
                &why
            };
            self.drop_replica(k, why);
        }
        self.assign();
        let ended = io.messages_ended() && self.msgs.is_empty();
        let mut failed = vec![];
        for (k, r) in self.conns.iter_mut() {
            if ended && !r.eos_sent {
                r.out.extend_from_slice(&frame::control(
                    FrameType::Eos,
                    0,
                    self.last_seq as u32,
                    &[],
                    false,
                ));
                r.eos_sent = true;
            }
            if r.out.is_empty() && now.duration_since(r.last_tx) >= HEARTBEAT {
                r.out
                    .extend_from_slice(&frame::control(FrameType::Heartbeat, 0, 0, &[], false));
            }
            if let Err(e) = send(&mut r.conn, &mut r.out, &mut r.last_tx, r.last_rx, now) {
                failed.push((*k, e));
            } else if r.eos_sent && r.out.is_empty() {
                self.eos_delivered = true;
            }
        }
        for (k, why) in failed {
            self.drop_replica(k, &why);
        }
        let in_flight: usize = self.conns.values().map(|r| r.in_flight.len()).sum();
        EdgeStats::set(&self.stats.replicas, self.conns.len() as u64);
        EdgeStats::set(&self.stats.in_flight, in_flight as u64);
        EdgeStats::set(
            &self.stats.pending,
            (self.msgs.len().saturating_sub(in_flight)) as u64,
        );
        EdgeStats::set(&self.stats.backlog, self.msgs.len() as u64);
        self.rate.update(now, self.done, &self.stats.rate_bits);
        // Finished once the end of stream reached at least one replica and
        // every replica connected had it and closed: replicas end at EOS,
        // after forwarding it to the gathering consumer.
        if ended && self.eos_delivered && self.conns.is_empty() {
            tracing::info!(
                "message edge {}: all {} message(s) done end to end ({} redelivered)",
                self.edge,
                self.done,
                self.redelivered
            );
            return Ok(Work::Ok);
        }
        let next = self
            .conns
            .values()
            .map(|r| r.last_tx + HEARTBEAT)
            .min()
            .unwrap_or(now + Duration::from_millis(500))
            .min(now + Duration::from_millis(500));
        Ok(Work::Deadline(next.max(now + Duration::from_millis(1))))
    }

    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "sent" => Some(Pmt::I64(self.last_seq as i64)),
            "unacked" => Some(Pmt::I64(self.msgs.len() as i64)),
            "done" => Some(Pmt::I64(self.done as i64)),
            "replicas" => Some(Pmt::I64(self.conns.len() as i64)),
            "redelivered" => Some(Pmt::I64(self.redelivered as i64)),
            _ => None,
        }
    }
}

/// Writes `bytes` to `conn` for at most `limit` (a block ending: no
/// scheduler wake-ups any more).
fn flush_blocking(conn: &mut Box<dyn Conn>, bytes: &[u8], limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut done = 0;
    while done < bytes.len() && Instant::now() < deadline {
        match conn.write_vectored(&[IoSlice::new(&bytes[done..])]) {
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// `net_message_source` with `replica: true`: see the module docs.
pub struct ReplicaSource {
    env: Arc<NetEnv>,
    edge: String,
    generation: u64,
    from: String,
    replica: u64,
    ack_on_take: bool,
    shared: Arc<Connector>,
    started: bool,
    conn: Option<Box<dyn Conn>>,
    rx: Decoder,
    out: Vec<u8>,
    /// Done sequence numbers not yet sent (no connection).
    unsent: Vec<u64>,
    crc: bool,
    instance: u64,
    eos: bool,
    received: u64,
    done: u64,
    last_rx: Instant,
    last_tx: Instant,
    stats: Arc<EdgeStats>,
    rate: Rate,
}

impl ReplicaSource {
    /// A replica's input `edge` from segment `from`; with `ack_on_take`
    /// a message is done once posted (a segment without a message output).
    pub fn new(
        env: Arc<NetEnv>,
        edge: &str,
        from: &str,
        generation: u64,
        ack_on_take: bool,
    ) -> Self {
        let stats = env.edge_stats(edge, Role::Source);
        EdgeStats::set(&stats.generation, generation);
        ReplicaSource {
            stats,
            env,
            edge: edge.to_string(),
            generation,
            from: from.to_string(),
            replica: new_instance(),
            ack_on_take,
            shared: Connector::new(),
            started: false,
            conn: None,
            rx: Decoder::new(),
            out: vec![],
            unsent: vec![],
            crc: true,
            instance: 0,
            eos: false,
            received: 0,
            done: 0,
            last_rx: Instant::now(),
            last_tx: Instant::now(),
            rate: Rate::default(),
        }
    }

    fn drop_conn(&mut self, why: &str) {
        if self.conn.take().is_some() {
            tracing::warn!(
                "message edge {}: producer lost ({why}); reconnecting (what this replica held \
                 goes to another replica)",
                self.edge
            );
        }
        self.rx = Decoder::new();
        self.out.clear();
    }
}

impl Block for ReplicaSource {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let now = Instant::now();
        if !self.started {
            self.started = true;
            self.env.replica.set_signal(io.waker());
            start_connector(
                &self.shared,
                &self.env,
                &self.edge,
                self.generation,
                &self.from,
                self.replica,
                io.waker(),
            )?;
        }
        self.unsent.extend(self.env.replica.take_done());
        if self.conn.is_none() {
            let mut g = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = g.error.take() {
                return Err(BlockError::Failed(e));
            }
            match g.ready.take() {
                Some(Welcomed {
                    conn: mut c,
                    crc,
                    instance,
                    ..
                }) => {
                    drop(g);
                    c.set_waker(io.waker().clone())?;
                    EdgeStats::add(&self.stats.connections, 1);
                    if self.instance != 0 && instance != self.instance {
                        tracing::warn!(
                            "message edge {}: the producer restarted (instance {instance:016x}, \
                             was {:016x}): what it had not seen done is lost with it",
                            self.edge,
                            self.instance
                        );
                        self.env.replica.reset();
                        self.unsent.clear();
                        EdgeStats::add(&self.stats.restarts, 1);
                    }
                    self.instance = instance;
                    self.crc = crc;
                    self.conn = Some(c);
                    self.last_rx = now;
                }
                None => {
                    if !g.want {
                        g.want = true;
                        g.instance = 0;
                        self.shared.cv.notify_all();
                    }
                    return Ok(Work::Deadline(now + Duration::from_secs(1)));
                }
            }
        }
        let mut conn = self.conn.take().expect("connected");
        let lost = pump(&mut conn, &mut self.rx, &mut self.last_rx).err();
        self.conn = Some(conn);
        loop {
            match self.rx.next_frame() {
                Ok(Some(f)) => match f.header.kind {
                    FrameType::Msg => {
                        let seq = f.header.a;
                        if self.crc && !f.header.has_crc() {
                            self.drop_conn(&format!(
                                "protocol error: message {seq} without a CRC on a connection \
                                 that negotiated CRC"
                            ));
                            break;
                        }
                        let m = cbor::decode(&f.body).map_err(|e| {
                            BlockError::Failed(format!(
                                "message edge {}: message {seq} does not decode: {e}",
                                self.edge
                            ))
                        })?;
                        let Some(id) = message_id(&m) else {
                            return Err(BlockError::Failed(format!(
                                "message edge {}: message {seq} has no integer `id`: a scalable \
                                 segment acknowledges and de-duplicates messages by their `id`, \
                                 so every message into it must be a map with an integer `id` \
                                 (1, 2, 3, …; `detection_snippet` and `message_strobe` with \
                                 `numbered: true` provide one), got {m:?}",
                                self.edge
                            )));
                        };
                        io.post(0, m);
                        self.received += 1;
                        EdgeStats::add(&self.stats.items, 1);
                        if self.ack_on_take {
                            self.unsent.push(seq);
                        } else {
                            self.env.replica.track(id, seq);
                        }
                    }
                    FrameType::Eos => self.eos = true,
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
        if self.eos {
            // Every input message is done end to end: the output forwards
            // the end of stream to the gathering consumer.
            self.env.replica.set_final();
            tracing::info!(
                "message edge {}: end of stream ({} message(s) processed here)",
                self.edge,
                self.received
            );
            return Ok(Work::Done);
        }
        if let Some(e) = lost {
            self.drop_conn(&e);
            return Ok(Work::Deadline(now + Duration::from_millis(10)));
        }
        if self.conn.is_some() {
            for seq in self.unsent.drain(..) {
                self.out
                    .extend_from_slice(&frame::control(FrameType::MsgDone, seq, 0, &[], false));
                self.done += 1;
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
        let in_flight = if self.ack_on_take {
            0
        } else {
            self.env.replica.in_flight()
        };
        EdgeStats::set(&self.stats.in_flight, in_flight as u64);
        self.rate.update(now, self.done, &self.stats.rate_bits);
        Ok(Work::Deadline(
            (self.last_tx + HEARTBEAT)
                .min(now + Duration::from_millis(500))
                .max(now + Duration::from_millis(1)),
        ))
    }

    /// A planned stop (SIGTERM): report what is done, send LEAVE so nothing
    /// new comes, and close: the producer gives what this replica still
    /// held to another replica (results of it already pushed downstream are
    /// dropped there as duplicates).
    fn suspend(&mut self) -> Result<()> {
        self.stop()?;
        self.unsent.extend(self.env.replica.take_done());
        if let Some(mut conn) = self.conn.take() {
            let mut bye = std::mem::take(&mut self.out);
            for seq in self.unsent.drain(..) {
                bye.extend_from_slice(&frame::control(FrameType::MsgDone, seq, 0, &[], false));
            }
            bye.extend_from_slice(&frame::control(FrameType::Leave, 0, 0, &[], false));
            flush_blocking(&mut conn, &bye, Duration::from_millis(500));
            tracing::info!(
                "message edge {}: left the producer; it redelivers the {} message(s) this \
                 replica held",
                self.edge,
                self.env.replica.in_flight()
            );
            conn.shutdown_write();
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        self.shared.stop();
        Ok(())
    }

    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "delivered" => Some(Pmt::I64(self.received as i64)),
            "done" => Some(Pmt::I64(self.done as i64)),
            "replica" => Some(Pmt::I64(self.replica as i64)),
            _ => None,
        }
    }
}

impl Drop for ReplicaSource {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// `net_message_sink` with `push: true`: see the module docs.
pub struct PushSink {
    env: Arc<NetEnv>,
    edge: String,
    generation: u64,
    to: String,
    replica: u64,
    shared: Arc<Connector>,
    started: bool,
    /// Unacknowledged results: (sequence, id, encoded).
    queue: VecDeque<(u64, Option<i64>, Vec<u8>)>,
    last_seq: u64,
    next_send: u64,
    conn: Option<Box<dyn Conn>>,
    rx: Decoder,
    out: Vec<u8>,
    eos_sent: bool,
    /// When it had nothing left to send but the end of stream and no
    /// connection ([`FINAL_LINGER`]).
    final_since: Option<Instant>,
    last_rx: Instant,
    last_tx: Instant,
    stats: Arc<EdgeStats>,
}

impl PushSink {
    /// A replica's output `edge` into segment `to`.
    pub fn new(env: Arc<NetEnv>, edge: &str, to: &str, generation: u64) -> Self {
        let stats = env.edge_stats(edge, Role::Sink);
        EdgeStats::set(&stats.generation, generation);
        PushSink {
            stats,
            replica: new_instance(),
            env,
            edge: edge.to_string(),
            generation,
            to: to.to_string(),
            shared: Connector::new(),
            started: false,
            queue: VecDeque::new(),
            last_seq: 0,
            next_send: 1,
            conn: None,
            rx: Decoder::new(),
            out: vec![],
            eos_sent: false,
            final_since: None,
            last_rx: Instant::now(),
            last_tx: Instant::now(),
        }
    }

    fn drop_conn(&mut self, why: &str) {
        if self.conn.take().is_some() {
            tracing::warn!(
                "message edge {}: gathering consumer lost ({why}); resending what it had not \
                 acknowledged after reconnecting",
                self.edge
            );
        }
        self.rx = Decoder::new();
        self.out.clear();
        self.eos_sent = false;
        self.next_send = self.queue.front().map_or(self.last_seq + 1, |m| m.0);
    }
}

impl Block for PushSink {
    fn message(&mut self, _port: usize, msg: Pmt, _out: &mut Poster<'_>) -> Result<()> {
        self.last_seq += 1;
        self.queue
            .push_back((self.last_seq, message_id(&msg), cbor::encode(&msg)));
        Ok(())
    }

    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let now = Instant::now();
        if !self.started {
            self.started = true;
            start_connector(
                &self.shared,
                &self.env,
                &self.edge,
                self.generation,
                &self.to,
                self.replica,
                io.waker(),
            )?;
        }
        let ended = io.messages_ended();
        if ended && self.queue.is_empty() && !self.env.replica.is_final() {
            // The replica stops without the end of the stream (SIGTERM, or
            // its input failed): close without EOS.
            return Ok(Work::Ok);
        }
        // Every result was acknowledged and the producer's end of stream
        // came: only the final marker is left, which any replica may give.
        let nothing_left = ended && self.queue.is_empty() && self.env.replica.is_final();
        if nothing_left && self.conn.is_none() {
            let since = *self.final_since.get_or_insert(now);
            if now.duration_since(since) >= FINAL_LINGER {
                tracing::info!(
                    "message edge {}: every result is acknowledged; the gathering consumer \
                     cannot be reached for {} s (it ends at the first replica's end of stream): \
                     ending without sending it",
                    self.edge,
                    FINAL_LINGER.as_secs()
                );
                return Ok(Work::Ok);
            }
        }
        if self.conn.is_none() {
            let mut g = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = g.error.take() {
                return Err(BlockError::Failed(e));
            }
            match g.ready.take() {
                Some(w) => {
                    drop(g);
                    let mut c = w.conn;
                    c.set_waker(io.waker().clone())?;
                    EdgeStats::add(&self.stats.connections, 1);
                    self.conn = Some(c);
                    self.last_rx = now;
                    self.next_send = self.queue.front().map_or(self.last_seq + 1, |m| m.0);
                }
                None => {
                    if !g.want {
                        g.want = true;
                        self.shared.cv.notify_all();
                    }
                    let wait = if nothing_left {
                        Duration::from_millis(100)
                    } else {
                        Duration::from_secs(1)
                    };
                    return Ok(Work::Deadline(now + wait));
                }
            }
        }
        let mut conn = self.conn.take().expect("connected");
        let lost = pump(&mut conn, &mut self.rx, &mut self.last_rx).err();
        self.conn = Some(conn);
        loop {
            match self.rx.next_frame() {
                Ok(Some(f)) => match f.header.kind {
                    FrameType::MsgAck => {
                        while self.queue.front().is_some_and(|m| m.0 <= f.header.a) {
                            let (_, id, _) = self.queue.pop_front().expect("checked");
                            if let Some(id) = id {
                                self.env.replica.complete(id);
                            }
                        }
                    }
                    FrameType::Heartbeat => {}
                    FrameType::Close => {
                        // The gathering consumer ended: it had every
                        // result (what this replica still holds can only
                        // be a repeat).
                        tracing::info!(
                            "message edge {}: the gathering consumer has ended ({} result(s) \
                             here unacknowledged, repeats of what it had)",
                            self.edge,
                            self.queue.len()
                        );
                        return Ok(Work::Ok);
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
            if (e == CLOSED && self.eos_sent) || nothing_left {
                // The gatherer had the end of the stream (ours or another
                // replica's) and closed.
                return Ok(Work::Ok);
            }
            self.drop_conn(&e);
            return Ok(Work::Deadline(now + Duration::from_millis(10)));
        }
        if self.conn.is_some() {
            let from = self.next_send;
            for (seq, _, body) in self.queue.iter().filter(|m| m.0 >= from) {
                self.out
                    .extend_from_slice(&frame::control(FrameType::Msg, *seq, 0, body, true));
                EdgeStats::add(&self.stats.items, 1);
            }
            self.next_send = self.last_seq + 1;
            if ended && self.queue.is_empty() && self.env.replica.is_final() && !self.eos_sent {
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
        EdgeStats::set(&self.stats.backlog, self.queue.len() as u64);
        if self.eos_sent && self.out.is_empty() {
            return Ok(Work::Ok);
        }
        Ok(Work::Deadline(
            (self.last_tx + HEARTBEAT).max(now + Duration::from_millis(1)),
        ))
    }

    /// A planned stop: what is already written goes out (briefly); results
    /// not acknowledged yet are redone by another replica.
    fn suspend(&mut self) -> Result<()> {
        self.stop()?;
        if let Some(mut conn) = self.conn.take() {
            let bye = std::mem::take(&mut self.out);
            flush_blocking(&mut conn, &bye, Duration::from_millis(500));
            conn.shutdown_write();
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        self.shared.stop();
        Ok(())
    }

    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "sent" => Some(Pmt::I64(self.last_seq as i64)),
            "unacked" => Some(Pmt::I64(self.queue.len() as i64)),
            _ => None,
        }
    }
}

impl Drop for PushSink {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// De-duplication by id: every id up to `watermark` was delivered, and so
/// was every id in `above`.
#[derive(Debug, Default, Clone)]
pub struct Dedup {
    pub watermark: i64,
    pub above: BTreeSet<i64>,
}

impl Dedup {
    /// Records `id`; false if it was delivered before.
    pub fn first(&mut self, id: i64) -> bool {
        if id <= self.watermark || !self.above.insert(id) {
            return false;
        }
        while self.above.first() == Some(&(self.watermark + 1)) {
            self.above.pop_first();
            self.watermark += 1;
        }
        true
    }
}

/// One replica pushing to a [`GatherSource`].
struct Pusher {
    replica: u64,
    conn: Box<dyn Conn>,
    rx: Decoder,
    out: Vec<u8>,
    crc: bool,
    received: u64,
    acked: u64,
    last_rx: Instant,
    last_tx: Instant,
}

/// `net_message_source` with `gather: true`: see the module docs.
pub struct GatherSource {
    served: Arc<Served>,
    edge: String,
    ordered: bool,
    conns: BTreeMap<u64, Pusher>,
    next_conn: u64,
    dedup: Dedup,
    /// `ordered`: results held until every lower id was delivered.
    held: BTreeMap<i64, Pmt>,
    /// The highest id posted (`ordered`).
    posted_to: i64,
    final_eos: bool,
    delivered: u64,
    duplicates: u64,
    signal_set: bool,
    stats: Arc<EdgeStats>,
    rate: Rate,
}

impl GatherSource {
    /// The gathering end of `edge` at `generation`; with `ordered`, results
    /// go out in id order.
    pub fn new(env: &NetEnv, edge: &str, generation: u64, ordered: bool) -> Self {
        let (served, _) = env.serve_many(edge, generation);
        let stats = env.edge_stats(edge, Role::Source);
        EdgeStats::set(&stats.generation, generation);
        GatherSource {
            served,
            edge: edge.to_string(),
            ordered,
            conns: BTreeMap::new(),
            next_conn: 0,
            dedup: Dedup::default(),
            held: BTreeMap::new(),
            posted_to: 0,
            final_eos: false,
            delivered: 0,
            duplicates: 0,
            signal_set: false,
            stats,
            rate: Rate::default(),
        }
    }

    fn post(&mut self, io: &mut WorkIo<'_>, m: Pmt) {
        io.post(0, m);
        self.delivered += 1;
        EdgeStats::add(&self.stats.items, 1);
    }
}

impl Block for GatherSource {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        if !self.signal_set {
            self.served.set_signal(io.waker());
            self.signal_set = true;
        }
        let now = Instant::now();
        for inc in self.served.take_all() {
            let mut conn = inc.conn;
            conn.set_waker(io.waker().clone())?;
            EdgeStats::add(&self.stats.connections, 1);
            tracing::info!(
                "message edge {}: replica {:016x} connected",
                self.edge,
                inc.hello.replica
            );
            self.conns.insert(
                self.next_conn,
                Pusher {
                    replica: inc.hello.replica,
                    conn,
                    rx: Decoder::new(),
                    out: vec![],
                    crc: inc.hello.crc,
                    received: 0,
                    acked: 0,
                    last_rx: now,
                    last_tx: now,
                },
            );
            self.next_conn += 1;
        }
        let mut lost = vec![];
        let mut arrived = vec![];
        for (k, p) in self.conns.iter_mut() {
            let end = pump(&mut p.conn, &mut p.rx, &mut p.last_rx).err();
            loop {
                match p.rx.next_frame() {
                    Ok(Some(f)) => match f.header.kind {
                        FrameType::Msg => {
                            let seq = f.header.a;
                            if p.crc && !f.header.has_crc() {
                                lost.push((*k, format!("message {seq} without a CRC")));
                                break;
                            }
                            let m = cbor::decode(&f.body).map_err(|e| {
                                BlockError::Failed(format!(
                                    "message edge {}: message {seq} does not decode: {e}",
                                    self.edge
                                ))
                            })?;
                            arrived.push(m);
                            p.received = seq;
                        }
                        FrameType::Eos => self.final_eos = true,
                        FrameType::Heartbeat => {}
                        FrameType::Close => {
                            lost.push((*k, "closed by the replica".into()));
                            break;
                        }
                        other => {
                            lost.push((*k, format!("unexpected {other:?} frame")));
                            break;
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        lost.push((*k, e.to_string()));
                        break;
                    }
                }
            }
            if let Some(e) = end {
                lost.push((*k, e));
            }
        }
        for m in arrived {
            let Some(id) = message_id(&m) else {
                return Err(BlockError::Failed(format!(
                    "message edge {}: a result without an integer `id` arrived from a replica: \
                     the consumer of a scalable segment de-duplicates by `id`, so the segment's \
                     blocks must keep the `id` of the message they answer, got {m:?}",
                    self.edge
                )));
            };
            if !self.dedup.first(id) {
                self.duplicates += 1;
                EdgeStats::add(&self.stats.duplicates, 1);
                continue;
            }
            if self.ordered {
                self.held.insert(id, m);
            } else {
                self.post(io, m);
            }
        }
        if self.ordered {
            while let Some(e) = self.held.first_entry() {
                if *e.key() > self.dedup.watermark {
                    break;
                }
                let (id, m) = e.remove_entry();
                self.posted_to = id;
                self.post(io, m);
            }
        }
        for (k, why) in lost {
            if let Some(p) = self.conns.remove(&k) {
                if why != CLOSED || !self.final_eos {
                    tracing::info!(
                        "message edge {}: replica {:016x} gone ({why})",
                        self.edge,
                        p.replica
                    );
                }
            }
        }
        let mut failed = vec![];
        for (k, p) in self.conns.iter_mut() {
            if p.received > p.acked {
                p.out.extend_from_slice(&frame::control(
                    FrameType::MsgAck,
                    p.received,
                    0,
                    &[],
                    false,
                ));
                p.acked = p.received;
            } else if now.duration_since(p.last_tx) >= HEARTBEAT {
                p.out
                    .extend_from_slice(&frame::control(FrameType::Heartbeat, 0, 0, &[], false));
            }
            if let Err(e) = send(&mut p.conn, &mut p.out, &mut p.last_tx, p.last_rx, now) {
                failed.push((*k, e));
            }
        }
        for (k, _) in failed {
            self.conns.remove(&k);
        }
        EdgeStats::set(&self.stats.in_flight, self.held.len() as u64);
        self.rate.update(now, self.delivered, &self.stats.rate_bits);
        if self.final_eos && self.conns.values().all(|p| p.out.is_empty()) {
            // Tell every replica still connected that this is the end (a
            // replica whose end of stream comes later need not send it).
            let bye = frame::control(FrameType::Close, 0, 0, b"end of stream", false);
            for p in self.conns.values_mut() {
                flush_blocking(&mut p.conn, &bye, Duration::from_millis(100));
            }
            for mut inc in self.served.take_all() {
                flush_blocking(&mut inc.conn, &bye, Duration::from_millis(100));
            }
            if !self.held.is_empty() {
                tracing::warn!(
                    "message edge {}: end of stream with {} result(s) held for lower ids that \
                     never came (ids are not 1, 2, 3, …): delivering them now",
                    self.edge,
                    self.held.len()
                );
                for (_, m) in std::mem::take(&mut self.held) {
                    self.post(io, m);
                }
            }
            tracing::info!(
                "message edge {}: end of stream: {} result(s) delivered, {} duplicate(s) dropped",
                self.edge,
                self.delivered,
                self.duplicates
            );
            return Ok(Work::Done);
        }
        let next = self
            .conns
            .values()
            .map(|p| p.last_tx + HEARTBEAT)
            .min()
            .unwrap_or(now + Duration::from_millis(500))
            .min(now + Duration::from_millis(500));
        Ok(Work::Deadline(next.max(now + Duration::from_millis(1))))
    }

    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "delivered" => Some(Pmt::I64(self.delivered as i64)),
            "duplicates" => Some(Pmt::I64(self.duplicates as i64)),
            "replicas" => Some(Pmt::I64(self.conns.len() as i64)),
            "watermark" => Some(Pmt::I64(self.dedup.watermark)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keeps_a_watermark_and_only_the_ids_above_it() {
        let mut d = Dedup::default();
        // Ids arrive out of order in windows of 8, every one twice.
        let mut most_above = 0;
        for base in (0..1000).step_by(8) {
            for k in [3, 1, 0, 7, 2, 6, 4, 5] {
                let id = base + k + 1;
                assert!(d.first(id), "{id} is new");
                assert!(!d.first(id), "{id} again is a duplicate");
                most_above = most_above.max(d.above.len());
            }
            assert_eq!(d.watermark, base + 8, "a window completes the watermark");
            assert!(d.above.is_empty());
        }
        assert!(most_above < 8, "memory is bounded by what is in flight");
        assert!(!d.first(1), "far below the watermark: still a duplicate");
    }

    #[test]
    fn the_replica_track_reports_input_messages_when_their_result_is_acknowledged() {
        let t = ReplicaTrack::default();
        t.track(7, 1);
        t.track(8, 2);
        t.track(7, 5); // message 7 redelivered to this replica
        assert_eq!(t.in_flight(), 3);
        t.complete(7);
        let mut done = t.take_done();
        done.sort_unstable();
        assert_eq!(done, vec![1, 5]);
        assert_eq!(t.in_flight(), 1);
        t.complete(99); // not tracked here: nothing
        assert!(t.take_done().is_empty());
        assert!(!t.is_final());
        t.set_final();
        assert!(t.is_final());
    }
}
