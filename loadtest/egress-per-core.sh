#!/usr/bin/env bash
# How many 720p30 egresses one core sustains (issue 13, "Figures"; docs/decisions/0005).
#
# One `plenary sfu` and one publisher (headless Chromium, driven by chromedriver, on the
# SFU's own whip.html: fake camera asked at 1280x720 30 fps, VP8, and fake microphone,
# Opus) share PUB_CPU (0). The probe cannot publish here: its VP8 is not decodable. Then,
# for each N in COUNTS, N `plenary egress --record FILE.mp4 --duration D` processes pull the
# room's WHEP programme together, all pinned to EGRESS_CPU (1). Per egress it reads:
#   - CPU (user+sys, from the kernel's rusage of the exited child) over its wall time, and
#     max RSS;
#   - its own view: the status lines' fps (every 5 s; the first, which holds the WHEP
#     connect and the first keyframe, is left out) and dropped frames, and its metrics
#     (scraped 2 s before the end): output frames and drops, and source frames dropped
#     (`mixer_behind`: the decoders and mixer could not take them in time);
#   - ffprobe on the MP4: video frames and duration.
# N holds when every egress exited 0, its MP4's duration is within 5% of its wall time (the
# issue's rule; wall time counted from its WHEP source's connection, since the ~0.5 s start
# before it is no part of keeping up; the table shows both), its frame rate is at least
# 29 fps (MP4 frames / MP4 duration; or frames >= 97% of 30 x D), and it dropped nothing
# (output or source). Prints a markdown table and the largest N that held, and says when
# the publisher sent less than 720p at 27 fps (then the figures are not worth keeping).
#
# Usage: loadtest/egress-per-core.sh [DURATION_S [COUNTS]]   (default 30 "1 2 3 4")
#   PLENARY=path/to/plenary (default target/release/plenary), OUT=dir (default a temp dir;
#   MP4s, logs and results.md are kept there), PUB_CPU=0, EGRESS_CPU=1, WARMUP_S=8
#   (publisher running before the first N), CHROMIUM=/usr/bin/chromium, CHROMEDRIVER=chromedriver.
# Figures worth keeping need a quiet machine: nothing else on EGRESS_CPU. Traffic stays on
# 127.0.0.1. Every wait is bounded; the script ends only the processes it started, by PID
# (Chromium through its WebDriver session, then chromedriver's own process group).
set -euo pipefail
cd "$(dirname "$0")/.."
dur="${1:-30}"; counts="${2:-1 2 3 4}"
plenary="${PLENARY:-target/release/plenary}"
out="${OUT:-$(mktemp -d /tmp/plenary-egress-per-core.XXXXXX)}"
pub_cpu="${PUB_CPU:-0}"; egress_cpu="${EGRESS_CPU:-1}"; warmup="${WARMUP_S:-8}"
chromium="${CHROMIUM:-/usr/bin/chromium}"; chromedriver="${CHROMEDRIVER:-chromedriver}"
[ -x "$plenary" ] || { echo "egress-per-core: $plenary missing (cargo build --release -p plenary)" >&2; exit 1; }
for tool in taskset setsid timeout python3 curl ffprobe "$chromium" "$chromedriver"; do
  command -v "$tool" >/dev/null || { echo "egress-per-core: $tool missing (scripts/install-peers)" >&2; exit 1; }
done
case "$dur" in ''|*[!0-9]*) echo "egress-per-core: DURATION_S must be whole seconds" >&2; exit 2 ;; esac
[ "$dur" -ge 10 ] && [ "$dur" -le 600 ] || { echo "egress-per-core: DURATION_S between 10 and 600" >&2; exit 2; }
for n in $counts; do
  case "$n" in ''|*[!0-9]*) echo "egress-per-core: COUNTS are whole numbers" >&2; exit 2 ;; esac
  [ "$n" -ge 1 ] && [ "$n" -le 16 ] || { echo "egress-per-core: each count between 1 and 16" >&2; exit 2; }
