//! Scalable segments under `flowmesh run --distributed` (docs/scaling.md):
//! real worker processes over real TCP on 127.0.0.1. A numbered message
//! source (`message_strobe` with `numbered`) in `detect`, a scalable
//! `analyze` segment whose replicas forward each message after some CPU
//! work (`message_relay`), and a JSON-lines sink in `store`. Under a steady
//! flow, replicas are killed (SIGKILL) or come and go (a replica started by
//! hand, then SIGTERM); the sink must hold every id from 1 to N exactly once.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FM: &str = env!("CARGO_BIN_EXE_flowmesh");

/// The graph: `count` messages, one every `period_ms`, `work_us` of work
/// each in `analyze`, which starts with `min` replicas.
fn graph(dir: &Path, count: u64, period_ms: f64, work_us: u64, min: u32) -> PathBuf {
    let f = dir.join("scale.yaml");
    let text = format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: scale}}
spec:
  blocks:
    src:  {{kind: message_strobe, params: {{period: {}, count: {count}, numbered: true, message: det}}, segment: detect}}
    work: {{kind: message_relay, params: {{work_us: {work_us}}}, segment: analyze}}
    sink: {{kind: jsonl_sink, params: {{path: "{}"}}, segment: store}}
  connections:
    - [src.out, work.in]
    - [work.out, sink.in]
  segments:
    analyze: {{scaling: {{min: {min}, max: 4}}}}
"#,
        period_ms / 1000.0,
        dir.join("events.jsonl").display()
    );
    std::fs::write(&f, text).unwrap();
    f
}

/// A running `flowmesh run --distributed` and what it printed on stderr.
struct Run {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Run {
    fn start(file: &Path) -> Run {
        let mut child = Command::new(FM)
            .args(["run", "--distributed"])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flowmesh starts");
        let log = Arc::new(Mutex::new(vec![]));
        let err = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Run { child, log }
    }

