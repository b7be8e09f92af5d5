"""The dashboard's figures as SVG drawn on the server (no charting script, nothing
fetched by the browser): a campaign's step graph coloured by state, its progress over
time, and per task box plots of CPU time and peak memory. Each function takes a read
model of :mod:`skybatch.read.dashboard` and returns an ``<svg>`` document."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from xml.sax.saxutils import escape

from skybatch.read.dashboard import Distribution, Progress, StepNode, TaskResources

__all__ = ["STATE_COLOURS", "boxes_svg", "graph_svg", "progress_svg"]

STATE_COLOURS = {
    "succeeded": "#4a4",
    "running": "#48c",
    "failed": "#c44",
    "held": "#c44",
    "paused": "#d90",
    "cancelled": "#888",
    "ready": "#9bd",
}
_OTHER = "#bbb"
_FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" {_FONT}>'
        + "".join(body)
        + "</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{escape(text)}</text>'


def _empty(width: int, message: str) -> str:
    return _svg(width, 40, [_text(8, 24, message, extra='fill="#666"')], message)


def graph_svg(nodes: Sequence[StepNode]) -> str:
    """The steps left to right by layer (a step right of those it waits for), each a
    box in its state's colour, with an arrow from each dependency."""
    if not nodes:
        return _empty(400, "no steps")
    box_w, box_h, gap_x, gap_y, pad = 150, 38, 60, 18, 10
    rows: dict[int, int] = {}
    where: dict[str, tuple[float, float]] = {}
    for node in nodes:
        row = rows.get(node.layer, 0)
        rows[node.layer] = row + 1
        where[node.name] = (pad + node.layer * (box_w + gap_x), pad + row * (box_h + gap_y))
    width = int(pad * 2 + (max(rows) + 1) * (box_w + gap_x) - gap_x)
    height = int(pad * 2 + max(rows.values()) * (box_h + gap_y) - gap_y)
    body = [
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>'
    ]
    for node in nodes:
        x, y = where[node.name]
        for dependency in node.depends_on:
            dx, dy = where[dependency]
            body.append(
                f'<line x1="{dx + box_w:.1f}" y1="{dy + box_h / 2:.1f}" x2="{x:.1f}" '
                f'y2="{y + box_h / 2:.1f}" stroke="#555" marker-end="url(#arrow)"/>'
            )
    for node in nodes:
        x, y = where[node.name]
        colour = STATE_COLOURS.get(node.state, _OTHER)
        body.append(
            f'<g class="step" data-step="{escape(node.name)}" data-state="{escape(node.state)}">'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{box_w}" height="{box_h}" rx="5" '
            f'fill="{colour}" fill-opacity="0.25" stroke="{colour}" stroke-width="2"/>'
            + _text(x + box_w / 2, y + 16, node.name, "middle", 'font-weight="bold"')
            + _text(x + box_w / 2, y + 31, node.state, "middle", 'fill="#333"')
            + "</g>"
        )
    return _svg(width, height, body, "the campaign's steps and their dependencies")


def _time_label(t: datetime, span_s: float) -> str:
    return t.strftime("%H:%M:%S" if span_s < 3600 else "%m-%d %H:%M")


def progress_svg(progress: Progress, width: int = 640, height: int = 220) -> str:
    """Cumulative succeeded (green) and failed (red) quanta over time."""
    if not progress.times:
        return _empty(width, "no quantum has ended yet")
    left, right, top, bottom = 56, 12, 12, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    start, end = progress.times[0], progress.times[-1]
    span = max((end - start).total_seconds(), 1e-9)
    peak = max(max(progress.succeeded), max(progress.failed), 1)

    def point(t: datetime, n: int) -> str:
        x = left + plot_w * ((t - start).total_seconds() / span if len(progress.times) > 1 else 1)
        return f"{x:.1f},{top + plot_h * (1 - n / peak):.1f}"

    body = [
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#ccc"/>',
        _text(left - 6, top + 10, f"{peak:,}", "end"),
        _text(left - 6, top + plot_h, "0", "end"),
        _text(left, height - 10, _time_label(start, span)),
        _text(left + plot_w, height - 10, _time_label(end, span), "end"),
    ]
    for name, values, colour in (
        ("succeeded", progress.succeeded, "#4a4"),
        ("failed", progress.failed, "#c44"),
    ):
        points = " ".join(point(t, n) for t, n in zip(progress.times, values, strict=True))
        body.append(
            f'<polyline class="{name}" points="{points}" fill="none" stroke="{colour}" '
            f'stroke-width="2"/>'
        )
    body.append(
        _text(left + 8, top + 16, f"succeeded {progress.succeeded[-1]:,}", extra='fill="#282"')
    )
    body.append(_text(left + 8, top + 32, f"failed {progress.failed[-1]:,}", extra='fill="#a22"'))
    return _svg(width, height, body, "quanta ended over time")


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def boxes_svg(resources: Sequence[TaskResources], what: str, width: int = 640) -> str:
    """One box plot per task (min, quartiles, median, max) of ``what``: ``cpu`` (CPU
    seconds) or ``memory`` (peak MB)."""
    unit = "CPU s" if what == "cpu" else "peak MB"
    rows: list[tuple[str, Distribution]] = [
        (r.task, r.cpu_s if what == "cpu" else r.peak_memory_mb) for r in resources
    ]
    rows = [(task, d) for task, d in rows if d.count]
    if not rows:
        return _empty(width, f"no {unit} measured yet")
    left, right, top, row_h = 150, 130, 22, 26
    plot_w = width - left - right
    height = top + row_h * len(rows) + 20
    high = max(d.max or 0 for _, d in rows) or 1.0

    def x(value: float | None) -> float:
        return left + plot_w * (value or 0) / high

    body = [
        _text(left, 14, "0", "middle", 'fill="#666"'),
        _text(left + plot_w, 14, f"{_number(high)} {unit}", "middle", 'fill="#666"'),
    ]
    for i, (task, d) in enumerate(rows):
        y = top + i * row_h
        mid = y + row_h / 2
        body.append(
            f'<g class="task" data-task="{escape(task)}">'
            + _text(left - 8, mid + 4, task, "end")
            + f'<line x1="{x(d.min):.1f}" y1="{mid:.1f}" x2="{x(d.max):.1f}" y2="{mid:.1f}" '
            'stroke="#555"/>'
            f'<rect x="{x(d.q1):.1f}" y="{y + 5:.1f}" width="{max(x(d.q3) - x(d.q1), 1):.1f}" '
            f'height="{row_h - 10}" fill="#9bd" stroke="#357"/>'
            f'<line x1="{x(d.median):.1f}" y1="{y + 5:.1f}" x2="{x(d.median):.1f}" '
            f'y2="{y + row_h - 5:.1f}" stroke="#135" stroke-width="2"/>'
            + _text(width - right + 6, mid + 4, f"{_number(d.median or 0)} (n={d.count:,})")
            + "</g>"
        )
    return _svg(width, height, body, f"{unit} per task")
