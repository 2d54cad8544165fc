#!/bin/bash
# A/B of the connected-socket buffer fix: 5-minute soaks at 240 + churn, old then new binary.
cd /work/main
for which in before after; do
  bin=/tmp/plenary-before-buf; [ $which = after ] && bin=/work/main/target/release/plenary
  e0=$(awk '/^Udp:/ {l=$0} END {split(l,a," "); print a[6]}' /proc/net/snmp)
  PLENARY=$bin KEEP=/tmp/buf-$which nice -n -10 loadtest/soak.sh --minutes 5 --only sfu --sfu-capacity 300 --out /tmp/buf-$which.md > /tmp/buf-$which.log 2>&1
  e1=$(awk '/^Udp:/ {l=$0} END {split(l,a," "); print a[6]}' /proc/net/snmp)
  echo "$which rcvbuf_errors=$((e1-e0))"
  grep -E "assembly QoE|churn cycles|worst minute" /tmp/buf-$which.md
done
echo done
