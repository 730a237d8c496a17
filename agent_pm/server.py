"""Running the app under uvicorn, shutting down gracefully on SIGINT and SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from agent_pm.api import stream

__all__ = ["GIL_SWITCH_INTERVAL", "GRACEFUL_SHUTDOWN_SECONDS", "run", "tune_interpreter"]

GRACEFUL_SHUTDOWN_SECONDS = 15
# Sync plugins run in worker threads; a thread computing in Python holds the GIL for up to the
# switch interval each time the event loop wants it back. 1 ms instead of 5 ms keeps the loop's
# p99 lag a few ms while a plugin spins (tests/reliability/test_faults.py measures it).
GIL_SWITCH_INTERVAL = 0.001
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Server(stream.Server):
    """uvicorn's server, except that a handled stop signal ends the process cleanly.

    uvicorn re-raises the signal after its graceful shutdown, so a requested stop would end
    with the signal's status; a finished graceful shutdown is a success (status 0).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def tune_interpreter() -> None:
    """Favour the event loop's latency over sync plugins' throughput."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)


def run(app: ASGIApp, host: str, port: int) -> None:
    """Serve ``app`` until SIGINT or SIGTERM; the app's lifespan stops the registry."""
    tune_interpreter()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    _Server(config).run()
