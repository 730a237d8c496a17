"""The ``--set`` parsing and config merging of the plugin commands."""

from __future__ import annotations

import pytest

from agent_pm.admin_client import AdminError
from agent_pm.plugin_commands import _warnings, format_table, merge, parse_assignments


def test_parse_assignments_reads_yaml_scalars_and_nests_dotted_keys() -> None:
    parsed = parse_assignments(
        ["a.b.c=3", "a.b.d=true", "a.e=1.5", "name=#ops", "empty=", "nothing=null", "text=hi there"]
    )
    assert parsed == {
        "a": {"b": {"c": 3, "d": True}, "e": 1.5},
        "name": "#ops",
        "empty": None,
        "nothing": None,
        "text": "hi there",
    }


def test_parse_assignments_later_keys_win_and_replace_scalars() -> None:
    assert parse_assignments(["a=1", "a.b=2"]) == {"a": {"b": 2}}
    assert parse_assignments(["a=[1"]) == {"a": "[1"}


@pytest.mark.parametrize("item", ["novalue", "=1", "a..b=1", ".a=1"])
def test_parse_assignments_rejects_bad_items(item: str) -> None:
    with pytest.raises(AdminError, match="KEY=VALUE"):
        parse_assignments([item])


def test_merge_is_deep_and_leaves_the_base_alone() -> None:
    base = {"a": {"b": 1, "c": 2}, "d": 4}
    assert merge(base, {"a": {"b": 9}, "e": 5}) == {"a": {"b": 9, "c": 2}, "d": 4, "e": 5}
    assert base == {"a": {"b": 1, "c": 2}, "d": 4}


def test_format_table_aligns_columns() -> None:
    assert format_table(("A", "BB"), [["long", "x"]]) == "A     BB\nlong  x"


def warnings_for(**plugin: object) -> list[str]:
    return list(_warnings({"name": "p", "secrets": {"missing": []}, **plugin}))


def test_warnings_name_failures_errors_and_missing_secrets() -> None:
    assert warnings_for(state="failed", error="on_enable broke") == [
        "warning: p failed to start: on_enable broke"
    ]
    last = {"stage": "hook:post_plan", "message": "timed out"}
    assert warnings_for(state="enabled", errors=[{"stage": "x", "message": "y"}, last]) == [
        "warning: p: last error (hook:post_plan): timed out"
    ]
    assert warnings_for(state="enabled", secrets={"missing": ["A", "B"]})[0].startswith(
        "hint: p is missing secret(s) A, B"
    )
    assert warnings_for(state="disabled") == []
