//! Flow control: head, throttle, tagger.

use std::time::{Duration, Instant};

use flowmesh_model::{Params, Pmt};

use crate::block::{Block, BlockError, BuiltBlock, Result, Work};
use crate::io::WorkIo;
use crate::tag::{keys, Tag};

use super::{stream_type, Implementation};

/// The blocks of this module.
pub(super) const BLOCKS: &[Implementation] = &[
    Implementation {
        kind: "head",
        build: |c| head(c.params, c.setup.start),
    },
    Implementation {
        kind: "throttle",
        build: |c| throttle(c.params),
    },
    Implementation {
        kind: "tagger",
        build: |c| tagger(c.params, c.setup.start),
    },
    Implementation {
        kind: "latency_probe",
        build: |c| latency_probe(c.params),
    },
];

/// `head`: passes the first `n` items, then ends. Input `in`, output `out`.
///
/// Its setup's `start` (a restarted segment resuming mid-stream, the
/// catalog declares it `output_indexed`) is the index of its first item in
/// the whole stream: it then passes the `n − start` items left.
pub struct Head {
    remaining: u64,
    item_size: usize,
}

impl Block for Head {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = (io.input_items(0).min(io.output_items(0)) as u64).min(self.remaining) as usize;
        if n > 0 {
            let b = n * self.item_size;
            io.output_bytes(0)[..b].copy_from_slice(&io.input_bytes(0)[..b]);
            io.consume(0, n);
            io.produce(0, n);
            self.remaining -= n as u64;
        }
        Ok(if self.remaining == 0 {
            Work::Done
        } else {
            Work::Ok
        })
    }
}

pub fn head(p: &Params, start: u64) -> Result<BuiltBlock, String> {
    let st = stream_type(p);
    Ok(BuiltBlock::new(Head {
        remaining: p.u64("n").unwrap_or(0).saturating_sub(start),
        item_size: st.item_size(),
    }))
}

/// `throttle`: at most `rate` items per second on average. It passes items in
/// bursts of about 10 ms and sleeps in between (no busy wait).
/// Input `in`, output `out`; `rate` (settable), `overflow` (drop | wait).
///
/// Its clock starts at the first item it has to pass (and again after a
/// `rate` change); item `i` (from 0) is passed no earlier than `(i+1)/rate`
/// seconds after that, and deadlines are computed from the start, so
/// wake-up delays do not accumulate. Items are passed at the end of the
/// burst that holds them, so the last item of a run can be up to one burst
/// late.
///
/// It is live: time does not stop when the output is full. With `overflow:
/// drop` the items that time released but the output could not take are
/// discarded, and the next item passed carries one `gap` tag
/// {first: input offset of the first lost item, count, cause: overflow}.
/// Once it has dropped, it passes items again only when its output has room
/// for a quarter of its buffer: a consumer that is catching up (after a
/// pause, a reconnection) frees room in steps, and answering the first
/// small step would leave a sliver of items between two gaps; this way one
/// overflow is one gap. Items dropped after the last item it passes (the
/// input ends while the output is still full) have no next item: their
/// `gap` tag goes on the end of the stream (docs/runtime.md, "End of
/// stream"), so every drop is accounted for.
pub struct Throttle {
    rate: f64,
    item_size: usize,
    start: Option<Instant>,
    passed: u64,
    drop: bool,
    dropped: u64,
    pending_gap: Option<(u64, u64)>,
}

/// After an overflow, the fraction of its output buffer that must be free
/// before a dropping throttle passes items again.
const RESUME_FREE_FRACTION: u64 = 4;

/// How much time a throttle releases at once: long enough that a throttled
/// graph wakes rarely (low CPU), short against any rate measurement.
const BURST_SECONDS: f64 = 0.010;

/// The `gap` tag at `offset` for `count` items dropped from input offset
/// `first` on.
fn overflow_gap(offset: u64, first: u64, count: u64) -> Tag {
    Tag::new(
        offset,
        keys::GAP,
        Pmt::map([
            ("first", Pmt::I64(first as i64)),
            ("count", Pmt::I64(count as i64)),
            ("cause", Pmt::String("overflow".into())),
        ]),
    )
}

