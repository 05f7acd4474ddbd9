//! Cluster mode against a mocked Kubernetes API: kube's `Client` over a
//! `tower-test` mock service, answered request by request. The worker GETs
//! its FlowGraph, lists and WATCHes it; a settable-parameter change arrives
//! as a watch event and is applied live at the offset the worker reports
//! (checked in the output file: no item lost or repeated), a change that is
//! not settable sets "restart required", and deleting the resource stops
//! the worker.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flowmesh_k8s::ResourceRef;
use flowmesh_model::naming::PeerTemplate;
use flowmesh_model::Pmt;
use flowmesh_worker::cluster::{self, ClusterConfig, Exit, Report, State};
use flowmesh_worker::Config;
use futures::channel::mpsc;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::Client;
use serde_json::{json, Value};

type B = BoxBody<Bytes, Infallible>;
type Handle = tower_test::mock::Handle<Request<kube::client::Body>, Response<B>>;
type Send = tower_test::mock::SendResponse<Response<B>>;

const N: u64 = 100_000_000;

fn object(out: &Path, constant: u64, n: u64, generation: i64, rv: &str) -> Value {
    json!({
        "apiVersion": "flowmesh.dev/v1alpha1",
        "kind": "FlowGraph",
        "metadata": {"name": "counter", "namespace": "radio", "generation": generation,
                     "resourceVersion": rv},
        "spec": {
            "blocks": {
                "src": {"kind": "counter_source", "params": {"n": n}, "segment": "w"},
                "gain": {"kind": "multiply_const", "params": {"type": "u64", "constant": constant}, "segment": "w"},
                "pace": {"kind": "throttle", "params": {"type": "u64", "rate": 2e6, "overflow": "wait"}, "segment": "w"},
                "file": {"kind": "file_sink", "params": {"type": "u64", "path": out.display().to_string()}, "segment": "w"}
            },
            "connections": [["src.out", "gain.in"], ["gain.out", "pace.in"], ["pace.out", "file.in"]]
        }
    })
}

fn full(v: &Value) -> B {
    Full::new(Bytes::from(serde_json::to_vec(v).unwrap())).boxed()
}

async fn next(handle: &mut Handle) -> (Request<kube::client::Body>, Send) {
    tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("a request within 10 s")
        .expect("the client is alive")
}

fn ok(send: Send, body: B) {
    send.send_response(
        Response::builder()
            .status(StatusCode::OK)
            .body(body)
            .unwrap(),
    );
}

/// Waits up to 30 s for `cond`.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn items(p: &Path) -> Vec<u64> {
    let b = std::fs::read(p).unwrap_or_default();
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Cluster mode for segment `w` of FlowGraph radio/counter.
fn config(
    state_dir: Option<std::path::PathBuf>,
    control: Option<flowmesh_worker::control::Options>,
) -> ClusterConfig {
    ClusterConfig {
        resource: ResourceRef {
            namespace: "radio".into(),
            name: "counter".into(),
        },
        peer_template: PeerTemplate::default(),
        worker: Config {
            segment: "w".into(),
            listen: "127.0.0.1:0".into(),
            peers: Default::default(),
            token: "t".into(),
            generation: 0,
            resume: false,
            threads: None,
            state_dir,
        },
        control,
        grace: flowmesh_worker::lifecycle::DEFAULT_GRACE,
    }
}

