//! The worker's control and health API: HTTP with JSON bodies on its own
//! address (`--control`, default `0.0.0.0:9400`), served by axum on a
//! single-threaded tokio runtime in its own thread (never on the DSP
//! threads). docs/worker.md describes every endpoint with examples.
//!
//! | endpoint | what | token |
//! |---|---|---|
//! | `GET /healthz` | the process is alive | never |
//! | `GET /readyz` | graph built, listening, every input edge connected at least once | never |
//! | `GET /metrics` | Prometheus text ([`crate::metrics`]) | unless `open_reads` |
//! | `GET /status` | [`WorkerStatus`] | unless `open_reads` |
//! | `GET /params/{block}/{param}` | `{"value": …, "offset": …}` | unless `open_reads` |
//! | `PUT /params/{block}/{param}` | body: the bare JSON value; answer as GET | always |
//! | `POST /messages/{block}/{port}` | body: the JSON message | always |
//!
//! A segment whose preflight failed is not started; the API then serves
//! [`Control::waiting`]: `/status` in state `failed` with the problems in
//! its `preflight` list, `/readyz` 503, and every call about the running
//! graph 503 `not_started`. When the problems are gone the same listening
//! socket goes to the segment's API ([`Control::into_listener`],
//! [`Control::start_on`]).
//!
//! Mutating calls need the bearer token and are refused when none is
//! configured. Values are checked against the catalog with the messages of
//! `flowmesh validate` before they reach the running graph. Every error
//! answers `{"code", "path", "message", "hint"?}`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flowmesh_model::catalog::{BlockDescriptor, PortKind, ResolvedKind, Role as BlockRole};
use flowmesh_model::params::{self, SetRefusal};
use flowmesh_model::status::{
    BlockStatus, EdgeRole, EdgeStatus, ParamStatus, PreflightProblem, WorkerState, WorkerStatus,
};
use flowmesh_model::{catalog, partition, FlowGraphDocument, Params, Pmt};
use flowmesh_runtime::net::env::NetEnv;
use flowmesh_runtime::net::stats::{EdgeStats, Role, CAUSES};
use flowmesh_runtime::scheduler::{self, Handle};
use serde_json::{json, Value};

use crate::metrics::{self, Kind, Text};
use crate::Segment;

/// Where the control API listens unless told otherwise.
pub const DEFAULT_ADDR: &str = "0.0.0.0:9400";
/// Largest request body accepted (a parameter value or a message is small).
pub const BODY_LIMIT: usize = 64 * 1024;
/// Larger bodies are still read up to this size (so that the client gets
/// its 413 answer instead of a reset connection), then refused.
const DRAIN_LIMIT: usize = 1 << 20;
/// `itemsPerSecond` is measured over this window.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Errors of starting the control API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} for the control API: {source}; choose another address with --control")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start the control API: {0}")]
    Start(std::io::Error),
}

/// How the control API is served.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on (`0.0.0.0:9400`, `127.0.0.1:0` for a free port).
    pub addr: String,
    /// The bearer token mutating calls (and, unless `open_reads`, reading
    /// calls) must present; `None` or empty: mutating calls are refused.
    pub token: Option<String>,
    /// Serve `/metrics`, `/status` and `GET /params` without a token.
    pub open_reads: bool,
    /// Cluster mode: the FlowGraph resource is the one source of truth for
    /// parameters; `PUT /params` (and `cmd` messages) answer 409 and say to
    /// edit the resource.
    pub params_from_resource: bool,
    /// Largest request body accepted ([`BODY_LIMIT`]).
    pub body_limit: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            addr: DEFAULT_ADDR.into(),
            token: None,
            open_reads: false,
            params_from_resource: false,
            body_limit: BODY_LIMIT,
        }
    }
}

/// A running control API. Dropping it stops the server.
pub struct Control {
    addr: SocketAddr,
    served: Served,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// A second handle of the listening socket, for [`Control::into_listener`].
    listener: Option<std::net::TcpListener>,
}

/// What the API serves.
enum Served {
    /// A started segment.
    Segment(Arc<Shared>),
    /// A segment not started because its preflight failed.
    Waiting(Arc<Waiting>),
}

/// The API of a segment that was not started.
struct Waiting {
    opts: Options,
    flowgraph: String,
    segment: String,
    started: Instant,
    /// The generation checked last and its problems.
    checked: Mutex<(u64, Vec<PreflightProblem>)>,
}

/// A block of the segment as the API sees it.
struct BlockInfo {
    kind: String,
    desc: Option<&'static BlockDescriptor>,
    /// The parameters from the file, defaults filled in.
    params: Params,
}

/// Where `itemsPerSecond` is counted.
enum RateFrom {
    Edge(Arc<EdgeStats>),
    Block(String),
    Nothing,
}

#[derive(Default)]
struct Life {
    outcome: Option<Result<(), String>>,
    /// A planned stop for a restart was asked for ([`Control::set_stopping`]).
    stopping: bool,
    restart: Option<String>,
    ready: bool,
    last_error: Option<String>,
    /// (block, parameter) → value set through the API and its offset.
    changes: BTreeMap<(String, String), (Value, u64)>,
}

