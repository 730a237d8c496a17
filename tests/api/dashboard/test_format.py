"""Numbers, durations, ratios and times as the console writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from agent_pm.api.dashboard._format import count, duration, ratio, utc, utc_time


def test_count_has_thousands_separators() -> None:
    assert [count(v) for v in (0, 999, 1000, 2462, 1234567)] == [
        "0", "999", "1,000", "2,462", "1,234,567",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (None, "—"),
        (0, "0 ms"),
        (0.0123456, "0.0123 ms"),
        (0.353, "0.353 ms"),
        (12.345, "12.3 ms"),
        (999.6, "1,000 ms"),
        (1000, "1.00 s"),
        (6012.4, "6.01 s"),
        (123456, "123 s"),
    ],
)
def test_duration_uses_three_significant_digits(ms: float | None, text: str) -> None:
    assert duration(ms) == text


def test_ratio_is_a_percentage() -> None:
    assert [ratio(v) for v in (None, 0, 0.82, 1, 0.00123)] == [
        "—", "0 %", "82.0 %", "100 %", "0.123 %",
    ]  # fmt: skip


def test_times_are_utc_with_the_date() -> None:
    when = datetime(2026, 12, 2, 5, 4, 3, 21_000, tzinfo=timezone(timedelta(hours=2)))
    assert utc(when) == "2026-12-02 03:04:03 UTC"
    assert utc(when.isoformat(), millis=True) == "2026-12-02 03:04:03.021 UTC"
    assert utc(None) == "—"
    assert utc_time(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00Z"
