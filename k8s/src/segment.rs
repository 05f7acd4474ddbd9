//! Per-segment Kubernetes settings: `spec.segments.<s>.kubernetes`.
//!
//! The model keeps this object free-form (`flowmesh run` ignores it); here it
//! is typed with the k8s-openapi types the operator puts into the segment's
//! pod, and [`check_spec`] checks every segment's object against them,
//! reporting every problem with its path (`spec.segments.<s>.kubernetes.<field>`),
//! unknown fields at any depth included. The CRD keeps the object as
//! `x-kubernetes-preserve-unknown-fields`, so the API server passes typos
//! through and this check (run by `flowmesh validate`, the operator and the
//! workers) reports them.
//!
//! ```yaml
//! segments:
//!   radio:
//!     host: pi-4                      # becomes nodeSelector kubernetes.io/hostname
//!     kubernetes:
//!       resources: {limits: {cpu: "2", memory: 512Mi}}
//!       tolerations: [{key: radio, operator: Exists, effect: NoSchedule}]
//!       storage: {size: 10Gi}          # a PVC mounted at /data, kept when the graph goes
//!       volumes: [{name: usb, hostPath: {path: /dev/bus/usb}}]
//!       volumeMounts: [{name: usb, mountPath: /dev/bus/usb}]
//!       capabilitiesAdd: [SYS_NICE]
//!       hostNetwork: false
//! ```

use std::collections::BTreeMap;

use flowmesh_model::spec::SegmentSpec;
use flowmesh_model::validate::Report;
use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The node label [`SegmentSpec::host`] selects on.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Where [`Storage`] is mounted unless `mountPath` says otherwise.
pub const DEFAULT_MOUNT_PATH: &str = "/data";
/// Volume names the operator uses in a segment's pod (the storage claim and
/// the token Secret); `volumes` may not take them.
pub const RESERVED_VOLUME_NAMES: [&str; 2] = ["flowmesh-storage", "flowmesh-token"];
/// Fields of `kubernetes`, in the order the check reports them.
pub const FIELDS: [&str; 11] = [
    "nodeSelector",
    "affinity",
    "tolerations",
    "resources",
    "image",
    "imagePullPolicy",
    "storage",
    "volumes",
    "volumeMounts",
    "capabilitiesAdd",
    "hostNetwork",
];
const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];
const ACCESS_MODES: [&str; 4] = [
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

/// Kubernetes settings of one segment's pod.
///
/// There is no `privileged` switch on purpose: a radio segment gets its
/// device through `volumes` (a `hostPath` such as `/dev/bus/usb`) or a
/// device plugin's resource under `resources.limits`, and the capabilities
/// it needs through `capabilitiesAdd`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SegmentKubernetes {
    /// Node labels the pod must match (merged with `host`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Requests and limits of the segment's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Image override (default: the operator's `--worker-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// A persistent volume for segments that write files or keep resume state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    /// Extra volumes (a device path, a config map…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Where the container mounts `volumes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Linux capabilities added to the container (`SYS_NICE`, `NET_ADMIN`…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities_add: Vec<String>,
    /// Run in the node's network namespace (radios streaming over the LAN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
}

/// A PersistentVolumeClaim for the segment, mounted at `mountPath`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Storage {
    /// Requested size, a Kubernetes quantity such as `10Gi`.
    pub size: Quantity,
    /// Storage class (default: the cluster's default class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Access modes (default `[ReadWriteOnce]`).
    #[serde(default = "default_access_modes")]
    pub access_modes: Vec<String>,
    /// Keep the claim when the FlowGraph is deleted (default true:
    /// recordings outlive the graph).
    #[serde(default = "default_true")]
    pub keep_on_delete: bool,
    /// Mount path in the container (default `/data`).
    #[serde(default = "default_mount_path")]
    pub mount_path: String,
}

