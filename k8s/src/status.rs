//! The FlowGraph's `status`, written by the operator: the phase, conditions,
//! the figures `kubectl get fg` shows (ready segments, throughput) and one
//! entry per segment. The doc comments become the CRD's descriptions.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator reports about a FlowGraph.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowGraphStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Running, Succeeded, Failed or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_phase")]
    pub phase: Option<Phase>,
    /// Conditions of the graph (Ready, Valid, Progressing…), one per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Ready segments out of all, e.g. `2/3` (the Ready column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Items per second leaving the graph's sinks, e.g. `2.05M items/s`
    /// (the Throughput column); absent while unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<String>,
    /// Every segment's status, by segment name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub segments: BTreeMap<String, SegmentStatus>,
    /// Version of the operator that wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_version: Option<String>,
}

/// The status of one segment (its Deployment, pods and worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentStatus {
    /// Pods the segment's Deployment wants.
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pending, Running, Succeeded or Failed (Invalid is for the whole graph).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_phase")]
    pub phase: Option<Phase>,
    /// Where the segment's data port answers (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Container restarts of the segment's pods.
    #[serde(default)]
    pub restarts: i32,
    /// The last error: the worker's, or the pod's last termination message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Items per second through the segment; absent while unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_per_second: Option<f64>,
    /// Items lost, by cause (as the worker's /status reports them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub items_lost: BTreeMap<String, u64>,
    /// The FlowGraph generation the segment's worker runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<i64>,
    /// The worker's state as its /status reports it, or `Unknown`.
    #[serde(default = "unknown_state")]
    pub state: String,
    /// Pods the health watcher replaced (docs/operator.md, "Health").
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replacements: u32,
    /// Replacements since the data last flowed (counted against the
    /// restart budget).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// The last failure the health watcher saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// When the segment went down (RFC 3339); absent while it is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_since: Option<String>,
    /// No replacement before this time (RFC 3339): the backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_after: Option<String>,
    /// True when the restart budget is spent: the watcher replaces no more
    /// pods until the data flows again or the spec changes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gave_up: bool,
    /// A scalable segment: the replicas the autoscaler wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// A scalable segment: messages pending or in flight at its producer
    /// (mean over the autoscaler's lookback window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// A scalable segment: when the autoscaler last changed the replicas
    /// (RFC 3339; the cooldown counts from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// A scalable segment: the autoscaler's last reason (or `hpa` when a
    /// HorizontalPodAutoscaler scales it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_reason: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn unknown_state() -> String {
    UNKNOWN_STATE.to_string()
}

/// [`SegmentStatus::state`] when the worker's state is not known.
pub const UNKNOWN_STATE: &str = "Unknown";

impl Default for SegmentStatus {
    fn default() -> Self {
        SegmentStatus {
            replicas: 0,
            ready_replicas: 0,
            phase: None,
            address: None,
            restarts: 0,
            last_error: None,
            items_per_second: None,
            items_lost: BTreeMap::new(),
            applied_generation: None,
            state: unknown_state(),
            replacements: 0,
            attempts: 0,
            last_failure: None,
            down_since: None,
            next_attempt_after: None,
            gave_up: false,
            desired_replicas: None,
            backlog: None,
            last_scale_time: None,
            scale_reason: None,
        }
    }
}

/// The phase of a FlowGraph or of one of its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Created, not running yet (pods scheduling, images pulling).
    Pending,
    /// Every segment runs.
    Running,
    /// Every stream ended and every segment finished cleanly.
    Succeeded,
    /// A segment failed.
    Failed,
    /// The spec has problems (the Valid condition lists them); nothing runs.
    Invalid,
}

impl Phase {
    /// Every phase, in the order of the schema's enum.
    pub const ALL: [Phase; 5] = [
        Phase::Pending,
        Phase::Running,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Invalid => "Invalid",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// Written by hand: a plain string enum is a structural schema as it is
// (a derived one would carry per-variant `oneOf` branches for the docs).
impl JsonSchema for Phase {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Phase".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
        schemars::json_schema!({
            "type": "string",
            "enum": names,
        })
    }
}

/// `Option<Phase>` as Kubernetes wants it: a nullable string enum without
/// `null` among the values (what schemars' AddNullable would add).
fn optional_phase(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut s = Phase::json_schema(generator);
    s.insert("nullable".into(), true.into());
    s
}

/// The Ready column: `ready/total`.
pub fn ready(ready: usize, total: usize) -> String {
    format!("{ready}/{total}")
}

/// The Throughput column: items per second with three significant digits
/// and an SI prefix, e.g. `2.05M items/s`, `980 items/s`.
pub fn format_throughput(items_per_second: f64) -> String {
    let x = items_per_second;
    if !x.is_finite() || x < 0.0 {
        return "unknown".to_string();
    }
    let (v, prefix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(scale, _)| x >= *scale * 0.9995)
        .map_or((x, ""), |(scale, p)| (x / scale, p));
    // Three significant digits, trailing zeros dropped.
    let decimals = if v >= 99.95 {
        0
    } else if v >= 9.995 {
        1
    } else {
        2
    };
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{prefix} items/s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn throughput_reads_like_the_column() {
        assert_eq!(format_throughput(2_050_000.0), "2.05M items/s");
        assert_eq!(format_throughput(980.0), "980 items/s");
        assert_eq!(format_throughput(0.0), "0 items/s");
        assert_eq!(format_throughput(1.5), "1.5 items/s");
        assert_eq!(format_throughput(12_340.0), "12.3k items/s");
        assert_eq!(format_throughput(999_999.0), "1M items/s");
        assert_eq!(format_throughput(3.2e9), "3.2G items/s");
        assert_eq!(format_throughput(f64::NAN), "unknown");
        assert_eq!(ready(2, 3), "2/3");
    }

    #[test]
    fn status_serializes_with_api_field_names() {
        let status = FlowGraphStatus {
            observed_generation: Some(4),
            phase: Some(Phase::Running),
            ready: Some(ready(1, 1)),
            segments: BTreeMap::from([(
                "front".to_string(),
                SegmentStatus {
                    replicas: 1,
                    ready_replicas: 1,
                    items_per_second: Some(1e6),
                    items_lost: BTreeMap::from([("overflow".to_string(), 3)]),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        };
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(
            v,
            json!({
                "observedGeneration": 4,
                "phase": "Running",
                "ready": "1/1",
                "segments": {"front": {
                    "replicas": 1, "readyReplicas": 1, "restarts": 0,
                    "itemsPerSecond": 1e6, "itemsLost": {"overflow": 3},
                    "state": "Unknown"
                }}
            })
        );
        let back: FlowGraphStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, status);
        // What an older operator or a fresh object holds still reads.
        let seg: SegmentStatus = serde_json::from_value(json!({})).unwrap();
        assert_eq!(seg.state, "Unknown");
        assert_eq!(seg.items_per_second, None);
    }
}
