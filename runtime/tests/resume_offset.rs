//! Blocks that a restarted segment of sources starts at an item offset
//! (their setup's `start`): every source the catalog declares
//! `resumable_at_offset`, and the output-indexed item-for-item blocks
//! (`head`, `tagger`). Started at R, a chain must give items R, R+1, … of
//! an uninterrupted run, bit for bit, with the same tags.

use std::collections::BTreeMap;

use flowmesh_model::validate::validate_text;
use flowmesh_runtime::blocks::{BlockSetup, Env};
use flowmesh_runtime::harness::{factory, factory_with, Harness};
use flowmesh_runtime::{run, Graph, Tag};
use serde_json::json;

/// `src` (kind and params as YAML flow mappings) → `head` (n items) → an
/// `append`-free file sink at `out`.
fn chain(src: &str, ty: &str, n: u64, out: &std::path::Path) -> flowmesh_model::FlowGraphSpec {
    let yaml = format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: resume-offset}}
spec:
  blocks:
    src:  {src}
    head: {{kind: head, params: {{type: {ty}, n: {n}}}}}
    file: {{kind: file_sink, params: {{type: {ty}, path: {out}}}}}
  connections:
    - [src.out, head.in]
    - [head.out, file.in]
"#,
        out = out.display()
    );
    let (doc, report) = validate_text(&yaml);
    assert!(report.is_ok(), "{report:?}");
    doc.expect("parsed").spec
}

/// The bytes the chain writes when `src` and `head` start at `start`.
fn written(spec: &flowmesh_model::FlowGraphSpec, out: &std::path::Path, start: u64) -> Vec<u8> {
    let at = BlockSetup {
        start,
        ..Default::default()
    };
    let env = Env {
        setup: BTreeMap::from([("src".into(), at.clone()), ("head".into(), at)]),
        ..Env::default()
    };
    run(Graph::from_spec_in(spec, env).expect("builds")).expect("runs");
    std::fs::read(out).unwrap()
}

#[test]
fn every_resumable_source_started_at_an_offset_continues_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let n = 100_003u64;
    let cases: &[(&str, &str, usize)] = &[
        ("{kind: counter_source, params: {n: 100003}}", "u64", 8),
        ("{kind: counter_source}", "u64", 8),
        (
            "{kind: signal_source, params: {type: cf32, samp_rate: 48000, frequency: 1234.5, phase: 0.3}}",
            "cf32",
            8,
        ),
        (
            "{kind: signal_source, params: {type: f32, waveform: square, samp_rate: 1e6, frequency: 777}}",
            "f32",
            4,
        ),
        (
            "{kind: noise_source, params: {type: cf32, amplitude: 0.7, seed: 5}}",
            "cf32",
            8,
        ),
        ("{kind: noise_source, params: {type: f32, seed: 9}}", "f32", 4),
        (
            "{kind: vector_source, params: {type: i16, data: [1, 2, 3, 4, 5, 6, 7], repeat: true}}",
            "i16",
            2,
        ),
        ("{kind: null_source, params: {type: f32}}", "f32", 4),
    ];
    for &(src, ty, size) in cases {
        let spec = chain(src, ty, n, &out);
        let full = written(&spec, &out, 0);
        assert_eq!(full.len() as u64, n * size as u64, "{src}");
        for r in [1u64, 7, 4096, 65_537, n - 1, n] {
            let tail = written(&spec, &out, r);
            assert!(
                tail == full[r as usize * size..],
                "{src}: started at {r}, the {} items differ from the uninterrupted run's",
                tail.len() / size
            );
        }
    }
}

#[test]
fn a_vector_source_played_once_started_past_its_end_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let spec = chain(
        "{kind: vector_source, params: {type: u8, data: [1, 2, 3, 4, 5]}}",
        "u8",
        100,
        &out,
    );
    assert_eq!(written(&spec, &out, 0), [1, 2, 3, 4, 5]);
    assert_eq!(written(&spec, &out, 3), [4, 5]);
    assert_eq!(written(&spec, &out, 9), Vec::<u8>::new());
}

#[test]
fn a_tagger_started_at_an_offset_tags_the_same_items_with_the_same_values() {
    let x: Vec<u32> = (0..10_000).collect();
    let params = json!({"type": "u32", "period": 333, "key": "tick"});
    let full = Harness::new(factory("tagger", params.clone()))
        .input(&x)
        .run()
        .unwrap();
    let ticks = |tags: &[Tag], shift: u64| -> Vec<(u64, String)> {
        tags.iter()
            .map(|t| (t.offset + shift, t.value.to_string()))
            .collect()
    };
    let want = ticks(full.tags(0), 0);
    assert_eq!(want.len(), 10_000usize.div_ceil(333));
    for r in [1u64, 333, 334, 9_999] {
        let resumed = Harness::new(factory_with(
            "tagger",
            params.clone(),
            BlockSetup {
                start: r,
                ..Default::default()
            },
        ))
        .input(&x[r as usize..])
        .run_chunked();
        assert_eq!(resumed.items::<u32>(0), &x[r as usize..], "started at {r}");
        let got = ticks(resumed.tags(0), r);
        let want_tail: Vec<_> = want.iter().filter(|(o, _)| *o >= r).cloned().collect();
        assert_eq!(got, want_tail, "started at {r}");
    }
}
