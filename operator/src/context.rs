//! The one shared context of the controller: the API client, the Event
//! recorder's identity, the metrics, the operator's settings, the live
//! figures read from the workers and what the health watcher and the
//! autoscaler follow over time (progress, samples). No globals.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::autoscale::Sample;
pub use crate::build::Settings;
use crate::conditions::Phase;
use crate::health::Progress;
use crate::live::Figures;

/// The operator's metrics (`/metrics`, Prometheus text format).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// `flowmesh_operator_reconciles_total{result}`: ok, invalid, error.
    pub reconciles: IntCounterVec,
    /// `flowmesh_operator_reconcile_duration_seconds`.
    pub duration: HistogramVec,
    /// `flowmesh_operator_reconcile_errors_total{reason}`.
    pub errors: IntCounterVec,
    /// `flowmesh_operator_flowgraphs{phase}`.
    pub flowgraphs: IntGaugeVec,
    /// `flowmesh_operator_children_writes_total{kind,op}`: apply, delete, create.
    pub writes: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "flowmesh_operator_reconciles_total",
                "FlowGraph reconciles, by result (ok, invalid, error).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "flowmesh_operator_reconcile_duration_seconds",
                "Time spent in one reconcile.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &[],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "flowmesh_operator_reconcile_errors_total",
                "Failed reconciles, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let flowgraphs = IntGaugeVec::new(
            Opts::new("flowmesh_operator_flowgraphs", "FlowGraphs by phase."),
            &["phase"],
        )
        .expect("valid metric");
        let writes = IntCounterVec::new(
            Opts::new(
                "flowmesh_operator_child_writes_total",
                "Writes of children, by kind and operation (apply, create, delete).",
            ),
            &["kind", "op"],
        )
        .expect("valid metric");
        for m in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(errors.clone()),
            Box::new(flowgraphs.clone()),
            Box::new(writes.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        Metrics {
            registry,
            reconciles,
            duration,
            errors,
            flowgraphs,
            writes,
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let enc = prometheus::TextEncoder::new();
        let _ = enc.encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// FlowGraph key: (namespace, name).
pub type Key = (String, String);

/// Shared by every reconcile and the live loop.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub settings: Settings,
    /// The phase of each FlowGraph (for the `flowgraphs{phase}` gauge).
    pub phases: Mutex<BTreeMap<Key, Phase>>,
    /// The workers' figures, per FlowGraph and segment, from the live loop.
    pub live: Mutex<BTreeMap<Key, BTreeMap<String, Figures>>>,
    /// Each segment's progress (when its counters last moved), per
    /// FlowGraph, from the live loop; the health watcher reads it.
    pub progress: Mutex<BTreeMap<Key, BTreeMap<String, Progress>>>,
    /// Samples of each output edge (by edge id), per FlowGraph, from the
    /// live loop; the autoscaler reads those into scalable segments.
    pub samples: Mutex<BTreeMap<Key, BTreeMap<String, Vec<Sample>>>>,
}

impl Context {
    pub fn new(client: Client, settings: Settings) -> Arc<Context> {
        let reporter = Reporter {
            controller: crate::labels::MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: Metrics::new(),
            settings,
            phases: Mutex::new(BTreeMap::new()),
            live: Mutex::new(BTreeMap::new()),
            progress: Mutex::new(BTreeMap::new()),
            samples: Mutex::new(BTreeMap::new()),
        })
    }

    /// Records `fg`'s phase (None: deleted) and updates the gauge.
    pub fn set_phase(&self, key: Key, phase: Option<Phase>) {
        let mut p = self.phases.lock().expect("phases lock");
        match phase {
            Some(ph) => {
                p.insert(key, ph);
            }
            None => {
                p.remove(&key);
            }
        }
        for ph in Phase::ALL {
            let n = p.values().filter(|x| **x == ph).count();
            self.metrics
                .flowgraphs
                .with_label_values(&[ph.as_str()])
                .set(n as i64);
        }
    }
}
