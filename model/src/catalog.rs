//! The block catalog: what every block kind is — ports, parameters, rate
//! relation, tag policy, its role for the partitioner and the worker, the
//! history it reads and what of its output survives a restart — independent
//! of any implementation.
//!
//! A block kind is declared once, here ([`BlockDescriptor`]); its
//! implementation is registered once in the runtime under the same kind and
//! takes its ports from this declaration (docs/runtime.md, "Adding a
//! block"). Validation, `flowmesh blocks`, the graph renderer, the
//! partitioner, the runtime's builders and the worker's resume logic all
//! read the catalog; a test in the runtime crate checks that every kind has
//! an implementation and every implementation a declaration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::LazyLock;

use serde::Serialize;

use crate::params::Params;
use crate::{ItemType, Pmt, StreamType};

mod convert;
mod debug;
mod dsp;
mod flow;
mod math;
mod network;
mod sinks;
mod sources;

pub use sinks::sigmf_paths;

/// Block categories, for listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Source,
    Sink,
    Flow,
    Math,
    Convert,
    Filter,
    Spectrum,
    Debug,
}

/// Whether a block is a source and, if so, whether it can replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Not a source (has stream inputs, or produces only on messages).
    No,
    /// Produces the same items again when restarted from an offset (files, synthetic signals).
    Replayable,
    /// Produces in real time and cannot wait or replay (hardware, throttled).
    Live,
}

/// The part a block plays for the partitioner and the worker: the network
/// edge ends it inserts and restarts, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An ordinary block.
    Plain,
    /// Producing end of a stream edge between segments (in the producing segment).
    NetSink,
    /// Consuming end of a stream edge between segments (in the consuming segment).
    NetSource,
    /// Producing end of a message edge between segments.
    NetMessageSink,
    /// Consuming end of a message edge between segments.
    NetMessageSource,
}

impl Role {
    /// True for [`Role::Plain`].
    pub fn is_plain(&self) -> bool {
        *self == Role::Plain
    }
}

/// What of a block's output survives a restart of its segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durability {
    /// Nothing: a restarted block starts afresh.
    None,
    /// Whole items of `item_size` bytes appended to the file at `path`
    /// (one per input item): what the file holds is where the block's
    /// input may resume, and what it receives again must be dropped.
    AppendFile { path: PathBuf, item_size: usize },
}

/// How a block uses a file on the host it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileAccess {
    /// The block reads the file: it must exist and be readable.
    Read,
    /// The block creates or writes the file: its directory must exist and
    /// be writable (and the file itself, if it is already there).
    Write,
}

/// A file a block instance reads or writes, as its parameters name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileUse {
    /// The parameter that names the file (`path`).
    pub param: &'static str,
    /// The file (for SigMF, each of the data and metadata files).
    pub path: PathBuf,
    pub access: FileAccess,
}

/// The files a block reads or writes, as a function of its (coerced,
/// defaulted) parameters; what a worker checks before it starts.
pub type FilesFn = fn(&Params) -> Vec<FileUse>;

/// The history a block reads, in input items before an output's own, as a
/// function of its (coerced, defaulted) parameters; `None` when the block
/// carries other state that a warm-up would not restore (so its output
/// after a resume can differ).
pub type HistoryFn = fn(&Params) -> Option<u64>;

/// What of its output a block keeps across a restart, as a function of its
/// (coerced, defaulted) parameters.
pub type DurabilityFn = fn(&Params) -> Durability;

/// How stream tags pass through a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TagPolicy {
    /// Every input's tags go to every output (GNU Radio's default).
    AllToAll,
    /// Input i's tags go to output i.
    OneToOne,
    /// Tags stop here.
    None,
    /// The block places tags itself.
    Custom,
}

/// The type of a parameter.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "of")]
pub enum ParamType {
    Bool,
    /// A signed integer (YAML integer).
    Int,
    /// A real number (YAML integer or float).
    Float,
    /// A complex number: a real number, or a string `"re+imj"` such as `"0.6+0.8j"`.
    Complex,
    String,
    /// A filesystem path.
    Path,
    /// A stream item type name, restricted to the listed ones.
    ItemType(Vec<ItemType>),
    /// One of the listed words.
    Enum(Vec<&'static str>),
    /// A list of real numbers.
    FloatList,
    /// A list of complex numbers (each as for `Complex`).
    ComplexList,
    /// A list of stream items (any JSON numbers or complex literals); type
    /// given by the block's `type` parameter.
    Items,
}

/// Extra constraint on a numeric parameter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    PowerOfTwo,
}

