"""How a plugin runs, as its page shows it: quarantine per hook, isolation, event-loop blocking.

Plain data for the templates, read from the plugin's metadata (``quarantine``, ``isolation``
and ``loop_blocks``). Isolation fields the console does not know yet (a newer worker status,
say) are still shown, by name, after the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent_pm.api.dashboard._format import count, duration, utc

__all__ = [
    "BlockRow",
    "BreakerRow",
    "LoopBlockView",
    "breaker_rows",
    "isolation_facts",
    "loop_block_view",
]


@dataclass(frozen=True)
class BreakerRow:
    """One hook's circuit breaker: ``closed`` lets calls through, ``open`` and ``probing`` not."""

    hook: str
    state: str
    reason: str
    opened_at: str | None
    next_probe_at: str | None
    trips: int
    cooldown_seconds: float

    @property
    def resettable(self) -> bool:
        return self.state != "closed"


def breaker_rows(meta: dict[str, Any]) -> list[BreakerRow]:
    """Every hook with a breaker, open ones first."""
    rows = [
        BreakerRow(
            hook,
            str(b.get("state", "closed")),
            str(b.get("reason") or ""),
            b.get("opened_at"),
            b.get("next_probe_at"),
            int(b.get("trips", 0)),
            float(b.get("cooldown_seconds", 0.0)),
        )
        for hook, b in (meta.get("quarantine") or {}).items()
    ]
    return sorted(rows, key=lambda r: (not r.resettable, r.hook))


# Known isolation fields in the order they read best, with their labels.
_ISOLATION_LABELS = {
    "mode": "Runs",
    "declared": "Manifest asks for",
    "promoted": "Promoted",
    "why": "Last move, why",
    "when": "Last move, when",
    "by": "Last move, by",
    "promotions": "Promotions",
    "hold_until": "No promotion before",
    "state": "Worker",
    "pid": "PID",
    "restarts": "Restarts",
    "last_exit": "Last exit",
    "memory_mb": "Memory limit",
    "cpu_seconds": "CPU limit",
}
_TIMES = frozenset({"when", "hold_until", "at"})


def _shown(key: str, value: Any) -> str:
    if value is None or value == "":
        return "—"
    if key in _TIMES and isinstance(value, str):
        return utc(value)
    if key == "mode":
        return {"inline": "inline, in the service", "process": "in its own process"}.get(
            str(value), str(value)
        )
    if key == "memory_mb":
        return f"{count(value)} MB"
    if key == "cpu_seconds":
        return f"{count(value)} s of CPU"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return count(value) if float(value).is_integer() else f"{value:g}"
    return str(value)


def _label(key: str) -> str:
    return _ISOLATION_LABELS.get(key, key.replace("_", " ").capitalize())


def isolation_facts(meta: dict[str, Any]) -> list[tuple[str, str | list[tuple[str, str]]]]:
    """``(label, value)`` pairs of the isolation block; a nested mapping (a promotion record,
    say) gives a list of pairs as its value."""
    # Unset fields (an inline plugin has no worker) are left out.
    block = {k: v for k, v in (meta.get("isolation") or {}).items() if v is not None}
    ordered = [k for k in _ISOLATION_LABELS if k in block] + sorted(
        k for k in block if k not in _ISOLATION_LABELS
    )
    facts: list[tuple[str, str | list[tuple[str, str]]]] = []
    for key in ordered:
        value = block[key]
        if isinstance(value, dict):
            facts.append((_label(key), [(_label(k), _shown(k, v)) for k, v in value.items()]))
        else:
            facts.append((_label(key), _shown(key, value)))
    return facts


@dataclass(frozen=True)
class BlockRow:
    """One hook's loop-hold histogram: step counts per bucket, summed up."""

    hook: str
    steps: int
    mean_ms: float | None
    max_ms: float
    over: int
    buckets: list[tuple[str, int]]


@dataclass(frozen=True)
class LoopBlockView:
    warn_ms: float
    rows: list[BlockRow]
    worst: list[tuple[str, str, str]]


def _bucket_labels(bounds: list[float]) -> list[str]:
    return [f"≤ {duration(b)}" for b in bounds] + [f"> {duration(bounds[-1])}"]


def loop_block_view(meta: dict[str, Any]) -> LoopBlockView | None:
    """The loop-block statistics of ``meta``; ``None`` while they are not measured."""
    blocks = meta.get("loop_blocks")
    if not blocks:
        return None
    labels = _bucket_labels(list(blocks.get("bounds_ms") or [])) if blocks.get("bounds_ms") else []
    rows = []
    for hook, h in sorted((blocks.get("hooks") or {}).items()):
        steps = int(h.get("steps", 0))
        counts = list(h.get("counts") or [])
        rows.append(
            BlockRow(
                hook,
                steps,
                float(h.get("total_ms", 0.0)) / steps if steps else None,
                float(h.get("max_ms", 0.0)),
                int(h.get("over_threshold", 0)),
                [(label, n) for label, n in zip(labels, counts, strict=False) if n],
            )
        )
    worst = [
        (duration(float(w["ms"])), str(w["hook"]), utc(datetime.fromtimestamp(w["at"], UTC)))
        for w in blocks.get("worst") or []
    ]
    return LoopBlockView(float(blocks.get("warn_ms", 0.0)), rows, worst)
