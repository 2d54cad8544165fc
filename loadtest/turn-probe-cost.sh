#!/usr/bin/env bash
# What the TURN load generator itself costs: `plenary probe turn` of two builds, side by
# side against the same `plenary turn`, rounds alternating A and B. Reports the probe's
# CPU-microseconds per relayed packet and its syscalls per packet handled, its pacing lag
# p99 and whether the run was valid, with the median ratios B/A. CPU time on a shared vCPU
# drifts by 20% from one minute to the next, so only many interleaved rounds give its ratio
# meaning; the syscall count is exact. The soak needs the generator well below one core at
# 80% of the server's capacity; this shows what a generator change buys.
#
# Usage: loadtest/turn-probe-cost.sh BIN_A BIN_B [--allocations N] [--seconds S]
#          [--rounds R] [--out FILE]
# The server is BIN_B's `plenary turn`, on CPU 0; the probe on CPU 1. Needs perf. Traffic
# stays on 127.0.0.1; every run is bounded by --seconds and a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=loadtest/turn-loopback.sh
. loadtest/turn-loopback.sh

[ $# -ge 2 ] || { sed -n 2,13p "$0"; exit 2; }
A=$(realpath "$1") B=$(realpath "$2"); shift 2
ALLOCS=1084 SECONDS_EACH=30 ROUNDS=3 OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --allocations) ALLOCS=$2; shift 2 ;;
    --seconds) SECONDS_EACH=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v perf >/dev/null || { echo "missing perf (apt-get install linux-perf)" >&2; exit 2; }
for bin in "$A" "$B"; do [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }; done
WORK=$(mktemp -d)
SERVER=""
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run_one() { # BIN LABEL ROUND
  local bin=$1 label=$2 round=$3 port metrics dir=$WORK/$2-$3
  mkdir -p "$dir"
  port=$(free_port) metrics=127.0.0.1:$(free_port)
  loopback_turn_config "$dir/turn.toml" "$port" "$metrics" cost "cost-secret"
  taskset -c 0 "$B" turn --config "$dir/turn.toml" >"$dir/server.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do curl -sf "http://$metrics/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  # perf counts the probe's syscalls over its whole run (set-up included): a figure this
  # machine's noisy CPU time cannot blur.
  timeout $((SECONDS_EACH + 120)) perf stat -e raw_syscalls:sys_enter -x, -o "$dir/syscalls" -- \
    taskset -c 1 "$bin" probe turn --server "127.0.0.1:$port" \
    --secret cost-secret --flow audio --allocations "$ALLOCS" --duration "$SECONDS_EACH" \
    --warmup 2 --server-pid "$SERVER" --quiet --report "$dir/report" >"$dir/probe.out" 2>&1 || true
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  SERVER=""
  python3 - "$dir/report/report.json" "$dir/syscalls" "$label" "$round" >>"$WORK/rows" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["steps"][-1]
p = s["probe"]
us = p["cpu_pct"] / 100 / s["relayed_pps"] * 1e6 if s["relayed_pps"] else float("nan")
calls = next((float(l.split(",")[0]) for l in open(sys.argv[2]) if "sys_enter" in l), float("nan"))
# Packets the probe itself handled in the whole run: sent, taken at a peer, echoed, back.
handled = s["sent"] + 2 * s["at_peer"] + s["back"]
measured = s["measured_seconds"]
# Scale the step's counts to the run (warm-up and set-up sent too): calls per packet is
# then slightly high for both builds alike.
per_packet = calls / handled * measured / (measured + r["config"].get("warmup_seconds", 2)) if handled else float("nan")
print(sys.argv[3], sys.argv[4], f"{us:.3f}", f"{per_packet:.3f}", f"{p['cpu_pct']:.1f}",
      f"{p['lag_p99_ms']:.2f}", f"{s['relayed_pps']:.0f}", f"{s['loss_pct']:.2f}",
      "valid" if s["valid"] else "invalid")
PY
  echo "round $round $label: $(tail -1 "$WORK/rows")" >&2
}

for round in $(seq "$ROUNDS"); do
  run_one "$A" A "$round"
  run_one "$B" B "$round"
done

report() {
  echo "## TURN load generator cost, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Command: \`loadtest/turn-probe-cost.sh A B --allocations $ALLOCS --seconds $SECONDS_EACH --rounds $ROUNDS\`"
  echo
  echo "- A: \`$A\` (built $(date -u -r "$A" +%Y-%m-%dT%H:%MZ))"
  echo "- B: \`$B\` (built $(date -u -r "$B" +%Y-%m-%dT%H:%MZ)), also the server"
  echo "- $ALLOCS audio allocations (50 pps each way, echo peers); server on CPU 0, probe on CPU 1"
  echo
  echo "| probe | round | probe µs per relayed packet | syscalls per packet handled | probe CPU % | pacing lag p99 ms | relayed/s | loss % | run |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  while read -r label round us calls cpu lag pps loss valid; do
    echo "| $label | $round | $us | $calls | $cpu | $lag | $pps | $loss | $valid |"
  done <"$WORK/rows"
  echo
  python3 - "$WORK/rows" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {k: statistics.median(float(r[2]) for r in rows if r[0] == k) for k in "AB"}
calls = {k: statistics.median(float(r[3]) for r in rows if r[0] == k) for k in "AB"}
print(f"Median probe cost: A {med['A']:.3f} µs, B {med['B']:.3f} µs per relayed packet; "
      f"B/A = {med['B'] / med['A']:.2f}.")
print()
print(f"Median syscalls per packet the probe handled (sent, read at a peer, echoed, read back): "
      f"A {calls['A']:.3f}, B {calls['B']:.3f}; B/A = {calls['B'] / calls['A']:.2f}.")
PY
}
if [ -n "$OUT" ]; then report | tee "$OUT"; else report; fi
