"""REST writes are refused with 422 when the manifest could not load them back; reads never 500."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ADMIN, READ

pytestmark = pytest.mark.anyio


def _deep(levels: int) -> str:
    return '{"k": ' * levels + "1" + "}" * levels


# Lone surrogates never get past the JSON decoder here (400); the dashboard's form does decode
# them, and is refused later, by the manifest check (tests/api/test_dashboard.py).
BODIES = {
    "deep nesting": ('{"config": {"x": ' + _deep(40) + "}}", 422, "cannot load"),
    "node bomb": (json.dumps({"config": {"a": list(range(120_000))}}), 422, "cannot load"),
    "lone surrogate": ('{"config": {"note": "caf\\ud800"}}', 400, "malformed body"),
    "surrogate key": ('{"config": {"\\udcff": 1}}', 400, "malformed body"),
}


@pytest.mark.parametrize("case", BODIES)
async def test_rest_unloadable_config_is_422_and_nothing_is_written(
    client: httpx.AsyncClient, manifest_path: Path, case: str
) -> None:
    before = manifest_path.read_bytes()
    revision = (await client.get("/plugins", headers=READ)).json()["revision"]
    body, status, reason = BODIES[case]
    response = await client.post(
        "/plugins/echo/config", content=body, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert reason in response.json()["detail"]
    assert manifest_path.read_bytes() == before
    listing = await client.get("/plugins", headers=READ)
    assert listing.status_code == 200 and listing.json()["revision"] == revision


async def test_rest_unloadable_install_is_422(
    client: httpx.AsyncClient, manifest_path: Path
) -> None:
    before = manifest_path.read_bytes()
    body = {"module": "tests.fixtures.plugins:Echo", "name": "e2", "config": json.loads(_deep(40))}
    response = await client.post("/plugins/install", json=body, headers=ADMIN)
    assert response.status_code == 422 and "nested deeper" in response.json()["detail"]
    assert manifest_path.read_bytes() == before
