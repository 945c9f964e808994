"""The safety check (/safety): a run's 1-5 ratings turned into a profile, and the action
`safety_result` that shows it, keeps it with its date and asks for its picture.

Scoring is pure: `score(answers)` reads the run's answers and returns a `Profile`, and
`profile_view` shapes one for the template. Only `safety_result` touches the turn.

The article's "In emotionally safe relationships, you can..." statements are folded into the
five elements they belong to; the five threats are rated on their own (how often).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from babel.dates import format_date

from bot.charts import ProfileRequest, draw_profile, profile_text
from bot.crisis_lines import lines_for
from bot.i18n import N_
from bot.messages import PendingImage
from bot.schedule_times import local_day
from bot.storage.models import as_utc
from bot.views import resources_view

if TYPE_CHECKING:
    from bot.actions import ActionCall

RELATIONSHIPS = ("partner", "family", "friend", "work", "past", "other")
LOW, HIGH = 1, 5
STRONG = 4.0  # an element scoring at least this is a strength
GROWING = 3.0  # an element scoring at most this is a growth area
OFTEN, SOMETIMES = "often", "sometimes"
HEAL = "heal"
CHART_FILE = "safety-check.png"


@dataclass(frozen=True)
class Element:
    key: str
    name: str  # an interface string (gettext msgid)
    statements: tuple[str, ...]  # the element's own statement first, then its "you can" ones
    command: str  # the flow suggested when this element is a growth area


@dataclass(frozen=True)
class Threat:
    key: str
    name: str
    statement: str


ELEMENTS = (
    Element("reliability", N_("Reliability and consistency"), ("el_reliability", "can_matter"),
            "commit"),
    Element("communication", N_("Respectful communication"),
            ("el_communication", "can_feelings", "can_disagree"), "talk"),
    Element("boundaries", N_("Boundaries and consent"), ("el_boundaries", "can_boundaries"),
            "boundaries"),
    Element("repair", N_("Repair after ruptures"), ("el_repair", "can_mistakes"), "repair"),
    Element("acceptance", N_("Non-judgment and acceptance"), ("el_acceptance", "can_vulnerable"),
            "aware"),
)
THREATS = (
    Threat("criticism", N_("Criticism and contempt"), "th_criticism"),
    Threat("unpredictability", N_("Unpredictability and inconsistency"), "th_unpredictability"),
    Threat("boundaries", N_("Boundary violations"), "th_boundaries"),
    Threat("invalidation", N_("Invalidation and gaslighting"), "th_invalidation"),
    Threat("conditional", N_("Conditional acceptance"), "th_conditional"),
)
# A threat rated at the very top on one of these is enough, alone, for the gentle danger note.
GRAVE_AT_TOP = frozenset({"unpredictability", "boundaries"})
# Titles for suggested flows, used when the flow itself is not loaded.
FLOW_TITLES = {"commit": N_("Trustworthiness"), "talk": N_("Intentional communication"),
               "boundaries": N_("Boundaries"), "repair": N_("Repair"),
               "aware": N_("Self-awareness"), HEAL: N_("Healing")}


# --- scoring (pure) -------------------------------------------------------------------------


def rating(answers: Mapping[str, Any], name: str) -> int | None:
    """One statement's rating, 1-5; None if it was skipped (or is not a rating)."""
    value = answers.get(name)
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and LOW <= value <= HIGH else None


def element_scores(answers: Mapping[str, Any]) -> dict[str, float]:
    """Each element's score (the mean of its rated statements, one decimal); an element with
    no rated statement has none."""
    scores: dict[str, float] = {}
    for element in ELEMENTS:
        given = [r for name in element.statements if (r := rating(answers, name)) is not None]
        if given:
            scores[element.key] = round(sum(given) / len(given), 1)
    return scores


def threat_ratings(answers: Mapping[str, Any]) -> dict[str, int]:
    return {threat.key: r for threat in THREATS
            if (r := rating(answers, threat.statement)) is not None}


def flag(value: int | None) -> str | None:
    """"often" for 4-5, "sometimes" for 3, None for 1-2 or not rated."""
    if value is None:
        return None
    if value >= 4:
        return OFTEN
    return SOMETIMES if value == 3 else None


def level(score: float) -> str:
    if score >= STRONG:
        return "strong"
    return "mixed" if score > GROWING else "low"


def strengths(scores: Mapping[str, float]) -> list[str]:
    """Up to two elements scoring 4 or more, highest first (ties in the article's order)."""
    order = [e.key for e in ELEMENTS if scores.get(e.key, 0) >= STRONG]
    return sorted(order, key=lambda key: -scores[key])[:2]


def growth_areas(scores: Mapping[str, float]) -> list[str]:
    """Up to two elements scoring 3 or less, lowest first (ties in the article's order)."""
    order = [e.key for e in ELEMENTS if e.key in scores and scores[e.key] <= GROWING]
    return sorted(order, key=lambda key: scores[key])[:2]


def is_danger(ratings: Mapping[str, int]) -> bool:
    """Two or more threats often, or unpredictability or boundary violations at the very top."""
    often = sum(1 for value in ratings.values() if flag(value) == OFTEN)
    return often >= 2 or any(ratings.get(key) == HIGH for key in GRAVE_AT_TOP)


