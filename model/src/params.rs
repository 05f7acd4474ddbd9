//! Block parameters: coercion of YAML values to typed [`Pmt`] values by the
//! catalog's [`ParamType`], and the [`Params`] map blocks are built from.
//!
//! Complex literals have one written form: a string `"re+imj"` / `"re-imj"`
//! (Python's form, as GNU Radio Companion shows them), e.g. `"0.6+0.8j"`,
//! `"-1j"`, `"2"`. A plain YAML number is also accepted where a complex is
//! expected and means a real value.

use std::collections::BTreeMap;

use num_complex::Complex64;

use crate::catalog::{BlockDescriptor, ParamType};
use crate::{ItemType, Pmt, TypedVec};

/// Coerced parameters of one block instance, defaults filled in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Params(pub BTreeMap<String, Pmt>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&Pmt> {
        self.0.get(name)
    }
    pub fn insert(&mut self, name: impl Into<String>, v: impl Into<Pmt>) {
        self.0.insert(name.into(), v.into());
    }
    pub fn f64(&self, name: &str) -> Option<f64> {
        self.get(name)?.as_f64()
    }
    pub fn i64(&self, name: &str) -> Option<i64> {
        self.get(name)?.as_i64()
    }
    pub fn u64(&self, name: &str) -> Option<u64> {
        self.get(name)?.as_u64()
    }
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.get(name)?.as_bool()
    }
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name)?.as_str()
    }
    pub fn complex(&self, name: &str) -> Option<Complex64> {
        self.get(name)?.as_complex()
    }
    pub fn item_type(&self, name: &str) -> Option<ItemType> {
        self.str(name)?.parse().ok()
    }
    /// A real list (`FloatList`).
    pub fn f64_list(&self, name: &str) -> Option<&[f64]> {
        match self.get(name)? {
            Pmt::Vector(TypedVec::F64(v)) => Some(v),
            _ => None,
        }
    }
    /// A complex list (`ComplexList`), or a real list widened.
    pub fn complex_list(&self, name: &str) -> Option<Vec<Complex64>> {
        match self.get(name)? {
            Pmt::Vector(TypedVec::Cf64(v)) => Some(v.clone()),
            Pmt::Vector(TypedVec::F64(v)) => {
                Some(v.iter().map(|x| Complex64::new(*x, 0.0)).collect())
            }
            _ => None,
        }
    }
}

/// Parses a complex literal `"re+imj"`. Accepts `"1"`, `"-2.5j"`, `"0.6+0.8j"`,
/// `"1e3-2e-3j"`, with optional spaces around the sign.
pub fn parse_complex(s: &str) -> Option<Complex64> {
    let t: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if t.is_empty() {
        return None;
    }
    let Some(body) = t.strip_suffix('j') else {
        return t.parse::<f64>().ok().map(|re| Complex64::new(re, 0.0));
    };
    // Find the sign that separates re from im: the last +/- not at the start
    // and not following an exponent marker.
    let bytes = body.as_bytes();
    let mut split = None;
    for i in (1..bytes.len()).rev() {
        if (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E') {
            split = Some(i);
            break;
        }
    }
    let parse_im = |x: &str| -> Option<f64> {
        match x {
            "" | "+" => Some(1.0),
            "-" => Some(-1.0),
            _ => x.parse().ok(),
        }
    };
    match split {
        Some(i) => Some(Complex64::new(
            body[..i].parse().ok()?,
            parse_im(&body[i..])?,
        )),
        None => Some(Complex64::new(0.0, parse_im(body)?)),
    }
}

/// Formats a complex number in the literal form [`parse_complex`] reads.
pub fn format_complex(c: Complex64) -> String {
    format!(
        "{}{}{}j",
        c.re,
        if c.im < 0.0 { "-" } else { "+" },
        c.im.abs()
    )
}

fn json_f64(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn json_complex(v: &serde_json::Value) -> Option<Complex64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().map(|re| Complex64::new(re, 0.0)),
        serde_json::Value::String(s) => parse_complex(s),
        _ => None,
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a map",
    }
}

