"""Handing a call from a worker thread to the event loop without waiting for it.

``anyio.from_thread.run_sync`` blocks the thread until the loop has run the call; when the loop
has stopped (a server shutting down, a finished test), it blocks forever and the interpreter
cannot exit. Releasing a thread slot or starting background work needs no answer, so it is
scheduled on the loop's native token and the thread moves on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio.lowlevel

__all__ = ["call_soon"]


def call_soon(
    token: anyio.lowlevel.EventLoopToken, function: Callable[..., Any], *args: Any
) -> bool:
    """Schedule ``function(*args)`` on the loop of ``token``; ``False`` if that loop is gone."""
    native: Any = token.native_token
    try:
        if isinstance(native, asyncio.AbstractEventLoop):
            native.call_soon_threadsafe(function, *args)
        else:  # trio's TrioToken
            native.run_sync_soon(function, *args)
    except RuntimeError:  # asyncio: "Event loop is closed"; trio: RunFinishedError
        return False
    return True
