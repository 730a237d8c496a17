"""The console's pages: overview, one page per plugin (with its recorded failures), administration.

Each page embeds the bus position it was rendered at and a description of what it shows
(``data-view``), which the page sends to the live channel so updates continue from there.
"""

from __future__ import annotations

import json
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from agent_pm.api._figures import Shown, node_breakdown, shown_figures
from agent_pm.api._session import Session, session_from_scope
from agent_pm.api.dashboard import _regions as regions
from agent_pm.api.dashboard._activity import (
    FEED_ROWS,
    SCAN_LIMIT,
    SOURCES,
    ActivityFilters,
    feed_rows,
    rows_html,
)
from agent_pm.api.dashboard._failures import failure_card
from agent_pm.api.dashboard._render import render
from agent_pm.api.dashboard._view import (
    DEFAULT_WINDOW,
    SEVERITY,
    STATUSES,
    WINDOWS,
    Filters,
    hook_names,
    window_phrase,
)

__all__ = [
    "activity_page",
    "admin_page",
    "html",
    "install_section",
    "overview_page",
    "plugin_page",
]

COLUMNS = [
    ("name", "Plugin", False),
    ("health", "Health", False),
    ("calls", "Calls", True),
    ("errors", "Errors", True),
    ("ratio", "Error ratio", True),
    ("p95", "p95", True),
    ("", "Trend", False),
    ("", "Skipped", True),
    ("", "Quarantined", True),
]


def basis(filters: Filters) -> str:
    """The overview table's caption: what its figures cover and how rows are ordered."""
    hook = f" of hook {filters.hook}" if filters.hook else ""
    return (
        f"Calls, errors and latency {window_phrase(filters.window)}{hook}; errors count errors and "
        f"timeouts, p95 is the slowest hook's, the trend shows calls with failed ones in red. "
        f"Sorted: {filters.SORTS[filters.sort]}."
    )


def html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status, headers={"Cache-Control": "no-store"})


def _shell(registry: Any, session: Session, page: str, view: dict[str, Any]) -> dict[str, Any]:
    """What every console page needs around its own content."""
    return {
        "session": session,
        "csrf": session.csrf,
        "seq": registry.bus.seq,
        "epoch": registry.bus.epoch,
        "config_errors": registry.config_errors,
        "page": page,
        "view_json": json.dumps({"page": page, **view}),
    }


def _session(request: Request) -> Session | None:
    return session_from_scope(request.scope)


def _admin_session(request: Request) -> Session | Response:
    """The admin's session, else the answer for everyone else: log in first, or 403."""
    session = _session(request)
    if session is None:
        return RedirectResponse("/login", 303)
    if not session.is_admin:
        return html(render("forbidden.html", session=session), 403)
    return session


