#!/usr/bin/env python3
"""What an SFU soak's assembly actually carried, from the probe's per-second series and
per-track records in the soak's KEEP directory: server CPU per minute, seconds at a full
core, the worst per-second delay, Mbit/s received per minute, and which layer listeners
got of each video source.

Usage: loadtest/soak-series.py KEEP/sfu      (the directory holding assembly/)"""
import collections
import json
import sys

d = sys.argv[1] + "/assembly"
ticks = [json.loads(l) for l in open(d + "/timeseries.ndjson")]
held = [t for t in ticks if t.get("phase") != "join"]
minutes = collections.defaultdict(list)
for t in held:
    minutes[int(t["t"] // 60)].append(t)


def per_minute(key):
    vals = [[x[key] for x in m if x.get(key) is not None] for m in minutes.values()]
    return [sum(v) / len(v) for v in vals if v]


cpu = per_minute("server_cpu_pct")
if cpu:
    full = sum(1 for t in held if (t.get("server_cpu_pct") or 0) >= 99)
    print(f"server CPU per minute: {min(cpu):.1f}-{max(cpu):.1f}%; seconds at >= 99%: "
          f"{full} of {len(held)}")
mbps = per_minute("rx_mbps")
print(f"received per minute: {min(mbps):.0f}-{max(mbps):.0f} Mbit/s "
      f"(per second {min(t['rx_mbps'] for t in held):.0f}-{max(t['rx_mbps'] for t in held):.0f})")
print(f"worst per-second delay maximum: {max(t['delay_max_ms'] for t in held):.0f} ms; "
      f"worst per-second loss: audio {max(t['audio_loss_pct'] for t in held):.2f}%, "
      f"video {max(t['video_loss_pct'] for t in held):.2f}%; "
      f"socket drops {sum(t['socket_drops'] for t in held)}")
print("first 20 s, Mbit/s per second: " + " ".join(f"{t['rx_mbps']:.0f}" for t in ticks[:20]))
layers = collections.defaultdict(collections.Counter)
for l in open(d + "/tracks.ndjson"):
    t = json.loads(l)["track"]
    if t["kind"] == "video":
        layers[t["source"]][t["layer"]] += 1
for src in sorted(layers, key=lambda s: -sum(layers[s].values()))[:3]:
    print(f"video tracks from source {src}, by layer: {dict(sorted(layers[src].items()))}")
