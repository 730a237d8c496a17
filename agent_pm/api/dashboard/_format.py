"""How the console writes numbers, durations, ratios and times: one rule each, used everywhere."""

from __future__ import annotations

import math
from datetime import UTC, datetime

__all__ = ["count", "duration", "rate", "ratio", "utc", "utc_time"]


def count(value: float) -> str:
    """A count with thousands separators: ``12,345``."""
    return f"{round(value):,}"


def _significant(value: float, digits: int = 3) -> str:
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    # Rounding can carry into a new digit (999.6 -> "1000"): keep the separators readable.
    whole, _, fraction = text.partition(".")
    return f"{int(whole):,}" + (f".{fraction}" if fraction else "")


def duration(ms: float | None) -> str:
    """Milliseconds below one second, seconds above, three significant digits: ``12.3 ms``."""
    if ms is None:
        return "—"
    if abs(ms) >= 1000:
        return f"{_significant(ms / 1000)} s"
    return f"{_significant(ms)} ms"


def rate(per_second: float) -> str:
    """Events per second with three significant digits: ``12.3/s``."""
    return f"{_significant(per_second)}/s"


def ratio(value: float | None) -> str:
    """A share as a percentage with three significant digits (``82.0 %``); ``—`` when unknown."""
    if value is None:
        return "—"
    percent = value * 100
    if percent == 0:
        return "0 %"
    return f"{_significant(percent)} %"


def _parse(value: datetime | str) -> datetime:
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def utc(value: datetime | str | None, *, millis: bool = False) -> str:
    """Date and time in UTC, always with the date: ``2026-12-02 03:24:42 UTC``."""
    if value is None or value == "":
        return "—"
    when = _parse(value)
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    if millis:
        text += f".{when.microsecond // 1000:03d}"
    return f"{text} UTC"


def utc_time(value: datetime | str) -> str:
    """The ISO 8601 form for ``<time datetime=…>``, normalised to UTC."""
    return _parse(value).isoformat().replace("+00:00", "Z")
