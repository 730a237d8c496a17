"""Eager tasks: run a coroutine's first step at once, inside the task that will own it.

A hook handler that returns without suspending then costs no scheduling at all, and only one
that suspends is left pending on the loop. The first step runs with the new task as the current
task and in its own context, exactly as its later steps do, so cancel scopes, locks and context
variables set in that step belong to the handler and not to the caller. Python 3.12 offers this
as ``asyncio.Task(..., eager_start=True)``; on 3.11 the same algorithm runs asyncio's own
pure-Python task step.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from contextvars import Context
from typing import Any

__all__ = ["start_task"]


if sys.version_info < (3, 12):
    from asyncio import futures, tasks

    class _EagerTask(tasks._PyTask):  # type: ignore[name-defined,misc]
        """asyncio's pure-Python task, built without scheduling its first step."""

        def __init__(
            self,
            coro: Coroutine[Any, Any, Any],
            loop: asyncio.AbstractEventLoop,
            context: Context,
            name: str,
        ) -> None:
            futures._PyFuture.__init__(self, loop=loop)  # type: ignore[attr-defined]
            self._name = name
            self._num_cancels_requested = 0
            self._must_cancel = False
            self._fut_waiter = None
            self._coro = coro
            self._context = context

    def start_task(
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any],
        context: Context,
        name: str,
        caller: asyncio.Task[Any] | None,
    ) -> asyncio.Task[Any]:
        """A task whose first step has already run; done if the coroutine never suspended.

        ``caller`` is the task running now (``asyncio.current_task()``), passed in because a
        fan-out starts many tasks from one caller.
        """
        task = _EagerTask(coro, loop, context, name)
        # The step makes the new task current, which asyncio allows only with no task current.
        if caller is not None:
            tasks._leave_task(loop, caller)
        try:
            context.run(task._Task__step)
        finally:
            if caller is not None:
                tasks._enter_task(loop, caller)
        if not task.done():
            tasks._register_task(task)
        return task

else:  # pragma: no cover - runs on Python 3.12 and later

    def start_task(
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any],
        context: Context,
        name: str,
        caller: asyncio.Task[Any] | None,
    ) -> asyncio.Task[Any]:
        """A task whose first step has already run; done if the coroutine never suspended."""
        return asyncio.Task(coro, loop=loop, name=name, context=context, eager_start=True)