fn default_access_modes() -> Vec<String> {
    vec!["ReadWriteOnce".to_string()]
}
fn default_true() -> bool {
    true
}
fn default_mount_path() -> String {
    DEFAULT_MOUNT_PATH.to_string()
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The segment's `kubernetes` object does not fit the types; the report
    /// has every problem with its path.
    #[error("spec.segments.{segment}.kubernetes is invalid:\n{report}")]
    Invalid { segment: String, report: Report },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl SegmentKubernetes {
    /// The typed settings of segment `name` (defaults when it has none).
    /// Fails with every problem [`check_segment`] finds.
    pub fn of(name: &str, segment: &SegmentSpec) -> Result<SegmentKubernetes> {
        let mut report = Report::default();
        let value = segment.kubernetes.clone().unwrap_or(Value::Null);
        if !value.is_null() {
            check_segment(name, &value, segment.host.as_deref(), &mut report);
        }
        if !report.is_ok() {
            return Err(Error::Invalid {
                segment: name.to_string(),
                report,
            });
        }
        if value.is_null() {
            return Ok(SegmentKubernetes::default());
        }
        serde_json::from_value(value).map_err(|e| {
            let mut report = Report::default();
            report.push(
                format!("spec.segments.{name}.kubernetes"),
                e.to_string(),
                "",
            );
            Error::Invalid {
                segment: name.to_string(),
                report,
            }
        })
    }

    /// The pod's node selector: `nodeSelector` plus, when the segment names
    /// a `host`, `kubernetes.io/hostname: <host>`.
    pub fn node_selector(&self, segment: &SegmentSpec) -> BTreeMap<String, String> {
        let mut sel = self.node_selector.clone();
        if let Some(h) = &segment.host {
            sel.insert(HOSTNAME_LABEL.to_string(), h.clone());
        }
        sel
    }
}

/// Checks `kubernetes` of every segment of a spec (given as the untyped
/// `spec` object of a file or resource) and adds the problems to `report`.
/// Specs whose `segments` is not a map are left to the model's validation.
pub fn check_spec(spec: &Value, report: &mut Report) {
    let Some(segments) = spec.get("segments").and_then(Value::as_object) else {
        return;
    };
    for (name, seg) in segments {
        let Some(k) = seg.get("kubernetes") else {
            continue;
        };
        let host = seg.get("host").and_then(Value::as_str);
        check_segment(name, k, host, report);
    }
}

/// Checks one segment's `kubernetes` object: unknown fields (at any depth),
/// wrong types, and the values the operator relies on. Non-objects are the
/// model's to report.
pub fn check_segment(segment: &str, value: &Value, host: Option<&str>, report: &mut Report) {
    let Some(m) = value.as_object() else {
        return;
    };
    let path = format!("spec.segments.{segment}.kubernetes");
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort_by_key(|k| {
        (
            FIELDS.iter().position(|f| f == k).unwrap_or(FIELDS.len()),
            *k,
        )
    });
    for k in keys {
        let v = &m[k];
        let fpath = format!("{path}.{k}");
        if !FIELDS.contains(&k.as_str()) {
            report.push(
                &fpath,
                format!("unknown field `{k}`"),
                fields_hint(k, &FIELDS, "kubernetes"),
            );
            continue;
        }
        if v.is_null() {
            continue;
        }
        // One field at a time, so that every field's problem is reported.
        let one = Value::Object(Map::from_iter([(k.clone(), v.clone())]));
        let typed: SegmentKubernetes = match serde_path_to_error::deserialize(one) {
            Ok(t) => t,
            Err(e) => {
                let at = e.path().to_string();
                let epath = if at == "." || at == k.as_str() {
                    fpath.clone()
                } else {
                    format!("{path}.{at}")
                };
                let hint = if k == "storage" {
                    "write e.g. `storage: {size: 10Gi}`".to_string()
                } else {
                    format!(
                        "`{k}` has the shape of the pod field of that name \
                         (kubectl explain pod.spec)"
                    )
                };
                report.push(epath, e.into_inner().to_string(), hint);
                continue;
            }
        };
        // k8s-openapi types ignore fields they do not know: what the typed
        // value does not give back was not understood.
        if let Ok(back) = serde_json::to_value(&typed) {
            if let Some(b) = back.get(k.as_str()) {
                let explain = match k.as_str() {
                    "resources" | "volumeMounts" => format!("pod.spec.containers.{k}"),
                    _ => format!("pod.spec.{k}"),
                };
                unknown_nested(v, b, &fpath, &explain, report);
            }
        }
        check_values(&typed, &fpath, report);
    }
    // Cross-field checks.
    if let Ok(typed) = serde_json::from_value::<SegmentKubernetes>(value.clone()) {
        check_mounts(&typed, &path, report);
        if let (Some(h), Some(sel)) = (host, typed.node_selector.get(HOSTNAME_LABEL)) {
            if sel != h {
                report.push(
                    format!("{path}.nodeSelector.{HOSTNAME_LABEL}"),
                    format!("selects `{sel}`, but the segment's `host` is `{h}`"),
                    "keep one of them: `host` already becomes this node selector",
                );
            }
        }
    }
}

fn fields_hint(k: &str, allowed: &[&str], what: &str) -> String {
    let list = allowed.join(", ");
    match flowmesh_model::catalog::nearest(k, allowed.iter().copied()) {
        Some(n) => format!("did you mean `{n}`? {what} takes: {list}"),
        None => format!("{what} takes: {list}"),
    }
}

/// Reports keys of `input` that the round trip through the types lost;
/// `explain` is the `kubectl explain` path of `input`'s type.
fn unknown_nested(input: &Value, back: &Value, path: &str, explain: &str, report: &mut Report) {
    match (input, back) {
        (Value::Object(i), Value::Object(b)) => {
            for (k, v) in i {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(bv) => unknown_nested(v, bv, &p, &format!("{explain}.{k}"), report),
                    None if v.is_null() => {}
                    None => report.push(
                        p,
                        format!("unknown field `{k}`"),
                        format!("`kubectl explain {explain}` lists its fields"),
                    ),
                }
            }
        }
        (Value::Array(i), Value::Array(b)) => {
            for (n, (iv, bv)) in i.iter().zip(b).enumerate() {
                unknown_nested(iv, bv, &format!("{path}[{n}]"), explain, report);
            }
        }
        _ => {}
    }
}

