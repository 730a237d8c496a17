"""What the console shows, computed from registry metadata: rows, filters, sorting, history.

Everything here is plain data for the templates. An overview row's figures come from the
plugin's windowed telemetry over the window the URL selects (``hook_windows`` in its metadata),
its trend from that window's series; the plugin page's history is the bounded history each hook
keeps (its last 100 calls).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlencode

import msgspec

from agent_pm.api.dashboard._fingerprint import ErrorGroup, group_errors
from agent_pm.api.dashboard._series import Trend
from agent_pm.plugins.windows import WindowName

__all__ = [
    "DEFAULT_WINDOW",
    "HISTORY_ROWS",
    "SEVERITY",
    "STATS_WINDOWS",
    "STATUSES",
    "WINDOWS",
    "Filters",
    "HookRow",
    "PluginRow",
    "domid",
    "error_groups",
    "filtered_history",
    "hook_names",
    "hook_rows",
    "plain",
    "plugin_row",
    "sorted_rows",
    "status_strip",
    "window_phrase",
]

HISTORY_ROWS = 50
STATUSES = ("success", "error", "timeout", "skipped", "quarantined")
# Worst first: the order of the status strip and of the table's default sort.
SEVERITY = (
    "quarantined", "failing", "failed", "invalid", "degraded", "skipping", "healthy", "enabled",
    "idle", "disabled",
)  # fmt: skip
BAD = {"error", "timeout"}
# The windows an operator picks from, as the URL spells them, and as the page names them.
WINDOWS: dict[str, str] = {"5m": "5 min", "1h": "1 h", "24h": "24 h", "all": "since start"}
_PHRASES = {
    "5m": "over the last 5 min", "1h": "over the last hour", "24h": "over the last 24 h",
    "all": "since start",
}  # fmt: skip
STATS_WINDOWS: dict[str, WindowName] = {"5m": "5m", "1h": "1h", "24h": "24h", "all": "all"}
DEFAULT_WINDOW = "5m"


def window_phrase(window: str) -> str:
    """How text names a window: ``over the last 5 min``, ``since start``."""
    return _PHRASES.get(window, _PHRASES[DEFAULT_WINDOW])


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
    ran: int
    p95_ms: float | None
    trend: Trend | None
    hooks: list[str]

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.ran if self.ran > 0 else None

    @property
    def severity(self) -> int:
        return SEVERITY.index(self.health) if self.health in SEVERITY else len(SEVERITY)


def _samples(meta: dict[str, Any], hook: str | None = None) -> list[dict[str, Any]]:
    history = meta.get("hook_history", {})
    hooks = [hook] if hook else list(history)
    merged = [s for name in hooks for s in history.get(name, [])]
    return sorted(merged, key=lambda s: s["seq"])


def plugin_row(
    meta: dict[str, Any], hook: str | None = None, trend: Trend | None = None
) -> PluginRow:
    """The overview row of ``meta`` over its windowed stats (``hook_windows``), over one hook
    or all of them. Its p95 is the slowest hook's: percentiles of several hooks do not add up,
    and the plugin's own p95 is never above the slowest hook's."""
    windows = meta.get("hook_windows") or {}
    chosen = [windows[hook]] if hook and hook in windows else [] if hook else list(windows.values())
    counts = [w["counts"] for w in chosen]
    p95s = [w["p95_ms"] for w in chosen if w.get("p95_ms") is not None]
    health, reason = _health(meta)
    return PluginRow(
        name=meta["name"],
        description=meta.get("description") or "",
        state=meta["state"],
        health=health,
        reason=reason,
        calls=sum(w["calls"] for w in chosen),
        errors=sum(c["error"] + c["timeout"] for c in counts),
        skipped=sum(c["skipped"] for c in counts),
        quarantined=sum(c["quarantined"] for c in counts),
        ran=sum(c["success"] + c["error"] + c["timeout"] for c in counts),
        p95_ms=max(p95s, default=None),
        trend=trend,
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
    window: str = DEFAULT_WINDOW

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
        window = query.get("window", DEFAULT_WINDOW)
        return cls(
            plugin=query.get("plugin", "").strip(),
            hook=query.get("hook", "").strip(),
            health=query.get("health", "").strip(),
            sort=sort,
            descending=direction == "desc" if direction else sort not in cls.ASCENDING,
            window=window if window in WINDOWS else DEFAULT_WINDOW,
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
            "window": self.window,
        }
        values.update(changes)
        defaults = {"sort": "health", "window": DEFAULT_WINDOW}
        kept = {k: v for k, v in values.items() if v and defaults.get(k) != v}
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


def sorted_rows(
    metas: list[dict[str, Any]],
    filters: Filters,
    trend: Callable[[dict[str, Any]], Trend | None] = lambda meta: None,
) -> list[PluginRow]:
    """The overview rows that pass ``filters``, in their order; ``trend`` draws a row's."""
    rows = [
        plugin_row(meta, filters.hook or None, trend(meta))
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
    """One hook of a plugin page: its health and its figures over the selected window."""

    hook: str
    health: str
    reason: str
    calls: int
    rate: float
    errors: int
    error_ratio: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    skipped: int
    quarantined: int


def hook_rows(meta: dict[str, Any]) -> list[HookRow]:
    """Every hook of ``meta`` over the window its metadata was taken for."""
    rows = []
    plugin_health, plugin_reason = _health(meta)
    for hook in hook_names(meta):
        stats = (meta.get("hook_windows") or {}).get(hook) or {}
        counts = stats.get("counts") or {}
        health = (meta.get("hook_health") or {}).get(hook) or {}
        failed = counts.get("error", 0) + counts.get("timeout", 0)
        ran = failed + counts.get("success", 0)
        rows.append(
            HookRow(
                hook,
                str(health.get("state") or plugin_health),
                str(health.get("reason") or plugin_reason),
                stats.get("calls", 0),
                stats.get("rate", 0.0),
                failed,
                failed / ran if ran else None,
                stats.get("p50_ms"),
                stats.get("p95_ms"),
                stats.get("p99_ms"),
                counts.get("skipped", 0),
                counts.get("quarantined", 0),
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
