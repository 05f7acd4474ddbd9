//! The generated FlowGraph CRD: the committed `crds/flowgraph.yaml` is what
//! `flowmesh crd` prints (drift), its schema is structural by the Kubernetes
//! rules, its CEL rules are bounded and agree with `flowmesh validate`, and
//! every example validates against the schema and through the model.

use std::path::{Path, PathBuf};

use flowmesh_k8s::crd::{self, BLOCK_NAME_RE, ENDPOINT_RE, SEGMENT_NAME_RE};
use serde_json::{Map, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The generated `openAPIV3Schema` as JSON.
fn schema() -> Value {
    let crd = crd::crd();
    let s = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has a schema");
    serde_json::to_value(s).unwrap()
}

#[test]
fn the_committed_crd_is_what_flowmesh_crd_prints() {
    let path = root().join("crds/flowgraph.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = crd::crd_yaml();
    assert!(
        committed == generated,
        "{} is stale (or missing): the Rust types changed. Regenerate it with\n\
         \n    cargo run -p flowmesh -- crd > crds/flowgraph.yaml\n\n\
         and commit it.",
        path.display()
    );
}

// ---------------------------------------------------------------------------
// Structural schema. The rules are those of "Specifying a structural schema"
// and "Validation" in
// https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/
// (quoted where they are checked).

const JUNCTORS: [&str; 4] = ["allOf", "anyOf", "oneOf", "not"];

fn check_node(v: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(m) = v.as_object() else {
        problems.push(format!("{path}: a schema must be an object, got {v}"));
        return;
    };
    let ty = m.get("type").and_then(Value::as_str);
    let int_or_string = m.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));

    // "specifies a non-empty type ... for the root, for each specified field
    // of an object node (via properties or additionalProperties) and for each
    // item in an array node (via items), with the exception of: a node with
    // x-kubernetes-int-or-string: true; a node with
    // x-kubernetes-preserve-unknown-fields: true". Parents of properties or
    // items need a type too, and every node we generate has one.
    if ty.is_none_or(str::is_empty) && !int_or_string && !(preserve && ty.is_none()) {
        problems.push(format!("{path}: no `type`"));
    }
    if m.contains_key("properties") && ty != Some("object") {
        problems.push(format!("{path}: `properties` without `type: object`"));
    }
    if m.contains_key("items") && ty != Some("array") {
        problems.push(format!("{path}: `items` without `type: array`"));
    }
    // Validation: "additionalProperties ... cannot be set together with
    // properties", and a boolean `additionalProperties: false` is what
    // `deny_unknown_fields` would leak.
    if let Some(ap) = m.get("additionalProperties") {
        if m.contains_key("properties") {
            problems.push(format!(
                "{path}: `additionalProperties` together with `properties`"
            ));
        }
        if !ap.is_object() {
            problems.push(format!(
                "{path}: `additionalProperties` must be a schema, got {ap}"
            ));
        }
    }
    // Validation: the fields definitions, dependencies, deprecated,
    // discriminator, id, patternProperties, readOnly, writeOnly, xml, $ref
    // are not allowed; "uniqueItems cannot be set to true".
    for k in [
        "$ref",
        "definitions",
        "$defs",
        "dependencies",
        "deprecated",
        "discriminator",
        "id",
        "patternProperties",
        "readOnly",
        "writeOnly",
        "xml",
        "$schema",
        "const",
    ] {
        if m.contains_key(k) {
            problems.push(format!("{path}: `{k}` is not allowed"));
        }
    }
    if m.get("uniqueItems") == Some(&Value::Bool(true)) {
        problems.push(format!("{path}: `uniqueItems: true` is not allowed"));
    }
    // x-kubernetes-preserve-unknown-fields: on objects (or untyped nodes).
    if preserve && ty.is_some_and(|t| t != "object") {
        problems.push(format!(
            "{path}: x-kubernetes-preserve-unknown-fields on a `{}`",
            ty.unwrap()
        ));
    }
    // "nullable" only makes sense with a type.
    if m.contains_key("nullable") && ty.is_none() && !int_or_string {
        problems.push(format!("{path}: `nullable` without a `type`"));
    }
    // x-kubernetes-int-or-string: no type; only the
    // anyOf [{type: integer}, {type: string}] pattern below it.
    if int_or_string && ty.is_some() {
        problems.push(format!("{path}: x-kubernetes-int-or-string with a `type`"));
    }
    // Enum values must be values of the type (no `null` among them).
    if let Some(e) = m.get("enum").and_then(Value::as_array) {
        for x in e {
            let ok = match ty {
                Some("string") => x.is_string(),
                Some("integer") => x.is_i64() || x.is_u64(),
                Some("number") => x.is_number(),
                Some("boolean") => x.is_boolean(),
                _ => false,
            };
            if !ok {
                problems.push(format!("{path}: enum value {x} is not a {ty:?}"));
            }
        }
    }
    // "does not set description, type, default, additionalProperties,
    // nullable within an allOf, anyOf, oneOf or not, with the exception of
    // the two pattern for x-kubernetes-int-or-string: true", and every
    // field/item inside them is also specified outside.
    for j in JUNCTORS {
        let Some(sub) = m.get(j) else { continue };
        let branches: Vec<&Value> = match sub {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for (i, b) in branches.iter().enumerate() {
            let bpath = format!("{path}.{j}[{i}]");
            check_junctor_branch(b, m, int_or_string, &bpath, problems);
        }
    }
    // x-kubernetes-list-type: map needs object items whose keys are required.
    if m.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
        let keys = m
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let required = m
            .get("items")
            .and_then(|i| i.get("required"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if keys.is_empty() {
            problems.push(format!("{path}: list-type map without list-map-keys"));
        }
        for k in keys {
            if !required.contains(&k) {
                problems.push(format!("{path}: list-map key {k} is not required"));
            }
        }
    }
    check_cel(m, path, problems);

    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            check_node(p, &format!("{path}.{k}"), problems);
        }
    }
    if let Some(ap) = m.get("additionalProperties").filter(|a| a.is_object()) {
        check_node(ap, &format!("{path}.*"), problems);
    }
    if let Some(items) = m.get("items") {
        check_node(items, &format!("{path}[]"), problems);
    }
}

