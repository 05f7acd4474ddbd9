//! Build: the children a FlowGraph should have, as a pure function of the
//! validated spec, its segments' Kubernetes settings and the operator's
//! [`Settings`] (tested with YAML fixtures and golden files, no cluster).
//!
//! Per segment: a Deployment (one replica, strategy `Recreate`: at most one
//! instance of a segment serves an edge at a time) running the worker in
//! cluster mode — a scalable segment (`scaling`) instead runs `min` to
//! `max` replicas with `RollingUpdate`, no volume of state (its state is in
//! flight only) and a longer grace period to drain its in-flight messages,
//! its replicas set by the operator's autoscaler, or, with `scaling.hpa`,
//! left out of the applied fields for the HorizontalPodAutoscaler built
//! next to it; a headless Service named by the model's
//! [`service_name`] with `publishNotReadyAddresses` (a restarted relay must
//! be reachable while it waits for its consumers; readiness reports health,
//! it never routes data); a PersistentVolumeClaim when the segment declares
//! storage. Per FlowGraph: the workers' ServiceAccount, a Role that reads
//! only this FlowGraph, its RoleBinding, and optionally a NetworkPolicy.
//! The token Secret is not built here: its value is random and made once
//! ([`token_secret`]).

use std::collections::BTreeMap;

use flowmesh_k8s::{SegmentKubernetes, Storage};
use flowmesh_model::change::segment_hash;
use flowmesh_model::naming::{dns_label, service_name, MAX_LABEL};
use flowmesh_model::partition::Partition;
use flowmesh_model::FlowGraphSpec;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    Capabilities, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Serialize;
use serde_json::{json, Value};

use crate::labels;
use crate::{Error, Result};

/// The worker's data port (network edges).
pub const DATA_PORT: i32 = 7400;
/// The worker's control API port.
pub const CONTROL_PORT: i32 = 9400;
/// `terminationGracePeriodSeconds` of a scalable segment's pods: a replica
/// told to stop drains its in-flight messages within it.
pub const DRAIN_GRACE_SECONDS: i64 = 60;
/// Where the token Secret is mounted in worker pods.
pub const TOKEN_DIR: &str = "/var/run/flowmesh/token";
/// The key of the token in its Secret.
pub const TOKEN_KEY: &str = "token";

/// Operator-wide settings that shape the children.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The worker image (`flowmesh:<version>` by default).
    pub worker_image: String,
    /// `imagePullPolicy` of worker containers (None: Kubernetes' default).
    pub pull_policy: Option<String>,
    /// The operator's version: in every pod template, so a new operator
    /// rolls every segment of a graph together.
    pub operator_version: String,
    /// Add a NetworkPolicy per FlowGraph that lets only its own segments
    /// and the operator reach the data and control ports.
    pub network_policy: bool,
    /// The operator's namespace (the NetworkPolicy lets its pods in).
    pub operator_namespace: String,
    /// The health watcher's stall time, restart budget and backoff.
    pub health: crate::health::Policy,
}

impl Default for Settings {
    fn default() -> Self {
        let v = env!("CARGO_PKG_VERSION");
        Settings {
            worker_image: format!("flowmesh:{v}"),
            pull_policy: None,
            operator_version: v.to_string(),
            network_policy: false,
            operator_namespace: "flowmesh-system".into(),
            health: crate::health::Policy::default(),
        }
    }
}

/// What the build stage gets: a validated FlowGraph.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    /// `metadata.uid` (owner references).
    pub uid: &'a str,
    pub spec: &'a FlowGraphSpec,
    pub partition: &'a Partition,
    /// Per segment; absent: no settings.
    pub kubernetes: &'a BTreeMap<String, SegmentKubernetes>,
}

/// Every child the FlowGraph should have (the token Secret aside).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Children {
    pub service_account: Option<ServiceAccount>,
    pub role: Option<Role>,
    pub role_binding: Option<RoleBinding>,
    pub network_policy: Option<NetworkPolicy>,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub claims: Vec<PersistentVolumeClaim>,
    /// Scalable segments with `scaling.hpa`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hpas: Vec<HorizontalPodAutoscaler>,
}

