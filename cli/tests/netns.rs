//! Distributed runs of the `flowmesh` binary across Linux network namespaces.
//!
//! Every test builds its own namespaces (`fmt-<pid>-<n>-<segment>`), joined
//! in a chain a — b — c by veth pairs created directly inside them (nothing
//! is added to the host's namespace), with addresses in 10.231.X.0/24, and
//! starts each segment with `ip netns exec NS flowmesh worker FILE --segment
//! S --listen IP:7400 --peer …`. All traffic stays between these namespaces.
//! A guard kills what runs in them and deletes them on drop, panics included.
//!
//! Needs root and `ip` (iproute2). Without them each test prints a skip
//! notice and passes, unless the environment variable `CI` is set: then it
//! fails. The tests take one lock, so they run one at a time even under a
//! plain `cargo test` (they measure time and memory; 2 cores are not enough
//! to run them side by side). Run them with
//! `cargo test -p flowmesh --test netns -- --test-threads=1 --nocapture`;
//! see docs/testing.md.
//!
//! FlowGraph files are in `tests/fixtures/netns-*.yaml`; `{{NAME}}`
//! placeholders in them (sizes, rates, output paths) are filled in here.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_flowmesh");
const PORT: u16 = 7400;
const TOKEN: &str = "netns-test-token";
/// The default `retention_bytes` of a generated `net_sink` (R): 2M u64 items.
const RETENTION_ITEMS: u64 = (16 << 20) / 8;

/// Per-namespace files: `ip netns exec NS` bind-mounts `NETNS_ETC/NS/F`
/// over `/etc/F` for every file F there.
const NETNS_ETC: &str = "/etc/netns";

static SERIAL: Mutex<()> = Mutex::new(());
static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------
// Preconditions

fn is_root() -> bool {
    // Effective uid: the second field of `Uid:` in /proc/self/status.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn has_ip() -> bool {
    Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether this process may create network namespaces (root in a container
/// without CAP_SYS_ADMIN may not); probed once.
fn netns_allowed() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let ns = format!("fmt-{}-probe", std::process::id());
            let out = Command::new("ip")
                .args(["netns", "add", &ns])
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            Ok(())
        })
        .clone()
}

/// Takes the suite's lock if the machine can run the test; `None`: skip.
#[must_use]
fn prepare(test: &str) -> Option<MutexGuard<'static, ()>> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut missing = vec![];
    if !is_root() {
        missing.push("root (it creates network namespaces)".to_string());
    }
    if !has_ip() {
        missing.push("the `ip` command (package iproute2)".to_string());
    } else if missing.is_empty() {
        if let Err(e) = netns_allowed() {
            missing.push(format!(
                "permission to create network namespaces (`ip netns add`: {e})"
            ));
        }
    }
    if missing.is_empty() {
        println!("== {test}");
        return Some(guard);
    }
    let msg = format!("netns test `{test}` needs {}", missing.join(" and "));
    if std::env::var_os("CI").is_some() {
        panic!("{msg}; CI is set, so this is a failure, not a skip (scripts/test installs iproute2; run as root)");
    }
    // Straight to stderr (not eprintln!, which the test harness captures),
    // so the skip shows without --nocapture.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {msg} (with CI set this fails)");
    None
}

// ---------------------------------------------------------------------------
// Commands

/// Runs a command to completion; panics with its output if it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

/// Removes ANSI escape sequences (log lines may be coloured).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    let from = v.len().saturating_sub(lines);
    let mut t = v[from..].join("\n");
    if from > 0 {
        t = format!("[… {from} lines]\n{t}");
    }
    t
}

// ---------------------------------------------------------------------------
// The lab: namespaces, links, files

struct Node {
    seg: String,
    ns: String,
    /// The address this segment listens on (and that its peers dial).
    ip: String,
    /// Its address on the link toward each neighbour.
    links: BTreeMap<String, String>,
    /// The peers it dials by host name instead of address: segment → name,
    /// resolved through its namespace's hosts file ([`Lab::name_peer`]).
    names: BTreeMap<String, String>,
}

/// A chain of namespaces, one per segment, and a scratch directory.
/// Dropping it kills whatever still runs in the namespaces and deletes them.
struct Lab {
    nodes: Vec<Node>,
    dir: PathBuf,
    spawned: usize,
}

impl Lab {
    /// Namespaces for `segs`, node i linked to node i+1 by a veth pair in
    /// 10.231.(X+i).0/24 (.1 on node i, .2 on node i+1). Each node listens
    /// on its address toward the next node (the last: toward the previous).
    fn chain(segs: &[&str]) -> Lab {
        assert!(segs.len() >= 2);
        let id = NEXT_LAB.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let x = 1 + (id * 4) % 240;
        let dir = std::env::temp_dir().join(format!("fmt-{pid}-{id}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the scratch directory");
        let mut lab = Lab {
            nodes: vec![],
            dir,
            spawned: 0,
        };
        for s in segs {
            let ns = format!("fmt-{pid}-{id}-{s}");
            ip(&["netns", "add", &ns]);
            // Pushed at once so that a failure below still deletes it.
            lab.nodes.push(Node {
                seg: s.to_string(),
                ns: ns.clone(),
                ip: String::new(),
                links: BTreeMap::new(),
                names: BTreeMap::new(),
            });
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        let n = segs.len();
        for i in 0..n - 1 {
            let (a, b) = (&lab.nodes[i], &lab.nodes[i + 1]);
            let (da, db) = (format!("to-{}", b.seg), format!("to-{}", a.seg));
            ip(&[
                "link", "add", &da, "netns", &a.ns, "type", "veth", "peer", "name", &db, "netns",
                &b.ns,
            ]);
            let net = format!("10.231.{}", x + i);
            ip(&[
                "-n",
                &a.ns,
                "addr",
                "add",
                &format!("{net}.1/24"),
                "dev",
                &da,
            ]);
            ip(&[
                "-n",
                &b.ns,
                "addr",
                "add",
                &format!("{net}.2/24"),
                "dev",
                &db,
            ]);
            ip(&["-n", &a.ns, "link", "set", &da, "up"]);
            ip(&["-n", &b.ns, "link", "set", &db, "up"]);
            let (sa, sb) = (a.seg.clone(), b.seg.clone());
            lab.nodes[i].links.insert(sb, format!("{net}.1"));
            lab.nodes[i + 1].links.insert(sa, format!("{net}.2"));
        }
        for i in 0..n {
            lab.nodes[i].ip = if i < n - 1 {
                format!("10.231.{}.1", x + i)
            } else {
                format!("10.231.{}.2", x + i - 1)
            };
        }
        let desc: Vec<String> = lab
            .nodes
            .iter()
            .map(|n| format!("{} in {} at {}", n.seg, n.ns, n.ip))
            .collect();
        println!("lab: {}", desc.join(", "));
        lab
    }

    fn node(&self, seg: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.seg == seg)
            .unwrap_or_else(|| panic!("no segment {seg} in the lab"))
    }

    /// Where `seg` listens.
    fn ip_of(&self, seg: &str) -> String {
        self.node(seg).ip.clone()
    }

    /// `seg`'s address on its link toward `toward` (the source address of
    /// its connections to `toward`).
    fn ip_toward(&self, seg: &str, toward: &str) -> String {
        self.node(seg).links[toward].clone()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Fills the `{{NAME}}` placeholders of a fixture (`{{DIR}}` is the
    /// scratch directory) and writes it to the scratch directory.
    fn render(&self, fixture: &str, vars: &[(&str, String)]) -> PathBuf {
        self.render_to(fixture, fixture, vars)
    }

    /// [`Lab::render`], written to the scratch directory as `name`.
    fn render_to(&self, fixture: &str, name: &str, vars: &[(&str, String)]) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(fixture);
        let mut text = fs::read_to_string(&src)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()));
        text = text.replace("{{DIR}}", &self.dir.display().to_string());
        for (k, v) in vars {
            text = text.replace(&format!("{{{{{k}}}}}"), v);
        }
        assert!(
            !text.contains("{{"),
            "{fixture}: a placeholder was not filled in:\n{text}"
        );
        let out = self.dir.join(name);
        fs::write(&out, text).expect("write the rendered fixture");
        out
    }

