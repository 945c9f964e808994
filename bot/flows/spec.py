"""The shape of a flow once loaded from `dialogs/*.yaml`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Expects(StrEnum):
    CHOICE = "choice"
    TEXT = "text"
    SCALE = "scale"
    COUNTRY = "country"
    LANGUAGE = "language"
    TIME = "time"  # a time of day: buttons for a few, or typed ("8:30", "9pm")
    TIMEZONE = "timezone"  # a typed city, country or the local time now
    NOTHING = "nothing"


PROFILE_FIELDS = frozenset({"focus", "country", "keep_reflections", "language",
                            "daily_enabled", "daily_time", "timezone", "quiet_start",
                            "quiet_end", "weekly_day", "discreet"})
FOCUS_VALUES = ("partner", "family", "friend", "work", "healing")


@dataclass(frozen=True)
class Choice:
    value: str
    label: str
    next: str | None
    also: tuple[str, ...] = ()  # other words that, typed alone, pick this choice

    def typed_as(self, words: str) -> bool:
        return words in self.also


@dataclass(frozen=True)
class Route:
    """On a scale step: answers from `low` to `high` lead to `next` instead of the step's own."""

    low: int
    high: int
    next: str


@dataclass(frozen=True)
class CheckBack:
    """A timed message, planned when the step is answered; the delay is the answer itself.

    Answers like "m20", "h1" or "d3" mean 20 minutes, an hour, three days; any other
    answer (such as "none") plans nothing. When it is due, either the run is still
    waiting at step `wait_at` and Haven sends `template` and shows that step again,
    or a new run of flow `start` begins with a copy of this run's answers.
    """

    wait_at: str | None = None
    template: str | None = None
    start: str | None = None


@dataclass(frozen=True)
class Step:
    name: str
    template: str
    expects: Expects
    choices: tuple[Choice, ...] = ()
    scale: tuple[int, int] = (1, 5)
    scale_labels: dict[int, str] = field(default_factory=dict)
    answer: str | None = None
    label: str = ""  # a short name for the answer, shown in the journal
    keep: bool = False
    profile: str | None = None
    skippable: bool = False
    next: str | None = None
    end: bool = False
    after: str | None = None
    routes: tuple[Route, ...] = ()
    action: str | None = None  # computed context for the template (bot.actions)
    check_back: CheckBack | None = None

    def route_for(self, value: int) -> int | None:
        """The index of the route a scale answer takes, or None for the step's own next."""
        return next((index for index, route in enumerate(self.routes)
                     if route.low <= value <= route.high), None)

    def choice(self, value: str) -> Choice | None:
        return next((choice for choice in self.choices if choice.value == value), None)

    def targets(self) -> list[str]:
        """Every step this one can lead to."""
        found = [choice.next for choice in self.choices if choice.next]
        found += [route.next for route in self.routes]
        if self.next:
            found.append(self.next)
        return found


@dataclass(frozen=True)
class Flow:
    name: str
    source: str
    start: str
    steps: dict[str, Step]
    command: str | None = None
    title: str = ""
    description: str = ""
    in_menu: bool = True
    order: int = 100  # where it comes in /menu and the command list: lower first

    @property
    def step_order(self) -> list[str]:
        """Steps in the order they appear in the file, used to say "step 2 of 7"."""
        return list(self.steps)

    def position(self, step: str) -> tuple[int, int]:
        """(number of this step, number of steps that ask something), for progress lines."""
        asking = [name for name, spec in self.steps.items() if not spec.end]
        if step in asking:
            return asking.index(step) + 1, len(asking)
        return len(asking), len(asking)
