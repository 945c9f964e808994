"""Daily due times, quiet hours and time-zone lookup, correct across daylight-saving changes.

Wall-clock times are never shifted with naive arithmetic: a local time is turned into a UTC
instant through zoneinfo (`fold=0`, so an ambiguous time means its first occurrence) and
converted back; if the round trip does not give the same wall time, the time fell in a gap
and is due at the first instant after the gap.

Zone data: zoneinfo reads the IANA database from the system (`/usr/share/zoneinfo`) or from
the `tzdata` package. Country and city names come from Babel's CLDR data.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from babel import Locale
from babel.core import get_global

# Shown first when several zones fit, most widely used first.
WELL_KNOWN = (
    "Europe/London", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Europe/Paris",
    "America/Los_Angeles", "America/Chicago", "America/Denver", "America/Phoenix",
    "America/Toronto", "America/Mexico_City", "America/Sao_Paulo", "Australia/Sydney",
    "Australia/Melbourne", "Australia/Brisbane", "Australia/Perth", "Australia/Adelaide",
    "Australia/Darwin", "Australia/Hobart", "Asia/Tokyo", "Asia/Shanghai", "Asia/Singapore",
    "Asia/Dubai", "Europe/Madrid", "Europe/Rome", "Europe/Amsterdam", "Europe/Dublin",
    "Europe/Lisbon", "Europe/Warsaw", "Europe/Kyiv", "Europe/Athens", "Europe/Istanbul",
    "Europe/Moscow", "Africa/Lagos", "Africa/Cairo", "Africa/Johannesburg", "Africa/Nairobi",
    "Asia/Karachi", "Asia/Dhaka", "Asia/Jakarta", "Asia/Bangkok", "Asia/Manila",
    "Asia/Hong_Kong", "Asia/Seoul", "Asia/Tehran", "Asia/Kathmandu", "Pacific/Auckland",
    "America/Vancouver", "America/Halifax", "America/St_Johns", "America/Anchorage",
    "Pacific/Honolulu", "America/Argentina/Buenos_Aires", "America/Bogota", "America/Lima",
    "America/Santiago", "Atlantic/Reykjavik", "UTC",
)

# Names people use that are neither a zone's city nor a CLDR country name.
_ALIASES = {
    "usa": "US", "us": "US", "america": "US", "united states of america": "US",
    "uk": "GB", "britain": "GB", "great britain": "GB", "england": "GB", "scotland": "GB",
    "wales": "GB", "northern ireland": "GB", "holland": "NL", "czech republic": "CZ",
    "san francisco": "America/Los_Angeles", "seattle": "America/Los_Angeles",
    "washington": "America/New_York", "boston": "America/New_York",
    "miami": "America/New_York", "atlanta": "America/New_York", "houston": "America/Chicago",
    "dallas": "America/Chicago", "munich": "Europe/Berlin", "mumbai": "Asia/Kolkata",
    "delhi": "Asia/Kolkata", "new delhi": "Asia/Kolkata", "bangalore": "Asia/Kolkata",
    "bengaluru": "Asia/Kolkata", "beijing": "Asia/Shanghai", "montreal": "America/Toronto",
    "ottawa": "America/Toronto", "kiev": "Europe/Kyiv",
}

_UTC_NAMES = {"utc", "etc/utc", "uct", "etc/uct", "zulu", "etc/zulu", "universal"}
_REGIONS = {"Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic", "Australia",
            "Europe", "Indian", "Pacific"}

_CLOCK = (r"(?P<h>[0-9]{1,2})(?:[:.h](?P<m>[0-9]{2}))?(?::(?P<s>[0-9]{2}))?"
          r"\s*(?P<ap>[ap]\.?m\.?|[ap])?")
_CLOCK_FULL = re.compile(_CLOCK)
_CLOCK_IN_TEXT = re.compile(r"(?<![\w:.])(?:" + _CLOCK + r"|(?P<word>noon|midnight))(?![\w:])")


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("expected an aware datetime")
    return moment.astimezone(UTC)


def due_on(local_day: date, local_time: time, zone: str) -> datetime:
    """The UTC due time of `local_time` on `local_day` in `zone`, with the same gap/fold rules
    as `next_daily_due`."""
    tz = ZoneInfo(zone)
    wall = datetime.combine(local_day, local_time.replace(tzinfo=None))
    due = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if due.astimezone(tz).replace(tzinfo=None) == wall:
        return due
    # In a gap: fold=1 reads the wall time with the offset after the change (an instant before
    # it), fold=0 with the offset before (an instant after it); find the change between them.
    before = int(wall.replace(tzinfo=tz, fold=1).timestamp())
    after = int(due.timestamp())
    new_offset = due.astimezone(tz).utcoffset()
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == new_offset:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, UTC)


def next_daily_due(after_utc: datetime, local_time: time, zone: str) -> tuple[datetime, date]:
    """The first moment strictly after `after_utc` (aware) at which the wall clock in `zone`
    reads `local_time`, as (due time in UTC, the local date it belongs to).

    A time inside a spring-forward gap is due at the first instant after the gap (02:30 on a
    02:00->03:00 day is due at 03:00); a time inside a fall-back fold is due once, at its first
    occurrence.
    """
    after_utc = _utc(after_utc)
    # Start a day early: a gap can push one day's due time into the next local day.
    day = local_day(after_utc, zone) - timedelta(days=1)
    while True:
        due = due_on(day, local_time, zone)
        if due > after_utc:
            return due, day
        day += timedelta(days=1)


def local_day(moment_utc: datetime, zone: str) -> date:
    """The local calendar date at `moment_utc` in `zone`."""
    return _utc(moment_utc).astimezone(ZoneInfo(zone)).date()


def in_quiet_hours(moment_utc: datetime, zone: str, start: time | None, end: time | None) -> bool:
    """Whether the local time at `moment_utc` falls in quiet hours [start, end), which may cross
    midnight (22:00-07:00). None for either, or start == end, means no quiet hours."""
    if start is None or end is None or start == end:
        return False
    now = _utc(moment_utc).astimezone(ZoneInfo(zone)).time()
    start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
    if start < end:
        return start <= now < end
    return now >= start or now < end


def _clock(match: re.Match[str]) -> tuple[time, bool] | None:
    """The time a `_CLOCK` match names, and whether it could also be 12 hours later/earlier."""
    if match.group("word"):
        return (time(12) if match.group("word") == "noon" else time(0)), False
    hour, minute = int(match["h"]), int(match["m"] or 0)
    if minute > 59 or int(match["s"] or 0) > 59:
        return None
    if match["ap"]:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if match["ap"].startswith("p") else 0)
    elif hour > 23:
        return None
    return time(hour, minute), not match["ap"] and 1 <= hour <= 12


def parse_clock(text: str) -> time | None:
    """A time of day typed by a person: "8", "8am", "8:30", "08:30", "8.30 pm", "20:30",
    "noon", "midnight"; None if it is not one. Minutes are kept; seconds dropped."""
    text = " ".join(text.lower().split())
    match = _CLOCK_IN_TEXT.fullmatch(text)
    parsed = _clock(match) if match else None
    return parsed[0] if parsed else None


def _fold(text: str) -> str:
    """Text folded for matching: no accents, case, underscores, apostrophes or extra spaces."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = re.sub(r"['’`.]", "", text)
    return " ".join(re.sub(r"[_\-,]", " ", text).split())


def _rank(zone: str) -> int:
    return WELL_KNOWN.index(zone) if zone in WELL_KNOWN else len(WELL_KNOWN)


@cache
def _all_zones() -> frozenset[str]:
    return frozenset(available_timezones() - {"localtime", "Factory"})


@cache
def _canonical_zones() -> tuple[str, ...]:
    """One name per place (CLDR's list, with current IANA names), plus UTC; no Etc/GMT+5."""
    zones = {z for z in get_global("zone_territories") if not z.startswith("Etc/")}
    zones &= _all_zones()
    return tuple(sorted(zones | {"UTC"}, key=lambda z: (_rank(z), z)))


@cache
def _exact_names() -> dict[str, str]:
    return {_fold(zone): _canonical(zone) for zone in _all_zones()}


def _canonical(zone: str) -> str:
    if zone.casefold() in _UTC_NAMES:
        return "UTC"
    alias = get_global("zone_aliases").get(zone)
    return alias if alias in _all_zones() else zone


@cache
def _name_index() -> dict[str, list[str]]:
    """Folded city and country names -> zones (countries as ISO codes, resolved later)."""
    index: dict[str, list[str]] = {}

    def add(key: str, value: str) -> None:
        values = index.setdefault(_fold(key), [])
        if value not in values:
            values.append(value)

    english = Locale("en")
    for code, name in english.territories.items():
        if code.isalpha() and len(code) == 2:
            add(name, code)
    for zone in sorted(_all_zones()):
        if zone.split("/")[0] in _REGIONS:
            add(zone.rsplit("/", 1)[-1], _canonical(zone))
    for zone, names in english.time_zones.items():
        if "city" in names and _canonical(zone) in _all_zones():
            add(names["city"], _canonical(zone))
    for key, value in _ALIASES.items():
        if len(value) == 2 or value in _all_zones():  # Europe/Kyiv needs tzdata 2022b+
            add(key, value)
    return index


@cache
def _country_zones(code: str) -> tuple[str, ...]:
    """A country's zones, best first, leaving out any that keeps the same clock as one already
    listed (Germany is Europe/Berlin, not also Europe/Busingen)."""
    zones = sorted(get_global("territory_zones").get(code, []), key=_rank)
    start = datetime(datetime.now(UTC).year, 1, 1, 12, tzinfo=UTC)
    days = [start + timedelta(days=n) for n in range(400)]
    kept: dict[tuple[timedelta | None, ...], str] = {}
    for zone in zones:
        if zone in _all_zones():
            kept.setdefault(tuple(day.astimezone(ZoneInfo(zone)).utcoffset() for day in days),
                            zone)
    return tuple(kept.values())


def zones_for(text: str) -> list[str]:
    """IANA zone names matching a typed city, region or country, best first ("London",
    "new york", "Germany", "Australia", "Europe/Paris", "UTC"); [] if nothing matches."""
    key = _fold(text)
    if not key:
        return []
    if key in _exact_names():
        return [_exact_names()[key]]
    found: list[str] = []
    for value in _name_index().get(key, []):
        for zone in _country_zones(value) if len(value) == 2 else (value,):
            if zone not in found:
                found.append(zone)
    return sorted(found, key=_rank)


def zones_from_local_time(now_utc: datetime, typed: str) -> list[str]:
    """Zones whose wall clock at `now_utc` is within 15 minutes of the time in `typed` ("it's
    9:40 pm"), closest first; per offset only the well-known zones, or two others if none is
    well known. Without am/pm, "9:40" may be morning or evening. [] if there is no time."""
    parsed = None
    for match in _CLOCK_IN_TEXT.finditer(" ".join(typed.lower().split())):
        if parsed := _clock(match):
            break
    if not parsed:
        return []
    said, either_half = parsed
    minutes = [said.hour * 60 + said.minute]
    if either_half:
        minutes.append((minutes[0] + 12 * 60) % (24 * 60))
    by_offset: dict[timedelta | None, list[tuple[int, str]]] = {}
    for zone in _canonical_zones():
        local = _utc(now_utc).astimezone(ZoneInfo(zone))
        now = local.hour * 60 + local.minute
        gap = min(min(abs(now - m), 24 * 60 - abs(now - m)) for m in minutes)
        if gap <= 15:
            by_offset.setdefault(local.utcoffset(), []).append((gap, zone))
    found: list[tuple[int, int, str]] = []
    for candidates in by_offset.values():  # each already in _rank order
        known = [c for c in candidates if _rank(c[1]) < len(WELL_KNOWN)]
        found += [(gap, _rank(zone), zone) for gap, zone in (known or candidates[:2])]
    return [zone for _, _, zone in sorted(found)]


def describe(zone: str, now_utc: datetime) -> str:
    """A short description for confirming a zone, e.g. "Europe/London (now 21:40)"."""
    return f"{zone} (now {_utc(now_utc).astimezone(ZoneInfo(zone)):%H:%M})"
