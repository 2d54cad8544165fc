#!/usr/bin/env bash
# Re-homing after a node dies: a local cascade of 3 nodes (plenary probe sfu --local-nodes),
# node n1 SIGKILLed a few seconds into the measured step. Prints how many participants
# re-homed and when audio and video came back (p50/p95, from the probe's report).
#
# With FREEZE=1 the node is SIGSTOPped instead (--freeze-node): a machine gone off the
# network, which closes no socket; its participants notice when the room API pings stop.
#
# Usage: loadtest/cascade-kill.sh [PARTICIPANTS [KILL_AT_S [REPEATS]]]   (default 30 6 3)
#   PLENARY=path/to/plenary (default target/release/plenary), OUT=dir (default a temp dir),
#   FREEZE=1 (SIGSTOP instead of SIGKILL)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-30}"; at="${2:-6}"; repeats="${3:-3}"
plenary="${PLENARY:-target/release/plenary}"
out="${OUT:-$(mktemp -d /tmp/plenary-cascade-kill.XXXXXX)}"
[ -x "$plenary" ] || { echo "cascade-kill: $plenary missing (cargo build --release -p plenary)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "cascade-kill: redis-server missing (scripts/install-peers)" >&2; exit 1; }
mkdir -p "$out"
fault=--kill-node; what=killed
if [ "${FREEZE:-0}" = 1 ]; then fault=--freeze-node; what=frozen; fi
for r in $(seq 1 "$repeats"); do
  echo "== run $r of $repeats: $n participants on 3 nodes, n1 $what ${at}s into the step" >&2
  # The run is a fault on purpose: its QoE breaches; only the re-home figures are read.
  "$plenary" probe sfu --local-nodes 3 $fault "1@$at" --scenario assembly \
    --ramp "$n:$n:$n" --hold $((at + 14)) --warmup 3 --quiet --report "$out/run-$r" || true
done
python3 - "$out" "$repeats" <<'PY'
import json, sys
out, repeats = sys.argv[1], int(sys.argv[2])
print("| run | re-homed | failed | noticed p50/p95 ms | rejoin p50/p95 ms | audio back p50/p95 ms | video back p50/p95 ms | since the fault: audio / video back p95 ms |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
def pp(p):
    return "-" if not p else f"{p['p50']:.0f} / {p['p95']:.0f}"
for r in range(1, repeats + 1):
    try:
        rep = json.load(open(f"{out}/run-{r}/report.json"))
    except OSError:
        print(f"| {r} | no report | | | | | | |"); continue
    for step in rep.get("steps", []):
        h = (step.get("cascade") or {}).get("rehome")
        if not h:
            print(f"| {r} | 0 | | | | | | |"); continue
        a, v = h.get("audio_since_fault_ms"), h.get("video_since_fault_ms")
        since = " / ".join("-" if not x else f"{x['p95']:.0f}" for x in (a, v))
        print(f"| {r} | {h['count']} | {h['failed']} | {pp(h.get('noticed_ms'))} | {pp(h.get('rejoin_ms'))} | {pp(h.get('audio_ms'))} | {pp(h.get('video_ms'))} | {since} |")
PY
echo "reports: $out" >&2
