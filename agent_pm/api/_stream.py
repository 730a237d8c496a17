"""The live telemetry stream endpoint: every hook sample and state change over a WebSocket.

The messages, limits and close codes are :mod:`agent_pm.protocol`'s. Each connection reads the
bus through its own bounded subscription, so a slow client never blocks ``fire`` or other
clients: it is sent ``lagged`` notices, and one whose socket accepts nothing for
``send_timeout`` seconds is closed with 1013 (try again later).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import deque
from typing import Any

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from agent_pm.api._errors import deny
from agent_pm.api._security import same_origin
from agent_pm.plugins.bus import Bus, Lagged, Subscription
from agent_pm.protocol import (
    GOING_AWAY,
    MAX_CLIENT_MESSAGE,
    TRY_AGAIN_LATER,
    Hello,
    StreamError,
    Subscribe,
)

__all__ = ["close_streams", "routes"]

logger = logging.getLogger(__name__)

ROLES = frozenset({"read", "admin"})

_decode_subscribe = msgspec.json.Decoder(Subscribe).decode
_encode = msgspec.json.Encoder().encode


class Options(msgspec.Struct, frozen=True):
    """Per-connection limits of the stream endpoint."""

    buffer_size: int = 1_000
    max_batch: int = 1_000
    send_timeout: float = 10.0
    close_timeout: float = 5.0
    linger: float = 0.005


def routes(
    *,
    buffer_size: int = 1_000,
    max_batch: int = 1_000,
    send_timeout: float = 10.0,
    close_timeout: float = 5.0,
    linger: float = 0.005,
) -> list[BaseRoute]:
    """The stream's route; the app must hold the running registry in ``app.state.registry``.

    ``buffer_size`` bounds each connection's queue of messages, ``max_batch`` the messages per
    frame; a send that waits ``send_timeout`` seconds closes the connection with 1013, and a
    close frame the client does not take within ``close_timeout`` is abandoned. Once a message
    is ready the sender waits ``linger`` seconds for more to share its frame: without it, a
    hundred subscribers would each send one frame per sample.
    """
    options = Options(buffer_size, max_batch, send_timeout, close_timeout, linger)
    endpoint = functools.partial(stream_endpoint, options=options)
    return [WebSocketRoute("/plugins/stream", endpoint, name="plugins_stream")]


async def stream_endpoint(websocket: WebSocket, options: Options = Options()) -> None:  # noqa: B008
    """Check the handshake, then stream until the client leaves or the server stops."""
    if websocket.scope.get("state", {}).get("role") not in ROLES:
        await _deny(websocket, 401, "unauthorized", "an API key or a session is required")
        return
    if not same_origin(websocket):
        await _deny(websocket, 403, "forbidden_origin", "cross-origin WebSocket refused")
        return
    try:
        first = initial_subscription(websocket.query_params)
    except msgspec.ValidationError as exc:
        await _deny(websocket, 400, "invalid_subscription", str(exc))
        return
    registry = websocket.app.state.registry
    if websocket.query_params.get("epoch", registry.bus.epoch) != registry.bus.epoch:
        # The client's seq numbers belong to a previous run of the server: start from now.
        first = msgspec.structs.replace(first, since=None)
    await websocket.accept()
    connection = Connection(websocket, registry.bus, registry.revision, options)
    live = _live(websocket.app)
    live.add(connection)
    try:
        await connection.run(first)
    finally:
        live.discard(connection)


def initial_subscription(params: QueryParams) -> Subscribe:
    """The subscription the query string asks for (repeated or comma-separated names)."""

    def names(key: str) -> list[str]:
        return [name for value in params.getlist(key) for name in value.split(",") if name]

    raw: dict[str, Any] = {"type": "subscribe", "plugins": names("plugins")}
    raw["hooks"] = names("hooks")
    if params.get("since"):
        raw["since"] = params["since"]
    return msgspec.convert(raw, Subscribe, strict=False)


async def _deny(websocket: WebSocket, status: int, code: str, detail: str) -> None:
    await deny(websocket.scope, websocket.receive, websocket.send, status, code, detail)


class Connection:
    """One client's stream: a sender draining the subscription, a receiver for its requests.

    ``sent`` is the highest seq sent, ``cursor`` the point the subscription has reached (the
    hello's seq before anything is sent); a resubscription restarts from ``cursor``, or from
    ``since`` but never at or below ``sent``, so no seq is repeated or goes backwards.
    """

    def __init__(self, websocket: WebSocket, bus: Bus, revision: int, options: Options) -> None:
        self.websocket = websocket
        self.bus = bus
        self.revision = revision
        self.options = options
        self.sent = 0
        self.cursor = 0
        self.code: int | None = None
        self.stuck = anyio.Event()
        self.subscription: Subscription | None = None
        self._control: deque[bytes] = deque(maxlen=16)
        self._scope = anyio.CancelScope()

    async def run(self, first: Subscribe) -> None:
        try:
            with self._scope, self.bus.subscribe(capacity=self.options.buffer_size) as sub:
                self.subscription = sub
                hello = Hello(self.bus.seq, self.bus.epoch, self.revision)
                self.cursor = hello.seq
                self.resubscribe(first)
                await self.websocket.send_text(f"[{_encode(hello).decode()}]")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._receive_loop, tg.cancel_scope)
                    self.code = await self._send_loop(sub)
                    tg.cancel_scope.cancel()
        except WebSocketDisconnect:
            self.code = None
        if self.code is not None:
            await self._close(self.code)

    def going_away(self) -> None:
        """Stop streaming and close with 1001; called when the server shuts down."""
        self.code = GOING_AWAY
        self._scope.cancel()

    def resubscribe(self, request: Subscribe) -> None:
        since = self.cursor
        if request.since is not None:
            since = max(min(request.since, self.bus.seq), self.sent)
        assert self.subscription is not None
        self.bus.resubscribe(
            self.subscription, plugins=request.plugins, hooks=request.hooks, since=since
        )
        self.cursor = since

    async def _send_loop(self, subscription: Subscription) -> int | None:
        """Send batches until the bus ends (1001), the client stalls (1013) or leaves (None)."""
        while True:
            try:
                batch = await subscription.receive(self.options.max_batch)
            except anyio.EndOfStream:
                return GOING_AWAY
            room = self.options.max_batch - len(batch)
            if self.options.linger > 0 and room > 0:
                await anyio.sleep(self.options.linger)
                batch += subscription.drain(room)
            frame = self._frame(batch)
            if frame is None:
                continue
            with anyio.move_on_after(self.options.send_timeout) as timer:
                try:
                    await self.websocket.send_text(frame)
                except WebSocketDisconnect:
                    return None
            if timer.cancelled_caught:
                logger.warning("closing a stream client that read nothing for a while")
                self.stuck.set()
                return TRY_AGAIN_LATER

    def _frame(self, batch: list[Any]) -> str | None:
        """One JSON array of the pending replies and ``batch``, joined from cached encodings."""
        if (
            batch
            and not self._control
            and batch[0].seq > self.sent
            and Lagged not in map(type, batch)
        ):
            # The common frame: live messages only, the same for every subscriber that drains
            # them with the same topics, so it is built once for all of them.
            assert self.subscription is not None
            topics = (self.subscription.plugins, self.subscription.hooks)
            self.sent = batch[-1].seq
            self.cursor = max(self.cursor, self.sent)
            return self.bus.frame(batch, topics)
        parts = list(self._control)
        self._control.clear()
        encode = self.bus.encode
        sent = self.sent
        for message in batch:
            if message.seq > sent:
                parts.append(encode(message))
                sent = message.seq
        self.sent = sent
        self.cursor = max(self.cursor, sent)
        if not parts:
            return None
        return (b"[" + b",".join(parts) + b"]").decode()

    async def _receive_loop(self, scope: anyio.CancelScope) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self.code = None
                scope.cancel()
                return
            self._handle(message.get("text"))

    def _handle(self, text: str | None) -> None:
        if text is None:
            return self._reply("send subscribe messages as JSON text frames")
        if len(text) > MAX_CLIENT_MESSAGE:
            return self._reply(f"message larger than {MAX_CLIENT_MESSAGE} characters")
        try:
            request = _decode_subscribe(text)
        except msgspec.DecodeError as exc:
            return self._reply(str(exc))
        self.resubscribe(request)

    def _reply(self, detail: str) -> None:
        self._control.append(_encode(StreamError(detail)))
        assert self.subscription is not None
        self.subscription.wake()

    async def _close(self, code: int) -> None:
        # A stalled client may never take the close frame: bound the wait, then drop it.
        with anyio.move_on_after(self.options.close_timeout):
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self.websocket.close(code)


class _Live:
    """The open connections of one app, so shutdown can close them and wait."""

    def __init__(self) -> None:
        self.connections: set[Connection] = set()
        self._empty: anyio.Event | None = None

    def add(self, connection: Connection) -> None:
        self.connections.add(connection)

    def discard(self, connection: Connection) -> None:
        self.connections.discard(connection)
        if not self.connections and self._empty is not None:
            self._empty.set()

    async def wait_empty(self) -> None:
        while self.connections:
            self._empty = anyio.Event()
            await self._empty.wait()


def _live(app: Starlette) -> _Live:
    live: _Live | None = getattr(app.state, "stream_connections", None)
    if live is None:
        live = app.state.stream_connections = _Live()
    return live


async def close_streams(app: Starlette) -> None:
    """Close every stream connection of ``app`` with 1001 and wait until they are gone.

    A connection whose client stalls gives up its close after its ``send_timeout``; callers
    that must not wait that long wrap this in ``anyio.move_on_after``.
    """
    live = _live(app)
    for connection in list(live.connections):
        connection.going_away()
    await live.wait_empty()
