"""Hooks run concurrently on every subscribed plugin, each under its timeout, isolated."""

from __future__ import annotations

import asyncio
import threading

import anyio
import pytest
from msgspec import to_builtins as plain

from tests.fixtures.plugins import Blocking, Gate, step_var

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(autouse=True)
def release_blocked_threads():
    Blocking.release.clear()
    yield
    Blocking.release.set()


async def test_dispatch_hung_async_and_blocked_sync_are_cut_while_fast_returns(
    registry_factory, entry
) -> None:
    async with registry_factory(entry("Echo"), entry("Hanging"), entry("Blocking")) as registry:
        with anyio.fail_after(5):
            results = await registry.fire("post_plan", plan={"title": "t"})
    by_plugin = {r.plugin: r for r in results}
    assert by_plugin["echo"].status == "success"
    assert by_plugin["echo"].value == {"echo": {"plan": {"title": "t"}}}
    for name in ("hanging", "blocking"):
        assert by_plugin[name].status == "timeout"
        assert by_plugin[name].error == "timed out after 0.2 s"
        assert 200 <= by_plugin[name].duration_ms < 5000


async def test_dispatch_handlers_overlap_instead_of_running_in_turn(
    registry_factory, entry
) -> None:
    # Each Gate handler waits until all three have started: only concurrent dispatch finishes.
    Gate.arrived, Gate.expected, Gate.everyone = 0, 3, anyio.Event()
    gates = [entry("Gate", name=f"gate{i}", timeout_seconds=5) for i in range(3)]
    async with registry_factory(*gates) as registry:
        results = await registry.fire("post_plan")
    assert [r.status for r in results] == ["success"] * 3


async def test_dispatch_sync_handler_runs_in_a_worker_thread(registry_factory, entry) -> None:
    async with registry_factory(entry("SyncEcho")) as registry:
        [result] = await registry.fire("post_plan", plan=1)
    assert result.status == "success"
    assert result.value["thread"] != threading.get_ident()


async def test_dispatch_failure_is_isolated_and_recorded(registry_factory, entry) -> None:
    async with registry_factory(entry("Failing"), entry("Echo")) as registry:
        results = await registry.fire("post_plan")
        failing = plain(registry.metadata_for("failing"))
    assert [(r.plugin, r.status) for r in results] == [("failing", "error"), ("echo", "success")]
    assert results[0].error == "RuntimeError: handler exploded"
    assert failing["hook_stats"]["post_plan"]["failures"] == 1
    assert failing["errors"][-1]["stage"] == "hook:post_plan"


async def test_dispatch_bad_payload_is_an_error_not_a_crash(registry_factory, entry) -> None:
    async with registry_factory(entry("Echo")) as registry:
        [result] = await registry.fire("pre_plan", **{"not valid": 1})
    assert result.status == "success"  # **payload accepts anything
    async with registry_factory(entry("Configured")) as registry:
        [result] = await registry.fire("post_plan", unexpected=1)
    assert result.status == "success"


async def test_dispatch_plugin_with_missing_secrets_is_skipped(registry_factory, entry) -> None:
    async with registry_factory(entry("Secretive")) as registry:
        [result] = await registry.fire("post_plan")
        meta = plain(registry.metadata_for("secretive"))
    assert result.status == "skipped"
    assert result.error == "missing secrets: API_TOKEN"
    assert meta["secrets"] == {"required": ["API_TOKEN"], "missing": ["API_TOKEN"]}
    assert meta["hook_stats"]["post_plan"]["skipped"] == 1


async def test_dispatch_unknown_hook_returns_no_results(registry_factory, entry) -> None:
    async with registry_factory(entry("Echo")) as registry:
        assert await registry.fire("nobody_listens") == []


