//! Preflight: before a worker starts anything, it checks every element of
//! its segment on this host and reports every problem at once, each with the
//! element it is about.
//!
//! What is checked, in this order:
//! 1. the FlowGraph itself, with `flowmesh validate`'s checks and messages
//!    (an unknown kind or a bad parameter does not stop the other checks);
//! 2. that the segment exists (`--segment`);
//! 3. the files the segment's blocks read (open for reading) and write (the
//!    directory exists and a probe file can be created and removed in it;
//!    an existing file can be opened for writing), by the catalog's
//!    [`BlockDescriptor::files_of`](flowmesh_model::catalog::BlockDescriptor::files_of),
//!    block by block in name order;
//! 4. the data address (`--listen`) and the control address (`--control`):
//!    bound and released again;
//! 5. the state directory (`--state-dir`): writable, or creatable.
//!
//! Paths name the element as a FlowGraph path (`spec.blocks.src.params.path`)
//! or as the command-line option with its value (`--listen 0.0.0.0:7400`).
//! Nothing is changed on the host: probe files are removed again, a missing
//! state directory is not created.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flowmesh_model::catalog::{catalog, FileAccess};
use flowmesh_model::params;
use flowmesh_model::partition::DEFAULT_SEGMENT;
use flowmesh_model::status::PreflightProblem;
use flowmesh_model::validate::{validate_text, Report};
use flowmesh_model::FlowGraphDocument;

/// What a worker is about to use on this host besides its graph.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// The segment to run.
    pub segment: &'a str,
    /// The data address (`--listen`): `IP:PORT` or `unix:PATH`.
    pub listen: &'a str,
    /// The control API's address (`--control`), unless not served (or
    /// already held by this worker).
    pub control: Option<&'a str>,
    /// The state directory (`--state-dir`), if any.
    pub state_dir: Option<&'a Path>,
}

/// Validates `text` as a FlowGraph and checks it on this host: the document
/// (when it could be read at all) and every problem found.
pub fn check_text(text: &str, host: &Host) -> (Option<FlowGraphDocument>, Vec<PreflightProblem>) {
    let (doc, report) = validate_text(text);
    let problems = check(doc.as_ref(), &report, host);
    (doc, problems)
}

/// Every problem of running `host.segment` of `doc` on this host:
/// `validation`'s problems (as `flowmesh validate` words them) followed by
/// those of the host. Without a document only the host's own resources
/// (addresses, state directory) are checked.
pub fn check(
    doc: Option<&FlowGraphDocument>,
    validation: &Report,
    host: &Host,
) -> Vec<PreflightProblem> {
    let mut out = Problems::default();
    for p in &validation.problems {
        let message = if p.hint.is_empty() {
            p.message.clone()
        } else {
            format!("{} (hint: {})", p.message, p.hint)
        };
        out.push(p.path.clone(), message);
    }
    if let Some(doc) = doc {
        check_segment(doc, host.segment, &mut out);
        check_files(doc, host.segment, &mut out);
    }
    check_address("--listen", host.listen, &mut out);
    if let Some(control) = host.control {
        if same_port(host.listen, control) {
            out.push(
                format!("--control {control}"),
                format!(
                    "the control API's address is the data address (--listen {}); give them \
                     different ports",
                    host.listen
                ),
            );
        } else {
            check_address("--control", control, &mut out);
        }
    }
    if let Some(dir) = host.state_dir {
        check_state_dir(dir, &mut out);
    }
    // Edge generations: the check that the resource's edge generations
    // agree with this worker's belongs here, after the host's own resources
    // (issue 11; done separately).
    out.0
}

/// Problems in order, each reported once.
#[derive(Default)]
struct Problems(Vec<PreflightProblem>, BTreeSet<(String, String)>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let (path, message) = (path.into(), message.into());
        if self.1.insert((path.clone(), message.clone())) {
            self.0.push(PreflightProblem { path, message });
        }
    }
}

fn segment_of(b: &flowmesh_model::spec::BlockSpec) -> &str {
    b.segment.as_deref().unwrap_or(DEFAULT_SEGMENT)
}

fn check_segment(doc: &FlowGraphDocument, segment: &str, out: &mut Problems) {
    let all: BTreeSet<&str> = doc.spec.blocks.values().map(segment_of).collect();
    if !all.contains(segment) {
        let names: Vec<&str> = all.into_iter().collect();
        out.push(
            format!("--segment {segment}"),
            format!(
                "segment `{segment}` does not exist; the FlowGraph has: {}",
                names.join(", ")
            ),
        );
    }
}

