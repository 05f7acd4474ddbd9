//! Docker Compose projects written by `flowmesh compose`, run with the
//! `docker-compose` installed here on the image `scripts/image` builds from
//! the binary under test: three segments in three containers, and the faults
//! a deployment meets (a worker killed, a network cut, a paused consumer, a
//! live parameter change, the project taken down and up again).
//!
//! One graph (fixtures/compose-chain.yaml) carries two streams through all
//! three segments: a paced counter checked by `stream_checker` (its file
//! must hold 0..N, or show every loss as one exact `gap` tag), and a
//! deterministic DSP chain whose SigMF file is compared byte for byte with
//! the single-process `flowmesh run` of the same graph.
//!
//! Needs a Docker daemon and `docker-compose`. Without a daemon each test
//! prints `SKIPPED: …` and passes, unless `CI` is set: then it fails. Every
//! test has its own Compose project, removed with its volumes and image
//! when the test ends, also when it fails. The tests run one at a time
//! (their faults are timed against paced streams; 2 cores are shared).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_flowmesh");
/// Counter items and their pace: 6 s of stream.
const N: u64 = 300_000;
const RATE: u64 = 50_000;
/// DSP items (f32, before decimation by 3) and their pace: 6 s of stream.
const M: u64 = 600_000;
const DSP_RATE: u64 = 100_000;
/// The counter for the tests whose fault must outlast every buffer: 10 s
/// of stream.
const BIG_N: u64 = 2_000_000;
const BIG_RATE: u64 = 200_000;
/// Each producer's retention per edge.
const RETENTION: u64 = 1 << 20;

