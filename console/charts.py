"""Daily usage charts: the figures the console's pages chart, one series per metric.

The server decides what is charted (a value per UTC day, the total and the highest day); the
browser draws it with Chart.js (4.6.1, MIT, vendored under `static/console/`, no CDN), which
`static/console/charts.js` points at each chart's figures. The figures travel as a JSON data
block (Django's `json_script`: not executed, nothing for the Content-Security-Policy to allow),
and each chart also carries them as a table, for screen readers, for readers without
JavaScript and for anyone who wants the numbers rather than the bars.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Day:
    date: str
    value: int


@dataclass(frozen=True)
class Chart:
    """One metric per day over a range, ready to chart."""

    key: str
    title: str
    days: tuple[Day, ...]
    total: int
    peak: int

    @property
    def first_date(self) -> str:
        return self.days[0].date if self.days else ""

    @property
    def last_date(self) -> str:
        return self.days[-1].date if self.days else ""

    @property
    def series(self) -> dict[str, Any]:
        """What charts.js draws: the title, the dates and a value for each."""
        return {
            "title": self.title,
            "dates": [day.date for day in self.days],
            "values": [day.value for day in self.days],
        }


def daily_chart(
    key: str, title: str, days: Iterable[Mapping[str, object]], *, total: int | None = None
) -> Chart:
    """A value a day of `days` (rows with `date` and the metric `key`; a missing one is 0).

    `total` is the period's figure where it is not the sum of the days (a peak, say).
    """
    rows = tuple(
        Day(str(row["date"]), int(row.get(key, 0) or 0))  # type: ignore[call-overload]
        for row in days
    )
    return Chart(
        key=key,
        title=title,
        days=rows,
        total=sum(day.value for day in rows) if total is None else total,
        peak=max((day.value for day in rows), default=0),
    )
