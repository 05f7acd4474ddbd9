//! The health watcher's decisions, as a pure function of what was observed
//! of one segment — its pods (phase, containers, conditions, node), its
//! worker's progress (counters that move) and whether its upstream edge
//! has data — what the watcher remembers of it (kept in the FlowGraph's
//! status, so an operator restart keeps it), and the time (an input: no
//! clock is read here).
//!
//! Failures it recognises (docs/operator.md, "Health"): an evicted pod, a
//! pod on a lost node (NotReady or gone), a pod stuck terminating, a
//! container in CrashLoopBackOff, a pod not ready for longer than
//! [`Policy::not_ready_seconds`], no pod at all (deleted: its Deployment
//! makes another), and a stall: the worker runs, its upstream edge has
//! data, and its counters have not moved for [`Policy::stall_seconds`].
//! The answer is to replace the pod (delete it; the Deployment makes a new
//! one, which resumes with `--resume` from its volume) with exponential
//! backoff and a budget of attempts; the segment is degraded from the
//! failure until its counters move again, which also resets the budget.

/// The watcher's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// No progress for this long while the upstream edge has data: a stall.
    pub stall_seconds: f64,
    /// A pod not ready for this long is replaced.
    pub not_ready_seconds: f64,
    /// A pod terminating for this long is deleted with no grace period.
    pub stuck_terminating_seconds: f64,
    /// Replacements without the data flowing again in between, before the
    /// watcher gives up.
    pub budget: u32,
    /// The first backoff; each further attempt doubles it.
    pub backoff_base_seconds: f64,
    pub backoff_max_seconds: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            stall_seconds: 120.0,
            not_ready_seconds: 300.0,
            stuck_terminating_seconds: 120.0,
            budget: 5,
            backoff_base_seconds: 10.0,
            backoff_max_seconds: 300.0,
        }
    }
}

/// What was observed of one pod of the segment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodState {
    pub name: String,
    /// `status.phase` (Pending, Running, Succeeded, Failed).
    pub phase: String,
    /// `status.reason` (`Evicted`, …).
    pub reason: Option<String>,
    /// Unix seconds of `metadata.deletionTimestamp`.
    pub deleting_since: Option<f64>,
    /// The node it is bound to.
    pub node: Option<String>,
    /// The node's Ready condition: Some(false) NotReady, None unknown or
    /// gone (only read when `node` is set; see [`PodState::node_exists`]).
    pub node_ready: Option<bool>,
    /// False when the node it is bound to no longer exists.
    pub node_exists: bool,
    /// The Ready condition.
    pub ready: bool,
    /// Unix seconds since which Ready has its value (its
    /// `lastTransitionTime`, else the pod's creation).
    pub ready_since: f64,
    /// Container restarts.
    pub restart_count: i32,
    /// A container's waiting reason (`CrashLoopBackOff`, …).
    pub waiting_reason: Option<String>,
    /// The last termination's message or reason.
    pub last_termination: Option<String>,
}

/// The worker's progress, as the live loop follows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    /// The worker's state (`running`, `finished`, …); None: not reached.
    pub state: Option<String>,
    /// The last counter total seen.
    pub counters: Option<u64>,
    /// Unix seconds of the first sample.
    pub since: Option<f64>,
    /// Unix seconds when the counters last moved.
    pub last_moved: Option<f64>,
    /// The upstream edge into this segment holds data (the producer's
    /// backlog or pending messages): a worker that does not move stalls.
    /// True for a segment without input edges that runs.
    pub upstream_has_data: bool,
    /// Its own output edges hold data its consumers have not taken: it
    /// waits on them (backpressure), it is not stalled.
    pub downstream_blocked: bool,
}

impl Progress {
    /// Records a counter total read at `now`: it moved if it grew.
    pub fn observe(&mut self, counters: u64, now: f64) {
        if self.since.is_none() {
            self.since = Some(now);
        }
        // Counters that drop are a restarted worker, not progress.
        if self.counters.is_some_and(|c| counters > c) {
            self.last_moved = Some(now);
        }
        self.counters = Some(counters);
    }
}

/// What the watcher keeps of a segment (in the FlowGraph's status).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Memory {
    /// Replacements since the data last flowed (the budget's count).
    pub attempts: u32,
    /// Every replacement the watcher made.
    pub replacements: u32,
    pub last_failure: Option<String>,
    /// Unix seconds before which no replacement is made (the backoff).
    pub next_attempt_after: Option<f64>,
    /// Unix seconds since the segment is down (None: healthy).
    pub down_since: Option<f64>,
    /// The watcher gave up (the budget is spent).
    pub gave_up: bool,
}

