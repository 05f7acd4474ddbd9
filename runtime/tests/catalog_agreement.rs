//! The catalog and the implementations agree: every catalog kind is
//! implemented and every implementation is in the catalog, and each kind
//! builds under every item type it accepts, with exactly the ports the
//! catalog declares (by construction: the builders state none) and the
//! rate the catalog declares.

use std::collections::{BTreeMap, BTreeSet};

use flowmesh_model::catalog::ParamType;
use flowmesh_model::{catalog, params};
use flowmesh_runtime::blocks::{build, implementations};
use serde_json::{json, Value};

/// Plausible values for required parameters, by name.
fn required_value(kind: &str, name: &str, dir: &std::path::Path) -> Value {
    match name {
        "samp_rate" => json!(1e6),
        "rate" => json!(1e3),
        "n" => json!(10),
        "taps" => json!([0.5, 0.25]),
        "cutoff" => json!(1e5),
        "transition" => json!(5e4),
        "data" => json!([1, 2, 3, 4]),
        "from" if kind == "convert" => json!("i16"),
        "from" => json!("a"),
        "edge" => json!(format!("{kind}.out>b")),
        "path" => {
            let p = dir.join(format!("{kind}.dat"));
            std::fs::write(&p, vec![0u8; 4096]).unwrap();
            json!(p.to_str().unwrap())
        }
        other => panic!(
            "catalog_agreement: add a test value for required parameter `{other}` of `{kind}`"
        ),
    }
}

#[test]
fn every_kind_is_implemented_and_every_implementation_is_catalogued() {
    let cat: BTreeSet<&str> = catalog().kinds().collect();
    let kinds: Vec<&str> = implementations().map(|i| i.kind).collect();
    let imp: BTreeSet<&str> = kinds.iter().copied().collect();
    assert_eq!(
        imp.len(),
        kinds.len(),
        "a kind is registered twice: {kinds:?}"
    );
    let missing: Vec<_> = cat.difference(&imp).collect();
    let extra: Vec<_> = imp.difference(&cat).collect();
    assert!(
        missing.is_empty(),
        "catalogued but not implemented: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "implemented but not catalogued: {extra:?}"
    );
}

#[test]
fn ports_agree_for_every_kind_and_item_type() {
    let dir = std::env::temp_dir().join(format!("fm-catalog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut checked = 0;
    let mut failures = vec![];
    for desc in catalog().iter() {
        let mut base: BTreeMap<String, Value> = BTreeMap::new();
        for p in &desc.params {
            if p.default.is_none() {
                base.insert(p.name.to_string(), required_value(desc.kind, p.name, &dir));
            }
        }
        // Every item type the `type` parameter accepts, and a vector length.
        let mut variants = vec![base.clone()];
        if let Some(pd) = desc.param_descriptor("type") {
            if let ParamType::ItemType(types) = &pd.ty {
                variants = types
                    .iter()
                    .map(|t| {
                        let mut v = base.clone();
                        v.insert("type".into(), json!(t.name()));
                        if t.is_complex() && v.contains_key("data") {
                            v.insert("data".into(), json!(["1+1j", 2, 3, 4]));
                        }
                        v
                    })
                    .collect();
            }
        }
        if desc.param_descriptor("vlen").is_some() {
            let mut v = variants[0].clone();
            v.insert("vlen".into(), json!(4));
            variants.push(v);
        }
        for given in variants {
            let (p, problems) = params::resolve(desc, &given);
            assert!(problems.is_empty(), "{}: {problems:?}", desc.kind);
            let (want_in, want_out) = desc.resolve_ports(&p);
            match build(desc.kind, &p) {
                Ok(b) => {
                    if b.inputs != want_in || b.outputs != want_out {
                        failures.push(format!(
                            "{} {:?}: catalog in {:?} out {:?}, implementation in {:?} out {:?}",
                            desc.kind, given, want_in, want_out, b.inputs, b.outputs
                        ));
                    }
                    // The same rate (as a ratio: builders may reduce it).
                    let (ci, cd) = desc.rate.eval(&p).expect("catalog rate evaluates");
                    let (bi, bd) = b.rate;
                    if u128::from(ci) * u128::from(bd) != u128::from(bi) * u128::from(cd) {
                        failures.push(format!(
                            "{} {:?}: catalog rate {ci}/{cd}, implementation {bi}/{bd}",
                            desc.kind, given
                        ));
                    }
                    if b.tag_policy != desc.tag_policy {
                        failures.push(format!(
                            "{} {:?}: catalog tag policy {:?}, implementation {:?}",
                            desc.kind, given, desc.tag_policy, b.tag_policy
                        ));
                    }
                    checked += 1;
                }
                Err(e) => failures.push(format!("{} {:?}: cannot build: {e}", desc.kind, given)),
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 50, "only {checked} variants checked");
}

#[test]
fn declared_history_is_the_implementations_taps_less_one() {
    // The catalog declares the history the worker warms a resumed filter
    // up with; it must be what the built filter really reads.
    let cases = [
        (
            "fir_filter",
            json!({"type": "f32", "taps": [1, 2, 3, 4, 5]}),
        ),
        (
            "fir_filter",
            json!({"type": "cf32", "taps": ["1+1j"], "decimation": 3}),
        ),
        (
            "low_pass_filter",
            json!({"type": "cf32", "samp_rate": 1e6, "cutoff": 1e5, "transition": 5e4}),
        ),
        (
            "low_pass_filter",
            json!({"type": "f32", "samp_rate": 48e3, "cutoff": 3e3, "transition": 700, "window": "blackman_harris"}),
        ),
        (
            "low_pass_filter",
            json!({"type": "f32", "samp_rate": 2e6, "cutoff": 2e5, "transition": 1e4, "window": "rectangular", "decimation": 4}),
        ),
    ];
    for (kind, given) in cases {
        let desc = catalog().get(kind).unwrap();
        let given: BTreeMap<String, Value> = serde_json::from_value(given).unwrap();
        let (p, problems) = params::resolve(desc, &given);
        assert!(problems.is_empty(), "{kind}: {problems:?}");
        let b = build(kind, &p).unwrap();
        let taps = match b.block.get("taps") {
            Some(flowmesh_model::Pmt::Vector(v)) => v.len() as u64,
            other => panic!("{kind}: taps {other:?}"),
        };
        assert!(taps >= 1, "{kind} {given:?}: {taps} taps");
        assert_eq!(desc.history_of(&p), taps - 1, "{kind} {given:?}");
    }
    // Blocks that declare none have none to warm up.
    let desc = catalog().get("multiply_const").unwrap();
    assert_eq!(
        desc.history_of(&params::resolve(desc, &BTreeMap::new()).0),
        0
    );
}
