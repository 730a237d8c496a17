"""WorkerProcess: the service's end of one isolated plugin's worker process.

The worker runs ``sys.executable -m agent_pm.plugins.worker`` with a scrubbed environment (an
allowlist: no API keys, no plugin secrets). Frames go out through a non-blocking pipe written
from the event loop; a reader thread takes the worker's frames and hands each to the loop, and
sees the worker end however it ends (exit, crash, kill). Every call in flight then gets an
:class:`Ended` message saying why, so no caller waits for an answer that cannot come.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import subprocess  # nosec B404 - runs this package's own worker module, never user input
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from agent_pm.plugins import wire
from agent_pm.plugins.loopcall import call_soon

__all__ = ["ENV_ALLOWLIST", "Ended", "WorkerProcess", "worker_environment"]

logger = logging.getLogger(__name__)

# The only variables a worker inherits; everything else (keys, tokens, other plugins' secrets)
# stays in the service. A plugin's own secrets reach it in the init call.
ENV_ALLOWLIST = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "VIRTUAL_ENV",
)
# Seconds between SIGTERM and SIGKILL, and for a worker to leave after its pipe closed.
KILL_GRACE_SECONDS = 1.0
CALL_BUFFER = 64


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a worker: the allowlisted variables of ``environ`` and nothing else."""
    env = {key: environ[key] for key in ENV_ALLOWLIST if key in environ}
    # One malloc arena per thread would reserve 64 MB of address space each, against RLIMIT_AS.
    env["MALLOC_ARENA_MAX"] = "2"
    return env


@dataclass(frozen=True)
class Ended:
    """The worker ended while a call was in flight on it."""

    reason: str
    timed_out: bool


