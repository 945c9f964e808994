"""Computed context for a flow step: the few things a template cannot work out by itself.

A step names one with `action:` in its flow file. Every time the step is shown, the
action adds values to the template's context; when the step is reached by an answer
(not when it is shown again), it may also do its one piece of work, such as keeping a
safety check's result. Each action also gives sample contexts, shaped exactly like its
own, so the flow validator can render the step's template before anyone sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.crisis_lines import lines_for
from bot.safety_check import safety_result, safety_result_samples
from bot.talk import draft_check_context, draft_check_samples
from bot.views import resources_view

if TYPE_CHECKING:
    from bot.flows.spec import Flow, Step
    from bot.storage.models import FlowRun
    from bot.turn import Turn


@dataclass(frozen=True)
class ActionCall:
    turn: Turn
    flow: Flow
    run: FlowRun
    step: Step
    entering: bool  # reached just now by an answer, rather than shown again


@dataclass(frozen=True)
class Action:
    context: Callable[[ActionCall], dict[str, Any]]
    samples: Callable[[], list[dict[str, Any]]]


def _resources(call: ActionCall) -> dict[str, Any]:
    """The support lines for the person's country, as /help shows them."""
    return {"resources": resources_view(lines_for(call.turn.user.country, None))}


def _healing_resources(call: ActionCall) -> dict[str, Any]:
    """The same lines, those for people hurt in a relationship first (all are still listed)."""
    return {"resources": resources_view(lines_for(call.turn.user.country, "abuse"))}


def _resources_samples() -> list[dict[str, Any]]:
    return [
        {"resources": {"country_name": "United Kingdom", "emergency": "999", "fallback": False,
                       "lines": [{"name": "Samaritans", "contact": "116 123", "hours": "24/7",
                                  "for_this": True}]}},
        {"resources": {"country_name": "", "emergency": "your local emergency number",
                       "fallback": True,
                       "lines": [{"name": "Find A Helpline", "contact": "findahelpline.com",
                                  "hours": "", "for_this": True}]}},
    ]


ACTIONS: dict[str, Action] = {
    "resources": Action(_resources, _resources_samples),
    "healing_resources": Action(_healing_resources, _resources_samples),
    "safety_result": Action(safety_result, safety_result_samples),
    "draft_check": Action(draft_check_context, draft_check_samples),
}
