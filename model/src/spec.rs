//! The FlowGraph document: one schema for `flowmesh run` files and for the
//! Kubernetes resource's `spec`.
//!
//! ```yaml
//! apiVersion: flowmesh.dev/v1alpha1
//! kind: FlowGraph
//! metadata: {name: tone}
//! spec:
//!   blocks:
//!     src:  {kind: signal_source, params: {type: cf32, samp_rate: 1e6, frequency: 1e3}}
//!     head: {kind: head, params: {type: cf32, n: 1000000}}
//!     sink: {kind: null_sink, params: {type: cf32}}
//!   connections:
//!     - [src.out, head.in]
//!     - [head.out, sink.in]
//! ```
//!
//! Parsing goes YAML → `serde_json::Value` → (structural checks in
//! [`crate::validate`]) → these typed structs, so that every problem in a file
//! is reported at once with its path.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group and version of FlowGraph documents.
pub const API_VERSION: &str = "flowmesh.dev/v1alpha1";
/// The kind of FlowGraph documents.
pub const KIND: &str = "FlowGraph";

/// A whole FlowGraph file as written by users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowGraphDocument {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: FlowGraphSpec,
}

/// The subset of Kubernetes object metadata a file may carry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The graph: blocks by name, stream and message connections, and segments
/// (placement and scaling groups, used by the partitioner and operator).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowGraphSpec {
    /// Blocks keyed by name. Names are DNS-label-like: `[a-z0-9_-]`, starting with a letter.
    pub blocks: BTreeMap<String, BlockSpec>,
    /// `[from, to]` pairs written `block.port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<Connection>,
    /// Placement and scaling groups; a block names its segment in `segment`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub segments: BTreeMap<String, SegmentSpec>,
    /// Runtime settings (scheduler, buffer sizes). Defaults suit most graphs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSpec>,
}

/// One block instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockSpec {
    /// Block kind from the catalog (`flowmesh blocks` lists them).
    pub kind: String,
    /// Parameters; their names, types and ranges depend on the kind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "free_form_params")]
    pub params: BTreeMap<String, serde_json::Value>,
    /// The segment this block runs in (the default segment when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
}

fn free_form_params(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "Block parameters; see `flowmesh blocks KIND`.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A placement and scaling group.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SegmentSpec {
    /// Host or node this segment should run on (in a cluster: a node
    /// selector on `kubernetes.io/hostname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Kubernetes settings of the segment's pod (node selector, affinity,
    /// tolerations, resources, image, storage, volumes, capabilities, host
    /// networking). Free-form here: `flowmesh run` ignores it, and the
    /// Kubernetes side (`flowmesh-k8s`) checks it against the Kubernetes
    /// API types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_kubernetes")]
    pub kubernetes: Option<serde_json::Value>,
    /// Makes the segment scalable: it runs as `min` to `max` replicas that
    /// share its input messages (only for segments whose inputs are all
    /// message edges; see docs/scaling.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,
}

/// The replica range of a scalable segment.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scaling {
    /// Fewest replicas (at least 1).
    pub min: u32,
    /// Most replicas (at least `min`).
    pub max: u32,
    /// The operator's autoscaler aims at a backlog (pending plus in-flight
    /// messages) that the replicas clear in this many seconds at their
    /// measured rate (default 5; docs/operator.md, "Autoscaling").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_seconds_of_backlog: Option<f64>,
    /// Seconds after a scale change before the next one (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_seconds: Option<u32>,
    /// Seconds of samples a decision looks at (default 120): scale-up
    /// follows their mean, scale-down needs every one of them to agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback_seconds: Option<u32>,
    /// Most replicas added in one decision (default 2); a decision
    /// removes at most half as many (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_step: Option<u32>,
    /// Deliver the segment's results downstream in `id` order (held back
    /// until every lower id arrived); by default in arrival order.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ordered: bool,
    /// Emit a standard `autoscaling/v2` HorizontalPodAutoscaler on CPU
    /// instead of the operator's autoscaler (Kubernetes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa: Option<HpaScaling>,
}