struct Shared {
    opts: Options,
    flowgraph: String,
    segment: String,
    generation: u64,
    handle: Handle,
    env: Arc<NetEnv>,
    /// Where applied changes are recorded for a resume.
    param_log: crate::param_log::ParamLog,
    blocks: BTreeMap<String, BlockInfo>,
    /// Blocks of the other segments → their segment.
    elsewhere: BTreeMap<String, String>,
    /// Input edges: (edge, producing segment).
    inputs: Vec<(String, String)>,
    rate_from: RateFrom,
    life: Mutex<Life>,
    samples: Mutex<VecDeque<(Instant, u64)>>,
    started: Instant,
}

/// An error answer: `{"code", "path", "message", "hint"?}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    path: String,
    message: String,
    hint: Option<String>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: &'static str,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }
    fn hint(mut self, h: impl Into<String>) -> Self {
        let h = h.into();
        self.hint = (!h.is_empty()).then_some(h);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.code, "path": self.path, "message": self.message});
        if let Some(h) = self.hint {
            body["hint"] = Value::String(h);
        }
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

type ApiResult = Result<Response, ApiError>;

fn param_path(block: &str, param: &str) -> String {
    format!("blocks.{block}.params.{param}")
}

/// Compares without an early exit on the first differing byte.
fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= (x ^ b.get(i).copied().unwrap_or(!x)) as usize;
    }
    diff == 0
}

fn bind(addr: &str) -> Result<std::net::TcpListener, Error> {
    std::net::TcpListener::bind(addr).map_err(|source| Error::Listen {
        addr: addr.to_string(),
        source,
    })
}

impl Control {
    /// Starts serving the control API of `seg` (a segment of `doc`).
    pub fn start(seg: &Segment, doc: &FlowGraphDocument, opts: Options) -> Result<Control, Error> {
        let listener = bind(&opts.addr)?;
        Self::start_on(listener, seg, doc, opts)
    }

    /// Serves the control API of `seg` on a socket already listening (the
    /// one a [`Control::waiting`] served; `opts.addr` is then not bound).
    pub fn start_on(
        listener: std::net::TcpListener,
        seg: &Segment,
        doc: &FlowGraphDocument,
        opts: Options,
    ) -> Result<Control, Error> {
        let shared = Arc::new(Shared::new(seg, doc, opts));
        let sampler = shared.clone();
        let tick = async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                sampler.sample();
                sampler.ready();
            }
        };
        serve(
            listener,
            router(shared.clone()),
            tick,
            Served::Segment(shared),
        )
    }

    /// Serves the API of segment `segment` of FlowGraph `flowgraph`, which
    /// was not started: its preflight found `problems` in generation
    /// `generation` ([`Control::set_preflight`] updates them). Only a
    /// socket is listening; nothing of the segment exists.
    pub fn waiting(
        flowgraph: &str,
        segment: &str,
        generation: u64,
        problems: Vec<PreflightProblem>,
        opts: Options,
    ) -> Result<Control, Error> {
        let listener = bind(&opts.addr)?;
        let w = Arc::new(Waiting {
            opts,
            flowgraph: flowgraph.to_string(),
            segment: segment.to_string(),
            started: Instant::now(),
            checked: Mutex::new((generation, problems)),
        });
        serve(
            listener,
            waiting_router(w.clone()),
            std::future::pending(),
            Served::Waiting(w),
        )
    }

    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Records how the graph ended: `finished`, or `failed` with the error.
    pub fn set_outcome(&self, outcome: Result<(), String>) {
        let Served::Segment(shared) = &self.served else {
            return;
        };
        let mut l = shared.life();
        if let Err(e) = &outcome {
            l.last_error = Some(e.clone());
        }
        l.outcome = Some(outcome);
    }

    /// Marks a planned stop for a restart (SIGTERM): `/status` shows
    /// `stopping`, and `stopped` once the graph has ended without error.
    pub fn set_stopping(&self) {
        if let Served::Segment(shared) = &self.served {
            shared.life().stopping = true;
        }
    }

    /// Marks the segment `restartRequired` (a change that cannot be
    /// applied live), with the reason shown in `/status`.
    pub fn set_restart_required(&self, reason: &str) {
        if let Served::Segment(shared) = &self.served {
            shared.life().restart = Some(reason.to_string());
        }
    }

    /// A segment not started: the problems its preflight found in
    /// `generation` of the FlowGraph, shown in `/status`.
    pub fn set_preflight(&self, generation: u64, problems: Vec<PreflightProblem>) {
        if let Served::Waiting(w) = &self.served {
            *w.checked.lock().unwrap_or_else(|e| e.into_inner()) = (generation, problems);
        }
    }

    /// What `GET /status` answers now.
    pub fn status(&self) -> WorkerStatus {
        match &self.served {
            Served::Segment(s) => s.status(),
            Served::Waiting(w) => w.status(),
        }
    }

    /// Stops serving and returns the listening socket, still bound and
    /// listening (connections that arrive meanwhile wait in its backlog),
    /// for [`Control::start_on`].
    pub fn into_listener(mut self) -> std::net::TcpListener {
        self.shutdown();
        self.listener.take().expect("kept until now")
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves `app` on `listener` in a thread of its own, with `background`
/// running beside it.
fn serve(
    listener: std::net::TcpListener,
    app: Router,
    background: impl std::future::Future<Output = ()> + Send + 'static,
    served: Served,
) -> Result<Control, Error> {
    listener.set_nonblocking(true).map_err(Error::Start)?;
    let addr = listener.local_addr().map_err(Error::Start)?;
    let kept = listener.try_clone().map_err(Error::Start)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(Error::Start)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("flowmesh-control".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!("control API: {e}"),
                };
                tokio::spawn(background);
                let served = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                if let Err(e) = served.await {
                    tracing::error!("control API: {e}");
                }
            })
        })
        .map_err(Error::Start)?;
    Ok(Control {
        addr,
        served,
        stop: Some(stop),
        thread: Some(thread),
        listener: Some(kept),
    })
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn waiting_router(w: Arc<Waiting>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(waiting_readyz))
        .route("/metrics", get(waiting_metrics))
        .route("/status", get(waiting_status))
        .route(
            "/params/{block}/{param}",
            get(waiting_read).put(waiting_change),
        )
        .route("/messages/{block}/{port}", post(waiting_change))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .with_state(w)
}

