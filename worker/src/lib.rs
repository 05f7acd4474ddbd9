//! The FlowMesh worker: runs one segment of a FlowGraph.
//!
//! It partitions the FlowGraph exactly as every other worker (and the
//! operator) does, builds its own segment, listens for the consumers of the
//! edges it produces, and connects to the producers of the edges it consumes
//! using a peer table (segment → address).
//!
//! Peer addresses come from `--peer SEGMENT=HOST:PORT` flags (a segment
//! started by hand, e.g. inside a network namespace), or from the parent
//! process over stdin: the worker prints `LISTEN <addr>` and then reads
//! `PEER <segment> <addr>` lines until `GO` (what `flowmesh run
//! --distributed` does).
//!
//! A restarted segment (`resume`) works out where each of its blocks takes
//! up the stream from the catalog alone: a block's [`Role`] says whether it
//! is a network edge end, [`BlockDescriptor::history_of`] how much earlier
//! input it needs to warm up, and [`BlockDescriptor::durability_of`] what
//! of its output survived; the result goes to the blocks as a typed
//! [`BlockSetup`] per block name, not as parameters. A segment's own
//! sources resume where the consumers of its output edges are when the
//! catalog declares them `resumable_at_offset` and every block between them
//! and those edges `item_for_item` ([`source_groups`], [`source_starts`]).
//!
//! Before anything starts, [`preflight`] checks every element of the
//! segment on this host and reports all problems at once; [`exit`] holds
//! the exit codes of `flowmesh worker`.
//! Live parameter changes are recorded in the state directory and replayed
//! at the same item offsets on a resume ([`param_log`]).
//!
//! [`control`] serves the segment's control and health API (with
//! [`metrics`]); [`client`] is the small HTTP client the `flowmesh`
//! command uses to talk to it. [`lifecycle`] turns SIGTERM and SIGINT into a
//! planned stop for a restart; [`exit`] holds the process's exit codes.

pub mod client;
pub mod cluster;
pub mod control;
pub mod exit;
pub mod lifecycle;
pub mod metrics;
pub mod preflight;

pub mod param_log;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;

use std::time::{Duration, Instant};

use flowmesh_model::catalog::{BlockDescriptor, ResolvedKind, Role};
use flowmesh_model::partition::{self, Partition};
use flowmesh_model::{catalog, params, Endpoint, Params};
use flowmesh_model::{FlowGraphDocument, FlowGraphSpec};
use flowmesh_runtime::blocks::{durable_items, BlockSetup, Env, ProducerInstance};
use flowmesh_runtime::net::env::{NetEnv, ServedKind};
use flowmesh_runtime::net::source::SourceState;
use flowmesh_runtime::net::transport::Tcp;
use flowmesh_runtime::{start, Graph, Running};