/// The tests of this file one at a time: a SIGTERM to the process reaches
/// every cluster-mode worker in it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_changes_restart_required_and_deletion_through_the_api() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.u64");
    let (service, mut handle) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<B>>();
    let client = Client::new(service, "radio");
    let cfg = config(Some(dir.path().join("state")), None);
    let report = Report::new();
    let worker = tokio::spawn(cluster::run(client, cfg, report.clone()));

    // GET, then the watcher's list and watch.
    let (req, send) = next(&mut handle).await;
    assert_eq!(req.method(), http::Method::GET);
    assert_eq!(
        req.uri().path(),
        "/apis/flowmesh.dev/v1alpha1/namespaces/radio/flowgraphs/counter"
    );
    ok(send, full(&object(&out, 1, N, 1, "10")));
    let (req, send) = next(&mut handle).await;
    let q = req.uri().query().unwrap_or("").to_string();
    assert!(
        !q.contains("watch=true") && q.contains("metadata.name%3Dcounter"),
        "{q}"
    );
    ok(
        send,
        full(
            &json!({"apiVersion": "flowmesh.dev/v1alpha1", "kind": "FlowGraphList",
                     "metadata": {"resourceVersion": "10"}, "items": [object(&out, 1, N, 1, "10")]}),
        ),
    );
    let (req, send) = next(&mut handle).await;
    assert!(req.uri().query().unwrap_or("").contains("watch=true"));
    let (events, rx) = mpsc::unbounded::<Bytes>();
    ok(
        send,
        BodyExt::boxed(StreamBody::new(
            rx.map(|b| Ok::<_, Infallible>(Frame::data(b))),
        )),
    );
    let event = |kind: &str, obj: Value| {
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap();
        line.push(b'\n');
        events.unbounded_send(Bytes::from(line)).unwrap();
    };

    // A settable parameter: applied live, at the offset reported.
    until("the first 200k items in the file", || {
        items(&out).len() > 200_000
    })
    .await;
    event("MODIFIED", object(&out, 3, N, 2, "11"));
    let lock = |r: &Arc<Mutex<Report>>| r.lock().unwrap().clone();
    until("the change applied", || !lock(&report).applied.is_empty()).await;
    let applied = lock(&report).applied[0].clone();
    assert_eq!(
        (applied.block.as_str(), applied.param.as_str()),
        ("gain", "constant")
    );
    assert_eq!(applied.generation, 2);
    assert!(
        matches!(applied.value, Pmt::Complex(c) if c.re == 3.0)
            || applied.value == Pmt::F64(3.0)
            || applied.value == Pmt::I64(3),
        "{:?}",
        applied.value
    );
    let at = applied.offset;
    assert!(at >= 200_000, "applied at {at}");
    // Recorded (before it was reported) for a resume to replay.
    assert_eq!(
        flowmesh_worker::param_log::load(&dir.path().join("state")).unwrap(),
        vec![flowmesh_worker::param_log::Change {
            block: "gain".into(),
            param: "constant".into(),
            old: json!("1+0j"),
            new: json!("3+0j"),
            offset: at,
        }]
    );
    assert_eq!(lock(&report).state, State::Running);

    // Not settable: restart required, nothing else changes.
    event("MODIFIED", object(&out, 3, N / 2, 3, "12"));
    until("restart required", || {
        lock(&report).state == State::RestartRequired
    })
    .await;
    let r = lock(&report);
    assert!(
        r.restart_reasons
            .iter()
            .any(|x| x.starts_with("blocks.src.params.n")),
        "{:?}",
        r.restart_reasons
    );
    assert_eq!(r.generation, 2, "still runs generation 2");
    until("items past the change", || {
        items(&out).len() as u64 > at + 100_000
    })
    .await;

    // Deleted: the worker stops.
    event("DELETED", object(&out, 3, N / 2, 3, "13"));
    let exit = tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .expect("the worker stops within 30 s")
        .unwrap()
        .unwrap();
    assert!(matches!(exit, Exit::Deleted));

    // Every item once, in order: the old factor before the offset, the new one from it.
    let got = items(&out);
    assert!(got.len() as u64 > at + 100_000, "{} items", got.len());
    assert!((got.len() as u64) < N, "stopped before the end");
    for (i, &v) in got.iter().enumerate() {
        let i = i as u64;
        let want = if i < at { i } else { 3 * i };
        assert_eq!(v, want, "item {i} (change at {at})");
    }
}