/// One parameter of a block kind.
#[derive(Debug, Clone, Serialize)]
pub struct ParamDescriptor {
    pub name: &'static str,
    #[serde(flatten)]
    pub ty: ParamType,
    /// Default value; `None` means the parameter is required.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_pmt_opt"
    )]
    pub default: Option<Pmt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Constraint>,
    /// Can be changed while running (`set`, or a message on the `cmd` port).
    pub settable: bool,
    pub description: &'static str,
}

fn ser_pmt_opt<S: serde::Serializer>(v: &Option<Pmt>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(p) => p.to_json().serialize(s),
        None => s.serialize_none(),
    }
}

/// The item type of a stream port, possibly depending on parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "from", content = "value")]
pub enum TypeExpr {
    Fixed(ItemType),
    /// The value of an item-type parameter.
    Param(&'static str),
    /// The real type underlying an item-type parameter (`cf32` → `f32`).
    RealOf(&'static str),
    /// `f32` for a real item-type parameter, `cf32` for a complex one.
    FloatOf(&'static str),
}

/// A vector length, possibly depending on parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "from", content = "value")]
pub enum VlenExpr {
    Fixed(usize),
    Param(&'static str),
}

/// What a port carries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    Stream { item: TypeExpr, vlen: VlenExpr },
    Message,
}

/// One port (or a numbered family of ports) of a block kind.
#[derive(Debug, Clone, Serialize)]
pub struct PortDescriptor {
    pub name: &'static str,
    pub kind: PortKind,
    /// May be left unconnected.
    pub optional: bool,
    /// When set, the port is a family `name0..nameN-1`, N being this parameter's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<&'static str>,
    pub description: &'static str,
}

/// A product of parameters and constants.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateExpr {
    pub constant: u64,
    pub params: Vec<&'static str>,
}

impl RateExpr {
    pub fn one() -> Self {
        RateExpr {
            constant: 1,
            params: vec![],
        }
    }
    pub fn param(p: &'static str) -> Self {
        RateExpr {
            constant: 1,
            params: vec![p],
        }
    }
    pub fn eval(&self, params: &Params) -> Option<u64> {
        let mut v = self.constant;
        for p in &self.params {
            v = v.checked_mul(params.get(p)?.as_u64()?)?;
        }
        Some(v)
    }
}

/// Output items per input item: `interp / decim`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rate {
    pub interp: RateExpr,
    pub decim: RateExpr,
}

impl Rate {
    pub fn sync() -> Self {
        Rate {
            interp: RateExpr::one(),
            decim: RateExpr::one(),
        }
    }
    pub fn decim(p: &'static str) -> Self {
        Rate {
            interp: RateExpr::one(),
            decim: RateExpr::param(p),
        }
    }
    /// `(interp, decim)` for the given parameters.
    pub fn eval(&self, params: &Params) -> Option<(u64, u64)> {
        Some((self.interp.eval(params)?, self.decim.eval(params)?))
    }
}

/// A custom check over a block's (coerced) parameters: returns
/// `(parameter, message, hint)` for each problem.
pub type ParamCheck = fn(&Params) -> Vec<(String, String, String)>;

/// Everything FlowMesh knows about a block kind.
#[derive(Debug, Clone, Serialize)]
pub struct BlockDescriptor {
    pub kind: &'static str,
    pub category: Category,
    pub description: &'static str,
    pub params: Vec<ParamDescriptor>,
    pub inputs: Vec<PortDescriptor>,
    pub outputs: Vec<PortDescriptor>,
    pub source: SourceKind,
    pub rate: Rate,
    pub tag_policy: TagPolicy,
    /// The parameter that sets the sample rate of a source's output, or that
    /// must agree with the input rate of a non-source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_param: Option<&'static str>,
    #[serde(skip)]
    pub check: Option<ParamCheck>,
    /// What the partitioner and the worker take the block for.
    #[serde(skip_serializing_if = "Role::is_plain")]
    pub role: Role,
    /// The input items before an output's own that the block reads
    /// (`None`: no history to warm up; see [`BlockDescriptor::history_of`]).
    #[serde(skip)]
    pub history: Option<HistoryFn>,
    /// What the block makes durable (`None`: nothing; see
    /// [`BlockDescriptor::durability_of`]).
    #[serde(skip)]
    pub durability: Option<DurabilityFn>,
    /// The block's state follows the index of its output in the whole
    /// stream (a mixer phase): a restarted worker tells it where its first
    /// output sits ([`BlockDescriptor::output_indexed`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub output_indexed: bool,
    /// A source whose item `n` is a pure function of `n` and its parameters
    /// (a counter, a synthetic signal, seeded noise): built with a setup
    /// `start` of R it produces items R, R+1, … exactly as an uninterrupted
    /// run does, so a restarted segment of such sources resumes where its
    /// consumers are (docs/worker.md, "Resuming sources").
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resumable_at_offset: bool,
    /// Item for item (1:1): output item `k` is made from input item `k` of
    /// each input alone, and the block keeps no other state — or only state
    /// that follows the item index, which it is told as an
    /// [`output_indexed`](Self::output_indexed) block. A chain of such blocks
    /// after resumable sources resumes at any offset. Its rate is 1:1.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub item_for_item: bool,
    /// The files the block reads or writes (`None`: none; see
    /// [`BlockDescriptor::files_of`]).
    #[serde(skip)]
    pub files: Option<FilesFn>,
}

/// A concrete port of a block instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ResolvedPort {
    pub name: String,
    pub kind: ResolvedKind,
    pub optional: bool,
}

