//! Cluster mode: the segment comes from a FlowGraph resource.
//!
//! `flowmesh worker --flowgraph NAME --namespace NS --segment S` reads the
//! resource from the Kubernetes API (in-cluster service account, or
//! KUBECONFIG), validates it like `flowmesh validate`, partitions it with
//! the same pure function as every other worker and the operator, finds
//! its peers by name through the address template, and runs segment S.
//!
//! Then it follows the resource ([`flowmesh_k8s::watch`]); for each new
//! version it asks [`flowmesh_model::change::segment_change`] what the edit
//! means for its own segment:
//! - settable parameters of its blocks: applied live through the blocks'
//!   callbacks at the next item, each with the item offset where it took
//!   effect ([`Applied`]);
//! - any other change of its segment: reported as "restart required" (the
//!   operator rolls the segment) and otherwise left alone;
//! - changes that touch only other segments: nothing;
//! - a spec that fails validation: nothing applied, the problems reported.
//!
//! Before it starts anything the worker runs its [`preflight`](crate::preflight)
//! on the resource. While problems remain it starts nothing: it serves its
//! control API with `/status` in state `failed` and every problem in its
//! `preflight` list, checks again on every change of the resource, and
//! starts the segment as soon as a version passes (or exits when the
//! resource is deleted).
//!
//! A deleted resource stops the segment cleanly. A segment whose streams
//! have all ended stays up in state `finished` until then (a Deployment
//! would otherwise restart it and replay the graph). SIGTERM or SIGINT (a
//! pod moved or replaced) is a planned stop for a restart
//! ([`crate::lifecycle`]): the segment drains within `grace`, its output
//! edges close without an end of stream, and [`Exit::Stopped`] says so.
//!
//! The control plane runs on tokio; the segment's DSP threads are the
//! runtime's own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use flowmesh_k8s::source::{self, Event, ResourceRef};
use flowmesh_model::change::{segment_change, SegmentChange};
use flowmesh_model::naming::PeerTemplate;
use flowmesh_model::status::PreflightProblem;
use flowmesh_model::validate::Report as Validation;
use flowmesh_model::{catalog, params, FlowGraphSpec, Pmt};
use futures::StreamExt;
use kube::Client;

use crate::preflight::{self, Host};
use crate::{plan, start_segment, Config};

/// Errors of cluster mode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Resource(#[from] source::Error),
    #[error(transparent)]
    Worker(#[from] crate::Error),
    #[error("segment `{segment}` failed: {message}")]
    Failed { segment: String, message: String },
    /// The preflight failed and its problems cannot be served either (the
    /// control address is taken): nothing was started.
    #[error("segment `{segment}` was not started; its preflight found:{}", problems.iter().map(|p| format!("\n  {p}")).collect::<String>())]
    Preflight {
        segment: String,
        problems: Vec<PreflightProblem>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to run a segment from a resource.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub resource: ResourceRef,
    /// Every peer's address: `{service}.{namespace}.svc:7400` by default.
    pub peer_template: PeerTemplate,
    /// The segment and how to run it (its `peers` are filled in from the
    /// template).
    pub worker: Config,
    /// The control API, if served: in cluster mode its `PUT /params` answers
    /// 409 (the resource is the one source of truth for parameters) and its
    /// `/status` shows "restart required" when an edit needs a restart.
    pub control: Option<crate::control::Options>,
    /// How long a planned stop (SIGTERM, SIGINT) may take.
    pub grace: std::time::Duration,
}

/// A settable parameter applied live.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub block: String,
    pub param: String,
    pub value: Pmt,
    /// The item offset (block's first output, or first input for a sink)
    /// from which the value is in force.
    pub offset: u64,
    /// The resource's `metadata.generation` it came from.
    pub generation: i64,
}

/// The segment's state as cluster mode sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started: the preflight found problems ([`Report::preflight`]).
    PreflightFailed,
    Running,
    /// The resource changed in a way only a restart can apply.
    RestartRequired,
    /// Every stream of the segment has ended; waiting to be deleted.
    Finished,
}

/// What cluster mode has done and seen, shared with whoever reports it
/// (logs, the control API).
#[derive(Debug, Clone)]
pub struct Report {
    pub state: State,
    /// The resource generation whose spec the segment runs (live changes
    /// included).
    pub generation: i64,
    /// Live parameter changes, in order.
    pub applied: Vec<Applied>,
    /// Why a restart is required (each names the element).
    pub restart_reasons: Vec<String>,
    /// The last problem: an invalid new spec, a parameter the block refused.
    pub last_error: Option<String>,
    /// What the last preflight found (empty once the segment started).
    pub preflight: Vec<PreflightProblem>,
}

