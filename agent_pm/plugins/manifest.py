"""The plugin manifest: tolerant, safe loading and atomic, comment-preserving saving.

The manifest is a YAML list of entries. Each entry is validated on its own, so one bad entry is
reported (and written back untouched) while the others load. The YAML tree is kept in ruamel's
round-trip form so operators' comments and key order survive every write.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.comments import Comment, CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from agent_pm.durable import fsync_directory
from agent_pm.errors import ManifestError

__all__ = [
    "Manifest",
    "ManifestEntry",
    "ManifestItem",
    "current_digest",
    "to_plain",
    "write_text",
]

MAX_MANIFEST_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 100_000
_STANDARD_TAGS = frozenset(
    f"tag:yaml.org,2002:{kind}"
    for kind in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
)
_TEMP_SUFFIX = ".tmp"

PluginName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
ModulePath = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_]\w*$")
]
HookName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class ManifestEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One plugin entry of the manifest, as validated."""

    name: PluginName
    module: ModulePath
    enabled: bool = False
    description: str = ""
    hooks: list[HookName] | None = None
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] | None = None
    # Keep failed calls for replay; unset follows RECORD_FAILURES.
    record_failures: bool | None = None


@dataclass(frozen=True)
class ManifestItem:
    """One list item of the manifest: its key in the registry and either an entry or an error."""

    key: str
    index: int
    entry: ManifestEntry | None
    error: str | None
    raw: Any


def to_plain(value: Any) -> Any:
    """Turn ruamel's round-trip containers into plain dicts and lists."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    # ruamel wraps some scalars (ScalarFloat, ScalarBoolean, styled strings) in subclasses.
    for plain in (bool, int, float, str):
        if isinstance(value, plain):
            return plain(value)
    return value


def _check_node(node: Node) -> None:
    """Refuse object-constructing tags, deep nesting and alias bombs before anything is built."""
    stack: list[tuple[Node, int]] = [(node, 1)]
    visited = 0
    while stack:
        current, depth = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            raise ManifestError(f"manifest has more than {MAX_NODES} nodes (alias expansion?)")
        if depth > MAX_DEPTH:
            raise ManifestError(f"manifest is nested deeper than {MAX_DEPTH} levels")
        if current.tag not in _STANDARD_TAGS:
            line = current.start_mark.line + 1 if current.start_mark else "?"
            raise ManifestError(f"unsupported YAML tag {current.tag!r} at line {line}")
        if isinstance(current, MappingNode):
            stack.extend((child, depth + 1) for pair in current.value for child in pair)
        elif isinstance(current, SequenceNode):
            stack.extend((child, depth + 1) for child in current.value)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.width = 4096
    return yaml


def parse(text: str) -> CommentedSeq:
    """Parse manifest text safely into a round-trip list; raise ``ManifestError`` otherwise."""
    if len(text.encode()) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    yaml = _yaml()
    try:
        node = yaml.compose(text)
        if node is not None:
            _check_node(node)
        data = yaml.load(text)
    except YAMLError as exc:
        raise ManifestError(f"manifest is not valid YAML: {exc}") from None
    except RecursionError:
        raise ManifestError("manifest is nested too deeply") from None
    if data is None:
        return CommentedSeq()
    if not isinstance(data, CommentedSeq):
        raise ManifestError("manifest must be a YAML list of plugin entries")
    return data


def _validate(index: int, raw: Any, seen: set[str]) -> ManifestItem:
    label = raw.get("name") if isinstance(raw, dict) else None
    key = label if isinstance(label, str) and label else f"<entry {index + 1}>"
    try:
        entry = msgspec.convert(to_plain(raw), ManifestEntry)
    except msgspec.ValidationError as exc:
        return ManifestItem(key, index, None, f"invalid manifest entry: {exc}", raw)
    if entry.name in seen:
        return ManifestItem(
            f"{key} (entry {index + 1})", index, None, f"duplicate plugin name {key!r}", raw
        )
    seen.add(entry.name)
    return ManifestItem(key, index, entry, None, raw)


def current_digest(path: Path) -> str:
    """SHA-256 of the file at ``path`` as it is now, ``""`` when there is none (as ``load``)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror}") from None


class Manifest:
    """A parsed manifest file: the round-trip tree and the validated view of its entries."""

    def __init__(self, path: Path, root: CommentedSeq, digest: str) -> None:
        self.path = path
        self.root = root
        self.digest = digest

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read and parse ``path``; a missing file is an empty manifest."""
        _remove_stale_temp_files(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls(path, CommentedSeq(), "")
        except OSError as exc:
            raise ManifestError(f"cannot read manifest {path}: {exc.strerror}") from None
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise ManifestError("manifest is not UTF-8 text") from None
        return cls(path, parse(text), hashlib.sha256(data).hexdigest())

    def items(self) -> Iterator[ManifestItem]:
        """Validate every list item; duplicates after the first of a name are invalid."""
        seen: set[str] = set()
        for index, raw in enumerate(self.root):
            yield _validate(index, raw, seen)

    def copy(self) -> Manifest:
        """A deep copy to mutate as a candidate; the original stays as it was."""
        root = copy.deepcopy(self.root)
        # ruamel copies a list's comments only while copying its items, so an empty manifest
        # would lose its header comment on the first write.
        if not self.root and hasattr(self.root, Comment.attrib):
            setattr(root, Comment.attrib, copy.deepcopy(getattr(self.root, Comment.attrib)))
        return Manifest(self.path, root, self.digest)

    def find(self, name: str) -> CommentedMap:
        """The raw mapping of the valid entry named ``name``."""
        for item in self.items():
            if item.entry is not None and item.entry.name == name:
                raw: CommentedMap = item.raw
                return raw
        raise KeyError(name)

    def dumps(self) -> str:
        # Entries go one per block item even when the file said `[]`; ruamel also cannot emit a
        # commented flow list (a deep copy forgets the style) that became empty again.
        self.root.fa.set_block_style()
        stream = io.StringIO()
        _yaml().dump(self.root, stream)
        return stream.getvalue()

    def save(self) -> None:
        """Write atomically: temp file, fsync, rename, fsync the directory."""
        data = self.dumps().encode()
        _atomic_write(self.path, data)
        self.digest = hashlib.sha256(data).hexdigest()


def write_text(path: Path, text: str) -> None:
    """Replace the file at ``path`` with ``text``, byte for byte, as atomically as ``save``."""
    _atomic_write(path, text.encode())


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as handle:
                handle.write(data)
                handle.flush()
            os.fsync(fd)
        finally:
            os.close(fd)
        _copy_mode(path, temp)
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise ManifestError(f"cannot write manifest {path}: {exc.strerror or exc}") from None
    fsync_directory(path.parent)


def _copy_mode(original: Path, temp: Path) -> None:
    try:
        os.chmod(temp, original.stat().st_mode & 0o777)
    except FileNotFoundError:
        os.chmod(temp, 0o644)


def _remove_stale_temp_files(path: Path) -> None:
    """Temp files are only ever left by a crash mid-write; the manifest itself is intact."""
    for stale in path.parent.glob(f".{path.name}.*{_TEMP_SUFFIX}"):
        stale.unlink(missing_ok=True)
