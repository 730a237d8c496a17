"""The live channel: refusals, resuming, and sending only the regions that changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from agent_pm.api.dashboard._live import ROWS_PER_TICK
from tests.api.dashboard.conftest import fire, login, registry
from tests.api.dashboard_app import ADMIN_KEY, READ_KEY, SECRET_VALUE, dashboard_settings


def receive(ws: Any) -> dict[str, Any]:
    return json.loads(ws.receive_text())


def receive_until(ws: Any, check: Any, limit: int = 20) -> dict[str, Any]:
    """Changes are coalesced per tick: one may arrive in the first message or a later one."""
    merged: dict[str, Any] = {"patch": {}, "prepend": {}, "append": {}}
    for _ in range(limit):
        message = receive(ws)
        for kind in ("patch", "prepend", "append"):
            for key, html in message.get(kind, {}).items():
                merged[kind][key] = merged[kind].get(key, "") + html
        if check(merged):
            return merged
    raise AssertionError(f"the expected change never arrived: {merged}")


def hello(client: TestClient, view: dict[str, Any], since: int | None = None) -> str:
    bus = registry(client).bus
    return json.dumps(
        {"type": "hello", "since": bus.seq if since is None else since, "epoch": bus.epoch,
         "view": view}
    )  # fmt: skip


def test_live_channel_refuses_without_session(client: TestClient) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as e,
        client.websocket_connect("/dashboard/live") as ws,
    ):
        ws.receive_text()
    assert e.value.code == 1008


def test_live_channel_closes_for_a_session_the_middleware_let_through(manifest: Path) -> None:
    from starlette.applications import Starlette

    from agent_pm.api import dashboard

    app = Starlette(routes=dashboard.routes())
    app.state.settings = dashboard_settings(manifest)
    with (
        TestClient(app) as bare,
        pytest.raises(WebSocketDisconnect) as e,
        bare.websocket_connect("/dashboard/live") as ws,
    ):
        ws.receive_text()
    assert e.value.code == 4401


def test_live_channel_refuses_another_origin(client: TestClient) -> None:
    login(client)
    headers = {"Origin": "http://evil.example"}
    with (
        pytest.raises(WebSocketDisconnect) as e,
        client.websocket_connect("/dashboard/live", headers=headers) as ws,
    ):
        ws.receive_text()
    assert e.value.code == 1008


def test_unknown_epoch_resends_every_region(client: TestClient) -> None:
    login(client)
    with client.websocket_connect("/dashboard/live") as ws:
        ws.send_text(json.dumps({"type": "hello", "since": 0, "epoch": "old",
                                 "view": {"page": "overview"}}))  # fmt: skip
        message = receive(ws)
    patch = message["patch"]
    for region in ["status-strip", "overview-body", "manifest-errors", "c-echo-calls"]:
        assert region in patch
    assert message["epoch"] == registry(client).bus.epoch
    assert SECRET_VALUE not in json.dumps(message)


def test_overview_gets_only_the_cells_that_changed(client: TestClient) -> None:
    login(client)
    view = {"page": "overview", "query": "plugin=echo"}
    with client.websocket_connect("/dashboard/live") as ws:
        ws.send_text(hello(client, view))
        fire(client, "pre_plan")
        merged = receive_until(ws, lambda m: "c-echo-calls" in m["patch"])
    patch = merged["patch"]
    assert ">1</td>" in patch["c-echo-calls"]
    assert "c-echo-errors" not in patch and "c-echo-skipped" not in patch  # still 0
    assert "overview-body" not in patch and not any("failing" in key for key in patch)


def test_plugin_page_prepends_new_history_rows_by_status(client: TestClient) -> None:
    login(client)
    view = {"page": "plugin", "plugin": "failing", "hook": "post_plan", "status": "error"}
    with client.websocket_connect("/dashboard/live") as ws:
        ws.send_text(hello(client, view))
        fire(client, times=2)
        merged = receive_until(ws, lambda m: m["prepend"].get("history-body", "").count("<tr") >= 2)
    rows = merged["prepend"]["history-body"]
    assert rows.count('<tr data-seq="') == 2 and "status-error" in rows
    # Counters are patched cell by cell; the hook table itself stays as long as its rows do.
    assert "hooks-table" not in merged["patch"] and "error-groups" in merged["patch"]
    assert ">2</td>" in merged["patch"]["h-post_plan-calls"]
    assert "h-post_plan-p95" in merged["patch"] and "h-post_plan-skipped" not in merged["patch"]


def test_a_burst_sends_a_bounded_number_of_rows_and_names_the_rest(client: TestClient) -> None:
    login(client)
    since = registry(client).bus.seq
    fire(client, times=ROWS_PER_TICK + 5)
    view = {"page": "plugin", "plugin": "echo", "hook": "post_plan"}
    with client.websocket_connect("/dashboard/live") as ws:
        ws.send_text(hello(client, view, since=since))
        message = receive(ws)
    rows = message["prepend"]["history-body"]
    assert rows.count('<tr data-seq="') == ROWS_PER_TICK
    assert "5 more calls (seq" in rows and 'class="gap"' in rows


def test_admin_page_gets_the_card_of_the_plugin_that_changed(client: TestClient) -> None:
    login(client)
    with client.websocket_connect("/dashboard/live") as ws:
        ws.send_text(hello(client, {"page": "admin"}))
        client.post("/plugins/echo/disable", headers={"X-API-Key": ADMIN_KEY})
        merged = receive_until(ws, lambda m: "admin-echo" in m["patch"])
    assert "admin-configured" not in merged["patch"]
    assert ">Enable <span" in merged["patch"]["admin-echo"]


def test_admin_page_that_missed_something_gets_its_cards_replaced_not_repeated(
    client: TestClient,
) -> None:
    login(client)
    since = registry(client).bus.seq
    client.post("/plugins/echo/disable", headers={"X-API-Key": ADMIN_KEY})
    with client.websocket_connect("/dashboard/live") as ws:
        ws.send_text(hello(client, {"page": "admin"}, since=since))
        message = receive(ws)
    assert "admin-echo" in message["patch"] and "admin-configured" in message["patch"]
    assert "append" not in message


def test_read_only_session_gets_no_admin_cards(client: TestClient) -> None:
    login(client, READ_KEY)
    with client.websocket_connect("/dashboard/live") as ws:
        ws.send_text(hello(client, {"page": "admin"}, since=0))
        message = receive(ws)
    assert not any(key.startswith("admin-") for key in message.get("patch", {}))


def test_resume_after_pause_sends_what_changed_meanwhile(client: TestClient) -> None:
    login(client)
    view = {"page": "plugin", "plugin": "echo", "hook": "post_plan"}
    with client.websocket_connect("/dashboard/live") as ws:
        ws.send_text(hello(client, view))
        ws.send_text(json.dumps({"type": "pause"}))
        fire(client, times=3)
        ws.send_text(json.dumps({"type": "resume"}))
        merged = receive_until(ws, lambda m: m["prepend"].get("history-body", "").count("<tr") >= 3)
    assert merged["prepend"]["history-body"].count('<tr data-seq="') == 3


def test_reconnect_replays_what_was_missed(client: TestClient) -> None:
    login(client)
    since = registry(client).bus.seq
    fire(client, "pre_plan")
    view = {"page": "plugin", "plugin": "echo", "hook": "pre_plan"}
    with client.websocket_connect("/dashboard/live") as ws:
        ws.send_text(hello(client, view, since=since))
        message = receive(ws)
    assert message["prepend"]["history-body"].count('<tr data-seq="') == 1
    assert "hooks-table" in message["patch"]
