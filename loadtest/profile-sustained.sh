#!/usr/bin/env bash
# Where the SFU's core goes, second by second, while an assembly runs beside churning
# rooms: the load of `loadtest/soak.sh`'s SFU phase (N assembly participants, webinar rooms
# of 1+6 joining and leaving in a loop), with `perf record` (no call graphs, so it costs
# little) on the server for PERF_S seconds once the assembly has settled. The per-second
# sample counts show the seconds the core was saturated; `profile-seconds.py` compares what
# ran in those seconds with the ordinary ones.
#
# Usage: loadtest/profile-sustained.sh OUTDIR [N]       (default 240 participants)
# Env:   PLENARY (default target/release/plenary), SERVER_CPU (0), LOAD_CPU (1),
#        SETTLE_S (30), PERF_S (120), CHURN (1; 0 runs the assembly alone).
# Output: OUTDIR/perf.data, OUTDIR/seconds.txt (the comparison), the assembly's report in
#         OUTDIR/assembly, each churn round's in OUTDIR/churn-K. Traffic stays on 127.0.0.1;
#         every process is bounded by `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: loadtest/profile-sustained.sh OUTDIR [N]}
n=${2:-240}
SETTLE_S=${SETTLE_S:-30}
PERF_S=${PERF_S:-120}
CHURN=${CHURN:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PLENARY=${PLENARY:-$PWD/target/release/plenary}
command -v perf >/dev/null || { echo "missing perf (apt-get install linux-perf)" >&2; exit 2; }
[ -x "$PLENARY" ] || { echo "no plenary binary at $PLENARY (cargo build --release -p plenary)" >&2; exit 2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mkdir -p "$out"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

http=127.0.0.1:$(free_port) media=127.0.0.1:$(free_port)
taskset -c "$SERVER_CPU" "$PLENARY" sfu --http "$http" --media "$media" --no-metrics \
  --log-level warn >"$out/server.log" 2>&1 &
server=$!
pids+=("$server")
for _ in $(seq 100); do curl -sf "http://$http/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://$http/healthz" >/dev/null || { echo "plenary sfu did not start" >&2; cat "$out/server.log" >&2; exit 1; }

hold=$((SETTLE_S + PERF_S + 10))
timeout $((hold + 180)) taskset -c "$LOAD_CPU" "$PLENARY" probe sfu --scenario assembly \
  --target "http://$http" --ramp "$n:1:$n" --hold "$hold" --warmup 10 \
  --server-pid "$server" --report "$out/assembly" --quiet >"$out/assembly.out" 2>&1 &
main=$!
pids+=("$main")
if [ "$CHURN" = 1 ]; then
  (
    sleep 20
    k=0
    end=$((SECONDS + hold))
    while kill -0 "$main" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do
      timeout 120 taskset -c "$LOAD_CPU" "$PLENARY" probe sfu --scenario webinar --target "http://$http" \
        --ramp 6:1:6 --hold 8 --warmup 2 --report "$out/churn-$k" --quiet >"$out/churn-$k.out" 2>&1 || true
      k=$((k + 1))
    done
  ) &
  pids+=("$!")
fi

# Joins at 20/s plus the warm-up are over well before SETTLE_S.
sleep $((n / 20 + 10 + SETTLE_S))
echo "perf: ${PERF_S} s of the server (pid $server) from $(date -u +%T)" >&2
perf record -F 499 -p "$server" -o "$out/perf.data" -- sleep "$PERF_S" 2>"$out/perf.log"
wait "$main" || true
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
perf script -i "$out/perf.data" -F comm,tid,time,ip,sym,dso 2>/dev/null |
  python3 loadtest/profile-seconds.py >"$out/seconds.txt"
cat "$out/seconds.txt"
grep -h '^repeat' "$out/assembly.out" || true
if [ "$CHURN" = 1 ]; then
  echo "churn rounds that missed: $(grep -h '^repeat' "$out"/churn-*.out 2>/dev/null | grep -vc ': held' || true) of $(ls "$out"/churn-*.out 2>/dev/null | wc -l)"
fi
