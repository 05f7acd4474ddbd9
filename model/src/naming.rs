//! Names that other systems see: each segment's Service name (a DNS-1035
//! label) and the address template that turns a segment into a peer
//! address.
//!
//! The worker (to find its peers), the operator (to name Services) and the
//! Compose generator (to name services) all call these functions, so a
//! segment has one name everywhere, whatever characters its FlowGraph and
//! segment names hold.

use std::fmt;

/// Longest DNS-1035 label (RFC 1035; Kubernetes Service names).
pub const MAX_LABEL: usize = 63;

/// The default peer address template: the segment's Service in the
/// FlowGraph's namespace, data port 7400.
pub const DEFAULT_PEER_TEMPLATE: &str = "{service}.{namespace}.svc:7400";

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "peer template `{template}`: unknown placeholder `{{{name}}}` (use {{flowgraph}}, \
         {{segment}}, {{namespace}} or {{service}})"
    )]
    Placeholder { template: String, name: String },
    #[error("peer template `{template}`: unbalanced `{{` or `}}`")]
    Unbalanced { template: String },
    #[error(
        "peer template `{template}`: no `{{segment}}` or `{{service}}`, so every segment would \
         get the same address"
    )]
    NoSegment { template: String },
    #[error("peer template `{template}`: it must end with `:PORT` (for example `:7400`)")]
    NoPort { template: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// 64-bit FNV-1a: a stable hash (the same on every platform and build), for
/// names and contracts. Not for security.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `s` as a DNS-1035 label of at most `max` characters: lowercase letters,
/// digits and `-`, starting with a letter and ending with a letter or
/// digit. Other characters become `-` (runs of them one `-`). When the
/// cleaned name is not `s` itself (other characters, too long, or not
/// starting with a letter), 8 hex digits of a hash of `s` are appended, so
/// two names that clean to the same text still get different labels.
pub fn dns_label(s: &str, max: usize) -> String {
    let max = max.clamp(10, MAX_LABEL);
    let mut clean = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            clean.push(c);
        } else if !clean.ends_with('-') {
            clean.push('-');
        }
    }
    let mut clean = clean.trim_matches('-').to_string();
    if !clean.starts_with(|c: char| c.is_ascii_lowercase()) {
        clean.insert_str(0, "s-");
    }
    if clean == s && clean.len() <= max {
        return clean;
    }
    let tag = format!("{:08x}", fnv1a64(s.as_bytes()) as u32);
    clean.truncate(max - tag.len() - 1);
    let clean = clean.trim_end_matches('-');
    format!("{clean}-{tag}")
}

/// The Service name of a segment: `{flowgraph}-{segment}` as a DNS-1035
/// label of at most 63 characters (see [`dns_label`]).
pub fn service_name(flowgraph: &str, segment: &str) -> String {
    dns_label(&format!("{flowgraph}-{segment}"), MAX_LABEL)
}

/// A segment's name on its own as a DNS-1035 label (Compose service names).
pub fn segment_label(segment: &str) -> String {
    dns_label(segment, MAX_LABEL)
}

/// A checked peer address template, such as [`DEFAULT_PEER_TEMPLATE`] or
/// `{segment}:7400` (Compose). Placeholders: `{flowgraph}`, `{namespace}`
/// (as given), `{segment}` ([`segment_label`]) and `{service}`
/// ([`service_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTemplate(String);

enum Piece<'a> {
    Text(&'a str),
    Hole(&'a str),
}

fn pieces(t: &str) -> Result<Vec<Piece<'_>>> {
    let unbalanced = || Error::Unbalanced {
        template: t.to_string(),
    };
    let mut out = vec![];
    let mut rest = t;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(unbalanced());
        }
        let close = rest[open..].find('}').ok_or_else(unbalanced)? + open;
        if rest[open + 1..close].contains('{') {
            return Err(unbalanced());
        }
        out.push(Piece::Text(&rest[..open]));
        out.push(Piece::Hole(&rest[open + 1..close]));
        rest = &rest[close + 1..];
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

