"""Console sessions and login throttling across ``serve`` processes and workers on one Redis."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.fixtures.redis import RedisServer
from tests.test_cluster import KEY, cluster, until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


@asynccontextmanager
async def clients(a: str, b: str) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=a, timeout=10) as on_a,
        httpx.AsyncClient(base_url=b, timeout=10) as on_b,
    ):
        yield on_a, on_b


async def logged_in(client: httpx.AsyncClient) -> bool:
    """Whether the client's session cookie opens the console (else: sent to the login page)."""
    return (await client.get("/dashboard")).status_code == 200


async def test_cluster_sessions_open_on_one_node_end_everywhere(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with cluster(redis_server, tmp_path, (), ()) as (a, b):
        async with clients(a, b) as (on_a, on_b):
            assert (await on_a.post("/login", data={"api_key": KEY})).status_code == 303
            on_b.cookies = on_a.cookies
            assert await logged_in(on_b)  # signed with the cluster's one secret
            page = (await on_b.get("/dashboard")).text
            token = re.search(r'name="csrf_token" value="([^"]+)"', page)
            assert token is not None
            logout = await on_b.post("/logout", data={"csrf_token": token.group(1)})
            assert logout.status_code == 303

            async def ended_on_a() -> bool:
                return not await logged_in(on_a)

            await until(ended_on_a)


async def test_cluster_sessions_failed_logins_count_on_every_node(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with cluster(redis_server, tmp_path, (), ()) as (a, b):
        async with clients(a, b) as (on_a, on_b):
            for _ in range(10):
                wrong = await on_a.post("/login", data={"api_key": "not-the-key-at-all"})
                assert wrong.status_code == 401

            async def throttled_on_b() -> bool:
                answer = await on_b.post("/login", data={"api_key": KEY})
                return answer.status_code == 429

            # B never saw a wrong key itself, yet refuses the address: A told it of each one.
            await until(throttled_on_b)


async def test_cluster_sessions_hold_on_every_worker(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with cluster(redis_server, tmp_path, ("--workers", "2")) as (url,):
        async with httpx.AsyncClient(base_url=url, timeout=10) as browser:
            assert (await browser.post("/login", data={"api_key": KEY})).status_code == 303
            # Connections are new each time (no keep-alive), so both workers answer some.
            for _ in range(20):
                answer = await browser.get("/dashboard", headers={"Connection": "close"})
                assert answer.status_code == 200
