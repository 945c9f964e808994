"""The daily prompts (`prompts/<locale>/daily/prompts.yaml`) and how one is chosen.

The choice follows the person's focus relationship, leans towards the theme of a flow
they have open (so practice continues where they are), rotates through the themes
they have seen least lately, and never repeats a prompt within 30 days.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import yaml

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


class PromptLibrary:
    def __init__(self, prompts: Iterable[DailyPrompt]) -> None:
        self.prompts = list(prompts)
        self.by_id = {prompt.id: prompt for prompt in self.prompts}

    @classmethod
    def load(cls, path: Path) -> PromptLibrary:
        """Read and check the library; a mistake names the prompt it is in."""
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
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
        suitable = [prompt for prompt in self.prompts if prompt.suits(focus)]
        fresh = [prompt for prompt in suitable if prompt.id not in too_recent] or suitable
        seen_themes = Counter(self.by_id[pid].theme for pid, _ in recent if pid in self.by_id)
        leaning = {FLOW_THEMES[name] for name in open_flows if name in FLOW_THEMES}

        def rank(prompt: DailyPrompt) -> tuple[int, int, str]:
            # A stable shuffle per person and day, so two people do not march in step.
            salt = hashlib.sha256(f"{user_id}:{day}:{prompt.id}".encode()).hexdigest()
            return (0 if prompt.theme in leaning else 1, seen_themes[prompt.theme], salt)

        return min(fresh, key=rank)
