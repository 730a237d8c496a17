"""Turning a manifest entry into a plugin class and a validated config."""

from __future__ import annotations

import importlib
import inspect
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from agent_pm.errors import ConfigValidationError, PluginLoadError
from agent_pm.plugins.base import PluginBase
from agent_pm.plugins.dispatch import describe
from agent_pm.plugins.mounts import check_route_prefix

__all__ = [
    "failure",
    "fresh_import",
    "handler_hooks",
    "import_plugin_class",
    "origin",
    "validate_config",
]

# Core modules are never re-imported by a plugin reload: only plugin code is hot.
_CORE_PREFIX = "agent_pm."
_RELOADABLE_CORE = "agent_pm.plugins.builtin."
# Frames of the import machinery say nothing about where a plugin's code went wrong.
_IMPORT_MACHINERY = (str(Path(importlib.__file__).parent), __file__)


def _split(path: str) -> tuple[str, str]:
    module_name, _, attribute = path.partition(":")
    return module_name, attribute


def import_plugin_class(path: str) -> type[PluginBase]:
    """Import ``pkg.mod:Class`` and check it is a ``PluginBase`` subclass."""
    module_name, attribute = _split(path)
    try:
        importlib.invalidate_caches()
        module = importlib.import_module(module_name)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise PluginLoadError(f"cannot import {module_name}: {failure(exc)}") from exc
    cls = getattr(module, attribute, None)
    if not (inspect.isclass(cls) and issubclass(cls, PluginBase)):
        problem = "does not exist" if cls is None else "is not a PluginBase subclass"
        raise PluginLoadError(f"{path} {problem}")
    check_route_prefix(cls)
    return cls


@contextmanager
def fresh_import(path: str) -> Iterator[type[PluginBase]]:
    """Import ``pkg.mod:Class`` anew, with its sibling modules, for the ``with`` block.

    The modules the running instance came from stay untouched; if the import or anything in the
    block fails (validation, start-up), they are put back, so a later load sees the code that
    actually runs.
    """
    module_name = _split(path)[0]
    saved = _forget(module_name)
    try:
        yield import_plugin_class(path)
    except BaseException:
        _restore(module_name, saved)
        raise


def origin(exc: BaseException) -> str | None:
    """Where ``exc`` was raised, as ``file:line``: the innermost frame outside the import
    machinery, or the offending line of a syntax error."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(("<frozen ", *_IMPORT_MACHINERY))
    ]
    if not frames:
        return None
    return f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}"


def failure(exc: BaseException) -> str:
    """A one-line description of ``exc`` with the place it was raised, for the error log."""
    where = origin(exc)
    return f"{describe(exc)} (at {where})" if where else describe(exc)


def _family(module_name: str) -> list[str]:
    """The loaded modules a reload of ``module_name`` re-imports: it and its package's modules."""
    package = module_name.rpartition(".")[0] or module_name
    prefix = package + "."
    names = [
        name
        for name in list(sys.modules)
        if name in (module_name, package) or name.startswith(prefix)
    ]
    return [
        name
        for name in names
        if not name.startswith(_CORE_PREFIX) or name.startswith(_RELOADABLE_CORE)
        if name not in ("agent_pm", "agent_pm.plugins")
    ]


def _forget(module_name: str) -> dict[str, ModuleType]:
    return {name: sys.modules.pop(name) for name in _family(module_name) if name in sys.modules}


def _restore(module_name: str, saved: Mapping[str, ModuleType]) -> None:
    if not saved:
        return
    for name in _family(module_name):
        sys.modules.pop(name, None)
    sys.modules.update(saved)


def handler_hooks(cls: type[PluginBase], hooks: list[str] | None) -> tuple[str, ...]:
    """The hooks a plugin subscribes to; each must have a handler method of the same name."""
    chosen = tuple(hooks) if hooks is not None else tuple(cls.hooks)
    missing = [hook for hook in chosen if not callable(getattr(cls, hook, None))]
    if missing:
        raise PluginLoadError(f"{cls.__name__} has no handler for hook(s): {', '.join(missing)}")
    return chosen


def validate_config(cls: type[PluginBase], config: Mapping[str, Any]) -> Any:
    """Convert ``config`` (less ``secrets``) into the plugin's ``Config``; reject unknown keys."""
    values = {key: value for key, value in config.items() if key != "secrets"}
    if "secrets" in config and not isinstance(config["secrets"], Mapping):
        raise ConfigValidationError("secrets must be a mapping of secret names", "$.secrets")
    schema = cls.Config
    if schema is None:
        return values
    known = {field.encode_name for field in msgspec.structs.fields(schema)}
    for key in values:
        if key not in known:
            raise ConfigValidationError(f"unknown config key {key!r}", f"$.{key}")
    try:
        return msgspec.convert(values, schema, strict=True)
    except msgspec.ValidationError as exc:
        detail, _, where = str(exc).partition(" - at `")
        raise ConfigValidationError(detail, where.rstrip("`") or "$") from None