/// Name of the workers' ServiceAccount, Role and RoleBinding.
pub fn worker_account(fg: &str) -> String {
    dns_label(&format!("{fg}-worker"), MAX_LABEL)
}

/// Name of the token Secret.
pub fn token_secret_name(fg: &str) -> String {
    dns_label(&format!("{fg}-token"), MAX_LABEL)
}

/// Name of a segment's Deployment (the same as its Service).
pub fn deployment_name(fg: &str, seg: &str) -> String {
    service_name(fg, seg)
}

/// Name of a segment's PersistentVolumeClaim.
pub fn claim_name(fg: &str, seg: &str) -> String {
    dns_label(&format!("{}-data", service_name(fg, seg)), MAX_LABEL)
}

fn owner(input: &Input) -> Value {
    json!([{
        "apiVersion": flowmesh_model::spec::API_VERSION,
        "kind": flowmesh_model::spec::KIND,
        "name": input.name,
        "uid": input.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

fn meta(input: &Input, name: &str, labels: BTreeMap<String, String>) -> Value {
    json!({
        "name": name,
        "namespace": input.namespace,
        "labels": labels,
        "ownerReferences": owner(input),
    })
}

fn typed<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|source| Error::Encode {
        what: what.to_string(),
        source,
    })
}

/// The token Secret, with a value made by the caller (random, once).
pub fn token_secret(input: &Input, token: &str) -> Result<Secret> {
    typed(
        "the token Secret",
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(input, &token_secret_name(input.name), labels::common(input.name, "token")),
            "type": "Opaque",
            "stringData": {TOKEN_KEY: token},
        }),
    )
}

/// Builds every child of `input`.
pub fn build(input: &Input, settings: &Settings) -> Result<Children> {
    let fg = input.name;
    let account = worker_account(fg);
    let rbac_labels = labels::common(fg, "worker-rbac");
    let mut out = Children {
        service_account: Some(typed(
            "the workers' ServiceAccount",
            json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": meta(input, &account, rbac_labels.clone()),
                "automountServiceAccountToken": true,
            }),
        )?),
        role: Some(typed(
            "the workers' Role",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": meta(input, &account, rbac_labels.clone()),
                // Workers read their own FlowGraph and nothing else.
                "rules": [{
                    "apiGroups": ["flowmesh.dev"],
                    "resources": ["flowgraphs"],
                    "resourceNames": [fg],
                    "verbs": ["get", "list", "watch"],
                }],
            }),
        )?),
        role_binding: Some(typed(
            "the workers' RoleBinding",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": meta(input, &account, rbac_labels),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": input.namespace}],
            }),
        )?),
        ..Default::default()
    };
    if settings.network_policy {
        out.network_policy = Some(network_policy(input, settings)?);
    }
    let none = SegmentKubernetes::default();
    // The replica range and the autoscaler's knobs are not the pods'
    // business: editing them must not roll a scalable segment (only its
    // being scalable is kept in the hash).
    let mut hashed = input.spec.clone();
    for s in hashed.segments.values_mut() {
        if s.scaling.is_some() {
            s.scaling = Some(Default::default());
        }
    }
    for seg in input.partition.segments.keys() {
        let k = input.kubernetes.get(seg).unwrap_or(&none);
        let hash = segment_hash(&hashed, seg).ok_or_else(|| Error::Build {
            segment: seg.clone(),
            message: "the spec does not partition".into(),
        })?;
        let scaling = input
            .spec
            .segments
            .get(seg)
            .and_then(|s| s.scaling.as_ref());
        out.deployments
            .push(deployment(input, settings, seg, k, &hash, scaling)?);
        out.services.push(service(input, seg)?);
        if let Some(s) = k.storage.as_ref().filter(|_| scaling.is_none()) {
            out.claims.push(claim(input, seg, s)?);
        }
        if let Some((sc, h)) = scaling.and_then(|sc| sc.hpa.as_ref().map(|h| (sc, h))) {
            out.hpas.push(hpa(input, seg, sc, h)?);
        }
    }
    Ok(out)
}

