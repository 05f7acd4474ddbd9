//! Validation of FlowGraph files: every problem at once, each with its path
//! in the file and a hint.
//!
//! A file is parsed to a generic [`serde_json::Value`] first and checked
//! there, so that shape problems (a wrong type, an unknown field, a malformed
//! connection) are collected together with the semantic ones (unknown block
//! kinds, parameters, port types, sample rates) instead of stopping at the
//! first serde error. Problems come in a stable order that follows the
//! document where it can:
//!
//! 1. `apiVersion`, `kind`, `metadata`, unknown top-level fields;
//! 2. `spec` itself, then every block in name order (name, fields, kind,
//!    parameters, segment);
//! 3. connections in list order (endpoints, ports, directions, types);
//! 4. `spec.segments`, `spec.runtime`;
//! 5. graph-level checks: unconnected ports (blocks in name order), cycles,
//!    sample rates (blocks in name order).
//!
//! Problems never cascade on purpose: a block whose kind is unknown is opaque
//! (connections to it are not checked further), a port whose type depends on
//! a parameter that is wrong has an unknown type, and unknown sample rates
//! propagate as unknown.
//!
//! Duplicate keys: YAML forbids them and serde-saphyr rejects them by default
//! (`duplicate mapping key`). When that happens the file is parsed again with
//! duplicates passed through, every duplicate is reported with its path
//! (a block defined twice as "block `x` is defined more than once"), the last
//! value is kept and validation carries on.
//!
//! [`analyze`] and [`edge_rates`] expose the resolved graph (port types and
//! sample rates of the edges) to the renderer.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;

use serde_json::{Map, Value};

use crate::catalog::{BlockDescriptor, PortKind, ResolvedKind, SourceKind, TypeExpr, VlenExpr};
use crate::params::Params;
use crate::spec::{Endpoint, FlowGraphDocument, FlowGraphSpec, API_VERSION, KIND};
use crate::StreamType;

/// One problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `spec.blocks.psd.params.fft_size`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it (may be empty).
    pub hint: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if !self.hint.is_empty() {
            write!(f, " (hint: {})", self.hint)?;
        }
        Ok(())
    }
}

/// All problems found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
    pub fn push(
        &mut self,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
            hint: hint.into(),
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// Parses and validates a whole document.
///
/// The document is returned whenever it converts to the typed structs, even
/// if the report has problems (tools may still want to show it); when the
/// report is empty the document is always returned.
pub fn validate_text(text: &str) -> (Option<FlowGraphDocument>, Report) {
    let mut report = Report::default();
    let (value, mut dups) = match parse(text) {
        Ok(v) => v,
        Err(message) => {
            // The first line has the location; the rest is a source snippet.
            let first = message.lines().next().unwrap_or_default();
            // serde-saphyr's advice is for programmers, not for file authors.
            let first = first.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
            report.push("(file)", first, "check indentation and quoting");
            return (None, report);
        }
    };
    check_document(&value, &mut dups, &mut report);
    // Duplicates inside values no check looks into (a map-valued parameter…).
    for (map, key) in std::mem::take(&mut dups.0) {
        report_duplicate(&map, &key, false, &mut report);
    }
    match serde_json::from_value::<FlowGraphDocument>(value) {
        Ok(doc) => (Some(doc), report),
        Err(e) => {
            // Every shape serde rejects should have been reported above; this
            // keeps "no problems" meaning "a document is returned" regardless.
            if report.is_ok() {
                report.push("(file)", e.to_string(), "");
            }
            (None, report)
        }
    }
}

/// Validates a typed spec (blocks, parameters, connections, rates). Paths
/// start with `spec.` as in a file.
pub fn validate_spec(spec: &FlowGraphSpec) -> Report {
    let mut report = Report::default();
    match serde_json::to_value(spec) {
        Ok(v) => {
            check_spec(&v, "spec", &mut Dups::default(), &mut report);
        }
        Err(e) => report.push("spec", e.to_string(), ""),
    }
    report
}

/// The resolved graph of a spec: blocks with their descriptors and coerced
/// parameters, and every connection whose blocks exist, with its port type
/// and sample rate when known. Computed leniently (an invalid spec gives what
/// can be worked out).
pub fn analyze(spec: &FlowGraphSpec) -> Analysis {
    let mut report = Report::default();
    match serde_json::to_value(spec) {
        Ok(v) => check_spec(&v, "spec", &mut Dups::default(), &mut report),
        Err(_) => Analysis::default(),
    }
}

/// The sample rate of every stream output whose rate is known, keyed by
/// `(block, port)` of the output.
pub fn edge_rates(spec: &FlowGraphSpec) -> BTreeMap<(String, String), f64> {
    analyze(spec).rates
}

/// See [`analyze`].
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// Blocks by name.
    pub blocks: BTreeMap<String, BlockInfo>,
    /// Connections (in list order) whose two ends parse and name existing blocks.
    pub edges: Vec<EdgeInfo>,
    /// Known sample rates of stream outputs, keyed by `(block, port)`.
    pub rates: BTreeMap<(String, String), f64>,
}

/// One block of an [`Analysis`].
#[derive(Debug, Clone)]
pub struct BlockInfo {
    /// The kind as written (may be unknown, or empty when missing).
    pub kind: String,
    /// The catalog entry; `None` when the kind is unknown or the entry is broken.
    pub desc: Option<&'static BlockDescriptor>,
    /// Coerced parameters with defaults filled in (only the valid ones).
    pub params: Params,
    /// The segment, when given.
    pub segment: Option<String>,
    /// Parameters that are wrong or missing: ports typed by them have unknown types.
    bad_params: BTreeSet<String>,
}

/// What a connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    /// A stream; the item type when known.
    Stream(Option<StreamType>),
    Message,
    /// Neither end resolved to a port.
    Unknown,
}

/// One connection of an [`Analysis`].
#[derive(Debug, Clone)]
pub struct EdgeInfo {
    /// Index in `spec.connections`.
    pub index: usize,
    pub from: Endpoint,
    pub to: Endpoint,
    pub kind: EdgeKind,
    /// Sample rate of the stream, when known.
    pub rate: Option<f64>,
}

/// Formats a rate for messages and graph labels: `2 MHz`, `31.25 kHz`,
/// `61.0352 Hz` (six significant digits).
pub fn format_rate(hz: f64) -> String {
    let a = hz.abs();
    let (div, unit) = if a >= 1e9 {
        (1e9, "GHz")
    } else if a >= 1e6 {
        (1e6, "MHz")
    } else if a >= 1e3 {
        (1e3, "kHz")
    } else {
        (1.0, "Hz")
    };
    format!("{} {unit}", significant(hz / div, 6))
}

fn significant(x: f64, digits: i32) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let before = x.abs().log10().floor() as i32 + 1;
    let decimals = (digits - before).clamp(0, 12) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

// ---------------------------------------------------------------------------
// Parsing, with duplicate keys passed through and recorded.

/// Duplicate keys found while parsing: `(path of the map, key)` in document order.
#[derive(Debug, Default)]
struct Dups(Vec<(String, String)>);

impl Dups {
    /// Removes and returns the duplicated keys of the map at `path`.
    fn take(&mut self, path: &str) -> Vec<String> {
        let mut out = vec![];
        self.0.retain(|(p, k)| {
            if p == path {
                out.push(k.clone());
                false
            } else {
                true
            }
        });
        out
    }
}