impl Waiting {
    fn status(&self) -> WorkerStatus {
        let (generation, problems) = self
            .checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let n = problems.len();
        WorkerStatus {
            flowgraph: self.flowgraph.clone(),
            segment: self.segment.clone(),
            generation,
            state: WorkerState::Failed,
            restart_reason: None,
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            items_per_second: 0.0,
            backlog_items: 0,
            items_lost: CAUSES.iter().map(|c| (c.name().to_string(), 0)).collect(),
            blocks: BTreeMap::new(),
            edges: vec![],
            params: BTreeMap::new(),
            preflight: problems,
            last_error: Some(format!(
                "not started: the preflight found {n} problem{} on this host (listed in \
                 `preflight`); the segment starts when a new version of the FlowGraph passes",
                if n == 1 { "" } else { "s" }
            )),
        }
    }

    fn not_started(&self) -> ApiError {
        let (_, problems) = &*self.checked.lock().unwrap_or_else(|e| e.into_inner());
        let first = problems.first().map(|p| p.path.clone()).unwrap_or_default();
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_started",
            first,
            format!(
                "segment `{}` was not started: its preflight found {} problem(s) on this host",
                self.segment,
                problems.len()
            ),
        )
        .hint("GET /status lists them; fix them (edit the FlowGraph, or the host) and the segment starts")
    }
}

async fn waiting_readyz(State(w): State<Arc<Waiting>>) -> ApiError {
    w.not_started()
}

async fn waiting_status(State(w): State<Arc<Waiting>>, headers: HeaderMap) -> ApiResult {
    authorize(&w.opts, &headers, false)?;
    Ok(Json(w.status()).into_response())
}

async fn waiting_metrics(State(w): State<Arc<Waiting>>, headers: HeaderMap) -> ApiResult {
    authorize(&w.opts, &headers, false)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&w.status(), None),
    )
        .into_response())
}

async fn waiting_read(State(w): State<Arc<Waiting>>, headers: HeaderMap) -> ApiResult {
    authorize(&w.opts, &headers, false)?;
    Err(w.not_started())
}

async fn waiting_change(State(w): State<Arc<Waiting>>, headers: HeaderMap) -> ApiResult {
    authorize(&w.opts, &headers, true)?;
    Err(w.not_started())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status))
        .route("/params/{block}/{param}", get(get_param).put(put_param))
        .route("/messages/{block}/{port}", post(post_message))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .with_state(shared)
}

impl Shared {
    fn new(seg: &Segment, doc: &FlowGraphDocument, opts: Options) -> Shared {
        let mut blocks = BTreeMap::new();
        let mut inputs = vec![];
        let mut rate_from = RateFrom::Nothing;
        for (name, b) in &seg.spec.blocks {
            let desc = catalog().get(&b.kind);
            let params = desc
                .map(|d| params::resolve(d, &b.params).0)
                .unwrap_or_default();
            let role = desc.map_or(BlockRole::Plain, |d| d.role);
            if matches!(role, BlockRole::NetSource | BlockRole::NetMessageSource) {
                let edge = params.str("edge").unwrap_or_default().to_string();
                let from = params.str("from").unwrap_or_default().to_string();
                if role == BlockRole::NetSource && matches!(rate_from, RateFrom::Nothing) {
                    rate_from = RateFrom::Edge(seg.env.edge_stats(&edge, Role::Source));
                }
                inputs.push((edge, from));
            }
            blocks.insert(
                name.clone(),
                BlockInfo {
                    kind: b.kind.clone(),
                    desc,
                    params,
                },
            );
        }
        if matches!(rate_from, RateFrom::Nothing) {
            // The first source block (no stream inputs) with a stream output.
            let stream = |p: &flowmesh_model::catalog::PortDescriptor| {
                matches!(p.kind, PortKind::Stream { .. })
            };
            if let Some((n, _)) = blocks.iter().find(|(_, b)| {
                b.desc
                    .is_some_and(|d| !d.inputs.iter().any(stream) && d.outputs.iter().any(stream))
            }) {
                rate_from = RateFrom::Block(n.clone());
            }
        }
        let elsewhere = doc
            .spec
            .blocks
            .iter()
            .filter(|(n, _)| !blocks.contains_key(*n))
            .map(|(n, b)| {
                let seg = b.segment.as_deref().unwrap_or(partition::DEFAULT_SEGMENT);
                (n.clone(), seg.to_string())
            })
            .collect();
        Shared {
            opts,
            flowgraph: seg.env.flowgraph.clone(),
            segment: seg.name.clone(),
            generation: seg.generation,
            handle: seg.running.handle(),
            env: seg.env.clone(),
            param_log: seg.param_log.clone(),
            blocks,
            elsewhere,
            inputs,
            rate_from,
            life: Mutex::new(Life::default()),
            samples: Mutex::new(VecDeque::new()),
            started: Instant::now(),
        }
    }

