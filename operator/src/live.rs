//! The live loop: every [`PERIOD`] it reads each segment worker's
//! `/status` (through the segment's headless Service, with the graph's
//! token; a segment with several pods — a scalable one — through each
//! pod's IP, summed) and writes the figures into the FlowGraph's status —
//! throughput, items lost, the worker's state and the generation it
//! applies — only when they changed. A worker that cannot be reached is
//! `Unknown`. The figures also feed the reconcile's phase (finished,
//! failed), the health watcher's progress (counters that move, kept in
//! the context with the time they last moved) and the autoscaler's samples
//! of each output edge (pending, in flight, messages/s, replicas).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flowmesh_model::naming::service_name;
use flowmesh_model::status::WorkerStatus;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::autoscale::Sample;
use crate::build::{token_secret_name, CONTROL_PORT, TOKEN_KEY};
use crate::context::{Context, Key};
use crate::reconcile::{flowgraph_resource, merge_is_noop};

/// How often the workers are read (and at most how often figures are
/// written).
pub const PERIOD: Duration = Duration::from_secs(30);

/// What the live loop knows of one segment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// The worker's state (`running`, `finished`, …); None: not reached.
    pub state: Option<String>,
    pub items_per_second: Option<f64>,
    pub items_lost: BTreeMap<String, u64>,
    pub last_error: Option<String>,
    pub generation: Option<u64>,
    /// Items and messages counted so far on every edge and block (summed
    /// over the replicas): progress when it grows.
    pub counters: Option<u64>,
    /// The output edges, by edge id: (items not acknowledged, messages
    /// pending, in flight, messages/s, replicas).
    pub outputs: BTreeMap<String, Sample>,
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// How long the autoscaler's samples are kept (the longest lookback it
/// is given is shorter in practice).
pub const SAMPLES_KEPT_SECONDS: f64 = 3600.0;

/// Reads a worker's `/status`.
pub trait Probe: Send + Sync + 'static {
    /// `url` is the control API's base (`http://host:9400`).
    fn status(&self, url: &str, token: &str) -> Result<WorkerStatus, String>;
}

/// The real probe: plain HTTP to the control API.
pub struct HttpProbe;

impl Probe for HttpProbe {
    fn status(&self, url: &str, token: &str) -> Result<WorkerStatus, String> {
        let r = flowmesh_worker::client::request(
            "GET",
            &format!("{url}/status"),
            Some(token),
            None,
            Duration::from_secs(3),
        )
        .map_err(|e| e.to_string())?;
        if !r.is_success() {
            return Err(format!("{} {}: {}", r.status, r.reason, r.text()));
        }
        serde_json::from_slice(&r.body).map_err(|e| format!("not a worker status: {e}"))
    }
}

/// Three significant digits: figures that wobble do not cause writes.
fn round3(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return 0.0;
    }
    let mag = 10f64.powi(x.abs().log10().floor() as i32 - 2);
    (x / mag).round() * mag
}

fn figures(s: &WorkerStatus) -> Figures {
    let state = serde_json::to_value(s.state)
        .ok()
        .and_then(|v| v.as_str().map(String::from));
    let counters = s.edges.iter().map(|e| e.items).sum::<u64>()
        + s.blocks
            .values()
            .map(|b| b.items_in + b.items_out)
            .sum::<u64>();
    let outputs = s
        .edges
        .iter()
        .filter(|e| e.role == flowmesh_model::status::EdgeRole::Output)
        .map(|e| {
            (
                e.edge.clone(),
                Sample {
                    at: 0.0,
                    pending: e
                        .pending
                        .max(if e.replicas == 0 { e.backlog_items } else { 0 }),
                    in_flight: e.in_flight,
                    messages_per_second: e.messages_per_second,
                    replicas: e.replicas,
                },
            )
        })
        .collect();
    Figures {
        state,
        items_per_second: Some(round3(s.items_per_second)),
        items_lost: s.items_lost.clone(),
        last_error: s.last_error.clone(),
        generation: Some(s.generation),
        counters: Some(counters),
        outputs,
    }
}

/// The figures of a segment's replicas as one: counters and rates summed,
/// running if any runs.
fn combine(all: Vec<Figures>) -> Figures {
    let mut it = all.into_iter();
    let Some(mut out) = it.next() else {
        return Figures::default();
    };
    for f in it {
        if out.state.as_deref() != Some("running") && f.state.is_some() {
            out.state = f.state.clone();
        }
        out.items_per_second = match (out.items_per_second, f.items_per_second) {
            (Some(a), Some(b)) => Some(round3(a + b)),
            (a, b) => a.or(b),
        };
        for (k, v) in f.items_lost {
            *out.items_lost.entry(k).or_default() += v;
        }
        out.last_error = out.last_error.or(f.last_error);
        out.generation = out.generation.or(f.generation);
        out.counters = match (out.counters, f.counters) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        for (k, v) in f.outputs {
            out.outputs.entry(k).or_insert(v);
        }
    }
    out
}

/// The status patch of the figures (None: nothing changed).
pub fn figures_patch(current: &Value, figs: &BTreeMap<String, Figures>) -> Option<Value> {
    let mut segs = serde_json::Map::new();
    let mut total = 0.0;
    let mut known = false;
    for (seg, f) in figs {
        if let Some(x) = f.items_per_second {
            // The graph's throughput: its busiest segment's.
            total = f64::max(total, x);
            known = true;
        }
        segs.insert(
            seg.clone(),
            json!({
                "state": f.state.clone().unwrap_or_else(|| "Unknown".into()),
                "itemsPerSecond": f.items_per_second,
                "itemsLost": f.items_lost,
                "appliedGeneration": f.generation,
            }),
        );
    }
    let patch = json!({
        "throughput": if known { flowmesh_k8s::status::format_throughput(total) } else { "Unknown".into() },
        "segments": segs,
    });
    (!merge_is_noop(current, &patch)).then_some(patch)
}