/// `scaling.hpa`: the HorizontalPodAutoscaler option.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HpaScaling {
    /// Average CPU utilization (percent of the pods' CPU request) the HPA
    /// aims at (1 to 100; the segment should set a CPU request).
    #[serde(rename = "targetCPUUtilization")]
    pub target_cpu_utilization: u32,
}

fn free_form_kubernetes(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "Kubernetes settings of the segment's pod; see docs/operator.md.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Scheduler choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerKind {
    /// A fixed pool of worker threads (one per core); each runs a contiguous
    /// run of blocks in topological order. The default.
    #[default]
    Pool,
    /// One OS thread per block.
    ThreadPerBlock,
}

/// Runtime tuning.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<SchedulerKind>,
    /// Worker threads for the pool scheduler (default: available cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Stream buffer size in bytes (rounded up to whole pages and items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_bytes: Option<u64>,
    /// Minimum size of buffers between worker threads, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_thread_bytes: Option<u64>,
    /// Settings of the network edges between segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
}

/// Settings of the network edges between segments (docs/protocol.md).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSpec {
    /// Protect data frames with CRC32C (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc: Option<bool>,
    /// Data kept by each producer for consumers that reconnect (default 16 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
    /// Longest wait of a partial batch before it is sent (default 1000 µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_micros: Option<u64>,
    /// How long a producer whose stream has ended waits, with no consumer
    /// connected, for one to take what it has not acknowledged (default 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linger_seconds: Option<u64>,
}

/// A connection `[from, to]`, each end written `block.port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Connection(pub [String; 2]);

impl JsonSchema for Connection {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Connection".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "array",
            "description": "[from, to], each written block.port",
            "items": {"type": "string"},
            "minItems": 2,
            "maxItems": 2
        })
    }
}

impl Connection {
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        Connection([from.into(), to.into()])
    }
    pub fn from(&self) -> &str {
        &self.0[0]
    }
    pub fn to(&self) -> &str {
        &self.0[1]
    }
}

/// One end of a connection: `block.port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    pub block: String,
    pub port: String,
}

impl Endpoint {
    /// Parses `block.port`; the port is everything after the first dot.
    pub fn parse(s: &str) -> Option<Endpoint> {
        let (block, port) = s.split_once('.')?;
        if block.is_empty() || port.is_empty() {
            return None;
        }
        Some(Endpoint {
            block: block.to_string(),
            port: port.to_string(),
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.block, self.port)
    }
}

/// Errors turning text into a document (syntax only; semantic problems are
/// [`crate::validate::Problem`]s).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// Parses YAML text into a generic JSON value (first step of loading a file).
pub fn parse_yaml_value(text: &str) -> Result<serde_json::Value, Error> {
    serde_saphyr::from_str::<serde_json::Value>(text).map_err(|e| Error::Yaml(e.to_string()))
}

impl FlowGraphDocument {
    /// Serializes to YAML (used for partition output and round trips).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("a FlowGraph document always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parse() {
        let e = Endpoint::parse("psd.out").unwrap();
        assert_eq!((e.block.as_str(), e.port.as_str()), ("psd", "out"));
        assert!(Endpoint::parse("psd").is_none());
        assert!(Endpoint::parse(".out").is_none());
        assert!(Endpoint::parse("psd.").is_none());
    }

    #[test]
    fn document_round_trips_through_yaml() {
        let text = r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {name: t}
spec:
  blocks:
    src: {kind: null_source, params: {type: f32}}
    sink: {kind: null_sink, params: {type: f32}, segment: b}
  connections:
    - [src.out, sink.in]
"#;
        let v = parse_yaml_value(text).unwrap();
        let doc: FlowGraphDocument = serde_json::from_value(v).unwrap();
        assert_eq!(doc.spec.connections[0].to(), "sink.in");
        let again: FlowGraphDocument =
            serde_json::from_value(parse_yaml_value(&doc.to_yaml()).unwrap()).unwrap();
        assert_eq!(doc, again);
    }
}
