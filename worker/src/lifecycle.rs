//! The worker's lifecycle on SIGTERM and SIGINT: a planned stop for a
//! restart (docs/worker.md, "Lifecycle").
//!
//! Kubernetes and Docker send SIGTERM when a pod or container is moved or
//! replaced, and SIGKILL once their grace period is over (30 s by default in
//! Kubernetes). On the first signal the worker stops the segment with
//! [`flowmesh_runtime::Handle::suspend`] — sources stop taking input, the
//! graph drains into its sinks, output edges hand what they hold to their
//! consumers and close without an end of stream — and gives that at most
//! its grace period ([`DEFAULT_GRACE`], `--grace-period`); then it exits
//! anyway. A second signal exits at once. Either way the exit code is
//! [`crate::exit::STOPPED`].
//!
//! The signals are read with `tokio::signal` on a thread of their own (file
//! mode) or in cluster mode's control-plane runtime; never on a DSP thread.

use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// How long a planned stop may take before the worker exits anyway: below
/// Kubernetes' default `terminationGracePeriodSeconds` of 30 s, so that the
/// worker, not SIGKILL, ends it.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(25);

/// SIGTERM and SIGINT, once registered (from then on they no longer kill
/// the process: they are delivered here).
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Registers for SIGTERM and SIGINT; must run inside a tokio runtime
    /// with its I/O driver enabled.
    pub fn new() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next signal and names it (`SIGTERM`, `SIGINT`).
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// What the first signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// A planned stop for a restart (SIGTERM; SIGINT too, unless
    /// [`watch`]'s `sigint_ends_stream`).
    Restart,
    /// End of stream, as `flowmesh run`'s Ctrl-C (SIGINT for the workers of
    /// `flowmesh run --distributed`).
    EndOfStream,
}

/// File mode: reads SIGTERM and SIGINT on a thread of its own. The first
/// calls `first(signal name, kind)` (which starts the stop); a second
/// signal, or the end of `grace` after the first, exits the process with
/// [`crate::exit::STOPPED`] at once, logging why with `label` (the
/// segment). Registration is done before this returns, so no signal is
/// missed afterwards.
pub fn watch(
    grace: Duration,
    label: String,
    sigint_ends_stream: bool,
    first: impl FnOnce(&'static str, StopKind) + Send + 'static,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut signals = rt.block_on(async { StopSignals::new() })?;
    std::thread::Builder::new()
        .name("fm-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                let name = signals.next().await;
                let kind = if name == "SIGINT" && sigint_ends_stream {
                    StopKind::EndOfStream
                } else {
                    StopKind::Restart
                };
                // On a thread of its own: if starting the stop blocks, the
                // grace period below still ends the process.
                if let Err(e) = std::thread::Builder::new()
                    .name("fm-stop".into())
                    .spawn(move || first(name, kind))
                {
                    eprintln!("{label}cannot start the planned stop ({e}): exiting at once");
                    std::process::exit(crate::exit::STOPPED.into());
                }
                let code = match kind {
                    StopKind::Restart => crate::exit::STOPPED,
                    // As `flowmesh run`: a second Ctrl-C aborts.
                    StopKind::EndOfStream => 130,
                };
                let deadline = async {
                    match kind {
                        StopKind::Restart => tokio::time::sleep(grace).await,
                        StopKind::EndOfStream => std::future::pending().await,
                    }
                };
                tokio::select! {
                    again = signals.next() => {
                        eprintln!("{label}{again} again: exiting at once (exit {code})");
                    }
                    _ = deadline => {
                        eprintln!(
                            "{label}the grace period of {} s is over and the segment has not \
                             stopped: exiting now (exit {code}); a restart with --resume takes \
                             up from what its sinks and consumers hold",
                            grace.as_secs_f64()
                        );
                    }
                }
                std::process::exit(code.into());
            })
        })?;
    Ok(())
}
