//! The KPA reconciler step: desired scale → replicas (activator spec §8.6).
//!
//! Last stage. Whenever the decider's status changes (or a re-check comes
//! due), [`PodAutoscaler::reconcile`] turns the desired scale into a
//! [`ReplicaDecision`]: bound it by min/max/initial scale, then, at zero,
//! decide whether scale-to-zero may happen yet (enable flag, activation
//! timeout, the stable window at zero demand, the activator being in the
//! path for the grace period, last-pod retention). It then moves the
//! PodAutoscaler's *Active* condition ([`Activity`]). The caller performs
//! the I/O: patching `/spec/replicas`, probing the activator, re-running
//! after `recheck_after`.
//!
//! Mirrors `pkg/reconciler/autoscaling/kpa/{scaler.go,kpa.go}` (`scale`,
//! `handleScaleToZero`, `computeActiveCondition`). Nothing here can fail.

use std::time::Duration;

use crate::spec::KpaParams;
use crate::time::Timestamp;

/// How soon to look again when the SKS is already proxying but the PA is
/// only now being deactivated (no SKS change will trigger a reconcile).
pub const PROXY_MODE_RECHECK: Duration = Duration::from_secs(3);

/// The PodAutoscaler's *Active* condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// `Active=Unknown`: waiting for pods ("Queued").
    Activating,
    /// `Active=True`: serving with enough ready pods.
    Active,
    /// `Active=False`: scaled (or scaling) to zero; traffic goes to the activator.
    Inactive,
}

/// The PodAutoscaler status fields the reconciler reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaStatus {
    /// The *Active* condition.
    pub activity: Activity,
    /// When [`activity`](Self::activity) last changed.
    pub since: Timestamp,
    /// Whether the scale target ever reached its initial scale.
    pub scale_target_initialized: bool,
}

/// Observations for one reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReconcileInput {
    /// The decider's desired scale (`None` = not yet known, Go's −1).
    pub desired: Option<u32>,
    /// Ready pods of the revision.
    pub ready_pods: u32,
    /// Since when the SKS has been in proxy mode with activator endpoints
    /// populated (`None` = not proxying).
    pub proxy_since: Option<Timestamp>,
    /// Result of the activator probe through the revision's public service
    /// (`K-Network-Probe: activator` answered 200 `activator`). Ignored when
    /// TBC is −1: the activator is then known to be in the path.
    pub activator_in_path: bool,
}

/// What to do with the scale target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaDecision {
    /// The scale the PA wants (drives its status and the SKS mode); `None`
    /// = unknown (Go's −1).
    pub want: Option<u32>,
    /// Whether to patch `/spec/replicas` to `want` (when it differs).
    pub apply: bool,
    /// Reconcile again after this long.
    pub recheck_after: Option<Duration>,
    /// Start the asynchronous activator probe (every 1 s, up to 45 s) and
    /// reconcile again when it finishes.
    pub probe_activator: bool,
}

/// One revision's KPA reconciler state.
#[derive(Clone, Debug)]
pub struct PodAutoscaler {
    params: KpaParams,
    status: PaStatus,
}

// === impl PodAutoscaler ===

impl PodAutoscaler {
    /// A new PodAutoscaler: activating since `now`, never initialised.
    pub fn new(params: KpaParams, now: Timestamp) -> Self {
        Self::with_status(
            params,
            PaStatus {
                activity: Activity::Activating,
                since: now,
                scale_target_initialized: false,
            },
        )
    }

    /// A PodAutoscaler resuming from a known status.
    pub fn with_status(params: KpaParams, status: PaStatus) -> Self {
        Self { params, status }
    }

    /// The parameters in use.
    pub fn params(&self) -> &KpaParams {
        &self.params
    }

    /// Replaces the parameters (config or annotations changed).
    pub fn set_params(&mut self, params: KpaParams) {
        self.params = params;
    }

    /// The current status.
    pub fn status(&self) -> PaStatus {
        self.status
    }

    /// One reconcile at `now`: decide replicas, then update the *Active*
    /// condition from the wanted scale and the ready pods.
    pub fn reconcile(&mut self, now: Timestamp, input: &ReconcileInput) -> ReplicaDecision {
        let decision = decide_replicas(&self.params, &self.status, input, now);
        self.update_activity(decision.want, input.ready_pods, now);
        decision
    }

