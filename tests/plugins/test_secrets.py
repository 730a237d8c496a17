"""Secrets resolve through four sources in order, and are never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_pm.errors import ConfigValidationError
from agent_pm.plugins import secrets
from agent_pm.plugins.secrets import MASK, SecretResolver, mask_config, redact, unmask_config
from agent_pm.settings import Settings


def resolver(tmp_path: Path, env: dict[str, str], file: dict | None = None, kind: str = "yaml"):
    environ = dict(env)
    if file is not None:
        path = tmp_path / f"secrets.{kind}"
        path.write_text(json.dumps(file))  # JSON is valid YAML too
        environ["PLUGIN_SECRET_PATH"] = str(path)
    return SecretResolver(Settings.from_env(environ))


def test_secrets_inline_literal_wins_over_every_other_source(tmp_path: Path) -> None:
    found = resolver(tmp_path, {"TOKEN": "env"}, {"TOKEN": "file"}).resolve(
        "p", ["TOKEN"], {"TOKEN": "inline"}
    )
    assert found.values == {"TOKEN": "inline"} and found.missing == ()


def test_secrets_inline_env_reference_reads_the_named_variable(tmp_path: Path) -> None:
    environ = {"OTHER": "from-other", "PLUGIN_SECRET_ENV_ALLOW": "OTHER"}
    found = resolver(tmp_path, environ).resolve("p", ["TOKEN"], {"TOKEN": {"env": "OTHER"}})
    assert found.values == {"TOKEN": "from-other"}


def test_secrets_environment_comes_before_settings_and_file(tmp_path: Path) -> None:
    found = resolver(tmp_path, {"SLACK_BOT_TOKEN": "env"}, {"SLACK_BOT_TOKEN": "file"}).resolve(
        "p", ["SLACK_BOT_TOKEN"], {}
    )
    assert found.values["SLACK_BOT_TOKEN"] == "env"


def test_secrets_settings_attribute_is_the_third_source(tmp_path: Path) -> None:
    settings = Settings(slack_bot_token="from-settings", environ={})
    found = SecretResolver(settings).resolve("p", ["SLACK_BOT_TOKEN"], {})
    assert found.values["SLACK_BOT_TOKEN"] == "from-settings"


@pytest.mark.parametrize("kind", ["yaml", "json"])
def test_secrets_file_prefers_plugin_section_then_top_level_then_global(
    tmp_path: Path, kind: str
) -> None:
    file = {
        "plugins": {"p": {"A": "scoped"}},
        "A": "top",
        "B": "top",
        "global": {"A": "global", "B": "global", "C": "global"},
    }
    found = resolver(tmp_path, {}, file, kind).resolve("p", ["A", "B", "C", "D"], {})
    assert found.values == {"A": "scoped", "B": "top", "C": "global"}
    assert found.missing == ("D",)


def test_secrets_unreadable_file_counts_as_empty_and_logs_no_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text("TOKEN: [unclosed hunter2\n")
    found = SecretResolver(Settings.from_env({"PLUGIN_SECRET_PATH": str(path)})).resolve(
        "p", ["TOKEN"], {}
    )
    assert found.missing == ("TOKEN",)
    assert "unreadable" in caplog.text and "hunter2" not in caplog.text


def test_secrets_file_is_parsed_again_only_when_its_content_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text("TOKEN: one\n")
    resolver = SecretResolver(Settings.from_env({"PLUGIN_SECRET_PATH": str(path)}))
    parsed: list[bytes] = []
    parse = secrets._parse_secret_file
    monkeypatch.setattr(
        secrets, "_parse_secret_file", lambda p, raw: parsed.append(raw) or parse(p, raw)
    )

    def token() -> str:
        return resolver.resolve("p", ["TOKEN"], {}).values["TOKEN"]

    assert (token(), token()) == ("one", "one")
    assert parsed == [b"TOKEN: one\n"]
    path.write_text("TOKEN: two\n")
    assert token() == "two" and len(parsed) == 2
    path.write_text("TOKEN: [unclosed\n")
    assert resolver.resolve("p", ["TOKEN"], {}).missing == ("TOKEN",)


def test_secrets_are_masked_and_a_sent_back_mask_keeps_the_stored_value() -> None:
    stored = {"channel": "#a", "secrets": {"TOKEN": "s3cr3t", "OTHER": {"env": "X"}}}
    masked = mask_config(stored)
    assert masked == {"channel": "#a", "secrets": {"TOKEN": MASK, "OTHER": MASK}}
    update = {"channel": "#b", "secrets": {"TOKEN": MASK, "OTHER": "new"}}
    assert unmask_config(update, stored) == {
        "channel": "#b",
        "secrets": {"TOKEN": "s3cr3t", "OTHER": "new"},
    }
    assert mask_config({"secrets": "literal-string"}) == {"secrets": MASK}


def test_secrets_mask_without_stored_value_is_rejected() -> None:
    with pytest.raises(ConfigValidationError) as caught:
        unmask_config({"secrets": {"NEW": MASK}}, {})
    assert caught.value.path == "$.secrets.NEW"


def test_secrets_redact_replaces_every_occurrence() -> None:
    assert redact("token abcd1234 and abcd1234", ["abcd1234", "ab"]) == "token *** and ***"


def test_secrets_optional_ones_resolve_but_are_never_missing(tmp_path: Path) -> None:
    found = resolver(tmp_path, {"BASE_URL": "http://127.0.0.1:1"}).resolve(
        "p", ["TOKEN"], {}, optional=["BASE_URL", "ABSENT"]
    )
    assert found.values == {"BASE_URL": "http://127.0.0.1:1"}
    assert found.missing == ("TOKEN",)
