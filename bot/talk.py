"""The `draft_check` action of /talk (dialogs/talk.yaml): which draft is checked, and what
the checker found in it.

The flow uses it on three steps, each of which may do one piece of work when it is
reached by an answer:

- `composed`: the builder's message (talk/message.j2, the very words the person is shown)
  becomes the draft, so "Check it with the draft checker" checks it;
- `draft`: a new draft is about to be written, so the previous one is let go (a skipped
  draft then checks nothing, rather than the old one again);
- any other step (`draft_result`): the draft is checked.

Every step gets `findings` (pattern, quote, gentler) and `draft_checked` (empty on the
first two). The words that name and explain each pattern are in
prompts/<locale>/talk/draft_result.j2, not here.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from bot.draft_checker import PATTERNS, default_checker
from bot.storage.repository import answers_copy
from bot.views import LiveUserView

if TYPE_CHECKING:
    from bot.actions import ActionCall

DRAFT = "draft"  # the answer that holds the message to check
COMPOSED_STEP = "composed"  # the step that shows the builder's message
MESSAGE_TEMPLATE = "talk/message.j2"


def draft_check_context(call: ActionCall) -> dict[str, Any]:
    if call.step.name == COMPOSED_STEP:
        if call.entering:
            _set_draft(call, composed_message(call))
        return {"findings": [], "draft_checked": ""}
    if call.step.answer == DRAFT:
        if call.entering:
            _set_draft(call, "")
        return {"findings": [], "draft_checked": ""}
    draft = str(call.run.answers.get(DRAFT) or "")
    return {"findings": findings_in(draft), "draft_checked": draft}


def findings_in(draft: str) -> list[dict[str, str]]:
    """What the checker finds in `draft`, as plain values for the template."""
    if not draft.strip():
        return []
    return [{"pattern": finding.pattern, "quote": finding.quote, "gentler": finding.gentler}
            for finding in default_checker().check(draft)]


def composed_message(call: ActionCall) -> str:
    """The builder's message as plain text, exactly as the composed step shows it."""
    turn = call.turn
    rendered = turn.engine.renderer.render_plain(
        MESSAGE_TEMPLATE, turn.locale,
        {"user": LiveUserView(turn.user), "answers": dict(call.run.answers)})
    return " ".join(html.unescape(rendered).split())  # the template escapes; the checker reads


def _set_draft(call: ActionCall, draft: str) -> None:
    answers = answers_copy(call.run.answers)
    if draft:
        answers[DRAFT] = draft
    else:
        answers.pop(DRAFT, None)
    call.run.answers = answers


_TRICKY = "You <never> listen & you roll your eyes"


def draft_check_samples() -> list[dict[str, Any]]:
    """Contexts shaped like `draft_check_context`'s: nothing to check, a clean draft, one
    finding, one finding of every pattern, and words that need escaping."""
    every = [{"pattern": pattern, "quote": f"quote for {pattern}",
              "gentler": f"a gentler way for {pattern}"} for pattern in PATTERNS]
    return [
        {"findings": [], "draft_checked": ""},
        {"findings": [], "draft_checked": "When plans change last minute, I feel left out."},
        {"findings": [{"pattern": PATTERNS[0], "quote": "you never", "gentler": "this time"}],
         "draft_checked": "You never call me back."},
        {"findings": every, "draft_checked": "You never listen. You're so selfish. Whatever."},
        {"findings": [{"pattern": PATTERNS[0], "quote": "<never> listen & you",
                       "gentler": "I'd like to feel <heard> & understood"}],
         "draft_checked": _TRICKY},
    ]
