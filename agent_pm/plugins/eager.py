"""Eager tasks: run a coroutine's first step at once, inside the task that will own it.

A hook handler that returns without suspending then costs no scheduling at all, and only one
that suspends is left pending on the loop as a task. The first step runs with that task as the
current task and in the task's own context, exactly as its later steps do, so cancel scopes,
locks and context variables set in the first step belong to the handler, not to the caller.
Python 3.12 offers this as ``asyncio.Task(..., eager_start=True)``; on 3.11 the same algorithm
runs on asyncio's pure-Python task class.

Given a ``steps`` recorder (loop-block attribution), every step the task runs is timed into it:
on 3.11 by the task itself, so a handler that ends in its first step costs two clock reads and
one call; on 3.12 through a :class:`~agent_pm.plugins.loopblock.TimedCoroutine`.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any, NamedTuple

from agent_pm.plugins.loopblock import TimedCoroutine

__all__ = ["Finished", "StepRecorder", "start"]

# Takes the milliseconds one step of a handler held the event loop.
StepRecorder = Callable[[float], None]
_clock = time.perf_counter


class Finished(NamedTuple):
    """A coroutine that ended in its first step: its value, or the exception it raised."""

    value: Any
    error: BaseException | None


if sys.version_info < (3, 12):
    from asyncio import futures, tasks

    class _EagerTask(tasks._PyTask):  # type: ignore[name-defined,misc]
        """asyncio's pure-Python task, built without scheduling a first step."""

        def __init__(
            self,
            coro: Coroutine[Any, Any, Any],
            loop: asyncio.AbstractEventLoop,
            context: Context,
            name: str,
            steps: StepRecorder | None,
        ) -> None:
            # What Future.__init__ and Task.__init__ set, minus the scheduling; a task that
            # finishes in its first step is dropped while formally pending, so it must not
            # complain about that when collected.
            self._loop = loop
            self._callbacks: list[Any] = []
            self._name = name
            self._num_cancels_requested = 0
            self._must_cancel = False
            self._fut_waiter = None
            self._coro = coro
            self._context = context
            self._log_destroy_pending = False
            self._steps = steps

        def __del__(self) -> None:
            # Most of these tasks end in their first step and never become futures in use.
            if self._log_destroy_pending:
                super().__del__()

        def _Task__step(self, exc: BaseException | None = None) -> None:
            """One step after the first, timed when there is a recorder."""
            steps = self._steps
            if steps is None:
                super()._Task__step(exc)
                return
            started = _clock()
            try:
                super()._Task__step(exc)
            finally:
                steps((_clock() - started) * 1000)

        def adopt(self, result: Any) -> None:
            """Go on as a scheduled task after the first step yielded ``result``.

            This is the tail of ``Task.__step`` for what a coroutine yields, with the same
            errors for a bad yield.
            """
            self._log_destroy_pending = True
            tasks._register_task(self)
            loop, context = self._loop, self._context
            if self._must_cancel:  # cancelled during its first step: cancel it at its await
                loop.call_soon(self._Task__step, context=context)
            elif getattr(result, "_asyncio_future_blocking", None) and result is not self:
                if futures._get_loop(result) is not loop:  # type: ignore[attr-defined]
                    error = RuntimeError(f"Task {self!r} got Future {result!r} of another loop")
                    loop.call_soon(self._Task__step, error, context=context)
                    return
                result._asyncio_future_blocking = False
                result.add_done_callback(self._Task__wakeup, context=context)
                self._fut_waiter = result
            elif result is None:  # a bare yield gives up one loop iteration
                loop.call_soon(self._Task__step, context=context)
            else:
                error = RuntimeError(f"Task got bad yield: {result!r}")
                loop.call_soon(self._Task__step, error, context=context)


def start(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    context: Context,
    name: str,
    caller: asyncio.Task[Any] | None,
    steps: StepRecorder | None = None,
) -> asyncio.Task[Any] | Finished:
    """Run ``coro``'s first step in a new task: what it ended with, or the pending task.

    ``caller`` is the task running now (``asyncio.current_task()``), passed in because a
    fan-out starts many tasks from one caller; ``steps`` records how long each step held the
    loop.
    """
    if sys.version_info >= (3, 12):  # pragma: no cover - the interpreter's own eager tasks
        if steps is not None:
            coro = TimedCoroutine(coro, steps)
        native = asyncio.Task(coro, loop=loop, name=name, context=context, eager_start=True)
        if not native.done():
            return native
        if native.cancelled():
            return Finished(None, asyncio.CancelledError())
        return (
            Finished(native.result(), None)
            if native.exception() is None
            else Finished(None, native.exception())
        )
    task = _EagerTask(coro, loop, context, name, steps)
    # asyncio allows making a task current only while no task is.
    if caller is not None:
        tasks._leave_task(loop, caller)
    tasks._enter_task(loop, task)
    started = _clock()
    try:
        result = context.run(coro.send, None)
    except StopIteration as stop:
        if task._must_cancel:  # it cancelled its own task, then returned
            return Finished(None, asyncio.CancelledError())
        return Finished(stop.value, None)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        return Finished(None, exc)
    finally:
        if steps is not None:
            steps((_clock() - started) * 1000)
        tasks._leave_task(loop, task)
        if caller is not None:
            tasks._enter_task(loop, caller)
    task.adopt(result)
    return task