done
mkdir -p "$out"
# A reused OUT must not name processes of an earlier run.
: >"$out/egress.pids"; rm -f "$out/webdriver.session"
plenary="$(cd "$(dirname "$plenary")" && pwd)/$(basename "$plenary")"

sfu_pid=""; chromedriver_pid=""; runner_pid=""
cleanup() {
  # The runner kills its own egresses on SIGTERM; the pid file covers a runner killed hard.
  [ -n "$runner_pid" ] && kill "$runner_pid" 2>/dev/null || true
  if [ -f "$out/egress.pids" ]; then
    while read -r p; do kill "$p" 2>/dev/null || true; done <"$out/egress.pids"
  fi
  if [ -n "$chromedriver_pid" ]; then
    # Closing the session ends Chromium; then chromedriver's process group (it was started
    # with setsid: its pid is the group's id), which holds any Chromium process left.
    [ -f "$out/webdriver.session" ] && { wd stop 2>/dev/null || true; }
    kill -TERM -- "-$chromedriver_pid" 2>/dev/null || true
  fi
  [ -n "$sfu_pid" ] && kill "$sfu_pid" 2>/dev/null || true
  for p in $runner_pid $chromedriver_pid $sfu_pid; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    wait "$p" 2>/dev/null || true
  done
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
free_udp_port() { python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

http_port=$(free_port); metrics_port=$(free_port); media_port=$(free_udp_port)
sfu="http://127.0.0.1:$http_port"; room="egress-per-core"
echo "== load before the run: $(cut -d' ' -f1-3 /proc/loadavg) (figures are only worth keeping on a quiet machine)" >&2
taskset -c "$pub_cpu" "$plenary" sfu --http "127.0.0.1:$http_port" --media "127.0.0.1:$media_port" \
  --metrics "127.0.0.1:$metrics_port" --log-level warn >"$out/sfu.log" 2>&1 &
sfu_pid=$!
for _ in $(seq 1 100); do
  curl -sf --max-time 1 "$sfu/" >/dev/null 2>&1 && break
  kill -0 "$sfu_pid" 2>/dev/null || { echo "egress-per-core: the SFU exited (see $out/sfu.log)" >&2; exit 1; }
  sleep 0.1
done

# The publisher: the SFU's whip.html in headless Chromium (driven by chromedriver over
# WebDriver, plain HTTP on loopback), which asks getUserMedia for 1280x720 at 30 fps.
wd_port=$(free_port)
taskset -c "$pub_cpu" setsid "$chromedriver" --port="$wd_port" >"$out/chromedriver.log" 2>&1 &
chromedriver_pid=$!
# wd start|stats|stop: one WebDriver command; `stats` prints what the publisher sends.
wd() {
  python3 - "$1" "http://127.0.0.1:$wd_port" "$chromium" "$out" "$sfu" "$room" <<'PY'
import json, sys, time, urllib.request
cmd, base, chromium, out, sfu, room = sys.argv[1:7]
def call(method, path, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=timeout).read() or b"{}")
STATS = """const done = arguments[arguments.length - 1];
const w = window.whip;
if (!w || !w.pc) { done({ state: w && w.state, error: w && w.error }); return; }
Plenary.outboundStats(w.pc).then((o) => done({ state: w.state, out: o }), (e) => done({ error: String(e) }));"""
if cmd == "start":
    for _ in range(100):
        try:
            if call("GET", "/status", timeout=2)["value"]["ready"]: break
        except OSError:
            pass
        time.sleep(0.1)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
            "--disable-features=AutofillServerCommunication,MediaRouter,OptimizationHints,WebRtcHideLocalIpsWithMdns",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream=fps=30",
            "--autoplay-policy=no-user-gesture-required", "--disable-background-timer-throttling",
            "--disable-backgrounding-occluded-windows", "--disable-renderer-backgrounding",
            "--allow-loopback-in-peer-connection", f"--user-data-dir={out}/chromium-profile"]
    caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}}}}
    sid = call("POST", "/session", caps)["value"]["sessionId"]
    open(f"{out}/webdriver.session", "w").write(sid)
    call("POST", f"/session/{sid}/timeouts", {"script": 20000, "pageLoad": 20000})
    call("POST", f"/session/{sid}/url", {"url": f"{sfu}/whip.html?sfu={sfu}&room={room}&autostart=1"})
    # Publishing: the page says so and video bytes leave (bounded: 30 s).
    for _ in range(60):
        v = call("POST", f"/session/{sid}/execute/async", {"script": STATS, "args": []})["value"]
        video = [o for o in v.get("out", []) if o["kind"] == "video" and o["bytesSent"] > 0]
        if v.get("state") == "publishing" and video: sys.exit(0)
        time.sleep(0.5)
    print(f"publisher not publishing: {v}", file=sys.stderr); sys.exit(1)
