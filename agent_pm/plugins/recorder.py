"""The flight recorder: keeps the failed calls of recording plugins in the failure store.

The registry shows it every fire's results, and only when some plugin records at all; for a
successful call that costs one status check per result. A failure of a recording plugin is
snapshotted on the spot (its payload encoded to JSON: the caller may change its objects as soon
as ``fire`` returns) and handed to a bounded queue. A writer task redacts the snapshot of every
secret of the plugin and stores it from a worker thread, so ``fire`` never waits for the disk;
when the queue is full, the failure is dropped and counted in ``overflowed``.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import reprlib
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import anyio.to_thread
import msgspec

from agent_pm.errors import FailureStoreError
from agent_pm.plugins.context import request_id
from agent_pm.plugins.dispatch import HookResult
from agent_pm.plugins.failures import FailureStore, NewFailure
from agent_pm.plugins.record import PluginRecord
from agent_pm.plugins.secrets import MASK, redact
from agent_pm.plugins.telemetry import now
from agent_pm.settings import Settings

__all__ = ["STORE_FILE", "FailureRecorder", "module_version", "redact_deep"]

logger = logging.getLogger(__name__)
STORE_FILE = "failures.sqlite3"
QUEUE_LIMIT = 1_000
BATCH_LIMIT = 200
MAX_PAYLOAD_BYTES = 256 * 1024
SETTLE_SECONDS = 2.0
_FAILED = frozenset({"error", "timeout"})
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 200
_versions: weakref.WeakKeyDictionary[type, str | None] = weakref.WeakKeyDictionary()


def module_version(cls: type) -> str | None:
    """``sha256:`` and 16 hex digits of the source file of ``cls``'s module, as loaded.

    A digest rather than a package version: built-in plugins share the platform's version and a
    hot reload runs edited code under an unchanged one, while the digest changes with the code.
    """
    if cls not in _versions:
        try:
            source = inspect.getfile(cls)
            with open(source, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()[:16]
            _versions[cls] = f"sha256:{digest}"
        except (OSError, TypeError):  # no source file: a class made at run time, say
            _versions[cls] = None
    return _versions[cls]


def redact_deep(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` with every secret masked in every string, keys included, however deep."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact(str(k), secrets): redact_deep(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_deep(item, secrets) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        # A numeric secret (a PIN, an account number) must not survive as a number either.
        return MASK if str(value) in secrets else value
    return value


@dataclass(frozen=True, slots=True)
class _Plugin:
    """What the recorder needs to know about a recording plugin."""

    secrets: tuple[str, ...]
    module_version: str | None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """A failure as taken on the event loop, before redaction."""

    result: HookResult
    plugin: _Plugin
    payload: bytes | None
    note: str | None
    request_id: str | None
    revision: int
    at: datetime


class FailureRecorder:
    """Decides which plugins record, snapshots their failures and writes them in the background."""

    def __init__(self, settings: Settings, queue_limit: int = QUEUE_LIMIT) -> None:
        path = settings.data_dir / STORE_FILE
        self.store = FailureStore(path, settings.failures_max_count, settings.failures_max_bytes)
        self.default = settings.record_failures
        self.recording: dict[str, _Plugin] = {}
        self.overflowed = 0
        self.lost = 0
        self._payload_limit = min(MAX_PAYLOAD_BYTES, settings.failures_max_bytes // 8)
        self._send, self._receive = anyio.create_memory_object_stream[_Snapshot](queue_limit)
        self._sent = self._written = 0
        self._progress = anyio.Event()

    def track(self, records: Iterable[PluginRecord]) -> None:
        """Follow the registry's current records: who records, with which secrets and code."""
        recording: dict[str, _Plugin] = {}
        for record in records:
            entry = record.entry
            if entry is None or record.cls is None:
                continue
            wanted = entry.record_failures
            if wanted if wanted is not None else self.default:
                secrets = tuple(record.secrets.values.values())
                recording[record.name] = _Plugin(secrets, module_version(record.cls))
        self.recording = recording

    def note(
        self, hook: str, payload: dict[str, Any], results: list[HookResult], revision: int
    ) -> None:
        """Keep the failed results of recording plugins; never blocks."""
        recording = self.recording
        for result in results:
            if result.status in _FAILED and result.plugin in recording:
                self._keep(recording[result.plugin], payload, result, revision)

    def _keep(
        self, plugin: _Plugin, payload: dict[str, Any], result: HookResult, revision: int
    ) -> None:
        encoded, note = _encode(payload)
        snapshot = _Snapshot(result, plugin, encoded, note, request_id.get(), revision, now())
        try:
            self._send.send_nowait(snapshot)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.overflowed += 1
            return
        self._sent += 1

    async def flush(self) -> None:
        """Wait until every failure noted so far is written (or lost to a store error)."""
        target = self._sent
        while self._written < target:
            await self._progress.wait()

    async def settle(self) -> None:
        """Let the failures noted so far reach the store before reading it, within bounds: a
        listing or replay right after a failure includes it, and a stuck disk delays it only
        ``SETTLE_SECONDS``."""
        with anyio.move_on_after(SETTLE_SECONDS):
            await self.flush()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The writer: store snapshots in batches until :meth:`close`, then close the store."""
        task_status.started()
        try:
            async with self._receive:
                async for first in self._receive:
                    batch = [first]
                    while len(batch) < BATCH_LIMIT:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    await self._write(batch)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.store.close)

    async def _write(self, batch: list[_Snapshot]) -> None:
        try:
            await anyio.to_thread.run_sync(self._store, batch)
        except FailureStoreError as exc:
            self.lost += len(batch)
            logger.error("%d failed call(s) not recorded: %s", len(batch), exc)
        self._written += len(batch)
        self._progress.set()
        self._progress = anyio.Event()

    def _store(self, batch: list[_Snapshot]) -> None:
        self.store.add([self._redacted(snapshot) for snapshot in batch])

    def _redacted(self, snapshot: _Snapshot) -> NewFailure:
        secrets = snapshot.plugin.secrets
        payload, note = snapshot.payload, snapshot.note
        if payload is not None:
            payload = msgspec.json.encode(redact_deep(msgspec.json.decode(payload), secrets))
            if len(payload) > self._payload_limit:
                note = (
                    f"payload of {len(payload)} bytes is over the {self._payload_limit}-byte limit"
                )
                payload = None
        if note is not None:
            note = redact(note, secrets)
        result = snapshot.result
        return NewFailure(
            plugin=result.plugin,
            hook=result.hook,
            status=result.status,
            error=None if result.error is None else redact(result.error, secrets),
            recorded_at=snapshot.at,
            request_id=snapshot.request_id,
            module_version=snapshot.plugin.module_version,
            revision=snapshot.revision,
            payload=payload,
            payload_note=note,
        )

    def close(self) -> None:
        """Accept no more failures; the writer stores what is queued and ends."""
        self._send.close()


def _encode(payload: dict[str, Any]) -> tuple[bytes | None, str | None]:
    """``payload`` as JSON, and a note when part of it could not be kept as it was."""
    lossy: list[str] = []

    def as_text(value: Any) -> str:
        lossy.append(type(value).__name__)
        return _repr.repr(value)

    try:
        encoded = msgspec.json.encode(payload, enc_hook=as_text)
    except Exception as exc:  # whatever the caller passed; the failure is still worth keeping
        return None, f"payload not recorded: {type(exc).__name__}: {exc}"
    if lossy:
        kinds = ", ".join(sorted(set(lossy)))
        return encoded, f"values JSON cannot carry were recorded as their repr ({kinds})"
    return encoded, None
