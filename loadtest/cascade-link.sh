#!/usr/bin/env bash
# Cascade link bitrate against what the far side demands: a simulcast publisher (100, 400 and
# 1200 kbit/s layers) on node A, 1 then 5 viewers of the low layer on node B, both nodes in one
# process with a real redis-server on loopback. Prints A->B link bits per second (media
# datagrams as encoded: flow id + RTP header + payload) against the payload rate B's first
# viewer receives, and writes loadtest/results/cascade-link.md.
# Needs redis-server (scripts/install-peers). Runs about 20 s.
set -euo pipefail
cd "$(dirname "$0")/.."
out=loadtest/results/cascade-link.md
log=$(mktemp)
cargo test --release -q -p plenary-sfu --test cascade a_track_crosses_a_link_once -- --nocapture 2>&1 | tee "$log"
{
  echo "# Cascade link bitrate vs the layers demanded"
  echo
  echo "Command: \`loadtest/cascade-link.sh\` (commit $(git rev-parse --short HEAD), $(date -u +%F))."
  echo "A simulcast publisher (layers 100/400/1200 kbit/s) on node A; viewers of the low layer on node B."
  echo "Link bytes are media datagrams as sent (QUIC framing and encryption not counted)."
  echo
  echo '```'
  grep 'viewer(s) on B' "$log"
  echo '```'
  echo
  echo "Jitsi and mediasoup send every layer over a link: here that would be about 1.7 Mbit/s, 17x the low layer."
} >"$out"
rm -f "$log"
echo "wrote $out"