fn check_junctor_branch(
    b: &Value,
    parent: &Map<String, Value>,
    int_or_string: bool,
    path: &str,
    problems: &mut Vec<String>,
) {
    let Some(bm) = b.as_object() else {
        problems.push(format!("{path}: not a schema"));
        return;
    };
    for k in [
        "description",
        "type",
        "default",
        "additionalProperties",
        "nullable",
    ] {
        let allowed = int_or_string && k == "type";
        if bm.contains_key(k) && !allowed {
            problems.push(format!("{path}: sets `{k}` inside a junctor"));
        }
    }
    if let Some(props) = bm.get("properties").and_then(Value::as_object) {
        let outside = parent.get("properties").and_then(Value::as_object);
        for k in props.keys() {
            if !outside.is_some_and(|o| o.contains_key(k)) {
                problems.push(format!("{path}: field `{k}` only inside a junctor"));
            }
        }
    }
    if bm.contains_key("items") && !parent.contains_key("items") {
        problems.push(format!("{path}: items only inside a junctor"));
    }
}

/// CEL rules: a rule that iterates (`all`) a list or map needs that
/// list/map bounded, and a rule that runs `matches` on the node's string
/// needs a `maxLength` (the cost estimate of "Resource use by validation
/// functions"). Map keys cannot carry a maxLength; their count is bounded.
fn check_cel(m: &Map<String, Value>, path: &str, problems: &mut Vec<String>) {
    let Some(rules) = m.get("x-kubernetes-validations") else {
        return;
    };
    let Some(rules) = rules.as_array() else {
        problems.push(format!("{path}: x-kubernetes-validations is not a list"));
        return;
    };
    for r in rules {
        let rule = r.get("rule").and_then(Value::as_str).unwrap_or_default();
        if rule.is_empty() {
            problems.push(format!("{path}: a validation without a rule"));
        }
        if r.get("message")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            problems.push(format!("{path}: rule `{rule}` has no message"));
        }
        let ty = m.get("type").and_then(Value::as_str);
        if rule.contains(".all(") {
            let bounded = match ty {
                Some("array") => m.contains_key("maxItems"),
                Some("object") => m.contains_key("maxProperties"),
                _ => false,
            };
            if !bounded {
                problems.push(format!(
                    "{path}: rule `{rule}` iterates an unbounded {ty:?}"
                ));
            }
        }
        if rule.starts_with("self.matches(") && !m.contains_key("maxLength") {
            problems.push(format!(
                "{path}: rule `{rule}` on a string without maxLength"
            ));
        }
    }
}

