"""Telemetry: hook samples, per-hook stats, bounded history, windows and the error ring."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal, NamedTuple

import msgspec

from agent_pm.plugins.context import request_id
from agent_pm.plugins.windows import WindowRecorder

__all__ = [
    "ERROR_LIMIT",
    "HISTORY_LIMIT",
    "ErrorInfo",
    "ErrorRecord",
    "HistoryEntry",
    "HookSample",
    "HookStats",
    "HookStatsInfo",
    "HookView",
    "PluginTelemetry",
    "Status",
]

HISTORY_LIMIT = 100
ERROR_LIMIT = 10
# ``skipped``: not called (missing secrets); ``quarantined``: not called (circuit breaker open);
# ``deadline``: cut when the caller's time ran out, before the handler's own timeout.
Status = Literal["success", "error", "timeout", "skipped", "quarantined", "deadline"]


class HookSample(msgspec.Struct, frozen=True, gc=False, tag="sample", tag_field="type"):
    """One hook invocation on one plugin; immutable once recorded and published."""

    seq: int
    plugin: str
    hook: str
    timestamp: datetime
    status: Status
    duration_ms: float
    error: str | None = None
    node: str | None = None
    request_id: str | None = None

    @property
    def topic(self) -> tuple[str, str | None]:
        return self.plugin, self.hook


class ErrorRecord(msgspec.Struct, frozen=True):
    """A registry, lifecycle or hook error kept in a plugin's error ring."""

    timestamp: datetime
    stage: str
    message: str
    request_id: str | None = None

    def info(self) -> ErrorInfo:
        return ErrorInfo(self.timestamp.isoformat(), self.stage, self.message, self.request_id)


class ErrorInfo(msgspec.Struct, frozen=True):
    """One of a plugin's last errors, as metadata shows it."""

    timestamp: Timestamp
    stage: str
    message: str
    request_id: str | None = None


class HookStatsInfo(msgspec.Struct, frozen=True):
    """Counters of one hook since the plugin was loaded (durations in milliseconds)."""

    invocations: int = 0
    failures: int = 0
    timeouts: int = 0
    skipped: int = 0
    quarantined: int = 0
    deadlines: int = 0
    total_duration_ms: float = 0.0
    last_duration_ms: float = 0.0
    avg_duration_ms: float = 0.0


# ISO 8601 with an explicit ``+00:00`` offset, as the history and error lists have always shown.
Timestamp = Annotated[str, msgspec.Meta(description="ISO 8601 date-time, UTC")]


class HistoryEntry(msgspec.Struct, frozen=True):
    """One recorded hook call, as the history shows it."""

    seq: int
    timestamp: Timestamp
    status: Status
    duration_ms: float
    error: str | None = None
    request_id: str | None = None


class HookStats:
    """Running counters of one plugin's hook."""

    __slots__ = (
        "deadlines",
        "failures",
        "invocations",
        "last_duration_ms",
        "quarantined",
        "skipped",
        "timeouts",
        "total_ms",
    )

    def __init__(self) -> None:
        self.invocations = 0
        self.failures = 0
        self.timeouts = 0
        self.skipped = 0
        self.quarantined = 0
        self.deadlines = 0
        self.total_ms = 0.0
        self.last_duration_ms = 0.0

    def add(self, sample: HookSample) -> None:
        self.invocations += 1
        self.total_ms += sample.duration_ms
        self.last_duration_ms = sample.duration_ms
        if sample.status == "error":
            self.failures += 1
        elif sample.status == "timeout":
            self.timeouts += 1
        elif sample.status == "skipped":
            self.skipped += 1
        elif sample.status == "quarantined":
            self.quarantined += 1
        elif sample.status == "deadline":
            self.deadlines += 1

    def info(self) -> HookStatsInfo:
        return HookStatsInfo(
            invocations=self.invocations,
            failures=self.failures,
            timeouts=self.timeouts,
            skipped=self.skipped,
            quarantined=self.quarantined,
            deadlines=self.deadlines,
            total_duration_ms=round(self.total_ms, 3),
            last_duration_ms=round(self.last_duration_ms, 3),
            avg_duration_ms=round(self.total_ms / self.invocations, 3) if self.invocations else 0.0,
        )


