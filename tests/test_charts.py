"""bot.charts: the /progress pictures are real PNGs and their text says the same thing."""

from __future__ import annotations

import io
import re
import struct

import pytest

from bot.charts import (
    BACKGROUND,
    CALENDAR_AXES,
    CALENDAR_ROWS,
    CELL_PAD,
    EMPTY_CELL,
    HEADING,
    PRACTISED_CELL,
    TODAY_EDGE,
    Chart,
    ordinal,
    practice_calendar,
    trend_chart,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
LABELS = {"reliability": "Reliability and consistency", "warmth": "Warmth"}


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def decoded_size(data: bytes) -> tuple[int, int]:
    """(width, height) as a decoder sees it: Pillow if installed, else matplotlib's imread."""
    try:
        from PIL import Image
    except ImportError:
        from matplotlib.image import imread

        pixels = imread(io.BytesIO(data), format="png")
        return pixels.shape[1], pixels.shape[0]
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes every pixel, so a truncated file fails here
        return image.size


def assert_phone_sized_png(chart: Chart) -> None:
    width, height = png_size(chart.png)
    assert decoded_size(chart.png) == (width, height)
    assert 700 <= width <= 1000 and 500 <= height <= 800
    assert width > height


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def calendar_pixel(png: bytes, column: int, row: int, dx: float, dy: float) -> tuple[int, ...]:
    """The colour at (dx, dy) inside a week row's cell, each 0-1 from the cell's top left."""
    from matplotlib.image import imread

    pixels = imread(io.BytesIO(png), format="png")
    height, width = pixels.shape[:2]
    left, bottom, axes_width, axes_height = CALENDAR_AXES
    x = left + axes_width * (column + dx) / 7
    y_from_top = (row + HEADING + dy) / (CALENDAR_ROWS + HEADING)
    y = 1 - (bottom + axes_height * (1 - y_from_top))
    return tuple(round(float(c) * 255) for c in pixels[int(y * height), int(x * width)][:3])


def close_to(pixel: tuple[int, ...], colour: str) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(pixel, rgb(colour), strict=True))