/// Errors of a worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot partition the FlowGraph: {0}")]
    Partition(#[from] partition::Error),
    #[error("segment `{0}` does not exist; the FlowGraph has: {1}")]
    NoSegment(String, String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("segment `{segment}`: {source}")]
    Build {
        segment: String,
        source: flowmesh_runtime::graph::Error,
    },
    #[error("segment `{segment}`: {source}")]
    Run {
        segment: String,
        source: flowmesh_runtime::scheduler::Error,
    },
    #[error("peer table: {0}")]
    Peers(String),
    #[error(transparent)]
    ParamLog(#[from] param_log::Error),
    #[error("cannot use the state directory {}: {source}; check that it is writable", dir.display())]
    StateDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to run a segment.
#[derive(Debug, Clone)]
pub struct Config {
    pub segment: String,
    /// Address to listen on for consumers (`0.0.0.0:7400`, `127.0.0.1:0`).
    pub listen: String,
    /// Segment → address of the other segments.
    pub peers: BTreeMap<String, String>,
    /// Shared secret every consumer must present.
    pub token: String,
    /// The FlowGraph resource's `metadata.generation` the spec came from
    /// (cluster mode; 0 for a file), for `/status` only. Peers are checked
    /// per edge instead: each network edge has its own generation, a hash
    /// of its contract set by the partitioner
    /// ([`partition::edge_generation`]).
    pub generation: u64,
    /// A restart: ask each input edge to start where this segment's output
    /// (its `append` file sinks) left off.
    pub resume: bool,
    /// Pool threads for this segment when its file does not set
    /// `spec.runtime.threads` (None: one per available core).
    pub threads: Option<u32>,
    /// Where the segment's `net_source`s record which producer instance
    /// they read (`<edge>.json`), so that a restart with `resume` names it
    /// and a producer restarted too is detected, and where live parameter
    /// changes are recorded for a resume ([`param_log`]; None: nothing is
    /// recorded).
    pub state_dir: Option<std::path::PathBuf>,
}

/// The state file of the `net_source` for `edge` in `dir`.
pub fn state_file(dir: &std::path::Path, edge: &str) -> std::path::PathBuf {
    let name: String = edge
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{name}.json"))
}

/// How long a restarted relay segment waits for the consumers of its
/// `net_sink`s to say where they resume before it starts without them
/// (their connectors retry at most every 1-2 s).
pub const RESUME_WAIT: Duration = Duration::from_secs(5);

/// Where a walk downstream of a `net_source` stands at a block: items
/// there = items at the source × `i` / `d`; `warmup`: source items of
/// history the blocks before it need (filters read `taps − 1` earlier
/// items); `align`: the source offset granularity that keeps every
/// decimating block before it on the same phase as in an uninterrupted run.
#[derive(Debug, Clone, Copy)]
struct At {
    i: u128,
    d: u128,
    warmup: u128,
    align: u128,
}

fn gcd(a: u128, b: u128) -> u128 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A block's catalog entry and its parameters with the defaults filled in
/// (`None` for a kind the catalog does not know).
fn resolved(b: &flowmesh_model::spec::BlockSpec) -> Option<(&'static BlockDescriptor, Params)> {
    let d = catalog().get(&b.kind)?;
    Some((d, params::resolve(d, &b.params).0))
}

/// The role the catalog gives a block's kind ([`Role::Plain`] for a kind it
/// does not know).
fn role(b: &flowmesh_model::spec::BlockSpec) -> Role {
    catalog().get(&b.kind).map_or(Role::Plain, |d| d.role)
}

/// Visits every block downstream of `from` along stream connections, once,
/// with where the walk stands there ([`At`]); `visit` returns false to stop
/// at that block.
fn walk_down(
    sub: &FlowGraphSpec,
    from: &str,
    mut visit: impl FnMut(&str, &'static BlockDescriptor, &Params, At) -> bool,
) {
    let resolved = |name: &str| resolved(sub.blocks.get(name)?);
    let start = At {
        i: 1,
        d: 1,
        warmup: 0,
        align: 1,
    };
    let mut stack = vec![(from.to_string(), start)];
    let mut seen = std::collections::BTreeSet::new();
    while let Some((blk, at)) = stack.pop() {
        if !seen.insert(blk.clone()) {
            continue;
        }
        let Some((desc, p)) = resolved(&blk) else {
            continue;
        };
        if blk != from && !visit(&blk, desc, &p, at) {
            continue;
        }
        let next = if blk == from {
            at
        } else {
            let (ri, rd) = desc.rate.eval(&p).unwrap_or((1, 1));
            let history = desc.history_of(&p);
            let (i, d) = (at.i * ri as u128, at.d * rd as u128);
            let g = gcd(i, d).max(1);
            let (i, d) = (i / g, d / g);
            // d source items make i items here: this block's outputs line up
            // with an uninterrupted run's when the source offset is a
            // multiple of d.
            let align = at.align / gcd(at.align, d).max(1) * d;
            At {
                i,
                d,
                warmup: at.warmup + (history as u128 * at.d).div_ceil(at.i.max(1)),
                align,
            }
        };
        for c in &sub.connections {
            let (Some(f), Some(t)) = (Endpoint::parse(c.from()), Endpoint::parse(c.to())) else {
                continue;
            };
            if f.block == blk {
                stack.push((t.block, next));
            }
        }
    }
}

/// The `net_sink`s of `sub` fed by one of its `net_source`s: a relay
/// segment's, whose restart resumes from what their consumers hold.
pub fn relay_sinks(sub: &FlowGraphSpec) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    for (name, b) in &sub.blocks {
        if role(b) == Role::NetSource {
            walk_down(sub, name, |blk, desc, _, _| {
                if desc.role == Role::NetSink {
                    out.insert(blk.to_string());
                }
                true
            });
        }
    }
    out.into_iter().collect()
}

/// Whole items a block with durable output (an `append` file sink) holds,
/// or `None` for a block that keeps nothing.
fn append_sink_holds(desc: &BlockDescriptor, p: &Params) -> Option<u64> {
    durable_items(&desc.durability_of(p))
}

/// For each `net_source` of `sub`, the edge offset to ask for when the
/// segment restarts: the position its downstream has made durable — what
/// `file_sink`s in `append` mode hold, and where the consumers of
/// `net_sink`s in `downstream` resume (in items at that sink) — carried back
/// through each block's rate, the smallest over all; then moved back by the
/// history the filters on the way need to warm up (`fir_filter`,
/// `low_pass_filter`, `freq_xlating_fir`: `taps − 1` items;
/// `rational_resampler`: none) and down to a multiple of every decimation on
/// the way (`D/gcd(I, D)` for a resampler), so that the outputs after the
/// warm-up equal an uninterrupted run's. What is then delivered again is dropped at the
/// sinks ([`append_skips`]; a `net_sink` serves its consumer from where it
/// resumes). Edges that reach no such sink start at 0.
pub fn durable_positions(
    sub: &FlowGraphSpec,
    downstream: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (name, b) in &sub.blocks {
        if role(b) != Role::NetSource {
            continue;
        }
        let mut best: Option<u128> = None;
        let (mut warmup, mut align) = (0u128, 1u128);
        walk_down(sub, name, |blk, desc, p, at| {
            let held = match append_sink_holds(desc, p) {
                Some(h) => Some(h),
                None if desc.role == Role::NetSink => downstream.get(blk).copied(),
                None => return true,
            };
            if let Some(held) = held {
                // Items at the sink = source items × i / d.
                let at_source = held as u128 * at.d / at.i.max(1);
                best = Some(best.map_or(at_source, |b| b.min(at_source)));
                warmup = warmup.max(at.warmup);
                align = align / gcd(align, at.align).max(1) * at.align;
            }
            false
        });
        let start = best.map_or(0, |x| x.saturating_sub(warmup) / align * align);
        out.insert(name.clone(), start as u64);
    }
    out
}

/// For each `append` file sink downstream of a resumed `net_source`
/// (`sources`: block → its start), the items to drop before writing: what it
/// holds minus what the restart delivers before its end (warm-up, and any
/// lead it had over the other sinks).
pub fn append_skips(sub: &FlowGraphSpec, sources: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for (name, &x) in sources {
        walk_down(sub, name, |blk, desc, p, at| {
            let Some(held) = append_sink_holds(desc, p) else {
                return true;
            };
            let from = (x as u128 * at.i / at.d.max(1)) as u64;
            out.insert(blk.to_string(), held.saturating_sub(from));
            false
        });
    }
    out
}

/// For each `net_sink` downstream of a resumed `net_source` (`sources`:
/// block → its start), the edge offset of its first item: the source's start
/// carried through the rates in between (the smallest if several reach it).
pub fn relay_starts(sub: &FlowGraphSpec, sources: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for (name, &x) in sources {
        walk_down(sub, name, |blk, desc, _, at| {
            if desc.role == Role::NetSink {
                let y = (x as u128 * at.i / at.d.max(1)) as u64;
                let e = out.entry(blk.to_string()).or_insert(y);
                *e = (*e).min(y);
                return false;
            }
            true
        });
    }
    out
}

/// For each output-indexed block (`freq_xlating_fir`) downstream of a resumed `net_source`
/// (`sources`: block → its start), the index its first output has in an
/// uninterrupted run: the source's start carried through the rates before
/// it, over its decimation (the smallest if several reach it). The block
/// continues its mixer phase from there (its setup's `start`).
pub fn mixer_starts(sub: &FlowGraphSpec, sources: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for (name, &x) in sources {
        walk_down(sub, name, |blk, desc, p, at| {
            if desc.output_indexed {
                let d = p.u64("decimation").unwrap_or(1).max(1) as u128;
                let y = (x as u128 * at.i / at.d.max(1) / d) as u64;
                let e = out.entry(blk.to_string()).or_insert(y);
                *e = (*e).min(y);
            }
            true
        });
    }
    out
}

/// For each block downstream of a resumed `net_source` (`sources`: block →
/// its start, in its output's numbering), and the sources themselves, where
/// the block's first item sits in an uninterrupted run — on its first stream
/// output, or its first stream input for a block without outputs (where
/// `Handle::set` counts): the source's start carried through the rates up to
/// there (the smallest if several reach it). Blocks not listed start at 0.
/// Recorded parameter changes are kept in this numbering ([`param_log`]).
pub fn block_bases(sub: &FlowGraphSpec, sources: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    let mut put = |blk: &str, y: u64| {
        let e = out.entry(blk.to_string()).or_insert(y);
        *e = (*e).min(y);
    };
    for (name, &x) in sources {
        put(name, x);
        walk_down(sub, name, |blk, desc, p, at| {
            let has_output = desc
                .resolve_ports(p)
                .1
                .iter()
                .any(|o| matches!(o.kind, ResolvedKind::Stream(_)));
            let (i, d) = if has_output {
                let (ri, rd) = desc.rate.eval(p).unwrap_or((1, 1));
                (at.i * ri as u128, at.d * rd as u128)
            } else {
                (at.i, at.d)
            };
            put(blk, (x as u128 * i / d.max(1)) as u64);
            true
        });
    }
    out
}

/// A group of blocks joined by connections (in either direction) that reach
/// `net_sink`s without a `net_source` among them: a restarted segment's
/// own sources and what they feed. It resumes at an offset when every block
/// in it is a source the catalog declares `resumable_at_offset`, a block it
/// declares `item_for_item` (output-indexed ones such as `head` and
/// `tagger` are told where their first item sits), or a `net_sink`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceGroup {
    /// Every block of the group, by name.
    pub blocks: Vec<String>,
    /// Its `net_sink`s, by name.
    pub sinks: Vec<String>,
    /// `None` when the group resumes at an offset; otherwise why it cannot
    /// (naming the block), and a restart is a new producer instance whose
    /// consumers mark a `restart` gap.
    pub refused: Option<String>,
}

/// Why block `name` keeps a group of sources from resuming at an offset, or
/// `None` if it does not ([`SourceGroup`]).
fn refusal(name: &str, b: &flowmesh_model::spec::BlockSpec) -> Option<String> {
    let Some((desc, p)) = resolved(b) else {
        return Some(format!(
            "block `{name}` has kind `{}`, which the catalog does not know",
            b.kind
        ));
    };
    match desc.role {
        Role::NetSink => return None,
        Role::Plain => {}
        _ => {
            return Some(format!(
                "block `{name}` ({}) is a network edge end other than a stream output",
                desc.kind
            ))
        }
    }
    if desc.resumable_at_offset || desc.item_for_item {
        // Item for item means 1:1; a catalog test holds the catalog to it.
        return match desc.rate.eval(&p) {
            Some((1, 1)) => None,
            _ => Some(format!(
                "block `{name}` ({}) changes the item rate",
                desc.kind
            )),
        };
    }
    let stream = |ports: &[flowmesh_model::catalog::PortDescriptor]| {
        ports
            .iter()
            .any(|p| matches!(p.kind, flowmesh_model::catalog::PortKind::Stream { .. }))
    };
    let what = if !stream(&desc.outputs) {
        "a sink in the same segment (resumed at an offset it would miss the items before it)"
    } else if !stream(&desc.inputs) {
        "a source that cannot start at an offset (not `resumable_at_offset` in the catalog: \
         live, or without a seekable position)"
    } else if desc.rate.eval(&p) != Some((1, 1)) {
        "a block that changes the item rate"
    } else {
        "a block whose output is not made item for item from its input (it keeps state)"
    };
    Some(format!("block `{name}` ({}) is {what}", desc.kind))
}

/// The groups of `sub`'s own sources that feed its `net_sink`s
/// ([`SourceGroup`]), with whether each resumes at an offset. Groups with a
/// `net_source` are relays ([`relay_sinks`]) and not listed.
pub fn source_groups(sub: &FlowGraphSpec) -> Vec<SourceGroup> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in &sub.connections {
        let (Some(f), Some(t)) = (Endpoint::parse(c.from()), Endpoint::parse(c.to())) else {
            continue;
        };
        let (Some((f, _)), Some((t, _))) = (
            sub.blocks.get_key_value(f.block.as_str()),
            sub.blocks.get_key_value(t.block.as_str()),
        ) else {
            continue;
        };
        next.entry(f.as_str()).or_default().push(t.as_str());
        next.entry(t.as_str()).or_default().push(f.as_str());
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for name in sub.blocks.keys() {
        if seen.contains(name.as_str()) {
            continue;
        }
        let mut group = vec![];
        let mut stack = vec![name.as_str()];
        seen.insert(name.as_str());
        while let Some(b) = stack.pop() {
            group.push(b.to_string());
            for &n in next.get(b).into_iter().flatten() {
                if seen.insert(n) {
                    stack.push(n);
                }
            }
        }
        group.sort();
        let sinks: Vec<String> = group
            .iter()
            .filter(|b| role(&sub.blocks[*b]) == Role::NetSink)
            .cloned()
            .collect();
        let relay = group
            .iter()
            .any(|b| role(&sub.blocks[b]) == Role::NetSource);
        if sinks.is_empty() || relay {
            continue;
        }
        let refused = group.iter().find_map(|b| refusal(b, &sub.blocks[b]));
        out.push(SourceGroup {
            blocks: group,
            sinks,
            refused,
        });
    }
    out
}

/// Where each resumable group of sources starts ([`SourceGroup`]), given
/// where the consumers of its `net_sink`s resume (`downstream`: `net_sink`
/// → offset): at the smallest of them, when every one of its consumers
/// answered (a `net_sink` whose consumer is further on serves it from its
/// own offset; what comes before is held, not sent). Returns every block of
/// those groups → that offset, which is also where each block's first item
/// sits in an uninterrupted run. Groups whose consumers did not all answer,
/// or that are all at 0, are not listed (they start at 0: exact for the
/// consumers that answered, whose stream the `net_sink`s continue, and a
/// `restart` for the others).
pub fn source_starts(
    groups: &[SourceGroup],
    downstream: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for g in groups.iter().filter(|g| g.refused.is_none()) {
        let at: Option<Vec<u64>> = g.sinks.iter().map(|s| downstream.get(s).copied()).collect();
        let Some(r) = at.and_then(|v| v.into_iter().min()) else {
            continue;
        };
        if r > 0 {
            out.extend(g.blocks.iter().map(|b| (b.clone(), r)));
        }
    }
    out
}

/// How long a restarted segment of sources waits for the consumers of its
/// `net_sink`s: longer than a relay ([`RESUME_WAIT`]), since its consumer
/// may be a relay that first asks its own consumers (each hop of a chain
/// restarted at once takes up to [`RESUME_WAIT`]).
pub const SOURCE_RESUME_WAIT: Duration = Duration::from_secs(15);

/// A segment that has been built and started.
pub struct Segment {
    pub name: String,
    /// The resource generation it was started from ([`Config::generation`]).
    pub generation: u64,
    pub listening: String,
    pub env: Arc<NetEnv>,
    pub running: Running,
    /// The segment's own graph (as partitioned, with what a restart set:
    /// parameters as in force where each block starts).
    pub spec: FlowGraphSpec,
    /// Where live parameter changes are recorded ([`param_log`]).
    pub param_log: param_log::ParamLog,
}

/// Partitions the document and returns the partition (for listing segments).
pub fn plan(doc: &FlowGraphDocument) -> Result<Partition> {
    Ok(partition::partition(&doc.spec)?)
}

/// Builds and starts `cfg.segment` of `doc`. Peers may be added later with
/// `segment.env.set_peer` (consumers wait for the address).
pub fn start_segment(doc: &FlowGraphDocument, cfg: &Config) -> Result<Segment> {
    let p = plan(doc)?;
    let mut sub = p
        .segments
        .get(&cfg.segment)
        .ok_or_else(|| {
            Error::NoSegment(
                cfg.segment.clone(),
                p.segments.keys().cloned().collect::<Vec<_>>().join(", "),
            )
        })?
        .clone();
    if let Some(t) = cfg.threads {
        let rt = sub.runtime.get_or_insert_with(Default::default);
        rt.threads.get_or_insert(t.max(1));
    }
    let env = NetEnv::new(Arc::new(Tcp), &doc.metadata.name, &cfg.segment, &cfg.token);
    // What each block is told beyond its parameters, by block name.
    let mut setup: BTreeMap<String, BlockSetup> = BTreeMap::new();
    let states = match &cfg.state_dir {
        Some(dir) => record_states(&sub, dir, &mut setup)?,
        None => BTreeMap::new(),
    };
    let mut listening = None;
    let mut bases = BTreeMap::new();
    if let (Some(dir), false) = (&cfg.state_dir, cfg.resume) {
        param_log::reset(dir)?;
    }
    if cfg.resume {
        let relays = relay_sinks(&sub);
        let groups = source_groups(&sub);
        // The net_sinks whose consumers' streams a restart continues: the
        // relays', and those of groups of sources that resume at an offset.
        let mut adopted = relays.clone();
        for g in &groups {
            match &g.refused {
                None => adopted.extend(g.sinks.iter().cloned()),
                Some(why) => tracing::warn!(
                    "segment {}: {} cannot resume where {}: {why}; it starts again from \
                     item 0 as a new producer instance and its consumers mark a `restart` gap",
                    cfg.segment,
                    g.sinks.join(", "),
                    if g.sinks.len() == 1 {
                        "its consumer is"
                    } else {
                        "their consumers are"
                    },
                ),
            }
        }
        adopted.sort();
        let downstream = if adopted.is_empty() {
            BTreeMap::new()
        } else {
            announce_edges(&sub, &env, &adopted);
            listening = Some(listen(&env, cfg)?);
            let wait = if adopted.len() > relays.len() {
                SOURCE_RESUME_WAIT
            } else {
                RESUME_WAIT
            };
            ask_consumers(&sub, &env, &adopted, &cfg.segment, wait)
        };
        let sources = plan_resume(&sub, &downstream, &states, &cfg.segment, &mut setup);
        bases = block_bases(&sub, &sources);
        for g in groups.iter().filter(|g| g.refused.is_none()) {
            if let Some(missing) = g.sinks.iter().find(|s| !downstream.contains_key(*s)) {
                tracing::warn!(
                    "segment {}: the consumer of {missing} did not say where it resumes; the \
                     sources of {} start at item 0 (the consumers that answered continue \
                     exactly, that one sees a restarted producer)",
                    cfg.segment,
                    g.sinks.join(", ")
                );
            }
        }
        for (block, at) in source_starts(&groups, &downstream) {
            let desc = resolved(&sub.blocks[&block]).map(|(d, _)| d);
            if desc.is_some_and(|d| {
                d.resumable_at_offset || d.output_indexed || d.role == Role::NetSink
            }) {
                tracing::info!("segment {}: {block} resumes at item {at}", cfg.segment);
                setup.entry(block.clone()).or_default().start = at;
            }
            bases.insert(block, at);
        }
        if let Some(dir) = &cfg.state_dir {
            let changes = param_log::load(dir)?;
            param_log::replay(&mut sub, &changes, &bases, &mut setup);
        }
    }
    let sub = &sub;
    // The graph first: its network sinks are then served from the first
    // connection on, so a consumer never hears "edge not produced here"
    // from a segment that is still starting.
    let build_env = Env {
        net: env.clone(),
        setup,
    };
    let graph = Graph::from_spec_in(sub, build_env).map_err(|source| Error::Build {
        segment: cfg.segment.clone(),
        source,
    })?;
    let listening = match listening {
        Some(l) => l,
        None => listen(&env, cfg)?,
    };
    for (s, a) in &cfg.peers {
        env.set_peer(s, a);
    }
    let running = start(graph).map_err(|source| Error::Run {
        segment: cfg.segment.clone(),
        source,
    })?;
    Ok(Segment {
        name: cfg.segment.clone(),
        generation: cfg.generation,
        listening,
        env,
        running,
        spec: sub.clone(),
        param_log: param_log::ParamLog::new(cfg.state_dir.clone(), bases),
    })
}

/// The `edge` parameter of a network block.
fn edge_of(b: &flowmesh_model::spec::BlockSpec) -> &str {
    b.params.get("edge").and_then(|e| e.as_str()).unwrap_or("")
}

/// The `generation` parameter of a network block (0: none).
fn generation_of(b: &flowmesh_model::spec::BlockSpec) -> u64 {
    b.params
        .get("generation")
        .and_then(|e| e.as_u64())
        .unwrap_or(0)
}

/// Points each `net_source` of `sub` at its state file in `dir` (created if
/// needed) through its `setup`; returns block → file.
fn record_states(
    sub: &FlowGraphSpec,
    dir: &std::path::Path,
    setup: &mut BTreeMap<String, BlockSetup>,
) -> Result<BTreeMap<String, std::path::PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::StateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut states = BTreeMap::new();
    for (name, b) in &sub.blocks {
        if role(b) == Role::NetSource {
            let path = state_file(dir, edge_of(b));
            setup.entry(name.clone()).or_default().state_file = Some(path.clone());
            states.insert(name.clone(), path);
        }
    }
    Ok(states)
}