    fn life(&self) -> std::sync::MutexGuard<'_, Life> {
        self.life.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self) -> u64 {
        match &self.rate_from {
            RateFrom::Edge(s) => EdgeStats::get(&s.items),
            RateFrom::Block(b) => self
                .handle
                .stats()
                .iter()
                .find(|s| &s.name == b)
                .map_or(0, |s| s.items_out()),
            RateFrom::Nothing => 0,
        }
    }

    /// Adds a sample of the counted items; keeps those of the last window.
    fn sample(&self) {
        let now = Instant::now();
        let c = self.count();
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.push_back((now, c));
        while s.len() > 2 && now.duration_since(s[1].0) >= RATE_WINDOW {
            s.pop_front();
        }
    }

    fn items_per_second(&self) -> f64 {
        self.sample();
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        match (s.front(), s.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                b.1.saturating_sub(a.1) as f64 / b.0.duration_since(a.0).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// The first input edge that has never connected, if any.
    fn waiting_for(&self) -> Option<&(String, String)> {
        self.inputs.iter().find(|(edge, _)| {
            EdgeStats::get(&self.env.edge_stats(edge, Role::Source).connections) == 0
        })
    }

    /// Graph built and listening (the segment exists), and every input
    /// edge connected at least once (latched).
    fn ready(&self) -> bool {
        if self.life().ready {
            return true;
        }
        let ready = self.waiting_for().is_none();
        if ready {
            self.life().ready = true;
        }
        ready
    }

    fn state(&self) -> WorkerState {
        let ready = self.ready();
        let l = self.life();
        match (&l.outcome, &l.restart) {
            (Some(Ok(())), _) if l.stopping => WorkerState::Stopped,
            (Some(Ok(())), _) => WorkerState::Finished,
            (Some(Err(_)), _) => WorkerState::Failed,
            (None, _) if l.stopping => WorkerState::Stopping,
            (None, Some(_)) => WorkerState::RestartRequired,
            (None, None) if ready => WorkerState::Running,
            _ => WorkerState::Starting,
        }
    }

    fn status(&self) -> WorkerStatus {
        let state = self.state();
        let blocks = self
            .handle
            .stats()
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    BlockStatus {
                        kind: self
                            .blocks
                            .get(&s.name)
                            .map_or_else(String::new, |b| b.kind.clone()),
                        items_in: s.items_in(),
                        items_out: s.items_out(),
                        busy_seconds: s.busy().as_secs_f64(),
                    },
                )
            })
            .collect();
        let mut items_lost: BTreeMap<String, u64> =
            CAUSES.iter().map(|c| (c.name().to_string(), 0)).collect();
        let mut backlog_items = 0;
        let edges: Vec<EdgeStatus> = self
            .env
            .all_edge_stats()
            .into_iter()
            .map(|(edge, role, s)| {
                let g = EdgeStats::get;
                let lost: BTreeMap<String, u64> = s
                    .lost_by_cause()
                    .into_iter()
                    .map(|(c, n)| (c.to_string(), n))
                    .collect();
                if role == Role::Source {
                    for (c, n) in &lost {
                        *items_lost.entry(c.clone()).or_default() += n;
                    }
                } else {
                    backlog_items += g(&s.backlog);
                }
                let unreachable = s.unreachable();
                EdgeStatus {
                    edge,
                    role: match role {
                        Role::Source => EdgeRole::Input,
                        Role::Sink => EdgeRole::Output,
                    },
                    generation: g(&s.generation),
                    connections: g(&s.connections),
                    items: g(&s.items),
                    bytes: g(&s.bytes),
                    frames: g(&s.frames),
                    gaps: g(&s.gaps),
                    items_lost: lost,
                    restarts: g(&s.restarts),
                    backlog_items: g(&s.backlog),
                    retained_items: g(&s.retained),
                    retention_items: g(&s.retention),
                    // The message edges of scalable segments (docs/scaling.md).
                    replicas: g(&s.replicas),
                    pending: g(&s.pending),
                    in_flight: g(&s.in_flight),
                    messages_per_second: f64::from_bits(g(&s.rate_bits)),
                    producer_unreachable_since_ms: unreachable.as_ref().map(|u| u.0),
                    producer_unreachable: unreachable.map(|u| u.1),
                }
            })
            .collect();
        let l = self.life();
        let mut params = BTreeMap::new();
        for (name, b) in &self.blocks {
            let Some(d) = b.desc else { continue };
            let mut m = BTreeMap::new();
            for pd in d.params.iter().filter(|p| p.settable) {
                let key = (name.clone(), pd.name.to_string());
                let (value, offset) = match l.changes.get(&key) {
                    Some((v, o)) => (v.clone(), *o),
                    None => (
                        b.params
                            .get(pd.name)
                            .map_or(Value::Null, params::value_json),
                        0,
                    ),
                };
                m.insert(pd.name.to_string(), ParamStatus { value, offset });
            }
            if !m.is_empty() {
                params.insert(name.clone(), m);
            }
        }
        let restart_reason = l.restart.clone();
        let last_error = l.last_error.clone();
        drop(l);
        WorkerStatus {
            flowgraph: self.flowgraph.clone(),
            segment: self.segment.clone(),
            generation: self.generation,
            state,
            restart_reason,
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            items_per_second: self.items_per_second(),
            backlog_items,
            items_lost,
            blocks,
            edges,
            params,
            preflight: vec![],
            last_error,
        }
    }

    /// Checks the bearer token of a request (`mutating`: PUT/POST).
    fn authorize(&self, headers: &HeaderMap, mutating: bool) -> Result<(), ApiError> {
        authorize(&self.opts, headers, mutating)
    }

    fn block(&self, name: &str) -> Result<(&BlockInfo, &'static BlockDescriptor), ApiError> {
        let path = format!("blocks.{name}");
        let Some(b) = self.blocks.get(name) else {
            if let Some(seg) = self.elsewhere.get(name) {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "other_segment",
                    path,
                    format!(
                        "block `{name}` runs in segment `{seg}`, not in `{}`",
                        self.segment
                    ),
                )
                .hint(format!("ask the worker of segment `{seg}`")));
            }
            let hint = match catalog::nearest(name, self.blocks.keys().map(String::as_str)) {
                Some(n) => format!("did you mean `{n}`?"),
                None => format!(
                    "segment `{}` runs: {}",
                    self.segment,
                    self.blocks.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_block",
                path,
                format!("no block `{name}` in this FlowGraph"),
            )
            .hint(hint));
        };
        let d = b.desc.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_kind",
                format!("{path}.kind"),
                format!(
                    "block `{name}` has kind `{}`, which the catalog does not know",
                    b.kind
                ),
            )
        })?;
        Ok((b, d))
    }

    fn param(&self, block: &str, param: &str) -> Result<&BlockInfo, ApiError> {
        let (b, d) = self.block(block)?;
        if d.param_descriptor(param).is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_parameter",
                param_path(block, param),
                "unknown parameter",
            )
            .hint(params::unknown_param_hint(d, param)));
        }
        Ok(b)
    }

    /// Reads a JSON body of at most `body_limit` bytes.
    async fn json_body(&self, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
        let limit = self.opts.body_limit;
        let too_large = |n: Option<usize>| {
            let size = n.map_or_else(|| "more than 1 MiB".to_string(), |n| format!("{n} bytes"));
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "body",
                format!("the body has {size}; at most {limit} bytes are accepted"),
            )
            .hint("send the bare JSON value (a parameter value or a message is small)")
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > DRAIN_LIMIT) {
            return Err(too_large(declared));
        }
        let bytes = axum::body::to_bytes(body, DRAIN_LIMIT)
            .await
            .map_err(|_| too_large(None))?;
        if bytes.len() > limit {
            return Err(too_large(Some(bytes.len())));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_json",
                "body",
                format!("the body is not JSON: {e}"),
            )
            .hint("send the bare value: 0.5, \"0.6+0.8j\", \"text\", [1, 2] or {\"freq\": 1000}")
        })
    }

    fn managed(&self, path: String) -> Result<(), ApiError> {
        if !self.opts.params_from_resource {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "managed_by_resource",
            path.clone(),
            format!(
                "in cluster mode the FlowGraph resource `{}` is the one source of truth for \
                 parameters; this worker does not change them on request",
                self.flowgraph
            ),
        )
        .hint(format!(
            "edit spec.{path} in the FlowGraph resource (kubectl edit flowgraph {}); the change \
             reaches this worker from there",
            self.flowgraph
        )))
    }

    fn refused(&self, what: &str, e: &ApiError) {
        self.life().last_error = Some(format!("{what}: {}: {}", e.path, e.message));
    }

    /// Sets a checked value on the running graph; records it.
    async fn apply(
        self: &Arc<Self>,
        block: &str,
        param: &str,
        value: Pmt,
    ) -> Result<Value, ApiError> {
        let me = self.clone();
        let (b, p, v) = (block.to_string(), param.to_string(), value.clone());
        let r = blocking(param_path(block, param), move || me.handle.set(&b, &p, v)).await?;
        let offset = r.map_err(|e| runtime_error(e, param_path(block, param)))?;
        let shown = params::value_json(&value);
        let key = (block.to_string(), param.to_string());
        let old = {
            let l = self.life();
            match l.changes.get(&key) {
                Some((v, _)) => v.clone(),
                None => self
                    .blocks
                    .get(block)
                    .and_then(|b| b.params.get(param))
                    .map_or(Value::Null, params::value_json),
            }
        };
        // Durable before it is reported: a resume replays it at this offset.
        let me = self.clone();
        let (b, p, new) = (block.to_string(), param.to_string(), shown.clone());
        let recorded = blocking(param_path(block, param), move || {
            me.param_log.record(&b, &p, old, new, offset)
        })
        .await?;
        if let Err(e) = recorded {
            tracing::error!("{e}");
            self.life().last_error = Some(e.to_string());
        }
        self.life().changes.insert(key, (shown.clone(), offset));
        Ok(json!({"value": shown, "offset": offset}))
    }
}

