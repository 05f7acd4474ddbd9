//! Single-block test harness: runs one block inside the real scheduler, fed
//! from memory in random chunk sizes, and collects its outputs, tags and
//! messages.
//!
//! ```ignore
//! let out = Harness::new(build("fir_filter", &params)?)
//!     .input(&samples)
//!     .chunks(7, 100)          // random chunks of 1..=100 items, seed 7
//!     .run()?;
//! let y: Vec<Complex32> = out.items(0);
//! ```
//!
//! [`Harness::run_chunked`] runs the same block under several chunkings and
//! checks that the outputs are bit-identical, which every block must satisfy.

use std::sync::{Arc, Mutex};

use flowmesh_model::catalog::ResolvedKind;
use flowmesh_model::{Pmt, StreamType};

use crate::block::{Block, BuiltBlock, Result as BlockResult, Work};
use crate::graph::{Config, Graph};
use crate::io::{Item, Poster, WorkIo};
use crate::scheduler;
use crate::tag::Tag;

/// A deterministic pseudo-random sequence (SplitMix64).
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `1..=max`.
    pub fn chunk(&mut self, max: usize) -> usize {
        1 + (self.next_u64() % max.max(1) as u64) as usize
    }
}

struct Feeder {
    data: Vec<u8>,
    item_size: usize,
    tags: Vec<Tag>,
    pos: usize,
    rng: Option<(SplitMix, usize)>,
}

impl Block for Feeder {
    fn work(&mut self, io: &mut WorkIo<'_>) -> BlockResult<Work> {
        let total = self.data.len() / self.item_size;
        let mut n = io.output_items(0).min(total - self.pos);
        if let Some((rng, max)) = &mut self.rng {
            n = n.min(rng.chunk(*max));
        }
        let b = n * self.item_size;
        io.output_bytes(0)[..b].copy_from_slice(&self.data[self.pos * self.item_size..][..b]);
        let (lo, hi) = (self.pos as u64, (self.pos + n) as u64);
        for t in self.tags.iter().filter(|t| t.offset >= lo && t.offset < hi) {
            io.add_tag(0, t.clone());
        }
        io.produce(0, n);
        self.pos += n;
        Ok(if self.pos == total {
            // Tags at or past the end go on the end of the stream.
            for t in self.tags.iter().filter(|t| t.offset >= total as u64) {
                io.add_tag(
                    0,
                    Tag {
                        offset: total as u64,
                        ..t.clone()
                    },
                );
            }
            Work::Done
        } else {
            Work::Ok
        })
    }
}

#[derive(Default)]
struct Collected {
    bytes: Vec<u8>,
    tags: Vec<Tag>,
}

struct Collector {
    item_size: usize,
    out: Arc<Mutex<Collected>>,
    rng: Option<(SplitMix, usize)>,
    /// The end of the stream was seen (its tags collected).
    ended: bool,
}

impl Block for Collector {
    fn work(&mut self, io: &mut WorkIo<'_>) -> BlockResult<Work> {
        let mut n = io.input_items(0);
        if let Some((rng, max)) = &mut self.rng {
            n = n.min(rng.chunk(*max));
        }
        let mut c = self.out.lock().unwrap();
        if io.input_items(0) == 0 && io.input_done(0) && !self.ended {
            self.ended = true;
            c.tags.extend(io.end_tags(0).iter().cloned());
        }
        let lo = io.nitems_read(0);
        c.tags.extend(
            io.tags(0)
                .iter()
                .filter(|t| t.offset < lo + n as u64)
                .cloned(),
        );
        c.bytes
            .extend_from_slice(&io.input_bytes(0)[..n * self.item_size]);
        io.consume(0, n);
        Ok(Work::Ok)
    }
}

struct MsgFeeder {
    msgs: Vec<Pmt>,
}

impl Block for MsgFeeder {
    fn work(&mut self, io: &mut WorkIo<'_>) -> BlockResult<Work> {
        for m in self.msgs.drain(..) {
            io.post(0, m);
        }
        Ok(Work::Done)
    }
}

struct MsgCollector {
    out: Arc<Mutex<Vec<Pmt>>>,
}