fn network_policy(input: &Input, settings: &Settings) -> Result<NetworkPolicy> {
    let fg = input.name;
    typed(
        "the NetworkPolicy",
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta(input, &dns_label(&format!("{fg}-segments"), MAX_LABEL), labels::common(fg, "network-policy")),
            "spec": {
                "podSelector": {"matchLabels": {labels::FLOWGRAPH: labels::value(fg), labels::MANAGED_BY: labels::MANAGER}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        // The graph's own segments: edges and control.
                        "from": [{"podSelector": {"matchLabels": {labels::FLOWGRAPH: labels::value(fg)}}}],
                        "ports": [{"protocol": "TCP", "port": DATA_PORT}, {"protocol": "TCP", "port": CONTROL_PORT}],
                    },
                    {
                        // The operator reads the workers' /status.
                        "from": [{
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.operator_namespace}},
                            "podSelector": {"matchLabels": {labels::NAME: "flowmesh", labels::COMPONENT: "operator"}},
                        }],
                        "ports": [{"protocol": "TCP", "port": CONTROL_PORT}],
                    },
                ],
            },
        }),
    )
}

fn service(input: &Input, seg: &str) -> Result<Service> {
    let fg = input.name;
    typed(
        "a segment's Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(input, &service_name(fg, seg), labels::segment(fg, seg)),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": labels::selector(fg, seg),
                "ports": [
                    {"name": "data", "port": DATA_PORT, "targetPort": "data", "protocol": "TCP"},
                    {"name": "control", "port": CONTROL_PORT, "targetPort": "control", "protocol": "TCP"},
                ],
            },
        }),
    )
}

fn claim(input: &Input, seg: &str, s: &Storage) -> Result<PersistentVolumeClaim> {
    let fg = input.name;
    let keep = s.keep_on_delete;
    let mut m = json!({
        "name": claim_name(fg, seg),
        "namespace": input.namespace,
        "labels": labels::segment(fg, seg),
        "annotations": {labels::KEEP: keep.to_string()},
    });
    if !keep {
        m["ownerReferences"] = owner(input);
    }
    let mut spec = json!({
        "accessModes": s.access_modes,
        "resources": {"requests": {"storage": s.size.0}},
    });
    if let Some(c) = &s.storage_class_name {
        spec["storageClassName"] = json!(c);
    }
    typed(
        "a segment's PersistentVolumeClaim",
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": m, "spec": spec}),
    )
}

/// The HorizontalPodAutoscaler of a scalable segment with `scaling.hpa`
/// (on CPU: custom metrics would need an adapter).
fn hpa(
    input: &Input,
    seg: &str,
    sc: &flowmesh_model::spec::Scaling,
    h: &flowmesh_model::spec::HpaScaling,
) -> Result<HorizontalPodAutoscaler> {
    let fg = input.name;
    typed(
        "a segment's HorizontalPodAutoscaler",
        json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": meta(input, &deployment_name(fg, seg), labels::segment(fg, seg)),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(fg, seg)},
                "minReplicas": sc.min,
                "maxReplicas": sc.max,
                "metrics": [{
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": h.target_cpu_utilization}},
                }],
            },
        }),
    )
}

