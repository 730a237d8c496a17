"""Canary secrets from all four sources never appear where an operator or a caller can look.

The canary plugins log their secrets at every level and raise them; the values must be absent
from REST responses, stream frames, the dashboard, DEBUG logs, exception text and the manifest
as written back after an update that sends the masks back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import connect

from agent_pm.api._app import create_app
from agent_pm.errors import AgentPMError
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings
from tests.fixtures.servers import live_server

pytestmark = pytest.mark.anyio

ADMIN = {"X-API-Key": "canary-admin-key"}
MODULE = "tests.security.canary_plugins"


def _canary(source: str) -> str:
    return f"canary-{source}-{secrets.token_hex(8)}"


CANARIES = {
    source: _canary(source)
    for source in (
        "inline",
        "inline-env",
        "env",
        "setting",
        "file-scoped",
        "file-top",
        "file-global",
    )
}


def _manifest() -> str:
    return (
        f"- name: canary\n  module: {MODULE}:Canary\n  enabled: true\n"
        "  config:\n    secrets:\n"
        f"      CANARY_INLINE: {CANARIES['inline']}\n"
        "      CANARY_INLINE_ENV: {env: CANARY_SOURCE}\n"
        f"- name: canary_start\n  module: {MODULE}:CanaryStart\n  enabled: false\n"
        "  config:\n    secrets:\n"
        f"      CANARY_INLINE: {CANARIES['inline']}\n"
        "      CANARY_INLINE_ENV: {env: CANARY_SOURCE}\n"
    )


def _secret_file(path: Path) -> Path:
    path.write_text(
        f"CANARY_FILE_TOP: {CANARIES['file-top']}\n"
        "plugins:\n"
        f"  canary: {{CANARY_FILE_SCOPED: {CANARIES['file-scoped']}}}\n"
        f"  canary_start: {{CANARY_FILE_SCOPED: {CANARIES['file-scoped']}}}\n"
        f"global: {{CANARY_FILE_GLOBAL: {CANARIES['file-global']}}}\n"
    )
    return path


@pytest.fixture
def canary_settings(tmp_path: Path) -> Settings:
    env = {
        "PLUGIN_CONFIG_PATH": str(tmp_path / "plugins.yaml"),
        "PLUGIN_SECRET_PATH": str(_secret_file(tmp_path / "secrets.yaml")),
        "ADMIN_API_KEY": ADMIN["X-API-Key"],
        "CANARY_SOURCE": CANARIES["inline-env"],
        "CANARY_ENV": CANARIES["env"],
        "DATA_DIR": str(tmp_path / "data"),
        # `{env: NAME}` reads only allowed names; the canary's source variable is one.
        "PLUGIN_SECRET_ENV_ALLOW": "CANARY_SOURCE",
    }
    # Only the attribute carries this one: the environment would win at step two.
    return dataclasses.replace(Settings.from_env(env), slack_bot_token=CANARIES["setting"])


@pytest.fixture
async def canary_app(
    canary_settings: Settings, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Starlette]:
    caplog.set_level(logging.DEBUG)  # every logger, for the whole test
    manifest = canary_settings.plugin_config_path
    manifest.write_text(_manifest())
    async with PluginRegistry(manifest, canary_settings) as registry:
        app = create_app(canary_settings, registry=registry, watch=False)
        async with app.router.lifespan_context(app):
            yield app


def assert_clean(surface: str, text: str) -> None:
    leaked = [source for source, value in CANARIES.items() if value in text]
    assert leaked == [], f"{surface} shows the {leaked} canaries"


def test_the_plugin_resolves_every_canary(canary_settings: Settings) -> None:
    """Otherwise every other test here would pass for want of a secret to leak."""
    from agent_pm.plugins.secrets import SecretResolver
    from tests.security.canary_plugins import SECRETS

    inline = {"CANARY_INLINE": CANARIES["inline"], "CANARY_INLINE_ENV": {"env": "CANARY_SOURCE"}}
    resolved = SecretResolver(canary_settings).resolve("canary", SECRETS, inline)
    assert sorted(resolved.values.values()) == sorted(CANARIES.values())


async def _exercise(client: httpx.AsyncClient) -> list[str]:
    """Fire the failing hook, try to enable the failing plugin, read every GET; the bodies."""
    bodies = []
    fired = await client.post("/hooks/post_plan", headers=ADMIN)
    assert fired.json()["results"][0]["status"] == "error"
    bodies.append(fired.text)
    enabled = await client.post("/plugins/canary_start/enable", headers=ADMIN)
    assert enabled.status_code == 409
    bodies.append(enabled.text)
    for path in (
        "/health",
        "/plugins",
        "/plugins/discover",
        "/plugins/canary",
        "/plugins/canary/history",
        "/plugins/canary_start",
        "/plugins/canary_start/history",
        "/metrics",
        "/openapi.json",
    ):
        response = await client.get(path, headers=ADMIN)
        assert response.status_code == 200, path
        bodies.append(response.text)
    return bodies


async def test_rest_dashboard_logs_and_manifest_hold_no_canary(
    canary_app: Starlette, canary_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    transport = httpx.ASGITransport(app=canary_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for body in await _exercise(client):
            assert_clean("a REST response", body)
        history = (await client.get("/plugins/canary/history", headers=ADMIN)).json()
        assert history["history"]["post_plan"][0]["error"].startswith("RuntimeError")

        login = await client.post("/login", data={"api_key": ADMIN["X-API-Key"]})
        assert login.status_code == 303
        for query in ("", "?pair=canary:post_plan", "?pair=canary_start:post_plan"):
            page = await client.get(f"/dashboard{query}")
            assert page.status_code == 200 and "canary" in page.text
            assert_clean("the dashboard", page.text)

        plugin = (await client.get("/plugins/canary", headers=ADMIN)).json()["plugin"]
        masked = plugin["config"]
        assert set(masked["secrets"].values()) == {"***"}
        updated = await client.post(
            "/plugins/canary/config", headers=ADMIN, json={"config": masked}
        )
        assert updated.status_code == 200, updated.text
        assert_clean("the config update", updated.text)

        audit = await client.get("/audit", headers=ADMIN)
        actions = [(r["action"], r["outcome"]) for r in audit.json()["records"]]
        assert ("enable", "error") in actions and ("update_config", "ok") in actions, actions
        assert_clean("the audit log over REST", audit.text)
    audit_files = (canary_settings.data_dir / "audit").glob("audit.jsonl*")
    assert_clean("the audit files", "".join(path.read_text() for path in audit_files))

    written = canary_settings.plugin_config_path.read_text()
    assert written.count(CANARIES["inline"]) == 2  # the operator's own literal, kept as written
    assert "***" not in written and "{env: CANARY_SOURCE}" in written
    assert_clean("the manifest", written.replace(CANARIES["inline"], ""))

    logged = caplog.text + "".join(
        logging.Formatter().formatException(r.exc_info) for r in caplog.records if r.exc_info
    )
    assert "canary" in logged and "calling upstream" in logged  # DEBUG lines were captured
    assert_clean("the DEBUG log", logged)


async def test_a_secret_set_through_rest_never_reaches_the_audit_log(
    canary_app: Starlette, canary_settings: Settings
) -> None:
    new = _canary("new")
    transport = httpx.ASGITransport(app=canary_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        masked = (await client.get("/plugins/canary", headers=ADMIN)).json()["plugin"]["config"]
        config = {**masked, "secrets": {**masked["secrets"], "CANARY_INLINE": new}}
        sent = await client.post("/plugins/canary/config", headers=ADMIN, json={"config": config})
        assert sent.status_code == 200, sent.text
        audit = await client.get("/audit", headers=ADMIN)
    [record] = audit.json()["records"]
    assert (record["action"], record["outcome"], record["actor"]) == (
        "update_config",
        "ok",
        "ADMIN_API_KEY",
    )
    assert record["revision_after"] == record["revision_before"] + 1
    text = audit.text + "".join(
        path.read_text() for path in (canary_settings.data_dir / "audit").glob("audit.jsonl*")
    )
    assert new not in text
    assert_clean("the audit log", text)


async def test_exceptions_raised_to_callers_hold_no_canary(canary_app: Starlette) -> None:
    registry: PluginRegistry = canary_app.state.registry
    with pytest.raises(AgentPMError) as caught:
        await registry.set_enabled("canary_start", True)
    assert_clean("the exception", str(caught.value))
    assert_clean("the traceback", "".join(traceback.format_exception(caught.value)))
    results = await registry.fire("post_plan")
    assert results[0].error is not None
    assert_clean("the hook result", repr(results))


async def _stream_frames(url: str, until: int) -> list[str]:
    frames: list[str] = []
    ws_url = url.replace("http", "ws", 1) + "/plugins/stream"
    async with connect(ws_url, additional_headers=ADMIN, compression=None) as ws:
        frames.append(str(await ws.recv()))  # hello, before anything below happens
        async with httpx.AsyncClient(base_url=url) as client:
            await _exercise(client)
        seen = 0
        with anyio.fail_after(10):
            while seen < until:
                frame = str(await ws.recv())
                frames.append(frame)
                seen += sum(m["type"] == "sample" for m in json.loads(frame))
    return frames


async def test_stream_frames_hold_no_canary(canary_app: Starlette) -> None:
    async with live_server(canary_app) as url:
        frames = await _stream_frames(url, until=1)
    assert any("RuntimeError" in frame for frame in frames)
    for frame in frames:
        assert_clean("a stream frame", frame)


def test_secret_log_masks_message_exception_and_stack(caplog: pytest.LogCaptureFixture) -> None:
    from agent_pm.plugins.secrets import SecretLog

    caplog.set_level(logging.DEBUG)
    secret = CANARIES["inline"]
    log = SecretLog(logging.getLogger("agent_pm.plugins.secret_log_test"), [secret])
    log.debug("a %s b", secret, extra={"kept": 1})
    try:
        raise ValueError(secret)
    except ValueError:
        log.exception("failed", stack_info=True)
    first, second = caplog.records
    assert first.getMessage() == "a *** b" and first.__dict__["kept"] == 1
    assert first.funcName == "test_secret_log_masks_message_exception_and_stack"
    assert second.exc_text and "ValueError: ***" in second.exc_text
    assert "_agent_pm_secret_values" not in first.__dict__
    assert secret not in caplog.text
