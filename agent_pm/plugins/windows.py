"""Windowed hook telemetry: fixed time buckets with status counts and a log-latency histogram.

One :class:`WindowRecorder` per plugin x hook keeps three rings of time buckets and a since-start
total. Every bucket row holds one count per status and one per latency bin:

=======  ============  =======  ==========================
tier     resolution    buckets  serves windows
=======  ============  =======  ==========================
fine     10 s          36       ``1m``, ``5m``
medium   1 min         60       ``1h``
coarse   10 min        144      ``24h``
total    since start   1        ``all``
=======  ============  =======  ==========================

Latency bins have fixed bounds, identical in every process: bin 0 holds durations under
``LATENCY_FLOOR_MS`` (0.01 ms), bin *i* holds ``[0.01*2^((i-1)/2), 0.01*2^(i/2))`` ms, and the
last bin everything from about 168 s up. A percentile is reported as the geometric middle of its
bin, so between the floor and the last bound it is within ``PERCENTILE_ERROR`` (2^(1/4) - 1, about
18.9 %) of the exact sample percentile. Only calls that ran (success, error, timeout) enter the
histogram.

Buckets are aligned to wall-clock time (``time // resolution``), so the buckets of several
processes add up exactly: :meth:`WindowRecorder.merge` sums another recorder's
:class:`WindowSnapshot`, which encodes to JSON or msgpack with msgspec. Memory is fixed when the
recorder is built (``RECORDER_BYTES`` of counters) whatever the traffic, and recording one sample
touches one row per tier: O(1).
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from operator import add
from typing import Annotated, Final, Literal, get_args

import msgspec

from agent_pm.plugins.telemetry import Status

__all__ = [
    "LATENCY_BINS",
    "LATENCY_FLOOR_MS",
    "PERCENTILE_ERROR",
    "RECORDER_BYTES",
    "WINDOWS",
    "BucketRow",
    "StatusCounts",
    "WindowName",
    "WindowPoint",
    "WindowRecorder",
    "WindowSnapshot",
    "WindowStats",
    "latency_bin",
    "max_points",
]

WindowName = Literal["1m", "5m", "1h", "24h", "all"]
WINDOWS: Final[tuple[WindowName, ...]] = get_args(WindowName)

STATUSES: Final[tuple[Status, ...]] = get_args(Status)
_STATUS_INDEX: Final = {status: i for i, status in enumerate(STATUSES)}
# Statuses whose calls ran a handler, and so have a meaningful duration.
_RAN: Final = frozenset(_STATUS_INDEX[s] for s in ("success", "error", "timeout"))
_FAILED: Final = (_STATUS_INDEX["error"], _STATUS_INDEX["timeout"])

LATENCY_FLOOR_MS: Final = 0.01
_STEPS_PER_DOUBLING: Final = 2
LATENCY_BINS: Final = 50
PERCENTILE_ERROR: Final = 2 ** (1 / (2 * _STEPS_PER_DOUBLING)) - 1
_BIN_SCALE: Final = _STEPS_PER_DOUBLING / math.log(2)
_WIDTH: Final = len(STATUSES) + LATENCY_BINS

# (resolution in seconds, number of buckets) per tier, finest first.
_TIERS: Final = ((10, 36), (60, 60), (600, 144))
# Window → (tier index, buckets it spans); ``all`` reads the since-start total.
_SPANS: Final[dict[WindowName, tuple[int, int]]] = {
    "1m": (0, 6),
    "5m": (0, 30),
    "1h": (1, 60),
    "24h": (2, 144),
}
LAYOUT: Final = f"v1 statuses={','.join(STATUSES)} bins={LATENCY_BINS}x2^(1/2)@0.01ms tiers=" + (
    ",".join(f"{res}sx{n}" for res, n in _TIERS)
)
_COUNT_BYTES: Final = array("I").itemsize
RECORDER_BYTES: Final = (
    sum(n for _, n in _TIERS) * (_WIDTH * _COUNT_BYTES + array("q").itemsize)
    + _WIDTH * array("Q").itemsize
)


def latency_bin(duration_ms: float) -> int:
    """The histogram bin of a duration; the same in every process."""
    if duration_ms < LATENCY_FLOOR_MS:
        return 0
    return min(int(math.log(duration_ms / LATENCY_FLOOR_MS) * _BIN_SCALE) + 1, LATENCY_BINS - 1)


def _bin_value(index: int) -> float:
    """The value reported for a percentile falling in bin ``index`` (its geometric middle)."""
    if index == 0:
        return LATENCY_FLOOR_MS
    lower = LATENCY_FLOOR_MS * 2 ** ((index - 1) / _STEPS_PER_DOUBLING)
    if index == LATENCY_BINS - 1:
        return lower
    return lower * 2 ** (0.5 / _STEPS_PER_DOUBLING)


class StatusCounts(msgspec.Struct, frozen=True):
    """Calls per status."""

    success: int = 0
    error: int = 0
    timeout: int = 0
    skipped: int = 0
    quarantined: int = 0
    deadline: int = 0


class WindowStats(msgspec.Struct, frozen=True):
    """One window of one hook: volume, outcomes and latency percentiles (milliseconds)."""

    window: WindowName
    seconds: float
    calls: int
    rate: float
    counts: StatusCounts
    error_ratio: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class WindowPoint(msgspec.Struct, frozen=True):
    """One point of a window's series, covering ``seconds`` from ``start``."""

    start: datetime
    seconds: float
    calls: int
    counts: StatusCounts
    error_ratio: float
    p95_ms: float | None


