//! Debug and message blocks: tag_debug, message_debug, rate_probe, jsonl_sink,
//! message_strobe, message_relay.
//!
//! - [`TagDebug`] prints and keeps the stream tags it sees;
//! - [`MessageDebug`] prints and keeps the messages it receives;
//! - [`RateProbe`] measures a stream's item rate and posts reports;
//! - [`JsonlSink`] writes each message as one JSON line (file or stdout);
//! - [`MessageStrobe`] posts a text message periodically (or numbered maps);
//! - [`MessageRelay`] forwards each message after a set amount of CPU work.
//!
//! Printing goes to standard output one line at a time; a closed standard
//! output (e.g. a pipe into `head`) is ignored by the debug printers rather
//! than failing the graph. `jsonl_sink`, whose output is its purpose, reports
//! write errors as block errors.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use flowmesh_model::catalog::TagPolicy;
use flowmesh_model::{Params, Pmt};

use crate::block::{Block, BlockError, BuiltBlock, Result, Work};
use crate::io::{Poster, WorkIo};
use crate::tag::Tag;

use super::Implementation;

/// The blocks of this module.
pub(super) const BLOCKS: &[Implementation] = &[
    Implementation {
        kind: "tag_debug",
        build: |c| tag_debug(c.params),
    },
    Implementation {
        kind: "message_debug",
        build: |c| message_debug(c.params),
    },
    Implementation {
        kind: "rate_probe",
        build: |c| rate_probe(c.params),
    },
    Implementation {
        kind: "jsonl_sink",
        build: |c| jsonl_sink(c.params),
    },
    Implementation {
        kind: "message_strobe",
        build: |c| message_strobe(c.params),
    },
    Implementation {
        kind: "message_relay",
        build: |c| message_relay(c.params),
    },
];

/// Prints one line to standard output, ignoring errors (closed pipes).
fn print_line(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// `t + d`, or a day after `t` when that would overflow (absurd periods).
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .unwrap_or_else(|| t + Duration::from_secs(86_400))
}

/// A tag as a `{offset, key, value}` map.
fn tag_pmt(t: &Tag) -> Pmt {
    Pmt::map([
        ("offset", Pmt::I64(t.offset.min(i64::MAX as u64) as i64)),
        ("key", Pmt::String(t.key.to_string())),
        ("value", t.value.clone()),
    ])
}

/// `tag_debug`: prints every stream tag it sees and keeps them.
///
/// Ports: input `in` (`type` x `vlen`). Parameters: `type`, `vlen`,
/// `display` (print `tag_debug: offset O key K value V` lines to standard
/// output, default true), `filter` (only tags with this key; empty: all).
/// Tags on the end of the stream (a final `gap`) come last, at offset = the
/// item count. Consumes everything. `get("tags")` returns the kept tags as a list of
/// `{offset, key, value}` maps in stream order; `get("count")` their number.
pub struct TagDebug {
    display: bool,
    filter: String,
    tags: Vec<Tag>,
    /// The end of the stream was seen (its tags printed).
    ended: bool,
}

impl TagDebug {
    fn see(&mut self, t: &Tag) {
        if !self.filter.is_empty() && *t.key != *self.filter {
            return;
        }
        if self.display {
            print_line(format_args!(
                "tag_debug: offset {} key {} value {}",
                t.offset, t.key, t.value
            ));
        }
        self.tags.push(t.clone());
    }
}

impl Block for TagDebug {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.input_items(0);
        if n == 0 {
            if io.input_done(0) && !self.ended {
                // Tags on the end of the stream (offset = the item count),
                // e.g. a final `gap`: printed and kept like the others.
                self.ended = true;
                for t in io.end_tags(0) {
                    self.see(t);
                }
            }
            return Ok(Work::Ok);
        }
        for t in io.tags(0) {
            self.see(t);
        }
        io.consume(0, n);
        Ok(Work::Ok)
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "tags" => Some(Pmt::List(self.tags.iter().map(tag_pmt).collect())),
            "count" => Some(Pmt::I64(self.tags.len() as i64)),
            "display" => Some(Pmt::Bool(self.display)),
            "filter" => Some(Pmt::String(self.filter.clone())),
            _ => None,
        }
    }
}