/// Value checks the types alone do not make.
fn check_values(t: &SegmentKubernetes, fpath: &str, report: &mut Report) {
    if let Some(p) = &t.image_pull_policy {
        if !PULL_POLICIES.contains(&p.as_str()) {
            report.push(
                fpath,
                format!("unknown image pull policy `{p}`"),
                one_of_hint(p, &PULL_POLICIES),
            );
        }
    }
    if let Some(image) = &t.image {
        if image.trim().is_empty() || image.contains(char::is_whitespace) {
            report.push(
                fpath,
                format!("`{image}` is not an image reference"),
                "write e.g. `image: registry.example/flowmesh:0.1.0`, or leave it out",
            );
        }
    }
    for (i, c) in t.capabilities_add.iter().enumerate() {
        let ok = !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_')
            && !c.starts_with("CAP_");
        if !ok {
            let fixed = c.trim_start_matches("CAP_").to_ascii_uppercase();
            report.push(
                format!("{fpath}[{i}]"),
                format!("`{c}` is not a capability name"),
                format!("capabilities are written without `CAP_`, in capitals: `{fixed}`"),
            );
        }
    }
    if let Some(r) = &t.resources {
        for (what, map) in [("limits", &r.limits), ("requests", &r.requests)] {
            for (name, q) in map.iter().flatten() {
                if !is_quantity(&q.0) {
                    report.push(
                        format!("{fpath}.{what}.{name}"),
                        format!("`{}` is not a quantity", q.0),
                        "write e.g. `500m` or `2` for cpu, `512Mi` or `1Gi` for memory",
                    );
                }
            }
        }
    }
    if let Some(s) = &t.storage {
        if !is_quantity(&s.size.0) {
            report.push(
                format!("{fpath}.size"),
                format!("`{}` is not a quantity", s.size.0),
                "write e.g. `size: 10Gi`",
            );
        }
        if s.access_modes.is_empty() {
            report.push(
                format!("{fpath}.accessModes"),
                "must name at least one access mode",
                "leave it out for `[ReadWriteOnce]`",
            );
        }
        for (i, m) in s.access_modes.iter().enumerate() {
            if !ACCESS_MODES.contains(&m.as_str()) {
                report.push(
                    format!("{fpath}.accessModes[{i}]"),
                    format!("unknown access mode `{m}`"),
                    one_of_hint(m, &ACCESS_MODES),
                );
            }
        }
        if !s.mount_path.starts_with('/') {
            report.push(
                format!("{fpath}.mountPath"),
                format!("`{}` is not an absolute path", s.mount_path),
                "write e.g. `mountPath: /data`",
            );
        }
    }
    for (i, v) in t.volumes.iter().enumerate() {
        if RESERVED_VOLUME_NAMES.contains(&v.name.as_str()) {
            report.push(
                format!("{fpath}[{i}].name"),
                format!("`{}` is a volume name the operator uses", v.name),
                "choose another name (flowmesh-* names are reserved)",
            );
        }
    }
}

fn check_mounts(t: &SegmentKubernetes, path: &str, report: &mut Report) {
    for (i, m) in t.volume_mounts.iter().enumerate() {
        if !t.volumes.iter().any(|v| v.name == m.name) {
            let names: Vec<&str> = t.volumes.iter().map(|v| v.name.as_str()).collect();
            report.push(
                format!("{path}.volumeMounts[{i}].name"),
                format!("no volume is named `{}`", m.name),
                if names.is_empty() {
                    "declare it under `volumes`".to_string()
                } else {
                    format!("`volumes` declares: {}", names.join(", "))
                },
            );
        }
    }
}

