//! `flowmesh worker` preflight against real files and sockets: one run with
//! an unreadable input file, an unwritable output directory, a data port in
//! use and an unknown block kind reports all four, each with its path, exits
//! 2 and starts nothing; the same graph fixed passes `--preflight` (exit 0)
//! and still creates nothing.
//!
//! Unreadable and unwritable are real permissions: the input file is mode
//! 000 and the output directory mode 555. Root ignores both, so as root the
//! worker runs as uid/gid 65534 (`setpriv --reuid 65534 --regid 65534
//! --clear-groups`); as any other user it runs as that user. Root without
//! `setpriv` prints a skip notice and passes, unless `CI` is set.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_flowmesh");

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The command that runs the worker as a user permissions apply to, or
/// `None` (after printing why) when there is none.
fn worker_command() -> Option<Command> {
    if !is_root() {
        return Some(Command::new(BIN));
    }
    let has_setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_setpriv {
        let why = "running as root and `setpriv` (util-linux) is missing: root reads mode-000 \
                   files, so the worker must run as another user";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        BIN,
    ]);
    Some(c)
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A port nobody listens on (bound and released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn graph(dir: &Path, odd_kind: &str) -> String {
    format!(
        r#"apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: preflight}}
spec:
  blocks:
    src:  {{kind: file_source, params: {{type: f32, path: {d}/in.f32}}}}
    rec:  {{kind: file_sink, params: {{type: f32, path: {d}/ro/out.f32}}}}
    count: {{kind: counter_source, params: {{n: 1000}}}}
    keep: {{kind: file_sink, params: {{type: u64, path: {d}/rw/out.u64}}}}
    odd:  {{kind: {odd_kind}, params: {{type: u64}}}}
  connections:
    - [src.out, rec.in]
    - [count.out, keep.in]
"#,
        d = dir.display()
    )
}

struct Lab {
    dir: tempfile::TempDir,
    log: std::path::PathBuf,
}

/// The files of the test: an input file of mode 000, an output directory
/// of mode 555, a writable output directory, and a termination log.
fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    std::fs::write(dir.path().join("in.f32"), [0u8; 64]).unwrap();
    chmod(&dir.path().join("in.f32"), 0o000);
    std::fs::create_dir(dir.path().join("ro")).unwrap();
    chmod(&dir.path().join("ro"), 0o555);
    std::fs::create_dir(dir.path().join("rw")).unwrap();
    chmod(&dir.path().join("rw"), 0o777);
    let log = dir.path().join("termination-log");
    std::fs::write(&log, "").unwrap();
    chmod(&log, 0o666);
    Lab { dir, log }
}

fn run(mut c: Command, lab: &Lab, file: &Path, listen: &str, extra: &[&str]) -> Output {
    let control = format!("127.0.0.1:{}", free_port());
    c.arg("worker")
        .arg(file)
        .args(["--segment", "default", "--listen", listen])
        .args(["--control", &control])
        .args(extra)
        .env("FLOWMESH_TERMINATION_LOG", &lab.log)
        .env("FLOWMESH_TOKEN", "t")
        .output()
        .expect("the worker runs")
}

#[test]
fn one_run_reports_every_problem_with_its_path_and_starts_nothing() {
    let Some(cmd) = worker_command() else { return };
    let lab = lab();
    let d = lab.dir.path();
    let file = d.join("graph.yaml");
    std::fs::write(&file, graph(d, "no_such_kind")).unwrap();
    chmod(&file, 0o644);
    // The data port is held by this test.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();

    let out = run(cmd, &lab, &file, &listen, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    assert_eq!(problems.len(), 4, "{stderr}");
    let find = |path: &str| {
        problems
            .iter()
            .find(|l| l.starts_with(&format!("{path}: ")))
            .unwrap_or_else(|| panic!("no problem at {path} in:\n{stderr}"))
            .to_string()
    };
    let kind = find("spec.blocks.odd.kind");
    assert!(kind.contains("unknown block kind `no_such_kind`"), "{kind}");
    let input = find("spec.blocks.src.params.path");
    assert!(
        input.contains(&format!("`{}/in.f32`", d.display())) && input.contains("make it readable"),
        "{input}"
    );
    let output = find("spec.blocks.rec.params.path");
    assert!(
        output.contains(&format!("`{}/ro`", d.display())) && output.contains("make it writable"),
        "{output}"
    );
    let port = find(&format!("--listen {listen}"));
    assert!(port.contains("in use"), "{port}");
    assert!(stderr.contains("nothing was started"), "{stderr}");

    // Nothing started: no output file, nothing listening, the process gone.
    assert!(!d.join("rw/out.u64").exists(), "an output file was created");
    assert!(!d.join("ro/out.f32").exists());
    assert!(!stderr.contains("listening on"), "{stderr}");
    assert!(out.stdout.is_empty());
    // The probe files were removed again.
    let left: Vec<_> = std::fs::read_dir(d.join("rw")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // The termination message is the same report.
    let log = std::fs::read_to_string(&lab.log).unwrap();
    for p in &problems {
        assert!(log.contains(p), "{p} not in the termination log:\n{log}");
    }
    drop(held);
}

#[test]
fn a_clean_preflight_exits_0_and_creates_nothing() {
    let Some(cmd) = worker_command() else { return };
    let lab = lab();
    let d = lab.dir.path();
    chmod(&d.join("in.f32"), 0o644);
    chmod(&d.join("ro"), 0o777);
    let file = d.join("graph.yaml");
    // The unknown kind fixed: a null sink (left unconnected, so give it
    // something to consume).
    let text = graph(d, "null_sink").replace(
        "    - [count.out, keep.in]\n",
        "    - [count.out, keep.in]\n    - [count.out, odd.in]\n",
    );
    std::fs::write(&file, text).unwrap();
    chmod(&file, 0o644);
    let listen = format!("127.0.0.1:{}", free_port());
    let out = run(cmd, &lab, &file, &listen, &["--preflight"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("preflight passed"),
        "{out:?}"
    );
    assert!(!d.join("rw/out.u64").exists());
    assert!(!d.join("ro/out.f32").exists());
    assert_eq!(std::fs::read_to_string(&lab.log).unwrap(), "");
}