impl Block for MsgCollector {
    fn work(&mut self, _io: &mut WorkIo<'_>) -> BlockResult<Work> {
        Ok(Work::Ok)
    }
    fn message(&mut self, _port: usize, msg: Pmt, _out: &mut Poster<'_>) -> BlockResult<()> {
        self.out.lock().unwrap().push(msg);
        Ok(())
    }
}

/// One collected output stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    pub stype: Option<StreamType>,
    pub bytes: Vec<u8>,
    pub tags: Vec<Tag>,
}

/// Everything a harness run collected, by output port order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Stream outputs, in the order of the block's stream outputs.
    pub streams: Vec<Output>,
    /// Messages per message output, in the order of the block's message outputs.
    pub messages: Vec<Vec<Pmt>>,
}

impl Outcome {
    /// Scalars of stream output `j` as `T`.
    pub fn items<T: Item>(&self, j: usize) -> Vec<T> {
        bytemuck::pod_collect_to_vec(&self.streams[j].bytes)
    }
    /// Tags seen on stream output `j`.
    pub fn tags(&self, j: usize) -> &[Tag] {
        &self.streams[j].tags
    }
}

/// Runs one block; see the module docs.
pub struct Harness {
    build: Box<dyn Fn() -> BuiltBlock>,
    inputs: Vec<(Vec<u8>, Vec<Tag>)>,
    messages: Vec<(String, Vec<Pmt>)>,
    chunking: Option<(u64, usize)>,
    buffer_bytes: usize,
}

impl Harness {
    /// A harness for the block `build` makes (called once per run).
    pub fn new(build: impl Fn() -> BuiltBlock + 'static) -> Self {
        Harness {
            build: Box::new(build),
            inputs: vec![],
            messages: vec![],
            chunking: None,
            buffer_bytes: 16 * 1024,
        }
    }
    /// Adds the next stream input's data.
    pub fn input<T: Item>(mut self, data: &[T]) -> Self {
        self.inputs
            .push((bytemuck::cast_slice(data).to_vec(), vec![]));
        self
    }
    /// Adds the next stream input's data with tags (absolute offsets).
    pub fn input_tagged<T: Item>(mut self, data: &[T], tags: Vec<Tag>) -> Self {
        self.inputs
            .push((bytemuck::cast_slice(data).to_vec(), tags));
        self
    }
    /// Messages delivered to message input `port`.
    pub fn messages(mut self, port: &str, msgs: Vec<Pmt>) -> Self {
        self.messages.push((port.to_string(), msgs));
        self
    }
    /// Feeds and drains in random chunks of 1..=`max` items (seeded).
    pub fn chunks(mut self, seed: u64, max: usize) -> Self {
        self.chunking = Some((seed, max));
        self
    }
    /// Stream buffer size (small by default, to exercise wrap-around).
    pub fn buffer_bytes(mut self, b: usize) -> Self {
        self.buffer_bytes = b;
        self
    }

    /// Runs once.
    pub fn run(&self) -> Result<Outcome, scheduler::Error> {
        self.run_with(self.chunking)
    }

    /// Runs unchunked and under several random chunkings; panics unless all
    /// outputs (items, tags and messages) are identical. Returns the outcome.
    pub fn run_chunked(&self) -> Outcome {
        let reference = self.run_with(None).expect("unchunked run");
        for (seed, max) in [(1, 1), (2, 3), (3, 17), (4, 500), (5, 4096)] {
            let o = self.run_with(Some((seed, max))).expect("chunked run");
            assert!(
                o == reference,
                "output differs when fed in chunks of 1..={max} (seed {seed})"
            );
        }
        reference
    }

