# syntax=docker/dockerfile:1
#
# Portcullis API gateway.
#
#   docker build -t portcullis .
#   docker run --rm -p 8080:8080 -p 9901:9901 \
#     -v $PWD/policies:/etc/portcullis:ro \
#     -e PORTCULLIS_ADMIN_TOKEN=change-me \
#     portcullis
#
# The mounted folder must hold portcullis.yaml (plus any included files and secret files,
# which are resolved relative to it). Inside a container, `listen` and `admin.listen` must
# bind 0.0.0.0 (not 127.0.0.1) to be reachable through the published ports.

# ---- build ------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
# Pingora builds zlib-ng with cmake.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The workspace manifests and member sources only: keeps target/ and test data out of the
# build. Cargo loads every workspace member, so each member listed in Cargo.toml is copied.
COPY Cargo.toml Cargo.lock ./
COPY assertions ./assertions
COPY gateway ./gateway
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    cargo build --release --locked -p portcullis \
 && install -m 0755 target/release/portcullis /usr/local/bin/portcullis

# ---- runtime ----------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 portcullis \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin portcullis \
 && mkdir -p /etc/portcullis
COPY --from=builder /usr/local/bin/portcullis /usr/local/bin/portcullis
USER 10001:10001
EXPOSE 8080 9901
ENTRYPOINT ["portcullis"]
CMD ["run", "-c", "/etc/portcullis/portcullis.yaml"]
