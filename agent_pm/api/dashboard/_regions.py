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

from agent_pm.api._session import Session
from agent_pm.api.dashboard._charts import latency_chart
from agent_pm.api.dashboard._render import render
from agent_pm.api.dashboard._runtime import breaker_rows, isolation_facts, loop_block_view
from agent_pm.api.dashboard._schema_form import config_fields
from agent_pm.api.dashboard._series import (
    Trend,
    latency_series_chart,
    rate_chart,
    series_span,
    spark_points,
    trend,
)
from agent_pm.api.dashboard._view import (
    DEFAULT_WINDOW,
    HISTORY_ROWS,
    STATS_WINDOWS,
    STATUSES,
    WINDOWS,
    Filters,
    HookRow,
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
    window_phrase,
)
from agent_pm.errors import AgentPMError
from agent_pm.plugins.registry import Views
from agent_pm.plugins.windows import WindowPoint, max_points

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
    "quarantine_panel",
    "series_cell",
    "trends",
]

CELL_KEYS = ("health", "calls", "errors", "ratio", "p95", "spark", "skipped", "quarantined")
HOOK_CELL_KEYS = (
    "health", "calls", "rate", "errors", "ratio", "p50", "p95", "p99", "skipped", "quarantined",
)  # fmt: skip
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


def overview_body(rows: list[PluginRow], filtered: bool, window: str = DEFAULT_WINDOW) -> Markup:
    """The table body; each plugin's link keeps the window."""
    return render(
        "partials/overview_body.html",
        rows=rows,
        cell=_cell,
        cell_keys=CELL_KEYS,
        filtered=filtered,
        link_query="" if window == DEFAULT_WINDOW else f"?window={window}",
    )


def trends(
    registry: Any, filters: Filters, views: Views | None = None
) -> Callable[[dict[str, Any]], Trend | None]:
    """Draws a plugin's trend over ``filters``' window (and hook) from its windowed series."""

    def draw(meta: dict[str, Any]) -> Trend | None:
        hooks = [filters.hook] if filters.hook else hook_names(meta)
        recorders = []
        for hook in hooks:
            try:
                recorders.append(registry.windows(meta["name"], hook, views))
            except AgentPMError:
                continue  # a hook it does not have
        if not recorders:
            return None
        uptime = max(recorder.stats("all").seconds for recorder in recorders)
        span = series_span(filters.window, uptime)
        return trend([recorder.series(span, spark_points(span)) for recorder in recorders])

    return draw


def overview_cells(registry: Any, filters: Filters, views: Views | None = None) -> dict[str, Cell]:
    """The status strip, the table body's row order and every cell of every row (figures from
    ``views``, in a cluster)."""
    metas = metas_of(registry, views, filters.window)
    rows = sorted_rows(metas, filters, trends(registry, filters, views))
    all_rows = sorted_rows(metas, Filters(window=filters.window))
    strip = render("partials/strip.html", strip=status_strip(all_rows), filters=filters)
    filtered = bool(filters.plugin or filters.hook or filters.health)
    order = ",".join(row.name for row in rows)
    cells = {
        "status-strip": Cell.of(strip),
        "overview-body": Cell(order, lambda: overview_body(rows, filtered, filters.window)),
    }
    for row in rows:
        for key in CELL_KEYS:
            cells[f"c-{domid(row.name)}-{key}"] = Cell.of(_cell(row, key))
    return cells


# -- plugin page ---------------------------------------------------------------------------


def _hook_cell(row: HookRow, key: str) -> Markup:
    return render("partials/hook_cell.html", r=row, key=key)


@dataclass(frozen=True)
class PluginView:
    """What a plugin page shows, as its URL says: the plugin, one hook, a status filter and
    the window of its figures and charts."""

    name: str
    hook: str = ""
    status: str = ""
    window: str = DEFAULT_WINDOW

    def query(self, **changes: str) -> str:
        values = {"hook": self.hook, "status": self.status, "window": self.window, **changes}
        kept = {k: v for k, v in values.items() if v and not (k == "window" and v == "5m")}
        return urlencode(kept)

    @property
    def window_label(self) -> str:
        return window_phrase(self.window)


def plugin_view(
    meta: dict[str, Any], hook: str, status: str, window: str = DEFAULT_WINDOW
) -> PluginView:
    """The view of ``meta`` for the requested hook (else its first), status filter and window."""
    hooks = hook_names(meta)
    chosen = hook if hook in hooks else (hooks[0] if hooks else "")
    return PluginView(
        meta["name"],
        chosen,
        status if status in STATUSES else "",
        window if window in WINDOWS else DEFAULT_WINDOW,
    )


