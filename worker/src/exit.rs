//! The exit codes of `flowmesh worker`, in one place (docs/worker.md,
//! "Lifecycle"): what a supervisor (Kubernetes, Docker, a shell) learns from
//! how the process ended.

/// The segment ended: every stream ended (in cluster mode: the FlowGraph
/// was deleted).
pub const ENDED: u8 = 0;
/// The segment failed at run time.
pub const FAILED: u8 = 1;
/// Bad command line, invalid graph, or a failed preflight: nothing was
/// started.
pub const NOT_STARTED: u8 = 2;
/// Stopped by SIGTERM or SIGINT as a planned restart (128 + 15, what a
/// shell reports for SIGTERM): the stream did not end; start it again with
/// `--resume`.
pub const STOPPED: u8 = 143;
