"""The manifest file on disk: bounded reads of a regular file, atomic writes through a symlink.

The manifest must be a regular file or a symlink to one. Anything else (a FIFO, a device such as
``/dev/zero``, a directory) is refused with a clear error before a byte is read, and a read stops
one byte past the size limit, so neither a pipe nor an endless device can hang or exhaust the
service. Writes go to a temporary file beside the link's *target* and replace the target, so a
symlinked manifest (a ConfigMap, a dotfiles checkout) stays a link.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from agent_pm.durable import fsync_directory
from agent_pm.errors import ManifestError

__all__ = ["MAX_MANIFEST_BYTES", "atomic_write", "read_bounded", "remove_stale_temp_files"]

MAX_MANIFEST_BYTES = 1024 * 1024
_TEMP_SUFFIX = ".tmp"
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_bounded(path: Path, limit: int = MAX_MANIFEST_BYTES) -> bytes | None:
    """The bytes of the regular file at ``path`` (through symlinks), ``None`` when there is none.

    Raises ``ManifestError`` for anything that is not a regular file, an unreadable file, or
    one larger than ``limit`` bytes.
    """
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ManifestError(
                f"manifest {path} is {_kind(mode)}; it must be a regular file or a link to one"
            )
        return _read_at_most(fd, path, limit)
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _read_at_most(fd: int, path: Path, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := os.read(fd, min(65536, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ManifestError(f"manifest {path} is larger than {limit} bytes")
    return b"".join(chunks)


def target_of(path: Path) -> Path:
    """The file a write of ``path`` replaces: the end of its symlink chain, or ``path`` itself."""
    return Path(os.path.realpath(path))


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` atomically: temp file, fsync, rename over the target, fsync the directory."""
    target = target_of(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as handle:
                handle.write(data)
                handle.flush()
            os.fsync(fd)
        finally:
            os.close(fd)
        _copy_mode(target, temp)
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise ManifestError(f"cannot write manifest {path}: {exc.strerror or exc}") from None
    fsync_directory(target.parent)


def _copy_mode(original: Path, temp: Path) -> None:
    try:
        os.chmod(temp, original.stat().st_mode & 0o777)
    except FileNotFoundError:
        os.chmod(temp, 0o644)


def remove_stale_temp_files(path: Path) -> None:
    """Temp files are only ever left by a crash mid-write; the manifest itself is intact."""
    target = target_of(path)
    for stale in target.parent.glob(f".{target.name}.*{_TEMP_SUFFIX}"):
        stale.unlink(missing_ok=True)
