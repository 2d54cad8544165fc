#!/usr/bin/env bash
# Side by side: plenary turn vs Debian's coturn, same coturn-format config, same load,
# same machine, one after the other. Servers are pinned to one core, the load generator
# (turnutils_uclient + turnutils_peer, or plenary probe) to another. Reports relayed
# packets per server CPU-second, loss, and peak RSS per 1000 allocations, with ratios.
#
# Usage: loadtest/turn-vs-coturn.sh [--clients N] [--interval-ms MS] [--messages N]
#          [--size BYTES] [--mem-clients N] [--probe-allocations N] [--probe-flow audio|video]
#          [--probe-seconds S] [--out FILE]
# All traffic stays on 127.0.0.1. Every run is bounded by --messages and a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=100 INTERVAL=2 MESSAGES=2500 SIZE=172 MEM_CLIENTS=500 OUT=""
PROBE_ALLOCS=100 PROBE_FLOW=video PROBE_SECONDS=10
SERVER_CORE=0 LOAD_CORE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --interval-ms) INTERVAL=$2; shift 2 ;;
    --messages) MESSAGES=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --mem-clients) MEM_CLIENTS=$2; shift 2 ;;
    --probe-allocations) PROBE_ALLOCS=$2; shift 2 ;;
    --probe-flow) PROBE_FLOW=$2; shift 2 ;;
    --probe-seconds) PROBE_SECONDS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$(nproc)" -lt 2 ]; then SERVER_CORE=0 LOAD_CORE=0; echo "warning: one core only; results are not valid" >&2; fi
for tool in turnserver turnutils_uclient turnutils_peer taskset python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (scripts/install-peers installs coturn)" >&2; exit 2; }
done

cargo build --release --quiet
PLENARY=$PWD/target/release/plenary
WORK=$(mktemp -d)
trap 'for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
SECRET=loadtest-secret
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
PEER_PORT=$((PORT + 2))
TICK=$(getconf CLK_TCK)

cat > "$WORK/turnserver.conf" <<EOF
listening-ip=127.0.0.1
relay-ip=127.0.0.1
listening-port=$PORT
min-port=50000
max-port=59999
fingerprint
lt-cred-mech
use-auth-secret
static-auth-secret=$SECRET
realm=loadtest
allow-loopback-peers
allowed-peer-ip=127.0.0.1
relay-threads=1
no-tls
no-dtls
no-cli
simple-log
log-file=$WORK/server.log
EOF

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Kernel (system) ticks alone: the per-datagram network stack work no user-space change removes.
sys_ticks() { awk '{print $15}' "/proc/$1/stat"; }
peak_rss_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

wait_ready() {
  for _ in $(seq 50); do
    python3 - "$PORT" <<'PY' && return 0
import socket, sys, os
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
s.sendto(bytes.fromhex("00010000 2112a442") + os.urandom(12), ("127.0.0.1", int(sys.argv[1])))
try: s.recv(100); sys.exit(0)
except OSError: sys.exit(1)
PY
    sleep 0.1
  done
  echo "server did not answer STUN Binding on $PORT" >&2; return 1
}

# Runs a command pinned to the load core and prints "<wall_s> <cpu_s>" on fd 3.
run_load() {
  python3 - "$@" 3>&1 1>&2 <<'PY'
import os, resource, subprocess, sys, time
t = time.monotonic()
rc = subprocess.call(sys.argv[1:], stdout=open(os.environ["LOAD_LOG"], "w"), stderr=subprocess.STDOUT)
wall = time.monotonic() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{wall:.3f} {ru.ru_utime + ru.ru_stime:.3f}", file=os.fdopen(3, "w"))
PY
}

