//! The autoscaler's decisions, as a pure function of samples of a scalable
//! segment's backlog and processing rate (read from the producer's
//! `/status`, no Prometheus), the replicas the Deployment has, when it last
//! changed, and the time (an input: no clock is read here).
//!
//! The formula (docs/operator.md, "Autoscaling"): over the samples of the
//! last `lookbackSeconds`,
//!
//! ```text
//! rate_per_replica = mean(messages_per_second / replicas)   (samples with a rate)
//! want_i           = (pending_i + in_flight_i) / (rate_per_replica × targetSecondsOfBacklog)
//! up   if mean(want)  > current × (1 + TOLERANCE): to min(ceil(mean(want)), current + maxStep)
//! down if max(want)   < current × (1 − TOLERANCE): to max(ceil(max(want)), current − max(1, maxStep/2))
//! ```
//!
//! clamped to `[min, max]`, and no change within `cooldownSeconds` of the
//! last one. Scale-up follows the mean of the window; scale-down needs
//! every sample of it to agree (the largest wins), removes at most half as
//! many replicas as an up-step adds, and the dead band of ±[`TOLERANCE`]
//! keeps a load near the target from flapping. Without a processing rate
//! yet (replicas that have not acknowledged anything) and a backlog, it
//! holds; a backlog that is zero over the whole window scales down.

/// The dead band: no change while the wanted replicas are within this
/// fraction of the current ones.
pub const TOLERANCE: f64 = 0.1;

/// The knobs of `segments.<s>.scaling`, with their defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knobs {
    pub min: u32,
    pub max: u32,
    pub target_seconds: f64,
    pub cooldown_seconds: f64,
    pub lookback_seconds: f64,
    pub max_step: u32,
}

impl Knobs {
    /// The knobs of `s`, defaults filled in.
    pub fn from_spec(s: &flowmesh_model::spec::Scaling) -> Knobs {
        Knobs {
            min: s.min.max(1),
            max: s.max.max(s.min.max(1)),
            target_seconds: s.target_seconds_of_backlog.unwrap_or(5.0),
            cooldown_seconds: f64::from(s.cooldown_seconds.unwrap_or(60)),
            lookback_seconds: f64::from(s.lookback_seconds.unwrap_or(120)),
            max_step: s.max_step.unwrap_or(2).max(1),
        }
    }
}

/// One reading of the producer's output edge into the scalable segment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// Unix seconds.
    pub at: f64,
    /// Messages not yet given to any replica.
    pub pending: u64,
    /// Messages given to a replica, not yet acknowledged.
    pub in_flight: u64,
    /// Acknowledgements per second over all replicas.
    pub messages_per_second: f64,
    /// Replicas connected to the producer.
    pub replicas: u64,
}

impl Sample {
    pub fn backlog(&self) -> u64 {
        self.pending + self.in_flight
    }
}

/// What the autoscaler decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The replicas the segment should have (the current ones when it holds).
    pub replicas: u32,
    /// True when `replicas` differs from the current count.
    pub change: bool,
    /// Why, for the status and the Event.
    pub reason: String,
    /// The mean backlog over the window (for the status).
    pub backlog: u64,
}