def suggestions(relationship: str, scores: Mapping[str, float],
                ratings: Mapping[str, int]) -> list[str]:
    """One or two flows to try next, as command names: /heal first for a past relationship or
    a threat that shows up often, then the flows for the growth areas. With neither, the flow
    of the lowest-scoring element; with no scores at all, self-awareness."""
    wanted: list[str] = []
    if relationship == "past" or any(flag(value) == OFTEN for value in ratings.values()):
        wanted.append(HEAL)
    commands = {element.key: element.command for element in ELEMENTS}
    wanted += [commands[key] for key in growth_areas(scores)]
    if not wanted:
        rated = [e.key for e in ELEMENTS if e.key in scores]
        lowest = min(rated, key=lambda key: scores[key]) if rated else None
        wanted.append(commands[lowest] if lowest else "aware")
    return list(dict.fromkeys(wanted))[:2]


def direction(before: float, after: float) -> str:
    """"up", "down" or "same", compared at the precision shown."""
    a, b = round(before, 1), round(after, 1)
    return "up" if b > a else "down" if b < a else "same"


def changes(previous: Mapping[str, Any], current: Mapping[str, float]) -> list[tuple[str, float,
                                                                                  float, str]]:
    """(element, before, after, direction) for each element scored both times."""
    found = []
    for element in ELEMENTS:
        before, after = previous.get(element.key), current.get(element.key)
        if isinstance(before, int | float) and not isinstance(before, bool) \
                and after is not None:
            found.append((element.key, float(before), after, direction(float(before), after)))
    return found


@dataclass(frozen=True)
class Profile:
    relationship: str
    elements: dict[str, float]  # element key -> score 1-5, only the rated ones
    threats: dict[str, int]  # threat key -> rating 1-5, only the rated ones
    strengths: tuple[str, ...]
    growth: tuple[str, ...]
    suggestions: tuple[str, ...]
    danger: bool

    @property
    def empty(self) -> bool:
        """Every statement was skipped: nothing to show, nothing to keep."""
        return not self.elements and not self.threats

    def stored(self) -> dict[str, Any]:
        """What the database keeps for this check."""
        return {"elements": dict(self.elements), "threats": dict(self.threats)}


def score(answers: Mapping[str, Any]) -> Profile:
    relationship = answers.get("relationship")
    if relationship not in RELATIONSHIPS:
        relationship = "other"
    scores, ratings = element_scores(answers), threat_ratings(answers)
    return Profile(relationship=str(relationship), elements=scores, threats=ratings,
                   strengths=tuple(strengths(scores)), growth=tuple(growth_areas(scores)),
                   suggestions=tuple(suggestions(str(relationship), scores, ratings)),
                   danger=is_danger(ratings))


# --- what the template sees -----------------------------------------------------------------


@dataclass(frozen=True)
class Previous:
    """The last check of the same relationship: its local date, and its element scores."""

    date: str
    elements: Mapping[str, Any]


def chart_request(profile: Profile, title: str, name: Callable[[str], str]) -> ProfileRequest:
    elements = tuple((name(e.name), profile.elements.get(e.key)) for e in ELEMENTS)
    threats = tuple((name(t.name), _chart_flag(profile.threats.get(t.key))) for t in THREATS)
    return ProfileRequest(title, elements, threats)


def _chart_flag(value: int | None) -> str:
    return "unrated" if value is None else flag(value) or "rarely"


def profile_view(profile: Profile, date: str, previous: Previous | None,
                 name: Callable[[str], str], flow_title: Callable[[str], str],
                 title: str) -> dict[str, Any]:
    """The profile as the result template sees it. `name` translates an interface string;
    `flow_title` gives the title of the flow behind a command name."""
    names = {e.key: name(e.name) for e in ELEMENTS}
    request = chart_request(profile, title, name)
    change = None
    if previous is not None:
        found = changes(previous.elements, profile.elements)
        change = {
            "since": previous.date,
            "rows": [{"key": key, "name": names[key], "before": f"{before:.1f}",
                       "after": f"{after:.1f}", "direction": way}
                      for key, before, after, way in found],
            "up": sum(1 for *_, way in found if way == "up"),
            "down": sum(1 for *_, way in found if way == "down"),
        }
    return {
        "relationship": profile.relationship,
        "empty": profile.empty,
        "date": date,
        "elements": [{"key": e.key, "name": names[e.key],
                      "score": _shown(profile.elements.get(e.key)),
                      "level": level(profile.elements[e.key]) if e.key in profile.elements
                      else None} for e in ELEMENTS],
        "threats": [{"key": t.key, "name": name(t.name), "rating": profile.threats.get(t.key),
                     "flag": flag(profile.threats.get(t.key))} for t in THREATS],
        "strengths": [{"key": key, "name": names[key], "score": _shown(profile.elements[key])}
                      for key in profile.strengths],
        "growth": [{"key": key, "name": names[key], "score": _shown(profile.elements[key])}
                   for key in profile.growth],
        "suggestions": [{"key": command, "command": f"/{command}", "title": flow_title(command)}
                        for command in profile.suggestions],
        "danger": profile.danger,
        "often": [name(t.name) for t in THREATS if flag(profile.threats.get(t.key)) == OFTEN],
        "chart_text": profile_text(list(request.elements), list(request.threats), title),
        "change": change,
    }


