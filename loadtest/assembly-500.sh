#!/usr/bin/env bash
# A room of 500 (issue 12): `plenary sfu` as its own process pinned to SERVER_CPU, the probe
# on PROBE_CPU running loadtest/assembly-500.toml against it (500 joins at 20/s, then held).
# Besides the probe's report it samples the server's resident memory before the joins and
# at the end of the hold, and prints the memory per participant.
#
# Usage: loadtest/assembly-500.sh [-- extra `plenary probe sfu` arguments]
# Env: OUT (default loadtest/results/assembly-500-DATE), SERVER_CPU (0), PROBE_CPU (1),
#      PLENARY (default target/release/plenary, built if missing), PORT_BASE (18280).
# Traffic stays on 127.0.0.1; the run is bounded by the scenario's one step and `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "${1:-}" = "--" ] && shift
EXTRA=("$@")
SERVER_CPU=${SERVER_CPU:-0}
PROBE_CPU=${PROBE_CPU:-1}
PORT_BASE=${PORT_BASE:-18280}
OUT=${OUT:-loadtest/results/assembly-500-$(date -u +%Y%m%dT%H%M%SZ)}
if [ -z "${PLENARY:-}" ]; then
  cargo build --release --quiet -p plenary
  PLENARY=$PWD/target/release/plenary
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

HTTP=127.0.0.1:$PORT_BASE
MEDIA=127.0.0.1:$((PORT_BASE + 1))
METRICS=127.0.0.1:$((PORT_BASE + 2))
taskset -c "$SERVER_CPU" "$PLENARY" sfu --http "$HTTP" --media "$MEDIA" --metrics "$METRICS" \
  --log-level warn >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -sf "http://$HTTP/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER/status"; }
IDLE=$(rss_kib)
PEAK=$IDLE
(
  # Sample the server's RSS every second while the probe runs (bounded by the probe's life).
  while kill -0 "$SERVER" 2>/dev/null; do
    echo "$(date -u +%s) $(rss_kib)"
    sleep 1
  done
) >"$OUT/rss.txt" &
SAMPLER=$!

# The probe's exit status (1 when a threshold broke) is the script's, after the memory lines.
RC=0
timeout 600 taskset -c "$PROBE_CPU" "$PLENARY" probe sfu --scenario assembly-500 \
  --target "http://$HTTP" --server-pid "$SERVER" --report "$OUT" "${EXTRA[@]}" |
  tee "$OUT/progress.txt" || RC=$?

HELD=$(rss_kib)
kill "$SAMPLER" 2>/dev/null || true
PEAK=$(sort -k2 -n "$OUT/rss.txt" | tail -1 | cut -d' ' -f2)
{
  echo "server RSS idle ${IDLE} KiB, with 500 participants held ${HELD} KiB, peak ${PEAK} KiB"
  echo "per participant: $(( (PEAK - IDLE) / 500 )) KiB (peak minus idle, over 500)"
} | tee "$OUT/memory.txt"
exit "$RC"
