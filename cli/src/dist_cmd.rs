//! `flowmesh worker` (run one segment) and `flowmesh run --distributed`
//! (one worker process per segment on this machine, joined by TCP).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flowmesh_model::status::PreflightProblem;
use flowmesh_worker::control::{self, Control};
use flowmesh_worker::exit;
use flowmesh_worker::lifecycle::{self, StopKind};
use flowmesh_worker::preflight::{self, Host};
use flowmesh_worker::{parse_peer, read_peers, start_segment, Config};

/// An error of `flowmesh worker` after which nothing was started: a bad
/// command line, an invalid graph, a failed preflight (exit
/// [`flowmesh_worker::exit::NOT_STARTED`]).
#[derive(Debug)]
pub struct NotStarted(pub String);

impl std::fmt::Display for NotStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotStarted {}

fn not_started(e: impl std::fmt::Display) -> anyhow::Error {
    NotStarted(e.to_string()).into()
}

/// Where Kubernetes takes a container's termination message from (the
/// default `terminationMessagePath`); `FLOWMESH_TERMINATION_LOG` names
/// another file.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// The error of a failed preflight: every problem, one per line. Also
/// written to the termination log when that file exists and is writable
/// (it is not created).
fn preflight_failed(what: &str, problems: &[PreflightProblem]) -> anyhow::Error {
    let n = problems.len();
    let mut s = format!(
        "{what} cannot start on this host: the preflight found {n} problem{}; nothing was \
         started:",
        if n == 1 { "" } else { "s" }
    );
    for p in problems {
        s.push_str(&format!("\n  {}: {}", p.path, p.message));
    }
    let log = std::env::var_os("FLOWMESH_TERMINATION_LOG")
        .map_or_else(|| TERMINATION_LOG.into(), std::path::PathBuf::from);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
    {
        let _ = writeln!(f, "{s}");
    }
    not_started(s)
}

/// Options of `flowmesh worker`.
pub struct WorkerArgs {
    pub segment: String,
    pub listen: String,
    pub peers: Vec<String>,
    pub stdin_peers: bool,
    pub resume: bool,
    pub threads: Option<u32>,
    pub state_dir: Option<std::path::PathBuf>,
    pub control: String,
    pub token_file: Option<std::path::PathBuf>,
    pub open_reads: bool,
    /// Check and exit: start nothing.
    pub preflight: bool,
    pub quiet: bool,
    /// How long a planned stop (SIGTERM, SIGINT) may take.
    pub grace: Duration,
    /// The replica's name in logs and /status (a scalable segment's).
    pub replica_name: Option<String>,
}

/// Why `flowmesh worker` did not end with its segment: the error, and the
/// exit code that tells a supervisor which kind of end it was
/// ([`flowmesh_worker::exit`]).
pub struct WorkerFailure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl From<anyhow::Error> for WorkerFailure {
    /// A [`NotStarted`] error is [`exit::NOT_STARTED`]; any other, a
    /// failure at run time.
    fn from(error: anyhow::Error) -> Self {
        let code = if error.downcast_ref::<NotStarted>().is_some() {
            exit::NOT_STARTED
        } else {
            exit::FAILED
        };
        WorkerFailure { code, error }
    }
}

/// Marks an error as one before anything was started
/// ([`exit::NOT_STARTED`]).
trait BeforeStart<T> {
    fn before_start(self) -> Result<T, WorkerFailure>;
}

impl<T, E: Into<anyhow::Error>> BeforeStart<T> for std::result::Result<T, E> {
    fn before_start(self) -> Result<T, WorkerFailure> {
        self.map_err(|e| WorkerFailure {
            code: exit::NOT_STARTED,
            error: e.into(),
        })
    }
}

fn token() -> String {
    std::env::var("FLOWMESH_TOKEN").unwrap_or_default()
}

/// Where a worker's FlowGraph comes from.
pub enum Source {
    /// A file, and the peer address template if one was given.
    File(std::path::PathBuf, Option<String>),
    /// Cluster mode: a FlowGraph resource and the peer address template.
    Resource {
        resource: flowmesh_k8s::ResourceRef,
        peer_template: String,
    },
}

impl Source {
    pub fn new(
        file: Option<std::path::PathBuf>,
        flowgraph: Option<String>,
        namespace: String,
        peer_template: Option<String>,
    ) -> Source {
        match (file, flowgraph) {
            (_, Some(name)) => Source::Resource {
                resource: flowmesh_k8s::ResourceRef { namespace, name },
                peer_template: peer_template
                    .unwrap_or_else(|| flowmesh_model::naming::DEFAULT_PEER_TEMPLATE.to_string()),
            },
            (Some(f), None) => Source::File(f, peer_template),
            (None, None) => unreachable!("clap requires a file or --flowgraph"),
        }
    }
}