    /// Starts `flowmesh ARGS` in the test's own namespace (for runs without
    /// network edges, e.g. the single-process reference run).
    fn local(&mut self, args: &[&str]) -> Worker {
        self.spawned += 1;
        let label = format!("local#{}", self.spawned);
        let out = self.dir.join(format!("{label}.stdout"));
        let err = self.dir.join(format!("{label}.stderr"));
        let child = Command::new(BIN)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).expect("create stdout file"))
            .stderr(fs::File::create(&err).expect("create stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        println!(
            "started {label} (pid {}): flowmesh {}",
            child.id(),
            args.join(" ")
        );
        Worker {
            label,
            child,
            out,
            err,
            status: None,
        }
    }

    /// Starts `flowmesh worker FILE --segment SEG` in SEG's namespace,
    /// listening on its address and told every other segment's address.
    fn spawn(&mut self, seg: &str, file: &Path, token: &str, extra: &[&str]) -> Worker {
        self.spawned += 1;
        let label = format!("{seg}#{}", self.spawned);
        let node = self.node(seg);
        let out = self.dir.join(format!("{label}.stdout"));
        let err = self.dir.join(format!("{label}.stderr"));
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &node.ns, BIN, "worker"])
            .arg(file)
            .args(["--segment", seg, "--listen", &format!("{}:{PORT}", node.ip)]);
        for other in self.nodes.iter().filter(|n| n.seg != seg) {
            let host = node.names.get(&other.seg).unwrap_or(&other.ip);
            c.args(["--peer", &format!("{}={host}:{PORT}", other.seg)]);
        }
        c.args(extra)
            .env("FLOWMESH_TOKEN", token)
            .env("FLOWMESH_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).expect("create stdout file"))
            .stderr(fs::File::create(&err).expect("create stderr file"));
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the worker for {seg}: {e}"));
        println!(
            "started {label} (pid {}) in {}: {}",
            child.id(),
            node.ns,
            extra.join(" ")
        );
        Worker {
            label,
            child,
            out,
            err,
            status: None,
        }
    }

    /// `ip link set DEV up|down` for the link of `seg` toward `toward`.
    fn set_link(&self, seg: &str, toward: &str, up: bool) {
        let dev = format!("to-{toward}");
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.node(seg).ns, "link", "set", &dev, state]);
        println!("link {seg}:{dev} {state}");
    }

    /// The hosts file `ip netns exec` bind-mounts over `/etc/hosts` for the
    /// processes it starts in `seg`'s namespace (when the file exists).
    fn hosts_file(&self, seg: &str) -> PathBuf {
        Path::new(NETNS_ETC).join(&self.node(seg).ns).join("hosts")
    }

    /// From now on `seg`'s workers are given `peer` as `--peer
    /// PEER=NAME:PORT`, and `NAME` resolves to `peer`'s address only inside
    /// `seg`'s namespace: through its hosts file ([`Lab::hosts_file`]),
    /// written before the worker starts. [`Lab::move_address`] keeps it
    /// current.
    fn name_peer(&mut self, seg: &str, peer: &str, name: &str) {
        let dir = self
            .hosts_file(seg)
            .parent()
            .expect("a directory")
            .to_owned();
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        self.node_mut(seg)
            .names
            .insert(peer.to_string(), name.to_string());
        self.write_hosts(seg);
    }

    /// Writes `seg`'s hosts file: a line `ADDRESS NAME` for every peer it
    /// names. In place (same inode): the bind mount of a running worker's
    /// namespace holds the file's inode, so a file replaced by a rename
    /// would not be seen, while a write into it is (glibc reads /etc/hosts
    /// on every lookup). The new text is written over the old before the
    /// file is cut to length, so a lookup never finds it empty.
    fn write_hosts(&self, seg: &str) {
        let node = self.node(seg);
        let mut text = String::from("127.0.0.1 localhost\n");
        for (peer, name) in &node.names {
            text.push_str(&format!("{} {name}\n", self.ip_of(peer)));
        }
        let path = self.hosts_file(seg);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        f.write_all(text.as_bytes())
            .and_then(|()| f.set_len(text.len() as u64))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        println!("{}: {}", path.display(), text.trim().replace('\n', "; "));
    }

    fn node_mut(&mut self, seg: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.seg == seg)
            .unwrap_or_else(|| panic!("no segment {seg} in the lab"))
    }

    /// Moves `seg`'s listening address to host number `host` of the same
    /// /24 (as a rescheduled pod comes back at a new address): removes the
    /// old address from its link, adds the new one, and rewrites the hosts
    /// file of every segment that names it. Returns the new address.
    fn move_address(&mut self, seg: &str, host: u8) -> String {
        let node = self.node(seg);
        let old = node.ip.clone();
        let toward = node
            .links
            .iter()
            .find(|(_, a)| **a == old)
            .map(|(t, _)| t.clone())
            .expect("a node listens on one of its links");
        let (net, _) = old.rsplit_once('.').expect("an IPv4 address");
        let new = format!("{net}.{host}");
        let (ns, dev) = (node.ns.clone(), format!("to-{toward}"));
        // Old one first: deleting a subnet's primary address also deletes
        // its secondaries (unless `promote_secondaries` is set).
        ip(&["-n", &ns, "addr", "del", &format!("{old}/24"), "dev", &dev]);
        ip(&["-n", &ns, "addr", "add", &format!("{new}/24"), "dev", &dev]);
        let n = self.node_mut(seg);
        n.ip = new.clone();
        n.links.insert(toward, new.clone());
        println!("{seg} moved from {old} to {new}");
        let naming: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.names.contains_key(seg))
            .map(|n| n.seg.clone())
            .collect();
        for s in naming {
            self.write_hosts(&s);
        }
        new
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.nodes {
            // Anything still running in our namespace was started by us.
            if let Ok(o) = Command::new("ip").args(["netns", "pids", &n.ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
        }
        for n in &self.nodes {
            // `ip netns del` leaves /etc/netns/NS in place.
            let _ = fs::remove_dir_all(Path::new(NETNS_ETC).join(&n.ns));
        }
        // Only if empty: another lab (or the machine) may use it.
        let _ = fs::remove_dir(NETNS_ETC);
        for n in &self.nodes {
            // Deleting a namespace can race with the last process exiting.
            for _ in 0..20 {
                let ok = Command::new("ip")
                    .args(["netns", "del", &n.ns])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if std::env::var_os("FLOWMESH_KEEP_TMP").is_some() {
            eprintln!("kept {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------
// Workers

struct Worker {
    label: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
    status: Option<ExitStatus>,
}

impl Worker {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.err).unwrap_or_default())
    }

    fn stdout(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.out).unwrap_or_default())
    }

    /// The exit status, if it has exited.
    fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    fn signal(&self, sig: &str) {
        run(Command::new("kill").args([format!("-{sig}"), self.pid().to_string()]));
        println!("SIG{sig} -> {} (pid {})", self.label, self.pid());
    }

    /// SIGKILL, as a crash would, and wait until the process is gone.
    fn sigkill(&mut self) {
        self.signal("KILL");
        let label = self.label.clone();
        wait_for(
            &format!("{label} to die"),
            Duration::from_secs(10),
            &mut [],
            || self.poll().is_some(),
        );
    }

    fn kill(&mut self) {
        if self.poll().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    fn describe(&mut self) -> String {
        let st = match self.poll() {
            Some(s) => s.to_string(),
            None => "still running".into(),
        };
        format!(
            "--- {} ({st}) stderr:\n{}\n--- {} stdout:\n{}",
            self.label,
            tail(&self.stderr(), 40),
            self.label,
            tail(&self.stdout(), 10)
        )
    }

    /// `VmRSS` and `VmHWM` in kB from /proc/PID/status.
    fn memory_kb(&self) -> Option<(u64, u64)> {
        let s = fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let field = |name: &str| -> Option<u64> {
            s.lines()
                .find(|l| l.starts_with(name))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn describe_all(ws: &mut [&mut Worker]) -> String {
    ws.iter_mut()
        .map(|w| w.describe())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until every worker has exited successfully. If one fails, or the
/// time is up, kills the rest and panics with their logs.
fn expect_success(ws: &mut [&mut Worker], limit: Duration) {
    let t0 = Instant::now();
    loop {
        let mut all = true;
        for i in 0..ws.len() {
            match ws[i].poll() {
                Some(s) if s.success() => {}
                Some(s) => {
                    let who = ws[i].label.clone();
                    for w in ws.iter_mut() {
                        w.kill();
                    }
                    let note = if s.signal().is_some_and(|n| n != 9) {
                        " — this harness only sends KILL, TERM, STOP and CONT: \
                         something else on the machine signalled the worker"
                    } else {
                        ""
                    };
                    panic!("{who} failed ({s}){note}\n{}", describe_all(ws));
                }
                None => all = false,
            }
        }
        if all {
            println!(
                "all workers finished in {:.1} s",
                t0.elapsed().as_secs_f64()
            );
            return;
        }
        if t0.elapsed() > limit {
            for w in ws.iter_mut() {
                w.kill();
            }
            panic!(
                "workers still running after {limit:?}; killed\n{}",
                describe_all(ws)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `cond` every 20 ms until it holds; panics with the workers' logs
/// after `limit`.
fn wait_for(what: &str, limit: Duration, ws: &mut [&mut Worker], mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        if t0.elapsed() > limit {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                describe_all(ws)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Checks on outputs

fn read_u64s(p: &Path) -> Vec<u64> {
    let b = fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    assert_eq!(b.len() % 8, 0, "{}: a torn item at the end", p.display());
    b.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// The file holds exactly 0, 1, …, n-1.
fn assert_counter_file(p: &Path, n: u64) {
    let v = read_u64s(p);
    if let Some(i) = v.iter().enumerate().position(|(i, x)| *x != i as u64) {
        panic!(
            "{}: item {i} is {} (expected {i}); around it: {:?}",
            p.display(),
            v[i],
            &v[i.saturating_sub(3)..(i + 3).min(v.len())]
        );
    }
    assert_eq!(v.len() as u64, n, "{}: wrong number of items", p.display());
}

/// `tag_debug` lines `tag_debug: offset O key K value V` → (O, K, V as JSON).
fn printed_tags(stdout: &str) -> Vec<(u64, String, Value)> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("tag_debug: offset ")?;
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

fn sigmf_annotations(meta: &Path) -> Vec<Value> {
    let text =
        fs::read_to_string(meta).unwrap_or_else(|e| panic!("cannot read {}: {e}", meta.display()));
    let v: Value = serde_json::from_str(&text).expect("SigMF metadata is JSON");
    v["annotations"]
        .as_array()
        .cloned()
        .expect("SigMF metadata has annotations")
}

fn jsonl(p: &Path) -> Vec<Value> {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// The log line (if any) containing all of `parts`.
fn find_line<'a>(log: &'a str, parts: &[&str]) -> Option<&'a str> {
    log.lines().find(|l| parts.iter().all(|p| l.contains(p)))
}

fn assert_logged(w: &mut Worker, parts: &[&str]) -> String {
    let log = w.stderr();
    match find_line(&log, parts) {
        Some(l) => {
            println!("{}: {}", w.label, l.trim());
            l.to_string()
        }
        None => {
            let label = w.label.clone();
            panic!(
                "{label} did not log a line with {parts:?}\n{}",
                w.describe()
            )
        }
    }
}

/// A veth link does not corrupt bytes, so a CRC32C mismatch means the
/// producer sent a malformed stream (the consumer then reconnects and
/// resumes, so the data survive; with CRC off it would not). Checked last,
/// after the outputs.
fn assert_no_crc_mismatch(ws: &mut [&mut Worker]) {
    for w in ws.iter_mut() {
        let log = w.stderr();
        if let Some(l) = find_line(&log, &["CRC32C mismatch"]) {
            panic!(
                "{} saw a corrupt frame on a link that does not corrupt: {}\n\
                 (net_sink writes a queued HEARTBEAT into the middle of a partly written \
                 DATA frame after a stall of 1 s or more; see docs/testing.md)",
                w.label,
                l.trim()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Three segments, three namespaces

#[test]
fn counter_across_three_namespaces() {
    let Some(_lock) = prepare("counter_across_three_namespaces") else {
        return;
    };
    const N: u64 = 4_000_000;
    let mut lab = Lab::chain(&["a", "b", "c"]);
    let file = lab.render("netns-chain.yaml", &[("N", N.to_string())]);
    let t0 = Instant::now();
    let mut a = lab.spawn("a", &file, TOKEN, &[]);
    let mut b = lab.spawn("b", &file, TOKEN, &[]);
    let mut c = lab.spawn("c", &file, TOKEN, &[]);
    expect_success(&mut [&mut a, &mut b, &mut c], Duration::from_secs(60));
    println!("run took {:.1} s", t0.elapsed().as_secs_f64());
    assert_counter_file(&lab.path("chain.u64"), N);

    // Each side names the other's namespace address.
    let (ia, ib, ib_a, ic) = (
        lab.ip_of("a"),
        lab.ip_of("b"),
        lab.ip_toward("b", "a"),
        lab.ip_toward("c", "b"),
    );
    assert_logged(
        &mut a,
        &[
            "edge src.out>b: consumer ",
            &format!("{ib_a}:"),
            "connected, resuming at item 0",
        ],
    );
    assert_logged(
        &mut b,
        &[
            &format!("edge src.out>b: connected to {ia}:{PORT}"),
            "from offset 0",
        ],
    );
    assert_logged(
        &mut b,
        &[
            "edge pass.out>c: consumer ",
            &format!("{ic}:"),
            "connected, resuming at item 0",
        ],
    );
    assert_logged(
        &mut c,
        &[
            &format!("edge pass.out>c: connected to {ib}:{PORT}"),
            "from offset 0",
        ],
    );
    assert_no_crc_mismatch(&mut [&mut a, &mut b, &mut c]);
}

// ---------------------------------------------------------------------------
// 2. Tags at the same offsets as in a single-process run

#[test]
fn tags_land_where_a_single_process_run_puts_them() {
    let Some(_lock) = prepare("tags_land_where_a_single_process_run_puts_them") else {
        return;
    };
    const N: u64 = 3_000_000;
    let mut lab = Lab::chain(&["a", "b", "c"]);
    let (dist_out, local_out) = (lab.path("dist.sigmf-data"), lab.path("local.sigmf-data"));
    let dist = lab.render_to(
        "netns-tags.yaml",
        "tags-dist.yaml",
        &[
            ("N", N.to_string()),
            ("OUT", dist_out.display().to_string()),
        ],
    );
    let local = lab.render_to(
        "netns-tags.yaml",
        "tags-local.yaml",
        &[
            ("N", N.to_string()),
            ("OUT", local_out.display().to_string()),
        ],
    );
    let mut a = lab.spawn("a", &dist, TOKEN, &[]);
    let mut b = lab.spawn("b", &dist, TOKEN, &[]);
    let mut c = lab.spawn("c", &dist, TOKEN, &[]);
    expect_success(&mut [&mut a, &mut b, &mut c], Duration::from_secs(120));
    let mut one = lab.local(&["run", "--quiet", &local.display().to_string()]);
    expect_success(&mut [&mut one], Duration::from_secs(120));

    let (ad, al) = (
        sigmf_annotations(&dist_out.with_extension("sigmf-meta")),
        sigmf_annotations(&local_out.with_extension("sigmf-meta")),
    );
    let count = |v: &[Value], key: &str| {
        v.iter()
            .filter(|a| {
                a["core:comment"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(&format!("{key}=")))
            })
            .count() as u64
    };
    println!(
        "annotations: distributed {} (tick_a {}, tick_b {}), single process {}",
        ad.len(),
        count(&ad, "tick_a"),
        count(&ad, "tick_b"),
        al.len()
    );
    // Every tag made it: one per period of each tagger (the FIR keeps them all).
    assert_eq!(
        count(&al, "tick_a"),
        N.div_ceil(4099),
        "single-process tick_a tags"
    );
    assert_eq!(
        count(&al, "tick_b"),
        N.div_ceil(10007),
        "single-process tick_b tags"
    );
    if ad != al {
        let i = ad
            .iter()
            .zip(&al)
            .position(|(x, y)| x != y)
            .unwrap_or(ad.len().min(al.len()));
        panic!(
            "annotations differ from the single-process run at #{i} (distributed {} vs {}): {:?} vs {:?}",
            ad.len(),
            al.len(),
            ad.get(i),
            al.get(i)
        );
    }
    let (dd, dl) = (fs::read(&dist_out).unwrap(), fs::read(&local_out).unwrap());
    assert_eq!(dd.len(), dl.len(), "data file sizes");
    assert!(
        dd == dl,
        "the distributed data differ from the single-process data"
    );
    assert_no_crc_mismatch(&mut [&mut a, &mut b, &mut c]);
}

// ---------------------------------------------------------------------------
// 3. Messages in order, exactly once

/// Runs netns-messages.yaml (a → b); `fault` runs while it is going.
/// With `reconnect`, the consumer must have lost and regained its producer.
fn messages_run(
    count: u64,
    period: f64,
    reconnect: bool,
    fault: impl FnOnce(&Lab, &mut Worker, &mut Worker),
) {
    const N: u64 = 3_000_000;
    const RATE: f64 = 1e6;
    let mut lab = Lab::chain(&["a", "b"]);
    let file = lab.render(
        "netns-messages.yaml",
        &[
            ("COUNT", count.to_string()),
            ("PERIOD", period.to_string()),
            ("N", N.to_string()),
            ("RATE", RATE.to_string()),
        ],
    );
    let mut a = lab.spawn("a", &file, TOKEN, &[]);
    let mut b = lab.spawn("b", &file, TOKEN, &[]);
    fault(&lab, &mut a, &mut b);
    expect_success(&mut [&mut a, &mut b], Duration::from_secs(120));
    for l in b.stderr().lines().chain(a.stderr().lines()) {
        if l.contains("lost") || l.contains("connected") {
            println!("  {}", l.trim());
        }
    }

    let (sa, sb) = (
        jsonl(&lab.path("strobe-a.jsonl")),
        jsonl(&lab.path("strobe-b.jsonl")),
    );
    if reconnect {
        for edge in ["strobe.out>b", "probe.rate>b"] {
            assert_logged(&mut b, &[&format!("message edge {edge}: producer lost")]);
        }
    }
    assert_eq!(sa.len() as u64, count, "strobe messages written in a");
    assert_eq!(sb.len() as u64, count, "strobe messages received in b");
    assert!(
        sb.iter().all(|m| m == "tick"),
        "unexpected strobe message in b"
    );

    let (pa, pb) = (
        jsonl(&lab.path("probe-a.jsonl")),
        jsonl(&lab.path("probe-b.jsonl")),
    );
    println!(
        "strobe: {} messages; rate reports: {} in a, {} in b",
        sb.len(),
        pa.len(),
        pb.len()
    );
    let items: Vec<u64> = pb
        .iter()
        .map(|m| m["items"].as_u64().expect("a report has items"))
        .collect();
    assert!(
        items.windows(2).all(|w| w[0] <= w[1]),
        "rate reports out of order in b: {items:?}"
    );
    assert_eq!(
        items.last().copied(),
        Some(N),
        "the last report counts every item"
    );
    if pa != pb {
        let i = pa
            .iter()
            .zip(&pb)
            .position(|(x, y)| x != y)
            .unwrap_or(pa.len().min(pb.len()));
        panic!(
            "b did not receive exactly what a sent, in order: {} sent, {} received, first difference at #{i}: {:?} vs {:?}",
            pa.len(),
            pb.len(),
            pa.get(i),
            pb.get(i)
        );
    }
    assert_no_crc_mismatch(&mut [&mut a, &mut b]);
}

#[test]
fn messages_arrive_in_order_exactly_once() {
    let Some(_lock) = prepare("messages_arrive_in_order_exactly_once") else {
        return;
    };
    messages_run(300, 0.005, false, |_, _, _| {});
}

/// The link is down longer than the peers' silence timeout (10 s), so
/// both ends drop the connection; the strobe and the probe finish while it is
/// down. After the reconnect the producer resends what was not
/// acknowledged and the consumer must deliver each message once, in order.
#[test]
fn messages_arrive_in_order_exactly_once_across_a_reconnect() {
    let Some(_lock) = prepare("messages_arrive_in_order_exactly_once_across_a_reconnect") else {
        return;
    };
    messages_run(400, 0.01, true, |lab, a, b| {
        let p = lab.path("strobe-b.jsonl");
        wait_for(
            "100 strobe messages in b",
            Duration::from_secs(30),
            &mut [a, b],
            || fs::read_to_string(&p).is_ok_and(|s| s.lines().count() >= 100),
        );
        lab.set_link("b", "a", false);
        std::thread::sleep(Duration::from_secs(12));
        lab.set_link("b", "a", true);
    });
}

// ---------------------------------------------------------------------------
// 4, 5. Faults within retention: nothing lost, nothing repeated

/// Two namespaces `a` → `b` running `fixture` with `N` items at `RATE`
/// items/s: both workers started, returned once `b`'s `out.u64` holds
/// `items` items.
struct Pair {
    lab: Lab,
    file: PathBuf,
    out: PathBuf,
    t0: Instant,
    a: Worker,
    b: Worker,
}

fn start_pair(fixture: &str, n: u64, rate: f64, items: u64, b_args: &[&str]) -> Pair {
    let mut lab = Lab::chain(&["a", "b"]);
    let file = lab.render(fixture, &[("N", n.to_string()), ("RATE", rate.to_string())]);
    let out = lab.path("out.u64");
    let t0 = Instant::now();
    let mut a = lab.spawn("a", &file, TOKEN, &[]);
    let mut b = lab.spawn("b", &file, TOKEN, b_args);
    wait_for(
        &format!("b to write {items} items"),
        Duration::from_secs(30),
        &mut [&mut a, &mut b],
        || file_len(&out) >= items * 8,
    );
    Pair {
        lab,
        file,
        out,
        t0,
        a,
        b,
    }
}

/// Runs netns-paced.yaml (counter → throttle in a → b) and applies `fault`
/// once b has written `after_items`; the run must complete with the whole
/// counter in b's file and no gap.
fn paced_run_without_loss(n: u64, rate: f64, after_items: u64, fault: impl FnOnce(&Lab, &Worker)) {
    let Pair {
        lab,
        out,
        t0,
        mut a,
        mut b,
        ..
    } = start_pair("netns-paced.yaml", n, rate, after_items, &[]);
    println!(
        "fault at {:.1} s, b has {} items",
        t0.elapsed().as_secs_f64(),
        file_len(&out) / 8
    );
    fault(&lab, &b);
    expect_success(&mut [&mut a, &mut b], Duration::from_secs(120));
    println!("run took {:.1} s", t0.elapsed().as_secs_f64());
    for l in b.stderr().lines().chain(a.stderr().lines()) {
        if l.contains("lost") || l.contains("connected") {
            println!("  {}", l.trim());
        }
    }
    let gaps = printed_tags(&b.stdout());
    assert!(gaps.is_empty(), "b saw gap tags: {gaps:?}");
    assert_counter_file(&out, n);
    assert_no_crc_mismatch(&mut [&mut a, &mut b]);
}

#[test]
fn link_down_for_three_seconds_loses_nothing() {
    let Some(_lock) = prepare("link_down_for_three_seconds_loses_nothing") else {
        return;
    };
    // 5e5 items/s for 3 s is 1.5M items: well within R (2M) and the 2R buffer.
    paced_run_without_loss(4_000_000, 5e5, 500_000, |lab, _| {
        lab.set_link("b", "a", false);
        std::thread::sleep(Duration::from_secs(3));
        lab.set_link("b", "a", true);
    });
}

#[test]
fn consumer_stopped_for_three_seconds_loses_nothing() {
    let Some(_lock) = prepare("consumer_stopped_for_three_seconds_loses_nothing") else {
        return;
    };
    paced_run_without_loss(4_000_000, 5e5, 500_000, |_, b| {
        b.signal("STOP");
        std::thread::sleep(Duration::from_secs(3));
        b.signal("CONT");
    });
}

// ---------------------------------------------------------------------------
// 6. Restart with --resume (`flowmesh worker --resume`, `file_sink`
//    `mode: append`)

#[test]
fn killed_consumer_restarted_with_resume_loses_nothing() {
    let Some(_lock) = prepare("killed_consumer_restarted_with_resume_loses_nothing") else {
        return;
    };
    const N: u64 = 4_000_000;
    const RATE: f64 = 5e5;
    // b records which producer instance it reads (--state-dir), so the
    // restarted b names it and the (same) producer resumes it.
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("b").display().to_string();
    let Pair {
        mut lab,
        file,
        out,
        t0,
        mut a,
        mut b,
    } = start_pair(
        "netns-resume.yaml",
        N,
        RATE,
        1_000_000,
        &["--state-dir", &state],
    );
    b.sigkill();
    let killed_at = t0.elapsed();
    let held = file_len(&out) / 8;
    println!(
        "killed b at {:.1} s holding {held} items ({} bytes)",
        killed_at.as_secs_f64(),
        file_len(&out)
    );
    std::thread::sleep(Duration::from_millis(500));
    // Restarted well within R: 0.5 s at 5e5 items/s is 250k items < 2M.
    let mut b2 = lab.spawn("b", &file, TOKEN, &["--resume", "--state-dir", &state]);
    expect_success(&mut [&mut a, &mut b2], Duration::from_secs(120));
    println!("run took {:.1} s", t0.elapsed().as_secs_f64());
    assert_logged(&mut b2, &["resumes at ", "of producer instance "]);
    for l in b2.stderr().lines() {
        if l.contains("resum") || l.contains("connected") {
            println!("  {}", l.trim());
        }
    }
    let log = b2.stderr();
    let resumed = find_line(&log, &["edge thr.out>b: connected to ", "from offset "])
        .and_then(|l| l.rsplit("from offset ").next())
        .and_then(|x| x.trim().parse::<u64>().ok());
    assert!(
        resumed.is_some_and(|r| r > 0 && r <= held),
        "the restarted b should ask for an offset in 1..={held}, got {resumed:?}\n{}",
        b2.describe()
    );
    let gaps = printed_tags(&b2.stdout());
    assert!(gaps.is_empty(), "the restarted b saw gap tags: {gaps:?}");
    // The fault-free run writes exactly the counter 0..N.
    assert_counter_file(&out, N);
    assert_no_crc_mismatch(&mut [&mut a, &mut b2]);
}

/// Both ends killed; the producer restarts afresh (a new instance that
/// numbers from 0) and the consumer with `--resume --state-dir`: the
/// consumer names the instance its file came from, so the restart is seen
/// and marked with one `restart` gap instead of silently skipping the new
/// producer's first items.
#[test]
fn both_ends_restarted_the_consumer_marks_the_producer_restart() {
    let Some(_lock) = prepare("both_ends_restarted_the_consumer_marks_the_producer_restart") else {
        return;
    };
    const N: u64 = 2_000_000;
    const RATE: f64 = 5e5;
    let mut lab = Lab::chain(&["a", "b"]);
    let file = lab.render(
        "netns-resume.yaml",
        &[("N", N.to_string()), ("RATE", RATE.to_string())],
    );
    let out = lab.path("out.u64");
    let state = lab.path("state-b").display().to_string();
    let mut a = lab.spawn("a", &file, TOKEN, &[]);
    let mut b = lab.spawn("b", &file, TOKEN, &["--state-dir", &state]);
    wait_for(
        "b to write 500000 items",
        Duration::from_secs(30),
        &mut [&mut a, &mut b],
        || file_len(&out) >= 500_000 * 8,
    );
    a.sigkill();
    b.sigkill();
    let held = file_len(&out) / 8;
    println!("killed a and b, b's file holding {held} items");
    let mut a2 = lab.spawn("a", &file, TOKEN, &[]);
    let mut b2 = lab.spawn("b", &file, TOKEN, &["--resume", "--state-dir", &state]);
    expect_success(&mut [&mut a2, &mut b2], Duration::from_secs(120));
    assert_logged(&mut b2, &["edge thr.out>b: the producer restarted"]);
    let gaps = printed_tags(&b2.stdout());
    assert_eq!(gaps.len(), 1, "exactly one gap tag: {gaps:?}");
    assert_eq!(
        gaps[0].2["cause"], "restart",
        "the gap marks the producer restart: {gaps:?}"
    );
    // The old stream up to what the file held, then all of the new one.
    let v = read_u64s(&out);
    let want: Vec<u64> = (0..held).chain(0..N).collect();
    assert_eq!(v.len(), want.len(), "held + N items");
    assert!(
        v == want,
        "the file is the old counter up to {held}, then the new one from 0"
    );
    assert_no_crc_mismatch(&mut [&mut a2, &mut b2]);
}

/// A relay segment (`net_source` → block → `net_sink`) killed and restarted
/// with `--resume`: it asks its consumer where it resumes, asks its producer
/// for the matching input, and continues the consumer's stream in the same
/// numbering, so the consumer (never restarted) sees no restart and no gap.
#[test]
fn killed_relay_restarted_with_resume_loses_nothing() {
    let Some(_lock) = prepare("killed_relay_restarted_with_resume_loses_nothing") else {
        return;
    };
    const N: u64 = 4_000_000;
    const RATE: f64 = 5e5;
    let mut lab = Lab::chain(&["a", "b", "c"]);
    let file = lab.render(
        "netns-relay.yaml",
        &[("N", N.to_string()), ("RATE", RATE.to_string())],
    );
    let out = lab.path("relay.u64");
    let t0 = Instant::now();
    let mut a = lab.spawn("a", &file, TOKEN, &[]);
    let mut b = lab.spawn("b", &file, TOKEN, &[]);
    let mut c = lab.spawn("c", &file, TOKEN, &[]);
    wait_for(
        "c to write 1000000 items",
        Duration::from_secs(30),
        &mut [&mut a, &mut b, &mut c],
        || file_len(&out) >= 8_000_000,
    );
    b.sigkill();
    let held = file_len(&out) / 8;
    println!(
        "killed b at {:.1} s, c holding {held} items",
        t0.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut b2 = lab.spawn("b", &file, TOKEN, &["--resume"]);
    expect_success(&mut [&mut a, &mut b2, &mut c], Duration::from_secs(120));
    println!("run took {:.1} s", t0.elapsed().as_secs_f64());
    let log = b2.stderr();
    for l in log.lines() {
        if l.contains("resum") || l.contains("connected") {
            println!("  {}", l.trim());
        }
    }
    let r = find_line(&log, &["the consumer of pass.out>c resumes at "])
        .and_then(|l| l.rsplit("resumes at ").next())
        .and_then(|x| x.trim().parse::<u64>().ok());
    assert!(
        r.is_some_and(|r| r >= held && r < N),
        "the restarted b should learn from c a position in {held}..{N}, got {r:?}\n{}",
        b2.describe()
    );
    let r = r.unwrap_or_default();
    // It asks a for exactly that input (add_const is 1:1).
    assert_logged(
        &mut b2,
        &["edge thr.out>b: connected to ", &format!("from offset {r}")],
    );
    let c_log = c.stderr();
    assert!(
        !c_log.contains("the producer restarted"),
        "c should see its stream continue, not a restarted producer:\n{}",
        c.describe()
    );
    let gaps = printed_tags(&c.stdout());
    assert!(gaps.is_empty(), "c saw gap tags: {gaps:?}");
    // c's checker saw every item once, and the file equals a fault-free run.
    assert_counter_file(&out, N);
    assert_no_crc_mismatch(&mut [&mut a, &mut b2, &mut c]);
}

/// A filtering consumer (decimating low-pass filter into an `append` file)
/// killed and restarted with `--resume`: it warms its filter up on input it
/// asks for early, drops what the file already holds, and the file equals
/// the single-process run's byte for byte.
#[test]
fn killed_filtering_consumer_restarted_with_resume_writes_the_fault_free_file() {
    let Some(_lock) =
        prepare("killed_filtering_consumer_restarted_with_resume_writes_the_fault_free_file")
    else {
        return;
    };
    const N: u64 = 3_000_000;
    const RATE: f64 = 1e6;
    let mut lab = Lab::chain(&["a", "b"]);
    let (dist_out, local_out) = (lab.path("dist.sigmf-data"), lab.path("local.sigmf-data"));
    let vars = |out: &Path| {
        vec![
            ("N", N.to_string()),
            ("RATE", RATE.to_string()),
            ("OUT", out.display().to_string()),
        ]
    };
    let dist = lab.render_to("netns-resume-fir.yaml", "fir-dist.yaml", &vars(&dist_out));
    let local = lab.render_to("netns-resume-fir.yaml", "fir-local.yaml", &vars(&local_out));
    let t0 = Instant::now();
    let mut a = lab.spawn("a", &dist, TOKEN, &[]);
    let mut b = lab.spawn("b", &dist, TOKEN, &[]);
    wait_for(
        "b to write 200000 items",
        Duration::from_secs(30),
        &mut [&mut a, &mut b],
        || file_len(&dist_out) >= 200_000 * 8,
    );
    b.sigkill();
    let held = file_len(&dist_out) / 8;
    println!(
        "killed b at {:.1} s holding {held} filtered items",
        t0.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut b2 = lab.spawn("b", &dist, TOKEN, &["--resume"]);
    expect_success(&mut [&mut a, &mut b2], Duration::from_secs(120));
    let log = b2.stderr();
    for l in log.lines() {
        if l.contains("resum") || l.contains("drops") || l.contains("connected") {
            println!("  {}", l.trim());
        }
    }
    // It asked for its input early enough to warm the filter up (its
    // history, taps − 1, rounded up to the decimation of 4), on the phase
    // of the decimation.
    let asked = find_line(&log, &["edge thr.out>b: connected to ", "from offset "])
        .and_then(|l| l.rsplit("from offset ").next())
        .and_then(|x| x.trim().parse::<u64>().ok());
    assert!(
        asked.is_some_and(|x| x % 4 == 0 && x + 4 <= held * 4 && x + 400 >= held * 4),
        "the restarted b should ask for a multiple of 4 a little before {}, got {asked:?}\n{}",
        held * 4,
        b2.describe()
    );
    assert_logged(&mut b2, &["file drops the first ", " items it gets again"]);
    let mut one = lab.local(&["run", "--quiet", &local.display().to_string()]);
    expect_success(&mut [&mut one], Duration::from_secs(120));
    let (d, l) = (fs::read(&dist_out).unwrap(), fs::read(&local_out).unwrap());
    assert_eq!(l.len() as u64, N / 4 * 8, "the reference run");
    assert_eq!(d.len(), l.len(), "the resumed file's length");
    let first_diff = d.iter().zip(&l).position(|(x, y)| x != y);
    assert_eq!(
        first_diff.map(|i| i / 8),
        None,
        "the resumed file differs from the fault-free one from this item on (killed at {held})"
    );
    // The metadata too: the killed run's tags came back from the journal,
    // the overlap's are listed once.
    let meta = |data: &Path| -> Value {
        serde_json::from_str(&fs::read_to_string(data.with_extension("sigmf-meta")).unwrap())
            .unwrap()
    };
    let (dm, lm) = (meta(&dist_out), meta(&local_out));
    let n_ann = lm["annotations"].as_array().map_or(0, |a| a.len());
    assert!(n_ann > 500, "the reference run's tags: {n_ann}");
    assert!(
        dm == lm,
        "the resumed recording's metadata differs from the fault-free one's ({} vs {n_ann} \
         annotations)",
        dm["annotations"].as_array().map_or(0, |a| a.len())
    );
    assert!(!dist_out.with_extension("sigmf-meta.journal").exists());
    assert_no_crc_mismatch(&mut [&mut a, &mut b2]);
}

// ---------------------------------------------------------------------------
// 6d. SIGTERM: a planned restart (docs/worker.md, "Lifecycle")

/// The grace period the SIGTERM tests give their workers.
const GRACE_S: u64 = 10;

/// Sends SIGTERM to `w` and waits for it to exit: it must exit with 143
/// within the grace period, having logged its planned stop.
fn sigterm(w: &mut Worker, others: &mut [&mut Worker]) {
    let t0 = Instant::now();
    w.signal("TERM");
    let label = w.label.clone();
    let limit = Duration::from_secs(GRACE_S + 5);
    while w.poll().is_none() {
        if t0.elapsed() > limit {
            let mut all: Vec<&mut Worker> = vec![w];
            all.extend(others.iter_mut().map(|o| &mut **o));
            panic!(
                "{label} still running {limit:?} after SIGTERM\n{}",
                describe_all(&mut all)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t0.elapsed();
    let status = w.poll().expect("exited");
    println!(
        "{label} exited {status} {:.2} s after SIGTERM",
        took.as_secs_f64()
    );
    assert_eq!(
        status.code(),
        Some(143),
        "{label}: SIGTERM is a planned restart: exit code 143\n{}",
        w.describe()
    );
    assert!(
        took < Duration::from_secs(GRACE_S),
        "{label} took {took:?} to stop, more than its grace period of {GRACE_S} s"
    );
    assert_logged(w, &["SIGTERM: stopping for a restart within "]);
    assert_logged(w, &["stopped for a restart in "]);
}

/// a → b → c (tone + noise, a decimating low-pass filter in b, an `append`
/// file in c); SIGTERM to `victim` mid-stream, then `victim` again with
/// `--resume`: the file equals the single-process run's byte for byte and
/// c reports nothing lost. Both b and c keep their state in a state dir.
fn sigterm_and_resume(victim: &str) {
    const N: u64 = 3_000_000;
    const RATE: f64 = 1e6;
    let mut lab = Lab::chain(&["a", "b", "c"]);
    let (dist_out, local_out) = (lab.path("dist.cf32"), lab.path("local.cf32"));
    let vars = |out: &Path| {
        vec![
            ("N", N.to_string()),
            ("RATE", RATE.to_string()),
            ("OUT", out.display().to_string()),
        ]
    };
    let dist = lab.render_to("netns-sigterm.yaml", "sigterm-dist.yaml", &vars(&dist_out));
    let local = lab.render_to(
        "netns-sigterm.yaml",
        "sigterm-local.yaml",
        &vars(&local_out),
    );
    let state = |seg: &str| lab.path(&format!("state-{seg}")).display().to_string();
    let (state_b, state_c) = (state("b"), state("c"));
    let grace = GRACE_S.to_string();
    let args = |state: &str, resume: bool| -> Vec<String> {
        let mut v = vec!["--state-dir", state, "--grace-period", &grace];
        if resume {
            v.push("--resume");
        }
        v.into_iter().map(String::from).collect()
    };
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(|s| s.as_str()).collect()
    }
    let (args_b, args_c) = (args(&state_b, false), args(&state_c, false));
    let t0 = Instant::now();
    let mut a = lab.spawn("a", &dist, TOKEN, &[]);
    let mut b = lab.spawn("b", &dist, TOKEN, &refs(&args_b));
    let mut c = lab.spawn("c", &dist, TOKEN, &refs(&args_c));
    // cf32: 8 bytes an item.
    wait_for(
        "c to write 150000 items",
        Duration::from_secs(30),
        &mut [&mut a, &mut b, &mut c],
        || file_len(&dist_out) >= 150_000 * 8,
    );
    let (mut b, mut c) = if victim == "b" {
        sigterm(&mut b, &mut [&mut a, &mut c]);
        let held = file_len(&dist_out) / 8;
        println!(
            "b stopped at {:.1} s, c holding {held} items",
            t0.elapsed().as_secs_f64()
        );
        // b closed its edge without an end of stream: c waits for it,
        // and holds every item b had (the last one acknowledged).
        assert_logged(
            &mut b,
            &[
                "edge lpf.out>c: stopped for a restart at item ",
                "closed without end of stream",
            ],
        );
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            c.poll().is_none(),
            "c ended after b was stopped by SIGTERM: its stream did not end\n{}",
            c.describe()
        );
        assert_eq!(
            file_len(&dist_out) / 8,
            held,
            "c wrote items while b was down"
        );
        let c_log = c.stderr();
        assert!(
            find_line(&c_log, &["edge lpf.out>c: connection to "]).is_some(),
            "c should have seen its connection to b end and be reconnecting\n{}",
            c.describe()
        );
        let b2 = lab.spawn("b", &dist, TOKEN, &refs(&args(&state_b, true)));
        (b2, c)
    } else {
        sigterm(&mut c, &mut [&mut a, &mut b]);
        let held = file_len(&dist_out) / 8;
        assert_eq!(held * 8, file_len(&dist_out), "c left a torn item");
        println!(
            "c stopped at {:.1} s holding {held} items",
            t0.elapsed().as_secs_f64()
        );
        // c's input closed without telling b that it finished: b keeps its
        // stream for c's return.
        assert_logged(&mut c, &["edge lpf.out>c: stopping for a restart at item "]);
        std::thread::sleep(Duration::from_millis(1000));
        assert!(
            b.poll().is_none(),
            "b ended while c was down\n{}",
            b.describe()
        );
        let c2 = lab.spawn("c", &dist, TOKEN, &refs(&args(&state_c, true)));
        (b, c2)
    };
    expect_success(&mut [&mut a, &mut b, &mut c], Duration::from_secs(120));
    println!("run took {:.1} s", t0.elapsed().as_secs_f64());
    for w in [&b, &c] {
        for l in w.stderr().lines() {
            if l.contains("resum") || l.contains("drops") || l.contains("connected") {
                println!("  {}: {}", w.label, l.trim());
            }
        }
    }
    // Nothing reported lost: no gap tag reached c, no producer restart.
    let gaps = printed_tags(&c.stdout());
    assert!(
        gaps.is_empty(),
        "c saw gap tags: {gaps:?}\n{}",
        c.describe()
    );
    let c_log = c.stderr();
    assert!(
        find_line(&c_log, &["the producer restarted"]).is_none(),
        "c should see its stream continue, not a restarted producer\n{}",
        c.describe()
    );
    let mut one = lab.local(&["run", "--quiet", &local.display().to_string()]);
    expect_success(&mut [&mut one], Duration::from_secs(120));
    let (d, l) = (fs::read(&dist_out).unwrap(), fs::read(&local_out).unwrap());
    assert_eq!(l.len() as u64, N / 4 * 8, "the reference run");
    assert_eq!(d.len(), l.len(), "the resumed file's length");
    let first_diff = d.iter().zip(&l).position(|(x, y)| x != y);
    assert_eq!(
        first_diff.map(|i| i / 8),
        None,
        "the resumed file differs from the uninterrupted one from this item on"
    );
    assert_no_crc_mismatch(&mut [&mut a, &mut b, &mut c]);
}

#[test]
fn sigterm_to_the_relay_then_resume_writes_the_uninterrupted_file() {
    let Some(_lock) = prepare("sigterm_to_the_relay_then_resume_writes_the_uninterrupted_file")
    else {
        return;
    };
    sigterm_and_resume("b");
}

#[test]
fn sigterm_to_the_last_worker_then_resume_writes_the_uninterrupted_file() {
    let Some(_lock) =
        prepare("sigterm_to_the_last_worker_then_resume_writes_the_uninterrupted_file")
    else {
        return;
    };
    sigterm_and_resume("c");
}

// ---------------------------------------------------------------------------
// 7. A live source overflows while the consumer is stopped (the
//    throttle's `overflow: drop`)

#[test]
fn live_overflow_is_one_gap_of_exactly_the_dropped_items() {
    let Some(_lock) = prepare("live_overflow_is_one_gap_of_exactly_the_dropped_items") else {
        return;
    };
    // At 2e6 items/s the sink's 2R buffer (4M items) fills in about 2 s;
    // stopped for 6 s, the consumer misses about 4 s worth.
    const N: u64 = 16_000_000;
    const RATE: f64 = 2e6;
    // The lab (its namespaces) must live to the end of the test.
    let Pair {
        lab: _lab,
        out,
        t0,
        mut a,
        mut b,
        ..
    } = start_pair("netns-paced.yaml", N, RATE, 1_000_000, &[]);
    b.signal("STOP");
    std::thread::sleep(Duration::from_secs(6));
    b.signal("CONT");
    expect_success(&mut [&mut a, &mut b], Duration::from_secs(120));
    println!("run took {:.1} s", t0.elapsed().as_secs_f64());

    let v = read_u64s(&out);
    assert!(
        v.windows(2).all(|w| w[0] < w[1]),
        "values must increase strictly (no repeat, no reordering)"
    );
    let jumps: Vec<usize> = v
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[1] != w[0] + 1)
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(v.first(), Some(&0), "the file starts at 0");
    assert_eq!(v.last(), Some(&(N - 1)), "the file ends with the last item");
    let tags = printed_tags(&b.stdout());
    println!(
        "{} items written, {} discontinuities at {:?}; gap tags: {tags:?}",
        v.len(),
        jumps.len(),
        jumps
            .iter()
            .map(|&i| (i, v[i - 1], v[i]))
            .collect::<Vec<_>>()
    );
    assert_eq!(jumps.len(), 1, "exactly one discontinuity");
    let i = jumps[0];
    let (first, count) = (v[i - 1] + 1, v[i] - v[i - 1] - 1);
    assert!(
        count > RETENTION_ITEMS,
        "a 6 s stop at 2e6 items/s should lose more than R; lost {count}"
    );
    assert_eq!(v.len() as u64 + count, N, "written + lost");
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
    assert_no_crc_mismatch(&mut [&mut a, &mut b]);
}

// ---------------------------------------------------------------------------
// 7b. A live source overflows to the end of its stream while the consumer
//     is stopped (issue 10, item 3): the final loss is a `gap` on the end
//     of the stream, carried with EOS, also to a consumer restarted with
//     `--resume --state-dir`.

/// What the checker in `b` printed at its end: (expected, delivered, lost,
/// before the first one, lost by cause).
fn checker_summary(w: &Worker) -> (u64, u64, u64, u64, String) {
    let log = w.stderr();
    let line = find_line(&log, &["stream_checker: ", " items = ", " delivered + "])
        .unwrap_or_else(|| panic!("no stream_checker summary in:\n{}", tail(&log, 30)));
    let num = |after: &str| -> u64 {
        line.split(after)
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("no number after `{after}` in: {line}"))
    };
    let causes = line
        .split("lost by cause: ")
        .nth(1)
        .unwrap_or_default()
        .trim_end_matches(')')
        .to_string();
    (
        num("stream_checker: "),
        num("items = "),
        num("delivered + "),
        num("lost + "),
        causes,
    )
}

/// Stops `b` until `a`'s net_sink has seen the end of its input, which the
/// throttle reaches dropping (nobody takes its items), and returns `a`'s
/// log line saying so.
fn stop_consumer_until_the_stream_ends(a: &mut Worker, b: &mut Worker) -> String {
    b.signal("STOP");
    wait_for(
        "a's stream to end while b is stopped",
        Duration::from_secs(60),
        &mut [],
        || find_line(&a.stderr(), &["the stream ended at item "]).is_some(),
    );
    let log = a.stderr();
    let line = find_line(&log, &["the stream ended at item "])
        .unwrap()
        .trim()
        .to_string();
    println!("a: {line}");
    line
}

/// The file, the final gap printed by `w` and the checker's summary agree:
/// every item is either in the file or in a gap, the last gap is on the end
/// of the stream and starts right after the file's last item, and the
/// checker's delivered + lost (+ before its first item) is `n`, all lost to
/// `overflow`.
fn assert_final_gap(out: &Path, w: &Worker, n: u64, restarted: bool) {
    let v = read_u64s(out);
    assert!(
        v.windows(2).all(|p| p[0] < p[1]),
        "values must increase strictly (no repeat, no reordering)"
    );
    assert_eq!(v.first(), Some(&0), "the file starts at 0");
    let last = *v.last().expect("the file holds items");
    let in_file_gaps: u64 = v.windows(2).map(|p| p[1] - p[0] - 1).sum();
    let tags = printed_tags(&w.stdout());
    let (expected, delivered, lost, before, causes) = checker_summary(w);
    println!(
        "{} items in the file (last {last}, {in_file_gaps} missing inside it); gap tags {tags:?}; \
         checker: {expected} = {delivered} delivered + {lost} lost + {before} before its first \
         item (lost by cause: {causes})",
        v.len()
    );
    let (offset, key, value) = tags.last().expect("a final gap tag");
    assert_eq!(key, "gap");
    assert_eq!(value["cause"], "overflow", "final gap: {value}");
    assert_eq!(
        value["first"].as_u64(),
        Some(last + 1),
        "final gap: {value}"
    );
    assert_eq!(
        value["count"].as_u64(),
        Some(n - 1 - last),
        "final gap: {value}"
    );
    assert!(
        n - 1 - last > RETENTION_ITEMS,
        "the drop to the end is large"
    );
    // The printed offset is the end of this process's stream: one past the
    // last item its checker got.
    assert_eq!(*offset, delivered, "the final gap is on the end");
    // Items in the file + every loss = what was produced.
    assert_eq!(v.len() as u64 + in_file_gaps + (n - 1 - last), n);
    assert_eq!(expected, n);
    assert_eq!(
        delivered + lost + before,
        n,
        "checker: delivered + lost + before"
    );
    assert_eq!(
        causes,
        format!("overflow: {lost}"),
        "every loss is an overflow"
    );
    if restarted {
        // The restarted checker starts mid-stream, where b's file ended.
        assert!(
            before > 0 && before <= last,
            "before its first item: {before}"
        );
    } else {
        assert_eq!(before, 0);
        assert_eq!(delivered, v.len() as u64);
    }
}

#[test]
fn live_overflow_to_the_end_of_the_stream_is_a_final_gap() {
    let Some(_lock) = prepare("live_overflow_to_the_end_of_the_stream_is_a_final_gap") else {
        return;
    };
    // 20M items at 5e6 items/s: the throttle ends 4 s after it starts. b
    // is stopped after 1M items, so the sink's 2R buffer (4M items) fills
    // and the throttle drops everything after it, to the end.
    const N: u64 = 20_000_000;
    const RATE: f64 = 5e6;
    let Pair {
        lab: _lab,
        out,
        t0,
        mut a,
        mut b,
        ..
    } = start_pair("netns-end-drop.yaml", N, RATE, 1_000_000, &[]);
    stop_consumer_until_the_stream_ends(&mut a, &mut b);
    b.signal("CONT");
    expect_success(&mut [&mut a, &mut b], Duration::from_secs(120));
    println!("run took {:.1} s", t0.elapsed().as_secs_f64());
    assert_final_gap(&out, &b, N, false);
    assert_eq!(printed_tags(&b.stdout()).len(), 1, "one gap: the final one");
    assert_no_crc_mismatch(&mut [&mut a, &mut b]);
}

#[test]
fn live_overflow_to_the_end_reaches_a_consumer_restarted_with_resume() {
    let Some(_lock) = prepare("live_overflow_to_the_end_reaches_a_consumer_restarted_with_resume")
    else {
        return;
    };
    // As in issue 10: b is stopped, killed while stopped, and restarted with
    // `--resume --state-dir` after a's stream has ended; a keeps its items
    // and the final gap for it (it waits up to 60 s, `lingerSeconds`).
    const N: u64 = 20_000_000;
    const RATE: f64 = 5e6;
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("b").display().to_string();
    let Pair {
        mut lab,
        file,
        out,
        t0,
        mut a,
        mut b,
    } = start_pair(
        "netns-end-drop.yaml",
        N,
        RATE,
        1_000_000,
        &["--state-dir", &state],
    );
    stop_consumer_until_the_stream_ends(&mut a, &mut b);
    b.sigkill();
    let held = file_len(&out) / 8;
    println!(
        "killed b at {:.1} s holding {held} items",
        t0.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let mut b2 = lab.spawn("b", &file, TOKEN, &["--resume", "--state-dir", &state]);
    expect_success(&mut [&mut a, &mut b2], Duration::from_secs(120));
    println!("run took {:.1} s", t0.elapsed().as_secs_f64());
    assert_logged(&mut b2, &["resumes at ", "of producer instance "]);
    assert_final_gap(&out, &b2, N, true);
    assert_no_crc_mismatch(&mut [&mut a, &mut b2]);
}

// ---------------------------------------------------------------------------
// 8. Bounded memory under backpressure

#[test]
fn slow_consumer_backpressure_keeps_memory_flat() {
    let Some(_lock) = prepare("slow_consumer_backpressure_keeps_memory_flat") else {
        return;
    };
    // The counter alone runs at well over 10M items/s (test 1 moves 4M
    // items through two edges in about half a second); the consumer is paced
    // at 1M items/s, so 60M items take 60 s.
    const RATE: f64 = 1e6;
    const SECS: u64 = 60;
    const N: u64 = RATE as u64 * SECS;
    const BOUND_MB: f64 = 200.0;
    const GROWTH_MB: f64 = 4.0;
    let mut lab = Lab::chain(&["a", "b"]);
    let file = lab.render(
        "netns-backpressure.yaml",
        &[("N", N.to_string()), ("RATE", RATE.to_string())],
    );
    let t0 = Instant::now();
    let mut a = lab.spawn("a", &file, TOKEN, &[]);
    let mut b = lab.spawn("b", &file, TOKEN, &[]);
    // (seconds, [(rss, hwm) of a, of b]) in MB
    let mut samples: Vec<(u64, [(f64, f64); 2])> = vec![];
    let mb = |kb: u64| kb as f64 / 1024.0;
    for k in 1..=(SECS / 5 - 1) {
        let at = Duration::from_secs(5 * k);
        while t0.elapsed() < at {
            std::thread::sleep(Duration::from_millis(50));
        }
        let (ma, mb_) = (a.memory_kb(), b.memory_kb());
        let (Some(ma), Some(mb_)) = (ma, mb_) else {
            panic!(
                "a worker ended at {:.1} s, before the paced consumer could have received \
                 {N} items: backpressure did not hold the producer\n{}",
                t0.elapsed().as_secs_f64(),
                describe_all(&mut [&mut a, &mut b])
            );
        };
        let s = [(mb(ma.0), mb(ma.1)), (mb(mb_.0), mb(mb_.1))];
        println!(
            "t={:>2}s  a: VmRSS {:6.1} MB VmHWM {:6.1} MB | b: VmRSS {:6.1} MB VmHWM {:6.1} MB",
            5 * k,
            s[0].0,
            s[0].1,
            s[1].0,
            s[1].1
        );
        samples.push((5 * k, s));
    }
    expect_success(&mut [&mut a, &mut b], Duration::from_secs(SECS + 60));
    let took = t0.elapsed().as_secs_f64();
    println!("run took {took:.1} s");
    assert!(
        took > SECS as f64 * 0.9,
        "the run should take about {SECS} s at the consumer's pace, took {took:.1} s"
    );
    let base = samples
        .iter()
        .find(|(t, _)| *t >= 10)
        .expect("a sample at 10 s")
        .1;
    for (t, s) in &samples {
        for (w, name) in ["a", "b"].iter().enumerate() {
            assert!(
                s[w].1 < BOUND_MB,
                "{name} at {t} s: VmHWM {:.1} MB exceeds {BOUND_MB} MB",
                s[w].1
            );
            if *t >= 10 {
                assert!(
                    s[w].0 <= base[w].0 + GROWTH_MB && s[w].1 <= base[w].1 + GROWTH_MB,
                    "{name} grew after 10 s: at {t} s VmRSS {:.1} MB VmHWM {:.1} MB, at 10 s {:.1} / {:.1} MB",
                    s[w].0,
                    s[w].1,
                    base[w].0,
                    base[w].1
                );
            }
        }
    }
    assert_no_crc_mismatch(&mut [&mut a, &mut b]);
}

// ---------------------------------------------------------------------------
// 9. A consumer with the wrong token is refused; the producer carries on

#[test]
fn wrong_token_is_refused_and_the_producer_carries_on() {
    let Some(_lock) = prepare("wrong_token_is_refused_and_the_producer_carries_on") else {
        return;
    };
    const N: u64 = 2_000_000;
    let mut lab = Lab::chain(&["a", "b"]);
    let file = lab.render("netns-pair.yaml", &[("N", N.to_string())]);
    let mut a = lab.spawn("a", &file, TOKEN, &[]);
    let mut bad = lab.spawn("b", &file, "not-the-token", &[]);
    wait_for(
        "the consumer with the wrong token to exit",
        Duration::from_secs(30),
        &mut [&mut a],
        || bad.poll().is_some(),
    );
    let st = bad.poll().expect("exited");
    assert!(
        !st.success(),
        "the refused consumer must fail\n{}",
        bad.describe()
    );
    assert_logged(&mut bad, &["src.out>b", "wrong authentication token"]);
    let ib = lab.ip_toward("b", "a");
    assert_logged(
        &mut a,
        &[
            &format!("refused consumer {ib}:"),
            "src.out>b",
            "wrong authentication token",
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        a.poll().is_none(),
        "the producer must keep running after refusing a consumer\n{}",
        a.describe()
    );
    let mut good = lab.spawn("b", &file, TOKEN, &[]);
    expect_success(&mut [&mut a, &mut good], Duration::from_secs(60));
    assert_logged(
        &mut a,
        &[
            "edge src.out>b: consumer ",
            &format!("{ib}:"),
            "connected, resuming at item 0",
        ],
    );
    assert_no_crc_mismatch(&mut [&mut a, &mut good]);
}

// ---------------------------------------------------------------------------
// 10. Peers found by host name, again after a move (issue 11)

/// `flowmesh status --json` of the worker running in `seg`'s namespace (its
/// control API on the default port there).
fn worker_status(lab: &Lab, seg: &str, ws: &mut [&mut Worker]) -> Value {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.node(seg).ns, BIN, "status", "--json"])
        .args(["--worker", "http://127.0.0.1:9400"])
        .env("FLOWMESH_TOKEN", TOKEN)
        .output()
        .unwrap_or_else(|e| panic!("cannot run flowmesh status: {e}"));
    assert!(
        out.status.success(),
        "flowmesh status of {seg} failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        describe_all(ws)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "flowmesh status of {seg} is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// b dials its producer as `producer.flowmesh.test:7400`, a name only b's
/// namespace resolves (its hosts file). The producer is killed, its address
/// moves on the link (new one added, old one removed), b's hosts file is
/// rewritten in place, and the producer restarts at the new address: b,
/// never restarted, resolves the name again, reconnects there, and marks
/// the producer's restart with exactly one `restart` gap. The producer is
/// restarted without `--resume` (with it, its counter would continue where
/// b is: docs/worker.md, "Resuming sources"), so it is a new instance that
/// counts from 0 again.
#[test]
fn consumer_finds_its_producer_by_host_name_also_at_a_new_address() {
    let Some(_lock) = prepare("consumer_finds_its_producer_by_host_name_also_at_a_new_address")
    else {
        return;
    };
    // 6 s per producer instance at RATE: time to read b's status after the
    // reconnect while it still runs.
    const N: u64 = 3_000_000;
    const RATE: f64 = 5e5;
    const NAME: &str = "producer.flowmesh.test";
    let mut lab = Lab::chain(&["a", "b"]);
    lab.name_peer("b", "a", NAME);
    let file = lab.render(
        "netns-hosts.yaml",
        &[("N", N.to_string()), ("RATE", RATE.to_string())],
    );
    let out = lab.path("out.u64");
    let mut a = lab.spawn("a", &file, TOKEN, &[]);
    let mut b = lab.spawn("b", &file, TOKEN, &[]);
    wait_for(
        "b to write 500000 items",
        Duration::from_secs(30),
        &mut [&mut a, &mut b],
        || file_len(&out) >= 500_000 * 8,
    );
    let old = lab.ip_of("a");
    assert_logged(
        &mut b,
        &[
            &format!("edge thr.out>b: connected to {old}:{PORT}"),
            "from offset 0",
        ],
    );

    a.sigkill();
    let new = lab.move_address("a", 3);
    let mut a2 = lab.spawn("a", &file, TOKEN, &[]);
    let connected_new = format!("edge thr.out>b: connected to {new}:{PORT}");
    let b_log = b.err.clone();
    wait_for(
        &format!("b to connect to {NAME} at {new}"),
        Duration::from_secs(30),
        &mut [&mut a2, &mut b],
        || {
            let log = strip_ansi(&fs::read_to_string(&b_log).unwrap_or_default());
            find_line(&log, &[&connected_new]).is_some()
        },
    );
    assert_logged(&mut b, &[&connected_new]);
    let status = worker_status(&lab, "b", &mut [&mut a2, &mut b]);
    let edge = status["edges"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["edge"] == "thr.out>b"))
        .unwrap_or_else(|| panic!("b's /status has no edge thr.out>b: {status}"))
        .clone();
    println!("b's edge after the move: {edge}");
    assert_eq!(
        edge["connections"], 2,
        "b connected once to each producer, the second time at its new address: {edge}"
    );
    assert_eq!(edge["restarts"], 1, "one producer restart: {edge}");

    expect_success(&mut [&mut a2, &mut b], Duration::from_secs(60));
    assert_logged(&mut b, &["edge thr.out>b: the producer restarted"]);
    // The old counter up to where a was killed, then the whole new one.
    let v = read_u64s(&out);
    let held = v
        .iter()
        .skip(1)
        .position(|x| *x == 0)
        .map(|i| i as u64 + 1)
        .unwrap_or_else(|| {
            panic!("b's file never starts again at 0: the new producer's items are not there")
        });
    println!(
        "b's file: {held} items of the first producer, then {}",
        v.len() as u64 - held
    );
    assert!(held >= 500_000, "b held {held} items before the kill");
    let want: Vec<u64> = (0..held).chain(0..N).collect();
    assert_eq!(v.len(), want.len(), "b's file holds held + N items");
    assert!(
        v == want,
        "b's file is the old counter up to {held}, then the new one from 0"
    );
    // The restart, marked where the new stream starts: the old instance's
    // next item was `held`; none of the fresh producer's items is missing.
    let gaps = printed_tags(&b.stdout());
    assert_eq!(gaps.len(), 1, "exactly one gap tag: {gaps:?}");
    let (offset, _, g) = &gaps[0];
    assert_eq!(
        *offset, held,
        "the gap is on b's first item of the new producer"
    );
    assert_eq!(g["cause"], "restart", "{gaps:?}");
    assert_eq!(g["first"], held, "{gaps:?}");
    assert_eq!(g["count"], 0, "{gaps:?}");
    assert_no_crc_mismatch(&mut [&mut a2, &mut b]);
}
