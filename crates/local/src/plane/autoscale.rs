//! One revision's KPA: a [`Decider`] and a [`PodAutoscaler`] from `kdp-autoscaler`.
//!
//! Beside the request path. The plane records stats here every second (the router's own
//! concurrency as the activator's stat, plus every ready replica's queue-proxy snapshot) and on
//! a poke, and calls [`Kpa::step`] every 2 s (or at once after a poke): the decider turns the
//! stats into a desired scale, the reconciler into a replica count ([`Step`]). The parameters
//! come from the model's `config-autoscaler` data and the revision's annotations and
//! `containerConcurrency`; a revision that no longer receives traffic is *unreachable* (min-scale
//! forced to 0), as in Knative. Nothing here does I/O or fails.

use kdp_autoscaler::{
    Buckets, Config, Decider, DeciderSpec, KpaParams, PodAutoscaler, ReconcileInput,
    RevisionAnnotations, Timestamp,
};
use kdp_stats::Stat;

use crate::revision::Revision;

/// One revision's autoscaler state.
#[derive(Debug)]
pub(super) struct Kpa {
    config: Config,
    annotations: RevisionAnnotations,
    container_concurrency: u32,
    reachable: bool,
    decider: Decider,
    pa: PodAutoscaler,
    /// The stable-window concurrency, kept only to explain decisions in lifecycle lines (the
    /// decider does not expose its windows).
    shown: Buckets,
    /// Since when the activator (our router) has been the only way in (SKS proxy mode, §8.7).
    proxy_since: Option<Timestamp>,
}

/// The outcome of one [`Kpa::step`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Step {
    /// The replicas the PodAutoscaler wants; `None` while unknown.
    pub want: Option<u32>,
    /// Whether the replica count must be changed to `want`.
    pub apply: bool,
    /// Stable-window average concurrency (for the lifecycle line).
    pub stable: f64,
    /// Target concurrency per replica.
    pub target: f64,
    /// Whether the decider is in panic mode.
    pub panicking: bool,
}

// === impl Kpa ===

impl Kpa {
    /// The KPA for `revision`, with `ready` replicas ready now.
    pub(super) fn new(
        config: Config,
        revision: &Revision,
        reachable: bool,
        now: Timestamp,
    ) -> Self {
        let annotations = RevisionAnnotations::parse(&revision.annotations);
        let container_concurrency =
            u32::try_from(revision.container_concurrency).unwrap_or(u32::MAX);
        let spec = DeciderSpec::resolve(&config, &annotations, container_concurrency, reachable);
        let shown = Buckets::new(spec.stable_window, spec.aggregation);
        let params = KpaParams::resolve(&config, &annotations, reachable);
        Self {
            decider: Decider::new(spec, 0, now),
            pa: PodAutoscaler::new(params, now),
            shown,
            config,
            annotations,
            container_concurrency,
            reachable,
            proxy_since: Some(now),
        }
    }

    /// Applies a new `config-autoscaler` or reachability; a no-op when neither changed.
    pub(super) fn reconfigure(&mut self, config: &Config, reachable: bool) {
        if self.config == *config && self.reachable == reachable {
            return;
        }
        self.config = config.clone();
        self.reachable = reachable;
        let spec = DeciderSpec::resolve(
            &self.config,
            &self.annotations,
            self.container_concurrency,
            reachable,
        );
        if spec.stable_window.as_secs() != self.shown.window_secs()
            || spec.aggregation != self.shown.algorithm()
        {
            self.shown = Buckets::new(spec.stable_window, spec.aggregation);
        }
        self.decider.update(spec);
        self.pa.set_params(KpaParams::resolve(
            &self.config,
            &self.annotations,
            reachable,
        ));
    }

    /// Replicas a new revision starts with (Knative creates its Deployment at initial scale).
    pub(super) fn initial_scale(&self) -> u32 {
        self.pa.params().initial_scale
    }

    /// Whether the revision receives traffic.
    pub(super) fn reachable(&self) -> bool {
        self.reachable
    }

    /// Whether the PodAutoscaler is *Inactive* (scaled, or scaling, to zero).
    #[cfg(test)]
    pub(super) fn inactive(&self) -> bool {
        self.pa.status().activity == kdp_autoscaler::Activity::Inactive
    }

    /// Records one stat; true when it is a poke that should run [`step`](Self::step) now.
    pub(super) fn record(&mut self, at: Timestamp, stat: &Stat) -> bool {
        self.shown.record(
            at,
            stat.average_concurrent_requests - stat.average_proxied_concurrent_requests,
        );
        self.decider.record(at, stat)
    }

