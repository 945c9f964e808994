"""When a flow's check-back is due: "in 20 minutes", "in an hour", "in three days".

A delay in minutes or hours counts from now. A delay in days lands on that local
day, at the person's daily-prompt time if they have one (a time they chose for
Haven), otherwise at the time of day it is now, so "in three days" means the same
part of the day they were in when they asked.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.flows.loader import delay_of
from bot.schedule_times import due_on, local_day, parse_clock

CHECKBACK = "checkback"


def check_back_due(now: datetime, answer: object, zone: str | None,
                   daily_time: str | None) -> datetime | None:
    """The UTC moment a check-back chosen as `answer` ("m20", "h1", "d3") is due; None for
    an answer that is not a delay (such as "none")."""
    delay = delay_of(answer)
    if delay is None:
        return None
    unit, count = delay
    if unit == "m":
        return now + timedelta(minutes=count)
    if unit == "h":
        return now + timedelta(hours=count)
    if not zone:
        return now + timedelta(days=count)
    at = parse_clock(daily_time) if daily_time else None
    if at is None:
        at = now.astimezone(ZoneInfo(zone)).time().replace(second=0, microsecond=0)
    return due_on(local_day(now, zone) + timedelta(days=count), at, zone)