/// Checks the bearer token of a request (`mutating`: PUT/POST) against
/// `opts`.
fn authorize(opts: &Options, headers: &HeaderMap, mutating: bool) -> Result<(), ApiError> {
    if !mutating && opts.open_reads {
        return Ok(());
    }
    let Some(want) = opts.token.as_deref().filter(|t| !t.is_empty()) else {
        let message = if mutating {
            "this worker has no control token, so it accepts no changes: start it with \
                 FLOWMESH_TOKEN set or with --token-file PATH"
        } else {
            "this worker has no control token and its read-only endpoints are closed: start \
                 it with --open-reads, or with a token (FLOWMESH_TOKEN or --token-file) and send it"
        };
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "no_token",
            "headers.authorization",
            message,
        ));
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match got {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "headers.authorization",
            "send the worker's token as `Authorization: Bearer TOKEN` (the flowmesh command \
                 reads it from FLOWMESH_TOKEN or --token-file)",
        )),
        Some(t) if same_token(t.trim(), want) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_token",
            "headers.authorization",
            "the bearer token does not match this worker's (its FLOWMESH_TOKEN or \
                 --token-file)",
        )),
    }
}

fn runtime_error(e: scheduler::Error, path: String) -> ApiError {
    match e {
        scheduler::Error::Finished => ApiError::new(
            StatusCode::CONFLICT,
            "finished",
            path,
            "the graph has finished; nothing runs to change",
        ),
        scheduler::Error::Param { message, .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "refused", path, message)
        }
        other => ApiError::new(StatusCode::BAD_REQUEST, "refused", path, other.to_string()),
    }
}

