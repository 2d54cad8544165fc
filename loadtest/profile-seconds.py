#!/usr/bin/env python3
"""Reads `perf script -F comm,tid,time,ip,sym,dso` of `perf record -F 499` on stdin and
compares the SFU media thread's busiest seconds with its ordinary ones: how busy each
second was (samples / 499), and which parts of the code grew in the busy seconds.

Usage: perf script -i perf.data -F comm,tid,time,ip,sym,dso | loadtest/profile-seconds.py
Env:   HZ (499), THREAD (comm prefix of the media thread, plenary-sfu-med), BUSY (0.95),
       MATCH (a regex on symbols, e.g. media::policy: its share in both kinds of second)."""
import collections
import os
import re
import sys

HZ = float(os.environ.get("HZ", "499"))
THREAD = os.environ.get("THREAD", "plenary-sfu-med")
BUSY = float(os.environ.get("BUSY", "0.95"))
MATCH = os.environ.get("MATCH")
LINE = re.compile(r"^\s*(\S.*?)\s+(\d+)\s+(\d+\.\d+):\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$")

# Coarse groups, first match wins; the pattern is looked for in "symbol (dso)".
GROUPS = [
    ("kernel", r"kernel|\[unknown\]"),
    ("str0m", r"str0m"),
    ("srtp/aes", r"aws_lc|aes|gcm|ghash|plenary_srtp"),
    ("alloc/copy", r"malloc|free|memcpy|memmove|realloc|_int_|cfree|memset"),
    ("tokio", r"tokio|mio::"),
    ("plenary", r"plenary"),
]


def group(sym):
    for name, pat in GROUPS:
        if re.search(pat, sym):
            return name
    return "other"


per_second = collections.defaultdict(collections.Counter)
other_threads = collections.Counter()
for line in sys.stdin:
    m = LINE.match(line)
    if not m:
        continue
    comm, _tid, t, sym, dso = m.groups()
    if not comm.startswith(THREAD):
        other_threads[comm] += 1
        continue
    per_second[int(float(t))][f"{sym} ({os.path.basename(dso)})"] += 1

if not per_second:
    sys.exit(f"no samples of a thread named {THREAD}*")
secs = sorted(per_second)
busy = [s for s in secs if sum(per_second[s].values()) >= BUSY * HZ]
calm = [s for s in secs if s not in busy]
print(f"media thread: {len(secs)} seconds sampled, {len(busy)} at >= {BUSY:.0%} of the core")
load = [sum(per_second[s].values()) / HZ for s in secs]
print("busy share per second: " + " ".join(f"{x:.2f}" for x in load))
print(f"other threads' samples: {dict(other_threads.most_common(5))}")


def totals(seconds):
    c = collections.Counter()
    for s in seconds:
        c.update(per_second[s])
    return c


def per_sec(c, n):
    return {k: v / max(n, 1) / HZ for k, v in c.items()}


b, o = totals(busy), totals(calm)
bs, os_ = per_sec(b, len(busy)), per_sec(o, len(calm))
print()
print("core share per second by group: busy seconds vs the others")
gb, go = collections.Counter(), collections.Counter()
for k, v in bs.items():
    gb[group(k)] += v
for k, v in os_.items():
    go[group(k)] += v
for g in sorted(set(gb) | set(go), key=lambda g: -(gb[g] - go[g])):
    print(f"  {g:12} {gb[g]:6.1%} {go[g]:6.1%}  {gb[g] - go[g]:+6.1%}")
if MATCH:
    mb = sum(v for k, v in bs.items() if re.search(MATCH, k))
    mo = sum(v for k, v in os_.items() if re.search(MATCH, k))
    print(f"  {MATCH!r:12} {mb:6.2%} {mo:6.2%}  {mb - mo:+6.2%}")
print()
print("symbols that grew most in the busy seconds (share of the core per second)")
grow = sorted(set(bs) | set(os_), key=lambda k: -(bs.get(k, 0) - os_.get(k, 0)))
for k in grow[:25]:
    print(f"  {bs.get(k, 0):6.2%} {os_.get(k, 0):6.2%} {bs.get(k, 0) - os_.get(k, 0):+6.2%}  {k[:150]}")
print()
print("top symbols over the whole record")
allc = totals(secs)
n = sum(allc.values())
for k, v in allc.most_common(25):
    print(f"  {v / n:6.2%}  {k[:150]}")
