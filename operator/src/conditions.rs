//! Status: the phase and the conditions of a FlowGraph from what was
//! observed, as a pure function. A condition's `lastTransitionTime`
//! changes only when its status flips; its reason and message follow the
//! latest observation.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const INVALID: &str = "Invalid";

pub use flowmesh_k8s::Phase;

/// What was observed of one segment: its Deployment, its pods, and (from
/// the live loop) its worker's `/status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentObserved {
    /// The Deployment exists.
    pub exists: bool,
    /// The replicas the Deployment has (its status; else its spec).
    pub replicas: i32,
    pub ready_replicas: i32,
    /// The Deployment's controller has not caught up with its spec, or
    /// not every replica runs the current template.
    pub rolling: bool,
    /// Container restarts summed over the segment's pods.
    pub restarts: i32,
    /// The last termination message or waiting reason of a failing pod.
    pub pod_error: Option<String>,
    /// The worker's state (`running`, `finished`, `failed`, …; None: not
    /// reached).
    pub worker_state: Option<String>,
    pub worker_error: Option<String>,
    /// The health watcher's reason while the segment is down (a failure
    /// until its data flows again).
    pub degraded: Option<String>,
    /// The health watcher's and the autoscaler's status fields (an object;
    /// null: none).
    pub extra: serde_json::Value,
}

/// The conditions `observed` implies (status, reason, message), by type.
pub fn derive(
    observed: &BTreeMap<String, SegmentObserved>,
) -> (Phase, Vec<(&'static str, bool, String, String)>) {
    let total = observed.len();
    let ready = observed.values().filter(|s| s.ready_replicas > 0).count();
    let rolling: Vec<&String> = observed
        .iter()
        .filter(|(_, s)| s.rolling || !s.exists)
        .map(|(n, _)| n)
        .collect();
    let failed: Vec<String> = observed
        .iter()
        .filter_map(|(n, s)| {
            let e = if s.worker_state.as_deref() == Some("failed") {
                Some(s.worker_error.clone().unwrap_or_else(|| "failed".into()))
            } else {
                s.degraded.clone().or_else(|| s.pod_error.clone())
            };
            e.map(|e| format!("{n}: {e}"))
        })
        .collect();
    let finished = total > 0
        && observed
            .values()
            .all(|s| s.worker_state.as_deref() == Some("finished"));
    let phase = if finished {
        Phase::Succeeded
    } else if observed
        .values()
        .any(|s| s.worker_state.as_deref() == Some("failed"))
    {
        Phase::Failed
    } else if ready == total && total > 0 {
        Phase::Running
    } else {
        Phase::Pending
    };
    let conds = vec![
        if ready == total && total > 0 {
            (
                READY,
                true,
                "AllSegmentsReady".into(),
                format!("{ready}/{total} segments ready"),
            )
        } else {
            (
                READY,
                false,
                "SegmentsNotReady".into(),
                format!("{ready}/{total} segments ready"),
            )
        },
        if rolling.is_empty() {
            (
                PROGRESSING,
                false,
                "Stable".into(),
                "every segment runs the current spec".into(),
            )
        } else {
            (
                PROGRESSING,
                true,
                "Rolling".into(),
                format!(
                    "rolling out: {}",
                    rolling
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        },
        if failed.is_empty() {
            (
                DEGRADED,
                false,
                "Healthy".into(),
                "no segment reports an error".into(),
            )
        } else {
            (DEGRADED, true, "SegmentFailing".into(), failed.join("; "))
        },
        (
            INVALID,
            false,
            "Valid".into(),
            "the spec passed validation".into(),
        ),
    ];
    (phase, conds)
}

/// The conditions of an invalid FlowGraph: `Ready=False` and
/// `Invalid=True`, both with reason `Invalid` and every problem.
pub fn invalid(message: &str) -> Vec<(&'static str, bool, String, String)> {
    vec![
        (READY, false, "Invalid".into(), message.to_string()),
        (INVALID, true, "Invalid".into(), message.to_string()),
    ]
}

/// Merges `new` into `old`: a condition keeps its `lastTransitionTime`
/// unless its status flips; conditions of other types in `old` are kept.
pub fn merge(
    old: &[Condition],
    new: Vec<(&'static str, bool, String, String)>,
    generation: i64,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = old.to_vec();
    for (ty, status, reason, message) in new {
        let status = if status { "True" } else { "False" }.to_string();
        match out.iter_mut().find(|c| c.type_ == ty) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now.clone();
                    c.status = status;
                }
                c.reason = reason;
                c.message = message;
                c.observed_generation = Some(generation);
            }
            None => out.push(Condition {
                type_: ty.to_string(),
                status,
                reason,
                message,
                observed_generation: Some(generation),
                last_transition_time: now.clone(),
            }),
        }
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn transition_time_changes_only_when_a_condition_flips() {
        let seg = |ready| SegmentObserved {
            exists: true,
            ready_replicas: ready,
            ..Default::default()
        };
        let obs = BTreeMap::from([("a".to_string(), seg(0))]);
        let (phase, c) = derive(&obs);
        assert_eq!(phase, Phase::Pending);
        let first = merge(&[], c, 1, &t("2026-01-01T00:00:00Z"));
        let ready = first.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.status, "False");
        // Nothing flipped: the same times.
        let (_, c) = derive(&obs);
        let second = merge(&first, c, 1, &t("2026-01-01T00:05:00Z"));
        assert_eq!(first, second);
        // Ready flips: only Ready's time moves.
        let obs = BTreeMap::from([("a".to_string(), seg(1))]);
        let (phase, c) = derive(&obs);
        assert_eq!(phase, Phase::Running);
        let third = merge(&second, c, 2, &t("2026-01-01T00:09:00Z"));
        let ready = third.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.last_transition_time, t("2026-01-01T00:09:00Z"));
        let deg = third.iter().find(|c| c.type_ == DEGRADED).unwrap();
        assert_eq!(deg.last_transition_time, t("2026-01-01T00:00:00Z"));
        assert_eq!(deg.observed_generation, Some(2));
    }

    #[test]
    fn finished_and_failed_workers_make_the_phase() {
        let w = |s: &str| SegmentObserved {
            exists: true,
            ready_replicas: 1,
            worker_state: Some(s.into()),
            worker_error: Some("boom".into()),
            ..Default::default()
        };
        let all =
            |a: &str, b: &str| BTreeMap::from([("a".to_string(), w(a)), ("b".to_string(), w(b))]);
        assert_eq!(derive(&all("finished", "finished")).0, Phase::Succeeded);
        assert_eq!(derive(&all("finished", "running")).0, Phase::Running);
        let (phase, c) = derive(&all("failed", "running"));
        assert_eq!(phase, Phase::Failed);
        let deg = c.iter().find(|c| c.0 == DEGRADED).unwrap();
        assert!(deg.1 && deg.3.contains("a: boom"), "{deg:?}");
    }
}