/// `flowmesh worker`: runs the segment; returns its exit code
/// ([`flowmesh_worker::exit`]): the segment ended, or was stopped for a
/// restart by SIGTERM or SIGINT (docs/worker.md, "Lifecycle").
pub fn worker(source: Source, a: WorkerArgs) -> Result<u8, WorkerFailure> {
    let (file, template) = match source {
        Source::File(f, t) => (f, t),
        Source::Resource {
            resource,
            peer_template,
        } => return cluster_worker(resource, &peer_template, a),
    };
    let file = file.as_path();
    let mut peers = BTreeMap::new();
    for p in &a.peers {
        let (s, addr) = parse_peer(p).map_err(not_started)?;
        peers.insert(s, addr);
    }
    let control_token = crate::ctl_cmd::token(a.token_file.as_deref())
        .map_err(|e| not_started(format!("{e:#}")))?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| not_started(format!("cannot read {}: {e}", file.display())))?;
    let host = Host {
        segment: &a.segment,
        listen: &a.listen,
        control: Some(&a.control),
        state_dir: a.state_dir.as_deref(),
    };
    let what = format!("segment `{}` of {}", a.segment, file.display());
    let doc = match preflight::check_text(&text, &host) {
        (Some(doc), problems) if problems.is_empty() => doc,
        (_, problems) => return Err(preflight_failed(&what, &problems).into()),
    };
    if let Some(t) = &template {
        template_peers(&doc, t, &a.segment, &mut peers)?;
    }
    if a.preflight {
        println!("preflight passed: {what} can start on this host");
        return Ok(exit::ENDED);
    }
    let cfg = Config {
        segment: a.segment.clone(),
        listen: a.listen.clone(),
        peers,
        token: token(),
        generation: 0,
        resume: a.resume,
        threads: a.threads,
        state_dir: a.state_dir.clone(),
    };
    let mut seg = start_segment(&doc, &cfg).before_start()?;
    if let Some(n) = &a.replica_name {
        seg.name = n.clone();
    }
    let control = Arc::new(
        Control::start(
            &seg,
            &doc,
            control::Options {
                addr: a.control.clone(),
                token: control_token,
                open_reads: a.open_reads,
                ..Default::default()
            },
        )
        .before_start()?,
    );
    let label = format!("[{}] ", seg.name);
    // SIGTERM (and SIGINT) from now on: a planned stop for a restart. The
    // workers of `flowmesh run --distributed` (--stdin-peers) take SIGINT,
    // a Ctrl-C in its terminal, as `flowmesh run` does: end of stream.
    let presses = Arc::new(AtomicUsize::new(0));
    let stop_kind = Arc::new(AtomicU8::new(0));
    let stop_started = Arc::new(std::sync::Mutex::new(None::<Instant>));
    {
        let (handle, control) = (seg.running.handle(), control.clone());
        let (presses, stop_kind, stop_started) =
            (presses.clone(), stop_kind.clone(), stop_started.clone());
        let (label, grace) = (label.clone(), a.grace);
        lifecycle::watch(a.grace, label.clone(), a.stdin_peers, move |name, kind| {
            presses.fetch_add(1, Ordering::SeqCst);
            *stop_started.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            match kind {
                StopKind::Restart => {
                    stop_kind.store(1, Ordering::SeqCst);
                    eprintln!(
                        "{label}{name}: stopping for a restart within {} s: sources stop, the \
                         graph drains into its sinks, output edges hand over what they hold \
                         without end of stream (another signal exits at once)",
                        grace.as_secs_f64()
                    );
                    control.set_stopping();
                    handle.suspend();
                }
                StopKind::EndOfStream => {
                    stop_kind.store(2, Ordering::SeqCst);
                    eprintln!(
                        "{label}{name}: stopping: sources end and the graph drains (Ctrl-C again \
                         to abort)"
                    );
                    handle.stop();
                }
            }
        })
        .context("cannot listen for SIGTERM and SIGINT")
        .before_start()?;
    }
    if a.stdin_peers {
        println!("CONTROL {}", control.addr());
        println!("LISTEN {}", seg.listening);
        std::io::stdout().flush().before_start()?;
        read_peers(std::io::stdin().lock(), &seg.env).before_start()?;
    } else {
        eprintln!(
            "{label}listening on {}, control API on http://{}",
            seg.listening,
            control.addr()
        );
    }
    let kinds: Vec<(String, String)> = doc
        .spec
        .blocks
        .iter()
        .map(|(n, b)| (n.clone(), b.kind.clone()))
        .collect();
    let r = crate::run_cmd::supervise(seg.running, None, &kinds, a.quiet, &label, Some(presses));
    control.set_outcome(r.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")));
    match r {
        Err(error) => Err(WorkerFailure {
            code: exit::FAILED,
            error,
        }),
        Ok(()) if stop_kind.load(Ordering::SeqCst) == 1 => {
            let took = stop_started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .map_or(0.0, |t| t.elapsed().as_secs_f64());
            eprintln!(
                "{label}stopped for a restart in {took:.1} s (exit {}): its stream did not end; \
                 start it again with --resume to continue",
                exit::STOPPED
            );
            Ok(exit::STOPPED)
        }
        Ok(()) => Ok(exit::ENDED),
    }
}

