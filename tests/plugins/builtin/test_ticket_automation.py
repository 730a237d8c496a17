from __future__ import annotations

import base64
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from agent_pm.demo.jira import JiraStandIn
from agent_pm.plugins.builtin._http import PluginHTTPError
from agent_pm.plugins.builtin.ticket_automation import TicketAutomationPlugin

EMAIL = "pm@example.com"
TOKEN = "jira-token-s3cr3t"
PLAN = {
    "id": "plan-7",
    "title": "Ship search",
    "idea": "Users cannot find documents.",
    "goals": ["fast", "relevant"],
    "steps": [{"title": "index docs", "owner": "ana", "estimate_days": 2}, {"title": "rank"}],
}


@pytest.fixture
def jira() -> JiraStandIn:
    return JiraStandIn(EMAIL, TOKEN)


@pytest.fixture
async def plugin(
    jira: JiraStandIn, serve: Callable[[Any], str], sleeper: Any
) -> AsyncIterator[TicketAutomationPlugin]:
    yield await _enabled(jira, serve, sleeper)


async def _enabled(
    jira: JiraStandIn, serve: Callable[[Any], str], sleeper: Any, **config: Any
) -> TicketAutomationPlugin:
    plugin = TicketAutomationPlugin(TicketAutomationPlugin.Config(**config))
    secrets = {"JIRA_BASE_URL": serve(jira.app), "JIRA_EMAIL": EMAIL, "JIRA_API_TOKEN": TOKEN}
    plugin.bind("ticket_automation", secrets, [], None)
    plugin.sleep = sleeper
    await plugin.on_enable()
    return plugin


@pytest.mark.anyio
async def test_post_plan_creates_issue_with_basic_auth_and_adf(
    plugin: TicketAutomationPlugin, jira: JiraStandIn
) -> None:
    result = await plugin.post_plan(plan=PLAN, context={"user": "ana"})
    await plugin.on_disable()

    assert result["issue_key"] == "AGENTPM-1"
    assert result["url"].endswith("/browse/AGENTPM-1")
    (request,) = jira.requests
    expected = base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert request.headers["content-type"] == "application/json"
    fields = request.body["fields"]
    assert fields["project"] == {"key": "AGENTPM"}
    assert fields["summary"] == "[Agent PM] Ship search"
    assert fields["issuetype"] == {"name": "Task"}
    description = fields["description"]
    assert (description["type"], description["version"]) == ("doc", 1)
    types = [block["type"] for block in description["content"]]
    assert types == [
        "heading",
        "paragraph",
        "heading",
        "bulletList",
        "heading",
        "bulletList",
        "paragraph",
    ]
    steps = description["content"][5]["content"]
    first = steps[0]["content"][0]["content"][0]["text"]
    assert first == "index docs (owner: ana, estimate: 2 d)"
    assert steps[1]["content"][0]["content"][0]["text"] == "rank"


