//! A segment made only of sources resumes where its consumers are: segment
//! `a` (a counter → head → throttle, and a sine + seeded noise → add → head
//! → throttle), in a child process (this test binary run again), is
//! SIGKILLed or stopped with SIGTERM mid-stream and started again with
//! `--resume` on the same address. Segment `b` (in this process, over real
//! TCP) keeps running: its files must equal an uninterrupted run's and its
//! checker must count no gap, loss or restart.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowmesh_model::status::WorkerStatus;
use flowmesh_model::validate::validate_text;
use flowmesh_model::{FlowGraphDocument, Pmt};
use flowmesh_worker::control::{Control, Options};
use flowmesh_worker::{client, source_groups, source_starts, start_segment, Config};

const N: u64 = 300_000;
const RATE: u64 = 100_000;

/// The graph, its files in `dir`, paced at `rate` items per second.
fn yaml(dir: &Path, rate: u64) -> String {
    format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: sources}}
spec:
  blocks:
    count:  {{kind: counter_source, segment: a}}
    chead:  {{kind: head, params: {{type: u64, n: {N}}}, segment: a}}
    cthr:   {{kind: throttle, params: {{type: u64, rate: {rate}, overflow: wait}}, segment: a}}
    sine:   {{kind: signal_source, params: {{type: f32, samp_rate: {rate}, frequency: 1234.5, amplitude: 0.5}}, segment: a}}
    noise:  {{kind: noise_source, params: {{type: f32, amplitude: 0.1, seed: 3}}, segment: a}}
    sum:    {{kind: add, params: {{type: f32}}, segment: a}}
    dhead:  {{kind: head, params: {{type: f32, n: {N}}}, segment: a}}
    dthr:   {{kind: throttle, params: {{type: f32, rate: {rate}, overflow: wait}}, segment: a}}
    check:  {{kind: stream_checker, params: {{expect: {N}}}, segment: b}}
    cfile:  {{kind: file_sink, params: {{type: u64, path: {c}, mode: append}}, segment: b}}
    dfile:  {{kind: file_sink, params: {{type: f32, path: {d}, mode: append}}, segment: b}}
  connections:
    - [count.out, chead.in]
    - [chead.out, cthr.in]
    - [cthr.out, check.in]
    - [cthr.out, cfile.in]
    - [sine.out, sum.in0]
    - [noise.out, sum.in1]
    - [sum.out, dhead.in]
    - [dhead.out, dthr.in]
    - [dthr.out, dfile.in]
"#,
        c = dir.join("count.u64").display(),
        d = dir.join("dsp.f32").display(),
    )
}

fn doc(text: &str) -> FlowGraphDocument {
    let (doc, report) = validate_text(text);
    assert!(report.is_ok(), "{report:?}");
    doc.expect("parsed")
}

