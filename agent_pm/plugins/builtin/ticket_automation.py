"""Ticket automation: turns plans into Jira issues and alignment events into issue comments.

Secrets: ``JIRA_BASE_URL`` (``https://example.atlassian.net``), ``JIRA_EMAIL`` and
``JIRA_API_TOKEN`` (basic auth, as Jira Cloud's REST API v3 expects).

Payloads: ``pre_plan``/``post_plan`` take ``plan`` (see :mod:`._plan`); ``post_alignment_event``
takes ``event``, a mapping whose ``issue_key`` names the issue to comment on, with optional
``type`` and ``message``; ``post_ticket_export`` takes ``ticket`` and/or ``tickets``, mappings
carrying their issue ``key``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import msgspec

from agent_pm.plugins.builtin import _adf
from agent_pm.plugins.builtin._http import HTTPConfig, HTTPPlugin, decode
from agent_pm.plugins.builtin._plan import describe, parse_plan

__all__ = ["TicketAutomationPlugin"]


class _Comment(msgspec.Struct):
    id: str


class _Issue(_Comment):
    key: str


# Project keys are upper-case letters, digits and underscores; checking keeps a key taken from
# an event from steering the request path anywhere else in the API.
_ISSUE_KEY = re.compile(r"[A-Z][A-Z0-9_]*-[1-9][0-9]*")


def _comment(event: Mapping[str, Any]) -> _adf.Node:
    kind = str(event.get("type") or "alignment event")
    message = str(event.get("message") or "")
    label = _adf.text(f"Agent PM {kind}", strong=True)
    body = [_adf.text(f": {message}")] if message else []
    return _adf.doc(_adf.paragraph(label, *body))


def _exported_keys(ticket: Any, tickets: Iterable[Any]) -> list[str]:
    found = [ticket, *tickets] if ticket is not None else list(tickets)
    return [str(item["key"]) for item in found if isinstance(item, Mapping) and item.get("key")]


class TicketAutomationPlugin(HTTPPlugin):
    """Creates a Jira issue per plan, adds watchers, and comments alignment events on issues."""

    name = "ticket_automation"
    description = "Create Jira issues from plans and comment alignment events on them."
    hooks = ("pre_plan", "post_plan", "post_alignment_event", "post_ticket_export")
    required_secrets = ("JIRA_BASE_URL", "JIRA_EMAIL", "JIRA_API_TOKEN")
    # Where the credentials go: changing it through the API needs them given again.
    destinations = ("secrets.JIRA_BASE_URL",)

    class Config(HTTPConfig, forbid_unknown_fields=True, kw_only=True):
        """Where issues go and how they look."""

        project_key: str = "AGENTPM"
        issue_type: str = "Task"
        summary_prefix: str = "[Agent PM] "
        watchers: list[str] = msgspec.field(default_factory=list)

    config: Config

    def client_options(self) -> dict[str, Any]:
        """Basic auth with the account e-mail and API token, against the site's base URL."""
        auth = httpx.BasicAuth(self.secret("JIRA_EMAIL"), self.secret("JIRA_API_TOKEN"))
        return {"base_url": self.secret("JIRA_BASE_URL"), "auth": auth}

    def summary(self, title: str) -> str:
        """The issue summary of a plan titled ``title``; Jira caps summaries at 255 characters."""
        return (self.config.summary_prefix + title)[:255]

    async def pre_plan(self, plan: Any, context: Any = None, **_: Any) -> dict[str, Any]:
        """Validate the plan before it is made and say what its issue will look like."""
        parsed = parse_plan(plan)
        return {
            "summary": self.summary(parsed.title),
            "goals": len(parsed.goals),
            "steps": len(parsed.steps),
            "estimate_days": parsed.estimate_days,
        }

    async def post_plan(self, plan: Any, context: Any = None, **_: Any) -> dict[str, Any]:
        """Create the plan's issue and add the configured watchers."""
        parsed = parse_plan(plan)
        if (skipped := self.skipped()) is not None:
            return skipped
        fields = {
            "project": {"key": self.config.project_key},
            "summary": self.summary(parsed.title),
            "issuetype": {"name": self.config.issue_type},
            "description": describe(parsed),
        }
        response = await self.http.request("POST", "/rest/api/3/issue", json={"fields": fields})
        key = decode(response, _Issue).key
        for account_id in self.config.watchers:
            await self.http.request("POST", f"/rest/api/3/issue/{key}/watchers", json=account_id)
        self.log.info("created issue %s with %d watchers", key, len(self.config.watchers))
        return {"issue_key": key, "url": self.issue_url(key)}

    def issue_url(self, key: str) -> str:
        """The browser address of issue ``key``."""
        return f"{self.secret('JIRA_BASE_URL').rstrip('/')}/browse/{key}"

    async def post_alignment_event(self, event: Mapping[str, Any], **_: Any) -> dict[str, Any]:
        """Comment the event on the issue it names in ``issue_key``."""
        key = event.get("issue_key")
        if not key:
            return {"skipped": "no linked issue"}
        if not isinstance(key, str) or not _ISSUE_KEY.fullmatch(key):
            raise ValueError(f"event issue_key {key!r} is not a Jira issue key like ABC-123")
        if (skipped := self.skipped()) is not None:
            return skipped
        path = f"/rest/api/3/issue/{key}/comment"
        response = await self.http.request("POST", path, json={"body": _comment(event)})
        return {"issue_key": key, "comment_id": decode(response, _Comment).id}

    async def post_ticket_export(
        self, ticket: Any = None, tickets: Iterable[Any] = (), **_: Any
    ) -> dict[str, Any]:
        """Report which issue keys the export carried."""
        keys = _exported_keys(ticket, tickets)
        self.log.info("exported %d tickets", len(keys))
        return {"exported": keys, "count": len(keys)}