fn refusal(kind: SetRefusal, path: String, message: String, hint: String) -> ApiError {
    let (status, code) = match kind {
        SetRefusal::Unknown => (StatusCode::NOT_FOUND, "unknown_parameter"),
        SetRefusal::NotSettable => (StatusCode::BAD_REQUEST, "not_settable"),
        SetRefusal::Type => (StatusCode::BAD_REQUEST, "invalid_value"),
        SetRefusal::Range => (StatusCode::BAD_REQUEST, "out_of_range"),
    };
    ApiError::new(status, code, path, message).hint(hint)
}

/// The two names of a `/params/…` or `/messages/…` path.
fn names(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    path.map(|Path(p)| p).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_path",
            "path",
            format!("cannot read the block and parameter (or port) names: {e}"),
        )
        .hint("names are plain UTF-8, percent-encoded where needed")
    })
}

async fn healthz() -> Response {
    Json(json!({"alive": true})).into_response()
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    match s.state() {
        WorkerState::Running | WorkerState::RestartRequired => {
            Json(json!({"ready": true})).into_response()
        }
        WorkerState::Stopping | WorkerState::Stopped => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "state",
            "the segment is stopping for a restart (SIGTERM): its stream goes on after the restart",
        )
        .into_response(),
        WorkerState::Finished => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "finished",
            "state",
            "the graph has finished",
        )
        .into_response(),
        WorkerState::Failed => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "failed",
            "state",
            format!(
                "the graph failed: {}",
                s.life().last_error.clone().unwrap_or_default()
            ),
        )
        .into_response(),
        WorkerState::Starting => {
            let (edge, from) = s.waiting_for().cloned().unwrap_or_default();
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                format!("edges.{edge}"),
                format!("waiting for input edge `{edge}` from segment `{from}` to connect"),
            )
            .hint(format!(
                "check that the worker of segment `{from}` runs and is reachable"
            ))
            .into_response()
        }
    }
}

/// Runs `f` off the async threads (it waits on the graph's blocks or reads
/// /proc); a task that did not complete is an `internal` error at `path`.
async fn blocking<T: Send + 'static>(
    path: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            path,
            e.to_string(),
        )
    })
}

