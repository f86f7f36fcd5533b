#!/usr/bin/env bash
# Installs what kdp's tests and CI need on a fresh Debian machine.
# Idempotent; safe to run again.
set -euo pipefail

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest"
    cargo install --locked cargo-nextest
fi
if ! cargo deny --version >/dev/null 2>&1; then
    echo "installing cargo-deny"
    cargo install --locked cargo-deny
fi