class HookView(NamedTuple):
    """One hook's figures as a surface shows them: counters and windows, of this process or
    summed over several (a cluster)."""

    stats: HookStatsInfo
    window: WindowRecorder


class PluginTelemetry:
    """Everything recorded about one plugin: stats, history and windows per hook, last errors.

    ``clock`` gives wall-clock seconds to the windows (tests inject their own).
    """

    __slots__ = ("_rendered", "_unrendered", "clock", "errors", "history", "stats", "windows")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.stats: dict[str, HookStats] = {}
        self.history: dict[str, deque[HookSample]] = {}
        self.windows: dict[str, WindowRecorder] = {}
        self.errors: deque[ErrorRecord] = deque(maxlen=ERROR_LIMIT)
        # Samples are immutable, so each is rendered to its history entry once, when history is
        # first read after it was added: a full listing renders tens of thousands of them.
        self._rendered: dict[str, deque[HistoryEntry]] = {}
        self._unrendered: dict[str, int] = {}

    def add(self, sample: HookSample) -> None:
        hook = sample.hook
        stats = self.stats.get(hook)
        if stats is None:
            stats = self.stats[hook] = HookStats()
            self.history[hook] = deque(maxlen=HISTORY_LIMIT)
            self.windows[hook] = WindowRecorder(self.clock)
            self._rendered[hook] = deque(maxlen=HISTORY_LIMIT)
            self._unrendered[hook] = 0
        stats.add(sample)
        self.windows[hook].record(sample.status, sample.duration_ms)
        self.history[hook].append(sample)
        self._unrendered[hook] += 1
        if sample.status in ("error", "timeout"):
            stage = f"hook:{hook}"
            record = ErrorRecord(sample.timestamp, stage, sample.error or "", sample.request_id)
            self.errors.append(record)

    def add_error(self, stage: str, message: str) -> None:
        self.errors.append(ErrorRecord(now(), stage, message, request_id.get()))

    def window(self, hook: str) -> WindowRecorder:
        """``hook``'s windows (empty ones for a hook that never ran)."""
        return self.windows.get(hook) or WindowRecorder(self.clock)

    def views(self) -> dict[str, HookView]:
        """Every recorded hook's counters and windows, live."""
        return {hook: HookView(s.info(), self.windows[hook]) for hook, s in self.stats.items()}

    def samples(
        self, hook: str | None = None, limit: int | None = None
    ) -> dict[str, list[HistoryEntry]]:
        """History per hook, oldest first; ``limit`` keeps the newest."""
        hooks = [hook] if hook is not None else list(self.history)
        result: dict[str, list[HistoryEntry]] = {}
        for name in hooks:
            entries = list(self._render(name))
            if limit is not None:
                entries = entries[-limit:] if limit > 0 else []
            result[name] = entries
        return result

    def _render(self, hook: str) -> deque[HistoryEntry]:
        """``hook``'s history entries, rendering only the samples added since the last read."""
        rendered = self._rendered.get(hook)
        if rendered is None:
            return deque()
        history = self.history[hook]
        fresh = min(self._unrendered[hook], len(history))
        if fresh:
            rendered.extend(
                _history_entry(history[i]) for i in range(len(history) - fresh, len(history))
            )
            self._unrendered[hook] = 0
        return rendered


def _history_entry(sample: HookSample) -> HistoryEntry:
    return HistoryEntry(
        sample.seq,
        sample.timestamp.isoformat(),
        sample.status,
        round(sample.duration_ms, 3),
        sample.error,
        sample.request_id,
    )


def now() -> datetime:
    """The current time, UTC and timezone-aware."""
    return datetime.now(UTC)