sid = open(f"{out}/webdriver.session").read().strip()
if cmd == "stats":
    v = call("POST", f"/session/{sid}/execute/async", {"script": STATS, "args": []})["value"]
    video = [o for o in v.get("out", []) if o["kind"] == "video"]
    print(" ".join(f"{o['width']}x{o['height']}@{o['fps']:.0f}" for o in video) or f"none ({v})")
elif cmd == "stop":
    call("DELETE", f"/session/{sid}", timeout=10)
PY
}
wd start || { echo "egress-per-core: Chromium did not publish within 30 s (see $out/chromedriver.log)" >&2; exit 1; }
echo "== publisher sending $(wd stats); ${warmup}s of warm-up" >&2
sleep "$warmup"

# Runs N egresses at once on EGRESS_CPU, waits for all (bounded), writes OUTDIR/run.json.
run_n() {
  python3 - "$plenary" "$sfu/whep/$room" "$egress_cpu" "$dur" "$1" "$out/n$1" "$out/egress.pids" <<'PY' &
import json, os, signal, socket, subprocess, sys, time, urllib.request
plenary, whep, cpu, dur, n, outdir, pidfile = sys.argv[1:8]
dur, n = int(dur), int(n)
os.makedirs(outdir, exist_ok=True)
procs = []
def cpu_jiffies():
    """(busy, total) jiffies of the egresses' CPU, from /proc/stat."""
    for line in open("/proc/stat"):
        f = line.split()
        if f[0] == f"cpu{cpu}":
            v = [int(x) for x in f[1:9]]
            return sum(v) - v[3] - v[4], sum(v)
    return 0, 0
cpu_start, t_start = cpu_jiffies(), time.monotonic()
def stop(*_):
    for p in procs:
        try: p["proc"].kill()
        except OSError: pass
    sys.exit(130)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port
for k in range(1, n + 1):
    port = free_port()
    mp4 = f"{outdir}/e{k}.mp4"
    cmd = ["taskset", "-c", cpu, plenary, "egress", "--from", whep, "--record", mp4,
           "--duration", str(dur), "--status-every", "5", "--metrics", f"127.0.0.1:{port}"]
    log = open(f"{outdir}/e{k}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    procs.append({"k": k, "proc": proc, "port": port, "mp4": mp4, "start": time.monotonic()})
    with open(pidfile, "a") as f: f.write(f"{proc.pid}\n")
# Metrics once, 2 s before the end (the process is gone after --duration).
time.sleep(max(0, dur - 2))
scraped_at = time.monotonic()
for p in procs:
    p["scrape_s"] = scraped_at - p["start"]
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{p['port']}/metrics", timeout=1).read().decode()
    except OSError as e:
        body = f"# scrape failed: {e}\n"
    open(f"{outdir}/e{p['k']}.metrics", "w").write(body)
# Each egress stops by itself after --duration (its muxer gets at most 20 s); 40 s more at most.
deadline = time.monotonic() + 40
results = []
pending = list(procs)
while pending and time.monotonic() < deadline:
    for p in list(pending):
        pid, status, ru = os.wait4(p["proc"].pid, os.WNOHANG)
        if pid == 0: continue
        p["proc"].returncode = os.waitstatus_to_exitcode(status)
        results.append({"k": p["k"], "pid": pid, "mp4": p["mp4"],
                        "exit": p["proc"].returncode,
                        "wall_s": time.monotonic() - p["start"],
                        "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
                        "max_rss_kib": ru.ru_maxrss, "scrape_s": p.get("scrape_s", 0)})
        pending.remove(p)
    time.sleep(0.1)
for p in pending:
    p["proc"].kill(); p["proc"].wait()
    results.append({"k": p["k"], "pid": p["proc"].pid, "mp4": p["mp4"], "exit": "hung",
                    "wall_s": time.monotonic() - p["start"], "user_s": 0, "sys_s": 0, "max_rss_kib": 0,
                    "scrape_s": p.get("scrape_s", 0)})
open(pidfile, "w").close()
results.sort(key=lambda r: r["k"])
cpu_end = cpu_jiffies()
window = time.monotonic() - t_start
hz = os.sysconf("SC_CLK_TCK")
busy_s = (cpu_end[0] - cpu_start[0]) / hz
# What else ran on that CPU meanwhile (another build): the figures want it near zero.
others_s = max(0.0, busy_s - sum(r["user_s"] + r["sys_s"] for r in results))
json.dump({"egresses": results, "cpu_busy_share": busy_s / window,
           "others_share": others_s / window}, open(f"{outdir}/run.json", "w"), indent=1)
PY
  runner_pid=$!
}

for n in $counts; do
  echo "== $n egress(es) on CPU $egress_cpu for ${dur}s (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  run_n "$n"
  # What the publisher sends halfway (Chromium lowers size or rate when its CPU is short).
  sleep $((dur / 2))
  mkdir -p "$out/n$n"
  wd stats >"$out/n$n/publisher.txt" 2>/dev/null || echo "unknown" >"$out/n$n/publisher.txt"
  wait "$runner_pid" || true
  runner_pid=""
  sleep 2
done

python3 - "$out" "$dur" "$counts" "$egress_cpu" <<'PY' | tee "$out/results.md"
import datetime, json, re, subprocess, sys
out, dur, counts, cpu = sys.argv[1], int(sys.argv[2]), [int(c) for c in sys.argv[3].split()], sys.argv[4]

def ffprobe(mp4):
    try:
        r = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
                            "-show_entries", "stream=nb_read_packets:format=duration",
                            "-of", "json", mp4], capture_output=True, text=True, timeout=60)
        j = json.loads(r.stdout or "{}")
        frames = int(j["streams"][0]["nb_read_packets"])
        return frames, float(j["format"]["duration"])
    except (OSError, ValueError, KeyError, IndexError, subprocess.TimeoutExpired):
        return 0, 0.0