fn config(segment: &str, listen: &str, peers: BTreeMap<String, String>, resume: bool) -> Config {
    Config {
        segment: segment.into(),
        listen: listen.into(),
        peers,
        token: "edge".into(),
        generation: 0,
        resume,
        threads: Some(1),
        state_dir: None,
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(60), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Set in the child: its listen address, the directory, whether it
/// resumes.
const CHILD_LISTEN: &str = "FM_SOURCES_CHILD_LISTEN";
const CHILD_DIR: &str = "FM_SOURCES_CHILD_DIR";
const CHILD_RESUME: &str = "FM_SOURCES_CHILD_RESUME";
const CHILD_FANOUT: &str = "FM_SOURCES_CHILD_FANOUT";

/// The child: segment `a` until its streams end, or SIGTERM stops it for a
/// restart (as `flowmesh worker` does), or it is killed.
fn child_if_asked() {
    let (Ok(listen), Ok(dir)) = (std::env::var(CHILD_LISTEN), std::env::var(CHILD_DIR)) else {
        return;
    };
    let resume = std::env::var(CHILD_RESUME).is_ok();
    let v = doc(&if std::env::var(CHILD_FANOUT).is_ok() {
        fanout(Path::new(&dir))
    } else {
        yaml(Path::new(&dir), RATE)
    });
    let a = start_segment(&v, &config("a", &listen, BTreeMap::new(), resume)).expect("segment a");
    let handle = a.running.handle();
    flowmesh_worker::lifecycle::watch(
        Duration::from_secs(20),
        "[a] ".into(),
        false,
        move |_, _| handle.suspend(),
    )
    .expect("signals");
    // Where each source starts (0 unless it resumed at an offset).
    for block in a.spec.blocks.keys() {
        println!("BASE {block} {}", a.param_log.base(block));
    }
    println!("READY");
    a.running.wait().expect("segment a ends");
    std::process::exit(0);
}

/// The child segment `a`, once it runs, and where its blocks started.
fn spawn_a(test: &str, listen: &str, dir: &Path, resume: bool) -> (Child, BTreeMap<String, u64>) {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", test, "--nocapture"])
        .env(CHILD_LISTEN, listen)
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped());
    if resume {
        c.env(CHILD_RESUME, "1");
    }
    if test.contains("two_consumers") {
        c.env(CHILD_FANOUT, "1");
    }
    let mut kid = c.spawn().expect("the child runs");
    // Ready once it listens and its graph runs (a resumed one has asked
    // its consumer where to start by then).
    let mut lines = std::io::BufReader::new(kid.stdout.take().unwrap()).lines();
    let mut bases = BTreeMap::new();
    loop {
        let line = lines.next().expect("the child says READY").unwrap();
        if line == "READY" {
            break;
        }
        if let Some(rest) = line.strip_prefix("BASE ") {
            let (block, at) = rest.split_once(' ').unwrap();
            bases.insert(block.to_string(), at.parse().unwrap());
        }
    }
    // Whatever it prints later goes nowhere, but not into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (kid, bases)
}

fn u64s(path: &Path) -> Vec<u64> {
    std::fs::read(path)
        .unwrap_or_default()
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The DSP file of the whole graph run in one process (paced as well: the
/// sine's sample rate is the pace).
fn reference() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let v = doc(&yaml(dir.path(), RATE));
    flowmesh_runtime::run(flowmesh_runtime::Graph::from_spec(&v.spec).unwrap()).unwrap();
    std::fs::read(dir.path().join("dsp.f32")).unwrap()
}

fn restart_mid_stream(test: &str, signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let v = doc(&yaml(dir.path(), RATE));
    let peers = BTreeMap::from([("a".to_string(), listen.clone())]);
    let b = start_segment(&v, &config("b", "127.0.0.1:0", peers, false)).expect("segment b");
    let (mut a, bases) = spawn_a(test, &listen, dir.path(), false);
    assert!(bases.values().all(|&b| b == 0), "a first start: {bases:?}");
    let h = b.running.handle();
    let checked = || match h.get("check", "delivered") {
        Ok(Pmt::I64(n)) => n as u64,
        _ => 0,
    };
    wait_until("a third of the stream", || checked() > N / 3);
    let pid = a.id().to_string();
    let o = Command::new("kill")
        .args([signal, &pid])
        .output()
        .expect("kill runs");
    assert!(o.status.success(), "kill {signal} {pid}");
    let status = a.wait().unwrap();
    let at = checked();
    eprintln!("{test}: segment a stopped by {signal} ({status}) with {at} items checked");
    assert!(at < N, "the stream was cut mid-way ({at} of {N})");

    let (mut a, bases) = spawn_a(test, &listen, dir.path(), true);
    // The sources start where b resumes, not at 0 (starting at 0 would be
    // exact too, the net_sink holding back what b has, but regenerates it).
    eprintln!("{test}: resumed a starts at {bases:?}");
    for block in ["count", "chead"] {
        assert!(
            (at..=N).contains(&bases[block]),
            "{block} resumes at {}, where b is (at least {at})",
            bases[block]
        );
    }
    for block in ["sine", "noise", "dhead"] {
        assert!((1..=N).contains(&bases[block]), "{block}: {bases:?}");
    }
    assert_eq!(bases["count"], bases["chead"]);
    assert_eq!(bases["sine"], bases["dhead"]);
    assert!(
        b.running.wait_timeout(Duration::from_secs(60)),
        "b ends once the resumed a ends its streams"
    );
    assert!(a.wait().unwrap().success(), "the resumed a ends");
    let report = match b.running.wait() {
        Ok(r) => r,
        Err(e) => panic!("segment b: {e}"),
    };

    let got = u64s(&dir.path().join("count.u64"));
    let wrong = got.iter().enumerate().find(|(i, v)| *i as u64 != **v);
    assert!(
        got.len() as u64 == N && wrong.is_none(),
        "the counter file holds 0..{N}: {} items, first wrong {wrong:?}",
        got.len()
    );
    for (what, want) in [("lost", 0), ("gaps", 0), ("restarts", 0), ("delivered", N)] {
        assert_eq!(
            report.get("check", what),
            Some(Pmt::I64(want as i64)),
            "the checker's {what}"
        );
    }
    let dsp = std::fs::read(dir.path().join("dsp.f32")).unwrap();
    let want = reference();
    assert_eq!(dsp.len(), want.len(), "DSP file length");
    assert!(
        dsp == want,
        "the DSP file equals the uninterrupted run's byte for byte"
    );
}

#[test]
fn a_source_segment_sigkilled_mid_stream_resumes_where_its_consumer_is() {
    child_if_asked();
    restart_mid_stream(
        "a_source_segment_sigkilled_mid_stream_resumes_where_its_consumer_is",
        "-KILL",
    );
}

#[test]
fn a_source_segment_stopped_with_sigterm_resumes_where_its_consumer_is() {
    child_if_asked();
    restart_mid_stream(
        "a_source_segment_stopped_with_sigterm_resumes_where_its_consumer_is",
        "-TERM",
    );
}

/// What keeps a group of sources from resuming at an offset is named.
#[test]
fn groups_that_cannot_resume_name_the_block() {
    let text = r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {name: groups}
spec:
  blocks:
    ok:    {kind: counter_source, segment: a}
    tag:   {kind: tagger, params: {type: u64, period: 10}, segment: a}
    sig:   {kind: signal_source, params: {type: f32, samp_rate: 1e6}, segment: a}
    fir:   {kind: fir_filter, params: {type: f32, taps: [0.5, 0.5], decimation: 2}, segment: a}
    file:  {kind: file_source, params: {type: f32, path: /dev/null}, segment: a}
    nul:   {kind: null_sink, params: {type: f32}, segment: a}
    s1:    {kind: null_sink, params: {type: u64}, segment: b}
    s2:    {kind: null_sink, params: {type: f32}, segment: b}
    s3:    {kind: null_sink, params: {type: f32}, segment: b}
    s4:    {kind: null_sink, params: {type: f32}, segment: c}
  connections:
    - [ok.out, tag.in]
    - [tag.out, s1.in]
    - [sig.out, fir.in]
    - [fir.out, s2.in]
    - [file.out, s3.in]
    - [file.out, nul.in]
    - [file.out, s4.in]
"#;
    let v = doc(text);
    let a = flowmesh_worker::plan(&v).unwrap().segments["a"].clone();
    let groups = source_groups(&a);
    let refused: Vec<(Vec<&str>, Option<&str>)> = groups
        .iter()
        .map(|g| {
            let kinds: Vec<&str> = g.sinks.iter().map(|s| a.blocks[s].kind.as_str()).collect();
            (kinds, g.refused.as_deref())
        })
        .collect();
    assert_eq!(groups.len(), 3, "{refused:?}");
    let by_first = |block: &str| {
        groups
            .iter()
            .find(|g| g.blocks.iter().any(|b| b == block))
            .unwrap()
    };
    assert_eq!(by_first("ok").refused, None);
    assert_eq!(by_first("ok").sinks.len(), 1);
    let fir = by_first("fir").refused.clone().unwrap();
    assert!(fir.contains("`fir`") && fir.contains("rate"), "{fir}");
    let file = by_first("file").refused.clone().unwrap();
    assert!(
        file.contains("`file`") && file.contains("file_source"),
        "{file}"
    );
    assert_eq!(by_first("file").sinks.len(), 2, "one edge to b, one to c");

    // Where the groups start: the resumable one at its consumer's offset;
    // the refused ones are not listed (they start at 0).
    let ok = by_first("ok");
    let mut downstream: BTreeMap<String, u64> = groups
        .iter()
        .flat_map(|g| g.sinks.iter().map(|s| (s.clone(), 700)))
        .collect();
    let starts = source_starts(&groups, &downstream);
    assert_eq!(
        starts.keys().collect::<Vec<_>>(),
        ok.blocks.iter().collect::<Vec<_>>()
    );
    assert!(starts.values().all(|&r| r == 700));
    // A consumer that did not answer: the group starts at 0.
    downstream.remove(&ok.sinks[0]);
    assert!(source_starts(&groups, &downstream).is_empty());
}

/// A consumer restarted with `--resume` whose producer is not there (it
/// finished and exited, or is down) says so on `/status`: which edge, since
/// when, and why; the figure clears once the producer answers.
#[test]
fn a_consumer_whose_producer_is_gone_says_so_on_status() {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let v = doc(&yaml(dir.path(), 1_000_000));
    let peers = BTreeMap::from([("a".to_string(), listen.clone())]);
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let b = start_segment(&v, &config("b", "127.0.0.1:0", peers, true)).expect("segment b");
    let control = Control::start(
        &b,
        &v,
        Options {
            addr: "127.0.0.1:0".into(),
            token: Some("t".into()),
            ..Default::default()
        },
    )
    .expect("control API");
    let status = || -> WorkerStatus {
        let r = client::request(
            "GET",
            &format!("http://{}/status", control.addr()),
            Some("t"),
            None,
            Duration::from_secs(10),
        )
        .expect("GET /status");
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).unwrap()
    };
    wait_until("both input edges report their producer unreachable", || {
        let s = status();
        s.edges.len() == 2
            && s.edges
                .iter()
                .all(|e| e.producer_unreachable_since_ms.is_some())
    });
    for e in status().edges {
        let since = e.producer_unreachable_since_ms.unwrap();
        assert!(since >= t0, "{}: since {since}, started {t0}", e.edge);
        let why = e.producer_unreachable.unwrap();
        assert!(
            why.contains(&listen),
            "{}: the reason names the address: {why}",
            e.edge
        );
    }
    // The producer comes back: the edges connect and the figure clears.
    let a = start_segment(&v, &config("a", &listen, BTreeMap::new(), false)).expect("segment a");
    wait_until("the edges connect", || {
        status()
            .edges
            .iter()
            .all(|e| e.connections > 0 && e.producer_unreachable_since_ms.is_none())
    });
    a.running.wait().expect("a ends");
    assert!(b.running.wait_timeout(Duration::from_secs(60)), "b ends");
}

/// One paced counter in `a` feeding two segments, each writing it to an
/// `append` file.
fn fanout(dir: &Path) -> String {
    format!(
        r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: fanout}}
spec:
  blocks:
    count:  {{kind: counter_source, segment: a}}
    chead:  {{kind: head, params: {{type: u64, n: {N}}}, segment: a}}
    cthr:   {{kind: throttle, params: {{type: u64, rate: {RATE}, overflow: wait}}, segment: a}}
    bcheck: {{kind: stream_checker, params: {{expect: {N}}}, segment: b}}
    bfile:  {{kind: file_sink, params: {{type: u64, path: {b}, mode: append}}, segment: b}}
    ccheck: {{kind: stream_checker, params: {{expect: {N}}}, segment: c}}
    cfile:  {{kind: file_sink, params: {{type: u64, path: {c}, mode: append}}, segment: c}}
  connections:
    - [count.out, chead.in]
    - [chead.out, cthr.in]
    - [cthr.out, bcheck.in]
    - [cthr.out, bfile.in]
    - [cthr.out, ccheck.in]
    - [cthr.out, cfile.in]
"#,
        b = dir.join("b.u64").display(),
        c = dir.join("c.u64").display(),
    )
}

