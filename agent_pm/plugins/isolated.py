"""IsolatedPlugin: a plugin that runs in its own worker process, seen through a local stand-in.

The registry handles the stand-in like any plugin: its hook handlers are async callables that
send the call to the worker and wait for the answer, its lifecycle methods start and stop the
worker, its routes forward requests. Timeouts are hard: a call past its timeout gets the worker
killed, and the next call starts a fresh one, after a backoff that grows while workers keep
failing. An ``emit`` the plugin makes while serving a call runs in that call's own task, so it
keeps the caller's context (emit depth, request id).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import msgspec

from agent_pm.errors import (
    AgentPMError,
    NotEncodableError,
    WorkerCrashedError,
    WorkerTimeoutError,
)
from agent_pm.plugins import wire
from agent_pm.plugins.background import Background
from agent_pm.plugins.base import PluginBase
from agent_pm.plugins.dispatch import describe
from agent_pm.plugins.info import IsolationInfo
from agent_pm.plugins.manifest import Limits
from agent_pm.plugins.process import Ended, WorkerProcess

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

__all__ = [
    "WORKER_STARTUP_SECONDS",
    "IsolatedPlugin",
    "RemoteError",
    "isolated_class",
]

MAX_BACKOFF_SECONDS = 30.0
# How long a worker may take to start its interpreter, import the plugin and build it: the
# plugin's own timeouts apply to its calls, not to an interpreter start on a loaded machine.
WORKER_STARTUP_SECONDS = 30.0
_MAX_REMOTE_TYPES = 256
_remote_types: dict[str, type[RemoteError]] = {}

# Records a worker event (stage, message) in the plugin's error ring.
Report = Callable[[str, str], object]


class RemoteError(Exception):
    """An exception raised by the plugin in its worker; its class bears the original's name,
    so errors read the same as they would inline (``RuntimeError: handler exploded``)."""


def remote_error(type_name: str | None, message: str) -> RemoteError:
    name = type_name or "RemoteError"
    cls = _remote_types.get(name)
    if cls is None:
        if len(_remote_types) >= _MAX_REMOTE_TYPES or not name.isidentifier():
            return RemoteError(message)
        cls = _remote_types[name] = type(name, (RemoteError,), {"__module__": __name__})
    return cls(message)


def backoff(failures: int) -> float:
    """Seconds to wait before starting a worker after ``failures`` failed ones in a row."""
    if failures <= 1:
        return 0.0
    return min(0.25 * 2.0 ** (failures - 2), MAX_BACKOFF_SECONDS)


def isolated_class(cls: type[PluginBase]) -> type[IsolatedPlugin]:
    """A stand-in class declaring what ``cls`` declares (name, hooks, secrets, route prefix)."""
    declared = (
        "name",
        "description",
        "hooks",
        "required_secrets",
        "optional_secrets",
        "Config",
        "timeout",
        "route_prefix",
    )
    namespace = {attribute: getattr(cls, attribute) for attribute in declared}
    namespace["__module__"] = __name__
    namespace["__qualname__"] = f"Isolated{cls.__name__}"
    return type(f"Isolated{cls.__name__}", (IsolatedPlugin,), namespace)


class IsolatedPlugin(PluginBase):
    """Stands in for a plugin running in a worker process."""

    def __init__(
        self,
        config: Any,
        *,
        module: str,
        hooks: Sequence[str],
        timeout: float,
        limits: Limits | None,
        environ: Mapping[str, str],
        data_dir: str,
        report: Report,
        background: Background | None = None,
    ) -> None:
        super().__init__(config)
        self.module = module
        self.hook_timeout = timeout
        self.limits = limits or Limits()
        self.restarts = 0
        self.last_exit: str | None = None
        self._environ = environ
        self._data_dir = data_dir
        self._report = report
        self._background = background
        self._worker: WorkerProcess | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._stopped = False
        self._failures = 0
        self._retry_at = 0.0
        self._restarting = False
        self._restarted: anyio.Event | None = None
        self._restart_scope: anyio.CancelScope | None = None
        self._routes: list[wire.RouteSpec] = []
        for hook in hooks:
            setattr(self, hook, self._handler(hook))

    def _handler(self, hook: str) -> Callable[..., Awaitable[Any]]:
        async def handle(**payload: Any) -> Any:
            return await self._call("hook", hook, payload, self.hook_timeout)

        return handle

    # -- lifecycle ---------------------------------------------------------------------

    async def on_enable(self) -> None:
        """Start the worker: it builds the plugin and runs its ``on_enable``."""
        self._token = anyio.lowlevel.current_token()
        self._worker = await self._start()

    async def on_reload(self) -> None:
        await self._call("lifecycle", "on_reload", None, self._lifecycle_timeout)

    async def on_disable(self) -> None:
        """Run the plugin's ``on_disable`` in its worker, then end the worker."""
        self._stopped = True
        if self._restart_scope is not None:
            self._restart_scope.cancel()
        worker = self._worker
        if worker is None:
            return
        try:
            if worker.alive:
                await self._request(
                    worker, "lifecycle", "on_disable", None, self._lifecycle_timeout
                )
        finally:
            # Also for a worker already ending (killed at a timeout): its end must run on this
            # loop, which closes its pipe, before the loop may go away.
            with anyio.CancelScope(shield=True):
                await worker.stop()

    @property
    def _lifecycle_timeout(self) -> float:
        return max(self.hook_timeout, 1.0)

    def status(self) -> IsolationInfo:
        """What the metadata shows about the worker."""
        worker = self._worker
        running = worker is not None and worker.alive
        return IsolationInfo(
            mode="process",
            state="stopped" if self._stopped else "running" if running else "restarting",
            pid=worker.pid if running and worker is not None else None,
            restarts=self.restarts,
            last_exit=self.last_exit,
            memory_mb=self.limits.memory_mb,
            cpu_seconds=self.limits.cpu_seconds,
        )

    # -- the worker ----------------------------------------------------------------------

    async def _start(self) -> WorkerProcess:
        """A new worker with the plugin built and its ``on_enable`` run; stopped on failure."""
        assert self._token is not None
        worker = WorkerProcess.spawn(
            self._environ, self._token, self._orphan_emit, self._ended, self._gone
        )
        try:
            init = wire.Init(
                plugin=self.plugin_name,
                module=self.module,
                config=_plain(self.config),
                secrets=dict(self._secrets),
                missing=list(self._missing),
                sys_path=list(sys.path),
                data_dir=self._data_dir,
                memory_mb=self.limits.memory_mb,
                cpu_seconds=self.limits.cpu_seconds,
            )
            specs = await self._request(worker, "init", "init", init, WORKER_STARTUP_SECONDS)
            self._routes = msgspec.convert(specs, list[wire.RouteSpec])
            await self._request(worker, "lifecycle", "on_enable", None, self._lifecycle_timeout)
        except BaseException:
            worker.kill("start-up failed")
            with anyio.CancelScope(shield=True):  # bounded: SIGKILL follows after a grace
                await worker.ended.wait()
            raise
        return worker

    async def _ready(self, deadline: float) -> WorkerProcess:
        """The running worker; while it restarts, wait for it until ``deadline``."""
        while True:
            worker = self._worker
            if worker is not None and worker.alive:
                return worker
            if self._stopped:
                raise WorkerCrashedError(f"plugin {self.plugin_name!r} is stopped")
            wait = self._retry_at - time.monotonic()
            if wait > deadline - anyio.current_time():
                raise WorkerCrashedError(
                    f"worker restarts in {wait:.1f} s, after: {self.last_exit}"
                )
            if self._restarted is None:
                self._restarted = anyio.Event()
            if not self._restarting:
                self._begin_restart()
            await self._restarted.wait()

    def _begin_restart(self) -> None:
        self._restarting = True
        if self._background is None or not self._background.start(self._restart):
            self._restarting = False

    async def _restart(self) -> None:
        """Start a successor worker after the backoff (in the background: callers waiting for
        it give up at their own timeouts, the start-up goes on)."""
        try:
            worker = None
            with anyio.CancelScope() as self._restart_scope:  # cancelled by on_disable
                await anyio.sleep(max(0.0, self._retry_at - time.monotonic()))
                worker = await self._start()
            if worker is None:
                return
            if self._stopped:  # disabled just as the worker came up
                await worker.stop()
                return
            self._worker = worker
            self.restarts += 1
        except Exception as exc:
            self._failed(f"restart failed: {describe(exc)}")
        finally:
            self._restarting = False
            restarted, self._restarted = self._restarted, None
            if restarted is not None:
                restarted.set()

    def _ended(self, worker: WorkerProcess) -> None:
        """A worker ended (a loop callback): note why."""
        if worker.reason is not None and worker is self._worker:  # not stopped on purpose
            self._failed(worker.reason)

    def _gone(self, worker: WorkerProcess) -> None:
        """After ``_ended``, from the worker's reader thread: start the successor now, so the
        next call finds it ready."""
        if self._background is not None and worker is self._worker and not self._stopped:
            self._background.start(self._restart_after, worker)

    async def _restart_after(self, worker: WorkerProcess) -> None:
        if worker is self._worker and not (self._stopped or self._restarting):
            self._restarting = True
            await self._restart()

    def _failed(self, reason: str) -> None:
        self.last_exit = reason
        self._failures += 1
        self._retry_at = time.monotonic() + backoff(self._failures)
        self._report("worker", f"{reason}; restarting")

    # -- calls ---------------------------------------------------------------------------

    async def _call(self, kind: wire.CallKind, name: str, payload: Any, limit: float) -> Any:
        """Run a call on the worker (started first if needed) within ``limit`` seconds."""
        deadline = anyio.current_time() + limit
        worker = await self._ready(deadline)
        return await self._request(worker, kind, name, payload, limit, deadline)

    async def _request(
        self,
        worker: WorkerProcess,
        kind: wire.CallKind,
        name: str,
        payload: Any,
        limit: float,
        deadline: float | None = None,
    ) -> Any:
        label = f"{kind} {name}" if kind != "init" else "start-up"
        deadline = anyio.current_time() + limit if deadline is None else deadline
        call_id, inbox = worker.open()
        try:
            with anyio.CancelScope(deadline=deadline) as scope:
                try:
                    await worker.send(wire.Call(call_id, kind, name, payload))
                except (TypeError, msgspec.EncodeError, wire.FrameTooLargeError) as exc:
                    raise NotEncodableError(f"{label}: payload cannot be sent: {exc}") from None
                async for message in inbox:
                    if isinstance(message, wire.Emit):
                        await self._serve_emit(worker, message)
                    else:
                        return self._answer(message)
        except anyio.get_cancelled_exc_class():
            # Cancelled at (about) the deadline is dispatch's timeout: the worker is killed.
            if anyio.current_time() >= deadline - limit * 0.05:
                worker.kill(f"{label} ran past its {limit:g} s timeout", timed_out=True)
            else:
                worker.send_nowait(wire.Cancel(call_id))
            raise
        finally:
            worker.close(call_id)
            inbox.close()
        if not scope.cancelled_caught:
            raise WorkerCrashedError(f"{label}: the worker ended without answering")
        reason = f"{label} ran past its {limit:g} s timeout"
        worker.kill(reason, timed_out=True)
        raise WorkerTimeoutError(f"worker killed: {reason}")

    def _answer(self, message: wire.Message | Ended) -> Any:
        if isinstance(message, Ended):
            if message.timed_out:
                raise WorkerTimeoutError(message.reason)
            raise WorkerCrashedError(message.reason)
        assert isinstance(message, wire.Reply)
        self._failures = 0
        if message.error is not None:
            raise remote_error(message.error_type, message.error)
        return message.value

    async def _serve_emit(self, worker: WorkerProcess, emit: wire.Emit) -> None:
        reply: wire.EmitReply
        try:
            results = await self._emit_here(emit)
            reply = wire.EmitReply(emit.id, results)
        except AgentPMError as exc:
            reply = wire.EmitReply(emit.id, error=str(exc))
        try:
            await worker.send(reply)
        except (TypeError, msgspec.EncodeError, wire.FrameTooLargeError) as exc:
            await worker.send(wire.EmitReply(emit.id, error=f"results cannot be sent: {exc}"))

    async def _emit_here(self, emit: wire.Emit) -> list[Any]:
        if self._emitter is None:
            return []
        return await self._emitter.emit(self.plugin_name, emit.hook, emit.payload)

    def _orphan_emit(self, emit: wire.Emit) -> None:
        """An emit made outside any call, or without waiting: run it in the background."""
        worker = self._worker
        try:
            if self._emitter is not None:
                self._emitter.emit_nowait(self.plugin_name, emit.hook, emit.payload)
        except AgentPMError as exc:
            self._report("emit", str(exc))
        if emit.wait and worker is not None:
            error = "emit() outside a hook call is not awaited in a worker; use emit_nowait()"
            worker.send_nowait(wire.EmitReply(emit.id, error=error))

    # -- routes ------------------------------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        """Forwarders for the routes the plugin declared in its worker."""
        from agent_pm.plugins.forwarding import forwarders  # the web layer, only when served

        return forwarders(self, self._routes)

    def prefix(self) -> str:
        return "/" + (type(self).route_prefix or f"/plugins/{self.plugin_name}").strip("/")

    async def serve_http(self, request: wire.HttpRequest) -> wire.HttpResponse:
        """Answer a request to one of the plugin's routes from its worker."""
        value = await self._call("http", request.method, request, self.hook_timeout)
        return msgspec.convert(value, wire.HttpResponse)


def _plain(config: Any) -> dict[str, Any]:
    """The config as plain data for the worker, which validates it again."""
    plain = msgspec.to_builtins(config) if isinstance(config, msgspec.Struct) else dict(config)
    return {key: value for key, value in plain.items() if key != "secrets"}
