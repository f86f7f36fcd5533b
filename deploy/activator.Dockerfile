# syntax=docker/dockerfile:1
#
# kdp activator: the image for the `activator` Deployment in knative-serving.
#
# Build from the repository root (the context must hold the whole workspace):
#
#   docker build -f deploy/activator.Dockerfile -t ghcr.io/kdp-project/activator:v0.1.0 .
#
# What Knative's activator Deployment asks of this image (activator spec §1):
# * no command/args: ENTRYPOINT starts the binary, which reads only its
#   environment (POD_NAME, POD_IP, SYSTEM_NAMESPACE, ...), /etc/resolv.conf
#   (cluster domain) and the in-cluster service-account token;
# * securityContext runAsNonRoot + readOnlyRootFilesystem + drop ALL: a
#   numeric non-root user, nothing written to disk, ports >= 1024.
# No shell in the runtime image.
#
# Static glibc on distroless/cc, as the queue-proxy (see queue-proxy.Dockerfile):
# the autoscaler's service name is resolved through the NSS modules of the
# image's glibc, the same version as the builder's.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    host="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$host" -p kdp-activator \
 && mkdir -p /out \
 && cp "target/$host/release/activator" /out/activator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/activator /usr/local/bin/activator
USER 65532:65532
# 8012 `http1` and 8013 `h2c` serve requests and kubelet probes. Knative's
# Deployment also declares 9090 (metrics) and 8008 (profiling), and its
# Service maps 443 to 8112; kdp's activator does not listen there yet
# (docs/compatibility.md).
EXPOSE 8012 8013
ENTRYPOINT ["/usr/local/bin/activator"]
