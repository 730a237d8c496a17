"""The cluster bus: every node's samples and state messages, in one order, on every node.

:class:`ClusterBus` is the embedded :class:`~agent_pm.plugins.bus.Bus` (bounded subscribers,
replay ring, cached encodings) fed from a Redis Stream instead of straight from ``publish``:

- ``publish`` only appends to a bounded outbox, so ``fire`` never waits on Redis. A background
  task sends what has gathered as one script call per batch, which numbers each message with
  the cluster-wide sequence and XADDs it to the stream (``MAXLEN ~``, bounded).
- One reader per node follows the stream and publishes each entry on the local bus under its
  cluster sequence number, tagged with the node it came from. Every node therefore sees the same
  messages with the same ``seq`` and epoch, so a client can resume with ``since`` on any node.
- While Redis is down, messages are published locally at once (numbered after the last seq), and
  the outbox is flushed the same way; on reconnect the node bumps the cluster counter past its
  own numbering and follows the stream from its end.

Counters: ``forwarded`` messages sent to the stream, ``received`` from other nodes, ``dropped``
(outbox overflow, undecodable entries) and ``local`` (published without Redis).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from agent_pm.plugins.bus import Bus, Message, StateChange
from agent_pm.plugins.cluster.link import Redis
from agent_pm.plugins.cluster.report import BusCounters
from agent_pm.plugins.cluster.scripts import APPEND, JOIN
from agent_pm.plugins.telemetry import HookSample

__all__ = ["ClusterBus"]

logger = logging.getLogger(__name__)
READ_BLOCK_MS = 1_000
_encode = msgspec.json.Encoder().encode


class ClusterBus(Bus):
    """The bus of node ``node``, sharing the stream ``{prefix}stream`` with the other nodes."""

    def __init__(
        self,
        node: str,
        prefix: str,
        *,
        message_types: tuple[type[Any], ...] = (HookSample, StateChange),
        stream_length: int = 100_000,
        outbox_size: int = 10_000,
        batch_size: int = 500,
        replay_size: int = 10_000,
        buffer_size: int = 1_000,
    ) -> None:
        super().__init__(replay_size, buffer_size)
        self.node = node
        self.counters = BusCounters()
        self.stream_length = stream_length
        self.outbox_size = outbox_size
        self.batch_size = batch_size
        self._keys = (f"{prefix}seq", f"{prefix}stream", f"{prefix}epoch")
        self._decode = msgspec.json.Decoder(_union(message_types)).decode
        self._outbox: deque[Message] = deque()
        self._wakeup: anyio.Event | None = None
        self._linked = False

    # -- the interface the registry and the surfaces use --------------------------------

    def next_seq(self) -> int:
        """A provisional number: the message's seq is assigned when the stream orders it."""
        return self.seq

    def publish(self, message: Message) -> None:
        """Queue ``message`` for the stream (without Redis: publish it locally at once)."""
        if not self._linked:
            self._publish_local(message)
            return
        outbox = self._outbox
        if len(outbox) >= self.outbox_size:
            outbox.popleft()
            self.counters.dropped += 1
        outbox.append(message)
        if self._wakeup is not None:
            self._wakeup.set()

    @property
    def pending(self) -> int:
        """Messages waiting in the outbox."""
        return len(self._outbox)

    # -- the service the link runs -------------------------------------------------------

    async def serve(self, redis: Redis, *, task_status: TaskStatus[None]) -> None:
        counter, stream, epoch = self._keys
        joined: list[Any] = await redis.register_script(JOIN)(
            keys=[counter, stream, epoch], args=[self.seq, self.epoch]
        )
        self.epoch = _text(joined[0])
        start = joined[1]
        async with anyio.create_task_group() as group:
            group.start_soon(self._read, redis, start)
            self._linked = True
            task_status.started()
            await self._send(redis)

    def down(self) -> None:
        self._linked = False
        while self._outbox:
            self._publish_local(self._outbox.popleft())

    async def _send(self, redis: Redis) -> None:
        append = redis.register_script(APPEND)
        keys = list(self._keys[:2])
        outbox = self._outbox
        while True:
            while not outbox:
                self._wakeup = anyio.Event()
                await self._wakeup.wait()
                self._wakeup = None
            batch = [outbox.popleft() for _ in range(min(self.batch_size, len(outbox)))]
            args: list[Any] = [self.stream_length, self.node, *map(_encode, batch)]
            try:
                await append(keys=keys, args=args)
            except BaseException:
                # Whether the stream took the batch is unknown; the node's own subscribers get
                # it locally (``down``) rather than not at all.
                outbox.extendleft(reversed(batch))
                raise
            self.counters.forwarded += len(batch)

    async def _read(self, redis: Redis, start: bytes | str) -> None:
        stream = self._keys[1]
        last: bytes | str = start
        while True:
            answer = await redis.xread({stream: last}, count=1_000, block=READ_BLOCK_MS)
            for entries in (answer or {}).values():
                for entry in entries:
                    last = entry.identifier
                    self._deliver(entry.identifier, entry.field_values)

    def _deliver(self, identifier: bytes | str, fields: Any) -> None:
        seq = int(_text(identifier).partition("-")[0])
        node = _text(fields.get(b"n", b""))
        try:
            message = self._decode(fields[b"m"])
        except (KeyError, msgspec.DecodeError):
            self.counters.dropped += 1
            logger.warning("dropped a stream entry from %s that does not decode", node)
            return
        if node != self.node:
            self.counters.received += 1
        # Defensive: the join step keeps the stream's numbers above this node's own.
        super().publish(_renumber(message, max(seq, self.seq + 1), node))

    def _publish_local(self, message: Message) -> None:
        self.counters.local += 1
        super().publish(_renumber(message, self.seq + 1, self.node))


def _renumber(message: Any, seq: int, node: str) -> Any:
    if "node" in message.__struct_fields__:
        return msgspec.structs.replace(message, seq=seq, node=node)
    return msgspec.structs.replace(message, seq=seq)


def _union(types: tuple[type[Any], ...]) -> Any:
    union: Any = types[0]
    for kind in types[1:]:
        union = union | kind
    return union


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
