#!/usr/bin/env bash
# Soak (issue 14, item 1): each server for a long run at 80% of its capacity with sessions
# churning, sampling its memory and gauges, then checking that nothing drifted or leaked.
#
#   TURN: `plenary turn` pinned to SERVER_CPU. Its capacity is measured first with a
#         `plenary probe turn` ramp of audio flows (or given with --turn-capacity); 80% of it
#         is split in 4 cohorts of `plenary probe turn`, each running back-to-back segments
#         (default 60 s) staggered by a quarter segment: a quarter of the allocations is
#         released and re-created every 15 s, and every segment reports its own loss.
#   SFU:  `plenary sfu` pinned to SERVER_CPU. `plenary probe sfu --scenario assembly` holds
#         80% of the assembly capacity (default 240 = 80% of 300, the lowest capacity of the
#         fast egress default in loadtest/results/assembly-fast-egress.md; --sfu-capacity to
#         change it) for the whole run,
#         while small webinar rooms (1 WHIP presenter, WHEP viewers) join, hold 8 s and
#         leave in a loop: joins and leaves churn beside the assembly.
#
# Every --sample-s seconds it records the server's RSS, descriptors and gauges
# (allocations and connections; peers, rooms, members and HTTP connections). At the end of
# each phase it prints: RSS drift between minute 5 (or 1/6 of a shorter run) and the end,
# crashes, loss per segment or minute against the QoE thresholds, and whether every gauge
# went back to its idle value once the load stopped.
#
# Usage: loadtest/soak.sh [--minutes N] [--only turn|sfu] [--turn-capacity N]
#          [--sfu-capacity N] [--sample-s S] [--segment-s S] [--out FILE]
# Env: SERVER_CPU (0), LOAD_CPU (1), PLENARY (default target/release/plenary, built),
#      KEEP (a directory for the raw samples and probe reports; default a temp dir, removed),
#      SFU_LOG (the SFU's --log-level, default warn; e.g. "warn,plenary_sfu::media::policy=debug"
#      logs every layer switch with the estimate and rates behind it).
# Traffic stays on 127.0.0.1. Every probe runs under `timeout`; the script ends only the
# processes it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=loadtest/turn-loopback.sh
. loadtest/turn-loopback.sh

MINUTES=30 ONLY="" TURN_CAP="" SFU_CAP=300 SAMPLE=5 SEGMENT=60 OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --turn-capacity) TURN_CAP=$2; shift 2 ;;
    --sfu-capacity) SFU_CAP=$2; shift 2 ;;
    --sample-s) SAMPLE=$2; shift 2 ;;
    --segment-s) SEGMENT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n 2,27p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
SERVER_CPU=${SERVER_CPU:-0}
SFU_LOG=${SFU_LOG:-warn}
LOAD_CPU=${LOAD_CPU:-1}
if [ "$(nproc)" -lt 2 ]; then SERVER_CPU=0 LOAD_CPU=0; echo "warning: one core only; server and load share it" >&2; fi
for tool in taskset python3 curl timeout; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 2; }
done
if [ -z "${PLENARY:-}" ]; then
  cargo build --release --quiet -p plenary
  PLENARY=$PWD/target/release/plenary
