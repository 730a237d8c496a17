"""An append-only JSON Lines file: group commit, size-based rotation and crash recovery.

Concurrent appends share one ``os.write`` + ``fsync`` in a worker thread (group commit); each
append returns once its line is durable. A batch is written as complete lines in a single
``os.write``, and ``open`` cuts a partial last line a killed writer may have left, so readers only
ever see whole lines. Before the file would pass ``rotate_bytes`` it is renamed to the next free
``<name>.<n>`` — a higher ``n`` is newer, and rotation never renames an already rotated file.

Cutting and rotating change a file, so they are only done to a file this writer created: its
owner's name is kept in ``.<name>.owner`` beside it, written before the file itself. An existing
file without that mark, or marked by another owner (another plugin's file, the audit log, a
database), is refused on open and never written, cut or renamed; so is a symlink.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from agent_pm.durable import fsync_directory
from agent_pm.plugins.paths import claim

__all__ = ["JsonlLog"]

_SCAN_BYTES = 64 * 1024


@dataclass
class _Entry:
    line: bytes
    done: bool = False
    error: OSError | None = None


def _complete_length(fd: int, size: int) -> int:
    """The length of the file up to and including its last newline."""
    end = size
    while end > 0:
        start = max(0, end - _SCAN_BYTES)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        # Regular files take the whole buffer at once; the loop only covers a short write.
        view = view[os.write(fd, view) :]


class JsonlLog:
    """Lines appended to ``path``, rotated past ``rotate_bytes``; open, append, then close.

    ``owner`` names the writer (a plugin's name): only a file it created is cut or rotated.
    """

    def __init__(self, path: Path, rotate_bytes: int, *, owner: str) -> None:
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.owner = owner
        self._fd: int | None = None
        self._size = 0
        self._pending: list[_Entry] = []
        self._lock = anyio.Lock()

    async def open(self) -> int:
        """Open the file, creating it and its directory; return the bytes of a torn tail cut."""
        return await anyio.to_thread.run_sync(self._open)

    async def close(self) -> None:
        """Write what is still pending and close the file."""
        async with self._lock:
            if self._pending:
                await self._flush()
            await anyio.to_thread.run_sync(self._close)

    async def append(self, line: bytes) -> None:
        """Append ``line`` (one JSON document ending in a newline); return once it is durable."""
        entry = _Entry(line)
        self._pending.append(entry)
        async with self._lock:
            # Whoever holds the lock writes every pending line; a waiter may find its own done.
            if not entry.done:
                await self._flush()
        if entry.error is not None:
            raise OSError(f"appending to {self.path} failed") from entry.error

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            await anyio.to_thread.run_sync(self._write, [entry.line for entry in batch])
        except OSError as exc:
            for entry in batch:
                entry.error = exc
        for entry in batch:
            entry.done = True

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        claim(self.path, self.owner)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.path, flags, 0o644)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise PermissionError(f"{self.path} is not a regular file")
        size = info.st_size
        complete = _complete_length(fd, size)
        if complete < size:
            os.ftruncate(fd, complete)
            os.fsync(fd)
        self._fd, self._size = fd, complete
        return size - complete

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _write(self, lines: list[bytes]) -> None:
        chunk: list[bytes] = []
        chunk_size = 0
        for line in lines:
            filled = self._size + chunk_size
            # A line longer than rotate_bytes still goes whole into a fresh file.
            if filled and filled + len(line) > self.rotate_bytes:
                self._commit(chunk)
                self._rotate()
                chunk, chunk_size = [], 0
            chunk.append(line)
            chunk_size += len(line)
        self._commit(chunk)

    def _commit(self, chunk: list[bytes]) -> None:
        if not chunk:
            return
        if self._fd is None:
            raise OSError(f"{self.path} is not open")
        data = b"".join(chunk)
        _write_all(self._fd, data)
        os.fsync(self._fd)
        self._size += len(data)

    def _rotate(self) -> None:
        self._close()
        os.rename(self.path, self.path.with_name(f"{self.path.name}.{self._next_index()}"))
        fsync_directory(self.path.parent)
        self._open()

    def _next_index(self) -> int:
        pattern = re.compile(rf"{re.escape(self.path.name)}\.(\d+)")
        taken = (pattern.fullmatch(name) for name in os.listdir(self.path.parent))
        return max((int(match[1]) for match in taken if match), default=0) + 1
