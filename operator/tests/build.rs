//! Build against YAML fixtures and golden files: `tests/fixtures/X.yaml`
//! (a FlowGraph resource) gives `tests/golden/X.yaml` (every child the
//! operator builds). `UPDATE_GOLDEN=1 cargo test -p flowmesh-operator --test
//! build` rewrites the golden files; review the diff.

use std::path::{Path, PathBuf};

use flowmesh_k8s::source::ResourceRef;
use flowmesh_operator::build::{build, Children, Input};
use flowmesh_operator::validate::validate;
use flowmesh_operator::Settings;
use kube::api::DynamicObject;

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(sub)
}

fn settings() -> Settings {
    Settings {
        worker_image: "flowmesh:0.1.0".into(),
        pull_policy: Some("IfNotPresent".into()),
        operator_version: "0.1.0".into(),
        network_policy: false,
        operator_namespace: "flowmesh-system".into(),
        ..Default::default()
    }
}

fn children(fixture: &str, settings: &Settings) -> Children {
    let text = std::fs::read_to_string(dir("fixtures").join(fixture)).unwrap();
    children_of(fixture, &text, settings)
}

fn children_of(fixture: &str, text: &str, settings: &Settings) -> Children {
    let v: serde_json::Value = serde_saphyr::from_str(text).unwrap();
    let obj: DynamicObject = serde_json::from_value(v).unwrap();
    let what = ResourceRef {
        namespace: obj.metadata.namespace.clone().unwrap(),
        name: obj.metadata.name.clone().unwrap(),
    };
    let valid = validate(&what, &obj).unwrap_or_else(|e| panic!("{fixture}: {}", e.message()));
    let input = Input {
        name: &what.name,
        namespace: &what.namespace,
        uid: obj.metadata.uid.as_deref().unwrap(),
        spec: &valid.fetched.doc.spec,
        partition: &valid.partition,
        kubernetes: &valid.kubernetes,
    };
    build(&input, settings).unwrap()
}

fn golden(name: &str, c: &Children) {
    let text = serde_saphyr::to_string(c).unwrap();
    let path = dir("golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        want == text,
        "{} differs from what build makes; if the change is intended, run \
         `UPDATE_GOLDEN=1 cargo test -p flowmesh-operator --test build` and review the diff.\n\
         --- made:\n{text}",
        path.display()
    );
}

#[test]
fn tone_builds_its_golden_children() {
    let c = children("tone.yaml", &settings());
    golden("tone.yaml", &c);
    // What the golden file shows, said plainly.
    assert_eq!(c.deployments.len(), 2);
    assert!(c.network_policy.is_none());
    let back = c
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("tone-back"))
        .unwrap();
    let pod = back.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(
        pod.node_selector.as_ref().unwrap()["kubernetes.io/hostname"],
        "node-7"
    );
}

#[test]
fn network_policy_when_asked() {
    let mut s = settings();
    s.network_policy = true;
    let c = children("tone.yaml", &s);
    golden("tone-network-policy.yaml", &c);
    let np = c.network_policy.unwrap();
    let ports: Vec<_> = np.spec.unwrap().ingress.unwrap()[0].ports.clone().unwrap();
    assert_eq!(ports.len(), 2);
}

#[test]
fn a_new_operator_version_changes_every_pod_template() {
    let a = children("tone.yaml", &settings());
    let mut s = settings();
    s.operator_version = "0.2.0".into();
    let b = children("tone.yaml", &s);
    for (x, y) in a.deployments.iter().zip(&b.deployments) {
        assert_ne!(
            x.spec.as_ref().unwrap().template,
            y.spec.as_ref().unwrap().template
        );
    }
}

#[test]
fn radio_settings_reach_the_pods_and_storage_makes_a_kept_claim() {
    let c = children("radio.yaml", &settings());
    golden("radio.yaml", &c);
    assert_eq!(c.claims.len(), 1);
    let claim = &c.claims[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("radio-recorder-data"));
    // Kept when the FlowGraph goes: no owner reference.
    assert!(claim.metadata.owner_references.is_none());
    let dep = |n: &str| {
        c.deployments
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(n))
            .unwrap()
            .spec
            .clone()
            .unwrap()
            .template
            .spec
            .unwrap()
    };
    let rec = dep("radio-recorder");
    let args = rec.containers[0].args.clone().unwrap();
    assert!(
        args.windows(2).any(|w| w == ["--state-dir", "/state"]),
        "{args:?}"
    );
    assert!(args.contains(&"--resume".to_string()));
    assert_eq!(
        rec.containers[0].image.as_deref(),
        Some("registry.example/flowmesh:custom")
    );
    let fe = dep("radio-frontend");
    assert_eq!(fe.host_network, Some(true));
    assert_eq!(fe.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    let caps = fe.containers[0]
        .security_context
        .clone()
        .unwrap()
        .capabilities
        .unwrap();
    assert_eq!(caps.add, Some(vec!["SYS_NICE".to_string()]));
    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
}

#[test]
fn scalable_segments_roll_with_surge_and_drain_or_leave_replicas_to_an_hpa() {
    let c = children("scalable.yaml", &settings());
    golden("scalable.yaml", &c);
    let spec = |n: &str| {
        c.deployments
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(n))
            .unwrap()
            .spec
            .clone()
            .unwrap()
    };
    let a = spec("detections-analyze");
    assert_eq!(a.replicas, Some(1));
    let strategy = a.strategy.unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let pod = a.template.spec.unwrap();
    assert_eq!(pod.termination_grace_period_seconds, Some(60));
    // No volume of state, no --resume: a replica's state is in flight.
    assert!(c.claims.is_empty());
    assert!(!pod.containers[0]
        .args
        .clone()
        .unwrap()
        .contains(&"--resume".to_string()));
    // The HPA's segment: no replicas applied, an HPA on CPU.
    assert_eq!(spec("detections-hpa").replicas, None);
    assert_eq!(spec("detections-source").replicas, Some(1));
    assert_eq!(c.hpas.len(), 1);
    let h = c.hpas[0].spec.clone().unwrap();
    assert_eq!(h.scale_target_ref.name, "detections-hpa");
    assert_eq!((h.min_replicas, h.max_replicas), (Some(2), 5));
}

#[test]
fn editing_the_replica_range_or_the_autoscaler_knobs_rolls_no_pod() {
    let text = std::fs::read_to_string(dir("fixtures").join("scalable.yaml")).unwrap();
    let a = children_of("scalable.yaml", &text, &settings());
    let edited = text
        .replace("max: 6", "max: 9")
        .replace("maxStep: 3", "maxStep: 1")
        .replace("targetCPUUtilization: 70", "targetCPUUtilization: 50");
    assert_ne!(edited, text);
    let b = children_of("scalable.yaml (edited)", &edited, &settings());
    for (x, y) in a.deployments.iter().zip(&b.deployments) {
        assert_eq!(
            x.spec.as_ref().unwrap().template,
            y.spec.as_ref().unwrap().template,
            "{:?}",
            x.metadata.name
        );
    }
    assert_ne!(a.hpas, b.hpas);
}
