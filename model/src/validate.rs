//! Validation of FlowGraph files: every problem at once, each with its path
//! in the file and a hint.
//!
//! (Skeleton: structural checks are being completed.)

use std::fmt;

use crate::spec::{FlowGraphDocument, FlowGraphSpec};

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
pub fn validate_text(text: &str) -> (Option<FlowGraphDocument>, Report) {
    let mut report = Report::default();
    let value = match crate::spec::parse_yaml_value(text) {
        Ok(v) => v,
        Err(e) => {
            report.push("(file)", e.to_string(), "check indentation and quoting");
            return (None, report);
        }
    };
    match serde_json::from_value::<FlowGraphDocument>(value) {
        Ok(doc) => {
            let r = validate_spec(&doc.spec);
            report.problems.extend(r.problems);
            (Some(doc), report)
        }
        Err(e) => {
            report.push("(file)", e.to_string(), "");
            (None, report)
        }
    }
}

/// Validates a typed spec (blocks, parameters, connections, rates).
pub fn validate_spec(spec: &FlowGraphSpec) -> Report {
    let mut report = Report::default();
    for (name, b) in &spec.blocks {
        let Some(desc) = crate::catalog().get(&b.kind) else {
            report.push(
                format!("spec.blocks.{name}.kind"),
                format!("unknown block kind `{}`", b.kind),
                "",
            );
            continue;
        };
        let (_, problems) = crate::params::resolve(desc, &b.params);
        for (p, m, h) in problems {
            report.push(format!("spec.blocks.{name}.params.{p}"), m, h);
        }
    }
    report
}
