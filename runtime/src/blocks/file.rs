//! File source and sink: raw interleaved samples and SigMF.
//!
//! # Raw
//!
//! A raw file is the items back to back, each scalar in the machine's native
//! byte order (little-endian on every platform FlowMesh supports), complex
//! items as interleaved (re, im) pairs: what GNU Radio's file blocks read and
//! write. Its length must be a whole number of items. `file_source` also
//! reads FIFOs and devices as a stream (whatever sizes their reads return),
//! but `repeat` needs a regular file it can rewind.
//!
//! # SigMF
//!
//! A [SigMF](https://sigmf.org) recording is a `.sigmf-data` file of samples
//! laid out as raw, plus a `.sigmf-meta` JSON file beside it. `path` may name
//! either file; any other path gets both extensions appended (`rec` means
//! `rec.sigmf-data` and `rec.sigmf-meta`).
//!
//! Item types map to SigMF datatypes as `f32` → `rf32_le`, `cf32` → `cf32_le`,
//! `i16` → `ri16_le`, `cs16` → `ci16_le`, `i8` → `ri8`, `cs8` → `ci8`,
//! `u8` → `ru8`, and likewise for f64, cf64, i32, u16 and u32. `u64` has no
//! SigMF datatype. With `vlen` > 1 each item holds `vlen` SigMF samples.
//!
//! `file_source` reads `global.core:datatype` and refuses a recording whose
//! datatype is not the block's `type`. When the sample rate is known (from
//! `global.core:sample_rate`, or else from `samp_rate`) it tags item 0 with
//! `rx_rate` (f64, Hz); each capture with a `core:frequency` tags its first
//! item with `rx_freq` (f64, Hz). If both the metadata and `samp_rate` give a
//! rate they must agree.
//!
//! `file_sink` writes the samples to the data file while running and the
//! metadata when it stops:
//!
//! - `global`: `core:datatype`, `core:version` (`1.0.0`), `core:recorder`,
//!   and `core:sample_rate` when known (the `samp_rate` parameter, or else the
//!   first `rx_rate` tag seen);
//! - `captures`: one starting at sample 0, plus one at each `rx_freq` tag,
//!   carrying its value as `core:frequency`;
//! - `annotations`: one per stream tag seen, in offset order:
//!   `{"core:sample_start": offset · vlen, "core:sample_count": vlen,
//!   "core:comment": "KEY=VALUE"}` where VALUE is the tag value as JSON
//!   (complex numbers as `{"re": .., "im": ..}`, see `Pmt::to_json`).
//!
//! The metadata is written to a temporary file renamed over the old one, so
//! it is never torn. While it runs, the sink also appends each tag, as one
//! JSON line, to a journal beside the metadata (`rec.sigmf-meta.journal`),
//! unbuffered and before the items it sits on go to the data file; the
//! journal is removed once the metadata is written at stop. So a run that is
//! killed leaves every tag of the items its file holds in the journal.
//!
//! In `append` mode the sink starts from the metadata already there and the
//! journal of a run that did not stop, keeping their entries for the items
//! it keeps (writing them out as the metadata at once), and adds its own at
//! their positions in the file; entries for items delivered again (a resumed
//! segment's overlap, `skip`) are replaced by the ones that come with them,
//! so nothing is listed twice. Metadata that is not SigMF JSON stops an
//! `append` sink at start with an error naming it, rather than being
//! overwritten.
//!
//! # Opening files
//!
//! Files are opened in `start`, so a file that cannot be opened fails the run
//! with an error naming the block. `file_source` also checks when it is built
//! that its file exists, has a whole number of items and (SigMF) that the
//! metadata agrees with `type`, so most mistakes are reported before anything
//! runs. Writes go through a 1 MiB buffer, flushed when the sink stops.

