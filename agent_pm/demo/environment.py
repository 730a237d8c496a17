"""The demo's stand-ins for Jira and Slack, and the environment that points plugins at them."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from agent_pm.demo._standin import Faults
from agent_pm.demo.jira import JiraStandIn
from agent_pm.demo.loopback import serve_on_loopback
from agent_pm.demo.slack import SlackStandIn

__all__ = ["DemoServices", "demo_services"]


def _faults(enabled: bool, seed: int | None) -> Faults:
    """What the stand-ins inject. The plugins retry 503 and 429 (three retries), so a quarter of
    answers failing shows up as retries and longer durations, and about one call in a hundred
    failing for good; a slow answer (6 s) outlasts the plugins' 5 s HTTP timeout and fails."""
    if not enabled:
        return Faults(seed=seed)
    return Faults(
        failure_rate=0.25, rate_limit_rate=0.05, slow_rate=0.03, slow_seconds=6.0, seed=seed
    )


@dataclass(frozen=True)
class DemoServices:
    """The running stand-ins and the secrets that point the built-in plugins at them."""

    jira: JiraStandIn
    slack: SlackStandIn
    environ: dict[str, str]


@asynccontextmanager
async def demo_services(
    *, faults: bool = True, seed: int | None = None
) -> AsyncIterator[DemoServices]:
    """Run Jira and Slack stand-ins on loopback ports for the ``async with`` block."""
    email, jira_token, slack_token = (
        "demo@agent-pm.invalid",
        secrets.token_hex(8),
        secrets.token_hex(8),
    )
    jira = JiraStandIn(email, jira_token, _faults(faults, seed))
    slack = SlackStandIn(slack_token, _faults(faults, seed))
    async with serve_on_loopback(jira.app) as jira_url, serve_on_loopback(slack.app) as slack_url:
        yield DemoServices(
            jira,
            slack,
            {
                "JIRA_BASE_URL": jira_url,
                "JIRA_EMAIL": email,
                "JIRA_API_TOKEN": jira_token,
                "SLACK_BOT_TOKEN": slack_token,
                "SLACK_API_BASE_URL": slack_url,
            },
        )
