"""``agent-pm serve`` as a process: WebSocket frames bounded by the server, quiet refusals."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agent_pm.server import WS_MAX_SIZE, quiet_refused_handshakes
from tests.fixtures.servers import serve_process, wait_for_health

ROOT = Path(__file__).parents[1]
ADMIN_KEY = "admin-key-for-server-tests"
MESSAGE_TOO_BIG = 1009


async def _refused(url: str, headers: dict[str, str]) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=headers):
            pass
    return refused.value.response.status_code


async def _answer(url: str, headers: dict[str, str], size: int, skip: int = 0) -> int | str:
    """Send one text message of ``size`` bytes after ``skip`` frames; the close code it gets,
    or the next frame when the connection stays open."""
    async with connect(url, additional_headers=headers, max_size=None) as websocket:
        for _ in range(skip):
            await websocket.recv()
        await websocket.send("x" * size)
        try:
            with anyio.fail_after(20):
                return str(await websocket.recv())
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else 0


@pytest.mark.anyio
async def test_serve_bounds_websocket_frames_and_logs_refusals_quietly(tmp_path: Path) -> None:
    manifest = tmp_path / "plugins.yaml"
    manifest.write_text("- name: echo\n  module: tests.fixtures.plugins:Echo\n  enabled: true\n")
    env = {k: v for k, v in os.environ.items() if not k.endswith(("API_KEY", "_PATH", "_URL"))}
    env.update(PYTHONPATH=str(ROOT), ADMIN_API_KEY=ADMIN_KEY, DATA_DIR=str(tmp_path / "data"))
    with serve_process(manifest, env, "--no-watch") as (process, url):
        await anyio.to_thread.run_sync(wait_for_health, process, url)
        ws = url.replace("http", "ws", 1)
        admin = {"X-API-Key": ADMIN_KEY}
        assert await _refused(f"{ws}/plugins/stream", {}) == 401
        assert await _refused(f"{ws}/plugins/stream", {**admin, "Origin": "http://evil"}) == 403
        assert await _refused(f"{ws}/plugins/stream?since=x", admin) == 400
        assert await _refused(f"{ws}/plugins/stream", {"X-API-Key": "w" * 20}) == 403

        stream = f"{ws}/plugins/stream"
        assert await _answer(stream, admin, 16 * 1024 * 1024, skip=1) == MESSAGE_TOO_BIG
        fits = await _answer(stream, admin, WS_MAX_SIZE, skip=1)
        assert isinstance(fits, str) and '"type":"error"' in fits

        async with httpx.AsyncClient(base_url=url) as client:
            login = await client.post("/login", data={"api_key": ADMIN_KEY})
            assert login.status_code == 303
            cookie = {"Cookie": f"agent_pm_session={client.cookies['agent_pm_session']}"}
            assert (await client.get("/health")).status_code == 200
        live = f"{ws}/dashboard/live"
        assert await _answer(live, cookie, 16 * 1024 * 1024) == MESSAGE_TOO_BIG

        process.send_signal(signal.SIGTERM)
        _, err = await anyio.to_thread.run_sync(process.communicate)
    assert process.returncode == 0, err
    errors = [line for line in err.splitlines() if line.startswith("ERROR")]
    assert errors == [], err
    assert "without completing handshake" in err  # still logged, at INFO


def test_quiet_refused_handshakes_is_idempotent() -> None:
    import logging

    quiet_refused_handshakes()
    quiet_refused_handshakes()
    filters = logging.getLogger("uvicorn.error").filters
    assert len([f for f in filters if type(f).__name__ == "_RefusedHandshakeFilter"]) == 1