def _shown(score: float | None) -> str | None:
    return None if score is None else f"{score:.1f}"


def support_topic(relationship: str) -> str | None:
    """Which support lines come first in the danger note: for a partner, family or a past
    relationship the domestic-abuse lines (every line is still listed)."""
    return "abuse" if relationship in ("partner", "family", "past") else None


# --- the action -----------------------------------------------------------------------------


def safety_result(call: ActionCall) -> dict[str, Any]:
    """The result step: the profile; when reached by the last answer, also keep it (once) and
    ask for its picture. The change is measured against the check before this one."""
    turn = call.turn
    profile = score(call.run.answers)
    zone = turn.user.timezone or "UTC"

    def day(moment: Any) -> str:
        return format_date(local_day(as_utc(moment), zone), format="medium", locale=turn.locale)

    earlier = [] if profile.empty else turn.unit.safety_checks(turn.user, profile.relationship)
    if not call.entering and earlier:
        earlier = earlier[:-1]  # shown again: the last one kept is this run's own
    last = earlier[-1] if earlier else None
    previous = None
    if last is not None:
        kept = last.scores.get("elements") if isinstance(last.scores, dict) else None
        previous = Previous(day(last.created_at), kept if isinstance(kept, dict) else {})
    date = day(turn.now)
    title = f"{turn.t(N_('Safety check'))}, {date}"
    view = profile_view(profile, date, previous, turn.t, partial(_flow_title, call), title)
    if call.entering and not profile.empty:
        turn.unit.add_safety_check(turn.user, profile.relationship, profile.stored(), turn.now)
        request = chart_request(profile, title, turn.t)
        turn.images.append(PendingImage(CHART_FILE, partial(draw_profile, request),
                                        before=len(turn.reply.messages)))
    found = lines_for(turn.user.country, support_topic(profile.relationship))
    return {"profile": view, "resources": resources_view(found)}


def _flow_title(call: ActionCall, command: str) -> str:
    flows = call.turn.engine.flows.values()
    title = next((flow.title for flow in flows if flow.command == command), FLOW_TITLES[command])
    return call.turn.t(title)


# --- samples for the flow validator ---------------------------------------------------------

SAMPLE_ANSWERS: dict[str, dict[str, Any]] = {
    "mixed": {"relationship": "partner", "can_feelings": 4, "can_mistakes": 2,
              "can_disagree": 5, "can_boundaries": 3, "can_vulnerable": 5, "can_matter": 4,
              "el_reliability": 5, "el_communication": 4, "el_boundaries": 2, "el_repair": 1,
              "el_acceptance": 4, "th_criticism": 3, "th_unpredictability": 1,
              "th_boundaries": 2, "th_invalidation": 1, "th_conditional": 2},
    "first": {"relationship": "work", "can_feelings": 3, "el_reliability": 4,
              "el_communication": 3, "th_criticism": 1},
    "danger": {"relationship": "past", "can_feelings": 1, "can_matter": 2, "el_reliability": 2,
               "el_boundaries": 1, "th_criticism": 5, "th_unpredictability": 5,
               "th_boundaries": 4, "th_invalidation": 4},
    "danger_now": {"relationship": "family", "el_repair": 2, "th_boundaries": 5},
    "skipped": {"relationship": "friend"},
}
SAMPLE_RESOURCES = {"country_name": "United Kingdom", "emergency": "999", "fallback": False,
                    "lines": [{"name": "Samaritans", "contact": "116 123", "hours": "24/7",
                               "for_this": False}]}
SAMPLE_FALLBACK = {"country_name": "", "emergency": "your local emergency number",
                   "fallback": True,
                   "lines": [{"name": "Find A Helpline", "contact": "findahelpline.com",
                              "hours": "", "for_this": True}]}


def safety_result_samples() -> list[dict[str, Any]]:
    """Contexts shaped like `safety_result`'s: a full profile with a change since last time, a
    first check, a profile with the danger note, and everything skipped."""
    earlier = Previous("Jun 3, 2026", {"reliability": 3.0, "communication": 4.3,
                                      "repair": 1.5, "acceptance": 4.5})
    cases = [("mixed", earlier, SAMPLE_RESOURCES), ("first", None, SAMPLE_RESOURCES),
             ("danger", Previous("Jun 3, 2026", {"boundaries": 2.0}), SAMPLE_FALLBACK),
             ("danger_now", None, SAMPLE_RESOURCES), ("skipped", None, SAMPLE_FALLBACK)]
    contexts = []
    for case, previous, resources in cases:
        view = profile_view(score(SAMPLE_ANSWERS[case]), "Nov 24, 2026", previous, str,
                            lambda command: FLOW_TITLES[command], "Safety check, Nov 24, 2026")
        contexts.append({"profile": view, "resources": resources})
    return contexts