/// A concrete port type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolvedKind {
    Stream(StreamType),
    Message,
}

impl std::fmt::Display for ResolvedKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolvedKind::Stream(t) => write!(f, "{t}"),
            ResolvedKind::Message => f.write_str("message"),
        }
    }
}

/// Builder helpers used by the catalog entries.
impl ParamDescriptor {
    pub fn new(name: &'static str, ty: ParamType, description: &'static str) -> Self {
        ParamDescriptor {
            name,
            ty,
            default: None,
            unit: None,
            min: None,
            max: None,
            constraint: None,
            settable: false,
            description,
        }
    }
    pub fn default(mut self, v: impl Into<Pmt>) -> Self {
        self.default = Some(v.into());
        self
    }
    /// Optional with no default: absent means "not set" (a `Null` value).
    pub fn optional(mut self) -> Self {
        self.default = Some(Pmt::Null);
        self
    }
    pub fn unit(mut self, u: &'static str) -> Self {
        self.unit = Some(u);
        self
    }
    pub fn min(mut self, v: f64) -> Self {
        self.min = Some(v);
        self
    }
    pub fn max(mut self, v: f64) -> Self {
        self.max = Some(v);
        self
    }
    pub fn settable(mut self) -> Self {
        self.settable = true;
        self
    }
    pub fn power_of_two(mut self) -> Self {
        self.constraint = Some(Constraint::PowerOfTwo);
        self
    }
    /// The `type` parameter restricted to the given item types (default: the first).
    pub fn item_type(types: &[ItemType]) -> Self {
        ParamDescriptor::new(
            "type",
            ParamType::ItemType(types.to_vec()),
            "stream item type",
        )
        .default(types[0].name())
    }
    /// The `vlen` parameter (vector length of stream items, default 1).
    pub fn vlen() -> Self {
        ParamDescriptor::new("vlen", ParamType::Int, "vector length of each item")
            .default(1i64)
            .min(1.0)
            .max(1048576.0)
    }
}

impl PortDescriptor {
    /// A stream port typed by the `type` and `vlen` parameters.
    pub fn typed(name: &'static str, description: &'static str) -> Self {
        Self::stream(
            name,
            TypeExpr::Param("type"),
            VlenExpr::Param("vlen"),
            description,
        )
    }
    /// A scalar stream port typed by the `type` parameter.
    pub fn scalar(name: &'static str, description: &'static str) -> Self {
        Self::stream(
            name,
            TypeExpr::Param("type"),
            VlenExpr::Fixed(1),
            description,
        )
    }
    pub fn stream(
        name: &'static str,
        item: TypeExpr,
        vlen: VlenExpr,
        description: &'static str,
    ) -> Self {
        PortDescriptor {
            name,
            kind: PortKind::Stream { item, vlen },
            optional: false,
            count: None,
            description,
        }
    }
    pub fn fixed(name: &'static str, item: ItemType, description: &'static str) -> Self {
        Self::stream(name, TypeExpr::Fixed(item), VlenExpr::Fixed(1), description)
    }
    pub fn message(name: &'static str, description: &'static str) -> Self {
        PortDescriptor {
            name,
            kind: PortKind::Message,
            optional: true,
            count: None,
            description,
        }
    }
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
    pub fn counted(mut self, param: &'static str) -> Self {
        self.count = Some(param);
        self
    }
}

