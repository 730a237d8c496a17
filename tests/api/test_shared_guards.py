"""Sessions shared through Redis survive a Redis restart: the nodes bring their secret back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from agent_pm.api._security import ApiKeys, Throttle
from agent_pm.api._session import SessionManager
from agent_pm.api._shared_guards import share_guards
from agent_pm.plugins.cluster.node import ClusterNode
from agent_pm.settings import Settings
from tests.fixtures.redis import RedisServer

pytestmark = pytest.mark.anyio


async def test_shared_guards_sessions_outlive_a_redis_restart(
    redis_factory: Callable[[], RedisServer], tmp_path: Path
) -> None:
    server = redis_factory()
    settings = Settings.from_env(
        {"AGENT_PM_REDIS_URL": server.url, "PLUGIN_CONFIG_PATH": str(tmp_path / "p.yaml")}
    )
    keys = ApiKeys(admin="an-admin-key-long-enough")
    manager = SessionManager(keys)
    node = ClusterNode(settings, node="a")
    share_guards(node.events, manager, Throttle(), settings.redis_prefix)
    async with node:
        caller = keys.caller_for("an-admin-key-long-enough")
        assert caller is not None
        cookie, _ = manager.issue(caller)
        assert manager.load(cookie) is not None
        server.kill()
        with anyio.fail_after(10):
            await node.link.wait_up(False)
        server.start()  # empty: the secret is gone from Redis
        with anyio.fail_after(30):
            await node.link.wait_up()
        assert manager.load(cookie) is not None
    fresh = SessionManager(keys)
    assert fresh.load(cookie) is None  # a process-local secret would not accept it
