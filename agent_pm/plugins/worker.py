"""The worker process of an isolated plugin: ``python -m agent_pm.plugins.worker``.

It builds one plugin from the ``init`` call (config, secrets and limits sent by the service,
nothing from the environment), then serves hook, lifecycle and route calls concurrently: async
handlers on its own event loop, sync ones in its threads. A thread reads the service's frames,
so the worker notices the service going away (its pipe closes) even while a handler spins, and
exits at once: a worker never outlives its service.
"""

from __future__ import annotations

import contextvars
import inspect
import itertools
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import msgspec
from starlette.routing import Mount, Route, Router

from agent_pm.plugins import wire
from agent_pm.plugins.base import Emitter, PluginBase
from agent_pm.plugins.dispatch import HookResult
from agent_pm.plugins.loader import import_plugin_class, origin, validate_config
from agent_pm.plugins.loopcall import call_soon
from agent_pm.settings import Settings

__all__ = ["main"]

LIFECYCLE = frozenset({"on_enable", "on_disable", "on_reload"})
_current_call: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "agent_pm_worker_call", default=None
)


class Channel:
    """Frames to the service; writable from the loop and from handler threads alike."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, message: wire.Message) -> None:
        frame = wire.encode(message)
        with self._lock:
            view = memoryview(frame)
            while view:
                view = view[os.write(self._fd, view) :]

    def fatal(self, reason: str) -> NoReturn:
        """Tell the service why, and exit now (threads and all)."""
        try:
            self.send(wire.Fatal(reason))
        finally:
            os._exit(wire.EXIT_LIMIT)


class WorkerEmitter(Emitter):
    """``emit`` of the isolated plugin: a round trip to the service's registry."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._ids = itertools.count(1)
        self.waiting: dict[int, tuple[anyio.Event, list[wire.EmitReply]]] = {}

    async def emit(self, source: str, hook: str, payload: dict[str, Any]) -> list[HookResult]:
        emit_id = next(self._ids)
        done, answer = anyio.Event(), list[wire.EmitReply]()
        self.waiting[emit_id] = (done, answer)
        try:
            self._channel.send(wire.Emit(emit_id, _current_call.get(), hook, payload, True))
            await done.wait()
        finally:
            self.waiting.pop(emit_id, None)
        if answer[0].error is not None:
            raise RuntimeError(answer[0].error)
        return answer[0].results

    def emit_nowait(self, source: str, hook: str, payload: dict[str, Any]) -> bool:
        self._channel.send(wire.Emit(next(self._ids), _current_call.get(), hook, payload, False))
        return True

    def answered(self, reply: wire.EmitReply) -> None:
        waiting = self.waiting.get(reply.id)
        if waiting is not None:
            waiting[1].append(reply)
            waiting[0].set()


class CpuWatchdog:
    """Ends the worker when one call has used more than ``limit`` seconds of CPU.

    The process's CPU time is sampled at each call's start; a thread compares it every 20 ms
    (a handler that spins on the loop cannot stop it, as it releases the GIL periodically).
    """

    def __init__(self, channel: Channel, limit: float) -> None:
        self._channel = channel
        self._limit = limit
        self._started: dict[int, tuple[str, float]] = {}
        threading.Thread(target=self._watch, name="cpu-watchdog", daemon=True).start()

    def enter(self, call_id: int, label: str) -> None:
        self._started[call_id] = (label, time.process_time())

    def leave(self, call_id: int) -> None:
        self._started.pop(call_id, None)

    def _watch(self) -> None:
        while True:
            time.sleep(0.02)
            now = time.process_time()
            for label, started in list(self._started.values()):
                if now - started > self._limit:
                    self._channel.fatal(
                        f"CPU limit of {self._limit:g} s per call exceeded by {label}"
                    )


def _route_spec(route: Any) -> wire.RouteSpec | None:
    public = bool(getattr(route, "agent_pm_public", False))
    if isinstance(route, Route):
        methods = sorted(route.methods) if route.methods else None
        return wire.RouteSpec(route.path, methods, False, public)
    if isinstance(route, Mount):
        return wire.RouteSpec(route.path, None, True, public)
    return None  # WebSocket routes cannot be forwarded


