//! The scheduler: runs a [`Graph`] on a set of worker threads.
//!
//! Each worker owns a contiguous run of blocks in topological order and calls
//! them in turn while any makes progress; with nothing to do it parks until a
//! neighbouring block on another thread produces, consumes or sends a message
//! (no spinning). The pool scheduler uses one worker per core; the
//! thread-per-block scheduler gives every block its own worker. Both are the
//! same code; `bench/` measures them (docs/benchmarks.md).
//!
//! End of stream: a block finishes when it says so, when all readers of all
//! its outputs are done, or when it cannot progress and one of its inputs has
//! ended. Finishing ends its outputs (readers drain, then finish), releases its
//! inputs (so upstream learns nobody reads) and sends end of stream along its
//! message outputs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowmesh_model::catalog::{BlockDescriptor, ResolvedKind, TagPolicy};
use flowmesh_model::spec::SchedulerKind;
use flowmesh_model::{params, Pmt};

use crate::block::{Block, BlockError, Work};
use crate::blocks::ScheduledSet;
use crate::buffer::{self, Shared};
use crate::graph::Graph;
use crate::io::{InputPort, OutputPort, Poster, WorkIo};
use crate::message::{Inbox, InboxItem, MsgOutPort};
use crate::signal::{park, Signal};
use crate::tag::{keys, map_offset, Tag};

/// Errors of a run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("block `{block}` failed: {message}")]
    Block { block: String, message: String },
    #[error("block `{block}` panicked: {message}")]
    Panic { block: String, message: String },
    #[error("could not allocate the buffer of {block}.{port}: {message}")]
    Buffer {
        block: String,
        port: String,
        message: String,
    },
    #[error("no block named `{0}`")]
    NoSuchBlock(String),
    #[error("block `{block}`: {message}")]
    Param { block: String, message: String },
    #[error("the graph has finished")]
    Finished,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

struct Node {
    name: String,
    block: Box<dyn Block>,
    inputs: Vec<InputPort>,
    outputs: Vec<OutputPort>,
    msg_out: Vec<MsgOutPort>,
    inbox: Arc<Inbox>,
    signal: Arc<Signal>,
    /// Per message input: connected senders, and how many have ended.
    msg_senders: Vec<usize>,
    msg_eos: Vec<usize>,
    cmd_port: Option<usize>,
    tag_policy: TagPolicy,
    rate: (u64, u64),
    live: bool,
    descriptor: Option<&'static BlockDescriptor>,
    started: bool,
    finished: bool,
    sleep_until: Option<Instant>,
    deadline: Option<Instant>,
    /// Parameter changes still to apply at item offsets, in offset order
    /// ([`ScheduledSet`]).
    scheduled: std::collections::VecDeque<ScheduledSet>,
    /// Time spent in `work` (ns), and where [`BlockStats`] reads it (only
    /// this node's thread writes it: a plain store, no locked add).
    busy_ns: u64,
    busy: Arc<AtomicU64>,
}

/// Live counters of one block, readable while the graph runs.
#[derive(Clone)]
pub struct BlockStats {
    pub name: String,
    inputs: Vec<(Arc<Shared>, usize)>,
    outputs: Vec<Arc<Shared>>,
    busy: Arc<AtomicU64>,
}

impl BlockStats {
    /// Items consumed on the first stream input (0 for sources).
    pub fn items_in(&self) -> u64 {
        self.inputs.first().map(|(s, i)| s.read(*i)).unwrap_or(0)
    }
    /// Items produced on the first stream output (0 for sinks).
    pub fn items_out(&self) -> u64 {
        self.outputs.first().map(|s| s.written()).unwrap_or(0)
    }
    /// Time the block has spent in its `work` calls (updated after each).
    pub fn busy(&self) -> Duration {
        Duration::from_nanos(self.busy.load(Ordering::Relaxed))
    }
}

/// [`Ctx::stop`]: the graph runs.
const RUN: u8 = 0;
/// [`Ctx::stop`]: end of stream ([`Handle::stop`]).
const STOP: u8 = 1;
/// [`Ctx::stop`]: a planned stop for a restart ([`Handle::suspend`]).
const SUSPEND: u8 = 2;

struct Ctx {
    /// [`RUN`], [`STOP`] or [`SUSPEND`]: one load per block visit tells both
    /// whether sources end and whether the stop is a planned one.
    stop: AtomicU8,
    /// Workers still running; requests to a graph with none are refused.
    alive: std::sync::atomic::AtomicUsize,
    /// Signalled when the last worker ends.
    ended: (Mutex<bool>, std::sync::Condvar),
    abort: AtomicBool,
    error: Mutex<Option<Error>>,
    signals: Vec<Arc<Signal>>,
}

