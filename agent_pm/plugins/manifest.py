"""The plugin manifest: tolerant, safe loading and atomic, comment-preserving saving.

The manifest is a YAML list of entries. Each entry is validated on its own, so one bad entry is
reported (and written back untouched) while the others load. The YAML tree is kept in ruamel's
round-trip form so operators' comments and key order survive every write.
"""

from __future__ import annotations

import copy
import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.comments import Comment, CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from agent_pm.errors import ManifestError, UnloadableChangeError
from agent_pm.plugins.dispatch import THREAD_SLOTS_PER_PLUGIN
from agent_pm.plugins.health import HealthThresholds
from agent_pm.plugins.manifest_file import (
    MAX_MANIFEST_BYTES,
    atomic_write,
    read_bounded,
    remove_stale_temp_files,
)
from agent_pm.plugins.quarantine import QuarantineSettings

__all__ = [
    "MAX_MANIFEST_BYTES",
    "Isolation",
    "Limits",
    "Manifest",
    "ManifestEntry",
    "ManifestItem",
    "PromotionSettings",
    "current_digest",
    "parse_bytes",
    "to_plain",
    "write_text",
]

MAX_DEPTH = 32
MAX_NODES = 100_000
_STANDARD_TAGS = frozenset(
    f"tag:yaml.org,2002:{kind}"
    for kind in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
)

PluginName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
ModulePath = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_]\w*$")
]
HookName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


# Where a plugin runs: in the service's process, in a worker process of its own, or inline
# until it misbehaves, then in a worker process (``agent_pm.plugins.promotion``).
Isolation = Literal["inline", "process", "auto"]


class Limits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Resource limits of an isolated plugin's worker; reaching one ends the worker."""

    memory_mb: Annotated[int, msgspec.Meta(ge=64, le=1_048_576)] | None = None
    cpu_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] | None = None


class PromotionSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """When an ``isolation: auto`` plugin is moved to a worker process (the ``promotion:`` mapping).

    ``blocks`` steps of its async handlers holding the event loop for ``block_ms`` or longer
    (unset: ``LOOP_BLOCK_WARN_MS``, the threshold the attribution warns at) within
    ``window_seconds``, or ``stuck_threads`` sync calls still running in their threads past
    their timeout, promote it. After an operator moves it back inline, it is not promoted again
    for ``hold_seconds``.
    """

    block_ms: Annotated[float, msgspec.Meta(gt=0, le=60_000)] | None = None
    blocks: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 3
    window_seconds: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0
    stuck_threads: Annotated[int, msgspec.Meta(ge=1, le=THREAD_SLOTS_PER_PLUGIN)] = 1
    hold_seconds: Annotated[float, msgspec.Meta(ge=0, le=604_800)] = 3600.0


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
    health: HealthThresholds = msgspec.field(default_factory=HealthThresholds)
    # ``false`` turns quarantine off; a mapping tunes it.
    quarantine: QuarantineSettings | bool = True
    # Unset follows ISOLATION_DEFAULT.
    isolation: Isolation | None = None
    limits: Limits | None = None
    # Only for isolation: auto (or unset, when ISOLATION_DEFAULT may be auto).
    promotion: PromotionSettings | None = None

    def __post_init__(self) -> None:
        if self.limits is not None and self.isolation == "inline":
            raise ValueError("limits apply only to isolated plugins (isolation: process or auto)")
        if self.promotion is not None and self.isolation in ("inline", "process"):
            raise ValueError(
                f"promotion applies only to isolation: auto, not isolation: {self.isolation}"
            )

    @property
    def quarantine_settings(self) -> QuarantineSettings:
        """The breaker settings, with ``true``/``false`` read as the defaults, on or off."""
        if isinstance(self.quarantine, QuarantineSettings):
            return self.quarantine
        return QuarantineSettings(enabled=self.quarantine)


