# syntax=docker/dockerfile:1.7
#
# mailroom container image: one static-ish binary on a slim Debian runtime, running as a non-root
# user. Build:   docker build -t mailroom .
#                docker build --build-arg CARGO_FEATURES="" -t mailroom:embedded .   (no cloud backends)
# Run:           docker run -p 8080:8080 mailroom            (serve: api + worker, SQLite in /data)
#                docker run mailroom worker | api | check | migrate | ...

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------------
# Build stage. rust:<version>-bookworm already has gcc, g++, make, perl, pkg-config and the
# OpenSSL and zlib headers that the bundled librdkafka build (kafka feature) needs.
# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder

# Cargo features of the image: the AWS backends (sqs, s3, ssm, ses), PostgreSQL and Redis.
# Add "kafka" for the Kafka queue; the runtime stage already carries libssl3 for it.
ARG CARGO_FEATURES="aws,postgres,redis"

WORKDIR /src

# 1. Dependencies only, against a placeholder crate: this layer is rebuilt only when Cargo.toml or
#    Cargo.lock change, so an edit to the code recompiles mailroom alone. The registry is a cache
#    mount, shared between builds on one machine and never part of a layer.
COPY Cargo.toml Cargo.lock ./
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    mkdir -p src \
    && printf 'fn main() {}\n' > src/main.rs \
    && : > src/lib.rs \
    && cargo build --release --locked --features "$CARGO_FEATURES" \
    && rm -rf src target/release/.fingerprint/mailroom-* target/release/deps/mailroom-* \
       target/release/deps/libmailroom-* target/release/mailroom

# 2. The crate itself. .dockerignore keeps target/, .git and the deployment files out of the context.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    touch src/main.rs \
    && cargo build --release --locked --features "$CARGO_FEATURES" \
    && install -D -m 0755 target/release/mailroom /out/mailroom

# ---------------------------------------------------------------------------------------------
# Runtime stage: CA certificates for TLS to AWS and SMTP relays, libssl3 for rdkafka (kafka
# feature), a non-root user, and nothing else (no shell tools, no curl).
# ---------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# Versions come from the bookworm release the image is pinned to; security updates arrive by
# rebuilding the image, which CD does on every change.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 mailroom \
    && useradd --system --uid 10001 --gid mailroom --home-dir /data --shell /usr/sbin/nologin mailroom \
    && install -d -o mailroom -g mailroom -m 0750 /data

COPY --from=builder /out/mailroom /usr/local/bin/mailroom

# Containers must listen on every interface (the binary's default is 127.0.0.1). The embedded
# default keeps its SQLite database, archive and outbox in /data: mount a volume there.
ENV BIND_ADDRESS=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/data \
    LOG_FORMAT=json

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080

# `mailroom healthcheck` exits 0 when GET http://127.0.0.1:$PORT/health (or $METRICS_PORT when
# set) answers 200; every role serves it, `worker` too.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/mailroom", "healthcheck"]

# SIGTERM makes mailroom stop pulling and settle in-flight leases within SHUTDOWN_GRACE_SECS (25 s);
# give `docker stop` at least 30 s (compose sets stop_grace_period, ECS stopTimeout).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/mailroom"]
CMD ["serve"]
