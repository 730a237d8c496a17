"""Hook dispatch: run one hook on many plugins concurrently, each under its timeout.

Async handlers run in the event loop, sync handlers in worker threads behind a per-plugin
capacity limiter, so a plugin that blocks forever only ever uses its own slots. Every invocation
becomes one :class:`HookResult` for the caller and one telemetry sample.

On asyncio each handler starts eagerly (:mod:`agent_pm.plugins.eager`): its first step runs at
once, in a task of its own, so a handler that returns without suspending is never scheduled, and
only those that suspend are waited for, with one timer per distinct timeout. An anyio task group
plus a cancel scope per plugin costs about six times a bare ``asyncio.gather``, which is too much
on the hot path (``benchmarks/dispatch.py`` measures it). Trio has no eager tasks (a trio task's
first step runs only when the scheduler gets to it), so it takes the portable anyio path with a
task per handler; both backends produce identical results.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from contextvars import Context, copy_context
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import msgspec

from agent_pm.plugins import eager
from agent_pm.plugins.context import deadline
from agent_pm.plugins.loopblock import TimedCoroutine
from agent_pm.plugins.loopcall import call_soon
from agent_pm.plugins.redaction import NO_SECRETS, Redactor
from agent_pm.plugins.telemetry import Status
from agent_pm.plugins.tracing import Tracing

__all__ = ["THREAD_SLOTS_PER_PLUGIN", "Dispatcher", "HookResult", "Target", "stuck_threads"]

# Worker threads one plugin's sync handlers may occupy at once; a plugin that blocks forever
# exhausts only these.
THREAD_SLOTS_PER_PLUGIN = 4


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
    # Masks the secrets of the instance this target calls, in its errors and results.
    redactor: Redactor = NO_SECRETS
    # What a refused call is recorded as: ``skipped`` (missing secrets) or ``quarantined``.
    skip_status: Status = "skipped"
    # Records how long each step of an async handler holds the event loop (loop-block
    # attribution); ``None`` when that is off or the plugin runs in its own process.
    steps: eager.StepRecorder | None = None

    def start(self, payload: dict[str, Any]) -> Coroutine[Any, Any, Any]:
        """The coroutine that runs the handler (calling an async handler can raise TypeError)."""
        if self.is_async:
            return self.handler(**payload)  # type: ignore[no-any-return]
        return run_in_thread(partial(self.handler, **payload), self.limiter)


class Running(NamedTuple):
    """A handler that suspended in its first step: where its result goes, and its task."""

    slot: int
    target: Target
    task: asyncio.Task[Any]
    limit: float
    span: Any


class _Slot:
    """One sync call's hold on its plugin's thread slots: ``queued``, ``running``, or
    ``abandoned`` once its caller stopped waiting (a timeout, a deadline, a cancellation)."""

    __slots__ = ("phase",)

    def __init__(self) -> None:
        self.phase = "queued"


async def run_in_thread(call: Callable[[], Any], limiter: anyio.CapacityLimiter) -> Any:
    """Run ``call`` in a worker thread holding one of ``limiter``'s slots until it *returns*.

    anyio frees a limiter slot as soon as the waiting task is cancelled, even though the thread
    goes on running; a handler that blocks forever would then take a new thread on every call.
    Here the slot stays taken until the thread is really done, so such a plugin exhausts only
    its own slots and the calls after that time out waiting for one.
    """
    slot = _Slot()
    await limiter.acquire_on_behalf_of(slot)
    token = anyio.lowlevel.current_token()
    guard = threading.Lock()

    def release() -> None:
        # Never wait for the loop here: it may have stopped, and the thread must still end.
        call_soon(token, limiter.release_on_behalf_of, slot)

    def work() -> Any:
        with guard:
            if slot.phase == "abandoned":
                return None
            slot.phase = "running"
        try:
            return call()
        finally:
            release()

    try:
        return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    except BaseException:
        with guard:
            never_ran = slot.phase == "queued"
            slot.phase = "abandoned"
        if never_ran:
            limiter.release_on_behalf_of(slot)
        raise


def stuck_threads(limiter: anyio.CapacityLimiter) -> int:
    """How many of ``limiter``'s slots are held by calls still running in their threads after
    their callers stopped waiting: threads that may never return."""
    return sum(
        1
        for slot in limiter.statistics().borrowers
        # An abandoned slot that never ran was released at once: one still held ran.
        if isinstance(slot, _Slot) and slot.phase == "abandoned"
    )


# Records one outcome and returns the error text as it may be shown (secrets redacted).
Recorder = Callable[[Target, str, Status, float, str | None], str | None]


def describe(exc: BaseException) -> str:
    """A one-line description of an exception: its type and message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Dispatcher:
    """Fans a hook out to targets and reports every outcome to ``record``.

    A call may come with a ``budget``, the seconds its caller has left: every handler's timeout
    is capped at it, and a handler cut at that cap is recorded as ``deadline``, not as its own
    ``timeout``. Each handler runs with :data:`~agent_pm.plugins.context.deadline` set to when
    it must end, so it can read its remaining time and emit hooks within it.
    """

    def __init__(self, record: Recorder, tracing: Tracing | None = None) -> None:
        self._record = record
        self._tracing = tracing

    def _result(
        self,
        target: Target,
        hook: str,
        status: Status,
        duration_ms: float,
        value: Any = None,
        error: str | None = None,
        span: Any = None,
    ) -> HookResult:
        if status == "success" and duration_ms > target.timeout * 1000:
            # Only a handler that blocked the event loop can finish past its deadline unnoticed.
            status, value = "timeout", None
            error = f"handler ran {duration_ms:.0f} ms, past its {target.timeout:g} s timeout"
        error = self._record(target, hook, status, duration_ms, error)
        if value is not None and target.redactor:
            value = target.redactor.value(value)
        if span is not None:
            assert self._tracing is not None
            self._tracing.end(span, status, duration_ms, error)
        return HookResult(target.plugin, hook, status, value, error, duration_ms)

    def _timeout(
        self, target: Target, hook: str, duration_ms: float, limit: float, span: Any = None
    ) -> HookResult:
        """The result of a handler cut at ``limit``: its own timeout, or the caller's budget."""
        if limit < target.timeout:
            error = f"cut at the caller's deadline after {limit:g} s"
            error += f" (its own timeout is {target.timeout:g} s)"
            return self._result(target, hook, "deadline", duration_ms, error=error, span=span)
        error = f"timed out after {target.timeout:g} s"
        return self._result(target, hook, "timeout", duration_ms, error=error, span=span)

    async def fire(
        self,
        hook: str,
        payload: dict[str, Any],
        targets: Sequence[Target],
        budget: float | None = None,
    ) -> list[HookResult]:
        """Run ``hook`` on every target concurrently; one result per target, in target order."""
        if not targets:
            return []
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return await self._fire_anyio(hook, payload, targets, budget)
        return await self._fire_asyncio(loop, hook, payload, targets, budget)

    def _refuse(self, target: Target, hook: str) -> HookResult:
        """The result of a call refused before it starts (``target.skip_reason`` is set)."""
        status, reason = target.skip_status, target.skip_reason
        span = (
            None
            if self._tracing is None
            else self._tracing.start(target.plugin, hook, target.timeout)
        )
        return self._result(target, hook, status, 0.0, error=reason, span=span)

    def _span(self, target: Target, hook: str, context: Context | None) -> Any:
        """The span of a handler's call, active in its ``context`` (``None`` without tracing)."""
        if self._tracing is None:
            return None
        span = self._tracing.start(target.plugin, hook, target.timeout)
        if span is not None:
            self._tracing.activate(span, context)
        return span

    async def _fire_asyncio(
        self,
        loop: asyncio.AbstractEventLoop,
        hook: str,
        payload: dict[str, Any],
        targets: Sequence[Target],
        budget: float | None,
    ) -> list[HookResult]:
        """Start every handler eagerly; only those that suspend are waited for, under timers."""
        # Taken now, before the wait below, which can be long on a busy loop.
        caller_deadline = _caller_deadline(loop.time(), budget)
        # A scheduling and cancellation point first, as every fire on the anyio path is: a
        # caller already cancelled runs no handler, and a loop of fires never starves the
        # loop even when every handler returns at once.
        await asyncio.sleep(0)
        began, began_counter, began_clock = loop.time(), time.perf_counter(), time.monotonic()
        caller = asyncio.current_task(loop)
        results: list[HookResult | None] = [None] * len(targets)
        running: list[Running] = []
        # Each handler's context is a copy of the caller's taken while ``deadline`` holds the
        # handler's end: set once per distinct end, and restored before anything can suspend.
        restore, end = None, math.nan
        traced = self._tracing is not None and self._tracing.recording()
        try:
            for index, target in enumerate(targets):
                if target.skip_reason is not None:
                    results[index] = self._refuse(target, hook)
                    continue
                limit = _limit(target, budget)
                if began_clock + limit != end:
                    end = began_clock + limit
                    token = deadline.set(end)
                    restore = restore or token
                context = copy_context()
                span = self._span(target, hook, context) if traced else None
                started = time.perf_counter()
                try:
                    coro = target.start(payload)
                    task = eager.start(loop, coro, context, target.plugin, caller, target.steps)
                except Exception as exc:
                    error = describe(exc)
                    result = self._result(target, hook, "error", 0.0, error=error, span=span)
                    results[index] = result
                    continue
                if isinstance(task, eager.Finished):
                    elapsed = (time.perf_counter() - started) * 1000
                    results[index] = self._finished(target, hook, task, elapsed, span)
                else:
                    running.append(Running(index, target, task, limit, span))
        finally:
            if restore is not None:
                deadline.reset(restore)
        if running:
            await self._wait(loop, began, began_counter, hook, running, results, caller_deadline)
        return results  # type: ignore[return-value]

    async def _wait(
        self,
        loop: asyncio.AbstractEventLoop,
        began: float,
        began_counter: float,
        hook: str,
        running: list[Running],
        results: list[HookResult | None],
        caller_deadline: float | None,
    ) -> None:
        """Wait for the suspended handlers, cancelling each group at its timeout.

        Timeouts and durations count from the start of the fan-out (``began`` on the loop's
        clock, ``began_counter`` on ``perf_counter``), so one timer serves each timeout.
        """
        expired: set[asyncio.Task[Any]] = set()
        groups: dict[float, list[asyncio.Task[Any]]] = {}
        all_done = loop.create_future()
        pending = len(running)

        def finish(call: Running, task: asyncio.Task[Any]) -> None:
            nonlocal pending
            elapsed = (time.perf_counter() - began_counter) * 1000
            results[call.slot] = self._outcome(call, hook, task in expired, elapsed)
            pending -= 1
            if not pending and not all_done.done():
                all_done.set_result(None)

        def expire(group: list[asyncio.Task[Any]]) -> None:
            for task in group:
                if not task.done():
                    expired.add(task)
                    task.cancel()

        for call in running:
            call.task.add_done_callback(partial(finish, call))
            groups.setdefault(call.limit, []).append(call.task)
        timers = [loop.call_at(began + t, expire, group) for t, group in groups.items()]
        tasks = [call.task for call in running]
        try:
            await all_done
        except asyncio.CancelledError:
            # Past the caller's budget this is its deadline (the timer and the caller's cancel
            # scope fire at the same moment); before it, the caller gave up.
            at_deadline = caller_deadline is not None and loop.time() >= caller_deadline
            for task in tasks:
                if at_deadline and not task.done():
                    expired.add(task)
                task.cancel()
            # Shielded: anyio re-delivers cancellation, but the handlers must be reaped first.
            with anyio.CancelScope(shield=True):
                await asyncio.wait(tasks)
            raise
        finally:
            for timer in timers:
                timer.cancel()

    def _outcome(self, call: Running, hook: str, timed_out: bool, elapsed: float) -> HookResult:
        target, task, span = call.target, call.task, call.span
        if task.cancelled():
            if timed_out:
                return self._timeout(target, hook, elapsed, call.limit, span)
            return self._result(target, hook, "error", elapsed, error="cancelled", span=span)
        exc = task.exception()
        if isinstance(exc, TimeoutError):  # an isolated plugin's worker killed at a timeout
            return self._result(target, hook, "timeout", elapsed, error=str(exc), span=span)
        if exc is not None:
            return self._result(target, hook, "error", elapsed, error=describe(exc), span=span)
        return self._result(target, hook, "success", elapsed, value=task.result(), span=span)

    def _finished(
        self, target: Target, hook: str, finished: eager.Finished, elapsed: float, span: Any
    ) -> HookResult:
        error = finished.error
        if error is None:
            return self._result(target, hook, "success", elapsed, finished.value, None, span)
        text = "cancelled" if isinstance(error, asyncio.CancelledError) else describe(error)
        return self._result(target, hook, "error", elapsed, error=text, span=span)

    async def _fire_anyio(
        self, hook: str, payload: dict[str, Any], targets: Sequence[Target], budget: float | None
    ) -> list[HookResult]:
        caller_deadline = _caller_deadline(anyio.current_time(), budget)
        await anyio.lowlevel.checkpoint()
        results: list[HookResult | None] = [None] * len(targets)
        async with anyio.create_task_group() as group:
            for index, target in enumerate(targets):
                if target.skip_reason is not None:
                    results[index] = self._refuse(target, hook)
                else:
                    start = partial(self._run_one, hook, payload, target, results, index)
                    group.start_soon(start, budget, caller_deadline)
        return results  # type: ignore[return-value]

    async def _run_one(
        self,
        hook: str,
        payload: dict[str, Any],
        target: Target,
        results: list[HookResult | None],
        index: int,
        budget: float | None,
        caller_deadline: float | None,
    ) -> None:
        limit = _limit(target, budget)
        deadline.set(time.monotonic() + limit)
        span = self._span(target, hook, None)
        started = time.perf_counter()
        status: Status = "success"
        value = error = None
        try:
            with anyio.move_on_after(limit) as scope:
                try:
                    coro = target.start(payload)
                    value = await (
                        coro if target.steps is None else TimedCoroutine(coro, target.steps)
                    )
                except TimeoutError as exc:  # an isolated plugin's worker killed at a timeout
                    status, error = "timeout", str(exc)
                except Exception as exc:
                    status, error = "error", describe(exc)
        except anyio.get_cancelled_exc_class():
            # The caller's cancellation, or its deadline (trio lets the outermost of several
            # cancelled scopes catch, so the handler's own scope does not at that moment).
            elapsed = (time.perf_counter() - started) * 1000
            if caller_deadline is not None and anyio.current_time() >= caller_deadline:
                self._timeout(target, hook, elapsed, limit, span)
            else:
                self._result(target, hook, "error", elapsed, error="cancelled", span=span)
            raise
        elapsed = (time.perf_counter() - started) * 1000
        if scope.cancelled_caught:
            results[index] = self._timeout(target, hook, elapsed, limit, span)
        else:
            results[index] = self._result(target, hook, status, elapsed, value, error, span)


def _caller_deadline(now: float, budget: float | None) -> float | None:
    """When the caller's time runs out, on the loop's clock: its cancel scopes' own deadline
    when that binds (exact, however long ago the budget was measured), else ``now + budget``."""
    if budget is None:
        return None
    scopes = anyio.current_effective_deadline()  # -inf once cancelled: then no deadline known
    return min(now + budget, scopes) if scopes > -math.inf else now + budget


def _limit(target: Target, budget: float | None) -> float:
    """The target's timeout, capped at the caller's budget."""
    return target.timeout if budget is None or budget >= target.timeout else budget
