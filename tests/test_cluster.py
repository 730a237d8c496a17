"""Cluster mode as operators run it: ``agent-pm serve`` processes and workers on one Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect

from tests.fixtures.redis import RedisServer
from tests.fixtures.servers import ROOT, serve_process, wait_for_health

KEY = "cluster-process-key"
ADMIN = {"X-API-Key": KEY}
MANIFEST = (
    "- name: echo\n  module: tests.fixtures.plugins:Echo\n  enabled: true\n"
    "- name: configured\n  module: tests.fixtures.plugins:Configured\n  enabled: true\n"
)
_prefixes = iter(range(1, 1_000))


def environment(redis: RedisServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_PM_", "PLUGIN"))}
    env.update(
        PYTHONPATH=str(ROOT),
        ADMIN_API_KEY=KEY,
        AGENT_PM_REDIS_URL=redis.url,
        AGENT_PM_REDIS_PREFIX=f"proc{os.getpid()}-{next(_prefixes)}:",
    )
    return env


@contextmanager
def cluster(
    redis: RedisServer, root: Path, *flags: tuple[str, ...], manifest_text: str = MANIFEST
) -> Iterator[list[str]]:
    """One ``serve`` process per entry of ``flags`` (extra arguments), each on its own manifest
    file holding ``manifest_text``; yields their base URLs once every one answers ``/health``."""
    env = environment(redis)
    urls = []
    with ExitStack() as stack:
        for index, extra in enumerate(flags):
            manifest = root / f"node{index}" / "plugins.yaml"
            manifest.parent.mkdir()
            manifest.write_text(manifest_text)
            process, url = stack.enter_context(
                serve_process(manifest, env, "--node", f"n{index}", *extra)
            )
            # Generous: several processes start at once on a machine that may be busy.
            wait_for_health(process, url, timeout=90)
            urls.append(url)
        yield urls


async def until(check: Callable[[], object]) -> object:
    """Wait (bounded) until ``check()`` answers something truthy. It asks other processes over
    HTTP: there is no event to await."""
    with anyio.fail_after(60):
        while not (result := await check()):  # noqa: ASYNC110
            await anyio.sleep(0.05)
    return result


def revision_of(listing: httpx.Response) -> int:
    """The revision a ``GET /plugins`` answer was read at: its ETag is ``"<revision>.<digest>"``,
    and the digest covers each process's own figures."""
    return int(listing.headers["etag"].strip('"').partition(".")[0])


async def get(url: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=10) as client:
        return await client.get(path)


async def post(url: str, path: str, body: object = None, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, headers={**ADMIN, **headers}, timeout=30) as c:
        return await c.post(path, json=body)


async def state(url: str, plugin: str) -> str:
    return (await get(url, f"/plugins/{plugin}")).json()["plugin"]["state"]


async def converged(urls: tuple[str, ...], plugin: str, wanted: str) -> None:
    """Wait until every node has ``plugin`` in state ``wanted``; they then share one revision."""

    async def everywhere() -> bool:
        return all([await state(url, plugin) == wanted for url in urls])

    await until(everywhere)
    assert len({revision_of(await get(url, "/plugins")) for url in urls}) == 1


# Each test starts server processes; on a busy machine that alone takes a while.
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


async def test_cluster_processes_share_admin_changes_and_samples(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with cluster(redis_server, tmp_path, (), ()) as (a, b):
        stream = a.replace("http://", "ws://") + "/plugins/stream?plugins=echo"
        async with connect(stream, additional_headers=ADMIN) as ws:
            await ws.recv()  # hello
            assert (await post(b, "/hooks/post_plan", {})).status_code == 200
            with anyio.fail_after(20):
                while not (
                    samples := [m for m in json.loads(await ws.recv()) if m["type"] == "sample"]
                ):
                    pass
        assert samples[0]["node"] == "n1" and samples[0]["plugin"] == "echo"

        assert (await post(a, "/plugins/echo/disable")).status_code == 200
        await converged((a, b), "echo", "disabled")


async def test_cluster_processes_commit_one_of_fifty_updates_on_one_revision(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with cluster(redis_server, tmp_path, (), ()) as urls:
        revision = (await get(urls[0], "/plugins")).headers["etag"]
        statuses: list[int] = []

        async def update(i: int) -> None:
            body = {"config": {"channel": f"#c{i}"}}
            response = await post(
                urls[i % 2], "/plugins/configured/config", body, **{"If-Match": revision}
            )
            statuses.append(response.status_code)

        async with anyio.create_task_group() as group:
            for i in range(50):
                group.start_soon(update, i)
        assert sorted(statuses) == [200] + [412] * 49


async def test_cluster_processes_survive_redis_going_away_and_converge(
    redis_factory: Callable[[], RedisServer], tmp_path: Path
) -> None:
    redis = redis_factory()
    with cluster(redis, tmp_path, (), ()) as (a, b):
        failures: list[int] = []
        stop = anyio.Event()

        async def load(url: str) -> None:
            async with httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=30) as client:
                while not stop.is_set():
                    response = await client.post("/hooks/post_plan", json={})
                    if response.status_code != 200 or any(
                        r["status"] != "success" for r in response.json()["results"]
                    ):
                        failures.append(response.status_code)

        async def statuses() -> set[str]:
            return {(await get(u, "/health")).json()["status"] for u in (a, b)}

        async def degraded() -> bool:
            return await statuses() == {"degraded"}

        async def healthy() -> bool:
            return await statuses() == {"ok"}

        async with anyio.create_task_group() as group:
            group.start_soon(load, a)
            group.start_soon(load, b)
            redis.kill()
            await until(degraded)
            refused = await post(a, "/plugins/echo/disable")
            assert refused.status_code == 503
            assert refused.json()["error"] == "cluster_unavailable"
            assert await state(a, "echo") == await state(b, "echo") == "enabled"
            redis.start()
            await until(healthy)
            stop.set()
        assert failures == []
        assert (await post(b, "/plugins/echo/disable")).status_code == 200
        await converged((a, b), "echo", "disabled")


async def test_cluster_workers_share_one_port_and_one_state(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with cluster(redis_server, tmp_path, ("--workers", "2")) as (url,):

        async def both_workers() -> list[dict]:
            nodes = (await get(url, "/cluster")).json()["nodes"]
            return nodes if len(nodes) == 2 else []

        nodes = await until(both_workers)
        assert all(n["node"].startswith("n0:") for n in nodes)
        assert (await post(url, "/plugins/echo/disable")).status_code == 200
        revision = revision_of(await get(url, "/plugins"))

        async def all_applied() -> bool:
            nodes = (await get(url, "/cluster")).json()["nodes"]
            return len(nodes) == 2 and all(n["revision"] == revision for n in nodes)

        await until(all_applied)
        # Whichever worker answers, it runs the same revision.
        for _ in range(10):
            assert await state(url, "echo") == "disabled"


def test_cluster_workers_without_redis_are_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "plugins.yaml"
    manifest.write_text(MANIFEST)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_PM_")}
    env["PYTHONPATH"] = str(ROOT)
    argv = [sys.executable, "-m", "agent_pm.cli", "serve", "--workers", "2"]
    done = subprocess.run(
        [*argv, "--manifest", str(manifest)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "--workers above 1 needs Redis" in done.stderr
