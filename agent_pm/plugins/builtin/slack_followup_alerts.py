"""Slack follow-up alerts: posts alignment follow-ups and new feedback to a Slack channel.

Secret: ``SLACK_BOT_TOKEN``, a bot token with ``chat:write``; optionally ``SLACK_API_BASE_URL``
overrides the configured Web API base URL. Payloads: ``post_alignment_followup``
takes ``followup``, a mapping with ``title`` and optional ``owner``, ``due``, ``status``,
``issue_key`` and ``url``; ``on_feedback`` takes ``feedback`` as the feedback collector stores it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from agent_pm.plugins.builtin._http import HTTPConfig, HTTPPlugin, PluginHTTPError, decode

__all__ = ["SlackFollowupAlertsPlugin"]

_FOLLOWUP_FIELDS = ("owner", "due", "status", "issue_key", "url")
# Slack rejects section text over 3000 characters.
_SECTION_LIMIT = 3000


class _Reply(msgspec.Struct):
    ok: bool
    error: str = "unknown_error"
    channel: str = ""
    ts: str = ""


def _section(markdown: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": markdown[:_SECTION_LIMIT]}}


def _followup_message(followup: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    title = str(followup.get("title") or "untitled follow-up")
    details = [f"*{name}*: {followup[name]}" for name in _FOLLOWUP_FIELDS if followup.get(name)]
    text = f"Alignment follow-up: {title}"
    blocks = [_section(f":pushpin: *{text}*")]
    if details:
        blocks.append(_section("\n".join(details)))
    return text, blocks


def _feedback_message(feedback: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    rating = int(feedback.get("rating") or 0)
    stars = "★" * rating + "☆" * (5 - rating)
    author = feedback.get("submitted_by") or "someone"
    text = f"New feedback {stars} from {author}: {feedback.get('title', '')}"
    blocks = [_section(f"*{text}*")]
    if feedback.get("comment"):
        blocks.append(_section(f"> {feedback['comment']}"))
    return text, blocks


class SlackFollowupAlertsPlugin(HTTPPlugin):
    """Posts alignment follow-ups and feedback to one channel with ``chat.postMessage``."""

    name = "slack_followup_alerts"
    description = "Post alignment follow-ups and new feedback to a Slack channel."
    hooks = ("post_alignment_followup", "on_feedback")
    required_secrets = ("SLACK_BOT_TOKEN",)
    # Like JIRA_BASE_URL, the endpoint can come from the environment (the demo's stand-in).
    optional_secrets = ("SLACK_API_BASE_URL",)
    # Where the bot token goes: changing either through the API needs the token given again.
    destinations = ("api_base_url", "secrets.SLACK_API_BASE_URL")

    class Config(HTTPConfig, forbid_unknown_fields=True, kw_only=True):
        """Where messages go."""

        channel: str = "#agent-pm"
        api_base_url: str = "https://slack.com/api"

    config: Config

    def client_options(self) -> dict[str, Any]:
        """Bearer auth with the bot token, against the configured Web API base URL."""
        headers = {"Authorization": f"Bearer {self.secret('SLACK_BOT_TOKEN')}"}
        base_url = self.get_secret("SLACK_API_BASE_URL") or self.config.api_base_url
        return {"base_url": base_url, "headers": headers}

    async def post_alignment_followup(
        self, followup: Mapping[str, Any], **_: Any
    ) -> dict[str, str]:
        """Announce a follow-up."""
        return await self._post(*_followup_message(followup))

    async def on_feedback(self, feedback: Mapping[str, Any], **_: Any) -> dict[str, str]:
        """Announce a new piece of feedback."""
        return await self._post(*_feedback_message(feedback))

    async def _post(self, text: str, blocks: list[dict[str, Any]]) -> dict[str, str]:
        if (skipped := self.skipped()) is not None:
            return skipped
        body = {"channel": self.config.channel, "text": text, "blocks": blocks}
        response = await self.http.request("POST", "/chat.postMessage", json=body)
        reply = decode(response, _Reply)
        if not reply.ok:
            # Slack reports failures as 200 with ``ok: false``; its error codes carry no secrets.
            path = response.request.url.path
            raise PluginHTTPError("POST", path, f"Slack error {reply.error}", response.status_code)
        return {"channel": reply.channel, "ts": reply.ts}
