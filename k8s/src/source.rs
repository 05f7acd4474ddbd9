//! Reading and watching one FlowGraph, as a worker in cluster mode does.
//!
//! The object is read untyped and its `spec` goes through the same
//! validation as `flowmesh validate` ([`crate::validate_text`]: the model's
//! checks and the segments' Kubernetes settings, every problem with its
//! path), so a
//! worker reports a bad spec the way the CLI does instead of failing to
//! decode it. [`watch`] follows the object with kube's watcher, which
//! resumes a dropped watch (re-listing when the resource version is too
//! old) with backoff; a deleted object is an [`Event::Deleted`].

use flowmesh_model::validate::Report;
use flowmesh_model::FlowGraphDocument;
use futures::{Stream, StreamExt};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;

use crate::resource::FlowGraph;
use crate::validate_text;

/// Which FlowGraph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlowGraph {}/{}", self.namespace, self.name)
    }
}

/// A FlowGraph read from the API and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub doc: FlowGraphDocument,
    /// `metadata.generation`: changes with every edit of the spec.
    pub generation: i64,
    pub resource_version: String,
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{0} does not exist: create it (kubectl apply -f FILE), or check --flowgraph and --namespace"
    )]
    NotFound(ResourceRef),
    #[error("reading {what}: {source}")]
    Api {
        what: ResourceRef,
        #[source]
        source: kube::Error,
    },
    #[error("{what} is invalid ({} problem{}):\n{text}", report.problems.len(), if report.problems.len() == 1 { "" } else { "s" })]
    Invalid {
        what: ResourceRef,
        report: Report,
        /// One line per problem, `path: message (hint)`, as `flowmesh validate` prints them.
        text: String,
        /// The spec as far as it converts to the typed document (an unknown
        /// kind or a bad parameter still does), for checks that go on
        /// past the first problem (a worker's preflight).
        doc: Option<Box<FlowGraphDocument>>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The untyped API of FlowGraphs in a namespace.
pub fn api(client: Client, namespace: &str) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<FlowGraph>(&());
    Api::namespaced_with(client, namespace, &ar)
}

/// Validates an object read from the API.
pub fn parse(what: &ResourceRef, obj: &DynamicObject) -> Result<Fetched> {
    let doc = serde_json::json!({
        "apiVersion": flowmesh_model::spec::API_VERSION,
        "kind": flowmesh_model::spec::KIND,
        "metadata": {"name": what.name, "namespace": what.namespace},
        "spec": obj.data.get("spec").cloned().unwrap_or(serde_json::Value::Null),
    });
    // JSON is YAML: the same parser and checks as a file.
    let (parsed, report) = validate_text(&doc.to_string());
    match parsed {
        Some(doc) if report.is_ok() => Ok(Fetched {
            doc,
            generation: obj.metadata.generation.unwrap_or(0),
            resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
        }),
        _ => {
            let text = report
                .problems
                .iter()
                .map(|p| format!("  {}: {} ({})", p.path, p.message, p.hint))
                .collect::<Vec<_>>()
                .join("\n");
            Err(Error::Invalid {
                what: what.clone(),
                report,
                text,
                doc: parsed.map(Box::new),
            })
        }
    }
}

/// Reads and validates the FlowGraph.
pub async fn fetch(client: &Client, what: &ResourceRef) -> Result<Fetched> {
    let obj = api(client.clone(), &what.namespace)
        .get_opt(&what.name)
        .await
        .map_err(|source| Error::Api {
            what: what.clone(),
            source,
        })?
        .ok_or_else(|| Error::NotFound(what.clone()))?;
    parse(what, &obj)
}

/// A change of the watched FlowGraph.
#[derive(Debug)]
pub enum Event {
    /// The object as it now is (validated, or why not).
    Applied(Box<Result<Fetched>>),
    /// The object was deleted (or is gone after the watch resumed).
    Deleted,
}

/// Follows the FlowGraph: an [`Event::Applied`] for its current state and
/// every change, [`Event::Deleted`] when it goes. Errors of the watch itself
/// are logged and retried with backoff; the stream does not end by itself.
pub fn watch(client: Client, what: ResourceRef) -> impl Stream<Item = Event> + Send {
    let config = watcher::Config::default().fields(&format!("metadata.name={}", what.name));
    let mut seen_in_init = false;
    watcher(api(client, &what.namespace), config)
        .default_backoff()
        .filter_map(move |e| {
            let out = match e {
                Ok(watcher::Event::Init) => {
                    seen_in_init = false;
                    None
                }
                Ok(watcher::Event::InitApply(obj)) => {
                    seen_in_init = true;
                    Some(Event::Applied(Box::new(parse(&what, &obj))))
                }
                // A (re)list found nothing: the object is gone.
                Ok(watcher::Event::InitDone) if !seen_in_init => Some(Event::Deleted),
                Ok(watcher::Event::InitDone) => None,
                Ok(watcher::Event::Apply(obj)) => {
                    Some(Event::Applied(Box::new(parse(&what, &obj))))
                }
                Ok(watcher::Event::Delete(_)) => Some(Event::Deleted),
                Err(e) => {
                    tracing::warn!("watching {what}: {e} (retrying)");
                    None
                }
            };
            std::future::ready(out)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;
    use serde_json::json;

    #[test]
    fn parse_reports_the_segments_kubernetes_settings_too() {
        let what = ResourceRef {
            namespace: "radio".into(),
            name: "tone".into(),
        };
        let mut spec = json!({
            "blocks": {
                "src": {"kind": "null_source", "params": {"type": "f32"}, "segment": "front"},
                "sink": {"kind": "null_sink", "params": {"type": "f32"}}
            },
            "connections": [["src.out", "sink.in"]],
            "segments": {"front": {"kubernetes": {"hostNetwork": true}}}
        });
        let obj = |spec: &serde_json::Value| DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name: Some("tone".into()),
                generation: Some(3),
                ..Default::default()
            },
            data: json!({ "spec": spec }),
        };
        let fetched = parse(&what, &obj(&spec)).unwrap();
        assert_eq!(fetched.generation, 3);
        spec["segments"]["front"]["kubernetes"]["hostNetwrok"] = json!(true);
        let Err(Error::Invalid { report, text, .. }) = parse(&what, &obj(&spec)) else {
            panic!("a typo in kubernetes is a problem");
        };
        assert_eq!(
            report.problems[0].path,
            "spec.segments.front.kubernetes.hostNetwrok"
        );
        assert!(text.contains("did you mean `hostNetwork`?"), "{text}");
    }
}
