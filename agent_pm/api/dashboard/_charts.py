"""Chart geometry for the server-rendered SVG: time axes and latency marks.

Templates draw what these structures describe; nothing here knows about HTML. Every axis has at
least four labelled ticks, times are UTC, and the value axis comes from :mod:`._scale`, so one
slow call does not flatten the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from agent_pm.api.dashboard._format import duration, utc
from agent_pm.api.dashboard._scale import MIN_TICKS, Scale, robust_scale

__all__ = ["Axis", "LatencyChart", "Mark", "Tick", "latency_chart", "time_axis"]

WIDTH = 640.0
HEIGHT = 200.0
# Candidate spacings between time ticks, in seconds: sub-second bursts up to a day.
_TIME_STEPS = (
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
    3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Axis:
    ticks: list[Tick]
    caption: str


def _time_label(when: float, step: float) -> str:
    moment = datetime.fromtimestamp(when, UTC)
    if step < 1:
        return moment.strftime("%S.") + f"{moment.microsecond // 1000:03d} s"
    if step >= 21600:
        return moment.strftime("%m-%d %H:%M")
    return moment.strftime("%H:%M:%S" if step < 60 else "%H:%M")


def time_axis(first: float, last: float, width: float = WIDTH) -> Axis:
    """Ticks at round UTC times between ``first`` and ``last`` (epoch seconds), at least four."""
    span = max(last - first, 0.04)
    step = next((s for s in reversed(_TIME_STEPS) if span / s >= MIN_TICKS), _TIME_STEPS[0])
    start = math.ceil(first / step) * step
    ticks = []
    when = start
    while when <= first + span + 1e-9:
        position = round(width * (when - first) / span, 1)
        ticks.append(Tick(position, _time_label(when, step)))
        when = round(when + step, 6)
    # Sub-second ticks show only seconds: the caption gives the date and the minute.
    moment = utc(datetime.fromtimestamp(first, UTC))
    caption = f"time, UTC ({moment[:16] if step < 1 else moment[:10]})"
    return Axis(ticks, caption)


@dataclass(frozen=True)
class Mark:
    x: float
    y: float
    status: str
    label: str
    clipped: bool


@dataclass(frozen=True)
class LatencyChart:
    marks: list[Mark]
    x_axis: Axis
    y_ticks: list[Tick]
    scale: Scale
    width: float
    height: float
    slowest: float

    @property
    def clipped_count(self) -> int:
        return sum(mark.clipped for mark in self.marks)


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def latency_chart(samples: list[dict[str, object]]) -> LatencyChart:
    """Each sample's duration over time; ``samples`` are history entries, oldest first."""
    durations = [float(str(s["duration_ms"])) for s in samples]
    scale = robust_scale(durations, HEIGHT)
    times = [_epoch(str(s["timestamp"])) for s in samples]
    first, last = (times[0], times[-1]) if times else (0.0, 1.0)
    span = (last - first) or 1.0
    marks = []
    for when, sample, ms in zip(times, samples, durations, strict=True):
        x = round(WIDTH * (when - first) / span, 1) if len(samples) > 1 else WIDTH / 2
        label = f"#{sample['seq']} {utc(str(sample['timestamp']), millis=True)} "
        label += f"{sample['status']} {duration(ms)}"
        marks.append(Mark(x, scale.y(ms), str(sample["status"]), label, scale.clips(ms)))
    y_ticks = [Tick(scale.y(value), duration(value)) for value in scale.ticks]
    axis = time_axis(first, last if len(samples) > 1 else first + 1)
    return LatencyChart(marks, axis, y_ticks, scale, WIDTH, HEIGHT, max(durations, default=0.0))
