# syntax=docker/dockerfile:1
# lakevault-coordinator image. The build context is the repository root:
#   docker build -f docker/coordinator.Dockerfile -t lakevault-coordinator:0.1.0 .
# Builder: the Rust toolchain on Debian 12 (bookworm); runtime: distroless "cc" on the
# same Debian release (glibc, libgcc_s and CA certificates, nothing else: no shell, no
# package manager). The binary links only glibc and libgcc_s (TLS is rustls; the system
# CA bundle at /etc/ssl/certs is the trust store). See docker/README.md.

FROM rust:1.95-slim-bookworm AS builder
# make builds jemalloc, the binaries' allocator (tikv-jemalloc-sys); gcc is in the image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends make=4.3-4.1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and build artefacts between builds; the binary is
# copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p lakevault-coordinator --bin lakevault-coordinator \
 && install -D -m 0755 target/release/lakevault-coordinator /out/lakevault-coordinator

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="lakevault-coordinator" \
      org.opencontainers.image.description="lakevault coordinator: finds what changed and enqueues copy work" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/lakevault/lakevault" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=builder /out/lakevault-coordinator /usr/local/bin/lakevault-coordinator
# The config file is mounted here (a ConfigMap in infra/k8s); logs go to stderr as JSON.
ENV LAKEVAULT_CONFIG=/etc/lakevault/lakevault.toml \
    LAKEVAULT_LOG_FORMAT=json \
    LAKEVAULT_LISTEN=0.0.0.0:8080
# distroless's "nonroot" user, numerically, so Kubernetes can verify runAsNonRoot.
USER 65532:65532
# `serve`: the HTTP API, /healthz and /metrics (--listen). Other commands (backup,
# status, redrive, restore, ...) are given as arguments instead of CMD.
EXPOSE 8080
# Exec form: the binary is PID 1 and receives SIGTERM itself (`serve` stops accepting
# connections and ends cleanly).
ENTRYPOINT ["/usr/local/bin/lakevault-coordinator"]
CMD ["serve"]
