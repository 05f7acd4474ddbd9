//! `flowmesh status|get|set|post --worker URL` (a worker's control API,
//! docs/worker.md) and `flowmesh probe URL` (a health check for images
//! without a shell or curl).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use flowmesh_model::status::{EdgeRole, WorkerStatus};
use flowmesh_worker::client::{self, Response};
use serde_json::Value;

/// How long a control command waits for the worker.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The token: the file's first line if `--token-file` is given (without a
/// leading `FLOWMESH_TOKEN=`, so a Compose project's `flowmesh.env` works), else
/// `FLOWMESH_TOKEN` (none if neither).
pub fn token(file: Option<&Path>) -> Result<Option<String>> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the token file {}", f.display()))?;
        // A Compose project's env file (`FLOWMESH_TOKEN=…`) works too.
        let first = t.lines().next().unwrap_or_default().trim();
        let t = first
            .strip_prefix("FLOWMESH_TOKEN=")
            .unwrap_or(first)
            .trim()
            .to_string();
        if t.is_empty() {
            bail!("the token file {} is empty", f.display());
        }
        return Ok(Some(t));
    }
    Ok(std::env::var("FLOWMESH_TOKEN")
        .ok()
        .filter(|t| !t.is_empty()))
}

fn url(worker: &str, path: &str) -> String {
    let base = worker.trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_string()
    } else {
        format!("http://{base}")
    };
    format!("{base}{path}")
}

/// Percent-encodes a path segment (block and parameter names are plain,
/// but a typo should reach the worker as typed, for its message).
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The answer's JSON, or the worker's error as a readable failure.
fn answer(r: Response) -> Result<Value> {
    let v: Option<Value> = serde_json::from_slice(&r.body).ok();
    if r.is_success() {
        return v.context("the worker's answer is not JSON");
    }
    match v {
        Some(e) if e.get("message").is_some() => {
            let s = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let mut msg = format!(
                "{}: {} ({}, HTTP {})",
                s("path"),
                s("message"),
                s("code"),
                r.status
            );
            if !s("hint").is_empty() {
                msg.push_str(&format!("\n  hint: {}", s("hint")));
            }
            bail!(msg)
        }
        _ => bail!("HTTP {} {}: {}", r.status, r.reason, r.text().trim()),
    }
}

