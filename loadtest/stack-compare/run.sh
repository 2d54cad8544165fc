#!/usr/bin/env bash
# Builds the stack-comparison binaries (release) and runs each stack ROUNDS times,
# alternating, so a burst of noise on the shared machine hits every stack rather than one.
# Stacks: str0m, rtc (webrtc-rs sans-IO core) and webrtc (webrtc-rs async crate; its SFU
# uses one port per peer because that crate cannot share one, and it borrows rtc's peers).
#
#   loadtest/stack-compare/run.sh [SUBSCRIBERS] [SECS] [ROUNDS] [STACKS]
#   e.g. run.sh 100 20 2 "str0m rtc webrtc"
#
# Each run: the SFU process pinned to core 0 (taskset -c 0), and it starts the 1 publisher
# + SUBSCRIBERS subscriber peers as a child pinned to core 1 (PEER_CORE). Loopback only;
# each run ends by itself (publisher stops after SECS, SFU exits when the peers exit, with
# a hard stop at SECS+180 s).
#
# Env: UDP_RCVBUF=bytes overrides the socket receive buffers (default 4 MiB SFU, 1 MiB peers;
# 0 = OS default). PEER_CORE=1 picks the peers' core.
set -euo pipefail
cd "$(dirname "$0")"
SUBS="${1:-100}"
SECS="${2:-20}"
ROUNDS="${3:-2}"
STACKS="${4:-str0m rtc webrtc}"
export PEER_CORE="${PEER_CORE:-1}"

cargo build --release --quiet
OUT="target/runs-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
echo "# $(date -u +%FT%TZ) $(uname -r) nproc=$(nproc) load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# subscribers=$SUBS secs=$SECS rounds=$ROUNDS stacks='$STACKS' UDP_RCVBUF=${UDP_RCVBUF:-default}"
for round in $(seq 1 "$ROUNDS"); do
  for stack in $STACKS; do
    log="$OUT/$stack-$round.txt"
    taskset -c 0 "./target/release/$stack-sfu" sfu --subscribers "$SUBS" --secs "$SECS" \
      >"$log" 2>"$OUT/$stack-$round.err" || echo "run $stack #$round exited $?"
    echo "== $stack round $round (load $(cut -d' ' -f1 /proc/loadavg))"
    grep -E '^(peers:|RESULT|LOSS|LOADGEN)' "$log" || echo "   no result; see $OUT/$stack-$round.err"
  done
done
echo
echo "# summary: stack round fwd_pkts_per_cpu_s us_per_fwd_pkt rss_per_peer_kb_joined rss_per_peer_kb_after_media loss"
for f in "$OUT"/*.txt; do
  stack_round="$(basename "$f" .txt)"
  awk -v sr="$stack_round" '
    /^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] } }
    /^LOSS/   { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "mean_loss") loss = kv[2] } }
    END {
      if (r["fwd_pkts_per_cpu_s"] == "") { print sr, "no result"; exit }
      us = 1e6 * r["sfu_thread_cpu_s"] / r["forwarded"]
      after = (r["rss_end_kb"] - r["rss_base_kb"]) / r["peers"]
      printf "%s %s %.1f %s %.1f %s\n", sr, r["fwd_pkts_per_cpu_s"], us, r["rss_per_peer_kb"], after, loss
    }' "$f"
done
echo "# raw logs in loadtest/stack-compare/$OUT"