/// A restarted relay asks its consumers where they resume before it asks
/// its producers: the edges it produces are announced before its graph
/// exists (and before it listens), so their consumers are accepted and
/// parked; a consumer that names the stream it was reading keeps it,
/// continued in the same numbering ([`NetEnv::prepare`]).
fn announce_edges(sub: &FlowGraphSpec, env: &NetEnv, relays: &[String]) {
    for (name, b) in &sub.blocks {
        let Some((desc, p)) = resolved(b) else {
            continue;
        };
        match desc.role {
            Role::NetSink => {
                // The item type it serves is its input's.
                let Some(ResolvedKind::Stream(st)) =
                    desc.resolve_ports(&p).0.first().map(|port| port.kind)
                else {
                    continue;
                };
                env.prepare(
                    edge_of(b),
                    ServedKind::Stream(st),
                    generation_of(b),
                    relays.contains(name),
                );
            }
            Role::NetMessageSink => {
                env.prepare(edge_of(b), ServedKind::Message, generation_of(b), false)
            }
            _ => {}
        }
    }
}

/// Waits up to `wait` in all for the consumers of a restarted segment's
/// announced edges ([`RESUME_WAIT`] for a relay, [`SOURCE_RESUME_WAIT`]
/// with sources that resume); returns `net_sink` block → where its consumer
/// resumes (those that came).
fn ask_consumers(
    sub: &FlowGraphSpec,
    env: &NetEnv,
    relays: &[String],
    segment: &str,
    wait: Duration,
) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + wait;
    let mut downstream = BTreeMap::new();
    for name in relays {
        let edge = edge_of(&sub.blocks[name]);
        let left = deadline.saturating_duration_since(Instant::now());
        match env.resume_point(edge, left) {
            Some(r) => {
                tracing::info!("segment {segment}: the consumer of {edge} resumes at {r}");
                downstream.insert(name.clone(), r);
            }
            None => tracing::warn!(
                "segment {segment}: no consumer of {edge} within {wait:?}; it will see a \
                 restarted producer"
            ),
        }
    }
    downstream
}

