//! `flowmesh run --distributed`: one worker process per segment over real
//! TCP sockets on 127.0.0.1 (Unix-domain sockets with `--unix`). Its output
//! must equal the single-process run's,
//! and a segment that fails must end the run (the others are stopped)
//! instead of leaving it hanging.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const FM: &str = env!("CARGO_BIN_EXE_flowmesh");

/// Tone plus seeded noise in `a`, a decimating low-pass filter with tags in
/// `b`, a file in `c`: deterministic, with history and rate change.
fn graph(dir: &Path, name: &str) -> String {
    format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: dist}}
spec:
  blocks:
    tone:    {{kind: signal_source, params: {{type: cf32, samp_rate: 1e6, frequency: 20e3, amplitude: 0.5}}, segment: a}}
    noise:   {{kind: noise_source, params: {{type: cf32, amplitude: 0.05, seed: 3}}, segment: a}}
    mix:     {{kind: add, params: {{type: cf32}}, segment: a}}
    head:    {{kind: head, params: {{type: cf32, n: 3000000}}, segment: a}}
    lowpass: {{kind: low_pass_filter, params: {{type: cf32, samp_rate: 1e6, cutoff: 50e3, transition: 20e3, decimation: 4}}, segment: b}}
    tag:     {{kind: tagger, params: {{type: cf32, period: 1000}}, segment: b}}
    file:    {{kind: file_sink, params: {{type: cf32, path: "{}", format: sigmf, samp_rate: 250e3}}, segment: c}}
  connections:
    - [tone.out, mix.in0]
    - [noise.out, mix.in1]
    - [mix.out, head.in]
    - [head.out, lowpass.in]
    - [lowpass.out, tag.in]
    - [tag.out, file.in]
"#,
        dir.join(format!("{name}.sigmf-data")).display()
    )
}

fn run(args: &[&str]) -> std::process::Output {
    let out = Command::new(FM).args(args).output().expect("flowmesh runs");
    assert!(
        out.status.success(),
        "flowmesh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_distributed_run_writes_what_the_single_process_run_writes() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = |name: &str| {
        let f = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, graph(dir.path(), name)).unwrap();
        f.display().to_string()
    };
    let (one, tcp, unix) = (yaml("one"), yaml("tcp"), yaml("unix"));
    run(&["run", "-q", &one]);
    run(&["run", "--distributed", "-q", &tcp]);
    run(&["run", "--distributed", "--unix", "-q", &unix]);

    let data = |n: &str| std::fs::read(dir.path().join(format!("{n}.sigmf-data"))).unwrap();
    let meta = |n: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.path().join(format!("{n}.sigmf-meta"))).unwrap())
            .unwrap()
    };
    let (a, ma) = (data("one"), meta("one"));
    assert_eq!(a.len(), 750_000 * 8, "3M items decimated by 4, cf32");
    assert_eq!(ma["annotations"].as_array().map(Vec::len), Some(750));
    for n in ["tcp", "unix"] {
        assert!(
            a == data(n),
            "{n}: the distributed data differ from the single-process data"
        );
        // The tags (SigMF annotations) too.
        assert_eq!(ma["annotations"], meta(n)["annotations"], "{n}");
    }
}

#[test]
fn a_failing_segment_ends_the_run_and_stops_the_others() {
    // c cannot write (/dev/full: every write fails with ENOSPC) while a's
    // counter alone would run for hours: the run must fail at once, name
    // c, and stop a and b.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fail.yaml");
    std::fs::write(
        &file,
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {name: dist-fail}
spec:
  blocks:
    src:  {kind: counter_source, params: {n: 1000000000000}, segment: a}
    pass: {kind: add_const, params: {type: u64, constant: 1}, segment: b}
    file: {kind: file_sink, params: {type: u64, path: /dev/full}, segment: c}
  connections:
    - [src.out, pass.in]
    - [pass.out, file.in]
"#,
    )
    .unwrap();
    let t0 = Instant::now();
    let out = Command::new(FM)
        .args(["run", "--distributed", "-q", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run must fail:\n{stderr}");
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
    assert!(stderr.contains("segments failed: c"), "{stderr}");
    assert!(
        stderr.contains("stopping segment `a`") && stderr.contains("stopping segment `b`"),
        "{stderr}"
    );
}
