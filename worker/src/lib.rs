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

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;

use flowmesh_model::partition::{self, Partition};
use flowmesh_model::FlowGraphDocument;
use flowmesh_runtime::blocks::Env;
use flowmesh_runtime::net::env::NetEnv;
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
    /// Generation of the FlowGraph spec (consumers of another generation are refused).
    pub generation: u64,
}

/// A segment that has been built and started.
pub struct Segment {
    pub name: String,
    pub listening: String,
    pub env: Arc<NetEnv>,
    pub running: Running,
}

/// Partitions the document and returns the partition (for listing segments).
pub fn plan(doc: &FlowGraphDocument) -> Result<Partition> {
    Ok(partition::partition(&doc.spec)?)
}

/// Builds and starts `cfg.segment` of `doc`. Peers may be added later with
/// `segment.env.set_peer` (consumers wait for the address).
pub fn start_segment(doc: &FlowGraphDocument, cfg: &Config) -> Result<Segment> {
    let p = plan(doc)?;
    let sub = p.segments.get(&cfg.segment).ok_or_else(|| {
        Error::NoSegment(
            cfg.segment.clone(),
            p.segments.keys().cloned().collect::<Vec<_>>().join(", "),
        )
    })?;
    let env = NetEnv::new(
        Arc::new(Tcp),
        &doc.metadata.name,
        cfg.generation,
        &cfg.token,
    );
    let listening = env.listen(&cfg.listen).map_err(|source| Error::Listen {
        addr: cfg.listen.clone(),
        source,
    })?;
    for (s, a) in &cfg.peers {
        env.set_peer(s, a);
    }
    let graph =
        Graph::from_spec_in(sub, Env { net: env.clone() }).map_err(|source| Error::Build {
            segment: cfg.segment.clone(),
            source,
        })?;
    let running = start(graph).map_err(|source| Error::Run {
        segment: cfg.segment.clone(),
        source,
    })?;
    Ok(Segment {
        name: cfg.segment.clone(),
        listening,
        env,
        running,
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
