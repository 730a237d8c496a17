from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from agent_pm.demo._standin import Faults
from agent_pm.demo.jira import JiraStandIn
from agent_pm.demo.slack import SlackStandIn

AUTH = ("pm@example.com", "token")
FIELDS = {"project": {"key": "P"}, "summary": "s", "issuetype": {"name": "Task"}}
DOC = {"type": "doc", "version": 1, "content": []}


def _client(app: Any, **options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", **options)


@pytest.fixture
async def jira() -> AsyncIterator[tuple[JiraStandIn, httpx.AsyncClient]]:
    stand_in = JiraStandIn(*AUTH)
    async with _client(stand_in.app, auth=AUTH) as client:
        yield stand_in, client


@pytest.mark.anyio
async def test_jira_refuses_wrong_credentials(jira: tuple[JiraStandIn, httpx.AsyncClient]) -> None:
    stand_in, client = jira
    response = await client.post(
        "/rest/api/3/issue", json={"fields": FIELDS}, auth=("pm@example.com", "nope")
    )

    assert response.status_code == 401
    assert stand_in.issues == {} and stand_in.requests[0].status == 401


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"fields": []},
        {"fields": {**FIELDS, "summary": " "}},
        {"fields": {**FIELDS, "project": {}}},
        {"fields": {**FIELDS, "issuetype": "Task"}},
        {"fields": {**FIELDS, "description": "plain text"}},
    ],
)
async def test_jira_rejects_malformed_issues(
    jira: tuple[JiraStandIn, httpx.AsyncClient], body: Any
) -> None:
    response = await jira[1].post("/rest/api/3/issue", json=body)

    assert response.status_code == 400
    assert response.json()["errorMessages"]


@pytest.mark.anyio
async def test_jira_issue_watchers_and_comments(
    jira: tuple[JiraStandIn, httpx.AsyncClient],
) -> None:
    stand_in, client = jira
    created = await client.post(
        "/rest/api/3/issue", json={"fields": {**FIELDS, "description": DOC}}
    )
    key = created.json()["key"]
    watched = await client.post(f"/rest/api/3/issue/{key}/watchers", json="acc-1")
    commented = await client.post(f"/rest/api/3/issue/{key}/comment", json={"body": DOC})

    assert created.status_code == 201 and key == "P-1"
    assert created.json()["self"].startswith("http://t/rest/api/3/issue/")
    assert watched.status_code == 204 and stand_in.watchers == {key: ["acc-1"]}
    assert commented.status_code == 201 and stand_in.comments == {key: [DOC]}


@pytest.mark.anyio
@pytest.mark.parametrize("suffix", ["watchers", "comment"])
async def test_jira_unknown_issue_is_404_and_bad_bodies_400(
    jira: tuple[JiraStandIn, httpx.AsyncClient], suffix: str
) -> None:
    client = jira[1]
    missing = await client.post(f"/rest/api/3/issue/NOPE-1/{suffix}", json="x")
    await client.post("/rest/api/3/issue", json={"fields": FIELDS})
    malformed = await client.post(f"/rest/api/3/issue/P-1/{suffix}", json={"body": "text"})
    not_json = await client.post(f"/rest/api/3/issue/P-1/{suffix}", content=b"{")

    assert missing.status_code == 404
    assert malformed.status_code == not_json.status_code == 400


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("token", "body", "error"),
    [
        ("wrong", {"channel": "#c", "text": "hi"}, "invalid_auth"),
        ("xoxb", {"text": "hi"}, "channel_not_found"),
        ("xoxb", {"channel": "#c"}, "no_text"),
    ],
)
async def test_slack_errors_are_200_with_ok_false(token: str, body: Any, error: str) -> None:
    stand_in = SlackStandIn("xoxb")
    async with _client(stand_in.app, headers={"Authorization": f"Bearer {token}"}) as client:
        response = await client.post("/chat.postMessage", json=body)

    assert response.status_code == 200
    assert response.json() == {"ok": False, "error": error}
    assert stand_in.messages == []


@pytest.mark.anyio
async def test_seeded_faults_repeat_and_scripts_come_first() -> None:
    async def statuses(faults: Faults) -> list[int]:
        stand_in = SlackStandIn("xoxb", faults)
        headers = {"Authorization": "Bearer xoxb"}
        async with _client(stand_in.app, headers=headers) as client:
            for _ in range(40):
                await client.post("/chat.postMessage", json={"channel": "#c", "text": "hi"})
        return [request.status for request in stand_in.requests]

    def faults() -> Faults:
        return Faults(failure_rate=0.3, rate_limit_rate=0.2, retry_after_seconds=2, seed=7)

    first, second = await statuses(faults()), await statuses(faults())
    assert first == second
    assert {200, 429, 503} == set(first)
    scripted = Faults(script=[500, 200, 429])
    assert (await statuses(scripted))[:4] == [500, 200, 429, 200]


def test_rate_limit_answer_carries_retry_after() -> None:
    response = Faults(retry_after_seconds=9).response(429)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "9"


@pytest.mark.anyio
async def test_standin_answers_a_caller_that_gave_up_without_an_asgi_error(
    serve_here: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A slow answer outlasts the caller's timeout: the caller hangs up while the stand-in waits.
    stand_in = SlackStandIn("token", Faults(latency_seconds=0.3))
    async with serve_here(stand_in.app) as url, httpx.AsyncClient(base_url=url) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/chat.postMessage", json={"channel": "#c"}, timeout=0.05)
        with anyio.fail_after(10):
            await stand_in.answered_total(1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.anyio
async def test_standin_records_a_body_the_caller_never_finished_as_abandoned() -> None:
    stand_in = SlackStandIn("token")
    messages = iter([{"type": "http.request", "body": b"{", "more_body": True}])

    async def receive() -> dict[str, Any]:
        return next(messages, {"type": "http.disconnect"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/chat.postMessage", "headers": []}
    await stand_in.app(scope, receive, send)
    assert stand_in.answered == {499: 1} and stand_in.requests[0].status == 499
