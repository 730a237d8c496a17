"""The control plane on a real Redis: one manifest and revision, committed by compare-and-set."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from agent_pm.errors import ClusterUnavailableError, RevisionConflictError
from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.bus import StateChange
from agent_pm.plugins.cluster.node import ClusterNode
from agent_pm.settings import Settings
from tests.fixtures.cluster import member
from tests.fixtures.plugins import Lifecycle
from tests.fixtures.redis import RedisServer

pytestmark = pytest.mark.anyio
LIFECYCLE = "- name: lifecycle\n  module: tests.fixtures.plugins:Lifecycle\n  enabled: false\n"
ECHO = "- name: echo\n  module: tests.fixtures.plugins:Echo\n  enabled: true\n"


async def applied(node: ClusterNode, registry: PluginRegistry, plugin: str, state: str) -> None:
    """Wait (bounded) until ``node`` has announced ``plugin`` in ``state`` on its own bus, which
    it does once the change and its revision are in place; subscribed before looking at the
    registry, so an announcement cannot slip in between."""
    with anyio.fail_after(30), node.bus.subscribe(plugins=[plugin]) as subscription:
        if registry.metadata_for(plugin).state == state and not _busy(node):
            return
        while True:
            for message in await subscription.receive():
                mine = isinstance(message, StateChange) and message.node == node.name
                if mine and message.plugin.state == state:
                    return


def _busy(node: ClusterNode) -> bool:
    """Whether ``node`` is in the middle of applying a revision."""
    return node.control.next_revision(0) != node.control.applied


async def test_control_commit_on_a_stale_revision_stops_the_candidate(
    redis_settings: Settings, tmp_path: Path
) -> None:
    Lifecycle.calls = []
    async with (
        member(redis_settings, tmp_path, "a", LIFECYCLE) as (_, a),
        member(redis_settings, tmp_path, "b", LIFECYCLE) as (b_node, b),
    ):
        stale = b.revision
        await a.set_enabled("lifecycle", True)
        with pytest.raises(RevisionConflictError):
            # B has not heard of A's change yet, or has: either way its revision is stale.
            await b.set_enabled("lifecycle", True, revision=stale)
        await applied(b_node, b, "lifecycle", "enabled")
    starts = [m for _, m in Lifecycle.calls].count("on_enable")
    stops = [m for _, m in Lifecycle.calls].count("on_disable")
    assert starts == stops  # every instance started, B's refused candidate too, was stopped


async def test_control_revisions_agree_across_nodes(
    redis_settings: Settings, tmp_path: Path
) -> None:
    async with (
        member(redis_settings, tmp_path, "a", ECHO) as (_, a),
        member(redis_settings, tmp_path, "b", ECHO) as (b_node, b),
    ):
        assert a.revision == b.revision == 1
        await a.set_enabled("echo", False)
        await applied(b_node, b, "echo", "disabled")
        assert a.revision == b.revision == 2
        copies = {(tmp_path / name / "plugins.yaml").read_text() for name in "ab"}
        assert len(copies) == 1


async def test_control_outside_edit_of_a_node_s_file_is_committed_for_all(
    redis_settings: Settings, tmp_path: Path
) -> None:
    async with (
        member(redis_settings, tmp_path, "a", ECHO) as (_, a),
        member(redis_settings, tmp_path, "b", ECHO) as (b_node, b),
    ):
        (tmp_path / "a" / "plugins.yaml").write_text(ECHO.replace("true", "false"))
        await a.reload()
        await applied(b_node, b, "echo", "disabled")
        assert a.revision == b.revision == 2


async def test_control_without_redis_refuses_to_commit_and_converges_after(
    redis_factory: Callable[[], RedisServer], tmp_path: Path
) -> None:
    server = redis_factory()
    settings = Settings.from_env({"AGENT_PM_REDIS_URL": server.url})
    async with (
        member(settings, tmp_path, "a", ECHO) as (a_node, a),
        member(settings, tmp_path, "b", ECHO) as (b_node, b),
    ):
        server.kill()
        with anyio.fail_after(10):
            await a_node.link.wait_up(False)
        before = (tmp_path / "a" / "plugins.yaml").read_bytes()
        with pytest.raises(ClusterUnavailableError):
            await a.set_enabled("echo", False)
        assert a.metadata_for("echo").active
        assert (tmp_path / "a" / "plugins.yaml").read_bytes() == before
        assert [r.status for r in await a.fire("post_plan")] == ["success"]  # no Redis needed
        server.start()
        with anyio.fail_after(20):
            await a_node.link.wait_up()
            await b_node.link.wait_up()
        await a.set_enabled("echo", False)
        await applied(b_node, b, "echo", "disabled")
        assert a.revision == b.revision


async def test_control_seeds_the_revision_a_node_runs_after_redis_lost_its_data(
    redis_factory: Callable[[], RedisServer], tmp_path: Path
) -> None:
    server = redis_factory()
    settings = Settings.from_env({"AGENT_PM_REDIS_URL": server.url})
    async with member(settings, tmp_path, "a", ECHO) as (a_node, a):
        await a.set_enabled("echo", False)
        assert a.revision == 2
        server.kill()
        with anyio.fail_after(10):
            await a_node.link.wait_up(False)
        server.start()  # empty: no persistence
        with anyio.fail_after(20):
            await a_node.link.wait_up()
        # The revision never goes back, so If-Match values clients hold stay meaningful.
        assert a.revision == 2
        await a.set_enabled("echo", True, revision=2)
        assert a.revision == 3


def test_control_node_names_default_to_host_and_pid(redis_settings: Settings) -> None:
    import os

    node = ClusterNode(dataclasses.replace(redis_settings, node_name=None))
    assert node.name.endswith(f":{os.getpid()}")