fn parse(text: &str) -> Result<(Value, Dups), String> {
    match crate::spec::parse_yaml_value(text) {
        Ok(v) => Ok((v, Dups::default())),
        Err(e) => {
            // Duplicate keys are the one parse error worth recovering from.
            let options = serde_saphyr::options! {
                duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::PassThrough,
            };
            if let Ok(tree) = serde_saphyr::from_str_with_options::<Tree>(text, options) {
                let mut dups = Dups::default();
                let v = tree.into_value("", &mut dups);
                if !dups.0.is_empty() {
                    return Ok((v, dups));
                }
            }
            Err(e.to_string())
        }
    }
}

/// A YAML value that keeps repeated map keys.
enum Tree {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(String),
    Seq(Vec<Tree>),
    Map(Vec<(String, Tree)>),
}

impl<'de> serde::Deserialize<'de> for Tree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> serde::de::Visitor<'de> for TreeVisitor {
    type Value = Tree;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Tree, E> {
        Ok(Tree::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Tree, E> {
        Ok(Tree::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Tree, E> {
        Ok(Tree::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Tree, E> {
        Ok(Tree::F64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Tree, E> {
        Ok(Tree::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Tree, E> {
        Ok(Tree::Str(v))
    }
    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree::Null)
    }
    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        serde::Deserialize::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut out = vec![];
        while let Some(t) = seq.next_element()? {
            out.push(t);
        }
        Ok(Tree::Seq(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut out = vec![];
        while let Some((k, v)) = map.next_entry::<String, Tree>()? {
            out.push((k, v));
        }
        Ok(Tree::Map(out))
    }
}

impl Tree {
    /// Converts to a JSON value (the last of repeated keys wins), recording
    /// repeated keys in `dups`.
    fn into_value(self, path: &str, dups: &mut Dups) -> Value {
        match self {
            Tree::Null => Value::Null,
            Tree::Bool(b) => Value::Bool(b),
            Tree::I64(i) => Value::from(i),
            Tree::U64(u) => Value::from(u),
            Tree::F64(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
            Tree::Str(s) => Value::String(s),
            Tree::Seq(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| t.into_value(&format!("{path}[{i}]"), dups))
                    .collect(),
            ),
            Tree::Map(entries) => {
                let mut last: HashMap<String, usize> = HashMap::new();
                for (i, (k, _)) in entries.iter().enumerate() {
                    if last.insert(k.clone(), i).is_some()
                        && !dups.0.iter().any(|(p, d)| p == path && d == k)
                    {
                        dups.0.push((path.to_string(), k.clone()));
                    }
                }
                let mut m = Map::new();
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if last.get(&k) == Some(&i) {
                        let v = v.into_value(&join(path, &k), dups);
                        m.insert(k, v);
                    }
                }
                Value::Object(m)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Small helpers.

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// "a string \"abc\"", "a number 3", "a list", …
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "an empty value".to_string(),
        Value::Bool(b) => format!("a boolean {b}"),
        Value::Number(n) => format!("a number {n}"),
        Value::String(s) => {
            let shown: String = s.chars().take(40).collect();
            if shown.len() < s.len() {
                format!("a string {:?}", format!("{shown}…"))
            } else {
                format!("a string {s:?}")
            }
        }
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a map".to_string(),
    }
}

fn sorted_keys(m: &Map<String, Value>) -> Vec<&String> {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    keys
}

fn report_duplicate(map: &str, key: &str, is_block: bool, report: &mut Report) {
    if is_block {
        report.push(
            join(map, key),
            format!("block `{key}` is defined more than once"),
            "block names must be unique; rename or remove one. Only the last definition was checked",
        );
    } else {
        report.push(
            join(map, key),
            format!("`{key}` is given more than once"),
            "remove the extra one. Only the last was used",
        );
    }
}

fn report_dups_at(path: &str, dups: &mut Dups, report: &mut Report) {
    for k in dups.take(path) {
        report_duplicate(path, &k, false, report);
    }
}

/// Reports fields of `map` not in `allowed`, in name order.
fn unknown_fields(
    map: &Map<String, Value>,
    path: &str,
    allowed: &[&str],
    what: &str,
    report: &mut Report,
) {
    for k in sorted_keys(map) {
        if allowed.contains(&k.as_str()) {
            continue;
        }
        report.push(
            join(path, k),
            format!("unknown field `{k}`"),
            fields_hint(k, allowed, what),
        );
    }
}

fn fields_hint(k: &str, allowed: &[&str], what: &str) -> String {
    let list = allowed.join(", ");
    match crate::catalog::nearest(k, allowed.iter().copied()) {
        Some(n) => format!("did you mean `{n}`? {what} takes: {list}"),
        None => format!("{what} takes: {list}"),
    }
}

fn is_block_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// A DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn block_name_hint(s: &str) -> String {
    let mut fixed: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !fixed.starts_with(|c: char| c.is_ascii_lowercase()) {
        fixed.insert(0, 'b');
    }
    format!(
        "block names start with a lowercase letter and use only a-z, 0-9, `_` and `-`, \
         because connections name ports as `block.port`; try `{fixed}`"
    )
}

fn dns_hint(s: &str) -> String {
    let mut fixed: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    while fixed.contains("--") {
        fixed = fixed.replace("--", "-");
    }
    let fixed: String = fixed.trim_matches('-').chars().take(63).collect();
    let fixed = fixed.trim_matches('-');
    let base = "names become part of Kubernetes resource names, so they must be DNS-1123 \
                labels: lowercase letters, digits and `-`, starting and ending with a letter \
                or digit, at most 63 characters";
    if fixed.is_empty() {
        base.to_string()
    } else {
        format!("{base}; try `{fixed}`")
    }
}

fn same_rate(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
}

fn positive(x: Option<f64>) -> Option<f64> {
    x.filter(|x| x.is_finite() && *x > 0.0)
}

// ---------------------------------------------------------------------------
// Document level.

fn check_document(value: &Value, dups: &mut Dups, report: &mut Report) {
    let start = "a FlowGraph file is a map starting with `apiVersion: flowmesh.dev/v1alpha1` \
                 and `kind: FlowGraph`, then `metadata` and `spec`";
    let Some(root) = value.as_object() else {
        if value.is_null() {
            report.push("(file)", "the file is empty", start);
        } else {
            report.push(
                "(file)",
                format!(
                    "must be a map with apiVersion, kind, metadata and spec, got {}",
                    describe(value)
                ),
                start,
            );
        }
        return;
    };
    report_dups_at("", dups, report);
    check_constant(root, "apiVersion", API_VERSION, report);
    check_constant(root, "kind", KIND, report);
    check_metadata(root.get("metadata"), dups, report);
    unknown_fields(
        root,
        "",
        &["apiVersion", "kind", "metadata", "spec"],
        "the document",
        report,
    );
    match root.get("spec") {
        None => report.push(
            "spec",
            "required field is missing",
            "add `spec:` with `blocks:` and `connections:`",
        ),
        Some(spec) => {
            check_spec(spec, "spec", dups, report);
        }
    }
}

fn check_constant(root: &Map<String, Value>, field: &str, want: &str, report: &mut Report) {
    let hint = format!("write `{field}: {want}`");
    match root.get(field) {
        None => report.push(field, "required field is missing", hint),
        Some(Value::String(s)) if s == want => {}
        Some(Value::String(s)) => report.push(field, format!("must be `{want}`, got `{s}`"), hint),
        Some(v) => report.push(
            field,
            format!("must be `{want}`, got {}", describe(v)),
            hint,
        ),
    }
}

fn check_metadata(meta: Option<&Value>, dups: &mut Dups, report: &mut Report) {
    let Some(meta) = meta else {
        report.push(
            "metadata",
            "required field is missing",
            "add `metadata: {name: my-graph}`",
        );
        return;
    };
    let Some(m) = meta.as_object() else {
        report.push(
            "metadata",
            format!("must be a map with `name`, got {}", describe(meta)),
            "write `metadata: {name: my-graph}`",
        );
        return;
    };
    report_dups_at("metadata", dups, report);
    // Other Kubernetes metadata fields (uid, resourceVersion, …) may appear
    // when a resource is read back from a cluster, so unknown fields are fine.
    match m.get("name") {
        None => report.push(
            "metadata.name",
            "required field is missing",
            "add a name such as `name: my-graph`",
        ),
        Some(Value::String(s)) if is_dns_label(s) => {}
        Some(Value::String(s)) => report.push(
            "metadata.name",
            format!("`{s}` is not a valid name"),
            dns_hint(s),
        ),
        Some(v) => report.push(
            "metadata.name",
            format!("must be a string, got {}", describe(v)),
            "write a name such as `name: my-graph`",
        ),
    }
    if let Some(v) = m.get("namespace") {
        if !v.is_string() {
            report.push(
                "metadata.namespace",
                format!("must be a string, got {}", describe(v)),
                "",
            );
        }
    }
    for field in ["labels", "annotations"] {
        let path = format!("metadata.{field}");
        match m.get(field) {
            None => {}
            Some(Value::Object(kv)) => {
                report_dups_at(&path, dups, report);
                for k in sorted_keys(kv) {
                    let v = &kv[k];
                    if !v.is_string() {
                        let shown = match v {
                            Value::Number(n) => n.to_string(),
                            Value::Bool(b) => b.to_string(),
                            _ => String::new(),
                        };
                        report.push(
                            join(&path, k),
                            format!("must be a string, got {}", describe(v)),
                            format!("quote it: `{k}: \"{shown}\"`"),
                        );
                    }
                }
            }
            Some(v) => report.push(
                path,
                format!("must be a map of strings, got {}", describe(v)),
                format!("write `{field}: {{key: value}}`"),
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Spec level.

/// A block as far as it could be understood.
struct Block {
    info: BlockInfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dir {
    In,
    Out,
}

impl Dir {
    fn noun(self) -> &'static str {
        match self {
            Dir::In => "input",
            Dir::Out => "output",
        }
    }
}

/// A concrete port of a block, as far as its type is known.
#[derive(Debug, Clone)]
struct Port {
    name: String,
    stream: bool,
    /// Stream type; `None` when unknown (a parameter it depends on is wrong).
    ty: Option<StreamType>,
    optional: bool,
    item_dep: Option<&'static str>,
    vlen_dep: Option<&'static str>,
}

fn type_dep(t: TypeExpr) -> Option<&'static str> {
    match t {
        TypeExpr::Fixed(_) => None,
        TypeExpr::Param(p) | TypeExpr::RealOf(p) | TypeExpr::FloatOf(p) => Some(p),
    }
}

fn vlen_dep(v: VlenExpr) -> Option<&'static str> {
    match v {
        VlenExpr::Fixed(_) => None,
        VlenExpr::Param(p) => Some(p),
    }
}

/// Most ports a counted family is expanded to (guards against huge counts).
const MAX_FAMILY: u64 = 4096;

impl Block {
    fn kind(&self) -> &str {
        &self.info.kind
    }

    /// Concrete ports in one direction, and the names of port families whose
    /// count is unknown (its parameter is wrong).
    fn ports(&self, dir: Dir) -> (Vec<Port>, Vec<&'static str>) {
        let Some(desc) = self.info.desc else {
            return (vec![], vec![]);
        };
        let (ins, outs) = desc.resolve_ports(&self.info.params);
        let (resolved, descs) = match dir {
            Dir::In => (ins, &desc.inputs),
            Dir::Out => (outs, &desc.outputs),
        };
        let bad = &self.info.bad_params;
        let mut ports = vec![];
        let mut families = vec![];
        for pd in descs {
            let (stream, item_dep, vlen_dep) = match pd.kind {
                PortKind::Stream { item, vlen } => (true, type_dep(item), vlen_dep(vlen)),
                PortKind::Message => (false, None, None),
            };
            let unknown = [item_dep, vlen_dep]
                .into_iter()
                .flatten()
                .any(|d| bad.contains(d));
            let names: Vec<String> = match pd.count {
                None => vec![pd.name.to_string()],
                Some(c) if bad.contains(c) => {
                    families.push(pd.name);
                    continue;
                }
                Some(c) => {
                    let n = self.info.params.u64(c).unwrap_or(0).min(MAX_FAMILY);
                    (0..n).map(|i| format!("{}{i}", pd.name)).collect()
                }
            };
            for name in names {
                let ty = match resolved.iter().find(|r| r.name == name).map(|r| r.kind) {
                    Some(ResolvedKind::Stream(t)) if !unknown => Some(t),
                    _ => None,
                };
                ports.push(Port {
                    name,
                    stream,
                    ty,
                    optional: pd.optional,
                    item_dep,
                    vlen_dep,
                });
            }
        }
        (ports, families)
    }

    fn port(&self, dir: Dir, name: &str) -> Option<Port> {
        let (ports, families) = self.ports(dir);
        if let Some(p) = ports.into_iter().find(|p| p.name == name) {
            return Some(p);
        }
        let desc = self.info.desc?;
        let descs = match dir {
            Dir::In => &desc.inputs,
            Dir::Out => &desc.outputs,
        };
        for fam in families {
            let Some(rest) = name.strip_prefix(fam) else {
                continue;
            };
            if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let pd = descs.iter().find(|d| d.name == fam)?;
            let (stream, item_dep, vlen_dep) = match pd.kind {
                PortKind::Stream { item, vlen } => (true, type_dep(item), vlen_dep(vlen)),
                PortKind::Message => (false, None, None),
            };
            return Some(Port {
                name: name.to_string(),
                stream,
                ty: None,
                optional: pd.optional,
                item_dep,
                vlen_dep,
            });
        }
        None
    }

    fn port_names(&self, dir: Dir) -> Vec<String> {
        let (ports, families) = self.ports(dir);
        let mut names: Vec<String> = ports.into_iter().map(|p| p.name).collect();
        names.extend(families.into_iter().map(|f| format!("{f}0, {f}1, …")));
        names
    }
}

/// Checks a spec value at `sp` (`spec`), returning what could be worked out.
fn check_spec(spec: &Value, sp: &str, dups: &mut Dups, report: &mut Report) -> Analysis {
    let mut analysis = Analysis::default();
    let Some(m) = spec.as_object() else {
        report.push(
            sp,
            format!(
                "must be a map with `blocks` and `connections`, got {}",
                describe(spec)
            ),
            "write `spec:` followed by an indented `blocks:` map and a `connections:` list",
        );
        return analysis;
    };
    report_dups_at(sp, dups, report);
    unknown_fields(
        m,
        sp,
        &["blocks", "connections", "segments", "runtime"],
        "spec",
        report,
    );

    let blocks = check_blocks(m.get("blocks"), sp, dups, report);
    let (edges, connections_ok) = check_connections(m.get("connections"), sp, &blocks, report);
    check_segments(m.get("segments"), sp, dups, report);
    check_runtime(m.get("runtime"), sp, dups, report);

    // Graph-level checks.
    let stream_edges: Vec<&Edge> = edges.iter().filter(|e| e.stream).collect();
    if connections_ok {
        check_unconnected(&blocks, &edges, sp, report);
    }
    check_cycles(&blocks, &stream_edges, sp, report);
    let rates = check_rates(&blocks, &stream_edges, sp, report);
    check_scalable(m.get("segments"), &blocks, &edges, sp, report);

    analysis.edges = edges
        .iter()
        .map(|e| EdgeInfo {
            index: e.index,
            from: e.from.clone(),
            to: e.to.clone(),
            kind: e.kind,
            rate: match e.kind {
                EdgeKind::Stream(_) => rates
                    .get(&(e.from.block.clone(), e.from.port.clone()))
                    .copied(),
                _ => None,
            },
        })
        .filter(|e| blocks.contains_key(&e.from.block) && blocks.contains_key(&e.to.block))
        .collect();
    analysis.rates = rates;
    analysis.blocks = blocks.into_iter().map(|(n, b)| (n, b.info)).collect();
    analysis
}

fn check_blocks(
    v: Option<&Value>,
    sp: &str,
    dups: &mut Dups,
    report: &mut Report,
) -> BTreeMap<String, Block> {
    let path = format!("{sp}.blocks");
    let mut out = BTreeMap::new();
    let m = match v {
        None => {
            report.push(
                &path,
                "required field is missing",
                "add `blocks:` with one entry per block, e.g. `src: {kind: signal_source, params: {...}}`",
            );
            return out;
        }
        Some(Value::Object(m)) => m,
        Some(v) => {
            report.push(
                &path,
                format!(
                    "must be a map of block names to blocks, got {}",
                    describe(v)
                ),
                "write one `name: {kind: ..., params: {...}}` entry per block",
            );
            return out;
        }
    };
    if m.is_empty() {
        report.push(
            &path,
            "the graph has no blocks",
            "add at least one block, e.g. `src: {kind: signal_source, params: {...}}`",
        );
    }
    let mut dup_blocks: BTreeSet<String> = dups.take(&path).into_iter().collect();
    for name in sorted_keys(m) {
        let bpath = join(&path, name);
        if dup_blocks.remove(name.as_str()) {
            report_duplicate(&path, name, true, report);
        }
        if !is_block_name(name) {
            report.push(
                &bpath,
                format!("`{name}` is not a valid block name"),
                block_name_hint(name),
            );
        }
        let block = check_block(&m[name], &bpath, dups, report);
        out.insert(name.clone(), block);
    }
    out
}

fn check_block(v: &Value, bpath: &str, dups: &mut Dups, report: &mut Report) -> Block {
    let mut info = BlockInfo {
        kind: String::new(),
        desc: None,
        params: Params::default(),
        segment: None,
        bad_params: BTreeSet::new(),
    };
    let Some(m) = v.as_object() else {
        report.push(
            bpath,
            format!(
                "must be a map with `kind` and `params`, got {}",
                describe(v)
            ),
            "write `name: {kind: ..., params: {...}}`",
        );
        return Block { info };
    };
    report_dups_at(bpath, dups, report);
    let kind = m.get("kind").and_then(Value::as_str);
    let desc = kind.and_then(|k| crate::catalog().get(k));
    const FIELDS: [&str; 3] = ["kind", "params", "segment"];
    for k in sorted_keys(m) {
        if FIELDS.contains(&k.as_str()) {
            continue;
        }
        let hint = match desc.and_then(|d| d.param_descriptor(k)) {
            Some(_) => format!(
                "`{k}` is a parameter of {}: put it under `params:`",
                kind.unwrap_or_default()
            ),
            None => fields_hint(k, &FIELDS, "a block"),
        };
        report.push(join(bpath, k), format!("unknown field `{k}`"), hint);
    }

    let kpath = join(bpath, "kind");
    match m.get("kind") {
        None => report.push(
            &kpath,
            "required field is missing",
            "add `kind:`; `flowmesh blocks` lists the kinds",
        ),
        Some(Value::String(k)) => {
            info.kind = k.clone();
            if desc.is_none() {
                let hint = match crate::catalog().nearest(k) {
                    Some(n) => format!("did you mean `{n}`? `flowmesh blocks` lists the kinds"),
                    None => "`flowmesh blocks` lists the kinds".to_string(),
                };
                report.push(&kpath, format!("unknown block kind `{k}`"), hint);
            }
        }
        Some(v) => report.push(
            &kpath,
            format!("must be a block kind name, got {}", describe(v)),
            "`flowmesh blocks` lists the kinds",
        ),
    }

    let ppath = join(bpath, "params");
    let params = match m.get("params") {
        None => Some(BTreeMap::new()),
        Some(Value::Object(p)) => {
            report_dups_at(&ppath, dups, report);
            Some(p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        }
        Some(v) => {
            report.push(
                &ppath,
                format!(
                    "must be a map of parameter names to values, got {}",
                    describe(v)
                ),
                "write `params: {name: value, ...}`, or leave it out",
            );
            None
        }
    };
    if let (Some(desc), Some(given)) = (desc, params) {
        let (params, problems) = crate::params::resolve(desc, &given);
        for (p, message, hint) in problems {
            report.push(join(&ppath, &p), message, hint);
            info.bad_params.insert(p);
        }
        if let Some(check) = desc.check {
            for (p, message, hint) in check(&params) {
                report.push(join(&ppath, &p), message, hint);
            }
        }
        info.params = params;
        info.desc = Some(desc);
    }

    match m.get("segment") {
        None => {}
        Some(Value::String(s)) => {
            if !is_dns_label(s) {
                report.push(
                    join(bpath, "segment"),
                    format!("`{s}` is not a valid segment name"),
                    dns_hint(s),
                );
            }
            info.segment = Some(s.clone());
        }
        Some(v) => report.push(
            join(bpath, "segment"),
            format!("must be a segment name, got {}", describe(v)),
            "write `segment: name` or leave it out for the default segment",
        ),
    }
    Block { info }
}

/// One connection whose two ends parse and name existing blocks.
struct Edge {
    index: usize,
    from: Endpoint,
    to: Endpoint,
    kind: EdgeKind,
    /// Both ends are stream ports in the right directions, and this is the
    /// first connection into the input: used for cycles and rates.
    stream: bool,
    /// The from end is a valid output port.
    from_ok: bool,
    /// The to end is a valid input port.
    to_ok: bool,
}

/// How one end of a connection resolved.
enum End {
    /// Not `block.port` (already reported).
    Malformed,
    /// The block does not exist (already reported).
    NoBlock,
    /// The block's kind is unknown or its entry broken: nothing to check.
    Opaque,
    /// The block has no such port in either direction.
    NoPort,
    /// The port exists, but in the other direction.
    WrongDir,
    Ok(Port),
}

fn check_connections(
    v: Option<&Value>,
    sp: &str,
    blocks: &BTreeMap<String, Block>,
    report: &mut Report,
) -> (Vec<Edge>, bool) {
    let path = format!("{sp}.connections");
    let list = match v {
        None => return (vec![], true),
        Some(Value::Array(a)) => a,
        Some(v) => {
            report.push(
                &path,
                format!("must be a list of [from, to] pairs, got {}", describe(v)),
                "write one `- [src.out, sink.in]` line per connection",
            );
            return (vec![], false);
        }
    };
    let mut edges = vec![];
    let mut inputs: BTreeMap<(String, String), (usize, String)> = BTreeMap::new();
    let mut message_pairs: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, item) in list.iter().enumerate() {
        let cpath = format!("{path}[{i}]");
        let pair = match item {
            Value::Array(a) if a.len() == 2 => match (&a[0], &a[1]) {
                (Value::String(f), Value::String(t)) => Some((f.as_str(), t.as_str())),
                _ => None,
            },
            _ => None,
        };
        let Some((from_s, to_s)) = pair else {
            let hint = match item.as_str().and_then(|s| {
                s.split_once("->")
                    .or_else(|| s.split_once(','))
                    .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
            }) {
                Some((a, b)) => format!("write `- [{a}, {b}]`"),
                None => "write `- [from.port, to.port]`, e.g. `- [src.out, sink.in]`".to_string(),
            };
            report.push(
                &cpath,
                format!(
                    "must be a pair [from, to] of `block.port` strings, got {}",
                    match item {
                        Value::Array(a) => format!("a list of {} item(s)", a.len()),
                        other => describe(other),
                    }
                ),
                hint,
            );
            continue;
        };

        let resolve = |s: &str, dir: Dir| -> (Option<Endpoint>, End) {
            let Some(ep) = Endpoint::parse(s) else {
                return (None, End::Malformed);
            };
            let Some(block) = blocks.get(&ep.block) else {
                return (Some(ep), End::NoBlock);
            };
            if block.info.desc.is_none() {
                return (Some(ep), End::Opaque);
            }
            if let Some(p) = block.port(dir, &ep.port) {
                return (Some(ep), End::Ok(p));
            }
            let other = match dir {
                Dir::In => Dir::Out,
                Dir::Out => Dir::In,
            };
            if block.port(other, &ep.port).is_some() {
                return (Some(ep), End::WrongDir);
            }
            (Some(ep), End::NoPort)
        };

        let (from, fe) = resolve(from_s, Dir::Out);
        let (to, te) = resolve(to_s, Dir::In);

        // Problems with each end, from first; a swapped pair is one problem.
        if let (End::WrongDir, End::WrongDir) = (&fe, &te) {
            report.push(
                &cpath,
                format!("the ends are swapped: `{from_s}` is an input and `{to_s}` is an output"),
                format!("a connection goes from an output to an input: write `[{to_s}, {from_s}]`"),
            );
        } else {
            for (end, ep, s, dir) in [(&fe, &from, from_s, Dir::Out), (&te, &to, to_s, Dir::In)] {
                if let End::Malformed = end {
                    report.push(
                        &cpath,
                        format!("`{s}` is not a `block.port` endpoint"),
                        "write both ends as `block.port`, e.g. `[src.out, sink.in]`",
                    );
                    continue;
                }
                let Some(ep) = ep else { continue };
                let Some(block) = blocks.get(&ep.block) else {
                    let names = blocks.keys().map(|k| k.as_str());
                    let hint = match crate::catalog::nearest(&ep.block, names) {
                        Some(n) => format!("did you mean `{n}`?"),
                        None if blocks.is_empty() => "spec.blocks defines no blocks".to_string(),
                        None => format!(
                            "the blocks are: {}",
                            blocks.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    };
                    report.push(
                        &cpath,
                        format!("unknown block `{}` in `{s}`", ep.block),
                        hint,
                    );
                    continue;
                };
                let names = block.port_names(dir);
                let list = if names.is_empty() {
                    format!("{} has no {}s", block.kind(), dir.noun())
                } else {
                    format!("{}'s {}s: {}", block.kind(), dir.noun(), names.join(", "))
                };
                match end {
                    End::NoPort => {
                        let message = if names.is_empty() {
                            format!("`{}` ({}) has no {}s", ep.block, block.kind(), dir.noun())
                        } else {
                            format!(
                                "`{}` ({}) has no {} `{}`",
                                ep.block,
                                block.kind(),
                                dir.noun(),
                                ep.port
                            )
                        };
                        let hint = match crate::catalog::nearest(
                            &ep.port,
                            names.iter().map(|n| n.as_str()),
                        ) {
                            Some(n) => format!("did you mean `{n}`? {list}"),
                            None => list,
                        };
                        report.push(&cpath, message, hint);
                    }
                    End::WrongDir => {
                        let (is, goes) = match dir {
                            Dir::Out => ("an input", "from an output"),
                            Dir::In => ("an output", "to an input"),
                        };
                        report.push(
                            &cpath,
                            format!("`{s}` is {is}, but a connection goes {goes}"),
                            list,
                        );
                    }
                    _ => {}
                }
            }
        }

        let (Some(from), Some(to)) = (from, to) else {
            continue;
        };
        let mut edge = Edge {
            index: i,
            from,
            to,
            kind: EdgeKind::Unknown,
            stream: false,
            from_ok: matches!(fe, End::Ok(_)),
            to_ok: matches!(te, End::Ok(_)),
        };
        let side = |e: &End| match e {
            End::Ok(p) if p.stream => Some(EdgeKind::Stream(p.ty)),
            End::Ok(_) => Some(EdgeKind::Message),
            _ => None,
        };
        edge.kind = side(&fe).or_else(|| side(&te)).unwrap_or(EdgeKind::Unknown);

        if let (End::Ok(fp), End::Ok(tp)) = (&fe, &te) {
            match (fp.stream, tp.stream) {
                (true, false) => report.push(
                    &cpath,
                    format!(
                        "`{from_s}` is a stream output ({}) but `{to_s}` takes messages",
                        fp.ty.map_or("type unknown".to_string(), |t| t.to_string())
                    ),
                    "connect stream outputs to stream inputs and message outputs to message inputs",
                ),
                (false, true) => report.push(
                    &cpath,
                    format!(
                        "`{from_s}` sends messages but `{to_s}` is a stream input ({})",
                        tp.ty.map_or("type unknown".to_string(), |t| t.to_string())
                    ),
                    "connect stream outputs to stream inputs and message outputs to message inputs",
                ),
                (true, true) => {
                    if let (Some(a), Some(b)) = (fp.ty, tp.ty) {
                        if a != b {
                            report.push(
                                &cpath,
                                format!("{from_s} carries {a} but {to_s} takes {b}"),
                                mismatch_hint(&edge.from, fp, &edge.to, tp, a, b),
                            );
                        }
                    }
                }
                (false, false) => {
                    let key = (from_s.to_string(), to_s.to_string());
                    if let Some(j) = message_pairs.get(&key) {
                        report.push(
                            &cpath,
                            format!("duplicates {path}[{j}]"),
                            "remove one of them",
                        );
                    } else {
                        message_pairs.insert(key, i);
                    }
                }
            }
        }
        if let End::Ok(tp) = &te {
            if tp.stream {
                let key = (edge.to.block.clone(), edge.to.port.clone());
                if let Some((j, other)) = inputs.get(&key) {
                    report.push(
                        &cpath,
                        format!("`{to_s}` is already connected, from `{other}` in {path}[{j}]"),
                        "an input takes one stream; combine streams with an `add` block first",
                    );
                } else if matches!(fe, End::Ok(_) | End::Opaque) {
                    // Only a usable source takes the input: a broken first
                    // connection is reported on its own, not again here.
                    inputs.insert(key, (i, from_s.to_string()));
                    edge.stream = matches!(&fe, End::Ok(fp) if fp.stream);
                }
            }
        }
        edges.push(edge);
    }
    (edges, true)
}

fn mismatch_hint(
    from: &Endpoint,
    fp: &Port,
    to: &Endpoint,
    tp: &Port,
    a: StreamType,
    b: StreamType,
) -> String {
    let mut knobs = vec![];
    for (ep, p) in [(from, fp), (to, tp)] {
        if a.item != b.item {
            if let Some(d) = p.item_dep {
                knobs.push(format!("{}'s `{d}`", ep.block));
            }
        }
        if a.vlen != b.vlen {
            if let Some(d) = p.vlen_dep {
                let k = format!("{}'s `{d}`", ep.block);
                if !knobs.contains(&k) {
                    knobs.push(k);
                }
            }
        }
    }
    if !knobs.is_empty() {
        return format!(
            "make both ends the same type by changing {}",
            knobs.join(" or ")
        );
    }
    if a.vlen != b.vlen {
        "the vector lengths differ; put a block that changes the vector length between them"
            .to_string()
    } else if a.item.is_complex() && !b.item.is_complex() {
        "insert complex_to_real, complex_to_mag or complex_to_mag_squared between them".to_string()
    } else {
        "insert a `convert` block between them".to_string()
    }
}

/// The autoscaler's optional knobs of `segments.<s>.scaling`
/// (docs/operator.md, "Autoscaling").
fn check_autoscaler_knobs(m: &Map<String, Value>, path: &str, report: &mut Report) {
    if let Some(x) = m.get("targetSecondsOfBacklog") {
        if !x.as_f64().is_some_and(|t| t > 0.0 && t <= 3600.0) {
            report.push(
                join(path, "targetSecondsOfBacklog"),
                format!(
                    "must be a number of seconds above 0 and at most 3600, got {}",
                    describe(x)
                ),
                "write e.g. `targetSecondsOfBacklog: 5`",
            );
        }
    }
    for (k, lo, hi, eg) in [
        ("cooldownSeconds", 0, 86_400, "cooldownSeconds: 60"),
        ("lookbackSeconds", 1, 86_400, "lookbackSeconds: 120"),
        ("maxStep", 1, 1000, "maxStep: 2"),
    ] {
        if let Some(x) = m.get(k) {
            if !x.as_u64().is_some_and(|n| (lo..=hi).contains(&n)) {
                report.push(
                    join(path, k),
                    format!(
                        "must be a whole number from {lo} to {hi}, got {}",
                        describe(x)
                    ),
                    format!("write it as digits, e.g. `{eg}`"),
                );
            }
        }
    }
    if let Some(h) = m.get("hpa") {
        let hp = join(path, "hpa");
        let Some(hm) = h.as_object() else {
            report.push(
                hp,
                format!(
                    "must be a map with `targetCPUUtilization`, got {}",
                    describe(h)
                ),
                "write `hpa: {targetCPUUtilization: 70}`",
            );
            return;
        };
        unknown_fields(hm, &hp, &["targetCPUUtilization"], "hpa", report);
        match hm.get("targetCPUUtilization") {
            None => report.push(
                join(&hp, "targetCPUUtilization"),
                "is missing: the HPA needs a CPU target".to_string(),
                "write `hpa: {targetCPUUtilization: 70}`",
            ),
            Some(x) if !x.as_u64().is_some_and(|n| (1..=100).contains(&n)) => report.push(
                join(&hp, "targetCPUUtilization"),
                format!(
                    "must be a whole percentage from 1 to 100, got {}",
                    describe(x)
                ),
                "write e.g. `targetCPUUtilization: 70`",
            ),
            Some(_) => {}
        }
    }
}

/// `segments.<s>.scaling`: `{min, max}` with 1 <= min <= max, and the
/// autoscaler's optional knobs.
fn check_scaling(v: &Value, path: &str, report: &mut Report) {
    let Some(m) = v.as_object() else {
        report.push(
            path,
            format!("must be a map with `min` and `max`, got {}", describe(v)),
            "write `scaling: {min: 1, max: 4}`",
        );
        return;
    };
    unknown_fields(
        m,
        path,
        &[
            "min",
            "max",
            "ordered",
            "targetSecondsOfBacklog",
            "cooldownSeconds",
            "lookbackSeconds",
            "maxStep",
            "hpa",
        ],
        "scaling",
        report,
    );
    check_autoscaler_knobs(m, path, report);
    if let Some(o) = m.get("ordered").filter(|o| !o.is_boolean()) {
        report.push(
            join(path, "ordered"),
            format!("must be true or false, got {}", describe(o)),
            "write `ordered: true` to have results delivered in `id` order",
        );
    }
    let mut bound = |k: &str| match m.get(k) {
        None => {
            report.push(
                join(path, k),
                format!("is missing: scaling needs `{k}`"),
                "write `scaling: {min: 1, max: 4}`",
            );
            None
        }
        Some(x) => match x.as_u64().filter(|n| (1..=u32::MAX as u64).contains(n)) {
            Some(n) => Some(n),
            None => {
                report.push(
                    join(path, k),
                    format!("must be a whole number of at least 1, got {}", describe(x)),
                    format!("write it as digits, e.g. `{k}: 2`"),
                );
                None
            }
        },
    };
    if let (Some(min), Some(max)) = (bound("min"), bound("max")) {
        if max < min {
            report.push(
                join(path, "max"),
                format!("is {max}, below `min` ({min})"),
                "make `max` at least `min`",
            );
        }
    }
}

/// Scalable segments (`segments.<s>.scaling`): every input a message edge
/// from another segment, at most one message output edge to another
/// segment, and no stream output to another segment (docs/scaling.md).
fn check_scalable(
    segments: Option<&Value>,
    blocks: &BTreeMap<String, Block>,
    edges: &[Edge],
    sp: &str,
    report: &mut Report,
) {
    let Some(m) = segments.and_then(Value::as_object) else {
        return;
    };
    let seg_of = |b: &str| {
        blocks
            .get(b)
            .map(|b| b.info.segment.as_deref().unwrap_or("default").to_string())
    };
    // One segment (a worker's own sub-graph, or a graph run in one
    // process): nothing crosses segments, nothing to check.
    let used: BTreeSet<String> = blocks.keys().filter_map(|b| seg_of(b)).collect();
    if used.len() < 2 {
        return;
    }
    for name in sorted_keys(m) {
        // A segment no block names runs nothing: nothing to check.
        if m[name].get("scaling").is_none() || !used.contains(name.as_str()) {
            continue;
        }
        let path = join(&join(&format!("{sp}.segments"), name), "scaling");
        let mut inputs = BTreeSet::new();
        let mut outputs = BTreeSet::new();
        for e in edges {
            let (Some(fs), Some(ts)) = (seg_of(&e.from.block), seg_of(&e.to.block)) else {
                continue;
            };
            if fs == ts || (fs != *name && ts != *name) {
                continue;
            }
            let stream = matches!(e.kind, EdgeKind::Stream(_));
            if ts == *name {
                if stream {
                    report.push(
                        &path,
                        format!(
                            "segment `{name}` is scalable but its input {} -> {} is a stream: a \
                             stream edge has one consumer position and cannot be shared between \
                             replicas",
                            e.from, e.to
                        ),
                        "put the stream blocks in another segment and send messages (e.g. \
                         detection snippets) into the scalable one",
                    );
                } else {
                    inputs.insert(e.from.to_string());
                }
            } else if stream {
                report.push(
                    &path,
                    format!(
                        "segment `{name}` is scalable but its output {} -> {} is a stream: the \
                         replicas' streams could not be merged into one",
                        e.from, e.to
                    ),
                    "send messages (with the `id` of the message they answer) out of a scalable \
                     segment",
                );
            } else {
                if m.get(&ts).and_then(|t| t.get("scaling")).is_some() {
                    report.push(
                        &path,
                        format!(
                            "segment `{name}` is scalable and sends {} -> {} to segment `{ts}`, \
                             which is scalable too: replicas feed one gathering consumer, not \
                             other replicas",
                            e.from, e.to
                        ),
                        "put a segment that is not scalable between the two",
                    );
                }
                outputs.insert((e.from.to_string(), ts));
            }
        }
        if inputs.is_empty() {
            report.push(
                &path,
                format!(
                    "segment `{name}` is scalable but has no message input from another segment: \
                     there is nothing to share between replicas"
                ),
                "connect a message output of another segment to it, or remove `scaling`",
            );
        } else if inputs.len() > 1 {
            report.push(
                &path,
                format!(
                    "segment `{name}` is scalable and has {} message inputs ({}): a scalable \
                     segment takes one (its replicas acknowledge messages by `id`, and ids of \
                     two inputs would collide)",
                    inputs.len(),
                    inputs.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
                "merge the inputs into one message port before the segment",
            );
        }
        if outputs.len() > 1 {
            report.push(
                &path,
                format!(
                    "segment `{name}` is scalable and has {} message outputs to other segments: \
                     a replica acknowledges its input when the one result carrying its `id` was \
                     acknowledged downstream, so it takes at most one",
                    outputs.len()
                ),
                "send the results of a scalable segment out of one port to one segment",
            );
        }
    }
}

fn check_segments(v: Option<&Value>, sp: &str, dups: &mut Dups, report: &mut Report) {
    let path = format!("{sp}.segments");
    let m = match v {
        None => return,
        Some(Value::Object(m)) => m,
        Some(v) => {
            report.push(
                &path,
                format!(
                    "must be a map of segment names to settings, got {}",
                    describe(v)
                ),
                "write `segments: {name: {host: node-1}}`",
            );
            return;
        }
    };
    report_dups_at(&path, dups, report);
    const FIELDS: [&str; 3] = ["host", "kubernetes", "scaling"];
    for name in sorted_keys(m) {
        let spath = join(&path, name);
        if !is_dns_label(name) {
            report.push(
                &spath,
                format!("`{name}` is not a valid segment name"),
                dns_hint(name),
            );
        }
        let Some(s) = m[name].as_object() else {
            report.push(
                &spath,
                format!(
                    "must be a map of segment settings, got {}",
                    describe(&m[name])
                ),
                "write `{}` for the defaults, or `{host: node-1, scaling: {min: 1, max: 4}}`",
            );
            continue;
        };
        report_dups_at(&spath, dups, report);
        // `replicas` is reported below as removed, not as unknown.
        let mut known = s.clone();
        known.remove("replicas");
        unknown_fields(&known, &spath, &FIELDS, "a segment", report);
        if s.contains_key("replicas") {
            report.push(
                join(&spath, "replicas"),
                "was removed: a fixed replica count does nothing; a segment whose inputs are all \
                 message edges scales between bounds"
                    .to_string(),
                "use `scaling: {min: 1, max: 4}` (docs/scaling.md), or remove `replicas`",
            );
        }
        if let Some(sc) = s.get("scaling") {
            check_scaling(sc, &join(&spath, "scaling"), report);
        }
        if let Some(h) = s.get("host") {
            if !h.is_string() {
                report.push(
                    join(&spath, "host"),
                    format!("must be a host or node name, got {}", describe(h)),
                    "",
                );
            }
        }
        // Its fields are checked against the Kubernetes API types by
        // flowmesh-k8s (`flowmesh validate`, the operator, the workers).
        if let Some(k) = s.get("kubernetes") {
            if !k.is_object() {
                report.push(
                    join(&spath, "kubernetes"),
                    format!("must be a map of Kubernetes settings, got {}", describe(k)),
                    "write e.g. `kubernetes: {nodeSelector: {radio: \"true\"}}` (docs/operator.md)",
                );
            }
        }
    }
}

fn check_runtime(v: Option<&Value>, sp: &str, dups: &mut Dups, report: &mut Report) {
    let path = format!("{sp}.runtime");
    let m = match v {
        None => return,
        Some(Value::Object(m)) => m,
        Some(v) => {
            report.push(
                &path,
                format!("must be a map of runtime settings, got {}", describe(v)),
                "write `runtime: {scheduler: pool}` or leave it out",
            );
            return;
        }
    };
    report_dups_at(&path, dups, report);
    unknown_fields(
        m,
        &path,
        &[
            "scheduler",
            "threads",
            "bufferBytes",
            "crossThreadBytes",
            "network",
        ],
        "runtime",
        report,
    );
    match m.get("network") {
        None => {}
        Some(Value::Object(n)) => {
            let npath = join(&path, "network");
            unknown_fields(
                n,
                &npath,
                &["crc", "retentionBytes", "flushMicros", "lingerSeconds"],
                "network",
                report,
            );
            if let Some(x) = n.get("crc") {
                if !x.is_boolean() {
                    report.push(
                        join(&npath, "crc"),
                        format!("must be true or false, got {}", describe(x)),
                        "write `crc: false` to turn CRC32C off",
                    );
                }
            }
            for (field, min) in [
                ("retentionBytes", 65536u64),
                ("flushMicros", 0),
                ("lingerSeconds", 0),
            ] {
                if let Some(x) = n.get(field) {
                    if x.as_u64().is_none_or(|v| v < min) {
                        report.push(
                            join(&npath, field),
                            format!(
                                "must be a whole number of at least {min}, got {}",
                                describe(x)
                            ),
                            format!("write it as digits, e.g. `{field}: {}`", min.max(1000)),
                        );
                    }
                }
            }
        }
        Some(v) => report.push(
            join(&path, "network"),
            format!("must be a map, got {}", describe(v)),
            "write `network: {crc: true, retentionBytes: 16777216, flushMicros: 1000}`",
        ),
    }
    const SCHEDULERS: [&str; 2] = ["pool", "thread-per-block"];
    match m.get("scheduler") {
        None => {}
        Some(Value::String(s)) if SCHEDULERS.contains(&s.as_str()) => {}
        Some(v) => {
            let message = match v {
                Value::String(s) => format!("unknown scheduler `{s}`"),
                other => format!("must be a scheduler name, got {}", describe(other)),
            };
            let hint = match v
                .as_str()
                .and_then(|s| crate::catalog::nearest(s, SCHEDULERS.iter().copied()))
            {
                Some(n) => format!("did you mean `{n}`? use pool or thread-per-block"),
                None => "use pool or thread-per-block".to_string(),
            };
            report.push(join(&path, "scheduler"), message, hint);
        }
    }
    for (field, max) in [
        ("threads", u32::MAX as u64),
        ("bufferBytes", u64::MAX),
        ("crossThreadBytes", u64::MAX),
    ] {
        if let Some(x) = m.get(field) {
            if x.as_u64().is_none_or(|n| n > max) {
                report.push(
                    join(&path, field),
                    format!("must be a whole number of at least 0, got {}", describe(x)),
                    format!("write it as digits, e.g. `{field}: 4`"),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Graph level.

fn check_unconnected(
    blocks: &BTreeMap<String, Block>,
    edges: &[Edge],
    sp: &str,
    report: &mut Report,
) {
    let mut connected: BTreeSet<(&str, Dir, &str)> = BTreeSet::new();
    for e in edges {
        if e.from_ok {
            connected.insert((&e.from.block, Dir::Out, &e.from.port));
        }
        if e.to_ok {
            connected.insert((&e.to.block, Dir::In, &e.to.port));
        }
    }
    for (name, block) in blocks {
        let bpath = format!("{sp}.blocks.{name}");
        for p in block.ports(Dir::In).0 {
            if p.stream && !p.optional && !connected.contains(&(name, Dir::In, &p.name)) {
                report.push(
                    &bpath,
                    format!("input `{}` is not connected", p.name),
                    format!(
                        "connect it: add `- [BLOCK.PORT, {name}.{}]` to {sp}.connections",
                        p.name
                    ),
                );
            }
        }
        for p in block.ports(Dir::Out).0 {
            if p.stream && !p.optional && !connected.contains(&(name, Dir::Out, &p.name)) {
                report.push(
                    &bpath,
                    format!("output `{}` is not connected", p.name),
                    format!(
                        "connect it to a consumer, or to a null_sink if you don't need it: `- [{name}.{}, BLOCK.in]`",
                        p.name
                    ),
                );
            }
        }
    }
}

fn successors<'a>(edges: &[&'a Edge]) -> BTreeMap<&'a str, BTreeSet<&'a str>> {
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges {
        next.entry(&e.from.block).or_default().insert(&e.to.block);
    }
    next
}

fn check_cycles(blocks: &BTreeMap<String, Block>, edges: &[&Edge], sp: &str, report: &mut Report) {
    let next = successors(edges);
    let empty = BTreeSet::new();
    let mut in_reported: BTreeSet<&str> = BTreeSet::new();
    for start in blocks.keys().map(|s| s.as_str()) {
        if in_reported.contains(start) {
            continue;
        }
        // Shortest path from `start` back to itself (BFS, neighbours in name order).
        let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue: VecDeque<&str> = VecDeque::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        queue.push_back(start);
        let mut closing = None;
        'bfs: while let Some(n) = queue.pop_front() {
            for &s in next.get(n).unwrap_or(&empty) {
                if s == start {
                    closing = Some(n);
                    break 'bfs;
                }
                if seen.insert(s) {
                    prev.insert(s, n);
                    queue.push_back(s);
                }
            }
        }
        let Some(last) = closing else { continue };
        let mut cycle = vec![last];
        let mut cur = last;
        while cur != start {
            cur = prev[cur];
            cycle.push(cur);
        }
        cycle.reverse();
        // Everything on a cycle through `start` is in its strongly connected
        // component; don't report the same loop again from another block.
        let reach_back = |n: &str| -> bool {
            let mut seen = BTreeSet::new();
            let mut stack = vec![n];
            while let Some(x) = stack.pop() {
                if x == start {
                    return true;
                }
                if seen.insert(x) {
                    stack.extend(next.get(x).unwrap_or(&empty).iter().copied());
                }
            }
            false
        };
        in_reported.insert(start);
        for &n in seen.iter() {
            if reach_back(n) {
                in_reported.insert(n);
            }
        }
        let mut names: Vec<&str> = cycle.clone();
        names.push(start);
        report.push(
            format!("{sp}.connections"),
            format!("stream connections form a cycle: {}", names.join(" → ")),
            "a stream cannot flow back upstream; remove one of these connections, and send feedback through message ports instead",
        );
    }
}

fn check_rates(
    blocks: &BTreeMap<String, Block>,
    edges: &[&Edge],
    sp: &str,
    report: &mut Report,
) -> BTreeMap<(String, String), f64> {
    // Topological order (Kahn); blocks on or after a cycle are never reached
    // and keep unknown rates.
    let mut indegree: BTreeMap<&str, usize> = blocks.keys().map(|k| (k.as_str(), 0)).collect();
    let mut into: BTreeMap<&str, Vec<&Edge>> = BTreeMap::new();
    for e in edges {
        *indegree.entry(&e.to.block).or_default() += 1;
        into.entry(&e.to.block).or_default().push(e);
    }
    let mut ready: BTreeSet<&str> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(k, _)| *k)
        .collect();
    let mut rates: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut problems: BTreeMap<&str, Vec<Problem>> = BTreeMap::new();
    while let Some(name) = ready.pop_first() {
        for e in edges.iter().filter(|e| e.from.block == name) {
            let d = indegree.get_mut(e.to.block.as_str()).expect("counted");
            *d -= 1;
            if *d == 0 {
                ready.insert(&e.to.block);
            }
        }
        let Some(block) = blocks.get(name) else {
            continue;
        };
        let Some(desc) = block.info.desc else {
            continue;
        };
        let params = &block.info.params;
        let rate_param = desc
            .rate_param
            .and_then(|p| params.get(p).and_then(|v| v.as_f64()).map(|x| (p, x)));
        let (in_ports, _) = block.ports(Dir::In);
        let stream_inputs: Vec<&Port> = in_ports.iter().filter(|p| p.stream).collect();
        let mut known: Vec<(&str, f64, &Endpoint)> = vec![];
        for p in &stream_inputs {
            let edge = into
                .get(name)
                .and_then(|es| es.iter().find(|e| e.to.port == p.name));
            if let Some(e) = edge {
                if let Some(r) = rates.get(&(e.from.block.clone(), e.from.port.clone())) {
                    known.push((&p.name, *r, &e.from));
                }
            }
        }
        let bpath = format!("{sp}.blocks.{name}");
        let input_rate = match known.first() {
            None => None,
            Some(&(_, r0, _)) if known.iter().all(|(_, r, _)| same_rate(*r, r0)) => Some(known[0]),
            Some(_) => {
                let listed: Vec<String> = known
                    .iter()
                    .map(|(p, r, from)| format!("`{p}` gets {} (from `{from}`)", format_rate(*r)))
                    .collect();
                problems.entry(name).or_default().push(Problem {
                    path: bpath.clone(),
                    message: format!("inputs have different sample rates: {}", listed.join(", ")),
                    hint: format!(
                        "all inputs of {} must run at the same rate; resample one of them with a \
                         rational_resampler, or make the sources agree",
                        block.kind()
                    ),
                });
                None
            }
        };
        let out_rate = if stream_inputs.is_empty() {
            // A source: its rate parameter sets the rate.
            if desc.source != SourceKind::No {
                positive(rate_param.map(|(_, x)| x))
            } else {
                None
            }
        } else {
            match input_rate {
                Some((_, r, from)) => {
                    let mut agrees = true;
                    if let Some((p, x)) = rate_param {
                        if !same_rate(x, r) {
                            agrees = false;
                            problems.entry(name).or_default().push(Problem {
                                path: format!("{bpath}.params.{p}"),
                                message: format!(
                                    "is {} but the input stream runs at {} (from `{from}`)",
                                    format_rate(x),
                                    format_rate(r)
                                ),
                                hint: format!("set `{p}: {r}` to match, or resample the input"),
                            });
                        }
                    }
                    // After a disagreement the rate downstream is unknown, so
                    // the one mistake isn't reported again further down.
                    desc.rate
                        .eval(params)
                        .filter(|(_, d)| agrees && *d > 0)
                        .map(|(i, d)| r * i as f64 / d as f64)
                }
                // Unknown input rate: a live block such as throttle still sets one.
                None if desc.source != SourceKind::No && known.is_empty() => {
                    positive(rate_param.map(|(_, x)| x))
                }
                None => None,
            }
        };
        if let Some(r) = positive(out_rate) {
            for p in block.ports(Dir::Out).0 {
                if p.stream {
                    rates.insert((name.to_string(), p.name), r);
                }
            }
        }
    }
    for (_, ps) in problems {
        report.problems.extend(ps);
    }
    rates
}
