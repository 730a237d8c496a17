"""Turning a manifest entry into a plugin class, its hooks and a validated, confined config."""

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
from agent_pm.plugins.paths import confine
from agent_pm.plugins.secrets import SecretResolver
from agent_pm.settings import Settings

__all__ = [
    "RESERVED_NAMES",
    "config_schema",
    "declared_secrets",
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


def config_schema(cls: type[PluginBase]) -> dict[str, Any] | None:
    """The JSON Schema of the class's ``Config`` struct; ``None`` when it takes no config."""
    return msgspec.json.schema(cls.Config) if cls.Config is not None else None


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


# Names a plugin may never subscribe as hooks: the lifecycle methods and everything else the base
# class defines (bind, emit, routes, get_secret ...), dunders included.
RESERVED_NAMES = frozenset(dir(PluginBase))


def _hook_problem(cls: type[PluginBase], hook: str) -> str | None:
    if hook.startswith("_"):
        return "private and dunder names are not hooks"
    if hook in RESERVED_NAMES:
        return "a PluginBase method (lifecycle or base class) is not a hook"
    if hook not in cls.hooks:
        return f"{cls.__name__} does not declare it in its hooks"
    if not callable(getattr(cls, hook, None)):
        return f"{cls.__name__} has no handler for it"
    return None


def handler_hooks(cls: type[PluginBase], hooks: list[str] | None) -> tuple[str, ...]:
    """The hooks a plugin subscribes to: the manifest's choice among those the class declares,
    else all of them. Each needs a handler method of the same name, and lifecycle, base-class,
    private and dunder names are refused, also in the class's own declaration."""
    chosen = tuple(hooks) if hooks is not None else tuple(cls.hooks)
    problems = [f"{hook!r} ({problem})" for hook in chosen if (problem := _hook_problem(cls, hook))]
    if problems:
        raise PluginLoadError(f"{cls.__name__} cannot subscribe hook(s): {', '.join(problems)}")
    return chosen


def validate_config(cls: type[PluginBase], config: Mapping[str, Any], settings: Settings) -> Any:
    """Convert ``config`` (less ``secrets``) into the plugin's ``Config``, with its data paths
    resolved inside ``settings.data_dir``; reject unknown keys and disallowed ``{env: NAME}``."""
    values = {key: value for key, value in config.items() if key != "secrets"}
    inline = config.get("secrets", {})
    if not isinstance(inline, Mapping):
        raise ConfigValidationError("secrets must be a mapping of secret names", "$.secrets")
    SecretResolver(settings).check_env_refs(inline, declared_secrets(cls))
    schema = cls.Config
    if schema is None:
        return values
    known = {field.encode_name for field in msgspec.structs.fields(schema)}
    for key in values:
        if key not in known:
            raise ConfigValidationError(f"unknown config key {key!r}", f"$.{key}")
    try:
        converted = msgspec.convert(values, schema, strict=True)
    except msgspec.ValidationError as exc:
        detail, _, where = str(exc).partition(" - at `")
        raise ConfigValidationError(detail, where.rstrip("`") or "$") from None
    return confine(converted, settings.data_dir)


def declared_secrets(cls: type[PluginBase]) -> tuple[str, ...]:
    """The secret names a plugin class declares, required then optional."""
    return (*cls.required_secrets, *cls.optional_secrets)
