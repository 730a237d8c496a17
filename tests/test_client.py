"""The stream client: typed messages, filters, reconnect-and-resume, epochs, and ``tail``."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.exceptions import InvalidStatus

from agent_pm.audit import AuditMessage, AuditRecord
from agent_pm.client import Message, describe, stream, tail
from agent_pm.plugins import HookSample, Lagged, StateChange
from agent_pm.plugins.info import PluginInfo
from agent_pm.protocol import Hello, StreamError
from agent_pm.settings import Settings
from tests.api.stream_fixtures import ServeStream, StreamServer, stream_servers

pytestmark = pytest.mark.anyio
FAST = {"backoff": 0.01, "max_backoff": 0.05}


@pytest.fixture
def serve_stream(tmp_path: Path, settings: Settings) -> ServeStream:
    return stream_servers(tmp_path, settings)


@pytest.fixture
async def stream_server(serve_stream: ServeStream) -> AsyncIterator[StreamServer]:
    async with serve_stream() as server:
        yield server


class Consumer:
    """Hands the messages of a background ``stream()`` over a memory channel."""

    def __init__(self, url: str, **options: Any) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[Message](10_000)
        self.url = url
        self.options = {**FAST, **options}

    async def run(self) -> None:
        async with self.send:
            async for message in stream(self.url, "read-key", **self.options):
                await self.send.send(message)

    async def take(self, count: int) -> list[Message]:
        with anyio.fail_after(30):
            return [await self.receive.receive() for _ in range(count)]


@asynccontextmanager
async def consuming(url: str, **options: Any) -> AsyncIterator[Consumer]:
    consumer = Consumer(url, **options)
    async with consumer.receive, anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        yield consumer
        tg.cancel_scope.cancel()


async def test_stream_yields_typed_messages(stream_server: StreamServer) -> None:
    async with consuming(stream_server.url) as consumer:
        (hello,) = await consumer.take(1)
        await stream_server.registry.fire("pre_plan")
        await stream_server.registry.set_enabled("configured", False)
        sample, state = await consumer.take(2)
    assert isinstance(hello, Hello) and hello.epoch == stream_server.registry.bus.epoch
    assert isinstance(sample, HookSample) and isinstance(sample.timestamp, datetime)
    assert (sample.plugin, sample.hook, sample.seq) == ("echo", "pre_plan", hello.seq + 1)
    assert isinstance(state, StateChange) and state.plugin.state == "disabled"


async def test_stream_filters_plugins_and_hooks(stream_server: StreamServer) -> None:
    async with consuming(
        stream_server.url, plugins=["configured"], hooks=["post_plan"]
    ) as consumer:
        await consumer.take(1)
        await stream_server.registry.fire("pre_plan")
        await stream_server.registry.fire("post_plan")
        (sample,) = await consumer.take(1)
    assert isinstance(sample, HookSample)
    assert (sample.plugin, sample.hook) == ("configured", "post_plan")


async def test_stream_since_replays_from_the_ring(stream_server: StreamServer) -> None:
    registry = stream_server.registry
    start = registry.bus.seq
    for _ in range(5):
        await registry.fire("pre_plan")
    async with consuming(stream_server.url, since=start + 2) as consumer:
        messages = await consumer.take(4)
    assert isinstance(messages[0], Hello)
    assert [m.seq for m in messages[1:]] == [start + 3, start + 4, start + 5]


async def test_stream_reconnects_and_resumes_without_loss(stream_server: StreamServer) -> None:
    registry, app = stream_server.registry, stream_server.app
    async with consuming(stream_server.url) as consumer:
        (hello,) = await consumer.take(1)
        await registry.fire("pre_plan")
        await consumer.take(1)
        # Drop the connection and keep the client out while samples are produced.
        app.state.unavailable = True
        for connection in stream_server.connections():
            connection.going_away()
        await app.state.stream_connections.wait_empty()
        for _ in range(20):
            await registry.fire("post_plan")
        app.state.unavailable = False
        messages = await consumer.take(40)
        await registry.fire("pre_plan")
        (live,) = await consumer.take(1)
    seqs = [m.seq for m in messages]  # type: ignore[union-attr]
    assert seqs == list(range(hello.seq + 2, hello.seq + 42))
    assert live.seq == hello.seq + 42  # type: ignore[union-attr]


async def test_stream_yields_a_new_hello_when_the_server_restarts(
    serve_stream: ServeStream,
) -> None:
    async with serve_stream() as first:
        port, url = first.port, first.url
    async with consuming(url) as consumer:
        async with serve_stream(port=port) as first:
            (old,) = await consumer.take(1)
            for _ in range(3):
                await first.registry.fire("pre_plan")
            await consumer.take(3)
        async with serve_stream(port=port) as second:
            (new,) = await consumer.take(1)
            await second.registry.fire("pre_plan")
            (sample,) = await consumer.take(1)
    assert isinstance(old, Hello) and isinstance(new, Hello)
    assert new.epoch == second.registry.bus.epoch != old.epoch
    assert isinstance(sample, HookSample) and sample.seq == new.seq + 1


async def test_stream_raises_when_the_key_is_refused(stream_server: StreamServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async for _ in stream(stream_server.url, "wrong", **FAST):
            pass
    assert refused.value.response.status_code == 403


class Lines(io.StringIO):
    """An output that signals each line written."""

    def __init__(self) -> None:
        super().__init__()
        self.wrote = anyio.Event()

    def write(self, text: str) -> int:
        self.wrote.set()
        return super().write(text)

    async def line_with(self, text: str) -> str:
        with anyio.fail_after(30):
            while True:
                for line in self.getvalue().splitlines():
                    if text in line:
                        return line
                self.wrote = anyio.Event()
                await self.wrote.wait()


async def test_tail_prints_one_line_per_message(stream_server: StreamServer) -> None:
    out = Lines()
    async with anyio.create_task_group() as tg:
        tg.start_soon(tail, stream_server.url, "read-key", ["echo"], None, out)
        await out.line_with("connected")
        await stream_server.registry.fire("pre_plan")
        line = await out.line_with("echo.pre_plan")
        tg.cancel_scope.cancel()
    assert "success" in line and " ms" in line
    assert "configured" not in out.getvalue()


def test_describe_every_message_type() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678000)
    sample = HookSample(7, "echo", "post_plan", when, "error", 1.5, "boom")
    assert describe(sample) == "03:04:05.678  #7  echo.post_plan  error  1.50 ms  boom"
    state = StateChange(8, PluginInfo(name="echo", state="failed", error="bad"))
    assert describe(state) == "#8  echo  state=failed  health=disabled (not enabled)  bad"
    assert "3 messages missed" in describe(Lagged(3, 9))
    assert describe(Hello(1, "abc", 2)) == "connected: epoch abc, seq 1, revision 2"
    assert describe(StreamError("nope")) == "server error: nope"
    record = AuditRecord(
        id=1,
        time=when,
        actor="ci-bot",
        role="admin",
        source="rest",
        action="enable",
        plugin="echo",
        before={},
        after={},
        revision_before=1,
        revision_after=1,
        outcome="error",
        error="boom",
    )
    assert describe(AuditMessage(10, record)) == (
        "#10  audit  ci-bot (admin) via rest: enable echo -> error  boom"
    )


def test_the_client_decodes_audit_messages() -> None:
    from agent_pm.client import _decode

    frame = (
        b'[{"type":"audit","seq":4,"record":{"id":1,"time":"2026-01-02T03:04:05Z",'
        b'"actor":"a","role":"admin","source":"cli","action":"reload_all","plugin":null,'
        b'"before":{},"after":{},"revision_before":1,"revision_after":2,"outcome":"ok"}}]'
    )
    [message] = _decode(frame)
    assert isinstance(message, AuditMessage) and message.record.action == "reload_all"
