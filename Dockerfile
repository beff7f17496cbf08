# syntax=docker/dockerfile:1
# Multi-stage build: a full Rust toolchain builds the release binary; the runtime image is
# Debian slim with only libpq and CA certificates, running as an unprivileged user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev \
 && rm -rf /var/lib/apt/lists/*
# Dependencies first, in their own layer, so code changes do not rebuild them. The benches are
# only needed for Cargo to read the manifest (the release binary does not build them).
COPY Cargo.toml Cargo.lock ./
COPY benches benches
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin orderflow \
 && rm -rf src
COPY src src
COPY migrations migrations
# The dashboard's page and chart library, compiled into the binary.
COPY web web
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin orderflow \
 && strip target/release/orderflow

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 orderflow \
 && useradd --system --uid 10001 --gid orderflow --no-create-home --shell /usr/sbin/nologin orderflow
COPY --from=build /src/target/release/orderflow /usr/local/bin/orderflow
USER orderflow:orderflow
ENV HTTP_ADDR=0.0.0.0:8080 \
    RUST_LOG=info
EXPOSE 8080
# The binary probes /health/ready itself, so the image needs no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["orderflow", "healthcheck"]
ENTRYPOINT ["orderflow"]
CMD ["serve"]
