"""The telemetry stream over a real uvicorn server and the ``websockets`` client."""

from __future__ import annotations

import json
import statistics
import time
import tracemalloc
from typing import Any

import anyio
import pytest
from msgspec import to_builtins as plain
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agent_pm.plugins import PluginRegistry
from tests.api.stream_fixtures import ServeStream, StreamServer

pytestmark = pytest.mark.anyio
SEQUENCED = ("sample", "state", "lagged")


def open_stream(
    server: StreamServer, key: str | None = "read-key", origin: str | None = None, query: str = ""
) -> Any:
    headers = {"X-API-Key": key} if key is not None else {}
    return connect(
        server.url + query,
        additional_headers=headers,
        origin=origin,  # type: ignore[arg-type]
        compression=None,
        max_size=None,
    )


async def frame(ws: ClientConnection) -> list[dict[str, Any]]:
    messages = json.loads(await ws.recv())
    assert isinstance(messages, list) and messages
    return messages


async def hello(ws: ClientConnection) -> dict[str, Any]:
    (first,) = await frame(ws)
    assert first["type"] == "hello"
    return first


async def next_messages(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    """The next ``count`` messages, however they were batched into frames."""
    messages: list[dict[str, Any]] = []
    while len(messages) < count:
        messages.extend(await frame(ws))
    assert len(messages) == count, messages
    return messages


async def sync_point(ws: ClientConnection) -> list[dict[str, Any]]:
    """Send an invalid message and read up to its error reply: the server has now handled
    everything sent before it. Returns what arrived on the way."""
    await ws.send("sync")
    seen: list[dict[str, Any]] = []
    while True:
        for message in await frame(ws):
            if message["type"] == "error":
                return seen
            seen.append(message)


async def fire(registry: PluginRegistry, hook: str, times: int = 1) -> None:
    for _ in range(times):
        await registry.fire(hook)


class Reader:
    """Reads a connection in the background, checking order, counting and notifying progress."""

    def __init__(self, ws: ClientConnection, *, keep: bool = True) -> None:
        self.ws = ws
        self.keep = keep
        self.messages: list[dict[str, Any]] = []
        self.hello: dict[str, Any] | None = None
        self.last = 0
        self.count = 0
        self.lagged = 0
        self.close_code: int | None = None
        self._progress = anyio.Event()

    async def run(self) -> None:
        try:
            while True:
                for message in json.loads(await self.ws.recv()):
                    self._take(message)
                self._progress.set()
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else None
        finally:
            self.last = 1 << 62  # wake waiters: the assertions will tell what went wrong
            self._progress.set()

    def _take(self, message: dict[str, Any]) -> None:
        if self.keep:
            self.messages.append(message)
        kind = message["type"]
        if kind == "hello":
            self.hello = message
        elif kind in SEQUENCED:
            assert message["seq"] > self.last, (message, self.last)
            self.last = message["seq"]
            self.count += 1
            self.lagged += kind == "lagged"

    async def reached(self, seq: int) -> None:
        while self.last < seq:
            self._progress = anyio.Event()
            await self._progress.wait()


# -- handshake ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "status", "error"), [(None, 401, "unauthorized"), ("wrong", 403, "forbidden")]
)
async def test_stream_refuses_missing_and_unknown_keys(
    stream_server: StreamServer, key: str | None, status: int, error: str
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with open_stream(stream_server, key=key):
            pass
    response = refused.value.response
    assert response.status_code == status
    assert json.loads(response.body)["error"] == error


@pytest.mark.parametrize("key", ["read-key", "admin-key"])
async def test_stream_accepts_read_and_admin_keys(stream_server: StreamServer, key: str) -> None:
    async with open_stream(stream_server, key=key) as ws:
        assert (await hello(ws))["type"] == "hello"


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "https://127.0.0.1:{port}", "http://127.0.0.1"]
)
async def test_stream_refuses_cross_origin_before_upgrade(
    stream_server: StreamServer, origin: str
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with open_stream(stream_server, origin=origin.format(port=stream_server.port)):
            pass
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["error"] == "forbidden_origin"


@pytest.mark.parametrize("origin", [None, "same", "HTTP://127.0.0.1:{port}"])
async def test_stream_accepts_same_origin_or_none(
    stream_server: StreamServer, origin: str | None
) -> None:
    if origin == "same":
        origin = stream_server.origin
    elif origin is not None:
        origin = origin.format(port=stream_server.port)
    async with open_stream(stream_server, origin=origin) as ws:
        await hello(ws)


async def test_stream_refuses_invalid_query(stream_server: StreamServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with open_stream(stream_server, query="?since=-4"):
            pass
    assert refused.value.response.status_code == 400


# -- protocol -------------------------------------------------------------------------------


async def test_stream_hello_then_samples_and_state(stream_server: StreamServer) -> None:
    registry = stream_server.registry
    async with open_stream(stream_server) as ws:
        first = await hello(ws)
        assert first == {
            "type": "hello",
            "seq": registry.bus.seq,
            "epoch": registry.bus.epoch,
            "revision": registry.revision,
        }
        await registry.fire("pre_plan")
        plain(await registry.set_enabled("configured", False))
        sample, state = await next_messages(ws, 2)
    assert sample["type"] == "sample" and sample["seq"] == first["seq"] + 1
    assert {"plugin": "echo", "hook": "pre_plan", "status": "success", "error": None}.items() <= (
        sample.items()
    )
    assert sample["timestamp"] and sample["duration_ms"] >= 0
    assert state["type"] == "state" and state["seq"] == first["seq"] + 2
    assert state["plugin"]["name"] == "configured" and state["plugin"]["state"] == "disabled"


async def test_stream_query_filters_plugins_and_hooks(stream_server: StreamServer) -> None:
    registry = stream_server.registry
    async with open_stream(stream_server, query="?plugins=echo&hooks=pre_plan") as ws:
        await hello(ws)
        await registry.fire("post_plan")  # echo and configured: wrong hook
        plain(await registry.set_enabled("configured", False))  # another plugin's state
        await registry.fire("pre_plan")
        plain(await registry.set_enabled("echo", False))  # echo's state has no hook: it passes
        sample, state = await next_messages(ws, 2)
    assert (sample["plugin"], sample["hook"]) == ("echo", "pre_plan")
    assert (state["type"], state["plugin"]["name"]) == ("state", "echo")


async def test_stream_subscribe_message_changes_the_filter(stream_server: StreamServer) -> None:
    registry = stream_server.registry
    async with open_stream(stream_server) as ws:
        await hello(ws)
        await ws.send(json.dumps({"type": "subscribe", "plugins": ["configured"]}))
        assert await sync_point(ws) == []
        await registry.fire("pre_plan")
        await registry.fire("post_plan")
        (sample,) = await next_messages(ws, 1)
        assert (sample["plugin"], sample["hook"]) == ("configured", "post_plan")
        await ws.send(json.dumps({"type": "subscribe", "hooks": ["pre_plan"]}))
        await sync_point(ws)
        await registry.fire("post_plan")
        await registry.fire("pre_plan")
        (sample,) = await next_messages(ws, 1)
    assert (sample["plugin"], sample["hook"]) == ("echo", "pre_plan")


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        b"\x00binary",
        "[1, 2]",
        '{"type": "unsubscribe"}',
        '{"plugins": ["echo"]}',
        '{"type": "subscribe", "since": -1}',
        '{"type": "subscribe", "plugins": "echo"}',
        '{"type": "subscribe", "colour": "red"}',
        "x" * 70_000,
    ],
)
async def test_stream_invalid_client_message_gets_error_and_stream_goes_on(
    stream_server: StreamServer, message: str | bytes
) -> None:
    async with open_stream(stream_server) as ws:
        await hello(ws)
        await ws.send(message)
        (error,) = await frame(ws)
        assert error["type"] == "error" and error["detail"]
        await stream_server.registry.fire("pre_plan")
        (sample,) = await next_messages(ws, 1)
    assert sample["type"] == "sample"


