"""An admin key cannot read the process environment or send secrets somewhere new through config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from msgspec import to_builtins as plain

from agent_pm.errors import ConfigValidationError
from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.secrets import MASK, SecretResolver
from agent_pm.settings import Settings
from tests.fixtures.hardening import Leaky

pytestmark = pytest.mark.anyio

TOKEN = "leaky-token-1f2e3d4c5b6a"
SERVER_ONLY = "aws-secret-9a8b7c6d5e4f"
LEAKY = "tests.fixtures.hardening:Leaky"
SLACK = "agent_pm.plugins.builtin.slack_followup_alerts:SlackFollowupAlertsPlugin"
JIRA = "agent_pm.plugins.builtin.ticket_automation:TicketAutomationPlugin"


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    Leaky.instances.clear()
    yield
    Leaky.gate = Leaky.started = None
    Leaky.instances.clear()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "PLUGIN_CONFIG_PATH": str(tmp_path / "plugins.yaml"),
        "PLUGIN_INSTALL_ALLOW": "tests.fixtures",
        "LEAKY_TOKEN": TOKEN,
        "AWS_SECRET_ACCESS_KEY": SERVER_ONLY,
        "ADMIN_API_KEY": "admin-key-" + "x" * 20,
        "SLACK_BOT_TOKEN": "xoxb-slack-token-abcdef",
        "JIRA_BASE_URL": "https://jira.example.test",
        "JIRA_EMAIL": "bot@example.test",
        "JIRA_API_TOKEN": "jira-token-0123456789",
    }


def _manifest(path: Path, *entries: str) -> Path:
    path.write_text("".join(entries))
    return path


def _entry(name: str, module: str, config: str = "{}") -> str:
    return f"- name: {name}\n  module: {module}\n  enabled: true\n  config: {config}\n"


# -- {env: NAME} and the fallback sources -------------------------------------------------------


async def test_env_reference_outside_the_allowlist_is_refused(env: dict[str, str]) -> None:
    settings = Settings.from_env(env)
    path = _manifest(settings.plugin_config_path, _entry("leaky", LEAKY))
    async with PluginRegistry(path, settings) as registry:
        for name in ("AWS_SECRET_ACCESS_KEY", "ADMIN_API_KEY", "PATH"):
            with pytest.raises(ConfigValidationError, match=f"'{name}' is not allowed") as no:
                await registry.update_config("leaky", {"secrets": {"LEAKY_TOKEN": {"env": name}}})
            assert no.value.path == "$.secrets.LEAKY_TOKEN.env"
        results = await registry.fire("post_plan")
    assert SERVER_ONLY not in repr(results) and "admin-key" not in repr(results)


async def test_env_reference_in_the_manifest_outside_the_allowlist_is_invalid(
    env: dict[str, str],
) -> None:
    settings = Settings.from_env(env)
    config = "{secrets: {LEAKY_TOKEN: {env: AWS_SECRET_ACCESS_KEY}}}"
    path = _manifest(settings.plugin_config_path, _entry("leaky", LEAKY, config))
    async with PluginRegistry(path, settings) as registry:
        meta = plain(registry.metadata_for("leaky"))
    assert meta["state"] == "invalid" and "AWS_SECRET_ACCESS_KEY" in meta["error"]


async def test_env_allowlist_setting_replaces_the_default(env: dict[str, str]) -> None:
    settings = Settings.from_env({**env, "PLUGIN_SECRET_ENV_ALLOW": "AWS_SECRET_ACCESS_KEY"})
    config = "{secrets: {LEAKY_TOKEN: {env: AWS_SECRET_ACCESS_KEY}}}"
    path = _manifest(settings.plugin_config_path, _entry("leaky", LEAKY, config))
    async with PluginRegistry(path, settings) as registry:
        assert plain(registry.metadata_for("leaky"))["state"] == "enabled"
        [result] = await registry.fire("post_plan")
    # Allowed, it resolves; the hook's return value still never shows it.
    assert result.value["plain"] == MASK and SERVER_ONLY not in repr(result)


def test_undeclared_inline_keys_get_no_fallback(env: dict[str, str]) -> None:
    resolver = SecretResolver(Settings.from_env(env))
    found = resolver.resolve(
        "leaky",
        ["LEAKY_TOKEN"],
        {"AWS_SECRET_ACCESS_KEY": "", "ADMIN_API_KEY": "", "JIRA_API_TOKEN": None},
    )
    assert found.values == {"LEAKY_TOKEN": TOKEN}


# -- hook results and history ------------------------------------------------------------------


async def test_hook_return_values_are_redacted(env: dict[str, str]) -> None:
    settings = Settings.from_env(env)
    path = _manifest(settings.plugin_config_path, _entry("leaky", LEAKY))
    async with PluginRegistry(path, settings) as registry:
        with registry.bus.subscribe() as subscription:
            [result] = await registry.fire("post_plan")
            frames = repr(subscription.drain()) + repr(registry.list_metadata())
    assert result.value == {
        "plain": MASK,
        "repr": f"'{MASK}'",
        "nested": [{"t": MASK}],
        "path": None,
    }
    assert TOKEN not in frames


async def test_rotation_during_an_inflight_call_does_not_leak_the_old_value(
    env: dict[str, str],
) -> None:
    import anyio

    settings = Settings.from_env(env)
    path = _manifest(settings.plugin_config_path, _entry("leaky", LEAKY))
    Leaky.gate, Leaky.started = anyio.Event(), anyio.Event()
    rotated = "rotated-token-777777"
    async with PluginRegistry(path, settings) as registry, anyio.create_task_group() as group:
        with registry.bus.subscribe() as subscription:
            results: list = []
            answered = anyio.Event()

            async def call() -> None:
                results.extend(await registry.fire("slow"))
                answered.set()

            group.start_soon(call)
            await Leaky.started.wait()
            await registry.update_config("leaky", {"secrets": {"LEAKY_TOKEN": rotated}})
            Leaky.gate.set()
            with anyio.fail_after(30):
                await answered.wait()
            seen = (
                repr(results) + repr(subscription.drain()) + repr(plain(registry.list_metadata()))
            )
        assert results[0].value == f"answered with {MASK}"
        Leaky.started = None
        [after] = await registry.fire("slow")
    assert TOKEN not in seen
    assert after.value == f"answered with {MASK}" and rotated not in repr(after)


# -- destinations ------------------------------------------------------------------------------


async def test_changing_a_destination_needs_the_secret_again(env: dict[str, str]) -> None:
    settings = Settings.from_env(env)
    config = f"{{secrets: {{LEAKY_TOKEN: {TOKEN}}}}}"
    path = _manifest(settings.plugin_config_path, _entry("leaky", LEAKY, config))
    evil = "http://127.0.0.1:1/collect"
    async with PluginRegistry(path, settings) as registry:
        before = path.read_bytes()
        with pytest.raises(ConfigValidationError, match="endpoint changed") as kept:
            await registry.update_config(
                "leaky", {"endpoint": evil, "secrets": {"LEAKY_TOKEN": MASK}}
            )
        assert kept.value.path == "$.secrets.LEAKY_TOKEN"
        assert path.read_bytes() == before
        # Without the key in config, the token would come from the environment: refused too.
        with pytest.raises(ConfigValidationError, match="give secret LEAKY_TOKEN again"):
            await registry.update_config("leaky", {"endpoint": evil})
        with pytest.raises(ConfigValidationError, match="give secret LEAKY_TOKEN again"):
            await registry.update_config(
                "leaky", {"endpoint": evil, "secrets": {"LEAKY_TOKEN": {"env": "LEAKY_TOKEN"}}}
            )
        # Other fields keep the stored secret; the destination changes with the secret given.
        await registry.update_config("leaky", {"label": "x", "secrets": {"LEAKY_TOKEN": MASK}})
        meta = plain(
            await registry.update_config(
                "leaky", {"endpoint": evil, "secrets": {"LEAKY_TOKEN": "a-new-token-given"}}
            )
        )
    assert meta["config"]["endpoint"] == evil and meta["state"] == "enabled"


async def test_install_pointing_at_a_new_destination_needs_the_secrets(
    env: dict[str, str],
) -> None:
    settings = Settings.from_env({**env, "PLUGIN_INSTALL_ALLOW": ""})
    path = _manifest(settings.plugin_config_path, "[]\n")
    async with PluginRegistry(path, settings) as registry:
        with pytest.raises(ConfigValidationError, match="api_base_url changed"):
            await registry.install(SLACK, name="s2", config={"api_base_url": "http://127.0.0.1:1"})
        with pytest.raises(ConfigValidationError, match=r"secrets\.JIRA_BASE_URL changed"):
            await registry.install(
                JIRA, name="j2", config={"secrets": {"JIRA_BASE_URL": "http://127.0.0.1:1"}}
            )
        # The default destination is fine with the environment's token.
        assert (plain(await registry.install(SLACK, name="s3")))["state"] == "disabled"
        assert registry.names() == ["s3"]


async def test_jira_base_url_change_keeps_no_stored_credentials(env: dict[str, str]) -> None:
    settings = Settings.from_env(env)
    path = _manifest(settings.plugin_config_path, _entry("jira", JIRA))
    async with PluginRegistry(path, settings) as registry:
        with pytest.raises(ConfigValidationError, match="give secret JIRA_"):
            await registry.update_config(
                "jira", {"secrets": {"JIRA_BASE_URL": "http://127.0.0.1:1", "JIRA_EMAIL": "x@y"}}
            )
        meta = plain(
            await registry.update_config(
                "jira",
                {
                    "secrets": {
                        "JIRA_BASE_URL": "http://127.0.0.1:1",
                        "JIRA_EMAIL": "other@example.test",
                        "JIRA_API_TOKEN": "a-token-given-again",
                    }
                },
            )
        )
    assert meta["config"]["secrets"] == dict.fromkeys(
        ("JIRA_BASE_URL", "JIRA_EMAIL", "JIRA_API_TOKEN"), MASK
    )