#[test]
fn the_schema_is_structural() {
    let s = schema();
    let mut problems = vec![];
    check_node(&s, "openAPIV3Schema", &mut problems);
    // "if metadata is specified, then only restrictions on metadata.name and
    // metadata.generateName are allowed."
    if let Some(meta) = s.pointer("/properties/metadata") {
        let allowed = ["type", "properties"];
        for k in meta.as_object().unwrap().keys() {
            if !allowed.contains(&k.as_str()) {
                problems.push(format!("metadata: sets `{k}`"));
            }
        }
        for k in meta
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|p| p.keys())
        {
            if k != "name" && k != "generateName" {
                problems.push(format!("metadata: restricts `{k}`"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the CRD schema is not structural:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_structural_check_catches_what_it_is_for() {
    // The walker itself: each of these breaks one rule.
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "a": {"properties": {"x": {"type": "string"}}},
            "b": {"type": "object", "properties": {"x": {"type": "string"}},
                  "additionalProperties": false},
            "c": {"type": "string", "enum": ["A", null], "nullable": true},
            "d": {"type": "object", "anyOf": [{"type": "object", "description": "d"}]},
            "e": {"$ref": "#/definitions/E"},
            "f": {"type": "array", "items": {"type": "string"}, "x-kubernetes-preserve-unknown-fields": true},
            "g": {"type": "object", "additionalProperties": {"type": "string"},
                  "x-kubernetes-validations": [{"rule": "self.all(k, k != '')", "message": "m"}]},
            "h": {"type": "string", "x-kubernetes-validations": [{"rule": "self.matches('^a$')", "message": "m"}]}
        }
    });
    let mut problems = vec![];
    check_node(&bad, "s", &mut problems);
    let paths: Vec<&str> = problems
        .iter()
        .map(|p| p.split(':').next().unwrap())
        .collect();
    for want in [
        "s.a",
        "s.b",
        "s.c",
        "s.d.anyOf[0]",
        "s.e",
        "s.f",
        "s.g",
        "s.h",
    ] {
        assert!(paths.contains(&want), "{want} not caught: {problems:#?}");
    }
}

#[test]
fn typo_levels_keep_unknown_fields_for_flowmesh_validate() {
    let s = schema();
    for p in [
        "/properties/spec",
        "/properties/spec/properties/blocks/additionalProperties",
        "/properties/spec/properties/segments/additionalProperties",
        "/properties/spec/properties/segments/additionalProperties/properties/kubernetes",
        "/properties/spec/properties/runtime",
        "/properties/spec/properties/runtime/properties/network",
    ] {
        let node = s.pointer(p).unwrap_or_else(|| panic!("no {p}"));
        assert_eq!(
            node.get("x-kubernetes-preserve-unknown-fields"),
            Some(&Value::Bool(true)),
            "{p}"
        );
    }
}

// ---------------------------------------------------------------------------
// CEL rules agree with the model's validation.

#[test]
fn cel_name_rules_agree_with_flowmesh_validate() {
    let block = regex::Regex::new(BLOCK_NAME_RE).unwrap();
    let segment = regex::Regex::new(SEGMENT_NAME_RE).unwrap();
    let endpoint = regex::Regex::new(ENDPOINT_RE).unwrap();
    // The rules in the schema are the ones these constants make.
    let s = serde_json::to_string(&schema()).unwrap();
    for re in [BLOCK_NAME_RE, SEGMENT_NAME_RE, ENDPOINT_RE] {
        assert!(s.contains(&format!("matches('{re}')")), "{re}");
    }
    let doc = |block_name: &str, seg: &str, end: &str| {
        format!(
            "apiVersion: flowmesh.dev/v1alpha1\nkind: FlowGraph\nmetadata: {{name: t}}\nspec:\n\
             \x20 blocks:\n    '{block_name}': {{kind: null_source, params: {{type: f32}}, segment: '{seg}'}}\n\
             \x20   sink: {{kind: null_sink, params: {{type: f32}}}}\n\
             \x20 connections:\n    - ['{end}', sink.in]\n"
        )
    };
    for name in [
        "src", "a1", "my_src", "x-y", "Src", "1src", "my.src", "_a", "a b", "é",
    ] {
        let text = doc(name, "front", &format!("{name}.out"));
        let problems = flowmesh_k8s::validate_text(&text).1.problems;
        let model_ok = !problems
            .iter()
            .any(|p| p.message.contains("not a valid block name"));
        assert_eq!(
            block.is_match(name),
            model_ok,
            "block name `{name}`: {problems:?}"
        );
    }
    for seg in [
        "front", "a", "edge-1", "0a", "Front", "a_b", "-a", "a-", "a.b",
    ] {
        let text = doc("src", seg, "src.out");
        let problems = flowmesh_k8s::validate_text(&text).1.problems;
        let model_ok = !problems
            .iter()
            .any(|p| p.message.contains("not a valid segment name"));
        assert_eq!(
            segment.is_match(seg),
            model_ok,
            "segment `{seg}`: {problems:?}"
        );
    }
    let long = "a".repeat(64);
    assert!(
        segment.is_match(&long),
        "the length is the rule's size() and maxLength"
    );
    // The rule checks the syntax only: what it rejects the model rejects,
    // and a port that does not exist is the model's to find.
    for (end, syntax_ok) in [
        ("src.out", true),
        ("src.out.x", true),
        ("src", false),
        ("src.", false),
        (".out", false),
        ("Src.out", false),
    ] {
        assert_eq!(endpoint.is_match(end), syntax_ok, "{end}");
        let text = doc("src", "front", end);
        let problems = flowmesh_k8s::validate_text(&text).1.problems;
        let model_ok = !problems
            .iter()
            .any(|p| p.path.starts_with("spec.connections[0]"));
        assert_eq!(model_ok, end == "src.out", "end `{end}`: {problems:?}");
    }
}

// ---------------------------------------------------------------------------
// Examples.

/// A small JSON-schema check of the parts the CRD schema uses: types,
/// required fields, properties, additionalProperties, items, enums and the
/// bounds. CEL rules are covered by the test above.
fn conforms(v: &Value, s: &Value, path: &str, problems: &mut Vec<String>) {
    if v.is_null() && s.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    let ty = s.get("type").and_then(Value::as_str);
    let ok = match ty {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some(other) => panic!("type {other}"),
    };
    if !ok {
        problems.push(format!("{path}: {v} is not a {}", ty.unwrap()));
        return;
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            problems.push(format!("{path}: {v} is not one of {e:?}"));
        }
    }
    let num = |k: &str| s.get(k).and_then(Value::as_u64).map(|n| n as usize);
    match v {
        Value::Object(m) => {
            for r in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !m.contains_key(r.as_str().unwrap()) {
                    problems.push(format!("{path}: required {r} is missing"));
                }
            }
            if num("maxProperties").is_some_and(|n| m.len() > n) {
                problems.push(format!("{path}: more than maxProperties"));
            }
            let props = s.get("properties").and_then(Value::as_object);
            let preserve =
                s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            for (k, x) in m {
                let kp = format!("{path}.{k}");
                if let Some(ps) = props.and_then(|p| p.get(k)) {
                    conforms(x, ps, &kp, problems);
                } else if let Some(ap) = s.get("additionalProperties") {
                    conforms(x, ap, &kp, problems);
                } else if !preserve {
                    problems.push(format!("{kp}: would be pruned by the API server"));
                }
            }
        }
        Value::Array(a) => {
            if num("maxItems").is_some_and(|n| a.len() > n)
                || num("minItems").is_some_and(|n| a.len() < n)
            {
                problems.push(format!("{path}: {} items is out of bounds", a.len()));
            }
            if let Some(is) = s.get("items") {
                for (i, x) in a.iter().enumerate() {
                    conforms(x, is, &format!("{path}[{i}]"), problems);
                }
            }
        }
        Value::String(x) if num("maxLength").is_some_and(|n| x.chars().count() > n) => {
            problems.push(format!("{path}: longer than maxLength"));
        }
        _ => {}
    }
}