    /// Knative's `computeActiveCondition`.
    fn update_activity(&mut self, want: Option<u32>, ready: u32, now: Timestamp) {
        let params = &self.params;
        let threshold = if self.status.scale_target_initialized {
            params.min_scale.max(1)
        } else {
            params.min_scale.max(params.initial_scale)
        };
        if ready >= threshold {
            self.status.scale_target_initialized = true;
        }
        let wants_pods = want.is_some_and(|w| w > 0);
        let current = self.status.activity;
        // Unknown demand does not wake an inactive PA.
        let keep_inactive = !wants_pods && current == Activity::Inactive;
        let next = if want == Some(0) || threshold == 0 || (ready < threshold && keep_inactive) {
            Activity::Inactive
        } else if ready < threshold {
            Activity::Activating
        } else if keep_inactive {
            current
        } else {
            Activity::Active
        };
        if next != current {
            self.status.activity = next;
            self.status.since = now;
        }
    }
}

/// The replica decision for `input.desired` given the PA's status (Knative's
/// `scaler.scale` plus `handleScaleToZero`).
pub fn decide_replicas(
    params: &KpaParams,
    status: &PaStatus,
    input: &ReconcileInput,
    now: Timestamp,
) -> ReplicaDecision {
    let keep = |want| ReplicaDecision {
        want,
        apply: false,
        recheck_after: None,
        probe_activator: false,
    };
    let apply = |want| ReplicaDecision {
        want: Some(want),
        apply: true,
        ..keep(None)
    };

    let activating = status.activity == Activity::Activating;
    // Metrics are not being collected yet: leave replicas alone. (Knative
    // would try to patch −1 while activating with no lower bound; the API
    // server rejects that, so we keep the replicas instead.)
    let bounded = match input.desired {
        Some(desired) => bound(params, status, desired),
        None if activating => match bound(params, status, 0) {
            0 => return keep(None),
            min => min,
        },
        None => return keep(None),
    };
    if bounded != 0 {
        return apply(bounded);
    }

    // Scale to zero only when enabled, and only once it is safe.
    if !params.enable_scale_to_zero {
        return apply(1);
    }
    let in_state_for = now.saturating_duration_since(status.since);
    match status.activity {
        Activity::Activating => {
            // Stuck activating past the progress deadline: give up.
            if in_state_for > params.activation_timeout {
                apply(0)
            } else {
                ReplicaDecision {
                    recheck_after: Some(params.activation_timeout),
                    ..keep(None)
                }
            }
        }
        Activity::Active => {
            if in_state_for >= params.stable_window {
                // Mark the PA inactive (SKS to proxy); scale on a later pass.
                ReplicaDecision {
                    recheck_after: input.proxy_since.map(|_| PROXY_MODE_RECHECK),
                    ..keep(Some(0))
                }
            } else {
                // Keep one pod for the rest of the idle period.
                ReplicaDecision {
                    recheck_after: Some(params.stable_window - in_state_for),
                    ..apply(1)
                }
            }
        }
        Activity::Inactive => {
            let in_path = params.target_burst_capacity == -1.0 || input.activator_in_path;
            if !in_path {
                return ReplicaDecision {
                    probe_activator: true,
                    ..keep(Some(0))
                };
            }
            let retention = params.scale_to_zero_pod_retention;
            let grace = params.scale_to_zero_grace_period;
            if in_state_for >= grace.max(retention) {
                return apply(0);
            }
            // Last-pod retention is a hard deadline, whatever the network.
            if in_state_for < retention {
                return ReplicaDecision {
                    recheck_after: Some(retention - in_state_for),
                    ..keep(Some(0))
                };
            }
            // The activator has been in the path for the grace period.
            let proxy_for = input
                .proxy_since
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
            if proxy_for >= grace {
                apply(0)
            } else {
                ReplicaDecision {
                    recheck_after: Some(grace - proxy_for),
                    ..keep(Some(0))
                }
            }
        }
    }
}

/// Applies min (raised to the initial scale until first reached) and max.
fn bound(params: &KpaParams, status: &PaStatus, desired: u32) -> u32 {
    let mut min = params.min_scale;
    if params.initial_scale > 1 && !status.scale_target_initialized && params.reachable {
        min = min.max(params.initial_scale);
    }
    if desired < min {
        min
    } else if params.max_scale != 0 && desired > params.max_scale {
        params.max_scale
    } else {
        desired
    }
}

#[cfg(test)]
mod tests;
