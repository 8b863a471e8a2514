# Images for docker compose (see docker-compose.yml):
#   target xds-server: xds-server and bedrock-emulator on Debian slim
#   target envoy:      Envoy's official image with the gateway's wasm filter and bootstrap
#
# Both take their binaries from the `artifacts` stage, which by default compiles them from the
# sources in Rust's official image. Build arguments (defaults are what users get):
#   ARTIFACTS=build     compile here (default);
#   ARTIFACTS=prebuilt  take them from the build context's target/prebuilt/ instead (xds-server,
#                       bedrock-emulator: Linux glibc binaries for Debian bookworm;
#                       bedrock_gateway_filter.wasm), built on the host. The compose test
#                       (tests/python/test_compose.py) uses this to skip the Rust build, with
#                       BUILD_IMAGE=debian:bookworm-slim.
#   BUILD_IMAGE         the image of the `artifacts` stage (default rust:1.95-bookworm).
# One stage with a choice inside rather than one stage per choice: the classic builder (Docker
# 20.10 without BuildKit, docker-compose 1.x) builds every stage before the target, used or not.
ARG BUILD_IMAGE=rust:1.95-bookworm

FROM ${BUILD_IMAGE} AS artifacts
# The classic builder keeps this stage as an untagged image: the label finds it for
#   docker image prune --filter label=org.bedrock-gateway.stage=artifacts
LABEL org.bedrock-gateway.stage=artifacts
ARG ARTIFACTS=build
WORKDIR /src
COPY . .
RUN set -e; mkdir /artifacts; \
    case "$ARTIFACTS" in \
      build) \
        rustup target add wasm32-wasip1; \
        cargo build --locked --release -p xds-server -p bedrock-emulator; \
        cargo build --locked --release -p bedrock-gateway-filter --target wasm32-wasip1; \
        cp target/release/xds-server target/release/bedrock-emulator \
           target/wasm32-wasip1/release/bedrock_gateway_filter.wasm /artifacts/ ;; \
      prebuilt) \
        cp target/prebuilt/xds-server target/prebuilt/bedrock-emulator \
           target/prebuilt/bedrock_gateway_filter.wasm /artifacts/ ;; \
      *) echo "ARTIFACTS must be build or prebuilt, not '$ARTIFACTS'" >&2; exit 1 ;; \
    esac; \
    rm -rf /src

FROM debian:bookworm-slim AS xds-server
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=artifacts /artifacts/xds-server /artifacts/bedrock-emulator /usr/local/bin/
# State of xds-server (the development issuer's key), a volume in docker-compose.yml.
RUN mkdir -p /var/lib/bedrock-gateway && chown 65534:65534 /var/lib/bedrock-gateway
# nobody:nogroup, numeric so that Kubernetes' runAsNonRoot can check it (deploy/k8s).
USER 65534:65534
ENTRYPOINT ["xds-server"]

FROM envoyproxy/envoy:v1.40.0 AS envoy
COPY --from=artifacts /artifacts/bedrock_gateway_filter.wasm /opt/bedrock-gateway/filter.wasm
COPY envoy/bootstrap-compose.yaml /etc/envoy/envoy.yaml
