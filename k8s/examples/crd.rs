//! Prints the `FlowGraph` CustomResourceDefinition as YAML, generated from
//! this crate's types (`kube::CustomResourceExt::crd`).
//!
//! `scripts/sync-crds --generate` writes it to `crds/flowgraph.yaml` and
//! copies it to `deploy/` and the Helm chart:
//!
//! ```sh
//! cargo run -q -p flowmesh-k8s --example crd > crds/flowgraph.yaml
//! ```

use flowmesh_k8s::FlowGraph;
use kube::CustomResourceExt;

fn main() {
    let crd = FlowGraph::crd();
    let yaml = match serde_saphyr::to_string(&crd) {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("crd: the FlowGraph CRD does not serialize as YAML: {e}");
            std::process::exit(1);
        }
    };
    print!(
        "# The FlowGraph CustomResourceDefinition, generated from the flowmesh-k8s crate.\n\
         # Do not edit: regenerate with scripts/sync-crds --generate (which also\n\
         # updates the copies in deploy/ and helm/flowmesh/crds/).\n---\n{yaml}"
    );
}
