"""Pictures for /progress: a month of practice and how the scores have moved.

Each picture comes with the same content as plain text (`Chart.text`) for anyone who cannot
see images; send it as the caption or alongside. The text has no markup, so escape it if it
goes into an HTML message.

Drawing uses matplotlib's object-oriented API only (`Figure` with an Agg canvas, nothing from
pyplot), so no global figure state is kept and calls in different threads do not share a
figure. Nothing here changes `rcParams`; fonts are matplotlib's bundled DejaVu Sans. Each call
takes a few tens of milliseconds; importing matplotlib takes longer, once per process.
"""

from __future__ import annotations

import calendar
import io
import math
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # matplotlib itself is imported only when a picture is drawn: it is slow
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

# About 800x600 px: readable on a phone once Telegram scales it to the screen width.
FIGURE_SIZE = (8.0, 6.0)
DPI = 100

# A calm palette: soft background, muted ink, gentle accents.
BACKGROUND = "#FBF9F6"
INK = "#3E4A52"
SOFT_INK = "#8A949B"
EMPTY_CELL = "#EEEBE6"
PRACTISED_CELL = "#5E9C8F"
PRACTISED_INK = "#FFFFFF"
TODAY_EDGE = "#C77D5A"
GRID = "#E3DFD8"
SERIES_COLOURS = ("#4F7CA8", "#C77D5A", "#5E9C8F", "#8E7CA8", "#B59A4A", "#7A8A99")
SERIES_MARKERS = ("o", "s", "D", "^", "v", "P")  # shapes as well as colours tell lines apart

# English month names, independent of the process locale (calendar.month_name is not).
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")

ORDINAL_SUFFIXES = {1: "st", 2: "nd", 3: "rd"}

# Calendar layout, in figure fractions (left, bottom, width, height) and then in data units:
# seven columns one unit wide, the weekday names in a band HEADING high, then always six
# week rows one unit high, so every month's picture has the same layout.
CALENDAR_AXES = (0.04, 0.03, 0.92, 0.82)
HEADING = 0.7
CALENDAR_ROWS = 6
CELL_PAD = 0.06

MIN_SCORE = 1.0
MAX_SCORE = 5.0


@dataclass(frozen=True)
class Chart:
    png: bytes  # a PNG image
    text: str  # the same content as plain text (no HTML), one short paragraph or a few lines


# --- text helpers ---------------------------------------------------------------------------


def ordinal(day: int) -> str:
    """1 -> "1st", 2 -> "2nd", 11 -> "11th", 22 -> "22nd"."""
    if 11 <= day % 100 <= 13:
        return f"{day}th"
    return f"{day}{ORDINAL_SUFFIXES.get(day % 10, 'th')}"


def join_words(words: list[str]) -> str:
    """["a"] -> "a", ["a", "b"] -> "a and b", ["a", "b", "c"] -> "a, b and c"."""
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


def score_text(score: float) -> str:
    return f"{score:.1f}"


def direction(first: float, latest: float) -> str:
    """Compared at the precision shown, so "2.5 → 2.5" never reads as "higher"."""
    a, b = round(first, 1), round(latest, 1)
    if b > a:
        return "higher than before"
    if b < a:
        return "lower than before"
    return "the same as before"


# --- rendering helpers ----------------------------------------------------------------------


def _new_figure() -> tuple[Figure, FigureCanvasAgg]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, facecolor=BACKGROUND)
    return figure, FigureCanvasAgg(figure)


def _title(figure: Figure, title: str) -> None:
    """One line, or for a long (say, translated) title two smaller ones, cut short after."""
    if len(title) <= 40:
        text, size = title, 22
    else:
        text = "\n".join(textwrap.wrap(title, width=44, max_lines=2, placeholder=" …"))
        size = 17
    figure.suptitle(text, y=0.97, va="top", fontsize=size, color=INK, fontweight="bold",
                    linespacing=1.15)


def _png(figure: Figure, canvas: FigureCanvasAgg) -> bytes:
    buffer = io.BytesIO()
    try:
        canvas.print_png(buffer)
    finally:
        figure.clear()  # drop artists now rather than waiting for the garbage collector
    return buffer.getvalue()


# --- the month of practice ------------------------------------------------------------------


