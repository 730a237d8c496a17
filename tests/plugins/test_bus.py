"""The bus hands every message to every subscriber, bounded, with lag notices and replay."""

from __future__ import annotations

import anyio
import pytest

from agent_pm.plugins.bus import Bus, Lagged, StateChange
from agent_pm.plugins.telemetry import HookSample, now

pytestmark = pytest.mark.anyio


def publish(bus: Bus, plugin: str = "p", hook: str = "h") -> HookSample:
    message = HookSample(bus.next_seq(), plugin, hook, now(), "success", 1.0)
    bus.publish(message)
    return message


def test_bus_slow_subscriber_is_bounded_and_told_what_it_missed() -> None:
    bus = Bus(buffer_size=10)
    with bus.subscribe() as slow, bus.subscribe(capacity=1000) as fast:
        for _ in range(25):
            publish(bus)
            assert len(slow) <= 10
        batch = slow.drain()
        assert batch[0] == Lagged(missed=15, seq=15)
        assert [m.seq for m in batch[1:]] == list(range(16, 26))
        assert [m.seq for m in fast.drain()] == list(range(1, 26))


def test_bus_filters_by_plugin_and_hook_but_state_ignores_hook_filter() -> None:
    bus = Bus()
    with bus.subscribe(plugins=["a"], hooks=["x"]) as subscription:
        publish(bus, "a", "x")
        publish(bus, "a", "y")
        publish(bus, "b", "x")
        bus.publish(StateChange(bus.next_seq(), {"name": "a"}))
        bus.publish(StateChange(bus.next_seq(), {"name": "b"}))
        assert [m.seq for m in subscription.drain()] == [1, 4]


def test_bus_replay_since_backfills_without_gaps_or_repeats() -> None:
    bus = Bus(replay_size=5)
    for _ in range(8):
        publish(bus)
    with bus.subscribe(since=5) as subscription:
        publish(bus)
        assert [m.seq for m in subscription.drain()] == [6, 7, 8, 9]
    with bus.subscribe(since=1) as subscription:
        batch = subscription.drain()
    assert batch[0] == Lagged(missed=3, seq=4)  # seqs 2-4 left the ring
    assert [m.seq for m in batch[1:]] == [5, 6, 7, 8, 9]


async def test_bus_receive_waits_for_a_message_and_ends_on_close() -> None:
    bus = Bus()
    with bus.subscribe() as subscription:
        async with anyio.create_task_group() as group:
            received: list[int] = []

            async def consume() -> None:
                received.extend(m.seq for m in await subscription.receive())

            group.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            publish(bus)
        assert received == [1]
        bus.close()
        with pytest.raises(anyio.EndOfStream):
            await subscription.receive()