/// File mode with `--peer-template`: the address of every other segment of
/// `doc` from the template (the file's namespace, else `default`), unless
/// `--peer` already named it.
fn template_peers(
    doc: &flowmesh_model::FlowGraphDocument,
    template: &str,
    segment: &str,
    peers: &mut BTreeMap<String, String>,
) -> Result<()> {
    let t = flowmesh_model::naming::PeerTemplate::parse(template).map_err(not_started)?;
    let plan = flowmesh_worker::plan(doc).map_err(not_started)?;
    let namespace = doc.metadata.namespace.as_deref().unwrap_or("default");
    for s in plan.segments.keys().filter(|s| *s != segment) {
        peers
            .entry(s.clone())
            .or_insert_with(|| t.render(&doc.metadata.name, namespace, s));
    }
    Ok(())
}

pub(crate) fn random_token() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn distributed(file: &Path, quiet: bool, unix: bool) -> Result<()> {
    let doc = crate::load(file)?;
    let plan = flowmesh_worker::plan(&doc)?;
    let exe = std::env::current_exe().context("cannot find the flowmesh executable")?;
    let token = random_token();
    // The workers share this machine: each gets its share of the cores
    // (unless the file sets spec.runtime.threads), so that the processes
    // together run one thread per core instead of one per core each.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = (cores / plan.segments.len().max(1)).max(1);
    // Unix sockets live in a private directory removed at the end.
    let sockets = if unix {
        Some(tempfile::Builder::new().prefix("flowmesh-").tempdir()?)
    } else {
        None
    };
    // The control APIs' token, for `flowmesh status|get|set --token-file`.
    let private = tempfile::Builder::new().prefix("flowmesh-ctl-").tempdir()?;
    let token_file = private.path().join("token");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&token_file)?;
        writeln!(f, "{token}")?;
    }
    // Ctrl-C in the terminal reaches every worker too (one process group):
    // each takes SIGINT as the end of the stream (--stdin-peers) and drains,
    // as `flowmesh run` does; this process waits for them. A second Ctrl-C
    // aborts (the workers exit at once on their second signal too).
    let presses = Arc::new(AtomicUsize::new(0));
    {
        let presses = presses.clone();
        let _ = ctrlc::set_handler(move || {
            if presses.fetch_add(1, Ordering::SeqCst) == 0 {
                eprintln!(
                    "\nstopping: the workers end their sources and drain (Ctrl-C again to abort)"
                );
            } else {
                std::process::exit(130);
            }
        });
    }
    // A scalable segment runs `scaling.min` replicas at once, `SEG#0`,
    // `SEG#1`, …: each dials the producer of its input and pushes to its
    // consumer, so none needs an address of its own (docs/scaling.md).
    let mut instances = vec![];
    for seg in plan.segments.keys() {
        match flowmesh_model::partition::scaling(&doc.spec, seg) {
            Some(sc) => {
                for i in 0..sc.min.max(1) {
                    instances.push((seg.clone(), Some(format!("{seg}#{i}"))));
                }
            }
            None => instances.push((seg.clone(), None)),
        }
    }
    let mut children = vec![];
    for (seg, replica) in &instances {
        let name = replica.clone().unwrap_or_else(|| seg.clone());
        let listen = match &sockets {
            Some(dir) => format!(
                "unix:{}",
                dir.path()
                    .join(format!("{}.sock", name.replace('#', "-")))
                    .display()
            ),
            None => "127.0.0.1:0".to_string(),
        };
        let mut c = Command::new(&exe);
        c.arg("worker")
            .arg(file)
            .args(["--segment", seg, "--listen", &listen, "--stdin-peers"])
            .args(["--threads", &share.to_string()])
            .args(["--control", "127.0.0.1:0"])
            .env("FLOWMESH_TOKEN", &token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(r) = replica {
            c.args(["--replica-name", r]);
        }
        if quiet {
            c.arg("--quiet");
        }
        let child = c
            .spawn()
            .with_context(|| format!("cannot start the worker for segment `{name}`"))?;
        children.push((name, child));
    }
    let replica_of =
        |name: &str| -> Option<String> { name.split_once('#').map(|(s, _)| s.to_string()) };
    // Collect every worker's address, then tell everyone.
    let mut addrs = vec![];
    let mut controls = vec![];
    let mut outs = vec![];
    let mut failed_start = None;
    'workers: for (seg, child) in children.iter_mut() {
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        loop {
            let mut line = String::new();
            out.read_line(&mut line)?;
            let line = line.trim();
            if let Some(addr) = line.strip_prefix("CONTROL ") {
                controls.push(format!("{seg} http://{addr}"));
            } else if let Some(addr) = line.strip_prefix("LISTEN ") {
                // Nobody dials a replica: only the other segments are peers.
                if replica_of(seg).is_none() {
                    addrs.push((seg.clone(), addr.to_string()));
                }
                break;
            } else {
                failed_start = Some(seg.clone());
                break 'workers;
            }
        }
        outs.push(out);
    }
    if let Some(seg) = failed_start {
        for (_, c) in children.iter_mut() {
            let _ = c.kill();
        }
        bail!("the worker for segment `{seg}` did not start (see its message above)");
    }
    for (_, child) in children.iter_mut() {
        let mut stdin = child.stdin.take().expect("piped");
        for (s, a) in &addrs {
            writeln!(stdin, "PEER {s} {a}")?;
        }
        writeln!(stdin, "GO")?;
    }
    if !quiet {
        let list: Vec<String> = addrs.iter().map(|(s, a)| format!("{s} on {a}")).collect();
        let replicas: Vec<&str> = children
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.contains('#'))
            .collect();
        eprintln!(
            "started {} workers: {}{}",
            children.len(),
            list.join(", "),
            if replicas.is_empty() {
                String::new()
            } else {
                format!(", replicas {}", replicas.join(", "))
            }
        );
        eprintln!(
            "control APIs: {} (token: --token-file {})",
            controls.join(", "),
            token_file.display()
        );
    }
    // How to add a replica of a scalable segment to this run by hand (it
    // dials the producer of its input and its consumer, which take any
    // number of replicas; SIGTERM takes it out again).
    let peers: Vec<String> = addrs
        .iter()
        .map(|(s, a)| format!("--peer {s}={a}"))
        .collect();
    for seg in plan.segments.keys() {
        if flowmesh_model::partition::scaling(&doc.spec, seg).is_some() {
            eprintln!(
                "add a replica of `{seg}`: FLOWMESH_TOKEN=$(cat {}) {} worker {} --segment {seg} \
                 --listen 127.0.0.1:0 --control 127.0.0.1:0 {}",
                token_file.display(),
                exe.display(),
                file.display(),
                peers.join(" ")
            );
        }
    }
    // Forward what the segments print (e.g. detections) to our stdout.
    let forwarders: Vec<_> = outs
        .into_iter()
        .map(|out| {
            std::thread::spawn(move || {
                let stdout = std::io::stdout();
                for line in out.lines().map_while(Result::ok) {
                    let _ = writeln!(stdout.lock(), "{line}");
                }
            })
        })
        .collect();
    // Wait for all (one waiting thread per worker, so the run ends the
    // moment the last worker does); if one fails, the others cannot finish:
    // stop them.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut live = BTreeMap::new();
    for (i, (seg, mut child)) in children.into_iter().enumerate() {
        live.insert(i, (seg, child.id()));
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send((i, child.wait()));
        });
    }
    drop(tx);
    let mut failed = vec![];
    let mut replicas_stopped = false;
    while let Ok((i, status)) = rx.recv() {
        let Some((seg, _)) = live.remove(&i) else {
            continue;
        };
        let status = status.with_context(|| format!("waiting for segment `{seg}`"))?;
        // A replica of a scalable segment may go away (killed, stopped):
        // the producer gives what it held to the other replicas.
        if !status.success() && replica_of(&seg).is_some() {
            if !replicas_stopped {
                eprintln!(
                    "replica {seg} ended ({status}): the other replicas take over what it held"
                );
            }
        } else if !status.success() && failed.is_empty() {
            // Once we stopped the others, their ends are ours, not failures.
            failed.push(format!("{seg} ({status})"));
            for (other, pid) in live.values() {
                eprintln!("stopping segment `{other}`: another segment failed");
                if let Some(pid) = rustix::process::Pid::from_raw(*pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        // Every other segment has ended, so the flow is complete: a replica
        // still running came too late for the end of stream (it was still
        // connecting when its producer finished): stop it.
        if failed.is_empty()
            && !replicas_stopped
            && !live.is_empty()
            && live.values().all(|(s, _)| replica_of(s).is_some())
        {
            replicas_stopped = true;
            for (other, pid) in live.values() {
                eprintln!("stopping replica {other}: the flow has ended");
                if let Some(pid) = rustix::process::Pid::from_raw(*pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
            }
        }
    }
    for f in forwarders {
        let _ = f.join();
    }
    if !failed.is_empty() {
        bail!("segments failed: {}", failed.join(", "));
    }
    Ok(())
}

/// `flowmesh worker --flowgraph NAME`: the segment from the resource, on a
/// small tokio runtime for the API calls (the DSP threads are the
/// runtime's own).
fn cluster_worker(
    resource: flowmesh_k8s::ResourceRef,
    template: &str,
    a: WorkerArgs,
) -> Result<u8, WorkerFailure> {
    use flowmesh_worker::cluster::{self, ClusterConfig, Exit, Report};
    let peer_template =
        flowmesh_model::naming::PeerTemplate::parse(template).map_err(not_started)?;
    if !a.peers.is_empty() || a.stdin_peers {
        return Err(not_started(
            "--peer and --stdin-peers do not go with --flowgraph: peers come from --peer-template",
        )
        .into());
    }
    // In a cluster anyone on the pod network could join an edge without a
    // token; the operator mounts one from the FlowGraph's Secret.
    if token().is_empty() {
        return Err(not_started(
            "cluster mode needs a token: FLOWMESH_TOKEN is empty, so the edges would accept \
             anyone; set it (the operator sets it from the FlowGraph's `<name>-token` Secret)",
        )
        .into());
    }
    let cfg = ClusterConfig {
        resource,
        peer_template,
        worker: Config {
            segment: a.segment.clone(),
            listen: a.listen.clone(),
            peers: BTreeMap::new(),
            token: token(),
            generation: 0,
            resume: a.resume,
            threads: a.threads,
            state_dir: a.state_dir.clone(),
        },
        control: Some(control::Options {
            addr: a.control.clone(),
            token: crate::ctl_cmd::token(a.token_file.as_deref())
                .map_err(|e| not_started(format!("{e:#}")))?,
            open_reads: a.open_reads,
            params_from_resource: true,
            ..Default::default()
        }),
        grace: a.grace,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fm-control")
        .enable_all()
        .build()
        .context("cannot start the control-plane runtime")
        .before_start()?;
    let r = rt.block_on(async move {
        let client = kube::Client::try_default().await.map_err(|e| {
            not_started(format!(
                "cannot reach the Kubernetes API (no in-cluster service account, no usable \
                 KUBECONFIG): {e}"
            ))
        })?;
        let what = format!("segment `{}` of {}", a.segment, cfg.resource);
        if a.preflight {
            let first = flowmesh_k8s::source::fetch(&client, &cfg.resource).await;
            let (_, problems) = cluster::check(&cfg, first, false).map_err(not_started)?;
            if !problems.is_empty() {
                return Err(preflight_failed(&what, &problems).into());
            }
            println!("preflight passed: {what} can start on this host");
            return Ok(exit::ENDED);
        }
        let report = Report::new();
        match cluster::run(client, cfg, report).await {
            Ok(Exit::Deleted | Exit::Stopped { ended: true }) => Ok(exit::ENDED),
            Ok(Exit::Stopped { ended: false }) => Ok(exit::STOPPED),
            Err(e @ cluster::Error::Failed { .. }) => Err(WorkerFailure {
                code: exit::FAILED,
                error: e.into(),
            }),
            Err(cluster::Error::Preflight { problems, .. }) => {
                Err(preflight_failed(&what, &problems).into())
            }
            // Reading the resource, or building the segment: nothing ran.
            Err(e) => Err(not_started(e).into()),
        }
    });
    // The segment's threads may still run (a grace period that ran out):
    // the process ends with them, without waiting.
    rt.shutdown_timeout(Duration::from_millis(100));
    r
}
