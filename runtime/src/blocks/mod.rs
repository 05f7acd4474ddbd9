//! Block implementations, one module per family, and the registry from
//! catalog kind to implementation.
//!
//! A block kind is declared once, in the model's catalog
//! ([`flowmesh_model::catalog`]: ports, parameters, rate, tag policy, role,
//! history, durability). Its implementation is registered once, in its
//! module's `BLOCKS` list, as an [`Implementation`]: the kind and a builder
//! that makes the block from its parameters. The builder does not state the
//! ports: [`build_in`] gives the built block the ports the catalog declares
//! for those parameters, so the two agree by construction. A test checks
//! that every catalog kind is registered and every registered kind is in
//! the catalog, and builds every kind under every item type it accepts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use flowmesh_model::catalog::{BlockDescriptor, Durability};
use flowmesh_model::{catalog, ItemType, Params, StreamType};
use num_complex::{Complex, Complex64};

use crate::block::BuiltBlock;

pub mod convert;
pub mod debug;
pub mod file;
pub mod filter;
pub mod flow;
pub mod math;
pub mod network;
pub mod signal;
pub mod sinks;
pub mod sources;
pub mod spectrum;
pub mod survey;

/// What blocks may need from the process they run in.
#[derive(Clone)]
pub struct Env {
    /// Network environment for edge blocks.
    pub net: Arc<crate::net::env::NetEnv>,
    /// Block name → its setup (blocks not listed get the default).
    pub setup: BTreeMap<String, BlockSetup>,
}

impl Env {
    /// Blocks built in `net`, none with a setup.
    pub fn new(net: Arc<crate::net::env::NetEnv>) -> Self {
        Env {
            net,
            setup: BTreeMap::new(),
        }
    }

    /// The setup of block `name` (the default if it has none).
    pub fn setup_of(&self, name: &str) -> &BlockSetup {
        static NONE: BlockSetup = BlockSetup {
            start: 0,
            producer: None,
            state_file: None,
            skip: 0,
            sets: Vec::new(),
        };
        self.setup.get(name).unwrap_or(&NONE)
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new(crate::net::env::NetEnv::in_process())
    }
}

/// Where a restarted segment's blocks take up the stream: what the worker
/// works out from its durable output (docs/protocol.md, "Segment restart")
/// and hands each block by name through [`Env::setup`]. These are not
/// parameters, so a FlowGraph file cannot set them. Which fields a block
/// reads follows from its catalog role and durability:
///
/// - a [`Role::NetSource`](flowmesh_model::catalog::Role::NetSource):
///   `start`, `producer`, `state_file`;
/// - a [`Role::NetSink`](flowmesh_model::catalog::Role::NetSink): `start`;
/// - a block with [`Durability::AppendFile`]: `skip`;
/// - any block with settable parameters: `sets` (the scheduler applies them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockSetup {
    /// Edge offset of the first item: the one a network source asks its
    /// producer for, or the one a network sink numbers its first input item.
    pub start: u64,
    /// The producer instance `start` is counted in, when a state file
    /// recorded one (a network source).
    pub producer: Option<ProducerInstance>,
    /// Where a network source records the producer instance it reads and
    /// how that numbering maps onto its output (`flowmesh worker
    /// --state-dir`).
    pub state_file: Option<PathBuf>,
    /// Input items a durable sink drops before writing: what the restart
    /// delivers again.
    pub skip: u64,
    /// Parameter changes to apply at given item offsets of this block (a
    /// restart replaying items from before a live change, see
    /// [`ScheduledSet`]).
    pub sets: Vec<ScheduledSet>,
}

/// A settable parameter to set when the block reaches an item offset: the
/// scheduler limits the block's `work` calls so that none runs past the
/// offset, then sets the value exactly there (as [`Handle::set`] would, with
/// its `param` tag), so a restarted segment replaying items from before a
/// live change gives the output of a run with the change at that offset.
/// The offset counts as [`Handle::set`]'s answer does: items of the block's
/// first stream output, or of its first stream input for a block without
/// outputs, from 0 at its start.
///
/// [`Handle::set`]: crate::scheduler::Handle::set
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledSet {
    pub offset: u64,
    pub name: String,
    pub value: flowmesh_model::Pmt,
}

/// A producer instance and where its numbering sits in a network source's
/// output (what a state file records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerInstance {
    /// The producer's instance id (non-zero).
    pub instance: u64,
    /// Output position minus offset in that instance's numbering.
    pub base: i64,
}

/// What a builder gets.
pub struct Ctx<'a> {
    /// The block's catalog declaration.
    pub desc: &'static BlockDescriptor,
    /// Its coerced parameters, defaults filled in.
    pub params: &'a Params,
    /// The process it runs in.
    pub env: &'a Env,
    /// Its setup for a restart.
    pub setup: &'a BlockSetup,
}

