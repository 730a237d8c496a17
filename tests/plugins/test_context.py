"""Caller context in hook calls: deadlines that cap handler timeouts, and request ids."""

from __future__ import annotations

import time

import anyio
import pytest
from msgspec import to_builtins as plain

from agent_pm.plugins import context
from tests.plugins.test_dispatch import steppers

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_fire_timeout_caps_handler_timeouts_and_is_recorded_as_the_caller_s(
    registry_factory, entry
) -> None:
    async with registry_factory(*steppers(entry, ["forever", "once"], 30)) as registry:
        with anyio.fail_after(10):
            cut, done = await registry.fire("step", timeout=0.2)
        [sample] = plain(registry.history("forever"))["step"]
        stats = plain(registry.metadata_for("forever"))["hook_stats"]["step"]
    assert (done.status, done.value) == ("success", "once")
    assert cut.status == "deadline" and 200 <= cut.duration_ms < 10_000
    assert cut.error == "cut at the caller's deadline after 0.2 s (its own timeout is 30 s)"
    assert (sample["status"], sample["error"]) == ("deadline", cut.error)
    assert (stats["deadlines"], stats["timeouts"]) == (1, 0)


async def test_enclosing_cancel_scope_deadline_caps_handler_timeouts(
    registry_factory, entry
) -> None:
    async with registry_factory(*steppers(entry, ["forever"], 30)) as registry:
        with anyio.move_on_after(0.2) as scope:
            await registry.fire("step")
        [sample] = plain(registry.history("forever"))["step"]
    assert scope.cancelled_caught
    assert sample["status"] == "deadline"
    assert sample["error"].startswith("cut at the caller's deadline after 0.")


async def test_deadline_is_reported_when_the_loop_is_busy_as_the_fan_out_starts(
    registry_factory, entry
) -> None:
    async def busy_loop() -> None:
        time.sleep(0.1)  # holds the event loop, as other work on a loaded service does  # noqa: ASYNC251

    async with registry_factory(*steppers(entry, ["forever"], 30)) as registry:
        async with anyio.create_task_group() as group:
            group.start_soon(busy_loop)  # runs at the fan-out's first scheduling point
            with anyio.move_on_after(0.2) as scope:
                await registry.fire("step")
        [sample] = plain(registry.history("forever"))["step"]
    assert scope.cancelled_caught
    assert sample["status"] == "deadline"


async def test_handler_timeout_shorter_than_the_budget_stays_its_own_timeout(
    registry_factory, entry
) -> None:
    async with registry_factory(*steppers(entry, ["forever"], 0.2)) as registry:
        [result] = await registry.fire("step", timeout=20)
    assert (result.status, result.error) == ("timeout", "timed out after 0.2 s")


async def test_handler_reads_its_remaining_time_and_emit_passes_it_on(
    registry_factory, entry
) -> None:
    entries = [*steppers(entry, ["remaining", "relay"], 30), entry("Measure", timeout_seconds=60)]
    async with registry_factory(*entries) as registry:
        own, relayed = await registry.fire("step")
        capped, capped_relay = await registry.fire("step", timeout=5)
    assert 25 < own.value <= 30  # its own timeout, with no caller budget
    assert 25 < relayed.value[0] <= 30  # an emitted hook gets what its emitter has left
    assert 0 < capped.value <= 5 and 0 < capped_relay.value[0] <= 5
    assert context.remaining() is None  # outside any hook call


async def test_fire_timeout_is_reserved_and_must_be_a_number(registry_factory, entry) -> None:
    async with registry_factory(*steppers(entry, ["return"], 30)) as registry:
        with pytest.raises(ValueError, match="timeout"):
            await registry.fire("step", timeout="soon")
        with pytest.raises(ValueError, match="timeout"):
            await registry.fire("step", timeout=-1)


async def test_request_id_travels_into_samples_history_and_errors(registry_factory, entry) -> None:
    async with registry_factory(*steppers(entry, ["return", "raise_after"], 30)) as registry:
        token = context.request_id.set("req-42")
        try:
            await registry.fire("step")
        finally:
            context.request_id.reset(token)
        await registry.fire("step")
        history = plain(registry.history("raise_after"))["step"]
        errors = plain(registry.metadata_for("raise_after"))["errors"]
    assert [h["request_id"] for h in history] == ["req-42", None]
    assert [e["request_id"] for e in errors] == ["req-42", None]
