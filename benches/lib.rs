//! Benchmarks of the kdp data plane (see the `[[bench]]` targets).
