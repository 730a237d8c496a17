"""Overview rows, their order and filters, plugin page history, assets and escaping."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from agent_pm.api._security_headers import SecurityHeadersMiddleware
from agent_pm.api.dashboard import _regions as regions
from agent_pm.api.dashboard._render import STATIC_DIR, TEMPLATE_DIR
from agent_pm.api.dashboard._view import (
    Filters,
    domid,
    filtered_history,
    hook_names,
    plugin_row,
    sorted_rows,
    status_strip,
)

ROOT = Path(__file__).resolve().parents[3]


def _meta(name: str, statuses: list[str], **extra: Any) -> dict[str, Any]:
    history = [
        {
            "seq": i,
            "timestamp": f"2026-12-02T03:00:{i:02d}+00:00",
            "status": status,
            "duration_ms": float(i + 1),
            "error": "boom 7" if status == "error" else None,
        }
        for i, status in enumerate(statuses)
    ]
    counts = {s: statuses.count(s) for s in ("success", "error", "timeout", "skipped")}
    ran = [float(i + 1) for i, s in enumerate(statuses) if s not in ("skipped", "quarantined")]
    window = {
        "calls": len(statuses),
        "counts": {**counts, "quarantined": statuses.count("quarantined"), "deadline": 0},
        "p95_ms": max(ran, default=None),
    }
    return {
        "name": name,
        "state": "enabled",
        "enabled": True,
        "hooks": ["post_plan"],
        "hook_stats": {"post_plan": {}} if statuses else {},
        "hook_history": {"post_plan": history} if statuses else {},
        "hook_windows": {"post_plan": window} if statuses else {},
        "secrets": {"missing": []},
        "errors": [],
        "config": {},
        **extra,
    }


METAS = [
    _meta("calm", ["success"] * 4),
    _meta("bad", ["error", "error", "success", "timeout"]),
    _meta("off", [], state="disabled", enabled=False),
    _meta("needy", ["skipped"] * 3, secrets={"missing": ["TOKEN"]}),
    _meta("broken", [], state="invalid", error="no such module"),
]


def test_domid_keeps_safe_names_and_disambiguates_others() -> None:
    assert domid("slack_alerts-2") == "slack_alerts-2"
    assert domid("a.b").startswith("a_b-") and domid("a.b") != domid("a:b")


def test_plugin_row_counts_over_the_selected_window() -> None:
    row = plugin_row(METAS[1])
    assert (row.calls, row.errors, row.skipped, row.quarantined) == (4, 3, 0, 0)
    assert row.error_ratio == 0.75 and row.p95_ms == 4.0
    needy = plugin_row(METAS[3])
    assert needy.health == "skipping" and needy.reason == "missing secrets: TOKEN"
    assert needy.error_ratio is None and needy.p95_ms is None and needy.skipped == 3
    assert plugin_row(METAS[4]).reason == "no such module"
    assert plugin_row(METAS[1], hook="pre_plan").calls == 0


def test_plugin_row_p95_is_the_slowest_hooks_and_counts_add_up() -> None:
    meta = _meta("two", ["success", "quarantined"])
    other = {**meta["hook_windows"]["post_plan"], "calls": 3, "p95_ms": 80.0}
    meta["hook_windows"]["pre_plan"] = other
    row = plugin_row(meta)
    assert (row.calls, row.quarantined, row.ran) == (5, 2, 2)
    assert row.p95_ms == 80.0 and row.error_ratio == 0.0


def test_default_order_is_worst_health_first_and_strip_counts_it() -> None:
    rows = sorted_rows(METAS, Filters())
    assert [r.name for r in rows] == ["broken", "needy", "bad", "calm", "off"]
    assert status_strip(rows) == [("invalid", 1), ("skipping", 1), ("enabled", 2), ("disabled", 1)]


def test_filters_and_sorting_round_trip_through_the_url() -> None:
    filters = Filters.from_query({"plugin": "a", "sort": "ratio", "hook": ""})
    assert filters.descending  # figures sort largest first unless asked otherwise
    assert [r.name for r in sorted_rows(METAS, filters)] == ["bad", "calm"]
    assert filters.query() == "plugin=a&sort=ratio"
    assert Filters.from_query({"window": "24h"}).query() == "window=24h"
    assert Filters.from_query({"window": "1y"}).window == "5m"
    assert Filters(window="all").toggle("calls") == "sort=calls&window=all"
    assert Filters.from_query({"sort": "nonsense"}).sort == "health"
    assert filters.toggle("ratio") == "plugin=a&sort=ratio&dir=asc"
    assert Filters().toggle("calls") == "sort=calls"
    assert Filters.from_query({"sort": "name"}).toggle("name") == "sort=name&dir=desc"
    assert [r.name for r in sorted_rows(METAS, Filters(health="skipping"))] == ["needy"]
    assert sorted_rows(METAS, Filters(hook="pre_plan")) == []


def test_history_is_newest_first_and_filtered_by_status() -> None:
    samples = METAS[1]["hook_history"]["post_plan"]
    assert [s["seq"] for s in filtered_history(samples, "")] == [3, 2, 1, 0]
    assert [s["seq"] for s in filtered_history(samples, "error")] == [1, 0]
    assert hook_names({"hooks": ["a"], "hook_stats": {"b": {}, "a": {}}}) == ["a", "b"]


def test_plugin_view_falls_back_to_the_first_hook_and_known_statuses() -> None:
    view = regions.plugin_view(METAS[1], "nope", "weird")
    assert (view.hook, view.status) == ("post_plan", "")
    assert (
        regions.plugin_view(METAS[1], "post_plan", "error").query() == "hook=post_plan&status=error"
    )


def test_templates_escape_what_they_show() -> None:
    meta = _meta("x<script>", ["error"], state="invalid", error="<img src=x onerror=alert(1)>")
    rows = sorted_rows([meta], Filters())
    html = str(regions.overview_body(rows, filtered=False))
    assert "<script>" not in html and "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_templates_resolve_in_a_checkout_and_the_wheel_ships_them() -> None:
    assert TEMPLATE_DIR == ROOT / "web" / "templates"
    assert (STATIC_DIR / "vendor" / "htmx.min.js").is_file()
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    included = build["targets"]["wheel"]["force-include"]
    assert included == {"web": "agent_pm/_web", "static": "agent_pm/_static"}


def test_security_headers_do_not_override_and_skip_websockets() -> None:
    async def page(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok", headers={"X-Frame-Options": "SAMEORIGIN"})

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    app = Starlette(
        routes=[Route("/", page), WebSocketRoute("/ws", socket)],
        middleware=[Middleware(SecurityHeadersMiddleware)],
    )
    with TestClient(app) as client:
        response = client.get("/")
        assert response.headers["x-frame-options"] == "SAMEORIGIN"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_text() == "hi"