impl Throttle {
    fn min_burst(&self) -> u64 {
        ((self.rate * BURST_SECONDS) as u64).max(1)
    }
}

impl Block for Throttle {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let avail = io.input_items(0) as u64;
        let space = io.output_items(0) as u64;
        let n = if self.drop { avail } else { avail.min(space) };
        if n == 0 {
            if avail == 0 && io.input_done(0) {
                // The input has ended. Items dropped after the last one
                // passed have no later item to carry their `gap` tag: it
                // goes on the end of the stream (offset = items written),
                // which the downstream blocks carry to their own ends.
                if let Some((first, count)) = self.pending_gap.take() {
                    let end = io.nitems_written(0);
                    io.add_tag(0, overflow_gap(end, first, count));
                }
                return Ok(Work::Done);
            }
            return Ok(Work::Ok);
        }
        let now = Instant::now();
        // The clock starts with the first item there is to pass, not at the
        // first call: time spent waiting for the upstream to start is no
        // allowance, which would otherwise come out as one catch-up burst
        // (too fast, and with `overflow: drop` partly dropped).
        let start = *self.start.get_or_insert(now);
        let allowed = (now.duration_since(start).as_secs_f64() * self.rate) as u64;
        let k = allowed.saturating_sub(self.passed).min(n);
        if k < self.min_burst().min(n) {
            let target = self.passed + self.min_burst().min(n);
            let at = start + Duration::from_secs_f64(target as f64 / self.rate);
            return Ok(Work::SleepUntil(at));
        }
        let overflowing = self.pending_gap.is_some()
            && space < (io.output_capacity(0) as u64 / RESUME_FREE_FRACTION).max(1);
        // Still overflowing: wait for real room.
        let pass = if overflowing {
            0
        } else {
            k.min(space) as usize
        };
        if pass > 0 {
            let b = pass * self.item_size;
            io.output_bytes(0)[..b].copy_from_slice(&io.input_bytes(0)[..b]);
            if let Some((first, count)) = self.pending_gap.take() {
                io.add_tag(0, overflow_gap(io.nitems_written(0), first, count));
            }
            io.produce(0, pass);
            io.consume(0, pass);
        }
        let lost = k - pass as u64;
        if lost > 0 {
            // Time released these items but the output is full: a live
            // source cannot wait, so they are lost, and said so.
            let first = io.nitems_read(0);
            io.consume(0, lost as usize);
            self.dropped += lost;
            self.pending_gap = Some(match self.pending_gap {
                Some((f, c)) => (f, c + lost),
                None => (first, lost),
            });
            tracing::warn!("throttle: output full, {lost} items dropped (overflow)");
        }
        self.passed += k;
        Ok(Work::Ok)
    }
    fn set(&mut self, name: &str, value: &Pmt) -> Result<()> {
        match name {
            "rate" => {
                self.rate = value.as_f64().ok_or_else(|| BlockError::BadValue {
                    name: name.into(),
                    message: "expected a number".into(),
                })?;
                // Restart the pacing clock at the new rate.
                self.start = None;
                self.passed = 0;
                Ok(())
            }
            _ => Err(BlockError::NotSettable(name.into())),
        }
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        match name {
            "rate" => Some(Pmt::F64(self.rate)),
            "dropped" => Some(Pmt::I64(self.dropped as i64)),
            _ => None,
        }
    }
}

pub fn throttle(p: &Params) -> Result<BuiltBlock, String> {
    let st = stream_type(p);
    Ok(BuiltBlock::new(Throttle {
        rate: p.f64("rate").unwrap_or(1.0),
        item_size: st.item_size(),
        start: None,
        passed: 0,
        drop: p.str("overflow") != Some("wait"),
        dropped: 0,
        pending_gap: None,
    })
    .live())
}

/// `tagger`: passes items and tags every `period`-th offset with its offset.
pub struct Tagger {
    /// Index in the whole stream of its first item (setup `start`).
    start: u64,
    time: bool,
    period: u64,
    key: std::sync::Arc<str>,
    item_size: usize,
}

