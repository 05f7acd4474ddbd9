//! The durable record of live parameter changes, so that a restart that
//! replays items from before a change gives the same output.
//!
//! Every settable parameter changed on a running segment — in cluster mode
//! an edit of the resource applied live, in file mode a `PUT /params` of the
//! control API — is appended to `<state-dir>/params.jsonl`, one JSON object
//! per line (block, parameter, old and new value as written in a FlowGraph
//! file, item offset), written and fsynced before the change is reported.
//!
//! Offsets are in the numbering of an uninterrupted run: the block's first
//! stream output (or first stream input for a block without outputs),
//! counted from the start of the stream, not from the start of this
//! process. A resumed segment's blocks start mid-stream; where each one
//! starts is its *base* ([`crate::block_bases`]), and a change the runtime
//! reports at its local item `k` is recorded at `base + k`.
//!
//! On `--resume` the worker reads the file back ([`load`]) and, for each
//! recorded (block, parameter), starts the block with the value in force
//! just before its base and schedules every change at or after its base at
//! exactly its offset ([`replay`]; the runtime applies it there,
//! [`ScheduledSet`]). A start without `--resume` begins a new stream and a
//! new file ([`reset`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use flowmesh_model::{catalog, params, FlowGraphSpec};
use flowmesh_runtime::blocks::{BlockSetup, ScheduledSet};
use serde::{Deserialize, Serialize};

/// The file name in the state directory.
pub const FILE: &str = "params.jsonl";

/// Errors reading or writing the record.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot record {block}.{param} = {value} in {}: {source}; the change is applied but a \
         restart with --resume will not replay it: check that the state directory is writable",
        path.display()
    )]
    Write {
        path: PathBuf,
        block: String,
        param: String,
        value: serde_json::Value,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}; check its permissions", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} line {line}: {message}; the file is not one FlowMesh wrote: move it away to resume \
         without replaying the recorded parameter changes",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot start a new {}: {source}; check that the state directory is writable", path.display())]
    Reset {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One applied change, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub block: String,
    pub param: String,
    /// The value in force before (as in a FlowGraph file).
    pub old: serde_json::Value,
    /// The value set.
    pub new: serde_json::Value,
    /// The item offset from which `new` applies, in an uninterrupted run's
    /// numbering (see the module docs).
    pub offset: u64,
}

/// The record file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Appends `c` to the record in `dir`: one line, written and fsynced.
pub fn append(dir: &Path, c: &Change) -> Result<()> {
    let path = path(dir);
    let mut line = serde_json::to_vec(c).expect("a change serializes");
    line.push(b'\n');
    let r = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| {
            f.write_all(&line)?;
            f.sync_data()
        });
    r.map_err(|source| Error::Write {
        path,
        block: c.block.clone(),
        param: c.param.clone(),
        value: c.new.clone(),
        source,
    })
}