/// The decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing wrong.
    Healthy,
    /// The data flows again after a failure: Degraded clears.
    Recovered,
    /// Down, and nothing to do yet (a pod on its way, or the backoff).
    Wait { until: Option<f64>, reason: String },
    /// Delete these pods (`force`: with no grace period: their node is
    /// gone or they are stuck terminating).
    Replace {
        pods: Vec<String>,
        force: bool,
        reason: String,
    },
    /// The budget is spent: no more replacements until the spec changes or
    /// the data flows again.
    GiveUp { reason: String },
}

/// The decision and the memory to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub verdict: Verdict,
    pub memory: Memory,
}

impl Assessment {
    /// Why the segment is degraded (None: it is not).
    pub fn degraded(&self) -> Option<String> {
        self.memory.down_since.map(|_| {
            self.memory
                .last_failure
                .clone()
                .unwrap_or_else(|| "down".into())
        })
    }
}

/// What is wrong, and what to delete for it.
struct Failure {
    reason: String,
    pods: Vec<String>,
    force: bool,
}

fn failure(policy: &Policy, pods: &[PodState], progress: &Progress, now: f64) -> Option<Failure> {
    let one = |p: &PodState, reason: String, force: bool| Failure {
        reason,
        pods: vec![p.name.clone()],
        force,
    };
    for p in pods {
        if let Some(t) = p.deleting_since {
            let lost = p.node.is_some() && (!p.node_exists || p.node_ready == Some(false));
            if lost || now - t > policy.stuck_terminating_seconds {
                return Some(one(
                    p,
                    format!(
                        "pod {} stuck terminating{}",
                        p.name,
                        if lost { " on a lost node" } else { "" }
                    ),
                    true,
                ));
            }
            continue;
        }
        if p.phase == "Failed" {
            let why = p.reason.clone().unwrap_or_else(|| "Failed".into());
            return Some(one(p, format!("pod {} {why}", p.name), false));
        }
        if let Some(n) = &p.node {
            if !p.node_exists {
                return Some(one(p, format!("node {n} of pod {} is gone", p.name), true));
            }
            if p.node_ready == Some(false) {
                return Some(one(
                    p,
                    format!("node {n} of pod {} is NotReady", p.name),
                    true,
                ));
            }
        }
        if p.waiting_reason.as_deref() == Some("CrashLoopBackOff") {
            let last = p
                .last_termination
                .as_ref()
                .map(|m| format!(": {}", m.trim()))
                .unwrap_or_default();
            return Some(one(
                p,
                format!(
                    "pod {} in CrashLoopBackOff after {} restarts{last}",
                    p.name, p.restart_count
                ),
                false,
            ));
        }
        if !p.ready && now - p.ready_since > policy.not_ready_seconds {
            return Some(one(
                p,
                format!("pod {} not ready for {:.0} s", p.name, now - p.ready_since),
                false,
            ));
        }
    }
    let live: Vec<&PodState> = pods.iter().filter(|p| p.deleting_since.is_none()).collect();
    // No pod of a worker that ran: deleted (a segment that never ran is
    // starting, not down).
    if live.is_empty() && progress.counters.is_some() {
        return Some(Failure {
            reason: "no pod: deleted, its Deployment makes another".into(),
            pods: vec![],
            force: false,
        });
    }
    if live.is_empty() {
        return None;
    }
    let running = progress.state.as_deref() == Some("running");
    let still = progress.last_moved.or(progress.since);
    if running && progress.upstream_has_data && !progress.downstream_blocked {
        if let Some(t) = still {
            if now - t > policy.stall_seconds {
                return Some(Failure {
                    reason: format!(
                        "stalled: no progress for {:.0} s while its input has data",
                        now - t
                    ),
                    pods: live.iter().map(|p| p.name.clone()).collect(),
                    force: false,
                });
            }
        }
    }
    None
}

