//! What an edit of a FlowGraph means for one segment: nothing, parameter
//! changes its workers apply live, or a change that needs the segment
//! restarted.
//!
//! A worker in cluster mode calls [`segment_change`] on every new version
//! of its resource; the operator uses the same rule to decide which
//! segments to roll. Both compare the partitions of the two specs, so an
//! edit that touches only other segments changes nothing here.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::catalog;
use crate::params;
use crate::partition::{partition, Partition};
use crate::spec::FlowGraphSpec;
use crate::Pmt;

/// One settable parameter with a new value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamChange {
    pub block: String,
    pub param: String,
    /// The new value as written in the spec (`null`: back to the default).
    pub value: serde_json::Value,
}

/// What a new spec means for a segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum SegmentChange {
    /// The segment's part of the graph is unchanged.
    None,
    /// Only parameters that the catalog marks settable changed: the
    /// segment's workers apply them through the blocks' callbacks.
    Live { params: Vec<ParamChange> },
    /// Anything else changed (a block added, removed or of another kind, a
    /// parameter that is not settable, a connection, an edge, placement or
    /// runtime settings): the segment must be restarted to take it. Each
    /// reason names the element.
    RestartRequired { reasons: Vec<String> },
    /// The segment does not exist in the new spec.
    Removed,
}

/// The effective parameters of each block of a sub-spec (defaults filled in).
fn effective(sub: &FlowGraphSpec) -> BTreeMap<&str, (&str, BTreeMap<String, Pmt>)> {
    sub.blocks
        .iter()
        .map(|(name, b)| {
            let p = catalog()
                .get(&b.kind)
                .map(|d| params::resolve(d, &b.params).0 .0)
                .unwrap_or_default();
            (name.as_str(), (b.kind.as_str(), p))
        })
        .collect()
}

fn is_settable(kind: &str, param: &str) -> bool {
    catalog()
        .get(kind)
        .and_then(|d| d.param_descriptor(param))
        .is_some_and(|p| p.settable)
}

/// What `new` means for `segment`, given the `old` spec it runs. Both specs
/// must have passed validation (a spec that does not partition is reported
/// as a restart with the reason).
pub fn segment_change(old: &FlowGraphSpec, new: &FlowGraphSpec, segment: &str) -> SegmentChange {
    let parts = |s: &FlowGraphSpec| partition(s);
    let (old_p, new_p): (Partition, Partition) = match (parts(old), parts(new)) {
        (Ok(a), Ok(b)) => (a, b),
        (_, Err(e)) | (Err(e), _) => {
            return SegmentChange::RestartRequired {
                reasons: vec![format!("the spec does not partition: {e}")],
            }
        }
    };
    let Some(a) = old_p.segments.get(segment) else {
        return SegmentChange::RestartRequired {
            reasons: vec![format!("segment `{segment}` is new")],
        };
    };
    let Some(b) = new_p.segments.get(segment) else {
        return SegmentChange::Removed;
    };
    if a == b {
        return SegmentChange::None;
    }
    let mut reasons = vec![];
    if a.connections != b.connections {
        reasons.push(format!(
            "segment `{segment}`: its connections or network edges changed"
        ));
    }
    if a.segments != b.segments {
        reasons.push(format!(
            "spec.segments.{segment}: placement or scaling changed"
        ));
    }
    if a.runtime != b.runtime {
        reasons.push("spec.runtime changed".to_string());
    }
    let (ea, eb) = (effective(a), effective(b));
    let mut params_changed = vec![];
    for (name, (kind, pa)) in &ea {
        let Some((kind_b, pb)) = eb.get(name) else {
            reasons.push(format!("blocks.{name}: removed"));
            continue;
        };
        if kind != kind_b {
            reasons.push(format!("blocks.{name}: kind {kind} became {kind_b}"));
            continue;
        }
        let keys: std::collections::BTreeSet<&String> = pa.keys().chain(pb.keys()).collect();
        for k in keys {
            if pa.get(k) == pb.get(k) {
                continue;
            }
            if is_settable(kind, k) {
                let value = b.blocks[*name]
                    .params
                    .get(k)
                    .cloned()
                    .unwrap_or(serde_json::Value::Null);
                params_changed.push(ParamChange {
                    block: name.to_string(),
                    param: k.clone(),
                    value,
                });
            } else {
                reasons.push(format!(
                    "blocks.{name}.params.{k}: not settable while running (see `flowmesh blocks {kind}`)"
                ));
            }
        }
    }
    for name in eb.keys() {
        if !ea.contains_key(name) {
            reasons.push(format!("blocks.{name}: added"));
        }
    }
    if !reasons.is_empty() {
        return SegmentChange::RestartRequired { reasons };
    }
    if params_changed.is_empty() {
        // Only what parameters do not see changed (e.g. the order of keys).
        return SegmentChange::None;
    }
    SegmentChange::Live {
        params: params_changed,
    }
}

