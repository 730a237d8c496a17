"""The plan payload of the ``pre_plan``/``post_plan`` hooks, and its Jira description.

A plan is a mapping::

    {"id": "plan-42", "title": "Ship search", "idea": "why we do it",
     "goals": ["fast", "relevant"],
     "steps": [{"title": "index docs", "owner": "ana", "estimate_days": 2}]}

Only ``title`` is required; unknown keys are tolerated so callers can carry extra context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from agent_pm.plugins.builtin import _adf

__all__ = ["Plan", "PlanStep", "describe", "parse_plan"]

Text = Annotated[str, msgspec.Meta(min_length=1)]


class PlanStep(msgspec.Struct, frozen=True):
    """One step of a plan."""

    title: Text
    owner: str | None = None
    estimate_days: Annotated[float, msgspec.Meta(ge=0)] | None = None


class Plan(msgspec.Struct, frozen=True):
    """A plan as the planner hands it over."""

    title: Text
    id: str | int | None = None
    idea: str = ""
    goals: list[Text] = []
    steps: list[PlanStep] = []

    @property
    def estimate_days(self) -> float:
        """The sum of the step estimates that are given."""
        return sum(step.estimate_days or 0 for step in self.steps)


def parse_plan(plan: Any) -> Plan:
    """Validate a plan payload; raise ``ValueError`` saying what is wrong with it."""
    if isinstance(plan, Plan):
        return plan
    if not isinstance(plan, Mapping):
        raise ValueError(f"plan must be a mapping, got {type(plan).__name__}")
    try:
        return msgspec.convert(dict(plan), Plan)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid plan: {exc}") from None


def _step_line(step: PlanStep) -> str:
    details = []
    if step.owner:
        details.append(f"owner: {step.owner}")
    if step.estimate_days is not None:
        details.append(f"estimate: {step.estimate_days:g} d")
    return f"{step.title} ({', '.join(details)})" if details else step.title


def describe(plan: Plan) -> _adf.Node:
    """The Jira description of ``plan``: title, idea, goals and steps as bullet lists."""
    blocks = [_adf.heading(plan.title, level=1)]
    if plan.idea:
        blocks.append(_adf.paragraph(_adf.text(plan.idea)))
    if plan.goals:
        blocks += [_adf.heading("Goals"), _adf.bullet_list(plan.goals)]
    if plan.steps:
        blocks += [_adf.heading("Steps"), _adf.bullet_list(map(_step_line, plan.steps))]
    if plan.id is not None:
        blocks.append(_adf.paragraph(_adf.text("Plan id: ", strong=True), _adf.text(str(plan.id))))
    return _adf.doc(*blocks)
