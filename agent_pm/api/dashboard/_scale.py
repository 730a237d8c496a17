"""Chart axes: readable tick values and a value scale that one outlier cannot flatten.

A linear axis up to the largest value lets a single 6 s timeout squash a thousand 20 ms calls
into the bottom pixel. The axis therefore ends at a robust ceiling (a high quantile with some
headroom) whenever the maximum lies far above it; the few points beyond are drawn pinned to the
top edge and marked as clipped, with their real value in their label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Scale", "nice_ticks", "robust_scale"]

MIN_TICKS = 4
CLIP_QUANTILE = 0.95
CLIP_FACTOR = 3.0


def _nice_step(span: float, intervals: int) -> float:
    raw = span / intervals
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return float(factor * magnitude)
    return float(10 * magnitude)


def nice_ticks(top: float, intervals: int = MIN_TICKS) -> list[float]:
    """Round tick values from 0 to at least ``top``: at least ``intervals`` + 1 of them."""
    if top <= 0 or not math.isfinite(top):
        top = 1.0
    step = _nice_step(top, intervals)
    count = max(intervals, math.ceil(top / step - 1e-9))
    return [round(step * i, 10) for i in range(count + 1)]


@dataclass(frozen=True)
class Scale:
    """Maps values in ``[0, top]`` to heights in ``[0, height]``; values above ``top`` clip."""

    ticks: list[float]
    height: float
    clipped: bool

    @property
    def top(self) -> float:
        return self.ticks[-1]

    def y(self, value: float) -> float:
        """The SVG y coordinate (0 at the top) of ``value``, clipped into the plot."""
        share = min(max(value, 0.0), self.top) / self.top
        return round(self.height - self.height * share, 1)

    def clips(self, value: float) -> bool:
        return value > self.top


def robust_scale(values: list[float], height: float) -> Scale:
    """A scale for ``values`` that ends near their bulk when a few outliers lie far above it."""
    if not values:
        return Scale(nice_ticks(1.0), height, clipped=False)
    ordered = sorted(values)
    highest = ordered[-1]
    bulk = ordered[min(len(ordered) - 1, math.floor(CLIP_QUANTILE * len(ordered)))]
    clipped = bulk > 0 and highest > CLIP_FACTOR * bulk
    return Scale(nice_ticks(bulk * 1.25 if clipped else highest), height, clipped)
