#!/usr/bin/env bash
# The test command of the README: every unit, integration and doc test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo nextest run --workspace --locked --no-fail-fast "$@"
cargo test --doc --workspace --locked
