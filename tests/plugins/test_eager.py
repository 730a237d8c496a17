"""Eager tasks: the first step runs at once, in the new task and its own context."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from agent_pm.plugins.eager import start_task

pytestmark = pytest.mark.anyio
var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="caller")


def start(coro: Any) -> asyncio.Task[Any]:
    loop = asyncio.get_running_loop()
    return start_task(loop, coro, contextvars.copy_context(), "t", asyncio.current_task())


async def test_eager_task_that_returns_at_once_is_done_and_never_scheduled() -> None:
    caller = asyncio.current_task()
    seen: list[Any] = []

    async def body() -> int:
        seen.append(asyncio.current_task())
        var.set("handler")
        return 7

    task = start(body())
    assert task.done() and task.result() == 7
    assert seen == [task] and task is not caller
    assert asyncio.current_task() is caller
    assert task not in asyncio.all_tasks()
    assert var.get() == "caller"


async def test_eager_task_that_suspends_goes_on_in_the_same_task() -> None:
    seen: list[Any] = []
    gate = asyncio.Event()

    async def body() -> str:
        seen.append(asyncio.current_task())
        var.set("handler")
        await gate.wait()
        seen.append(asyncio.current_task())
        return var.get()

    task = start(body())
    assert not task.done() and task in asyncio.all_tasks()
    gate.set()
    assert await task == "handler"
    assert seen == [task, task]
    assert var.get() == "caller"


async def test_eager_task_errors_before_and_after_suspending_are_the_task_s() -> None:
    async def before() -> None:
        raise ValueError("before")

    async def stop() -> None:
        raise StopIteration

    async def after() -> None:
        await asyncio.sleep(0)
        raise ValueError("after")

    early, stopped, late = start(before()), start(stop()), start(after())
    assert isinstance(early.exception(), ValueError)
    assert isinstance(stopped.exception(), RuntimeError)  # never leaks as StopIteration
    with pytest.raises(ValueError, match="after"):
        await late


async def test_eager_task_cancelled_in_its_first_step_ends_cancelled() -> None:
    async def body() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(10)

    task = start(body())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
