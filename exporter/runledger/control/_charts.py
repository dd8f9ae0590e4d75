"""Charts as inline SVG, drawn on the server: no script, no CDN, readable offline and in
screenshots. Every chart carries a <title> per mark so hovering names the exact figure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from markupsafe import Markup, escape

__all__ = ["bars", "meter", "timeline"]


def _num(value: Any) -> float:
    return float(value or 0)


def bars(
    points: Sequence[tuple[str, Decimal | float]], *, width: int = 640, height: int = 140,
    unit: str = "$", label: str = "",
) -> Markup:  # fmt: skip
    """Return a bar chart of (label, value) points, e.g. spend per day."""
    n = max(len(points), 1)
    top = max((_num(v) for _, v in points), default=0.0) or 1.0
    gap = 2
    bar_w = max((width - 40) / n - gap, 1)
    marks = []
    for i, (name, value) in enumerate(points):
        h = (_num(value) / top) * (height - 30)
        x = 40 + i * (bar_w + gap)
        y = height - 20 - h
        title = escape(f"{name}: {unit}{_num(value):,.4f}")
        marks.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
            f"<title>{title}</title></rect>"
        )
    first = escape(points[0][0]) if points else ""
    last = escape(points[-1][0]) if points else ""
    return Markup(  # noqa: S704 - every interpolated text is escaped above
        f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}">'
        f'<text x="0" y="12" class="axis">{unit}{top:,.2f}</text>'
        f'<line x1="40" y1="{height - 20}" x2="{width}" y2="{height - 20}" class="axis-line"/>'
        + "".join(marks)
        + f'<text x="40" y="{height - 5}" class="axis">{first}</text>'
        f'<text x="{width}" y="{height - 5}" class="axis" text-anchor="end">{last}</text></svg>'
    )


def meter(value: Decimal | float, cap: Decimal | float, *, width: int = 220) -> Markup:
    """Return a cap utilisation bar (green below 80%, amber to 100%, red at the cap)."""
    frac = _num(value) / _num(cap) if _num(cap) > 0 else 1.0
    fill = min(frac, 1.0) * width
    level = "ok" if frac < 0.8 else "warn" if frac < 1.0 else "over"
    return Markup(  # noqa: S704 - every interpolated text is escaped above
        f'<svg class="meter" role="img" aria-label="{frac:.0%} of cap" viewBox="0 0 {width} 14"'
        f' width="{width}" height="14"><rect class="meter-bg" width="{width}" height="14"/>'
        f'<rect class="meter-{level}" width="{fill:.1f}" height="14"/>'
        f'<line x1="{0.8 * width:.1f}" y1="0" x2="{0.8 * width:.1f}" y2="14" class="mark80"/>'
        f"<title>{frac:.1%} of the cap</title></svg>"
    )


def timeline(spans: Sequence[dict[str, Any]], *, width: int = 640) -> Markup:
    """Return a phase timeline: one row per phase span, from its start to its end."""
    if not spans:
        return Markup('<p class="muted">No phase events yet.</p>')
    t0: datetime = min(s["start"] for s in spans)
    t1: datetime = max(s["end"] for s in spans)
    total = max((t1 - t0).total_seconds(), 1.0)
    row = 22
    height = row * len(spans) + 10
    marks = []
    for i, span in enumerate(spans):
        x = 120 + (span["start"] - t0).total_seconds() / total * (width - 130)
        w = max((span["end"] - span["start"]).total_seconds() / total * (width - 130), 2)
        y = 5 + i * row
        hours = (span["end"] - span["start"]).total_seconds() / 3600
        title = escape(f"{span['phase']}: {hours:.1f} h{' (current)' if span['open'] else ''}")
        marks.append(
            f'<text x="0" y="{y + 14}" class="axis">{escape(span["phase"])}</text>'
            f'<rect class="span{" open" if span["open"] else ""}" x="{x:.1f}" y="{y}"'
            f' width="{w:.1f}" height="16"><title>{title}</title></rect>'
        )
    return Markup(  # noqa: S704 - every interpolated text is escaped above
        f'<svg class="chart" role="img" aria-label="phase timeline" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}">' + "".join(marks) + "</svg>"
    )