def metric(text, name, label=None):
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"): continue
        m = re.match(r"([a-z_]+)(\{[^}]*\})?\s+(\S+)", line)
        if m and m.group(1) == name and (label is None or label in (m.group(2) or "")):
            total += float(m.group(3))
    return total

def connect_s(log):
    """Seconds from the egress's start to its WHEP source connected, from its log stamps."""
    stamps = {}
    for line in log.splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\dT[\d:.]+)Z\s+INFO\s+\S+ (egress started|WHEP source connected)", line)
        if m and m.group(2) not in stamps:
            stamps[m.group(2)] = datetime.datetime.fromisoformat(m.group(1)[:26])
    if len(stamps) < 2: return None
    return (stamps["WHEP source connected"] - stamps["egress started"]).total_seconds()

def status(log):
    """fps of every output status line but the first, and the last dropped count."""
    fps, dropped = [], 0
    for line in log.splitlines():
        m = re.search(r"\bup\s+\d+ kbit/s\s+([\d.]+) fps\s+dropped (\d+)", line)
        if m:
            fps.append(float(m.group(1))); dropped = int(m.group(2))
    return (fps[1:] if len(fps) > 1 else fps), dropped

print(f"Each egress: `--record` MP4, `--duration {dur}`, all pinned to CPU {cpu}. CPU share = (user+sys) / wall.")
print("Publisher: what Chromium's outbound video stats said halfway (WxH@fps). Input fps: the")
print("egress's source video frames / seconds connected (at the metrics scrape, 2 s before the end).")
print(f"Others: CPU {cpu}'s busy time (/proc/stat) not spent by the egresses, over the run.")
print()
print("| N | publisher | egress | exit | CPU share | max RSS MB | input fps | status fps min / mean | dropped (out / src) | MP4 frames (of {}) | MP4 fps | MP4 duration / wall (connected) s | held |".format(30 * dur))
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
held_by_n, short_input, busy_cpu = {}, [], []
for n in counts:
    try:
        run = json.load(open(f"{out}/n{n}/run.json"))
        runs = run["egresses"]
    except (OSError, ValueError):
        print(f"| {n} | | no results | | | | | | | | | | no |"); held_by_n[n] = False; continue
    try: publisher = open(f"{out}/n{n}/publisher.txt").read().strip() or "unknown"
    except OSError: publisher = "unknown"
    all_held, total_share = True, 0.0
    for r in runs:
        k = r["k"]
        log = open(f"{out}/n{n}/e{k}.log", errors="replace").read()
        try: mtext = open(f"{out}/n{n}/e{k}.metrics").read()
        except OSError: mtext = ""
        fps, dropped_status = status(log)
        out_drop = max(dropped_status, int(metric(mtext, "plenary_egress_output_dropped_total")))
        src_drop = int(metric(mtext, "plenary_egress_source_dropped_total"))
        frames, duration = ffprobe(r["mp4"])
        c = connect_s(log)
        src_video = metric(mtext, "plenary_egress_source_frames_total", 'kind="video"')
        in_fps = f"{src_video / (r['scrape_s'] - c):.1f}" if c is not None and r["scrape_s"] > c else "-"
        wall = r["wall_s"]
        share = (r["user_s"] + r["sys_s"]) / wall if wall else 0.0
        total_share += share
        mp4_fps = frames / duration if duration else 0.0
        fps_ok = mp4_fps >= 29.0 or frames >= 0.97 * 30 * dur
        # Wall time from the WHEP connection on: the start before it (GStreamer, the WHEP
        # POST, ICE and DTLS; ~0.5 s) is no part of keeping up, and is 5% of a 10 s run.
        live = wall - (c or 0.0)
        dur_ok = live > 0 and abs(duration - live) / live <= 0.05
        held = r["exit"] == 0 and fps_ok and dur_ok and out_drop == 0 and src_drop == 0
        all_held &= held
        fps_s = f"{min(fps):.1f} / {sum(fps) / len(fps):.1f}" if fps else "-"
        print(f"| {n} | {publisher} | {k} | {r['exit']} | {share:.0%} | {r['max_rss_kib'] / 1024:.0f} | {in_fps} | {fps_s} | "
              f"{out_drop} / {src_drop} | {frames} | {mp4_fps:.1f} | {duration:.2f} / {wall:.2f} ({live:.2f}) | "
              f"{'yes' if held else 'no'} |")
    others = run["others_share"]
    print(f"| {n} | | all | | {total_share:.0%} of CPU {cpu} (others {others:.0%}) | | | | | | | | {'**yes**' if all_held else '**no**'} |")
    if others > 0.05:
        busy_cpu.append(n)
    held_by_n[n] = all_held
    m = re.match(r"(\d+)x(\d+)@(\d+)", publisher)
    if not m or int(m.group(1)) < 1280 or int(m.group(3)) < 27:
        short_input.append(n)
# The largest N that held with every smaller N tried holding too.
largest = 0
for n in sorted(held_by_n):
    if not held_by_n[n]: break
    largest = n
print()
print(f"Largest N that held: {largest}" + ("" if largest else " (none)"))
if busy_cpu:
    print()
    print(f"Not a figure to keep: with N = {', '.join(map(str, busy_cpu))} other processes took more "
          f"than 5% of CPU {cpu} during the run (\"others\"): the egresses did not have the core to themselves.")
if short_input:
    print()
    print(f"Not a figure to keep: with N = {', '.join(map(str, short_input))} the publisher sent less "
          "than 1280x720 at 27 fps (its CPU was short), so each egress decoded less than a "
          "720p30 camera. Run again with PUB_CPU on a quiet core.")
PY
echo "results: $out/results.md (MP4s and logs in $out)" >&2
