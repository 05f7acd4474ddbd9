//! `flowmesh worker`'s lifecycle on this machine, without namespaces: its
//! exit codes (docs/worker.md, "Lifecycle") and SIGTERM as a planned
//! restart, within the grace period. The restart itself across three
//! workers is in `netns.rs` (the SIGTERM tests).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FM: &str = env!("CARGO_BIN_EXE_flowmesh");

/// An endless counter in segment `a`; into a file in `a` (`local`), or to
/// segment `b` over a network edge.
fn graph(dir: &Path, local: bool) -> std::path::PathBuf {
    let sink_seg = if local { "a" } else { "b" };
    let text = format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: life}}
spec:
  blocks:
    src:  {{kind: counter_source, params: {{n: 0}}, segment: a}}
    thr:  {{kind: throttle, params: {{type: u64, rate: 2e6, overflow: wait}}, segment: a}}
    file: {{kind: file_sink, params: {{type: u64, path: "{}"}}, segment: {sink_seg}}}
  connections:
    - [src.out, thr.in]
    - [thr.out, file.in]
"#,
        dir.join("out.u64").display()
    );
    let f = dir.join(format!("life-{sink_seg}.yaml"));
    std::fs::write(&f, text).unwrap();
    f
}

/// Starts `flowmesh worker FILE --segment a` on loopback; its stderr goes
/// to `dir/worker.log`.
fn worker(dir: &Path, file: &Path, extra: &[&str]) -> Child {
    Command::new(FM)
        .arg("worker")
        .arg(file)
        .args(["--segment", "a", "--listen", "127.0.0.1:0"])
        .args(["--control", "127.0.0.1:0", "--peer", "b=127.0.0.1:9"])
        .args(extra)
        .env("FLOWMESH_TOKEN", "t")
        .env("FLOWMESH_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("worker.log")).unwrap())
        .spawn()
        .expect("flowmesh starts")
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("worker.log")).unwrap_or_default()
}

/// Waits (polling) until the worker logged `what`; panics with its log if
/// it exits first.
fn wait_logged(dir: &Path, child: &mut Child, what: &str) {
    while !log(dir).contains(what) {
        if let Some(s) = child.try_wait().unwrap() {
            panic!(
                "the worker exited ({s}) before logging {what:?}:\n{}",
                log(dir)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM failed");
}

/// Waits for the child to exit (a generous bound against a hang, not a
/// speed check); returns its exit code.
fn exit_code(dir: &Path, child: &mut Child) -> Option<i32> {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the worker did not exit:\n{}", log(dir));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn nothing_started_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = graph(dir.path(), true);
    let cases: [(&str, Vec<&str>); 3] = [
        (
            "a missing file",
            vec!["worker", "/nonexistent/graph.yaml", "--segment", "a"],
        ),
        (
            "an unknown segment",
            vec!["worker", file.to_str().unwrap(), "--segment", "zz"],
        ),
        (
            "an address it cannot listen on",
            vec![
                "worker",
                file.to_str().unwrap(),
                "--segment",
                "a",
                "--listen",
                "192.0.2.1:1",
            ],
        ),
    ];
    for (what, args) in cases {
        let out = Command::new(FM)
            .args(&args)
            .args(["--control", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: exit 2 (nothing was started); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// SIGTERM to a segment that writes a file: it stops for a restart, the
/// file holds whole items only (flushed and synced), exit 143.
#[test]
fn sigterm_stops_for_a_restart_with_exit_143_and_whole_items() {
    let dir = tempfile::tempdir().unwrap();
    let file = graph(dir.path(), true);
    let mut child = worker(dir.path(), &file, &["--grace-period", "20"]);
    wait_logged(dir.path(), &mut child, "listening on");
    while std::fs::metadata(dir.path().join("out.u64")).map_or(0, |m| m.len()) < 80_000 {
        std::thread::sleep(Duration::from_millis(10));
    }
    sigterm(&child);
    assert_eq!(
        exit_code(dir.path(), &mut child),
        Some(143),
        "{}",
        log(dir.path())
    );
    let l = log(dir.path());
    assert!(
        l.contains("SIGTERM: stopping for a restart within 20 s"),
        "{l}"
    );
    assert!(l.contains("stopped for a restart in "), "{l}");
    assert!(
        !l.contains("grace period of"),
        "it stopped well within the grace:\n{l}"
    );
    let data = std::fs::read(dir.path().join("out.u64")).unwrap();
    assert_eq!(data.len() % 8, 0, "a torn item at the end");
    let first_wrong = data
        .chunks_exact(8)
        .enumerate()
        .position(|(i, c)| u64::from_ne_bytes(c.try_into().unwrap()) != i as u64);
    assert_eq!(first_wrong, None, "the counter in the file");
}

/// A producer whose consumer never comes holds its items for it until the
/// grace period ends, then the worker exits anyway (143, saying so).
#[test]
fn the_grace_period_bounds_a_stop_whose_consumer_is_away() {
    let dir = tempfile::tempdir().unwrap();
    let file = graph(dir.path(), false);
    let mut child = worker(dir.path(), &file, &["--grace-period", "1"]);
    wait_logged(dir.path(), &mut child, "listening on");
    // Once its edge holds items for the consumer that never comes.
    let l = log(dir.path());
    let url = l
        .split("control API on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("the control API's address")
        .to_string();
    loop {
        let out = Command::new(FM)
            .args(["status", "--worker", &url, "--json"])
            .env("FLOWMESH_TOKEN", "t")
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["backlogItems"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        if let Some(s) = child.try_wait().unwrap() {
            panic!("the worker exited ({s}):\n{}", log(dir.path()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    sigterm(&child);
    assert_eq!(
        exit_code(dir.path(), &mut child),
        Some(143),
        "{}",
        log(dir.path())
    );
    let l = log(dir.path());
    assert!(
        l.contains("serving the "),
        "the net_sink's planned stop:\n{l}"
    );
    assert!(
        l.contains("the grace period of 1 s is over and the segment has not stopped"),
        "{l}"
    );
}
