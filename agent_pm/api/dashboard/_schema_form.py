"""Config forms generated from a plugin's config schema, and the posted form read back.

The schema is msgspec's JSON Schema of the plugin class's ``Config`` struct, taken into the
plugin's metadata (``config_schema``) when the registry imported the class, so rendering a form
imports nothing. Scalars (strings, numbers, booleans, enumerations) get a typed input; anything
else (lists, objects, unions) gets a small JSON box.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["FIELD_PREFIX", "ConfigField", "FormError", "config_fields", "json_error", "read_form"]

FIELD_PREFIX = "field."
_SCALARS = {"string", "integer", "number", "boolean"}


@dataclass(frozen=True)
class ConfigField:
    """One field of a config form."""

    name: str
    kind: str  # string, integer, number, boolean, enum or json
    type: str
    required: bool
    default: Any
    description: str
    choices: list[str]

    @property
    def default_text(self) -> str:
        return "required" if self.required else json.dumps(self.default)

    def text(self, config: dict[str, Any]) -> str:
        """The input's value: the configured value, else blank (the default shows as hint)."""
        if self.name not in config:
            return ""
        value = config[self.name]
        if self.kind in ("json",) or not isinstance(value, str):
            return json.dumps(value)
        return value


class FormError(ValueError):
    """A posted field that cannot become a config value; ``field`` names it."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def _kind(spec: dict[str, Any]) -> tuple[str, str]:
    if "enum" in spec:
        return "enum", "one of " + ", ".join(map(str, spec["enum"]))
    kind = spec.get("type")
    if isinstance(kind, str) and kind in _SCALARS:
        return kind, kind
    if isinstance(kind, list):
        return "json", " | ".join(kind)
    options = spec.get("anyOf", [])
    if options:
        return "json", " | ".join(str(o.get("type", "object")) for o in options)
    return "json", str(kind or "any")


def config_fields(schema: dict[str, Any] | None) -> list[ConfigField]:
    """The fields of a plugin's config ``schema``; none without one."""
    if not schema:
        return []
    ref = schema.get("$ref", "").rpartition("/")[2]
    struct = schema.get("$defs", {}).get(ref, schema)
    required = set(struct.get("required", []))
    fields = []
    for name, spec in struct.get("properties", {}).items():
        kind, label = _kind(spec)
        fields.append(
            ConfigField(
                name=name,
                kind=kind,
                type=label,
                required=name in required,
                default=spec.get("default"),
                description=str(spec.get("description") or spec.get("title") or ""),
                choices=[str(v) for v in spec.get("enum", [])],
            )
        )
    return fields


def json_error(text: str, exc: json.JSONDecodeError) -> str:
    """A JSON syntax error naming its line and column, with the offending line quoted."""
    lines = text.splitlines() or [""]
    line = lines[min(exc.lineno, len(lines)) - 1].strip()
    return f"line {exc.lineno}, column {exc.colno}: {exc.msg} (near {line[:60]!r})"


def _value(field: ConfigField, raw: str) -> Any:
    if field.kind == "boolean":
        return raw == "true"
    if field.kind in ("string", "enum"):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FormError(field.name, f"not valid JSON, {json_error(raw, exc)}") from None


def read_form(
    fields: list[ConfigField], form: dict[str, str], current: dict[str, Any]
) -> dict[str, Any]:
    """The config a posted field form describes.

    Blank optional fields are left out (their default applies); keys the form does not show
    (``secrets``, masked) keep their current value.
    """
    shown = {f.name for f in fields}
    config = {key: value for key, value in current.items() if key not in shown}
    for field in fields:
        raw = form.get(FIELD_PREFIX + field.name, "")
        if field.kind == "boolean":
            config[field.name] = raw == "true"
        elif raw.strip() == "":
            if field.required:
                raise FormError(field.name, "is required")
        else:
            config[field.name] = _value(field, raw.strip() if field.kind != "string" else raw)
    return config