fn show(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// Coerces one YAML value to the parameter type. Errors are a sentence
/// fragment like "expected a number, got a string \"abc\"".
pub fn coerce(ty: &ParamType, v: &serde_json::Value) -> Result<Pmt, String> {
    use serde_json::Value as J;
    let bad = |what: &str| format!("expected {what}, got {} {}", json_kind(v), show(v));
    Ok(match ty {
        ParamType::Bool => Pmt::Bool(v.as_bool().ok_or_else(|| bad("true or false"))?),
        ParamType::Int => match v {
            J::Number(n) if n.is_i64() => Pmt::I64(n.as_i64().unwrap()),
            J::Number(n) if n.is_u64() => return Err(format!("{n} is too large")),
            // 1e6 written in YAML is a float: accept whole values.
            J::Number(n)
                if n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9e15) =>
            {
                Pmt::I64(n.as_f64().unwrap() as i64)
            }
            _ => return Err(bad("an integer")),
        },
        ParamType::Float => Pmt::F64(json_f64(v).ok_or_else(|| bad("a number"))?),
        ParamType::Complex => Pmt::Complex(
            json_complex(v)
                .ok_or_else(|| bad("a number or a complex literal like \"0.6+0.8j\""))?,
        ),
        ParamType::String | ParamType::Path => {
            Pmt::String(v.as_str().ok_or_else(|| bad("a string"))?.to_string())
        }
        ParamType::ItemType(allowed) => {
            let s = v.as_str().ok_or_else(|| bad("an item type name"))?;
            let t: ItemType = s
                .parse()
                .map_err(|e: crate::types::UnknownItemType| e.to_string())?;
            if !allowed.contains(&t) {
                let names: Vec<_> = allowed.iter().map(|t| t.name()).collect();
                return Err(format!(
                    "type {t} is not supported here; use one of {}",
                    names.join(", ")
                ));
            }
            Pmt::String(t.name().to_string())
        }
        ParamType::Enum(words) => {
            let s = v.as_str().ok_or_else(|| bad("a word"))?;
            if !words.contains(&s) {
                return Err(format!(
                    "unknown value {s:?}; use one of {}",
                    words.join(", ")
                ));
            }
            Pmt::String(s.to_string())
        }
        ParamType::FloatList => {
            let arr = v.as_array().ok_or_else(|| bad("a list of numbers"))?;
            let mut out = Vec::with_capacity(arr.len());
            for (i, x) in arr.iter().enumerate() {
                out.push(json_f64(x).ok_or_else(|| {
                    format!(
                        "item {i}: expected a number, got {} {}",
                        json_kind(x),
                        show(x)
                    )
                })?);
            }
            Pmt::Vector(TypedVec::F64(out))
        }
        ParamType::ComplexList | ParamType::Items => {
            let arr = v.as_array().ok_or_else(|| bad("a list"))?;
            let mut out = Vec::with_capacity(arr.len());
            let mut all_real = true;
            for (i, x) in arr.iter().enumerate() {
                let c = json_complex(x).ok_or_else(|| {
                    format!(
                        "item {i}: expected a number or complex literal, got {} {}",
                        json_kind(x),
                        show(x)
                    )
                })?;
                all_real &= matches!(x, J::Number(_));
                out.push(c);
            }
            if matches!(ty, ParamType::Items) && all_real {
                Pmt::Vector(TypedVec::F64(out.into_iter().map(|c| c.re).collect()))
            } else {
                Pmt::Vector(TypedVec::Cf64(out))
            }
        }
    })
}

/// A problem with one parameter: `(parameter name, message, hint)`.
pub type ParamProblem = (String, String, String);

