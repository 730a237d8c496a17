"""Secret resolution and masking.

A plugin's secrets resolve, first match wins, from: (1) the manifest's ``config.secrets.<KEY>``
(a literal or ``{env: NAME}``), (2) the environment variable ``<KEY>``, (3) the ``Settings``
attribute ``<key lowercased>``, (4) the secrets file at ``PLUGIN_SECRET_PATH``
(``plugins.<name>.<KEY>``, then top-level ``<KEY>``, then ``global.<KEY>``). Steps 2 to 4 serve
only the names the plugin declares, and ``{env: NAME}`` only names in ``PLUGIN_SECRET_ENV_ALLOW``
(by default the plugin's declared names): a config cannot read any other variable of the process.

Resolved values are never shown: configs are masked with ``***``, and text and hook results are
redacted (every quoting of a value a :class:`Redactor` knows) before they are stored, sent or
logged; a plugin logs through a :class:`SecretLog`, whose records leave with its values masked.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, ClassVar

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from agent_pm.errors import ConfigValidationError
from agent_pm.plugins.redaction import MASK, Redactor
from agent_pm.settings import Settings

__all__ = [
    "MASK",
    "Redactor",
    "ResolvedSecrets",
    "SecretLog",
    "SecretResolver",
    "is_literal",
    "mask_config",
    "redact",
    "unmask_config",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedSecrets:
    """The values found for a plugin and the names of required secrets nobody provided."""

    values: Mapping[str, str] = field(default_factory=dict, repr=False)
    missing: tuple[str, ...] = ()

    @cached_property
    def redactor(self) -> Redactor:
        """Masks these values, however text quotes them."""
        return Redactor(self.values.values())


class SecretResolver:
    """Resolves secrets through the four sources, in order.

    The secrets file is parsed again only when its content changes (it is cached by digest), so
    resolving on the event loop costs one small read, not a YAML parse.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._file: tuple[str, Any] | None = None  # (digest of the bytes, their parse)

    def env_allowed(self, declared: Iterable[str]) -> frozenset[str]:
        """The variable names ``{env: NAME}`` may read for a plugin declaring ``declared``."""
        allow = self._settings.plugin_secret_env_allow
        return frozenset(declared if allow is None else allow)

    def check_env_refs(self, inline: Mapping[str, Any], declared: Iterable[str]) -> None:
        """Refuse ``{env: NAME}`` references to variables outside the allowlist."""
        allowed = self.env_allowed(declared)
        for key, spec in inline.items():
            name = _env_name(spec)
            if name is not None and name not in allowed:
                raise ConfigValidationError(
                    f"environment variable {name!r} is not allowed here; allowed: "
                    f"{', '.join(sorted(allowed)) or 'none'} (PLUGIN_SECRET_ENV_ALLOW)",
                    f"$.secrets.{key}.env",
                )

    def resolve(
        self,
        plugin: str,
        required: Iterable[str],
        inline: Mapping[str, Any],
        optional: Iterable[str] = (),
    ) -> ResolvedSecrets:
        """Resolve every required, optional and inline secret; report missing required ones.

        An inline key the plugin does not declare takes only its inline value: the fallback
        sources would otherwise let a config name any variable or setting of the process.
        """
        required = tuple(required)
        declared = dict.fromkeys([*required, *optional])
        allowed = self.env_allowed(declared)
        file_data = self._read_file()
        values: dict[str, str] = {}
        for key in dict.fromkeys([*declared, *inline]):
            value = self._inline(inline.get(key), allowed)
            if value is None and key in declared:
                value = self._settings.environ.get(key) or self._setting(key)
                if value is None:
                    value = _from_file(file_data, plugin, key)
            if value is not None:
                values[key] = value
        missing = tuple(key for key in required if key not in values)
        return ResolvedSecrets(values, missing)

    def _inline(self, spec: Any, allowed: frozenset[str]) -> str | None:
        name = _env_name(spec)
        if name is not None:
            return (self._settings.environ.get(name) or None) if name in allowed else None
        if isinstance(spec, str | int | float) and not isinstance(spec, bool) and spec != "":
            return str(spec)
        return None

    def _setting(self, key: str) -> str | None:
        value = getattr(self._settings, key.lower(), None)
        return value if isinstance(value, str) and value else None

    def _read_file(self) -> Mapping[str, Any]:
        path = self._settings.plugin_secret_path
        if path is None:
            return {}
        try:
            raw = path.read_bytes()
            digest = hashlib.sha256(raw).hexdigest()
            if self._file is None or self._file[0] != digest:
                self._file = (digest, _parse_secret_file(path, raw))
        except (OSError, ValueError, YAMLError) as exc:
            logger.warning("secrets file %s is unreadable: %s", path, type(exc).__name__)
            return {}
        data = self._file[1]
        return data if isinstance(data, Mapping) else {}