/// How cluster mode ended.
#[derive(Debug)]
pub enum Exit {
    /// The resource was deleted (the segment was stopped if still running).
    Deleted,
    /// SIGTERM or SIGINT: a planned stop for a restart. `ended`: every
    /// stream of the segment had already ended (state `finished`), so there
    /// was nothing to stop.
    Stopped { ended: bool },
}

/// The peers of `segment` by the template.
fn peers(
    cfg: &ClusterConfig,
    spec_names: impl Iterator<Item = String>,
) -> BTreeMap<String, String> {
    spec_names
        .filter(|s| *s != cfg.worker.segment)
        .map(|s| {
            let a = cfg
                .peer_template
                .render(&cfg.resource.name, &cfg.resource.namespace, &s);
            (s, a)
        })
        .collect()
}

/// The new value of a changed parameter as the catalog coerces it (its
/// default when the spec no longer gives one).
fn new_value(spec: &FlowGraphSpec, block: &str, param: &str) -> Option<Pmt> {
    let b = spec.blocks.get(block)?;
    let d = catalog().get(&b.kind)?;
    params::resolve(d, &b.params).0.get(param).cloned()
}

/// Runs the preflight of `cfg`'s segment on a version of its resource (as
/// [`source::fetch`] or [`source::watch`] gave it): the version if it
/// passed, and every problem. An invalid spec is a preflight failure with
/// `flowmesh validate`'s problems; an error reading the resource is an
/// error. `control_held`: the control address is this worker's already (a
/// [`Control::waiting`](crate::control::Control::waiting) serves it), so it
/// is not checked.
pub fn check(
    cfg: &ClusterConfig,
    version: source::Result<source::Fetched>,
    control_held: bool,
) -> Result<(Option<source::Fetched>, Vec<PreflightProblem>)> {
    let host = Host {
        segment: &cfg.worker.segment,
        listen: &cfg.worker.listen,
        control: cfg
            .control
            .as_ref()
            .filter(|_| !control_held)
            .map(|c| c.addr.as_str()),
        state_dir: cfg.worker.state_dir.as_deref(),
    };
    match version {
        Ok(f) => {
            let problems = preflight::check(Some(&f.doc), &Validation::default(), &host);
            Ok((problems.is_empty().then_some(f), problems))
        }
        Err(source::Error::Invalid { report, doc, .. }) => {
            Ok((None, preflight::check(doc.as_deref(), &report, &host)))
        }
        Err(e) => Err(e.into()),
    }
}

/// How the segment's threads ended (what the waiting thread sent), told to
/// the control API: `Ok` when the graph ended normally, else the failure.
fn ended<R>(
    r: std::result::Result<
        std::result::Result<R, flowmesh_runtime::scheduler::Error>,
        tokio::sync::oneshot::error::RecvError,
    >,
    control: Option<&crate::control::Control>,
    segment: &str,
) -> Result<()> {
    let outcome = match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            return Err(Error::Failed {
                segment: segment.to_string(),
                message: "the segment's threads vanished".into(),
            })
        }
    };
    if let Some(c) = control {
        c.set_outcome(outcome.clone());
    }
    outcome.map_err(|message| Error::Failed {
        segment: segment.to_string(),
        message,
    })
}

