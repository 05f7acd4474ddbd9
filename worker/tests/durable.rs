//! `durable_positions`: where a restarted segment asks its input edges to
//! resume, worked out from what its `append` file sinks already hold and
//! where the consumers of its `net_sink`s resume (a relay), moved back for
//! the filters' warm-up and aligned to their decimation; `append_skips`:
//! what each file then drops; `relay_starts`: where those `net_sink`s
//! number their first item; `mixer_starts`: the output index a resumed
//! `freq_xlating_fir` continues its mixer from.

use std::collections::BTreeMap;

use flowmesh_model::catalog::Role;
use flowmesh_model::validate::validate_text;
use flowmesh_worker::{
    append_skips, durable_positions, mixer_starts, plan, relay_sinks, relay_starts,
};

fn sub(yaml: &str, segment: &str) -> flowmesh_model::FlowGraphSpec {
    let (doc, report) = validate_text(yaml);
    assert!(report.is_ok(), "{report:?}");
    plan(&doc.expect("parsed")).expect("partition").segments[segment].clone()
}

fn graph(dir: &std::path::Path) -> String {
    format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: durable}}
spec:
  blocks:
    src:  {{kind: signal_source, params: {{type: f32, samp_rate: 1e6, frequency: 1e3}}, segment: a}}
    fir:  {{kind: fir_filter, params: {{type: f32, taps: [0.25, 0.25, 0.25, 0.25], decimation: 4}}, segment: b}}
    full: {{kind: file_sink, params: {{type: f32, path: {full}, mode: append}}, segment: b}}
    dec:  {{kind: file_sink, params: {{type: f32, path: {dec}, mode: append}}, segment: b}}
  connections:
    - [src.out, fir.in]
    - [src.out, full.in]
    - [fir.out, dec.in]
"#,
        full = dir.join("full.f32").display(),
        dec = dir.join("dec.f32").display(),
    )
}

fn source_of(sub: &flowmesh_model::FlowGraphSpec) -> String {
    sub.blocks
        .iter()
        .find(|(_, b)| {
            flowmesh_model::catalog().get(&b.kind).map(|d| d.role) == Some(Role::NetSource)
        })
        .map(|(n, _)| n.clone())
        .expect("segment b has a net_source")
}

/// The start `durable_positions` gives, and each file's skip from there.
fn plan_resume(b: &flowmesh_model::FlowGraphSpec) -> (u64, u64, u64) {
    let src = source_of(b);
    let sources = durable_positions(b, &BTreeMap::new());
    let skips = append_skips(b, &sources);
    (sources[&src], skips["full"], skips["dec"])
}

#[test]
fn the_smallest_position_over_all_append_sinks_wins_taking_decimation_into_account() {
    // The FIR (4 taps, decimation 4) needs 3 earlier items and a start on
    // a multiple of 4: the start is the smallest durable position less 3,
    // rounded down to a multiple of 4. Each file drops what it gets again.
    let dir = tempfile::tempdir().unwrap();
    let b = sub(&graph(dir.path()), "b");

    // Nothing written yet: start at 0, nothing to drop.
    assert_eq!(plan_resume(&b), (0, 0, 0));

    // 1000 items at the undecimated sink, 200 at the decimated one
    // (= 800 source items): the decimated sink is behind and wins; start
    // at (800 - 3) rounded down to 796. The FIR's first output from there
    // is its output 199, computed from a zero history and dropped by `dec`,
    // which holds 200 (so its output 200 comes from true inputs 797..800);
    // `full` drops 1000 - 796.
    std::fs::write(dir.path().join("full.f32"), vec![0u8; 1000 * 4]).unwrap();
    std::fs::write(dir.path().join("dec.f32"), vec![0u8; 200 * 4]).unwrap();
    assert_eq!(plan_resume(&b), (796, 204, 1));

    // The decimated sink catches up past the other: the full sink wins.
    std::fs::write(dir.path().join("dec.f32"), vec![0u8; 300 * 4]).unwrap();
    assert_eq!(plan_resume(&b), (996, 4, 51));
}

