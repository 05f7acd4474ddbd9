//! The worker's control API over real HTTP on 127.0.0.1, against real
//! running segments: every endpoint; tokens (missing, wrong, none
//! configured) refusing mutating calls without changing anything; values
//! refused with the catalog's messages (`flowmesh validate`'s) and changing
//! nothing; oversized bodies; the cluster-mode switch (409); and `/metrics`
//! parsed as Prometheus text with counters equal to a finished two-segment
//! run's real counts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flowmesh_model::status::{WorkerState, WorkerStatus};
use flowmesh_model::validate::validate_text;
use flowmesh_model::FlowGraphDocument;
use flowmesh_worker::client;
use flowmesh_worker::control::{Control, Options};
use flowmesh_worker::{start_segment, Config, Segment};
use serde_json::{json, Value};

const TOKEN: &str = "ctl-secret";

fn doc(yaml: &str) -> FlowGraphDocument {
    let (doc, report) = validate_text(yaml);
    assert!(report.is_ok(), "{report:?}");
    doc.expect("parsed")
}

/// A graph that runs until stopped: a throttled tone through a gain, and a
/// message strobe (one message, then quiet for a long time) into a
/// message_debug that keeps what it gets.
fn endless(gain: &str, rate: &str) -> String {
    format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: ctl}}
spec:
  blocks:
    src:    {{kind: signal_source, params: {{type: cf32, samp_rate: 1e6, frequency: 1e3}}}}
    thr:    {{kind: throttle, params: {{type: cf32, rate: {rate}}}}}
    gain:   {{kind: multiply_const, params: {{type: cf32, constant: {gain}}}}}
    sink:   {{kind: null_sink, params: {{type: cf32}}}}
    strobe: {{kind: message_strobe, params: {{period: 1e6, message: hello}}}}
    dbg:    {{kind: message_debug, params: {{display: false}}}}
  connections:
    - [src.out, thr.in]
    - [thr.out, gain.in]
    - [gain.out, sink.in]
    - [strobe.out, dbg.in]
"#
    )
}

fn config(segment: &str) -> Config {
    Config {
        segment: segment.into(),
        listen: "127.0.0.1:0".into(),
        peers: BTreeMap::new(),
        token: "edge-secret".into(),
        generation: 0,
        resume: false,
        threads: Some(2),
        state_dir: None,
    }
}

fn opts(token: Option<&str>) -> Options {
    Options {
        addr: "127.0.0.1:0".into(),
        token: token.map(str::to_string),
        ..Default::default()
    }
}

