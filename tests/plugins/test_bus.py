"""The telemetry bus: bounded buffers, lagged notices, replay, resubscription, encoding cache."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import anyio
import msgspec
import pytest

from agent_pm.plugins.bus import Bus, Lagged, StateChange, Subscription
from agent_pm.plugins.info import PluginInfo
from agent_pm.plugins.telemetry import HookSample, now

pytestmark = pytest.mark.anyio
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def publish(bus: Bus, plugin: str = "echo", hook: str = "post_plan") -> HookSample:
    sample = HookSample(bus.next_seq(), plugin, hook, WHEN, "success", 1.0)
    bus.publish(sample)
    return sample


def seqs(batch: list[object]) -> list[int]:
    return [m.seq for m in batch]  # type: ignore[attr-defined]


def test_subscription_buffer_drops_oldest_and_reports_lagged() -> None:
    bus = Bus(buffer_size=3)
    with bus.subscribe() as sub:
        for _ in range(5):
            publish(bus)
        assert len(sub) == 3
        batch = sub.drain()
    assert batch[0] == Lagged(missed=2, seq=2)
    assert seqs(batch[1:]) == [3, 4, 5]


def test_subscription_filters_by_plugin_and_hook() -> None:
    bus = Bus()
    with bus.subscribe(plugins=["echo"], hooks=["pre_plan"]) as sub:
        publish(bus, "echo", "post_plan")
        publish(bus, "other", "pre_plan")
        wanted = publish(bus, "echo", "pre_plan")
        bus.publish(StateChange(bus.next_seq(), PluginInfo(name="echo")))
        bus.publish(StateChange(bus.next_seq(), PluginInfo(name="other")))
        assert seqs(sub.drain()) == [wanted.seq, 4]


def test_subscribe_since_replays_the_whole_ring_beyond_the_buffer() -> None:
    bus = Bus(replay_size=100, buffer_size=10)
    for _ in range(50):
        publish(bus)
    with bus.subscribe(since=5, capacity=10) as sub:
        assert sub.backlog == 45 and len(sub) == 0
        publish(bus)
        assert seqs(sub.drain()) == list(range(6, 52))


def test_subscribe_since_reports_what_the_ring_evicted() -> None:
    bus = Bus(replay_size=10)
    for _ in range(25):
        publish(bus)
    with bus.subscribe(since=3) as sub:
        batch = sub.drain()
    assert batch[0] == Lagged(missed=12, seq=15)
    assert seqs(batch[1:]) == list(range(16, 26))


def test_drain_limit_keeps_sequence_order_across_backlog_lag_and_live() -> None:
    bus = Bus(buffer_size=2)
    for _ in range(3):
        publish(bus)
    with bus.subscribe(since=0) as sub:
        for _ in range(4):
            publish(bus)
        first = sub.drain(limit=2)
        rest = sub.drain(limit=10)
    assert seqs(first) == [1, 2]
    assert rest[1] == Lagged(missed=2, seq=5)
    assert seqs(rest) == [3, 5, 6, 7]


def test_resubscribe_refilters_and_backfills_from_since() -> None:
    bus = Bus()
    with bus.subscribe(plugins=["a"]) as sub:
        publish(bus, "a")
        publish(bus, "b")
        publish(bus, "b")
        bus.resubscribe(sub, plugins=["b"], since=1)
        publish(bus, "a")
        publish(bus, "b")
        assert seqs(sub.drain()) == [2, 3, 5]
        bus.resubscribe(sub, hooks=["pre_plan"])
        assert sub.drain() == []


async def test_receive_waits_for_messages_and_ends_on_close() -> None:
    bus = Bus()
    with bus.subscribe() as sub:
        async with anyio.create_task_group() as tg:
            received: list[object] = []

            async def consume() -> None:
                received.extend(await sub.receive())
                with pytest.raises(anyio.EndOfStream):
                    await sub.receive()

            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            publish(bus)
            await anyio.wait_all_tasks_blocked()
            bus.close()
    assert seqs(received) == [1]


async def test_wake_makes_receive_return_empty() -> None:
    bus = Bus()
    with bus.subscribe() as sub:
        async with anyio.create_task_group() as tg:
            result: list[list[object]] = []

            async def consume() -> None:
                result.append(await sub.receive())

            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            sub.wake()
    assert result == [[]]


def test_encode_caches_ring_messages_once() -> None:
    bus = Bus(replay_size=2)
    first = publish(bus)
    data = bus.encode(first)
    assert bus.encode(first) is data
    assert msgspec.json.decode(data)["type"] == "sample"
    lagged = Lagged(missed=1, seq=first.seq)
    assert msgspec.json.decode(bus.encode(lagged)) == {"type": "lagged", "missed": 1, "seq": 1}
    assert bus.encode(first) is data
    publish(bus)
    publish(bus)
    assert bus.encode(first) is not data
    assert bus.encode(first) == data
    assert len(bus._json) <= 2


def _published(bus: Bus, plugin: str = "p", hook: str = "h") -> HookSample:
    message = HookSample(bus.next_seq(), plugin, hook, now(), "success", 1.0)
    bus.publish(message)
    return message


def test_bus_filters_by_plugin_and_hook_but_state_ignores_hook_filter() -> None:
    bus = Bus()
    with bus.subscribe(plugins=["a"], hooks=["x"]) as subscription:
        _published(bus, "a", "x")
        _published(bus, "a", "y")
        _published(bus, "b", "x")
        bus.publish(StateChange(bus.next_seq(), PluginInfo(name="a")))
        bus.publish(StateChange(bus.next_seq(), PluginInfo(name="b")))
        assert [m.seq for m in subscription.drain()] == [1, 4]


def test_bus_replay_since_backfills_without_gaps_or_repeats() -> None:
    bus = Bus(replay_size=5)
    for _ in range(8):
        _published(bus)
    with bus.subscribe(since=5) as subscription:
        _published(bus)
        assert [m.seq for m in subscription.drain()] == [6, 7, 8, 9]
    with bus.subscribe(since=1) as subscription:
        batch = subscription.drain()
    assert batch[0] == Lagged(missed=3, seq=4)  # seqs 2-4 left the ring
    assert [m.seq for m in batch[1:]] == [5, 6, 7, 8, 9]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def test_publish_touches_no_subscriber_state(monkeypatch: pytest.MonkeyPatch) -> None:
    bus = Bus()
    checked: list[object] = []
    original = Subscription.wants
    monkeypatch.setattr(Subscription, "wants", lambda s, m: checked.append(m) or original(s, m))
    with contextlib.ExitStack() as stack:
        subs = [stack.enter_context(bus.subscribe(plugins=["echo"])) for _ in range(100)]
        before = [dict(vars(sub)) for sub in subs]
        for _ in range(50):
            publish(bus)
        assert [vars(sub) for sub in subs] == before
        assert checked == []
        assert seqs(subs[0].drain()) == list(range(1, 51))
    assert len(checked) == 50  # the filter runs when a subscriber drains, once per message


async def test_waiting_subscriber_is_woken_once_however_many_messages_arrive() -> None:
    bus = Bus()
    wakes = 0
    wake_waiting = bus._wake_waiting

    def counting() -> None:
        nonlocal wakes
        wakes += 1
        wake_waiting()

    bus._wake_waiting = counting  # type: ignore[method-assign]
    batches: list[list[object]] = []
    with bus.subscribe() as first, bus.subscribe() as second:
        async with anyio.create_task_group() as tg:
            for sub in (first, second):
                tg.start_soon(lambda s=sub: _receive_into(s, batches))
            await anyio.wait_all_tasks_blocked()
            for _ in range(100):
                publish(bus)
            await anyio.wait_all_tasks_blocked()
    assert wakes == 1
    assert [seqs(batch) for batch in batches] == [list(range(1, 101))] * 2


async def _receive_into(sub: Subscription, batches: list[list[object]]) -> None:
    batches.append(await sub.receive())


async def test_filtered_subscriber_sleeps_through_messages_it_does_not_want() -> None:
    bus = Bus()
    batches: list[list[object]] = []
    with bus.subscribe(plugins=["a"]) as sub:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_receive_into, sub, batches)
            await anyio.wait_all_tasks_blocked()
            publish(bus, "b")
            await anyio.wait_all_tasks_blocked()
            assert batches == []
            publish(bus, "a")
    assert [seqs(batch) for batch in batches] == [[2]]


def test_subscriber_behind_the_whole_ring_is_told_what_it_lost() -> None:
    bus = Bus(replay_size=5, buffer_size=5)
    with bus.subscribe() as sub:
        for _ in range(12):
            publish(bus)
        assert sub.missed == 7 and len(sub) == 5
        batch = sub.drain()
    assert batch[0] == Lagged(missed=7, seq=7)
    assert seqs(batch[1:]) == [8, 9, 10, 11, 12]


def test_capacity_beyond_the_ring_keeps_its_bound_and_replay_keeps_its_window() -> None:
    bus = Bus(replay_size=4, buffer_size=4)
    with bus.subscribe(capacity=10) as big:
        for _ in range(12):
            publish(bus)
        batch = big.drain()
    assert batch[0] == Lagged(missed=2, seq=2)
    assert seqs(batch[1:]) == list(range(3, 13))
    with bus.subscribe(since=0) as late:
        batch = late.drain()
    assert batch[0] == Lagged(missed=8, seq=8)
    assert seqs(batch[1:]) == [9, 10, 11, 12]


def test_filtered_subscriber_lag_counts_only_what_it_wanted() -> None:
    bus = Bus(buffer_size=2, replay_size=100)
    with bus.subscribe(plugins=["a"]) as sub:
        for plugin in "abababa":
            publish(bus, plugin)
        assert sub.missed == 2
        batch = sub.drain(limit=1)
        rest = sub.drain()
    assert batch == [Lagged(missed=2, seq=3), bus._ring[4]]
    assert seqs(rest) == [7]
