"""What the dashboard shows, computed from registry metadata: rows, totals and chart geometry.

Charts are server-rendered SVG. History is bounded (100 samples per hook), so a timeline is at
most 100 marks and a few kilobytes of markup: re-rendering it on each coalesced tick is cheaper
and simpler than shipping a chart library, keeping client state in sync and resuming it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from agent_pm.errors import AgentPMError
from agent_pm.plugins.loader import import_plugin_class

__all__ = [
    "HISTORY_ROWS",
    "BarChart",
    "ConfigField",
    "PluginRow",
    "Timeline",
    "bar_chart",
    "config_fields",
    "domid",
    "hook_rows",
    "pairs",
    "plugin_row",
    "timeline",
]

HISTORY_ROWS = 50
RECENT_ERRORS = 3
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def domid(name: str) -> str:
    """An HTML id fragment for ``name``: readable, and unique even when characters are replaced."""
    safe = _UNSAFE.sub("_", name)
    if safe == name:
        return name
    return f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class PluginRow:
    """One line of the summary table."""

    name: str
    description: str
    state: str
    invocations: int
    failures: int
    timeouts: int
    avg_ms: float
    missing: list[str]
    errors: list[dict[str, str]]
    error: str | None
    enabled: bool
    config: dict[str, Any]
    module: str | None
    hooks: list[str]
    isolation: dict[str, Any]
    # The longest step of an inline async handler, when it reached the warning threshold.
    loop_block: dict[str, Any] | None


def _loop_block(meta: dict[str, Any]) -> dict[str, Any] | None:
    blocks = meta.get("loop_blocks") or {}
    worst = blocks.get("worst") or []
    return worst[0] if worst and worst[0]["ms"] >= blocks["warn_ms"] else None


def plugin_row(meta: dict[str, Any]) -> PluginRow:
    stats = meta.get("hook_stats", {}).values()
    invocations = sum(s["invocations"] for s in stats)
    total_ms = sum(s["total_duration_ms"] for s in stats)
    return PluginRow(
        name=meta["name"],
        description=meta.get("description") or "",
        state=meta["state"],
        invocations=invocations,
        failures=sum(s["failures"] for s in stats),
        timeouts=sum(s["timeouts"] for s in stats),
        avg_ms=round(total_ms / invocations, 2) if invocations else 0.0,
        missing=list(meta.get("secrets", {}).get("missing", [])),
        errors=list(reversed(meta.get("errors", [])))[:RECENT_ERRORS],
        error=meta.get("error"),
        enabled=bool(meta.get("enabled")),
        config=meta.get("config") or {},
        module=meta.get("module"),
        hooks=list(meta.get("hooks", [])),
        isolation=meta.get("isolation") or {"mode": "inline"},
        loop_block=_loop_block(meta),
    )


def hook_rows(metas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per plugin x hook stats, for every hook that has run at least once."""
    return [
        {"plugin": meta["name"], "hook": hook, **stats}
        for meta in metas
        for hook, stats in meta.get("hook_stats", {}).items()
    ]


def pairs(metas: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Every (plugin, hook) pair a timeline can show: declared hooks and hooks that ran."""
    found: dict[tuple[str, str], None] = {}
    for meta in metas:
        for hook in [*meta.get("hooks", []), *meta.get("hook_stats", {})]:
            found[(meta["name"], hook)] = None
    return list(found)


@dataclass
class Bar:
    hook: str
    invocations: int
    failures: int
    timeouts: int
    y: float = 0.0
    width: float = 0.0
    bad_width: float = 0.0


@dataclass
class BarChart:
    bars: list[Bar] = field(default_factory=list)
    height: float = 0.0
    plot_width: float = 0.0


def bar_chart(rows: list[dict[str, Any]], plot_width: float = 260, bar: float = 22) -> BarChart:
    """Horizontal bars of invocations per hook, summed over plugins; failed part drawn apart."""
    totals: dict[str, Bar] = {}
    for row in rows:
        item = totals.setdefault(row["hook"], Bar(row["hook"], 0, 0, 0))
        item.invocations += row["invocations"]
        item.failures += row["failures"]
        item.timeouts += row["timeouts"]
    top = max((b.invocations for b in totals.values()), default=0) or 1
    bars = sorted(totals.values(), key=lambda b: b.hook)
    for index, item in enumerate(bars):
        item.y = index * (bar + 8)
        item.width = max(1.0, plot_width * item.invocations / top)
        item.bad_width = plot_width * (item.failures + item.timeouts) / top
    return BarChart(bars, len(bars) * (bar + 8), plot_width)


@dataclass
class Mark:
    x: float
    y: float
    status: str
    label: str


@dataclass
class Timeline:
    marks: list[Mark]
    width: float
    height: float
    max_ms: float
    start: str
    end: str
    line: str


def timeline(samples: list[dict[str, Any]], width: float = 640, height: float = 180) -> Timeline:
    """Duration of each sample over time, scaled into a ``width`` x ``height`` plot."""
    if not samples:
        return Timeline([], width, height, 0.0, "", "", "")
    times = [datetime.fromisoformat(s["timestamp"]).timestamp() for s in samples]
    first, span = times[0], (times[-1] - times[0]) or 1.0
    top = max(s["duration_ms"] for s in samples) or 1.0
    marks = []
    for when, sample in zip(times, samples, strict=True):
        x = round(width * (when - first) / span, 1) if len(samples) > 1 else width / 2
        y = round(height - height * sample["duration_ms"] / top, 1)
        label = f"{sample['timestamp']} {sample['status']} {sample['duration_ms']} ms"
        marks.append(Mark(x, y, sample["status"], label))
    line = " ".join(f"{m.x},{m.y}" for m in marks)
    return Timeline(
        marks, width, height, top, samples[0]["timestamp"], samples[-1]["timestamp"], line
    )


@dataclass(frozen=True)
class ConfigField:
    name: str
    type: str
    default: str


def config_fields(module: str | None) -> list[ConfigField]:
    """The fields of the plugin's ``Config`` struct, from its JSON schema; none if unknown."""
    if not module:
        return []
    try:
        cls = import_plugin_class(module)
    except AgentPMError:
        return []
    if cls.Config is None:
        return []
    schema = msgspec.json.schema(cls.Config)
    ref = schema.get("$ref", "").rpartition("/")[2]
    properties = schema.get("$defs", {}).get(ref, schema).get("properties", {})
    return [
        ConfigField(name, _type_of(spec), _default_of(spec)) for name, spec in properties.items()
    ]


def _type_of(spec: dict[str, Any]) -> str:
    if "type" in spec:
        return spec["type"] if isinstance(spec["type"], str) else " | ".join(spec["type"])
    options = spec.get("anyOf", [])
    return " | ".join(str(o.get("type", "object")) for o in options) or "any"


def _default_of(spec: dict[str, Any]) -> str:
    return msgspec.json.encode(spec["default"]).decode() if "default" in spec else "required"