/// Runs the segment of `cfg` from its resource until the resource is
/// deleted. `report` is kept up to date throughout.
pub async fn run(client: Client, cfg: ClusterConfig, report: Arc<Mutex<Report>>) -> Result<Exit> {
    let first = source::fetch(&client, &cfg.resource).await;
    let mut events = Box::pin(source::watch(client, cfg.resource.clone()));
    let (fetched, held) = match until_clean(&cfg, first, &mut events, &report).await? {
        Some(x) => x,
        None => return Ok(Exit::Deleted),
    };
    // From here on SIGTERM and SIGINT are ours: a planned stop. (While a
    // failed preflight waits for the resource nothing runs, and a signal
    // ends the process as it would any other.)
    let mut signals = crate::lifecycle::StopSignals::new().map_err(|e| Error::Failed {
        segment: cfg.worker.segment.clone(),
        message: format!("cannot listen for SIGTERM and SIGINT: {e}"),
    })?;
    let part = plan(&fetched.doc)?;
    let mut worker = cfg.worker.clone();
    worker.peers = peers(&cfg, part.segments.keys().cloned());
    worker.generation = fetched.generation.max(0) as u64;
    let segment = worker.segment.clone();
    for (s, a) in &worker.peers {
        tracing::info!("segment {segment}: peer {s} at {a}");
    }
    let started = start_segment(&fetched.doc, &worker)?;
    let control = match cfg.control.clone() {
        Some(opts) => {
            let opts = crate::control::Options {
                params_from_resource: true,
                ..opts
            };
            let c = match held {
                Some(l) => crate::control::Control::start_on(l, &started, &fetched.doc, opts),
                None => crate::control::Control::start(&started, &fetched.doc, opts),
            }
            .map_err(|e| Error::Failed {
                segment: segment.clone(),
                message: e.to_string(),
            })?;
            tracing::info!("segment {segment}: control API on http://{}", c.addr());
            Some(c)
        }
        None => None,
    };
    let handle = started.running.handle();
    let param_log = started.param_log.clone();
    {
        let mut r = report.lock().expect("report lock");
        r.state = State::Running;
        r.generation = fetched.generation;
        r.preflight.clear();
    }
    // The DSP threads end on their own (streams ended) or when stopped;
    // one plain thread waits for them.
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let running = started.running;
    std::thread::Builder::new()
        .name("fm-segment-wait".into())
        .spawn(move || {
            let _ = done_tx.send(running.wait());
        })
        .expect("spawn a thread");
    let mut done = false;
    let mut current = fetched.doc.spec;
    loop {
        tokio::select! {
            r = &mut done_rx, if !done => {
                done = true;
                ended(r, control.as_ref(), &segment)?;
                tracing::info!("segment {segment}: every stream ended; staying up (finished) until the FlowGraph is deleted");
                report.lock().expect("report lock").state = State::Finished;
            }
            name = signals.next() => {
                if done {
                    tracing::info!("segment {segment}: {name}: every stream had ended; exiting");
                    return Ok(Exit::Stopped { ended: true });
                }
                tracing::info!(
                    "segment {segment}: {name}: stopping for a restart within {} s: sources stop, \
                     the graph drains into its sinks, output edges hand over what they hold \
                     without end of stream (another signal exits at once)",
                    cfg.grace.as_secs_f64()
                );
                handle.suspend();
                if let Some(c) = &control {
                    c.set_stopping();
                }
                let t0 = std::time::Instant::now();
                tokio::select! {
                    r = &mut done_rx => {
                        ended(r, control.as_ref(), &segment)?;
                        tracing::info!(
                            "segment {segment}: stopped for a restart in {:.1} s",
                            t0.elapsed().as_secs_f64()
                        );
                    }
                    again = signals.next() => {
                        tracing::warn!("segment {segment}: {again} again: exiting at once");
                    }
                    _ = tokio::time::sleep(cfg.grace) => {
                        tracing::warn!(
                            "segment {segment}: the grace period of {} s is over and the segment \
                             has not stopped: exiting now",
                            cfg.grace.as_secs_f64()
                        );
                    }
                }
                return Ok(Exit::Stopped { ended: false });
            }
            e = events.next() => match e {
                None | Some(Event::Deleted) => {
                    tracing::info!("segment {segment}: {} was deleted; stopping", cfg.resource);
                    handle.stop();
                    if !done {
                        let _ = done_rx.await;
                    }
                    return Ok(Exit::Deleted);
                }
                Some(Event::Applied(f)) => match *f {
                    Err(e) => {
                        tracing::warn!("segment {segment}: new version not applied: {e}");
                        report.lock().expect("report lock").last_error = Some(e.to_string());
                    }
                    Ok(f) => {
                        let change = segment_change(&current, &f.doc.spec, &segment);
                        if matches!(change, SegmentChange::None | SegmentChange::Live { .. }) {
                            // Back to what runs (an edit undone): no restart needed.
                            let mut rep = report.lock().expect("report lock");
                            if rep.state == State::RestartRequired {
                                rep.state = State::Running;
                                rep.restart_reasons.clear();
                            }
                        }
                        match change {
                            SegmentChange::None => {}
                            SegmentChange::Live { params } => {
                                for c in params {
                                    let Some(value) = new_value(&f.doc.spec, &c.block, &c.param) else { continue };
                                    let old = new_value(&current, &c.block, &c.param)
                                        .map_or(serde_json::Value::Null, |v| params::value_json(&v));
                                    let h = handle.clone();
                                    let (b, p, v) = (c.block.clone(), c.param.clone(), value.clone());
                                    let r = tokio::task::spawn_blocking(move || h.set(&b, &p, v))
                                        .await
                                        .expect("set does not panic");
                                    // Durable before it is reported: a resume replays it at this offset.
                                    let recorded = match &r {
                                        Ok(offset) => {
                                            let (log, b, p, new, at) = (param_log.clone(), c.block.clone(), c.param.clone(), params::value_json(&value), *offset);
                                            tokio::task::spawn_blocking(move || log.record(&b, &p, old, new, at))
                                                .await
                                                .expect("recording does not panic")
                                        }
                                        Err(_) => Ok(None),
                                    };
                                    let mut rep = report.lock().expect("report lock");
                                    if let Err(e) = recorded {
                                        tracing::error!("segment {segment}: {e}");
                                        rep.last_error = Some(e.to_string());
                                    }
                                    match r {
                                        Ok(offset) => {
                                            tracing::info!(
                                                "segment {segment}: {}.{} = {value} from item {offset} (generation {})",
                                                c.block, c.param, f.generation
                                            );
                                            rep.applied.push(Applied {
                                                block: c.block,
                                                param: c.param,
                                                value,
                                                offset,
                                                generation: f.generation,
                                            });
                                        }
                                        Err(e) => {
                                            tracing::warn!("segment {segment}: {}.{} not applied: {e}", c.block, c.param);
                                            rep.last_error = Some(e.to_string());
                                        }
                                    }
                                }
                                current = f.doc.spec;
                                report.lock().expect("report lock").generation = f.generation;
                            }
                            SegmentChange::RestartRequired { reasons } => {
                                for r in &reasons {
                                    tracing::warn!("segment {segment}: restart required: {r}");
                                }
                                if let Some(c) = &control {
                                    c.set_restart_required(&reasons.join("; "));
                                }
                                let mut rep = report.lock().expect("report lock");
                                rep.state = State::RestartRequired;
                                rep.restart_reasons = reasons;
                            }
                            SegmentChange::Removed => {
                                let reason = format!("segment `{segment}` is no longer in the FlowGraph");
                                tracing::warn!("{reason}");
                                if let Some(c) = &control {
                                    c.set_restart_required(&reason);
                                }
                                let mut rep = report.lock().expect("report lock");
                                rep.state = State::RestartRequired;
                                rep.restart_reasons = vec![reason];
                            }
                        }
                    }
                },
            }
        }
    }
}