def practice_calendar(year: int, month: int, practised_days: set[int], today: int | None,
                      title: str, weekday_names: list[str]) -> Chart:
    """A month calendar (Monday first) with the days on which the person practised filled in;
    `today` outlined if given. `weekday_names` are the seven column headings, Monday first.

    Raises ValueError for a day that is not in the month or a wrong number of weekday names.
    """
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1-12, not {month}")
    if len(weekday_names) != 7:
        raise ValueError(f"need 7 weekday names, got {len(weekday_names)}")
    days_in_month = calendar.monthrange(year, month)[1]
    outside = sorted(d for d in practised_days if not 1 <= d <= days_in_month)
    if outside:
        raise ValueError(f"days {outside} are not in {year}-{month:02d}")
    if today is not None and not 1 <= today <= days_in_month:
        raise ValueError(f"today ({today}) is not in {year}-{month:02d}")

    weeks = calendar.Calendar(firstweekday=calendar.MONDAY).monthdayscalendar(year, month)
    figure, canvas = _new_figure()
    axes = figure.add_axes(CALENDAR_AXES)
    _draw_month(axes, weeks, practised_days, today, weekday_names)
    _title(figure, title)
    return Chart(png=_png(figure, canvas), text=calendar_text(month, practised_days))


def _draw_month(axes: Axes, weeks: list[list[int]], practised: set[int], today: int | None,
                weekday_names: list[str]) -> None:
    from matplotlib import patches

    axes.set_xlim(0, 7)
    axes.set_ylim(CALENDAR_ROWS + HEADING, 0)  # row 0 at the top, under the weekday names
    axes.set_axis_off()
    for column, name in enumerate(weekday_names):
        axes.text(column + 0.5, HEADING / 2, name, ha="center", va="center", fontsize=15,
                  color=SOFT_INK)
    pad = CELL_PAD
    for row, week in enumerate(weeks):
        top = row + HEADING
        for column, day in enumerate(week):
            if day == 0:
                continue  # a day of the neighbouring month
            done = day in practised
            is_today = day == today
            cell = patches.FancyBboxPatch(
                (column + pad, top + pad), 1 - 2 * pad, 1 - 2 * pad,
                boxstyle="round,pad=0,rounding_size=0.14",
                facecolor=PRACTISED_CELL if done else EMPTY_CELL,
                edgecolor=TODAY_EDGE if is_today else "none",
                linewidth=4 if is_today else 0,
            )
            axes.add_patch(cell)
            axes.text(column + 0.5, top + 0.5, str(day), ha="center", va="center",
                      fontsize=17, color=PRACTISED_INK if done else INK,
                      fontweight="bold" if done or is_today else "normal")


def calendar_text(month: int, practised_days: Iterable[int]) -> str:
    """"You practised on 5 days in June: the 2nd, 3rd, 10th, 11th and 20th." Counts only
    what was done; says nothing about other days."""
    month_name = MONTHS[month - 1]
    days = sorted(set(practised_days))
    if not days:
        return (f"Nothing is marked for {month_name} yet. Any day you practise, "
                f"even briefly, will show up here.")
    count = "one day" if len(days) == 1 else f"{len(days)} days"
    return (f"You practised on {count} in {month_name}: "
            f"the {join_words([ordinal(d) for d in days])}.")


# --- scores over time -----------------------------------------------------------------------


def trend_chart(points: list[tuple[str, dict[str, float]]], labels: dict[str, str],
                title: str) -> Chart | None:
    """A line chart of scores over time: each point is (date label, {key: score 1-5}), oldest
    first; `labels` names each key (a key without a label is shown as itself). None if there
    are fewer than 2 points. A key missing from some points is drawn from the points it has.

    Raises ValueError for a score outside 1-5.
    """
    if len(points) < 2:
        return None
    for when, scores in points:
        for key, score in scores.items():
            if not (MIN_SCORE <= score <= MAX_SCORE):  # also rejects NaN
                raise ValueError(f"score {score!r} for {key!r} on {when!r} is not in 1-5")
    keys = _keys_in_order(points, labels)
    series = {key: [(i, scores[key]) for i, (_, scores) in enumerate(points) if key in scores]
              for key in keys}

    figure, canvas = _new_figure()
    columns = 1 if len(keys) <= 3 else 2
    legend_rows = math.ceil(len(keys) / columns)
    bottom = 0.14 + 0.055 * legend_rows  # room for the date labels and the legend below
    axes = figure.add_axes((0.09, bottom, 0.87, 0.86 - bottom))
    _draw_trend(axes, [when for when, _ in points], series, labels)
    _title(figure, title)
    handles, names = axes.get_legend_handles_labels()
    if handles:
        figure.legend(handles, names, loc="lower center", bbox_to_anchor=(0.5, 0.01),
                      ncol=columns, frameon=False, fontsize=14, labelcolor=INK)
    return Chart(png=_png(figure, canvas), text=trend_text(points, labels))