/// Sets where each input edge, relay output and append file of a restarted
/// segment starts ([`durable_positions`], [`relay_starts`],
/// [`append_skips`]) and where each output-indexed block (a
/// `freq_xlating_fir`'s mixer) continues ([`mixer_starts`]) in their
/// `setup`, asking in the recorded producer instance's numbering where a
/// state file names one. Returns where each `net_source` starts in its
/// output's numbering ([`durable_positions`]).
fn plan_resume(
    sub: &FlowGraphSpec,
    downstream: &BTreeMap<String, u64>,
    states: &BTreeMap<String, std::path::PathBuf>,
    segment: &str,
    setup: &mut BTreeMap<String, BlockSetup>,
) -> BTreeMap<String, u64> {
    let sources = durable_positions(sub, downstream);
    let mut starts = relay_starts(sub, &sources);
    starts.retain(|k, _| downstream.contains_key(k));
    for (block, &at) in sources.iter().chain(&starts) {
        match states
            .get(block)
            .and_then(|p| recorded_instance(p, segment))
        {
            Some(s) if at as i64 >= s.base => {
                let start = (at as i64 - s.base) as u64;
                tracing::info!(
                    "segment {segment}: {block} resumes at {at} (offset {start} of producer \
                     instance {:016x})",
                    s.instance
                );
                let b = setup.entry(block.clone()).or_default();
                b.start = start;
                b.producer = Some(ProducerInstance {
                    instance: s.instance,
                    base: s.base,
                });
            }
            _ => {
                tracing::info!("segment {segment}: {block} resumes at {at}");
                setup.entry(block.clone()).or_default().start = at;
            }
        }
    }
    for (block, start) in mixer_starts(sub, &sources) {
        if start > 0 {
            tracing::info!("segment {segment}: {block} continues its mixer at output {start}");
            setup.entry(block).or_default().start = start;
        }
    }
    for (block, skip) in append_skips(sub, &sources) {
        if skip > 0 {
            tracing::info!("segment {segment}: {block} drops the first {skip} items it gets again");
            setup.entry(block).or_default().skip = skip;
        }
    }
    sources
}