/// Two consumers of one group of sources resume at different offsets: `a`
/// is killed, `c` is stopped too and its file loses half of what it held
/// (as writes not yet on disk can), so `c` resumes far behind `b`. The
/// restarted sources start at the smaller offset, and the `net_sink` of the
/// consumer further on serves it from its own offset (what comes before is
/// held, not sent): both files equal the uninterrupted run, with no gap,
/// loss or restart.
#[test]
fn two_consumers_at_different_offsets_both_continue_exactly() {
    let test = "two_consumers_at_different_offsets_both_continue_exactly";
    child_if_asked();
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let v = doc(&fanout(dir.path()));
    let peers = || BTreeMap::from([("a".to_string(), listen.clone())]);
    let b = start_segment(&v, &config("b", "127.0.0.1:0", peers(), false)).expect("segment b");
    let c = start_segment(&v, &config("c", "127.0.0.1:0", peers(), false)).expect("segment c");
    let (mut a, _) = spawn_a(test, &listen, dir.path(), false);
    let hb = b.running.handle();
    let delivered = |h: &flowmesh_runtime::Handle| match h.get("bcheck", "delivered") {
        Ok(Pmt::I64(n)) => n as u64,
        _ => 0,
    };
    wait_until("b has a third of the stream", || delivered(&hb) > N / 3);
    a.kill().unwrap();
    a.wait().unwrap();
    // c stops for a restart (its file syncs), then loses half its file.
    c.running.handle().suspend();
    assert!(c.running.wait_timeout(Duration::from_secs(30)), "c stops");
    // Its checker reports the stream it saw as cut short: expected here.
    let _ = c.running.wait();
    let cfile = dir.path().join("c.u64");
    let held = u64s(&cfile).len() as u64;
    let r_c = held / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cfile)
        .unwrap()
        .set_len(r_c * 8)
        .unwrap();
    let at_b = delivered(&hb);
    eprintln!("{test}: b at {at_b}, c cut back to {r_c} of {held}");
    assert!(r_c > 0 && r_c < at_b);
    let c = start_segment(&v, &config("c", "127.0.0.1:0", peers(), true)).expect("c resumes");

    let (mut a, bases) = spawn_a(test, &listen, dir.path(), true);
    eprintln!("{test}: resumed a starts at {bases:?}");
    assert_eq!(
        bases["count"], r_c,
        "the sources start where the consumer further behind (c) resumes"
    );
    assert_eq!(bases["chead"], r_c);
    for (seg, s) in [("b", b), ("c", c)] {
        assert!(
            s.running.wait_timeout(Duration::from_secs(60)),
            "{seg} ends once the resumed a ends its stream"
        );
        let report = match s.running.wait() {
            Ok(r) => r,
            Err(e) => panic!("segment {seg}: {e}"),
        };
        let check = format!("{seg}check");
        for what in ["lost", "gaps", "restarts"] {
            assert_eq!(
                report.get(&check, what),
                Some(Pmt::I64(0)),
                "{seg}'s checker: {what}"
            );
        }
        let got = u64s(&dir.path().join(format!("{seg}.u64")));
        let wrong = got.iter().enumerate().find(|(i, v)| *i as u64 != **v);
        assert!(
            got.len() as u64 == N && wrong.is_none(),
            "{seg}'s file holds 0..{N}: {} items, first wrong {wrong:?}",
            got.len()
        );
    }
    assert!(a.wait().unwrap().success(), "the resumed a ends");
}