fn deployment(
    input: &Input,
    settings: &Settings,
    seg: &str,
    k: &SegmentKubernetes,
    hash: &str,
    scaling: Option<&flowmesh_model::spec::Scaling>,
) -> Result<Deployment> {
    let fg = input.name;
    let name = deployment_name(fg, seg);
    let mut args = vec![
        "worker".to_string(),
        "--flowgraph".into(),
        fg.into(),
        "--namespace".into(),
        input.namespace.into(),
        "--segment".into(),
        seg.into(),
        "--peer-template".into(),
        flowmesh_model::naming::DEFAULT_PEER_TEMPLATE.into(),
        "--listen".into(),
        format!("0.0.0.0:{DATA_PORT}"),
        "--control".into(),
        format!("0.0.0.0:{CONTROL_PORT}"),
        "--token-file".into(),
        format!("{TOKEN_DIR}/{TOKEN_KEY}"),
    ];
    let secret = token_secret_name(fg);
    let mut volumes = vec![
        json!({"name": "token", "secret": {"secretName": secret, "defaultMode": 0o440}}),
        json!({"name": "tmp", "emptyDir": {}}),
    ];
    let mut mounts = vec![
        json!({"name": "token", "mountPath": TOKEN_DIR, "readOnly": true}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    if let Some(s) = k.storage.as_ref().filter(|_| scaling.is_none()) {
        // A restarted pod resumes from what its files and state hold.
        args.extend(["--resume".into(), "--state-dir".into(), "/state".into()]);
        volumes.push(
            json!({"name": "storage", "persistentVolumeClaim": {"claimName": claim_name(fg, seg)}}),
        );
        mounts.push(json!({"name": "storage", "mountPath": s.mount_path, "subPath": "data"}));
        mounts.push(json!({"name": "storage", "mountPath": "/state", "subPath": "state"}));
    }
    for v in &k.volumes {
        volumes.push(serde_json::to_value(v).map_err(|source| Error::Encode {
            what: format!("volume of segment {seg}"),
            source,
        })?);
    }
    for m in &k.volume_mounts {
        mounts.push(serde_json::to_value(m).map_err(|source| Error::Encode {
            what: format!("volume mount of segment {seg}"),
            source,
        })?);
    }
    let caps = Capabilities {
        add: (!k.capabilities_add.is_empty()).then(|| k.capabilities_add.clone()),
        drop: Some(vec!["ALL".into()]),
    };
    let mut container = json!({
        "name": "worker",
        "image": k.image.as_deref().unwrap_or(&settings.worker_image),
        "args": args,
        "env": [
            {"name": "FLOWMESH_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": TOKEN_KEY}}},
            {"name": "RUST_LOG", "value": "info"},
        ],
        "ports": [
            {"name": "data", "containerPort": DATA_PORT, "protocol": "TCP"},
            {"name": "control", "containerPort": CONTROL_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "control"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "control"}, "periodSeconds": 10, "failureThreshold": 6},
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": caps,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    if let Some(p) = k
        .image_pull_policy
        .as_ref()
        .or(settings.pull_policy.as_ref())
    {
        container["imagePullPolicy"] = json!(p);
    }
    if let Some(r) = &k.resources {
        container["resources"] = serde_json::to_value(r).map_err(|source| Error::Encode {
            what: format!("resources of segment {seg}"),
            source,
        })?;
    }
    let node_selector = match input.spec.segments.get(seg) {
        Some(s) => k.node_selector(s),
        None => k.node_selector.clone(),
    };
    let mut pod = json!({
        "serviceAccountName": worker_account(fg),
        "securityContext": {"fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": if scaling.is_some() { DRAIN_GRACE_SECONDS } else { 30 },
        "containers": [container],
        "volumes": volumes,
    });
    if !node_selector.is_empty() {
        pod["nodeSelector"] = json!(node_selector);
    }
    if let Some(a) = &k.affinity {
        pod["affinity"] = serde_json::to_value(a).map_err(|source| Error::Encode {
            what: format!("affinity of segment {seg}"),
            source,
        })?;
    }
    if !k.tolerations.is_empty() {
        pod["tolerations"] =
            serde_json::to_value(&k.tolerations).map_err(|source| Error::Encode {
                what: format!("tolerations of segment {seg}"),
                source,
            })?;
    }
    if k.host_network == Some(true) {
        pod["hostNetwork"] = json!(true);
        pod["dnsPolicy"] = json!("ClusterFirstWithHostNet");
    }
    let mut spec = json!({
        "replicas": 1,
        // At most one instance of a segment serves an edge at a time.
        "strategy": {"type": "Recreate"},
    });
    if let Some(sc) = scaling {
        // Replicas share the input messages: a new one may start before an
        // old one has drained. The autoscaler overrides `replicas`; with an
        // HPA the operator does not apply it at all.
        spec = match sc.hpa {
            Some(_) => json!({}),
            None => json!({"replicas": sc.min}),
        };
        spec["strategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    }
    spec["selector"] = json!({"matchLabels": labels::selector(fg, seg)});
    spec["template"] = json!({
        "metadata": {
            "labels": labels::segment(fg, seg),
            "annotations": {
                labels::SEGMENT_HASH: hash,
                labels::OPERATOR_VERSION: settings.operator_version,
            },
        },
        "spec": pod,
    });
    typed(
        "a segment's Deployment",
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(input, &name, labels::segment(fg, seg)),
            "spec": spec,
        }),
    )
}