use std::fs::File;
use std::io::{BufWriter, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flowmesh_model::catalog::TagPolicy;
use flowmesh_model::{ItemType, Params, Pmt, StreamType};
use serde_json::{json, Value};

use crate::block::{Block, BlockError, BuiltBlock, Result, Work};
use crate::io::WorkIo;
use crate::tag::{keys, Tag};

use super::{stream_type, BlockSetup, Implementation};

/// The blocks of this module.
pub(super) const BLOCKS: &[Implementation] = &[
    Implementation {
        kind: "file_source",
        build: |c| file_source(c.params),
    },
    Implementation {
        kind: "file_sink",
        build: |c| file_sink(c.params, c.setup),
    },
];

/// Size of the sink's write buffer.
const WRITE_BUFFER: usize = 1 << 20;

/// SigMF version written to metadata.
const SIGMF_VERSION: &str = "1.0.0";

/// File formats of the file blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Raw,
    Sigmf,
}

fn format(p: &Params) -> Result<Format, String> {
    match p.str("format").unwrap_or("raw") {
        "raw" => Ok(Format::Raw),
        "sigmf" => Ok(Format::Sigmf),
        f => Err(format!("unknown format `{f}`; use raw or sigmf")),
    }
}

fn path_param(p: &Params, what: &str) -> Result<PathBuf, String> {
    match p.str("path") {
        Some(s) if !s.is_empty() => Ok(PathBuf::from(s)),
        _ => Err(format!("`path` is required: the file to {what}")),
    }
}

/// The SigMF datatype of an item type (`cf32` → `cf32_le`), or `None` for
/// `u64`, which SigMF cannot describe.
pub fn sigmf_datatype(t: ItemType) -> Option<String> {
    use ItemType::*;
    let (kind, base) = match t {
        F32 => ("r", "f32"),
        F64 => ("r", "f64"),
        Cf32 => ("c", "f32"),
        Cf64 => ("c", "f64"),
        I8 => ("r", "i8"),
        Cs8 => ("c", "i8"),
        I16 => ("r", "i16"),
        Cs16 => ("c", "i16"),
        I32 => ("r", "i32"),
        U8 => ("r", "u8"),
        U16 => ("r", "u16"),
        U32 => ("r", "u32"),
        U64 => return None,
    };
    let endian = if t.real().size() == 1 {
        ""
    } else if cfg!(target_endian = "little") {
        "_le"
    } else {
        "_be"
    };
    Some(format!("{kind}{base}{endian}"))
}

/// The item type of a SigMF datatype in this machine's byte order.
pub fn sigmf_item_type(datatype: &str) -> Option<ItemType> {
    ItemType::ALL
        .into_iter()
        .find(|t| sigmf_datatype(*t).as_deref() == Some(datatype))
}

/// `path` with `suffix` appended to its last component (`rec` → `rec.tmp`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The data and metadata paths of a SigMF recording named by `path` (the
/// catalog's, which also names the file an `append` sink makes durable).
pub use flowmesh_model::catalog::sigmf_paths;

/// What to do about a failed open, for the error sentence.
fn open_hint(path: &Path, e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::NotFound if path.is_relative() => {
            let cwd = std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| "?".into());
            format!("check `path` (relative paths start from the working directory {cwd})")
        }
        ErrorKind::NotFound => "check `path`".to_string(),
        ErrorKind::PermissionDenied => "check the file's permissions".to_string(),
        _ => "check `path` and the file".to_string(),
    }
}

/// "cannot open `x` for reading: No such file…; check `path` (…)".
fn io_error(action: &str, path: &Path, e: &std::io::Error) -> String {
    format!(
        "cannot {action} `{}`: {e}; {}",
        path.display(),
        open_hint(path, e)
    )
}

fn failed(msg: String) -> BlockError {
    BlockError::Failed(msg)
}

/// The fields of a `.sigmf-meta` file that `file_source` uses.
#[derive(Debug, Clone, PartialEq)]
pub struct SigmfMeta {
    pub datatype: String,
    pub item: ItemType,
    /// `global.core:sample_rate`.
    pub sample_rate: Option<f64>,
    /// `(core:sample_start, core:frequency)` of captures with a frequency.
    pub frequencies: Vec<(u64, f64)>,
}

