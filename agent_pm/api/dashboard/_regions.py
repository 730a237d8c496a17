"""The live regions of each console page, keyed by DOM id, rendered from registry state.

A page and the live channel render regions through the same functions: the page embeds them, the
channel compares each region's *key* with the one it last sent and sends only the regions whose
key changed. For most regions the key is the HTML itself; an admin card's key is the plugin's
editable state, so a card is re-sent when its plugin changed, not whenever the global revision
moves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup

from agent_pm.api.dashboard._charts import latency_chart
from agent_pm.api.dashboard._render import render
from agent_pm.api.dashboard._schema_form import config_fields
from agent_pm.api.dashboard._view import (
    HISTORY_ROWS,
    STATUSES,
    Filters,
    PluginRow,
    domid,
    error_groups,
    filtered_history,
    hook_names,
    hook_rows,
    plain,
    plugin_row,
    sorted_rows,
    status_strip,
)
from agent_pm.api.session import Session
from agent_pm.errors import AgentPMError
from agent_pm.plugins.registry import Views

__all__ = [
    "CELL_KEYS",
    "AdminCard",
    "Cell",
    "Notice",
    "PluginView",
    "admin_card",
    "admin_cells",
    "base_of",
    "editable_state",
    "overview_body",
    "overview_cells",
    "plugin_cells",
    "plugin_view",
]

CELL_KEYS = ("health", "calls", "errors", "ratio", "p95", "spark", "skipped")
NOTICE_SECONDS = 12
ERROR_NOTICE_SECONDS = 30


@dataclass(frozen=True)
class Cell:
    """A region: ``key`` says whether it changed, ``html`` renders it."""

    key: str
    html: Callable[[], Markup]

    @classmethod
    def of(cls, html: Markup) -> Cell:
        return cls(html, lambda: html)


# -- overview ------------------------------------------------------------------------------


def _cell(row: PluginRow, key: str) -> Markup:
    return render("partials/overview_cell.html", row=row, key=key)


def overview_body(rows: list[PluginRow], filtered: bool) -> Markup:
    return render(
        "partials/overview_body.html",
        rows=rows,
        cell=_cell,
        cell_keys=CELL_KEYS,
        filtered=filtered,
    )


def overview_cells(metas: list[dict[str, Any]], filters: Filters) -> dict[str, Cell]:
    """The status strip, the table body's row order and every cell of every row."""
    rows = sorted_rows(metas, filters)
    all_rows = sorted_rows(metas, Filters())
    strip = render("partials/strip.html", strip=status_strip(all_rows), filters=filters)
    filtered = bool(filters.plugin or filters.hook or filters.health)
    order = ",".join(row.name for row in rows)
    cells = {
        "status-strip": Cell.of(strip),
        "overview-body": Cell(order, lambda: overview_body(rows, filtered)),
    }
    for row in rows:
        for key in CELL_KEYS:
            cells[f"c-{domid(row.name)}-{key}"] = Cell.of(_cell(row, key))
    return cells


# -- plugin page ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PluginView:
    """What a plugin page shows, as its URL says: the plugin, one hook, a status filter."""

    name: str
    hook: str = ""
    status: str = ""

    def query(self, **changes: str) -> str:
        values = {"hook": self.hook, "status": self.status, **changes}
        return urlencode({k: v for k, v in values.items() if v})


def plugin_view(meta: dict[str, Any], hook: str, status: str) -> PluginView:
    """The view of ``meta`` for the requested hook (else its first) and status filter."""
    hooks = hook_names(meta)
    chosen = hook if hook in hooks else (hooks[0] if hooks else "")
    return PluginView(meta["name"], chosen, status if status in STATUSES else "")


def _samples(meta: dict[str, Any], hook: str) -> list[dict[str, Any]]:
    return list(meta.get("hook_history", {}).get(hook, []))


def plugin_cells(
    meta: dict[str, Any], view: PluginView, *, admin: bool, csrf: str = ""
) -> dict[str, Cell]:
    """The regions of a plugin page except its history rows and chart (see below).

    An admin gets a quarantine reset button while one of the plugin's breakers is not closed.
    """
    row = plugin_row(meta)
    quarantined = sorted(
        hook for hook, b in (meta.get("quarantine") or {}).items() if b.get("state") != "closed"
    )
    summary = render(
        "partials/plugin_summary.html",
        row=row,
        meta=meta,
        quarantined=quarantined if admin else [],
        csrf=csrf,
    )
    hooks = render(
        "partials/hooks_table.html", rows=hook_rows(meta), selected=view.hook, query=view.query
    )
    errors = render(
        "partials/error_groups.html", view=error_groups(meta, view.hook), hook=view.hook
    )
    config = render(
        "partials/plugin_config.html",
        fields=config_fields(meta.get("module")),
        config=meta.get("config") or {},
        name=view.name,
        admin=admin,
    )
    return {
        "plugin-summary": Cell.of(summary),
        "hooks-table": Cell.of(hooks),
        "error-groups": Cell.of(errors),
        "plugin-config": Cell.of(config),
    }


