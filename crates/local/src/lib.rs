//! Local mode: Knative Services on one machine.