impl BlockDescriptor {
    pub fn new(kind: &'static str, category: Category, description: &'static str) -> Self {
        BlockDescriptor {
            kind,
            category,
            description,
            params: vec![],
            inputs: vec![],
            outputs: vec![],
            source: SourceKind::No,
            rate: Rate::sync(),
            tag_policy: TagPolicy::AllToAll,
            rate_param: None,
            check: None,
            role: Role::Plain,
            history: None,
            durability: None,
            output_indexed: false,
            resumable_at_offset: false,
            item_for_item: false,
            files: None,
        }
    }
    pub fn param(mut self, p: ParamDescriptor) -> Self {
        self.params.push(p);
        self
    }
    pub fn input(mut self, p: PortDescriptor) -> Self {
        self.inputs.push(p);
        self
    }
    pub fn output(mut self, p: PortDescriptor) -> Self {
        self.outputs.push(p);
        self
    }
    pub fn source(mut self, k: SourceKind) -> Self {
        self.source = k;
        self
    }
    pub fn rate(mut self, r: Rate) -> Self {
        self.rate = r;
        self
    }
    pub fn tags(mut self, t: TagPolicy) -> Self {
        self.tag_policy = t;
        self
    }
    pub fn rate_param(mut self, p: &'static str) -> Self {
        self.rate_param = Some(p);
        self
    }
    pub fn check(mut self, c: ParamCheck) -> Self {
        self.check = Some(c);
        self
    }
    pub fn role(mut self, r: Role) -> Self {
        self.role = r;
        self
    }
    /// Declares the history the block reads (see [`HistoryFn`]).
    pub fn history(mut self, h: HistoryFn) -> Self {
        self.history = Some(h);
        self
    }
    /// Declares that the block's state follows its output index in the whole
    /// stream; a resumed worker sets its setup's `start` to the index of its
    /// first output.
    pub fn output_indexed(mut self) -> Self {
        self.output_indexed = true;
        self
    }
    /// Declares a source that starts at any item offset and then produces
    /// what an uninterrupted run produces from there (see the field
    /// `resumable_at_offset`); its setup's `start` is
    /// that offset.
    pub fn resumable_at_offset(mut self) -> Self {
        self.resumable_at_offset = true;
        self
    }
    /// Declares a block that makes output item `k` from input item `k`
    /// alone (see the field `item_for_item`).
    pub fn item_for_item(mut self) -> Self {
        self.item_for_item = true;
        self
    }
    /// Declares what the block makes durable (see [`DurabilityFn`]).
    pub fn durable(mut self, d: DurabilityFn) -> Self {
        self.durability = Some(d);
        self
    }
    /// Declares the files the block reads or writes (see [`FilesFn`]).
    pub fn files(mut self, f: FilesFn) -> Self {
        self.files = Some(f);
        self
    }
    /// Adds the `cmd` message input every block with settable parameters has.
    fn with_cmd_port(mut self) -> Self {
        if self.settable_params().next().is_some() && !self.inputs.iter().any(|p| p.name == "cmd") {
            self.inputs.push(PortDescriptor::message(
                "cmd",
                "set parameters: a map {name: value}, applied at the next item",
            ));
        }
        self
    }