def chart_cell(meta: dict[str, Any], view: PluginView) -> Cell:
    samples = _samples(meta, view.hook)
    last = samples[-1]["seq"] if samples else 0
    return Cell(
        f"{view.hook}:{last}:{len(samples)}",
        lambda: render("partials/latency_chart.html", chart=latency_chart(samples), hook=view.hook),
    )


def history_table(meta: dict[str, Any], view: PluginView) -> Markup:
    samples = _samples(meta, view.hook)
    return render(
        "partials/history.html",
        rows=filtered_history(samples, view.status),
        limit=HISTORY_ROWS,
        kept=len(samples),
        status=view.status,
        hook=view.hook,
    )


def history_rows_after(meta: dict[str, Any], view: PluginView, seq: int) -> tuple[str, int]:
    """Rows of samples newer than ``seq`` that pass the filter, newest first, and the new seq."""
    samples = [s for s in _samples(meta, view.hook) if s["seq"] > seq]
    if not samples:
        return "", seq
    rows = filtered_history(samples, view.status)
    html = Markup("").join(render("partials/history_row.html", s=s) for s in rows)
    return html, samples[-1]["seq"]


# -- admin ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """A timestamped message that the page shows in its notice region until it expires."""

    text: str
    kind: str = "ok"
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def seconds(self) -> int:
        return ERROR_NOTICE_SECONDS if self.kind == "error" else NOTICE_SECONDS


@dataclass(frozen=True)
class Change:
    path: str
    before: str
    after: str


@dataclass(frozen=True)
class Conflict:
    """A form sent at an old revision whose plugin changed meanwhile."""

    seen: int
    current: int
    changes: list[Change]


@dataclass
class AdminCard:
    """What only the last admin action on one card knows."""

    notice: Notice | None = None
    error: str | None = None
    config_text: str | None = None
    config_error: dict[str, str] | None = None
    field_texts: dict[str, str] = field(default_factory=dict)
    conflict: Conflict | None = None
    status: int = 200


def editable_state(meta: dict[str, Any]) -> dict[str, Any]:
    """What an admin form acts on: the plugin's manifest settings as every surface shows them."""
    return {
        "state": meta["state"],
        "enabled": bool(meta.get("enabled")),
        "module": meta.get("module"),
        "config": meta.get("config") or {},
    }


def base_of(meta: dict[str, Any]) -> str:
    """The editable state as compact JSON: sent back by every form of the card."""
    return json.dumps(editable_state(meta), sort_keys=True, separators=(",", ":"))


def admin_card(
    meta: dict[str, Any], session: Session, revision: int, card: AdminCard | None = None
) -> Markup:
    card = card or AdminCard()
    fields = config_fields(meta.get("module"))
    config = meta.get("config") or {}
    return render(
        "partials/admin_card.html",
        meta=meta,
        row=plugin_row(meta),
        card=card,
        fields=fields,
        field_names=[f.name for f in fields],
        field_values=config,
        field_texts=card.field_texts,
        csrf=session.csrf,
        revision=revision,
        base=base_of(meta),
    )


def admin_cells(metas: list[dict[str, Any]], session: Session, revision: int) -> dict[str, Cell]:
    cells: dict[str, Cell] = {}
    for meta in metas:
        row = plugin_row(meta)
        key = hashlib.sha256(f"{base_of(meta)}|{row.health}|{row.reason}".encode()).hexdigest()
        cells[f"admin-{domid(meta['name'])}"] = Cell(
            key, partial(admin_card, meta, session, revision)
        )
    return cells


def metas_of(registry: Any, views: Views | None = None) -> list[dict[str, Any]]:
    """Every plugin's metadata with history, as plain dicts (figures from ``views``, in a
    cluster)."""
    return [plain(meta) for meta in registry.list_metadata(history=True, views=views)]


def meta_of(registry: Any, name: str, views: Views | None = None) -> dict[str, Any] | None:
    try:
        return plain(registry.metadata_for(name, history=True, views=views))
    except AgentPMError:
        return None