/// Checks `first` (the version read at the start), then, while problems
/// remain, every new version from `events`, with the control API (if
/// served) answering in state `failed` with the problems. Returns the first
/// version that passes, with the control API's socket if it was serving;
/// `None` if the resource was deleted first.
async fn until_clean(
    cfg: &ClusterConfig,
    first: source::Result<source::Fetched>,
    events: &mut (impl futures::Stream<Item = Event> + Unpin),
    report: &Arc<Mutex<Report>>,
) -> Result<Option<(source::Fetched, Option<std::net::TcpListener>)>> {
    let segment = &cfg.worker.segment;
    let mut generation = first.as_ref().map_or(0, |f| f.generation);
    let (clean, problems) = check(cfg, first, false)?;
    if let Some(f) = clean {
        return Ok(Some((f, None)));
    }
    let mut waiting = None;
    let mut problems = problems;
    loop {
        for p in &problems {
            tracing::warn!("segment {segment}: not started (generation {generation}): {p}");
        }
        {
            let mut r = report.lock().expect("report lock");
            r.state = State::PreflightFailed;
            r.generation = generation;
            r.preflight = problems.clone();
        }
        let shown = generation.max(0) as u64;
        match (&waiting, &cfg.control) {
            (Some(c), _) => crate::control::Control::set_preflight(c, shown, problems.clone()),
            (None, Some(opts)) => {
                let c = crate::control::Control::waiting(
                    &cfg.resource.name,
                    segment,
                    shown,
                    problems.clone(),
                    crate::control::Options {
                        params_from_resource: true,
                        ..opts.clone()
                    },
                )
                .map_err(|_| Error::Preflight {
                    segment: segment.clone(),
                    problems: problems.clone(),
                })?;
                tracing::info!(
                    "segment {segment}: control API on http://{} (not started)",
                    c.addr()
                );
                waiting = Some(c);
            }
            (None, None) => {}
        }
        let version = match events.next().await {
            None | Some(Event::Deleted) => {
                tracing::info!("segment {segment}: {} was deleted; exiting", cfg.resource);
                return Ok(None);
            }
            Some(Event::Applied(v)) => *v,
        };
        if let Ok(f) = &version {
            generation = f.generation;
        }
        let (clean, found) = check(cfg, version, waiting.is_some())?;
        if let Some(f) = clean {
            tracing::info!(
                "segment {segment}: preflight passed (generation {}); starting",
                f.generation
            );
            return Ok(Some((f, waiting.map(|c| c.into_listener()))));
        }
        problems = found;
    }
}

impl Report {
    pub fn new() -> Arc<Mutex<Report>> {
        Arc::new(Mutex::new(Report {
            state: State::Running,
            generation: 0,
            applied: vec![],
            restart_reasons: vec![],
            last_error: None,
            preflight: vec![],
        }))
    }
}
