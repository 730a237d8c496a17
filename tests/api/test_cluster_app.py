"""Two apps sharing one Redis: one stream of everyone's samples, one manifest, /health tells."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect

from agent_pm.api._app import create_app
from agent_pm.demo.loopback import serve_on_loopback
from agent_pm.server import Server
from agent_pm.settings import Settings

pytestmark = pytest.mark.anyio
KEY = "cluster-admin-key"
ECHO = "- name: echo\n  module: tests.fixtures.plugins:Echo\n  enabled: true\n"
CONFIGURED = "- name: configured\n  module: tests.fixtures.plugins:Configured\n  enabled: true\n"
ADMIN = {"X-API-Key": KEY}


@asynccontextmanager
async def served(settings: Settings, manifest: Path, node: str) -> AsyncIterator[str]:
    settings = dataclasses.replace(settings, admin_api_key=KEY, node_name=node)
    app = create_app(settings, manifest_path=manifest, watch=False)
    async with (
        app.router.lifespan_context(app),
        serve_on_loopback(app, ws="websockets-sansio", server_class=Server) as url,
    ):
        yield url


@asynccontextmanager
async def nodes(settings: Settings, root: Path, *manifests: str) -> AsyncIterator[list[str]]:
    """One served app per manifest text, named a, b, ..., each with its own manifest file."""
    urls = []
    async with AsyncExitStack() as stack:
        for name, text in zip("abcdef", manifests, strict=False):
            manifest = root / name / "plugins.yaml"
            manifest.parent.mkdir()
            manifest.write_text(text)
            urls.append(await stack.enter_async_context(served(settings, manifest, name)))
        yield urls


@pytest.fixture
async def pair(redis_settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    async with nodes(redis_settings, tmp_path, ECHO + CONFIGURED, ECHO + CONFIGURED) as urls:
        yield urls[0], urls[1]


async def until(check):
    """Wait (bounded) until ``check()`` returns something truthy; return it.

    ``check`` asks another server over HTTP, from outside: there is no event to await.
    """
    with anyio.fail_after(10):
        while not (result := await check()):  # noqa: ASYNC110
            await anyio.sleep(0.02)
    return result


async def frames(ws, count: int, kind: str | None = None) -> list[dict]:
    """The next ``count`` messages (of type ``kind`` only, if given)."""
    messages: list[dict] = []
    with anyio.fail_after(10):
        while len(messages) < count:
            received = json.loads(await ws.recv())
            messages.extend(m for m in received if kind is None or m["type"] == kind)
    return messages


async def test_cluster_app_stream_on_a_receives_samples_fired_on_b(
    pair: tuple[str, str],
) -> None:
    a, b = pair
    url = a.replace("http://", "ws://") + "/plugins/stream?hooks=post_plan"
    async with connect(url, additional_headers={"X-API-Key": KEY}) as ws:
        [hello] = await frames(ws, 1)
        async with httpx.AsyncClient(base_url=b, headers={"X-API-Key": KEY}) as client:
            response = await client.post("/hooks/post_plan", json={"plan": {}})
        assert response.status_code == 200
        # The other node's start-up state messages may come first.
        [sample] = [s for s in await frames(ws, 2, "sample") if s["plugin"] == "echo"]
    assert (sample["type"], sample["plugin"], sample["node"]) == ("sample", "echo", "b")
    assert sample["seq"] > hello["seq"]


async def test_cluster_app_health_reports_the_redis_bus(pair: tuple[str, str]) -> None:
    async with httpx.AsyncClient(base_url=pair[0]) as client:

        async def forwarded() -> dict:
            # A's start-up state messages leave in the background, soon after it answers.
            health = (await client.get("/health")).json()
            return health if health["bus"]["forwarded"] else {}

        health = await until(forwarded)
    assert health["status"] == "ok"
    bus = health["bus"]
    assert (bus["backend"], bus["state"], bus["node"]) == ("redis", "up", "a")
    assert bus["dropped"] == bus["local"] == bus["reconnects"] == 0


async def plugin(url: str, name: str) -> dict:
    async with httpx.AsyncClient(base_url=url, headers=ADMIN) as client:
        response = await client.get(f"/plugins/{name}")
    return response.json()["plugin"]


async def test_cluster_app_first_node_seeds_the_manifest_and_the_others_follow_it(
    redis_settings: Settings, tmp_path: Path
) -> None:
    async with (
        nodes(redis_settings, tmp_path, ECHO, CONFIGURED) as (_, b),
        httpx.AsyncClient(base_url=b, headers=ADMIN) as client,
    ):
        names = [p["name"] for p in (await client.get("/plugins")).json()["plugins"]]
    assert names == ["echo"]
    # B's file is its local copy of the cluster's manifest, rewritten byte for byte.
    assert (tmp_path / "b" / "plugins.yaml").read_text() == ECHO


async def test_cluster_app_admin_change_on_one_node_is_live_on_the_other(
    pair: tuple[str, str], tmp_path: Path
) -> None:
    a, b = pair
    async with httpx.AsyncClient(base_url=a, headers=ADMIN) as client:
        response = await client.post("/plugins/echo/disable")
    assert response.status_code == 200
    revision = int(response.headers["etag"].strip('"'))

    async def disabled_on_b() -> bool:
        return (await plugin(b, "echo"))["state"] == "disabled"

    await until(disabled_on_b)
    async with httpx.AsyncClient(base_url=b, headers=ADMIN) as client:
        answer = await client.get("/plugins/echo")
        fired = await client.post("/hooks/post_plan", json={})
    assert answer.headers["etag"].strip('"') == str(revision)
    assert [r["plugin"] for r in fired.json()["results"]] == ["configured"]
    assert "enabled: false" in (tmp_path / "b" / "plugins.yaml").read_text()


async def test_cluster_app_concurrent_updates_on_one_revision_commit_once(
    pair: tuple[str, str],
) -> None:
    a, b = pair
    async with httpx.AsyncClient(base_url=a, headers=ADMIN) as client:
        revision = (await client.get("/plugins/configured")).headers["etag"]

    async def update(url: str, i: int, statuses: list[int]) -> None:
        headers = {**ADMIN, "If-Match": revision}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            body = {"config": {"channel": f"#c{i}"}}
            response = await client.post("/plugins/configured/config", json=body)
            statuses.append(response.status_code)

    statuses: list[int] = []
    async with anyio.create_task_group() as group:
        for i in range(50):
            group.start_soon(update, (a, b)[i % 2], i, statuses)
    assert sorted(statuses) == [200] + [412] * 49

    async def same_config() -> bool:
        configs = [(await plugin(url, "configured"))["config"] for url in (a, b)]
        return configs[0] == configs[1]

    await until(same_config)


async def test_cluster_app_node_that_cannot_apply_a_change_reports_it(
    redis_settings: Settings, tmp_path: Path
) -> None:
    bound = "- name: host_bound\n  module: tests.fixtures.plugins:HostBound\n  enabled: true\n"
    lacking = dataclasses.replace(
        redis_settings, environ={**redis_settings.environ, "HOST_LACKS_FEATURE": "yes"}
    )
    async with AsyncExitStack() as stack:
        urls = []
        for name, settings in (("a", redis_settings), ("b", lacking)):
            manifest = tmp_path / name / "plugins.yaml"
            manifest.parent.mkdir()
            manifest.write_text(bound)
            urls.append(await stack.enter_async_context(served(settings, manifest, name)))
        a, b = urls
        async with httpx.AsyncClient(base_url=a, headers=ADMIN) as client:
            body = {"config": {"needs_feature": True}}
            response = await client.post("/plugins/host_bound/config", json=body)
            assert response.status_code == 200
            revision = int(response.headers["etag"].strip('"'))

            async def b_reports_it() -> dict | None:
                nodes = (await client.get("/cluster")).json()["nodes"]
                return next((n for n in nodes if n["node"] == "b" and n["error"]), None)

            report = await until(b_reports_it)
        assert report["revision"] == revision - 1
        assert "this host lacks the feature" in report["error"]
        # B keeps running the revision it could apply, and says so itself.
        async with httpx.AsyncClient(base_url=b, headers=ADMIN) as client:
            view = (await client.get("/cluster")).json()
            running = (await client.get("/plugins/host_bound")).json()["plugin"]
        assert view["mode"] == "redis" and view["nodes"][0]["node"] == "b"
        assert view["status"]["error"] == report["error"]
        assert running["active"] and running["config"] == {}


async def test_cluster_app_embedded_mode_lists_no_nodes(tmp_path: Path) -> None:
    manifest = tmp_path / "plugins.yaml"
    manifest.write_text(ECHO)
    async with (
        served(Settings.from_env({}), manifest, "solo") as url,
        httpx.AsyncClient(base_url=url, headers=ADMIN) as client,
    ):
        view = (await client.get("/cluster")).json()
    assert view == {"mode": "embedded", "status": None, "nodes": []}