/// A hash of `segment`'s part of the graph that leaves out the values of
/// settable parameters (with the catalog's defaults filled in, so writing a
/// default explicitly changes nothing): equal hashes mean
/// [`segment_change`] is `None` or `Live`, so the segment's workers need no
/// restart. The operator puts it into the segment's pod template: a
/// settable-parameter edit rolls nothing, any other change rolls exactly
/// the segments it touches. `None` when the spec does not partition or has
/// no such segment.
pub fn segment_hash(spec: &FlowGraphSpec, segment: &str) -> Option<String> {
    let p = partition(spec).ok()?;
    let sub = p.segments.get(segment)?;
    let mut text = String::new();
    for (name, (kind, params)) in effective(sub) {
        text.push_str(&format!("block {name} {kind}\n"));
        for (k, v) in params {
            if !is_settable(kind, &k) {
                text.push_str(&format!("  {k}={v}\n"));
            }
        }
    }
    // Connections, placement and runtime settings as the partition wrote
    // them (BTreeMaps and Vecs: a stable order).
    let rest = serde_json::json!({
        "connections": sub.connections,
        "segments": sub.segments,
        "runtime": sub.runtime,
    });
    text.push_str(&rest.to_string());
    Some(format!("{:016x}", crate::naming::fnv1a64(text.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(y: &str) -> FlowGraphSpec {
        let (doc, report) = crate::validate::validate_text(y);
        assert!(report.is_ok(), "{report:?}");
        doc.unwrap().spec
    }

    fn graph(gain: &str, head: u64, extra: &str) -> FlowGraphSpec {
        graph_with(gain, head, extra, "")
    }

    fn graph_with(gain: &str, head: u64, extra: &str, extra_conns: &str) -> FlowGraphSpec {
        spec(&format!(
            r#"
apiVersion: flowmesh.dev/v1alpha1
kind: FlowGraph
metadata: {{name: g}}
spec:
  blocks:
    src:  {{kind: signal_source, params: {{type: cf32, samp_rate: 1e6, frequency: 1e3}}, segment: a}}
    gain: {{kind: multiply_const, params: {{type: cf32, constant: "{gain}"}}, segment: b}}
    head: {{kind: head, params: {{type: cf32, n: {head}}}, segment: b}}
    sink: {{kind: null_sink, params: {{type: cf32}}, segment: b}}{extra}
  connections:
    - [src.out, gain.in]
    - [gain.out, head.in]
    - [head.out, sink.in]{extra_conns}
"#
        ))
    }

    #[test]
    fn an_unchanged_segment_is_none() {
        let g = graph("0.5", 100, "");
        assert_eq!(segment_change(&g, &g.clone(), "b"), SegmentChange::None);
    }

    #[test]
    fn a_settable_parameter_is_live_and_touches_only_its_segment() {
        let (old, new) = (graph("0.5", 100, ""), graph("0.25+1j", 100, ""));
        assert_eq!(
            segment_change(&old, &new, "b"),
            SegmentChange::Live {
                params: vec![ParamChange {
                    block: "gain".into(),
                    param: "constant".into(),
                    value: serde_json::json!("0.25+1j"),
                }]
            }
        );
        assert_eq!(segment_change(&old, &new, "a"), SegmentChange::None);
    }

    #[test]
    fn a_parameter_that_is_not_settable_needs_a_restart_naming_it() {
        let (old, new) = (graph("0.5", 100, ""), graph("0.5", 200, ""));
        let SegmentChange::RestartRequired { reasons } = segment_change(&old, &new, "b") else {
            panic!("not a restart")
        };
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].starts_with("blocks.head.params.n: not settable"),
            "{reasons:?}"
        );
        assert_eq!(segment_change(&old, &new, "a"), SegmentChange::None);
    }

    #[test]
    fn an_added_block_needs_a_restart_and_a_removed_segment_is_removed() {
        let old = graph("0.5", 100, "");
        let new = graph_with(
            "0.5",
            100,
            "\n    probe: {kind: null_source, params: {type: f32}, segment: b}\n    drop: {kind: null_sink, params: {type: f32}, segment: b}",
            "\n    - [probe.out, drop.in]",
        );
        let SegmentChange::RestartRequired { reasons } = segment_change(&old, &new, "b") else {
            panic!("not a restart")
        };
        assert!(
            reasons.iter().any(|r| r == "blocks.probe: added"),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| r.contains("connections")),
            "{reasons:?}"
        );
        assert_eq!(
            segment_change(&old, &new, "zzz"),
            SegmentChange::RestartRequired {
                reasons: vec!["segment `zzz` is new".into()]
            }
        );
        let mut gone = old.clone();
        for b in gone.blocks.values_mut() {
            b.segment = Some("a".into());
        }
        assert_eq!(segment_change(&old, &gone, "b"), SegmentChange::Removed);
    }

    #[test]
    fn writing_a_default_explicitly_changes_nothing() {
        let old = graph("0.5", 100, "");
        let mut new = old.clone();
        new.blocks
            .get_mut("src")
            .unwrap()
            .params
            .insert("amplitude".into(), serde_json::json!(1.0));
        assert_eq!(segment_change(&old, &new, "a"), SegmentChange::None);
    }

    #[test]
    fn the_segment_hash_ignores_settable_values_and_other_segments() {
        let base = graph("0.5", 100, "");
        let h = |g: &FlowGraphSpec, s: &str| segment_hash(g, s).unwrap();
        // A settable parameter: no segment's hash changes.
        let live = graph("0.25+1j", 100, "");
        assert_eq!(h(&base, "a"), h(&live, "a"));
        assert_eq!(h(&base, "b"), h(&live, "b"));
        // A parameter that is not settable: only its segment's hash changes.
        let roll = graph("0.5", 200, "");
        assert_eq!(h(&base, "a"), h(&roll, "a"));
        assert_ne!(h(&base, "b"), h(&roll, "b"));
        // A default written out changes nothing.
        let mut explicit = base.clone();
        explicit
            .blocks
            .get_mut("src")
            .unwrap()
            .params
            .insert("amplitude".into(), serde_json::json!(1.0));
        assert_eq!(h(&base, "a"), h(&explicit, "a"));
        assert_eq!(segment_hash(&base, "zzz"), None);
    }
}
