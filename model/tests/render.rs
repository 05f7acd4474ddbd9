//! Rendering FlowGraphs as Graphviz DOT and Mermaid: exact text for a small graph.

use flowmesh_model::render::{to_dot, to_mermaid};
use flowmesh_model::spec::FlowGraphSpec;
use flowmesh_model::validate::validate_text;

/// A tone, low-passed and decimated by 4 in segment `rx`, into an averaged
/// PSD and a detector whose events go to a log; a strobe drives the filter's
/// `cmd` port.
const GRAPH: &str = r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {name: scan}
spec:
  blocks:
    src: {kind: signal_source, params: {type: cf32, samp_rate: 2e6}, segment: rx}
    lpf:
      kind: low_pass_filter
      params: {type: cf32, samp_rate: 2e6, cutoff: 1e5, transition: 1e4, decimation: 4}
      segment: rx
    psd: {kind: psd, params: {fft_size: 1024, average: 8}, segment: analysis}
    det: {kind: threshold_detector, params: {fft_size: 1024, samp_rate: 5e5}, segment: analysis}
    log: {kind: jsonl_sink}
    strobe: {kind: message_strobe, params: {period: 2}}
  connections:
    - [src.out, lpf.in]
    - [lpf.out, psd.in]
    - [psd.out, det.in]
    - [det.detections, log.in]
    - [strobe.out, lpf.cmd]
"#;

fn spec() -> FlowGraphSpec {
    let (doc, report) = validate_text(GRAPH);
    assert!(report.is_ok(), "{report}");
    doc.unwrap().spec
}

#[test]
fn dot() {
    assert_eq!(
        to_dot(&spec()),
        r#"digraph flowgraph {
  rankdir=LR;
  node [shape=box, style=rounded];
  subgraph "cluster_analysis" {
    label="analysis";
    "det" [label="det\nthreshold_detector"];
    "psd" [label="psd\npsd"];
  }
  subgraph "cluster_rx" {
    label="rx";
    "lpf" [label="lpf\nlow_pass_filter"];
    "src" [label="src\nsignal_source"];
  }
  "log" [label="log\njsonl_sink"];
  "strobe" [label="strobe\nmessage_strobe"];
  "src" -> "lpf" [label="cf32 @ 2 MHz"];
  "lpf" -> "psd" [label="cf32 @ 500 kHz"];
  "psd" -> "det" [label="f32x1024 @ 61.0352 Hz"];
  "det" -> "log" [style=dashed];
  "strobe" -> "lpf" [style=dashed];
}
"#
    );
}

#[test]
fn mermaid() {
    assert_eq!(
        to_mermaid(&spec()),
        r#"flowchart LR
  subgraph s0["analysis"]
    b0["det<br/>threshold_detector"]
    b3["psd<br/>psd"]
  end
  subgraph s1["rx"]
    b2["lpf<br/>low_pass_filter"]
    b4["src<br/>signal_source"]
  end
  b1["log<br/>jsonl_sink"]
  b5["strobe<br/>message_strobe"]
  b4 -->|"cf32 @ 2 MHz"| b2
  b2 -->|"cf32 @ 500 kHz"| b3
  b3 -->|"f32x1024 @ 61.0352 Hz"| b0
  b0 -.-> b1
  b5 -.-> b2
"#
    );
}

#[test]
fn unknown_rates_and_invalid_graphs_still_render() {
    // No samp_rate: types only. An unknown kind: an unlabelled edge. A
    // connection to a block that doesn't exist: left out.
    let text = r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {name: t}
spec:
  blocks:
    v: {kind: vector_source, params: {type: f32, data: [1, 2]}}
    "odd \"name\"": {kind: frobnicator}
  connections:
    - [v.out, "odd \"name\".in"]
    - [v.out, nowhere.in]
"#;
    let (doc, report) = validate_text(text);
    assert!(!report.is_ok());
    let spec = doc.expect("the shape is fine").spec;
    assert_eq!(
        to_dot(&spec),
        "digraph flowgraph {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n  \
         \"odd \\\"name\\\"\" [label=\"odd \\\"name\\\"\\nfrobnicator\"];\n  \
         \"v\" [label=\"v\\nvector_source\"];\n  \
         \"v\" -> \"odd \\\"name\\\"\" [label=\"f32\"];\n}\n"
    );
    assert_eq!(
        to_mermaid(&spec),
        "flowchart LR\n  b0[\"odd #quot;name#quot;<br/>frobnicator\"]\n  b1[\"v<br/>vector_source\"]\n  \
         b1 -->|\"f32\"| b0\n"
    );
}

#[test]
fn output_is_deterministic() {
    let s = spec();
    assert_eq!(to_dot(&s), to_dot(&s.clone()));
    assert_eq!(to_mermaid(&s), to_mermaid(&s.clone()));
}
