"""The dashboard's view model, chart geometry, asset lookup and security headers."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from agent_pm.api import dashboard_render as ui
from agent_pm.api.dashboard_live import LiveChannel
from agent_pm.api.dashboard_view import bar_chart, config_fields, domid, pairs, timeline
from agent_pm.api.security_headers import SecurityHeadersMiddleware
from agent_pm.api.session import Session
from agent_pm.plugins import HookSample, Lagged, StateChange
from agent_pm.plugins.telemetry import now

ROOT = Path(__file__).resolve().parents[2]


def test_domid_keeps_safe_names_and_disambiguates_others() -> None:
    assert domid("slack_alerts-2") == "slack_alerts-2"
    assert domid("a.b").startswith("a_b-") and domid("a.b") != domid("a:b")


def test_timeline_scales_samples_into_the_plot() -> None:
    assert timeline([]).marks == []
    one = timeline(
        [{"timestamp": "2026-01-01T00:00:00+00:00", "status": "success", "duration_ms": 0}]
    )
    assert one.marks[0].x == one.width / 2
    samples = [
        {"timestamp": f"2026-01-01T00:00:0{i}+00:00", "status": s, "duration_ms": d}
        for i, (s, d) in enumerate([("success", 1.0), ("error", 4.0), ("timeout", 2.0)])
    ]
    chart = timeline(samples, width=100, height=40)
    assert [(m.x, m.y, m.status) for m in chart.marks] == [
        (0.0, 30.0, "success"),
        (50.0, 0.0, "error"),
        (100.0, 20.0, "timeout"),
    ]
    assert chart.max_ms == 4.0


def test_bar_chart_sums_hooks_over_plugins() -> None:
    rows = [
        {"hook": "b", "invocations": 4, "failures": 1, "timeouts": 1},
        {"hook": "a", "invocations": 2, "failures": 0, "timeouts": 0},
        {"hook": "b", "invocations": 4, "failures": 0, "timeouts": 0},
    ]
    chart = bar_chart(rows, plot_width=80)
    assert [(b.hook, b.invocations, b.width, b.bad_width) for b in chart.bars] == [
        ("a", 2, 20.0, 0.0),
        ("b", 8, 80.0, 20.0),
    ]
    assert bar_chart([]).bars == []


def test_config_fields_from_the_schema() -> None:
    fields = config_fields("tests.fixtures.plugins:Configured")
    assert [(f.name, f.type, f.default) for f in fields] == [
        ("channel", "string", '"#general"'),
        ("retries", "integer", "3"),
    ]
    assert config_fields("tests.fixtures.plugins:Echo") == []
    assert config_fields("tests.fixtures.plugins:NotAPlugin") == []
    assert config_fields(None) == []


def test_pairs_and_selection_prefer_what_ran() -> None:
    metas = [
        {"name": "p", "hooks": ["x"], "hook_stats": {}},
        {"name": "q", "hooks": ["y"], "hook_stats": {"y": {}}},
    ]
    assert pairs(metas) == [("p", "x"), ("q", "y")]
    assert ui.selection_for(metas, None) == ui.Selection("q", "y")
    assert ui.selection_for(metas, "p:x") == ui.Selection("p", "x")
    assert ui.selection_for(metas, "p:nope") == ui.Selection("q", "y")
    assert ui.selection_for([], None) == ui.Selection()
    assert ui.Selection().value == ""


def test_templates_resolve_in_a_checkout_and_the_wheel_ships_them() -> None:
    assert ui.TEMPLATE_DIR == ROOT / "web" / "templates"
    assert (ui.STATIC_DIR / "vendor" / "htmx.min.js").is_file()
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    included = build["targets"]["wheel"]["force-include"]
    assert included == {"web": "agent_pm/_web", "static": "agent_pm/_static"}


def test_templates_escape_what_they_show() -> None:
    row_meta: dict[str, Any] = {
        "name": "x<script>",
        "state": "invalid",
        "error": "<img src=x onerror=alert(1)>",
        "errors": [],
    }
    html = ui.summary_rows([row_meta], oob=False, names={"x<script>"})
    assert "<script>" not in html and "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


class FakeRegistry:
    def __init__(self) -> None:
        self.bus = type("B", (), {"seq": 0, "epoch": "e"})()
        self.config_errors: list[str] = []

    def names(self) -> list[str]:
        return ["p"]

    def list_metadata(self, *, history: bool = True) -> list[dict[str, Any]]:
        return [{"name": "p", "state": "enabled", "hooks": ["h"], "hook_stats": {}}]


def _sample(seq: int, plugin: str = "p", hook: str = "h") -> HookSample:
    return HookSample(seq, plugin, hook, now(), "success", 1.0)


def test_live_channel_marks_only_what_changed() -> None:
    channel = LiveChannel(FakeRegistry(), Session("read", 0, "t"), ui.Selection("p", "h"))
    assert not channel.dirty
    channel.absorb([_sample(1, hook="other")])
    assert channel.plugins == {"p"} and channel.hooks and not channel.timeline and not channel.full
    channel.absorb([_sample(2)])
    assert channel.timeline and channel.seq == 2
    channel.absorb([StateChange(3, {"name": "p", "state": "disabled"})])
    assert channel.states == {"p"} and not channel.full
    channel.absorb([StateChange(4, {"name": "new", "state": "disabled"})])
    assert channel.full
    fresh = LiveChannel(FakeRegistry(), Session("read", 0, "t"), ui.Selection())
    fresh.absorb([Lagged(5, 9)])
    assert fresh.full and fresh.seq == 9
    fresh.absorb([StateChange(10, {"name": "p", "state": "removed"})])
    assert fresh.full


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


@pytest.mark.anyio
async def test_discovered_offers_only_loadable_unconfigured_entry_points() -> None:
    from agent_pm.plugins.discovery import CatalogueEntry

    usable = CatalogueEntry(entry_point="ok", module="pkg.mod:Ok")
    catalogue = [
        usable,
        CatalogueEntry(entry_point="broken", module="pkg.mod:Gone", error="cannot import"),
        CatalogueEntry(entry_point="there", module="pkg.mod:There", configured=True),
    ]

    class Registry:
        async def discover_plugins(self) -> list[CatalogueEntry]:
            return catalogue

    assert await ui.discovered(Registry()) == [usable]
