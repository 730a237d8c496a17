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
recorder is built (``RECORDER_BYTES`` of counters) whatever the traffic. Recording one sample
adds to a pending row only (two counters): the pending counts are added to every tier, the total
and the recent window when the ten-second bucket changes or before anything is read, so each
sample costs O(1) and each flush O(columns touched).
"""

from __future__ import annotations

import functools
import math
import time
from array import array
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from operator import add
from typing import TYPE_CHECKING, Annotated, Final, Literal, NamedTuple, get_args

import msgspec

if TYPE_CHECKING:  # telemetry records into windows, so windows cannot import it at run time
    from agent_pm.plugins.telemetry import Status

__all__ = [
    "LATENCY_BINS",
    "LATENCY_FLOOR_MS",
    "PERCENTILE_ERROR",
    "RECENT_WINDOW",
    "RECORDER_BYTES",
    "WINDOWS",
    "BucketRow",
    "Recent",
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

# The order of ``Status`` (a test checks they agree); counters are laid out in this order.
STATUSES: Final[tuple[Status, ...]] = (
    "success",
    "error",
    "timeout",
    "skipped",
    "quarantined",
    "deadline",
)
_STATUS_INDEX: Final = {status: i for i, status in enumerate(STATUSES)}
# Statuses whose calls ran a handler, and so have a meaningful duration.
_RAN: Final = frozenset(_STATUS_INDEX[s] for s in ("success", "error", "timeout"))
_FAILED: Final = (_STATUS_INDEX["error"], _STATUS_INDEX["timeout"])
_SUCCESS, _ERROR, _TIMEOUT, _SKIPPED, _QUARANTINED = (
    _STATUS_INDEX[s] for s in ("success", "error", "timeout", "skipped", "quarantined")
)

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
# The window kept as running sums, updated per sample, so health is judged in O(1).
RECENT_WINDOW: Final[WindowName] = "5m"
_RECENT_SPAN: Final = _SPANS[RECENT_WINDOW][1]
LAYOUT: Final = f"v1 statuses={','.join(STATUSES)} bins={LATENCY_BINS}x2^(1/2)@0.01ms tiers=" + (
    ",".join(f"{res}sx{n}" for res, n in _TIERS)
)
_COUNT_BYTES: Final = array("I").itemsize
_FINE_SECONDS: Final = _TIERS[0][0]
_RAN_STATUSES: Final = 3  # success, error and timeout come first in STATUSES
_FIRST_BIN: Final = len(STATUSES)
_LAST_BIN: Final = _WIDTH - 1
_log = math.log
RECORDER_BYTES: Final = (
    sum(n for _, n in _TIERS) * (_WIDTH * _COUNT_BYTES + array("q").itemsize)
    + 2 * _WIDTH * array("Q").itemsize  # the total and the recent window's running sums
    + _WIDTH * _COUNT_BYTES  # the pending row
)


def latency_bin(duration_ms: float) -> int:
    """The histogram bin of a duration; the same in every process."""
    if duration_ms < LATENCY_FLOOR_MS:
        return 0
    return min(int(math.log(duration_ms / LATENCY_FLOOR_MS) * _BIN_SCALE) + 1, LATENCY_BINS - 1)


@functools.lru_cache(maxsize=64)  # one value per distinct plugin timeout
def _slow_from(slow_ms: float) -> int:
    """The first counter column of the bins wholly above ``slow_ms``."""
    return _FIRST_BIN + latency_bin(slow_ms) + 1


def _bin_value(index: int) -> float:
    """The value reported for a percentile falling in bin ``index`` (its geometric middle)."""
    if index == 0:
        return LATENCY_FLOOR_MS
    lower = LATENCY_FLOOR_MS * 2 ** ((index - 1) / _STEPS_PER_DOUBLING)
    if index == LATENCY_BINS - 1:
        return lower
    return lower * 2 ** (0.5 / _STEPS_PER_DOUBLING)


class Recent(NamedTuple):
    """Calls of the ``RECENT_WINDOW`` by outcome; ``slow`` ran past the given latency."""

    calls: int
    ran: int
    failed: int
    skipped: int
    quarantined: int
    slow: int


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
    p50_ms: float | None = None
    p99_ms: float | None = None


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
    """A ring of ``size`` buckets of ``resolution`` seconds, rows at ``base`` in ``counts``.

    Every tier of a recorder shares one flat array, so recording adds at plain offsets.
    """

    __slots__ = ("base", "counts", "epochs", "resolution", "size")

    def __init__(self, resolution: int, size: int, counts: array[int], base: int) -> None:
        self.resolution = resolution
        self.size = size
        self.counts = counts
        self.base = base
        self.epochs = array("q", [-1]) * size

    def row(self, index: int) -> int | None:
        """The offset of bucket ``index``, clearing its slot if it held an older bucket."""
        slot = index % self.size
        held = self.epochs[slot]
        start = self.base + slot * _WIDTH
        if held == index:
            return start
        if held > index:
            return None  # older than what the ring keeps
        self.counts[start : start + _WIDTH] = _ZERO_ROW
        self.epochs[slot] = index
        return start

    def read(self, index: int) -> array[int] | None:
        slot = index % self.size
        if self.epochs[slot] != index:
            return None
        start = self.base + slot * _WIDTH
        return self.counts[start : start + _WIDTH]

    def rows(self) -> Iterator[BucketRow]:
        for slot, index in enumerate(self.epochs):
            if index >= 0:
                start = self.base + slot * _WIDTH
                counts = self.counts[start : start + _WIDTH]
                if any(counts):
                    yield BucketRow(index, counts.tolist())


_ZERO_ROW: Final = array("I", bytes(_COUNT_BYTES * _WIDTH))


class WindowRecorder:
    """Windowed counters and latency histograms of one plugin x hook (see the module docstring).

    ``clock`` returns wall-clock seconds (``time.time`` by default); tests inject their own.
    """

    __slots__ = (
        "_clock",
        "_counts",
        "_dirty",
        "_index",
        "_offsets",
        "_pending",
        "_recent",
        "_recent_newest",
        "_tiers",
        "_total",
        "started",
    )

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts = array("I", bytes(_COUNT_BYTES * _WIDTH * sum(n for _, n in _TIERS)))
        bases = [0]
        for _, n in _TIERS[:-1]:
            bases.append(bases[-1] + n * _WIDTH)
        self._tiers = tuple(
            _Tier(res, n, self._counts, base) for (res, n), base in zip(_TIERS, bases, strict=True)
        )
        # The current fine bucket and each tier's row for it: recording only adds at offsets.
        self._index = -1
        self._offsets: tuple[int, ...] = ()
        # Counts of the current fine bucket not yet added anywhere else, and their columns.
        self._pending = array("I", bytes(_COUNT_BYTES * _WIDTH))
        self._dirty: list[int] = []
        self._total = array("Q", bytes(array("Q").itemsize * _WIDTH))
        # Running sums of the fine buckets inside RECENT_WINDOW, newest bucket ``_recent_newest``.
        self._recent = array("Q", bytes(array("Q").itemsize * _WIDTH))
        self._recent_newest = -1
        self.started = clock()

    def record(self, status: Status, duration_ms: float) -> None:
        """Count one call at the current time; O(1)."""
        index = int(self._clock() // _FINE_SECONDS)
        if index != self._index:
            if index < self._index:
                self._record_late(index, status, duration_ms)
                return
            self._rotate(index)
        pending = self._pending
        status_index = _STATUS_INDEX[status]
        if not pending[status_index]:
            self._dirty.append(status_index)
        pending[status_index] += 1
        if status_index < _RAN_STATUSES:
            if duration_ms < LATENCY_FLOOR_MS:
                bin_index = _FIRST_BIN
            else:
                bin_index = min(
                    int(_log(duration_ms / LATENCY_FLOOR_MS) * _BIN_SCALE) + 1 + _FIRST_BIN,
                    _LAST_BIN,
                )
            if not pending[bin_index]:
                self._dirty.append(bin_index)
            pending[bin_index] += 1

    def _flush(self) -> None:
        """Add the pending counts of the current fine bucket to every tier's row for it, the
        total and the recent window."""
        dirty = self._dirty
        if not dirty:
            return
        pending, counts, recent, total = self._pending, self._counts, self._recent, self._total
        offsets = self._offsets
        for column in dirty:
            value = pending[column]
            pending[column] = 0
            for offset in offsets:
                counts[offset + column] += value
            recent[column] += value
            total[column] += value
        dirty.clear()

    def _rotate(self, index: int) -> None:
        """Start fine bucket ``index``: move the recent window on and find each tier's row."""
        self._advance(index)
        self._index = index
        seconds = index * _FINE_SECONDS
        offsets = (tier.row(seconds // tier.resolution) for tier in self._tiers)
        self._offsets = tuple(offset for offset in offsets if offset is not None)

    def _record_late(self, index: int, status: Status, duration_ms: float) -> None:
        """Count a call stamped before the current bucket (the wall clock stepped back)."""
        status_index = _STATUS_INDEX[status]
        columns = [status_index]
        if status_index < _RAN_STATUSES:
            columns.append(len(STATUSES) + latency_bin(duration_ms))
        seconds = index * _FINE_SECONDS
        offsets = [tier.row(seconds // tier.resolution) for tier in self._tiers]
        in_recent = index > self._recent_newest - _RECENT_SPAN
        for column in columns:
            for offset in offsets:
                if offset is not None:
                    self._counts[offset + column] += 1
            self._total[column] += 1
            if in_recent:
                self._recent[column] += 1

    def snapshot(self) -> WindowSnapshot:
        """Every non-empty bucket, for :meth:`merge` in this or another process."""
        self._flush()
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
        self._flush()
        for tier, rows in zip(self._tiers, snapshot.tiers, strict=True):
            for bucket in sorted(rows, key=lambda r: r.index):
                offset = tier.row(bucket.index)
                if offset is not None:
                    _add_into(tier.counts, offset, bucket.counts)
        self._index = -1  # merged buckets may have replaced the rows recording pointed at
        _add_into(self._total, 0, snapshot.total)
        self.started = min(self.started, snapshot.started)
        self._recent_newest = max(self._recent_newest, int(self._clock() // _TIERS[0][0]))
        recent = _sum_rows(_buckets(self._tiers[0], self._recent_newest, _RECENT_SPAN))
        self._recent = array("Q", recent)

    def _advance(self, index: int) -> None:
        """Move the recent window's newest bucket to ``index``, dropping buckets that left it.

        Called before a bucket is written, so every bucket that leaves is still in the ring.
        The pending counts are flushed first when it moves: they belong to the bucket recorded
        until now.
        """
        newest = self._recent_newest
        if index <= newest:
            return
        self._flush()
        self._recent_newest = index
        leaving = range(newest - _RECENT_SPAN + 1, min(index - _RECENT_SPAN, newest) + 1)
        if len(leaving) >= _RECENT_SPAN or newest < 0:
            self._recent = array("Q", bytes(array("Q").itemsize * _WIDTH))
            return
        fine = self._tiers[0]
        for old in leaving:
            row = fine.read(old)
            if row is not None:
                for i, value in enumerate(row):
                    if value:
                        self._recent[i] -= value

    def recent(self, slow_ms: float) -> Recent:
        """Calls of the last ``RECENT_WINDOW`` by outcome; ``slow``: those past ``slow_ms``.

        Cheap enough to run per sample: the running sums plus the pending row, unflushed.
        """
        self._advance(int(self._clock() // _FINE_SECONDS))
        sums, pending = self._recent, self._pending
        failed = sums[_ERROR] + pending[_ERROR] + sums[_TIMEOUT] + pending[_TIMEOUT]
        slow_from = _slow_from(slow_ms)
        return Recent(
            sum(sums[:_FIRST_BIN]) + sum(pending[:_FIRST_BIN]),
            sums[_SUCCESS] + pending[_SUCCESS] + failed,
            failed,
            sums[_SKIPPED] + pending[_SKIPPED],
            sums[_QUARANTINED] + pending[_QUARANTINED],
            sum(sums[slow_from:]) + sum(pending[slow_from:]),
        )

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
        self._flush()
        now = self._clock()
        if window == "all":
            row, seconds = self._total.tolist(), now - self.started
        elif window == RECENT_WINDOW:
            self._advance(int(now // _TIERS[0][0]))
            row = self._recent.tolist()
            oldest = (self._recent_newest - _RECENT_SPAN + 1) * _TIERS[0][0]
            seconds = now - max(oldest, self.started)
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
        self._flush()
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
                    p50_ms=_percentile(row, 0.50),
                    p99_ms=_percentile(row, 0.99),
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
