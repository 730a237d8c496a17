"""The failure store: failed hook calls kept in SQLite (WAL mode), bounded by count and bytes.

Rows are written by the recorder's background writer and read, replayed and discarded by the
operator surfaces, each call on a worker thread (one connection, serialized by a lock). When a
write takes the store past ``max_count`` rows or ``max_bytes`` of payload and error text, the
oldest rows are dropped and counted in ``evicted``, which survives restarts.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import msgspec

from agent_pm.errors import FailureNotFoundError, FailureStoreError
from agent_pm.plugins.telemetry import Status

__all__ = [
    "FailedCall",
    "Failure",
    "FailureFilter",
    "FailureState",
    "FailureStore",
    "NewFailure",
    "StoreStats",
    "parse_since",
]

FailureState = Literal["pending", "replayed"]
# Accounted on top of payload and error text: ids, names, timestamps, the row itself.
ROW_OVERHEAD_BYTES = 256
_SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plugin TEXT NOT NULL,
    hook TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    recorded_at REAL NOT NULL,
    request_id TEXT,
    module_version TEXT,
    revision INTEGER NOT NULL,
    payload BLOB,
    payload_note TEXT,
    size INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_replay_at REAL,
    last_replay_status TEXT,
    last_replay_error TEXT
);
CREATE INDEX IF NOT EXISTS failures_by_plugin ON failures (plugin, recorded_at);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_COLUMNS = (
    "id, plugin, hook, status, error, recorded_at, request_id, module_version, revision, "
    "payload_note, state, attempts, last_replay_at, last_replay_status, last_replay_error, "
    "length(payload)"
)


class FailedCall(msgspec.Struct, frozen=True, kw_only=True):
    """What is known of a failed call: where it failed, how, in which request, on which code
    (``module_version``) and manifest (``revision``); the error has the secrets masked."""

    plugin: str
    hook: str
    status: Status
    error: str | None
    recorded_at: datetime
    request_id: str | None
    module_version: str | None
    revision: int


class NewFailure(FailedCall, frozen=True, kw_only=True):
    """A failed call as the recorder hands it to the store; ``payload`` is redacted JSON."""

    payload: bytes | None
    payload_note: str | None = None

    @property
    def size(self) -> int:
        return ROW_OVERHEAD_BYTES + len(self.payload or b"") + len((self.error or "").encode())


class Failure(FailedCall, frozen=True, kw_only=True, omit_defaults=True):
    """One recorded failed call, by ``id``. ``payload`` (the redacted keyword arguments of the
    call) is shown to admin keys only; ``payload_stored`` says whether one was kept at all."""

    id: int
    payload_stored: bool
    payload_note: str | None
    state: FailureState
    attempts: int
    last_replay_at: datetime | None
    last_replay_status: Status | None
    last_replay_error: str | None
    payload: dict[str, Any] | None = None


class StoreStats(msgspec.Struct, frozen=True):
    """How full the store is, its bounds, and how many rows were dropped to keep within them."""

    count: int
    bytes: int
    max_count: int
    max_bytes: int
    evicted: int


@dataclass(frozen=True)
class FailureFilter:
    """Which failures of ``plugin`` an operation applies to; ``None`` means any."""

    plugin: str
    hook: str | None = None
    since: datetime | None = None
    state: FailureState | None = None
    ids: Sequence[int] | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = ["plugin = ?"]
        args: list[Any] = [self.plugin]
        if self.hook is not None:
            clauses.append("hook = ?")
            args.append(self.hook)
        if self.since is not None:
            clauses.append("recorded_at >= ?")
            args.append(self.since.timestamp())
        if self.state is not None:
            clauses.append("state = ?")
            args.append(self.state)
        if self.ids is not None:
            clauses.append(f"id IN ({','.join('?' * len(self.ids))})")
            args.extend(self.ids)
        return " AND ".join(clauses), args


_DURATION = re.compile(r"^(\d{1,9})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``text`` as a point in time: an ISO 8601 timestamp (UTC unless it says otherwise) or a
    duration back from now (``90s``, ``15m``, ``2h``, ``7d``); ``ValueError`` otherwise."""
    match = _DURATION.match(text.strip())
    if match:
        amount = timedelta(**{_UNITS[match[2]]: int(match[1])})
        return (now or datetime.now(UTC)) - amount
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"since must be an ISO 8601 time or a duration like 15m, 2h or 7d, got {text!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class FailureStore:
    """The SQLite file of recorded failures; every method blocks, so call it from a thread."""

    def __init__(self, path: Path, max_count: int, max_bytes: int) -> None:
        self.path = path
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._count = self._bytes = 0

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                if self._db is None:
                    self._db = self._open()
                with self._db:  # one transaction: committed, or rolled back on error
                    yield self._db
            except sqlite3.Error as exc:
                raise FailureStoreError(f"failure store {self.path}: {exc}") from None

    def _absent(self) -> bool:
        """Whether nothing was ever recorded: reads then answer empty without creating a file."""
        return self._db is None and not self.path.exists()

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        db.isolation_level = "DEFERRED"
        self._count, self._bytes = db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM failures"
        ).fetchone()
        return db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- writing -------------------------------------------------------------------------

    def add(self, failures: Sequence[NewFailure]) -> None:
        """Store ``failures`` in one transaction, then drop the oldest rows past the bounds."""
        with self._connection() as db:
            db.executemany(
                "INSERT INTO failures (plugin, hook, status, error, recorded_at, request_id, "
                "module_version, revision, payload, payload_note, size) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        f.plugin,
                        f.hook,
                        f.status,
                        f.error,
                        f.recorded_at.timestamp(),
                        f.request_id,
                        f.module_version,
                        f.revision,
                        f.payload,
                        f.payload_note,
                        f.size,
                    )
                    for f in failures
                ],
            )
            self._count += len(failures)
            self._bytes += sum(f.size for f in failures)
            self._evict(db)

    def _evict(self, db: sqlite3.Connection) -> None:
        if self._count <= self.max_count and self._bytes <= self.max_bytes:
            return
        dropped = freed = 0
        last_id = None
        for row_id, size in db.execute("SELECT id, size FROM failures ORDER BY id"):
            if self._count - dropped <= self.max_count and self._bytes - freed <= self.max_bytes:
                break
            dropped, freed, last_id = dropped + 1, freed + size, row_id
        db.execute("DELETE FROM failures WHERE id <= ?", (last_id,))
        db.execute(
            "INSERT INTO counters VALUES ('evicted', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (dropped,),
        )
        self._count -= dropped
        self._bytes -= freed

    def mark_replayed(
        self, failure_id: int, status: Status, error: str | None, at: datetime
    ) -> None:
        """Note a replay's outcome; a success marks the failure ``replayed``."""
        with self._connection() as db:
            db.execute(
                "UPDATE failures SET attempts = attempts + 1, last_replay_at = ?, "
                "last_replay_status = ?, last_replay_error = ?, "
                "state = CASE WHEN ? = 'success' THEN 'replayed' ELSE state END WHERE id = ?",
                (at.timestamp(), status, error, status, failure_id),
            )

    def discard(self, where: FailureFilter) -> int:
        """Delete the matching failures; how many there were."""
        if self._absent():
            return 0
        clause, args = where.where()
        with self._connection() as db:
            count, size = db.execute(
                f"SELECT count(*), coalesce(sum(size), 0) FROM failures WHERE {clause}",  # noqa: S608  # nosec B608
                args,
            ).fetchone()
            db.execute(f"DELETE FROM failures WHERE {clause}", args)  # noqa: S608  # nosec B608
            self._count -= count
            self._bytes -= size
        return int(count)

    # -- reading -------------------------------------------------------------------------

    def find(
        self, where: FailureFilter, limit: int | None = None, *, oldest_first: bool = False
    ) -> list[Failure]:
        """The matching failures without payloads, newest first unless ``oldest_first``."""
        if self._absent():
            return []
        clause, args = where.where()
        order = "ASC" if oldest_first else "DESC"
        sql = f"SELECT {_COLUMNS} FROM failures WHERE {clause} ORDER BY id {order}"  # noqa: S608  # nosec B608
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._connection() as db:
            return [_failure(row) for row in db.execute(sql, args)]

    def count(self, where: FailureFilter) -> int:
        if self._absent():
            return 0
        clause, args = where.where()
        with self._connection() as db:
            (count,) = db.execute(
                f"SELECT count(*) FROM failures WHERE {clause}",  # noqa: S608  # nosec B608
                args,
            ).fetchone()
        return int(count)

    def payloads(self, plugin: str, ids: Sequence[int]) -> dict[int, dict[str, Any] | None]:
        """The decoded payloads of ``plugin``'s failures ``ids`` (``None`` where none is kept)."""
        if not ids or self._absent():
            return {}
        clause, args = FailureFilter(plugin, ids=ids).where()
        with self._connection() as db:
            rows = db.execute(f"SELECT id, payload FROM failures WHERE {clause}", args)  # noqa: S608  # nosec B608
            return {
                row_id: None if blob is None else msgspec.json.decode(blob) for row_id, blob in rows
            }

    def page(
        self, where: FailureFilter, limit: int, *, payloads: bool
    ) -> tuple[list[Failure], int]:
        """The newest ``limit`` matching failures (with payloads if asked), and how many match."""
        failures = self.find(where, limit)
        if payloads:
            kept = self.payloads(where.plugin, [f.id for f in failures])
            failures = [msgspec.structs.replace(f, payload=kept.get(f.id)) for f in failures]
        return failures, self.count(where)

    def get(self, plugin: str, failure_id: int) -> Failure:
        """Failure ``failure_id`` of ``plugin`` with its payload."""
        found = self.find(FailureFilter(plugin, ids=(failure_id,)))
        if not found:
            raise FailureNotFoundError(f"plugin {plugin!r} has no recorded failure {failure_id}")
        payload = self.payloads(plugin, (failure_id,)).get(failure_id)
        return msgspec.structs.replace(found[0], payload=payload)

    def plugins(self) -> set[str]:
        """Names of the plugins with at least one stored failure."""
        if self._absent():
            return set()
        with self._connection() as db:
            return {name for (name,) in db.execute("SELECT DISTINCT plugin FROM failures")}

    def stats(self) -> StoreStats:
        row = None
        if not self._absent():
            with self._connection() as db:
                row = db.execute("SELECT value FROM counters WHERE name = 'evicted'").fetchone()
        return StoreStats(
            self._count, self._bytes, self.max_count, self.max_bytes, row[0] if row else 0
        )


def _failure(row: tuple[Any, ...]) -> Failure:
    (
        row_id,
        plugin,
        hook,
        status,
        error,
        recorded_at,
        request_id,
        module_version,
        revision,
        payload_note,
        state,
        attempts,
        last_replay_at,
        last_replay_status,
        last_replay_error,
        payload_length,
    ) = row
    return Failure(
        id=row_id,
        plugin=plugin,
        hook=hook,
        status=status,
        error=error,
        recorded_at=datetime.fromtimestamp(recorded_at, UTC),
        request_id=request_id,
        module_version=module_version,
        revision=revision,
        payload_stored=payload_length is not None,
        payload_note=payload_note,
        state=state,
        attempts=attempts,
        last_replay_at=_time(last_replay_at),
        last_replay_status=last_replay_status,
        last_replay_error=last_replay_error,
    )