impl Ctx {
    fn fail(&self, e: Error) {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        self.abort.store(true, Ordering::Release);
        for s in &self.signals {
            s.notify();
        }
    }
}

/// A handle to a running graph: set and get parameters, stop, read counters.
/// Cheap to clone and usable from any thread.
#[derive(Clone)]
pub struct Handle {
    ctx: Arc<Ctx>,
    inboxes: Arc<Vec<(String, Arc<Inbox>)>>,
    /// Per block (in the order of `inboxes`): its message inputs' names.
    msg_inputs: Arc<Vec<Vec<String>>>,
    stats: Arc<Vec<BlockStats>>,
}

impl Handle {
    fn inbox(&self, block: &str) -> Result<&Arc<Inbox>> {
        self.inboxes
            .iter()
            .find(|(n, _)| n == block)
            .map(|(_, i)| i)
            .ok_or_else(|| Error::NoSuchBlock(block.to_string()))
    }

    /// Sets a parameter of a running block. Returns the item offset (on the
    /// block's first output, or first input for sinks) from which the new
    /// value applies; a `param` tag marks that offset on every output.
    pub fn set(&self, block: &str, name: &str, value: impl Into<Pmt>) -> Result<u64> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.inbox(block)?.push(InboxItem::Set {
            name: name.to_string(),
            value: value.into(),
            reply: tx,
        });
        self.reply(block, rx)
    }

    /// Waits for a block's answer, or fails once no worker is left to give one.
    fn reply<T>(&self, block: &str, rx: std::sync::mpsc::Receiver<Result<T, String>>) -> Result<T> {
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(r) => {
                    return r.map_err(|message| Error::Param {
                        block: block.to_string(),
                        message,
                    })
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::Finished)
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if self.ctx.alive.load(Ordering::Acquire) == 0 {
                        return Err(Error::Finished);
                    }
                }
            }
        }
    }

    /// Reads a parameter of a running block.
    pub fn get(&self, block: &str, name: &str) -> Result<Pmt> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.inbox(block)?.push(InboxItem::Get {
            name: name.to_string(),
            reply: tx,
        });
        self.reply(block, rx)
    }

    /// Asks the graph to stop: sources and live blocks end, the rest drains.
    /// This is the end of the stream: network sinks send it (EOS) to their
    /// consumers once everything went out.
    pub fn stop(&self) {
        self.ctx.stop.fetch_max(STOP, Ordering::AcqRel);
        for s in &self.ctx.signals {
            s.notify();
        }
    }

    /// A planned stop for a restart (SIGTERM), not the end of the stream:
    /// sources (network sources too) stop taking input, what is inside the
    /// graph drains into the sinks, and blocks that end from now on are
    /// told so ([`Block::suspend`] instead of `stop`; `work` sees
    /// [`WorkIo::stopping_for_restart`]): file sinks sync their files,
    /// network sinks hand what they hold to their consumers and close
    /// without an end of stream, network sources close without telling
    /// their producers they finished. Wins over [`Handle::stop`].
    pub fn suspend(&self) {
        self.ctx.stop.fetch_max(SUSPEND, Ordering::AcqRel);
        for s in &self.ctx.signals {
            s.notify();
        }
    }

    /// True once [`Handle::suspend`] was called.
    pub fn is_suspending(&self) -> bool {
        self.ctx.stop.load(Ordering::Acquire) == SUSPEND
    }

    /// Per-block counters.
    pub fn stats(&self) -> &[BlockStats] {
        &self.stats
    }

    /// Delivers `msg` to the message input `port` of a running block, as if
    /// a connected block had posted it (a `cmd` port sets parameters).
    pub fn post(&self, block: &str, port: &str, msg: Pmt) -> Result<()> {
        let i = self
            .inboxes
            .iter()
            .position(|(n, _)| n == block)
            .ok_or_else(|| Error::NoSuchBlock(block.to_string()))?;
        let names = &self.msg_inputs[i];
        let p = names
            .iter()
            .position(|n| n == port)
            .ok_or_else(|| Error::Param {
                block: block.to_string(),
                message: if names.is_empty() {
                    format!("no message input `{port}`; the block has no message inputs")
                } else {
                    format!(
                        "no message input `{port}`; its message inputs are: {}",
                        names.join(", ")
                    )
                },
            })?;
        if self.is_finished() {
            return Err(Error::Finished);
        }
        self.inboxes[i].1.push(InboxItem::Msg { port: p, msg });
        Ok(())
    }

    /// True once every worker thread of the graph has ended.
    pub fn is_finished(&self) -> bool {
        self.ctx.alive.load(Ordering::Acquire) == 0
    }
}