def _samples(meta: dict[str, Any], hook: str) -> list[dict[str, Any]]:
    return list(meta.get("hook_history", {}).get(hook, []))


def plugin_cells(
    meta: dict[str, Any], view: PluginView, *, admin: bool, csrf: str = ""
) -> dict[str, Cell]:
    """The regions of a plugin page except its history rows and charts (see below).

    An admin gets a reset button for each hook whose breaker is not closed, and one for all.
    """
    row = plugin_row(meta)
    breakers = breaker_rows(meta)
    summary = render(
        "partials/plugin_summary.html",
        row=row,
        meta=meta,
        quarantined=[b.hook for b in breakers if b.resettable],
    )
    rows = hook_rows(meta)
    hooks = render(
        "partials/hooks_table.html",
        rows=rows,
        selected=view.hook,
        query=view.query,
        window_label=view.window_label,
        cell=_hook_cell,
        cell_keys=HOOK_CELL_KEYS,
    )
    errors = render(
        "partials/error_groups.html", view=error_groups(meta, view.hook), hook=view.hook
    )
    config = render(
        "partials/plugin_config.html",
        fields=config_fields(meta.get("config_schema")),
        config=meta.get("config") or {},
        name=view.name,
        admin=admin,
    )
    runtime = render(
        "partials/runtime.html", isolation=isolation_facts(meta), blocks=loop_block_view(meta)
    )
    # The table is re-sent when its rows change; otherwise only the cells whose figures did.
    shape = "|".join([view.query(), *(r.hook for r in rows)])
    cells = {
        f"h-{domid(r.hook)}-{key}": Cell.of(_hook_cell(r, key))
        for r in rows
        for key in HOOK_CELL_KEYS
    }
    return {
        "plugin-summary": Cell.of(summary),
        "hooks-table": Cell(shape, lambda: hooks),
        **cells,
        "quarantine-panel": Cell.of(quarantine_panel(meta, admin=admin, csrf=csrf)),
        "plugin-runtime": Cell.of(runtime),
        "error-groups": Cell.of(errors),
        "plugin-config": Cell.of(config),
    }


def quarantine_panel(
    meta: dict[str, Any], *, admin: bool, csrf: str, card: AdminCard | None = None
) -> Markup:
    """The breakers of ``meta``'s hooks; ``card`` carries what a reset has to say."""
    card = card or AdminCard()
    return render(
        "partials/quarantine.html",
        name=meta["name"],
        rows=breaker_rows(meta),
        admin=admin,
        csrf=csrf,
        notice=card.notice,
        error=card.error,
    )


def series_cell(registry: Any, view: PluginView, views: Views | None = None) -> Cell:
    """Call and error rates and latency percentiles of the view's hook over its window."""
    points: list[WindowPoint] = []
    try:
        recorder = registry.windows(view.name, view.hook, views) if view.hook else None
    except AgentPMError:
        recorder = None
    if recorder is not None:
        span = series_span(view.window, recorder.stats("all").seconds)
        points = recorder.series(span, max_points(span))
        if view.window == "all":  # not the empty stretch before the service started
            points = [p for p in points if p.start.timestamp() + p.seconds > recorder.started]
    html = render(
        "partials/series_charts.html",
        rates=rate_chart(points),
        latency=latency_series_chart(points),
        hook=view.hook,
        window_label=view.window_label,
    )
    return Cell.of(html)


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
    fields = config_fields(meta.get("config_schema"))
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


def metas_of(
    registry: Any, views: Views | None = None, window: str = DEFAULT_WINDOW
) -> list[dict[str, Any]]:
    """Every plugin's metadata with its stats over ``window``, as plain dicts (figures from
    ``views``, in a cluster)."""
    stats = STATS_WINDOWS[window]
    return [plain(meta) for meta in registry.list_metadata(window=stats, views=views)]


def meta_of(
    registry: Any, name: str, views: Views | None = None, window: str = DEFAULT_WINDOW
) -> dict[str, Any] | None:
    """``name``'s metadata with its history and its stats over ``window``; ``None``: no such."""
    try:
        stats = STATS_WINDOWS[window]
        return plain(registry.metadata_for(name, history=True, window=stats, views=views))
    except AgentPMError:
        return None
