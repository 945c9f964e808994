"""Render every template of a flow with sample context, so a broken template fails at start-up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bot.flows.spec import FOCUS_VALUES, Expects, Flow
from bot.rendering import Renderer

SAMPLE_TEXT = "I notice I go quiet & tense when plans change <suddenly>."


def sample_users() -> Iterator[Any]:
    from bot.views import UserView  # the turn's own view, so the sample cannot drift from it

    for focus in (*FOCUS_VALUES, "none"):
        for keep in (True, False):
            yield UserView(first_name="Sam", focus=focus, country="GB" if keep else "none",
                           country_name="United Kingdom" if keep else "", keep_reflections=keep,
                           language="en", daily_enabled=keep, daily_time="08:00" if keep else "",
                           timezone="Europe/London" if keep else "", paused=not keep,
                           quiet_start="22:00" if keep else "", quiet_end="07:00" if keep else "",
                           weekly_day=6 if keep else None, discreet=keep)


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
    """(step, error) for each template of `flow` that fails to render in `locale`.

    A step with an action is rendered with each of the action's sample contexts; a
    check-back's own template is rendered too.
    """
    from bot.actions import ACTIONS  # actions reach the turn, which imports this module

    full = sample_answers(flow)
    for step in flow.steps.values():
        action = ACTIONS.get(step.action) if step.action else None
        extras = action.samples() if action is not None else [{}]
        templates = [step.template]
        if step.check_back and step.check_back.template:
            templates.append(step.check_back.template)
        for template in templates:
            error = _first_error(renderer, template, locale, full, extras)
            if error is not None:
                yield step.name, error
                break


def _first_error(renderer: Renderer, template: str, locale: str, full: dict[str, Any],
                 extras: list[dict[str, Any]]) -> str | None:
    for user in sample_users():
        for answers in (full, {}):
            for extra in extras:
                try:
                    texts = renderer.render(template, locale,
                                            {"user": user, "answers": answers, **extra})
                except Exception as error:  # noqa: BLE001 - report every kind of failure
                    return f"{type(error).__name__}: {error}"
                if not texts or "---" in "".join(texts):
                    return "renders to an empty message, or a --- not on its own line"
    return None


def _menu_entries() -> list[dict[str, Any]]:
    return [
        {"name": "a", "title": "Self-awareness", "description": "Five reflections",
         "command": "/aware", "status": status, "step_number": 2, "step_count": 6,
         "times_completed": times}
        for status, times in (("new", 0), ("active", 0), ("active", 2), ("done", 1), ("done", 3))
    ]


# Every system template, with context shaped exactly as the engine passes it.
SYSTEM_SAMPLES: dict[str, list[dict[str, Any]]] = {
    "system/help.j2": [
        {"resources": {"country_name": "United Kingdom", "emergency": "999", "fallback": False,
                       "lines": [{"name": "Samaritans", "contact": "116 123", "hours": "24/7"},
                                 {"name": "Line", "contact": "0800", "hours": ""}]},
         "commands": [{"command": "/menu", "description": "Everything"}]},
        {"resources": {"country_name": "", "emergency": "your local emergency number",
                       "fallback": True,
                       "lines": [{"name": "Find A Helpline", "contact": "findahelpline.com",
                                  "hours": ""}]},
         "commands": []},
    ],
    "system/menu.j2": [{"flows": _menu_entries()}, {"flows": []}],
    "system/progress.j2": [
        {"completed": [{"title": "Self-awareness", "count": 1},
                       {"title": "Self-awareness", "count": 4}],
         "in_progress": [{"title": "Self-awareness", "step_number": 2, "step_count": 6}],
         "reflections": 5, "keep_reflections": True, "calendar": "You practised on 2 days."},
        {"completed": [], "in_progress": [], "reflections": 0, "keep_reflections": False,
         "calendar": "Nothing yet."},
        {"completed": [], "in_progress": [], "reflections": 1, "keep_reflections": True,
         "calendar": "Nothing yet."},
    ],
    "system/progress_trend.j2": [
        {"safety": {"count": 3, "about": "Partner", "since": "1 Nov 2026",
                    "text": "Your scores from 1 Nov to 24 Nov:\nRepair: 2.0 → 3.5, higher"}},
        {"safety": {"count": 1, "about": "Friend", "since": "1 Nov 2026", "text": ""}},
    ],
    "system/progress_end.j2": [{}],
    "system/setup_first.j2": [{}],
    "system/unknown_command.j2": [{"command": "/dance"}],
    "system/nothing_to_cancel.j2": [{}],
    "system/cancelled.j2": [{"flow_title": "Self-awareness", "command": "/aware"},
                            {"flow_title": "Settings", "command": None}],
    "system/switch_flow.j2": [{"current_title": "Self-awareness", "new_title": "Settings"}],
    "system/resume.j2": [{"flow_title": "Self-awareness"}],
    "system/stay.j2": [{"flow_title": "Self-awareness"}],
    "system/stale_button.j2": [{}],
    "system/empty.j2": [{}],
    "system/too_long.j2": [{"limit": 2000}],
    "system/expected_choice.j2": [{"labels": ["Yes, keep them", "No, don't keep them"]}],
    "system/expected_scale.j2": [{"low": 1, "high": 5}],
    "system/expected_country.j2": [{}],
    "system/outside_flow.j2": [{}],
    "system/not_text.j2": [
        {"kind": kind, "expected": expected}
        for kind in ("sticker", "photo", "voice", "video", "document", "other")
        for expected in ("text", "choice", "scale", "country", "language", "none")
    ],
    "system/busy.j2": [{}],
    "system/crisis.j2": [
        {"category": category, "resources": resources}
        for category in ("self_harm", "harm_to_others", "abuse", "child_at_risk")
        for resources in (
            {"country_name": "United Kingdom", "emergency": "999", "fallback": False,
             "lines": [{"name": "Samaritans", "contact": "116 123", "hours": "24/7",
                        "for_this": True},
                       {"name": "Other", "contact": "0800", "hours": "", "for_this": False}]},
            {"country_name": "", "emergency": "your local emergency number", "fallback": True,
             "lines": [{"name": "Find A Helpline", "contact": "findahelpline.com", "hours": "",
                        "for_this": True}]},
        )
    ],
    "system/crisis_safe_to_read.j2": [{}],
    "system/crisis_later.j2": [{"resources": {"emergency": "999"}}],
    "system/crisis_continue.j2": [{}],
    "system/slow_down.j2": [{}],
    "system/expected_time.j2": [{}],
    "system/expected_zone.j2": [{"zones": []}, {"zones": ["Europe/London (now 21:40)"]}],
    "daily/prompt.j2": [{"prompt": {"text": SAMPLE_TEXT}, "intro": intro, "discreet": discreet}
                        for intro in (True, False) for discreet in (True, False)],
    "daily/weekly.j2": [{"discreet": False, "quotes": [SAMPLE_TEXT] * 3, "question": "Q?"},
                        {"discreet": False, "quotes": [], "question": "Q?"},
                        {"discreet": True, "quotes": [], "question": ""}],
    "daily/answer_now.j2": [{"prompt": {"text": SAMPLE_TEXT}}],
    "daily/skipped.j2": [{}],
    "daily/snoozed.j2": [{}],
    "daily/paused.j2": [{}],
    "daily/resumed.j2": [{"next_due": "08:00"}, {"next_due": None}],
    "daily/thanks.j2": [{"kept": True}, {"kept": False}],
    "system/export.j2": [{"reflections": 0}, {"reflections": 1}, {"reflections": 7}],
    "system/delete_confirm.j2": [{"reflections": 0}, {"reflections": 1}, {"reflections": 7}],
    "system/deleted.j2": [{}],
    "system/delete_kept.j2": [{}],
    "system/hidden.j2": [{}],
    "system/journal.j2": [
        {"entries": [{"date": "24 Nov 2026", "flow_title": "Self-awareness",
                      "label": "Triggers", "text": SAMPLE_TEXT}] * 2,
         "page": 1, "pages": 3, "total": 12, "keep_reflections": keep, "showing": showing}
        for keep in (True, False) for showing in ("", "Daily practice")
    ] + [{"entries": [], "page": 1, "pages": 1, "total": 0, "keep_reflections": keep,
          "showing": ""} for keep in (True, False)],
}


def system_render_errors(renderer: Renderer, locale: str) -> Iterator[tuple[str, str]]:
    """(template, error) for each system template that fails to render in `locale`."""
    for template, contexts in SYSTEM_SAMPLES.items():
        for context in contexts:
            for user in sample_users():
                try:
                    texts = renderer.render(template, locale,
                                            {"user": user, "answers": {}, **context})
                except Exception as error:  # noqa: BLE001 - report every kind of failure
                    yield template, f"{type(error).__name__}: {error}"
                    break
                if not texts or "---" in "".join(texts):
                    yield template, "renders to an empty message, or a --- not on its own line"
                    break
            else:
                continue
            break
