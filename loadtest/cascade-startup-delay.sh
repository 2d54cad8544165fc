#!/usr/bin/env bash
# Where the first step's slow video comes from: the same one-step cascade run (assembly, 20
# participants, two nodes on CPU 0, probe on CPU 1, loopback), RUNS times with the SFU's
# bandwidth estimation (and str0m's pacer) on, then RUNS times with it off. Prints each run's
# cross-node vs same-node delay line and the tracks whose delay p95 reached 200 ms
# (participant, kind, source, delay p95 ms, first media ms).
# Usage: loadtest/cascade-startup-delay.sh [RUNS]   (default 3; about 30 s per run)
# Needs redis-server and taskset; uses ports 16390, 18280-18282 and 18380-18382 on 127.0.0.1.
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
P=${PLENARY:-$PWD/target/release/plenary}
[ -x "$P" ] || cargo build --release --quiet
SECRET=startup-delay-secret-0123456789
run() { # BWE
  local d a b r
  d=$(mktemp -d)
  printf '[media]\nworkers = 1\nbandwidth-estimation = %s\n' "$1" >"$d/sfu.toml"
  redis-server --bind 127.0.0.1 --port 16390 --save '' --appendonly no >/dev/null 2>&1 &
  r=$!
  sleep 0.3
  node() { taskset -c 0 "$P" sfu --config "$d/sfu.toml" --no-metrics --http "127.0.0.1:$1" \
    --media "127.0.0.1:$(($1 + 1))" --cascade "127.0.0.1:$(($1 + 2))" \
    --directory redis://127.0.0.1:16390 --cluster-secret "$SECRET" --node "$2" 2>"$d/$2.log" & }
  node 18280 a; a=$!
  node 18380 b; b=$!
  sleep 1.5
  timeout 120 taskset -c 1 "$P" probe sfu --scenario assembly --ramp 20:20:20 --hold 8 --warmup 3 \
    --target http://127.0.0.1:18280,http://127.0.0.1:18380 --server-pid "$a,$b" --quiet \
    --report "$d/rep" 2>&1 | grep -E '^repeat 1 step' | sed 's/.*nodes 2 | //'
  python3 - "$d/rep/tracks.ndjson" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
slow = [r for r in rows if (r["track"].get("delay_p95_ms") or 0) >= 200]
print("  slow tracks:", [(r["participant"], r["track"]["kind"], r["track"]["source"],
      r["track"]["delay_p95_ms"], r["track"]["first_media_ms"]) for r in slow][:6])
PY
  kill "$a" "$b" "$r" 2>/dev/null
  wait "$a" "$b" "$r" 2>/dev/null
  rm -rf "$d"
}
for bwe in true false; do
  echo "== bandwidth-estimation = $bwe"
  for _ in $(seq 1 "$RUNS"); do run "$bwe"; done
done
