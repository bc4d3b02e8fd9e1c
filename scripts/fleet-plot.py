#!/usr/bin/env python3
"""Plots BenchmarkFleet results as an SVG: CPU per edge and time to sync
against the number of edges.

Usage: scripts/fleet-plot.py < bench.out > docs/fleet-scaling.svg
It reads the lines "BenchmarkFleet/N-... cpu-ms/edge ... in-sync-s" of go
test -bench output; with several runs of one N it plots their mean.
"""
import re
import sys

runs = {}
for line in sys.stdin:
    m = re.match(r"BenchmarkFleet/(\d+)-\d+\s", line)
    if not m:
        continue
    cpu = re.search(r"([\d.]+) cpu-ms/edge", line)
    sync = re.search(r"([\d.]+) in-sync-s", line)
    if cpu and sync:
        runs.setdefault(int(m.group(1)), []).append((float(cpu.group(1)), float(sync.group(1))))
if not runs:
    sys.exit("no BenchmarkFleet lines on stdin")
pts = sorted((n, sum(c for c, _ in v) / len(v), sum(s for _, s in v) / len(v)) for n, v in runs.items())

W, H, L, R, T, B = 640, 360, 60, 60, 30, 50
maxn = max(n for n, _, _ in pts)
maxc = max(c for _, c, _ in pts) * 1.2
maxs = max(s for _, _, s in pts) * 1.2


def x(n):
    return L + (W - L - R) * n / maxn


def yl(v, top):
    return H - B - (H - T - B) * v / top


out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="#1f77b4"/>',
       f'<line x1="{W-R}" y1="{T}" x2="{W-R}" y2="{H-B}" stroke="#d62728"/>',
       f'<text x="{W/2}" y="{H-12}" text-anchor="middle">edges linking at once (N)</text>',
       f'<text x="14" y="{H/2}" transform="rotate(-90 14 {H/2})" text-anchor="middle" fill="#1f77b4">CPU per edge (ms)</text>',
       f'<text x="{W-14}" y="{H/2}" transform="rotate(90 {W-14} {H/2})" text-anchor="middle" fill="#d62728">time to all in sync (s)</text>']
for n, c, s in pts:
    out.append(f'<text x="{x(n):.1f}" y="{H-B+16}" text-anchor="middle">{n}</text>')
for i in range(5):
    v = maxc * i / 4
    out.append(f'<text x="{L-6}" y="{yl(v, maxc)+4:.1f}" text-anchor="end" fill="#1f77b4">{v:.0f}</text>')
    v = maxs * i / 4
    out.append(f'<text x="{W-R+6}" y="{yl(v, maxs)+4:.1f}" fill="#d62728">{v:.0f}</text>')
for idx, color, top in ((1, "#1f77b4", maxc), (2, "#d62728", maxs)):
    path = " ".join(f"{x(p[0]):.1f},{yl(p[idx], top):.1f}" for p in pts)
    out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
    for p in pts:
        out.append(f'<circle cx="{x(p[0]):.1f}" cy="{yl(p[idx], top):.1f}" r="3" fill="{color}"/>')
out.append("</svg>")
print("\n".join(out))