/// Coerces all parameters of a block against its descriptor, filling defaults.
/// Returns the parameters that could be coerced and the problems found
/// (unknown names, wrong types, out of range, missing required ones).
pub fn resolve(
    desc: &BlockDescriptor,
    given: &BTreeMap<String, serde_json::Value>,
) -> (Params, Vec<ParamProblem>) {
    let mut params = Params::default();
    let mut problems = vec![];
    for (name, value) in given {
        let Some(pd) = desc.param_descriptor(name) else {
            let hint = unknown_param_hint(desc, name);
            problems.push((name.clone(), "unknown parameter".to_string(), hint));
            continue;
        };
        match coerce(&pd.ty, value) {
            Ok(p) => {
                if let Some(msg) = check_range(pd, &p) {
                    problems.push((name.clone(), msg, range_hint(pd)));
                } else {
                    params.0.insert(name.clone(), p);
                }
            }
            Err(msg) => problems.push((name.clone(), msg, type_hint(&pd.ty))),
        }
    }
    for pd in &desc.params {
        if given.contains_key(pd.name) {
            continue;
        }
        match &pd.default {
            Some(d) => {
                params.0.insert(pd.name.to_string(), d.clone());
            }
            None => problems.push((
                pd.name.to_string(),
                "required parameter is missing".to_string(),
                format!("add `{}:`, {}", pd.name, pd.description),
            )),
        }
    }
    (params, problems)
}