fi
RUN_S=$((MINUTES * 60))
[ "$SEGMENT" -gt $((RUN_S / 3)) ] && SEGMENT=$((RUN_S / 3))
[ "$SEGMENT" -lt 20 ] && { echo "--minutes too short: segments under 20 s" >&2; exit 2; }
WORK=${KEEP:-$(mktemp -d)}
mkdir -p "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -z "${KEEP:-}" ] && rm -rf "$WORK"
  return 0
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
# Sum of every series of a metric in a Prometheus text on stdin.
msum() { awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%d", s }'; }
LOAD_BUSY=$(awk '{print $1}' /proc/loadavg)
REPORT=""
say() { REPORT+="$1"$'\n'; echo "$1"; }

# Samples `pid` every SAMPLE s into `csv` (t, rss_kib, fds, then the named gauges) until
# the file `stop` exists or the process is gone.
sampler() {
  local pid=$1 metrics=$2 csv=$3 stop=$4; shift 4
  local t0; t0=$(date +%s.%N)
  echo "t,rss_kib,fds,$(IFS=,; echo "$*")" >"$csv"
  while [ ! -e "$stop" ] && kill -0 "$pid" 2>/dev/null; do
    local body; body=$(curl -s --max-time 2 "http://$metrics/metrics" || true)
    local row; row="$(python3 -c "import time;print(f'{time.time()-$t0:.1f}')"),$(rss_kib "$pid"),$(fds "$pid")"
    for g in "$@"; do row+=",$(printf '%s\n' "$body" | msum "$g")"; done
    echo "$row" >>"$csv"
    sleep "$SAMPLE"
  done
}

# Waits until every gauge in `csv`'s header is back to its idle value (from `idle`, a
# "name=value" list) or 90 s pass; prints "name: now (idle)" per gauge and "leak" or "ok".
wait_idle() {
  local pid=$1 metrics=$2 idle_fds=$3; shift 3
  local deadline=$((SECONDS + 90)) line ok
  while :; do
    local body; body=$(curl -s --max-time 2 "http://$metrics/metrics" || true)
    ok=yes line="fds $(fds "$pid") (idle $idle_fds)"
    [ "$(fds "$pid")" -le $((idle_fds + 2)) ] || ok=no
    for g in "$@"; do
      local v; v=$(printf '%s\n' "$body" | msum "$g")
      line+=", $g $v (idle 0)"
      [ "$v" -eq 0 ] || ok=no
    done
    if [ "$ok" = yes ] || [ $SECONDS -ge $deadline ]; then
      echo "$ok|$line"; return
    fi
    sleep 2
  done
}

# RSS drift between 1/6 of the load (minute 5 of 30), but no earlier than the full load
# (arg 3, seconds), and its end, from a samples file.
drift() {
  python3 - "$1" "$2" "$3" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if float(r["t"]) <= float(sys.argv[2])]
if len(rows) < 3:
    print("n/a|n/a|n/a"); sys.exit()
end_t = float(rows[-1]["t"])
ref_t = max(min(300.0, end_t / 6), float(sys.argv[3]))
ref = min(rows, key=lambda r: abs(float(r["t"]) - ref_t))
a, b = int(ref["rss_kib"]), int(rows[-1]["rss_kib"])
peak = max(int(r["rss_kib"]) for r in rows)
print(f"{(b - a) / a * 100:+.1f}%|{a / 1024:.1f} MiB at {float(ref['t']):.0f} s -> {b / 1024:.1f} MiB at {end_t:.0f} s|{peak / 1024:.1f} MiB")
PY
}

# min / max of a sampled gauge (column `name`) from `from` s to the end of the load.
span() {
  python3 - "$1" "$2" "$3" "$4" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]))
        if float(sys.argv[3]) <= float(r["t"]) <= float(sys.argv[4])]
v = [int(r[sys.argv[2]]) for r in rows]
print(f"{min(v)} / {max(v)}" if v else "n/a")
PY
}

crashes() {
  local log=$1 pid=$2
  local n; n=$(grep -c -i "panicked" "$log" || true)
  kill -0 "$pid" 2>/dev/null || n=$((n + 1))
  echo "$n"
}

