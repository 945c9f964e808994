"""What templates may know: the person, and crisis lines, as plain values."""

from __future__ import annotations

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

    @classmethod
    def of(cls, user: User) -> UserView:
        return cls(
            first_name=user.first_name or "",
            focus=user.focus or "none",
            country=user.country or "none",
            country_name=country_name(user.country),
            keep_reflections=bool(user.keep_reflections),
            language=user.language,
            daily_enabled=bool(user.daily_enabled),
            daily_time=user.daily_time or "",
            timezone=user.timezone or "",
            paused=bool(user.paused),
            quiet_start=user.quiet_start or "",
            quiet_end=user.quiet_end or "",
            weekly_day=user.weekly_day,
            discreet=bool(user.discreet),
        )


PLACEHOLDER = UserView("", "none", "none", "", False, "en")
