"""Loop-block attribution: which inline plugin holds the event loop, in which hook, how long."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from msgspec import to_builtins as plain

from agent_pm.api._metrics import _loop_blocks
from agent_pm.plugins.loopblock import BOUNDS_MS, LoopBlocks
from agent_pm.settings import Settings

pytestmark = pytest.mark.anyio

BLOCKER = """\
- name: loop_blocker
  module: tests.fixtures.isolated_plugins:LoopBlocker
  enabled: true
"""


async def test_loopblock_names_the_plugin_and_hook_that_held_the_loop(
    registry_factory: Any, entry: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "agent_pm.plugins.loopblock")
    async with registry_factory(BLOCKER, entry("Echo")) as registry:
        results = {r.plugin: r for r in await registry.fire("post_plan", seconds=0.15)}
        assert results["loop_blocker"].status == "success"
        blocks = plain(registry.metadata_for("loop_blocker"))["loop_blocks"]
        seen = blocks["hooks"]["post_plan"]
        assert seen["steps"] == 3  # resume, sleep(0), sleep(0)
        assert seen["max_ms"] >= 150 and seen["over_threshold"] == 1
        assert sum(seen["counts"]) == 3 and len(seen["counts"]) == len(BOUNDS_MS) + 1
        [worst, *_] = blocks["worst"]
        assert worst["hook"] == "post_plan" and worst["ms"] >= 150
        echo = plain(registry.metadata_for("echo"))["loop_blocks"]["hooks"]["post_plan"]
        assert echo["over_threshold"] == 0
        assert any(
            "loop_blocker" in r.getMessage() and "post_plan" in r.getMessage()
            for r in caplog.records
        )
        metrics = "".join(_loop_blocks(registry.list_metadata(history=False)))
        bucket = 'agent_pm_loop_block_seconds_bucket{plugin="loop_blocker",hook="post_plan",'
        assert f'{bucket}le="+Inf"}} 3' in metrics


async def test_loopblock_keeps_results_errors_and_timeouts_as_they_were(
    registry_factory: Any, entry: Any
) -> None:
    async with registry_factory(entry("Echo"), entry("Failing"), entry("Hanging")) as registry:
        results = {r.plugin: r for r in await registry.fire("post_plan", x=1)}
        assert results["echo"].value == {"echo": {"x": 1}}
        assert results["failing"].error == "RuntimeError: handler exploded"
        assert results["hanging"].status == "timeout"
        hanging = plain(registry.metadata_for("hanging"))["loop_blocks"]["hooks"]["post_plan"]
        assert hanging["steps"] == 2  # started, then cancelled at its timeout


async def test_loopblock_can_be_turned_off(registry_factory: Any, tmp_path: Path) -> None:
    off = Settings.from_env(
        {"PLUGIN_CONFIG_PATH": str(tmp_path / "plugins.yaml"), "LOOP_BLOCK_TRACKING": "0"}
    )
    async with registry_factory(BLOCKER, settings_=off) as registry:
        await registry.fire("post_plan", seconds=0)
        assert plain(registry.metadata_for("loop_blocker"))["loop_blocks"] is None


def test_loopblock_keeps_only_the_worst_steps() -> None:
    blocks = LoopBlocks("p", warn_ms=1000)
    for ms in range(20):
        blocks.record("h", float(ms))
    assert [step.ms for step in blocks.worst()] == [19.0, 18.0, 17.0, 16.0, 15.0]
    assert blocks.hooks["h"].steps == 20 and blocks.hooks["h"].max_ms == 19.0
