//! Live parameter changes survive a restart: a change made through the
//! control API at item X is recorded in the state directory, the consumer
//! segment is killed (SIGKILL: it runs in a child process, this test binary
//! run again) after X, loses the tail of its output file, and is restarted
//! with `--resume` from before X, from a spec that already holds the new
//! value (as a FlowGraph resource does after the edit). Its output equals an
//! uninterrupted run with the change at X, item for item.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowmesh_model::status::WorkerStatus;
use flowmesh_model::validate::validate_text;
use flowmesh_model::FlowGraphDocument;
use flowmesh_worker::control::{Control, Options};
use flowmesh_worker::{client, param_log, start_segment, Config};

const N: u64 = 400_000;
const TOKEN: &str = "replay-secret";

/// `a`: a counter, throttled, sent to `b`; `b`: × `constant` into an
/// `append` file.
fn yaml(out: &Path, constant: u64) -> String {
    format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: replay}}
spec:
  blocks:
    src:  {{kind: counter_source, params: {{n: {N}}}, segment: a}}
    thr:  {{kind: throttle, params: {{type: u64, rate: 400000}}, segment: a}}
    mul:  {{kind: multiply_const, params: {{type: u64, constant: {constant}}}, segment: b}}
    file: {{kind: file_sink, params: {{type: u64, path: {out}, mode: append}}, segment: b}}
  connections:
    - [src.out, thr.in]
    - [thr.out, mul.in]
    - [mul.out, file.in]
"#,
        out = out.display()
    )
}

fn doc(text: &str) -> FlowGraphDocument {
    let (doc, report) = validate_text(text);
    assert!(report.is_ok(), "{report:?}");
    doc.expect("parsed")
}

fn config(segment: &str, peers: BTreeMap<String, String>, state: &Path, resume: bool) -> Config {
    Config {
        segment: segment.into(),
        listen: "127.0.0.1:0".into(),
        peers,
        token: "edge".into(),
        generation: 0,
        resume,
        threads: Some(1),
        state_dir: Some(state.to_path_buf()),
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(30), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn items(path: &Path) -> Vec<u64> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Set in the child process: the producer's address; the directory.
const CHILD_PEER: &str = "FM_REPLAY_CHILD_PEER";
const CHILD_DIR: &str = "FM_REPLAY_CHILD_DIR";

/// The child: segment `b` with its control API, until it is killed.
fn child(peer: String, dir: PathBuf) -> ! {
    let v1 = doc(&yaml(&dir.join("out.u64"), 1));
    let peers = BTreeMap::from([("a".to_string(), peer)]);
    let b = start_segment(&v1, &config("b", peers, &dir.join("state-b"), false)).expect("consumer");
    let control = Control::start(
        &b,
        &v1,
        Options {
            addr: "127.0.0.1:0".into(),
            token: Some(TOKEN.into()),
            ..Default::default()
        },
    )
    .expect("control API");
    println!("CONTROL {}", control.addr());
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn call(addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> (u16, serde_json::Value) {
    let r = client::request(
        method,
        &format!("http://{addr}{path}"),
        Some(TOKEN),
        body,
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let v = serde_json::from_slice(&r.body).unwrap_or_else(|_| serde_json::json!(r.text()));
    (r.status, v)
}

/// Items `mul` has produced in the child.
fn mul_out(addr: &str) -> u64 {
    let (s, v) = call(addr, "GET", "/status", None);
    assert_eq!(s, 200, "{v}");
    let st: WorkerStatus = serde_json::from_value(v).unwrap();
    st.blocks["mul"].items_out
}

#[test]
fn a_resumed_segment_replays_a_live_change_at_its_offset() {
    if let (Ok(peer), Ok(dir)) = (std::env::var(CHILD_PEER), std::env::var(CHILD_DIR)) {
        child(peer, dir.into());
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.u64");
    let state = dir.path().join("state-b");
    let v1 = doc(&yaml(&out, 1));

    let producer = start_segment(
        &v1,
        &config("a", BTreeMap::new(), &dir.path().join("state-a"), false),
    )
    .expect("producer");
    let peers = BTreeMap::from([("a".to_string(), producer.listening.clone())]);
    let mut kid = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_resumed_segment_replays_a_live_change_at_its_offset",
            "--nocapture",
        ])
        .env(CHILD_PEER, &producer.listening)
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the child runs");
    let mut lines = std::io::BufReader::new(kid.stdout.take().unwrap()).lines();
    let ctl = loop {
        let line = lines
            .next()
            .expect("the child prints its control address")
            .unwrap();
        if let Some(a) = line.strip_prefix("CONTROL ") {
            break a.to_string();
        }
    };
    wait_until("items flow", || mul_out(&ctl) > 50_000);

    // The live change: ×3 from the offset the worker reports.
    let (status, answer) = call(&ctl, "PUT", "/params/mul/constant", Some(b"3"));
    assert_eq!(status, 200, "{answer}");
    let x = answer["offset"].as_u64().expect("an offset");
    assert!((50_000..N).contains(&x), "{answer}");
    assert_eq!(
        param_log::load(&state).unwrap(),
        vec![param_log::Change {
            block: "mul".into(),
            param: "constant".into(),
            // As a FlowGraph file writes the value (the parameter is complex).
            old: serde_json::json!("1+0j"),
            new: serde_json::json!("3+0j"),
            offset: x,
        }]
    );

    // Killed once its file holds items past X (it writes through a 1 MiB
    // buffer); the file then loses its tail back to before X (what a kill
    // can do to writes not yet on disk), so the restart replays items from
    // before the change.
    wait_until("the file holds the change", || {
        std::fs::metadata(&out).map_or(0, |m| m.len() / 8) > x
    });
    kid.kill().unwrap();
    kid.wait().unwrap();
    let held = items(&out).len() as u64;
    assert!(
        held > x,
        "the file holds {held} items, the change was at {x}"
    );
    let y = x - 30_000;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&out)
        .unwrap()
        .set_len(y * 8)
        .unwrap();

    // Restarted from a spec that holds the new value, like the resource.
    let v2 = doc(&yaml(&out, 3));
    let b = start_segment(&v2, &config("b", peers, &state, true)).expect("resumed consumer");
    assert_eq!(
        b.param_log.base("mul"),
        y,
        "it resumes from before the change"
    );
    b.running.wait().expect("the resumed consumer ends");
    producer.running.wait().expect("the producer ends");

    let got = items(&out);
    assert_eq!(got.len() as u64, N);
    for (i, v) in got.iter().enumerate() {
        let i = i as u64;
        let want = if i < x { i } else { 3 * i };
        assert_eq!(*v, want, "item {i} (change at {x}, resumed at {y})");
    }
}
