#!/usr/bin/env bash
# Where a cascade's CPU goes: runs one step of `loadtest/cascade-vs-single.sh` (N assembly
# participants, two cascade nodes and then one node, all on SERVER_CPU) and, once each setup
# has settled, takes `perf record -g` of every node for PERF_S seconds and counts its
# threads' voluntary context switches per second over the same span.
#
# Usage: loadtest/profile-cascade.sh [N]        (default 160 participants)
# Env:   PLENARY (default target/release/plenary), PLENARY_SFU_EGRESS (default fast),
#        OUT (default /tmp/profile-cascade-N-TIME), SETTLE_S (30), PERF_S (15).
# Output: OUT/perf-{cascade,single}-PID.data (read with `perf report -i FILE --no-children`),
#         OUT/ctx.txt, and the script's own log OUT.log. Traffic stays in the namespaces
#         cascade-vs-single.sh creates; every step is bounded by its hold and TIMEOUT.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-160}
SETTLE_S=${SETTLE_S:-30}
PERF_S=${PERF_S:-15}
PLENARY=${PLENARY:-$PWD/target/release/plenary}
export PLENARY PLENARY_SFU_EGRESS=${PLENARY_SFU_EGRESS:-fast}
export OUT=${OUT:-/tmp/profile-cascade-$N-$(date -u +%H%M%S)}
command -v perf >/dev/null || { echo "missing perf (apt-get install linux-perf)" >&2; exit 2; }
[ -x "$PLENARY" ] || { echo "no plenary binary at $PLENARY (cargo build --release -p plenary)" >&2; exit 2; }

# Hold long enough for both samples to land inside the measured step.
hold=$((SETTLE_S + PERF_S + 10))
TIMEOUT=$((hold * 4 + 120)) loadtest/cascade-vs-single.sh assembly -- \
  --ramp "$N:20:$N" --hold "$hold" --warmup 3 --repeat 1 --quiet >"$OUT.log" 2>&1 &
script=$!
trap 'kill "$script" 2>/dev/null || true' EXIT

wait_pid_file() {
  for _ in $(seq 300); do [ -s "$OUT/$1.pid" ] && return 0; kill -0 "$script" 2>/dev/null || break; sleep 1; done
  echo "$1 did not start; see $OUT.log" >&2
  return 1
}
# Voluntary context switches per thread name, summed over the process's threads.
switches() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ <"$t/comm")" "$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status")"
  done 2>/dev/null | awk '{s[$1] += $2} END {for (k in s) print k, s[k]}' | sort
}
sample() { # label pid...
  local label=$1; shift
  local p perfs=()
  for p in "$@"; do switches "$p" >"$OUT/ctx0-$p"; done
  for p in "$@"; do
    perf record -F 997 -g -p "$p" -o "$OUT/perf-$label-$p.data" -- sleep "$PERF_S" >/dev/null 2>&1 &
    perfs+=("$!")
  done
  wait "${perfs[@]}" || true
  for p in "$@"; do
    switches "$p" >"$OUT/ctx1-$p"
    echo "$label (pid $p), voluntary context switches per second:"
    join "$OUT/ctx0-$p" "$OUT/ctx1-$p" | awk -v s="$PERF_S" '{printf "  %-20s %8.0f\n", $1, ($3 - $2) / s}'
  done >>"$OUT/ctx.txt"
}

wait_pid_file node-b
sleep "$SETTLE_S"
sample cascade "$(cat "$OUT/node-a.pid")" "$(cat "$OUT/node-b.pid")"
wait_pid_file single
sleep "$SETTLE_S"
sample single "$(cat "$OUT/single.pid")"
wait "$script" || true
trap - EXIT
cat "$OUT/ctx.txt"
grep -h 'step 1' "$OUT.log" | cut -c1-200 || true
echo "profiles: $(ls "$OUT"/perf-*.data | tr '\n' ' ')"
