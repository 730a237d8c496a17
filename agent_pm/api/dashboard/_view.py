"""What the console shows, computed from registry metadata: rows, filters, sorting, history.

Everything here is plain data for the templates. Until windowed telemetry exists, the figures of
a row are taken over the bounded history each hook keeps (its last 100 calls), and the table says
so in its column headings.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlencode

import msgspec

from agent_pm.api.dashboard._charts import sparkline
from agent_pm.api.dashboard._fingerprint import ErrorGroup, group_errors

__all__ = [
    "HISTORY_ROWS",
    "SEVERITY",
    "STATUSES",
    "Filters",
    "HookRow",
    "PluginRow",
    "domid",
    "error_groups",
    "filtered_history",
    "hook_names",
    "hook_rows",
    "percentile",
    "plain",
    "plugin_row",
    "sorted_rows",
    "status_strip",
]

HISTORY_ROWS = 50
STATUSES = ("success", "error", "timeout", "skipped", "quarantined")
# Worst first: the order of the status strip and of the table's default sort.
SEVERITY = (
    "quarantined", "failing", "failed", "invalid", "degraded", "skipping", "healthy", "enabled",
    "idle", "disabled",
)  # fmt: skip
BAD = {"error", "timeout"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def domid(name: str) -> str:
    """An HTML id fragment for ``name``: readable, and unique even when characters are replaced."""
    safe = _UNSAFE.sub("_", name)
    if safe == name:
        return name
    return f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def plain(meta: Any) -> dict[str, Any]:
    """Plugin metadata as a JSON-ready dict, whether the registry gives a dict or a struct."""
    if isinstance(meta, Mapping):
        return dict(meta)
    result = msgspec.to_builtins(meta)
    assert isinstance(result, dict)
    return result


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile of ``values``; ``None`` when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _health(meta: dict[str, Any]) -> tuple[str, str]:
    """The plugin's health and its reason: the registry's verdict where it gives one."""
    verdict = meta.get("health")
    if isinstance(verdict, dict) and verdict.get("state"):
        return str(verdict["state"]), str(verdict.get("reason") or "")
    missing = meta.get("secrets", {}).get("missing", [])
    state = str(meta["state"])
    if state in ("invalid", "failed"):
        return state, str(meta.get("error") or "")
    if state == "disabled":
        return state, "disabled in the manifest"
    if missing:
        return "skipping", f"missing secrets: {', '.join(missing)}"
    return state, ""


@dataclass(frozen=True)
class PluginRow:
    """One line of the overview table."""

    name: str
    description: str
    state: str
    health: str
    reason: str
    calls: int
    errors: int
    skipped: int
    quarantined: int
    p95_ms: float | None
    spark: str
    hooks: list[str]

    @property
    def error_ratio(self) -> float | None:
        ran = self.calls - self.skipped - self.quarantined
        return self.errors / ran if ran > 0 else None

    @property
    def severity(self) -> int:
        return SEVERITY.index(self.health) if self.health in SEVERITY else len(SEVERITY)


def _samples(meta: dict[str, Any], hook: str | None = None) -> list[dict[str, Any]]:
    history = meta.get("hook_history", {})
    hooks = [hook] if hook else list(history)
    merged = [s for name in hooks for s in history.get(name, [])]
    return sorted(merged, key=lambda s: s["seq"])


def plugin_row(meta: dict[str, Any], hook: str | None = None) -> PluginRow:
    """The overview row of ``meta`` (with history), over one hook or all of them."""
    samples = _samples(meta, hook)
    durations = [s["duration_ms"] for s in samples if s["status"] not in ("skipped",)]
    health, reason = _health(meta)
    return PluginRow(
        name=meta["name"],
        description=meta.get("description") or "",
        state=meta["state"],
        health=health,
        reason=reason,
        calls=len(samples),
        errors=sum(s["status"] in BAD for s in samples),
        skipped=sum(s["status"] == "skipped" for s in samples),
        quarantined=sum(s["status"] == "quarantined" for s in samples),
        p95_ms=percentile(durations, 0.95),
        spark=sparkline(durations[-60:]),
        hooks=hook_names(meta),
    )


@dataclass(frozen=True)
class Filters:
    """The overview's table state, read from and written back to the URL."""

    plugin: str = ""
    hook: str = ""
    health: str = ""
    sort: str = "health"
    descending: bool = False

    # Sort keys and their labels; names and health read best ascending, figures descending.
    SORTS: ClassVar[dict[str, str]] = {
        "health": "worst health first",
        "name": "name",
        "calls": "most calls",
        "errors": "most errors",
        "ratio": "highest error ratio",
        "p95": "slowest p95",
    }
    ASCENDING: ClassVar[tuple[str, ...]] = ("health", "name")

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        sort = query.get("sort", "health")
        sort = sort if sort in cls.SORTS else "health"
        direction = query.get("dir", "")
        return cls(
            plugin=query.get("plugin", "").strip(),
            hook=query.get("hook", "").strip(),
            health=query.get("health", "").strip(),
            sort=sort,
            descending=direction == "desc" if direction else sort not in cls.ASCENDING,
        )

    def _direction(self, sort: str, descending: bool) -> str:
        if descending == (sort not in self.ASCENDING):
            return ""
        return "desc" if descending else "asc"

    def query(self, **changes: Any) -> str:
        """The query string of these filters with ``changes`` applied, defaults left out."""
        values = {
            "plugin": self.plugin,
            "hook": self.hook,
            "health": self.health,
            "sort": self.sort,
            "dir": self._direction(self.sort, self.descending),
        }
        values.update(changes)
        kept = {k: v for k, v in values.items() if v and not (k == "sort" and v == "health")}
        return urlencode(kept)

    def toggle(self, sort: str) -> str:
        """The query that sorts by ``sort``, reversing the order if it already does."""
        descending = not self.descending if sort == self.sort else sort not in self.ASCENDING
        return self.query(sort=sort, dir=self._direction(sort, descending))


