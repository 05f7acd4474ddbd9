//! What a worker reports about its segment: the body of its control API's
//! `GET /status` (docs/worker.md). One type, read by the `flowmesh status`
//! command and by whatever supervises workers (the operator, Compose).
//!
//! JSON field names are camelCase; counters are totals since the worker
//! started; times are seconds.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The life of a worker's segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WorkerState {
    /// Built and listening, but not every input edge has connected yet.
    Starting,
    /// Every input edge has connected at least once; the graph runs.
    Running,
    /// Running, but what it runs no longer matches what it should run (a
    /// change that cannot be applied live); restart the segment.
    RestartRequired,
    /// A planned stop for a restart (SIGTERM, SIGINT) is under way: the
    /// sources stopped, the graph drains into its sinks and output edges,
    /// within the grace period.
    Stopping,
    /// Stopped for a restart: the stream did not end (start the segment
    /// again with `--resume`).
    Stopped,
    /// The graph ended normally (end of stream).
    Finished,
    /// The graph ended with an error (`lastError`).
    Failed,
}

/// `GET /status` of a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// `metadata.name` of the FlowGraph.
    pub flowgraph: String,
    /// The segment this worker runs.
    pub segment: String,
    /// The FlowGraph resource's `metadata.generation` the worker was
    /// started from (cluster mode; 0 for a file). Live parameter changes do
    /// not change it.
    pub generation: u64,
    pub state: WorkerState,
    /// Why the state is `restartRequired`, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_reason: Option<String>,
    /// Seconds since the worker started its segment.
    pub uptime_seconds: f64,
    /// Items per second over the last 10 s on the first input edge (the
    /// first `net_source` in name order), or, for a segment without input
    /// edges, on the first output of its first source block.
    pub items_per_second: f64,
    /// Items written to this segment's output edges that their consumers
    /// have not acknowledged yet (summed over the output edges).
    pub backlog_items: u64,
    /// Items lost on the input edges, by cause (`overflow`, `peer_lost`,
    /// `retention_exceeded`, `restart`; docs/protocol.md).
    pub items_lost: BTreeMap<String, u64>,
    /// Per block of the segment.
    pub blocks: BTreeMap<String, BlockStatus>,
    /// Per network edge end of the segment, in edge-id order.
    pub edges: Vec<EdgeStatus>,
    /// The settable parameters in force, block → parameter → value and the
    /// item offset from which it applies (0: since the start).
    pub params: BTreeMap<String, BTreeMap<String, ParamStatus>>,
    /// Why the segment was not started (state `failed`): every problem
    /// the worker's preflight found on this host, each with the element it
    /// is about; empty once the segment started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preflight: Vec<PreflightProblem>,
    /// The error that ended the graph (`failed`), or the last refused
    /// control request's reason otherwise; `None` if there was none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One problem a worker's preflight found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreflightProblem {
    /// The element: a place in the FlowGraph (`spec.blocks.src.params.path`)
    /// or a command-line option (`--listen 0.0.0.0:7400`).
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for PreflightProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Figures of one block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockStatus {
    pub kind: String,
    /// Items consumed on the first stream input (0 for sources).
    pub items_in: u64,
    /// Items produced on the first stream output (0 for sinks).
    pub items_out: u64,
    /// Seconds spent in the block's `work` calls.
    pub busy_seconds: f64,
}

/// Which end of an edge this segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EdgeRole {
    /// This segment consumes the edge (a `net_source`).
    Input,
    /// This segment produces the edge (a `net_sink`).
    Output,
}

/// Figures of one end of a network edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeStatus {
    /// The edge id (`blockA.out->blockB.in`, as the partitioner names it).
    pub edge: String,
    pub role: EdgeRole,
    /// The edge's generation this end runs: a hash of the edge's contract
    /// (`partition::edge_generation`); a consumer of another generation is
    /// refused.
    pub generation: u64,
    /// Connections established so far (1 after the first; each reconnect adds one).
    pub connections: u64,
    /// Items delivered (input) or sent (output).
    pub items: u64,
    /// DATA payload bytes received (input) or sent (output).
    pub bytes: u64,
    /// DATA frames received (input) or sent (output).
    pub frames: u64,
    /// Discontinuities marked with a `gap` tag (input).
    pub gaps: u64,
    /// Items lost by cause (input).
    pub items_lost: BTreeMap<String, u64>,
    /// Producer restarts seen (input).
    pub restarts: u64,
    /// Items not yet acknowledged by the consumer (output).
    pub backlog_items: u64,
    /// Items held for a consumer that resumes (output).
    pub retained_items: u64,
    /// The retention window in items (output).
    pub retention_items: u64,
    /// Replicas connected (an output edge into a scalable segment).
    #[serde(default)]
    pub replicas: u64,
    /// Messages not yet given to any replica (an output edge into a
    /// scalable segment): its backlog.
    #[serde(default)]
    pub pending: u64,
    /// Messages given to a replica and not yet acknowledged (an output edge
    /// into a scalable segment, or a replica's input edge).
    #[serde(default)]
    pub in_flight: u64,
    /// Messages acknowledged per second over the last few seconds (an
    /// output edge into a scalable segment: all replicas; a replica's input
    /// edge: this replica's processing rate).
    #[serde(default)]
    pub messages_per_second: f64,
    /// Since when (Unix time in ms) this consumer has failed to reach its
    /// producer (input): set from the first failed attempt until it
    /// connects again. A producer that finished and exited leaves it set
    /// for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_unreachable_since_ms: Option<u64>,
    /// Why the last attempt to reach the producer failed (input), while
    /// `producer_unreachable_since_ms` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_unreachable: Option<String>,
}

/// A parameter value in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParamStatus {
    /// The value, written as in a FlowGraph file.
    pub value: serde_json::Value,
    /// The item offset (on the block's first output, or first input for a
    /// sink) from which it applies.
    pub offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_is_camel_case_and_round_trips() {
        let s = WorkerStatus {
            flowgraph: "fg".into(),
            segment: "dsp".into(),
            generation: 3,
            state: WorkerState::RestartRequired,
            restart_reason: Some("spec changed".into()),
            uptime_seconds: 1.5,
            items_per_second: 2e6,
            backlog_items: 7,
            items_lost: BTreeMap::from([("peer_lost".to_string(), 5)]),
            blocks: BTreeMap::new(),
            edges: vec![],
            params: BTreeMap::new(),
            preflight: vec![PreflightProblem {
                path: "--listen 0.0.0.0:7400".into(),
                message: "address in use".into(),
            }],
            last_error: None,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["state"], "restartRequired");
        assert_eq!(v["itemsPerSecond"], 2e6);
        assert_eq!(v["backlogItems"], 7);
        assert_eq!(v["itemsLost"]["peer_lost"], 5);
        assert!(v.get("lastError").is_none());
        assert_eq!(v["preflight"][0]["path"], "--listen 0.0.0.0:7400");
        let back: WorkerStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }
}