async fn status(State(s): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult {
    s.authorize(&headers, false)?;
    let st = s.clone();
    let status = blocking(String::new(), move || st.status()).await?;
    Ok(Json(status).into_response())
}

async fn get_param(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let (block, param) = names(path)?;
    s.authorize(&headers, false)?;
    let b = s.param(&block, &param)?;
    let recorded = s
        .life()
        .changes
        .get(&(block.clone(), param.clone()))
        .cloned();
    let from_file = b.params.get(&param).map_or(Value::Null, params::value_json);
    // The block's own answer where it gives one (a value set by a `cmd`
    // message shows too); else what was set here or in the file.
    let me = s.clone();
    let (bl, pa) = (block.clone(), param.clone());
    let live = if s.handle.is_finished() {
        None
    } else {
        tokio::task::spawn_blocking(move || me.handle.get(&bl, &pa).ok())
            .await
            .ok()
            .flatten()
    };
    let (value, offset) = match (live, recorded) {
        (Some(v), r) => (params::value_json(&v), r.map_or(0, |r| r.1)),
        (None, Some((v, o))) => (v, o),
        (None, None) => (from_file, 0),
    };
    Ok(Json(json!({"value": value, "offset": offset})).into_response())
}

async fn put_param(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> ApiResult {
    let (block, param) = names(path)?;
    let r = async {
        s.authorize(&headers, true)?;
        s.managed(param_path(&block, &param))?;
        s.param(&block, &param)?;
        let (_, d) = s.block(&block)?;
        let value = s.json_body(&headers, body).await?;
        let pmt = params::check_set(d, &param, &value)
            .map_err(|(k, m, h)| refusal(k, param_path(&block, &param), m, h))?;
        s.apply(&block, &param, pmt).await
    }
    .await;
    match r {
        Ok(v) => Ok(Json(v).into_response()),
        Err(e) => {
            s.refused(&format!("PUT /params/{block}/{param}"), &e);
            Err(e)
        }
    }
}

async fn post_message(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> ApiResult {
    let (block, port) = names(path)?;
    let r = async {
        s.authorize(&headers, true)?;
        let (b, d) = s.block(&block)?;
        let path = format!("blocks.{block}.inputs.{port}");
        let ports: Vec<String> = d
            .resolve_ports(&b.params)
            .0
            .into_iter()
            .filter(|p| p.kind == ResolvedKind::Message)
            .map(|p| p.name)
            .collect();
        if !ports.contains(&port) {
            let hint = if ports.is_empty() {
                format!(
                    "{} has no message inputs (see `flowmesh blocks {}`)",
                    d.kind, d.kind
                )
            } else {
                format!("{} takes messages on: {}", d.kind, ports.join(", "))
            };
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_port",
                path,
                format!("no message input `{port}`"),
            )
            .hint(hint));
        }
        let value = s.json_body(&headers, body).await?;
        if port == "cmd" {
            // Parameter changes: checked like PUT, applied in order, each
            // answered with the offset where it applies.
            let pairs: Vec<(String, Value)> = match &value {
                Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                Value::Array(a) if a.len() == 2 && a[0].is_string() => {
                    vec![(a[0].as_str().unwrap_or_default().to_string(), a[1].clone())]
                }
                _ => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_value",
                        path,
                        "a `cmd` message is a map {name: value}",
                    )
                    .hint("e.g. {\"constant\": 0.5}"))
                }
            };
            let mut checked = vec![];
            for (name, v) in &pairs {
                s.managed(param_path(&block, name))?;
                let pmt = params::check_set(d, name, v)
                    .map_err(|(k, m, h)| refusal(k, param_path(&block, name), m, h))?;
                checked.push((name.clone(), pmt));
            }
            let mut applied = serde_json::Map::new();
            for (name, pmt) in checked {
                applied.insert(name.clone(), s.apply(&block, &name, pmt).await?);
            }
            return Ok(Json(json!({"params": applied})).into_response());
        }
        s.handle
            .post(&block, &port, Pmt::from_json(&value))
            .map_err(|e| runtime_error(e, path))?;
        Ok((StatusCode::ACCEPTED, Json(json!({"accepted": true}))).into_response())
    }
    .await;
    r.inspect_err(|e| s.refused(&format!("POST /messages/{block}/{port}"), e))
}

async fn metrics_text(State(s): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult {
    s.authorize(&headers, false)?;
    let st = s.clone();
    let text = blocking(String::new(), move || render(&st.status(), Some(&st))).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        uri.path().to_string(),
        "no such endpoint",
    )
    .hint(
        "the control API serves /healthz, /readyz, /metrics, /status, /params/{block}/{param} \
         and /messages/{block}/{port}",
    )
}

async fn wrong_method(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        uri.path().to_string(),
        "this endpoint does not take that method",
    )
    .hint("GET /healthz /readyz /metrics /status /params/…; PUT /params/…; POST /messages/…")
}

