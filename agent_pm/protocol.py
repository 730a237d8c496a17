"""The telemetry stream's wire protocol: its messages, limits and close codes (msgspec only).

``/plugins/stream`` sends JSON text frames, each one array of messages (what is ready is batched
into one frame). The first frame holds a :class:`Hello`; then come ``sample``, ``state``,
``audit`` and ``lagged`` messages whose ``seq`` strictly increases, and :class:`StreamError`
replies to invalid client messages. The client may send a :class:`Subscribe` at any time to
change its filter and backfill from the replay ring; the same fields in the query string
(``?plugins=a,b&hooks=h&since=41``) set the first subscription before the hello, so a resuming
client cannot race the live stream; with ``&epoch=…`` naming another run of the server,
``since`` is ignored.

A client stalled for the server's send timeout is closed with :data:`TRY_AGAIN_LATER`; a server
that stops closes with :data:`GOING_AWAY`. Clients import this module without the server.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = [
    "GOING_AWAY",
    "MAX_CLIENT_MESSAGE",
    "TRY_AGAIN_LATER",
    "Hello",
    "StreamError",
    "Subscribe",
]

GOING_AWAY = 1001
TRY_AGAIN_LATER = 1013
# The largest message a client may send, in characters (and the server's WebSocket frame limit).
MAX_CLIENT_MESSAGE = 64 * 1024

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Names = Annotated[tuple[Name, ...], msgspec.Meta(max_length=1_000)]


class Subscribe(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Client → server: select plugins and hooks (empty: all), backfilling after ``since``."""

    # A plain required field rather than a struct tag, which msgspec would let clients omit.
    type: Literal["subscribe"]
    plugins: Names = ()
    hooks: Names = ()
    since: Annotated[int, msgspec.Meta(ge=0)] | None = None


class Hello(msgspec.Struct, frozen=True, tag="hello", tag_field="type"):
    """The first message: the bus's current seq, its epoch (new on every start), the revision."""

    seq: int
    epoch: str
    revision: int


class StreamError(msgspec.Struct, frozen=True, tag="error", tag_field="type"):
    """Reply to a client message the server could not accept; the stream goes on."""

    detail: str