/// Decides the replicas of one scalable segment at `now`.
/// `current`: the Deployment's replicas; `last_change`: when the
/// autoscaler last changed them (unix seconds).
pub fn decide(
    k: &Knobs,
    current: u32,
    last_change: Option<f64>,
    samples: &[Sample],
    now: f64,
) -> Decision {
    let hold = |reason: String, backlog: u64| Decision {
        replicas: current,
        change: false,
        reason,
        backlog,
    };
    let set = |to: u32, reason: String, backlog: u64| Decision {
        replicas: to,
        change: to != current,
        reason,
        backlog,
    };
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at <= now && s.at >= now - k.lookback_seconds)
        .collect();
    let backlog = if window.is_empty() {
        0
    } else {
        (window.iter().map(|s| s.backlog() as f64).sum::<f64>() / window.len() as f64).round()
            as u64
    };
    // The bounds first: a spec whose range moved is followed at once.
    if current < k.min {
        return set(
            k.min,
            format!("{current} replicas is below scaling.min {}", k.min),
            backlog,
        );
    }
    if current > k.max {
        return set(
            k.max,
            format!("{current} replicas is above scaling.max {}", k.max),
            backlog,
        );
    }
    if window.is_empty() {
        return hold(
            format!(
                "no backlog figures from the producer in the last {} s",
                k.lookback_seconds
            ),
            backlog,
        );
    }
    let rates: Vec<f64> = window
        .iter()
        .filter(|s| s.replicas > 0 && s.messages_per_second > 0.0)
        .map(|s| s.messages_per_second / s.replicas as f64)
        .collect();
    let idle = window.iter().all(|s| s.backlog() == 0);
    let wants: Vec<f64> = if idle {
        vec![0.0; window.len()]
    } else if rates.is_empty() {
        return hold(
            format!("backlog {backlog} but no processing rate yet"),
            backlog,
        );
    } else {
        let per_replica = rates.iter().sum::<f64>() / rates.len() as f64;
        window
            .iter()
            .map(|s| s.backlog() as f64 / (per_replica * k.target_seconds))
            .collect()
    };
    let mean = wants.iter().sum::<f64>() / wants.len() as f64;
    let most = wants.iter().cloned().fold(0.0, f64::max);
    let cur = f64::from(current);
    let cooling = last_change.is_some_and(|t| now < t + k.cooldown_seconds);
    if mean > cur * (1.0 + TOLERANCE) && current < k.max {
        let to = (mean.ceil() as u32).min(current + k.max_step).min(k.max);
        if cooling {
            return hold(
                format!(
                    "wants {} replicas (up) but cools down until {:.0}",
                    mean.ceil(),
                    last_change.unwrap_or(0.0) + k.cooldown_seconds
                ),
                backlog,
            );
        }
        return set(
            to,
            format!(
                "backlog {backlog} needs {:.1} replicas to clear in {} s: up from {current} to {to}",
                mean, k.target_seconds
            ),
            backlog,
        );
    }
    if most < cur * (1.0 - TOLERANCE) && current > k.min {
        let step = (k.max_step / 2).max(1);
        let to = (most.ceil() as u32)
            .max(current.saturating_sub(step))
            .max(k.min);
        if cooling {
            return hold(
                format!(
                    "wants fewer replicas but cools down until {:.0}",
                    last_change.unwrap_or(0.0) + k.cooldown_seconds
                ),
                backlog,
            );
        }
        return set(
            to,
            format!(
                "backlog at most {:.1} replicas' worth over {} s: down from {current} to {to}",
                most, k.lookback_seconds
            ),
            backlog,
        );
    }
    hold(
        format!("backlog {backlog} fits {current} replicas"),
        backlog,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// name, current, last change, samples, want replicas, want change.
    type Case = (&'static str, u32, Option<f64>, Vec<Sample>, u32, bool);

    fn knobs() -> Knobs {
        Knobs {
            min: 1,
            max: 8,
            target_seconds: 5.0,
            cooldown_seconds: 60.0,
            lookback_seconds: 120.0,
            max_step: 2,
        }
    }

    /// Samples every 30 s ending at `now`, each (backlog, rate per replica)
    /// with `replicas` connected.
    fn samples(now: f64, replicas: u64, v: &[(u64, f64)]) -> Vec<Sample> {
        v.iter()
            .enumerate()
            .map(|(i, (b, r))| Sample {
                at: now - 30.0 * (v.len() - 1 - i) as f64,
                pending: *b,
                in_flight: 0,
                messages_per_second: r * replicas as f64,
                replicas,
            })
            .collect()
    }

    #[test]
    fn decisions() {
        let k = knobs();
        let now = 10_000.0;
        // name, current, last change, samples, want replicas, want change
        let cases: Vec<Case> = vec![
            // 2 replicas at 10 msg/s each clear 100 messages in 5 s: steady.
            (
                "steady load",
                2,
                None,
                samples(now, 2, &[(100, 10.0); 5]),
                2,
                false,
            ),
            (
                "steady, within the dead band",
                2,
                None,
                samples(now, 2, &[(105, 10.0); 5]),
                2,
                false,
            ),
            // A burst: 600 messages need 12 replicas; up by at most 2.
            (
                "burst, bounded step",
                2,
                None,
                samples(now, 2, &[(600, 10.0); 5]),
                4,
                true,
            ),
            (
                "burst, up to max",
                7,
                None,
                samples(now, 7, &[(2000, 10.0); 5]),
                8,
                true,
            ),
            (
                "at max stays",
                8,
                None,
                samples(now, 8, &[(5000, 10.0); 5]),
                8,
                false,
            ),
            (
                "idle goes down by one",
                4,
                None,
                samples(now, 4, &[(0, 0.0); 5]),
                3,
                true,
            ),
            (
                "idle at min stays",
                1,
                None,
                samples(now, 1, &[(0, 0.0); 5]),
                1,
                false,
            ),
            ("below min goes to min", 0, None, vec![], 1, true),
            ("above max goes to max", 12, Some(now), vec![], 8, true),
            // Alternating bursts and calm: the mean wants 4.2 of 6 (not
            // up), the largest sample 7 (not down): it holds.
            (
                "a load that would oscillate holds",
                6,
                None,
                samples(
                    now,
                    6,
                    &[
                        (300, 10.0),
                        (50, 10.0),
                        (350, 10.0),
                        (50, 10.0),
                        (300, 10.0),
                    ],
                ),
                6,
                false,
            ),
            // Down needs every sample of the window to agree.
            (
                "one burst in the window keeps replicas",
                4,
                None,
                samples(now, 4, &[(0, 10.0), (0, 10.0), (200, 10.0), (0, 10.0)]),
                4,
                false,
            ),
            (
                "cooldown holds an up",
                2,
                Some(now - 30.0),
                samples(now, 2, &[(600, 10.0); 5]),
                2,
                false,
            ),
            (
                "cooldown over",
                2,
                Some(now - 61.0),
                samples(now, 2, &[(600, 10.0); 5]),
                4,
                true,
            ),
            (
                "cooldown holds a down",
                4,
                Some(now - 10.0),
                samples(now, 4, &[(0, 0.0); 5]),
                4,
                false,
            ),
            (
                "no rate yet holds",
                1,
                None,
                samples(now, 1, &[(300, 0.0); 3]),
                1,
                false,
            ),
            ("no samples holds", 3, None, vec![], 3, false),
            // Samples older than the lookback window do not count.
            (
                "old samples are ignored",
                2,
                None,
                samples(now - 500.0, 2, &[(600, 10.0); 5]),
                2,
                false,
            ),
        ];
        for (name, current, last, s, want, change) in cases {
            let d = decide(&k, current, last, &s, now);
            assert_eq!((d.replicas, d.change), (want, change), "{name}: {d:?}");
            assert!(!d.reason.is_empty(), "{name}");
        }
    }

    #[test]
    fn a_burst_then_calm_goes_up_fast_and_down_slowly() {
        let k = knobs();
        let mut now = 0.0;
        let mut current = 1;
        let mut last = None;
        let mut history = vec![];
        let mut all: Vec<Sample> = vec![];
        // 10 minutes of burst (1000 backlog), then 15 of calm; a decision
        // every 30 s; a replica handles 20 msg/s.
        for step in 0..50 {
            now += 30.0;
            let backlog = if step < 20 { 1000 } else { 0 };
            all.push(Sample {
                at: now,
                pending: backlog,
                in_flight: 0,
                messages_per_second: 20.0 * f64::from(current),
                replicas: u64::from(current),
            });
            let d = decide(&k, current, last, &all, now);
            if d.change {
                last = Some(now);
                current = d.replicas;
            }
            history.push(current);
        }
        // 1000 / (20 × 5) = 10 replicas wanted: capped at max 8, reached in
        // steps of at most 2 a minute apart.
        assert_eq!(history[19], 8, "{history:?}");
        for w in history.windows(2) {
            assert!(w[1] <= w[0] + 2 && w[1] + 1 >= w[0], "{history:?}");
        }
        assert_eq!(*history.last().unwrap(), 1, "{history:?}");
        let ups = history.windows(2).filter(|w| w[1] > w[0]).count();
        let downs = history.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(downs > ups, "down is slower (more steps): {history:?}");
    }
}
