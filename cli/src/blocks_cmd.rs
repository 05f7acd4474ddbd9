//! `flowmesh blocks [KIND] [--json]`.

use anyhow::{bail, Result};
use flowmesh_model::catalog;
use flowmesh_model::catalog::{
    BlockDescriptor, ParamType, PortDescriptor, PortKind, TypeExpr, VlenExpr,
};

pub fn blocks(kind: Option<&str>, json: bool) -> Result<()> {
    let cat = catalog();
    match kind {
        None if json => {
            let all: Vec<&BlockDescriptor> = cat.iter().collect();
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        None => {
            for d in cat.iter() {
                let first = d.description.split(". ").next().unwrap_or("");
                println!(
                    "{:<24} {:<9} {}",
                    d.kind,
                    format!("{:?}", d.category).to_lowercase(),
                    first.trim_end_matches('.')
                );
            }
            println!("\n`flowmesh blocks KIND` shows ports and parameters.");
        }
        Some(k) => {
            let Some(d) = cat.get(k) else {
                match cat.nearest(k) {
                    Some(n) => bail!("unknown block kind `{k}`; did you mean `{n}`?"),
                    None => bail!("unknown block kind `{k}`; `flowmesh blocks` lists them"),
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(d)?);
            } else {
                print!("{}", describe(d));
            }
        }
    }
    Ok(())
}

fn port_type(p: &PortDescriptor) -> String {
    match p.kind {
        PortKind::Message => "message".into(),
        PortKind::Stream { item, vlen } => {
            let t = match item {
                TypeExpr::Fixed(t) => t.name().to_string(),
                TypeExpr::Param(n) => format!("<{n}>"),
                TypeExpr::RealOf(n) => format!("real(<{n}>)"),
                TypeExpr::FloatOf(n) => format!("f32|cf32 per <{n}>"),
            };
            match vlen {
                VlenExpr::Fixed(1) => t,
                VlenExpr::Fixed(v) => format!("{t} x {v}"),
                VlenExpr::Param(n) => format!("{t} x <{n}>"),
            }
        }
    }
}

fn param_type(t: &ParamType) -> String {
    match t {
        ParamType::ItemType(ts) => ts.iter().map(|t| t.name()).collect::<Vec<_>>().join("|"),
        ParamType::Enum(w) => w.join("|"),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn describe(d: &BlockDescriptor) -> String {
    let mut s = format!("{} ({:?})\n  {}\n", d.kind, d.category, d.description);
    s.push_str(&format!(
        "  source: {:?}   tags: {:?}\n",
        d.source, d.tag_policy
    ));
    for (title, ports) in [("inputs", &d.inputs), ("outputs", &d.outputs)] {
        s.push_str(&format!("\n{title}:\n"));
        if ports.is_empty() {
            s.push_str("  (none)\n");
        }
        for p in ports {
            let name = match p.count {
                Some(c) => format!("{}0..{}<{c}>", p.name, p.name),
                None => p.name.to_string(),
            };
            s.push_str(&format!(
                "  {:<14} {:<22} {}{}\n",
                name,
                port_type(p),
                p.description,
                if p.optional { " (optional)" } else { "" }
            ));
        }
    }
    s.push_str("\nparameters:\n");
    for p in &d.params {
        let mut extra = vec![];
        match &p.default {
            None => extra.push("required".to_string()),
            Some(flowmesh_model::Pmt::Null) => extra.push("optional".to_string()),
            Some(v) => extra.push(format!("default {v}")),
        }
        if let Some(u) = p.unit {
            extra.push(format!("unit {u}"));
        }
        match (p.min, p.max) {
            (Some(a), Some(b)) => extra.push(format!("{a}..{b}")),
            (Some(a), None) => extra.push(format!(">= {a}")),
            (None, Some(b)) => extra.push(format!("<= {b}")),
            _ => {}
        }
        if p.constraint.is_some() {
            extra.push("power of two".into());
        }
        if p.settable {
            extra.push("settable while running".into());
        }
        s.push_str(&format!(
            "  {:<16} {:<18} {} [{}]\n",
            p.name,
            param_type(&p.ty),
            p.description,
            extra.join(", ")
        ));
    }
    s
}
