#!/usr/bin/env python3
"""Plots one phase of a soak (loadtest/soak.sh with KEEP=DIR) as a standalone SVG.

    loadtest/plot-soak.py DIR/turn OUT.svg
    loadtest/plot-soak.py DIR/sfu OUT.svg

One panel per column of DIR/samples.csv (RSS in MiB, descriptors, each gauge) against time,
then a panel of loss: for TURN the pooled loss of every probe segment (c<cohort>-s<k>), for
the SFU the audio loss p95 of every churn round (churn-<k>), each drawn at its scheduled
start. No plotting library: the SVG is written by hand, so it runs wherever soak.sh does.
"""
import csv
import glob
import json
import os
import re
import sys

W, PANEL_H, LEFT, RIGHT, GAP = 760, 120, 80, 20, 36


def series(samples):
    rows = list(csv.DictReader(open(samples)))
    t = [float(r["t"]) for r in rows]
    out = []
    for col in rows[0].keys() if rows else []:
        if col == "t":
            continue
        vals = []
        for r in rows:
            try:
                vals.append(float(r[col]))
            except (TypeError, ValueError):
                vals.append(None)
        if col == "rss_kib":
            col, vals = "RSS (MiB)", [v / 1024 if v is not None else None for v in vals]
        out.append((col, list(zip(t, vals))))
    return out


def segment_loss(phase_dir, segment_s):
    """(scheduled start s, loss %) per probe segment or churn round."""
    points = []
    for f in glob.glob(os.path.join(phase_dir, "c*-s*", "report.json")):
        m = re.search(r"c(\d+)-s(\d+)", f)
        c, k = int(m.group(1)), int(m.group(2))
        step = json.load(open(f))["steps"][-1]
        points.append((c * segment_s / 4 + k * segment_s, step["loss_pct"]))
    churn = glob.glob(os.path.join(phase_dir, "churn-*", "report.json"))
    if churn:
        # A churn round carries no start time of its own: place it by when its report was
        # written, on the samples' clock (samples.csv was last written at its last t).
        samples = os.path.join(phase_dir, "samples.csv")
        t_last = max(float(r["t"]) for r in csv.DictReader(open(samples)))
        t0 = os.path.getmtime(samples) - t_last
        for f in churn:
            step = json.load(open(f))["steps"][-1]
            points.append((os.path.getmtime(f) - t0, step["qoe"]["audio_loss_pct"]))
    return sorted(points)


def panel(y0, title, pts, t_max, dots=False):
    vals = [v for _, v in pts if v is not None]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    lo = min(lo, 0.0) if lo >= 0 and lo < hi * 0.2 else lo
    x = lambda t: LEFT + (W - LEFT - RIGHT) * t / max(t_max, 1.0)
    y = lambda v: y0 + PANEL_H - PANEL_H * (v - lo) / (hi - lo)
    svg = [
        f'<text x="{LEFT}" y="{y0 - 6}" font-size="13">{title}</text>',
        f'<rect x="{LEFT}" y="{y0}" width="{W - LEFT - RIGHT}" height="{PANEL_H}" fill="none" stroke="#999"/>',
        f'<text x="{LEFT - 6}" y="{y0 + 10}" font-size="11" text-anchor="end">{hi:.4g}</text>',
        f'<text x="{LEFT - 6}" y="{y0 + PANEL_H}" font-size="11" text-anchor="end">{lo:.4g}</text>',
    ]
    if dots:
        svg += [f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="#c33"/>' for t, v in pts if v is not None]
    else:
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts if v is not None)
        svg.append(f'<polyline points="{line}" fill="none" stroke="#36c" stroke-width="1.5"/>')
    return svg


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: loadtest/plot-soak.py PHASE_DIR OUT.svg   (PHASE_DIR = KEEP/turn or KEEP/sfu)")
    phase_dir, out = sys.argv[1], sys.argv[2]
    samples = os.path.join(phase_dir, "samples.csv")
    if not os.path.exists(samples):
        sys.exit(f"plot-soak: {samples} not found (run loadtest/soak.sh with KEEP=DIR)")
    cols = series(samples)
    t_max = max((t for _, pts in cols for t, _ in pts), default=1.0)
    segment_s = float(os.environ.get("SEGMENT_S", "60"))
    loss = segment_loss(phase_dir, segment_s)
    panels = len(cols) + (1 if loss else 0)
    height = GAP + panels * (PANEL_H + GAP) + 20
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif">',
        f'<rect width="{W}" height="{height}" fill="white"/>',
    ]
    y0 = GAP
    for name, pts in cols:
        svg += panel(y0, name, pts, t_max)
        y0 += PANEL_H + GAP
    if loss:
        svg += panel(y0, "loss % per segment (TURN) or churn round (SFU audio p95)", loss, t_max, dots=True)
        y0 += PANEL_H + GAP
    svg.append(f'<text x="{W - RIGHT}" y="{height - 6}" font-size="11" text-anchor="end">seconds ({t_max:.0f} s)</text>')
    svg.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(svg) + "\n")
    print(f"plot-soak: {out}: {len(cols)} series, {len(loss)} loss points")


if __name__ == "__main__":
    main()