def _keys_in_order(points: list[tuple[str, dict[str, float]]],
                   labels: dict[str, str]) -> list[str]:
    """The keys that have scores: in the order of `labels`, then any others as first seen."""
    present: dict[str, None] = {}
    for _, scores in points:
        present.update(dict.fromkeys(scores))
    ordered = [key for key in labels if key in present]
    return ordered + [key for key in present if key not in labels]


def _draw_trend(axes: Axes, whens: list[str], series: dict[str, list[tuple[int, float]]],
                labels: dict[str, str]) -> None:
    axes.set_facecolor(BACKGROUND)
    for n, (key, values) in enumerate(series.items()):
        axes.plot([i for i, _ in values], [v for _, v in values],
                  color=SERIES_COLOURS[n % len(SERIES_COLOURS)],
                  marker=SERIES_MARKERS[n % len(SERIES_MARKERS)],
                  linewidth=3, markersize=9, label=labels.get(key, key))
    axes.set_ylim(MIN_SCORE - 0.25, MAX_SCORE + 0.25)
    axes.set_yticks([1, 2, 3, 4, 5])
    axes.set_xlim(-0.3, len(whens) - 0.7)
    # At most about seven date labels fit across a phone screen; always keep the last one.
    step = max(1, math.ceil(len(whens) / 7))
    ticks = sorted({*range(0, len(whens), step), len(whens) - 1})
    if len(ticks) > 1 and ticks[-1] - ticks[-2] < step:
        del ticks[-2]  # too close to the last label
    axes.set_xticks(ticks, [whens[i] for i in ticks])
    axes.tick_params(labelsize=13, colors=SOFT_INK, length=0, pad=8)
    axes.grid(axis="y", color=GRID, linewidth=1)
    for side in ("top", "right", "left"):
        axes.spines[side].set_visible(False)
    axes.spines["bottom"].set_color(GRID)


def trend_text(points: list[tuple[str, dict[str, float]]], labels: dict[str, str]) -> str:
    """One line for the span, then per key: "Label: first → latest, higher than before"."""
    keys = _keys_in_order(points, labels)
    lines = [f"Your scores from {points[0][0]} to {points[-1][0]}:"]
    for key in keys:
        values = [scores[key] for _, scores in points if key in scores]
        name = labels.get(key, key)
        if len(values) == 1:
            lines.append(f"{name}: {score_text(values[0])}, one score so far")
        else:
            first, latest = values[0], values[-1]
            lines.append(f"{name}: {score_text(first)} → {score_text(latest)}, "
                         f"{direction(first, latest)}")
    return "\n".join(lines)


@dataclass(frozen=True)
class CalendarRequest:
    """A calendar asked for inside a turn, drawn after it (off the event loop)."""

    year: int
    month: int
    practised_days: frozenset[int]
    today: int | None
    title: str
    weekday_names: tuple[str, ...]


def draw_calendar(request: CalendarRequest) -> bytes:
    """The calendar as PNG (bot.drawing draws the same one asked for twice only once)."""
    return practice_calendar(request.year, request.month, set(request.practised_days),
                             request.today, request.title, list(request.weekday_names)).png


# --- a safety check's profile ---------------------------------------------------------------

# How often a threat shows up, as the profile marks it: a shape and a colour for each, so the
# marks can be told apart without colour too.
THREAT_FLAGS = ("often", "sometimes", "rarely", "unrated")
THREAT_MARKS = {"often": "●", "sometimes": "◐", "rarely": "○", "unrated": "–"}
THREAT_COLOURS = {"often": TODAY_EDGE, "sometimes": SERIES_COLOURS[4], "rarely": PRACTISED_CELL,
                  "unrated": SOFT_INK}
THREAT_WORDS = {"often": "often", "sometimes": "sometimes", "rarely": "rarely or never",
                "unrated": "not rated"}
PROFILE_BARS_AXES = (0.36, 0.42, 0.52, 0.40)  # left, bottom, width, height (figure fractions)
PROFILE_THREATS_TOP = 0.31  # the threat list starts here, one row every PROFILE_ROW below
PROFILE_ROW = 0.055


