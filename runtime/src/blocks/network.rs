//! Network edge blocks (see [`crate::net`]) and the `stream_checker` fixture.

use std::time::Duration;

use flowmesh_model::catalog::TagPolicy;
use flowmesh_model::{Params, Pmt};

use crate::block::{Block, BlockError, BuiltBlock, Result, Work};
use crate::io::WorkIo;
use crate::net::msg::{NetMessageSink, NetMessageSource};
use crate::net::scale::{DistributeSink, GatherSource, PushSink, ReplicaSource, DEFAULT_WINDOW};
use crate::net::sink::{NetSink, MAX_FRAME_PAYLOAD};
use crate::net::source::NetSource;
use crate::tag::keys;

use super::{stream_type, BlockSetup, Env, Implementation};

/// The blocks of this module.
pub(super) const BLOCKS: &[Implementation] = &[
    Implementation {
        kind: "net_sink",
        build: |c| net_sink(c.params, c.env, c.setup),
    },
    Implementation {
        kind: "net_source",
        build: |c| net_source(c.params, c.env, c.setup),
    },
    Implementation {
        kind: "net_message_sink",
        build: |c| net_message_sink(c.params, c.env),
    },
    Implementation {
        kind: "net_message_source",
        build: |c| net_message_source(c.params, c.env),
    },
    Implementation {
        kind: "stream_checker",
        build: |c| stream_checker(c.params),
    },
];

/// The edge's generation (the partitioner's hash of its contract; 0 for an
/// edge written by hand).
fn generation(p: &Params) -> u64 {
    p.u64("generation").unwrap_or(0)
}

pub fn net_sink(p: &Params, env: &Env, setup: &BlockSetup) -> Result<BuiltBlock, String> {
    let st = stream_type(p);
    let retention = p.u64("retention_bytes").unwrap_or(16 << 20) as usize;
    let edge = p.str("edge").ok_or("missing edge")?;
    let sink = NetSink::new(
        &env.net,
        edge,
        generation(p),
        st,
        retention,
        p.bool("crc").unwrap_or(true),
        Duration::from_micros(p.u64("flush_us").unwrap_or(1000)),
    )
    .starting_at(setup.start)
    .lingering(
        p.u64("linger_s")
            .map_or(crate::net::sink::DEFAULT_LINGER, Duration::from_secs),
    );
    Ok(BuiltBlock::new(sink)
        .tag_policy(TagPolicy::Custom)
        .min_input_bytes(2 * retention))
}

pub fn net_source(p: &Params, env: &Env, setup: &BlockSetup) -> Result<BuiltBlock, String> {
    let st = stream_type(p);
    let edge = p.str("edge").ok_or("missing edge")?;
    let from = p.str("from").ok_or("missing from")?;
    let mut source = NetSource::new(env.net.clone(), edge, from, st)
        .generation(generation(p))
        .resume_from(setup.start);
    if let Some(path) = &setup.state_file {
        source = source.recording_state(path.clone());
    }
    if let Some(pi) = setup.producer {
        source = source.continuing(pi.instance, pi.base);
    }
    Ok(BuiltBlock::new(source)
        .tag_policy(TagPolicy::Custom)
        .min_output_bytes(4 * MAX_FRAME_PAYLOAD.max(st.item_size())))
}

pub fn net_message_sink(p: &Params, env: &Env) -> Result<BuiltBlock, String> {
    let edge = p.str("edge").ok_or("missing edge")?;
    if p.bool("distribute").unwrap_or(false) {
        let window = p.u64("window").unwrap_or(DEFAULT_WINDOW as u64).max(1) as usize;
        return Ok(BuiltBlock::new(DistributeSink::new(
            &env.net,
            edge,
            generation(p),
            window,
        )));
    }
    if p.bool("push").unwrap_or(false) {
        let to = p
            .str("to")
            .filter(|t| !t.is_empty())
            .ok_or("`push: true` needs `to`, the segment to push to")?;
        return Ok(BuiltBlock::new(PushSink::new(
            env.net.clone(),
            edge,
            to,
            generation(p),
        )));
    }
    Ok(BuiltBlock::new(NetMessageSink::new(
        &env.net,
        edge,
        generation(p),
    )))
}

