//! Benchmarks of the kdp data plane. The package has no library code of its
//! own: see the criterion micro-benchmarks (`breaker.rs`, `stats.rs`,
//! `proxy.rs`, `kpa.rs`, `throttle.rs`, run by `cargo bench -p kdp-benches`),
//! the load driver `kdp-bench` in `driver/`, `scripts/bench.sh` that runs
//! both, and docs/benchmarks.md.