    pub fn param_descriptor(&self, name: &str) -> Option<&ParamDescriptor> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The parameters that can be changed while the block runs (`set`, or a
    /// message on its `cmd` port).
    pub fn settable_params(&self) -> impl Iterator<Item = &ParamDescriptor> {
        self.params.iter().filter(|p| p.settable)
    }

    /// The input items before an output's own that a block with these
    /// (coerced, defaulted) parameters reads: what a resumed input must
    /// start earlier by for its outputs to equal an uninterrupted run's.
    /// 0 when it declares none, or when its parameters do not describe a
    /// valid block.
    pub fn history_of(&self, params: &Params) -> u64 {
        self.history.and_then(|h| h(params)).unwrap_or(0)
    }

    /// What a block with these (coerced, defaulted) parameters makes durable.
    pub fn durability_of(&self, params: &Params) -> Durability {
        self.durability.map_or(Durability::None, |d| d(params))
    }

    /// The files a block with these (coerced, defaulted) parameters reads
    /// or writes on its host.
    pub fn files_of(&self, params: &Params) -> Vec<FileUse> {
        self.files.map_or_else(Vec::new, |f| f(params))
    }

    /// Concrete ports for the given (coerced, defaulted) parameters.
    pub fn resolve_ports(&self, params: &Params) -> (Vec<ResolvedPort>, Vec<ResolvedPort>) {
        let resolve = |ports: &[PortDescriptor]| {
            let mut out = vec![];
            for p in ports {
                let kind = match p.kind {
                    PortKind::Message => ResolvedKind::Message,
                    PortKind::Stream { item, vlen } => {
                        let item = match item {
                            TypeExpr::Fixed(t) => t,
                            TypeExpr::Param(n) => params.item_type(n).unwrap_or(ItemType::F32),
                            TypeExpr::RealOf(n) => {
                                params.item_type(n).unwrap_or(ItemType::F32).real()
                            }
                            TypeExpr::FloatOf(n) => {
                                if params.item_type(n).is_some_and(ItemType::is_complex) {
                                    ItemType::Cf32
                                } else {
                                    ItemType::F32
                                }
                            }
                        };
                        let vlen = match vlen {
                            VlenExpr::Fixed(v) => v,
                            VlenExpr::Param(n) => params
                                .get(n)
                                .and_then(Pmt::as_u64)
                                .map(|v| v.max(1) as usize)
                                .unwrap_or(1),
                        };
                        ResolvedKind::Stream(StreamType { item, vlen })
                    }
                };
                match p.count {
                    None => out.push(ResolvedPort {
                        name: p.name.to_string(),
                        kind,
                        optional: p.optional,
                    }),
                    Some(c) => {
                        let n = params.get(c).and_then(Pmt::as_u64).unwrap_or(0);
                        for i in 0..n {
                            out.push(ResolvedPort {
                                name: format!("{}{i}", p.name),
                                kind,
                                optional: p.optional,
                            });
                        }
                    }
                }
            }
            out
        };
        (resolve(&self.inputs), resolve(&self.outputs))
    }
}

/// All block kinds, by name.
#[derive(Debug)]
pub struct Catalog {
    blocks: BTreeMap<&'static str, BlockDescriptor>,
}

impl Catalog {
    pub fn get(&self, kind: &str) -> Option<&BlockDescriptor> {
        self.blocks.get(kind)
    }
    pub fn iter(&self) -> impl Iterator<Item = &BlockDescriptor> {
        self.blocks.values()
    }
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.blocks.keys().copied()
    }
    /// The block kind that plays `role` (the first by name if several do).
    pub fn with_role(&self, role: Role) -> Option<&BlockDescriptor> {
        self.iter().find(|d| d.role == role)
    }
    /// The known kind nearest to `kind`, for "did you mean" hints.
    pub fn nearest(&self, kind: &str) -> Option<&'static str> {
        nearest(kind, self.kinds())
    }
}

/// The candidate closest to `word` by edit distance, if reasonably close.
pub fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 2).max(2))
        .min()
        .map(|(_, c)| c)
}