def exit_reason(status: int) -> str:
    """How a worker that nobody stopped ended, from its exit status."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"worker died of {name}"
    if status == wire.EXIT_LIMIT:
        return "worker stopped at one of its limits"
    return f"worker exited with status {status}"


Inbox = MemoryObjectSendStream[wire.Message | Ended]


class WorkerProcess:
    """A running worker: sends calls, routes its answers to their callers, ends it.

    When the worker ends, ``on_end`` runs on the loop (outside any task), then ``on_gone`` in
    the reader thread, which may hand work to the loop that needs a task.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        token: anyio.lowlevel.EventLoopToken,
        on_emit: Callable[[wire.Emit], None],
        on_end: Callable[[WorkerProcess], None],
        on_gone: Callable[[WorkerProcess], None] = lambda worker: None,
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.reason: str | None = None  # why it ended, when it was not asked to
        self.timed_out = False
        self.ended = anyio.Event()
        self._on_emit = on_emit
        self._on_end = on_end
        self._on_gone = on_gone
        self._stopping = False
        self._kill_timer: threading.Timer | None = None
        self._ids = itertools.count(1)
        self._calls: dict[int, Inbox] = {}
        # Taken without a scheduling point when free: a call's frame goes out at once.
        self._write_lock = anyio.Lock(fast_acquire=True)
        assert process.stdin is not None and process.stdout is not None
        self._out = process.stdin.fileno()
        os.set_blocking(self._out, False)
        reader = threading.Thread(
            target=self._read, args=(process.stdout, token), name=f"worker-{self.pid}", daemon=True
        )
        reader.start()

    @classmethod
    def spawn(
        cls,
        environ: Mapping[str, str],
        token: anyio.lowlevel.EventLoopToken,
        on_emit: Callable[[wire.Emit], None],
        on_end: Callable[[WorkerProcess], None],
        on_gone: Callable[[WorkerProcess], None] = lambda worker: None,
    ) -> WorkerProcess:
        """Start a worker; it imports the runtime at once and then waits for its init call.

        Synchronous (vfork and exec take a millisecond), so a replacement can be started from
        a loop callback the moment its predecessor ends.
        """
        process = subprocess.Popen(  # nosec B603 - fixed command, no shell
            [sys.executable, "-m", "agent_pm.plugins.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=worker_environment(environ),
            close_fds=True,
        )
        return cls(process, token, on_emit, on_end, on_gone)

    @property
    def alive(self) -> bool:
        return not self.ended.is_set() and self.reason is None and not self._stopping

    # -- calls ---------------------------------------------------------------------------

    def open(self) -> tuple[int, MemoryObjectReceiveStream[wire.Message | Ended]]:
        """A new call id and the stream its messages (replies, emits, the end) arrive on."""
        call_id = next(self._ids)
        send, receive = anyio.create_memory_object_stream[wire.Message | Ended](CALL_BUFFER)
        if self.ended.is_set():
            send.send_nowait(Ended(self.reason or "worker stopped", self.timed_out))
            send.close()
        else:
            self._calls[call_id] = send
        return call_id, receive

    def close(self, call_id: int) -> None:
        inbox = self._calls.pop(call_id, None)
        if inbox is not None:
            inbox.close()

    async def send(self, message: wire.Message) -> None:
        """Write one frame; ``TypeError`` (or ``FrameTooLargeError``) if it cannot be encoded."""
        frame = memoryview(wire.encode(message))
        async with self._write_lock:
            while frame:
                try:
                    frame = frame[os.write(self._out, frame) :]
                except BlockingIOError:
                    await anyio.wait_writable(self._out)
                except (BrokenPipeError, ValueError, OSError):
                    return  # the worker is gone; its end reaches every caller

    def send_nowait(self, message: wire.Message) -> None:
        """Write one small frame if the pipe takes it at once (a cancellation, a refusal);
        dropped otherwise, as the call it concerns still ends by its timeout."""
        if self._write_lock.locked():
            return  # never interleave with a frame being written
        with contextlib.suppress(OSError):
            os.write(self._out, wire.encode(message))

    # -- ending ----------------------------------------------------------------------------

    def kill(self, reason: str, *, timed_out: bool = False) -> None:
        """End the worker now: SIGTERM, then SIGKILL after a grace; calls end with ``reason``."""
        if self.ended.is_set():
            return
        if self.reason is None:
            self.reason, self.timed_out = reason, timed_out
        self._signal(signal.SIGTERM)
        self._kill_timer = threading.Timer(KILL_GRACE_SECONDS, self._signal, (signal.SIGKILL,))
        self._kill_timer.daemon = True
        self._kill_timer.start()

    async def stop(self) -> None:
        """Ask the worker to leave (its pipe closes) and wait; kill it if it does not."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # type: ignore[union-attr]
        with anyio.move_on_after(KILL_GRACE_SECONDS):
            await self.ended.wait()
        if not self.ended.is_set():
            self._stopping = False
            self.kill("worker did not stop when asked")
            with anyio.CancelScope(shield=True):
                await self.ended.wait()

    def _signal(self, signum: int) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def _read(self, stdout: IO[bytes], token: anyio.lowlevel.EventLoopToken) -> None:
        try:
            for message in wire.read_messages(stdout):  # type: ignore[arg-type]
                if not call_soon(token, self._deliver, message):
                    break
        except Exception:
            logger.exception("worker %d sent a broken frame; it is ended", self.pid)
            self.process.kill()
        status = self.process.wait()
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        stdout.close()
        if not call_soon(token, self._end, status):
            # The service's loop is gone (nothing writes any more): nothing may outlive it.
            self.process.kill()
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # type: ignore[union-attr]
            return
        self._on_gone(self)

    def _deliver(self, message: wire.Message) -> None:
        if isinstance(message, wire.Fatal):
            self.reason = self.reason or message.reason
            return
        call_id = message.call if isinstance(message, wire.Emit) else getattr(message, "id", None)
        inbox = self._calls.get(call_id) if call_id is not None else None
        if isinstance(message, wire.Emit) and (inbox is None or not message.wait):
            self._on_emit(message)
            return
        if inbox is not None:
            try:
                inbox.send_nowait(message)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                logger.warning("worker %d: call %s is not reading its messages", self.pid, call_id)

    def _end(self, status: int) -> None:
        if not self._stopping and self.reason is None:
            self.reason = exit_reason(status)
        reason = self.reason or "worker stopped"
        for inbox in self._calls.values():
            with contextlib.suppress(
                anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError
            ):
                inbox.send_nowait(Ended(reason, self.timed_out))
            inbox.close()
        self._calls.clear()
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # type: ignore[union-attr]
        self.ended.set()
        self._on_end(self)