# ---- TURN ---------------------------------------------------------------------------------
turn_phase() {
  local port metrics secret=soak-secret dir=$WORK/turn
  mkdir -p "$dir"
  port=$(free_port) metrics=127.0.0.1:$(free_port)
  loopback_turn_config "$dir/turn.toml" "$port" "$metrics" soak "$secret"
  taskset -c "$SERVER_CPU" "$PLENARY" turn --config "$dir/turn.toml" >"$dir/server.log" 2>&1 &
  local server=$!
  PIDS+=("$server")
  for _ in $(seq 100); do curl -sf "http://$metrics/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -sf "http://$metrics/readyz" >/dev/null || { echo "plenary turn did not start" >&2; cat "$dir/server.log" >&2; return 1; }
  local idle_fds; idle_fds=$(fds "$server")
  local probe=(taskset -c "$LOAD_CPU" "$PLENARY" probe turn --server "127.0.0.1:$port" --secret "$secret" --flow audio --quiet)

  local cap=$TURN_CAP cap_note="given with --turn-capacity"
  if [ -z "$cap" ]; then
    timeout 900 "${probe[@]}" --ramp 200:200:4000 --hold 5 --warmup 1 --server-pid "$server" \
      --report "$dir/capacity" >"$dir/capacity.out" 2>&1 || true
    read -r cap cap_note < <(python3 - "$dir/capacity/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
res, steps = r["result"], r["steps"]
held = [s["allocations"] for s in steps if s["held"] and s["valid"]]
if res.get("capacity") and res["valid"]:
    print(res["capacity"], "measured: largest step of a valid ramp that held (audio flows)")
elif held:
    why = "; ".join(res.get("invalid_reasons", [])[:1]) or "ramp reached its ceiling"
    print(max(held), f"lower bound: largest valid step that held ({why})")
else:
    print(200, "no step held: 200 assumed")
PY
)
  fi
  local target=$((cap * 8 / 10)) cohort=$(( (cap * 8 / 10 + 3) / 4 ))
  say "### TURN"
  say ""
  say "- capacity: $cap allocations with audio flows ($cap_note); soak load 80%: 4 cohorts of $cohort = $((cohort * 4)) allocations"
  say "- churn: each cohort runs ${SEGMENT} s segments back to back, staggered by $((SEGMENT / 4)) s: $cohort allocations released and re-created every $((SEGMENT / 4)) s"

  local stop=$dir/stop
  sampler "$server" "$metrics" "$dir/samples.csv" "$stop" turn_total_allocations plenary_turn_connections &
  PIDS+=("$!")
  local start=$SECONDS end=$((SECONDS + RUN_S)) cohorts=()
  for c in 0 1 2 3; do
    (
      child=""
      trap '[ -n "$child" ] && kill "$child" 2>/dev/null; exit 0' TERM
      sleep $((c * SEGMENT / 4))
      k=0
      while [ $((SECONDS + SEGMENT)) -le $((end + SEGMENT / 4)) ]; do
        timeout $((SEGMENT + 120)) "${probe[@]}" --allocations "$cohort" --duration $((SEGMENT - 3)) \
          --warmup 1 --report "$dir/c$c-s$k" >"$dir/c$c-s$k.out" 2>&1 &
        child=$!
        wait "$child" || true
        child=""
        k=$((k + 1))
      done
    ) &
    cohorts+=("$!")
    PIDS+=("$!")
  done
  for p in "${cohorts[@]}"; do wait "$p" || true; done
  local load_s=$((SECONDS - start))
  # All four cohorts run from 3/4 of a segment on.
  local dr; dr=$(drift "$dir/samples.csv" "$load_s" "$SEGMENT")
  local idle; idle=$(wait_idle "$server" "$metrics" "$idle_fds" turn_total_allocations plenary_turn_connections)
  touch "$stop"
  local crashed; crashed=$(crashes "$dir/server.log" "$server")
  local stalls; stalls=$(curl -s --max-time 2 "http://$metrics/metrics" | msum plenary_turn_stalls_total)
  local allocs; allocs=$(span "$dir/samples.csv" turn_total_allocations "$SEGMENT" $((load_s - SEGMENT / 4)))
  local segs; segs=$(python3 - "$dir" <<'PY'
import glob, json, sys
rows = []
for f in sorted(glob.glob(sys.argv[1] + "/c*-s*/report.json")):
    s = json.load(open(f))["steps"][-1]
    rows.append((s["loss_pct"], s["flow_loss_pct"]["p95"], s["held"], s["valid"], s["ready"], s["allocations"]))
if not rows:
    print("0|0|0|n/a|n/a|0"); sys.exit()
held = sum(1 for r in rows if r[2])
valid = sum(1 for r in rows if r[3])
print(f"{len(rows)}|{held}|{valid}|{max(r[0] for r in rows):.3f}%|{max(r[1] for r in rows):.3f}%|{sum(r[4] for r in rows)}/{sum(r[5] for r in rows)}")
PY
)
  IFS='|' read -r nseg nheld nvalid worst_loss worst_p95 ready <<<"$segs"
  IFS='|' read -r dpct dwhat dpeak <<<"$dr"
  IFS='|' read -r iok iline <<<"$idle"
  say "- load ran ${load_s} s; samples every ${SAMPLE} s: \`samples.csv\`"
  say ""
  say "| what | result |"
  say "| --- | --- |"
  say "| RSS drift, from 1/6 of the run (after ramp-up) to its end | $dpct ($dwhat; peak $dpeak) |"
  say "| crashes | $crashed |"
  say "| stalls (the process did not run for 1 s or more) | $stalls |"
  say "| allocations held, min / max once every cohort runs | $allocs |"
  say "| segments (held / valid / total) | $nheld / $nvalid / $nseg; allocations ready $ready |"
  say "| worst segment loss, pooled / p95 across flows | $worst_loss / $worst_p95 (threshold 1%) |"
  say "| gauges back to idle after the load | $iok: $iline |"
  say ""
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}

