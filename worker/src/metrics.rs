//! The worker's metrics in the Prometheus text exposition format (0.0.4),
//! served at `GET /metrics` by the control API (docs/worker.md lists them).
//!
//! Names follow Prometheus conventions: the `flowmesh_` prefix, `_total`
//! for counters, base units (seconds, bytes); the process figures use the
//! standard `process_` names every Prometheus client library exports, so
//! existing dashboards find them. Every series of the worker carries the
//! labels `flowgraph` and `segment`.
//!
//! The text is written here rather than through a client library's
//! registry: every figure already lives in the runtime (block counters,
//! [`EdgeStats`](flowmesh_runtime::net::stats::EdgeStats)) and is read once
//! per scrape, so a registry would only hold copies.

use std::fmt::Write;

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One metric family being written: its samples follow its HELP and TYPE.
pub struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

/// A Prometheus text document.
#[derive(Default)]
pub struct Text {
    out: String,
}

impl Text {
    /// Starts a family named `name` (with `_total` for counters).
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        debug_assert_eq!(kind == Kind::Counter, name.ends_with("_total"));
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        Family {
            out: &mut self.out,
            name,
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

impl Family<'_> {
    /// Adds a sample with these labels.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
        self
    }
}

/// A sample value: integers without a fraction, `NaN` and `±Inf` by name.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text escapes `\` and newlines.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// This process's CPU time (user + system) and resident memory, from
/// `/proc/self/stat` (Linux); `None` where it cannot be read.
pub fn process() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), in brackets.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // man 5 proc: utime is field 14, stime 15, rss 24; `rest` starts at 3.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as u64;
    Some(((utime + stime) as f64 / ticks, rss_pages * page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let mut t = Text::default();
        t.family("flowmesh_x_total", Kind::Counter, "a \\ help\nline")
            .sample(&[("block", "a\"b\\c\nd")], 3.0)
            .sample(&[], 0.5);
        assert_eq!(
            t.finish(),
            "# HELP flowmesh_x_total a \\\\ help\\nline\n# TYPE flowmesh_x_total counter\n\
             flowmesh_x_total{block=\"a\\\"b\\\\c\\nd\"} 3\nflowmesh_x_total 0.5\n"
        );
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(1e20), "100000000000000000000");
    }

    #[test]
    fn process_figures_are_read() {
        let (cpu, rss) = process().expect("/proc/self/stat");
        assert!(cpu >= 0.0);
        assert!(rss > 0);
    }
}