/// The producer instance a state file records, if it names one; a file
/// FlowMesh did not write is ignored with a warning.
fn recorded_instance(path: &std::path::Path, segment: &str) -> Option<SourceState> {
    let s = SourceState::load(path);
    if s.is_none() && path.exists() {
        tracing::warn!(
            "segment {segment}: {} is not a state file FlowMesh wrote; ignoring it (a producer \
             that restarted too will not be detected on this edge)",
            path.display()
        );
    }
    s.filter(|s| s.instance != 0)
}

fn listen(env: &Arc<NetEnv>, cfg: &Config) -> Result<String> {
    env.listen(&cfg.listen).map_err(|source| Error::Listen {
        addr: cfg.listen.clone(),
        source,
    })
}

/// Reads `PEER <segment> <addr>` lines until `GO` from `input`.
pub fn read_peers(input: impl BufRead, env: &NetEnv) -> Result<()> {
    for line in input.lines() {
        let line = line.map_err(|e| Error::Peers(e.to_string()))?;
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("GO"), None, None) => return Ok(()),
            (Some("PEER"), Some(seg), Some(addr)) => env.set_peer(seg, addr),
            _ => {
                return Err(Error::Peers(format!(
                    "unexpected line {line:?}; expected `PEER SEGMENT ADDR` or `GO`"
                )))
            }
        }
    }
    Err(Error::Peers("input ended before GO".into()))
}

/// Parses `SEGMENT=HOST:PORT`.
pub fn parse_peer(s: &str) -> Result<(String, String)> {
    let (a, b) = s
        .split_once('=')
        .ok_or_else(|| Error::Peers(format!("`{s}` is not SEGMENT=HOST:PORT")))?;
    Ok((a.to_string(), b.to_string()))
}
