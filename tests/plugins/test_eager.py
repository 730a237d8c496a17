"""Eager tasks: the first step runs at once, in the new task and its own context."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from agent_pm.plugins.eager import Finished, start

pytestmark = pytest.mark.anyio
var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="caller")


def begin(coro: Any) -> asyncio.Task[Any] | Finished:
    loop = asyncio.get_running_loop()
    return start(loop, coro, contextvars.copy_context(), "t", asyncio.current_task())


async def test_eager_task_that_returns_at_once_is_done_and_never_scheduled() -> None:
    caller = asyncio.current_task()
    seen: list[Any] = []

    async def body() -> int:
        seen.append(asyncio.current_task())
        var.set("handler")
        return 7

    before = asyncio.all_tasks()
    assert begin(body()) == Finished(7, None)
    [task] = seen
    assert task is not caller and task not in before
    assert asyncio.current_task() is caller
    assert asyncio.all_tasks() == before
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

    task = begin(body())
    assert not isinstance(task, Finished)
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

    early, stopped, late = begin(before()), begin(stop()), begin(after())
    assert isinstance(early, Finished) and isinstance(early.error, ValueError)
    # A StopIteration raised in a coroutine becomes a RuntimeError; it never ends the step.
    assert isinstance(stopped, Finished) and isinstance(stopped.error, RuntimeError)
    assert not isinstance(late, Finished)
    with pytest.raises(ValueError, match="after"):
        await late


async def test_eager_task_cancelled_in_its_first_step_ends_cancelled() -> None:
    async def body() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(10)

    task = begin(body())
    assert not isinstance(task, Finished)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_eager_task_cancelled_then_returning_in_its_first_step_is_cancelled() -> None:
    async def body() -> int:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        return 1

    finished = begin(body())
    assert isinstance(finished, Finished) and isinstance(finished.error, asyncio.CancelledError)


async def test_eager_task_bare_yield_and_bad_yield_behave_as_in_any_task() -> None:
    class Bare:
        def __await__(self) -> Any:
            yield None
            return "after a bare yield"

    class Bad:
        def __await__(self) -> Any:
            yield "not a future"

    async def bare() -> str:
        return await Bare()

    async def bad() -> None:
        await Bad()

    bare_task, bad_task = begin(bare()), begin(bad())
    assert not isinstance(bare_task, Finished) and not isinstance(bad_task, Finished)
    assert await bare_task == "after a bare yield"
    with pytest.raises(RuntimeError, match="bad yield"):
        await bad_task