pub fn net_message_source(p: &Params, env: &Env) -> Result<BuiltBlock, String> {
    let edge = p.str("edge").ok_or("missing edge")?;
    if p.bool("gather").unwrap_or(false) {
        return Ok(BuiltBlock::new(GatherSource::new(
            &env.net,
            edge,
            generation(p),
            p.bool("ordered").unwrap_or(false),
        )));
    }
    let from = p.str("from").ok_or("missing from")?;
    if p.bool("replica").unwrap_or(false) {
        return Ok(BuiltBlock::new(ReplicaSource::new(
            env.net.clone(),
            edge,
            from,
            generation(p),
            p.bool("ack_on_take").unwrap_or(false),
        )));
    }
    Ok(BuiltBlock::new(
        NetMessageSource::new(env.net.clone(), edge, from).generation(generation(p)),
    ))
}

/// `stream_checker`: input `in` (u64 counter items); parameter `expect`.
/// Fails on any jump, repeat or reordering not covered by a `gap` tag. The
/// first item may have any value (a restarted segment resumes mid-stream);
/// every later one must follow it; a `gap` on the first item counts as lost
/// what comes before its value. A `gap` with cause `restart` (the
/// producer started over) starts a new stream: the item it sits on may have
/// any value again, and `expect` applies to the last such stream (its
/// first value plus what followed must reach `expect`).
pub struct StreamChecker {
    tag_key: String,
    tags_checked: u64,
    started: bool,
    skipped: u64,
    next: u64,
    delivered: u64,
    lost: u64,
    gaps: u64,
    restarts: u64,
    expect: Option<u64>,
    /// The end of the stream was seen (and its tags counted).
    ended: bool,
    /// Items lost per `gap` cause.
    causes: std::collections::BTreeMap<String, u64>,
}

impl StreamChecker {
    fn count_cause(&mut self, t: &crate::tag::Tag) {
        let cause = t
            .value
            .get("cause")
            .and_then(Pmt::as_str)
            .unwrap_or("unknown");
        let count = t.value.get("count").and_then(Pmt::as_u64).unwrap_or(0);
        *self.causes.entry(cause.to_string()).or_default() += count;
    }

    /// A `gap` on the end of the stream (items lost after the last one, see
    /// `WorkIo::end_tags`): counted as lost, and the counter moves past
    /// them. With no item at all before it, its `first` says where the
    /// stream would have started (before: not ours to check).
    fn end_of_stream(&mut self, io: &WorkIo<'_>) {
        let gaps: Vec<crate::tag::Tag> = io
            .end_tags(0)
            .iter()
            .filter(|t| &*t.key == keys::GAP)
            .cloned()
            .collect();
        for t in &gaps {
            let first = t.value.get("first").and_then(Pmt::as_u64).unwrap_or(0);
            let count = t.value.get("count").and_then(Pmt::as_u64).unwrap_or(0);
            if !self.started {
                self.started = true;
                self.next = first;
                self.skipped = first;
            }
            self.next += count;
            self.lost += count;
            self.gaps += 1;
            self.count_cause(t);
        }
    }

    /// `cause: count, …` of the items lost.
    fn causes_text(&self) -> String {
        if self.causes.is_empty() {
            return "none".into();
        }
        let parts: Vec<String> = self
            .causes
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        parts.join(", ")
    }
}

