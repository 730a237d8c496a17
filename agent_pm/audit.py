"""The audit log: every admin action, who took it, from where, what changed and how it ended.

Records are JSON Lines appended to ``<DATA_DIR>/audit/audit.jsonl``. Each append takes an
exclusive ``flock`` (the server, a local CLI and other workers may share the directory), cuts a
torn last line a killed writer may have left, numbers the record after the last one in the
file, writes it whole and fsyncs before returning; past ``rotate_bytes`` the file is renamed to
the next free ``audit.jsonl.<n>`` (a higher ``n`` is newer) and a new one begun. Rotated files are
never deleted: retention is the operator's decision. All file work runs in a worker thread, off
the event loop.

:mod:`agent_pm.audited` writes the records of admin operations; each is also published on the
bus as an :class:`AuditMessage` (``{"type": "audit", "seq", "record"}``).
"""

from __future__ import annotations

import fcntl
import os
import re
from collections import deque
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import msgspec

from agent_pm.durable import fsync_directory

__all__ = [
    "CLI_USER_AGENT",
    "Actor",
    "AuditLog",
    "AuditMessage",
    "AuditRecord",
    "Outcome",
    "Source",
]
# ``platform``: the service acting on its own (moving a misbehaving plugin out of process).
Source = Literal["rest", "dashboard", "cli", "watcher", "platform"]
Outcome = Literal["ok", "error", "cancelled"]
FILE_NAME = "audit.jsonl"
# The CLI's User-Agent: REST records its calls with source "cli".
CLI_USER_AGENT = "agent-pm-cli"
ROTATE_BYTES = 8 * 1024 * 1024
_TAIL_BYTES = 64 * 1024


class Actor(msgspec.Struct, frozen=True):
    """Who acts (a key's name, a session's, an OS user's) with which role, through which surface."""

    name: str
    role: str
    source: Source


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One admin action. ``before``/``after`` hold only the fields that changed, as dotted paths
    (``config.channel``) of the plugin's masked metadata, or ``plugin.field`` for the whole set."""

    id: int
    time: datetime
    actor: str
    role: str
    source: Source
    action: str
    plugin: str | None
    before: dict[str, Any]
    after: dict[str, Any]
    revision_before: int
    revision_after: int
    outcome: Outcome
    error: str | None = None
    request_id: str | None = None
    # Why the action was taken, when its actor gives one (the platform always does).
    reason: str | None = None


class AuditMessage(msgspec.Struct, frozen=True, tag="audit", tag_field="type"):
    """The bus message announcing a new audit record."""

    seq: int
    record: AuditRecord

    @property
    def topic(self) -> tuple[str, str | None]:
        return self.record.plugin or "", None


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(AuditRecord).decode


class AuditLog:
    """The audit files in ``directory``."""

    def __init__(self, directory: Path, *, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME
        self.rotate_bytes = rotate_bytes

    async def append(self, fields: dict[str, Any]) -> AuditRecord:
        """Number, write and fsync one record made of ``fields``; return it."""
        return await anyio.to_thread.run_sync(self._append, fields)

    async def read(
        self, since: int | datetime | None = None, limit: int = 100
    ) -> list[AuditRecord]:
        """Oldest first: the first ``limit`` records after ``since`` (an id or a time), or the
        newest ``limit`` records when ``since`` is ``None``."""
        return await anyio.to_thread.run_sync(self._read, since, limit)

    # -- in a worker thread ------------------------------------------------------------------

    def _append(self, fields: dict[str, Any]) -> AuditRecord:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                last = _last_id(_complete_tail(fd))
                if last is None:
                    last = self._last_rotated_id()
                record = AuditRecord(id=(last or 0) + 1, **fields)
                line = _encode(record) + b"\n"
                size = os.fstat(fd).st_size
                if size and size + len(line) > self.rotate_bytes:
                    os.close(fd)
                    fd = self._rotate()
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return record

    def _rotate(self) -> int:
        os.rename(self.path, self.path.with_name(f"{FILE_NAME}.{self._last_index() + 1}"))
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        fsync_directory(self.directory)
        return fd

    def _last_index(self) -> int:
        return max((index for index, _ in self._rotated()), default=0)

    def _rotated(self) -> Iterator[tuple[int, Path]]:
        pattern = re.compile(rf"{re.escape(FILE_NAME)}\.(\d+)")
        for name in os.listdir(self.directory):
            match = pattern.fullmatch(name)
            if match:
                yield int(match[1]), self.directory / name

    def _last_rotated_id(self) -> int | None:
        newest = max(self._rotated(), default=None)
        if newest is None:
            return None
        fd = os.open(newest[1], os.O_RDONLY)
        try:
            return _last_id(_complete_tail(fd, cut=False))
        finally:
            os.close(fd)

    def _files_newest_first(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        rotated = [path for _, path in sorted(self._rotated(), reverse=True)]
        return [self.path, *rotated]

    def _read(self, since: int | datetime | None, limit: int) -> list[AuditRecord]:
        found: deque[AuditRecord] = deque(maxlen=limit)
        for path in self._files_newest_first():
            try:
                lines = path.read_bytes().splitlines()
            except FileNotFoundError:
                continue
            for line in reversed(lines):
                try:
                    record = _decode(line)
                except msgspec.DecodeError:
                    continue  # a torn line of a writer killed mid-append
                if since is not None and not _after(record, since):
                    return list(reversed(found))
                if since is None and len(found) == limit:
                    return list(reversed(found))
                found.append(record)
        return list(reversed(found))


def _after(record: AuditRecord, since: int | datetime) -> bool:
    return record.time > since if isinstance(since, datetime) else record.id > since


def _complete_tail(fd: int, *, cut: bool = True) -> bytes:
    """The file's last bytes up to its last newline; with ``cut``, a torn line after it (left
    by a writer killed mid-append) is removed from the file."""
    size = os.fstat(fd).st_size
    tail = os.pread(fd, min(size, _TAIL_BYTES), max(0, size - _TAIL_BYTES))
    end = tail.rfind(b"\n")
    if cut and end + 1 < len(tail):
        os.ftruncate(fd, size - (len(tail) - end - 1))
        os.fsync(fd)
    return tail[: end + 1]


def _last_id(tail: bytes) -> int | None:
    """The id of the last whole record in ``tail``."""
    for line in reversed(tail.splitlines()):
        try:
            return _decode(line).id
        except msgspec.DecodeError:
            continue
    return None