impl Block for Tagger {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.input_items(0).min(io.output_items(0));
        if n == 0 {
            return Ok(Work::Ok);
        }
        let b = n * self.item_size;
        io.output_bytes(0)[..b].copy_from_slice(&io.input_bytes(0)[..b]);
        // In the whole stream's numbering (`self.start` on), like the tags'
        // values; the tags themselves sit at this block's own offsets.
        let start = self.start + io.nitems_written(0);
        let end = start + n as u64;
        let mut o = start.div_ceil(self.period) * self.period;
        while o < end {
            let v = if self.time { now_ns() } else { o as i64 };
            io.add_tag(
                0,
                Tag {
                    offset: o - self.start,
                    key: self.key.clone(),
                    value: Pmt::I64(v),
                },
            );
            o += self.period;
        }
        io.consume(0, n);
        io.produce(0, n);
        Ok(Work::Ok)
    }
}

pub fn tagger(p: &Params, start: u64) -> Result<BuiltBlock, String> {
    let st = stream_type(p);
    Ok(BuiltBlock::new(Tagger {
        start,
        time: p.str("value") == Some("time"),
        period: p.u64("period").unwrap_or(1024).max(1),
        key: p.str("key").unwrap_or("tick").into(),
        item_size: st.item_size(),
    }))
}

/// Wall-clock time in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// `latency_probe`: input `in`; parameter `key`. Collects the delay between
/// each tag's time stamp (a `tagger` with `value: time`) and its arrival.
pub struct LatencyProbe {
    key: String,
    delays_ns: Vec<i64>,
}

impl LatencyProbe {
    fn quantile(&self, q: f64) -> Option<i64> {
        let mut d = self.delays_ns.clone();
        if d.is_empty() {
            return None;
        }
        d.sort_unstable();
        Some(d[((d.len() - 1) as f64 * q).round() as usize])
    }
}

impl Block for LatencyProbe {
    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.input_items(0);
        if n == 0 {
            return Ok(Work::Ok);
        }
        let now = now_ns();
        for t in io.tags(0).iter().filter(|t| *t.key == *self.key) {
            if let Some(sent) = t.value.as_i64() {
                self.delays_ns.push(now - sent);
            }
        }
        io.consume(0, n);
        Ok(Work::Ok)
    }
    fn stop(&mut self) -> Result<()> {
        if let (Some(p50), Some(p99), Some(max)) =
            (self.quantile(0.5), self.quantile(0.99), self.quantile(1.0))
        {
            eprintln!(
                "latency_probe: {} tags, p50 {:.1} us, p99 {:.1} us, max {:.1} us",
                self.delays_ns.len(),
                p50 as f64 / 1e3,
                p99 as f64 / 1e3,
                max as f64 / 1e3
            );
        }
        Ok(())
    }
    fn get(&self, name: &str) -> Option<Pmt> {
        let us = |v: Option<i64>| v.map(|x| Pmt::F64(x as f64 / 1e3)).unwrap_or(Pmt::Null);
        match name {
            "count" => Some(Pmt::I64(self.delays_ns.len() as i64)),
            "p50_us" => Some(us(self.quantile(0.5))),
            "p99_us" => Some(us(self.quantile(0.99))),
            _ => None,
        }
    }
}

