#!/usr/bin/env bash
# Installs what kdp's tests and benchmarks need on a fresh Debian machine.
# Idempotent; safe to run again.
set -euo pipefail

need=()
command -v cargo-nextest >/dev/null 2>&1 || cargo nextest --version >/dev/null 2>&1 || need+=(nextest)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing cargo-nextest"
    cargo install --locked cargo-nextest
fi
