//! `flowmesh run FILE`: runs a graph on the local runtime with live progress
//! (items per second per block; a bar when the run is finite), then prints a
//! summary. Ctrl-C stops the sources and drains; a second Ctrl-C aborts.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use flowmesh_runtime::{start, Graph, Running};
use indicatif::{ProgressBar, ProgressStyle};

/// Formats an item rate: `12.3 M/s`.
pub fn fmt_rate(r: f64) -> String {
    let (v, u) = if r >= 1e9 {
        (r / 1e9, "G")
    } else if r >= 1e6 {
        (r / 1e6, "M")
    } else if r >= 1e3 {
        (r / 1e3, "k")
    } else {
        (r, "")
    };
    format!("{v:.1} {u}/s")
}

/// Peak resident memory of this process (VmHWM) in kB, from /proc.
pub fn peak_rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Where the progress bar's total comes from: the tightest `head`.
pub fn head_total(spec: &flowmesh_model::FlowGraphSpec) -> Option<(String, u64)> {
    spec.blocks
        .iter()
        .filter(|(_, b)| b.kind == "head")
        .filter_map(|(n, b)| Some((n.clone(), b.params.get("n")?.as_f64()? as u64)))
        .min_by_key(|(_, n)| *n)
}

pub fn run(file: &Path, quiet: bool) -> Result<()> {
    let doc = crate::load(file)?;
    let head = head_total(&doc.spec);
    let graph = Graph::from_spec(&doc.spec)?;
    let kinds: Vec<(String, String)> = doc
        .spec
        .blocks
        .iter()
        .map(|(n, b)| (n.clone(), b.kind.clone()))
        .collect();
    supervise(start(graph)?, head, &kinds, quiet, "", None)
}

/// Shows progress of a running graph, handles Ctrl-C, prints the summary
/// (each line prefixed with `label`). `signals`: the caller handles the
/// signals itself and counts them there (`flowmesh worker`); `None`: Ctrl-C
/// stops the sources and drains, a second aborts.
pub fn supervise(
    running: Running,
    head: Option<(String, u64)>,
    kinds: &[(String, String)],
    quiet: bool,
    label: &str,
    signals: Option<Arc<AtomicUsize>>,
) -> Result<()> {
    let handle = running.handle();
    let own = signals.is_none();
    let presses = signals.unwrap_or_default();
    if own {
        let handle = handle.clone();
        let presses = presses.clone();
        let _ = ctrlc::set_handler(move || {
            if presses.fetch_add(1, Ordering::SeqCst) == 0 {
                eprintln!("\nstopping: sources end and the graph drains (Ctrl-C again to abort)");
                handle.stop();
            } else {
                std::process::exit(130);
            }
        });
    }
    let bar = if quiet || !label.is_empty() {
        ProgressBar::hidden()
    } else if let Some((_, n)) = &head {
        ProgressBar::new(*n).with_style(
            ProgressStyle::with_template(
                "{bar:30} {percent:>3}% {elapsed_precise} eta {eta} {msg}",
            )
            .expect("valid template"),
        )
    } else {
        ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .expect("valid template"),
        )
    };
    let t0 = Instant::now();
    let mut last: Vec<u64> = handle
        .stats()
        .iter()
        .map(|s| s.items_out().max(s.items_in()))
        .collect();
    let mut last_t = t0;
    while !running.wait_timeout(Duration::from_millis(500)) {
        if bar.is_hidden() {
            continue;
        }
        let dt = last_t.elapsed().as_secs_f64();
        last_t = Instant::now();
        let mut parts = vec![];
        for (i, s) in handle.stats().iter().enumerate() {
            let now = s.items_out().max(s.items_in());
            let r = (now - last[i]) as f64 / dt;
            last[i] = now;
            parts.push(format!("{} {}", s.name, fmt_rate(r)));
            if let Some((h, _)) = &head {
                if &s.name == h {
                    bar.set_position(s.items_out());
                }
            }
        }
        bar.set_message(parts.join(" · "));
    }
    bar.finish_and_clear();
    let report = running.wait()?;
    let secs = report.elapsed.as_secs_f64();
    if !quiet {
        eprintln!(
            "{label}{:<16} {:<20} {:>14} {:>14} {:>12}",
            "block", "kind", "items in", "items out", "rate"
        );
        for s in &report.stats {
            let kind = kinds
                .iter()
                .find(|(n, _)| *n == s.name)
                .map(|(_, k)| k.as_str())
                .unwrap_or("");
            let items = s.items_out().max(s.items_in());
            eprintln!(
                "{label}{:<16} {:<20} {:>14} {:>14} {:>12}",
                s.name,
                kind,
                s.items_in(),
                s.items_out(),
                fmt_rate(items as f64 / secs.max(1e-9))
            );
        }
        let mem = peak_rss_kb()
            .map(|k| format!(", peak memory {:.1} MB", k as f64 / 1024.0))
            .unwrap_or_default();
        let stopped = if presses.load(Ordering::SeqCst) > 0 {
            " (stopped)"
        } else {
            ""
        };
        eprintln!("{label}finished in {secs:.3} s{mem}{stopped}");
    }
    Ok(())
}