/// A started graph.
pub struct Running {
    handle: Handle,
    /// Keeps the environment (network listener, served edges) alive.
    _env: crate::blocks::Env,
    workers: Vec<std::thread::JoinHandle<Vec<Node>>>,
    started: Instant,
}

/// What a finished run leaves: timing, counters, and the blocks themselves
/// (for reading collected data with [`Report::get`]).
pub struct Report {
    pub elapsed: Duration,
    pub stats: Vec<BlockStats>,
    nodes: Vec<Node>,
}

impl Report {
    /// Reads a parameter or collected value (`vector_sink`'s `data`) of a
    /// finished block.
    pub fn get(&self, block: &str, name: &str) -> Option<Pmt> {
        self.nodes
            .iter()
            .find(|n| n.name == block)
            .and_then(|n| n.block.get(name))
    }
}

impl Running {
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// True once every worker has ended.
    pub fn is_finished(&self) -> bool {
        self.workers.iter().all(|w| w.is_finished())
    }

    /// Waits up to `timeout` for the graph to end; true if it has.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let (m, cv) = &self.handle.ctx.ended;
        let g = m.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = cv
            .wait_timeout_while(g, timeout, |ended| !*ended)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }

    /// Waits for the graph to end.
    pub fn wait(self) -> Result<Report> {
        let mut nodes = vec![];
        let mut panicked = None;
        for w in self.workers {
            match w.join() {
                Ok(n) => nodes.extend(n),
                Err(p) => panicked = Some(panic_message(&*p)),
            }
        }
        let elapsed = self.started.elapsed();
        if let Some(e) = self
            .handle
            .ctx
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            return Err(e);
        }
        if let Some(message) = panicked {
            return Err(Error::Panic {
                block: "(scheduler)".into(),
                message,
            });
        }
        Ok(Report {
            elapsed,
            stats: self.handle.stats.to_vec(),
            nodes,
        })
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Runs a graph to completion.
pub fn run(graph: Graph) -> Result<Report> {
    start(graph)?.wait()
}

/// Assigns nodes (in topological order) to `workers` contiguous groups of
/// about equal estimated cost.
fn assign(graph: &Graph, workers: usize) -> Vec<Vec<usize>> {
    let order = graph.topological_order();
    if workers <= 1 {
        return vec![order];
    }
    // Cost estimate: bytes touched per item. Sources write, sinks read,
    // everything else reads and writes.
    let cost = |i: usize| -> f64 {
        let b = &graph.nodes[i].built;
        let ins = b
            .inputs
            .iter()
            .filter(|p| matches!(p.kind, ResolvedKind::Stream(_)))
            .count();
        let outs = b
            .outputs
            .iter()
            .filter(|p| matches!(p.kind, ResolvedKind::Stream(_)))
            .count();
        0.25 + ins as f64 * 0.5 + outs as f64
    };
    let total: f64 = order.iter().map(|&i| cost(i)).sum();
    let mut groups: Vec<Vec<usize>> = vec![vec![]];
    let mut acc = 0.0;
    let mut done = 0.0;
    for (k, &i) in order.iter().enumerate() {
        let remaining_groups = workers - groups.len();
        let target = (total - done) / (remaining_groups + 1) as f64;
        let c = cost(i);
        let left = order.len() - k;
        if !groups.last().unwrap().is_empty()
            && remaining_groups > 0
            && (left <= remaining_groups || (acc + c - target) > (target - acc))
        {
            done += acc;
            acc = 0.0;
            groups.push(vec![]);
        }
        acc += c;
        groups.last_mut().unwrap().push(i);
    }
    groups
}

