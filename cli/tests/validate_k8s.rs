//! `flowmesh validate` checks the segments' Kubernetes settings (which
//! `flowmesh run` ignores), and `flowmesh crd` prints the committed CRD.

use std::process::Command;

const FM: &str = env!("CARGO_BIN_EXE_flowmesh");

fn graph(kubernetes: &str) -> String {
    format!(
        "apiVersion: flowmesh.dev/v1alpha1\nkind: FlowGraph\nmetadata: {{name: k}}\nspec:\n\
         \x20 blocks:\n    src: {{kind: signal_source, params: {{type: f32, samp_rate: 1e6}}, segment: radio}}\n\
         \x20   head: {{kind: head, params: {{type: f32, n: 1000}}, segment: radio}}\n\
         \x20   sink: {{kind: null_sink, params: {{type: f32}}, segment: radio}}\n\
         \x20 connections:\n    - [src.out, head.in]\n    - [head.out, sink.in]\n\
         \x20 segments:\n    radio:\n      kubernetes: {kubernetes}\n"
    )
}

#[test]
fn validate_reports_kubernetes_settings_and_run_ignores_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.yaml");
    std::fs::write(
        &file,
        graph("{hostNetwrok: true, storage: {size: 10GB}, tolerations: [{key: a, efect: NoSchedule}]}"),
    )
    .unwrap();
    let out = Command::new(FM)
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for line in [
        "(3 problems)",
        "spec.segments.radio.kubernetes.tolerations[0].efect: unknown field `efect`",
        "hint: `kubectl explain pod.spec.tolerations` lists its fields",
        "spec.segments.radio.kubernetes.storage.size: `10GB` is not a quantity",
        "spec.segments.radio.kubernetes.hostNetwrok: unknown field `hostNetwrok`",
        "hint: did you mean `hostNetwork`?",
    ] {
        assert!(err.contains(line), "missing `{line}` in:\n{err}");
    }
    // The same file runs: `flowmesh run` does not read `kubernetes`.
    let out = Command::new(FM)
        .args(["run", "--quiet"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(&file, graph("{hostNetwork: true, storage: {size: 10Gi}}")).unwrap();
    let out = Command::new(FM)
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn crd_prints_the_committed_file() {
    let out = Command::new(FM).arg("crd").output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/flowgraph.yaml"
    ))
    .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        committed,
        "crds/flowgraph.yaml is stale: cargo run -p flowmesh -- crd > crds/flowgraph.yaml"
    );
}
