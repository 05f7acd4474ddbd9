//! Per-edge generations over real sockets: a producer segment keeps
//! running one version of a FlowGraph while consumers built from edited
//! versions connect. An edit elsewhere (a DSP parameter, another edge's
//! item type) leaves the edge's generation alone and the consumer joins;
//! an edit of the edge's contract (its item type, the producer's crc) is
//! refused with both generations and the segment to restart, and the
//! producer serves the right consumer afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use flowmesh_model::partition;
use flowmesh_model::status::{EdgeRole, WorkerStatus};
use flowmesh_model::validate::validate_text;
use flowmesh_model::FlowGraphDocument;
use flowmesh_worker::client;
use flowmesh_worker::control::{Control, Options};
use flowmesh_worker::{start_segment, Config, Segment};

/// Segment `a` sends 1000 items of `ty` to segment `b`, which scales them
/// by `gain` and expects all 1000. Segments `c` → `d` form another edge
/// (never started here) of item type `other`. `crc`: the network setting.
fn yaml(ty: &str, gain: &str, other: &str, crc: bool) -> String {
    format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: gen}}
spec:
  runtime: {{network: {{crc: {crc}, lingerSeconds: 30}}}}
  blocks:
    src:  {{kind: signal_source, params: {{type: {ty}, samp_rate: 1e6, frequency: 1e3}}, segment: a}}
    head: {{kind: head, params: {{type: {ty}, n: 1000}}, segment: a}}
    mul:  {{kind: multiply_const, params: {{type: {ty}, constant: {gain}}}, segment: b}}
    sink: {{kind: null_sink, params: {{type: {ty}, expect: 1000}}, segment: b}}
    src2: {{kind: signal_source, params: {{type: {other}, samp_rate: 1e6, frequency: 5e3}}, segment: c}}
    out2: {{kind: null_sink, params: {{type: {other}}}, segment: d}}
  connections:
    - [src.out, head.in]
    - [head.out, mul.in]
    - [mul.out, sink.in]
    - [src2.out, out2.in]
"#
    )
}

fn doc(text: &str) -> FlowGraphDocument {
    let (doc, report) = validate_text(text);
    assert!(report.is_ok(), "{report:?}");
    doc.expect("parsed")
}

/// The generation of edge `head.out>b` in `d`.
fn generation(d: &FlowGraphDocument) -> u64 {
    partition::partition(&d.spec)
        .unwrap()
        .edges
        .iter()
        .find(|e| e.id == "head.out>b")
        .expect("the edge")
        .generation
}

fn config(segment: &str, peers: &[(&str, &str)]) -> Config {
    Config {
        segment: segment.into(),
        listen: "127.0.0.1:0".into(),
        peers: peers
            .iter()
            .map(|(s, a)| (s.to_string(), a.to_string()))
            .collect::<BTreeMap<_, _>>(),
        token: "gen-secret".into(),
        generation: 0,
        resume: false,
        threads: Some(1),
        state_dir: None,
    }
}

/// Runs segment `b` of `d` against the producer at `at` to its end.
fn consume(d: &FlowGraphDocument, at: &str) -> Result<(), String> {
    let seg: Segment = start_segment(d, &config("b", &[("a", at)])).map_err(|e| e.to_string())?;
    seg.running.wait().map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn an_edit_elsewhere_joins_and_a_changed_edge_contract_is_refused_with_both_generations() {
    let v1 = doc(&yaml("f32", "2", "f32", true));
    let producer = start_segment(&v1, &config("a", &[])).expect("producer starts");
    let at = producer.listening.clone();
    let g1 = generation(&v1);
    // /status reports the edge's own generation.
    let control = Control::start(
        &producer,
        &v1,
        Options {
            addr: "127.0.0.1:0".into(),
            open_reads: true,
            ..Default::default()
        },
    )
    .expect("control API");
    let r = client::request(
        "GET",
        &format!("http://{}/status", control.addr()),
        None,
        None,
        Duration::from_secs(20),
    )
    .expect("GET /status");
    let status: WorkerStatus = serde_json::from_slice(&r.body).expect("a status");
    let edges: Vec<(&str, EdgeRole, u64)> = status
        .edges
        .iter()
        .map(|e| (e.edge.as_str(), e.role, e.generation))
        .collect();
    assert_eq!(edges, vec![("head.out>b", EdgeRole::Output, g1)]);

    // The edge's contract changed: its item type …
    let typed = doc(&yaml("cf32", "2", "f32", true));
    let g_typed = generation(&typed);
    assert_ne!(g_typed, g1);
    let msg = consume(&typed, &at).expect_err("refused");
    for want in [
        format!("edge head.out>b: this producer (segment a) serves edge generation {g1}"),
        format!("the consumer (segment b) was built for generation {g_typed}"),
        "the producer sends f32x1, the consumer expects cf32x1".to_string(),
        "restart the segment that runs the older version with the current spec: `a` if the \
         consumer has it, else `b`"
            .to_string(),
    ] {
        assert!(msg.contains(&want), "{want:?} not in {msg}");
    }
    // … or the producer's crc setting.
    let no_crc = doc(&yaml("f32", "2", "f32", false));
    let g_crc = generation(&no_crc);
    assert_ne!(g_crc, g1);
    let msg = consume(&no_crc, &at).expect_err("refused");
    assert!(
        msg.contains(&format!(
            "serves edge generation {g1}, the consumer (segment b) was built for generation {g_crc}:"
        )),
        "{msg}"
    );

    // Edited elsewhere: the consumer's own DSP block and the other edge's
    // item type. Same generation: it joins the producer still running v1
    // and gets all 1000 items (its null_sink expects them).
    let elsewhere = doc(&yaml("f32", "3", "cf32", true));
    assert_eq!(generation(&elsewhere), g1);
    let other = |d: &FlowGraphDocument| {
        partition::partition(&d.spec)
            .unwrap()
            .edges
            .into_iter()
            .find(|e| e.id == "src2.out>d")
            .expect("the other edge")
            .generation
    };
    assert_ne!(other(&elsewhere), other(&v1));
    consume(&elsewhere, &at).expect("joins and gets every item");
    producer
        .running
        .wait()
        .expect("the producer ends once its consumer has everything");
}
