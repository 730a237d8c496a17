"""Chart axes: enough ticks, round values, UTC times, and outliers that do not flatten the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from agent_pm.api.dashboard._charts import latency_chart, time_axis
from agent_pm.api.dashboard._scale import nice_ticks, robust_scale

START = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize("top", [0.0, 0.37, 1, 7, 98, 1234, 6000.5])
def test_nice_ticks_cover_the_top_with_at_least_five_round_values(top: float) -> None:
    ticks = nice_ticks(top)
    assert len(ticks) >= 5 and ticks[0] == 0 and ticks[-1] >= top
    steps = {round(b - a, 9) for a, b in pairwise(ticks)}
    assert len(steps) == 1


def test_one_outlier_does_not_flatten_the_rest() -> None:
    values = [20.0 + i % 5 for i in range(99)] + [6000.0]
    scale = robust_scale(values, 200)
    assert scale.clipped and scale.top < 100
    assert scale.y(6000) == 0 and scale.clips(6000) and not scale.clips(24)
    # The bulk spans a good part of the height instead of the bottom pixel.
    assert scale.y(20) - scale.y(24) > 10
    assert not robust_scale([1.0, 2.0, 3.0], 200).clipped


@pytest.mark.parametrize("span", [0.0, 0.05, 0.9, 3, 50, 290, 3600, 86400, 200_000])
def test_time_axis_has_at_least_four_ticks_inside_the_plot(span: float) -> None:
    first = START.timestamp()
    axis = time_axis(first, first + span, width=640)
    assert len(axis.ticks) >= 4
    assert all(0 <= t.position <= 640 for t in axis.ticks)
    assert "2026-12-02" in axis.caption and "UTC" in axis.caption


def _sample(seq: int, seconds: float, ms: float, status: str = "success") -> dict[str, object]:
    when = START + timedelta(seconds=seconds)
    return {"seq": seq, "timestamp": when.isoformat(), "status": status, "duration_ms": ms}


def test_latency_chart_marks_clipped_outliers_with_their_real_value() -> None:
    samples = [_sample(i, i, 10.0) for i in range(30)] + [_sample(30, 30, 6000, "timeout")]
    chart = latency_chart(samples)
    assert chart.clipped_count == 1 and chart.slowest == 6000
    outlier = chart.marks[-1]
    assert (
        outlier.clipped and outlier.y == 0 and "6.00 s" in outlier.label and "#30" in outlier.label
    )
    assert len(chart.y_ticks) >= 5 and chart.y_ticks[0].label == "0 ms"
    assert chart.marks[0].x == 0 and outlier.x == chart.width
    assert latency_chart([]).marks == []
