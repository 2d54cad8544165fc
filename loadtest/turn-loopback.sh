# Sourced by the loadtest scripts that run `plenary turn` on loopback (soak.sh,
# turn-probe-cost.sh): one config, so their servers are set up alike.

# loopback_turn_config FILE PORT METRICS_ADDR REALM SECRET
# Listens and relays on 127.0.0.1 (relay ports 40000-49999), allows loopback peers, logs
# warnings only.
loopback_turn_config() {
  cat >"$1" <<EOF
[listen]
ips = ["127.0.0.1"]
port = $2
[relay]
ips = ["127.0.0.1"]
min_port = 40000
max_port = 49999
[auth]
realm = "$4"
secrets = ["$5"]
[peers]
allowed = ["127.0.0.1"]
allow_loopback = true
[ops]
metrics_addr = "$3"
log_level = "warn"
EOF
}