# ---- SFU ----------------------------------------------------------------------------------
sfu_phase() {
  local dir=$WORK/sfu http metrics media
  mkdir -p "$dir"
  http=127.0.0.1:$(free_port) metrics=127.0.0.1:$(free_port) media=127.0.0.1:$(free_port)
  taskset -c "$SERVER_CPU" "$PLENARY" sfu --http "$http" --media "$media" --metrics "$metrics" \
    --log-level "$SFU_LOG" >"$dir/server.log" 2>&1 &
  local server=$!
  PIDS+=("$server")
  for _ in $(seq 100); do curl -sf "http://$http/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -sf "http://$http/healthz" >/dev/null || { echo "plenary sfu did not start" >&2; cat "$dir/server.log" >&2; return 1; }
  local idle_fds; idle_fds=$(fds "$server")
  local held=$((SFU_CAP * 8 / 10))
  say "### SFU"
  say ""
  say "- assembly capacity $SFU_CAP (--sfu-capacity); soak load 80%: $held assembly participants held for the whole run"
  say "- churn: webinar rooms of 1 WHIP presenter and 6 WHEP viewers join, hold 8 s and leave, in a loop"

  local stop=$dir/stop gauges=(plenary_sfu_peers plenary_sfu_rooms plenary_sfu_room_members plenary_sfu_http_connections)
  sampler "$server" "$metrics" "$dir/samples.csv" "$stop" "${gauges[@]}" &
  PIDS+=("$!")
  local start=$SECONDS
  timeout $((RUN_S + 300)) taskset -c "$LOAD_CPU" "$PLENARY" probe sfu --scenario assembly \
    --target "http://$http" --ramp "$held:1:$held" --hold "$RUN_S" --warmup 10 \
    --server-pid "$server" --report "$dir/assembly" --quiet >"$dir/assembly.out" 2>&1 &
  local main=$!
  PIDS+=("$main")
  (
    child=""
    trap '[ -n "$child" ] && kill "$child" 2>/dev/null; exit 0' TERM
    sleep 20
    k=0
    while kill -0 "$main" 2>/dev/null && [ $((SECONDS - start)) -lt $((RUN_S - 20)) ]; do
      timeout 120 taskset -c "$LOAD_CPU" "$PLENARY" probe sfu --scenario webinar --target "http://$http" \
        --ramp 6:1:6 --hold 8 --warmup 2 --report "$dir/churn-$k" --quiet >"$dir/churn-$k.out" 2>&1 &
      child=$!
      wait "$child" || true
      child=""
      k=$((k + 1))
    done
  ) &
  local churn=$!
  PIDS+=("$churn")
  wait "$main" || true
  wait "$churn" || true
  local load_s=$((SECONDS - start))
  # Joins at 20/s and the 10 s warm-up are over by 30 s.
  local dr; dr=$(drift "$dir/samples.csv" "$load_s" 30)
  local idle; idle=$(wait_idle "$server" "$metrics" "$idle_fds" "${gauges[@]}")
  touch "$stop"
  local crashed; crashed=$(crashes "$dir/server.log" "$server")
  local stalls; stalls=$(curl -s --max-time 2 "http://$metrics/metrics" | msum plenary_sfu_stalls_total)
  local members; members=$(span "$dir/samples.csv" plenary_sfu_room_members 30 $((load_s - 10)))
  local qoe; qoe=$(python3 - "$dir" "$held" <<'PY'
import glob, json, sys
d, listeners = sys.argv[1], int(sys.argv[2])
try:
    r = json.load(open(d + "/assembly/report.json"))
    s = r["steps"][-1]
    q, t = s["qoe"], r["thresholds"]
    main = (f"held {s['held']}, valid {s['valid']}; p95 audio loss {q['audio_loss_pct']:.2f}%, "
            f"freeze {q['freeze_pct']:.2f}%, delay {q['delay_ms']:.0f} ms, joins {q['join_pct']:.0f}%"
            + (f"; breaches: {', '.join(str(b) for b in s['breaches'])}" if s["breaches"] else ""))
except Exception as e:
    main = f"no report ({e})"
worst = "n/a"
try:
    ticks = [json.loads(l) for l in open(d + "/assembly/timeseries.ndjson")]
    ticks = [t for t in ticks if t.get("phase") == "measure"]
    minutes = {}
    for t in ticks:
        minutes.setdefault(int(t["t"] // 60), []).append(t)
    worst_a = max(sum(x["audio_loss_pct"] for x in m) / len(m) for m in minutes.values())
    worst_v = max(sum(x["video_loss_pct"] for x in m) / len(m) for m in minutes.values())
    worst = f"{worst_a:.2f}% audio, {worst_v:.2f}% video (mean of each minute's per-second loss; {len(minutes)} minutes)"
    # The layers the SFU chose set the load: the same count of listeners on a lower layer
    # is a lighter soak.
    rates = [sum(x["rx_mbps"] for x in m) / len(m) for m in minutes.values()]
    delivered = (f"{min(rates):.0f}–{max(rates):.0f} Mbit/s per minute "
                 f"({max(rates) / max(listeners, 1):.2f} Mbit/s per listener at most)")
except Exception as e:
    worst = f"n/a ({e})"
    delivered = "n/a"
cycles = failed = joins_failed = 0
for f in glob.glob(d + "/churn-*/report.json"):
    cycles += 1
    c = json.load(open(f))
    st = c["steps"][-1]
    joins_failed += st["joins"]["failed"]
    failed += 0 if st["held"] else 1
print(f"{main}|{worst}|{delivered}|{cycles}|{failed}|{joins_failed}")
PY
)
  IFS='|' read -r qmain qworst qrate ncycles nfailed jfailed <<<"$qoe"
  IFS='|' read -r dpct dwhat dpeak <<<"$dr"
  IFS='|' read -r iok iline <<<"$idle"
  say "- load ran ${load_s} s; samples every ${SAMPLE} s: \`samples.csv\`"
  say ""
  say "| what | result |"
  say "| --- | --- |"
  say "| RSS drift, from 1/6 of the run (after ramp-up) to its end | $dpct ($dwhat; peak $dpeak) |"
  say "| crashes | $crashed |"
  say "| stalls (the process did not run for 1 s or more) | $stalls |"
  say "| room members, min / max after the joins ($held assembly + churn) | $members |"
  say "| assembly QoE over the run (thresholds of assembly.toml) | $qmain |"
  say "| worst minute | $qworst |"
  say "| delivered to the assembly (the layer mix sets the load) | $qrate |"
  say "| churn cycles (failed to hold / joins failed) | $ncycles ($nfailed / $jfailed) |"
  say "| gauges back to idle after the load | $iok: $iline |"
  say ""
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}

say "## soak $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "Command: \`loadtest/soak.sh --minutes $MINUTES${ONLY:+ --only $ONLY}${TURN_CAP:+ --turn-capacity $TURN_CAP} --sfu-capacity $SFU_CAP --sample-s $SAMPLE --segment-s $SEGMENT\`"
# The checkout's HEAD need not be what the binary was built from: its build time tells.
say "checkout $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)'); binary $PLENARY built $(date -u -r "$PLENARY" +%Y-%m-%dT%H:%MZ); servers on CPU $SERVER_CPU, load on CPU $LOAD_CPU; load average at start: $LOAD_BUSY"
say ""
[ "$ONLY" != sfu ] && turn_phase
[ "$ONLY" != turn ] && sfu_phase
if [ -n "$OUT" ]; then mkdir -p "$(dirname "$OUT")"; printf '%s\n' "$REPORT" >>"$OUT"; fi