/// Assesses one segment at `now`.
pub fn assess(
    policy: &Policy,
    pods: &[PodState],
    progress: &Progress,
    memory: &Memory,
    now: f64,
) -> Assessment {
    let mut m = memory.clone();
    let finished = matches!(progress.state.as_deref(), Some("finished"));
    let Some(f) = failure(policy, pods, progress, now).filter(|_| !finished) else {
        // Nothing wrong now: healthy once the data flows after the failure.
        let Some(down) = m.down_since else {
            return Assessment {
                verdict: Verdict::Healthy,
                memory: m,
            };
        };
        if finished || progress.last_moved.is_some_and(|t| t > down) {
            m.down_since = None;
            m.attempts = 0;
            m.next_attempt_after = None;
            m.gave_up = false;
            return Assessment {
                verdict: Verdict::Recovered,
                memory: m,
            };
        }
        return Assessment {
            verdict: Verdict::Wait {
                until: None,
                reason: "waiting for the data to flow again".into(),
            },
            memory: m,
        };
    };
    if m.down_since.is_none() {
        m.down_since = Some(now);
    }
    m.last_failure = Some(f.reason.clone());
    if f.pods.is_empty() {
        return Assessment {
            verdict: Verdict::Wait {
                until: None,
                reason: f.reason,
            },
            memory: m,
        };
    }
    if m.attempts >= policy.budget {
        m.gave_up = true;
        return Assessment {
            verdict: Verdict::GiveUp {
                reason: format!(
                    "{}; {} replacements did not bring the data back (restart budget {} spent)",
                    f.reason, m.attempts, policy.budget
                ),
            },
            memory: m,
        };
    }
    if let Some(t) = m.next_attempt_after.filter(|t| now < *t) {
        return Assessment {
            verdict: Verdict::Wait {
                until: Some(t),
                reason: format!("{} (backing off)", f.reason),
            },
            memory: m,
        };
    }
    m.attempts += 1;
    m.replacements += 1;
    let backoff = (policy.backoff_base_seconds * 2f64.powi(m.attempts as i32 - 1))
        .min(policy.backoff_max_seconds);
    m.next_attempt_after = Some(now + backoff);
    Assessment {
        verdict: Verdict::Replace {
            pods: f.pods,
            force: f.force,
            reason: f.reason,
        },
        memory: m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 100_000.0;

    /// name, pods, progress, memory, verdict, degraded after.
    type Case = (
        &'static str,
        Vec<PodState>,
        Progress,
        Memory,
        &'static str,
        bool,
    );

    fn pod() -> PodState {
        PodState {
            name: "tone-back-abc".into(),
            phase: "Running".into(),
            node: Some("n1".into()),
            node_ready: Some(true),
            node_exists: true,
            ready: true,
            ready_since: NOW - 1000.0,
            ..Default::default()
        }
    }

    fn flowing() -> Progress {
        Progress {
            state: Some("running".into()),
            counters: Some(10),
            since: Some(NOW - 1000.0),
            last_moved: Some(NOW - 5.0),
            upstream_has_data: true,
            downstream_blocked: false,
        }
    }

    fn kind(v: &Verdict) -> &'static str {
        match v {
            Verdict::Healthy => "healthy",
            Verdict::Recovered => "recovered",
            Verdict::Wait { .. } => "wait",
            Verdict::Replace { force: false, .. } => "replace",
            Verdict::Replace { force: true, .. } => "force",
            Verdict::GiveUp { .. } => "give-up",
        }
    }

    #[test]
    fn decisions_from_pod_and_worker_states() {
        let p = Policy::default();
        let down = Memory {
            down_since: Some(NOW - 60.0),
            last_failure: Some("pod x CrashLoopBackOff".into()),
            attempts: 1,
            replacements: 1,
            next_attempt_after: Some(NOW - 50.0),
            gave_up: false,
        };
        let stalled = Progress {
            last_moved: Some(NOW - 200.0),
            ..flowing()
        };
        // name, pods, progress, memory, verdict, degraded after
        let cases: Vec<Case> = vec![
            (
                "healthy",
                vec![pod()],
                flowing(),
                Memory::default(),
                "healthy",
                false,
            ),
            (
                "crash loop",
                vec![PodState {
                    ready: false,
                    ready_since: NOW - 30.0,
                    restart_count: 4,
                    waiting_reason: Some("CrashLoopBackOff".into()),
                    last_termination: Some("Error: no such device".into()),
                    ..pod()
                }],
                Progress {
                    state: None,
                    ..flowing()
                },
                Memory::default(),
                "replace",
                true,
            ),
            (
                "deleted pod",
                vec![],
                flowing(),
                Memory::default(),
                "wait",
                true,
            ),
            (
                "deleted pod, terminating",
                vec![PodState {
                    deleting_since: Some(NOW - 5.0),
                    ..pod()
                }],
                flowing(),
                Memory::default(),
                "wait",
                true,
            ),
            (
                "evicted pod",
                vec![
                    PodState {
                        phase: "Failed".into(),
                        reason: Some("Evicted".into()),
                        ..pod()
                    },
                    pod(),
                ],
                flowing(),
                Memory::default(),
                "replace",
                true,
            ),
            (
                "node NotReady",
                vec![PodState {
                    node_ready: Some(false),
                    ..pod()
                }],
                flowing(),
                Memory::default(),
                "force",
                true,
            ),
            (
                "node gone",
                vec![PodState {
                    node_exists: false,
                    node_ready: None,
                    ..pod()
                }],
                flowing(),
                Memory::default(),
                "force",
                true,
            ),
            (
                "stuck terminating on a lost node",
                vec![PodState {
                    deleting_since: Some(NOW - 5.0),
                    node_ready: Some(false),
                    ..pod()
                }],
                flowing(),
                Memory::default(),
                "force",
                true,
            ),
            (
                "not ready too long",
                vec![PodState {
                    ready: false,
                    ready_since: NOW - 400.0,
                    ..pod()
                }],
                flowing(),
                Memory::default(),
                "replace",
                true,
            ),
            (
                "starting, not ready yet",
                vec![PodState {
                    ready: false,
                    ready_since: NOW - 20.0,
                    ..pod()
                }],
                flowing(),
                Memory::default(),
                "healthy",
                false,
            ),
            (
                "stall",
                vec![pod()],
                stalled.clone(),
                Memory::default(),
                "replace",
                true,
            ),
            (
                "no progress but nothing upstream: not a stall",
                vec![pod()],
                Progress {
                    upstream_has_data: false,
                    ..stalled.clone()
                },
                Memory::default(),
                "healthy",
                false,
            ),
            (
                "no progress while its consumer does not take its output: not a stall",
                vec![pod()],
                Progress {
                    downstream_blocked: true,
                    ..stalled.clone()
                },
                Memory::default(),
                "healthy",
                false,
            ),
            (
                "a finished worker is not stalled",
                vec![pod()],
                Progress {
                    state: Some("finished".into()),
                    ..stalled.clone()
                },
                Memory::default(),
                "healthy",
                false,
            ),
            (
                "recovery: counters moved after the failure",
                vec![pod()],
                flowing(),
                down.clone(),
                "recovered",
                false,
            ),
            (
                "up but no data yet: still degraded",
                vec![pod()],
                Progress {
                    last_moved: Some(NOW - 100.0),
                    ..flowing()
                },
                down.clone(),
                "wait",
                true,
            ),
            (
                "backoff",
                vec![pod()],
                stalled.clone(),
                Memory {
                    next_attempt_after: Some(NOW + 20.0),
                    ..down.clone()
                },
                "wait",
                true,
            ),
            (
                "budget exhausted",
                vec![pod()],
                stalled.clone(),
                Memory {
                    attempts: 5,
                    ..down.clone()
                },
                "give-up",
                true,
            ),
        ];
        for (name, pods, progress, memory, want, degraded) in cases {
            let a = assess(&p, &pods, &progress, &memory, NOW);
            assert_eq!(kind(&a.verdict), want, "{name}: {a:?}");
            assert_eq!(a.degraded().is_some(), degraded, "{name}: {a:?}");
        }
    }

    #[test]
    fn replacements_back_off_exponentially_and_the_budget_resets_on_recovery() {
        let p = Policy::default();
        let pods = vec![PodState {
            waiting_reason: Some("CrashLoopBackOff".into()),
            ..pod()
        }];
        let progress = Progress {
            state: None,
            ..Default::default()
        };
        let mut m = Memory::default();
        let mut now = NOW;
        let mut at = vec![];
        while at.len() < 10 {
            let a = assess(&p, &pods, &progress, &m, now);
            m = a.memory;
            match a.verdict {
                Verdict::Replace { pods: ref d, .. } => {
                    assert_eq!(d, &vec!["tone-back-abc".to_string()]);
                    at.push(now - NOW);
                }
                Verdict::GiveUp { ref reason } => {
                    assert!(reason.contains("restart budget 5 spent"), "{reason}");
                    break;
                }
                _ => {}
            }
            now += 1.0;
        }
        // 10, 20, 40, 80 s apart; five attempts, then it gives up.
        assert_eq!(at, vec![0.0, 10.0, 30.0, 70.0, 150.0]);
        assert_eq!(m.replacements, 5);
        assert!(m.gave_up);
        // The data flows again: recovered, the budget is whole again.
        let ok = assess(&p, &[pod()], &flowing_at(now), &m, now + 1.0);
        assert_eq!(ok.verdict, Verdict::Recovered);
        assert_eq!((ok.memory.attempts, ok.memory.replacements), (0, 5));
        assert!(ok.degraded().is_none());
    }

    fn flowing_at(t: f64) -> Progress {
        Progress {
            last_moved: Some(t + 0.5),
            ..flowing()
        }
    }
}