/// Makes a block from its parameters: the block and its runtime needs
/// (buffer sizes, rate, tag policy), without ports. The error is a sentence
/// for the user (it is reported with the block's name).
pub type BuildFn = fn(&Ctx<'_>) -> Result<BuiltBlock, String>;

/// The implementation of one catalog kind.
pub struct Implementation {
    /// The catalog kind it implements.
    pub kind: &'static str,
    pub build: BuildFn,
}

/// Every module's registrations.
const FAMILIES: &[&[Implementation]] = &[
    network::BLOCKS,
    sources::BLOCKS,
    sinks::BLOCKS,
    flow::BLOCKS,
    math::BLOCKS,
    signal::BLOCKS,
    file::BLOCKS,
    convert::BLOCKS,
    filter::BLOCKS,
    spectrum::BLOCKS,
    survey::BLOCKS,
    debug::BLOCKS,
];

/// Every registered implementation (a test checks them against the catalog).
pub fn implementations() -> impl Iterator<Item = &'static Implementation> {
    FAMILIES.iter().flat_map(|f| f.iter())
}

/// The implementation registered for `kind`.
pub fn implementation(kind: &str) -> Option<&'static Implementation> {
    implementations().find(|i| i.kind == kind)
}

/// Builds block `kind` from coerced parameters in a default (in-process)
/// environment, with no setup. The error is a sentence for the user (it is
/// reported with the block's name).
pub fn build(kind: &str, p: &Params) -> Result<BuiltBlock, String> {
    build_in(kind, p, &Env::default(), &BlockSetup::default())
}

/// Builds block `kind` in environment `env` with `setup`, giving it the
/// ports its catalog declaration has for `p`.
pub fn build_in(
    kind: &str,
    p: &Params,
    env: &Env,
    setup: &BlockSetup,
) -> Result<BuiltBlock, String> {
    let desc = catalog()
        .get(kind)
        .ok_or_else(|| format!("unknown block kind `{kind}`"))?;
    let imp =
        implementation(kind).ok_or_else(|| format!("block kind `{kind}` has no implementation"))?;
    let mut b = (imp.build)(&Ctx {
        desc,
        params: p,
        env,
        setup,
    })?;
    if !b.inputs.is_empty() || !b.outputs.is_empty() {
        return Err(format!(
            "the implementation of `{kind}` states its own ports; remove them from its builder \
             (the ports come from its catalog declaration)"
        ));
    }
    (b.inputs, b.outputs) = desc.resolve_ports(p);
    Ok(b)
}

/// Whole items that a block's durable output holds (`None` for a block
/// that keeps nothing): what a restarted segment's input may resume from.
pub fn durable_items(d: &Durability) -> Option<u64> {
    match d {
        Durability::None => None,
        Durability::AppendFile { path, item_size } => Some(file::durable_items(path, *item_size)),
    }
}

/// The `type`/`vlen` stream type of a block.
pub fn stream_type(p: &Params) -> StreamType {
    StreamType {
        item: p.item_type("type").unwrap_or(ItemType::F32),
        vlen: p.u64("vlen").unwrap_or(1).max(1) as usize,
    }
}

/// Numeric item types that a complex constant converts to.
pub trait FromComplex: Copy {
    fn from_c64(c: Complex64) -> Self;
}
macro_rules! from_complex_real {
    ($($t:ty),*) => {$(
        impl FromComplex for $t {
            fn from_c64(c: Complex64) -> Self { c.re as $t }
        }
    )*};
}
from_complex_real!(f32, f64, i8, i16, i32, u8, u16, u32, u64);
impl FromComplex for Complex<f32> {
    fn from_c64(c: Complex64) -> Self {
        Complex::new(c.re as f32, c.im as f32)
    }
}
impl FromComplex for Complex<f64> {
    fn from_c64(c: Complex64) -> Self {
        c
    }
}
impl FromComplex for Complex<i8> {
    fn from_c64(c: Complex64) -> Self {
        Complex::new(c.re as i8, c.im as i8)
    }
}
impl FromComplex for Complex<i16> {
    fn from_c64(c: Complex64) -> Self {
        Complex::new(c.re as i16, c.im as i16)
    }
}

/// Calls `$f::<T>($args)` with `T` the Rust type of item type `$t`.
#[macro_export]
macro_rules! dispatch_item {
    ($t:expr, $f:ident ( $($a:expr),* )) => {{
        use num_complex::Complex;
        match $t {
            $crate::ItemType::F32 => $f::<f32>($($a),*),
            $crate::ItemType::F64 => $f::<f64>($($a),*),
            $crate::ItemType::Cf32 => $f::<Complex<f32>>($($a),*),
            $crate::ItemType::Cf64 => $f::<Complex<f64>>($($a),*),
            $crate::ItemType::I8 => $f::<i8>($($a),*),
            $crate::ItemType::Cs8 => $f::<Complex<i8>>($($a),*),
            $crate::ItemType::I16 => $f::<i16>($($a),*),
            $crate::ItemType::Cs16 => $f::<Complex<i16>>($($a),*),
            $crate::ItemType::I32 => $f::<i32>($($a),*),
            $crate::ItemType::U8 => $f::<u8>($($a),*),
            $crate::ItemType::U16 => $f::<u16>($($a),*),
            $crate::ItemType::U32 => $f::<u32>($($a),*),
            $crate::ItemType::U64 => $f::<u64>($($a),*),
        }
    }};
}
