#!/usr/bin/env bash
# Churn rounds against an otherwise idle `plenary sfu`: the soak's churn round (a webinar
# room of 1 WHIP presenter and 6 WHEP viewers, 2 s warm-up, 8 s measured) ROUNDS times, one
# after the other, to tell a round's own misses from those the load beside it causes.
#
# Usage: loadtest/churn-rounds.sh OUTDIR [ROUNDS]      (default 12 rounds)
# Env:   PLENARY (default target/release/plenary), SERVER_CPU (0), LOAD_CPU (1);
#        PLENARY_SFU_EGRESS=fast|str0m picks the server's egress path.
# Prints how many rounds missed their QoE thresholds; each round's report is in OUTDIR.
# Traffic stays on 127.0.0.1; each round is bounded by `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: loadtest/churn-rounds.sh OUTDIR [ROUNDS]}
rounds=${2:-12}
PLENARY=${PLENARY:-$PWD/target/release/plenary}
[ -x "$PLENARY" ] || { echo "no plenary binary at $PLENARY (cargo build --release -p plenary)" >&2; exit 2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mkdir -p "$out"
http=127.0.0.1:$(free_port) media=127.0.0.1:$(free_port)
taskset -c "${SERVER_CPU:-0}" "$PLENARY" sfu --http "$http" --media "$media" --no-metrics \
  --log-level warn >"$out/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://$http/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://$http/healthz" >/dev/null || { echo "plenary sfu did not start" >&2; cat "$out/server.log" >&2; exit 1; }
for k in $(seq 1 "$rounds"); do
  timeout 120 taskset -c "${LOAD_CPU:-1}" "$PLENARY" probe sfu --scenario webinar --target "http://$http" \
    --ramp 6:1:6 --hold 8 --warmup 2 --report "$out/churn-$k" --quiet >"$out/churn-$k.out" 2>&1 || true
  printf '\rround %d/%d' "$k" "$rounds" >&2
done
echo >&2
missed=$(grep -h '^repeat' "$out"/churn-*.out | grep -vc ': held' || true)
echo "rounds that missed their QoE thresholds: $missed of $rounds"
grep -h '^repeat' "$out"/churn-*.out | grep -v ': held' || true
