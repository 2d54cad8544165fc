#!/usr/bin/env bash
# Side by side: `plenary sfu` vs Debian's Janus VideoRoom under the same `plenary probe sfu`
# scenario (assembly by default), one after the other, each server pinned to the same core
# (SERVER_CPU) and the probe to another (PROBE_CPU). Prints both capacities and the ratio;
# the full reports land in OUT/plenary and OUT/janus.
#
# Usage: loadtest/sfu-vs-janus.sh [SCENARIO] [-- extra `plenary probe sfu` arguments]
#   e.g. loadtest/sfu-vs-janus.sh assembly -- --ramp 20:20:200 --hold 10
# Env: OUT (default loadtest/results/sfu-vs-janus-DATE), SERVER_CPU (0), PROBE_CPU (1),
#      PLENARY (default: target/release/plenary, built if missing),
#      ONLY (plenary or janus: run that side alone, no ratio).
#
# Everything runs inside a network namespace this script creates and deletes: Janus's ICE
# (libnice) skips loopback interfaces, so both servers and the probe share a veth pair
# that exists only in that namespace. Needs root, ip, taskset, curl and janus
# (`apt-get install janus`). Every run is bounded by the scenario's ramp and a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIO=${1:-assembly}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
EXTRA=("$@")
SERVER_CPU=${SERVER_CPU:-0}
PROBE_CPU=${PROBE_CPU:-1}
OUT=${OUT:-loadtest/results/sfu-vs-janus-$(date -u +%Y%m%dT%H%M%SZ)}
TIMEOUT=${TIMEOUT:-3600}

for tool in ip taskset curl janus; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install iproute2 util-linux curl janus)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespace)" >&2; exit 2; }
if [ -z "${PLENARY:-}" ]; then
  cargo build --release --quiet
  PLENARY=$PWD/target/release/plenary
fi
JANUS_LIB=$(dirname "$(dirname "$(find /usr/lib -path '*janus/plugins/libjanus_videoroom.so' -print -quit)")")
[ -d "$JANUS_LIB" ] || { echo "janus videoroom plugin not found under /usr/lib" >&2; exit 2; }

NS=plpr-vs-$$
VA=plva$$
VB=plvb$$
SERVER_IP=10.213.$(( $$ % 200 + 20 )).1
PROBE_IP=10.213.$(( $$ % 200 + 20 )).2
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add "$VA" type veth peer name "$VB"
ip -n "$NS" addr add "$SERVER_IP/24" dev "$VA"
ip -n "$NS" addr add "$PROBE_IP/24" dev "$VB"
ip -n "$NS" link set "$VA" up
ip -n "$NS" link set "$VB" up
in_ns() { ip netns exec "$NS" "$@"; }

start_server() { # NAME CMD...: starts CMD pinned to SERVER_CPU in the namespace, prints its PID
  local name=$1 pidfile=$OUT/$1.pid
  shift
  rm -f "$pidfile"
  # sh records its own PID, then execs into the server, so the PID is the server's.
  ip netns exec "$NS" sh -c 'echo $$ > "$0"; exec "$@"' "$pidfile" taskset -c "$SERVER_CPU" "$@" \
    > "$OUT/$name-server.log" 2>&1 &
  for _ in $(seq 1 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
  cat "$pidfile"
}

wait_http() { # URL: up to 20 s for a server to answer
  for _ in $(seq 1 100); do
    in_ns curl -s -o /dev/null -m 1 "$1" && return 0
    sleep 0.2
  done
  echo "server at $1 did not come up" >&2
  return 1
}

probe() { # NAME TARGET PID [ARGS...]
  local name=$1 target=$2 pid=$3
  shift 3
  echo "== $name: plenary probe sfu --scenario $SCENARIO against $target (server pid $pid on CPU $SERVER_CPU)" >&2
  set +e
  in_ns timeout "$TIMEOUT" taskset -c "$PROBE_CPU" "$PLENARY" probe sfu --scenario "$SCENARIO" --target "$target" \
    --server-pid "$pid" --probe-cpus "$PROBE_CPU" --report "$OUT/$name" "$@" "${EXTRA[@]}"
  local code=$?
  set -e
  echo "$name exit $code" >&2
}

capacity() { sed -n 's/^  "capacity": \([0-9]*\),$/\1/p' "$OUT/$1/report.json" 2>/dev/null | head -1; }
valid() { sed -n 's/^  "valid": \(true\|false\),$/\1/p' "$OUT/$1/report.json" 2>/dev/null | head -1; }

# Plenary.
if [ "${ONLY:-plenary}" = plenary ]; then
PLENARY_PID=$(start_server plenary "$PLENARY" sfu --http "$SERVER_IP:8080" --media "$SERVER_IP:40000" --no-metrics)
PIDS+=("$PLENARY_PID")
wait_http "http://$SERVER_IP:8080/"
probe plenary "http://$SERVER_IP:8080" "$PLENARY_PID"
kill "$PLENARY_PID" 2>/dev/null || true
for _ in $(seq 1 50); do kill -0 "$PLENARY_PID" 2>/dev/null || break; sleep 0.1; done

fi

# Janus: only the HTTP transport and the VideoRoom plugin, ICE on the namespace's veth.
if [ "${ONLY:-janus}" = janus ]; then
CFG=$OUT/janus-cfg
mkdir -p "$CFG"
cat > "$CFG/janus.jcfg" <<JEOF
general: {
	configs_folder = "$CFG"
	plugins_folder = "$JANUS_LIB/plugins"
	transports_folder = "$JANUS_LIB/transports"
	events_folder = "$JANUS_LIB/events"
	loggers_folder = "$JANUS_LIB/loggers"
	debug_level = 3
}
nat: {
	ice_enforce_list = "$VA"
	ignore_mdns = true
}
plugins: {
	disable = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so"
}
transports: {
	disable = "libjanus_websockets.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so"
}
JEOF
cat > "$CFG/janus.transport.http.jcfg" <<JEOF
general: {
	json = "plain"
	base_path = "/janus"
	http = true
	port = 8088
	ip = "$SERVER_IP"
}
admin: {
	admin_http = false
}
JEOF
echo 'general: {}' > "$CFG/janus.plugin.videoroom.jcfg"
JANUS_PID=$(start_server janus janus -F "$CFG" -o)
PIDS+=("$JANUS_PID")
wait_http "http://$SERVER_IP:8088/janus/info"
probe janus "http://$SERVER_IP:8088/janus" "$JANUS_PID" --api janus
fi

P=$(capacity plenary)
J=$(capacity janus)
echo
echo "scenario $SCENARIO, servers on CPU $SERVER_CPU, probe on CPU $PROBE_CPU (reports in $OUT)"
echo "plenary: capacity ${P:-?} (valid $(valid plenary))"
echo "janus:   capacity ${J:-?} (valid $(valid janus))"
if [ -n "$P" ] && [ -n "$J" ] && [ "$J" -gt 0 ]; then
  echo "ratio plenary/janus: $(awk -v p="$P" -v j="$J" 'BEGIN { printf "%.2f", p / j }')"
else
  echo "ratio plenary/janus: n/a"
fi