/// Starts a graph on its worker threads and returns at once.
pub fn start(graph: Graph) -> Result<Running> {
    let threads = match graph.config.scheduler {
        SchedulerKind::ThreadPerBlock => graph.nodes.len().max(1),
        SchedulerKind::Pool => {
            let t = if graph.config.threads > 0 {
                graph.config.threads
            } else {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            };
            t.clamp(1, graph.nodes.len().max(1))
        }
    };
    let groups = match graph.config.scheduler {
        SchedulerKind::ThreadPerBlock => graph
            .topological_order()
            .into_iter()
            .map(|i| vec![i])
            .collect(),
        SchedulerKind::Pool => assign(&graph, threads),
    };
    let signals: Vec<Arc<Signal>> = groups.iter().map(|_| Arc::new(Signal::new())).collect();
    let mut worker_of = vec![0usize; graph.nodes.len()];
    for (w, g) in groups.iter().enumerate() {
        for &i in g {
            worker_of[i] = w;
        }
    }
    let sig = |node: usize| signals[worker_of[node]].clone();

    let env = graph.env.clone();
    let n = graph.nodes.len();
    let inboxes: Vec<Arc<Inbox>> = (0..n).map(|i| Arc::new(Inbox::new(sig(i)))).collect();
    let mut inputs: Vec<Vec<Option<InputPort>>> = vec![];
    let mut outputs: Vec<Vec<Option<OutputPort>>> = vec![];
    let mut msg_outs: Vec<Vec<MsgOutPort>> = vec![];
    // Port index maps: position among all ports -> index among stream or message ports.
    let mut in_index: Vec<Vec<usize>> = vec![];
    let mut out_index: Vec<Vec<usize>> = vec![];
    let mut msg_senders: Vec<Vec<usize>> = vec![];
    for node in &graph.nodes {
        let (idx, s, m) = split_ports(&node.built.inputs);
        inputs.push((0..s).map(|_| None).collect());
        msg_senders.push(vec![0; m]);
        in_index.push(idx);
        let (idx, s, m) = split_ports(&node.built.outputs);
        outputs.push((0..s).map(|_| None).collect());
        msg_outs.push((0..m).map(|_| MsgOutPort::default()).collect());
        out_index.push(idx);
    }

    // Blocks downstream of a live block (a throttle, a live source): their
    // readers may not cap them with a horizon, or a live source would drop
    // items long before the buffers and an edge's retention are full.
    let mut live_fed: Vec<bool> = graph.nodes.iter().map(|n| n.built.live).collect();
    for n in graph.topological_order() {
        if graph
            .stream_edges
            .iter()
            .any(|e| e.to.0 == n && live_fed[e.from.0])
        {
            live_fed[n] = true;
        }
    }

    // Stream buffers: one per connected or unconnected output port.
    for (ni, node) in graph.nodes.iter().enumerate() {
        for (pi, port) in node.built.outputs.iter().enumerate() {
            let ResolvedKind::Stream(st) = port.kind else {
                continue;
            };
            let readers: Vec<_> = graph
                .stream_edges
                .iter()
                .filter(|e| e.from == (ni, pi))
                .collect();
            // Edges between threads get room for the wake-up latency of the
            // other thread; edges within a thread stay small and cache-hot.
            let cross = readers.iter().any(|e| worker_of[e.to.0] != worker_of[ni]);
            let base = if cross {
                graph
                    .config
                    .buffer_bytes
                    .max(graph.config.cross_thread_bytes)
            } else {
                graph.config.buffer_bytes
            };
            let wanted = readers
                .iter()
                .map(|e| graph.nodes[e.to.0].built.min_input_bytes)
                .max()
                .unwrap_or(0)
                .max(node.built.min_output_bytes);
            let bytes = base.max(wanted).max(st.item_size() * 8);
            let (w, rs) = buffer::channel(
                format!("{}.{}", node.name, port.name),
                bytes,
                st.item_size(),
                sig(ni),
                readers.iter().map(|e| sig(e.to.0)).collect(),
            )
            .map_err(|e| Error::Buffer {
                block: node.name.clone(),
                port: port.name.clone(),
                message: e.to_string(),
            })?;
            outputs[ni][out_index[ni][pi]] = Some(OutputPort::new(w, st));
            for (e, mut r) in readers.iter().zip(rs) {
                if live_fed[ni] {
                    r.forbid_horizon();
                }
                let (tn, tp) = e.to;
                inputs[tn][in_index[tn][tp]] = Some(InputPort::new(r, st));
            }
        }
    }
    for e in &graph.message_edges {
        let (fn_, fp) = e.from;
        let (tn, tp) = e.to;
        let m = in_index[tn][tp];
        msg_outs[fn_][out_index[fn_][fp]]
            .subscribers
            .push((inboxes[tn].clone(), m));
        msg_senders[tn][m] += 1;
    }

    let mut stats = vec![];
    let mut nodes: Vec<Option<Node>> = vec![];
    let mut names = vec![];
    let mut msg_inputs = vec![];
    for (ni, ((((gnode, ins), outs), mo), senders)) in graph
        .nodes
        .into_iter()
        .zip(inputs)
        .zip(outputs)
        .zip(msg_outs)
        .zip(msg_senders)
        .enumerate()
    {
        // Unconnected stream inputs are rejected by validation; a graph built
        // in code gets an ended empty stream there.
        let ins: Vec<InputPort> = ins
            .into_iter()
            .enumerate()
            .map(|(k, p)| {
                p.unwrap_or_else(|| {
                    let st = gnode
                        .built
                        .inputs
                        .iter()
                        .filter_map(|p| match p.kind {
                            ResolvedKind::Stream(s) => Some(s),
                            _ => None,
                        })
                        .nth(k)
                        .expect("stream input exists");
                    let (w, mut rs) = buffer::channel(
                        format!("{} (unconnected input {k})", gnode.name),
                        4096,
                        st.item_size(),
                        sig(ni),
                        vec![sig(ni)],
                    )
                    .expect("small buffer");
                    w.finish();
                    InputPort::new(rs.remove(0), st)
                })
            })
            .collect();
        let outs: Vec<OutputPort> = outs
            .into_iter()
            .map(|p| p.expect("output buffer"))
            .collect();
        let busy = Arc::new(AtomicU64::new(0));
        msg_inputs.push(
            gnode
                .built
                .inputs
                .iter()
                .filter(|p| p.kind == ResolvedKind::Message)
                .map(|p| p.name.clone())
                .collect::<Vec<String>>(),
        );
        stats.push(BlockStats {
            name: gnode.name.clone(),
            inputs: ins
                .iter()
                .map(|p| (p.reader.shared().clone(), reader_index(p)))
                .collect(),
            outputs: outs.iter().map(|p| p.writer.shared().clone()).collect(),
            busy: busy.clone(),
        });
        let cmd_port = gnode
            .built
            .inputs
            .iter()
            .position(|p| p.name == "cmd" && p.kind == ResolvedKind::Message)
            .map(|p| in_index[ni][p]);
        names.push((gnode.name.clone(), inboxes[ni].clone()));
        nodes.push(Some(Node {
            name: gnode.name,
            block: gnode.built.block,
            inputs: ins,
            outputs: outs,
            msg_eos: vec![0; senders.len()],
            msg_senders: senders,
            msg_out: mo,
            inbox: inboxes[ni].clone(),
            signal: sig(ni),
            cmd_port,
            tag_policy: gnode.built.tag_policy,
            rate: gnode.built.rate,
            live: gnode.built.live,
            descriptor: gnode.descriptor,
            started: false,
            finished: false,
            sleep_until: None,
            deadline: None,
            scheduled: gnode.built.scheduled.into(),
            busy_ns: 0,
            busy,
        }));
    }

    let ctx = Arc::new(Ctx {
        stop: AtomicU8::new(RUN),
        alive: std::sync::atomic::AtomicUsize::new(groups.len()),
        ended: (Mutex::new(false), std::sync::Condvar::new()),
        abort: AtomicBool::new(false),
        error: Mutex::new(None),
        signals: signals.clone(),
    });
    let handle = Handle {
        ctx: ctx.clone(),
        inboxes: Arc::new(names),
        msg_inputs: Arc::new(msg_inputs),
        stats: Arc::new(stats),
    };
    let started = Instant::now();
    let mut workers = vec![];
    for (w, group) in groups.into_iter().enumerate() {
        let my: Vec<Node> = group
            .iter()
            .map(|&i| nodes[i].take().expect("node assigned once"))
            .collect();
        let ctx = ctx.clone();
        let signal = signals[w].clone();
        let name = format!(
            "fm-{}",
            my.first().map(|n| n.name.as_str()).unwrap_or("idle")
        );
        let h = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || worker(my, signal, ctx))
            .map_err(|e| Error::Block {
                block: "(scheduler)".into(),
                message: format!("cannot start a worker thread: {e}"),
            })?;
        workers.push(h);
    }
    Ok(Running {
        handle,
        _env: env,
        workers,
        started,
    })
}

