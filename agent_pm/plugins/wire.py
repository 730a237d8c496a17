"""The wire protocol between the service and an isolated plugin's worker process.

Both ends exchange length-prefixed msgpack frames (a 4-byte big-endian size, then the body) over
a pair of pipes. Every request carries an id, so calls are multiplexed: many hook calls, the
emits they make back into the service, and their answers travel at once.

    service → worker   Call (init, hook, lifecycle, http), Cancel, EmitReply
    worker → service   Reply, Emit, Fatal
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, BinaryIO, Literal

import msgspec

from agent_pm.plugins.dispatch import HookResult

__all__ = [
    "EXIT_LIMIT",
    "MAX_FRAME_BYTES",
    "Call",
    "Cancel",
    "Emit",
    "EmitReply",
    "Fatal",
    "FrameTooLargeError",
    "HttpRequest",
    "HttpResponse",
    "Init",
    "Message",
    "Reply",
    "RouteSpec",
    "encode",
    "read_messages",
]

MAX_FRAME_BYTES = 64 * 1024 * 1024
# The exit status of a worker that stopped itself at one of its limits (after a Fatal frame).
EXIT_LIMIT = 70
HEADER = struct.Struct(">I")

CallKind = Literal["init", "hook", "lifecycle", "http"]


class Call(msgspec.Struct, tag=True, array_like=True):
    """A request to the worker: ``kind`` says what ``name`` is (a hook, a lifecycle method...)."""

    id: int
    kind: CallKind
    name: str
    payload: Any = None


class Reply(msgspec.Struct, tag=True, array_like=True):
    """The answer to the ``Call`` with the same id: a value, or the error it raised (the
    exception's type name and message)."""

    id: int
    value: Any = None
    error: str | None = None
    error_type: str | None = None


class Cancel(msgspec.Struct, tag=True, array_like=True):
    """The caller of ``Call`` ``id`` gave up; stop it if it can still be stopped."""

    id: int


class Emit(msgspec.Struct, tag=True, array_like=True):
    """The plugin emits ``hook`` while serving ``Call`` ``call`` (``None``: outside any call)."""

    id: int
    call: int | None
    hook: str
    payload: dict[str, Any]
    wait: bool


class EmitReply(msgspec.Struct, tag=True, array_like=True):
    """The other plugins' results of ``Emit`` ``id``, or why it was refused."""

    id: int
    results: list[HookResult] = []
    error: str | None = None


class Fatal(msgspec.Struct, tag=True, array_like=True):
    """The worker is about to exit on its own, and why (a limit it reached)."""

    reason: str


Message = Call | Reply | Cancel | Emit | EmitReply | Fatal


class Init(msgspec.Struct, kw_only=True):
    """What the worker needs to build the plugin: only this plugin's config and secrets."""

    plugin: str
    module: str
    config: dict[str, Any]
    secrets: dict[str, str]
    missing: list[str]
    sys_path: list[str]
    data_dir: str
    memory_mb: int | None = None
    cpu_seconds: float | None = None


class RouteSpec(msgspec.Struct):
    """One top-level route of the plugin, for the service to mount a forwarder in its place."""

    path: str
    methods: list[str] | None
    mount: bool
    public: bool


class HttpRequest(msgspec.Struct):
    """A request to a plugin route, with its path inside the plugin's prefix."""

    method: str
    path: str
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    state: dict[str, str | int | float | bool] = {}


class HttpResponse(msgspec.Struct):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class FrameTooLargeError(ValueError):
    """A message encodes to more than ``MAX_FRAME_BYTES``."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    """The frame of ``message``; ``msgspec.EncodeError`` (a ``TypeError``) if it holds
    something msgpack cannot carry, ``FrameTooLargeError`` past the size bound."""
    body = _encoder.encode(message)
    if len(body) > MAX_FRAME_BYTES:
        raise FrameTooLargeError(f"message of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return HEADER.pack(len(body)) + body


def read_messages(stream: BinaryIO) -> Iterator[Message]:
    """The messages read from ``stream`` (blocking) until it ends."""
    while True:
        header = stream.read(HEADER.size)
        if len(header) < HEADER.size:
            return
        (size,) = HEADER.unpack(header)
        if size > MAX_FRAME_BYTES:
            raise FrameTooLargeError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
        body = stream.read(size)
        if len(body) < size:
            return
        yield _decoder.decode(body)