pub fn tag_debug(p: &Params) -> Result<BuiltBlock, String> {
    Ok(BuiltBlock::new(TagDebug {
        display: p.bool("display").unwrap_or(true),
        filter: p.str("filter").unwrap_or("").to_string(),
        tags: vec![],
        ended: false,
    })
    .tag_policy(TagPolicy::None))
}

/// `message_debug`: prints every message it receives and keeps them.
///
/// Ports: message input `in`. Parameters: `display` (print
/// `message_debug: MSG` lines to standard output, MSG being the message's
/// `Display` form — text as is, maps and lists as JSON; default true).
/// `get("messages")` returns the kept messages as a `Pmt::List` in arrival
/// order; `get("count")` their number. It ends when every sender has ended.
pub struct MessageDebug {
    display: bool,
    messages: Vec<Pmt>,
}

impl Block for MessageDebug {
    fn work(&mut self, _io: &mut WorkIo<'_>) -> Result<Work> {
        Ok(Work::Ok)
    }
    fn message(&mut self, _port: usize, msg: Pmt, _out: &mut Poster<'_>) -> Result<()> {
        if self.display {
            print_line(format_args!("message_debug: {msg}"));
        }
        self.messages.push(msg);
        Ok(())
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "messages" => Some(Pmt::List(self.messages.clone())),
            "count" => Some(Pmt::I64(self.messages.len() as i64)),
            "display" => Some(Pmt::Bool(self.display)),
            _ => None,
        }
    }
}

pub fn message_debug(p: &Params) -> Result<BuiltBlock, String> {
    Ok(BuiltBlock::new(MessageDebug {
        display: p.bool("display").unwrap_or(true),
        messages: vec![],
    }))
}

/// `rate_probe`: measures the item rate of a stream.
///
/// Ports: input `in` (`type` x `vlen`), message output `rate`. Parameters:
/// `type`, `vlen`, `interval` (seconds between reports, default 1).
/// Consumes everything it is given. When a `work` call finds that `interval`
/// has passed since the last report (or since start), it posts
/// `{rate: f64 items/s over the time since the last report, items: i64 total
/// so far}`. When the input ends it posts a last report (over the time since
/// the previous one) and finishes.
///
/// Reports are driven by the clock: with no input it waits with
/// `Work::Deadline` (woken by new items, or at the next report time at the
/// latest), so a stalled stream still gets its reports (rate 0) and there is
/// no busy wait.
pub struct RateProbe {
    interval: Duration,
    /// Time and item count of the last report (or of the start).
    last: Option<(Instant, u64)>,
    items: u64,
}

impl RateProbe {
    fn report(&mut self, now: Instant, io: &mut WorkIo<'_>) {
        let (t0, n0) = self.last.unwrap_or((now, 0));
        let dt = now.duration_since(t0).as_secs_f64();
        let rate = if dt > 0.0 {
            (self.items - n0) as f64 / dt
        } else {
            0.0
        };
        io.post(
            0,
            Pmt::map([
                ("rate", Pmt::F64(rate)),
                ("items", Pmt::I64(self.items.min(i64::MAX as u64) as i64)),
            ]),
        );
        self.last = Some((now, self.items));
    }
}

impl Block for RateProbe {
    fn start(&mut self) -> Result<()> {
        self.last = Some((Instant::now(), 0));
        Ok(())
    }
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.input_items(0);
        io.consume(0, n);
        self.items += n as u64;
        let now = Instant::now();
        if io.input_done(0) && io.input_items(0) == 0 {
            self.report(now, io);
            return Ok(Work::Done);
        }
        let (t, _) = *self.last.get_or_insert((now, 0));
        if now.duration_since(t) >= self.interval {
            self.report(now, io);
        }
        let (t, _) = *self.last.get_or_insert((now, 0));
        Ok(Work::Deadline(later(t, self.interval)))
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "items" => Some(Pmt::I64(self.items.min(i64::MAX as u64) as i64)),
            "interval" => Some(Pmt::F64(self.interval.as_secs_f64())),
            _ => None,
        }
    }
}

pub fn rate_probe(p: &Params) -> Result<BuiltBlock, String> {
    let interval = p.f64("interval").unwrap_or(1.0);
    if !(interval.is_finite() && interval >= 0.001) {
        return Err(format!("interval must be at least 0.001 s, got {interval}"));
    }
    Ok(BuiltBlock::new(RateProbe {
        interval: Duration::from_secs_f64(interval),
        last: None,
        items: 0,
    })
    .tag_policy(TagPolicy::None))
}