/// The metrics text of a status (docs/worker.md); the latency probes'
/// figures come from the running segment (`live`), if there is one.
fn render(st: &WorkerStatus, live: Option<&Shared>) -> String {
    let mut t = Text::default();
    let (fg, seg) = (st.flowgraph.as_str(), st.segment.as_str());
    let base = [("flowgraph", fg), ("segment", seg)];
    let gen = st.generation.to_string();
    t.family(
        "flowmesh_worker_info",
        Kind::Gauge,
        "The worker's segment and the FlowGraph resource generation it was started from (0 for a file).",
    )
    .sample(&[base[0], base[1], ("generation", &gen)], 1.0);
    let state = format!("{:?}", st.state);
    let mut f = t.family(
        "flowmesh_worker_state",
        Kind::Gauge,
        "1 for the segment's current state (starting, running, restartRequired, stopping, stopped, finished, failed).",
    );
    for name in [
        "starting",
        "running",
        "restartRequired",
        "stopping",
        "stopped",
        "finished",
        "failed",
    ] {
        let on = state.eq_ignore_ascii_case(name);
        f.sample(&[base[0], base[1], ("state", name)], on as u8 as f64);
    }
    t.family(
        "flowmesh_worker_items_per_second",
        Kind::Gauge,
        "Items per second over the last 10 s on the first input edge (or first source output).",
    )
    .sample(&base, st.items_per_second);

    let blocks: Vec<_> = st.blocks.iter().collect();
    let per_block = |t: &mut Text,
                     name: &'static str,
                     kind: Kind,
                     help: &str,
                     v: &dyn Fn(&BlockStatus) -> f64| {
        let mut f = t.family(name, kind, help);
        for (b, x) in &blocks {
            f.sample(
                &[
                    base[0],
                    base[1],
                    ("block", b.as_str()),
                    ("kind", x.kind.as_str()),
                ],
                v(x),
            );
        }
    };
    per_block(
        &mut t,
        "flowmesh_block_items_in_total",
        Kind::Counter,
        "Items a block consumed on its first stream input.",
        &|x| x.items_in as f64,
    );
    per_block(
        &mut t,
        "flowmesh_block_items_out_total",
        Kind::Counter,
        "Items a block produced on its first stream output.",
        &|x| x.items_out as f64,
    );
    per_block(
        &mut t,
        "flowmesh_block_busy_seconds_total",
        Kind::Counter,
        "Time a block spent in its work calls.",
        &|x| x.busy_seconds,
    );

    let per_edge = |t: &mut Text,
                    name: &'static str,
                    kind: Kind,
                    help: &str,
                    v: &dyn Fn(&EdgeStatus) -> f64| {
        let mut f = t.family(name, kind, help);
        for e in &st.edges {
            let role = match e.role {
                EdgeRole::Input => "input",
                EdgeRole::Output => "output",
            };
            f.sample(
                &[base[0], base[1], ("edge", e.edge.as_str()), ("role", role)],
                v(e),
            );
        }
    };
    per_edge(
        &mut t,
        "flowmesh_edge_items_total",
        Kind::Counter,
        "Items delivered (input edges) or sent (output edges); messages on message edges.",
        &|e| e.items as f64,
    );
    per_edge(
        &mut t,
        "flowmesh_edge_bytes_total",
        Kind::Counter,
        "DATA payload bytes received whole (input) or sent (output).",
        &|e| e.bytes as f64,
    );
    per_edge(
        &mut t,
        "flowmesh_edge_frames_total",
        Kind::Counter,
        "DATA frames received whole (input) or sent (output).",
        &|e| e.frames as f64,
    );
    per_edge(
        &mut t,
        "flowmesh_edge_connections_total",
        Kind::Counter,
        "Connections established on an edge (the first and every reconnect).",
        &|e| e.connections as f64,
    );
    per_edge(
        &mut t,
        "flowmesh_edge_reconnects_total",
        Kind::Counter,
        "Connections after the first one on an edge.",
        &|e| e.connections.saturating_sub(1) as f64,
    );
    per_edge(
        &mut t,
        "flowmesh_edge_gaps_total",
        Kind::Counter,
        "Discontinuities on an input edge, each marked with a gap tag.",
        &|e| e.gaps as f64,
    );
    per_edge(
        &mut t,
        "flowmesh_edge_producer_restarts_total",
        Kind::Counter,
        "Producer restarts an input edge saw.",
        &|e| e.restarts as f64,
    );
    per_edge(
        &mut t,
        "flowmesh_edge_backlog_items",
        Kind::Gauge,
        "Items of an output edge its consumer has not acknowledged yet.",
        &|e| e.backlog_items as f64,
    );
    per_edge(
        &mut t,
        "flowmesh_edge_retained_items",
        Kind::Gauge,
        "Items an output edge holds for a consumer that resumes.",
        &|e| e.retained_items as f64,
    );
    per_edge(
        &mut t,
        "flowmesh_edge_retention_items",
        Kind::Gauge,
        "The retention window of an output edge, in items.",
        &|e| e.retention_items as f64,
    );
    let mut f = t.family(
        "flowmesh_edge_items_lost_total",
        Kind::Counter,
        "Items lost on an input edge, by cause (overflow, peer_lost, retention_exceeded, restart).",
    );
    for e in st.edges.iter().filter(|e| e.role == EdgeRole::Input) {
        for (cause, n) in &e.items_lost {
            f.sample(
                &[
                    base[0],
                    base[1],
                    ("edge", e.edge.as_str()),
                    ("role", "input"),
                    ("cause", cause.as_str()),
                ],
                *n as f64,
            );
        }
    }

    // Latency, where a latency_probe measures it (while the graph runs).
    let probes: Vec<&String> = live
        .iter()
        .flat_map(|s| s.blocks.iter())
        .filter(|(_, b)| b.kind == "latency_probe")
        .map(|(n, _)| n)
        .collect();
    if let Some(s) = live.filter(|s| !probes.is_empty() && !s.handle.is_finished()) {
        let mut q = vec![];
        for p in &probes {
            let get = |k: &str| s.handle.get(p, k).ok();
            q.push((
                *p,
                get("count").and_then(|v| v.as_u64()).unwrap_or(0),
                get("p50_us").and_then(|v| v.as_f64()),
                get("p99_us").and_then(|v| v.as_f64()),
            ));
        }
        let mut f = t.family(
            "flowmesh_latency_seconds",
            Kind::Gauge,
            "Delay from a tagger (value: time) to a latency_probe, by quantile.",
        );
        for (p, _, p50, p99) in &q {
            for (quantile, v) in [("0.5", p50), ("0.99", p99)] {
                if let Some(v) = v {
                    f.sample(
                        &[
                            base[0],
                            base[1],
                            ("block", p.as_str()),
                            ("quantile", quantile),
                        ],
                        v / 1e6,
                    );
                }
            }
        }
        let mut f = t.family(
            "flowmesh_latency_probes_total",
            Kind::Counter,
            "Time-stamped tags a latency_probe has measured.",
        );
        for (p, n, _, _) in &q {
            f.sample(&[base[0], base[1], ("block", p.as_str())], *n as f64);
        }
    }

    if let Some((cpu, rss)) = metrics::process() {
        t.family(
            "process_cpu_seconds_total",
            Kind::Counter,
            "User and system CPU time of the worker process.",
        )
        .sample(&base, cpu);
        t.family(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory of the worker process.",
        )
        .sample(&base, rss as f64);
    }
    t.finish()
}
