#!/usr/bin/env python3
"""Draws the achieved send rate over time as an SVG, for bench/run (no plotting library).

Each --series LABEL=FILE is a bench/rate_analysis.py JSON; its `per_second` list (messages the
relay received in each 1 s bucket after the first message) is drawn as a step line. The ceiling
(--ceiling, messages per second) is drawn as a dashed line.

  bench/plot_rate.py --ceiling 7 --out docs/benchmarks-send-rate.svg \\
      --series 'mailroom, 1 worker=rate.json' --series 'Celery, 3 workers=celery.json'
"""

import argparse
import json
import math
import sys
from xml.sax.saxutils import escape

COLORS = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b"]
WIDTH, HEIGHT = 760, 380
LEFT, RIGHT, TOP, BOTTOM = 56, 190, 40, 48


def nice_step(span: float, ticks: int) -> float:
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--series", action="append", required=True, metavar="LABEL=FILE")
    p.add_argument("--ceiling", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="Achieved send rate at the SMTP relay (messages per 1 s bucket)")
    a = p.parse_args()

    series = []
    for item in a.series:
        label, _, path = item.partition("=")
        try:
            with open(path) as f:
                counts = json.load(f).get("per_second") or []
        except (OSError, ValueError):
            counts = []
        series.append((label, counts))
    seconds = max((len(c) for _, c in series), default=0) or 1
    top = max([a.ceiling * 1.25, *(max(c, default=0) * 1.1 for _, c in series)])
    ystep = nice_step(top, 6)
    ymax = math.ceil(top / ystep) * ystep
    xstep = nice_step(seconds, 8)
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + t / seconds * pw

    def y(v: float) -> float:
        return TOP + ph - v / ymax * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{escape(a.title)}</text>',
    ]
    v = 0.0
    while v <= ymax + 1e-9:
        out.append(f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{LEFT + pw}" y2="{y(v):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        v += ystep
    t = 0.0
    while t <= seconds + 1e-9:
        out.append(f'<line x1="{x(t):.1f}" y1="{TOP + ph}" x2="{x(t):.1f}" y2="{TOP + ph + 4}" stroke="#333"/>')
        out.append(f'<text x="{x(t):.1f}" y="{TOP + ph + 18}" text-anchor="middle">{t:g}</text>')
        t += xstep
    out.append(f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" stroke="#333"/>')
    out.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}" stroke="#333"/>')
    out.append(
        f'<text x="{LEFT + pw / 2:.1f}" y="{HEIGHT - 10}" text-anchor="middle">seconds after the first message</text>'
    )
    out.append(
        f'<text transform="translate(16 {TOP + ph / 2:.1f}) rotate(-90)" text-anchor="middle">messages per second</text>'
    )
    # Where series overlap (two that both hold the ceiling), the earlier one shows as a wider band
    # around the later one; the ceiling is drawn on top of them all.
    widths = [2 + 2.5 * (len(series) - 1 - i) for i in range(len(series))]
    for i, (label, counts) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        if counts:
            points = []
            for k, c in enumerate(counts):
                points.append(f"{x(k):.1f},{y(c):.1f}")
                points.append(f"{x(k + 1):.1f},{y(c):.1f}")
            out.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="{widths[i]:g}" stroke-linejoin="round" '
                f'stroke-opacity="0.85" points="{" ".join(points)}"/>'
            )
    out.append(
        f'<line x1="{LEFT}" y1="{y(a.ceiling):.1f}" x2="{LEFT + pw}" y2="{y(a.ceiling):.1f}" '
        'stroke="#000" stroke-width="1.5" stroke-dasharray="6 4"/>'
    )
    lx, ly = LEFT + pw + 16, TOP + 8
    for i, (label, counts) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        mean = sum(counts) / len(counts) if counts else None
        yy = ly + i * 36
        out.append(
            f'<line x1="{lx}" y1="{yy}" x2="{lx + 22}" y2="{yy}" stroke="{color}" stroke-width="{widths[i]:g}"/>'
        )
        out.append(f'<text x="{lx + 28}" y="{yy + 4}">{escape(label)}</text>')
        note = f"{sum(counts)} in {len(counts)} s ({mean:.2f}/s)" if mean is not None else "no data"
        out.append(f'<text x="{lx + 28}" y="{yy + 18}" fill="#555">{note}</text>')
    yy = ly + len(series) * 36
    out.append(
        f'<line x1="{lx}" y1="{yy}" x2="{lx + 22}" y2="{yy}" stroke="#000" stroke-width="1.5" stroke-dasharray="6 4"/>'
    )
    out.append(f'<text x="{lx + 28}" y="{yy + 4}">ceiling {a.ceiling:g}/s</text>')
    out.append("</svg>")
    with open(a.out, "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
