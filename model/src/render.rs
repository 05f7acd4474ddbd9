//! Drawing a FlowGraph: Graphviz DOT and Mermaid flowcharts.
//!
//! Blocks are nodes labelled with their name and kind, grouped by segment
//! (blocks without a segment are drawn outside any group). Stream edges are
//! labelled with their item type and, when it is known, their sample rate
//! (`cf32 @ 2 MHz`); message edges are dashed. Output is deterministic:
//! segments and blocks in name order, edges in connection order. Invalid
//! specs are drawn as far as they can be understood: connections naming
//! unknown blocks are left out, edges whose type is unknown are unlabelled.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::spec::FlowGraphSpec;
use crate::validate::{analyze, format_rate, Analysis, EdgeInfo, EdgeKind};

/// Graphviz DOT (`dot -Tsvg`).
pub fn to_dot(spec: &FlowGraphSpec) -> String {
    let a = analyze(spec);
    let mut out = String::new();
    out.push_str("digraph flowgraph {\n");
    out.push_str("  rankdir=LR;\n");
    out.push_str("  node [shape=box, style=rounded];\n");
    let node = |name: &str, kind: &str| {
        format!(
            "\"{}\" [label=\"{}\\n{}\"];",
            dot_escape(name),
            dot_escape(name),
            dot_escape(kind)
        )
    };
    let (segments, loose) = groups(&a);
    for (segment, names) in &segments {
        let _ = writeln!(out, "  subgraph \"cluster_{}\" {{", dot_escape(segment));
        let _ = writeln!(out, "    label=\"{}\";", dot_escape(segment));
        for n in names {
            let _ = writeln!(out, "    {}", node(n, &a.blocks[*n].kind));
        }
        out.push_str("  }\n");
    }
    for n in &loose {
        let _ = writeln!(out, "  {}", node(n, &a.blocks[*n].kind));
    }
    for e in &a.edges {
        let mut attrs = vec![];
        if let Some(l) = label(e) {
            attrs.push(format!("label=\"{}\"", dot_escape(&l)));
        }
        if e.kind == EdgeKind::Message {
            attrs.push("style=dashed".to_string());
        }
        let attrs = if attrs.is_empty() {
            String::new()
        } else {
            format!(" [{}]", attrs.join(", "))
        };
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\"{attrs};",
            dot_escape(&e.from.block),
            dot_escape(&e.to.block)
        );
    }
    out.push_str("}\n");
    out
}

/// A Mermaid flowchart (for Markdown). Node ids are `b0`, `b1`, … in block
/// name order (block names may not be valid Mermaid ids); labels carry the names.
pub fn to_mermaid(spec: &FlowGraphSpec) -> String {
    let a = analyze(spec);
    let ids: BTreeMap<&str, String> = a
        .blocks
        .keys()
        .enumerate()
        .map(|(i, n)| (n.as_str(), format!("b{i}")))
        .collect();
    let node = |name: &str| {
        format!(
            "{}[\"{}<br/>{}\"]",
            ids[name],
            mermaid_escape(name),
            mermaid_escape(&a.blocks[name].kind)
        )
    };
    let mut out = String::from("flowchart LR\n");
    let (segments, loose) = groups(&a);
    for (i, (segment, names)) in segments.iter().enumerate() {
        let _ = writeln!(out, "  subgraph s{i}[\"{}\"]", mermaid_escape(segment));
        for n in names {
            let _ = writeln!(out, "    {}", node(n));
        }
        out.push_str("  end\n");
    }
    for n in &loose {
        let _ = writeln!(out, "  {}", node(n));
    }
    for e in &a.edges {
        let arrow = if e.kind == EdgeKind::Message {
            "-.->"
        } else {
            "-->"
        };
        let label = label(e)
            .map(|l| format!("|\"{}\"|", mermaid_escape(&l)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} {arrow}{label} {}",
            ids[e.from.block.as_str()],
            ids[e.to.block.as_str()]
        );
    }
    out
}

/// Blocks by segment (segments in name order), and blocks without one.
type Groups<'a> = (BTreeMap<&'a str, Vec<&'a str>>, Vec<&'a str>);

fn groups(a: &Analysis) -> Groups<'_> {
    let mut segments: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut loose = vec![];
    for (name, b) in &a.blocks {
        match &b.segment {
            Some(s) => segments.entry(s).or_default().push(name),
            None => loose.push(name.as_str()),
        }
    }
    (segments, loose)
}

/// `cf32 @ 2 MHz`, `f32x1024`, or nothing when the type is unknown.
fn label(e: &EdgeInfo) -> Option<String> {
    let EdgeKind::Stream(ty) = e.kind else {
        return None;
    };
    match (ty, e.rate) {
        (Some(t), Some(r)) => Some(format!("{t} @ {}", format_rate(r))),
        (Some(t), None) => Some(t.to_string()),
        (None, Some(r)) => Some(format!("? @ {}", format_rate(r))),
        (None, None) => None,
    }
}

fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn mermaid_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}