impl Block for StreamChecker {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.input_items(0);
        if n == 0 {
            if io.input_done(0) && !self.ended {
                self.ended = true;
                self.end_of_stream(io);
            }
            return Ok(Work::Ok);
        }
        let base = io.nitems_read(0);
        let gaps: Vec<(u64, u64, u64, bool)> = io
            .tags(0)
            .iter()
            .filter(|t| &*t.key == keys::GAP)
            .map(|t| {
                (
                    t.offset,
                    t.value.get("first").and_then(Pmt::as_u64).unwrap_or(0),
                    t.value.get("count").and_then(Pmt::as_u64).unwrap_or(0),
                    t.value.get("cause").and_then(Pmt::as_str) == Some("restart"),
                )
            })
            .collect();
        for t in io.tags(0).iter().filter(|t| &*t.key == keys::GAP) {
            self.count_cause(t);
        }
        let x = io.input::<u64>(0);
        if !self.tag_key.is_empty() {
            for t in io.tags(0).iter().filter(|t| *t.key == *self.tag_key) {
                let i = (t.offset - base) as usize;
                if i < n && t.value.as_u64() != Some(x[i]) {
                    return Err(BlockError::Failed(format!(
                        "tag `{}` with value {} sits on item {} whose value is {}",
                        self.tag_key, t.value, t.offset, x[i]
                    )));
                }
                self.tags_checked += 1;
            }
        }
        let fresh = !self.started;
        if fresh {
            self.started = true;
            self.next = x[0];
            self.skipped = x[0]; // before our first item: not ours to check
        }
        // Items between gap tags must count up by one: checked 64 at a time
        // without branches (vectorised), item by item only to report.
        let mut i = 0usize;
        let mut g = gaps.iter().peekable();
        while i < n {
            let off = base + i as u64;
            while let Some(&&(at, first, count, restart)) = g.peek() {
                if at > off {
                    break;
                }
                g.next();
                if at == off && fresh && i == 0 && !restart {
                    // On the very first item, whose value already starts
                    // after the loss: the items are lost, not skipped, and
                    // the counter stays where that value put it.
                    self.lost += count;
                    self.gaps += 1;
                    self.skipped = self.skipped.saturating_sub(count);
                } else if at == off {
                    // `first` is in the coordinates of the stream where the
                    // loss happened; the count is what moves the counter.
                    let _ = first;
                    self.next += count;
                    self.lost += count;
                    self.gaps += 1;
                    if restart {
                        // A new stream: it continues from whatever comes.
                        self.restarts += 1;
                        self.next = x[i];
                        self.skipped = x[i];
                    }
                }
            }
            // Up to the next gap tag (or the end).
            let end = g
                .peek()
                .map_or(n, |&&(at, ..)| ((at - base) as usize).clamp(i + 1, n));
            let run = &x[i..end];
            let start = self.next;
            let mut ok = true;
            for (k, chunk) in run.chunks(64).enumerate() {
                let first = start.wrapping_add((k * 64) as u64);
                let good = chunk
                    .iter()
                    .zip(0u64..)
                    .fold(true, |a, (v, j)| a & (*v == first.wrapping_add(j)));
                if !good {
                    ok = false;
                    break;
                }
            }
            if !ok {
                let (j, v) = run
                    .iter()
                    .enumerate()
                    .find(|(j, v)| **v != start.wrapping_add(*j as u64))
                    .expect("a mismatch");
                let expected = start.wrapping_add(j as u64);
                let what = if *v < expected {
                    "repeat or reordering"
                } else {
                    "jump"
                };
                return Err(BlockError::Failed(format!(
                    "{what} at item {}: got {v}, expected {expected} (no gap tag covers it)",
                    base + (i + j) as u64
                )));
            }
            self.next = start.wrapping_add(run.len() as u64);
            self.delivered += run.len() as u64;
            i = end;
        }
        io.consume(0, n);
        Ok(Work::Ok)
    }

    fn stop(&mut self) -> Result<()> {
        if !self.tag_key.is_empty() {
            eprintln!(
                "stream_checker: {} items in order, {} lost, {} `{}` tags on the right items",
                self.delivered, self.lost, self.tags_checked, self.tag_key
            );
        }
        if let Some(e) = self.expect {
            // `next` = first value + items + gap counts since the last start.
            if self.next != e {
                return Err(BlockError::Failed(format!(
                    "expected {e} items, got {} delivered + {} lost (+ {} before the first one, \
                     {} restarts; lost by cause: {}): the stream ends before item {}",
                    self.delivered,
                    self.lost,
                    self.skipped,
                    self.restarts,
                    self.causes_text(),
                    self.next
                )));
            }
            eprintln!(
                "stream_checker: {e} items = {} delivered + {} lost + {} before the first one \
                 ({} restarts; lost by cause: {})",
                self.delivered,
                self.lost,
                self.skipped,
                self.restarts,
                self.causes_text()
            );
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "delivered" => Some(Pmt::I64(self.delivered as i64)),
            "lost" => Some(Pmt::I64(self.lost as i64)),
            "gaps" => Some(Pmt::I64(self.gaps as i64)),
            "restarts" => Some(Pmt::I64(self.restarts as i64)),
            "tags_checked" => Some(Pmt::I64(self.tags_checked as i64)),
            "skipped" => Some(Pmt::I64(self.skipped as i64)),
            "causes" => Some(Pmt::map(
                self.causes
                    .iter()
                    .map(|(c, n)| (c.as_str(), Pmt::I64(*n as i64))),
            )),
            _ => None,
        }
    }
}

pub fn stream_checker(p: &Params) -> Result<BuiltBlock, String> {
    Ok(BuiltBlock::new(StreamChecker {
        tag_key: p.str("tag_key").unwrap_or("").to_string(),
        tags_checked: 0,
        started: false,
        skipped: 0,
        next: 0,
        delivered: 0,
        lost: 0,
        gaps: 0,
        restarts: 0,
        expect: p.u64("expect"),
        ended: false,
        causes: Default::default(),
    })
    .tag_policy(TagPolicy::None))
}
