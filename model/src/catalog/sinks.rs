//! Catalog entries: sinks.

use super::*;

/// A `file_sink` in `append` mode keeps the whole items its data file holds
/// (for SigMF, the `.sigmf-data` file); in `truncate` mode nothing.
fn file_sink_durability(p: &Params) -> Durability {
    let (Some("append"), Some(path)) = (p.str("mode"), p.str("path")) else {
        return Durability::None;
    };
    let path = std::path::Path::new(path);
    let path = match p.str("format") {
        Some("sigmf") => sigmf_paths(path).0,
        _ => path.to_path_buf(),
    };
    let item = StreamType {
        item: p.item_type("type").unwrap_or(ItemType::F32),
        vlen: p.u64("vlen").unwrap_or(1).max(1) as usize,
    };
    Durability::AppendFile {
        path,
        item_size: item.item_size(),
    }
}

/// The files a block with a `path` and a `format` (raw or SigMF) uses: the
/// file `path` names, or both files of a SigMF recording.
pub(super) fn path_files(p: &Params, access: FileAccess) -> Vec<FileUse> {
    let Some(path) = p.str("path") else {
        return vec![];
    };
    let path = std::path::Path::new(path);
    let paths = match p.str("format") {
        Some("sigmf") => {
            let (d, m) = sigmf_paths(path);
            vec![d, m]
        }
        _ => vec![path.to_path_buf()],
    };
    paths
        .into_iter()
        .map(|path| FileUse {
            param: "path",
            path,
            access,
        })
        .collect()
}

fn file_sink_files(p: &Params) -> Vec<FileUse> {
    path_files(p, FileAccess::Write)
}

/// A `jsonl_sink` writes its file unless `path` is `-` (standard output).
fn jsonl_sink_files(p: &Params) -> Vec<FileUse> {
    match p.str("path") {
        None | Some("-") => vec![],
        Some(_) => path_files(p, FileAccess::Write),
    }
}

/// The data and metadata paths of a SigMF recording named by `path`: the
/// `.sigmf-data` / `.sigmf-meta` pair beside it, whichever of the two (or
/// neither, then both are added to the name) `path` names.
pub fn sigmf_paths(path: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    match path.extension().and_then(|e| e.to_str()) {
        Some("sigmf-data") | Some("sigmf-meta") => (
            path.with_extension("sigmf-data"),
            path.with_extension("sigmf-meta"),
        ),
        _ => {
            let with = |suffix: &str| {
                let mut s = path.as_os_str().to_owned();
                s.push(suffix);
                std::path::PathBuf::from(s)
            };
            (with(".sigmf-data"), with(".sigmf-meta"))
        }
    }
}

pub(super) fn all() -> Vec<BlockDescriptor> {
    vec![
        BlockDescriptor::new(
            "null_sink",
            Category::Sink,
            "Consumes and discards items. With `expect`, the run fails unless exactly that many items arrived.",
        )
            .param(ParamDescriptor::item_type(&ItemType::ALL))
            .param(ParamDescriptor::vlen())
            .param(ParamDescriptor::new("expect", ParamType::Int, "fail the run unless exactly this many items arrive").optional().min(0.0))
            .input(PortDescriptor::typed("in", "items to discard"))
            .tags(TagPolicy::None),
        BlockDescriptor::new(
            "vector_sink",
            Category::Sink,
            "Keeps every item and tag in memory (for tests and small captures); read through the graph handle.",
        )
        .param(ParamDescriptor::item_type(&ItemType::ALL))
        .param(ParamDescriptor::vlen())
        .param(ParamDescriptor::new("limit", ParamType::Int, "keep at most this many items, 0 for all").default(0i64).min(0.0))
        .input(PortDescriptor::typed("in", "items to keep"))
        .tags(TagPolicy::None),
        BlockDescriptor::new(
            "file_sink",
            Category::Sink,
            "Writes items to a file: raw interleaved samples, or SigMF (`path` is the .sigmf-data file; \
             the .sigmf-meta beside it records type, sample rate and the stream tags as annotations).",
        )
        .param(ParamDescriptor::item_type(&ItemType::ALL))
        .param(ParamDescriptor::vlen())
        .param(ParamDescriptor::new("path", ParamType::Path, "file to write (created or truncated)"))
        .param(ParamDescriptor::new("format", ParamType::Enum(vec!["raw", "sigmf"]), "file format").default("raw"))
        .param(ParamDescriptor::new(
            "mode",
            ParamType::Enum(vec!["truncate", "append"]),
            "truncate: start a new file; append: keep the whole items already there and continue \
             (a restarted segment resumes its input from there)",
        ).default("truncate"))
        .param(ParamDescriptor::new("samp_rate", ParamType::Float, "sample rate recorded in SigMF metadata").unit("Hz").optional())
        .input(PortDescriptor::typed("in", "items to write"))
        .tags(TagPolicy::None)
        .rate_param("samp_rate")
        .durable(file_sink_durability)
        .files(file_sink_files),
        BlockDescriptor::new(
            "jsonl_sink",
            Category::Sink,
            "Writes each message as one JSON line to a file, or to standard output when `path` is `-`.",
        )
        .param(ParamDescriptor::new("path", ParamType::Path, "output file, `-` for standard output").default("-"))
        .input(PortDescriptor::message("in", "messages to write").optional())
        .files(jsonl_sink_files),
    ]
}
