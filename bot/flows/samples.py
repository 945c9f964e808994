"""Render every template of a flow with sample context, so a broken template fails at start-up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bot.flows.spec import FOCUS_VALUES, Expects, Flow
from bot.rendering import Renderer

SAMPLE_TEXT = "I notice I go quiet & tense when plans change <suddenly>."


def sample_users() -> Iterator[Any]:
    from bot.engine import UserView  # the engine's own view, so the sample cannot drift from it

    for focus in (*FOCUS_VALUES, "none"):
        for keep in (True, False):
            yield UserView(first_name="Sam", focus=focus, country="GB" if keep else "none",
                           country_name="United Kingdom" if keep else "", keep_reflections=keep,
                           language="en")


def sample_answers(flow: Flow) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for step in flow.steps.values():
        if not step.answer:
            continue
        if step.expects is Expects.SCALE:
            answers[step.answer] = step.scale[1]
        elif step.choices:
            answers[step.answer] = step.choices[0].value
        else:
            answers[step.answer] = SAMPLE_TEXT
    return answers


def render_errors(renderer: Renderer, flow: Flow, locale: str) -> Iterator[tuple[str, str]]:
    """(step, error) for each template of `flow` that fails to render in `locale`."""
    full = sample_answers(flow)
    for step in flow.steps.values():
        for user in sample_users():
            for answers in (full, {}):
                try:
                    texts = renderer.render(step.template, locale, {"user": user,
                                                                    "answers": answers})
                except Exception as error:  # noqa: BLE001 - report every kind of failure
                    yield step.name, f"{type(error).__name__}: {error}"
                    break
                if not texts:
                    yield step.name, "renders to an empty message"
                    break
            else:
                continue
            break
