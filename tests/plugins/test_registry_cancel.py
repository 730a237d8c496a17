"""``cancel_calls``: the service's stop cancels hook calls in flight, and says so."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from agent_pm.errors import ShuttingDownError
from agent_pm.plugins import HookSample
from tests.fixtures.stuck_plugins import Parked

pytestmark = pytest.mark.anyio


@pytest.fixture
def parked() -> anyio.Event:
    Parked.waiting, Parked.expected, Parked.parked = 0, 3, anyio.Event()
    return Parked.parked


async def test_cancel_calls_ends_callers_with_shutting_down_and_records_cancelled(
    registry_factory: Callable[..., Any], entry: Callable[..., str], parked: anyio.Event
) -> None:
    parked_entry = (
        "- name: parked\n  module: tests.fixtures.stuck_plugins:Parked\n  enabled: true\n"
    )
    async with registry_factory(parked_entry, entry("Echo")) as registry:
        outcomes: list[BaseException] = []

        async def fire() -> None:
            try:
                await registry.fire("post_plan")
            except ShuttingDownError as exc:
                outcomes.append(exc)

        with registry.bus.subscribe() as subscription:
            async with anyio.create_task_group() as group:
                group.start_soon(fire)
                group.start_soon(fire)
                assert registry.fire_nowait("post_plan")
                with anyio.fail_after(10):
                    await parked.wait()
                assert registry.cancel_calls() == ["post_plan"] * 3
                assert registry.cancel_calls() == []  # already cancelled, not twice
            samples = [m for m in subscription.drain() if isinstance(m, HookSample)]
        assert [str(exc) for exc in outcomes] == [
            "the service is stopping: this hook call was cancelled"
        ] * 2
        hanging = [s for s in samples if s.plugin == "parked"]
        assert [(s.status, s.error) for s in hanging] == [("error", "cancelled")] * 3
        assert registry._calls == {} and registry._cancelled == set()
        # The registry goes on serving afterwards.
        results = await registry.fire("pre_plan")
        assert [r.status for r in results] == ["success"] * len(results)


async def test_cancel_calls_with_nothing_in_flight_is_empty(
    registry_factory: Callable[..., Any], entry: Callable[..., str]
) -> None:
    async with registry_factory(entry("Echo")) as registry:
        await registry.fire("post_plan")
        assert registry.cancel_calls() == []