@dataclass(frozen=True)
class ManifestItem:
    """One list item of the manifest: its key in the registry and either an entry or an error.

    ``raw`` is a plain copy of the item as written (dicts and lists), for showing what an
    invalid entry says.
    """

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


def _bounded(
    root: Any, children: Callable[[Any], Iterable[Any]], error: Callable[[str], Exception]
) -> Iterator[Any]:
    """Every node of the tree under ``root``, aliases expanded; ``error`` past ``MAX_NODES``
    nodes or ``MAX_DEPTH`` levels."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    visited = 0
    while stack:
        current, depth = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            raise error(f"manifest has more than {MAX_NODES} nodes (alias expansion?)")
        if depth > MAX_DEPTH:
            raise error(f"manifest is nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children(current))
        yield current


def _node_children(node: Node) -> Iterable[Node]:
    if isinstance(node, MappingNode):
        return [child for pair in node.value for child in pair]
    return node.value if isinstance(node, SequenceNode) else ()


def _value_children(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        return [child for pair in value.items() for child in pair]
    return value if isinstance(value, list) else ()


def _check_node(node: Node) -> None:
    """Refuse object-constructing tags, deep nesting, alias bombs and text that is not valid
    Unicode (a ``"\\ud800"`` escape) before anything is built."""
    for current in _bounded(node, _node_children, ManifestError):
        if current.tag not in _STANDARD_TAGS:
            raise ManifestError(f"unsupported YAML tag {current.tag!r} at line {_line(current)}")
        if isinstance(current, ScalarNode) and not _encodable(current.value):
            raise ManifestError(f"text at line {_line(current)} is not valid Unicode")


def _check_shape(value: Any) -> None:
    """Refuse values that would compose into more nodes or levels than :func:`_check_node`
    allows, counted the same way; cheap, so a bomb is refused before it is dumped."""
    for _ in _bounded(value, _value_children, UnloadableChangeError):
        pass


def _line(node: Node) -> int | str:
    return node.start_mark.line + 1 if node.start_mark else "?"


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.width = 4096
    return yaml


def parse_bytes(data: bytes) -> CommentedSeq:
    """Parse manifest bytes exactly as :meth:`Manifest.load` does; ``ManifestError`` otherwise."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ManifestError("manifest is not UTF-8 text") from None
    return parse(text)


def parse(text: str) -> CommentedSeq:
    """Parse manifest text safely into a round-trip list; raise ``ManifestError`` otherwise."""
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
    plain = to_plain(raw)
    label = plain.get("name") if isinstance(plain, dict) else None
    key = label if isinstance(label, str) and label else f"<entry {index + 1}>"
    try:
        entry = msgspec.convert(plain, ManifestEntry)
    except msgspec.ValidationError as exc:
        return ManifestItem(key, index, None, f"invalid manifest entry: {exc}", plain)
    if entry.name in seen:
        return ManifestItem(
            f"{key} (entry {index + 1})", index, None, f"duplicate plugin name {key!r}", plain
        )
    seen.add(entry.name)
    return ManifestItem(key, index, entry, None, plain)


def current_digest(path: Path) -> str:
    """SHA-256 of the file at ``path`` as it is now, ``""`` when there is none (as ``load``)."""
    data = read_bounded(path)
    return "" if data is None else hashlib.sha256(data).hexdigest()