/// One request; the status and the body as JSON (or as a JSON string if
/// it is not JSON).
fn call(
    c: &Control,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, Value) {
    let url = format!("http://{}{path}", c.addr());
    let r = client::request(method, &url, token, body, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let v = serde_json::from_slice(&r.body).unwrap_or_else(|_| Value::String(r.text()));
    (r.status, v)
}

fn get(c: &Control, path: &str, token: Option<&str>) -> (u16, Value) {
    call(c, "GET", path, token, None)
}

fn put(c: &Control, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    call(c, "PUT", path, token, Some(body.as_bytes()))
}

/// The problem `flowmesh validate` reports for `yaml` at `path`:
/// (message, hint).
fn file_problem(yaml: &str, path: &str) -> (String, String) {
    let (_, report) = validate_text(yaml);
    let p = report
        .problems
        .iter()
        .find(|p| p.path == path)
        .unwrap_or_else(|| panic!("no problem at {path}: {report:?}"));
    (p.message.clone(), p.hint.clone())
}

/// Asserts an error answer: status, code, path, and (when given) the
/// message and hint.
fn assert_error(
    got: &(u16, Value),
    status: u16,
    code: &str,
    path: &str,
    catalog: Option<&(String, String)>,
) {
    let (s, v) = got;
    assert_eq!(*s, status, "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["path"], path, "{v}");
    assert!(!v["message"].as_str().unwrap_or_default().is_empty(), "{v}");
    if let Some((m, h)) = catalog {
        assert_eq!(v["message"], m.as_str(), "{v}");
        assert_eq!(v["hint"].as_str().unwrap_or_default(), h.as_str(), "{v}");
    }
}

fn status_of(c: &Control) -> WorkerStatus {
    let (s, v) = get(c, "/status", Some(TOKEN));
    assert_eq!(s, 200, "{v}");
    serde_json::from_value(v).expect("a WorkerStatus")
}

/// Polls `cond` (every 20 ms, up to 30 s: a safety net, not a timing claim).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(seg: Segment) {
    seg.running.handle().stop();
    seg.running.wait().expect("the graph stops cleanly");
}

#[test]
fn every_endpoint_with_tokens_and_checked_values() {
    let d = doc(&endless("\"0.6+0.8j\"", "1e6"));
    let seg = start_segment(&d, &config("default")).expect("segment starts");
    let c = Control::start(&seg, &d, opts(Some(TOKEN))).expect("control starts");
    let constant = "/params/gain/constant";

    // Health and readiness: always open.
    assert_eq!(get(&c, "/healthz", None), (200, json!({"alive": true})));
    assert_eq!(get(&c, "/readyz", None), (200, json!({"ready": true})));

    // Reads need the token unless opened.
    assert_error(
        &get(&c, "/status", None),
        401,
        "missing_token",
        "headers.authorization",
        None,
    );
    assert_error(
        &get(&c, "/metrics", Some("nope")),
        403,
        "bad_token",
        "headers.authorization",
        None,
    );
    assert_error(
        &get(&c, constant, None),
        401,
        "missing_token",
        "headers.authorization",
        None,
    );
    let st = status_of(&c);
    assert_eq!(st.state, WorkerState::Running);
    assert_eq!(
        (st.flowgraph.as_str(), st.segment.as_str()),
        ("ctl", "default")
    );
    assert_eq!(st.blocks["gain"].kind, "multiply_const");
    assert_eq!(st.params["gain"]["constant"].value, json!("0.6+0.8j"));
    assert_eq!(st.params["gain"]["constant"].offset, 0);
    assert_eq!(st.params["thr"]["rate"].value, json!(1e6));
    assert!(
        !st.params.contains_key("sink"),
        "null_sink has no settable parameters"
    );

    let original = (200, json!({"value": "0.6+0.8j", "offset": 0}));
    assert_eq!(get(&c, constant, Some(TOKEN)), original);
    // A parameter that is not settable reads as in the file.
    assert_eq!(get(&c, "/params/src/type", Some(TOKEN)).1["value"], "cf32");

    // Mutating calls without or with a wrong token change nothing.
    let path = "headers.authorization";
    assert_error(
        &put(&c, constant, None, "0.5"),
        401,
        "missing_token",
        path,
        None,
    );
    assert_error(
        &put(&c, constant, Some("wrong"), "0.5"),
        403,
        "bad_token",
        path,
        None,
    );
    assert_error(
        &call(
            &c,
            "POST",
            "/messages/gain/cmd",
            Some("wrong"),
            Some(b"{\"constant\": 0.5}"),
        ),
        403,
        "bad_token",
        path,
        None,
    );
    assert_eq!(get(&c, constant, Some(TOKEN)), original);

    // Wrong name, type, range, settability: the catalog's messages, and
    // nothing changes. The messages are those `flowmesh validate` gives
    // for the same value in the file.
    let p = "blocks.gain.params.constnt";
    let catalog = file_problem(
        &endless("\"0.6+0.8j\", constnt: 0.5", "1e6"),
        &format!("spec.{p}"),
    );
    assert_error(
        &put(&c, "/params/gain/constnt", Some(TOKEN), "0.5"),
        404,
        "unknown_parameter",
        p,
        Some(&catalog),
    );
    let catalog = file_problem(
        &endless("[1, 2]", "1e6"),
        "spec.blocks.gain.params.constant",
    );
    assert_error(
        &put(&c, constant, Some(TOKEN), "[1, 2]"),
        400,
        "invalid_value",
        "blocks.gain.params.constant",
        Some(&catalog),
    );
    let catalog = file_problem(&endless("0.5", "-5"), "spec.blocks.thr.params.rate");
    assert_error(
        &put(&c, "/params/thr/rate", Some(TOKEN), "-5"),
        400,
        "out_of_range",
        "blocks.thr.params.rate",
        Some(&catalog),
    );
    let (s, v) = put(&c, "/params/src/type", Some(TOKEN), "\"f32\"");
    assert_error(
        &(s, v.clone()),
        400,
        "not_settable",
        "blocks.src.params.type",
        None,
    );
    assert_eq!(
        v["message"],
        "parameter `type` cannot be changed while running"
    );
    assert!(v["hint"].as_str().unwrap().contains("frequency"), "{v}");
    assert_error(
        &put(&c, "/params/gian/constant", Some(TOKEN), "0.5"),
        404,
        "unknown_block",
        "blocks.gian",
        None,
    );
    assert_error(
        &put(&c, constant, Some(TOKEN), "0.5 +"),
        400,
        "bad_json",
        "body",
        None,
    );
    // Oversized body (a 200 kB string).
    let big = format!("\"{}\"", "a".repeat(200_000));
    assert_error(
        &put(&c, constant, Some(TOKEN), &big),
        413,
        "body_too_large",
        "body",
        None,
    );
    assert_eq!(get(&c, constant, Some(TOKEN)), original);
    assert_eq!(
        get(&c, "/params/thr/rate", Some(TOKEN)).1["value"],
        json!(1e6)
    );
    assert_eq!(
        status_of(&c).params["gain"]["constant"].value,
        json!("0.6+0.8j")
    );
    assert!(status_of(&c).last_error.unwrap().contains("body"));

    // A valid change: applied from an offset the runtime reports, and shown.
    let (s, v) = put(&c, constant, Some(TOKEN), "0.5");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"], "0.5+0j");
    let offset = v["offset"].as_u64().expect("offset");
    assert_eq!(
        get(&c, constant, Some(TOKEN)),
        (200, json!({"value": "0.5+0j", "offset": offset}))
    );
    let st = status_of(&c);
    assert_eq!(st.params["gain"]["constant"].value, json!("0.5+0j"));
    assert_eq!(st.params["gain"]["constant"].offset, offset);
    // The block itself has the new value.
    let live = seg
        .running
        .handle()
        .get("gain", "constant")
        .expect("gain answers");
    assert_eq!(flowmesh_model::params::value_json(&live), json!("0.5+0j"));

    // Messages: a `cmd` message is checked and applied like a PUT; other
    // message inputs get the JSON as a message.
    let (s, v) = call(
        &c,
        "POST",
        "/messages/gain/cmd",
        Some(TOKEN),
        Some(b"{\"constant\": 2}"),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["params"]["constant"]["value"], "2+0j");
    assert!(v["params"]["constant"]["offset"].as_u64().unwrap() >= offset);
    assert_error(
        &call(
            &c,
            "POST",
            "/messages/thr/cmd",
            Some(TOKEN),
            Some(b"{\"rate\": 0}"),
        ),
        400,
        "out_of_range",
        "blocks.thr.params.rate",
        None,
    );
    assert_eq!(
        get(&c, "/params/thr/rate", Some(TOKEN)).1["value"],
        json!(1e6)
    );
    let handle = seg.running.handle();
    let messages = || handle.get("dbg", "messages").unwrap().to_json();
    let posted = json!({"freq": 1000});
    let before = messages().as_array().unwrap().len();
    let (s, v) = call(
        &c,
        "POST",
        "/messages/dbg/in",
        Some(TOKEN),
        Some(b"{\"freq\": 1000}"),
    );
    assert_eq!((s, v), (202, json!({"accepted": true})));
    wait_for("the posted message", || {
        messages().as_array().unwrap().contains(&posted)
    });
    let count = || messages().as_array().unwrap().len();
    assert!(count() > before);
    let after = count();
    assert_error(
        &call(&c, "POST", "/messages/dbg/out", Some(TOKEN), Some(b"1")),
        404,
        "unknown_port",
        "blocks.dbg.inputs.out",
        None,
    );
    assert_error(
        &call(&c, "POST", "/messages/dbg/in", None, Some(b"1")),
        401,
        "missing_token",
        "headers.authorization",
        None,
    );
    assert_eq!(count(), after);

    // A name that is not UTF-8.
    assert_error(
        &get(&c, "/params/%FF/x", Some(TOKEN)),
        400,
        "bad_path",
        "path",
        None,
    );

    // Unknown endpoints and methods.
    assert_error(&get(&c, "/nope", None), 404, "not_found", "/nope", None);
    assert_error(
        &call(&c, "DELETE", constant, Some(TOKEN), None),
        405,
        "method_not_allowed",
        constant,
        None,
    );

    // No token configured: every mutating call is refused; reads too,
    // unless opened.
    let closed = Control::start(&seg, &d, opts(None)).expect("second control API");
    assert_error(
        &put(&closed, constant, None, "1"),
        403,
        "no_token",
        "headers.authorization",
        None,
    );
    assert_error(
        &get(&closed, "/status", None),
        403,
        "no_token",
        "headers.authorization",
        None,
    );
    assert_eq!(get(&closed, "/healthz", None).0, 200);
    let open = Control::start(
        &seg,
        &d,
        Options {
            open_reads: true,
            ..opts(None)
        },
    )
    .expect("third control API");
    assert_eq!(get(&open, "/status", None).0, 200);
    assert_eq!(get(&open, "/metrics", None).0, 200);
    assert_eq!(get(&open, constant, None).1["value"], "2+0j");
    assert_error(
        &put(&open, constant, None, "1"),
        403,
        "no_token",
        "headers.authorization",
        None,
    );

    // Cluster mode: the resource is the one source of truth.
    let managed = Control::start(
        &seg,
        &d,
        Options {
            params_from_resource: true,
            ..opts(Some(TOKEN))
        },
    )
    .expect("fourth control API");
    let (s, v) = put(&managed, constant, Some(TOKEN), "1");
    assert_error(
        &(s, v.clone()),
        409,
        "managed_by_resource",
        "blocks.gain.params.constant",
        None,
    );
    assert!(
        v["hint"]
            .as_str()
            .unwrap()
            .contains("kubectl edit flowgraph ctl"),
        "{v}"
    );
    assert_error(
        &call(
            &managed,
            "POST",
            "/messages/gain/cmd",
            Some(TOKEN),
            Some(b"{\"constant\": 1}"),
        ),
        409,
        "managed_by_resource",
        "blocks.gain.params.constant",
        None,
    );
    assert_eq!(get(&c, constant, Some(TOKEN)).1["value"], "2+0j");

    // restartRequired, then the end of the run.
    c.set_restart_required("spec.blocks.src.params.type changed");
    let st = status_of(&c);
    assert_eq!(st.state, WorkerState::RestartRequired);
    // Items flowed since the first sample (the throttle lets 1e6/s through).
    assert!(st.items_per_second > 0.0, "{}", st.items_per_second);
    assert_eq!(
        st.restart_reason.as_deref(),
        Some("spec.blocks.src.params.type changed")
    );
    stop(seg);
    c.set_outcome(Err("block `x` failed: test".into()));
    let st = status_of(&c);
    assert_eq!(st.state, WorkerState::Failed);
    assert_eq!(st.last_error.as_deref(), Some("block `x` failed: test"));
    assert_error(&get(&c, "/readyz", None), 503, "failed", "state", None);
    assert_error(
        &put(&c, constant, Some(TOKEN), "1"),
        409,
        "finished",
        "blocks.gain.params.constant",
        None,
    );
}

/// Two segments joined by TCP: `a` makes exactly N items, `b` consumes them.
fn two_segments(n: u64) -> String {
    format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: counts}}
