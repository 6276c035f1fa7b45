"""Daily bar charts drawn on the server as SVG: no chart script, nothing for the CSP to allow.

A chart is geometry computed here and drawn by `console/_chart.html` with SVG attributes and
CSS classes only (the policy allows no inline style). Each chart also carries its figures as a
table for screen readers and for anyone who wants the numbers rather than the bars.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

WIDTH = 640
HEIGHT = 180
LEFT = 48  # room for the value axis labels
BOTTOM = 22  # room for the first and last date
TOP = 8
GRIDLINES = 4


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    date: str
    value: int


@dataclass(frozen=True)
class Gridline:
    y: float
    label: str


@dataclass(frozen=True)
class Chart:
    """One metric per day over a range, ready to draw."""

    key: str
    title: str
    bars: tuple[Bar, ...]
    gridlines: tuple[Gridline, ...]
    total: int
    peak: int
    first_date: str
    last_date: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    base: int = HEIGHT - BOTTOM


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 2.5, 5 times a power of ten at or above `value` (0 → 1)."""
    if value <= 0:
        return 1
    power = 1
    while True:
        for step in (1, 2, 2.5, 5):
            if step * power >= value and float(step * power).is_integer():
                return int(step * power)
        power *= 10


def short(value: int) -> str:
    """An axis label: 950, 12k, 3.5M."""
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if value >= size:
            text = f"{value / size:.1f}".removesuffix(".0")
            return text + suffix
    return str(value)


def daily_chart(
    key: str, title: str, days: Iterable[Mapping[str, object]], *, total: int | None = None
) -> Chart:
    """A bar a day of `days` (rows with `date` and the metric `key`), scaled to the peak."""
    rows = [(str(d["date"]), int(d.get(key, 0) or 0)) for d in days]  # type: ignore[call-overload]
    peak = max((value for _, value in rows), default=0)
    top = nice_ceiling(peak)
    plot_width = WIDTH - LEFT - 4
    plot_height = HEIGHT - BOTTOM - TOP
    slot = plot_width / max(len(rows), 1)
    gap = min(slot * 0.2, 4.0)
    bars = []
    for n, (date, value) in enumerate(rows):
        height = plot_height * value / top
        bars.append(
            Bar(
                x=round(LEFT + n * slot + gap / 2, 2),
                y=round(TOP + plot_height - height, 2),
                width=round(max(slot - gap, 1.0), 2),
                height=round(height, 2),
                date=date,
                value=value,
            )
        )
    gridlines = tuple(
        Gridline(
            y=round(TOP + plot_height - plot_height * step / GRIDLINES, 2),
            label=short(int(top * step / GRIDLINES)) if top >= GRIDLINES else _fraction(top, step),
        )
        for step in range(GRIDLINES + 1)
    )
    return Chart(
        key=key,
        title=title,
        bars=tuple(bars),
        gridlines=gridlines,
        total=sum(value for _, value in rows) if total is None else total,
        peak=peak,
        first_date=rows[0][0] if rows else "",
        last_date=rows[-1][0] if rows else "",
    )


def _fraction(top: int, step: int) -> str:
    value = top * step / GRIDLINES
    return str(int(value)) if value.is_integer() else ""
