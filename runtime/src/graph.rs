//! A runnable graph: built blocks and the stream and message edges between
//! them. Built from a validated [`FlowGraphSpec`] or assembled in code (tests).

use std::collections::BTreeMap;

use flowmesh_model::catalog::{BlockDescriptor, ResolvedKind, SourceKind};
use flowmesh_model::spec::{Endpoint, FlowGraphSpec, RuntimeSpec, SchedulerKind};
use flowmesh_model::{catalog, params, validate, Params};

use crate::block::BuiltBlock;

/// Errors assembling a graph.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the FlowGraph is invalid:\n{0}")]
    Invalid(validate::Report),
    #[error("block `{block}`: {message}")]
    Build { block: String, message: String },
    #[error("duplicate block name `{0}`")]
    Duplicate(String),
    #[error("connection {from} -> {to}: {message}")]
    Connect {
        from: String,
        to: String,
        message: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One block of a graph.
pub struct Node {
    pub name: String,
    pub kind: String,
    pub built: BuiltBlock,
    /// Catalog entry, for checking runtime parameter changes.
    pub descriptor: Option<&'static BlockDescriptor>,
}

/// An edge between two ports, as node and port indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub from: (usize, usize),
    pub to: (usize, usize),
}

/// Scheduler settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub scheduler: SchedulerKind,
    /// Worker threads for the pool scheduler (0: available cores).
    pub threads: usize,
    /// Stream buffer size in bytes for edges within one worker thread.
    pub buffer_bytes: usize,
    /// Minimum buffer size for edges between worker threads, which must
    /// absorb the other thread's wake-up latency.
    pub cross_thread_bytes: usize,
}

/// Default stream buffer size (chosen by `bench/`; see docs/benchmarks.md).
pub const DEFAULT_BUFFER_BYTES: usize = 64 * 1024;
/// Default minimum size of buffers between threads.
pub const DEFAULT_CROSS_THREAD_BYTES: usize = 256 * 1024;

impl Default for Config {
    fn default() -> Self {
        Config {
            scheduler: SchedulerKind::Pool,
            threads: 0,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            cross_thread_bytes: DEFAULT_CROSS_THREAD_BYTES,
        }
    }
}

impl Config {
    pub fn from_spec(rt: Option<&RuntimeSpec>) -> Self {
        let mut c = Config::default();
        if let Some(rt) = rt {
            if let Some(s) = rt.scheduler {
                c.scheduler = s;
            }
            if let Some(t) = rt.threads {
                c.threads = t as usize;
            }
            if let Some(b) = rt.buffer_bytes {
                c.buffer_bytes = b as usize;
            }
            if let Some(b) = rt.cross_thread_bytes {
                c.cross_thread_bytes = b as usize;
            }
        }
        c
    }
}

/// A graph ready to run.
#[derive(Default)]
pub struct Graph {
    pub(crate) nodes: Vec<Node>,
    pub(crate) names: BTreeMap<String, usize>,
    pub(crate) stream_edges: Vec<Edge>,
    pub(crate) message_edges: Vec<Edge>,
    pub config: Config,
    /// The environment blocks are built in (network, for edge blocks).
    pub env: crate::blocks::Env,
}

impl Graph {
    pub fn new() -> Self {
        Graph::default()
    }

    /// Validates `spec` and builds every block. Nothing runs yet.
    pub fn from_spec(spec: &FlowGraphSpec) -> Result<Graph> {
        Graph::from_spec_in(spec, crate::blocks::Env::default())
    }

    /// Like [`Graph::from_spec`], building blocks in `env`.
    pub fn from_spec_in(spec: &FlowGraphSpec, env: crate::blocks::Env) -> Result<Graph> {
        let report = validate::validate_spec(spec);
        if !report.is_ok() {
            return Err(Error::Invalid(report));
        }
        let mut g = Graph::new();
        g.env = env;
        g.config = Config::from_spec(spec.runtime.as_ref());
        for (name, b) in &spec.blocks {
            g.add_block(name, &b.kind, &b.params)?;
        }
        for c in &spec.connections {
            g.connect(c.from(), c.to())?;
        }
        Ok(g)
    }

