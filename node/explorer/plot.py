"""The stream page's plot: gas per header and events per block, as inline SVG drawn on the server.

No chart library and no script: the explorer serves everything itself and works offline, and a
plain SVG string can be swapped into the page when it refreshes. The x axis is the header number
(mini-blocks in commit order), labelled with the chain time of its ticks: on a fast chain many
commits share a one-second timestamp, so a time axis would stack them on top of each other.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape

from node.chain.history import PlotPoint

WIDTH, PANEL_H, LEFT, RIGHT, TOP, GAP, BOTTOM = 920, 120, 70, 16, 22, 46, 36


def _fmt(v: float) -> str:
    if v >= 1_000_000:
        return f"{v / 1_000_000:.1f}M"
    if v >= 10_000:
        return f"{v / 1000:.0f}k"
    return f"{v:,.0f}" if v == int(v) or v >= 100 else f"{v:.1f}"


def _clock(ts: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts))


def plot_svg(points: Sequence[PlotPoint], window: int) -> str:
    """Two panels over the same x axis: gas share per header (line and dots), events per block (bars)."""
    height = TOP + 2 * PANEL_H + GAP + BOTTOM
    head = (f'<svg id="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
            f'height="{height}" role="img" aria-label="gas per header and events per block" '
            f'data-points="{len(points)}" style="background:#fff;box-shadow:0 1px 2px #0001;max-width:100%">')
    if not points:
        return head + (f'<text x="{WIDTH // 2}" y="{height // 2}" text-anchor="middle" font-size="13" '
                       'fill="#6b7280">no committed headers yet</text></svg>')
    n0, n1 = points[0].number, points[-1].number
    span = max(1, n1 - n0)
    plot_w = WIDTH - LEFT - RIGHT
    step = plot_w / (span + 1)

    def x(num: int) -> float:
        return LEFT + (num - n0 + 0.5) * step

    parts = [head, '<g font-family="system-ui,sans-serif" font-size="11" fill="#374151">']
    panels = (
        ("gas per header (tx gas shared over its batch)", [p.gas_share for p in points], "#2563eb", 0),
        ("events per block", [p.event_count for p in points], "#16a34a", 1),
    )
    for title, values, color, k in panels:
        y0 = TOP + k * (PANEL_H + GAP)
        vmax = max(1, max(values))
        parts.append(f'<text x="{LEFT}" y="{y0 - 6}" font-weight="600">{escape(title)}</text>')
        parts.append(f'<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" fill="#f8fafc" '
                     'stroke="#e5e7eb"/>')
        for frac in (0.0, 0.5, 1.0):
            yy = y0 + PANEL_H * (1 - frac)
            parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e5e7eb"/>')
            parts.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{_fmt(vmax * frac)}</text>')

        def y(v: int, y0: int = y0, vmax: int = vmax) -> float:
            return y0 + PANEL_H * (1 - v / vmax)

        if k == 0:
            line = " ".join(f"{x(p.number):.1f},{y(v):.1f}" for p, v in zip(points, values, strict=True))
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{line}"/>')
            r = 2.5 if len(points) <= 60 else 1.5
            parts += [f'<circle class="gas" data-n="{p.number}" cx="{x(p.number):.1f}" cy="{y(v):.1f}" r="{r}" '
                      f'fill="{color}"><title>#{p.number}: {v:,} gas</title></circle>'
                      for p, v in zip(points, values, strict=True)]
        else:
            bw = max(1.0, step * 0.7)
            parts += [f'<rect class="ev" data-n="{p.number}" x="{x(p.number) - bw / 2:.1f}" y="{y(v):.1f}" '
                      f'width="{bw:.1f}" height="{PANEL_H - (y(v) - y0):.1f}" fill="{color}">'
                      f'<title>#{p.number}: {v} events</title></rect>'
                      for p, v in zip(points, values, strict=True)]
    # x ticks: header number and its chain time (UTC), at most 6
    base = TOP + 2 * PANEL_H + GAP
    ticks = sorted({points[round(i * (len(points) - 1) / 5)].number for i in range(6)} if len(points) > 1
                   else {n0})
    by_n = {p.number: p for p in points}
    for num in ticks:
        p = by_n[num]
        # the end labels are anchored inwards, so none is cut off at the edges of the plot
        anchor = "start" if num == n0 and len(ticks) > 1 else "end" if num == n1 and len(ticks) > 1 else "middle"
        parts.append(f'<line x1="{x(num):.1f}" x2="{x(num):.1f}" y1="{base}" y2="{base + 4}" stroke="#6b7280"/>')
        parts.append(f'<text x="{x(num):.1f}" y="{base + 16}" text-anchor="{anchor}">#{num}</text>')
        parts.append(f'<text x="{x(num):.1f}" y="{base + 29}" text-anchor="{anchor}" fill="#6b7280">'
                     f'{_clock(p.timestamp)}</text>')
    parts.append(f'<text x="{WIDTH - RIGHT}" y="{TOP - 6}" text-anchor="end" fill="#6b7280">the last {len(points)} '
                 f'committed headers (at most {window}); time UTC</text>')
    parts.append("</g></svg>")
    return "".join(parts)