/// Where `jsonl_sink` writes.
enum JsonlOut {
    Stdout,
    File(BufWriter<File>),
}

/// `jsonl_sink`: writes each message as one line of JSON.
///
/// Ports: message input `in`. Parameters: `path` (file to create or
/// truncate, `-` for standard output; default `-`). Each message is written
/// as `Pmt::to_json` on one line and flushed at once (line-buffered); the
/// file is opened when the graph starts and flushed when the block stops.
/// Write errors fail the block. It ends when every sender has ended.
pub struct JsonlSink {
    path: String,
    out: Option<JsonlOut>,
    lines: u64,
}

impl Block for JsonlSink {
    fn start(&mut self) -> Result<()> {
        if self.out.is_none() {
            self.out = Some(if self.path == "-" {
                JsonlOut::Stdout
            } else {
                let f = File::create(&self.path)
                    .map_err(|e| BlockError::Io(format!("cannot create {}: {e}", self.path)))?;
                JsonlOut::File(BufWriter::new(f))
            });
        }
        Ok(())
    }
    fn work(&mut self, _io: &mut WorkIo<'_>) -> Result<Work> {
        Ok(Work::Ok)
    }
    fn message(&mut self, _port: usize, msg: Pmt, _out: &mut Poster<'_>) -> Result<()> {
        if self.out.is_none() {
            self.start()?;
        }
        let mut line = serde_json::to_string(&msg.to_json())
            .map_err(|e| BlockError::Failed(format!("cannot encode a message as JSON: {e}")))?;
        line.push('\n');
        match &mut self.out {
            Some(JsonlOut::File(f)) => {
                f.write_all(line.as_bytes())?;
                f.flush()?;
            }
            _ => {
                let mut o = std::io::stdout().lock();
                o.write_all(line.as_bytes())?;
                o.flush()?;
            }
        }
        self.lines += 1;
        Ok(())
    }
    fn stop(&mut self) -> Result<()> {
        match &mut self.out {
            Some(JsonlOut::File(f)) => f.flush()?,
            Some(JsonlOut::Stdout) => std::io::stdout().lock().flush()?,
            None => {}
        }
        Ok(())
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "path" => Some(Pmt::String(self.path.clone())),
            "lines" => Some(Pmt::I64(self.lines as i64)),
            _ => None,
        }
    }
}

pub fn jsonl_sink(p: &Params) -> Result<BuiltBlock, String> {
    let path = p.str("path").unwrap_or("-");
    if path.is_empty() {
        return Err("path must not be empty (use `-` for standard output)".into());
    }
    Ok(BuiltBlock::new(JsonlSink {
        path: path.to_string(),
        out: None,
        lines: 0,
    }))
}

/// `message_strobe`: posts a text message periodically.
///
/// Ports: message output `out`, message input `cmd`. Parameters: `message`
/// (the text, posted as `Pmt::String`; default "strobe"), `period` (seconds
/// between messages, settable; default 1), `count` (messages to send, 0:
/// endless). As GNU Radio's message_strobe, the first message goes out one
/// period after start, then one per period on a fixed schedule (ticks missed
/// while the process was held up are skipped, not sent in a burst). Between
/// messages it waits with `Work::Deadline` (no busy wait; a parameter change
/// wakes it, so a new `period`, which applies from the last message sent,
/// takes effect at once). After `count` messages it finishes,
/// and end of stream travels along its message edges. With `numbered` it
/// posts maps `{id, message}` with `id` 1, 2, 3, … (the ids scalable
/// segments acknowledge and de-duplicate by) and, with `payload_bytes`, a
/// `payload` of that many bytes.
pub struct MessageStrobe {
    message: String,
    numbered: bool,
    payload_bytes: usize,
    period: Duration,
    count: u64,
    sent: u64,
    /// When the last message was sent (or the block started).
    last: Option<Instant>,
    /// When the next message is due.
    next: Option<Instant>,
}

