#!/usr/bin/env bash
# Builds kdp's release binaries and checks they fit the runtime image.
#
#   scripts/build-release.sh            # build, print sizes, check shared libraries
#   scripts/build-release.sh --no-build # only check binaries already in target/release
#
# The images (deploy/*.Dockerfile) run these binaries on
# gcr.io/distroless/cc-debian12, which ships glibc (libc, libm, and the
# libpthread/libdl/librt stubs of Debian's libc6), libgcc_s and the dynamic
# loader, and nothing else. A binary that needs any other shared library
# would start on this machine and fail in the cluster with "error while
# loading shared libraries", so this script refuses it (exit 1).
#
# The binaries are glibc-linked, not static musl: the build machines have no
# musl target (rustup cannot fetch one here). See deploy/queue-proxy.Dockerfile
# for the musl variant.
set -euo pipefail
cd "$(dirname "$0")/.."

BINARIES=(queue-proxy activator kdp)
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
RELEASE_DIR="$TARGET_DIR/release"

if [ "${1:-}" != "--no-build" ]; then
    echo "== cargo build --release (queue-proxy, activator, kdp)"
    cargo build --release --locked -p kdp-queue-proxy -p kdp-activator -p kdp
fi

# Shared objects the distroless/cc-debian12 runtime provides.
allowed='^(linux-vdso\.so\.1|linux-gate\.so\.1|libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|ld-linux[-a-z0-9_]*\.so\.[0-9]+|/lib6?4?/ld-linux[-a-z0-9_]*\.so\.[0-9]+|/lib/[a-z0-9_]+-linux-gnu/ld-linux[-a-z0-9_]*\.so\.[0-9]+)$'

status=0
printf '%-14s %12s %10s  %s\n' binary bytes MiB "shared libraries"
for bin in "${BINARIES[@]}"; do
    path="$RELEASE_DIR/$bin"
    if [ ! -x "$path" ]; then
        echo "missing: $path" >&2
        status=1
        continue
    fi
    bytes=$(stat -L -c %s "$path")
    mib=$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')
    # First word of each ldd line is the soname (or the loader's path).
    libs=$(ldd "$path" | awk '{ print $1 }' | sort -u)
    printf '%-14s %12s %10s  %s\n' "$bin" "$bytes" "$mib" "$(echo "$libs" | tr '\n' ' ')"
    while IFS= read -r lib; do
        [ -z "$lib" ] && continue
        if ! [[ "$lib" =~ $allowed ]]; then
            echo "error: $bin needs $lib, which gcr.io/distroless/cc-debian12 does not provide" >&2
            status=1
        fi
    done <<<"$libs"
done

if [ "$status" -eq 0 ]; then
    echo "ok: every binary links only against glibc, libgcc_s and the loader"
fi
exit "$status"
