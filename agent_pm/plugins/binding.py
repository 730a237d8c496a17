"""Secret binding: a secret the service holds stays bound to the destination it was given for.

A plugin names its destination fields in ``PluginBase.destinations``: config fields
(``api_base_url``) or secrets (``secrets.JIRA_BASE_URL``) that say where its secrets are sent.
An admin write that changes one of them is refused unless every secret the plugin would send is
given again in the same write, as a value. Keeping a stored one (``***``), or leaving it to the
environment or the secrets file, would let anyone with an admin key send credentials they never
saw to an address of their choosing. Manifest edits on disk are not concerned: whoever can write
the file can read the secrets too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent_pm.errors import ConfigValidationError
from agent_pm.plugins.base import PluginBase
from agent_pm.plugins.manifest import to_plain
from agent_pm.plugins.secrets import ResolvedSecrets, is_literal

__all__ = ["check_binding"]

_SECRET_PREFIX = "secrets."  # noqa: S105  # nosec B105: a key prefix, not a password


def _secrets_of(config: Mapping[str, Any]) -> Mapping[str, Any]:
    found = config.get("secrets")
    return found if isinstance(found, Mapping) else {}


def _setting(converted: Any, name: str) -> Any:
    if isinstance(converted, Mapping):
        return converted.get(name)
    return getattr(converted, name, None)


def _defaults(cls: type[PluginBase]) -> Any:
    """The config a plugin runs with when the manifest says nothing, or ``None``."""
    try:
        return cls.Config() if cls.Config is not None else {}
    except TypeError:  # required fields: no default to compare with
        return None


def _changed(
    destination: str,
    new: tuple[Mapping[str, Any], Any],
    stored: tuple[Mapping[str, Any], Any] | None,
    cls: type[PluginBase],
) -> bool:
    new_raw, new_converted = new
    if destination.startswith(_SECRET_PREFIX):
        key = destination.removeprefix(_SECRET_PREFIX)
        before = _secrets_of(stored[0]).get(key) if stored is not None else None
        return bool(to_plain(_secrets_of(new_raw).get(key)) != to_plain(before))
    baseline = stored[1] if stored is not None else _defaults(cls)
    if baseline is None:
        return destination in new_raw
    return bool(_setting(new_converted, destination) != _setting(baseline, destination))


def check_binding(
    cls: type[PluginBase],
    sent: Mapping[str, Any],
    new: tuple[Mapping[str, Any], Any],
    stored: tuple[Mapping[str, Any], Any] | None,
    resolved: ResolvedSecrets,
) -> None:
    """Refuse a write that points the plugin's secrets at a new destination without them.

    ``sent`` is the config as the write gave it (masks included); ``new`` and ``stored`` are
    ``(raw config, converted config)`` after and before the write (``stored`` is ``None`` for
    an install); ``resolved`` are the secrets the new config would resolve.
    """
    changed = [d for d in cls.destinations if _changed(d, new, stored, cls)]
    if not changed:
        return
    destination_keys = {d.removeprefix(_SECRET_PREFIX) for d in cls.destinations}
    given = _secrets_of(sent)
    for key in resolved.values:
        if key not in destination_keys and not is_literal(given.get(key)):
            raise ConfigValidationError(
                f"{', '.join(changed)} changed: give secret {key} again in the same write "
                "(a secret the service holds stays bound to its destination)",
                f"$.secrets.{key}",
            )