# -- resume -------------------------------------------------------------------------------


async def test_stream_since_in_query_replays_then_goes_live(stream_server: StreamServer) -> None:
    registry = stream_server.registry
    start = registry.bus.seq
    await fire(registry, "pre_plan", 20)
    async with open_stream(stream_server, query=f"?since={start + 10}") as ws:
        first = await hello(ws)
        assert first["seq"] == start + 20
        await registry.fire("pre_plan")
        messages = await next_messages(ws, 11)
    assert [m["seq"] for m in messages] == list(range(start + 11, start + 22))


async def test_stream_subscribe_since_backfills_a_quiet_stream(
    stream_server: StreamServer,
) -> None:
    registry = stream_server.registry
    start = registry.bus.seq
    await fire(registry, "pre_plan", 5)
    async with open_stream(stream_server) as ws:
        await hello(ws)
        await ws.send(json.dumps({"type": "subscribe", "since": start + 2}))
        messages = await next_messages(ws, 3)
    assert [m["seq"] for m in messages] == [start + 3, start + 4, start + 5]


async def test_stream_subscribe_since_never_repeats_a_delivered_seq(
    stream_server: StreamServer,
) -> None:
    registry = stream_server.registry
    async with open_stream(stream_server) as ws:
        await hello(ws)
        await fire(registry, "pre_plan", 3)
        delivered = await next_messages(ws, 3)
        await ws.send(json.dumps({"type": "subscribe", "since": 0}))
        assert await sync_point(ws) == []
        await registry.fire("pre_plan")
        (after,) = await next_messages(ws, 1)
    assert after["seq"] == delivered[-1]["seq"] + 1


