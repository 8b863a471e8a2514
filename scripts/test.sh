#!/usr/bin/env bash
# Runs every test of the project on this machine, installing what is missing first (the
# wasm target, a virtualenv with Envoy, boto3 and pytest, redis-server, skopeo, docker-registry,
# openssl): formatting and lints,
# unit tests, integration tests (xds-server against real Envoy and Redis), end-to-end tests
# (real Envoy + xds-server + emulator driven by the AWS SDK for Rust), fuzzing of the filter's
# core for a bounded time (scripts/fuzz.sh), the boto3 tests, the docker-compose tests
# (tests/python/test_compose.py, test_fleet.py; skipped without a Docker daemon), and
# `envoy --mode validate` on every shipped Envoy config. CI runs exactly this (.ci/run).
#
# `scripts/test.sh --quick` is the loop while changing code: formatting, the filter's build and
# every Rust test (unit, integration, end-to-end through Envoy), without clippy, fuzzing and the
# Python tests.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
started=$SECONDS

# On any exit: stop the Docker tests if they still run (a failure elsewhere), then remove the
# seeded base images they use.
docker_pid=""
remove_seeded_images=0
cleanup() {
  if [ -n "$docker_pid" ] && kill -0 "$docker_pid" 2>/dev/null; then
    log "stopping the Docker tests (they remove what they started)"
    kill -TERM "$docker_pid" 2>/dev/null || true
    wait "$docker_pid" 2>/dev/null || true
  fi
  [ "$remove_seeded_images" = 0 ] || "$ROOT/tests/docker/seed-images.sh" --remove
}
trap cleanup EXIT

quick=0
case "${1:-}" in
  --quick) quick=1 ;;
  "") ;;
  *) die "usage: scripts/test.sh [--quick]" ;;
esac

ensure_rust
ensure_python_env
ensure_envoy
# The quota tests run a real Redis.
apt_ensure redis-server redis-server
if [ "$quick" = 0 ]; then
  # The filter's OCI image is pushed to and pulled from a local registry (test_filter_image.py).
  apt_ensure skopeo skopeo
  apt_ensure docker-registry docker-registry
  # The mesh-shaped test makes a CA and a certificate for the Bedrock hosts.
  apt_ensure openssl openssl
  # The usage page is checked in a real headless browser (test_usage_page.py, with Selenium).
  apt_ensure chromium chromium
  apt_ensure chromedriver chromium-driver
  # The compose tests seed their base images from Debian's packages (tests/docker/seed-images.sh)
  # and removes them when this script ends (KEEP_SEEDED_IMAGES=1 keeps them for the next run).
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    apt_ensure debootstrap debootstrap
    [ "${KEEP_SEEDED_IMAGES:-0}" = 1 ] || remove_seeded_images=1
  fi
fi

log "cargo fmt --check"
cargo fmt --all --check
# The fuzz crate is a workspace of its own (filter/fuzz).
cargo fmt --all --check --manifest-path filter/fuzz/Cargo.toml

build_filter

if [ "$quick" = 0 ]; then
  log "cargo clippy (host and wasm32-wasip1)"
  cargo clippy --quiet --workspace --all-targets -- -D warnings
  cargo clippy --quiet -p bedrock-gateway-filter --target wasm32-wasip1 -- -D warnings
fi

# One build for every test and for the binaries the tests start (xds-server, bedrock-emulator,
# gateway-stack): `cargo test` builds a package's binaries when it has integration tests, with
# the features the whole workspace's tests unify to. A separate `cargo build` of those binaries
# would unify other features and compile some 70 crates a second time.
log "cargo test (unit, integration and end-to-end)"
cargo test --quiet --workspace --no-run
cargo test --workspace -- ${CARGO_TEST_ARGS:-}

if [ "$quick" = 1 ]; then
  log "quick tests passed in $((SECONDS - started)) s (not run: clippy, fuzzing, tests/python)"
  exit 0
fi

# The Docker tests (compose, fleet) mostly wait on containers, so they start now, in a pytest
# process of their own, and run beside the fuzzing and the other Python tests. They run one
# after the other: they share the seeded base images and the staged binaries (target/prebuilt/).
# (Not pytest-xdist: its --dist loadgroup does not group tests with pytest 9.2,
# pytest-xdist#1386.)
log "the Docker tests start in the background (log printed at the end)"
docker_tests=(tests/python/test_compose.py tests/python/test_fleet.py)
docker_log="$ROOT/target/docker-tests.log"
"$VENV/bin/pytest" -q -p no:cacheprovider "${docker_tests[@]}" >"$docker_log" 2>&1 &
docker_pid=$!

# Coverage-guided fuzzing of the filter's core, FUZZ_SECONDS_PER_TARGET (15 s) per target.
"$ROOT/scripts/fuzz.sh"

log "boto3 and the other Python tests"
others=0
"$VENV/bin/pytest" -q "${docker_tests[@]/#/--ignore=}" tests/python || others=$?
docker=0
wait "$docker_pid" || docker=$?
docker_pid=""
log "pytest: the Docker tests (${docker_tests[*]})"
cat "$docker_log"
[ "$others" = 0 ] || die "tests/python failed (exit $others)"
[ "$docker" = 0 ] || die "the Docker tests failed (exit $docker)"

log "all tests passed in $((SECONDS - started)) s"
