"""What templates may know: the person, and crisis lines, as plain values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.answers import country_name
from bot.storage.models import User


def resources_view(found: Any) -> dict[str, Any]:
    """Crisis lines as templates see them."""
    return {"country_name": country_name(found.country), "emergency": found.emergency,
            "lines": list(found.lines), "fallback": found.fallback}


@dataclass(frozen=True)
class UserView:
    """What templates may know about the person."""

    first_name: str
    focus: str
    country: str
    country_name: str
    keep_reflections: bool
    language: str
    daily_enabled: bool = False
    daily_time: str = ""
    timezone: str = ""
    paused: bool = False
    quiet_start: str = ""
    quiet_end: str = ""
    weekly_day: int | None = None
    discreet: bool = False


class LiveUserView:
    """UserView's names, each read from the person's row only if the template asks for it.

    This is what turns hand to templates; UserView itself is for samples and placeholders,
    where there is no row. A template reads one or two of the names, so copying all
    fourteen (through SQLAlchemy's attribute instrumentation) for every message cost more
    than rendering some templates. The view is rendered at once, so it shows the row as it
    is at that moment, as a copy made then would. Any other name is missing, as it is from
    a UserView.
    """

    __slots__ = ("_user",)

    def __init__(self, user: User) -> None:
        self._user = user

    def __getattr__(self, name: str) -> Any:
        read = _READERS.get(name)
        if read is None:
            raise AttributeError(name)
        return read(self._user)


_READERS: dict[str, Callable[[User], Any]] = {
    "first_name": lambda user: user.first_name or "",
    "focus": lambda user: user.focus or "none",
    "country": lambda user: user.country or "none",
    "country_name": lambda user: country_name(user.country),
    "keep_reflections": lambda user: bool(user.keep_reflections),
    "language": lambda user: user.language,
    "daily_enabled": lambda user: bool(user.daily_enabled),
    "daily_time": lambda user: user.daily_time or "",
    "timezone": lambda user: user.timezone or "",
    "paused": lambda user: bool(user.paused),
    "quiet_start": lambda user: user.quiet_start or "",
    "quiet_end": lambda user: user.quiet_end or "",
    "weekly_day": lambda user: user.weekly_day,
    "discreet": lambda user: bool(user.discreet),
}


PLACEHOLDER = UserView("", "none", "none", "", False, "en")