def profile_chart(elements: list[tuple[str, float | None]], threats: list[tuple[str, str]],
                  title: str) -> Chart:
    """A safety check as a picture: a horizontal bar per element (its name and a score 1-5, or
    None if it was not rated), then each threat (its name and one of THREAT_FLAGS) with a mark.

    Raises ValueError for a score outside 1-5 or an unknown flag.
    """
    _check_profile(elements, threats)
    figure, canvas = _new_figure()
    _title(figure, title)
    figure.text(0.04, 0.88, "How safe it feels, from 1 (not at all) to 5 (very)", fontsize=14,
                color=SOFT_INK, va="top")
    axes = figure.add_axes(PROFILE_BARS_AXES)
    _draw_bars(axes, elements)
    figure.text(0.04, PROFILE_THREATS_TOP + 0.045, "What wears safety down: how often",
                fontsize=14, color=SOFT_INK, va="top")
    for row, (name, flag) in enumerate(threats):
        y = PROFILE_THREATS_TOP - PROFILE_ROW * (row + 0.5)
        figure.text(0.06, y, THREAT_MARKS[flag], fontsize=17, color=THREAT_COLOURS[flag],
                    ha="center", va="center")
        figure.text(0.10, y, _short(name, 40), fontsize=14, color=INK, va="center")
        figure.text(0.94, y, THREAT_WORDS[flag], fontsize=14, color=THREAT_COLOURS[flag],
                    ha="right", va="center", fontweight="bold" if flag == "often" else "normal")
    return Chart(png=_png(figure, canvas), text=profile_text(elements, threats, title))


def _check_profile(elements: list[tuple[str, float | None]],
                   threats: list[tuple[str, str]]) -> None:
    for name, score in elements:
        if score is not None and not (MIN_SCORE <= score <= MAX_SCORE):  # also rejects NaN
            raise ValueError(f"score {score!r} for {name!r} is not in 1-5")
    for name, flag in threats:
        if flag not in THREAT_FLAGS:
            raise ValueError(f"flag {flag!r} for {name!r} is not one of {THREAT_FLAGS}")


def _short(name: str, width: int) -> str:
    return textwrap.shorten(name, width=width, placeholder=" …")


def _draw_bars(axes: Axes, elements: list[tuple[str, float | None]]) -> None:
    axes.set_facecolor(BACKGROUND)
    rows = list(range(len(elements)))
    axes.barh(rows, [MAX_SCORE] * len(elements), height=0.62, color=EMPTY_CELL)  # the track
    axes.barh(rows, [score or 0 for _, score in elements], height=0.62, color=PRACTISED_CELL)
    for row, (_, score) in enumerate(elements):
        if score is None:
            axes.text(0.12, row, "not rated", va="center", fontsize=13, color=SOFT_INK)
        else:
            axes.text(MAX_SCORE + 0.12, row, score_text(score), va="center", fontsize=14,
                      color=INK, fontweight="bold")
    axes.set_yticks(rows, ["\n".join(textwrap.wrap(name, width=18, max_lines=2,
                                                   placeholder=" …"))
                           for name, _ in elements])
    axes.set_ylim(len(elements) - 0.5, -0.5)  # the first element at the top
    axes.set_xlim(0, MAX_SCORE + 0.6)
    axes.set_xticks([1, 2, 3, 4, 5])
    axes.tick_params(axis="y", labelsize=13, colors=INK, length=0, pad=8)
    axes.tick_params(axis="x", labelsize=12, colors=SOFT_INK, length=0)
    for side in ("top", "right", "left", "bottom"):
        axes.spines[side].set_visible(False)


def profile_text(elements: list[tuple[str, float | None]], threats: list[tuple[str, str]],
                 title: str) -> str:
    """The profile in plain words: the title, a line per element, a line per threat."""
    lines = [title, "How safe it feels, from 1 (not at all) to 5 (very):"]
    for name, score in elements:
        lines.append(f"{name}: {'not rated' if score is None else score_text(score)}")
    lines.append("What wears safety down, how often:")
    lines += [f"{name}: {THREAT_WORDS[flag]}" for name, flag in threats]
    return "\n".join(lines)


@dataclass(frozen=True)
class ProfileRequest:
    """A profile asked for inside a turn, drawn after it (off the event loop)."""

    title: str
    elements: tuple[tuple[str, float | None], ...]
    threats: tuple[tuple[str, str], ...]


def draw_profile(request: ProfileRequest) -> bytes:
    """The profile as PNG."""
    return profile_chart(list(request.elements), list(request.threats), request.title).png


@dataclass(frozen=True)
class TrendRequest:
    """Safety-check scores over time, asked for inside a turn and drawn after it."""

    points: tuple[tuple[str, tuple[tuple[str, float], ...]], ...]  # (date label, (key, score)...)
    labels: tuple[tuple[str, str], ...]  # (key, name), in the order to draw them
    title: str

    def as_lists(self) -> tuple[list[tuple[str, dict[str, float]]], dict[str, str]]:
        return [(when, dict(scores)) for when, scores in self.points], dict(self.labels)

    def text(self) -> str:
        return trend_text(*self.as_lists())


def draw_trend(request: TrendRequest) -> bytes:
    """The trend as PNG (at least two points)."""
    points, labels = request.as_lists()
    chart = trend_chart(points, labels, request.title)
    if chart is None:
        raise ValueError("a trend needs at least two points")
    return chart.png
