# syntax=docker/dockerfile:1.7
#
# codex-sidecar container image.
#
# Build:  docker build -t codex-sidecar:0.1.0 --build-arg VERSION=0.1.0 \
#           --build-arg REVISION="$(git rev-parse HEAD)" .
# Run:    docker run --rm --network container:<agent> codex-sidecar:0.1.0
#
# The sidecar binds 127.0.0.1 by default: it is meant to share a network
# namespace with the Codex agent (same pod, `--network container:...`, or the
# same image). See docs/operations.md, "For image builders".
#
# Base images are pinned by tag; production builds should pin them by digest
# too (`FROM rust:1.95-slim-bookworm@sha256:...`).

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# Dependencies are downloaded in their own layer, keyed on the manifest and
# lock file only, so a source change does not download them again. The
# target dir is a BuildKit cache mount: local rebuilds recompile only this
# crate.
COPY Cargo.toml Cargo.lock ./
RUN cargo fetch --locked
COPY . .
RUN --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --offline --bin codex-sidecar \
    && install -D -m 0755 target/release/codex-sidecar /out/usr/local/bin/codex-sidecar
# Directories the runtime image needs, made here because distroless has no
# shell: the state dir (ledger; 0750 so a log shipper in the sidecar's group
# can read it) and the credentials dir (0700: the sidecar's user only). Each
# sits inside a parent that is copied as a whole, because COPY keeps the modes
# of what is inside a copied directory but not of the directory itself.
RUN install -d -m 0750 /out/state/codex-sidecar \
    && install -d -m 0700 /out/credentials/credentials \
    && install -D -m 0644 config/container/codex-sidecar.toml \
        /out/etc/codex-sidecar/codex-sidecar.toml

FROM ${RUNTIME_IMAGE}
ARG RUNTIME_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="codex-sidecar" \
      org.opencontainers.image.description="Local model endpoint for the Codex agent: attaches the right credential, streams, meters and bills each request" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"

# 65532 is the distroless "nonroot" user and group. The binary and the config
# stay root-owned (read-only to the sidecar); the state and credentials dirs
# belong to the sidecar's user.
COPY --from=builder /out/usr/local/bin/codex-sidecar /usr/local/bin/codex-sidecar
COPY --from=builder /out/etc/codex-sidecar/codex-sidecar.toml /etc/codex-sidecar/codex-sidecar.toml
COPY --from=builder --chown=65532:65532 /out/credentials/ /etc/codex-sidecar/
COPY --from=builder --chown=65532:65532 /out/state/ /var/lib/

ENV CODEX_SIDECAR_CONFIG=/etc/codex-sidecar/codex-sidecar.toml \
    STATE_DIRECTORY=/var/lib/codex-sidecar

USER 65532:65532
WORKDIR /var/lib/codex-sidecar
# 7800: the agent's model endpoint; 7801: /metrics /healthz /readyz /status.
# Both bind 127.0.0.1 unless configured otherwise.
EXPOSE 7800 7801
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/codex-sidecar", "health"]
# SIGTERM drains: give `docker stop -t` / terminationGracePeriodSeconds more
# than server.shutdown_grace (30s by default).
STOPSIGNAL SIGTERM
ENTRYPOINT ["codex-sidecar"]
CMD ["serve"]
