"""Realistic Agent PM activity: ideas become plans, then alignment, follow-ups, exports, feedback.

Each :class:`Step` is one request the demo sends: a hook fired through ``POST /hooks/{hook}``
or a feedback submission to the feedback collector's route.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

__all__ = ["FEEDBACK_PATH", "Scenario", "Step"]

FEEDBACK_PATH = "/plugins/feedback_collector/feedback"

IDEAS = [
    ("Self-serve onboarding checklist", "New workspaces stall before inviting teammates"),
    ("Weekly goal digest", "Leads lose track of which goals slipped this week"),
    ("Jira sync for roadmap themes", "Roadmap themes drift from the tickets that deliver them"),
    ("Risk radar for launches", "Launch risks surface in retros instead of before launch"),
    ("Customer quote library", "Sales cannot find customer evidence for feature bets"),
    ("Capacity-aware sprint planner", "Sprints are planned without holidays and on-call weeks"),
]
GOALS = [
    "Cut time-to-first-plan in half",
    "Raise weekly active planners by 15%",
    "Keep every launch goal linked to a ticket",
    "Reduce unplanned work to under 20%",
    "Get alignment sign-off within two days",
]
STEPS = [
    "Interview five customers",
    "Draft the spec",
    "Prototype the flow",
    "Run a pilot",
    "Instrument the funnel",
    "Write the launch note",
    "Review with stakeholders",
]
PEOPLE = ["amara", "bo", "chen", "dana", "eli", "farah"]
FEEDBACK = [
    ("Plans are finally readable", 5, "The step owners make standups much shorter."),
    ("Export missed a ticket", 2, "One follow-up did not make it into the sprint export."),
    ("Alignment view is useful", 4, "Would love a filter by team."),
    ("Too many notifications", 3, "Slack follow-ups could be batched per day."),
]


@dataclass(frozen=True)
class Step:
    """One request: ``hook`` fires a hook with ``body`` as payload; otherwise POST to ``path``."""

    body: dict[str, Any]
    hook: str | None = None
    path: str | None = None


class Scenario:
    """An endless, seeded sequence of plausible Agent PM activity."""

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)  # demo data, not crypto  # noqa: S311  # nosec B311
        self._ids = itertools.count(1)
        self.issue_keys: list[str] = []

    def steps(self) -> Iterator[Step]:
        """Forever: one idea's whole journey at a time."""
        while True:
            yield from self._journey(next(self._ids))

    def _journey(self, number: int) -> Iterator[Step]:
        plan = self._plan(number)
        context = {"requested_by": self._random.choice(PEOPLE), "source": "demo"}
        yield Step({"plan": plan, "context": context}, hook="pre_plan")
        yield Step({"plan": plan, "context": context}, hook="post_plan")
        yield Step({"event": self._alignment_event(plan)}, hook="post_alignment_event")
        yield Step({"followup": self._followup(plan)}, hook="post_alignment_followup")
        yield Step({"tickets": self._tickets(plan)}, hook="post_ticket_export")
        if self._random.random() < 0.5:
            yield Step(self._feedback(), path=FEEDBACK_PATH)

    def _plan(self, number: int) -> dict[str, Any]:
        title, idea = self._random.choice(IDEAS)
        steps = self._random.sample(STEPS, k=self._random.randint(2, 4))
        return {
            "id": f"plan-{number}",
            "title": f"{title} #{number}",
            "idea": idea,
            "goals": self._random.sample(GOALS, k=2),
            "steps": [
                {
                    "title": step,
                    "owner": self._random.choice(PEOPLE),
                    "estimate_days": self._random.randint(1, 8),
                }
                for step in steps
            ],
        }

    def linked_issue(self) -> str | None:
        """A Jira key created earlier in the demo, if any."""
        return self._random.choice(self.issue_keys) if self.issue_keys else None

    def _alignment_event(self, plan: dict[str, Any]) -> dict[str, Any]:
        event = {
            "type": self._random.choice(["goal_confirmed", "scope_changed", "risk_raised"]),
            "plan_id": plan["id"],
            "message": f"{plan['title']}: {self._random.choice(GOALS).lower()}",
            "at": datetime.now(UTC).isoformat(),
        }
        issue = self.linked_issue()
        if issue is not None:
            event["issue_key"] = issue
        return event

    def _followup(self, plan: dict[str, Any]) -> dict[str, Any]:
        due = date.today() + timedelta(days=self._random.randint(1, 10))
        followup = {
            "title": f"Confirm owners for {plan['title']}",
            "owner": self._random.choice(PEOPLE),
            "due": due.isoformat(),
            "status": self._random.choice(["open", "at risk", "blocked"]),
        }
        issue = self.linked_issue()
        if issue is not None:
            followup["issue_key"] = issue
        return followup

    def _tickets(self, plan: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"key": f"AGENTPM-{self._random.randint(100, 999)}", "summary": step["title"]}
            for step in plan["steps"]
        ]

    def _feedback(self) -> dict[str, Any]:
        title, rating, comment = self._random.choice(FEEDBACK)
        return {
            "title": title,
            "rating": rating,
            "comment": comment,
            "submitted_by": self._random.choice(PEOPLE),
            "source": "demo",
        }
