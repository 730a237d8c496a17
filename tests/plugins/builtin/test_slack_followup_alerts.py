from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from agent_pm.demo.slack import SlackStandIn
from agent_pm.plugins.builtin._http import PluginHTTPError
from agent_pm.plugins.builtin.slack_followup_alerts import SlackFollowupAlertsPlugin

TOKEN = "xoxb-slack-s3cr3t"
FOLLOWUP = {"title": "Confirm launch date", "owner": "ana", "due": "2026-12-01", "extra": 1}


@pytest.fixture
def slack() -> SlackStandIn:
    return SlackStandIn(TOKEN)


async def _enabled(
    slack: SlackStandIn, serve: Callable[[Any], str], sleeper: Any, token: str = TOKEN
) -> SlackFollowupAlertsPlugin:
    config = SlackFollowupAlertsPlugin.Config(api_base_url=serve(slack.app), channel="#launch")
    plugin = SlackFollowupAlertsPlugin(config)
    plugin.bind("slack_followup_alerts", {"SLACK_BOT_TOKEN": token}, [], None)
    plugin.sleep = sleeper
    await plugin.on_enable()
    return plugin


@pytest.mark.anyio
async def test_followup_posts_message_with_bearer_token(
    slack: SlackStandIn, serve: Callable[[Any], str], sleeper: Any
) -> None:
    plugin = await _enabled(slack, serve, sleeper)
    result = await plugin.post_alignment_followup(followup=FOLLOWUP)
    await plugin.on_disable()

    (request,) = slack.requests
    assert request.path == "/chat.postMessage"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.body["channel"] == "#launch"
    assert request.body["text"] == "Alignment follow-up: Confirm launch date"
    blocks = request.body["blocks"]
    assert [block["type"] for block in blocks] == ["section", "section"]
    assert blocks[1]["text"] == {"type": "mrkdwn", "text": "*owner*: ana\n*due*: 2026-12-01"}
    assert result == {"channel": "#launch", "ts": "1700000000.000001"}


@pytest.mark.anyio
async def test_feedback_posts_rating_and_comment(
    slack: SlackStandIn, serve: Callable[[Any], str], sleeper: Any
) -> None:
    plugin = await _enabled(slack, serve, sleeper)
    feedback = {"title": "Great", "rating": 4, "comment": "Loved it", "submitted_by": "bo"}
    await plugin.on_feedback(feedback=feedback)
    await plugin.on_disable()

    (message,) = slack.messages
    assert message["text"] == "New feedback ★★★★☆ from bo: Great"
    assert message["blocks"][1]["text"]["text"] == "> Loved it"


@pytest.mark.anyio
async def test_slack_ok_false_raises_without_leaking_token(
    slack: SlackStandIn,
    serve: Callable[[Any], str],
    sleeper: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "xoxb-wrong-s3cr3t"
    plugin = await _enabled(slack, serve, sleeper, token=wrong)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PluginHTTPError) as caught:
        await plugin.post_alignment_followup(followup=FOLLOWUP)
    await plugin.on_disable()

    assert str(caught.value) == "POST /chat.postMessage failed: Slack error invalid_auth"
    assert sleeper.delays == []
    for text in (str(caught.value), *(r.getMessage() for r in caplog.records)):
        assert wrong not in text and TOKEN not in text


@pytest.mark.anyio
async def test_429_honours_retry_after(
    slack: SlackStandIn, serve: Callable[[Any], str], sleeper: Any
) -> None:
    slack.faults.retry_after_seconds = 3
    slack.faults.queue(429, 429)
    plugin = await _enabled(slack, serve, sleeper)
    result = await plugin.post_alignment_followup(followup=FOLLOWUP)
    await plugin.on_disable()

    assert sleeper.delays == [3.0, 3.0]
    assert [r.status for r in slack.requests] == [429, 429, 200]
    assert result["ts"]


@pytest.mark.anyio
async def test_5xx_gives_up_after_max_retries(
    slack: SlackStandIn, serve: Callable[[Any], str], sleeper: Any
) -> None:
    slack.faults.failure_rate, slack.faults.failure_status = 1.0, 502
    plugin = await _enabled(slack, serve, sleeper)
    with pytest.raises(PluginHTTPError, match=r"HTTP 502 after 4 attempts$"):
        await plugin.on_feedback(feedback={"title": "x", "rating": 1})
    await plugin.on_disable()

    assert len(slack.requests) == 4


@pytest.mark.anyio
async def test_missing_token_skips_without_http(
    slack: SlackStandIn, serve: Callable[[Any], str]
) -> None:
    config = SlackFollowupAlertsPlugin.Config(api_base_url=serve(slack.app))
    plugin = SlackFollowupAlertsPlugin(config)
    plugin.bind("slack_followup_alerts", {}, ["SLACK_BOT_TOKEN"], None)
    await plugin.on_enable()

    assert await plugin.post_alignment_followup(followup=FOLLOWUP) == {"skipped": "missing secrets"}
    assert await plugin.on_feedback(feedback={}) == {"skipped": "missing secrets"}
    await plugin.on_disable()
    assert slack.requests == []


def test_config_defaults_and_unknown_fields() -> None:
    config = msgspec.convert({}, SlackFollowupAlertsPlugin.Config)
    assert (config.channel, config.api_base_url) == ("#agent-pm", "https://slack.com/api")
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"token": "x"}, SlackFollowupAlertsPlugin.Config)
