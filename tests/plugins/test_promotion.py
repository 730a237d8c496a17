"""Automatic promotion: an ``isolation: auto`` plugin that blocks the loop, or whose sync calls
never return, is moved to a worker process while the service runs, audited and visible."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from msgspec import to_builtins as plain

from agent_pm.audit import Actor, AuditMessage, AuditRecord
from agent_pm.audited import AuditedAdmin
from agent_pm.errors import PluginNotFoundError
from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.bus import Subscription
from agent_pm.plugins.manifest import Manifest, ManifestEntry
from agent_pm.plugins.promotion import PLATFORM
from agent_pm.settings import Settings
from tests.fixtures.isolated_plugins import STUCK_RELEASE

pytestmark = pytest.mark.anyio

MODULE = "tests.fixtures.isolated_plugins"
OPERATOR = Actor("ops", "admin", "rest")


def entry(cls: str, *, name: str | None = None, **fields: Any) -> str:
    """A manifest entry for fixture plugin ``cls``, fields given as YAML flow values."""
    lines = [f"- name: {name or cls.lower()}", f"  module: {MODULE}:{cls}", "  enabled: true"]
    lines += [f"  {key}: {msgspec.json.encode(value).decode()}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


AUTO_BLOCKER = entry(
    "Blocker",
    isolation="auto",
    promotion={"block_ms": 100, "blocks": 2, "window_seconds": 3600, "hold_seconds": 3600},
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "PLUGIN_CONFIG_PATH": str(tmp_path / "plugins.yaml"),
            "DATA_DIR": str(tmp_path / "data"),
            "PATH": os.environ.get("PATH", ""),
        }
    )


@pytest.fixture
def release_stuck_threads() -> Iterator[None]:
    """Let the threads a Stuck plugin leaves behind end with the test."""
    STUCK_RELEASE.clear()
    yield
    STUCK_RELEASE.set()


async def audited(subscription: Subscription, action: str) -> AuditRecord:
    """The next audit record of ``action`` published on the bus."""
    with anyio.fail_after(120):
        while True:
            for message in await subscription.receive():
                if isinstance(message, AuditMessage) and message.record.action == action:
                    return message.record


def isolation(registry: PluginRegistry, name: str) -> dict[str, Any]:
    info: dict[str, Any] = plain(registry.metadata_for(name))["isolation"]
    return info


async def fire_value(registry: PluginRegistry, **payload: Any) -> Any:
    [result] = await registry.fire("post_plan", **payload)
    assert result.status == "success", result.error
    return result.value


@pytest.fixture
async def blocker(registry_factory: Any, settings: Settings) -> AsyncIterator[PluginRegistry]:
    async with registry_factory(AUTO_BLOCKER, settings_=settings) as registry:
        yield registry


async def promote(registry: PluginRegistry) -> AuditRecord:
    """Block the loop twice in ``blocker``; the audit record of its promotion."""
    with registry.bus.subscribe() as subscription:
        assert await fire_value(registry, ms=150) == os.getpid()
        assert isolation(registry, "blocker")["mode"] == "inline"
        assert await fire_value(registry, ms=150) == os.getpid()
        return await audited(subscription, "isolate")


async def test_promotion_moves_a_loop_blocking_auto_plugin_to_a_worker_process(
    blocker: PluginRegistry, tmp_path: Path
) -> None:
    registry = blocker
    record = await promote(registry)

    blocks = plain(registry.metadata_for("blocker"))["loop_blocks"]
    [worst, second, *_] = blocks["worst"]
    assert worst["hook"] == second["hook"] == "post_plan" and second["ms"] >= 150
    info = isolation(registry, "blocker")
    assert info["mode"] == "process" and info["declared"] == "auto"
    assert info["promoted"] is True and info["by"] == "platform" and info["promotions"] == 1
    assert "held the event loop for 100 ms or more 2 times" in info["why"]
    assert "in hook post_plan" in info["why"] and info["when"] is not None
    assert info["state"] == "running" and info["pid"] not in (None, os.getpid())

    assert (record.actor, record.role, record.source) == (PLATFORM.name, "admin", "platform")
    assert record.outcome == "ok" and record.reason == info["why"]
    assert record.before["isolation.mode"] == "inline"
    assert record.after["isolation.mode"] == "process"
    assert record.after["isolation.promoted"] is True
    assert record.revision_after > record.revision_before
    [logged] = [r for r in await registry.promoter.audit_log.read() if r.action == "isolate"]
    assert logged == record

    # The next call runs in the worker: while it spins there, this loop keeps running.
    steps_before = blocks["hooks"]["post_plan"]["steps"]
    started, until = tmp_path / "started", tmp_path / "until"
    answers: list[Any] = []

    async def call() -> None:
        answers.append(await fire_value(registry, until=str(until), started=str(started)))

    async with anyio.create_task_group() as group:
        group.start_soon(call)
        turns = 0
        with anyio.fail_after(120):
            while not started.exists():  # only a free loop gets here again and again
                turns += 1
                await anyio.sleep(0.01)
        until.touch()
    assert turns >= 1 and answers == [info["pid"]]
    after = plain(registry.metadata_for("blocker"))["loop_blocks"]
    assert after["hooks"]["post_plan"]["steps"] == steps_before  # nothing held this loop


async def test_promotion_moves_a_plugin_whose_sync_calls_never_return(
    registry_factory: Any, settings: Settings, release_stuck_threads: None
) -> None:
    stuck = entry("Stuck", isolation="auto", promotion={"stuck_threads": 2})
    async with registry_factory(stuck, settings_=settings) as registry:
        with registry.bus.subscribe() as subscription:
            [first] = await registry.fire("post_plan", stick=True)
            assert first.status == "timeout"
            assert isolation(registry, "stuck")["mode"] == "inline"  # one is not enough
            [second] = await registry.fire("post_plan", stick=True)
            assert second.status == "timeout"
            record = await audited(subscription, "isolate")
        assert record.outcome == "ok" and record.source == "platform"
        assert record.reason is not None and "2 call(s) of its sync handlers" in record.reason
        info = isolation(registry, "stuck")
        assert info["mode"] == "process" and info["promoted"] is True
        assert await fire_value(registry) == info["pid"] != os.getpid()


async def test_promotion_counts_blocks_within_the_window_and_only_for_auto(
    registry_factory: Any, settings: Settings
) -> None:
    manifest = entry(
        "Blocker",
        name="patient",
        isolation="auto",
        promotion={"block_ms": 100, "blocks": 3},
    ) + entry("Blocker", name="pinned", isolation="inline")
    async with registry_factory(manifest, settings_=settings) as registry:
        for _ in range(2):
            await registry.fire("post_plan", ms=150)
        for name in ("patient", "pinned"):
            worst = plain(registry.metadata_for(name))["loop_blocks"]["worst"]
            assert worst[0]["ms"] >= 150  # both are named by the attribution
            assert isolation(registry, name)["mode"] == "inline"
            assert registry.record_of(name).placement.pending is False  # type: ignore[union-attr]
        assert isolation(registry, "pinned")["declared"] == "inline"


async def test_promotion_move_back_by_an_operator_holds_off_another_promotion(
    blocker: PluginRegistry,
) -> None:
    registry = blocker
    await promote(registry)
    admin = AuditedAdmin(registry, registry.promoter.audit_log, OPERATOR)
    info = (await admin.set_isolation("blocker", "inline", reason="measured fine")).isolation
    assert info.mode == "inline" and info.promoted is False and info.by == "operator"
    assert info.hold_until is not None and info.promotions == 1
    assert await fire_value(registry) == os.getpid()
    for _ in range(3):
        assert await fire_value(registry, ms=150) == os.getpid()
        record = registry.record_of("blocker")
        assert record is not None and record.placement.pending is False
    assert isolation(registry, "blocker")["mode"] == "inline"
    [_, back] = [r for r in await registry.promoter.audit_log.read() if r.action == "isolate"]
    assert (back.actor, back.source, back.reason) == ("ops", "rest", "measured fine")
    assert back.after["isolation.mode"] == "inline" and "isolation.hold_until" in back.after


async def test_promotion_survives_a_reload_of_the_plugin(blocker: PluginRegistry) -> None:
    registry = blocker
    await promote(registry)
    pid = isolation(registry, "blocker")["pid"]
    await registry.reload_plugin("blocker")
    info = isolation(registry, "blocker")
    assert info["mode"] == "process" and info["promoted"] is True
    assert info["pid"] not in (None, pid)  # a new worker, on the new code


async def test_promotion_that_cannot_start_a_worker_keeps_the_plugin_inline(
    registry_factory: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_PM_TEST_INLINE_ONLY", "1")  # absent from a worker's environment
    manifest = entry(
        "InlineOnlyBlocker",
        name="inline_only_blocker",
        isolation="auto",
        promotion={"block_ms": 100, "blocks": 1},
    )
    async with registry_factory(manifest, settings_=settings) as registry:
        with registry.bus.subscribe() as subscription:
            assert await fire_value(registry, ms=150) == os.getpid()
            record = await audited(subscription, "isolate")
        assert record.outcome == "error" and record.source == "platform"
        assert record.error is not None and "on_enable failed" in record.error
        info = isolation(registry, "inline_only_blocker")
        assert info["mode"] == "inline" and info["promoted"] is False
        assert info["hold_until"] is not None  # the next attempt waits a window
        assert await fire_value(registry, ms=150) == os.getpid()  # still served, inline
        placement = registry.record_of("inline_only_blocker").placement  # type: ignore[union-attr]
        assert placement.pending is False


async def test_promotion_default_isolation_follows_the_setting(
    registry_factory: Any, tmp_path: Path
) -> None:
    auto = Settings.from_env(
        {"PLUGIN_CONFIG_PATH": str(tmp_path / "plugins.yaml"), "ISOLATION_DEFAULT": "auto"}
    )
    async with registry_factory(entry("Blocker"), settings_=auto) as registry:
        assert isolation(registry, "blocker")["declared"] == "auto"
        record = registry.record_of("blocker")
        assert record is not None and record.loop_blocks is not None
        # Unset, block_ms is the threshold the attribution warns at (LOOP_BLOCK_WARN_MS).
        assert record.placement.settings.block_ms == record.loop_blocks.listen_ms == 100.0
    with pytest.raises(ValueError, match="ISOLATION_DEFAULT must be inline, process or auto"):
        Settings.from_env({"ISOLATION_DEFAULT": "sometimes"})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"promotion": {"block_ms": 0}}, "Expected `float` > 0.0 - at `$.promotion.block_ms`"),
        ({"promotion": {"blocks": 0}}, "Expected `int` >= 1 - at `$.promotion.blocks`"),
        ({"promotion": {"stuck_threads": 5}}, "Expected `int` <= 4 - at `$.promotion.stuck"),
        ({"promotion": {"hold_seconds": -1}}, "Expected `float` >= 0.0 - at `$.promotion.hold"),
        ({"promotion": {"blockms": 10}}, "unknown field `blockms` - at `$.promotion`"),
        (
            {"isolation": "process", "promotion": {}},
            "promotion applies only to isolation: auto, not isolation: process",
        ),
        ({"isolation": "inline", "limits": {"memory_mb": 128}}, "limits apply only to isolated"),
        ({"isolation": "sometimes"}, "Invalid enum value 'sometimes' - at `$.isolation`"),
    ],
)
def test_promotion_bad_settings_make_the_entry_invalid_with_a_clear_error(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    path = tmp_path / "plugins.yaml"
    path.write_text(entry("Blocker", **{"isolation": "auto", **fields}))
    [item] = Manifest.load(path).items()
    assert item.entry is None and item.error is not None and message in item.error


def test_promotion_settings_have_defaults() -> None:
    parsed = msgspec.convert(
        {"name": "b", "module": f"{MODULE}:Blocker", "isolation": "auto", "promotion": {}},
        ManifestEntry,
    )
    assert parsed.promotion is not None
    assert (parsed.promotion.block_ms, parsed.promotion.blocks) == (None, 3)
    assert (parsed.promotion.window_seconds, parsed.promotion.stuck_threads) == (60.0, 1)
    assert parsed.promotion.hold_seconds == 3600.0


async def test_promotion_operator_moves_any_plugin_either_way(
    registry_factory: Any, settings: Settings
) -> None:
    async with registry_factory(entry("Blocker"), settings_=settings) as registry:
        admin = AuditedAdmin(registry, registry.promoter.audit_log, OPERATOR)
        moved = (await admin.set_isolation("blocker", "process")).isolation
        assert moved.mode == "process" and moved.promoted is False and moved.by == "operator"
        assert await fire_value(registry) == moved.pid != os.getpid()
        back = (await admin.set_isolation("blocker", "inline")).isolation
        assert back.mode == "inline" and back.hold_until is None  # no auto to hold off
        with pytest.raises(PluginNotFoundError):
            await registry.set_isolation("nobody", "process")
