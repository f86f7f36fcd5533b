#!/usr/bin/env bash
# The benchmark suite of docs/benchmarks.md: criterion micro-benchmarks, then
# the load driver against release builds of the queue-proxy, the activator
# and `kdp`.
#
#   scripts/bench.sh            full run (driver about 4 minutes on 2 cores)
#   scripts/bench.sh --quick    fast run (driver under a minute)
#   scripts/bench.sh --no-micro | --no-load    one half only
#
# Any other argument goes to the driver (`kdp-bench --help`). Results land in
# bench-results/ (git-ignored): latest.md, latest.json and timestamped copies;
# criterion's reports are in target/criterion/.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
micro=1
load=1
driver_args=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=(--quick) ;;
        --no-micro) micro=0 ;;
        --no-load) load=0 ;;
        *) driver_args+=("$arg") ;;
    esac
done

# The load driver holds 1000+ sockets open per target.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [[ $load == 1 ]]; then
    # The binaries as they ship (static queue-proxy and activator), then the driver.
    echo "bench.sh: building release binaries" >&2
    scripts/build-release.sh >&2
    cargo build --release --locked -p kdp-benches
fi

if [[ $micro == 1 ]]; then
    echo "bench.sh: criterion micro-benchmarks" >&2
    # Short windows and no plots (plotting took longer than measuring) keep
    # the whole suite under 5 minutes, and quick under 1, on 2 cores; run
    # `cargo bench -p kdp-benches` directly for longer windows and plots.
    criterion_args=(--noplot --warm-up-time 0.5 --measurement-time 1.5)
    if [[ ${#quick[@]} -gt 0 ]]; then
        criterion_args=(--quick --noplot --warm-up-time 0.2 --measurement-time 0.3)
    fi
    cargo bench -p kdp-benches -- "${criterion_args[@]}"
fi

if [[ $load == 1 ]]; then
    if ! command -v nginx >/dev/null && [[ " ${driver_args[*]} " != *" --nginx "* ]]; then
        echo "bench.sh: nginx not found, the nginx baseline is skipped (apt-get install -y nginx)" >&2
    fi
    echo "bench.sh: load driver" >&2
    read -r shipped release < <(scripts/build-release.sh --print-dirs)
    "$release/kdp-bench" "${quick[@]}" \
        --queue-proxy "$shipped/queue-proxy" \
        --activator "$shipped/activator" \
        --kdp "$release/kdp" \
        --manifest deploy/local/hello-world.yaml \
        --out bench-results \
        "${driver_args[@]}"
fi