spec:
  blocks:
    src:  {{kind: signal_source, params: {{type: f32, samp_rate: 1e6, frequency: 1e3}}, segment: a}}
    head: {{kind: head, params: {{type: f32, n: {n}}}, segment: a}}
    gain: {{kind: multiply_const, params: {{type: f32, constant: 2}}, segment: b}}
    sink: {{kind: null_sink, params: {{type: f32}}, segment: b}}
  connections:
    - [src.out, head.in]
    - [head.out, gain.in]
    - [gain.out, sink.in]
"#
    )
}

/// The samples of a scrape, checked to be every sample line of the text
/// with counters typed as counters.
fn scrape(c: &Control) -> prometheus_parse::Scrape {
    let url = format!("http://{}/metrics", c.addr());
    let r = client::request("GET", &url, Some(TOKEN), None, Duration::from_secs(20)).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        r.content_type
    );
    let text = r.text();
    let s = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text");
    let lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(s.samples.len(), lines, "every sample line parses:\n{text}");
    for x in &s.samples {
        assert!(x.metric.starts_with("flowmesh_") || x.metric.starts_with("process_"));
        match &x.value {
            prometheus_parse::Value::Counter(v) => {
                assert!(x.metric.ends_with("_total") && *v >= 0.0)
            }
            prometheus_parse::Value::Gauge(_) => assert!(!x.metric.ends_with("_total")),
            other => panic!("{} is {other:?}", x.metric),
        }
        assert!(s.docs.contains_key(&x.metric), "{} has HELP", x.metric);
    }
    s
}

