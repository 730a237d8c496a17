"""Charts of windowed telemetry: the overview's trend sparklines and the plugin page's charts.

Points come from :meth:`WindowRecorder.series <agent_pm.plugins.windows.WindowRecorder.series>`:
each covers a fixed span of a window (10 s for five minutes, 1 min for an hour, 10 min for a
day) and holds its calls per status and latency percentiles. The plugin page draws call and
error rates and the p50/p95/p99 latencies over time; the value axis comes from :mod:`._scale`,
so one slow point does not flatten the others (it is pinned to the top edge and labelled).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from agent_pm.api.dashboard._charts import HEIGHT, WIDTH, Axis, Tick, time_axis
from agent_pm.api.dashboard._format import duration, rate, utc
from agent_pm.api.dashboard._scale import Scale, robust_scale
from agent_pm.plugins.windows import WindowName, WindowPoint

__all__ = [
    "Line",
    "SeriesChart",
    "Trend",
    "latency_series_chart",
    "rate_chart",
    "series_span",
    "spark_points",
    "trend",
]

# The recorder windows that draw a selected window, and how long each covers, finest first:
# "since start" takes the finest that covers the uptime, so a young service gets 10 s points.
_SPANS: Final[dict[str, tuple[WindowName, float]]] = {
    "5m": ("5m", 300.0),
    "1h": ("1h", 3600.0),
    "24h": ("24h", 86400.0),
}
# A sparkline needs no more points than it has room for (each a whole number of buckets).
_SPARK_POINTS: Final[dict[WindowName, int]] = {"5m": 30, "1h": 30, "24h": 48}
SPARK_WIDTH: Final = 120.0
SPARK_HEIGHT: Final = 28.0
Shown = Callable[[float], str]


def series_span(window: str, uptime: float) -> WindowName:
    """The recorder window whose series draws ``window``, given the ``uptime`` in seconds."""
    if window in _SPANS:
        return _SPANS[window][0]
    return next((name for name, seconds in _SPANS.values() if uptime <= seconds), "24h")


def spark_points(window: WindowName) -> int:
    """Points of a sparkline of ``window``."""
    return _SPARK_POINTS.get(window, 30)


def _failed(point: WindowPoint) -> int:
    return point.counts.error + point.counts.timeout


@dataclass(frozen=True)
class Trend:
    """A plugin's calls and failed calls per point, as sparkline polylines."""

    calls: str
    failed: str
    peak: int
    total: int
    points: int
    seconds: float

    @property
    def label(self) -> str:
        step = duration(self.seconds * 1000)
        return f"{self.total:,} calls, at most {self.peak:,} per {step}; failed calls in red"


def trend(series: Sequence[Sequence[WindowPoint]]) -> Trend | None:
    """The summed trend of several hooks' series (same window and points); ``None`` for none."""
    if not series or not series[0]:
        return None
    calls = [sum(points[i].calls for points in series) for i in range(len(series[0]))]
    failed = [sum(_failed(points[i]) for points in series) for i in range(len(series[0]))]
    scale = robust_scale([float(c) for c in calls], SPARK_HEIGHT - 2)
    return Trend(
        _polyline(calls, scale),
        _polyline(failed, scale),
        max(calls),
        sum(calls),
        len(calls),
        series[0][0].seconds,
    )


def _polyline(values: Sequence[float], scale: Scale) -> str:
    step = SPARK_WIDTH / max(len(values) - 1, 1)
    return " ".join(f"{round(i * step, 1)},{scale.y(v) + 1}" for i, v in enumerate(values))


@dataclass(frozen=True)
class Pinned:
    """A point above the axis, drawn on the top edge with its real value."""

    x: float
    label: str


@dataclass(frozen=True)
class Line:
    """One series of a chart: polyline segments (broken where a point has no value)."""

    name: str
    segments: list[str]
    dots: list[tuple[float, float]]
    pinned: list[Pinned]
    latest: str


@dataclass(frozen=True)
class SeriesChart:
    lines: list[Line]
    x_axis: Axis
    y_ticks: list[Tick]
    scale: Scale
    width: float
    height: float
    calls: int
    start: str
    end: str

    @property
    def pinned_count(self) -> int:
        return sum(len(line.pinned) for line in self.lines)


def _xs(points: Sequence[WindowPoint]) -> tuple[list[float], Axis]:
    first = points[0].start.timestamp()
    last = points[-1].start.timestamp() + points[-1].seconds
    span = last - first
    xs = [round(WIDTH * (p.start.timestamp() + p.seconds / 2 - first) / span, 1) for p in points]
    return xs, time_axis(first, last)


def _line(
    name: str,
    values: list[float | None],
    xs: list[float],
    scale: Scale,
    shown: Shown,
) -> Line:
    segments: list[str] = []
    current: list[str] = []
    dots, pinned = [], []
    for x, value in zip(xs, values, strict=True):
        if value is None:
            if current:
                segments.append(" ".join(current))
            current = []
            continue
        current.append(f"{x},{scale.y(value)}")
        dots.append((x, scale.y(value)))
        if scale.clips(value):
            pinned.append(Pinned(x, f"{name} {shown(value)}"))
    if current:
        segments.append(" ".join(current))
    latest = next((v for v in reversed(values) if v is not None), None)
    return Line(name, segments, dots, pinned, "—" if latest is None else shown(latest))


def _chart(
    points: Sequence[WindowPoint], named: dict[str, list[float | None]], shown: Shown
) -> SeriesChart:
    xs, axis = _xs(points)
    values = [v for series in named.values() for v in series if v is not None]
    scale = robust_scale(values, HEIGHT)
    lines = [_line(name, series, xs, scale, shown) for name, series in named.items()]
    y_ticks = [Tick(scale.y(value), shown(value)) for value in scale.ticks]
    end = points[-1].start + timedelta(seconds=points[-1].seconds)
    return SeriesChart(
        lines,
        axis,
        y_ticks,
        scale,
        WIDTH,
        HEIGHT,
        sum(p.calls for p in points),
        utc(points[0].start),
        utc(end),
    )


def rate_chart(points: Sequence[WindowPoint]) -> SeriesChart | None:
    """Calls and failed calls (error or timeout) per second, point by point."""
    if not points:
        return None
    calls: list[float | None] = [p.calls / p.seconds for p in points]
    failed: list[float | None] = [_failed(p) / p.seconds for p in points]
    return _chart(points, {"calls": calls, "failed": failed}, rate)


def latency_series_chart(points: Sequence[WindowPoint]) -> SeriesChart | None:
    """The p50, p95 and p99 latency of the calls that ran, point by point (gaps: none ran)."""
    if not points:
        return None
    named: dict[str, list[float | None]] = {
        "p50": [p.p50_ms for p in points],
        "p95": [p.p95_ms for p in points],
        "p99": [p.p99_ms for p in points],
    }
    return _chart(points, named, duration)