def _sort_key(sort: str) -> Any:
    keys: dict[str, Any] = {
        "health": lambda r: (r.severity, -(r.error_ratio or 0), r.name),
        "name": lambda r: r.name,
        "calls": lambda r: r.calls,
        "errors": lambda r: r.errors,
        "ratio": lambda r: r.error_ratio or 0.0,
        "p95": lambda r: r.p95_ms or 0.0,
    }
    return keys[sort]


def sorted_rows(metas: list[dict[str, Any]], filters: Filters) -> list[PluginRow]:
    """The overview rows that pass ``filters``, in their order."""
    rows = [
        plugin_row(meta, filters.hook or None)
        for meta in metas
        if filters.plugin.lower() in meta["name"].lower()
        and (not filters.hook or filters.hook in hook_names(meta))
    ]
    if filters.health:
        rows = [row for row in rows if row.health == filters.health]
    rows.sort(key=_sort_key(filters.sort), reverse=filters.descending)
    return rows


def status_strip(rows: list[PluginRow]) -> list[tuple[str, int]]:
    """``(health, plugins)`` for every health present, worst first."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.health] = counts.get(row.health, 0) + 1
    return sorted(counts.items(), key=lambda item: _severity(item[0]))


def _severity(health: str) -> int:
    return SEVERITY.index(health) if health in SEVERITY else len(SEVERITY)


def hook_names(meta: dict[str, Any]) -> list[str]:
    """Declared hooks, then hooks that ran without being declared (now removed ones)."""
    found = dict.fromkeys([*meta.get("hooks", []), *meta.get("hook_stats", {})])
    return list(found)


@dataclass(frozen=True)
class HookRow:
    """One hook of a plugin page: lifetime counters as the registry keeps them."""

    hook: str
    invocations: int
    failures: int
    timeouts: int
    skipped: int
    avg_ms: float | None
    last_ms: float | None


def hook_rows(meta: dict[str, Any]) -> list[HookRow]:
    rows = []
    for hook in hook_names(meta):
        stats = meta.get("hook_stats", {}).get(hook)
        if stats is None:
            rows.append(HookRow(hook, 0, 0, 0, 0, None, None))
            continue
        rows.append(
            HookRow(
                hook,
                stats["invocations"],
                stats["failures"],
                stats["timeouts"],
                stats.get("skipped", 0),
                stats["avg_duration_ms"] if stats["invocations"] else None,
                stats["last_duration_ms"] if stats["invocations"] else None,
            )
        )
    return rows


def filtered_history(samples: list[dict[str, Any]], status: str) -> list[dict[str, Any]]:
    """Newest first, at most :data:`HISTORY_ROWS`, only ``status`` unless it is empty."""
    chosen = [s for s in samples if not status or s["status"] == status]
    return list(reversed(chosen))[:HISTORY_ROWS]


@dataclass
class ErrorView:
    groups: list[ErrorGroup] = field(default_factory=list)
    lifecycle: list[dict[str, str]] = field(default_factory=list)


def error_groups(meta: dict[str, Any], hook: str) -> ErrorView:
    """Hook errors of ``hook`` grouped by fingerprint, plus the plugin's non-hook errors."""
    entries = [
        (s["timestamp"], s["status"], s.get("error") or s["status"], s["seq"])
        for s in _samples(meta, hook)
        if s["status"] in BAD
    ]
    others = [e for e in meta.get("errors", []) if not str(e["stage"]).startswith("hook:")]
    return ErrorView(group_errors(entries), list(reversed(others)))