    /// Adds a catalog block with parameters given as JSON values.
    pub fn add_block(
        &mut self,
        name: &str,
        kind: &str,
        given: &BTreeMap<String, serde_json::Value>,
    ) -> Result<usize> {
        let build_err = |message: String| Error::Build {
            block: name.to_string(),
            message,
        };
        let desc = catalog()
            .get(kind)
            .ok_or_else(|| build_err(format!("unknown block kind `{kind}`")))?;
        let (p, problems) = params::resolve(desc, given);
        if let Some((param, msg, _)) = problems.first() {
            return Err(build_err(format!("params.{param}: {msg}")));
        }
        self.add_params(name, kind, &p)
    }

    /// Adds a catalog block with already-coerced parameters.
    pub fn add_params(&mut self, name: &str, kind: &str, p: &Params) -> Result<usize> {
        let desc = catalog().get(kind).ok_or_else(|| Error::Build {
            block: name.to_string(),
            message: format!("unknown block kind `{kind}`"),
        })?;
        let mut built = crate::blocks::build_in(kind, p, &self.env, self.env.setup_of(name))
            .map_err(|message| Error::Build {
                block: name.to_string(),
                message,
            })?;
        built.live |= desc.source == SourceKind::Live;
        built.scheduled = self.env.setup_of(name).sets.clone();
        built.scheduled.sort_by_key(|s| s.offset);
        let idx = self.add_built(name, built)?;
        self.nodes[idx].kind = kind.to_string();
        self.nodes[idx].descriptor = Some(desc);
        Ok(idx)
    }

    /// Adds a block built in code (tests, custom blocks).
    pub fn add_built(&mut self, name: &str, built: BuiltBlock) -> Result<usize> {
        if self.names.contains_key(name) {
            return Err(Error::Duplicate(name.to_string()));
        }
        let idx = self.nodes.len();
        self.nodes.push(Node {
            name: name.to_string(),
            kind: String::new(),
            built,
            descriptor: None,
        });
        self.names.insert(name.to_string(), idx);
        Ok(idx)
    }

    fn endpoint(&self, s: &str, output: bool) -> std::result::Result<(usize, usize), String> {
        let e = Endpoint::parse(s).ok_or_else(|| format!("`{s}` is not block.port"))?;
        let &n = self
            .names
            .get(&e.block)
            .ok_or_else(|| format!("no block named `{}`", e.block))?;
        let ports = if output {
            &self.nodes[n].built.outputs
        } else {
            &self.nodes[n].built.inputs
        };
        let p = ports.iter().position(|p| p.name == e.port).ok_or_else(|| {
            format!(
                "block `{}` has no {} port `{}`",
                e.block,
                if output { "output" } else { "input" },
                e.port
            )
        })?;
        Ok((n, p))
    }

    /// Connects `from` (block.port, an output) to `to` (an input).
    pub fn connect(&mut self, from: &str, to: &str) -> Result<()> {
        let err = |message: String| Error::Connect {
            from: from.to_string(),
            to: to.to_string(),
            message,
        };
        let a = self.endpoint(from, true).map_err(err)?;
        let b = self.endpoint(to, false).map_err(err)?;
        let ka = self.nodes[a.0].built.outputs[a.1].kind;
        let kb = self.nodes[b.0].built.inputs[b.1].kind;
        let edge = Edge { from: a, to: b };
        match (ka, kb) {
            (ResolvedKind::Stream(x), ResolvedKind::Stream(y)) => {
                if x != y {
                    return Err(err(format!("{from} carries {x} but {to} takes {y}")));
                }
                if self.stream_edges.iter().any(|e| e.to == b) {
                    return Err(err(format!("{to} is already connected")));
                }
                self.stream_edges.push(edge);
            }
            (ResolvedKind::Message, ResolvedKind::Message) => self.message_edges.push(edge),
            _ => return Err(err(format!("cannot connect {ka} to {kb}"))),
        }
        Ok(())
    }

    /// Index of a block by name.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.names.get(name).copied()
    }

    /// Node indices in a topological order of the stream edges (ties kept in
    /// insertion order).
    pub fn topological_order(&self) -> Vec<usize> {
        let n = self.nodes.len();
        let mut indeg = vec![0usize; n];
        for e in &self.stream_edges {
            indeg[e.to.0] += 1;
        }
        let mut ready: std::collections::VecDeque<usize> =
            (0..n).filter(|&i| indeg[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_front() {
            order.push(i);
            for e in self.stream_edges.iter().filter(|e| e.from.0 == i) {
                indeg[e.to.0] -= 1;
                if indeg[e.to.0] == 0 {
                    ready.push_back(e.to.0);
                }
            }
        }
        // Cycles are rejected by validation; keep any leftovers runnable.
        for i in 0..n {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        order
    }
}
