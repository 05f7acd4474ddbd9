//! The `flowmesh` command on top of a worker's control API: `worker
//! --control/--token-file`, `status`, `get`, `set`, `post` and `probe`
//! against a real worker process on 127.0.0.1, and `run --distributed`
//! printing each worker's control address.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use flowmesh_model::status::{WorkerState, WorkerStatus};

const FM: &str = env!("CARGO_BIN_EXE_flowmesh");

const ENDLESS: &str = r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {name: cli-ctl}
spec:
  blocks:
    src:  {kind: signal_source, params: {type: f32, samp_rate: 1e6, frequency: 1e3}}
    thr:  {kind: throttle, params: {type: f32, rate: 1e6}}
    gain: {kind: multiply_const, params: {type: f32, constant: 1.5}}
    sink: {kind: null_sink, params: {type: f32}}
  connections:
    - [src.out, thr.in]
    - [thr.out, gain.in]
    - [gain.out, sink.in]
"#;

/// A worker process, killed when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `flowmesh worker` with a token file; returns it and its control URL.
fn worker(dir: &std::path::Path) -> (Worker, String, String) {
    let file = dir.join("g.yaml");
    std::fs::write(&file, ENDLESS).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "cli-secret\n").unwrap();
    let mut child = Command::new(FM)
        .arg("worker")
        .arg(&file)
        .args(["--segment", "default", "--listen", "127.0.0.1:0"])
        .args(["--control", "127.0.0.1:0", "--quiet"])
        .arg("--token-file")
        .arg(&token)
        .env_remove("FLOWMESH_TOKEN")
        .stderr(Stdio::piped())
        .spawn()
        .expect("flowmesh worker starts");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let url = line
        .split("control API on ")
        .nth(1)
        .unwrap_or_else(|| panic!("no control address in {line:?}"))
        .trim()
        .to_string();
    // Keep reading its stderr so the worker never blocks on it.
    std::thread::spawn(move || for _ in err.lines() {});
    (Worker(child), url, token.display().to_string())
}

fn fm(args: &[&str]) -> Output {
    Command::new(FM)
        .args(args)
        .env_remove("FLOWMESH_TOKEN")
        .output()
        .expect("flowmesh runs")
}

fn ok(args: &[&str]) -> String {
    let o = fm(args);
    assert!(
        o.status.success(),
        "flowmesh {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let o = fm(args);
    assert!(!o.status.success(), "flowmesh {args:?} succeeded");
    String::from_utf8(o.stderr).unwrap()
}

#[test]
fn status_get_set_post_and_probe_against_a_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (_w, url, token) = worker(dir.path());

    // probe: exit 0 on 2xx, else one line with the reason.
    ok(&["probe", &format!("{url}/healthz")]);
    ok(&["probe", &format!("{url}/readyz")]);
    let e = fails(&["probe", &format!("{url}/nope")]);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("404") && e.contains("no such endpoint"), "{e}");
    let e = fails(&["probe", "--timeout", "2", "http://127.0.0.1:1/healthz"]);
    assert!(e.contains("cannot connect"), "{e}");

    // get/set with the token file; refusals carry the catalog's hint.
    let w = ["--worker", url.as_str(), "--token-file", token.as_str()];
    let got = ok(&[&["get"][..], &w, &["gain", "constant"]].concat());
    assert_eq!(got.trim(), "gain.constant = \"1.5+0j\" (from offset 0)");
    let set = ok(&[&["set"][..], &w, &["gain", "constant", "-0.25"]].concat());
    assert!(
        set.starts_with("gain.constant = \"-0.25+0j\" from offset "),
        "{set}"
    );
    let e = fails(&[&["set"][..], &w, &["gain", "constnt", "2"]].concat());
    assert!(
        e.contains("blocks.gain.params.constnt: unknown parameter"),
        "{e}"
    );
    assert!(e.contains("did you mean `constant`?"), "{e}");
    let e = fails(&[&["set"][..], &w, &["thr", "rate", "fast"]].concat());
    assert!(
        e.contains("expected a number, got a string \"fast\""),
        "{e}"
    );
    // Without the token: refused.
    let e = fails(&["set", "--worker", &url, "gain", "constant", "3"]);
    assert!(e.contains("missing_token"), "{e}");
    let got = ok(&[&["get"][..], &w, &["gain", "constant"]].concat());
    assert!(got.starts_with("gain.constant = \"-0.25+0j\""), "{got}");

    // post: a cmd message sets a parameter.
    let posted = ok(&[&["post"][..], &w, &["thr", "cmd", r#"{"rate": 2e6}"#]].concat());
    assert!(posted.contains("\"value\":2000000.0"), "{posted}");

    // status, for a person and as JSON.
    let human = ok(&[&["status"][..], &w].concat());
    assert!(
        human.starts_with("segment default of cli-ctl (generation 0): running"),
        "{human}"
    );
    assert!(human.contains("gain.constant = \"-0.25+0j\""), "{human}");
    let json = ok(&[&["status"][..], &w, &["--json"]].concat());
    let s: WorkerStatus = serde_json::from_str(&json).unwrap();
    assert_eq!(s.state, WorkerState::Running);
    assert_eq!(s.params["thr"]["rate"].value, serde_json::json!(2e6));
}

#[test]
fn a_distributed_run_prints_each_workers_control_api() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.yaml");
    std::fs::write(
        &file,
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {name: dist-ctl}
spec:
  blocks:
    src:  {kind: signal_source, params: {type: f32, samp_rate: 1e6, frequency: 1e3}, segment: a}
    head: {kind: head, params: {type: f32, n: 100000}, segment: a}
    sink: {kind: null_sink, params: {type: f32}, segment: b}
  connections:
    - [src.out, head.in]
    - [head.out, sink.in]
"#,
    )
    .unwrap();
    let o = Command::new(FM)
        .args(["run", "--distributed"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("control APIs: "))
        .unwrap_or_else(|| panic!("no control line in {err}"));
    assert!(
        line.contains("a http://127.0.0.1:") && line.contains("b http://127.0.0.1:"),
        "{line}"
    );
    assert!(line.contains("--token-file "), "{line}");
}