/// For each port, its index among the ports of its kind (stream or
/// message); and how many stream and message ports there are.
fn split_ports(ports: &[flowmesh_model::catalog::ResolvedPort]) -> (Vec<usize>, usize, usize) {
    let (mut s, mut m) = (0, 0);
    let idx = ports
        .iter()
        .map(|p| match p.kind {
            ResolvedKind::Stream(_) => {
                s += 1;
                s - 1
            }
            ResolvedKind::Message => {
                m += 1;
                m - 1
            }
        })
        .collect();
    (idx, s, m)
}

fn reader_index(p: &InputPort) -> usize {
    p.reader.index()
}

fn worker(mut nodes: Vec<Node>, signal: Arc<Signal>, ctx: Arc<Ctx>) -> Vec<Node> {
    signal.bind_current();
    loop {
        if ctx.abort.load(Ordering::Acquire) {
            break;
        }
        let mut progress = false;
        let mut deadline: Option<Instant> = None;
        let mut all_done = true;
        for node in nodes.iter_mut() {
            match step(node, &ctx) {
                Ok(p) => progress |= p,
                Err(e) => {
                    ctx.fail(e);
                    break;
                }
            }
            if !node.finished {
                all_done = false;
                for t in [node.sleep_until, node.deadline].into_iter().flatten() {
                    deadline = Some(deadline.map_or(t, |d: Instant| d.min(t)));
                }
            }
        }
        if all_done || ctx.abort.load(Ordering::Acquire) {
            break;
        }
        if !progress {
            park(deadline);
        }
    }
    // Reply to pending set/get requests so no caller hangs.
    for node in nodes.iter_mut() {
        drain_inbox_after_end(node);
    }
    if ctx.alive.fetch_sub(1, Ordering::AcqRel) == 1 {
        let (m, cv) = &ctx.ended;
        *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
    nodes
}

fn drain_inbox_after_end(node: &mut Node) {
    while let Some(item) = node.inbox.pop() {
        match item {
            InboxItem::Set { reply, .. } => {
                let _ = reply.send(Err("the block has finished".into()));
            }
            InboxItem::Get { name, reply } => {
                let _ = reply.send(
                    node.block
                        .get(&name)
                        .ok_or_else(|| format!("no parameter `{name}`")),
                );
            }
            _ => {}
        }
    }
}

/// The coarse monotonic clock in ns, for busy time: a read costs a few ns
/// (a precise clock read costs several times more, twice per work call);
/// it advances once per kernel tick, so each work call adds the ticks it
/// spans, and over many calls the sum is the true busy time (a call's start
/// falls anywhere within a tick).
fn coarse_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn guarded<T>(name: &str, f: impl FnOnce() -> Result<T, BlockError>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Block {
            block: name.to_string(),
            message: e.to_string(),
        }),
        Err(p) => Err(Error::Panic {
            block: name.to_string(),
            message: panic_message(&*p),
        }),
    }
}