Count = Annotated[int, msgspec.Meta(ge=0)]


class BucketRow(msgspec.Struct, frozen=True, array_like=True):
    """One non-empty time bucket: its index (``time // resolution``) and its counters."""

    index: Annotated[int, msgspec.Meta(ge=0)]
    counts: list[Count]


class WindowSnapshot(msgspec.Struct, frozen=True):
    """A recorder's buckets, for another process to merge; ``layout`` must match to merge."""

    layout: str
    started: float
    tiers: list[list[BucketRow]]
    total: list[Count]


def _summary(row: list[int]) -> tuple[StatusCounts, int, float, float | None]:
    counts = StatusCounts(*row[: len(STATUSES)])
    calls = sum(row[: len(STATUSES)])
    ran = sum(row[i] for i in _RAN)
    failed = sum(row[i] for i in _FAILED)
    return counts, calls, failed / ran if ran else 0.0, _percentile(row, 0.95)


def _percentile(row: list[int], q: float) -> float | None:
    histogram = row[len(STATUSES) :]
    total = sum(histogram)
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return round(_bin_value(index), 6)
    raise AssertionError("unreachable: rank never exceeds the histogram total")


class _Tier:
    """A ring of ``size`` buckets of ``resolution`` seconds, stored flat in one array."""

    __slots__ = ("counts", "epochs", "resolution", "size")

    def __init__(self, resolution: int, size: int) -> None:
        self.resolution = resolution
        self.size = size
        self.counts = array("I", bytes(_COUNT_BYTES * _WIDTH * size))
        self.epochs = array("q", [-1]) * size

    def row(self, index: int) -> int | None:
        """The offset of bucket ``index``, clearing its slot if it held an older bucket."""
        slot = index % self.size
        held = self.epochs[slot]
        if held == index:
            return slot * _WIDTH
        if held > index:
            return None  # older than what the ring keeps
        start = slot * _WIDTH
        self.counts[start : start + _WIDTH] = _ZERO_ROW
        self.epochs[slot] = index
        return start

    def read(self, index: int) -> array[int] | None:
        slot = index % self.size
        if self.epochs[slot] != index:
            return None
        return self.counts[slot * _WIDTH : (slot + 1) * _WIDTH]

    def rows(self) -> Iterator[BucketRow]:
        for slot, index in enumerate(self.epochs):
            if index >= 0:
                counts = self.counts[slot * _WIDTH : (slot + 1) * _WIDTH]
                if any(counts):
                    yield BucketRow(index, counts.tolist())


_ZERO_ROW: Final = array("I", bytes(_COUNT_BYTES * _WIDTH))


