"""Replays of recorded failures: the plugin's current code, that plugin alone, paced.

A replay calls the failed hook again with the recorded (redacted) payload on the plugin's current
instance only, with ``replay_of`` set in the call's context so the plugin can tell a second
delivery from a first. Each replay is an ordinary call with its own result and telemetry sample;
its outcome is written back to the failure, and a success marks it ``replayed`` so a bulk replay
never delivers it twice. Bulk replays take pending failures oldest first, at most ``rate`` calls
per second, one bulk replay per plugin at a time, and at most ``bulk_per_minute`` of them per
plugin in any minute (dry runs aside), so a script in a loop cannot keep a plugin replaying.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import anyio
import anyio.to_thread
import msgspec

from agent_pm.errors import ReplayError, ReplayRateError
from agent_pm.plugins.context import replay_of
from agent_pm.plugins.dispatch import HookResult
from agent_pm.plugins.failures import Failure, FailureFilter
from agent_pm.plugins.recorder import FailureRecorder
from agent_pm.plugins.telemetry import now

__all__ = ["ReplayOutcome", "ReplayReport", "Replays", "discard_effect", "replay_effect"]

logger = logging.getLogger(__name__)
FireOn = Callable[[str, str, dict[str, Any]], Awaitable[HookResult]]


class ReplayOutcome(msgspec.Struct, frozen=True):
    """What replaying one failure did: the call's result, or why it was not made."""

    failure: int
    hook: str
    result: HookResult | None = None
    refused: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.result is not None and self.result.status == "success"


class ReplayReport(msgspec.Struct, frozen=True):
    """A bulk replay: how many pending failures matched, and the outcome of each one replayed
    (none on a dry run); ``remaining`` matched but were past the limit."""

    plugin: str
    dry_run: bool
    matched: int
    succeeded: int = 0
    failed: int = 0
    remaining: int = 0
    outcomes: list[ReplayOutcome] = msgspec.field(default_factory=list)


def replay_effect(result: ReplayOutcome | ReplayReport) -> dict[str, Any]:
    """What a replay did to each failure, as the audit log's dotted paths: the replay's status,
    or ``refused``."""
    outcomes = result.outcomes if isinstance(result, ReplayReport) else [result]
    return {
        f"failures.{o.failure}.replay": o.result.status if o.result is not None else "refused"
        for o in outcomes
    }


def discard_effect(count: int) -> dict[str, Any]:
    """How many failures a discard deleted, for the audit log."""
    return {"failures.discarded": count}


class Replays:
    """Runs replays through ``fire_on`` (one plugin's current instance) and records them."""

    def __init__(
        self, fire_on: FireOn, recorder: FailureRecorder, rate: float, bulk_per_minute: int
    ) -> None:
        self._fire_on = fire_on
        self._recorder = recorder
        self._store = recorder.store
        self.interval = 1.0 / rate
        self.bulk_per_minute = bulk_per_minute
        self._locks: dict[str, anyio.Lock] = {}
        self._bulk: set[str] = set()
        self._bulk_started: dict[str, deque[float]] = {}

    def _lock(self, plugin: str) -> anyio.Lock:
        return self._locks.setdefault(plugin, anyio.Lock())

    async def replay(self, plugin: str, failure_id: int, *, force: bool = False) -> ReplayOutcome:
        """Replay one failure; one already replayed successfully needs ``force``."""
        self._refuse_during_bulk(plugin)
        async with self._lock(plugin):
            failure = await anyio.to_thread.run_sync(self._store.get, plugin, failure_id)
            if failure.state == "replayed" and not force:
                raise ReplayError(
                    f"failure {failure_id} of {plugin!r} was replayed already; force to repeat"
                )
            if failure.payload is None:
                raise ReplayError(f"failure {failure_id} kept no payload: {failure.payload_note}")
            return await self._run(failure, failure.payload)

    async def replay_matching(
        self, where: FailureFilter, *, limit: int, dry_run: bool = False
    ) -> ReplayReport:
        """Replay the pending failures ``where`` matches, oldest first, at most ``limit``."""
        where = replace(where, state="pending")
        plugin = where.plugin
        await self._recorder.settle()
        if dry_run:
            matched = await anyio.to_thread.run_sync(self._store.count, where)
            return ReplayReport(plugin, True, matched)
        self._refuse_during_bulk(plugin)
        self._count_bulk(plugin)
        self._bulk.add(plugin)
        try:
            async with self._lock(plugin):
                return await self._replay_all(where, limit)
        finally:
            self._bulk.discard(plugin)

    def _refuse_during_bulk(self, plugin: str) -> None:
        if plugin in self._bulk:
            raise ReplayError(f"a bulk replay of {plugin!r} is running; try again when it ends")

    def _count_bulk(self, plugin: str) -> None:
        """Note a bulk replay of ``plugin``, or refuse it past ``bulk_per_minute``."""
        started = self._bulk_started.setdefault(plugin, deque())
        now_ = anyio.current_time()
        while started and started[0] <= now_ - 60.0:
            started.popleft()
        if len(started) >= self.bulk_per_minute:
            raise ReplayRateError(plugin, started[0] + 60.0 - now_)
        started.append(now_)

    async def _replay_all(self, where: FailureFilter, limit: int) -> ReplayReport:
        matched = await anyio.to_thread.run_sync(self._store.count, where)
        failures = await anyio.to_thread.run_sync(
            lambda: self._store.find(where, limit, oldest_first=True)
        )
        ids = [f.id for f in failures]
        payloads = await anyio.to_thread.run_sync(self._store.payloads, where.plugin, ids)
        outcomes: list[ReplayOutcome] = []
        next_at = anyio.current_time()
        for failure in failures:
            await anyio.sleep(max(0.0, next_at - anyio.current_time()))
            next_at = anyio.current_time() + self.interval
            outcomes.append(await self._attempt(failure, payloads.get(failure.id)))
        succeeded = sum(outcome.succeeded for outcome in outcomes)
        return ReplayReport(
            where.plugin,
            False,
            matched,
            succeeded,
            len(outcomes) - succeeded,
            matched - len(outcomes),
            outcomes,
        )

    async def _attempt(self, failure: Failure, payload: dict[str, Any] | None) -> ReplayOutcome:
        """Replay ``failure`` within a bulk replay: a refusal is its outcome, not an error."""
        if payload is None:
            return ReplayOutcome(failure.id, failure.hook, refused=failure.payload_note)
        try:
            return await self._run(failure, payload)
        except ReplayError as exc:
            return ReplayOutcome(failure.id, failure.hook, refused=str(exc))

    async def _run(self, failure: Failure, payload: dict[str, Any]) -> ReplayOutcome:
        token = replay_of.set(failure.id)
        try:
            result = await self._fire_on(failure.plugin, failure.hook, payload)
        finally:
            replay_of.reset(token)
        await anyio.to_thread.run_sync(
            self._store.mark_replayed, failure.id, result.status, result.error, now()
        )
        logger.info(
            "replayed failure %d of %s (%s): %s",
            failure.id,
            failure.plugin,
            failure.hook,
            result.status,
        )
        return ReplayOutcome(failure.id, failure.hook, result)