pub(crate) fn call(
    method: &str,
    worker: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Value> {
    let u = url(worker, path);
    let body = body.map(|b| b.to_string().into_bytes());
    let r = client::request(method, &u, token, body.as_deref(), TIMEOUT)
        .with_context(|| format!("{method} {u}"))?;
    answer(r)
}

pub fn status(worker: &str, token_file: Option<&PathBuf>, json: bool) -> Result<()> {
    let t = token(token_file.map(PathBuf::as_path))?;
    let v = call("GET", worker, "/status", t.as_deref(), None)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let s: WorkerStatus =
        serde_json::from_value(v).context("the worker's /status is not a WorkerStatus")?;
    print!("{}", show_status(&s));
    Ok(())
}

/// `flowmesh status` for a person.
pub fn show_status(s: &WorkerStatus) -> String {
    let mut o = format!(
        "segment {} of {} (generation {}): {}, up {:.0} s, {} items/s, backlog {} items\n",
        s.segment,
        s.flowgraph,
        s.generation,
        serde_json::to_value(s.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        s.uptime_seconds,
        crate::run_cmd::fmt_rate(s.items_per_second)
            .trim_end_matches("/s")
            .trim(),
        s.backlog_items
    );
    if let Some(r) = &s.restart_reason {
        o.push_str(&format!("restart required: {r}\n"));
    }
    if !s.preflight.is_empty() {
        o.push_str("not started; preflight problems:\n");
        for p in &s.preflight {
            o.push_str(&format!("  {}: {}\n", p.path, p.message));
        }
    }
    let lost: Vec<String> = s
        .items_lost
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    o.push_str(&format!(
        "items lost: {}\n",
        if lost.is_empty() {
            "none".to_string()
        } else {
            lost.join(", ")
        }
    ));
    o.push_str("blocks:\n");
    for (n, b) in &s.blocks {
        o.push_str(&format!(
            "  {n:<16} {:<18} in {:>12}  out {:>12}  busy {:.3} s\n",
            b.kind, b.items_in, b.items_out, b.busy_seconds
        ));
    }
    if !s.edges.is_empty() {
        o.push_str("edges:\n");
        for e in &s.edges {
            let role = match e.role {
                EdgeRole::Input => "input",
                EdgeRole::Output => "output",
            };
            let lost: u64 = e.items_lost.values().sum();
            o.push_str(&format!(
                "  {} ({role}): connections {}, items {}, bytes {}, frames {}, gaps {}, lost {}, backlog {}, retained {}/{}\n",
                e.edge, e.connections, e.items, e.bytes, e.frames, e.gaps, lost, e.backlog_items,
                e.retained_items, e.retention_items
            ));
            if let (Some(ms), Some(why)) =
                (e.producer_unreachable_since_ms, &e.producer_unreachable)
            {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                o.push_str(&format!(
                    "    producer unreachable for {:.0} s (since Unix time {:.3}): {why}\n",
                    now.saturating_sub(ms) as f64 / 1000.0,
                    ms as f64 / 1000.0
                ));
            }
        }
    }
    if !s.params.is_empty() {
        o.push_str("parameters:\n");
        for (b, m) in &s.params {
            for (p, v) in m {
                o.push_str(&format!(
                    "  {b}.{p} = {} (from offset {})\n",
                    v.value, v.offset
                ));
            }
        }
    }
    if let Some(e) = &s.last_error {
        o.push_str(&format!("last error: {e}\n"));
    }
    o
}

pub fn get(worker: &str, block: &str, param: &str, token_file: Option<&PathBuf>) -> Result<()> {
    let t = token(token_file.map(PathBuf::as_path))?;
    let v = call(
        "GET",
        worker,
        &format!("/params/{}/{}", seg(block), seg(param)),
        t.as_deref(),
        None,
    )?;
    println!(
        "{block}.{param} = {} (from offset {})",
        v["value"], v["offset"]
    );
    Ok(())
}

/// A command-line value: JSON if it parses, else a string (`0.5`, `true`,
/// `[1,2]` are JSON; `0.6+0.8j` and `hann` are strings).
pub fn parse_value(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

pub fn set(
    worker: &str,
    block: &str,
    param: &str,
    value: &str,
    token_file: Option<&PathBuf>,
) -> Result<()> {
    let t = token(token_file.map(PathBuf::as_path))?;
    let v = call(
        "PUT",
        worker,
        &format!("/params/{}/{}", seg(block), seg(param)),
        t.as_deref(),
        Some(&parse_value(value)),
    )?;
    println!(
        "{block}.{param} = {} from offset {}",
        v["value"], v["offset"]
    );
    Ok(())
}

pub fn post(
    worker: &str,
    block: &str,
    port: &str,
    msg: &str,
    token_file: Option<&PathBuf>,
) -> Result<()> {
    let t = token(token_file.map(PathBuf::as_path))?;
    let body: Value = serde_json::from_str(msg).with_context(|| {
        format!(
            "the message `{msg}` is not JSON (e.g. '{{\"constant\": 0.5}}', '\"text\"', '[1, 2]')"
        )
    })?;
    let v = call(
        "POST",
        worker,
        &format!("/messages/{}/{}", seg(block), seg(port)),
        t.as_deref(),
        Some(&body),
    )?;
    println!("{v}");
    Ok(())
}

/// `flowmesh probe URL`: GET; Ok on 2xx, else the one-line reason.
pub fn probe(url: &str, timeout: Duration) -> Result<()> {
    let r = client::request("GET", url, None, None, timeout).map_err(|e| anyhow::anyhow!("{e}"))?;
    if r.is_success() {
        return Ok(());
    }
    let why = serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| r.text().lines().next().unwrap_or_default().to_string());
    bail!("{url}: HTTP {} {}: {why}", r.status, r.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_json_then_string() {
        assert_eq!(parse_value("0.5"), serde_json::json!(0.5));
        assert_eq!(parse_value("[1, 2]"), serde_json::json!([1, 2]));
        assert_eq!(parse_value("0.6+0.8j"), serde_json::json!("0.6+0.8j"));
        assert_eq!(parse_value("\"x\""), serde_json::json!("x"));
        assert_eq!(
            url("127.0.0.1:9400/", "/status"),
            "http://127.0.0.1:9400/status"
        );
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn status_of_a_worker_not_started_lists_its_preflight_problems() {
        use flowmesh_model::status::{PreflightProblem, WorkerState};
        let s = WorkerStatus {
            flowgraph: "fg".into(),
            segment: "dsp".into(),
            generation: 4,
            state: WorkerState::Failed,
            restart_reason: None,
            uptime_seconds: 3.0,
            items_per_second: 0.0,
            backlog_items: 0,
            items_lost: Default::default(),
            blocks: Default::default(),
            edges: vec![],
            params: Default::default(),
            preflight: vec![PreflightProblem {
                path: "spec.blocks.rec.params.path".into(),
                message: "output directory `/data` does not exist".into(),
            }],
            last_error: None,
        };
        let text = show_status(&s);
        assert!(
            text.starts_with("segment dsp of fg (generation 4): failed"),
            "{text}"
        );
        assert!(
            text.contains(
                "not started; preflight problems:\n  spec.blocks.rec.params.path: output \
                 directory `/data` does not exist\n"
            ),
            "{text}"
        );
    }
}