fn one_of_hint(got: &str, allowed: &[&str]) -> String {
    let list = allowed.join(", ");
    match flowmesh_model::catalog::nearest(got, allowed.iter().copied()) {
        Some(n) => format!("did you mean `{n}`? use one of {list}"),
        None => format!("use one of {list}"),
    }
}

/// A Kubernetes quantity: `[+-]number[suffix]`, the suffix a binary SI
/// (`Ki`…`Ei`), decimal SI (`m`, `k`, `M`…`E`) or exponent (`e3`).
pub fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits_end);
    let dots = num.matches('.').count();
    if num.is_empty() || num == "." || dots > 1 {
        return false;
    }
    match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => {
            true
        }
        _ => {
            let Some(exp) = suffix.strip_prefix(['e', 'E']) else {
                return false;
            };
            let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `(path, message)` of every problem for one segment named `radio`.
    fn problems(k: Value, host: Option<&str>) -> Vec<(String, String)> {
        let mut report = Report::default();
        check_segment("radio", &k, host, &mut report);
        report
            .problems
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    fn radio() -> Value {
        json!({
            "nodeSelector": {"sdr": "rtl"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "arch", "operator": "In", "values": ["arm64"]}]}]}}},
            "tolerations": [{"key": "radio", "operator": "Exists", "effect": "NoSchedule"}],
            "resources": {"limits": {"cpu": 2, "memory": "512Mi"}, "requests": {"cpu": "500m"}},
            "image": "registry.example/flowmesh:0.1.0",
            "imagePullPolicy": "IfNotPresent",
            "storage": {"size": "10Gi", "storageClassName": "local"},
            "volumes": [{"name": "usb", "hostPath": {"path": "/dev/bus/usb"}}],
            "volumeMounts": [{"name": "usb", "mountPath": "/dev/bus/usb"}],
            "capabilitiesAdd": ["SYS_NICE"],
            "hostNetwork": true
        })
    }

    #[test]
    fn a_radio_segment_checks_clean_and_types() {
        assert_eq!(problems(radio(), Some("pi-4")), vec![]);
        let seg = SegmentSpec {
            host: Some("pi-4".into()),
            kubernetes: Some(radio()),
            ..Default::default()
        };
        let k = SegmentKubernetes::of("radio", &seg).unwrap();
        let storage = k.storage.as_ref().unwrap();
        assert_eq!(storage.size.0, "10Gi");
        assert!(
            storage.keep_on_delete,
            "claims outlive the graph by default"
        );
        assert_eq!(storage.mount_path, "/data");
        assert_eq!(storage.access_modes, ["ReadWriteOnce"]);
        assert_eq!(
            k.resources.as_ref().unwrap().limits.as_ref().unwrap()["cpu"].0,
            "2"
        );
        assert_eq!(k.host_network, Some(true));
        assert_eq!(
            k.node_selector(&seg),
            BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), "pi-4".to_string()),
                ("sdr".to_string(), "rtl".to_string())
            ])
        );
    }

    #[test]
    fn no_settings_are_the_defaults() {
        let seg = SegmentSpec::default();
        assert_eq!(
            SegmentKubernetes::of("a", &seg).unwrap(),
            SegmentKubernetes::default()
        );
    }

    #[test]
    fn unknown_fields_at_every_depth_have_their_paths() {
        let mut k = radio();
        k["nodeSelectr"] = json!({"a": "b"});
        k["tolerations"][0]["efect"] = json!("NoSchedule");
        k["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"][0]["value"] = json!(["x"]);
        k["storage"]["sise"] = json!("1Gi");
        let got = problems(k, None);
        assert_eq!(
            got,
            vec![
                (
                    "spec.segments.radio.kubernetes.affinity.nodeAffinity.\
                     requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].\
                     matchExpressions[0].value"
                        .to_string(),
                    "unknown field `value`".to_string()
                ),
                (
                    "spec.segments.radio.kubernetes.tolerations[0].efect".to_string(),
                    "unknown field `efect`".to_string()
                ),
                (
                    "spec.segments.radio.kubernetes.storage.sise".to_string(),
                    "unknown field `sise`, expected one of `size`, `storageClassName`, \
                     `accessModes`, `keepOnDelete`, `mountPath`"
                        .to_string()
                ),
                (
                    "spec.segments.radio.kubernetes.nodeSelectr".to_string(),
                    "unknown field `nodeSelectr`".to_string()
                ),
            ]
        );
        let mut report = Report::default();
        let mut k = radio();
        k["nodeSelectr"] = json!({});
        k["tolerations"][0]["efect"] = json!("NoSchedule");
        check_segment("radio", &k, None, &mut report);
        let hints: Vec<&str> = report.problems.iter().map(|p| p.hint.as_str()).collect();
        assert_eq!(
            hints[0],
            "`kubectl explain pod.spec.tolerations` lists its fields"
        );
        assert!(
            hints[1].starts_with("did you mean `nodeSelector`?"),
            "{report}"
        );
    }

    #[test]
    fn wrong_types_have_their_paths_and_every_field_is_reported() {
        let mut k = radio();
        k["tolerations"] = json!({"key": "radio"});
        k["hostNetwork"] = json!("yes");
        k["volumeMounts"][0]["readOnly"] = json!("no");
        let got = problems(k, None);
        assert_eq!(
            got.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            [
                "spec.segments.radio.kubernetes.tolerations",
                "spec.segments.radio.kubernetes.volumeMounts[0].readOnly",
                "spec.segments.radio.kubernetes.hostNetwork",
            ]
        );
        assert!(got[0].1.contains("invalid type: map"), "{got:?}");
        assert!(got[2].1.contains("invalid type: string \"yes\""), "{got:?}");
    }

    #[test]
    fn values_the_operator_relies_on_are_checked() {
        let k = json!({
            "imagePullPolicy": "IfNotPresnt",
            "capabilitiesAdd": ["CAP_SYS_NICE", "net_admin"],
            "resources": {"limits": {"memory": "512MB"}},
            "storage": {"accessModes": ["ReadWriteOnce", "RWX"], "mountPath": "data", "size": "ten"},
            "volumes": [{"name": "flowmesh-token", "emptyDir": {}}],
            "volumeMounts": [{"name": "usb", "mountPath": "/dev/bus/usb"}],
            "nodeSelector": {"kubernetes.io/hostname": "pi-5"}
        });
        let got = problems(k, Some("pi-4"));
        let p = "spec.segments.radio.kubernetes";
        assert_eq!(
            got,
            vec![
                (
                    format!("{p}.resources.limits.memory"),
                    "`512MB` is not a quantity".into()
                ),
                (
                    format!("{p}.imagePullPolicy"),
                    "unknown image pull policy `IfNotPresnt`".into()
                ),
                (
                    format!("{p}.storage.size"),
                    "`ten` is not a quantity".into()
                ),
                (
                    format!("{p}.storage.accessModes[1]"),
                    "unknown access mode `RWX`".into()
                ),
                (
                    format!("{p}.storage.mountPath"),
                    "`data` is not an absolute path".into()
                ),
                (
                    format!("{p}.volumes[0].name"),
                    "`flowmesh-token` is a volume name the operator uses".into()
                ),
                (
                    format!("{p}.capabilitiesAdd[0]"),
                    "`CAP_SYS_NICE` is not a capability name".into()
                ),
                (
                    format!("{p}.capabilitiesAdd[1]"),
                    "`net_admin` is not a capability name".into()
                ),
                (
                    format!("{p}.volumeMounts[0].name"),
                    "no volume is named `usb`".into()
                ),
                (
                    format!("{p}.nodeSelector.kubernetes.io/hostname"),
                    "selects `pi-5`, but the segment's `host` is `pi-4`".into()
                ),
            ]
        );
    }

    #[test]
    fn a_missing_storage_size_is_reported() {
        let got = problems(json!({"storage": {}}), None);
        assert_eq!(
            got,
            vec![(
                "spec.segments.radio.kubernetes.storage".to_string(),
                "missing field `size`".to_string()
            )]
        );
    }

    #[test]
    fn quantities() {
        for q in [
            "1", "500m", "1.5", "10Gi", "+2k", ".5", "1e3", "2E-2", "-1Mi",
        ] {
            assert!(is_quantity(q), "{q}");
        }
        for q in ["", "Gi", "512MB", "1.2.3", "1e", "ten", "1 Gi", "."] {
            assert!(!is_quantity(q), "{q}");
        }
    }

    #[test]
    fn check_spec_visits_every_segment() {
        let spec = json!({"segments": {
            "a": {"kubernetes": {"hostNetwrk": true}},
            "b": {},
            "c": {"kubernetes": {"image": ""}},
            "d": {"kubernetes": "not a map: the model reports it"}
        }});
        let mut report = Report::default();
        check_spec(&spec, &mut report);
        let paths: Vec<&str> = report.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.segments.a.kubernetes.hostNetwrk",
                "spec.segments.c.kubernetes.image"
            ]
        );
    }
}
