//! Cross-binary tests of kdp. The library is empty; the tests are targets:
//!
//! * `deploy` (`deploy/main.rs`): the Kubernetes install overlay in
//!   `deploy/kustomize` applied to Knative's manifests, and the container spec
//!   Knative's controller gives the queue-proxy, checked against what the
//!   binaries read (env vars, ports, probes, security context, images).
//! * `e2e` (`e2e/main.rs`): real-cluster tests, ignored unless run with
//!   `--ignored` and a `KUBECONFIG` (docs/install.md).
