"""Hook dispatch: run one hook on many plugins concurrently, each under its timeout.

Async handlers run as tasks in the event loop, sync handlers in worker threads behind a
per-plugin capacity limiter, so a plugin that blocks forever only ever uses its own slots. Every
invocation becomes one :class:`HookResult` for the caller and one telemetry sample.

On asyncio the fan-out uses the loop's tasks directly with one timer per distinct timeout: an
anyio task group plus a cancel scope per plugin costs about six times a bare ``asyncio.gather``,
which is too much on the hot path (``benchmarks/dispatch.py`` measures it). Other backends
(trio) take the portable anyio path; both produce identical results.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import msgspec

from agent_pm.plugins.loopcall import call_soon
from agent_pm.plugins.telemetry import Status

__all__ = ["Dispatcher", "HookResult", "Target"]


class HookResult(msgspec.Struct, frozen=True):
    """What one plugin's handler did with one hook call."""

    plugin: str
    hook: str
    status: Status
    value: Any = None
    error: str | None = None
    duration_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Target:
    """A prepared call of one plugin's handler for one hook."""

    plugin: str
    handler: Callable[..., Any]
    is_async: bool
    timeout: float
    limiter: anyio.CapacityLimiter
    skip_reason: str | None = None

    def start(self, payload: dict[str, Any]) -> Any:
        """The awaitable that runs the handler (calling an async handler can raise TypeError)."""
        if self.is_async:
            return self.handler(**payload)
        return run_in_thread(partial(self.handler, **payload), self.limiter)


async def run_in_thread(call: Callable[[], Any], limiter: anyio.CapacityLimiter) -> Any:
    """Run ``call`` in a worker thread holding one of ``limiter``'s slots until it *returns*.

    anyio frees a limiter slot as soon as the waiting task is cancelled, even though the thread
    goes on running; a handler that blocks forever would then take a new thread on every call.
    Here the slot stays taken until the thread is really done, so such a plugin exhausts only
    its own slots and the calls after that time out waiting for one.
    """
    slot = object()
    await limiter.acquire_on_behalf_of(slot)
    token = anyio.lowlevel.current_token()
    state = {"phase": "queued"}
    guard = threading.Lock()

    def release() -> None:
        # Never wait for the loop here: it may have stopped, and the thread must still end.
        call_soon(token, limiter.release_on_behalf_of, slot)

    def work() -> Any:
        with guard:
            if state["phase"] == "abandoned":
                return None
            state["phase"] = "running"
        try:
            return call()
        finally:
            release()

    try:
        return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    except BaseException:
        with guard:
            never_ran = state["phase"] == "queued"
            state["phase"] = "abandoned"
        if never_ran:
            limiter.release_on_behalf_of(slot)
        raise


# Records one outcome and returns the error text as it may be shown (secrets redacted).
Recorder = Callable[[Target, str, Status, float, str | None], str | None]


