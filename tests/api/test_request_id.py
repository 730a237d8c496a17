"""Request ids: accepted when safe, generated otherwise, echoed on every response."""

from __future__ import annotations

import httpx
import pytest
from websockets.asyncio.client import connect

from agent_pm.api._request_id import accepted_id
from agent_pm.plugins import context
from tests.api.conftest import ADMIN, READ

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("given", ["abc-123", "trace:1/2+3=@x", "A" * 128])
def test_a_safe_id_is_kept(given: str) -> None:
    assert accepted_id(given) == given


@pytest.mark.parametrize("given", [None, "", "A" * 129, "a b", "new\nline", "<script>", "é"])
def test_an_unsafe_or_missing_id_is_replaced(given: str | None) -> None:
    made = accepted_id(given)
    assert made != given and len(made) == 32 and made.isalnum()


async def test_every_response_carries_the_id(client: httpx.AsyncClient) -> None:
    ok = await client.get("/plugins", headers={**READ, "X-Request-ID": "req-1"})
    assert ok.headers["x-request-id"] == "req-1"
    denied = await client.get("/plugins", headers={"X-Request-ID": "req-2"})
    assert (denied.status_code, denied.headers["x-request-id"]) == (401, "req-2")
    missing = await client.get("/nowhere", headers=READ)
    assert missing.status_code == 404 and len(missing.headers["x-request-id"]) == 32
    bad = await client.get("/health", headers={"X-Request-ID": "a\tb"})
    assert bad.headers["x-request-id"] != "a\tb"
    assert context.request_id.get() is None  # reset after the request


async def test_admin_actions_are_audited_with_the_request_id(client: httpx.AsyncClient) -> None:
    await client.post("/plugins/strict/enable", headers={**ADMIN, "X-Request-ID": "enable-7"})
    records = (await client.get("/audit", headers=ADMIN)).json()["records"]
    assert records[-1]["request_id"] == "enable-7"


async def test_websocket_handshakes_get_an_id(live_url: str) -> None:
    url = live_url.replace("http", "ws", 1) + "/plugins/stream"
    headers = {**READ, "X-Request-ID": "stream-1"}
    async with connect(url, additional_headers=headers) as websocket:
        assert websocket.response is not None
        assert websocket.response.headers["x-request-id"] == "stream-1"