async def test_stream_since_older_than_the_ring_is_lagged(serve_stream: ServeStream) -> None:
    async with serve_stream(replay_size=10) as server:
        await fire(server.registry, "pre_plan", 30)
        last = server.registry.bus.seq
        async with open_stream(server, query="?since=0") as ws:
            await hello(ws)
            messages = await next_messages(ws, 11)
    oldest = last - 9
    assert messages[0] == {"type": "lagged", "missed": oldest - 1, "seq": oldest - 1}
    assert [m["seq"] for m in messages[1:]] == list(range(oldest, last + 1))


async def test_stream_since_from_another_epoch_starts_from_now(
    stream_server: StreamServer,
) -> None:
    registry = stream_server.registry
    async with open_stream(stream_server, query="?since=999999") as ws:
        await hello(ws)
        await registry.fire("pre_plan")
        (sample,) = await next_messages(ws, 1)
    assert sample["seq"] == registry.bus.seq


# -- ordering, backpressure, shutdown -------------------------------------------------------


async def test_stream_orders_concurrent_fires(serve_stream: ServeStream) -> None:
    async with serve_stream(buffer_size=10_000) as server:
        registry = server.registry
        async with (
            open_stream(server) as a,
            open_stream(server) as b,
            anyio.create_task_group() as tg,
        ):
            readers = [Reader(a), Reader(b)]
            for reader in readers:
                tg.start_soon(reader.run)
            await readers[0].reached(0)
            start = registry.bus.seq
            async with anyio.create_task_group() as fires:
                for _ in range(50):
                    fires.start_soon(fire, registry, "post_plan", 20)
            for reader in readers:
                await reader.reached(registry.bus.seq)
            tg.cancel_scope.cancel()
    for reader in readers:
        seqs = [m["seq"] for m in reader.messages if m["type"] != "hello"]
        assert seqs == list(range(start + 1, start + 2001))