pub fn latency_probe(p: &Params) -> Result<BuiltBlock, String> {
    Ok(BuiltBlock::new(LatencyProbe {
        key: p.str("key").unwrap_or("tick").to_string(),
        delays_ns: vec![],
    })
    .tag_policy(flowmesh_model::catalog::TagPolicy::None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Graph;
    use crate::io::Item;
    use flowmesh_model::StreamType;
    use std::sync::{Arc, Mutex};

    type When = Arc<Mutex<Option<Instant>>>;

    /// A block's parameters from JSON.
    fn params(v: serde_json::Value) -> std::collections::BTreeMap<String, serde_json::Value> {
        serde_json::from_value(v).unwrap()
    }

    /// Produces nothing until `delay` has passed, then counts up endlessly;
    /// notes when it first produced.
    struct LateSource {
        wake: Option<Instant>,
        delay: Duration,
        next: u64,
        first: When,
    }

    impl Block for LateSource {
        fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
            let wake = *self.wake.get_or_insert_with(|| Instant::now() + self.delay);
            if Instant::now() < wake {
                return Ok(Work::SleepUntil(wake));
            }
            let n = io.output_items(0);
            let out = io.output::<u64>(0);
            for (i, o) in out[..n].iter_mut().enumerate() {
                *o = self.next + i as u64;
            }
            self.first.lock().unwrap().get_or_insert_with(Instant::now);
            io.produce(0, n);
            self.next += n as u64;
            Ok(Work::Ok)
        }
    }

    /// Takes `want` items; notes when the last arrived.
    struct TakeLast {
        want: u64,
        got: u64,
        last: When,
    }

    impl Block for TakeLast {
        fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
            let n = (io.input_items(0) as u64).min(self.want - self.got);
            io.consume(0, n as usize);
            self.got += n;
            Ok(if self.got == self.want {
                *self.last.lock().unwrap() = Some(Instant::now());
                Work::Done
            } else {
                Work::Ok
            })
        }
    }

    #[test]
    fn a_late_upstream_gets_no_catch_up_burst() {
        // The upstream starts 0.3 s late. 20 000 items at 100 000 items/s
        // still take at least 0.2 s from its first item (however loaded the
        // machine), with none dropped; a clock started at the first call
        // would pass 30 000 items' worth at once.
        let mut g = Graph::new();
        g.config.threads = 2;
        g.config.buffer_bytes = 1 << 20;
        let st = StreamType::scalar(u64::TYPE);
        let (first, last) = (When::default(), When::default());
        g.add_built(
            "src",
            BuiltBlock::new(LateSource {
                wake: None,
                delay: Duration::from_millis(300),
                next: 0,
                first: first.clone(),
            })
            .output("out", st),
        )
        .unwrap();
        g.add_block(
            "thr",
            "throttle",
            &params(serde_json::json!({"type": "u64", "rate": 1e5})),
        )
        .unwrap();
        g.add_built(
            "sink",
            BuiltBlock::new(TakeLast {
                want: 20_000,
                got: 0,
                last: last.clone(),
            })
            .input("in", st),
        )
        .unwrap();
        g.connect("src.out", "thr.in").unwrap();
        g.connect("thr.out", "sink.in").unwrap();
        let r = crate::run(g).unwrap();
        let first = first.lock().unwrap().expect("source produced");
        let last = last.lock().unwrap().expect("sink finished");
        let took = last - first;
        assert!(
            took >= Duration::from_millis(200),
            "20 000 items in {took:?}"
        );
        assert_eq!(r.get("thr", "dropped"), Some(Pmt::I64(0)));
    }

    /// One step of a [`Stall`]'s plan.
    enum Step {
        /// Take this many items, as they come.
        Pass(u64),
        /// Take none for this long.
        Pause(Duration),
        /// Take none until the input has ended.
        UntilInputEnds,
    }

    /// Passes items through along a plan (then all it can), as a consumer
    /// catching up after a stop does: pauses, a sliver of items, pauses.
    struct Stall {
        plan: std::collections::VecDeque<Step>,
        until: Option<Instant>,
    }

    impl Block for Stall {
        fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
            let limit = loop {
                match self.plan.front() {
                    Some(Step::Pause(d)) => {
                        let until = *self.until.get_or_insert_with(|| Instant::now() + *d);
                        if Instant::now() < until {
                            return Ok(Work::SleepUntil(until));
                        }
                        self.until = None;
                    }
                    Some(Step::UntilInputEnds) => {
                        if !io.input_done(0) {
                            return Ok(Work::Ok);
                        }
                    }
                    Some(Step::Pass(0)) => {}
                    Some(Step::Pass(left)) => break *left,
                    None => break u64::MAX,
                }
                self.plan.pop_front();
            };
            let n = (io.input_items(0).min(io.output_items(0)) as u64).min(limit) as usize;
            let b = n * 8;
            io.output_bytes(0)[..b].copy_from_slice(&io.input_bytes(0)[..b]);
            io.consume(0, n);
            io.produce(0, n);
            if let Some(Step::Pass(left)) = self.plan.front_mut() {
                *left -= n as u64;
            }
            Ok(Work::Ok)
        }
    }

    /// counter (n) → throttle at 1e6 items/s → a consumer following `plan`
    /// → stream_checker, with 64 KiB buffers; runs it to the end.
    fn run_stalled(n: u64, plan: std::collections::VecDeque<Step>) -> crate::scheduler::Report {
        let mut g = Graph::new();
        g.config.threads = 2;
        g.config.buffer_bytes = 64 << 10;
        let st = StreamType::scalar(u64::TYPE);
        g.add_block(
            "src",
            "counter_source",
            &params(serde_json::json!({"n": n})),
        )
        .unwrap();
        g.add_block(
            "thr",
            "throttle",
            &params(serde_json::json!({"type": "u64", "rate": 1e6})),
        )
        .unwrap();
        g.add_built(
            "stall",
            BuiltBlock::new(Stall { plan, until: None })
                .input("in", st)
                .output("out", st),
        )
        .unwrap();
        g.add_block(
            "check",
            "stream_checker",
            &params(serde_json::json!({"expect": n})),
        )
        .unwrap();
        g.connect("src.out", "thr.in").unwrap();
        g.connect("thr.out", "stall.in").unwrap();
        g.connect("stall.out", "check.in").unwrap();
        crate::run(g).expect("every loss is covered by a gap tag")
    }

    #[test]
    fn an_overflow_while_the_consumer_is_paused_is_one_gap_with_the_exact_count() {
        // 300 000 items at 1e6 items/s into a 64 KiB buffer (8192 items); the
        // consumer pauses 60 ms after 50 000 items, takes 1000 items, pauses
        // 60 ms again, then keeps up. Passing items into that first small
        // opening would leave them between two gaps.
        let r = run_stalled(
            300_000,
            [
                Step::Pass(50_000),
                Step::Pause(Duration::from_millis(60)),
                Step::Pass(1000),
                Step::Pause(Duration::from_millis(60)),
            ]
            .into(),
        );
        let dropped = r.get("thr", "dropped").and_then(|v| v.as_u64()).unwrap();
        assert!(
            dropped >= 80_000,
            "two 60 ms pauses at 1e6/s drop: {dropped}"
        );
        assert_eq!(
            r.get("check", "gaps"),
            Some(Pmt::I64(1)),
            "one overflow, one gap"
        );
        assert_eq!(
            r.get("check", "lost").and_then(|v| v.as_u64()),
            Some(dropped)
        );
        assert_eq!(
            r.get("check", "delivered").and_then(|v| v.as_u64()),
            Some(300_000 - dropped)
        );
    }

    #[test]
    fn a_drop_that_runs_to_the_end_of_the_stream_is_a_gap_on_the_end() {
        // 200 000 items at 1e6 items/s into a 64 KiB buffer (8192 items);
        // after 20 000 items the consumer takes nothing until the throttle's
        // input has ended, so the throttle drops to the end: no item follows
        // the loss, and its `gap` goes on the end of the stream, through the
        // consumer (which carries it to its own end) to the checker.
        let r = run_stalled(200_000, [Step::Pass(20_000), Step::UntilInputEnds].into());
        let dropped = r.get("thr", "dropped").and_then(|v| v.as_u64()).unwrap();
        // The throttle's output buffer holds at most 32 768 items (256 KiB
        // between threads); the rest after the pause is dropped.
        assert!(dropped >= 200_000 - 20_000 - 32_768, "dropped {dropped}");
        assert_eq!(r.get("check", "gaps"), Some(Pmt::I64(1)));
        assert_eq!(
            r.get("check", "lost").and_then(|v| v.as_u64()),
            Some(dropped)
        );
        assert_eq!(
            r.get("check", "delivered").and_then(|v| v.as_u64()),
            Some(200_000 - dropped)
        );
        assert_eq!(
            r.get("check", "causes"),
            Some(Pmt::map([("overflow", Pmt::I64(dropped as i64))]))
        );
    }
}