class Worker:
    """Serves the calls of one plugin instance."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.emitter = WorkerEmitter(channel)
        self.instance: PluginBase | None = None
        self.router = Router()
        self.memory_mb: int | None = None
        self.watchdog: CpuWatchdog | None = None
        self.scopes: dict[int, anyio.CancelScope] = {}

    async def serve(self, stream: BinaryIO) -> None:
        inbox_send, inbox = anyio.create_memory_object_stream[wire.Message](float("inf"))
        token = anyio.lowlevel.current_token()

        def read() -> None:
            for message in wire.read_messages(stream):
                call_soon(token, inbox_send.send_nowait, message)
            os._exit(0)  # the service closed the pipe, or is gone

        threading.Thread(target=read, name="worker-reader", daemon=True).start()
        async with anyio.create_task_group() as group:
            async for message in inbox:
                self._receive(group, message)

    def _receive(self, group: anyio.abc.TaskGroup, message: wire.Message) -> None:
        if isinstance(message, wire.Call):
            group.start_soon(self._run, message)
        elif isinstance(message, wire.Cancel):
            scope = self.scopes.get(message.id)
            if scope is not None:
                scope.cancel()
        elif isinstance(message, wire.EmitReply):
            self.emitter.answered(message)

    async def _run(self, call: wire.Call) -> None:
        _current_call.set(call.id)
        label = f"{call.kind} {call.name}"
        if self.watchdog is not None:
            self.watchdog.enter(call.id, label)
        reply = wire.Reply(call.id, error="cancelled", error_type="CancelledError")
        try:
            with anyio.CancelScope() as self.scopes[call.id]:
                reply = wire.Reply(call.id, await self._perform(call))
        except MemoryError:
            self.channel.fatal(f"memory limit of {self.memory_mb} MB reached in {label}")
        except Exception as exc:
            where = origin(exc) if call.kind != "hook" else None
            message = f"{exc} (at {where})" if where else str(exc)
            reply = wire.Reply(call.id, error=message, error_type=type(exc).__name__)
        finally:
            self.scopes.pop(call.id, None)
            if self.watchdog is not None:
                self.watchdog.leave(call.id)
        try:
            self.channel.send(reply)
        except (TypeError, wire.FrameTooLargeError) as exc:
            error = f"the result of {label} cannot be sent: {exc}"
            self.channel.send(wire.Reply(call.id, error=error, error_type="ResultNotEncodable"))

    async def _perform(self, call: wire.Call) -> Any:
        if call.kind == "init":
            return self._init(msgspec.convert(call.payload, wire.Init))
        if call.kind == "http":
            return await self._http(msgspec.convert(call.payload, wire.HttpRequest))
        assert self.instance is not None
        if call.kind == "lifecycle" and call.name not in LIFECYCLE:
            raise ValueError(f"no lifecycle method {call.name!r}")
        method = getattr(self.instance, call.name)
        return await _invoke(method, call.payload or {})

    def _init(self, init: wire.Init) -> list[wire.RouteSpec]:
        if init.memory_mb is not None:
            size = init.memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (size, size))
            self.memory_mb = init.memory_mb
        if init.cpu_seconds is not None:
            self.watchdog = CpuWatchdog(self.channel, init.cpu_seconds)
        sys.path[:] = init.sys_path
        cls = import_plugin_class(init.module)
        settings = Settings(data_dir=Path(init.data_dir))  # where its file paths are confined
        instance = cls(validate_config(cls, init.config, settings))
        instance.bind(init.plugin, init.secrets, init.missing, self.emitter)
        self.instance = instance
        routes = list(instance.routes())
        self.router = Router(routes)
        return [spec for spec in map(_route_spec, routes) if spec is not None]

    async def _http(self, request: wire.HttpRequest) -> wire.HttpResponse:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": request.path,
            "raw_path": request.path.encode(),
            "root_path": "",
            "query_string": request.query_string,
            "headers": request.headers,
            "client": None,
            "server": None,
            "state": dict(request.state),
        }
        body_sent = False
        response = wire.HttpResponse(500, [], b"")

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if body_sent:
                await anyio.sleep_forever()
            body_sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                response.status = message["status"]
                response.headers = [tuple(pair) for pair in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                response.body += message.get("body", b"")

        await self.router(scope, receive, send)
        return response


async def _invoke(method: Callable[..., Any], payload: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(method):
        return await method(**payload)
    return await anyio.to_thread.run_sync(partial(method, **payload), abandon_on_cancel=True)


def main() -> None:
    """Serve the service on stdin/stdout; the plugin's own prints go to stderr."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service decides when its workers stop
    sys.setswitchinterval(0.001)  # so the reader thread runs while a handler spins
    out = os.dup(1)
    os.dup2(2, 1)
    stream = os.fdopen(0, "rb")
    anyio.run(Worker(Channel(out)).serve, stream)


if __name__ == "__main__":
    main()