def named_days(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\b(\d+)(?:st|nd|rd|th)\b", text)]


# --- practice_calendar -----------------------------------------------------------------------


def test_calendar_is_a_png_and_text_matches_the_example() -> None:
    chart = practice_calendar(2024, 6, {2, 3, 10, 11, 20}, today=14, title="June 2024",
                              weekday_names=WEEKDAYS)
    assert_phone_sized_png(chart)
    assert chart.text == ("You practised on 5 days in June: the 2nd, 3rd, 10th, 11th and 20th.")


def test_calendar_text_names_exactly_the_practised_days_with_right_suffixes() -> None:
    days = {1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31}
    chart = practice_calendar(2025, 1, days, today=None, title="January",
                              weekday_names=WEEKDAYS)
    for word in ("1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd",
                 "31st"):
        assert re.search(rf"\b{word}\b", chart.text), word
    assert named_days(chart.text) == sorted(days)
    assert "11 days" in chart.text
    assert "<" not in chart.text and ">" not in chart.text  # plain text, no HTML


@pytest.mark.parametrize(("day", "word"), [
    (1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (10, "10th"), (11, "11th"), (12, "12th"),
    (13, "13th"), (20, "20th"), (21, "21st"), (22, "22nd"), (23, "23rd"), (24, "24th"),
    (30, "30th"), (31, "31st"), (101, "101st"), (111, "111th"), (112, "112th"),
])
def test_ordinal(day: int, word: str) -> None:
    assert ordinal(day) == word


def test_one_day_and_two_days_read_naturally() -> None:
    one = practice_calendar(2024, 3, {7}, None, "March", WEEKDAYS)
    assert one.text == "You practised on one day in March: the 7th."
    two = practice_calendar(2024, 3, {9, 7}, None, "March", WEEKDAYS)
    assert two.text == "You practised on 2 days in March: the 7th and 9th."


def test_empty_month_has_a_kind_text_and_still_draws() -> None:
    chart = practice_calendar(2024, 9, set(), today=5, title="September",
                              weekday_names=WEEKDAYS)
    assert_phone_sized_png(chart)
    assert "September" in chart.text
    assert named_days(chart.text) == []
    lowered = chart.text.lower()
    for unkind in ("miss", "streak", "fail", "0 days", "zero", "only"):
        assert unkind not in lowered


def test_text_never_mentions_missed_days_or_streaks() -> None:
    chart = practice_calendar(2024, 6, {1, 2, 3, 4, 5}, today=30, title="June",
                              weekday_names=WEEKDAYS)
    lowered = chart.text.lower()
    for word in ("miss", "streak", "skipp", "broke", "only"):
        assert word not in lowered


def test_leap_february_has_29_days_and_common_february_28() -> None:
    every_day = set(range(1, 30))
    leap = practice_calendar(2024, 2, every_day, today=29, title="February 2024",
                             weekday_names=WEEKDAYS)
    assert_phone_sized_png(leap)
    assert named_days(leap.text) == list(range(1, 30))
    assert "29 days" in leap.text and leap.text.endswith("28th and 29th.")
    with pytest.raises(ValueError):  # there is no 29 February 2023
        practice_calendar(2023, 2, every_day, today=None, title="February 2023",
                          weekday_names=WEEKDAYS)
    common = practice_calendar(2023, 2, set(range(1, 29)), None, "February 2023", WEEKDAYS)
    assert named_days(common.text) == list(range(1, 29))


def test_calendar_picture_changes_with_practised_days_and_today() -> None:
    plain = practice_calendar(2024, 6, set(), None, "June", WEEKDAYS).png
    filled = practice_calendar(2024, 6, {2, 3}, None, "June", WEEKDAYS).png
    outlined = practice_calendar(2024, 6, set(), 14, "June", WEEKDAYS).png
    assert len({plain, filled, outlined}) == 3


@pytest.mark.parametrize("bad", [
    {"practised_days": {0}}, {"practised_days": {31}}, {"today": 31}, {"today": 0},
    {"weekday_names": WEEKDAYS[:6]}, {"month": 13},
])
def test_calendar_rejects_what_is_not_in_the_month(bad: dict[str, object]) -> None:
    arguments: dict[str, object] = {"year": 2024, "month": 6, "practised_days": {1},
                                    "today": None, "title": "June",
                                    "weekday_names": WEEKDAYS}
    arguments.update(bad)
    with pytest.raises(ValueError):
        practice_calendar(**arguments)  # type: ignore[arg-type]


def test_calendar_starts_on_monday_and_fills_practised_days() -> None:
    # 1 June 2024 was a Saturday: Monday-first, it is the sixth cell of the first row.
    png = practice_calendar(2024, 6, {1, 3}, None, "June", WEEKDAYS).png
    corner = (0.2, 0.2)  # inside the cell, away from the day number
    for column in range(5):  # Monday to Friday before the 1st: no cell at all
        assert close_to(calendar_pixel(png, column, 0, *corner), BACKGROUND), column
    assert close_to(calendar_pixel(png, 5, 0, *corner), PRACTISED_CELL)  # Sat 1st
    assert close_to(calendar_pixel(png, 6, 0, *corner), EMPTY_CELL)  # Sun 2nd
    assert close_to(calendar_pixel(png, 0, 1, *corner), PRACTISED_CELL)  # Mon 3rd
    assert close_to(calendar_pixel(png, 0, 5, *corner), BACKGROUND)  # no sixth week


def test_calendar_outlines_today() -> None:
    edge = (CELL_PAD + 0.01, 0.5)  # on the left edge of the cell, half way down
    # 14 June 2024 is the Friday of the second full week: column 4, row 2.
    with_today = practice_calendar(2024, 6, set(), 14, "June", WEEKDAYS).png
    without = practice_calendar(2024, 6, set(), None, "June", WEEKDAYS).png
    assert close_to(calendar_pixel(with_today, 4, 2, *edge), TODAY_EDGE)
    assert not close_to(calendar_pixel(without, 4, 2, *edge), TODAY_EDGE)
    assert not close_to(calendar_pixel(with_today, 3, 2, *edge), TODAY_EDGE)  # the 13th


# --- trend_chart ------------------------------------------------------------------------------


def test_trend_with_fewer_than_two_points_is_none() -> None:
    assert trend_chart([], LABELS, "Scores") is None
    assert trend_chart([("1 May", {"reliability": 3.0})], LABELS, "Scores") is None


def test_trend_is_a_png_and_text_gives_first_latest_and_direction() -> None:
    points = [
        ("1 May", {"reliability": 2.5, "warmth": 4.0}),
        ("8 May", {"reliability": 3.0, "warmth": 3.5}),
        ("15 May", {"reliability": 3.4, "warmth": 3.2}),
    ]
    chart = trend_chart(points, LABELS, "How things are going")
    assert chart is not None
    assert_phone_sized_png(chart)
    lines = chart.text.splitlines()
    assert lines[0] == "Your scores from 1 May to 15 May:"
    assert "Reliability and consistency: 2.5 → 3.4, higher than before" in lines
    assert "Warmth: 4.0 → 3.2, lower than before" in lines


@pytest.mark.parametrize(("first", "latest", "words"), [
    (2.0, 3.0, "higher than before"),
    (3.0, 2.0, "lower than before"),
    (3.0, 3.0, "the same as before"),
    (3.0, 3.04, "the same as before"),  # shown as 3.0 → 3.0, so not "higher"
    (1.0, 5.0, "higher than before"),
    (5.0, 4.9, "lower than before"),
])
def test_trend_directions(first: float, latest: float, words: str) -> None:
    points = [("a", {"reliability": first}), ("b", {"reliability": 3.3}),
              ("c", {"reliability": latest})]
    chart = trend_chart(points, LABELS, "Scores")
    assert chart is not None
    line = chart.text.splitlines()[1]
    assert line == (f"Reliability and consistency: {first:.1f} → {latest:.1f}, {words}")


def test_trend_uses_label_order_and_falls_back_to_the_key() -> None:
    points = [("a", {"warmth": 2.0, "repair": 3.0, "reliability": 1.0}),
              ("b", {"warmth": 2.0, "repair": 2.0, "reliability": 2.0})]
    chart = trend_chart(points, LABELS, "Scores")
    assert chart is not None
    names = [line.split(":")[0] for line in chart.text.splitlines()[1:]]
    assert names == ["Reliability and consistency", "Warmth", "repair"]


def test_trend_key_missing_from_some_points() -> None:
    points = [("a", {"reliability": 2.0}), ("b", {"reliability": 2.5, "warmth": 4.0}),
              ("c", {"reliability": 3.0})]
    chart = trend_chart(points, LABELS, "Scores")
    assert chart is not None
    assert_phone_sized_png(chart)
    assert "Warmth: 4.0, one score so far" in chart.text.splitlines()


def test_trend_with_many_points_still_draws() -> None:
    points = [(f"{d} Jun", {"reliability": 1 + (d % 5), "warmth": 5 - (d % 4)})
              for d in range(1, 31)]
    chart = trend_chart([(w, {k: float(v) for k, v in s.items()}) for w, s in points], LABELS,
                        "A month of check-ins")
    assert chart is not None
    assert_phone_sized_png(chart)
    assert chart.text.splitlines()[0] == "Your scores from 1 Jun to 30 Jun:"


@pytest.mark.parametrize("score", [0.5, 5.5, float("nan")])
def test_trend_rejects_scores_outside_one_to_five(score: float) -> None:
    with pytest.raises(ValueError):
        trend_chart([("a", {"reliability": 3.0}), ("b", {"reliability": score})], LABELS, "S")


def test_charts_can_be_drawn_from_several_threads_at_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    def draw(n: int) -> tuple[bytes, bytes]:
        calendar = practice_calendar(2024, 6, {n}, None, "June", WEEKDAYS)
        trend = trend_chart([("a", {"reliability": 1.0}), ("b", {"reliability": n / 6})],
                            LABELS, "Scores")
        assert trend is not None
        return calendar.png, trend.png

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(draw, range(6, 30, 3)))
    for calendar_png, trend_png in results:
        assert png_size(calendar_png)[0] > 0 and png_size(trend_png)[0] > 0
    # Same inputs drawn alone give the same bytes: no state leaked between threads.
    again = draw(6)
    assert again == results[0]
