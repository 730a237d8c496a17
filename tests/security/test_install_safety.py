"""Installs outside the allowlist never import the module; oversized bodies cost no memory."""

from __future__ import annotations

import re
import sys
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from agent_pm.api._reading import MAX_BODY_BYTES
from agent_pm.plugins import PluginRegistry
from tests.api.conftest import ADMIN, ADMIN_KEY

pytestmark = pytest.mark.anyio

MODULE = "tests.security.marker_plugin"
# Outside the allowlist (tests.fixtures.plugins, tests.fixtures.route_plugins), including
# names that share a prefix with an allowed package.
REFUSED = [
    f"{MODULE}:Marker",
    "tests.fixtures.plugins_evil:Echo",
    "tests.fixtures:plugins",
    "os:system",
    "subprocess:Popen",
]
CHUNK = b"x" * (64 * 1024)
STREAMED = 50 * 1024 * 1024


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "imported"
    monkeypatch.setenv("AGENT_PM_TEST_IMPORT_MARKER", str(path))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    return path


@pytest.mark.parametrize("module", REFUSED)
async def test_install_outside_the_allowlist_is_refused_unimported(
    client: httpx.AsyncClient, registry: PluginRegistry, marker: Path, module: str
) -> None:
    revision, loaded = registry.revision, set(sys.modules)
    response = await client.post("/plugins/install", headers=ADMIN, json={"module": module})
    assert (response.status_code, response.json()["error"]) == (403, "install_refused")
    assert not marker.exists()
    assert MODULE not in sys.modules
    assert set(sys.modules) - loaded == set()
    assert registry.revision == revision


async def test_dashboard_install_outside_the_allowlist_is_refused_unimported(
    client: httpx.AsyncClient, registry: PluginRegistry, marker: Path
) -> None:
    await client.post("/login", data={"api_key": ADMIN_KEY})
    page = (await client.get("/dashboard")).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    form = {"module": f"{MODULE}:Marker", "csrf_token": csrf.group(1), "revision": "0"}
    response = await client.post("/dashboard/install", data=form)
    assert response.status_code == 409
    assert "not allowed" in response.text
    assert not marker.exists() and MODULE not in sys.modules
    assert "marker" not in registry.names()


async def test_the_marker_module_does_write_its_marker(marker: Path) -> None:
    """The other tests would pass vacuously if importing the module left no trace."""
    import importlib

    try:
        importlib.import_module(MODULE)
    finally:
        sys.modules.pop(MODULE, None)
    assert marker.read_text() == "imported"


class Source:
    """A chunked request body of ``total`` bytes that counts what the server pulled."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += len(CHUNK)
            yield CHUNK


@pytest.mark.parametrize("path", ["/plugins/install", "/plugins/echo/config", "/hooks/post_plan"])
async def test_a_50_mib_chunked_body_is_a_413_in_bounded_memory(app: Starlette, path: str) -> None:
    source = Source(STREAMED)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        request = client.build_request("POST", path, headers=ADMIN, content=source)
        assert "content-length" not in request.headers
        assert request.headers["transfer-encoding"] == "chunked"
        tracemalloc.start()
        try:
            response = await client.send(request)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert response.status_code == 413
    assert source.sent <= MAX_BODY_BYTES + 2 * len(CHUNK)  # stopped reading at the limit
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while refusing a {STREAMED}-byte body"


async def test_a_declared_oversized_length_is_a_413_before_reading(
    client: httpx.AsyncClient,
) -> None:
    headers = {**ADMIN, "Content-Length": str(STREAMED), "Content-Type": "application/json"}
    response = await client.post("/hooks/post_plan", headers=headers, content=b"{}")
    assert response.status_code == 413
