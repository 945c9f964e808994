"""Daily due times across real daylight-saving changes, quiet hours, and zone lookup."""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.schedule_times import (
    describe,
    due_on,
    in_quiet_hours,
    local_day,
    next_daily_due,
    parse_clock,
    zones_for,
    zones_from_local_time,
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def wall(moment: datetime, zone: str) -> datetime:
    return moment.astimezone(ZoneInfo(zone))


# Europe/London: 2024-03-31 01:00 GMT -> 02:00 BST; 2024-10-27 02:00 BST -> 01:00 GMT.

def test_london_spring_forward_gap_is_due_at_end_of_gap():
    due, day = next_daily_due(utc(2024, 3, 30, 12), time(1, 30), "Europe/London")
    assert (due, day) == (utc(2024, 3, 31, 1), date(2024, 3, 31))
    assert wall(due, "Europe/London").strftime("%H:%M %Z") == "02:00 BST"
    assert next_daily_due(due, time(1, 30), "Europe/London") == (
        utc(2024, 4, 1, 0, 30), date(2024, 4, 1))


def test_london_fall_back_fold_is_due_once_at_first_occurrence():
    due, day = next_daily_due(utc(2024, 10, 26, 12), time(1, 30), "Europe/London")
    assert (due, day) == (utc(2024, 10, 27, 0, 30), date(2024, 10, 27))
    assert wall(due, "Europe/London").strftime("%H:%M %Z") == "01:30 BST"
    following = (utc(2024, 10, 28, 1, 30), date(2024, 10, 28))
    assert next_daily_due(due, time(1, 30), "Europe/London") == following
    # Between the two 01:30s (the second is 01:30 GMT = 01:30 UTC) nothing more is due that day.
    assert next_daily_due(utc(2024, 10, 27, 1, 0), time(1, 30), "Europe/London") == following


def test_new_york_gap_and_fold():
    # 2024-03-10 02:00 EST -> 03:00 EDT; 2024-11-03 02:00 EDT -> 01:00 EST.
    assert due_on(date(2024, 3, 10), time(2, 30), "America/New_York") == utc(2024, 3, 10, 7)
    assert wall(utc(2024, 3, 10, 7), "America/New_York").strftime("%H:%M") == "03:00"
    due, day = next_daily_due(utc(2024, 11, 2, 12), time(1, 30), "America/New_York")
    assert (due, day) == (utc(2024, 11, 3, 5, 30), date(2024, 11, 3))  # 01:30 EDT
    assert next_daily_due(due, time(1, 30), "America/New_York") == (
        utc(2024, 11, 4, 6, 30), date(2024, 11, 4))  # 01:30 EST


def test_lord_howe_half_hour_gap_and_fold():
    # +10:30 standard, +11 summer: 2024-10-06 02:00 -> 02:30; 2024-04-07 02:00 -> 01:30.
    zone = "Australia/Lord_Howe"
    due, day = next_daily_due(utc(2024, 10, 5, 0), time(2, 15), zone)
    assert (due, day) == (utc(2024, 10, 5, 15, 30), date(2024, 10, 6))
    assert wall(due, zone).strftime("%H:%M") == "02:30"
    due, day = next_daily_due(utc(2024, 4, 6, 0), time(1, 45), zone)
    assert (due, day) == (utc(2024, 4, 6, 14, 45), date(2024, 4, 7))  # the +11 one
    assert next_daily_due(due, time(1, 45), zone) == (utc(2024, 4, 7, 15, 15), date(2024, 4, 8))


@pytest.mark.parametrize(("zone", "at", "gap_days"), [
    ("Europe/London", time(1, 30), {date(2024, 3, 31), date(2025, 3, 30)}),
    ("Europe/London", time(8, 0), set()),
    ("America/New_York", time(2, 30), {date(2024, 3, 10), date(2025, 3, 9)}),
    ("America/New_York", time(1, 30), set()),
    ("Australia/Lord_Howe", time(2, 15), {date(2024, 10, 6)}),
    ("Australia/Lord_Howe", time(1, 45), set()),
    ("Asia/Kolkata", time(0, 0), set()),
])
def test_400_days_give_one_due_per_local_day(zone, at, gap_days):
    after = utc(2024, 3, 1)  # 400 days: to 2025-04-04, two springs and one autumn
    dues, days = [], []
    for _ in range(400):
        due, day = next_daily_due(after, at, zone)
        dues.append(due)
        days.append(day)
        after = due
    first = days[0]
    assert days == [first + timedelta(days=n) for n in range(400)]
    assert all(a < b for a, b in zip(dues, dues[1:], strict=False))
    gaps = set()
    for due, day in zip(dues, days, strict=True):
        local = wall(due, zone)
        assert local.date() == day
        assert local.fold == 0  # never the second occurrence of a repeated time
        if local.time() != at:
            assert local.time() > at
            gaps.add(day)
    assert gaps == gap_days


def test_next_daily_due_is_strictly_after():
    due, day = next_daily_due(utc(2024, 7, 1, 7), time(8), "Europe/London")  # 08:00 BST now
    assert (due, day) == (utc(2024, 7, 2, 7), date(2024, 7, 2))
    assert next_daily_due(utc(2024, 7, 1, 6, 59), time(8), "Europe/London")[0] == utc(2024, 7, 1, 7)


def test_naive_datetime_is_refused():
    with pytest.raises(ValueError):
        next_daily_due(datetime(2024, 7, 1, 7), time(8), "Europe/London")


def test_local_day():
    assert local_day(utc(2024, 7, 1, 23, 30), "Europe/London") == date(2024, 7, 2)
    assert local_day(utc(2024, 1, 1, 23, 30), "Europe/London") == date(2024, 1, 1)
    assert local_day(utc(2024, 7, 1, 3), "America/New_York") == date(2024, 6, 30)


NIGHT = (time(22), time(7))
LUNCH = (time(13), time(15))


@pytest.mark.parametrize(("moment", "hours", "quiet"), [
    (utc(2024, 7, 1, 21), NIGHT, True),  # 22:00 BST: start included
    (utc(2024, 7, 1, 20, 59), NIGHT, False),
    (utc(2024, 7, 1, 23, 30), NIGHT, True),  # 00:30 BST, past midnight
    (utc(2024, 7, 2, 5, 59), NIGHT, True),
    (utc(2024, 7, 2, 6), NIGHT, False),  # 07:00 BST: end excluded
    (utc(2024, 1, 15, 21, 30), NIGHT, False),  # 21:30 GMT in winter
    (utc(2024, 1, 15, 22), NIGHT, True),
    (utc(2024, 7, 1, 12), LUNCH, True),  # 13:00 BST
    (utc(2024, 7, 1, 11, 59), LUNCH, False),
    (utc(2024, 7, 1, 13, 59), LUNCH, True),
    (utc(2024, 7, 1, 14), LUNCH, False),  # 15:00 BST
    (utc(2024, 7, 1, 21), (None, time(7)), False),
    (utc(2024, 7, 1, 21), (time(22), None), False),
    (utc(2024, 7, 1, 21), (time(22), time(22)), False),
])
def test_quiet_hours(moment, hours, quiet):
    assert in_quiet_hours(moment, "Europe/London", *hours) is quiet


@pytest.mark.parametrize(("text", "expected"), [
    ("8", time(8)), ("8am", time(8)), ("8 a.m.", time(8)), ("8:30", time(8, 30)),
    ("08:30", time(8, 30)), ("8.30 pm", time(20, 30)), ("8.30 PM", time(20, 30)),
    ("20:30", time(20, 30)), ("8h30", time(8, 30)), ("  9 pm ", time(21)),
    ("noon", time(12)), ("Midnight", time(0)), ("12am", time(0)), ("12pm", time(12)),
    ("0:15", time(0, 15)), ("23:59", time(23, 59)), ("8:30:45", time(8, 30)),
    ("25:00", None), ("24:00", None), ("abc", None), ("8:75", None), ("13pm", None),
    ("0am", None), ("8:5", None), ("", None), ("it's 8", None), ("8:30:99", None),
])
def test_parse_clock(text, expected):
    assert parse_clock(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("London", ["Europe/London"]),
    ("new york", ["America/New_York"]),
    ("NEW_YORK", ["America/New_York"]),
    ("Germany", ["Europe/Berlin"]),
    ("India", ["Asia/Kolkata"]),
    ("Lord Howe", ["Australia/Lord_Howe"]),
    ("UTC", ["UTC"]),
    ("Europe/Paris", ["Europe/Paris"]),
    ("europe/paris", ["Europe/Paris"]),
    ("Asia/Calcutta", ["Asia/Kolkata"]),
    ("São Paulo", ["America/Sao_Paulo"]),
    ("sao paulo", ["America/Sao_Paulo"]),
    ("Zürich", ["Europe/Zurich"]),
    ("Cote d'Ivoire", ["Africa/Abidjan"]),
    ("united kingdom", ["Europe/London"]),
    ("UK", ["Europe/London"]),
    ("Kiev", ["Europe/Kyiv"]),
    ("Atlantis", []),
    ("", []),
    ("   ", []),
])
def test_zones_for(text, expected):
    assert zones_for(text) == expected


