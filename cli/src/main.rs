//! The `flowmesh` command: run, validate and inspect FlowGraph files.

mod blocks_cmd;
mod compose_cmd;
mod ctl_cmd;
mod dist_cmd;
mod operator_cmd;
mod run_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use flowmesh_model::validate::{validate_text, Report};
use flowmesh_model::FlowGraphDocument;

#[derive(Parser)]
#[command(
    name = "flowmesh",
    version,
    about = "Run, validate and inspect FlowMesh flowgraphs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the Kubernetes operator: reconcile FlowGraph resources into
    /// segment workloads (in-cluster service account, or KUBECONFIG).
    Operator(operator_cmd::OperatorArgs),
    /// Run a FlowGraph file on the local runtime (no cluster needed).
    Run {
        file: PathBuf,
        /// No live progress display.
        #[arg(long, short)]
        quiet: bool,
        /// One worker process per segment, joined by TCP on this machine.
        #[arg(long)]
        distributed: bool,
        /// With --distributed: join the workers by Unix-domain sockets
        /// instead of TCP (same machine only; faster).
        #[arg(long, requires = "distributed")]
        unix: bool,
    },
    /// Run one segment of a FlowGraph (what each distributed process runs):
    /// from a file, or in cluster mode from a FlowGraph resource
    /// (`--flowgraph NAME --namespace NS`, in-cluster service account or
    /// KUBECONFIG).
    Worker {
        /// The FlowGraph file (not with --flowgraph).
        #[arg(required_unless_present = "flowgraph", conflicts_with = "flowgraph")]
        file: Option<PathBuf>,
        /// Cluster mode: the FlowGraph resource to read and follow.
        #[arg(long)]
        flowgraph: Option<String>,
        /// Cluster mode: the resource's namespace.
        #[arg(long, default_value = "default", requires = "flowgraph")]
        namespace: String,
        /// Every peer's address, from the placeholders {flowgraph},
        /// {namespace}, {segment} (`naming::segment_label`) and {service}
        /// (the segment's Service name). Cluster mode: default
        /// `{service}.{namespace}.svc:7400`. File mode: no default; a
        /// `--peer` given for a segment wins over the template; Compose
        /// projects (`flowmesh compose`) use `{segment}:7400`.
        #[arg(long, conflicts_with = "stdin_peers")]
        peer_template: Option<String>,
        /// The segment to run.
        #[arg(long)]
        segment: String,
        /// Where to accept consumers of this segment's edges.
        #[arg(long, default_value = "0.0.0.0:7400")]
        listen: String,
        /// Address of another segment, SEGMENT=HOST:PORT (repeatable).
        #[arg(long = "peer")]
        peers: Vec<String>,
        /// Print `LISTEN addr`, then read `PEER seg addr` lines until `GO` from stdin.
        #[arg(long)]
        stdin_peers: bool,
        /// This is a restart: resume inputs from what this segment's
        /// `mode: append` file sinks already hold and where the consumers
        /// of its network sinks resume.
        #[arg(long)]
        resume: bool,
        /// Pool threads for this segment unless the file sets
        /// spec.runtime.threads (default: one per core).
        #[arg(long)]
        threads: Option<u32>,
        /// Directory where the segment records which producer instance each
        /// input edge reads, so that `--resume` names it and a producer that
        /// restarted too is detected and marked, and the live parameter
        /// changes it applied (`params.jsonl`), which `--resume` replays at
        /// their item offsets (keep it with the segment's files).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Where to serve the control and health API (docs/worker.md).
        #[arg(long, default_value = flowmesh_worker::control::DEFAULT_ADDR)]
        control: String,
        /// Read the control API's token from this file instead of
        /// FLOWMESH_TOKEN (which the network edges use).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Serve /metrics, /status and GET /params without a token
        /// (/healthz and /readyz are always open).
        #[arg(long)]
        open_reads: bool,
        /// Check the segment on this host (graph, files, addresses, state
        /// directory), report every problem and exit: 0 when it could
        /// start, 2 when not. Starts nothing.
        #[arg(long)]
        preflight: bool,
        #[arg(long, short)]
        quiet: bool,
        /// On SIGTERM or SIGINT (a planned restart) the segment drains and
        /// hands its output edges over for at most this many seconds, then
        /// exits anyway (exit 143); keep it below the supervisor's own
        /// (Kubernetes: terminationGracePeriodSeconds, 30 by default).
        #[arg(long, value_name = "SECONDS", default_value_t = 25.0)]
        grace_period: f64,
        /// The name of this replica of a scalable segment in its log lines
        /// and /status (`run --distributed` names them `SEGMENT#0`,
        /// `SEGMENT#1`, …; docs/scaling.md).
        #[arg(long, value_name = "NAME")]
        replica_name: Option<String>,
    },
    /// Write a Docker Compose project for a FlowGraph (one service per
    /// segment; docs/compose.md), and start or stop it.
    Compose {
        file: PathBuf,
        /// The project directory (default: `<flowgraph name>-compose`).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The worker image.
        #[arg(long, default_value = "flowmesh:dev")]
        image: String,
        /// The Compose project name (default: the FlowGraph's name as a
        /// label).
        #[arg(long)]
        project: Option<String>,
        /// Seconds a stopped worker gets after SIGTERM before SIGKILL.
        #[arg(long, default_value_t = 30)]
        stop_grace_period: u32,
        /// Then start it (`docker-compose up -d`).
        #[arg(long, conflicts_with = "down")]
        up: bool,
        /// Stop and remove the project's containers and network (writes
        /// nothing); its volumes are kept unless --volumes.
        #[arg(long)]
        down: bool,
        /// With --down: remove the volumes too (the segments' files and
        /// resume state).
        #[arg(long, requires = "down")]
        volumes: bool,
    },
    /// Show a worker's status (its control API's /status), or every
    /// segment's of a Compose project.
    Status {
        /// The worker's control API, e.g. http://127.0.0.1:9400.
        #[arg(long, required_unless_present = "compose", conflicts_with = "compose")]
        worker: Option<String>,
        /// A project directory written by `flowmesh compose`.
        #[arg(long)]
        compose: Option<PathBuf>,
        /// Read the token from this file instead of FLOWMESH_TOKEN.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the JSON as the worker sends it.
        #[arg(long)]
        json: bool,
    },
    /// Read a parameter of a block running in a worker.
    Get {
        #[arg(long)]
        worker: String,
        block: String,
        param: String,
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Change a parameter of a block running in a worker (VALUE is JSON,
    /// or else a string: 0.5, true, "0.6+0.8j", hann).
    Set {
        #[arg(long)]
        worker: String,
        block: String,
        param: String,
        #[arg(allow_hyphen_values = true)]
        value: String,
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Send a JSON message to a message input of a block running in a worker.
    Post {
        #[arg(long)]
        worker: String,
        block: String,
        port: String,
        json: String,
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// GET a URL: exit 0 on a 2xx answer, else 1 with a one-line reason
    /// (health checks in images without a shell or curl).
    Probe {
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Check a FlowGraph file, the segments' Kubernetes settings included,
    /// and report every problem with its path.
    Validate { file: PathBuf },
    /// Print the FlowGraph CustomResourceDefinition as YAML (what
    /// crds/flowgraph.yaml holds): `flowmesh crd | kubectl apply -f -`.
    Crd,
    /// List block kinds, or show one with its ports and parameters.
    Blocks {
        kind: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the graph as Graphviz dot or Mermaid.
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
}

/// Reads and validates a file; on problems prints them all and fails.
/// `run`, `graph` and the workers use the model's validation (they ignore
/// the segments' `kubernetes` settings).
pub(crate) fn load(file: &Path) -> Result<FlowGraphDocument> {
    load_with(file, validate_text)
}

/// Reads a file and validates it with `validate`.
fn load_with(
    file: &Path,
    validate: fn(&str) -> (Option<FlowGraphDocument>, Report),
) -> Result<FlowGraphDocument> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (doc, report) = validate(&text);
    match doc {
        Some(doc) if report.is_ok() => Ok(doc),
        _ => Err(invalid(file, &report)),
    }
}

fn invalid(file: &Path, report: &Report) -> anyhow::Error {
    let n = report.problems.len();
    let mut s = format!(
        "{} is invalid ({n} problem{}); nothing was started:\n",
        file.display(),
        if n == 1 { "" } else { "s" }
    );
    for p in &report.problems {
        s.push_str(&format!("  {}: {}\n", p.path, p.message));
        if !p.hint.is_empty() {
            s.push_str(&format!("      hint: {}\n", p.hint));
        }
    }
    anyhow::anyhow!(s.trim_end().to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The operator logs at info by default, and as JSON lines on request.
    let (default_level, json) = match &cli.cmd {
        Cmd::Operator(a) => ("info", a.log_format == operator_cmd::LogFormat::Json),
        _ => ("warn", false),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOWMESH_LOG")
        .unwrap_or_else(|_| default_level.into());
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    // Panics inside blocks are reported as run errors naming the block; keep
    // the default hook's backtrace noise for panics elsewhere only.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_worker = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("fm-"));
        if !in_worker || std::env::var_os("RUST_BACKTRACE").is_some() {
            default_hook(info);
        }
    }));
    let r = match cli.cmd {
        Cmd::Operator(a) => operator_cmd::operator(a),
        Cmd::Run {
            file,
            quiet,
            distributed,
            unix,
        } => {
            if distributed {
                dist_cmd::distributed(&file, quiet, unix)
            } else {
                run_cmd::run(&file, quiet)
            }
        }
        Cmd::Worker {
            file,
            flowgraph,
            namespace,
            peer_template,
            segment,
            listen,
            peers,
            stdin_peers,
            resume,
            threads,
            state_dir,
            control,
            token_file,
            open_reads,
            preflight,
            quiet,
            grace_period,
            replica_name,
        } => {
            // Its exit code tells how the segment ended (docs/worker.md).
            return match dist_cmd::worker(
                dist_cmd::Source::new(file, flowgraph, namespace, peer_template),
                dist_cmd::WorkerArgs {
                    segment,
                    listen,
                    peers,
                    stdin_peers,
                    resume,
                    threads,
                    state_dir,
                    control,
                    token_file,
                    open_reads,
                    preflight,
                    quiet,
                    grace: Duration::from_secs_f64(grace_period.clamp(0.0, 86_400.0)),
                    replica_name,
                },
            ) {
                Ok(code) => ExitCode::from(code),
                Err(f) => {
                    eprintln!("error: {:#}", f.error);
                    ExitCode::from(f.code)
                }
            };
        }
        Cmd::Compose {
            file,
            output,
            image,
            project,
            stop_grace_period,
            up,
            down,
            volumes,
        } => {
            let action = if down {
                compose_cmd::Action::Down { volumes }
            } else if up {
                compose_cmd::Action::Up
            } else {
                compose_cmd::Action::Write
            };
            compose_cmd::default_dir(&file, output).and_then(|dir| {
                compose_cmd::run(
                    &file,
                    &dir,
                    &compose_cmd::Options {
                        image,
                        project,
                        stop_grace_seconds: stop_grace_period,
                    },
                    action,
                )
            })
        }
        Cmd::Status {
            worker,
            compose,
            token_file,
            json,
        } => match (worker, compose) {
            (_, Some(dir)) => compose_cmd::status(&dir, json),
            (Some(w), None) => ctl_cmd::status(&w, token_file.as_ref(), json),
            (None, None) => unreachable!("clap requires --worker or --compose"),
        },
        Cmd::Get {
            worker,
            block,
            param,
            token_file,
        } => ctl_cmd::get(&worker, &block, &param, token_file.as_ref()),
        Cmd::Set {
            worker,
            block,
            param,
            value,
            token_file,
        } => ctl_cmd::set(&worker, &block, &param, &value, token_file.as_ref()),
        Cmd::Post {
            worker,
            block,
            port,
            json,
            token_file,
        } => ctl_cmd::post(&worker, &block, &port, &json, token_file.as_ref()),
        Cmd::Probe { url, timeout } => ctl_cmd::probe(
            &url,
            std::time::Duration::from_secs_f64(timeout.clamp(0.001, 3600.0)),
        ),
        // Everything a cluster would check too: the segments' Kubernetes settings.
        Cmd::Validate { file } => load_with(&file, flowmesh_k8s::validate_text).map(|doc| {
            println!(
                "{}: valid ({} blocks, {} connections)",
                file.display(),
                doc.spec.blocks.len(),
                doc.spec.connections.len()
            );
        }),
        Cmd::Crd => {
            print!("{}", flowmesh_k8s::crd::crd_yaml());
            Ok(())
        }
        Cmd::Blocks { kind, json } => blocks_cmd::blocks(kind.as_deref(), json),
        Cmd::Graph { file, format } => load(&file).map(|doc| {
            let s = match format {
                GraphFormat::Dot => flowmesh_model::render::to_dot(&doc.spec),
                GraphFormat::Mermaid => flowmesh_model::render::to_mermaid(&doc.spec),
            };
            print!("{s}");
        }),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<dist_cmd::NotStarted>().is_some() {
                ExitCode::from(flowmesh_worker::exit::NOT_STARTED)
            } else {
                ExitCode::from(flowmesh_worker::exit::FAILED)
            }
        }
    }
}
