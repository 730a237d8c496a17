"""Telemetry: hook samples, per-hook stats, bounded history and the per-plugin error ring."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from agent_pm.plugins.context import request_id

__all__ = [
    "ERROR_LIMIT",
    "HISTORY_LIMIT",
    "ErrorRecord",
    "HookSample",
    "HookStats",
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


class HookStats:
    """Running counters of one plugin's hook."""

    __slots__ = (
        "deadlines",
        "failures",
        "invocations",
        "last_duration_ms",
        "skipped",
        "timeouts",
        "total_ms",
    )

    def __init__(self) -> None:
        self.invocations = 0
        self.failures = 0
        self.timeouts = 0
        self.skipped = 0
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
        elif sample.status == "deadline":
            self.deadlines += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "invocations": self.invocations,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "skipped": self.skipped,
            "deadlines": self.deadlines,
            "total_duration_ms": round(self.total_ms, 3),
            "last_duration_ms": round(self.last_duration_ms, 3),
            "avg_duration_ms": round(self.total_ms / self.invocations, 3)
            if self.invocations
            else 0.0,
        }


class PluginTelemetry:
    """Everything recorded about one plugin: stats and history per hook, and its last errors."""

    __slots__ = ("_rendered", "_unrendered", "errors", "history", "stats")

    def __init__(self) -> None:
        self.stats: dict[str, HookStats] = {}
        self.history: dict[str, deque[HookSample]] = {}
        self.errors: deque[ErrorRecord] = deque(maxlen=ERROR_LIMIT)
        # Samples are immutable, so each is rendered to its JSON-ready dict once, when history is
        # first read after it was added: a full listing renders tens of thousands of timestamps.
        self._rendered: dict[str, deque[dict[str, Any]]] = {}
        self._unrendered: dict[str, int] = {}

    def add(self, sample: HookSample) -> None:
        hook = sample.hook
        stats = self.stats.get(hook)
        if stats is None:
            stats = self.stats[hook] = HookStats()
            self.history[hook] = deque(maxlen=HISTORY_LIMIT)
            self._rendered[hook] = deque(maxlen=HISTORY_LIMIT)
            self._unrendered[hook] = 0
        stats.add(sample)
        self.history[hook].append(sample)
        self._unrendered[hook] += 1
        if sample.status in ("error", "timeout"):
            stage = f"hook:{hook}"
            record = ErrorRecord(sample.timestamp, stage, sample.error or "", sample.request_id)
            self.errors.append(record)

    def add_error(self, stage: str, message: str) -> None:
        self.errors.append(ErrorRecord(now(), stage, message, request_id.get()))

    def samples(self, hook: str | None = None, limit: int | None = None) -> dict[str, list[Any]]:
        """History per hook, oldest first, as JSON-ready dicts; ``limit`` keeps the newest."""
        hooks = [hook] if hook is not None else list(self.history)
        result: dict[str, list[Any]] = {}
        for name in hooks:
            entries = list(self._render(name))
            if limit is not None:
                entries = entries[-limit:] if limit > 0 else []
            # Copies: the caller owns what it is given, the cache stays as rendered.
            result[name] = [entry.copy() for entry in entries]
        return result

    def _render(self, hook: str) -> deque[dict[str, Any]]:
        """``hook``'s history as dicts, rendering only the samples added since the last read."""
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


def _history_entry(sample: HookSample) -> dict[str, Any]:
    return {
        "seq": sample.seq,
        "timestamp": sample.timestamp.isoformat(),
        "status": sample.status,
        "duration_ms": round(sample.duration_ms, 3),
        "error": sample.error,
        "request_id": sample.request_id,
    }


def now() -> datetime:
    """The current time, UTC and timezone-aware."""
    return datetime.now(UTC)
