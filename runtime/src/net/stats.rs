//! Live counters of the network edges a process serves or reads, for the
//! worker's metrics and status (docs/worker.md).
//!
//! Each `net_source` and `net_sink` registers one [`EdgeStats`] in its
//! [`NetEnv`](super::env::NetEnv) and updates it with relaxed atomic stores
//! at most once per frame, so reading them costs the blocks nothing and the
//! figures outlive the running graph (the final counts of a finished run).

use std::sync::atomic::{AtomicU64, Ordering};

use super::frame::GapCause;

/// Which end of an edge a block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A `net_source`: this process consumes the edge.
    Source,
    /// A `net_sink`: this process produces the edge.
    Sink,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Sink => "sink",
        }
    }
}

/// The causes of lost items, in the order of [`EdgeStats::lost`].
pub const CAUSES: [GapCause; 4] = [
    GapCause::Overflow,
    GapCause::PeerLost,
    GapCause::RetentionExceeded,
    GapCause::Restart,
];

/// Counters of one end of one edge. Counters only grow; gauges (`backlog`,
/// `retained`) are the last value the block stored.
#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Items delivered to the output (source) or sent (sink).
    pub items: AtomicU64,
    /// DATA payload bytes received whole and checked (source) or sent (sink).
    pub bytes: AtomicU64,
    /// DATA frames received whole and checked (source) or sent (sink).
    pub frames: AtomicU64,
    /// Connections established (the first one and every reconnect).
    pub connections: AtomicU64,
    /// Discontinuities marked with a `gap` tag (source).
    pub gaps: AtomicU64,
    /// Items lost, by cause in the order of [`CAUSES`] (source).
    pub lost: [AtomicU64; 4],
    /// Producer restarts seen (source).
    pub restarts: AtomicU64,
    /// Items written by upstream and not yet acknowledged by the consumer (sink).
    pub backlog: AtomicU64,
    /// Items held in the sink's buffer for a consumer that resumes (sink).
    pub retained: AtomicU64,
    /// The retention window in items, `retention_bytes` / item size (sink).
    pub retention: AtomicU64,
    /// Size of one item in bytes.
    pub item_size: AtomicU64,
    /// The edge's generation this end runs (its `generation` parameter).
    pub generation: AtomicU64,
    /// Unix time in ms since which the consumer has failed to reach its
    /// producer, 0 while it is connected or has not tried yet (source).
    pub unreachable_since_ms: AtomicU64,
    /// Why the last attempt to reach the producer failed, while
    /// `unreachable_since_ms` is set (source).
    pub unreachable: std::sync::Mutex<String>,
    /// Replicas connected (the producer of an edge into a scalable segment).
    pub replicas: AtomicU64,
    /// Messages waiting for a replica with room (that producer).
    pub pending: AtomicU64,
    /// Messages handed out and not yet done end to end (that producer: at
    /// all replicas; a replica's input edge: at this replica).
    pub in_flight: AtomicU64,
    /// Messages done end to end per second over the last few seconds, as
    /// `f64` bits (that producer: all replicas; a replica: its own rate).
    pub rate_bits: AtomicU64,
    /// Messages dropped as duplicates by id (a gathering consumer).
    pub duplicates: AtomicU64,
}

impl EdgeStats {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn set(c: &AtomicU64, n: u64) {
        c.store(n, Ordering::Relaxed);
    }
    /// Adds `n` lost items of `cause`.
    pub(crate) fn add_lost(&self, cause: GapCause, n: u64) {
        let i = CAUSES
            .iter()
            .position(|c| *c == cause)
            .expect("every cause");
        Self::add(&self.lost[i], n);
    }
    /// Records that the producer could not be reached (`since`: when the
    /// attempts began failing), or that it was, with `None`.
    pub(crate) fn set_unreachable(&self, since: Option<std::time::SystemTime>, why: &str) {
        let ms = since.map_or(0, |t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_millis().max(1) as u64)
        });
        Self::set(&self.unreachable_since_ms, ms);
        *self.unreachable.lock().unwrap_or_else(|e| e.into_inner()) = why.to_string();
    }
    /// Since when (Unix ms) and why the consumer has failed to reach its
    /// producer; `None` while connected.
    pub fn unreachable(&self) -> Option<(u64, String)> {
        let ms = Self::get(&self.unreachable_since_ms);
        (ms != 0).then(|| {
            let why = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
            (ms, why.clone())
        })
    }
    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    /// Items lost, by cause name.
    pub fn lost_by_cause(&self) -> Vec<(&'static str, u64)> {
        CAUSES
            .iter()
            .zip(&self.lost)
            .map(|(c, n)| (c.name(), Self::get(n)))
            .collect()
    }
}