/// Applies a parameter change; returns the offset where it takes effect.
/// Where a block stands for parameter changes: items of its first stream
/// output, or of its first stream input for a block without outputs.
fn position(node: &Node) -> u64 {
    node.outputs
        .first()
        .map(|o| o.writer.position())
        .or_else(|| node.inputs.first().map(|i| i.reader.position()))
        .unwrap_or(0)
}

/// Applies the scheduled parameter changes the block has reached, and
/// limits this `work` call (after its ports were refreshed) so that it stops
/// at the next one: output room (or, for a block without outputs, input
/// items) up to that offset. Returns whether it limited anything. One check
/// per `work` call, none per item.
fn run_scheduled(node: &mut Node) -> bool {
    let at = position(node);
    while node.scheduled.front().is_some_and(|s| s.offset <= at) {
        let s = node.scheduled.pop_front().expect("checked");
        match apply_set(node, &s.name, &s.value) {
            Ok(offset) => tracing::info!(
                block = %node.name,
                "{} = {} from item {offset} (scheduled at {})",
                s.name,
                s.value,
                s.offset
            ),
            Err(e) => tracing::warn!(
                block = %node.name,
                "scheduled change of {} at item {} not applied: {e}",
                s.name,
                s.offset
            ),
        }
    }
    let Some(next) = node.scheduled.front() else {
        return false;
    };
    let room = usize::try_from(next.offset - at).unwrap_or(usize::MAX);
    let mut limited = false;
    if node.outputs.is_empty() {
        for i in node.inputs.iter_mut() {
            if i.avail > room {
                i.avail = room;
                // More is coming after the change: not the end yet.
                i.writer_done = false;
                limited = true;
            }
        }
    } else {
        for o in node.outputs.iter_mut() {
            if o.space > room {
                o.space = room;
                limited = true;
            }
        }
    }
    limited
}

fn apply_set(node: &mut Node, name: &str, value: &Pmt) -> Result<u64, String> {
    let value = match node.descriptor {
        Some(d) => {
            let pd = d.param_descriptor(name).ok_or_else(|| {
                format!("no parameter `{name}` (see `flowmesh blocks {}`)", d.kind)
            })?;
            if !pd.settable {
                return Err(format!(
                    "parameter `{name}` cannot be changed while running"
                ));
            }
            params::coerce_pmt(pd, value).map_err(|m| format!("parameter `{name}`: {m}"))?
        }
        None => value.clone(),
    };
    let offset = position(node);
    let n = node.name.clone();
    guarded(&n, || node.block.set(name, &value)).map_err(|e| match e {
        Error::Block { message, .. } | Error::Panic { message, .. } => message,
        other => other.to_string(),
    })?;
    let tag = Tag::new(offset, keys::PARAM, Pmt::map([(name, value)]));
    for o in &node.outputs {
        o.writer.add_tag(Tag {
            offset: o.writer.position(),
            ..tag.clone()
        });
    }
    Ok(offset)
}