impl PeerTemplate {
    /// Checks `t`: known placeholders only, one naming the segment, and a
    /// port at the end.
    pub fn parse(t: &str) -> Result<PeerTemplate> {
        let mut names_segment = false;
        for p in pieces(t)? {
            if let Piece::Hole(name) = p {
                match name {
                    "segment" | "service" => names_segment = true,
                    "flowgraph" | "namespace" => {}
                    _ => {
                        return Err(Error::Placeholder {
                            template: t.to_string(),
                            name: name.to_string(),
                        })
                    }
                }
            }
        }
        if !names_segment {
            return Err(Error::NoSegment {
                template: t.to_string(),
            });
        }
        let port_ok = t
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok_and(|p| p > 0));
        if !port_ok {
            return Err(Error::NoPort {
                template: t.to_string(),
            });
        }
        Ok(PeerTemplate(t.to_string()))
    }

    /// The address of `segment` of `flowgraph` in `namespace`.
    pub fn render(&self, flowgraph: &str, namespace: &str, segment: &str) -> String {
        let mut out = String::new();
        for p in pieces(&self.0).expect("checked by parse") {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Hole("flowgraph") => out.push_str(flowgraph),
                Piece::Hole("namespace") => out.push_str(namespace),
                Piece::Hole("segment") => out.push_str(&segment_label(segment)),
                Piece::Hole(_) => out.push_str(&service_name(flowgraph, segment)),
            }
        }
        out
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for PeerTemplate {
    fn default() -> Self {
        PeerTemplate(DEFAULT_PEER_TEMPLATE.to_string())
    }
}

impl fmt::Display for PeerTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_dns_1035(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= MAX_LABEL
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    }

    #[test]
    fn plain_names_stay_as_they_are() {
        assert_eq!(service_name("survey", "dsp"), "survey-dsp");
        assert_eq!(segment_label("front-end"), "front-end");
    }

    #[test]
    fn other_names_are_cleaned_and_tagged_with_a_hash() {
        let a = service_name("Survey", "DSP_1");
        assert!(a.starts_with("survey-dsp-1-"), "{a}");
        assert!(is_dns_1035(&a), "{a}");
        // Two names that clean to the same text get different labels.
        assert_ne!(
            service_name("survey", "dsp_1"),
            service_name("survey", "dsp.1")
        );
        // A digit-led name gets a letter in front.
        let d = segment_label("2nd");
        assert!(d.starts_with("s-2nd-"), "{d}");
        assert!(is_dns_1035(&d));
        // Long names are cut to 63 characters, hash included.
        let long = service_name(&"spectrum-survey-".repeat(5), "analysis-with-a-long-name");
        assert_eq!(long.len(), MAX_LABEL, "{long}");
        assert!(is_dns_1035(&long), "{long}");
        assert_ne!(
            long,
            service_name(&"spectrum-survey-".repeat(5), "analysis-with-a-long-nam")
        );
    }

    #[test]
    fn templates_render_each_placeholder() {
        let t = PeerTemplate::default();
        assert_eq!(
            t.render("survey", "radio", "dsp"),
            "survey-dsp.radio.svc:7400"
        );
        let c = PeerTemplate::parse("{segment}:7400").unwrap();
        assert_eq!(
            c.render("survey", "", "Front End"),
            format!("{}:7400", segment_label("Front End"))
        );
        let f = PeerTemplate::parse("{flowgraph}.{segment}.{namespace}:9").unwrap();
        assert_eq!(f.render("fg", "ns", "a"), "fg.a.ns:9");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        let e = |t| PeerTemplate::parse(t).unwrap_err().to_string();
        assert!(e("{segmnt}:7400").contains("unknown placeholder `{segmnt}`"));
        assert!(e("{segment:7400").contains("unbalanced"));
        assert!(e("seg}:7400").contains("unbalanced"));
        assert!(e("{namespace}:7400").contains("every segment would get the same address"));
        assert!(e("{segment}").contains("must end with `:PORT`"));
        assert!(e("{segment}:0").contains("must end with `:PORT`"));
    }

    proptest! {
        #[test]
        fn every_name_makes_a_valid_distinct_label(a in ".{0,80}", b in ".{0,80}") {
            let x = service_name(&a, &b);
            prop_assert!(is_dns_1035(&x), "{x}");
            prop_assert_eq!(&x, &service_name(&a, &b));
            let y = segment_label(&b);
            prop_assert!(is_dns_1035(&y), "{y}");
            if a != b {
                prop_assert_ne!(segment_label(&a), y);
            }
        }
    }
}