#[test]
fn positions_through_a_rational_resampler_and_a_freq_xlating_fir() {
    // b: net_source -> rational_resampler 3/2 -> freq_xlating_fir (5 taps,
    // decimation 4) -> append file `xf`, and the resampler's output into the
    // append file `rf`. The resampler needs no warm-up (its output j reads
    // inputs from ⌊2j/3⌋ on) and a start on a multiple of 2; the
    // freq_xlating_fir needs 4 earlier inputs (= 4·2/3 source items,
    // rounded up: 3) and a start on a multiple of 4 of its own input, i.e. of
    // 8 source items.
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: resample}}
spec:
  blocks:
    src: {{kind: signal_source, params: {{type: cf32, samp_rate: 48000, frequency: 1e3}}, segment: a}}
    rr:  {{kind: rational_resampler, params: {{type: cf32, interpolation: 3, decimation: 2}}, segment: b}}
    xl:  {{kind: freq_xlating_fir, params: {{taps: [0.1, 0.2, 0.4, 0.2, 0.1], center_freq: 9000, samp_rate: 72000, decimation: 4}}, segment: b}}
    rf:  {{kind: file_sink, params: {{type: cf32, path: {rf}, mode: append}}, segment: b}}
    xf:  {{kind: file_sink, params: {{type: cf32, path: {xf}, mode: append}}, segment: b}}
  connections:
    - [src.out, rr.in]
    - [rr.out, xl.in]
    - [rr.out, rf.in]
    - [xl.out, xf.in]
"#,
        rf = dir.path().join("rf.cf32").display(),
        xf = dir.path().join("xf.cf32").display(),
    );
    let b = sub(&yaml, "b");
    let src = source_of(&b);
    let resume = |rf: usize, xf: usize| {
        std::fs::write(dir.path().join("rf.cf32"), vec![0u8; rf * 8]).unwrap();
        std::fs::write(dir.path().join("xf.cf32"), vec![0u8; xf * 8]).unwrap();
        let sources = durable_positions(&b, &BTreeMap::new());
        let skips = append_skips(&b, &sources);
        let mixer = mixer_starts(&b, &sources);
        (sources[&src], skips["rf"], skips["xf"], mixer["xl"])
    };

    // Nothing written: start at 0, the mixer at output 0.
    assert_eq!(resume(0, 0), (0, 0, 0, 0));

    // rf holds 3000 resampled items (= source 2000), xf 300 (= source
    // 800): xf wins; 800 − 3 = 797, down to a multiple of 8: 792. The
    // resampler's first output is its output 792·3/2 = 1188, exact; rf
    // drops 3000 − 1188. The freq_xlating_fir's first output is its output
    // 1188/4 = 297 (its mixer continues from there), a warm-up output xf
    // drops with 298 and 299.
    assert_eq!(resume(3000, 300), (792, 1812, 3, 297));

    // rf is behind (600 = source 400): 400 − 3 down to a multiple of 8 is
    // 392: rf drops 600 − 588, xf 300 − 147, the mixer starts at 147.
    assert_eq!(resume(600, 300), (392, 12, 153, 147));
}

#[test]
fn a_partly_written_last_item_is_not_durable() {
    let dir = tempfile::tempdir().unwrap();
    let b = sub(&graph(dir.path()), "b");
    let src = source_of(&b);
    std::fs::write(dir.path().join("full.f32"), vec![0u8; 10 * 4 + 3]).unwrap();
    std::fs::write(dir.path().join("dec.f32"), vec![0u8; 100 * 4]).unwrap();
    // 10 whole items; less the warm-up, down to a multiple of 4: 4.
    assert_eq!(durable_positions(&b, &BTreeMap::new())[&src], 4);
}

#[test]
fn a_relay_resumes_its_input_where_its_consumers_are_and_numbers_its_output_from_there() {
    // b: net_source -> fir (decimation 4) -> net_sink to c, and an append
    // file sink on the undecimated stream.
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: relay}}
spec:
  blocks:
    src:  {{kind: signal_source, params: {{type: f32, samp_rate: 1e6, frequency: 1e3}}, segment: a}}
    fir:  {{kind: fir_filter, params: {{type: f32, taps: [0.25, 0.25, 0.25, 0.25], decimation: 4}}, segment: b}}
    full: {{kind: file_sink, params: {{type: f32, path: {full}, mode: append}}, segment: b}}
    out:  {{kind: null_sink, params: {{type: f32}}, segment: c}}
  connections:
    - [src.out, fir.in]
    - [src.out, full.in]
    - [fir.out, out.in]
