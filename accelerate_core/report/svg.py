"""Small inline SVG charts drawn by hand: no JavaScript, no fonts or scripts fetched from anywhere.

Every label goes through :func:`html.escape`, so a model name cannot inject markup into the page.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

SERIES_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")
"""Colours of successive series (hardware kinds, accelerators)."""
STATUS_COLOURS = {
    "done": "#2e7d32",
    "failed": "#c62828",
    "skipped": "#9e9e9e",
    "pending": "#64b5f6",
}
"""Colours of job statuses in the stacked bars."""

_W, _PAD_L, _PAD_R, _PAD_T, _PAD_B = 720, 150, 20, 34, 44
Series = tuple[str, str, Sequence[float]]  # (name, colour, values)


def _frame(title: str, height: int, body: list[str]) -> str:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{_W}" height="{height}" '
        f'viewBox="0 0 {_W} {height}" role="img" aria-label="{escape(title)}">'
        f'<rect width="{_W}" height="{height}" fill="#ffffff"/>'
        f'<text x="{_W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>'
    )
    return head + "".join(body) + "</svg>"


def _legend(series: Sequence[tuple[str, str]], y: float) -> list[str]:
    out, x = [], float(_PAD_L)
    for name, colour in series:
        out.append(f'<rect x="{x:.0f}" y="{y:.0f}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{x + 16:.0f}" y="{y + 10:.0f}" font-size="11">{escape(name)}</text>')
        x += 30 + 7 * len(name)
    return out


def stacked_bars(title: str, categories: Sequence[str], series: Sequence[Series]) -> str:
    """Horizontal stacked bars: one bar per category, one segment per series (counts)."""
    bar_h, gap = 22, 8
    height = _PAD_T + len(categories) * (bar_h + gap) + _PAD_B
    totals = [sum(s[2][i] for s in series) for i in range(len(categories))]
    scale = (_W - _PAD_L - _PAD_R) / max(max(totals, default=0), 1)
    body: list[str] = []
    for i, cat in enumerate(categories):
        y = _PAD_T + i * (bar_h + gap)
        body.append(f'<text x="{_PAD_L - 6}" y="{y + 15}" text-anchor="end" font-size="12">{escape(cat)}</text>')
        x = float(_PAD_L)
        for name, colour, values in series:
            w = values[i] * scale
            if w > 0:
                body.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}">'
                    f"<title>{escape(cat)} {escape(name)}: {values[i]:g}</title></rect>"
                )
            x += w
        body.append(f'<text x="{x + 4:.1f}" y="{y + 15}" font-size="11">{totals[i]:g}</text>')
    body += _legend([(n, c) for n, c, _ in series], height - _PAD_B + 16)
    return _frame(title, height, body)


def hbars(title: str, labels: Sequence[str], values: Sequence[float], colour: str, unit: str) -> str:
    """Horizontal bars with their value printed at the end (e.g. module load times)."""
    return stacked_bars(title, labels, [(unit, colour, values)])


def _log_bins(values: Sequence[float], bins: int) -> list[float]:
    lo, hi = math.log10(min(values)), math.log10(max(values))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    step = (hi - lo) / bins
    return [10 ** (lo + i * step) for i in range(bins + 1)]


def histogram(title: str, series: Sequence[Series], x_label: str, *, bins: int = 24) -> str:
    """Overlaid histograms on a log-scaled x axis (values must be positive)."""
    height = 300
    positive = [v for _, _, vals in series for v in vals if v > 0]
    body: list[str] = []
    if not positive:
        body.append(f'<text x="{_W / 2}" y="150" text-anchor="middle" font-size="12">no data</text>')
        return _frame(title, height, body)
    edges = _log_bins(positive, bins)
    counts = [[0] * bins for _ in series]
    for k, (_, _, vals) in enumerate(series):
        for v in vals:
            if v > 0:
                counts[k][_bin_of(v, edges)] += 1
    top = max(max(c) for c in counts) or 1
    plot_w, plot_h = _W - _PAD_L - _PAD_R, height - _PAD_T - _PAD_B - 20
    bw = plot_w / bins / max(len(series), 1)
    for k, (name, colour, _) in enumerate(series):
        for i, c in enumerate(counts[k]):
            if c:
                h = plot_h * c / top
                x = _PAD_L + i * plot_w / bins + k * bw
                y = _PAD_T + plot_h - h
                body.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bw - 1, 1):.1f}" height="{h:.1f}" fill="{colour}">'
                    f"<title>{escape(name)}: {c} in [{edges[i]:.3g}, {edges[i + 1]:.3g})</title></rect>"
                )
    body += _axes(plot_w, plot_h, edges[0], edges[-1], x_label, top)
    body += _legend([(n, c) for n, c, _ in series], height - 18)
    return _frame(title, height, body)


def _bin_of(v: float, edges: Sequence[float]) -> int:
    lo, hi = math.log10(edges[0]), math.log10(edges[-1])
    i = int((math.log10(v) - lo) / (hi - lo) * (len(edges) - 1))
    return min(max(i, 0), len(edges) - 2)


def _axes(plot_w: float, plot_h: float, x_lo: float, x_hi: float, x_label: str, y_top: float) -> list[str]:
    y0 = _PAD_T + plot_h
    out = [
        f'<line x1="{_PAD_L}" y1="{y0:.1f}" x2="{_PAD_L + plot_w:.1f}" y2="{y0:.1f}" stroke="#333"/>',
        f'<line x1="{_PAD_L}" y1="{_PAD_T}" x2="{_PAD_L}" y2="{y0:.1f}" stroke="#333"/>',
        f'<text x="{_PAD_L - 6}" y="{_PAD_T + 10}" text-anchor="end" font-size="11">{y_top:g}</text>',
        f'<text x="{_PAD_L - 6}" y="{y0:.1f}" text-anchor="end" font-size="11">0</text>',
        f'<text x="{_PAD_L}" y="{y0 + 14:.1f}" font-size="11">{x_lo:.3g}</text>',
        f'<text x="{_PAD_L + plot_w:.1f}" y="{y0 + 14:.1f}" text-anchor="end" font-size="11">{x_hi:.3g}</text>',
        f'<text x="{_PAD_L + plot_w / 2:.1f}" y="{y0 + 14:.1f}" text-anchor="middle" font-size="11">'
        f"{escape(x_label)} (log scale)</text>",
    ]
    return out


def scatter(
    title: str, points: Sequence[tuple[float, float, str, str]], x_label: str, y_label: str, *, subtitle: str = ""
) -> str:
    """A log-log scatter of (x, y, colour, tooltip) with the y = x diagonal (baseline vs current)."""
    height = 470
    pts = [p for p in points if p[0] > 0 and p[1] > 0]
    body: list[str] = []
    if not pts:
        body.append(f'<text x="{_W / 2}" y="200" text-anchor="middle" font-size="12">no data</text>')
        return _frame(title, height, body)
    lo = math.log10(min(min(p[0], p[1]) for p in pts)) - 0.05
    hi = math.log10(max(max(p[0], p[1]) for p in pts)) + 0.05
    side = min(_W - _PAD_L - _PAD_R, height - _PAD_T - _PAD_B - 16)

    def pos(v: float) -> float:
        return (math.log10(v) - lo) / (hi - lo) * side

    x0, y0 = _PAD_L, _PAD_T + 16 + side
    body.append(f'<text x="{_W / 2}" y="{_PAD_T + 4}" text-anchor="middle" font-size="11">{escape(subtitle)}</text>')
    top = y0 - side
    body.append(f'<rect x="{x0}" y="{top}" width="{side}" height="{side}" fill="none" stroke="#333"/>')
    body.append(f'<line x1="{x0}" y1="{y0}" x2="{x0 + side}" y2="{top}" stroke="#999" stroke-dasharray="4 3"/>')
    for x, y, colour, tip in pts:
        body.append(
            f'<circle cx="{x0 + pos(x):.1f}" cy="{y0 - pos(y):.1f}" r="3.5" fill="{colour}">'
            f"<title>{escape(tip)}</title></circle>"
        )
    body.append(
        f'<text x="{x0 + side / 2}" y="{y0 + 16}" text-anchor="middle" font-size="11">{escape(x_label)} (log)</text>'
    )
    body.append(
        f'<text x="{x0 - 8}" y="{top + side / 2}" text-anchor="end" font-size="11">{escape(y_label)} (log)</text>'
    )
    body.append(f'<text x="{x0}" y="{y0 + 30}" font-size="11">{10**lo:.3g} .. {10**hi:.3g}</text>')
    return _frame(title, height, body)


TimePoint = tuple[int, float | None, str]
"""(x index, value or None when there is none, tooltip) of one point of a :func:`timeline`."""


def timeline(
    title: str,
    x_labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[TimePoint]]],
    marks: Sequence[tuple[int, str]],
    y_label: str,
) -> str:
    """Values over successive steps (runs): a line and points per series, dashed marks where something changed.

    Each point is a ``<circle>`` with ``data-x`` (its step's label) and ``data-series``; a point without a
    value is a cross on the axis. Each mark is a vertical line with ``data-mark`` and its label on top.
    """
    height, top = 380, _PAD_T + 14 * (1 + len(marks))
    plot_w, plot_h = _W - _PAD_L - _PAD_R, height - top - 70
    values = [v for _, _, pts in series for _, v, _ in pts if v is not None]
    y_max = max(values, default=1.0) * 1.1 or 1.0
    step = plot_w / max(len(x_labels), 1)

    def x(i: float) -> float:
        return _PAD_L + step * (i + 0.5)

    def y(v: float) -> float:
        return top + plot_h - plot_h * v / y_max

    body = _timeline_axes(x_labels, x, top, plot_h, y_max, y_label)
    for k, (when, label) in enumerate(marks):
        at = x(when - 0.5)
        side = 'text-anchor="end" ' if at > _W / 2 else ""  # labels run away from the edge they are near
        body.append(
            f'<line data-mark="{escape(label)}" x1="{at:.1f}" y1="{top - 4}" x2="{at:.1f}" '
            f'y2="{top + plot_h:.1f}" stroke="#e08000" stroke-dasharray="5 3"/>'
            f'<text x="{at + (-3 if side else 3):.1f}" y="{_PAD_T + 12 * (k + 1)}" {side}font-size="10" '
            f'fill="#a05a00">{escape(label)}</text>'
        )
    for name, colour, pts in series:
        body += _timeline_series(name, colour, pts, x_labels, x, y, top + plot_h)
    body += _legend([(n, c) for n, c, _ in series], height - 18)
    return _frame(title, height, body)


def _timeline_axes(
    labels: Sequence[str], x: Callable[[float], float], top: float, plot_h: float, y_max: float, y_label: str
) -> list[str]:
    y0 = top + plot_h
    out = [
        f'<line x1="{_PAD_L}" y1="{y0:.1f}" x2="{_W - _PAD_R}" y2="{y0:.1f}" stroke="#333"/>',
        f'<line x1="{_PAD_L}" y1="{top:.1f}" x2="{_PAD_L}" y2="{y0:.1f}" stroke="#333"/>',
        f'<text x="{_PAD_L - 6}" y="{top + 10:.1f}" text-anchor="end" font-size="11">{y_max:.3g}</text>',
        f'<text x="{_PAD_L - 6}" y="{y0:.1f}" text-anchor="end" font-size="11">0</text>',
        f'<text x="{_PAD_L - 6}" y="{top + plot_h / 2:.1f}" text-anchor="end" font-size="11">{escape(y_label)}</text>',
    ]
    every = max(1, math.ceil(len(labels) / 12))
    for i, label in enumerate(labels):
        if i % every == 0 or i == len(labels) - 1:
            short = label if len(label) <= 24 else label[:11] + ".." + label[-11:]
            out.append(
                f'<text x="{x(i):.1f}" y="{y0 + 14:.1f}" font-size="10" text-anchor="end" '
                f'transform="rotate(-25 {x(i):.1f} {y0 + 14:.1f})">{escape(short)}</text>'
            )
    return out


def _timeline_series(
    name: str,
    colour: str,
    pts: Sequence[TimePoint],
    labels: Sequence[str],
    x: Callable[[float], float],
    y: Callable[[float], float],
    y0: float,
) -> list[str]:
    known = [(i, v) for i, v, _ in pts if v is not None]
    out = []
    if len(known) > 1:
        path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in known)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    for i, v, tip in pts:
        attrs = f'data-x="{escape(labels[i])}" data-series="{escape(name)}"'
        if v is None:
            out.append(
                f'<path {attrs} d="M{x(i) - 4:.1f},{y0 - 4:.1f} l8,8 m0,-8 l-8,8" stroke="#c62828" stroke-width="2">'
                f"<title>{escape(tip)}</title></path>"
            )
        else:
            out.append(
                f'<circle {attrs} cx="{x(i):.1f}" cy="{y(v):.1f}" r="4" fill="{colour}">'
                f"<title>{escape(tip)}</title></circle>"
            )
    return out