/// The value of the one sample of `metric` whose labels include `labels`.
fn value(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            _ => f64::NAN,
        })
        .collect();
    assert_eq!(found.len(), 1, "{metric} {labels:?}: {found:?}");
    found[0]
}

#[test]
fn metrics_parse_and_match_a_finished_runs_counts() {
    const N: u64 = 3_000_000;
    let d = doc(&two_segments(N));
    let a = start_segment(&d, &config("a")).expect("segment a");
    let b = start_segment(&d, &config("b")).expect("segment b");
    let ca = Control::start(&a, &d, opts(Some(TOKEN))).unwrap();
    let cb = Control::start(&b, &d, opts(Some(TOKEN))).unwrap();

    // b cannot reach a yet: not ready, naming the edge.
    let (s, v) = get(&cb, "/readyz", None);
    assert_eq!((s, v["code"].as_str()), (503, Some("not_ready")), "{v}");
    assert!(v["path"].as_str().unwrap().starts_with("edges."), "{v}");
    assert_eq!(status_of(&cb).state, WorkerState::Starting);
    assert_eq!(get(&ca, "/readyz", None).0, 200, "a has no inputs");

    b.env.set_peer("a", &a.listening);
    wait_for("b ready", || get(&cb, "/readyz", None).0 == 200);
    let ra = a.running.wait().expect("a finishes");
    let rb = b.running.wait().expect("b finishes");
    ca.set_outcome(Ok(()));
    cb.set_outcome(Ok(()));
    let _ = (ra, rb);

    let sa = scrape(&ca);
    let sb = scrape(&cb);
    let n = N as f64;
    let seg_a = [("segment", "a"), ("flowgraph", "counts")];
    assert_eq!(
        value(
            &sa,
            "flowmesh_block_items_out_total",
            &[seg_a[0], ("block", "head")]
        ),
        n
    );
    assert_eq!(
        value(&sa, "flowmesh_block_items_in_total", &[("block", "head")]),
        n
    );
    assert_eq!(
        value(&sa, "flowmesh_edge_items_total", &[("role", "output")]),
        n
    );
    assert_eq!(
        value(&sa, "flowmesh_edge_bytes_total", &[("role", "output")]),
        n * 4.0
    );
    assert_eq!(
        value(
            &sa,
            "flowmesh_edge_connections_total",
            &[("role", "output")]
        ),
        1.0
    );
    assert_eq!(
        value(&sa, "flowmesh_edge_backlog_items", &[("role", "output")]),
        0.0
    );
    let frames = value(&sa, "flowmesh_edge_frames_total", &[("role", "output")]);
    assert!(frames >= 1.0);
    assert_eq!(
        value(&sa, "flowmesh_worker_state", &[("state", "finished")]),
        1.0
    );
    assert_eq!(
        value(&sa, "flowmesh_worker_info", &[("generation", "0")]),
        1.0
    );
    // Busy time comes from the coarse clock (whole ticks per work call):
    // over all the blocks of both segments it is more than nothing.
    let busy = |s: &prometheus_parse::Scrape| -> f64 {
        s.samples
            .iter()
            .filter(|x| x.metric == "flowmesh_block_busy_seconds_total")
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v) => v,
                _ => f64::NAN,
            })
            .sum()
    };
    assert!(busy(&sa) + busy(&sb) > 0.0);
    assert!(value(&sa, "process_cpu_seconds_total", &[]) > 0.0);
    assert!(value(&sa, "process_resident_memory_bytes", &[]) > 0.0);

    assert_eq!(
        value(&sb, "flowmesh_edge_items_total", &[("role", "input")]),
        n
    );
    assert_eq!(
        value(&sb, "flowmesh_edge_bytes_total", &[("role", "input")]),
        n * 4.0
    );
    assert_eq!(
        value(&sb, "flowmesh_edge_frames_total", &[("role", "input")]),
        frames
    );
    assert_eq!(
        value(&sb, "flowmesh_edge_connections_total", &[("role", "input")]),
        1.0
    );
    assert_eq!(
        value(&sb, "flowmesh_edge_reconnects_total", &[("role", "input")]),
        0.0
    );
    assert_eq!(
        value(&sb, "flowmesh_edge_gaps_total", &[("role", "input")]),
        0.0
    );
    for cause in ["overflow", "peer_lost", "retention_exceeded", "restart"] {
        assert_eq!(
            value(&sb, "flowmesh_edge_items_lost_total", &[("cause", cause)]),
            0.0
        );
    }
    assert_eq!(
        value(&sb, "flowmesh_block_items_in_total", &[("block", "gain")]),
        n
    );
    assert_eq!(
        value(&sb, "flowmesh_block_items_out_total", &[("block", "gain")]),
        n
    );
    assert_eq!(
        value(&sb, "flowmesh_block_items_in_total", &[("block", "sink")]),
        n
    );

    // A block of the other segment: ask that worker.
    let (s, v) = get(&cb, "/params/head/n", Some(TOKEN));
    assert_error(&(s, v.clone()), 404, "other_segment", "blocks.head", None);
    assert_eq!(v["message"], "block `head` runs in segment `a`, not in `b`");

    // /status says the same.
    let st = status_of(&cb);
    assert_eq!(st.state, WorkerState::Finished);
    assert_eq!(st.edges.len(), 1);
    assert_eq!((st.edges[0].items, st.edges[0].connections), (N, 1));
    assert_eq!(st.items_lost.values().sum::<u64>(), 0);
    assert_eq!(st.blocks["sink"].items_in, N);
    assert_error(&get(&cb, "/readyz", None), 503, "finished", "state", None);
}