    fn run_with(&self, chunking: Option<(u64, usize)>) -> Result<Outcome, scheduler::Error> {
        let built = (self.build)();
        let mut g = Graph::new();
        g.config = Config {
            threads: 1,
            buffer_bytes: self.buffer_bytes,
            ..Config::default()
        };
        let rng = |k: u64| chunking.map(|(s, m)| (SplitMix(s.wrapping_mul(1000) + k), m));
        let ins: Vec<_> = built.inputs.clone();
        let outs: Vec<_> = built.outputs.clone();
        g.add_built("dut", built).expect("add block");
        let mut k = 0;
        for p in &ins {
            match p.kind {
                ResolvedKind::Stream(st) => {
                    let (data, tags) = self.inputs.get(k).cloned().unwrap_or_default();
                    let name = format!("feed{k}");
                    g.add_built(
                        &name,
                        BuiltBlock::new(Feeder {
                            data,
                            item_size: st.item_size(),
                            tags,
                            pos: 0,
                            rng: rng(k as u64),
                        })
                        .output("out", st),
                    )
                    .expect("add feeder");
                    g.connect(&format!("{name}.out"), &format!("dut.{}", p.name))
                        .expect("connect feeder");
                    k += 1;
                }
                ResolvedKind::Message => {
                    if let Some((_, msgs)) = self.messages.iter().find(|(n, _)| *n == p.name) {
                        let name = format!("msg_{}", p.name);
                        g.add_built(
                            &name,
                            BuiltBlock::new(MsgFeeder { msgs: msgs.clone() }).message_output("out"),
                        )
                        .expect("add message feeder");
                        g.connect(&format!("{name}.out"), &format!("dut.{}", p.name))
                            .expect("connect message feeder");
                    }
                }
            }
        }
        let mut streams = vec![];
        let mut messages = vec![];
        for (j, p) in outs.iter().enumerate() {
            let name = format!("out{j}");
            match p.kind {
                ResolvedKind::Stream(st) => {
                    let c = Arc::new(Mutex::new(Collected::default()));
                    g.add_built(
                        &name,
                        BuiltBlock::new(Collector {
                            item_size: st.item_size(),
                            out: c.clone(),
                            rng: rng(100 + j as u64),
                            ended: false,
                        })
                        .input("in", st),
                    )
                    .expect("add collector");
                    g.connect(&format!("dut.{}", p.name), &format!("{name}.in"))
                        .expect("connect collector");
                    streams.push((st, c));
                }
                ResolvedKind::Message => {
                    let c = Arc::new(Mutex::new(vec![]));
                    g.add_built(
                        &name,
                        BuiltBlock::new(MsgCollector { out: c.clone() }).message_input("in"),
                    )
                    .expect("add message collector");
                    g.connect(&format!("dut.{}", p.name), &format!("{name}.in"))
                        .expect("connect message collector");
                    messages.push(c);
                }
            }
        }
        scheduler::run(g)?;
        Ok(Outcome {
            streams: streams
                .into_iter()
                .map(|(st, c)| {
                    let c = std::mem::take(&mut *c.lock().unwrap());
                    Output {
                        stype: Some(st),
                        bytes: c.bytes,
                        tags: c.tags,
                    }
                })
                .collect(),
            messages: messages
                .into_iter()
                .map(|c| std::mem::take(&mut *c.lock().unwrap()))
                .collect(),
        })
    }
}

/// Builds a catalog block from `(name, YAML-ish JSON value)` parameters,
/// panicking with the problem if they are invalid (for tests).
pub fn build(kind: &str, params: serde_json::Value) -> BuiltBlock {
    build_with(kind, params, &crate::blocks::BlockSetup::default())
}

/// Like [`build`], with a restart setup (what a resuming worker gives the
/// block).
pub fn build_with(
    kind: &str,
    params: serde_json::Value,
    setup: &crate::blocks::BlockSetup,
) -> BuiltBlock {
    let desc = flowmesh_model::catalog()
        .get(kind)
        .unwrap_or_else(|| panic!("no block kind {kind}"));
    let given: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_value(params).expect("params must be a map");
    let (p, problems) = flowmesh_model::params::resolve(desc, &given);
    assert!(
        problems.is_empty(),
        "invalid params for {kind}: {problems:?}"
    );
    let failed = desc.check.map(|c| c(&p)).unwrap_or_default();
    assert!(failed.is_empty(), "invalid params for {kind}: {failed:?}");
    crate::blocks::build_in(kind, &p, &crate::blocks::Env::default(), setup)
        .unwrap_or_else(|e| panic!("building {kind}: {e}"))
}

/// A factory for [`Harness::new`] from a catalog kind and parameters.
pub fn factory(kind: &'static str, params: serde_json::Value) -> impl Fn() -> BuiltBlock {
    move || build(kind, params.clone())
}

/// A factory for [`Harness::new`] from a catalog kind, parameters and a
/// restart setup.
pub fn factory_with(
    kind: &'static str,
    params: serde_json::Value,
    setup: crate::blocks::BlockSetup,
) -> impl Fn() -> BuiltBlock {
    move || build_with(kind, params.clone(), &setup)
}
