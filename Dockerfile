# Images for docker compose (see docker-compose.yml):
#   target xds-server: xds-server and bedrock-emulator on Debian slim
#   target envoy:      Envoy's official image with the gateway's wasm filter and bootstrap
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip1
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p xds-server -p bedrock-emulator \
 && cargo build --locked --release -p bedrock-gateway-filter --target wasm32-wasip1

FROM debian:bookworm-slim AS xds-server
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/xds-server /src/target/release/bedrock-emulator /usr/local/bin/
# State of xds-server (the development issuer's key), a volume in docker-compose.yml.
RUN mkdir -p /var/lib/bedrock-gateway && chown nobody /var/lib/bedrock-gateway
USER nobody
ENTRYPOINT ["xds-server"]

FROM envoyproxy/envoy:v1.40.0 AS envoy
COPY --from=build /src/target/wasm32-wasip1/release/bedrock_gateway_filter.wasm /opt/bedrock-gateway/filter.wasm
COPY envoy/bootstrap-compose.yaml /etc/envoy/envoy.yaml
