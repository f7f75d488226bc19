# syntax=docker/dockerfile:1
#
# ossec-collector container image, built in two stages:
#   builder  the official Rust image compiles the release binary;
#   runtime  distroless (glibc, libgcc, CA certificates, no shell, no package
#            manager) with the binary only, running as a non-root user.
#
#   docker build -t ossec-collector .
#   docker run --rm ossec-collector --help
#
# docker-compose.yml builds this image; docs/deployment.md explains it.
# Nothing secret is in the image: the database URL and client.keys come from
# files mounted at run time (compose secrets).

ARG RUST_VERSION=1.95

# ---- builder ----------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# .dockerignore lets in only Cargo.toml, Cargo.lock, crates/ and migrations/
# (sqlx::migrate! embeds migrations/ into the binary at compile time).
COPY . .
# The workspace's release profile keeps debug line tables for profiling; the
# image keeps symbol names (panic backtraces) but drops the debug info.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p ossec-collector \
 && install -D -m 0755 target/release/ossec-collector /out/ossec-collector

# ---- runtime ----------------------------------------------------------------
# Debian 12 based like the builder, so the glibc the binary was linked against
# is there. `:nonroot` is user 65532; USER below says so explicitly.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="ossec-collector" \
      org.opencontainers.image.description="Server for the Wazuh/OSSEC agent protocol (1514 UDP+TCP) that writes agent events into PostgreSQL or SQLite." \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/ossec-collector /usr/local/bin/ossec-collector
USER 65532:65532
WORKDIR /home/nonroot
# Inside a container the metrics/health endpoint must listen on all
# interfaces to be publishable (docker-compose.yml publishes it on the
# host's 127.0.0.1 only). The agent port 1514 already defaults to 0.0.0.0.
# Enrollment (1515/tcp) is off unless OSSEC_COLLECTOR_ENROLL_LISTEN is set;
# its self-signed certificate is made in the working directory above (give
# it a volume: the compose file does).
ENV OSSEC_COLLECTOR_METRICS_LISTEN=0.0.0.0:9514
EXPOSE 1514/tcp 1514/udp 1515/tcp 9514/tcp
# SIGTERM starts a graceful shutdown that flushes queued events within
# --shutdown-timeout (30 s): give `docker stop` a longer timeout (-t 45;
# docker-compose.yml sets stop_grace_period).
STOPSIGNAL SIGTERM
# No curl in the image: the binary checks its own /health (exit 0 iff 200).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/ossec-collector", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/ossec-collector"]
CMD ["serve"]
