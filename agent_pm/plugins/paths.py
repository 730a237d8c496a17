"""Confinement of plugin files: every path in a plugin config resolves inside ``DATA_DIR``.

A plugin declares a path field with the :data:`DataPath` type::

    class Config(msgspec.Struct):
        path: DataPath = "exports/events.jsonl"

When a config is validated (on load and before any admin write), every ``DataPath`` field, in
nested structs and optional ones too, is checked and replaced by the absolute path it names
inside the data directory. A path is refused when it is absolute, has a ``..`` part, or leads
outside the directory through a symlink; the plugin only ever sees the resolved path.

Inside the directory, a plugin writes only files it created: :func:`claim` marks a new file as
its owner's (``.<name>.owner`` beside it, written first) and refuses a file someone else
created or marked, such as another plugin's file, the audit log or the failure store.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import msgspec
import msgspec.inspect as mi

from agent_pm.durable import fsync_directory
from agent_pm.errors import ConfigValidationError

__all__ = ["DataPath", "claim", "confine", "inside_data_dir"]

_MARK = "agent_pm_data_path"
DataPath = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=1024,
        description="A file path relative to the service's data directory (DATA_DIR)",
        extra={_MARK: True},
    ),
]


def inside_data_dir(data_dir: Path, raw: str, where: str = "$") -> Path:
    """The absolute path ``raw`` names inside ``data_dir``; ``ConfigValidationError`` if it
    is absolute, climbs with ``..`` or escapes through a symlink."""
    relative = Path(raw)
    if "\0" in raw:
        raise ConfigValidationError("a path may not contain a NUL byte", where)
    if relative.is_absolute():
        raise ConfigValidationError(f"{raw!r} must be relative to the data directory", where)
    if ".." in relative.parts:
        raise ConfigValidationError(f"{raw!r} may not contain '..'", where)
    base = Path(os.path.realpath(data_dir))
    resolved = Path(os.path.realpath(base / relative))
    if resolved == base or not resolved.is_relative_to(base):
        raise ConfigValidationError(
            f"{raw!r} leads outside the data directory {base} (through a symlink)", where
        )
    return resolved


@cache
def _path_fields(struct: type[msgspec.Struct]) -> tuple[tuple[str, bool], ...]:
    """``(attribute, is_nested_struct)`` of the fields of ``struct`` that hold data paths."""
    info = mi.type_info(struct)
    assert isinstance(info, mi.StructType)
    found: list[tuple[str, bool]] = []
    for field in info.fields:
        for kind in _alternatives(field.type):
            if isinstance(kind, mi.Metadata) and (kind.extra or {}).get(_MARK):
                found.append((field.name, False))
            elif isinstance(kind, mi.StructType):
                found.append((field.name, True))
    return tuple(found)


def _alternatives(kind: mi.Type) -> tuple[mi.Type, ...]:
    return kind.types if isinstance(kind, mi.UnionType) else (kind,)


def confine(config: Any, data_dir: Path, where: str = "$") -> Any:
    """``config`` (a converted ``Config`` struct) with its data paths resolved in ``data_dir``."""
    if not isinstance(config, msgspec.Struct):
        return config
    changes: dict[str, Any] = {}
    for name, nested in _path_fields(type(config)):
        value = getattr(config, name)
        at = f"{where}.{name}"
        if nested:
            changes[name] = confine(value, data_dir, at)
        elif isinstance(value, str):
            changes[name] = str(inside_data_dir(data_dir, value, at))
    return msgspec.structs.replace(config, **changes) if changes else config


def _owner_mark(path: Path) -> Path:
    return path.with_name(f".{path.name}.owner")


def _read_mark(mark: Path) -> str:
    fd = os.open(mark, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096).decode(errors="replace")
    finally:
        os.close(fd)


def claim(path: Path, owner: str) -> None:
    """Make sure ``path`` is ``owner``'s to write: marked as theirs, or new and marked now.

    Raises ``PermissionError`` for a file someone else created or marked.
    """
    mark = _owner_mark(path)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(mark, flags, 0o644)
    except FileExistsError:
        if _read_mark(mark) != owner:
            raise PermissionError(
                f"{path} belongs to another writer; choose another path"
            ) from None
        return
    try:
        if os.path.lexists(path):
            os.unlink(mark)
            raise PermissionError(
                f"{path} exists and was not created by {owner}; choose another path"
            )
        os.write(fd, owner.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_directory(path.parent)