/// Reads every segment of one FlowGraph.
pub async fn read_graph(
    ctx: &Context,
    probe: Arc<dyn Probe>,
    obj: &DynamicObject,
) -> Option<BTreeMap<String, Figures>> {
    let (ns, name) = (obj.namespace()?, obj.name_any());
    let segments: Vec<String> = obj
        .data
        .pointer("/status/segments")
        .and_then(|s| s.as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if segments.is_empty() {
        return None;
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let token = secrets
        .get_opt(&token_secret_name(&name))
        .await
        .ok()
        .flatten()
        .and_then(|s| s.data)
        .and_then(|d| d.get(TOKEN_KEY).cloned())
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .unwrap_or_default();
    // The pods with an IP, by segment label: a segment with several is
    // read pod by pod (its replicas), one with one through its Service.
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut ips: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Ok(list) = pods
        .list(&ListParams::default().labels(&crate::labels::children_selector(&name)))
        .await
    {
        for p in list.items {
            let (Some(seg), Some(ip)) = (
                p.labels().get(crate::labels::SEGMENT).cloned(),
                p.status.as_ref().and_then(|s| s.pod_ip.clone()),
            ) else {
                continue;
            };
            if p.metadata.deletion_timestamp.is_none() {
                ips.entry(seg).or_default().push(ip);
            }
        }
    }
    let mut out = BTreeMap::new();
    for seg in segments {
        let urls: Vec<String> = match ips.get(&flowmesh_model::naming::segment_label(&seg)) {
            Some(v) if v.len() > 1 => v
                .iter()
                .map(|ip| format!("http://{ip}:{CONTROL_PORT}"))
                .collect(),
            _ => vec![format!(
                "http://{}.{ns}.svc:{CONTROL_PORT}",
                service_name(&name, &seg)
            )],
        };
        let mut all = vec![];
        for url in urls {
            let (p, t) = (probe.clone(), token.clone());
            let r = tokio::task::spawn_blocking(move || p.status(&url, &t))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            match r {
                Ok(s) => all.push(figures(&s)),
                Err(e) => {
                    tracing::debug!("FlowGraph {ns}/{name} segment {seg}: worker not reached: {e}")
                }
            }
        }
        out.insert(seg, combine(all));
    }
    Some(out)
}

/// Feeds the health watcher's progress and the autoscaler's samples with
/// one round of figures read at `now`.
pub fn record(ctx: &Context, key: &Key, figs: &BTreeMap<String, Figures>, now: f64) {
    let mut progress = ctx.progress.lock().expect("progress lock");
    let p = progress.entry(key.clone()).or_default();
    for (seg, f) in figs {
        let e = p.entry(seg.clone()).or_default();
        e.state = f.state.clone();
        if let Some(c) = f.counters {
            e.observe(c, now);
        }
    }
    let mut samples = ctx.samples.lock().expect("samples lock");
    let s = samples.entry(key.clone()).or_default();
    for f in figs.values() {
        for (edge, x) in &f.outputs {
            let v = s.entry(edge.clone()).or_default();
            v.push(Sample { at: now, ..*x });
            v.retain(|x| x.at >= now - SAMPLES_KEPT_SECONDS);
        }
    }
}

/// One round over every FlowGraph in `stores`; returns the number of
/// status writes.
pub async fn poll_once(
    ctx: &Context,
    probe: Arc<dyn Probe>,
    stores: &[Store<DynamicObject>],
) -> usize {
    let mut writes = 0;
    for store in stores {
        for obj in store.state() {
            let Some(figs) = read_graph(ctx, probe.clone(), &obj).await else {
                continue;
            };
            let key: Key = (obj.namespace().unwrap_or_default(), obj.name_any());
            ctx.live
                .lock()
                .expect("live lock")
                .insert(key.clone(), figs.clone());
            record(ctx, &key, &figs, unix_now());
            let current = obj.data.get("status").cloned().unwrap_or(Value::Null);
            let Some(patch) = figures_patch(&current, &figs) else {
                continue;
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(ctx.client.clone(), &key.0, &flowgraph_resource());
            match api
                .patch_status(
                    &key.1,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": patch })),
                )
                .await
            {
                Ok(_) => writes += 1,
                Err(e) => {
                    tracing::warn!("FlowGraph {}/{}: cannot write figures: {e}", key.0, key.1)
                }
            }
        }
    }
    writes
}

/// Runs [`poll_once`] every [`PERIOD`] until the task is dropped.
pub async fn run(ctx: Arc<Context>, probe: Arc<dyn Probe>, stores: Vec<Store<DynamicObject>>) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        poll_once(&ctx, probe.clone(), &stores).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_written_only_when_they_change() {
        let figs = BTreeMap::from([(
            "dsp".to_string(),
            Figures {
                state: Some("running".into()),
                items_per_second: Some(round3(2_051_234.0)),
                items_lost: BTreeMap::new(),
                last_error: None,
                generation: Some(3),
                ..Default::default()
            },
        )]);
        let patch = figures_patch(&Value::Null, &figs).expect("a first write");
        assert_eq!(patch["throughput"], "2.05M items/s");
        assert_eq!(patch["segments"]["dsp"]["itemsPerSecond"], 2_050_000.0);
        // The status now holds them: no second write.
        assert_eq!(figures_patch(&patch, &figs), None);
        let unknown = BTreeMap::from([("dsp".to_string(), Figures::default())]);
        let p = figures_patch(&patch, &unknown).unwrap();
        assert_eq!(p["segments"]["dsp"]["state"], "Unknown");
        assert_eq!(p["throughput"], "Unknown");
    }
}
