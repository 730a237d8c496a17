"""The cluster bus: every node's samples and state messages, in one order, on every node.

:class:`ClusterBus` is the embedded :class:`~agent_pm.plugins.bus.Bus` (bounded subscribers,
replay ring, cached encodings) fed from a Redis Stream instead of straight from ``publish``:

- ``publish`` only appends to a bounded outbox, so ``fire`` never waits on Redis. A background
  task sends what has gathered as one script call per batch, which numbers the messages with
  the cluster-wide sequence and XADDs them as one stream entry (``MAXLEN ~``, bounded): one
  entry per batch keeps Redis's and the readers' work per message small.
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
from agent_pm.plugins.cluster.doorbell import Doorbell
from agent_pm.plugins.cluster.link import Redis
from agent_pm.plugins.cluster.report import BusCounters
from agent_pm.plugins.cluster.scripts import APPEND, JOIN
from agent_pm.plugins.telemetry import HookSample

__all__ = ["ClusterBus"]

logger = logging.getLogger(__name__)
READ_BLOCK_MS = 1_000
READ_COUNT = 1_000
# Once a message is waiting, the sender (and, after a short read, the reader) waits this long for
# more to share its round trip: one script call per burst instead of one per ``fire``.
LINGER_SECONDS = 0.015
# After a short read the reader waits less: that wait is latency, the sender's is batching.
READ_LINGER_SECONDS = 0.005
_encode = msgspec.msgpack.Encoder().encode


class ClusterBus(Bus):
    """The bus of node ``node``, sharing the stream ``{prefix}stream`` with the other nodes."""

    def __init__(
        self,
        node: str,
        prefix: str,
        *,
        message_types: tuple[type[Any], ...] = (HookSample, StateChange),
        stream_length: int = 2_000,
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
        self._decode = msgspec.msgpack.Decoder(list[_union(message_types)]).decode  # type: ignore[misc]
        self._outbox: deque[Message] = deque()
        self._doorbell = Doorbell()
        self._linked = False
        # Batches this node numbered, and the messages of those not yet read back from the
        # stream: the node delivers its own without decoding them, and a batch read back is
        # delivered (not re-queued) even when the reply to its append was lost.
        self._batches = 0
        self._unread: dict[int, list[Message]] = {}

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
        self._doorbell.ring()

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
        self._unread.clear()
        while self._outbox:
            self._publish_local(self._outbox.popleft())

    async def _send(self, redis: Redis) -> None:
        append = redis.register_script(APPEND)
        keys = list(self._keys[:2])
        outbox = self._outbox
        while True:
            await self._doorbell.wait(lambda: outbox)
            # Wait for a full batch, or for the linger to pass: sending as soon as the last
            # reply came back would make one call per round trip, each with a few messages.
            if len(outbox) < self.batch_size:
                await anyio.sleep(LINGER_SECONDS)
            batch = [outbox.popleft() for _ in range(min(self.batch_size, len(outbox)))]
            self._batches += 1
            number = self._batches
            self._unread[number] = batch
            args: list[Any] = [self.stream_length, self.node, len(batch), _encode(batch), number]
            try:
                await append(keys=keys, args=args)
            except BaseException:
                # Unless the reader has seen it in the stream, whether the stream took the batch
                # is unknown; the node's own subscribers then get it locally (``down``) rather
                # than not at all.
                if self._unread.pop(number, None) is not None:
                    outbox.extendleft(reversed(batch))
                raise
            self.counters.forwarded += len(batch)

    async def _read(self, redis: Redis, start: bytes | str) -> None:
        stream = self._keys[1]
        last: bytes | str = start
        while True:
            answer = await redis.xread({stream: last}, count=READ_COUNT, block=READ_BLOCK_MS)
            for entries in (answer or {}).values():
                for entry in entries:
                    last = entry.identifier
                    self._deliver(entry.identifier, entry.field_values)
                if len(entries) < READ_COUNT:
                    await anyio.sleep(READ_LINGER_SECONDS)

    def _deliver(self, identifier: bytes | str, fields: Any) -> None:
        last = int(_text(identifier).partition("-")[0])
        node = _text(fields.get(b"n", b""))
        mine = self._unread.pop(int(fields.get(b"b", 0)), None) if node == self.node else None
        try:
            messages = mine if mine is not None else self._decode(fields[b"m"])
        except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
            self.counters.dropped += int(fields.get(b"c", 1))
            logger.warning("dropped a stream entry from %s that does not decode", node)
            return
        if node != self.node:
            self.counters.received += len(messages)
        publish = super().publish
        # Defensive: the join step keeps the stream's numbers above this node's own.
        seq = max(last - len(messages), self.seq)
        for message in messages:
            seq += 1
            publish(_renumber(message, seq, node))

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
