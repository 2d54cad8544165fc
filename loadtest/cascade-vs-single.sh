#!/usr/bin/env bash
# Cost of cascading, and the delay a cascade hop adds: the same `plenary probe sfu` ramp
# against (1) two `plenary sfu` nodes of one cascade and (2) one node alone. Both nodes, and
# the single node, are pinned to SERVER_CPU, so "two nodes on one core" is compared with
# "one node on that core"; the probe runs on PROBE_CPU.
#
# Network: two namespaces this script creates and deletes, joined by a veth pair. Node A,
# Redis and the probe live in the first, node B in the second, so the A<->B link and B's
# participants cross the veth. The probe puts the scenario's publishers on A and spreads the
# listeners over A and B, and reports the delay of cross-node paths against same-node ones.
#
# Usage: loadtest/cascade-vs-single.sh [SCENARIO] [-- extra `plenary probe sfu` arguments]
#   e.g. loadtest/cascade-vs-single.sh assembly -- --ramp 40:20:200 --hold 10
# Env: OUT (default loadtest/results/cascade-vs-single-DATE), SERVER_CPU (0), PROBE_CPU (1),
#      PLENARY (default target/release/plenary, built if missing), TIMEOUT per ramp (1800 s).
# Needs root, ip, taskset, redis-server. Every run is bounded by its ramp and TIMEOUT.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIO=${1:-assembly}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
EXTRA=("$@")
SERVER_CPU=${SERVER_CPU:-0}
PROBE_CPU=${PROBE_CPU:-1}
OUT=${OUT:-loadtest/results/cascade-vs-single-$(date -u +%Y%m%dT%H%M%SZ)}
TIMEOUT=${TIMEOUT:-1800}

for tool in ip taskset redis-server curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (scripts/install-peers; apt-get install iproute2 util-linux curl)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 2; }
if [ -z "${PLENARY:-}" ]; then
  cargo build --release --quiet
  PLENARY=$PWD/target/release/plenary
fi

NA=plca-$$
NB=plcb-$$
VA=plcva$$
VB=plcvb$$
NET=10.214.$(( $$ % 200 + 20 ))
IP_A=$NET.1
IP_B=$NET.2
SECRET=loadtest-cluster-secret-$$-0123456789
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$NA" 2>/dev/null || true
  ip netns del "$NB" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$NA"
ip netns add "$NB"
ip -n "$NA" link set lo up
ip -n "$NB" link set lo up
ip -n "$NA" link add "$VA" type veth peer name "$VB" netns "$NB"
ip -n "$NA" addr add "$IP_A/24" dev "$VA"
ip -n "$NB" addr add "$IP_B/24" dev "$VB"
ip -n "$NA" link set "$VA" up
ip -n "$NB" link set "$VB" up

printf '[media]\nworkers = 1\n' >"$OUT/sfu.toml"

start() { # NS NAME CPU CMD...: starts CMD in NS pinned to CPU; prints its PID
  local ns=$1 name=$2 cpu=$3 pidfile=$OUT/$2.pid
  shift 3
  rm -f "$pidfile"
  ip netns exec "$ns" sh -c 'echo $$ > "$0"; exec "$@"' "$pidfile" taskset -c "$cpu" "$@" \
    >"$OUT/$name.log" 2>&1 &
  for _ in $(seq 1 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
  cat "$pidfile"
}

wait_http() { # NS URL
  for _ in $(seq 1 100); do
    ip netns exec "$1" curl -s -o /dev/null -m 1 "$2" && return 0
    sleep 0.2
  done
  echo "no answer from $2" >&2
  return 1
}

node() { # NS NAME IP: one cascade node
  start "$1" "node-$2" "$SERVER_CPU" "$PLENARY" sfu --config "$OUT/sfu.toml" --no-metrics \
    --http "$3:8280" --media "$3:8281" --cascade "$3:8282" \
    --directory "redis://$IP_A:6390" --cluster-secret "$SECRET" --node "$2"
}

probe() { # LABEL TARGETS PIDS
  echo "== $1: probe on CPU $PROBE_CPU against $2"
  ip netns exec "$NA" timeout "$TIMEOUT" taskset -c "$PROBE_CPU" "$PLENARY" probe sfu \
    --scenario "$SCENARIO" --target "$2" --server-pid "$3" --report "$OUT/$1" "${EXTRA[@]}" \
    2>&1 | tee "$OUT/$1.txt" || true
}

REDIS=$(start "$NA" redis "$SERVER_CPU" redis-server --bind "$IP_A" --port 6390 --save "" --appendonly no --protected-mode no)
PIDS+=("$REDIS")
for _ in $(seq 1 100); do
  [ "$(ip netns exec "$NA" redis-cli -h "$IP_A" -p 6390 ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done

# 1. Two nodes of one cascade, both on SERVER_CPU.
A=$(node "$NA" a "$IP_A"); PIDS+=("$A")
B=$(node "$NB" b "$IP_B"); PIDS+=("$B")
wait_http "$NA" "http://$IP_A:8280/"
wait_http "$NA" "http://$IP_B:8280/"
probe cascade "http://$IP_A:8280,http://$IP_B:8280" "$A,$B"
kill "$A" "$B" 2>/dev/null || true
sleep 2

# 2. One node alone on SERVER_CPU, the same ramp.
S=$(start "$NA" single "$SERVER_CPU" "$PLENARY" sfu --config "$OUT/sfu.toml" --no-metrics \
  --http "$IP_A:8380" --media "$IP_A:8381")
PIDS+=("$S")
wait_http "$NA" "http://$IP_A:8380/"
probe single "http://$IP_A:8380" "$S"

capacity() { sed -n 's/^  "capacity": \([0-9]*\),*$/\1/p' "$OUT/$1/report.json" | head -1; }
C2=$(capacity cascade)
C1=$(capacity single)
{
  echo "scenario $SCENARIO, extra: ${EXTRA[*]:-none}"
  echo "capacity, two cascade nodes on CPU $SERVER_CPU: ${C2:-?}"
  echo "capacity, one node on CPU $SERVER_CPU: ${C1:-?}"
  if [ -n "$C1" ] && [ -n "$C2" ] && [ "$C1" -gt 0 ]; then
    echo "cascade / single: $(awk -v a="$C2" -v b="$C1" 'BEGIN { printf "%.2f", a / b }')"
  fi
} | tee "$OUT/summary.txt"
echo "reports: $OUT/cascade, $OUT/single (steps[].cascade: delay same-node vs cross-node)"