class Manifest:
    """A parsed manifest file: the round-trip tree and the validated view of its entries.

    The tree never leaves this class: callers change a copy with :meth:`set`, :meth:`add` and
    :meth:`remove`, each of which checks the result exactly as :meth:`load` would read it back.
    """

    def __init__(self, path: Path, root: CommentedSeq, digest: str) -> None:
        self.path = path
        self._root = root
        self.digest = digest
        # The bytes the last set/add/remove checked, which save writes without dumping again.
        self._checked: bytes | None = None

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read and parse ``path``; a missing file is an empty manifest."""
        remove_stale_temp_files(path)
        data = read_bounded(path)
        if data is None:
            return cls(path, CommentedSeq(), "")
        return cls(path, parse_bytes(data), hashlib.sha256(data).hexdigest())

    def items(self) -> Iterator[ManifestItem]:
        """Validate every list item; duplicates after the first of a name are invalid."""
        seen: set[str] = set()
        for index, raw in enumerate(self._root):
            yield _validate(index, raw, seen)

    def item(self, name: str) -> ManifestItem:
        """The item whose key is ``name``."""
        for item in self.items():
            if item.key == name:
                return item
        raise KeyError(name)

    def copy(self) -> Manifest:
        """A deep copy to mutate as a candidate; the original stays as it was."""
        root = copy.deepcopy(self._root)
        # ruamel copies a list's comments only while copying its items, so an empty manifest
        # would lose its header comment on the first write.
        if not self._root and hasattr(self._root, Comment.attrib):
            setattr(root, Comment.attrib, copy.deepcopy(getattr(self._root, Comment.attrib)))
        return Manifest(self.path, root, self.digest)

    def set(self, name: str, **fields: Any) -> ManifestItem:
        """Set ``fields`` of the valid entry ``name``; return the entry as it would load."""
        raw = self._raw(name)
        for key, value in fields.items():
            raw[key] = value
        return self._loaded_back(name)

    def add(self, fields: dict[str, Any]) -> ManifestItem:
        """Append an entry; return it as it would load. Raises if it would not load valid."""
        self._root.append(fields)
        return self._loaded_back(str(fields.get("name")))

    def remove(self, name: str) -> None:
        """Delete the entry keyed ``name`` (valid or not)."""
        del self._root[self.item(name).index]
        self._reloaded()

    def _raw(self, name: str) -> CommentedMap:
        for index, item in enumerate(self.items()):
            if item.entry is not None and item.entry.name == name:
                raw: CommentedMap = self._root[index]
                return raw
        raise KeyError(name)

    def _reloaded(self) -> Manifest:
        """This manifest as ``load`` would read it back once written.

        Raises :class:`UnloadableChangeError` (nothing has been written) when ``load`` would
        refuse the text: too large, too deep, too many nodes, not encodable.
        """
        self._checked = None
        _check_shape(self._root)  # fails fast, before dumping a bomb, on the same limits
        text = self.dumps()
        try:
            data = text.encode()
        except UnicodeEncodeError as exc:
            bad = text[exc.start : exc.end].encode("unicode_escape").decode()
            raise UnloadableChangeError(
                f"text {bad} is not valid Unicode (a lone surrogate)"
            ) from None
        try:
            reloaded = Manifest(self.path, parse_bytes(data), "")
        except ManifestError as exc:
            raise UnloadableChangeError(str(exc)) from None
        self._checked = data
        return reloaded

    def _loaded_back(self, name: str) -> ManifestItem:
        """The entry ``name`` as it loads back; refused unless valid and equal to this one."""
        item = self._reloaded().item(name)
        if item.entry is None:
            raise UnloadableChangeError(item.error or "invalid manifest entry")
        if item != _validate(item.index, self._root[item.index], set()):
            raise UnloadableChangeError(f"entry {name!r} would not load back as written")
        return item

    def dumps(self) -> str:
        # Entries go one per block item even when the file said `[]`; ruamel also cannot emit a
        # commented flow list (a deep copy forgets the style) that became empty again.
        self._root.fa.set_block_style()
        stream = io.StringIO()
        _yaml().dump(self._root, stream)
        return stream.getvalue()

    def save(self) -> None:
        """Write atomically (through a symlink, which stays one)."""
        data = self._checked if self._checked is not None else self.dumps().encode()
        atomic_write(self.path, data)
        self.digest = hashlib.sha256(data).hexdigest()


def write_text(path: Path, text: str) -> None:
    """Replace the file at ``path`` with ``text``, byte for byte, as atomically as ``save``."""
    atomic_write(path, text.encode())