/// The catalog of every block kind FlowMesh implements.
pub fn catalog() -> &'static Catalog {
    static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
        let mut blocks = BTreeMap::new();
        let all = [
            sources::all(),
            sinks::all(),
            flow::all(),
            math::all(),
            convert::all(),
            dsp::all(),
            debug::all(),
            network::all(),
        ];
        for d in all.into_iter().flatten() {
            let d = d.with_cmd_port();
            assert!(
                blocks.insert(d.kind, d).is_none(),
                "duplicate block kind in catalog"
            );
        }
        Catalog { blocks }
    });
    &CATALOG
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(kind: &str, given: serde_json::Value) -> (&'static BlockDescriptor, Params) {
        let d = catalog().get(kind).expect("kind exists");
        let given: BTreeMap<String, serde_json::Value> = serde_json::from_value(given).unwrap();
        let (p, problems) = crate::params::resolve(d, &given);
        assert!(problems.is_empty(), "{kind}: {problems:?}");
        (d, p)
    }

    #[test]
    fn every_network_edge_role_is_played_by_exactly_one_kind() {
        for role in [
            Role::NetSink,
            Role::NetSource,
            Role::NetMessageSink,
            Role::NetMessageSource,
        ] {
            let kinds: Vec<_> = catalog()
                .iter()
                .filter(|d| d.role == role)
                .map(|d| d.kind)
                .collect();
            assert_eq!(kinds.len(), 1, "{role:?}: {kinds:?}");
            assert_eq!(catalog().with_role(role).map(|d| d.kind), Some(kinds[0]));
        }
    }

    #[test]
    fn resumable_sources_and_item_for_item_blocks_keep_the_item_rate() {
        let (mut sources, mut one_to_one) = (vec![], vec![]);
        for d in catalog().iter() {
            if d.resumable_at_offset {
                assert!(
                    d.inputs.iter().all(|p| p.kind == PortKind::Message),
                    "{}",
                    d.kind
                );
                assert_ne!(d.source, SourceKind::No, "{}", d.kind);
                sources.push(d.kind);
            }
            if d.item_for_item {
                assert_eq!(d.rate, Rate::sync(), "{} is item for item", d.kind);
                assert!(!d.resumable_at_offset, "{}", d.kind);
                one_to_one.push(d.kind);
            }
        }
        assert_eq!(
            sources,
            [
                "counter_source",
                "noise_source",
                "null_source",
                "signal_source",
                "vector_source"
            ]
        );
        for kind in [
            "head",
            "throttle",
            "tagger",
            "add",
            "multiply",
            "multiply_const",
        ] {
            assert!(one_to_one.contains(&kind), "{kind}: {one_to_one:?}");
        }
        for kind in ["fir_filter", "file_source", "message_strobe", "net_source"] {
            let d = catalog().get(kind).unwrap();
            assert!(!d.item_for_item && !d.resumable_at_offset, "{kind}");
        }
    }

    #[test]
    fn settable_params_are_the_ones_declared_settable() {
        let names = |kind: &str| -> Vec<&str> {
            catalog()
                .get(kind)
                .unwrap()
                .settable_params()
                .map(|p| p.name)
                .collect()
        };
        assert_eq!(names("low_pass_filter"), ["cutoff", "transition"]);
        assert_eq!(names("head"), Vec::<&str>::new());
    }

    #[test]
    fn an_append_file_sink_is_durable_in_its_data_file() {
        let (d, p) = resolved(
            "file_sink",
            serde_json::json!({"type": "cf32", "path": "x.cf32"}),
        );
        assert_eq!(d.durability_of(&p), Durability::None);
        let (d, p) = resolved(
            "file_sink",
            serde_json::json!({"type": "cf32", "vlen": 4, "path": "x.cf32", "mode": "append"}),
        );
        assert_eq!(
            d.durability_of(&p),
            Durability::AppendFile {
                path: "x.cf32".into(),
                item_size: 32
            }
        );
        let (d, p) = resolved(
            "file_sink",
            serde_json::json!({"type": "i16", "path": "rec", "format": "sigmf", "mode": "append"}),
        );
        assert_eq!(
            d.durability_of(&p),
            Durability::AppendFile {
                path: "rec.sigmf-data".into(),
                item_size: 2
            }
        );
        let (d, p) = resolved("null_sink", serde_json::json!({}));
        assert_eq!(d.durability_of(&p), Durability::None);
    }

    #[test]
    fn file_blocks_declare_the_files_they_read_and_write() {
        let uses = |kind: &str, given: serde_json::Value| -> Vec<(String, FileAccess)> {
            let (d, p) = resolved(kind, given);
            d.files_of(&p)
                .into_iter()
                .map(|u| {
                    assert_eq!(u.param, "path");
                    (u.path.display().to_string(), u.access)
                })
                .collect()
        };
        use FileAccess::{Read, Write};
        assert_eq!(
            uses("file_source", serde_json::json!({"path": "in.f32"})),
            [("in.f32".to_string(), Read)]
        );
        assert_eq!(
            uses(
                "file_source",
                serde_json::json!({"path": "r.sigmf-meta", "format": "sigmf"})
            ),
            [
                ("r.sigmf-data".to_string(), Read),
                ("r.sigmf-meta".to_string(), Read)
            ]
        );
        assert_eq!(
            uses("file_sink", serde_json::json!({"path": "out/x.f32"})),
            [("out/x.f32".to_string(), Write)]
        );
        assert_eq!(
            uses(
                "file_sink",
                serde_json::json!({"path": "rec", "format": "sigmf"})
            ),
            [
                ("rec.sigmf-data".to_string(), Write),
                ("rec.sigmf-meta".to_string(), Write)
            ]
        );
        assert_eq!(uses("jsonl_sink", serde_json::json!({})), []);
        assert_eq!(
            uses("jsonl_sink", serde_json::json!({"path": "d.jsonl"})),
            [("d.jsonl".to_string(), Write)]
        );
        assert_eq!(uses("null_sink", serde_json::json!({})), []);
        // Every kind with a path parameter says what it does with it.
        for d in catalog().iter() {
            if d.params.iter().any(|p| p.ty == ParamType::Path) {
                assert!(
                    d.files.is_some(),
                    "{} has a path but declares no files",
                    d.kind
                );
            }
        }
    }
}