def _env_name(spec: Any) -> str | None:
    if isinstance(spec, Mapping) and isinstance(spec.get("env"), str):
        return str(spec["env"])
    return None


def is_literal(spec: Any) -> bool:
    """Whether a ``config.secrets`` value gives the secret itself (not the mask, not a ref)."""
    scalar = isinstance(spec, str | int | float) and not isinstance(spec, bool)
    return scalar and spec not in ("", MASK)


def _parse_secret_file(path: Path, raw: bytes) -> Any:
    text = raw.decode()
    if path.suffix == ".json":
        return json.loads(text)
    return YAML(typ="safe", pure=True).load(text)


def _from_file(data: Mapping[str, Any], plugin: str, key: str) -> str | None:
    plugins = data.get("plugins")
    scoped = plugins.get(plugin) if isinstance(plugins, Mapping) else None
    global_ = data.get("global")
    for section in (scoped, data, global_):
        if isinstance(section, Mapping):
            value = section.get(key)
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                return str(value)
    return None


def mask_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` whose ``secrets`` values are all ``***``."""
    masked = dict(config)
    if "secrets" in config:
        secrets = config["secrets"]
        masked["secrets"] = dict.fromkeys(secrets, MASK) if isinstance(secrets, Mapping) else MASK
    return masked


def unmask_config(new: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """Put stored secret specs back where an update sent the mask unchanged."""
    result = dict(new)
    new_secrets = new.get("secrets")
    if not isinstance(new_secrets, Mapping):
        return result
    stored_secrets = stored.get("secrets")
    stored_secrets = stored_secrets if isinstance(stored_secrets, Mapping) else {}
    restored = dict(new_secrets)
    for key, value in new_secrets.items():
        if value == MASK:
            if key not in stored_secrets:
                raise ConfigValidationError("masked secret has no stored value", f"$.secrets.{key}")
            restored[key] = stored_secrets[key]
    result["secrets"] = restored
    return result


def redact(text: str, values: Iterable[str]) -> str:
    """``text`` with every secret value in ``values`` (in any quoting) replaced by the mask."""
    return _redactor(tuple(values)).text(text)


@lru_cache(maxsize=64)
def _redactor(values: tuple[str, ...]) -> Redactor:
    return Redactor(values)


# The record attribute through which a SecretLog hands its values to the filter; removed there.
_VALUES_ATTR = "_agent_pm_secret_values"


class _RedactRecords(logging.Filter):
    """Masks the secret values a :class:`SecretLog` attached to a record, then drops them.

    The message, the exception and the stack are rendered here, before any handler or
    formatter sees the record, since none of those can know which values are secret.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        redactor: Redactor | None = record.__dict__.pop(_VALUES_ATTR, None)
        if not redactor:
            return True
        record.msg, record.args = redactor.text(record.getMessage()), ()
        if record.exc_info:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, redactor.text(text)
        if record.stack_info:
            record.stack_info = redactor.text(record.stack_info)
        return True


class SecretLog(logging.LoggerAdapter[logging.Logger]):
    """A plugin's ``self.log``: a logger whose records are stripped of the plugin's secrets."""

    _filter: ClassVar[_RedactRecords] = _RedactRecords()

    def __init__(self, logger: logging.Logger, values: Iterable[str] = ()) -> None:
        super().__init__(logger, {})
        self.redactor = Redactor(values)
        # One stateless filter per logger: it reads the redactor from each record.
        if self._filter not in logger.filters:
            logger.addFilter(self._filter)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(kwargs.get("extra") or {}), _VALUES_ATTR: self.redactor}
        return msg, kwargs