    fn text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The first line starting with `prefix`, waiting for it.
    fn line(&mut self, prefix: &str) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(l) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
            {
                return l.clone();
            }
            if let Some(s) = self.child.try_wait().unwrap() {
                panic!(
                    "the run ended ({s}) before printing {prefix:?}:\n{}",
                    self.text()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no {prefix:?} line:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The token and the control address of `name` (a segment or replica).
    fn control(&mut self, name: &str) -> (String, String) {
        let l = self.line("control APIs: ");
        let addr = l
            .split(", ")
            .find_map(|p| {
                p.trim_start_matches("control APIs: ")
                    .strip_prefix(&format!("{name} http://"))
            })
            .unwrap_or_else(|| panic!("no control API of {name} in {l:?}"))
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        let file = l
            .rsplit_once("--token-file ")
            .unwrap()
            .1
            .trim_end_matches(')');
        let token = std::fs::read_to_string(file).unwrap().trim().to_string();
        (token, addr)
    }

    /// Waits for the run to end (a generous bound against a hang);
    /// asserts it succeeded.
    fn finish(mut self) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                assert!(s.success(), "the run failed ({s}):\n{}", self.text());
                return self.text();
            }
            if t0.elapsed() > Duration::from_secs(240) {
                let _ = self.child.kill();
                panic!("the run did not end:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The worker processes of the run (its children), by the name they run
/// as (`--replica-name` for replicas, else the segment).
fn workers(run: &Run) -> Vec<(String, u32)> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(run.child.id()) {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let name = args
            .iter()
            .position(|a| a == "--replica-name")
            .or_else(|| args.iter().position(|a| a == "--segment"))
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_default();
        out.push((name, pid));
    }
    out
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid} failed");
}

/// GET `path` from a control API with the token; the JSON body.
fn get(addr: &str, token: &str, path: &str) -> serde_json::Value {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let body = r.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {r}"))
}

/// One edge of a /status answer, by role (`input`, `output`).
fn edge(status: &serde_json::Value, role: &str) -> serde_json::Value {
    status["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["role"] == role)
        .cloned()
        .unwrap_or_else(|| panic!("no {role} edge in {status}"))
}

/// Lines of the events file so far.
fn lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn wait_lines(dir: &Path, n: usize, run: &Run) {
    let t0 = Instant::now();
    while lines(dir) < n {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "fewer than {n} events after 60 s:\n{}",
            run.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The events file holds every id from 1 to `n` exactly once.
fn assert_exactly_once(dir: &Path, n: u64) {
    let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let mut ids: Vec<u64> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["id"].as_u64().unwrap_or_else(|| panic!("no id in {l}"))
        })
        .collect();
    let total = ids.len();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    let duplicates = before - ids.len();
    let missing: Vec<u64> = (1..=n).filter(|i| ids.binary_search(i).is_err()).collect();
    assert_eq!(duplicates, 0, "{duplicates} duplicate events");
    assert!(
        missing.is_empty(),
        "{} ids missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(total as u64, n, "the sink's count equals the detector's");
    assert_eq!(ids, (1..=n).collect::<Vec<_>>());
}

#[test]
fn sigkill_of_one_of_two_replicas_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Each replica busy about 75% of the time: the one killed holds
    // messages, which must go to the other.
    let n = 4000;
    let file = graph(dir.path(), n, 1.0, 1500, 2);
    let mut run = Run::start(&file);
    let (token, detect) = run.control("detect");
    wait_lines(dir.path(), 300, &run);
    // Both replicas take part before one dies.
    let producer = edge(&get(&detect, &token, "/status"), "output");
    assert_eq!(producer["replicas"], 2, "{producer}");
    for r in ["analyze#0", "analyze#1"] {
        let (_, a) = run.control(r);
        let s = get(&a, &token, "/status");
        assert_eq!(s["segment"], r);
        let input = edge(&s, "input");
        assert!(input["items"].as_u64().unwrap() > 0, "{r}: {input}");
    }
    let victim = workers(&run)
        .into_iter()
        .find(|(name, _)| name == "analyze#1")
        .expect("replica analyze#1 runs")
        .1;
    signal(victim, "-KILL");
    let at_kill = lines(dir.path());
    assert!(at_kill < n as usize, "the flow was over before the kill");
    let log = run.finish();
    assert!(
        log.contains("replica analyze#1 ended"),
        "the run noticed the replica's death:\n{log}"
    );
    let redelivered: u64 = log
        .lines()
        .filter_map(|l| l.split("; ").nth(1)?.split(" message(s) it held").next())
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum();
    assert!(
        redelivered > 0,
        "the killed replica held messages that went to the other:\n{log}"
    );
    assert_exactly_once(dir.path(), n);
}

#[test]
fn one_to_two_to_one_replicas_ten_times_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = 15_000;
    let file = graph(dir.path(), n, 2.0, 200, 1);
    let mut run = Run::start(&file);
    let (token, detect) = run.control("detect");
    // How to add a replica, as the run prints it.
    let add = run.line("add a replica of `analyze`: ");
    let peers: Vec<String> = add
        .split_whitespace()
        .skip_while(|w| *w != "--peer")
        .filter(|w| *w != "--peer")
        .map(str::to_string)
        .collect();
    assert_eq!(peers.len(), 2, "{add}");
    wait_lines(dir.path(), 100, &run);
    for cycle in 0..10 {
        let log = dir.path().join(format!("extra-{cycle}.log"));
        let mut c = Command::new(FM);
        c.arg("worker")
            .arg(&file)
            .args(["--segment", "analyze", "--listen", "127.0.0.1:0"])
            .args(["--control", "127.0.0.1:0"])
            .args(["--replica-name", &format!("analyze#extra{cycle}")])
            .env("FLOWMESH_TOKEN", &token)
            .env("FLOWMESH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for p in &peers {
            c.args(["--peer", p]);
        }
        let mut extra = c.spawn().expect("flowmesh starts");
        // Its control API, from its log line.
        let t0 = Instant::now();
        let addr = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(a) = text
                .split("control API on http://")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
            {
                break a.to_string();
            }
            if let Some(s) = extra.try_wait().unwrap() {
                panic!("replica {cycle} exited ({s}):\n{text}");
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "{text}");
            std::thread::sleep(Duration::from_millis(20));
        };
        // 1 → 2: the new replica takes messages while the first still runs.
        let t0 = Instant::now();
        loop {
            let input = edge(&get(&addr, &token, "/status"), "input");
            if input["items"].as_u64().unwrap() >= 20 {
                break;
            }
            assert!(
                lines(dir.path()) < n as usize,
                "cycle {cycle}: the flow ended before the extra replica took part; \
                 the test needs a longer flow"
            );
            assert!(t0.elapsed() < Duration::from_secs(60), "{input}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let producer = edge(&get(&detect, &token, "/status"), "output");
        assert_eq!(producer["replicas"], 2, "cycle {cycle}: {producer}");
        // 2 → 1: the new replica leaves on SIGTERM.
        signal(extra.id(), "-TERM");
        let t0 = Instant::now();
        while extra.try_wait().unwrap().is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the replica did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("left the producer"),
            "cycle {cycle}: the replica sent LEAVE and handed back what it held:\n{text}"
        );
    }
    assert!(
        lines(dir.path()) < n as usize,
        "the flow ended during the cycles; the test needs a longer flow"
    );
    run.finish();
    assert_exactly_once(dir.path(), n);
}
