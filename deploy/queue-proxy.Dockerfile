# syntax=docker/dockerfile:1
#
# kdp queue-proxy: the image for config-deployment's `queue-sidecar-image`.
#
# Build from the repository root (the context must hold the whole workspace):
#
#   docker build -f deploy/queue-proxy.Dockerfile -t ghcr.io/kdp-project/queue-proxy:v0.1.0 .
#
# What Knative's controller asks of this image (queue-proxy spec §1.6):
# * no command/args are set on the container: ENTRYPOINT must start the binary,
#   which takes no flags and reads only its environment;
# * securityContext runAsNonRoot: a NUMERIC user (the kubelet cannot check a
#   named one), readOnlyRootFilesystem: the binary writes nothing to disk
#   (logs go to stderr, request logs to stdout), capabilities drop ALL: every
#   port is >= 1024.
# No shell, package manager or libc tools are in the runtime image.
#
# The binary is glibc linked statically (`-C target-feature=+crt-static`, as
# scripts/build-release.sh builds and CI checks it): it maps only the libc
# code it calls, which keeps the sidecar's idle memory under 5 MB. It still
# runs on gcr.io/distroless/cc-debian12 because resolving a host name (a
# readiness probe's `host`) makes static glibc load the NSS modules of the
# glibc it was built with: 2.36, in both the bookworm builder below and
# this image. The image also carries /etc/ssl/certs, which HTTPS readiness
# probes of the user container verify against.
#
# Static musl variant, for a builder that has the target (about 20 MB smaller
# image, same behaviour):
#
#   FROM rust:1.95-bookworm AS build
#   RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
#    && rustup target add x86_64-unknown-linux-musl
#   ... cargo build --release --locked --target x86_64-unknown-linux-musl -p kdp-queue-proxy
#   FROM gcr.io/distroless/static-debian12:nonroot
#   COPY --from=build /src/target/x86_64-unknown-linux-musl/release/queue-proxy /usr/local/bin/queue-proxy
#
# (static-debian12 still has /etc/ssl/certs; `scratch` would not, and HTTPS
# readiness probes would then fail.) musl's allocator is slower under
# contention; measure with benches/ before switching.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is
# copied out because a cache mount is not part of the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    host="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$host" -p kdp-queue-proxy \
 && mkdir -p /out \
 && cp "target/$host/release/queue-proxy" /out/queue-proxy

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/queue-proxy /usr/local/bin/queue-proxy
# 65532 is distroless's `nonroot`; numeric so runAsNonRoot can be verified.
USER 65532:65532
# 8012 HTTP/1.1 + h2c serving port (8013 for h2c revisions), 8112 TLS (only
# when /var/lib/knative/certs holds tls.crt and tls.key), 8022 admin
# (/wait-for-drain), 9090 autoscaler metrics, 9091 Prometheus request
# metrics (only with requestMetrics protocol prometheus).
EXPOSE 8012 8013 8112 8022 9090 9091
ENTRYPOINT ["/usr/local/bin/queue-proxy"]