fn check_files(doc: &FlowGraphDocument, segment: &str, out: &mut Problems) {
    for (name, b) in &doc.spec.blocks {
        if segment_of(b) != segment {
            continue;
        }
        // An unknown kind was reported by validation.
        let Some(desc) = catalog().get(&b.kind) else {
            continue;
        };
        let (p, _) = params::resolve(desc, &b.params);
        for f in desc.files_of(&p) {
            let at = format!("spec.blocks.{name}.params.{}", f.param);
            let problem = match f.access {
                FileAccess::Read => readable(&f.path),
                FileAccess::Write => writable_file(&f.path),
            };
            if let Some(m) = problem {
                out.push(at, m);
            }
        }
    }
}

/// The effective user, for messages about permissions.
fn whoami() -> String {
    format!("uid {}", rustix::process::geteuid().as_raw())
}

/// Why `path` cannot be read, if it cannot.
fn readable(path: &Path) -> Option<String> {
    let shown = path.display();
    match std::fs::File::open(path) {
        Ok(f) => match f.metadata() {
            Ok(m) if m.is_dir() => Some(format!(
                "`{shown}` is a directory, not a file; name the file to read"
            )),
            Ok(_) => None,
            Err(e) => Some(format!("cannot read `{shown}`: {e}")),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => Some(format!(
            "input file `{shown}` does not exist; fix the path, or mount the volume that holds it"
        )),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Some(format!(
            "cannot read input file `{shown}`: {e}; make it readable for this worker ({})",
            whoami()
        )),
        Err(e) => Some(format!("cannot read input file `{shown}`: {e}")),
    }
}

/// Why a file cannot be written at `path`, if it cannot: its directory
/// must take a new file, and the file, if there, must open for writing.
fn writable_file(path: &Path) -> Option<String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if let Some(m) = writable_dir(&dir, "output") {
        return Some(m);
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Some(format!(
            "`{}` is a directory, not a file; name the file to write",
            path.display()
        )),
        // Opened without truncating: the file stays as it is.
        Ok(_) => match std::fs::OpenOptions::new().write(true).open(path) {
            Ok(_) => None,
            Err(e) => Some(format!(
                "cannot write `{}`: {e}; make it writable for this worker ({}) or remove it",
                path.display(),
                whoami()
            )),
        },
        Err(_) => None,
    }
}

/// Why files cannot be created in `dir`, if they cannot: it must exist, be
/// a directory, and take a probe file (created and removed again).
fn writable_dir(dir: &Path, what: &str) -> Option<String> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Some(format!(
                "{what} directory `{shown}` does not exist; create it, or mount a volume there"
            ))
        }
        Err(e) => return Some(format!("cannot use {what} directory `{shown}`: {e}")),
        Ok(m) if !m.is_dir() => {
            return Some(format!(
                "`{shown}` is not a directory; the {what} files go in a directory"
            ))
        }
        Ok(_) => {}
    }
    static N: AtomicU64 = AtomicU64::new(0);
    let probe = dir.join(format!(
        ".flowmesh-preflight-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) => Some(format!(
            "cannot write in {what} directory `{shown}`: {e}; make it writable for this worker \
             ({}), or mount a writable volume there",
            whoami()
        )),
    }
}

/// Binds `addr` (`IP:PORT`, or `unix:PATH`: its directory must take the
/// socket) and releases it again.
fn check_address(option: &str, addr: &str, out: &mut Problems) {
    let at = format!("{option} {addr}");
    if let Some(path) = addr.strip_prefix("unix:") {
        let dir = match Path::new(path).parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let Some(m) = writable_dir(&dir, "socket") {
            out.push(at, m);
        }
        return;
    }
    if let Err(e) = TcpListener::bind(addr) {
        let m = match e.kind() {
            ErrorKind::AddrInUse => format!(
                "cannot listen on {addr}: the address is in use (another process holds the \
                 port); stop it, or choose another address with {option}"
            ),
            ErrorKind::AddrNotAvailable => format!(
                "cannot listen on {addr}: no interface of this host has that address; use one \
                 it has, or 0.0.0.0"
            ),
            ErrorKind::PermissionDenied => format!(
                "cannot listen on {addr}: {e}; ports below 1024 need privileges ({}), choose \
                 a higher port with {option}",
                whoami()
            ),
            _ => format!("cannot listen on {addr}: {e}; give IP:PORT with {option}"),
        };
        out.push(at, m);
    }
}

/// Whether two `IP:PORT` addresses would take the same (non-zero) port.
fn same_port(a: &str, b: &str) -> bool {
    let port = |s: &str| {
        s.rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .filter(|&p| p != 0)
    };
    if a.starts_with("unix:") || b.starts_with("unix:") {
        return false;
    }
    let host = |s: &str| s.rsplit_once(':').map(|(h, _)| h.to_string());
    let any = |h: &str| h == "0.0.0.0" || h == "[::]";
    match (port(a), port(b), host(a), host(b)) {
        (Some(pa), Some(pb), Some(ha), Some(hb)) => pa == pb && (ha == hb || any(&ha) || any(&hb)),
        _ => false,
    }
}