    /// One scaler tick and reconcile with `ready` replicas ready.
    pub(super) fn step(&mut self, now: Timestamp, ready: u32) -> Step {
        // NoData (nothing recorded yet while pods are scraped) leaves the status as it was,
        // exactly as Knative's multiscaler does.
        let _ = self.decider.scale(now, ready);
        let status = self.decider.status();
        let input = ReconcileInput {
            desired: status.desired_scale,
            ready_pods: ready,
            proxy_since: self.proxy_since,
            // The router is the activator and is always in the path.
            activator_in_path: true,
        };
        let decision = self.pa.reconcile(now, &input);
        // SKS mode for the next round: Serve when replicas are wanted and the burst capacity
        // is covered, Proxy otherwise (§8.7). Locally the router stays in the path either way;
        // the mode only times scale-to-zero as a cluster would.
        let serve =
            ready > 0 && decision.want.is_some_and(|w| w > 0) && status.excess_burst_capacity >= 0;
        self.proxy_since = if serve {
            None
        } else {
            self.proxy_since.or(Some(now))
        };
        Step {
            want: decision.want,
            apply: decision.apply,
            stable: self.shown.window_average(now),
            target: self.decider.spec().target_value,
            panicking: self.decider.is_panicking(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::revision::RevisionKey;

    fn revision(annotations: &[(&str, &str)], cc: u64) -> Revision {
        Revision {
            key: RevisionKey {
                namespace: "default".into(),
                name: "hello-00001".into(),
            },
            service: "hello".into(),
            generation: 1,
            labels: BTreeMap::new(),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            container_concurrency: cc,
            timeout: Duration::from_secs(300),
            response_start_timeout: None,
            idle_timeout: None,
            program: "/bin/true".into(),
            args: Vec::new(),
            env: Vec::new(),
            working_dir: ".".into(),
            port: None,
            readiness_probe: None,
            image: None,
            source: crate::manifest::Source {
                file: "hello.yaml".into(),
                document: 1,
            },
        }
    }

    fn stat(concurrency: f64) -> Stat {
        Stat {
            pod_name: "activator".into(),
            average_concurrent_requests: concurrency,
            request_count: concurrency,
            ..Stat::default()
        }
    }

    fn short_windows() -> Config {
        Config::from_map(&BTreeMap::from([
            ("stable-window".to_owned(), "6s".to_owned()),
            ("scale-to-zero-grace-period".to_owned(), "6s".to_owned()),
        ]))
        .unwrap()
    }

    #[test]
    fn scales_with_concurrency_at_the_target() {
        let t0 = Timestamp::from_unix_secs(1_000);
        let mut kpa = Kpa::new(Config::default(), &revision(&[], 10), true, t0);
        assert_eq!(kpa.initial_scale(), 1);
        for s in 0..6 {
            kpa.record(t0 + Duration::from_secs(s), &stat(25.0));
        }
        let step = kpa.step(t0 + Duration::from_secs(6), 1);
        assert_eq!(step.target, 7.0);
        assert_eq!(step.want, Some(4), "{step:?}");
        assert!(step.apply);
        assert!(step.panicking, "25 / 7 ≥ 2 × 1 ready replica");
    }

    #[test]
    fn scales_to_zero_after_the_window_and_grace() {
        let t0 = Timestamp::from_unix_secs(1_000);
        let mut kpa = Kpa::new(short_windows(), &revision(&[], 0), true, t0);
        let mut zero_at = None;
        for s in 0..40 {
            let now = t0 + Duration::from_secs(s);
            kpa.record(now, &stat(if s < 4 { 1.0 } else { 0.0 }));
            if s % 2 == 0 {
                let step = kpa.step(now, 1);
                if step.apply && step.want == Some(0) {
                    zero_at = Some(s);
                    break;
                }
            }
        }
        let zero_at = zero_at.expect("scaled to zero");
        assert!((10..=20).contains(&zero_at), "scaled to zero at {zero_at}s");
        assert!(kpa.inactive());
        // A poke wakes it: one request in flight → one replica.
        assert!(kpa.record(t0 + Duration::from_secs(41), &stat(1.0)));
        let step = kpa.step(t0 + Duration::from_secs(41), 0);
        assert_eq!((step.want, step.apply), (Some(1), true));
    }

    #[test]
    fn min_scale_holds_and_unreachable_drops_it() {
        let t0 = Timestamp::from_unix_secs(1_000);
        let rev = revision(&[("autoscaling.knative.dev/min-scale", "2")], 0);
        let mut kpa = Kpa::new(short_windows(), &rev, true, t0);
        kpa.record(t0, &stat(0.0));
        let step = kpa.step(t0 + Duration::from_secs(1), 0);
        assert_eq!((step.want, step.apply), (Some(2), true));
        kpa.reconfigure(&short_windows(), false);
        assert!(!kpa.reachable());
        let step = kpa.step(t0 + Duration::from_secs(3), 2);
        assert_ne!(step.want, Some(2), "{step:?}");
    }

    #[test]
    fn scale_to_zero_can_be_disabled() {
        let t0 = Timestamp::from_unix_secs(1_000);
        let mut config = short_windows();
        config.enable_scale_to_zero = false;
        let mut kpa = Kpa::new(config, &revision(&[], 0), true, t0);
        for s in 0..60 {
            let now = t0 + Duration::from_secs(s);
            kpa.record(now, &stat(0.0));
            let step = kpa.step(now, 1);
            assert_ne!(step.want, Some(0), "at {s}s");
        }
    }
}