static SERIAL: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cmd(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let o = cmd(program, args);
    assert!(
        o.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The lock that serializes the tests, or `None` (after printing why) when
/// no Docker daemon answers and CI is not set.
fn prepare(test: &str) -> Option<MutexGuard<'static, ()>> {
    let answers = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !answers {
        let msg = format!("{test}: no Docker daemon answers (`docker info` failed)");
        if std::env::var_os("CI").is_some() {
            panic!("{msg}; CI is set, so this is a failure, not a skip");
        }
        eprintln!("SKIPPED: {msg} (with CI set this fails)");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// A test's Compose project: image, project directory, containers, network
/// and volumes; all removed on drop.
struct Project {
    name: String,
    tag: String,
    dir: tempfile::TempDir,
    graph: PathBuf,
    /// Counter items.
    n: u64,
}

impl Project {
    /// Builds the image and writes the project for the fixture with the
    /// test's values (files under /data, the segments' volumes).
    fn new(test: &str, n: u64, rate: u64) -> Project {
        let name = format!("fmc{}{}", std::process::id(), test.replace('_', ""));
        let name: String = name.chars().take(40).collect();
        let tag = format!("flowmesh-compose-test:{name}");
        ok(
            repo().join("scripts/image").to_str().unwrap(),
            &["--binary", BIN, "--tag", &tag],
        );
        let dir = tempfile::tempdir().unwrap();
        let graph = dir.path().join("graph.yaml");
        render(&graph, "/data", n, rate, DSP_RATE);
        let p = Project {
            name,
            tag,
            graph,
            dir,
            n,
        };
        let o = p.flowmesh(&["compose"]);
        eprintln!("{test}: project {} in {}", p.name, p.dir().display());
        assert!(
            o.contains("wrote"),
            "flowmesh compose should say what it wrote: {o}"
        );
        p
    }

    fn dir(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    /// `flowmesh compose graph -o DIR --image TAG --project NAME ARGS`;
    /// stderr and stdout.
    fn flowmesh(&self, args: &[&str]) -> String {
        let dir = self.dir();
        let mut a = vec![args[0], self.graph.to_str().unwrap()];
        a.extend([
            "-o",
            dir.to_str().unwrap(),
            "--image",
            &self.tag,
            "--project",
            &self.name,
            "--stop-grace-period",
            "20",
        ]);
        a.extend(&args[1..]);
        let o = cmd(BIN, &a);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "flowmesh {}: {text}", a.join(" "));
        text
    }

    fn up(&self) {
        self.flowmesh(&["compose", "--up"]);
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.name)
    }

    fn volume(&self, v: &str) -> PathBuf {
        PathBuf::from(ok(
            "docker",
            &[
                "volume",
                "inspect",
                "-f",
                "{{.Mountpoint}}",
                &format!("{}_{v}", self.name),
            ],
        ))
    }

    fn inspect(&self, service: &str, format: &str) -> String {
        ok(
            "docker",
            &["inspect", "-f", format, &self.container(service)],
        )
    }

    fn logs(&self, service: &str) -> String {
        let o = cmd("docker", &["logs", &self.container(service)]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    fn all_logs(&self) -> String {
        ["a", "b", "c"]
            .iter()
            .map(|s| {
                let l = self.logs(s);
                let tail: Vec<&str> = l.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {s}\n{}\n", tail.join("\n"))
            })
            .collect()
    }

    /// Waits until every container has exited 0 (and stays so: no restart
    /// pending); fails with the logs otherwise.
    fn expect_success(&self, limit: Duration) {
        let t0 = Instant::now();
        loop {
            let states: Vec<String> = ["a", "b", "c"]
                .iter()
                .map(|s| self.inspect(s, "{{.State.Status}} {{.State.ExitCode}}"))
                .collect();
            if states.iter().all(|s| s == "exited 0") {
                return;
            }
            if t0.elapsed() > limit {
                panic!(
                    "the segments did not all succeed within {limit:?}: {states:?}\n{}",
                    self.all_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until `service`'s worker says it is ready (the health check's
    /// target), e.g. before a fault.
    fn wait_ready(&self, service: &str) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            let o = cmd(
                "docker",
                &[
                    "exec",
                    &self.container(service),
                    "flowmesh",
                    "probe",
                    "http://127.0.0.1:9400/readyz",
                ],
            );
            if o.status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{service} never became ready\n{}", self.all_logs());
    }

    /// Items in c's counter file so far.
    fn counted(&self) -> u64 {
        std::fs::metadata(self.volume("c-data").join("count.u64")).map_or(0, |m| m.len() / 8)
    }

    /// Waits until c's counter file holds `items` items.
    fn wait_counted(&self, items: u64) {
        let t0 = Instant::now();
        while self.counted() < items {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "c's file never reached {items} items\n{}",
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn token_file(&self) -> PathBuf {
        self.dir().join("flowmesh.env")
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let dir = self.dir();
        let _ = Command::new("docker-compose")
            .arg("--project-directory")
            .arg(&dir)
            .arg("-f")
            .arg(dir.join("docker-compose.yml"))
            .args(["down", "--volumes", "--remove-orphans", "-t", "1"])
            .output();
        let _ = cmd("docker", &["rmi", "-f", &self.tag]);
    }
}

/// The fixture with the test's values, its files under `dir`.
fn render(to: &Path, dir: &str, n: u64, rate: u64, dsp_rate: u64) {
    let mut text =
        std::fs::read_to_string(repo().join("cli/tests/fixtures/compose-chain.yaml")).unwrap();
    for (k, v) in [
        ("N", n.to_string()),
        ("RATE", rate.to_string()),
        ("M", M.to_string()),
        ("DSP_RATE", dsp_rate.to_string()),
        ("RETENTION", RETENTION.to_string()),
        ("DIR", dir.to_string()),
    ] {
        text = text.replace(&format!("{{{{{k}}}}}"), &v);
    }
    std::fs::write(to, text).unwrap();
}

/// The single-process run of the same graph (unpaced: pacing does not
/// change the data): its DSP data file and annotations.
fn reference(p: &Project) -> (Vec<u8>, Vec<Value>) {
    let dir = p.dir.path().join("ref");
    std::fs::create_dir_all(&dir).unwrap();
    let graph = dir.join("graph.yaml");
    render(
        &graph,
        dir.to_str().unwrap(),
        p.n,
        1_000_000_000,
        1_000_000_000,
    );
    ok(BIN, &["run", "-q", graph.to_str().unwrap()]);
    (
        std::fs::read(dir.join("dsp.sigmf-data")).unwrap(),
        annotations(&dir.join("dsp.sigmf-meta")),
    )
}

fn annotations(meta: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(meta).unwrap()).unwrap();
    v["annotations"].as_array().cloned().unwrap_or_default()
}

fn read_u64s(p: &Path) -> Vec<u64> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// `tag_debug` lines `tag_debug: offset O key K value V` → (O, K, V as JSON).
fn printed_tags(log: &str) -> Vec<(u64, String, Value)> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("tag_debug: offset ")? + "tag_debug: offset ".len()..];
            let (off, rest) = rest.split_once(" key ")?;
            let (key, val) = rest.split_once(" value ")?;
            Some((
                off.parse().ok()?,
                key.to_string(),
                serde_json::from_str(val).unwrap_or(Value::String(val.into())),
            ))
        })
        .collect()
}

/// c's files against the fault-free run: the counter file holds 0..N with
/// no gap tag, the DSP file and its annotations equal the single-process
/// run's.
fn assert_fault_free(p: &Project) {
    let data = p.volume("c-data");
    let v = read_u64s(&data.join("count.u64"));
    let wrong = v.iter().enumerate().find(|(i, x)| *i as u64 != **x);
    assert!(
        v.len() as u64 == p.n && wrong.is_none(),
        "the counter file should hold 0..{}: {} items, first wrong at {wrong:?}\n{}",
        p.n,
        v.len(),
        p.all_logs()
    );
    let gaps = printed_tags(&p.logs("c"));
    assert!(gaps.is_empty(), "c saw gap tags: {gaps:?}");
    let (want, want_a) = reference(p);
    let got = std::fs::read(data.join("dsp.sigmf-data")).unwrap();
    assert_eq!(
        got.len(),
        want.len(),
        "DSP file length (f32 items after /3)"
    );
    assert!(
        got == want,
        "the DSP file differs from the single-process run"
    );
    assert!(!want_a.is_empty());
    assert_eq!(
        annotations(&data.join("dsp.sigmf-meta")),
        want_a,
        "the DSP annotations differ from the single-process run"
    );
}

/// The counter file shows its loss as exactly one `gap` tag with the exact
/// count: values increase strictly and the missing values are one run,
/// inside the file (the tag on the first item after it) or at its end (the
/// tag on the end of the stream, `tag_debug`'s offset one past the last
/// item). Returns the count.
fn assert_one_exact_gap(p: &Project) -> u64 {
    let v = read_u64s(&p.volume("c-data").join("count.u64"));
    assert!(
        v.windows(2).all(|w| w[0] < w[1]),
        "values must increase strictly (no repeat, no reordering)"
    );
    let mut runs: Vec<(usize, u64, u64)> = v
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[1] != w[0] + 1)
        .map(|(i, w)| (i + 1, w[0] + 1, w[1] - w[0] - 1))
        .collect();
    if v.first() != Some(&0) {
        runs.insert(0, (0, 0, v.first().copied().unwrap_or(p.n)));
    }
    let last = v.last().copied();
    if last != Some(p.n - 1) {
        let first = last.map_or(0, |l| l + 1);
        runs.push((v.len(), first, p.n - first));
    }
    let tags = printed_tags(&p.logs("c"));
    assert_eq!(
        runs.len(),
        1,
        "one run of lost items expected: (index, first, count) {runs:?}, gap tags {tags:?}"
    );
    let (i, first, count) = runs[0];
    assert_eq!(tags.len(), 1, "exactly one gap tag: {tags:?}");
    let (offset, key, value) = &tags[0];
    assert_eq!(key, "gap");
    assert_eq!(
        *offset, i as u64,
        "the gap tag is on the first item after the loss"
    );
    assert_eq!(value["count"].as_u64(), Some(count), "gap count: {value}");
    assert_eq!(value["first"].as_u64(), Some(first), "gap first: {value}");
    assert_eq!(value["cause"], "overflow", "gap cause: {value}");
    count
}

#[test]
fn three_segments_in_three_containers_equal_the_single_process_run() {
    let test = "three_segments_in_three_containers";
    let Some(_lock) = prepare(test) else { return };
    let p = Project::new("run", N, RATE);
    p.up();
    p.wait_ready("b");
    // The status of every segment through the published control ports.
    let status = cmd(BIN, &["status", "--compose", p.dir().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(
        text.contains("== service b") && text.contains("segment b of compose-chain"),
        "{text}"
    );
    p.expect_success(Duration::from_secs(90));
    for s in ["b", "c"] {
        assert!(
            p.logs(s).contains(&format!(
                "stream_checker: {N} items = {N} delivered + 0 lost"
            )),
            "{s}'s checker: {}",
            p.logs(s)
        );
    }
    assert_fault_free(&p);
}

#[test]
fn middle_worker_sigkilled_is_restarted_and_the_output_is_fault_free() {
    let Some(_lock) = prepare("middle_worker_sigkilled") else {
        return;
    };
    let p = Project::new("kill", N, RATE);
    p.up();
    p.wait_counted(N / 3);
    let pid = p.inspect("b", "{{.State.Pid}}");
    ok("kill", &["-9", &pid]);
    eprintln!("killed b's worker (pid {pid}) at {} items", p.counted());
    p.expect_success(Duration::from_secs(90));
    let restarts: u32 = p.inspect("b", "{{.RestartCount}}").parse().unwrap();
    assert_eq!(restarts, 1, "b restarted once by its policy");
    assert_fault_free(&p);
}

#[test]
fn network_cut_of_five_seconds_loses_nothing() {
    let Some(_lock) = prepare("network_cut_of_five_seconds") else {
        return;
    };
    // Slow enough that 5 s fit in the producer's buffers: 5 s of 10k u64
    // items/s is 400 kB, under the 1 MiB retention.
    let p = Project::new("cut", N, 20_000);
    p.up();
    p.wait_counted(20_000);
    let net = format!("{}_flowmesh", p.name);
    ok(
        "docker",
        &["network", "disconnect", &net, &p.container("b")],
    );
    std::thread::sleep(Duration::from_secs(5));
    ok(
        "docker",
        &[
            "network",
            "connect",
            "--alias",
            "b",
            &net,
            &p.container("b"),
        ],
    );
    p.expect_success(Duration::from_secs(90));
    assert_fault_free(&p);
}

#[test]
fn network_cut_longer_than_retention_is_one_exact_gap() {
    let Some(_lock) = prepare("network_cut_longer_than_retention") else {
        return;
    };
    // 6 s of 200k u64 items/s is 9.6 MB: more than the 1 MiB retention,
    // the blocks' buffers and the kernel's socket buffers together.
    let p = Project::new("longcut", BIG_N, BIG_RATE);
    p.up();
    p.wait_counted(BIG_RATE);
    let net = format!("{}_flowmesh", p.name);
    ok(
        "docker",
        &["network", "disconnect", &net, &p.container("b")],
    );
    std::thread::sleep(Duration::from_secs(6));
    ok(
        "docker",
        &[
            "network",
            "connect",
            "--alias",
            "b",
            &net,
            &p.container("b"),
        ],
    );
    p.expect_success(Duration::from_secs(90));
    let lost = assert_one_exact_gap(&p);
    eprintln!("lost {lost} items in one gap");
    assert!(
        p.logs("c").contains(&format!("{lost} lost")),
        "c's checker counts the gap: {}",
        p.logs("c")
    );
}

/// Memory of a container from its cgroup, in bytes: v2 `memory.current`
/// or v1 `memory.usage_in_bytes` of the cgroup its worker's
/// `/proc/PID/cgroup` names, else what `docker stats` reads from it.
fn memory(p: &Project, service: &str) -> u64 {
    let pid = p.inspect(service, "{{.State.Pid}}");
    if let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
        for l in cg.lines() {
            let f = if let Some(path) = l.strip_prefix("0::") {
                format!("/sys/fs/cgroup{path}/memory.current")
            } else if let Some((_, path)) = l.split_once(":memory:") {
                format!("/sys/fs/cgroup/memory{path}/memory.usage_in_bytes")
            } else {
                continue;
            };
            if let Ok(s) = std::fs::read_to_string(&f) {
                return s.trim().parse().unwrap();
            }
        }
    }
    let s = ok(
        "docker",
        &[
            "stats",
            "--no-stream",
            "--format",
            "{{.MemUsage}}",
            &p.container(service),
        ],
    );
    let used = s.split('/').next().unwrap().trim();
    let (num, unit) = used.split_at(used.find(|c: char| c.is_ascii_alphabetic()).unwrap());
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1048576.0,
        "GiB" => 1073741824.0,
        _ => panic!("docker stats: unknown unit in {s}"),
    };
    (num.parse::<f64>().unwrap() * scale) as u64
}

#[test]
fn paused_consumer_keeps_the_producer_within_its_retention() {
    let Some(_lock) = prepare("paused_consumer") else {
        return;
    };
    // 10 s of 200k u64 items/s (16 MB) cannot all wait in buffers: the
    // counter's live throttle drops, the DSP throttle (overflow: wait) waits.
    let p = Project::new("pause", BIG_N, BIG_RATE);
    p.up();
    p.wait_counted(BIG_RATE);
    let before = memory(&p, "a");
    // b: the consumer of a's two edges.
    ok("docker", &["pause", &p.container("b")]);
    let mut peak = before;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        peak = peak.max(memory(&p, "a"));
        std::thread::sleep(Duration::from_millis(200));
    }
    ok("docker", &["unpause", &p.container("b")]);
    // a's two edges retain at most RETENTION each. Margin: the blocks'
    // buffers, socket buffers and allocator slack.
    let bound = before + 2 * RETENTION + (32 << 20);
    eprintln!(
        "a's memory: {:.1} MB before the pause, peak {:.1} MB during 10 s (bound {:.1} MB)",
        before as f64 / 1e6,
        peak as f64 / 1e6,
        bound as f64 / 1e6
    );
    assert!(peak <= bound, "a grew to {peak} B (bound {bound} B)");
    p.expect_success(Duration::from_secs(90));
    // The counter's throttle could not wait 10 s: one exact gap.
    assert_one_exact_gap(&p);
    // The DSP stream waited: still the single-process output.
    let (want, _) = reference(&p);
    let got = std::fs::read(p.volume("c-data").join("dsp.sigmf-data")).unwrap();
    assert!(
        got == want,
        "the DSP file differs from the single-process run"
    );
}

#[test]
fn live_set_changes_the_output_from_the_reported_offset() {
    let Some(_lock) = prepare("live_set") else {
        return;
    };
    let p = Project::new("set", N, RATE);
    p.up();
    p.wait_counted(N / 4);
    let port = ok("docker", &["port", &p.container("b"), "9400/tcp"]);
    let url = format!("http://{}", port.lines().next().unwrap());
    // The Compose project's env file serves as the token file.
    let out = ok(
        BIN,
        &[
            "set",
            "--worker",
            &url,
            "--token-file",
            p.token_file().to_str().unwrap(),
            "gain",
            "constant",
            "2",
        ],
    );
    let at: usize = out
        .rsplit("from offset ")
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("set reports its offset: {out}"));
    let items = (M / 3) as usize;
    assert!(at > 0 && at < items, "{out}");
    p.expect_success(Duration::from_secs(90));
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let got = f32s(&std::fs::read(p.volume("c-data").join("dsp.sigmf-data")).unwrap());
    let want = f32s(&reference(&p).0);
    assert_eq!(got.len(), items);
    assert_eq!(want.len(), items);
    for i in 0..items {
        let w = if i < at { want[i] } else { 2.0 * want[i] };
        assert!(
            got[i].to_bits() == w.to_bits(),
            "item {i}: {} instead of {w} (the change is at {at})",
            got[i]
        );
    }
    // The counter stream is untouched.
    assert_eq!(
        read_u64s(&p.volume("c-data").join("count.u64")).len() as u64,
        N
    );
}

/// `down` (SIGTERM: a planned stop) and `up` with the volumes kept: c
/// resumes from its files, b (a relay) asks c where it is, and the source
/// segment a asks b: its counter, noise, head and tagger start at the
/// offset b resumes at (the catalog declares them resumable at an offset or
/// item for item), continuing b's stream as the same producer instance. The
/// final files equal the fault-free run: the counter file holds 0..N with
/// no gap tag, the DSP file and its annotations equal the single-process
/// run's, and no checker counts a restart.
#[test]
fn down_and_up_with_volumes_kept_resumes_every_segment_and_equals_the_fault_free_run() {
    let Some(_lock) = prepare("down_and_up") else {
        return;
    };
    let p = Project::new("downup", N, RATE);
    p.up();
    p.wait_counted(N / 3);
    // SIGTERM to every worker (sinks sync, no end of stream), containers
    // and network removed, volumes kept.
    p.flowmesh(&["compose", "--down"]);
    let held = p.counted();
    assert!(
        held > 0 && held < N,
        "taken down mid-stream ({held} of {N})"
    );
    let o = cmd(
        "docker",
        &[
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={}", p.name),
        ],
    );
    assert!(o.stdout.is_empty(), "down removes the containers");
    p.up();
    p.expect_success(Duration::from_secs(90));
    // a says (at warn, its log level) when a group of its sources cannot
    // resume or a consumer did not answer; neither may happen here.
    let a = p.logs("a");
    assert!(
        !a.contains("cannot resume")
            && !a.contains("did not say where it resumes")
            && !a.contains("no consumer of"),
        "a's sources resume where b is: {a}"
    );
    assert_fault_free(&p);
    for s in ["b", "c"] {
        let l = p.logs(s);
        assert!(
            l.contains("(0 restarts; lost by cause: none)") && !l.contains("1 restarts"),
            "{s}'s checker counts no restart and no loss: {l}"
        );
    }
}