/// The state directory exists and takes files, or can be created (its
/// nearest existing ancestor takes files).
fn check_state_dir(dir: &Path, out: &mut Problems) {
    let at = format!("--state-dir {}", dir.display());
    match std::fs::metadata(dir) {
        Ok(_) => {
            if let Some(m) = writable_dir(dir, "state") {
                out.push(at, m);
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let mut up = dir.parent();
            while let Some(d) = up {
                let d = if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                };
                if d.exists() {
                    if let Some(m) = writable_dir(d, "state") {
                        out.push(
                            at,
                            format!(
                                "state directory `{}` does not exist and cannot be created: {m}",
                                dir.display()
                            ),
                        );
                    }
                    return;
                }
                up = d.parent();
            }
        }
        Err(e) => out.push(at, format!("cannot use state directory: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host<'a>(segment: &'a str, listen: &'a str) -> Host<'a> {
        Host {
            segment,
            listen,
            control: None,
            state_dir: None,
        }
    }

    fn graph(blocks: &str) -> String {
        format!(
            "apiVersion: flowmesh.dev/v1alpha1\nkind: FlowGraph\nmetadata: {{name: t}}\n\
             spec:\n  blocks:\n{blocks}"
        )
    }

    #[test]
    fn an_unknown_kind_does_not_stop_the_file_checks() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.f32");
        let out = dir.path().join("no-such-dir/out.f32");
        let text = graph(&format!(
            "    src: {{kind: file_source, params: {{type: f32, path: {}}}}}\n\
             \x20   odd: {{kind: no_such_kind}}\n\
             \x20   sink: {{kind: file_sink, params: {{type: f32, path: {}}}}}\n\
             \x20 connections:\n    - [src.out, sink.in]\n",
            missing.display(),
            out.display()
        ));
        let (doc, problems) = check_text(&text, &host("default", "127.0.0.1:0"));
        assert!(doc.is_some());
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.blocks.odd.kind",
                "spec.blocks.sink.params.path",
                "spec.blocks.src.params.path"
            ],
            "{problems:#?}"
        );
        assert!(problems[1].message.contains("does not exist; create it"));
        assert!(problems[1]
            .message
            .contains(&dir.path().join("no-such-dir").display().to_string()));
        assert!(problems[2].message.contains(&missing.display().to_string()));
    }

    #[test]
    fn a_directory_is_not_an_input_file_and_a_clean_graph_has_no_problems() {
        let dir = tempfile::tempdir().unwrap();
        let text = graph(&format!(
            "    src: {{kind: file_source, params: {{type: f32, path: {}}}}}\n\
             \x20   sink: {{kind: file_sink, params: {{type: f32, path: {}}}}}\n\
             \x20 connections:\n    - [src.out, sink.in]\n",
            dir.path().display(),
            dir.path().join("out.f32").display()
        ));
        let (_, problems) = check_text(&text, &host("default", "127.0.0.1:0"));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].path, "spec.blocks.src.params.path");
        assert!(problems[0].message.contains("is a directory, not a file"));
        std::fs::write(dir.path().join("in.f32"), [0u8; 8]).unwrap();
        let text = text.replace(
            &format!("path: {}}}", dir.path().display()),
            &format!("path: {}}}", dir.path().join("in.f32").display()),
        );
        let (_, problems) = check_text(&text, &host("default", "127.0.0.1:0"));
        assert_eq!(problems, []);
        // The probe file was removed again; nothing was created.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn addresses_in_use_a_missing_segment_and_the_state_dir_are_reported() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap().to_string();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let state = file.join("state");
        let text = graph("    src: {kind: counter_source, params: {n: 10}}\n    sink: {kind: null_sink, params: {type: u64}}\n  connections:\n    - [src.out, sink.in]\n");
        let h = Host {
            segment: "dsp",
            listen: &addr,
            control: Some(&addr),
            state_dir: Some(&state),
        };
        let (_, problems) = check_text(&text, &h);
        let paths: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
        assert_eq!(
            paths,
            [
                "--segment dsp".to_string(),
                format!("--listen {addr}"),
                format!("--control {addr}"),
                format!("--state-dir {}", state.display()),
            ],
            "{problems:#?}"
        );
        assert!(problems[0].message.contains("the FlowGraph has: default"));
        assert!(problems[1].message.contains("in use"));
        assert!(problems[2].message.contains("different ports"));
        // The control address alone, in use.
        let h = Host {
            segment: "default",
            listen: "127.0.0.1:0",
            control: Some(&addr),
            state_dir: None,
        };
        let (_, problems) = check_text(&text, &h);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, format!("--control {addr}"));
        assert!(problems[0].message.contains("with --control"));
    }

    #[test]
    fn an_unreadable_file_still_checks_the_host() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap().to_string();
        let (doc, problems) = check_text("spec: [", &host("default", &addr));
        assert!(doc.is_none());
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_eq!(problems[0].path, "(file)");
        assert_eq!(problems[1].path, format!("--listen {addr}"));
    }
}