/// A GET of the control API at `addr` (off the async threads).
async fn get(addr: &str, path: &str) -> (u16, Value) {
    let url = format!("http://{addr}{path}");
    let r = tokio::task::spawn_blocking(move || {
        flowmesh_worker::client::request("GET", &url, None, None, Duration::from_secs(10))
    })
    .await
    .unwrap()
    .expect("the control API answers");
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_preflight_starts_nothing_until_a_fixed_resource_passes() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // The output directory does not exist yet.
    let missing = dir.path().join("missing/out.u64");
    let out = dir.path().join("out.u64");
    let control = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (service, mut handle) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<B>>();
    let client = Client::new(service, "radio");
    let cfg = config(
        None,
        Some(flowmesh_worker::control::Options {
            addr: control.clone(),
            open_reads: true,
            ..Default::default()
        }),
    );
    let report = Report::new();
    let worker = tokio::spawn(cluster::run(client, cfg, report.clone()));
    let lock = |r: &Arc<Mutex<Report>>| r.lock().unwrap().clone();

    // Generation 1 writes into a directory that does not exist.
    let (req, send) = next(&mut handle).await;
    assert_eq!(req.method(), http::Method::GET);
    ok(send, full(&object(&missing, 1, N, 1, "10")));
    until("the preflight failed", || {
        lock(&report).state == State::PreflightFailed
    })
    .await;
    let (code, st) = get(&control, "/status").await;
    assert_eq!(code, 200, "{st}");
    assert_eq!(st["state"], "failed");
    assert_eq!(st["generation"], 1);
    let problems = st["preflight"].as_array().unwrap().clone();
    assert_eq!(problems.len(), 1, "{st}");
    assert_eq!(problems[0]["path"], "spec.blocks.file.params.path");
    let m = problems[0]["message"].as_str().unwrap();
    assert!(
        m.contains(&dir.path().join("missing").display().to_string()) && m.contains("create it"),
        "{m}"
    );
    assert!(st["blocks"].as_object().unwrap().is_empty());
    let (code, ready) = get(&control, "/readyz").await;
    assert_eq!(code, 503);
    assert_eq!(ready["code"], "not_started");
    let (code, _) = get(&control, "/params/gain/constant").await;
    assert_eq!(code, 503);

    // The watcher's list and watch; generation 2 adds an unknown kind: both
    // problems, still nothing started.
    let (_, send) = next(&mut handle).await;
    ok(
        send,
        full(
            &json!({"apiVersion": "flowmesh.dev/v1alpha1", "kind": "FlowGraphList",
                     "metadata": {"resourceVersion": "10"}, "items": [object(&missing, 1, N, 1, "10")]}),
        ),
    );
    let (req, send) = next(&mut handle).await;
    assert!(req.uri().query().unwrap_or("").contains("watch=true"));
    let (events, rx) = mpsc::unbounded::<Bytes>();
    ok(
        send,
        BodyExt::boxed(StreamBody::new(
            rx.map(|b| Ok::<_, Infallible>(Frame::data(b))),
        )),
    );
    let event = |kind: &str, obj: Value| {
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap();
        line.push(b'\n');
        events.unbounded_send(Bytes::from(line)).unwrap();
    };
    let mut odd = object(&missing, 1, N, 2, "11");
    odd["spec"]["blocks"]["odd"] = json!({"kind": "no_such_kind", "segment": "w"});
    event("MODIFIED", odd);
    until("both problems reported", || {
        lock(&report).preflight.len() == 2
    })
    .await;
    let (_, st) = get(&control, "/status").await;
    let paths: Vec<&str> = st["preflight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["spec.blocks.odd.kind", "spec.blocks.file.params.path"],
        "{st}"
    );
    assert_eq!(st["state"], "failed");
    assert!(!missing.exists() && !out.exists(), "nothing was written");

    // Generation 3 writes where it can: the segment starts, its control
    // API on the same address.
    event("MODIFIED", object(&out, 1, N, 3, "12"));
    until("the segment runs", || lock(&report).state == State::Running).await;
    assert!(lock(&report).preflight.is_empty());
    until("items in the file", || items(&out).len() > 1000).await;
    let (code, st) = get(&control, "/status").await;
    assert_eq!(code, 200, "{st}");
    assert!(st.get("preflight").is_none(), "{st}");
    assert_ne!(st["state"], "failed");
    assert!(st["blocks"].as_object().unwrap().contains_key("file"));

    event("DELETED", object(&out, 1, N, 3, "13"));
    let exit = tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .expect("the worker stops within 30 s")
        .unwrap()
        .unwrap();
    assert!(matches!(exit, Exit::Deleted));
    // The output's items are the counter's: the graph ran once, from 0.
    let got = items(&out);
    assert!(got.iter().enumerate().all(|(i, &v)| v == i as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_deleted_before_its_preflight_passes_ends_the_worker() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing/out.u64");
    let (service, mut handle) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<B>>();
    let client = Client::new(service, "radio");
    let cfg = config(None, None);
    let report = Report::new();
    let worker = tokio::spawn(cluster::run(client, cfg, report.clone()));
    let (_, send) = next(&mut handle).await;
    ok(send, full(&object(&missing, 1, N, 1, "10")));
    // The watcher's list finds nothing: the resource is gone.
    let (_, send) = next(&mut handle).await;
    ok(
        send,
        full(
            &json!({"apiVersion": "flowmesh.dev/v1alpha1", "kind": "FlowGraphList",
                     "metadata": {"resourceVersion": "11"}, "items": []}),
        ),
    );
    let exit = tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .expect("the worker ends within 30 s")
        .unwrap()
        .unwrap();
    assert!(matches!(exit, Exit::Deleted));
    let r = report.lock().unwrap().clone();
    assert_eq!(r.state, State::PreflightFailed);
    assert_eq!(r.preflight.len(), 1);
    assert!(!missing.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_preflight_with_its_control_address_taken_ends_with_the_problems() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing/out.u64");
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let control = held.local_addr().unwrap().to_string();
    let (service, mut handle) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<B>>();
    let client = Client::new(service, "radio");
    let cfg = config(
        None,
        Some(flowmesh_worker::control::Options {
            addr: control.clone(),
            ..Default::default()
        }),
    );
    let worker = tokio::spawn(cluster::run(client, cfg, Report::new()));
    let (_, send) = next(&mut handle).await;
    ok(send, full(&object(&missing, 1, N, 1, "10")));
    let e = tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .expect("the worker ends within 30 s")
        .unwrap()
        .unwrap_err();
    let cluster::Error::Preflight { problems, .. } = &e else {
        panic!("not a preflight failure: {e}");
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.blocks.file.params.path".to_string(),
            format!("--control {control}")
        ]
    );
    assert!(e.to_string().contains("in use"), "{e}");
    assert!(!missing.exists());
}

/// Answers the worker's GET, list and watch for the resource `obj`; returns
/// the sender of watch events (kept open: no event comes).
async fn serve_resource(handle: &mut Handle, obj: Value) -> mpsc::UnboundedSender<Bytes> {
    let (_, send) = next(handle).await;
    ok(send, full(&obj));
    let (_, send) = next(handle).await;
    ok(
        send,
        full(
            &json!({"apiVersion": "flowmesh.dev/v1alpha1", "kind": "FlowGraphList",
                     "metadata": {"resourceVersion": "10"}, "items": [obj]}),
        ),
    );
    let (_, send) = next(handle).await;
    let (events, rx) = mpsc::unbounded::<Bytes>();
    ok(
        send,
        BodyExt::boxed(StreamBody::new(
            rx.map(|b| Ok::<_, Infallible>(Frame::data(b))),
        )),
    );
    events
}

/// SIGTERM in cluster mode (a pod moved or replaced) is a planned stop for
/// a restart: the segment drains, its file holds whole items in order, and
/// `run` ends with `Exit::Stopped` (exit 143), not as a deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_a_planned_stop_for_a_restart() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.u64");
    let (service, mut handle) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<B>>();
    let client = Client::new(service, "radio");
    let cfg = config(None, None);
    let worker = tokio::spawn(cluster::run(client, cfg, Report::new()));
    let _events = serve_resource(&mut handle, object(&out, 1, N, 1, "10")).await;
    until("the first 100k items in the file", || {
        items(&out).len() > 100_000
    })
    .await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .expect("the worker stops within 30 s")
        .unwrap()
        .unwrap();
    assert!(matches!(exit, Exit::Stopped { ended: false }), "{exit:?}");
    let b = std::fs::read(&out).unwrap();
    assert_eq!(b.len() % 8, 0, "a torn item");
    let got = items(&out);
    assert!((got.len() as u64) < N, "stopped before the end");
    if let Some(i) = got.iter().enumerate().position(|(i, &v)| v != i as u64) {
        panic!("item {i} is {}", got[i]);
    }
}