async def cancel_while_running(registry, hook: str) -> None:
    """Fire ``hook`` and cancel the caller (no deadline) once every handler is waiting."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(registry.fire, hook)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()


async def test_dispatch_caller_cancellation_cancels_handlers(registry_factory, entry) -> None:
    async with registry_factory(entry("Hanging", timeout_seconds=30)) as registry:
        await cancel_while_running(registry, "post_plan")
        [sample] = registry.history("hanging")["post_plan"]
    assert sample.status == "error" and sample.error == "cancelled"


def test_dispatch_thread_that_outlives_its_loop_still_ends(tmp_path) -> None:
    # The loop stops (a finished test, a server past shutdown) while a sync handler still runs;
    # when the handler returns, its worker thread must end rather than wait for that loop.
    import asyncio

    from agent_pm.plugins import PluginRegistry
    from agent_pm.settings import Settings

    manifest = tmp_path / "plugins.yaml"
    manifest.write_text(
        "- name: blocking\n  module: tests.fixtures.plugins:Blocking\n  enabled: true\n"
        "  timeout_seconds: 0.05\n"
    )

    async def fire_and_leave() -> None:
        async with PluginRegistry(manifest, Settings.from_env({})) as registry:
            [result] = await registry.fire("post_plan")
            assert result.status == "timeout"

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(fire_and_leave())  # the loop stops here but stays open
        worker = Blocking.threads[-1]
        Blocking.release.set()
        worker.join(timeout=5)
        assert not worker.is_alive()
    finally:
        Blocking.release.set()
        loop.close()


SHAPES = {
    "return": ("success", "return", None),
    "once": ("success", "once", None),
    "many": ("success", "many", None),
    "raise_before": ("error", None, "ValueError: before"),
    "raise_after": ("error", None, "ValueError: after"),
    "stop_iteration": ("error", None, "RuntimeError: coroutine raised StopIteration"),
    "scoped": ("success", "scoped", None),
    "context": ("success", "handler", None),
    "forever": ("timeout", None, "timed out after 0.3 s"),
}


def steppers(entry, modes, timeout: float = 0.3) -> list[str]:
    return [entry("Stepper", name=m, config={"mode": m}, timeout_seconds=timeout) for m in modes]


async def test_dispatch_every_handler_shape_has_the_same_outcome_on_each_backend(
    registry_factory, entry
) -> None:
    async with registry_factory(*steppers(entry, SHAPES)) as registry:
        with anyio.fail_after(10):
            results = await registry.fire("step")
        history = {mode: registry.history(mode)["step"] for mode in SHAPES}
    assert step_var.get() == "caller"  # what a handler sets stays in its own context
    assert [r.plugin for r in results] == list(SHAPES)
    for (mode, expected), result in zip(SHAPES.items(), results, strict=True):
        assert (result.status, result.value, result.error) == expected, mode
        [sample] = history[mode]
        assert (sample.status, sample.error) == (result.status, result.error)
        assert sample.duration_ms == round(result.duration_ms, 3)
    assert results[-1].duration_ms >= 300


async def test_dispatch_handler_blocking_its_first_step_is_a_timeout_not_a_stall(
    registry_factory, entry
) -> None:
    entries = [*steppers(entry, ["block_first"], 0.2), *steppers(entry, ["once", "return"], 5)]
    async with registry_factory(*entries) as registry:
        blocked, once, at_once = await registry.fire("step")
    assert blocked.status == "timeout" and blocked.duration_ms >= 400
    assert blocked.error is not None and "past its 0.2 s timeout" in blocked.error
    assert (once.status, once.value, at_once.status, at_once.value) == (
        "success",
        "once",
        "success",
        "return",
    )


async def test_dispatch_caller_cancellation_keeps_what_finished_at_once(
    registry_factory, entry
) -> None:
    async with registry_factory(*steppers(entry, ["return", "forever"], 30)) as registry:
        await cancel_while_running(registry, "step")
        [done] = registry.history("return")["step"]
        [cut] = registry.history("forever")["step"]
    assert (done.status, done.error) == ("success", None)
    assert (cut.status, cut.error) == ("error", "cancelled")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_dispatch_schedules_a_task_only_for_a_handler_that_suspends(
    registry_factory, entry, anyio_backend
) -> None:
    async with registry_factory(
        *steppers(entry, ["tasks", "task_after_suspending"], 5)
    ) as registry:
        before = len(asyncio.all_tasks())
        seen_now, seen_later = await registry.fire("step")
    assert seen_now.value == before  # the first handler ran with no task added to the loop
    assert seen_later.value is True


async def test_dispatch_fire_is_a_checkpoint_even_when_every_handler_returns_at_once(
    registry_factory, entry
) -> None:
    async with registry_factory(*steppers(entry, ["return"])) as registry:
        ticked = anyio.Event()

        async def tick() -> None:
            ticked.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            with anyio.fail_after(10):
                while not ticked.is_set():
                    await registry.fire("step")
        calls = len(registry.history("return")["step"])
        with anyio.CancelScope() as scope:
            scope.cancel()
            await registry.fire("step")
        assert len(registry.history("return")["step"]) == calls  # cancelled: nothing ran


async def test_dispatch_times_every_step_alike_on_both_backends(registry_factory, entry) -> None:
    # Eager tasks time their own steps on asyncio; trio's tasks drive a timed coroutine.
    blocker = entry("LoopBlocker", name="loop_blocker").replace(
        "tests.fixtures.plugins", "tests.fixtures.isolated_plugins"
    )
    async with registry_factory(blocker, entry("Echo")) as registry:
        for _ in range(3):
            await registry.fire("post_plan", seconds=0.02)
        blocks = plain(registry.metadata_for("loop_blocker"))["loop_blocks"]
        echo = plain(registry.metadata_for("echo"))["loop_blocks"]["hooks"]["post_plan"]
    seen = blocks["hooks"]["post_plan"]
    assert seen["steps"] == 9  # three calls: resume, checkpoint, checkpoint
    assert sum(seen["counts"]) == 9 and seen["max_ms"] >= 20
    assert blocks["worst"][0]["ms"] >= 20
    assert echo["steps"] == 3
