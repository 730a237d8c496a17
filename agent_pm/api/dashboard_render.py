"""Rendering the dashboard: the Jinja2 environment and the page and fragment builders.

Pages and the live channel render the same partial templates, so a row pushed over the WebSocket
is byte for byte the row a reload would show. Templates and assets are found next to the package
in an installed wheel (``agent_pm/_web``, ``agent_pm/_static``) or at the top of a checkout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from agent_pm.api.dashboard_view import (
    HISTORY_ROWS,
    bar_chart,
    config_fields,
    domid,
    hook_rows,
    pairs,
    plugin_row,
    timeline,
)
from agent_pm.api.session import Session
from agent_pm.errors import AgentPMError

__all__ = [
    "STATIC_DIR",
    "TEMPLATE_DIR",
    "Card",
    "Selection",
    "admin_card",
    "admin_states",
    "environment",
    "full_fragments",
    "hooks_panel",
    "page",
    "render",
    "selection_for",
    "summary_rows",
    "timeline_panel",
]

_PACKAGE = Path(__file__).resolve().parent.parent


def _asset_dir(name: str) -> Path:
    packaged = _PACKAGE / f"_{name}"
    return packaged if packaged.is_dir() else _PACKAGE.parent / name


TEMPLATE_DIR = _asset_dir("web") / "templates"
STATIC_DIR = _asset_dir("static")

environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.globals["domid"] = domid
environment.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True)


def render(template: str, **context: Any) -> Markup:
    """Render ``template``; the result is safe to embed in another template."""
    return Markup(environment.get_template(template).render(**context))  # autoescaped jinja output  # noqa: S704  # nosec B704


@dataclass(frozen=True)
class Selection:
    """The (plugin, hook) pair whose timeline and history are shown."""

    plugin: str = ""
    hook: str = ""

    @property
    def value(self) -> str:
        return f"{self.plugin}:{self.hook}" if self.plugin else ""


def selection_for(metas: list[dict[str, Any]], wanted: str | None) -> Selection:
    """``wanted`` (``plugin:hook``) if it exists, else the first pair that ran, else the first."""
    options = pairs(metas)
    plugin, _, hook = (wanted or "").rpartition(":")
    if (plugin, hook) in options:
        return Selection(plugin, hook)
    ran = [(m["name"], h) for m in metas for h in m.get("hook_stats", {})]
    first = ran[0] if ran else options[0] if options else ("", "")
    return Selection(*first)


@dataclass
class Card:
    """Per-plugin state of an admin card that only the last admin action knows."""

    notice: str | None = None
    error: str | None = None
    config_text: str | None = None
    config_error: dict[str, str] | None = None
    status: int = 200


@dataclass
class PageState:
    cards: dict[str, Card] = field(default_factory=dict)
    install_error: str | None = None
    install_notice: str | None = None


def summary_rows(metas: list[dict[str, Any]], *, oob: bool, names: set[str] | None = None) -> str:
    """The summary table body, or only the rows of ``names``."""
    rows = [plugin_row(m) for m in metas if names is None or m["name"] in names]
    if names is None:
        body = render("partials/summary_body.html", rows=rows, oob=oob)
    else:
        body = Markup("").join(render("partials/summary_row.html", row=r, oob=oob) for r in rows)
    # A bare <tbody> or <tr> switches the HTML parser into table mode for whatever follows it in
    # the same message, so out-of-band table parts travel inside a table of their own.
    return Markup("<table hidden>{}</table>").format(body) if oob and body else body


def hooks_panel(metas: list[dict[str, Any]], *, oob: bool) -> str:
    rows = hook_rows(metas)
    return render("partials/hooks.html", rows=rows, chart=bar_chart(rows), oob=oob)


def timeline_panel(registry: Any, selection: Selection, *, oob: bool) -> str:
    samples: list[dict[str, Any]] = []
    if selection.plugin:
        try:
            samples = registry.history(selection.plugin, selection.hook).get(selection.hook, [])
        except AgentPMError:
            samples = []
    return render(
        "partials/timeline.html",
        selection=selection,
        chart=timeline(samples),
        history=list(reversed(samples))[:HISTORY_ROWS],
        total=len(samples),
        oob=oob,
    )


def selection_form(metas: list[dict[str, Any]], selection: Selection, *, oob: bool) -> str:
    return render("partials/selection.html", pairs=pairs(metas), selection=selection, oob=oob)


def admin_card(meta: dict[str, Any], session: Session, card: Card | None = None) -> str:
    row = plugin_row(meta)
    return render(
        "partials/admin_card.html",
        row=row,
        card=card or Card(),
        fields=config_fields(row.module),
        csrf=session.csrf,
    )


def admin_states(metas: list[dict[str, Any]], session: Session, names: set[str]) -> str:
    rows = [plugin_row(m) for m in metas if m["name"] in names]
    return Markup("").join(
        render("partials/admin_state.html", row=row, csrf=session.csrf, oob=True) for row in rows
    )


async def discovered(registry: Any) -> list[Any]:
    """Installable entry points: loadable, and not yet in the manifest."""
    entries = await registry.discover_plugins()
    return [e for e in entries if e.error is None and not e.configured]


async def admin_list(
    registry: Any, metas: list[dict[str, Any]], session: Session, state: PageState, *, oob: bool
) -> str:
    cards = [admin_card(m, session, state.cards.get(m["name"])) for m in metas]
    return render(
        "partials/admin.html",
        cards=cards,
        entry_points=await discovered(registry),
        csrf=session.csrf,
        install_error=state.install_error,
        install_notice=state.install_notice,
        oob=oob,
    )


async def full_fragments(registry: Any, session: Session, selection: Selection) -> str:
    """Every live region, out of band: what a client gets after a gap it cannot replay."""
    metas = registry.list_metadata(history=False)
    parts = [
        summary_rows(metas, oob=True),
        hooks_panel(metas, oob=True),
        selection_form(metas, selection, oob=True),
        timeline_panel(registry, selection, oob=True),
        render("partials/config_errors.html", errors=registry.config_errors, oob=True),
    ]
    if session.is_admin:
        parts.append(await admin_list(registry, metas, session, PageState(), oob=True))
    return Markup("").join(parts)


async def page(
    registry: Any, session: Session, wanted: str | None, state: PageState | None = None
) -> str:
    """The whole dashboard page."""
    # Imported here: the failures section renders through this module's environment.
    from agent_pm.api.dashboard_failures import failures_section

    metas = registry.list_metadata(history=False)
    selection = selection_for(metas, wanted)
    state = state or PageState()
    return render(
        "dashboard.html",
        session=session,
        csrf=session.csrf,
        seq=registry.bus.seq,
        epoch=registry.bus.epoch,
        config_errors=registry.config_errors,
        summary=summary_rows(metas, oob=False),
        hooks=hooks_panel(metas, oob=False),
        selection_html=selection_form(metas, selection, oob=False),
        timeline=timeline_panel(registry, selection, oob=False),
        admin=await admin_list(registry, metas, session, state, oob=False)
        if session.is_admin
        else "",
        failures=await failures_section(registry, session),
    )