async def overview_page(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return RedirectResponse("/login", 303)
    registry = request.app.state.registry
    filters = Filters.from_query(request.query_params)
    shown, nodes = await _figures(request)
    cells = regions.overview_cells(registry, filters, shown.views)
    hooks = sorted({hook for meta in regions.metas_of(registry) for hook in hook_names(meta)})
    view = {"query": filters.query(), **_node_view(shown)}
    return html(
        render(
            "overview.html",
            **_shell(registry, session, "overview", view),
            figures=shown.scope,
            nodes=nodes,
            filters=filters,
            hooks=hooks,
            healths=SEVERITY,
            windows=WINDOWS,
            columns=COLUMNS,
            basis=basis(filters),
            strip=cells["status-strip"].html(),
            body=cells["overview-body"].html(),
        )
    )


async def plugin_page(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return RedirectResponse("/login", 303)
    registry = request.app.state.registry
    shown, nodes = await _figures(request)
    query = request.query_params
    window = query.get("window", "")
    meta = regions.meta_of(registry, request.path_params["name"], shown.views, _known(window))
    if meta is None:
        return html(render("not_found.html", name=request.path_params["name"]), 404)
    view = regions.plugin_view(meta, query.get("hook", ""), query.get("status", ""), window)
    cells = regions.plugin_cells(meta, view, admin=session.is_admin, csrf=session.csrf)
    shell = _shell(
        registry,
        session,
        "plugin",
        {
            "plugin": view.name,
            "hook": view.hook,
            "status": view.status,
            "window": view.window,
            **_node_view(shown),
        },
    )
    return html(
        render(
            "plugin.html",
            **shell,
            name=view.name,
            view=view,
            hooks=hook_names(meta),
            statuses=STATUSES,
            windows=WINDOWS,
            summary=cells["plugin-summary"].html(),
            hooks_table=cells["hooks-table"].html(),
            quarantine=cells["quarantine-panel"].html(),
            runtime=cells["plugin-runtime"].html(),
            series=regions.series_cell(registry, view, shown.views).html(),
            errors=cells["error-groups"].html(),
            config=cells["plugin-config"].html(),
            chart=regions.chart_cell(meta, view).html(),
            history=regions.history_table(meta, view),
            failures=await failure_card(registry, session, view.name),
            figures=shown.scope,
            nodes=nodes,
            per_node=await _per_node(request, registry, view.name, view.hook),
        )
    )


async def _figures(request: Request) -> tuple[Shown, list[str]]:
    """The figures a page shows (``?node=``: one node's) and every live node, for a selector."""
    return await shown_figures(request), list(await node_breakdown(request))


def _node_view(shown: Shown) -> dict[str, str]:
    """The node a page shows alone, for its live channel to keep showing."""
    return {"node": shown.scope.nodes[0]} if shown.scope.figures == "node" else {}


async def _per_node(request: Request, registry: Any, name: str, hook: str) -> list[Any]:
    """``hook``'s last five minutes on each cluster node (none outside a cluster)."""
    if not hook:
        return []
    breakdown = await node_breakdown(request)
    return [
        (node, registry.windows(name, hook, views).stats("5m")) for node, views in breakdown.items()
    ]


def _known(window: str) -> str:
    return window if window in WINDOWS else DEFAULT_WINDOW


async def install_section(registry: Any, session: Session, state: Any = None) -> Markup:
    entries = await registry.discover_plugins()
    return render(
        "partials/install.html",
        entry_points=[e for e in entries if e.error is None and not e.configured],
        csrf=session.csrf,
        revision=registry.revision,
        state=state or regions.AdminCard(),
    )


async def activity_page(request: Request) -> Response:
    """``/dashboard/activity``: the audit log, newest first, for admins (as ``GET /audit``)."""
    session = _admin_session(request)
    if isinstance(session, Response):
        return session
    filters = ActivityFilters.from_query(request.query_params)
    log = request.app.state.audit
    records = await log.read(None, SCAN_LIMIT if filters.active else FEED_ROWS)
    view = {"query": filters.query(), "after": records[-1].id if records else 0}
    registry = request.app.state.registry
    return html(
        render(
            "activity.html",
            **_shell(registry, session, "activity", view),
            filters=filters,
            sources=SOURCES,
            limit=FEED_ROWS,
            rows=rows_html(feed_rows(records, filters)),
        )
    )


async def admin_page(request: Request) -> Response:
    session = _admin_session(request)
    if isinstance(session, Response):
        return session
    return html(await admin_document(request.app.state.registry, session))


async def admin_document(
    registry: Any,
    session: Session,
    cards: dict[str, regions.AdminCard] | None = None,
    install: regions.AdminCard | None = None,
) -> Markup:
    """The admin page; ``cards`` and ``install`` carry what the last action has to say."""
    cards = cards or {}
    metas = regions.metas_of(registry)
    return render(
        "admin.html",
        **_shell(registry, session, "admin", {}),
        cards=[
            regions.admin_card(meta, session, registry.revision, cards.get(meta["name"]))
            for meta in metas
        ],
        install=await install_section(registry, session, install),
    )