def test_zones_for_country_with_several_zones():
    australia = zones_for("Australia")
    assert australia[0] == "Australia/Sydney"
    assert {"Australia/Perth", "Australia/Brisbane", "Australia/Lord_Howe"} <= set(australia)
    assert all(zone.startswith("Australia/") for zone in australia)
    usa = zones_for("USA")
    assert usa[0] == "America/New_York"
    assert {"America/Chicago", "America/Los_Angeles", "Pacific/Honolulu"} <= set(usa)
    assert len(usa) == len(set(usa))


NOW = utc(2024, 7, 1, 20, 40)  # 21:40 in London (BST), 16:40 in New York (EDT)


@pytest.mark.parametrize(("typed", "first", "absent"), [
    ("it's 9:40 pm", "Europe/London", "Europe/Berlin"),
    ("9:50pm", "Europe/London", "America/New_York"),  # 10 minutes off still fits
    ("10:40 pm", "Europe/Berlin", "Europe/London"),
    ("It is 4.40 PM here", "America/New_York", "America/Chicago"),
    ("2:10 am", "Asia/Kolkata", "Asia/Tokyo"),  # +5:30
    ("9:40", "Europe/London", "Asia/Kolkata"),  # no am/pm: morning or evening
])
def test_zones_from_local_time(typed, first, absent):
    zones = zones_from_local_time(NOW, typed)
    assert zones[0] == first
    assert absent not in zones
    assert len(zones) == len(set(zones))


def test_zones_from_local_time_stays_within_15_minutes():
    for zone in zones_from_local_time(NOW, "it's 9:40 pm"):
        local = wall(NOW, zone)
        assert abs(local.hour * 60 + local.minute - (21 * 60 + 40)) <= 15
    assert "Europe/London" not in zones_from_local_time(NOW, "9:56 pm")
    assert "Europe/London" in zones_from_local_time(NOW, "9:55 pm")


@pytest.mark.parametrize("typed", ["hello", "25:00", "", "8:75 pm"])
def test_zones_from_local_time_without_a_time(typed):
    assert zones_from_local_time(NOW, typed) == []


def test_describe():
    assert describe("Europe/London", NOW) == "Europe/London (now 21:40)"
    assert describe("Asia/Kolkata", NOW) == "Asia/Kolkata (now 02:10)"