@pytest.mark.anyio
async def test_post_plan_adds_configured_watchers(
    jira: JiraStandIn, serve: Callable[[Any], str], sleeper: Any
) -> None:
    plugin = await _enabled(jira, serve, sleeper, watchers=["acc-1", "acc-2"], project_key="OPS")
    result = await plugin.post_plan(plan={"title": "Minimal"})
    await plugin.on_disable()

    assert result["issue_key"] == "OPS-1"
    assert jira.watchers == {"OPS-1": ["acc-1", "acc-2"]}
    assert [r.path for r in jira.requests][1:] == ["/rest/api/3/issue/OPS-1/watchers"] * 2
    assert jira.requests[1].headers["content-type"] == "application/json"
    description = jira.issues["OPS-1"]["description"]
    assert description["content"] == [
        {"type": "heading", "attrs": {"level": 1}, "content": [{"type": "text", "text": "Minimal"}]}
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("plan", [{}, {"title": ""}, {"idea": "no title"}, "Ship it", None])
async def test_plan_without_title_is_rejected(plugin: TicketAutomationPlugin, plan: Any) -> None:
    with pytest.raises(ValueError, match="plan"):
        await plugin.pre_plan(plan=plan)
    with pytest.raises(ValueError, match="plan"):
        await plugin.post_plan(plan=plan)
    await plugin.on_disable()


@pytest.mark.anyio
async def test_pre_plan_derives_summary_without_http(
    plugin: TicketAutomationPlugin, jira: JiraStandIn
) -> None:
    result = await plugin.pre_plan(plan={**PLAN, "extra": "tolerated"})
    await plugin.on_disable()

    assert result == {
        "summary": "[Agent PM] Ship search",
        "goals": 2,
        "steps": 2,
        "estimate_days": 2,
    }
    assert jira.requests == []


@pytest.mark.anyio
async def test_alignment_event_comments_linked_issue(
    plugin: TicketAutomationPlugin, jira: JiraStandIn
) -> None:
    key = (await plugin.post_plan(plan=PLAN))["issue_key"]
    event = {"issue_key": key, "type": "scope change", "message": "Search moved to Q3."}
    result = await plugin.post_alignment_event(event=event)
    skipped = await plugin.post_alignment_event(event={"type": "standup"})
    await plugin.on_disable()

    assert result["issue_key"] == key and result["comment_id"]
    (comment,) = jira.comments[key]
    assert comment["type"] == "doc"
    inline = comment["content"][0]["content"]
    assert inline[0] == {
        "type": "text",
        "text": "Agent PM scope change",
        "marks": [{"type": "strong"}],
    }
    assert inline[1]["text"] == ": Search moved to Q3."
    assert skipped == {"skipped": "no linked issue"}
    assert len(jira.requests) == 2


@pytest.mark.anyio
async def test_ticket_export_reports_keys(plugin: TicketAutomationPlugin) -> None:
    result = await plugin.post_ticket_export(
        ticket={"key": "AGENTPM-1"}, tickets=[{"key": "AGENTPM-2"}, {"summary": "no key"}]
    )
    await plugin.on_disable()

    assert result == {"exported": ["AGENTPM-1", "AGENTPM-2"], "count": 2}


@pytest.mark.anyio
async def test_429_waits_retry_after_then_succeeds(
    plugin: TicketAutomationPlugin, jira: JiraStandIn, sleeper: Any
) -> None:
    jira.faults.retry_after_seconds = 7
    jira.faults.queue(429)
    result = await plugin.post_plan(plan=PLAN)
    await plugin.on_disable()

    assert sleeper.delays == [7.0]
    assert [r.status for r in jira.requests] == [429, 201]
    assert result["issue_key"] == "AGENTPM-1"


@pytest.mark.anyio
async def test_retry_after_is_capped(
    jira: JiraStandIn, serve: Callable[[Any], str], sleeper: Any
) -> None:
    plugin = await _enabled(jira, serve, sleeper, retry_after_cap_seconds=5)
    jira.faults.retry_after_seconds = 3600
    jira.faults.queue(429)
    await plugin.post_plan(plan=PLAN)
    await plugin.on_disable()

    assert sleeper.delays == [5.0]


@pytest.mark.anyio
async def test_5xx_retries_are_bounded_and_error_names_only_the_call(
    plugin: TicketAutomationPlugin,
    jira: JiraStandIn,
    sleeper: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    jira.faults.failure_rate = 1.0
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PluginHTTPError) as caught:
        await plugin.post_plan(plan=PLAN)
    await plugin.on_disable()

    assert str(caught.value) == "POST /rest/api/3/issue failed: HTTP 503 after 4 attempts"
    assert caught.value.status == 503
    assert caught.value.__cause__ is None
    assert len(jira.requests) == 4
    assert sleeper.delays == [0.5, 1.0, 2.0]
    _assert_no_secret(caught.value, caplog)


@pytest.mark.anyio
async def test_bad_credentials_fail_without_retry_or_leak(
    jira: JiraStandIn, serve: Callable[[Any], str], sleeper: Any, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = TicketAutomationPlugin()
    secrets = {"JIRA_BASE_URL": serve(jira.app), "JIRA_EMAIL": EMAIL, "JIRA_API_TOKEN": "wrong"}
    plugin.bind("ticket_automation", secrets, [], None)
    plugin.sleep = sleeper
    await plugin.on_enable()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(
        PluginHTTPError, match=r"^POST /rest/api/3/issue failed: HTTP 401$"
    ) as caught:
        await plugin.post_plan(plan=PLAN)
    await plugin.on_disable()

    assert len(jira.requests) == 1 and sleeper.delays == []
    _assert_no_secret(caught.value, caplog, "wrong")


@pytest.mark.anyio
async def test_unreachable_jira_gives_up_after_bounded_retries(
    sleeper: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A bound socket that never listens: connecting to it is refused, and no one can take the port.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    plugin = TicketAutomationPlugin(TicketAutomationPlugin.Config(max_retries=1))
    secrets = {"JIRA_BASE_URL": base_url, "JIRA_EMAIL": EMAIL, "JIRA_API_TOKEN": TOKEN}
    plugin.bind("ticket_automation", secrets, [], None)
    plugin.sleep = sleeper
    await plugin.on_enable()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PluginHTTPError, match="could not connect after 2 attempts"):
        await plugin.post_plan(plan=PLAN)
    await plugin.on_disable()
    closed.close()
    assert sleeper.delays == [0.5]
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


@pytest.mark.anyio
async def test_missing_secrets_skip_without_http(jira: JiraStandIn) -> None:
    plugin = TicketAutomationPlugin()
    plugin.bind(
        "ticket_automation", {"JIRA_EMAIL": EMAIL}, ["JIRA_BASE_URL", "JIRA_API_TOKEN"], None
    )
    await plugin.on_enable()

    assert await plugin.post_plan(plan=PLAN) == {"skipped": "missing secrets"}
    assert await plugin.post_alignment_event(event={"issue_key": "X-1"}) == {
        "skipped": "missing secrets"
    }
    await plugin.on_disable()
    assert jira.requests == []


def test_config_rejects_unknown_fields() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown_field"):
        msgspec.convert({"unknown_field": 1}, TicketAutomationPlugin.Config)
    assert msgspec.convert({}, TicketAutomationPlugin.Config).project_key == "AGENTPM"


def _assert_no_secret(
    error: BaseException, caplog: pytest.LogCaptureFixture, secret: str = TOKEN
) -> None:
    encoded = base64.b64encode(f"{EMAIL}:{secret}".encode()).decode()
    texts = [str(error), repr(error), *(record.getMessage() for record in caplog.records)]
    for text in texts:
        assert secret not in text and encoded not in text and EMAIL not in text


@pytest.mark.anyio
async def test_read_timeout_is_not_retried(
    jira: JiraStandIn, serve: Callable[[Any], str], sleeper: Any
) -> None:
    # Retrying a POST whose answer timed out could create the issue twice.
    jira.faults.latency_seconds = 0.5
    plugin = await _enabled(jira, serve, sleeper, timeout_seconds=0.05)
    with pytest.raises(PluginHTTPError, match=r"^POST /rest/api/3/issue failed: ReadTimeout$"):
        await plugin.post_plan(plan=PLAN)
    await plugin.on_disable()

    assert sleeper.delays == []


@pytest.mark.anyio
@pytest.mark.parametrize("key", ["../../myself", "abc-1", "ABC-0", 12])
async def test_alignment_event_rejects_malformed_issue_keys(
    plugin: TicketAutomationPlugin, jira: JiraStandIn, key: Any
) -> None:
    with pytest.raises(ValueError, match="not a Jira issue key"):
        await plugin.post_alignment_event(event={"issue_key": key})
    await plugin.on_disable()

    assert jira.requests == []