start_server() {
  case "$1" in
    plenary) taskset -c $SERVER_CORE "$PLENARY" turn --coturn-conf "$WORK/turnserver.conf" --no-metrics \
               --log-level warn >"$WORK/plenary.out" 2>&1 & ;;
    coturn) taskset -c $SERVER_CORE turnserver -c "$WORK/turnserver.conf" --no-stdout-log >"$WORK/coturn.out" 2>&1 & ;;
  esac
  SERVER_PID=$!
  wait_ready
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true; sleep 0.3; kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}

declare -A R
measure() {
  local name=$1
  start_server "$name"
  local idle_rss; idle_rss=$(rss_kb "$SERVER_PID")
  # Throughput: CLIENTS allocations, each one channel to an echo peer.
  local c0; c0=$(cpu_ticks "$SERVER_PID")
  local k0; k0=$(sys_ticks "$SERVER_PID")
  export LOAD_LOG=$WORK/$name-uclient.log
  local timing; timing=$(run_load taskset -c $LOAD_CORE timeout 120 turnutils_uclient -c -m "$CLIENTS" \
      -n "$MESSAGES" -l "$SIZE" -z "$INTERVAL" -W "$SECRET" -u load -e 127.0.0.1 -r "$PEER_PORT" \
      -p "$PORT" 127.0.0.1)
  local c1; c1=$(cpu_ticks "$SERVER_PID")
  local k1; k1=$(sys_ticks "$SERVER_PID")
  local sent recv lost
  sent=$(grep -o 'tot_send_msgs=[0-9]*' "$LOAD_LOG" | tail -1 | cut -d= -f2)
  recv=$(grep -o 'tot_recv_msgs=[0-9]*' "$LOAD_LOG" | tail -1 | cut -d= -f2)
  lost=$(grep -o 'Total lost packets [0-9]* ([0-9.]*%)' "$LOAD_LOG" | tail -1 | sed 's/.*(\(.*\)%)/\1/')
  # Second load: plenary probe (its own echo peers), shaped media flows.
  taskset -c $LOAD_CORE "$PLENARY" probe turn --server "127.0.0.1:$PORT" --secret "$SECRET" \
      --allocations "$PROBE_ALLOCS" --flow "$PROBE_FLOW" --duration "$PROBE_SECONDS" \
      --server-pid "$SERVER_PID" --report "$WORK/$name-probe" --quiet >"$WORK/$name-probe.out" 2>&1 || true
  read -r R[$name.probe_pps] R[$name.probe_loss] R[$name.probe_valid] < <(python3 - "$WORK/$name-probe/report.json" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
    step = r["steps"][-1]
    print(f'{r["server"]["relayed_per_cpu_second"]:.0f}', f'{step["loss_pct"]:.3f}', "yes" if step["valid"] else "no")
except Exception as e:
    print("0 100 no")
PY
)
  # Memory: MEM_CLIENTS allocations held briefly.
  export LOAD_LOG=$WORK/$name-mem.log
  run_load taskset -c $LOAD_CORE timeout 120 turnutils_uclient -c -m "$MEM_CLIENTS" -n 20 -l 100 -z 50 \
      -W "$SECRET" -u mem -e 127.0.0.1 -r "$PEER_PORT" -p "$PORT" 127.0.0.1 >/dev/null
  local peak; peak=$(peak_rss_kb "$SERVER_PID")
  stop_server
  local wall load_cpu; read -r wall load_cpu <<<"$timing"
  R[$name.sent]=${sent:-0} R[$name.recv]=${recv:-0} R[$name.lost]=${lost:-100}
  R[$name.cpu]=$(python3 -c "print(f'{($c1-$c0)/$TICK:.2f}')")
  R[$name.sys]=$(python3 -c "print(f'{($k1-$k0)/$TICK:.2f}')")
  # Each echoed message crosses the relay twice (client→peer, peer→client).
  R[$name.relayed]=$(( ${sent:-0} + ${recv:-0} ))
  R[$name.pps_per_cpu]=$(python3 -c "c=($c1-$c0)/$TICK; print(f'{${R[$name.relayed]}/c:.0f}' if c>0 else 'inf')")
  R[$name.rss_per_1k]=$(python3 -c "print(f'{max($peak-$idle_rss,0)*1000/$MEM_CLIENTS/1024:.1f}')")
  R[$name.load_busy]=$(python3 -c "print(f'{$load_cpu/$wall*100:.0f}')")
}

turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >/dev/null 2>&1 &
PEER_PID=$!
taskset -pc $LOAD_CORE "$PEER_PID" >/dev/null
measure coturn
measure plenary
kill "$PEER_PID" 2>/dev/null || true

ratio() { python3 -c "a,b=float('$1'),float('$2'); print(f'{a/b:.2f}x' if b>0 else 'n/a')"; }
valid=yes
for s in coturn plenary; do
  [ "${R[$s.load_busy]}" -gt 90 ] && valid="NO: load generator saturated during $s"
  [ "${R[$s.probe_valid]}" = yes ] || valid="NO: plenary probe ruled its own run against $s invalid"
done
report=$(cat <<EOF
## turn-vs-coturn $(date -u +%Y-%m-%dT%H:%MZ)

Command: \`loadtest/turn-vs-coturn.sh --clients $CLIENTS --interval-ms $INTERVAL --messages $MESSAGES --size $SIZE --mem-clients $MEM_CLIENTS --probe-allocations $PROBE_ALLOCS --probe-flow $PROBE_FLOW --probe-seconds $PROBE_SECONDS\`
Load 1: turnutils_uclient, $CLIENTS clients (one allocation + channel each), $SIZE-byte messages every $INTERVAL ms, echoed by turnutils_peer.
Load 2: plenary probe turn, $PROBE_ALLOCS allocations with $PROBE_FLOW flows for $PROBE_SECONDS s, echoed by its own peers.
Pinning: servers on core $SERVER_CORE, load generator on core $LOAD_CORE. coturn $(dpkg-query -W -f '${Version}' coturn 2>/dev/null), plenary $(git rev-parse --short HEAD).
Valid: $valid

| | coturn | plenary | plenary / coturn |
| --- | --- | --- | --- |
| messages sent / echoed back | ${R[coturn.sent]} / ${R[coturn.recv]} | ${R[plenary.sent]} / ${R[plenary.recv]} | |
| loss (uclient) | ${R[coturn.lost]}% | ${R[plenary.lost]}% | |
| server CPU seconds | ${R[coturn.cpu]} | ${R[plenary.cpu]} | |
| of which kernel (system) | ${R[coturn.sys]} | ${R[plenary.sys]} | |
| best ratio if plenary's user time were zero | | | $(ratio "$(python3 -c "print(f'{${R[plenary.relayed]}/max(${R[plenary.sys]},0.01):.0f}')")" "${R[coturn.pps_per_cpu]}") |
| relayed packets per server CPU-second | ${R[coturn.pps_per_cpu]} | ${R[plenary.pps_per_cpu]} | $(ratio "${R[plenary.pps_per_cpu]}" "${R[coturn.pps_per_cpu]}") |
| probe: $PROBE_ALLOCS $PROBE_FLOW flows, relayed packets per server CPU-second | ${R[coturn.probe_pps]} | ${R[plenary.probe_pps]} | $(ratio "${R[plenary.probe_pps]}" "${R[coturn.probe_pps]}") |
| probe: loss | ${R[coturn.probe_loss]}% | ${R[plenary.probe_loss]}% | |
| peak RSS growth per 1000 allocations (MiB) | ${R[coturn.rss_per_1k]} | ${R[plenary.rss_per_1k]} | $(ratio "${R[plenary.rss_per_1k]}" "${R[coturn.rss_per_1k]}") |
| load generator busy | ${R[coturn.load_busy]}% | ${R[plenary.load_busy]}% | |
EOF
)
echo "$report"
if [ -n "$OUT" ]; then mkdir -p "$(dirname "$OUT")"; printf '%s\n\n' "$report" >> "$OUT"; fi
