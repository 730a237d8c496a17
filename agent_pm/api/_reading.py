"""Reading requests: bounded bodies, msgspec decoding, ``If-Match`` and query integers.

Every failure is an ``HTTPException`` with the status the API promises: 400 for malformed input,
413 as soon as a body grows past the limit (so memory stays bounded however large it claims to be).
"""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request

__all__ = [
    "MAX_BODY_BYTES",
    "decode",
    "decode_reason",
    "expected_revision",
    "natural",
    "query_int",
    "read_body",
]

MAX_BODY_BYTES = 1024 * 1024
# Longer digit strings are refused before ``int`` sees them: past 4,300 digits it raises, and
# no revision, limit or length needs more than 18.
MAX_DIGITS = 18
T = TypeVar("T")


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused with 413 as soon as it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        length = natural(declared)
        if length is None:
            raise HTTPException(400, "invalid Content-Length header")
        if length > limit:
            raise HTTPException(413, f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def decode(request: Request, kind: type[T]) -> T:
    """The body decoded into ``kind``; 400 with msgspec's reason when it does not fit."""
    body = await read_body(request)
    if not body.strip():
        raise HTTPException(400, "a JSON request body is required")
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"malformed body: {decode_reason(exc)}") from None


def decode_reason(exc: Exception) -> str:
    """What was wrong with a body, without quoting the body's bytes back."""
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid UTF-8 at byte {exc.start}"
    return str(exc)


def expected_revision(request: Request) -> int | None:
    """The revision of ``If-Match`` (a number, quoted or not, or a listing's
    ``"<revision>.<digest>"`` ETag); ``None`` without the header."""
    raw = request.headers.get("if-match")
    if raw is None or raw.strip() == "*":
        return None
    revision = natural(raw.strip().removeprefix("W/").strip('"').partition(".")[0])
    if revision is None:
        raise HTTPException(400, "If-Match must be a registry revision number")
    return revision


def query_int(request: Request, key: str) -> int | None:
    """Query parameter ``key`` as a non-negative integer; ``None`` when absent."""
    raw = request.query_params.get(key)
    if raw is None:
        return None
    value = natural(raw)
    if value is None:
        raise HTTPException(400, f"{key} must be a non-negative integer")
    return value


def natural(text: str) -> int | None:
    """``text`` as a non-negative integer of at most :data:`MAX_DIGITS` ASCII digits, else
    ``None`` (``"²"`` is a digit to ``str.isdigit``)."""
    if len(text) > MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)
