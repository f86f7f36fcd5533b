#!/usr/bin/env bash
# Builds kdp's release binaries and checks they fit the runtime images.
#
#   scripts/build-release.sh            # build, print sizes, check linking
#   scripts/build-release.sh --no-build # only check binaries already built
#   scripts/build-release.sh --print-dirs  # where the binaries land, then exit
#
# The queue-proxy and the activator are linked statically against glibc
# (`-C target-feature=+crt-static`): a sidecar's idle memory is mostly its
# mapped code, and a static binary maps only the parts of libc it calls
# instead of all of libc.so and libm.so (1.2 MB resident at idle). They land
# in target/<host triple>/release/ (cargo puts a build with an explicit
# --target there, and the flag then stays off build scripts and proc
# macros). `kdp`, the local mode that runs on people's machines, stays
# dynamically linked in target/release/.
#
# Both images run on gcr.io/distroless/cc-debian12 (glibc 2.36, the same as
# the rust:1.95-bookworm builder): a static glibc binary still loads the
# NSS modules of that glibc at run time when it resolves a host name (a
# readiness probe's `host`, the autoscaler's service name), so the runtime
# image must carry the builder's glibc. The check below refuses a dynamic
# queue-proxy or activator, and a `kdp` that needs a shared library
# distroless/cc lacks.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST=$(rustc -vV | sed -n 's/^host: //p')
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
STATIC_DIR="$TARGET_DIR/$HOST/release"
DYNAMIC_DIR="$TARGET_DIR/release"

if [ "${1:-}" = "--print-dirs" ]; then
    echo "$STATIC_DIR $DYNAMIC_DIR"
    exit 0
fi

if [ "${1:-}" != "--no-build" ]; then
    # One package per build, as each image builds it: built together, the
    # queue-proxy would get every feature the activator's dependencies turn
    # on (0.35 MiB more code).
    for package in kdp-queue-proxy kdp-activator; do
        echo "== cargo build --release --target $HOST -p $package, static glibc"
        RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
            cargo build --release --locked --target "$HOST" -p "$package"
    done
    echo "== cargo build --release (kdp)"
    cargo build --release --locked -p kdp
fi

# Shared objects the distroless/cc-debian12 runtime provides.
allowed='^(linux-vdso\.so\.1|linux-gate\.so\.1|libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|ld-linux[-a-z0-9_]*\.so\.[0-9]+|/lib6?4?/ld-linux[-a-z0-9_]*\.so\.[0-9]+|/lib/[a-z0-9_]+-linux-gnu/ld-linux[-a-z0-9_]*\.so\.[0-9]+)$'

status=0
printf '%-14s %12s %10s  %s\n' binary bytes MiB linking
for entry in "queue-proxy:$STATIC_DIR:static" "activator:$STATIC_DIR:static" "kdp:$DYNAMIC_DIR:dynamic"; do
    IFS=: read -r bin dir linking <<<"$entry"
    path="$dir/$bin"
    if [ ! -x "$path" ]; then
        echo "missing: $path" >&2
        status=1
        continue
    fi
    bytes=$(stat -L -c %s "$path")
    mib=$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')
    # ldd prints "statically linked" (or "not a dynamic executable") for a
    # static binary; otherwise one line per library, soname first.
    ldd_out=$(ldd "$path" 2>&1 || true)
    if grep -qE 'statically linked|not a dynamic executable' <<<"$ldd_out"; then
        printf '%-14s %12s %10s  %s\n' "$bin" "$bytes" "$mib" "static"
        if [ "$linking" != static ]; then
            echo "error: $bin is static; expected dynamic" >&2
            status=1
        fi
        continue
    fi
    libs=$(awk '{ print $1 }' <<<"$ldd_out" | sort -u)
    printf '%-14s %12s %10s  %s\n' "$bin" "$bytes" "$mib" "$(echo "$libs" | tr '\n' ' ')"
    if [ "$linking" = static ]; then
        echo "error: $bin needs shared libraries; it must be linked statically" >&2
        status=1
    fi
    while IFS= read -r lib; do
        [ -z "$lib" ] && continue
        if ! [[ "$lib" =~ $allowed ]]; then
            echo "error: $bin needs $lib, which gcr.io/distroless/cc-debian12 does not provide" >&2
            status=1
        fi
    done <<<"$libs"
done

if [ "$status" -eq 0 ]; then
    echo "ok: queue-proxy and activator are static; kdp links only glibc, libgcc_s and the loader"
fi
exit "$status"
