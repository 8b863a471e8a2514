#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the filter's pure core: every target of
# filter/fuzz/fuzz_targets runs for a bounded time from a temporary copy of its committed seed
# corpus (filter/fuzz/corpus/<target>), so what a run learns is not committed. Fails, with the
# crashing input and how to reproduce it, when a target panics, hangs or runs out of memory.
#
# Runs on a stable toolchain: with `--sanitizer none` cargo-fuzz passes rustc no `-Z` flag
# (the filter forbids `unsafe`, so AddressSanitizer would only watch its dependencies).
# FUZZ_SANITIZER=address opts in anyway; it needs RUSTC_BOOTSTRAP=1 on stable, set here then.
#
#   FUZZ_SECONDS_PER_TARGET  seconds per target (default 15); 0 only replays the seed corpus
#   FUZZ_TARGETS             targets to run, space-separated (default: all of them)
#   FUZZ_SANITIZER           none (default) or address
set -euo pipefail
source "$(dirname "$0")/lib.sh"
FUZZ_DIR="$ROOT/filter/fuzz"
started=$SECONDS

seconds="${FUZZ_SECONDS_PER_TARGET:-15}"
sanitizer="${FUZZ_SANITIZER:-none}"
[[ "$seconds" =~ ^[0-9]+$ ]] || die "FUZZ_SECONDS_PER_TARGET must be a whole number of seconds, not '$seconds'"
case "$sanitizer" in
  none) ;;
  address) export RUSTC_BOOTSTRAP=1 ;;
  *) die "FUZZ_SANITIZER must be none or address, not '$sanitizer'" ;;
esac

ensure_cargo_fuzz() {
  command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs"
  cargo fuzz --version >/dev/null 2>&1 && return 0
  log "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install --quiet --locked cargo-fuzz ||
    die "could not install cargo-fuzz; install it with 'cargo install cargo-fuzz --locked' and run again"
  cargo fuzz --version >/dev/null 2>&1 ||
    die "cargo-fuzz was installed but 'cargo fuzz' does not run: is ${CARGO_HOME:-$HOME/.cargo}/bin on PATH?"
}

ensure_cargo_fuzz
# libfuzzer-sys compiles libFuzzer (C++) with the cc crate.
[ -n "${CXX:-}" ] || apt_ensure c++ g++

cargo_fuzz() {
  CARGO_TERM_QUIET=true cargo fuzz "$1" --fuzz-dir "$FUZZ_DIR" --sanitizer "$sanitizer" "${@:2}"
}

log "building the fuzz targets (cargo fuzz build, sanitizer $sanitizer)"
cargo_fuzz build

read -r -a targets <<< "${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir "$FUZZ_DIR" | tr '\n' ' ')}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ "$seconds" -eq 0 ]; then
  budget=(-runs=0)
else
  budget=(-max_total_time="$seconds")
fi

failed=()
for target in "${targets[@]}"; do
  [ -f "$FUZZ_DIR/fuzz_targets/$target.rs" ] || die "no fuzz target '$target' in $FUZZ_DIR/fuzz_targets"
  corpus="$work/corpus-$target"
  mkdir -p "$corpus"
  if [ -d "$FUZZ_DIR/corpus/$target" ]; then
    cp -R "$FUZZ_DIR/corpus/$target/." "$corpus/"
  fi
  log "fuzzing $target ($([ "$seconds" -eq 0 ] && echo "seed corpus only" || echo "$seconds s"))"
  output="$work/$target.log"
  if cargo_fuzz run "$target" "$corpus" -- "${budget[@]}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$output" 2>&1; then
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$output" | tail -1 || true)"
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$output")"
    speed="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$output")"
    printf '    %-6s %9s runs %7s/s  %s\n' "$target" "${runs:-?}" "${speed:-?}" \
      "$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' <<< "$done_line")" >&2
  else
    failed+=("$target")
    printf 'error: fuzz target %s failed:\n' "$target" >&2
    # From the panic (or libFuzzer's report of a hang, a leak or memory use) on, without
    # source locations; everything's end if there is none (a build error).
    report="$(awk '/panicked at|ERROR: libFuzzer|ALARM:/ { on = 1 } on' "$output" |
      grep -vE '^[[:space:]]+at |^#[0-9]+' | head -n 30 || true)"
    printf '%s\n' "${report:-$(tail -n 40 "$output")}" >&2
    env=""
    [ "$sanitizer" = none ] || env="RUSTC_BOOTSTRAP=1 "
    while read -r artifact; do
      printf '  input:     %s\n' "$artifact" >&2
      printf '  reproduce: %scargo fuzz run --fuzz-dir %s --sanitizer %s %s %s\n' \
        "$env" "$FUZZ_DIR" "$sanitizer" "$target" "$artifact" >&2
      printf '  minimize:  %scargo fuzz tmin --fuzz-dir %s --sanitizer %s %s %s\n' \
        "$env" "$FUZZ_DIR" "$sanitizer" "$target" "$artifact" >&2
    done < <(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$output")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  die "fuzzing found failures in: ${failed[*]} (once fixed, add the input to filter/fuzz/corpus/<target>/)"
fi
log "fuzzing passed in $((SECONDS - started)) s"