/// The hint for a parameter name `desc` does not have: the nearest name, or
/// the list of its parameters.
pub fn unknown_param_hint(desc: &BlockDescriptor, name: &str) -> String {
    match crate::catalog::nearest(name, desc.params.iter().map(|p| p.name)) {
        Some(n) => format!("did you mean `{n}`? see `flowmesh blocks {}`", desc.kind),
        None => format!(
            "{} takes: {}",
            desc.kind,
            desc.params
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Why a change of a running block's parameter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetRefusal {
    /// The kind has no parameter of that name.
    Unknown,
    /// The parameter is fixed when the graph starts.
    NotSettable,
    /// The value has the wrong type.
    Type,
    /// The value is out of range (or breaks a constraint).
    Range,
}

/// Checks a new value (JSON, as written in a FlowGraph file) for parameter
/// `name` of a running block of kind `desc`: the parameter exists, may be
/// changed while running, and the value has its type and range. Returns the
/// coerced value, or why not with the message and hint `flowmesh validate`
/// gives for the same value in a file.
pub fn check_set(
    desc: &BlockDescriptor,
    name: &str,
    value: &serde_json::Value,
) -> Result<Pmt, (SetRefusal, String, String)> {
    let Some(pd) = desc.param_descriptor(name) else {
        return Err((
            SetRefusal::Unknown,
            "unknown parameter".to_string(),
            unknown_param_hint(desc, name),
        ));
    };
    if !pd.settable {
        let settable: Vec<_> = desc
            .params
            .iter()
            .filter(|p| p.settable)
            .map(|p| p.name)
            .collect();
        let hint = if settable.is_empty() {
            format!(
                "{} has no parameters that can change while running; edit the file and restart the segment",
                desc.kind
            )
        } else {
            format!(
                "edit the file and restart the segment; {} can change while running: {}",
                desc.kind,
                settable.join(", ")
            )
        };
        return Err((
            SetRefusal::NotSettable,
            format!("parameter `{name}` cannot be changed while running"),
            hint,
        ));
    }
    let p = coerce(&pd.ty, value).map_err(|m| (SetRefusal::Type, m, type_hint(&pd.ty)))?;
    if let Some(m) = check_range(pd, &p) {
        return Err((SetRefusal::Range, m, range_hint(pd)));
    }
    Ok(p)
}

/// A parameter value as JSON in a FlowGraph file's form (complex numbers
/// as `"0.6+0.8j"` strings), so that it can be written back unchanged.
pub fn value_json(p: &Pmt) -> serde_json::Value {
    match p {
        Pmt::Complex(c) => serde_json::Value::String(format_complex(*c)),
        Pmt::Vector(TypedVec::Cf64(cs)) => serde_json::Value::Array(
            cs.iter()
                .map(|c| serde_json::Value::String(format_complex(*c)))
                .collect(),
        ),
        other => other.to_json(),
    }
}

/// Checks range and constraints of a coerced value; `Some(message)` on failure.
pub fn check_range(pd: &ParamDescriptor, p: &Pmt) -> Option<String> {
    use crate::catalog::Constraint;
    let x = p.as_f64()?;
    if let Some(min) = pd.min {
        if x < min {
            return Some(format!("must be at least {min}, got {x}"));
        }
    }
    if let Some(max) = pd.max {
        if x > max {
            return Some(format!("must be at most {max}, got {x}"));
        }
    }
    if pd.constraint == Some(Constraint::PowerOfTwo) {
        let ok = p.as_u64().is_some_and(|v| v.is_power_of_two());
        if !ok {
            return Some(format!("must be a power of two, got {x}"));
        }
    }
    None
}

use crate::catalog::ParamDescriptor;

fn range_hint(pd: &ParamDescriptor) -> String {
    use crate::catalog::Constraint;
    if pd.constraint == Some(Constraint::PowerOfTwo) {
        return "use 256, 512, 1024, 2048, …".to_string();
    }
    match (pd.min, pd.max) {
        (Some(a), Some(b)) => format!("use a value from {a} to {b}"),
        (Some(a), None) => format!("use a value of at least {a}"),
        (None, Some(b)) => format!("use a value of at most {b}"),
        _ => String::new(),
    }
}

fn type_hint(ty: &ParamType) -> String {
    match ty {
        ParamType::Complex | ParamType::ComplexList => {
            "write complex numbers as strings like \"0.6+0.8j\"".to_string()
        }
        ParamType::ItemType(allowed) => format!(
            "use one of {}",
            allowed
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ParamType::Enum(words) => format!("use one of {}", words.join(", ")),
        _ => String::new(),
    }
}

/// Checks a runtime value (a `set` call or a `cmd` message) against a
/// parameter's type and range, normalising it (ints widen to floats, reals to
/// complex, strings parse as complex literals where a complex is expected).
pub fn coerce_pmt(pd: &ParamDescriptor, v: &Pmt) -> Result<Pmt, String> {
    let json = match v {
        Pmt::Complex(c) => serde_json::Value::String(format_complex(*c)),
        Pmt::Vector(TypedVec::Cf64(cs)) => serde_json::Value::Array(
            cs.iter()
                .map(|c| serde_json::Value::String(format_complex(*c)))
                .collect(),
        ),
        Pmt::Vector(TypedVec::Cf32(cs)) => serde_json::Value::Array(
            cs.iter()
                .map(|c| {
                    serde_json::Value::String(format_complex(Complex64::new(
                        c.re as f64,
                        c.im as f64,
                    )))
                })
                .collect(),
        ),
        other => other.to_json(),
    };
    let p = coerce(&pd.ty, &json)?;
    if let Some(msg) = check_range(pd, &p) {
        return Err(msg);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn complex_literals() {
        let c = |re, im| Some(Complex64::new(re, im));
        assert_eq!(parse_complex("0.6+0.8j"), c(0.6, 0.8));
        assert_eq!(parse_complex("0.6 - 0.8j"), c(0.6, -0.8));
        assert_eq!(parse_complex("-1j"), c(0.0, -1.0));
        assert_eq!(parse_complex("j"), c(0.0, 1.0));
        assert_eq!(parse_complex("2"), c(2.0, 0.0));
        assert_eq!(parse_complex("1e3-2e-3j"), c(1e3, -2e-3));
        assert_eq!(parse_complex("-1e-3+1e+2j"), c(-1e-3, 100.0));
        assert_eq!(parse_complex("abc"), None);
        assert_eq!(parse_complex("1+2i"), None);
        for v in [Complex64::new(0.6, 0.8), Complex64::new(-1.5, -2.25)] {
            assert_eq!(parse_complex(&format_complex(v)), Some(v));
        }
    }

    #[test]
    fn coercion_errors_name_the_types() {
        assert_eq!(
            coerce(&ParamType::Float, &json!("fast")).unwrap_err(),
            "expected a number, got a string \"fast\""
        );
        assert_eq!(
            coerce(&ParamType::Int, &json!(1e6)).unwrap(),
            Pmt::I64(1_000_000)
        );
        assert!(coerce(&ParamType::Int, &json!(1.5)).is_err());
        assert_eq!(
            coerce(&ParamType::Complex, &json!("0.6+0.8j")).unwrap(),
            Pmt::Complex(Complex64::new(0.6, 0.8))
        );
        assert_eq!(
            coerce(&ParamType::ItemType(vec![ItemType::F32]), &json!("cf32")).unwrap_err(),
            "type cf32 is not supported here; use one of f32"
        );
    }
}
