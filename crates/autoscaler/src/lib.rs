//! The Knative Pod Autoscaler decider.
