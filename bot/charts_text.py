"""Asking for a chart inside a turn, and drawing it afterwards, off the event loop.

The words of a chart are needed inside the turn; the picture is drawn after it (and
bot.charts loads matplotlib, slow to import, only then).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from bot import charts


@dataclass(frozen=True)
class CalendarRequest:
    year: int
    month: int
    practised_days: frozenset[int]
    today: int | None
    title: str
    weekday_names: tuple[str, ...]


def calendar_text(month: int, practised_days: Iterable[int]) -> str:
    return charts.calendar_text(month, practised_days)


@lru_cache(maxsize=512)
def draw_calendar(request: CalendarRequest) -> bytes:
    """The calendar as PNG; the same calendar asked for twice is drawn once."""
    return charts.practice_calendar(request.year, request.month, set(request.practised_days),
                             request.today, request.title, list(request.weekday_names)).png
