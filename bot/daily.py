"""The daily prompts (`prompts/<locale>/daily/prompts.yaml`) and how one is chosen.

The choice follows the person's focus relationship, leans towards the theme of a flow
they have open (so practice continues where they are), rotates through the themes
they have seen least lately, and never repeats a prompt within 30 days.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Iterable, Sequence, Set
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from bot.yaml_files import read_yaml

NO_REPEAT_DAYS = 30
THEMES = ("self_awareness", "communication", "boundaries", "repair", "trustworthiness",
          "appreciation", "healing")
# The theme a flow practises, for leaning the daily prompt towards the flow in progress.
FLOW_THEMES = {"self_awareness": "self_awareness", "onboarding": "self_awareness"}


@dataclass(frozen=True)
class DailyPrompt:
    id: str
    theme: str
    focus: tuple[str, ...]
    source: str
    text: str

    def suits(self, focus: str | None) -> bool:
        if "any" in self.focus:
            return True
        if focus in (None, "none"):  # no focus chosen: everything but healing-only prompts
            return any(tag != "healing" for tag in self.focus)
        return focus in self.focus


# The prompts that suit one focus, grouped by theme: ((theme, prompts), ...).
ThemeGroups = tuple[tuple[str, tuple[DailyPrompt, ...]], ...]


class PromptLibrary:
    def __init__(self, prompts: Iterable[DailyPrompt]) -> None:
        self.prompts = list(prompts)
        self.by_id = {prompt.id: prompt for prompt in self.prompts}
        self.theme_of = {prompt.id: prompt.theme for prompt in self.prompts}
        self._by_focus: dict[str | None, ThemeGroups] = {}
        self._flat_by_focus: dict[str | None, tuple[DailyPrompt, ...]] = {}
        self._day_text: dict[date, str] = {}

    @classmethod
    def load(cls, path: Path) -> PromptLibrary:
        """Read and check the library; a mistake names the prompt it is in."""
        data = read_yaml(path)
        prompts, problems = [], []
        for raw in data.get("prompts") or []:
            prompt = DailyPrompt(id=str(raw.get("id")), theme=str(raw.get("theme")),
                                 focus=tuple(raw.get("focus") or ()),
                                 source=str(raw.get("source") or ""),
                                 text=" ".join(str(raw.get("text") or "").split()))
            if prompt.theme not in THEMES:
                problems.append(f"{prompt.id}: unknown theme {prompt.theme!r}")
            if not prompt.text or not prompt.focus or len(prompt.id) > 32:
                problems.append(f"{prompt.id}: needs text, focus and an id of at most 32 chars")
            prompts.append(prompt)
        if len({prompt.id for prompt in prompts}) != len(prompts):
            problems.append("prompt ids must be unique")
        if problems:
            raise ValueError(f"{path}: " + "; ".join(problems))
        return cls(prompts)

    def choose(self, user_id: int, day: date, focus: str | None,
               recent: list[tuple[str, date]], open_flows: Iterable[str] = ()) -> DailyPrompt:
        """Today's prompt for a person; `recent` is (prompt id, day sent) over 30 days or more."""
        too_recent = {pid for pid, sent in recent if (day - sent).days < NO_REPEAT_DAYS}
        return self.choose_from(user_id, day, focus, too_recent, [pid for pid, _ in recent],
                                list(open_flows))

    def choose_from(self, user_id: int, day: date, focus: str | None, too_recent: Set[str],
                    recent_ids: Collection[str], open_flows: Collection[str] = ()) -> DailyPrompt:
        """`choose`, given what it needs: the ids sent within the last 30 days (`too_recent`)
        and every id sent over the longer window the themes are counted over (`recent_ids`).

        Among the suitable prompts not sent within 30 days (all suitable ones, if none is
        left), the best are those of a theme of a flow in progress, then of the themes seen
        least lately; one of these is picked at random, stable per person and day.
        """
        leaning: Set[str] = ({FLOW_THEMES[name] for name in open_flows if name in FLOW_THEMES}
                             if open_flows else frozenset())
        best: Sequence[DailyPrompt]
        if not recent_ids and not leaning:  # every theme ranks alike: all that suit
            best = self._all_suitable(focus)
        else:
            seen_themes = Counter(self.theme_of[pid] for pid in recent_ids
                                  if pid in self.theme_of)
            groups = self._suitable_by_theme(focus)
            best = (_best(groups, too_recent, seen_themes, leaning) if too_recent else None) \
                or _best(groups, frozenset(), seen_themes, leaning)
        if not best:
            raise ValueError(f"no daily prompt suits the focus {focus!r}")
        # One hash per person and day: a uniform pick among the best, so two people with
        # the same history do not march in step, and the same person gets the same prompt
        # if the day's choice is made twice.
        day_text = self._day_text.get(day)
        if day_text is None:
            day_text = self._day_text[day] = str(day)
        seed = hashlib.sha256(f"{user_id}:{day_text}".encode()).digest()
        return best[int.from_bytes(seed[:8], "big") % len(best)]

    def _all_suitable(self, focus: str | None) -> tuple[DailyPrompt, ...]:
        """Every prompt that suits a focus, in the order of `_suitable_by_theme`; cached."""
        found = self._flat_by_focus.get(focus)
        if found is None:
            found = self._flat_by_focus[focus] = tuple(
                prompt for _, prompts in self._suitable_by_theme(focus) for prompt in prompts)
        return found

    def _suitable_by_theme(self, focus: str | None) -> ThemeGroups:
        """The prompts that suit a focus, by theme (in library order); cached per focus."""
        groups = self._by_focus.get(focus)
        if groups is None:
            by_theme: dict[str, list[DailyPrompt]] = {}
            for prompt in self.prompts:
                if prompt.suits(focus):
                    by_theme.setdefault(prompt.theme, []).append(prompt)
            groups = tuple((theme, tuple(found)) for theme, found in by_theme.items())
            self._by_focus[focus] = groups
        return groups


def _best(groups: ThemeGroups, excluded: Set[str],
          seen_themes: Counter[str], leaning: Set[str]) -> list[DailyPrompt]:
    """The prompts not in `excluded` of the best-ranked themes: a flow's theme first, then
    the themes seen least."""
    best_rank: tuple[int, int] | None = None
    best: list[DailyPrompt] = []
    for theme, prompts in groups:
        rank = (0 if theme in leaning else 1, seen_themes[theme])
        if best_rank is not None and rank > best_rank:
            continue
        candidates = [p for p in prompts if p.id not in excluded] if excluded else prompts
        if not candidates:
            continue
        if best_rank is None or rank < best_rank:
            best_rank, best = rank, list(candidates)
        else:
            best.extend(candidates)
    return best