/// Reads a `.sigmf-meta` file and checks that its datatype is `want`.
pub fn read_sigmf_meta(meta: &Path, want: ItemType) -> Result<SigmfMeta, String> {
    let text =
        std::fs::read_to_string(meta).map_err(|e| io_error("read SigMF metadata", meta, &e))?;
    let shown = meta.display();
    let bad = |what: String| {
        format!("`{shown}` is not usable SigMF metadata: {what}; fix or regenerate the file")
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON ({e})")))?;
    let global = v
        .get("global")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("it has no `global` object".into()))?;
    let datatype = global
        .get("core:datatype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("`global` has no `core:datatype` string".into()))?
        .to_string();
    let item = sigmf_item_type(&datatype).ok_or_else(|| unsupported_datatype(meta, &datatype))?;
    if item != want {
        return Err(format!(
            "the SigMF recording `{shown}` holds {datatype} samples (FlowMesh type {item}) but \
             the block's `type` is {want}; set `type: {item}` (and add a convert block after the \
             source if you need another type)"
        ));
    }
    let sample_rate = match global.get("core:sample_rate") {
        None | Some(Value::Null) => None,
        Some(r) => match r.as_f64() {
            Some(r) if r.is_finite() && r > 0.0 => Some(r),
            _ => {
                return Err(bad(format!(
                    "`core:sample_rate` is {r}, not a positive number"
                )))
            }
        },
    };
    let mut frequencies = vec![];
    if let Some(caps) = v.get("captures") {
        let caps = caps
            .as_array()
            .ok_or_else(|| bad("`captures` is not a list".into()))?;
        for (i, c) in caps.iter().enumerate() {
            if c.get("core:header_bytes")
                .and_then(Value::as_u64)
                .is_some_and(|h| h > 0)
            {
                return Err(format!(
                    "`{shown}`: capture {i} has `core:header_bytes`, which FlowMesh does not \
                     skip; strip the header bytes from the data file and remove the field"
                ));
            }
            let start = c.get("core:sample_start").and_then(Value::as_u64);
            let freq = c.get("core:frequency").and_then(Value::as_f64);
            if let (Some(s), Some(f)) = (start, freq) {
                frequencies.push((s, f));
            }
        }
    }
    Ok(SigmfMeta {
        datatype,
        item,
        sample_rate,
        frequencies,
    })
}

fn unsupported_datatype(meta: &Path, dt: &str) -> String {
    let shown = meta.display();
    let other_endian = dt
        .strip_suffix("_be")
        .map(|b| (b, "_le"))
        .or_else(|| dt.strip_suffix("_le").map(|b| (b, "_be")));
    if let Some((base, native)) = other_endian {
        if sigmf_item_type(&format!("{base}{native}")).is_some() {
            return format!(
                "the SigMF recording `{shown}` holds {dt} samples, in the other byte order than \
                 this machine's; convert the recording to {base}{native}"
            );
        }
    }
    let known = ["c", "r"].iter().any(|k| {
        dt.strip_prefix(k).is_some_and(|rest| {
            let base = rest
                .strip_suffix("_le")
                .or_else(|| rest.strip_suffix("_be"))
                .unwrap_or(rest);
            ["f32", "f64", "i32", "i16", "i8", "u32", "u16", "u8"].contains(&base)
        })
    });
    if known {
        format!(
            "the SigMF recording `{shown}` holds {dt} samples, which have no FlowMesh item type; \
             read its .sigmf-data file with `format: raw` and the matching real type (I and Q \
             interleaved, `vlen: 2`)"
        )
    } else {
        format!(
            "`{shown}` gives `core:datatype` {dt:?}, which is not a SigMF datatype; fix the \
             metadata (for example cf32_le or ci16_le)"
        )
    }
}

/// Build-time check of a file to read: it exists, is not a directory, and
/// (for regular files) holds a whole number of items.
fn check_input_file(path: &Path, st: StreamType, repeat: bool) -> Result<(), String> {
    let md = std::fs::metadata(path).map_err(|e| io_error("read", path, &e))?;
    if md.is_dir() {
        return Err(format!(
            "`{}` is a directory; `path` must name a file",
            path.display()
        ));
    }
    if md.is_file() {
        check_length(path, md.len(), st)?;
    } else if repeat {
        return Err(not_rewindable(path));
    }
    Ok(())
}

fn not_rewindable(path: &Path) -> String {
    format!(
        "`{}` is not a regular file, so it cannot be rewound for `repeat: true`; copy it to a \
         file or set `repeat: false`",
        path.display()
    )
}

fn check_length(path: &Path, len: u64, st: StreamType) -> Result<(), String> {
    let size = st.item_size() as u64;
    if !len.is_multiple_of(size) {
        return Err(format!(
            "`{}` holds {len} bytes, not a whole number of {st} items ({size} bytes each; {} \
             bytes left over); check `type` and `vlen`, or whether the file was cut short",
            path.display(),
            len % size
        ));
    }
    Ok(())
}

/// The sample rate a SigMF source announces: the metadata's, else
/// `samp_rate`; an error if both are given and differ.
fn agreed_rate(
    meta_path: &Path,
    meta: &SigmfMeta,
    param: Option<f64>,
) -> Result<Option<f64>, String> {
    match (meta.sample_rate, param) {
        (Some(m), Some(p)) if (m - p).abs() > 1e-9 * m.abs().max(p.abs()) => Err(format!(
            "`samp_rate` is {p} Hz but the recording `{}` says core:sample_rate {m} Hz; remove \
             `samp_rate` (the recording's rate is used) or correct it",
            meta_path.display()
        )),
        (Some(m), _) => Ok(Some(m)),
        (None, p) => Ok(p),
    }
}

/// `file_source`: reads items from a raw file or a SigMF recording.
///
/// Output `out` (`type` x `vlen`). Parameters: `path` (the file; for SigMF
/// either file of the recording), `format` (raw or sigmf), `repeat` (loop at
/// end of file; needs a regular file), `samp_rate` (optional; for SigMF it
/// must agree with the metadata). Ends at end of file unless `repeat`. SigMF
/// recordings tag item 0 with `rx_rate` and capture starts with `rx_freq`
/// (see the module docs).
pub struct FileSource {
    path: PathBuf,
    meta_path: Option<PathBuf>,
    stype: StreamType,
    repeat: bool,
    samp_rate: Option<f64>,
    file: Option<File>,
    /// Bytes of a partly read item (non-regular files may return any count).
    carry: Vec<u8>,
    /// Bytes read since the last rewind.
    pass_bytes: u64,
    /// Items produced so far.
    produced: u64,
    /// Tags still to emit, by increasing offset.
    pending: Vec<Tag>,
}

impl Block for FileSource {
    fn start(&mut self) -> Result<()> {
        let mut pending = vec![];
        if let Some(meta_path) = &self.meta_path {
            let meta = read_sigmf_meta(meta_path, self.stype.item).map_err(failed)?;
            if let Some(rate) = agreed_rate(meta_path, &meta, self.samp_rate).map_err(failed)? {
                pending.push(Tag::new(0, keys::RX_RATE, Pmt::F64(rate)));
            }
            let vlen = self.stype.vlen as u64;
            for (start, f) in meta.frequencies {
                pending.push(Tag::new(start / vlen, keys::RX_FREQ, Pmt::F64(f)));
            }
        }
        let file = File::open(&self.path).map_err(|e| failed(io_error("read", &self.path, &e)))?;
        let md = file
            .metadata()
            .map_err(|e| failed(io_error("inspect", &self.path, &e)))?;
        if md.is_dir() {
            return Err(failed(format!(
                "`{}` is a directory; `path` must name a file",
                self.path.display()
            )));
        }
        if md.is_file() {
            check_length(&self.path, md.len(), self.stype).map_err(failed)?;
            let items = md.len() / self.stype.item_size() as u64;
            pending.retain(|t| t.offset < items);
        } else if self.repeat {
            return Err(failed(not_rewindable(&self.path)));
        }
        pending.sort_by_key(|t| t.offset);
        self.pending = pending;
        self.file = Some(file);
        self.carry.clear();
        self.pass_bytes = 0;
        Ok(())
    }

    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let isz = self.stype.item_size();
        let Some(file) = self.file.as_mut() else {
            return Err(failed("file_source ran before it was started".into()));
        };
        let out = io.output_bytes(0);
        let room = out.len() / isz * isz;
        if room == 0 {
            return Ok(Work::Ok);
        }
        let mut filled = self.carry.len();
        out[..filled].copy_from_slice(&self.carry);
        self.carry.clear();
        let mut eof = false;
        while filled < room {
            match file.read(&mut out[filled..room]) {
                Ok(0) => {
                    if !filled.is_multiple_of(isz) {
                        return Err(failed(format!(
                            "`{}` ends inside an item ({} bytes of a {}-byte {} item); check \
                             `type` and `vlen`, or whether the file was cut short",
                            self.path.display(),
                            filled % isz,
                            isz,
                            self.stype
                        )));
                    }
                    if self.repeat && self.pass_bytes > 0 {
                        file.seek(SeekFrom::Start(0))
                            .map_err(|e| failed(io_error("rewind", &self.path, &e)))?;
                        self.pass_bytes = 0;
                        continue;
                    }
                    eof = true;
                    break;
                }
                Ok(k) => {
                    filled += k;
                    self.pass_bytes += k as u64;
                    if filled >= isz {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(failed(io_error("read", &self.path, &e))),
            }
        }
        let whole = filled / isz * isz;
        self.carry.extend_from_slice(&out[whole..filled]);
        let n = whole / isz;
        if n > 0 {
            let end = self.produced + n as u64;
            let k = self.pending.partition_point(|t| t.offset < end);
            for t in self.pending.drain(..k) {
                io.add_tag(0, t);
            }
            io.produce(0, n);
            self.produced = end;
        }
        Ok(if eof { Work::Done } else { Work::Ok })
    }

    fn get(&self, name: &str) -> Option<Pmt> {
        Some(match name {
            "path" => Pmt::String(self.path.display().to_string()),
            "items" => Pmt::I64(self.produced as i64),
            "samp_rate" => self.samp_rate.map(Pmt::F64).unwrap_or(Pmt::Null),
            _ => return None,
        })
    }

    fn stop(&mut self) -> Result<()> {
        self.file = None;
        Ok(())
    }
}

pub fn file_source(p: &Params) -> Result<BuiltBlock, String> {
    let st = stream_type(p);
    let path = path_param(p, "read")?;
    let format = format(p)?;
    let samp_rate = p.f64("samp_rate");
    let (data, meta_path) = match format {
        Format::Raw => (path, None),
        Format::Sigmf => {
            let (d, m) = sigmf_paths(&path);
            (d, Some(m))
        }
    };
    // Early checks, so mistakes show before the graph runs; `start` checks again.
    if let Some(m) = &meta_path {
        let meta = read_sigmf_meta(m, st.item)?;
        agreed_rate(m, &meta, samp_rate)?;
    }
    let repeat = p.bool("repeat").unwrap_or(false);
    check_input_file(&data, st, repeat)?;
    Ok(BuiltBlock::new(FileSource {
        path: data,
        meta_path,
        stype: st,
        repeat,
        samp_rate,
        file: None,
        carry: vec![],
        pass_bytes: 0,
        produced: 0,
        pending: vec![],
    }))
}

/// `file_sink`: writes items to a raw file or a SigMF recording.
///
/// Input `in` (`type` x `vlen`). Parameters: `path` (created or truncated;
/// for SigMF the data file, the metadata going beside it), `format` (raw or
/// sigmf), `samp_rate` (optional; recorded in SigMF metadata), `mode`
/// (`truncate`, or `append` to keep what the file holds), `skip` (items to
/// drop before writing: set by a restarted worker whose input starts before
/// what this file already holds). Tags stop here; with SigMF they become
/// annotations (see the module docs).
pub struct FileSink {
    path: PathBuf,
    meta_path: Option<PathBuf>,
    stype: StreamType,
    samp_rate: Option<f64>,
    out: Option<BufWriter<File>>,
    items: u64,
    /// The recording's metadata so far (SigMF only): what an `append`
    /// sink kept, then this run's tags.
    notes: Notes,
    /// The journal of this run's tags (SigMF only), written before the
    /// items they sit on.
    journal: Option<File>,
    append: bool,
    /// Input items still to drop (already in the file).
    skip: u64,
    /// File position (in items) of input item 0: what the file held at
    /// start minus `skip`; 0 when truncating.
    base: u64,
    /// The end of the stream was seen (its tags annotated).
    ended: bool,
}

/// One stream tag as SigMF metadata: an annotation, and a capture when it
/// is an `rx_freq`, or the sample rate when it is an `rx_rate`. Also one
/// line of the journal.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Note {
    /// SigMF sample index (item position in the file × vlen).
    start: u64,
    /// `KEY=VALUE`, the value as JSON.
    comment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    frequency: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate: Option<f64>,
}

impl Note {
    fn of(t: &Tag, start: u64) -> Note {
        let num = |k: &str| (&*t.key == k).then(|| t.value.as_f64()).flatten();
        Note {
            start,
            comment: format!("{}={}", t.key, t.value.to_json()),
            frequency: num(keys::RX_FREQ),
            rate: num(keys::RX_RATE),
        }
    }
}

/// The text of `path` (`what` it is, for the error), or `None` if there is
/// no such file.
fn read_if_there(path: &Path, what: &str) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(failed(format!(
            "cannot read {what} `{}` to append to: {e}",
            path.display()
        ))),
    }
}