class WindowRecorder:
    """Windowed counters and latency histograms of one plugin x hook (see the module docstring).

    ``clock`` returns wall-clock seconds (``time.time`` by default); tests inject their own.
    """

    __slots__ = ("_clock", "_tiers", "_total", "started")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tiers = tuple(_Tier(res, n) for res, n in _TIERS)
        self._total = array("Q", bytes(array("Q").itemsize * _WIDTH))
        self.started = clock()

    def record(self, status: Status, duration_ms: float) -> None:
        """Count one call at the current time; O(1)."""
        now = self._clock()
        status_index = _STATUS_INDEX[status]
        bin_index = len(STATUSES) + latency_bin(duration_ms) if status_index in _RAN else -1
        for tier in self._tiers:
            offset = tier.row(int(now // tier.resolution))
            if offset is not None:
                tier.counts[offset + status_index] += 1
                if bin_index >= 0:
                    tier.counts[offset + bin_index] += 1
        self._total[status_index] += 1
        if bin_index >= 0:
            self._total[bin_index] += 1

    def snapshot(self) -> WindowSnapshot:
        """Every non-empty bucket, for :meth:`merge` in this or another process."""
        return WindowSnapshot(
            LAYOUT,
            self.started,
            [sorted(tier.rows(), key=lambda r: r.index) for tier in self._tiers],
            self._total.tolist(),
        )

    def merge(self, snapshot: WindowSnapshot) -> None:
        """Add ``snapshot``'s buckets to these; buckets older than a ring keeps are dropped."""
        if snapshot.layout != LAYOUT:
            raise ValueError(f"cannot merge window layout {snapshot.layout!r} into {LAYOUT!r}")
        widths = {len(snapshot.total)} | {len(r.counts) for rows in snapshot.tiers for r in rows}
        if widths - {_WIDTH} or len(snapshot.tiers) != len(self._tiers):
            raise ValueError("window snapshot does not match its layout")
        for tier, rows in zip(self._tiers, snapshot.tiers, strict=True):
            for bucket in sorted(rows, key=lambda r: r.index):
                offset = tier.row(bucket.index)
                if offset is not None:
                    _add_into(tier.counts, offset, bucket.counts)
        _add_into(self._total, 0, snapshot.total)
        self.started = min(self.started, snapshot.started)

    @classmethod
    def from_snapshots(
        cls, snapshots: list[WindowSnapshot], clock: Callable[[], float] = time.time
    ) -> WindowRecorder:
        """A recorder holding the sum of ``snapshots`` (say, one per server process)."""
        recorder = cls(clock)
        for snapshot in snapshots:
            recorder.merge(snapshot)
        return recorder

    def stats(self, window: WindowName) -> WindowStats:
        """Calls, rate, outcomes, error ratio and percentiles over ``window``."""
        now = self._clock()
        if window == "all":
            row, seconds = self._total.tolist(), now - self.started
        else:
            tier_index, span = _SPANS[window]
            tier = self._tiers[tier_index]
            row = _sum_rows(_buckets(tier, int(now // tier.resolution), span))
            oldest = (int(now // tier.resolution) - span + 1) * tier.resolution
            seconds = now - max(oldest, self.started)
        counts, calls, error_ratio, _ = _summary(row)
        seconds = max(seconds, 1e-3)
        return WindowStats(
            window=window,
            seconds=round(seconds, 3),
            calls=calls,
            rate=round(calls / seconds, 3),
            counts=counts,
            error_ratio=round(error_ratio, 4),
            p50_ms=_percentile(row, 0.50),
            p95_ms=_percentile(row, 0.95),
            p99_ms=_percentile(row, 0.99),
        )

    def series(self, window: WindowName, points: int) -> list[WindowPoint]:
        """``window`` cut into ``points`` consecutive points, oldest first.

        ``all`` gives the longest kept span (24 h). ``points`` must be between 1 and the number
        of buckets the window spans (see :func:`max_points`).
        """
        tier_index, span = _SPANS["24h" if window == "all" else window]
        if not 1 <= points <= span:
            raise ValueError(f"points must be between 1 and {span} for window {window}")
        tier = self._tiers[tier_index]
        first = int(self._clock() // tier.resolution) - span + 1
        result = []
        for point in range(points):
            lo, hi = first + point * span // points, first + (point + 1) * span // points
            row = _sum_rows(_buckets(tier, hi - 1, hi - lo))
            counts, calls, error_ratio, p95 = _summary(row)
            result.append(
                WindowPoint(
                    start=datetime.fromtimestamp(lo * tier.resolution, UTC),
                    seconds=float((hi - lo) * tier.resolution),
                    calls=calls,
                    counts=counts,
                    error_ratio=round(error_ratio, 4),
                    p95_ms=p95,
                )
            )
        return result


def max_points(window: WindowName) -> int:
    """The most points a series of ``window`` can have: one per bucket."""
    return _SPANS["24h" if window == "all" else window][1]


def _buckets(tier: _Tier, newest: int, span: int) -> Iterator[array[int]]:
    for index in range(newest, newest - span, -1):
        row = tier.read(index)
        if row is not None:
            yield row


def _sum_rows(rows: Iterator[array[int]]) -> list[int]:
    total = [0] * _WIDTH
    for row in rows:
        total = list(map(add, total, row))
    return total


def _add_into(target: array[int], offset: int, counts: list[int]) -> None:
    for i, value in enumerate(counts):
        if value:
            target[offset + i] += value