fn handle_inbox(node: &mut Node) -> Result<bool> {
    let mut any = false;
    while let Some(item) = node.inbox.pop() {
        any = true;
        match item {
            InboxItem::Set { name, value, reply } => {
                let r = if node.finished {
                    Err("the block has finished".to_string())
                } else {
                    apply_set(node, &name, &value)
                };
                // A new value may change when the block wants to run.
                node.sleep_until = None;
                let _ = reply.send(r);
            }
            InboxItem::Get { name, reply } => {
                let _ = reply.send(
                    node.block
                        .get(&name)
                        .ok_or_else(|| format!("no parameter `{name}`")),
                );
            }
            InboxItem::Eos { port } => node.msg_eos[port] += 1,
            InboxItem::Msg { port, msg } => {
                if node.finished {
                    continue;
                }
                if Some(port) == node.cmd_port {
                    // {name: value, ...} or [name, value] (GNU Radio's pair).
                    let pairs: Vec<(String, Pmt)> = match msg {
                        Pmt::Map(m) => m.into_iter().collect(),
                        Pmt::List(l) if l.len() == 2 && l[0].as_str().is_some() => {
                            vec![(l[0].as_str().unwrap().to_string(), l[1].clone())]
                        }
                        other => {
                            tracing::warn!(block = %node.name, "ignoring cmd message {other}: expected a map {{name: value}}");
                            vec![]
                        }
                    };
                    for (k, v) in pairs {
                        if let Err(e) = apply_set(node, &k, &v) {
                            tracing::warn!(block = %node.name, "cmd message: {e}");
                        }
                    }
                    continue;
                }
                let name = node.name.clone();
                let mut poster = Poster {
                    msg_out: &mut node.msg_out,
                };
                let block = &mut node.block;
                guarded(&name, || block.message(port, msg, &mut poster))?;
            }
        }
    }
    Ok(any)
}

/// Carries the end-of-stream tags of inputs that have ended (tags at or
/// past the last item, e.g. a final `gap`) to the end of the outputs, by
/// the block's tag policy: there is no later item to put them on. Only
/// inputs read to their end carry them, or, when the block ended because it
/// could do nothing more with an ended input (`drained`: a decimator's
/// incomplete last group, a filter's history), inputs with such leftovers;
/// a block that ended on its own with input left (`head`) carries none.
fn carry_end_tags(node: &mut Node, drained: bool) {
    if node.tag_policy != TagPolicy::AllToAll && node.tag_policy != TagPolicy::OneToOne {
        return;
    }
    for (i, inp) in node.inputs.iter_mut().enumerate() {
        if !inp.reader.writer_done() {
            continue;
        }
        // Pulls the tags queued with the last items.
        let left = inp.reader.available() as u64;
        if left > 0 && !drained {
            continue;
        }
        let end = inp.reader.position() + left;
        for t in inp.reader.tags().iter().filter(|t| t.offset >= end) {
            for (j, o) in node.outputs.iter().enumerate() {
                if node.tag_policy == TagPolicy::AllToAll || i == j {
                    o.writer.add_tag(Tag {
                        offset: o.writer.position(),
                        ..t.clone()
                    });
                }
            }
        }
    }
}

fn finish(node: &mut Node, planned: bool) -> Result<()> {
    finish_with(node, false, planned)
}

/// Finishes a block; `drained`: it ended because it could do nothing more
/// with an input that has ended (see [`carry_end_tags`]); `planned`: the
/// graph is stopping for a restart ([`Handle::suspend`]), so the block's
/// `suspend` is called instead of its `stop`.
fn finish_with(node: &mut Node, drained: bool, planned: bool) -> Result<()> {
    if node.finished {
        return Ok(());
    }
    node.finished = true;
    carry_end_tags(node, drained);
    let name = node.name.clone();
    let r = if node.started && planned {
        guarded(&name, || node.block.suspend())
    } else if node.started {
        guarded(&name, || node.block.stop())
    } else {
        Ok(())
    };
    for o in &node.outputs {
        o.writer.finish();
    }
    for i in &mut node.inputs {
        i.reader.finish();
    }
    for m in &node.msg_out {
        m.finish();
    }
    r
}