/// Captures, annotations and sample rate of a recording, built up in
/// order.
#[derive(Default)]
struct Notes {
    captures: Vec<Value>,
    annotations: Vec<Value>,
    sample_rate: Option<f64>,
}

impl Notes {
    fn add(&mut self, n: &Note, vlen: u64) {
        if let Some(f) = n.frequency {
            match self.captures.last_mut() {
                Some(last) if last["core:sample_start"] == json!(n.start) => {
                    last["core:frequency"] = json!(f)
                }
                _ => self
                    .captures
                    .push(json!({"core:sample_start": n.start, "core:frequency": f})),
            }
        }
        self.sample_rate = self.sample_rate.or(n.rate);
        self.annotations.push(json!({
            "core:sample_start": n.start,
            "core:sample_count": vlen,
            "core:comment": n.comment,
        }));
    }

    /// Reads `meta`, keeping the entries that start before sample `upto`.
    /// A missing file is no metadata; a file that is not SigMF JSON is an
    /// error, so that appending never overwrites metadata it cannot read.
    fn read(meta: &Path, upto: u64) -> Result<Notes> {
        let Some(text) = read_if_there(meta, "the SigMF metadata")? else {
            return Ok(Notes::default());
        };
        let bad = |why: &str| {
            failed(format!(
                "cannot append to `{}`: {why}; repair it, or move it away to start the metadata \
                 afresh (the data file is kept either way)",
                meta.display()
            ))
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
        let before = |key: &str| -> Result<Vec<Value>> {
            match &v[key] {
                Value::Null => Ok(vec![]),
                Value::Array(a) => Ok(a
                    .iter()
                    .filter(|e| e["core:sample_start"].as_u64().is_some_and(|s| s < upto))
                    .cloned()
                    .collect()),
                _ => Err(bad(&format!("`{key}` is not a list"))),
            }
        };
        Ok(Notes {
            captures: before("captures")?,
            annotations: before("annotations")?,
            sample_rate: v["global"]["core:sample_rate"].as_f64(),
        })
    }

    /// Adds the journal's notes that start before sample `upto` and that
    /// the metadata does not list already (a run that stopped between
    /// writing its metadata and removing its journal left both).
    fn recover(&mut self, journal: &Path, upto: u64, vlen: u64) -> Result<()> {
        let Some(text) = read_if_there(journal, "the tag journal")? else {
            return Ok(());
        };
        let listed: std::collections::HashSet<(u64, String)> = self
            .annotations
            .iter()
            .filter_map(|a| {
                Some((
                    a["core:sample_start"].as_u64()?,
                    a["core:comment"].as_str()?.to_string(),
                ))
            })
            .collect();
        // A run killed mid-line leaves a torn last line: what it held was
        // never written (a journal line goes out before its items).
        for line in text.lines() {
            let Ok(n) = serde_json::from_str::<Note>(line) else {
                continue;
            };
            let dup = listed.contains(&(n.start, n.comment.clone()));
            if n.start < upto && !dup {
                self.add(&n, vlen);
            }
        }
        Ok(())
    }
}

/// Writes `bytes` as the new content of `path`: to `<path>.tmp` first, then
/// renamed over it, so that a kill half-way never leaves a torn file.
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = with_suffix(path, ".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Flushes a file's data and the directory entry that names it to the disk
/// (a planned stop: what a restart resumes from must survive a power loss
/// of the node the pod is moved from).
pub fn sync_file(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Whole items already in a file (what an `append` file sink has made
/// durable, [`super::durable_items`]): the file length divided by the item
/// size, rounded down.
pub fn durable_items(path: &std::path::Path, item_size: usize) -> u64 {
    std::fs::metadata(path)
        .map(|m| m.len() / item_size as u64)
        .unwrap_or(0)
}

impl FileSink {
    /// Records `tags` as SigMF notes (SigMF only): journalled (unbuffered)
    /// before the items go to the data file, so that a run killed at any
    /// point has every tag of the items its file holds in the journal.
    fn journal_tags(&mut self, tags: &[Tag]) -> Result<()> {
        let Some(journal) = self.journal.as_mut() else {
            return Ok(());
        };
        let vlen = self.stype.vlen as u64;
        let mut lines = vec![];
        for t in tags {
            let n = Note::of(t, (self.base + t.offset) * vlen);
            serde_json::to_writer(&mut lines, &n).expect("a note encodes");
            lines.push(b'\n');
            self.notes.add(&n, vlen);
        }
        if !lines.is_empty() {
            journal.write_all(&lines).map_err(|e| {
                failed(format!(
                    "cannot write the tag journal beside `{}`: {e}",
                    self.path.display()
                ))
            })?;
        }
        Ok(())
    }

    /// The journal beside the metadata: `<meta>.journal`.
    fn journal_path(meta: &Path) -> PathBuf {
        with_suffix(meta, ".journal")
    }

    /// The SigMF metadata for what was written.
    fn meta(&self) -> Value {
        let mut global = serde_json::Map::new();
        global.insert(
            "core:datatype".into(),
            json!(sigmf_datatype(self.stype.item).unwrap_or_default()),
        );
        global.insert("core:version".into(), json!(SIGMF_VERSION));
        global.insert("core:recorder".into(), json!("FlowMesh file_sink"));
        if let Some(r) = self.samp_rate.or(self.notes.sample_rate) {
            global.insert("core:sample_rate".into(), json!(r));
        }
        let mut captures = self.notes.captures.clone();
        if captures
            .first()
            .is_none_or(|c| c["core:sample_start"] != json!(0))
        {
            captures.insert(0, json!({"core:sample_start": 0}));
        }
        json!({"global": global, "captures": captures, "annotations": self.notes.annotations})
    }

    /// Writes the metadata ([`replace_file`]: never a torn file).
    fn write_meta(&self, meta_path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(&self.meta())
            .map_err(|e| failed(format!("cannot encode SigMF metadata: {e}")))?;
        text.push('\n');
        replace_file(meta_path, text.as_bytes()).map_err(|e| {
            failed(format!(
                "cannot write SigMF metadata `{}`: {e}; check that its directory is writable",
                meta_path.display()
            ))
        })
    }

    /// SigMF: takes over what the file's metadata and the journal of a run
    /// that did not stop say about the items kept, writes that as the
    /// metadata, and starts an empty journal for this run.
    fn start_metadata(&mut self, meta: &Path) -> Result<()> {
        let vlen = self.stype.vlen as u64;
        let journal = Self::journal_path(meta);
        self.notes = Notes::default();
        if self.append {
            let upto = self.base * vlen;
            self.notes = Notes::read(meta, upto)?;
            self.notes.recover(&journal, upto, vlen)?;
            self.write_meta(meta)?;
        }
        let f = File::create(&journal).map_err(|e| {
            failed(format!(
                "cannot create the tag journal `{}`: {e}; check that its directory is writable",
                journal.display()
            ))
        })?;
        self.journal = Some(f);
        Ok(())
    }
}

impl Block for FileSink {
    fn start(&mut self) -> Result<()> {
        let cannot = |e: std::io::Error| {
            failed(format!(
                "cannot create `{}`: {e}; check that its directory exists and is writable",
                self.path.display()
            ))
        };
        self.items = 0;
        self.base = 0;
        let f = if self.append {
            // Keep the whole items already written; drop a torn last item.
            let whole = durable_items(&self.path, self.stype.item_size());
            // Input item k lands at item base + k of the file (the first
            // `skip` of them are there already and get dropped).
            self.base = whole.saturating_sub(self.skip);
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(cannot)?;
            f.set_len(whole * self.stype.item_size() as u64)
                .map_err(cannot)?;
            self.items = whole;
            f
        } else {
            File::create(&self.path).map_err(cannot)?
        };
        self.out = Some(BufWriter::with_capacity(WRITE_BUFFER, f));
        if let Some(meta) = self.meta_path.clone() {
            self.start_metadata(&meta)?;
        }
        Ok(())
    }

    fn work(&mut self, io: &mut WorkIo<'_>) -> Result<Work> {
        let n = io.input_items(0);
        if n == 0 {
            if io.input_done(0) && !self.ended {
                // Tags on the end of the stream (a final `gap`): annotated
                // at the sample after the last one.
                self.ended = true;
                self.journal_tags(io.end_tags(0))?;
            }
            return Ok(Work::Ok);
        }
        self.journal_tags(io.tags(0))?;
        let Some(out) = self.out.as_mut() else {
            return Err(failed("file_sink ran before it was started".into()));
        };
        let isz = self.stype.item_size();
        let drop = (self.skip.min(n as u64)) as usize;
        self.skip -= drop as u64;
        let bytes = &io.input_bytes(0)[drop * isz..n * isz];
        out.write_all(bytes)
            .map_err(|e| failed(format!("cannot write `{}`: {e}", self.path.display())))?;
        io.consume(0, n);
        self.items += (n - drop) as u64;
        Ok(Work::Ok)
    }

    fn get(&self, name: &str) -> Option<Pmt> {
        Some(match name {
            "path" => Pmt::String(self.path.display().to_string()),
            "items" => Pmt::I64(self.items as i64),
            "samp_rate" => self.samp_rate.map(Pmt::F64).unwrap_or(Pmt::Null),
            _ => return None,
        })
    }

    /// A planned stop (SIGTERM): every whole item it got is written, then
    /// the data file, the metadata and their directory are synced to disk.
    fn suspend(&mut self) -> Result<()> {
        self.stop()?;
        let mut files = vec![self.path.clone()];
        files.extend(self.meta_path.clone());
        for f in files.iter().filter(|f| f.exists()) {
            sync_file(f).map_err(|e| {
                failed(format!(
                    "cannot sync `{}` to disk: {e}; what it holds may not survive a power loss",
                    f.display()
                ))
            })?;
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(mut out) = self.out.take() {
            out.flush()
                .map_err(|e| failed(format!("cannot write `{}`: {e}", self.path.display())))?;
        }
        if let Some(meta_path) = &self.meta_path {
            self.write_meta(meta_path)?;
            // The metadata now holds what the journal did.
            if self.journal.take().is_some() {
                let _ = std::fs::remove_file(Self::journal_path(meta_path));
            }
        }
        Ok(())
    }
}

pub fn file_sink(p: &Params, setup: &BlockSetup) -> Result<BuiltBlock, String> {
    let st = stream_type(p);
    let path = path_param(p, "write")?;
    let format = format(p)?;
    let samp_rate = p.f64("samp_rate");
    if let Some(r) = samp_rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(format!(
                "`samp_rate` must be a positive number of Hz, got {r}"
            ));
        }
    }
    let (data, meta_path) = match format {
        Format::Raw => (path, None),
        Format::Sigmf => {
            if sigmf_datatype(st.item).is_none() {
                return Err(format!(
                    "SigMF has no datatype for {}; use `format: raw`, or convert the stream to \
                     another type first",
                    st.item
                ));
            }
            let (d, m) = sigmf_paths(&path);
            (d, Some(m))
        }
    };
    Ok(BuiltBlock::new(FileSink {
        path: data,
        meta_path,
        stype: st,
        samp_rate,
        out: None,
        items: 0,
        notes: Notes::default(),
        journal: None,
        append: p.str("mode") == Some("append"),
        skip: setup.skip,
        base: 0,
        ended: false,
    })
    .tag_policy(TagPolicy::None))
}
