"""Config forms from a plugin's schema, and posted forms read back into a config."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import msgspec
import pytest

from agent_pm.api.dashboard._schema_form import (
    ConfigField,
    FormError,
    config_fields,
    json_error,
    read_form,
)
from agent_pm.plugins import PluginBase
from agent_pm.plugins.loader import config_schema


class Rich(PluginBase):
    name = "rich"
    hooks = ()

    class Config(msgspec.Struct, forbid_unknown_fields=True):
        url: Annotated[str, msgspec.Meta(description="Where to post")]
        retries: int = 3
        ratio: float = 0.5
        verbose: bool = False
        mode: Literal["fast", "safe"] = "safe"
        tags: list[str] = []


SCHEMA = config_schema(Rich)


def test_fields_carry_type_default_required_and_description() -> None:
    fields = {f.name: f for f in config_fields(SCHEMA)}
    assert list(fields) == ["url", "retries", "ratio", "verbose", "mode", "tags"]
    assert fields["url"].required and fields["url"].description == "Where to post"
    assert fields["url"].default_text == "required"
    assert (fields["retries"].kind, fields["retries"].default) == ("integer", 3)
    assert fields["mode"].kind == "enum" and fields["mode"].choices == ["fast", "safe"]
    assert fields["verbose"].kind == "boolean" and fields["tags"].kind == "json"


def test_no_schema_gives_no_fields() -> None:
    assert config_fields(None) == [] and config_fields({}) == []


def test_read_form_types_values_and_keeps_unshown_keys() -> None:
    fields = config_fields(SCHEMA)
    form = {
        "field.url": "https://x",
        "field.retries": "5",
        "field.ratio": "",
        "field.verbose": "true",
        "field.mode": "fast",
        "field.tags": '["a", "b"]',
    }
    current = {"url": "old", "secrets": {"TOKEN": "***"}}
    config = read_form(fields, form, current)
    assert config == {
        "url": "https://x",
        "retries": 5,
        "verbose": True,
        "mode": "fast",
        "tags": ["a", "b"],
        "secrets": {"TOKEN": "***"},
    }


def test_read_form_names_the_field_it_cannot_read() -> None:
    fields = config_fields(SCHEMA)
    with pytest.raises(FormError) as missing:
        read_form(fields, {"field.url": " "}, {})
    assert missing.value.field == "url" and "required" in missing.value.detail
    with pytest.raises(FormError) as bad:
        read_form(fields, {"field.url": "u", "field.tags": "[1,"}, {})
    assert bad.value.field == "tags" and "line 1, column 4" in bad.value.detail


def test_json_errors_name_line_and_column() -> None:
    text = '{\n  "a": 1,\n  "b" 2\n}'
    with pytest.raises(json.JSONDecodeError) as exc:
        json.loads(text)
    message = json_error(text, exc.value)
    assert message.startswith("line 3, column 7: Expecting ':' delimiter")
    assert "'\"b\" 2'" in message


def test_field_text_shows_configured_values_only() -> None:
    field = ConfigField("tags", "json", "array", False, [], "", [])
    assert field.text({}) == "" and field.text({"tags": ["x"]}) == '["x"]'