def describe(exc: BaseException) -> str:
    """A one-line description of an exception: its type and message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Dispatcher:
    """Fans a hook out to targets and reports every outcome to ``record``."""

    def __init__(self, record: Recorder) -> None:
        self._record = record

    def _result(
        self,
        target: Target,
        hook: str,
        status: Status,
        duration_ms: float,
        value: Any = None,
        error: str | None = None,
    ) -> HookResult:
        if status == "success" and duration_ms > target.timeout * 1000:
            # Only a handler that blocked the event loop can finish past its deadline unnoticed.
            status, value = "timeout", None
            error = f"handler ran {duration_ms:.0f} ms, past its {target.timeout:g} s timeout"
        error = self._record(target, hook, status, duration_ms, error)
        return HookResult(target.plugin, hook, status, value, error, duration_ms)

    def _timeout(self, target: Target, hook: str, duration_ms: float) -> HookResult:
        return self._result(
            target, hook, "timeout", duration_ms, error=f"timed out after {target.timeout:g} s"
        )

    async def fire(
        self, hook: str, payload: dict[str, Any], targets: Sequence[Target]
    ) -> list[HookResult]:
        """Run ``hook`` on every target concurrently; one result per target, in target order."""
        if not targets:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return await self._fire_anyio(hook, payload, targets)
        return await self._fire_asyncio(hook, payload, targets)

    def _skip(self, target: Target, hook: str) -> HookResult:
        return self._result(target, hook, "skipped", 0.0, error=target.skip_reason)

    async def _fire_asyncio(
        self, hook: str, payload: dict[str, Any], targets: Sequence[Target]
    ) -> list[HookResult]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        deadline_base = loop.time()
        results: list[HookResult | None] = [None] * len(targets)
        expired: set[asyncio.Task[Any]] = set()
        groups: dict[float, list[asyncio.Task[Any]]] = {}
        tasks: list[asyncio.Task[Any]] = []
        all_done = loop.create_future()
        pending = len(targets)

        def finish(index: int, target: Target, task: asyncio.Task[Any]) -> None:
            nonlocal pending
            elapsed = (time.perf_counter() - started) * 1000
            results[index] = self._outcome(target, hook, task, task in expired, elapsed)
            pending -= 1
            if not pending and not all_done.done():
                all_done.set_result(None)

        for index, target in enumerate(targets):
            if target.skip_reason is not None:
                results[index] = self._skip(target, hook)
                pending -= 1
                continue
            try:
                task = loop.create_task(target.start(payload))
            except Exception as exc:
                results[index] = self._result(target, hook, "error", 0.0, error=describe(exc))
                pending -= 1
                continue
            task.add_done_callback(partial(finish, index, target))
            tasks.append(task)
            groups.setdefault(target.timeout, []).append(task)

        def expire(group: list[asyncio.Task[Any]]) -> None:
            for task in group:
                if not task.done():
                    expired.add(task)
                    task.cancel()

        timers = [loop.call_at(deadline_base + t, expire, group) for t, group in groups.items()]
        try:
            if pending:
                await all_done
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            # Shielded: anyio re-delivers cancellation, but the handlers must be reaped first.
            with anyio.CancelScope(shield=True):
                await asyncio.wait(tasks)
            raise
        finally:
            for timer in timers:
                timer.cancel()
        return results  # type: ignore[return-value]

    def _outcome(
        self, target: Target, hook: str, task: asyncio.Task[Any], timed_out: bool, elapsed: float
    ) -> HookResult:
        if task.cancelled():
            if timed_out:
                return self._timeout(target, hook, elapsed)
            return self._result(target, hook, "error", elapsed, error="cancelled")
        exc = task.exception()
        if exc is not None:
            return self._result(target, hook, "error", elapsed, error=describe(exc))
        return self._result(target, hook, "success", elapsed, value=task.result())

    async def _fire_anyio(
        self, hook: str, payload: dict[str, Any], targets: Sequence[Target]
    ) -> list[HookResult]:
        results: list[HookResult | None] = [None] * len(targets)
        async with anyio.create_task_group() as group:
            for index, target in enumerate(targets):
                if target.skip_reason is not None:
                    results[index] = self._skip(target, hook)
                else:
                    group.start_soon(self._run_one, hook, payload, target, results, index)
        return results  # type: ignore[return-value]

    async def _run_one(
        self,
        hook: str,
        payload: dict[str, Any],
        target: Target,
        results: list[HookResult | None],
        index: int,
    ) -> None:
        started = time.perf_counter()
        status: Status = "success"
        value = error = None
        with anyio.move_on_after(target.timeout) as scope:
            try:
                value = await target.start(payload)
            except anyio.get_cancelled_exc_class():
                if not scope.cancel_called:
                    elapsed = (time.perf_counter() - started) * 1000
                    self._result(target, hook, "error", elapsed, error="cancelled")
                raise
            except Exception as exc:
                status, error = "error", describe(exc)
        elapsed = (time.perf_counter() - started) * 1000
        if scope.cancelled_caught:
            results[index] = self._timeout(target, hook, elapsed)
        else:
            results[index] = self._result(target, hook, status, elapsed, value, error)