/// Reads the record in `dir` (none: empty). A last line without its
/// newline is a write the process did not finish (it was killed): it is
/// ignored with a warning, as its change was never reported.
pub fn load(dir: &Path) -> Result<Vec<Change>> {
    let path = path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => return Err(Error::Read { path, source }),
    };
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Change>(line) {
            Ok(c) => out.push(c),
            Err(_) if !complete && i + 1 == lines.len() => {
                tracing::warn!(
                    "{} line {}: an unfinished write; ignoring it",
                    path.display(),
                    i + 1
                );
            }
            Err(e) => {
                return Err(Error::Corrupt {
                    path,
                    line: i + 1,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// Starts a new record in `dir` (a start without `--resume`: a new stream,
/// whose offsets the old record does not describe).
pub fn reset(dir: &Path) -> Result<()> {
    let path = path(dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Reset { path, source }),
    }
}

/// Replays `changes` into a resumed segment: for each recorded (block,
/// parameter) of a block in `sub`, sets the parameter in `sub` to the value
/// in force just before the block's base (`bases`, 0 if absent), and gives
/// the block's `setup` every change at or after its base, at its offset
/// from the base. Changes of blocks `sub` does not have are skipped, and
/// a recorded value the catalog no longer accepts is skipped with a warning
/// naming it.
pub fn replay(
    sub: &mut FlowGraphSpec,
    changes: &[Change],
    bases: &BTreeMap<String, u64>,
    setup: &mut BTreeMap<String, BlockSetup>,
) {
    let mut by_param: BTreeMap<(&str, &str), Vec<&Change>> = BTreeMap::new();
    for c in changes {
        by_param
            .entry((c.block.as_str(), c.param.as_str()))
            .or_default()
            .push(c);
    }
    for ((block, param), mut cs) in by_param {
        let Some(b) = sub.blocks.get_mut(block) else {
            continue;
        };
        let Some(pd) = catalog()
            .get(&b.kind)
            .and_then(|d| d.param_descriptor(param))
        else {
            tracing::warn!(
                "recorded change of {block}.{param}: the block's kind `{}` has no such parameter; \
                 not replayed",
                b.kind
            );
            continue;
        };
        // In offset order; equal offsets keep the order they were applied in.
        cs.sort_by_key(|c| c.offset);
        let base = bases.get(block).copied().unwrap_or(0);
        let split = cs.partition_point(|c| c.offset < base);
        let (before, after) = cs.split_at(split);
        let initial = match (before.last(), after.first()) {
            (Some(c), _) => &c.new,
            (None, Some(c)) => &c.old,
            (None, None) => continue,
        };
        if !initial.is_null() {
            b.params.insert(param.to_string(), initial.clone());
        } else {
            b.params.remove(param);
        }
        for c in after {
            match params::coerce(&pd.ty, &c.new) {
                Ok(value) => {
                    tracing::info!(
                        "{block}.{param} = {} again from item {} (recorded)",
                        c.new,
                        c.offset
                    );
                    setup
                        .entry(block.to_string())
                        .or_default()
                        .sets
                        .push(ScheduledSet {
                            offset: c.offset - base,
                            name: param.to_string(),
                            value,
                        });
                }
                Err(e) => tracing::warn!(
                    "recorded change of {block}.{param} to {} at item {}: {e}; not replayed",
                    c.new,
                    c.offset
                ),
            }
        }
    }
}

/// Where a running segment records its changes, and each block's base.
#[derive(Debug, Clone, Default)]
pub struct ParamLog {
    /// The state directory (`None`: nothing is recorded).
    dir: Option<PathBuf>,
    /// Block → where its first item sits in an uninterrupted run.
    bases: BTreeMap<String, u64>,
}

impl ParamLog {
    pub fn new(dir: Option<PathBuf>, bases: BTreeMap<String, u64>) -> Self {
        ParamLog { dir, bases }
    }

    /// Where block `block`'s first item sits in an uninterrupted run.
    pub fn base(&self, block: &str) -> u64 {
        self.bases.get(block).copied().unwrap_or(0)
    }

    /// Records a change the runtime applied at the block's local item
    /// `offset` (what `Handle::set` answered); returns the recorded offset
    /// (`None` without a state directory).
    pub fn record(
        &self,
        block: &str,
        param: &str,
        old: serde_json::Value,
        new: serde_json::Value,
        offset: u64,
    ) -> Result<Option<u64>> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let at = self.base(block) + offset;
        append(
            dir,
            &Change {
                block: block.to_string(),
                param: param.to_string(),
                old,
                new,
                offset: at,
            },
        )?;
        Ok(Some(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> FlowGraphSpec {
        serde_json::from_value(json!({
            "blocks": {
                "mul": {"kind": "multiply_const", "params": {"type": "u64", "constant": 9}},
                "sink": {"kind": "null_sink", "params": {"type": "u64"}}
            },
            "connections": [["mul.out", "sink.in"]]
        }))
        .unwrap()
    }

    fn change(old: i64, new: i64, offset: u64) -> Change {
        Change {
            block: "mul".into(),
            param: "constant".into(),
            old: json!(old),
            new: json!(new),
            offset,
        }
    }

    /// (initial value, scheduled (offset, value)) for `mul` at `base`.
    fn replayed(changes: &[Change], base: u64) -> (serde_json::Value, Vec<(u64, f64)>) {
        let mut sub = spec();
        let mut setup = BTreeMap::new();
        replay(
            &mut sub,
            changes,
            &BTreeMap::from([("mul".to_string(), base)]),
            &mut setup,
        );
        let sets = setup
            .get("mul")
            .map(|s: &BlockSetup| {
                s.sets
                    .iter()
                    .map(|s| (s.offset, s.value.as_complex().unwrap().re))
                    .collect()
            })
            .unwrap_or_default();
        (sub.blocks["mul"].params["constant"].clone(), sets)
    }

    #[test]
    fn a_block_starts_with_the_value_in_force_at_its_base_and_later_changes_are_scheduled() {
        // The spec holds the newest value (9), as a resource does after the
        // edits; the record says 1 → 3 at 100, 3 → 9 at 500.
        let cs = [change(1, 3, 100), change(3, 9, 500)];
        assert_eq!(replayed(&cs, 0), (json!(1), vec![(100, 3.0), (500, 9.0)]));
        assert_eq!(replayed(&cs, 99), (json!(1), vec![(1, 3.0), (401, 9.0)]));
        // A change exactly at the base is applied at the first item (with
        // its tag, as in the uninterrupted run).
        assert_eq!(replayed(&cs, 100), (json!(1), vec![(0, 3.0), (400, 9.0)]));
        assert_eq!(replayed(&cs, 101), (json!(3), vec![(399, 9.0)]));
        assert_eq!(replayed(&cs, 800), (json!(9), vec![]));
        // Order in the file does not matter, only the offsets.
        let rev = [change(3, 9, 500), change(1, 3, 100)];
        assert_eq!(replayed(&rev, 200), (json!(3), vec![(300, 9.0)]));
    }

    #[test]
    fn appended_changes_read_back_and_an_unfinished_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), vec![]);
        let cs = [change(1, 3, 100), change(3, 9, 500)];
        for c in &cs {
            append(dir.path(), c).unwrap();
        }
        assert_eq!(load(dir.path()).unwrap(), cs);
        // A write the process did not finish.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path(dir.path()))
            .unwrap();
        f.write_all(br#"{"block": "mul", "par"#).unwrap();
        assert_eq!(load(dir.path()).unwrap(), cs);
        // Anything else that does not parse is reported with its line.
        std::fs::write(path(dir.path()), "nonsense\n").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("params.jsonl line 1:"), "{e}");
        reset(dir.path()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), vec![]);
    }
}