"#,
        full = dir.path().join("full.f32").display(),
    );
    let b = sub(&yaml, "b");
    let src = source_of(&b);
    let relays = relay_sinks(&b);
    assert_eq!(relays.len(), 1, "{relays:?}");
    let sink = relays[0].clone();

    // The consumer in c resumes at decimated item 250 (= source item 1000);
    // the file holds 1200 source items: the consumer is behind and wins.
    // With the FIR's warm-up the input starts at 996, the sink numbers its
    // first item 249 and serves its consumer from 250.
    std::fs::write(dir.path().join("full.f32"), vec![0u8; 1200 * 4]).unwrap();
    let down = BTreeMap::from([(sink.clone(), 250)]);
    let sources = durable_positions(&b, &down);
    assert_eq!(sources[&src], 996);
    assert_eq!(relay_starts(&b, &sources)[&sink], 249);
    assert_eq!(append_skips(&b, &sources)["full"], 204);

    // The file is behind (600 source items): start at 596, the sink
    // numbers from 149 and serves its consumer from 250 once it got there.
    std::fs::write(dir.path().join("full.f32"), vec![0u8; 600 * 4]).unwrap();
    let sources = durable_positions(&b, &down);
    assert_eq!(sources[&src], 596);
    assert_eq!(relay_starts(&b, &sources)[&sink], 149);
    assert_eq!(append_skips(&b, &sources)["full"], 4);

    // No consumer came back: only the file counts, and no filter lies on
    // its path (no warm-up, no alignment).
    assert_eq!(durable_positions(&b, &BTreeMap::new())[&src], 600);
}

#[test]
fn a_resumed_consumer_names_the_recorded_producer_instance_and_ignores_a_bad_state_file() {
    use flowmesh_worker::{start_segment, state_file, Config};
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: state}}
spec:
  blocks:
    src:  {{kind: counter_source, params: {{n: 1000}}, segment: a}}
    file: {{kind: file_sink, params: {{type: u64, path: {out}, mode: append}}, segment: b}}
  connections:
    - [src.out, file.in]
"#,
        out = dir.path().join("out.u64").display(),
    );
    let (doc, report) = validate_text(&yaml);
    assert!(report.is_ok(), "{report:?}");
    let doc = doc.unwrap();
    let b = sub(&yaml, "b");
    let src = source_of(&b);
    let edge = b.blocks[&src].params["edge"].as_str().unwrap().to_string();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    // The file holds 300 items; the state says they came from instance 77,
    // whose item 0 was output position 100.
    std::fs::write(dir.path().join("out.u64"), vec![0u8; 300 * 8]).unwrap();
    let cfg = Config {
        segment: "b".into(),
        listen: "127.0.0.1:0".into(),
        peers: BTreeMap::new(),
        token: String::new(),
        generation: 0,
        resume: true,
        threads: Some(1),
        state_dir: Some(state.clone()),
    };
    // (No producer is reachable: the consumer keeps waiting, and what it
    // will name in HELLO can be read from it.)
    let started = |cfg: &Config| {
        let seg = start_segment(&doc, cfg).unwrap();
        let h = seg.running.handle();
        let get = |name: &str| h.get(&src, name).unwrap().as_u64().unwrap();
        let got = (get("instance"), get("expected"), get("delivered"));
        h.stop();
        got
    };
    std::fs::write(
        state_file(&state, &edge),
        r#"{"instance": 77, "base": 100}"#,
    )
    .unwrap();
    // It asks instance 77 for its item 200, which becomes output position 300.
    assert_eq!(started(&cfg), (77, 200, 300));

    // A state file FlowMesh did not write is ignored (logged): instance 0.
    std::fs::write(state_file(&state, &edge), "not json").unwrap();
    assert_eq!(started(&cfg), (0, 300, 300));
}