fn examples() -> Vec<PathBuf> {
    let mut files = vec![];
    for dir in ["examples", "examples/k8s"] {
        let Ok(rd) = std::fs::read_dir(root().join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_example_fits_the_schema_and_validates() {
    let files = examples();
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(root().join("examples/k8s"))),
        "examples/k8s has a FlowGraph resource example: {files:?}"
    );
    let s = schema();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let (_, report) = flowmesh_k8s::validate_text(&text);
        assert!(report.is_ok(), "{}:\n{report}", f.display());
        let v = flowmesh_model::spec::parse_yaml_value(&text).unwrap();
        let mut problems = vec![];
        // The resource as the API server sees it: its spec and (none) status.
        let spec_schema = s.pointer("/properties/spec").unwrap();
        conforms(&v["spec"], spec_schema, "spec", &mut problems);
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if v.get(r.as_str().unwrap()).is_none() {
                problems.push(format!("required {r} is missing"));
            }
        }
        assert!(problems.is_empty(), "{}: {problems:#?}", f.display());
    }
}

#[test]
fn the_schema_check_rejects_what_it_should() {
    let s = schema();
    let spec_schema = s.pointer("/properties/spec").unwrap();
    let bad = serde_json::json!({
        "blocks": {"a": {"params": {}}},
        "connections": [["a.out"]],
        "runtime": {"threads": "four", "scheduler": "fifo"}
    });
    let mut problems = vec![];
    conforms(&bad, spec_schema, "spec", &mut problems);
    let paths: Vec<&str> = problems
        .iter()
        .map(|p| p.split(':').next().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "spec.blocks.a",
            "spec.connections[0]",
            "spec.runtime.scheduler",
            "spec.runtime.threads"
        ],
        "{problems:#?}"
    );
}
