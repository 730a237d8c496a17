"""SQLite storage of feedback records, safe to use from many concurrent requests.

All database work runs in worker threads so the event loop never blocks on disk; a limiter of
one serialises it over a single connection, which SQLite then needs no locking for. WAL keeps
readers of other processes unblocked, and every insert commits before it returns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import anyio
import anyio.to_thread

from agent_pm.plugins.paths import claim

__all__ = ["FeedbackStore"]

T = TypeVar("T")
Args = TypeVarTuple("Args")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    title TEXT NOT NULL,
    rating INTEGER NOT NULL,
    comment TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    source TEXT NOT NULL
)
"""
_COLUMNS = ("id", "created_at", "title", "rating", "comment", "submitted_by", "source")
_INSERT = (
    "INSERT INTO feedback (created_at, title, rating, comment, submitted_by, source)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_SELECT = (
    "SELECT id, created_at, title, rating, comment, submitted_by, source"
    " FROM feedback ORDER BY id DESC LIMIT ? OFFSET ?"
)
_BUSY_TIMEOUT_MS = 5000


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FeedbackStore:
    """Feedback records in the SQLite file at ``path``, created with its directory on first use;
    ``owner`` (the plugin's name) must be the one that created it."""

    def __init__(self, path: Path, *, owner: str) -> None:
        self.path = path
        self.owner = owner
        self._connection: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)

    async def claim(self) -> None:
        """Make sure the file is the owner's: new, or created by it before (never another
        component's database); ``PermissionError`` otherwise."""
        await self._run(self._claim)

    def _claim(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        claim(self.path, self.owner)

    async def add(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Store a record of ``fields``; return it with its ``id`` and ``created_at``."""
        return await self._run(self._insert, fields)

    async def page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Records newest first, ``limit`` of them after skipping ``offset``, and the total."""
        return await self._run(self._select, limit, offset)

    async def close(self) -> None:
        """Close the connection; the next call opens it again."""
        await self._run(self._close)

    async def _run(self, function: Callable[[*Args], T], *args: *Args) -> T:
        return await anyio.to_thread.run_sync(function, *args, limiter=self._limiter)

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The limiter guarantees one thread at a time, which is all sqlite3 asks for.
            connection = sqlite3.connect(self.path, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            connection.execute(_SCHEMA)
            self._connection = connection
        return self._connection

    def _insert(self, fields: dict[str, Any]) -> dict[str, Any]:
        record = {"created_at": _now(), **fields}
        connection = self._connect()
        with connection:
            cursor = connection.execute(_INSERT, [record[name] for name in _COLUMNS[1:]])
        return {"id": cursor.lastrowid, **record}

    def _select(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        connection = self._connect()
        rows = connection.execute(_SELECT, (limit, offset)).fetchall()
        (total,) = connection.execute("SELECT COUNT(*) FROM feedback").fetchone()
        return [dict(zip(_COLUMNS, row, strict=True)) for row in rows], total

    def _close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()
