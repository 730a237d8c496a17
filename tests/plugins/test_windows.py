"""Windowed telemetry: buckets per window, percentiles within their bound, series and merging."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_pm.plugins.windows import (
    LATENCY_BINS,
    LATENCY_FLOOR_MS,
    PERCENTILE_ERROR,
    RECORDER_BYTES,
    StatusCounts,
    WindowRecorder,
    WindowSnapshot,
    latency_bin,
    max_points,
)
from tests.fixtures.clock import FakeClock

# Aligned to every tier's resolution, so bucket edges fall where the tests expect them.
T0 = 1_800_000_000.0 - (1_800_000_000 % 600)


def recorder_at(start: float = T0) -> tuple[WindowRecorder, FakeClock]:
    clock = FakeClock(start)
    return WindowRecorder(clock), clock


def test_windows_count_each_status_rate_and_error_ratio() -> None:
    recorder, clock = recorder_at()
    for status in ["success"] * 6 + ["error"] * 3 + ["timeout", "skipped", "quarantined"]:
        recorder.record(status, 5.0)  # type: ignore[arg-type]
    clock.advance(20)
    stats = recorder.stats("1m")
    assert stats.counts == StatusCounts(success=6, error=3, timeout=1, skipped=1, quarantined=1)
    assert stats.calls == 12
    # Failures over calls that ran: skipped and quarantined calls never ran a handler.
    assert stats.error_ratio == round(4 / 10, 4)
    assert stats.seconds == 20.0
    assert stats.rate == round(12 / 20, 3)


def test_windows_reads_between_samples_of_one_bucket_count_each_sample_once() -> None:
    recorder, clock = recorder_at()
    recorder.record("success", 1.0)
    recorder.record("error", 2.0)
    assert recorder.recent(1000.0).calls == 2
    recorder.record("success", 1.0)
    assert [recorder.stats(w).calls for w in ("1m", "5m", "1h", "24h", "all")] == [3] * 5
    snapshot = recorder.snapshot()
    recorder.record("timeout", 3.0)
    assert sum(row.counts[0] for row in snapshot.tiers[0]) == 2  # successes when it was taken
    clock.advance(10)  # the next bucket
    recorder.record("success", 1.0)
    assert [recorder.stats(w).calls for w in ("1m", "5m", "1h", "24h", "all")] == [5] * 5
    assert [p.calls for p in recorder.series("1m", 6)][-2:] == [4, 1]
    assert recorder.recent(1000.0).failed == 2


def test_windows_forget_old_buckets_per_window_but_keep_the_total() -> None:
    recorder, clock = recorder_at()
    recorder.record("error", 1.0)
    clock.advance(120)
    recorder.record("success", 1.0)
    assert recorder.stats("1m").calls == 1
    assert recorder.stats("5m").calls == 2
    clock.advance(300)
    assert recorder.stats("5m").calls == 0
    assert recorder.stats("1h").calls == 2
    clock.advance(3600)
    assert recorder.stats("1h").calls == 0
    assert recorder.stats("24h").calls == 2
    clock.advance(86_400)
    assert recorder.stats("24h").calls == 0
    assert recorder.stats("all").counts == StatusCounts(success=1, error=1)
    assert recorder.stats("all").p50_ms is not None


def test_windows_with_no_calls_have_no_percentiles() -> None:
    recorder, _ = recorder_at()
    recorder.record("skipped", 0.0)
    stats = recorder.stats("5m")
    assert (stats.calls, stats.error_ratio, stats.p50_ms, stats.p99_ms) == (1, 0.0, None, None)


def test_windows_reuse_a_ring_slot_only_after_clearing_it() -> None:
    recorder, clock = recorder_at()
    recorder.record("error", 1.0)
    clock.advance(360)  # one full turn of the 10 s ring: the same slot, a new bucket
    recorder.record("success", 1.0)
    assert recorder.stats("1m").counts == StatusCounts(success=1)


def test_windows_drop_a_sample_older_than_the_ring_but_count_it_in_the_total() -> None:
    recorder, clock = recorder_at()
    clock.advance(3600)
    recorder.record("success", 1.0)
    clock.advance(-3600)  # the wall clock stepped back an hour
    recorder.record("error", 1.0)
    clock.advance(3600)
    assert recorder.stats("5m").counts == StatusCounts(success=1)
    assert recorder.stats("all").counts == StatusCounts(success=1, error=1)


def test_latency_bins_are_log_spaced_with_the_documented_bounds() -> None:
    assert latency_bin(0.0) == latency_bin(LATENCY_FLOOR_MS / 2) == 0
    assert latency_bin(LATENCY_FLOOR_MS) == 1
    assert latency_bin(LATENCY_FLOOR_MS * 1.4) == 1
    assert latency_bin(LATENCY_FLOOR_MS * 1.5) == 2
    assert latency_bin(LATENCY_FLOOR_MS * 2.1) == 3
    assert latency_bin(1e12) == LATENCY_BINS - 1
    bins = [latency_bin(ms / 100) for ms in range(1, 10_000_000, 997)]
    assert bins == sorted(bins)


@pytest.mark.parametrize("q, field", [(0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")])
def test_windows_percentiles_stay_within_the_documented_error(q: float, field: str) -> None:
    recorder, _ = recorder_at()
    durations = [0.02 * 1.07**i for i in range(200)]  # 0.02 ms .. about 15 s
    for ms in durations:
        recorder.record("success", ms)
    exact = sorted(durations)[math.ceil(q * len(durations)) - 1]
    estimate = getattr(recorder.stats("5m"), field)
    assert abs(estimate - exact) / exact <= PERCENTILE_ERROR + 1e-6


def test_windows_series_cut_the_window_into_points_that_add_up() -> None:
    recorder, clock = recorder_at()
    for second in range(0, 300, 5):
        recorder.record("error" if second < 150 else "success", 2.0)
        clock.advance(5)
    clock.advance(-1)
    points = recorder.series("5m", 3)
    assert [p.seconds for p in points] == [100.0, 100.0, 100.0]
    assert sum(p.calls for p in points) == recorder.stats("5m").calls == 60
    assert [p.error_ratio for p in points] == [1.0, 0.5, 0.0]
    assert points[0].start.timestamp() == T0
    assert points[-1].p95_ms is not None
    assert len(recorder.series("all", max_points("all"))) == 144


def test_windows_series_points_carry_p50_p95_and_p99() -> None:
    recorder, clock = recorder_at()
    for ms in [1.0] * 90 + [100.0] * 9 + [5000.0]:
        recorder.record("success", ms)
    clock.advance(1)
    [point] = recorder.series("5m", 1)
    assert point.p50_ms is not None and point.p95_ms is not None and point.p99_ms is not None
    assert abs(point.p50_ms - 1.0) <= PERCENTILE_ERROR
    assert abs(point.p95_ms - 100.0) / 100.0 <= PERCENTILE_ERROR
    assert abs(point.p99_ms - 100.0) / 100.0 <= PERCENTILE_ERROR
    assert recorder.series("1h", 1)[0].p99_ms == point.p99_ms
    assert WindowRecorder().series("5m", 1)[0].p50_ms is None


@pytest.mark.parametrize("points", [0, 31])
def test_windows_series_refuse_a_point_count_the_buckets_cannot_give(points: int) -> None:
    recorder, _ = recorder_at()
    with pytest.raises(ValueError, match="between 1 and 30"):
        recorder.series("5m", points)


def test_windows_memory_is_fixed_whatever_the_traffic() -> None:
    recorder, clock = recorder_at()

    def counter_bytes() -> int:
        arrays = [recorder._total, recorder._recent, recorder._counts, recorder._pending]
        arrays += [tier.epochs for tier in recorder._tiers]
        return sum(a.itemsize * len(a) for a in arrays)

    assert counter_bytes() == RECORDER_BYTES
    for i in range(20_000):
        recorder.record("success", float(i % 500))
        clock.advance(7)
    assert counter_bytes() == RECORDER_BYTES


@pytest.mark.parametrize("codec", [msgspec.json, msgspec.msgpack])
def test_window_snapshots_travel_as_json_or_msgpack_and_merge(codec: object) -> None:
    a, clock = recorder_at()
    a.record("error", 3.0)
    wire = codec.encode(a.snapshot())  # type: ignore[attr-defined]
    b = WindowRecorder(clock)
    b.record("success", 3.0)
    b.merge(codec.decode(wire, type=WindowSnapshot))  # type: ignore[attr-defined]
    assert b.stats("1m").counts == StatusCounts(success=1, error=1)
    merged = WindowRecorder.from_snapshots([a.snapshot(), b.snapshot()], clock)
    assert merged.stats("all").calls == 3


def test_window_merge_refuses_another_layout_or_width() -> None:
    a, _ = recorder_at()
    snapshot = a.snapshot()
    with pytest.raises(ValueError, match="layout"):
        a.merge(msgspec.structs.replace(snapshot, layout="v0"))
    with pytest.raises(ValueError, match="layout"):
        a.merge(msgspec.structs.replace(snapshot, total=[1, 2]))
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(
            b'{"layout":"x","started":0,"tiers":[],"total":[-1]}', type=WindowSnapshot
        )


events = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=200_000),  # seconds after T0
        st.sampled_from(["success", "error", "timeout", "skipped", "quarantined"]),
        st.floats(min_value=0, max_value=400_000, allow_nan=False),
        st.booleans(),  # which of the two recorders sees it
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(events)
def test_window_merge_of_two_recorders_equals_recording_both_streams_in_one(events) -> None:
    clock = FakeClock(T0)
    first, second, both = WindowRecorder(clock), WindowRecorder(clock), WindowRecorder(clock)
    for offset, status, ms, to_first in sorted(events, key=lambda e: e[0]):
        clock.set(T0 + offset)
        (first if to_first else second).record(status, ms)
        both.record(status, ms)
    first.merge(second.snapshot())
    assert first.snapshot() == both.snapshot()
    for window in ("1m", "5m", "1h", "24h", "all"):
        assert first.stats(window) == both.stats(window)


def test_windows_recent_sums_follow_the_five_minute_window_as_time_moves() -> None:
    recorder, clock = recorder_at()
    for _ in range(3):
        recorder.record("error", 500.0)
    clock.advance(150)
    recorder.record("success", 1.0)
    recorder.record("skipped", 0.0)
    recorder.record("quarantined", 0.0)
    recent = recorder.recent(slow_ms=100.0)
    assert recent == (6, 4, 3, 1, 1, 3)
    assert recorder.stats("5m").calls == 6
    clock.advance(160)  # the three errors' bucket has left the window
    recent = recorder.recent(slow_ms=100.0)
    assert (recent.calls, recent.failed, recent.slow) == (3, 0, 0)
    assert recorder.stats("5m").counts == StatusCounts(success=1, skipped=1, quarantined=1)
    clock.advance(300)
    assert recorder.recent(slow_ms=100.0).calls == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 900), st.booleans()), max_size=40))
def test_windows_recent_sums_equal_the_sum_of_their_buckets(steps) -> None:
    recorder, clock = recorder_at()
    for seconds, failed in steps:
        clock.advance(seconds)
        recorder.record("error" if failed else "success", 3.0)
        fresh = WindowRecorder.from_snapshots([recorder.snapshot()], clock)
        assert recorder.recent(1.0) == fresh.recent(1.0)
        assert recorder.stats("5m") == fresh.stats("5m")


def test_window_statuses_are_the_hook_statuses_in_order() -> None:
    from typing import get_args

    from agent_pm.plugins.telemetry import Status
    from agent_pm.plugins.windows import STATUSES

    assert get_args(Status) == STATUSES
