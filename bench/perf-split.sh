#!/usr/bin/env bash
# Where the CPU of each Envoy under `bench jwt` goes: perf samples every CPU (cpu-clock,
# 999 Hz) while the benchmark runs, and each configuration's Envoy worker thread is split into
# V8's generated code (the Wasm filter, compiled, with its calls into Envoy), Envoy's own code
# (its host functions among it), the kernel, and the C library. Envoy from PyPI has no symbols,
# so this is by binary, not by function. Needs perf (Debian: linux-perf) and the release builds
# of scripts/bench.sh.
#
#   bench/perf-split.sh [bench jwt options]     # e.g. --only "minimal,auth none,cached"
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
export GATEWAY_BIN_PROFILE=release
work=$(mktemp -d /tmp/perf-split.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The fixed-rate rounds would mix a second load into the samples: saturation only.
target/release/gateway-bench jwt --rate 0 "$@" >"$work/bench.out" 2>"$work/bench.err" &
bench=$!
until grep -q '^round 1' "$work/bench.err" 2>/dev/null; do
  kill -0 "$bench" 2>/dev/null || { cat "$work/bench.err" >&2; exit 1; }
  sleep 1
done
# Each configuration's Envoy, and its worker thread.
: >"$work/workers"
while read -r _ _ pid name; do
  pid=${pid%:}
  for task in /proc/"$pid"/task/*; do
    [ "$(cat "$task/comm" 2>/dev/null)" = "wrk:worker_0" ] && echo "${task##*/} $name" >>"$work/workers"
  done
done < <(grep '^envoy pid ' "$work/bench.err")
perf record -q -e cpu-clock -F 999 -a -o "$work/perf.data" -- \
  sh -c "while kill -0 $bench 2>/dev/null; do sleep 1; done" 2>/dev/null
wait "$bench"
perf report -i "$work/perf.data" --sort pid,dso --stdio 2>/dev/null | awk '
  NR == FNR { tid = $1; $1 = ""; name[tid] = substr($0, 2); next }
  /%/ {
    split($2, t, ":"); tid = t[1]
    if (!(tid in name)) next
    share = $1; sub("%", "", share)
    dso = $3
    class = dso == "[JIT]" ? "jit" : dso == "envoy" ? "envoy" : dso == "[kernel.kallsyms]" ? "kernel" : "libc"
    part[tid, class] += share; total[tid] += share
  }
  END {
    print "| configuration | V8 generated code (Wasm) | Envoy | kernel | libc and others |"
    print "|---|---:|---:|---:|---:|"
    for (tid in name) if (total[tid] > 0)
      printf "| %s | %.1f%% | %.1f%% | %.1f%% | %.1f%% |\n", name[tid],
        100 * part[tid, "jit"] / total[tid], 100 * part[tid, "envoy"] / total[tid],
        100 * part[tid, "kernel"] / total[tid], 100 * part[tid, "libc"] / total[tid]
  }' "$work/workers" -
echo
grep '^|' "$work/bench.out" | head -40