@pytest.mark.timing
@pytest.mark.timeout(300)  # 62,000 fires: over a minute on a loaded machine
async def test_stream_client_that_never_reads_costs_nothing_to_others(
    serve_stream: ServeStream,
) -> None:
    capacity = 1_000
    async with serve_stream(buffer_size=capacity, send_timeout=600, replay_size=2_000) as server:
        registry = server.registry
        async with (
            open_stream(server) as a,
            open_stream(server) as b,
            anyio.create_task_group() as tg,
        ):
            readers = [Reader(a, keep=False), Reader(b, keep=False)]
            for reader in readers:
                tg.start_soon(reader.run)

            async def produce(count: int, every: Any = None, timed: range = range(0)) -> float:
                """Fire ``count`` times; the median duration of the fires numbered in ``timed``."""
                durations = []
                for i in range(1, count + 1):
                    began = time.perf_counter()
                    await registry.fire("pre_plan")
                    if i in timed:
                        durations.append(time.perf_counter() - began)
                    if i % 500 == 0:
                        # Pace the producer to the readers, so what is tested is the stuck
                        # client's effect on them, not the readers' own speed on a busy host.
                        for reader in readers:
                            await reader.reached(registry.bus.seq)
                        if every is not None:
                            every(i)
                return statistics.median(durations) if durations else 0.0

            baseline = await produce(12_000, timed=range(2_000, 12_000))
            before = set(server.connections())
            async with open_stream(server) as stuck:
                (connection,) = set(server.connections()) - before
                subscription = connection.subscription
                assert subscription is not None
                longest = 0
                memory: list[int] = []

                def check(i: int) -> None:
                    nonlocal longest
                    longest = max(longest, len(subscription))
                    # Trace after the timed window (tracing is slow); compare once the replay
                    # ring has turned over (what it frees was allocated while tracing) with
                    # 12,000 samples later.
                    if i == 12_000:
                        tracemalloc.start()
                    elif i in (15_000, 27_000):
                        memory.append(tracemalloc.get_traced_memory()[0])
                    if i == 27_000:
                        tracemalloc.stop()

                try:
                    with_stuck = await produce(50_000, check, timed=range(2_000, 12_000))
                finally:
                    tracemalloc.stop()
                assert longest == capacity
                assert subscription.missed > 0 and connection.code is None
                growth = memory[1] - memory[0]
                assert growth < 1_000_000, growth
                assert with_stuck < 10 * baseline, (with_stuck, baseline)
                for reader in readers:
                    assert reader.lagged == 0 and reader.count == 62_000
                kinds: set[str] = set()
                with anyio.fail_after(30):
                    while "lagged" not in kinds:
                        kinds.update(m["type"] for m in json.loads(await stuck.recv()))
            tg.cancel_scope.cancel()


async def test_stream_closes_a_stalled_client_with_1013(serve_stream: ServeStream) -> None:
    async with serve_stream(buffer_size=100, send_timeout=0.3, close_timeout=30) as server:
        registry = server.registry
        async with open_stream(server) as stuck:
            (connection,) = server.connections()
            with anyio.fail_after(50):
                while not connection.stuck.is_set():
                    await fire(registry, "pre_plan", 100)
            # What was queued before the close still arrives, then the close frame.
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await stuck.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def test_stream_server_stop_closes_with_1001(serve_stream: ServeStream) -> None:
    async with serve_stream() as server, open_stream(server) as ws:
        await hello(ws)
        server.server.should_exit = True
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


async def test_stream_end_of_bus_closes_with_1001(stream_server: StreamServer) -> None:
    async with open_stream(stream_server) as ws:
        await hello(ws)
        stream_server.registry.bus.close()
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


async def test_stream_denial_falls_back_to_close_1008_without_the_extension() -> None:
    from starlette.websockets import WebSocket

    from agent_pm.api._stream import stream_endpoint

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/plugins/stream", "headers": [], "state": {}}
    await stream_endpoint(WebSocket(scope, receive, send))
    # The close names why, as the auth middleware's denials do.
    reason = "an API key or a session is required"
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": reason}]