/// One visit of the scheduler to a block. Returns whether anything moved.
fn step(node: &mut Node, ctx: &Ctx) -> Result<bool> {
    let mut progress = false;
    if node.inbox.pending() {
        progress |= handle_inbox(node)?;
    }
    if node.finished {
        return Ok(progress);
    }
    if !node.started {
        node.started = true;
        let name = node.name.clone();
        guarded(&name, || node.block.start())?;
    }
    let is_source = node.inputs.is_empty();
    let mode = ctx.stop.load(Ordering::Relaxed);
    let planned = mode == SUSPEND;
    if mode != RUN && (is_source || node.live) {
        finish(node, planned)?;
        return Ok(true);
    }
    // Message-driven blocks (no streams at all, only message inputs) end when
    // every sender has ended, or at once when nothing is connected to them.
    // (They get one more `work` call to flush, and may ask for more time by
    // returning `Work::Deadline`.)
    let messages_ended = !node.msg_senders.is_empty()
        && node
            .msg_senders
            .iter()
            .zip(&node.msg_eos)
            .all(|(s, e)| e >= s);
    let message_driven_end = is_source && node.outputs.is_empty() && messages_ended;
    // Nobody reads our outputs any more: end now, even in the middle of a
    // sleep (a throttle between bursts would otherwise linger up to a burst).
    if !node.outputs.is_empty() && node.outputs.iter().all(|o| o.writer.all_readers_done()) {
        finish(node, planned)?;
        return Ok(true);
    }
    if let Some(t) = node.sleep_until {
        if Instant::now() < t {
            return Ok(progress);
        }
        node.sleep_until = None;
    }
    for i in node.inputs.iter_mut() {
        i.refresh();
    }
    let mut all_space = true;
    for o in node.outputs.iter_mut() {
        all_space &= o.refresh() > 0;
    }
    if !node.scheduled.is_empty() && run_scheduled(node) {
        // Held back before a change: not a block that cannot move.
        all_space = false;
    }

    let name = node.name.clone();
    let mut io = WorkIo {
        inputs: &mut node.inputs,
        outputs: &mut node.outputs,
        msg_out: &mut node.msg_out,
        posted: 0,
        signal: &node.signal,
        messages_ended,
        planned,
    };
    let block = &mut node.block;
    let began = coarse_ns();
    let result = guarded(&name, || block.work(&mut io));
    let spent = coarse_ns().wrapping_sub(began);
    if spent > 0 {
        node.busy_ns += spent;
        node.busy.store(node.busy_ns, Ordering::Relaxed);
    }
    let result = result?;
    let posted = io.posted;

    // Tags: propagate what was consumed, then publish outputs, then inputs.
    let mut moved = posted > 0;
    if node.tag_policy == TagPolicy::AllToAll || node.tag_policy == TagPolicy::OneToOne {
        let (interp, decim) = node.rate;
        for (i, inp) in node.inputs.iter().enumerate() {
            if inp.consumed == 0 || inp.reader.tags().is_empty() {
                continue;
            }
            let lo = inp.reader.position();
            let hi = lo + inp.consumed as u64;
            for t in inp
                .reader
                .tags()
                .iter()
                .filter(|t| t.offset >= lo && t.offset < hi)
            {
                let mapped = Tag {
                    offset: map_offset(t.offset, interp, decim),
                    ..t.clone()
                };
                match node.tag_policy {
                    TagPolicy::AllToAll => {
                        for o in node.outputs.iter_mut() {
                            o.tags.push(mapped.clone());
                        }
                    }
                    _ => {
                        if let Some(o) = node.outputs.get_mut(i) {
                            o.tags.push(mapped.clone());
                        }
                    }
                }
            }
        }
    }
    for o in node.outputs.iter_mut() {
        // One lock per reader for the whole batch.
        o.writer.add_tags(&mut o.tags);
        if o.produced > 0 {
            moved = true;
            o.writer.produce(o.produced);
            o.produced = 0;
        }
    }
    let mut input_ended = false;
    for i in node.inputs.iter_mut() {
        if i.consumed > 0 {
            moved = true;
            i.reader.consume(i.consumed);
            i.consumed = 0;
        }
        input_ended |= i.writer_done;
    }
    progress |= moved;
    node.deadline = None;
    match result {
        Work::Done => finish(node, planned)?,
        Work::SleepUntil(t) => node.sleep_until = Some(t),
        Work::Deadline(t) => node.deadline = Some(t),
        Work::Ok if message_driven_end => {
            finish(node, planned)?;
            progress = true;
        }
        Work::Ok => {
            if !moved && input_ended && all_space {
                // It could not move although every output has room, and an
                // input will never get more: this block is done.
                finish_with(node, true, planned)?;
                progress = true;
            }
        }
    }
    Ok(progress)
}
