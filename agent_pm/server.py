"""Running the app under uvicorn, and stopping it within a bounded window on SIGINT and SIGTERM.

A stop signal starts a graceful window of :data:`GRACEFUL_SHUTDOWN_SECONDS`:

1. the listening sockets close and stream clients hear "going away";
2. requests in flight get up to :data:`DRAIN_SECONDS` to finish on their own (a hook that
   times out answers with its timeout result);
3. hook calls still running are then cancelled through the registry, and reported: each
   handler's sample says "cancelled", the log names the hooks, and their callers get 503;
4. the lifespan stops the registry, and the process exits, even while sync handlers or lifecycle
   methods stay blocked in worker threads: those threads cannot be interrupted, and since they are
   not daemon threads the interpreter would wait for them forever, so the process leaves
   without them (``os._exit`` after flushing its logs).

Should the lifespan itself hang, a watchdog ends the process when the window is over (status 1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from agent_pm.api import close_streams
from agent_pm.protocol import MAX_CLIENT_MESSAGE

__all__ = [
    "DRAIN_SECONDS",
    "GIL_SWITCH_INTERVAL",
    "GRACEFUL_SHUTDOWN_SECONDS",
    "WS_MAX_SIZE",
    "Server",
    "quiet_refused_handshakes",
    "run",
    "tune_interpreter",
]

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_SECONDS = 15.0
DRAIN_SECONDS = 10.0
# What is left after the cancelled calls are answered goes to stopping the plugins.
ANSWER_SECONDS = 2
THREAD_EXIT_SECONDS = 0.5
# The largest WebSocket message a client may send (stream subscriptions, dashboard selections).
# uvicorn refuses a bigger frame from its header, before reading it (close code 1009).
WS_MAX_SIZE = MAX_CLIENT_MESSAGE
# Sync plugins run in worker threads; a thread computing in Python holds the GIL for up to the
# switch interval each time the event loop wants it back. 1 ms instead of 5 ms keeps the loop's
# p99 lag a few ms while a plugin spins (tests/reliability/test_faults.py measures it).
GIL_SWITCH_INTERVAL = 0.001
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# uvicorn reports a handshake the app refused with an HTTP response as an application error.
REFUSED_HANDSHAKE = "ASGI callable returned without completing handshake."


class _RefusedHandshakeFilter(logging.Filter):
    """A refused WebSocket handshake (no key, wrong origin) is normal: INFO, not ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.getMessage() == REFUSED_HANDSHAKE:
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_refused_handshakes() -> None:
    """Log uvicorn's refused-handshake message at INFO (idempotent)."""
    uvicorn_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _RefusedHandshakeFilter) for f in uvicorn_logger.filters):
        uvicorn_logger.addFilter(_RefusedHandshakeFilter())


def _force_exit(window: float) -> None:
    logger.error("graceful shutdown took longer than %g s; exiting now", window)
    logging.shutdown()
    os._exit(1)


class Server(uvicorn.Server):
    """uvicorn's server, stopping within the graceful window as the module docstring says.

    uvicorn's own shutdown closes open WebSockets with 1012 before the app's lifespan hears of
    it, so stream clients hear "going away" (1001) first. ``drain`` bounds the wait for requests
    in flight; with ``watchdog``, the process ends that many seconds after the stop began if it
    is still stopping (``None`` for a server that shares its process, as in tests).

    uvicorn re-raises the signal after its graceful shutdown, so a requested stop would end
    with the signal's status; a finished graceful shutdown is a success (status 0).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        drain: float = DRAIN_SECONDS,
        watchdog: float | None = None,
    ) -> None:
        super().__init__(config)
        self.drain = drain
        self.watchdog = watchdog
        self._stop_at: float | None = None

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

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._start_window()

    def _start_window(self) -> None:
        if self._stop_at is None:
            self._stop_at = time.monotonic()
            if self.watchdog is not None:
                timer = threading.Timer(self.watchdog, _force_exit, (self.watchdog,))
                timer.daemon = True
                timer.start()

    async def shutdown(self, sockets: Any = None) -> None:
        self._start_window()
        assert self._stop_at is not None
        app = _starlette(self.config.loaded_app)
        for server in getattr(self, "servers", ()):
            server.close()
        if app is not None:
            with anyio.move_on_after(min(5.0, self.drain)):
                await close_streams(app)
        with anyio.move_on_after(self._stop_at + self.drain - time.monotonic()):
            # uvicorn offers no event for "requests done"; it polls the same way.
            while self.server_state.tasks and not self.force_exit:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        registry = _registry_of(app)
        if registry is not None:
            cancelled = registry.cancel_calls()
            if cancelled:
                logger.warning(
                    "stopping: cancelled %d hook call(s) still running: %s",
                    len(cancelled),
                    ", ".join(sorted(set(cancelled))),
                )
        self.config.timeout_graceful_shutdown = ANSWER_SECONDS
        await super().shutdown(sockets)


def _starlette(app: Any) -> Starlette | None:
    """The Starlette app under uvicorn's wrappers (each keeps the next in ``.app``)."""
    for _ in range(16):
        if isinstance(app, Starlette) or app is None:
            return app
        app = getattr(app, "app", None)
    return None


def _registry_of(app: Any) -> Any:
    """The registry of the operator app, also when the demo wraps it (``state.app``)."""
    for _ in range(4):
        if app is None:
            return None
        registry = getattr(app.state, "registry", None)
        if registry is not None:
            return registry
        app = getattr(app.state, "app", None)
    return None


def tune_interpreter() -> None:
    """Favour the event loop's latency over sync plugins' throughput."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)


def _leave_blocked_threads() -> None:
    """Exit now if worker threads are still blocked in plugin code: the interpreter would
    wait for them (they are not daemons) however long they take."""
    # Idle pool threads are on their way out once the loop has closed: give them a moment.
    deadline = time.monotonic() + THREAD_EXIT_SECONDS
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    blocked = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    if not blocked:
        return
    logger.warning("exiting with %d worker thread(s) still blocked in plugin code", len(blocked))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    window: float = GRACEFUL_SHUTDOWN_SECONDS,
    drain: float = DRAIN_SECONDS,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM; the app's lifespan stops the registry."""
    tune_interpreter()
    quiet_refused_handshakes()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        ws_max_size=WS_MAX_SIZE,
        timeout_graceful_shutdown=int(window),
    )
    Server(config, drain=min(drain, window), watchdog=window).run()
    _leave_blocked_threads()