impl Block for MessageStrobe {
    fn start(&mut self) -> Result<()> {
        let now = Instant::now();
        self.last = Some(now);
        self.next = Some(later(now, self.period));
        Ok(())
    }
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        if self.count > 0 && self.sent >= self.count {
            return Ok(Work::Done);
        }
        let now = Instant::now();
        let next = *self.next.get_or_insert(later(now, self.period));
        if now < next {
            return Ok(Work::Deadline(next));
        }
        let msg = if self.numbered {
            let mut m = vec![
                ("id", Pmt::I64(self.sent as i64 + 1)),
                ("message", Pmt::String(self.message.clone())),
            ];
            if self.payload_bytes > 0 {
                m.push(("payload", Pmt::Bytes(vec![0x5a; self.payload_bytes])));
            }
            Pmt::map(m)
        } else {
            Pmt::String(self.message.clone())
        };
        io.post(0, msg);
        self.sent += 1;
        self.last = Some(next);
        if self.count > 0 && self.sent >= self.count {
            return Ok(Work::Done);
        }
        let mut following = later(next, self.period);
        if following < now {
            following = later(now, self.period);
        }
        self.next = Some(following);
        Ok(Work::Deadline(following))
    }
    fn set(&mut self, name: &str, value: &Pmt) -> Result<()> {
        match name {
            "period" => {
                let s = value.as_f64().ok_or_else(|| BlockError::BadValue {
                    name: name.into(),
                    message: "expected a number of seconds".into(),
                })?;
                let d = Duration::try_from_secs_f64(s).map_err(|_| BlockError::BadValue {
                    name: name.into(),
                    message: format!("must be a non-negative number of seconds, got {s}"),
                })?;
                self.period = d;
                if let Some(last) = self.last {
                    self.next = Some(later(last, d));
                }
                Ok(())
            }
            _ => Err(BlockError::NotSettable(name.into())),
        }
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "period" => Some(Pmt::F64(self.period.as_secs_f64())),
            "message" => Some(Pmt::String(self.message.clone())),
            "count" => Some(Pmt::I64(self.count as i64)),
            "sent" => Some(Pmt::I64(self.sent as i64)),
            _ => None,
        }
    }
}

pub fn message_strobe(p: &Params) -> Result<BuiltBlock, String> {
    let period = p.f64("period").unwrap_or(1.0);
    let period = Duration::try_from_secs_f64(period)
        .map_err(|_| format!("period must be a non-negative number of seconds, got {period}"))?;
    Ok(BuiltBlock::new(MessageStrobe {
        message: p.str("message").unwrap_or("strobe").to_string(),
        numbered: p.bool("numbered").unwrap_or(false),
        payload_bytes: p.u64("payload_bytes").unwrap_or(0) as usize,
        period,
        count: p.u64("count").unwrap_or(0),
        sent: 0,
        last: None,
        next: None,
    })
    .live())
}

/// `message_relay`: forwards every message unchanged after `work_us`
/// microseconds of CPU work (a stand-in for per-message analysis in tests
/// and benchmarks of scalable segments).
///
/// Ports: message input `in`, message output `out`. Parameters: `work_us`
/// (busy work per message, µs; default 0), `drop_payload` (forward a map
/// without its `payload` field, as an analysis that keeps features, not
/// samples; default false). The work is a spin on the calling DSP thread,
/// measured with `Instant`, so it costs real CPU time the way an analysis
/// would; the message's `id` is never changed.
pub struct MessageRelay {
    work: Duration,
    drop_payload: bool,
    forwarded: u64,
}

impl Block for MessageRelay {
    fn message(&mut self, _port: usize, mut msg: Pmt, out: &mut Poster<'_>) -> Result<()> {
        if let (true, Pmt::Map(m)) = (self.drop_payload, &mut msg) {
            m.remove("payload");
        }
        if !self.work.is_zero() {
            let until = Instant::now() + self.work;
            let mut x = 0u64;
            while Instant::now() < until {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        out.post(0, msg);
        self.forwarded += 1;
        Ok(())
    }
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let _ = io;
        Ok(Work::Ok)
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "forwarded" => Some(Pmt::I64(self.forwarded as i64)),
            "work_us" => Some(Pmt::I64(self.work.as_micros() as i64)),
            _ => None,
        }
    }
}

pub fn message_relay(p: &Params) -> Result<BuiltBlock, String> {
    Ok(BuiltBlock::new(MessageRelay {
        work: Duration::from_micros(p.u64("work_us").unwrap_or(0)),
        drop_payload: p.bool("drop_payload").unwrap_or(false),
        forwarded: 0,
    }))
}
